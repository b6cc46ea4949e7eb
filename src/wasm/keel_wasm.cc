// keel_wasm: the Keel runtime core and envoy client core as a WebAssembly module for
// JavaScript hosts (Node, Deno, workerd). Emscripten + embind; no threads, no ASYNCIFY.
//
// The JS package (packages/keel-wasm) creates one `WasmRuntime` per registry, passing a
// host object that owns everything host-specific:
//   now() / wallNow()               monotonic ms (performance.now) / Unix epoch ms
//   setTimer(id, ms) / clearTimer(id)  → later rt.timerFired(id)
//   wsOpen(sock, url, protocols) / wsSend(sock, u8) / wsClose(sock, code, reason)
//                                   → rt.wsOpened(sock) / wsMessage(sock, u8) / wsClosed(sock, code, reason)
//   invoke(fn, ctx, args)           calls fn(context, ...args); a synchronous throw comes
//                                   back as {__keelThrown: e}
//   log(level, component, message)
// plus the value/promise helpers bridge.cc uses (kindOf, toU8, mapEntries, deferred,
// bridgeThen → BridgeSettle, isThenable, isThrown, makeError, errorInfo).
//
// Actors are JS definitions compiled into a runtime::ActorType whose hooks and actions call
// back into JS; all protocol logic (envoy protocol, client protocol, persistence, the output
// gate, sleep, schedule, queue, remote SQL) stays in the C++ core. Context operations take
// an instance handle (a number the JS context carries) and fail with actor.stopped once
// that instance is gone.
#include <emscripten/bind.h>
#include <emscripten/val.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/log.h"
#include "base/random.h"
#include "envoy/envoy_client.h"
#include "runtime/core.h"
#include "runtime/sql.h"
#include "wasm/bridge.h"

namespace keel::wasm {
namespace {

using runtime::ActorError;
using runtime::Instance;
using runtime::Invocation;

// ---- Time: the host's clocks and setTimeout ----

class JsClock final : public Clock {
 public:
  explicit JsClock(val host) : host_(std::move(host)) {}
  MonoTime MonotonicNow() const override {
    const double ms = host_.call<double>("now");
    return MonoTime(std::chrono::nanoseconds(static_cast<int64_t>(ms * 1e6)));
  }
  int64_t SystemNowMs() const override {
    return static_cast<int64_t>(host_.call<double>("wallNow"));
  }
  TimerId Schedule(MonoTime deadline, std::function<void()> callback) override {
    const uint64_t id = ++next_;
    timers_.emplace(id, std::move(callback));
    const auto delay = deadline - MonotonicNow();
    double ms = std::ceil(std::chrono::duration<double, std::milli>(delay).count());
    if (ms < 0) ms = 0;
    host_.call<void>("setTimer", static_cast<double>(id), ms);
    return TimerId{id};
  }
  bool Cancel(TimerId id) override {
    auto it = timers_.find(static_cast<uint64_t>(id));
    if (it == timers_.end()) return false;
    timers_.erase(it);
    host_.call<void>("clearTimer", static_cast<double>(static_cast<uint64_t>(id)));
    return true;
  }
  void Fire(uint64_t id) {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    std::function<void()> fn = std::move(it->second);
    timers_.erase(it);
    fn();
  }
  void CancelAll() {
    for (const auto& [id, fn] : timers_) host_.call<void>("clearTimer", static_cast<double>(id));
    timers_.clear();
  }

 private:
  val host_;
  uint64_t next_ = 0;
  std::unordered_map<uint64_t, std::function<void()>> timers_;
};

// ---- The envoy socket: the host's WebSocket ----

class JsTransport final : public envoy::Transport {
 public:
  explicit JsTransport(val host) : host_(std::move(host)) {}
  void set_client(envoy::EnvoyClient* client) { client_ = client; }
  void Connect(const std::string& url, const std::vector<std::string>& subprotocols) override {
    sock_ = ++next_sock_;
    val protocols = val::array();
    for (const auto& p : subprotocols) protocols.call<void>("push", p);
    host_.call<void>("wsOpen", sock_, url, protocols);
  }
  void Send(Bytes frame) override {
    if (sock_ != 0) host_.call<void>("wsSend", sock_, BytesToJs(frame));
  }
  void Close(uint16_t code, const std::string& reason) override {
    if (sock_ != 0) host_.call<void>("wsClose", sock_, code, reason);
  }
  // Events of sockets other than the current one are stale and ignored.
  void Opened(int sock) {
    if (sock == sock_ && client_ != nullptr) client_->OnOpen();
  }
  void Message(int sock, const val& data) {
    if (sock != sock_ || client_ == nullptr) return;
    Bytes frame = BytesFromJs(data);
    client_->OnFrame(frame);
  }
  void Closed(int sock, int code, const std::string& reason) {
    if (sock != sock_ || client_ == nullptr) return;
    sock_ = 0;
    client_->OnClosed(static_cast<uint16_t>(code), reason);
  }

 private:
  val host_;
  envoy::EnvoyClient* client_ = nullptr;
  int sock_ = 0;
  int next_sock_ = 0;
};

// ---- Logs: the host's console ----

class JsLogSink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    Host().call<void>("log", static_cast<int>(level), std::string(component), std::string(message));
  }
};

// ---- State and vars: a JS value held for the instance ----

// The core saves state whenever it checkpoints (after work, on a deadline, at sleep) and
// cannot take a failure there, so a state JS made unserializable (a function, a cycle, …)
// is not saved: the last value that could be stays the persisted one, and an error is
// logged. The work that made it so fails with actor.invalid_value (CheckState).
class JsSlot final : public runtime::Slot {
 public:
  JsSlot(std::optional<Value> initial, bool persisted) : persisted_(persisted) {
    if (initial) {
      value_ = ToJs(*initial);
      last_saved_ = std::move(*initial);
    }
  }
  void* get() override { return &value_; }
  Value Save() const override {
    if (!persisted_) return Value(nullptr);
    try {
      last_saved_ = FromJs(value_);
      last_error_.clear();
    } catch (const ActorError& e) {
      if (e.message() != last_error_) {
        last_error_ = e.message();
        LogError("wasm", "the actor's state cannot be saved; it keeps its last saved value",
                 {{"error", e.message()}});
      }
    }
    return last_saved_;
  }
  void Load(const Value& value) override {
    value_ = ToJs(value);
    last_saved_ = value;
  }

 private:
  val value_ = val::undefined();
  bool persisted_;
  mutable Value last_saved_{nullptr};
  mutable std::string last_error_;
};

// Throws actor.invalid_value when the instance's state cannot be serialized.
void CheckState(Instance& inst) {
  if (!inst.type().has_state || inst.phase() == runtime::Phase::kStopped) return;
  const val* state = nullptr;
  try {
    state = static_cast<const val*>(inst.state_ptr());
  } catch (const ActorError&) {
    return;  // not created yet
  }
  try {
    (void)FromJs(*state);
  } catch (const ActorError& e) {
    throw ActorError("actor", "invalid_value", "the actor's state cannot be saved: " + e.message());
  }
}

std::chrono::milliseconds Ms(const val& options, const char* name, std::chrono::milliseconds def) {
  val v = options[name];
  return v.isNumber() ? std::chrono::milliseconds(static_cast<int64_t>(v.as<double>())) : def;
}

Value Args(const val& array) {
  Value v = FromJs(array);
  if (!v.is_array()) return Value(Value::Array{});
  return v;
}

val SqlValueToJs(const sql::Value& v) { return ToJs(runtime::FromSqlValue(v)); }

val RowsToJs(const std::vector<sql::Row>& rows) {
  val out = val::array();
  for (const auto& row : rows) {
    val r = val::array();
    for (const auto& cell : row) r.call<void>("push", SqlValueToJs(cell));
    out.call<void>("push", r);
  }
  return out;
}

val ColumnsToJs(const std::vector<std::string>& columns) {
  val out = val::array();
  for (const auto& c : columns) out.call<void>("push", c);
  return out;
}

sql::Params ParamsFromJs(const val& params, const std::string& sql_text) {
  if (params.isUndefined() || params.isNull()) return {};
  Value v = FromJs(params);
  Result<sql::Params> p = v.is_array() ? runtime::ToSqlParams(v.as_array())
                                       : runtime::BindNamed(sql_text, v);
  if (!p.ok()) throw ActorError(p.error().group(), p.error().code(), p.error().message());
  return std::move(*p);
}

}  // namespace

// One registry: the runtime core, its envoy client and the host adapters.
class WasmRuntime {
 public:
  WasmRuntime(val host, val options) : host_(host), clock_(host), transport_(host) {
    SetHost(host);
    static JsLogSink sink;
    SetLogSink(&sink);
    if (options["logLevel"].isString()) {
      std::string level = options["logLevel"].as<std::string>();
      static const std::pair<const char*, LogLevel> kLevels[] = {
          {"trace", LogLevel::kTrace}, {"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo},
          {"warn", LogLevel::kWarn},   {"error", LogLevel::kError}, {"off", LogLevel::kOff}};
      for (const auto& [name, l] : kLevels) {
        if (level == name) SetLogLevel(l);
      }
    }
    const uint64_t seed = (static_cast<uint64_t>(options["seedHi"].as<double>()) << 32) |
                          static_cast<uint64_t>(options["seedLo"].as<double>());
    random_ = std::make_unique<Random>(seed);
    runtime::RuntimeOptions ro;
    if (options["sqliteBackend"].isString()) {
      auto choice = runtime::ParseSqliteBackendChoice(options["sqliteBackend"].as<std::string>());
      if (choice.ok()) ro.sqlite_backend = *choice;
    }
    if (options["inspectorToken"].isString()) ro.inspector_token = options["inspectorToken"].as<std::string>();
    core_ = std::make_unique<runtime::Runtime>(ro, clock_, *random_);
    auto str = [&](const char* name, std::string& out) {
      if (options[name].isString()) out = options[name].as<std::string>();
    };
    str("endpoint", config_.endpoint);
    str("token", config_.token);
    str("namespace", config_.namespace_name);
    str("pool", config_.pool_name);
    str("envoyKey", config_.envoy_key);
    if (options["version"].isNumber()) config_.version = options["version"].as<uint32_t>();
    if (options["protocolVersion"].isNumber()) {
      config_.protocol_version = options["protocolVersion"].as<uint16_t>();
    }
    config_.metadata_json = R"({"keel":{"version":"0.1.0","runtime":"wasm"}})";
  }

  ~WasmRuntime() {
    client_.reset();
    clock_.CancelAll();
  }

  // ---- Registry ----

  void registerActor(std::string name, val def) {
    auto type = std::make_shared<runtime::ActorType>();
    type->name = name;
    val o = def["options"];
    if (!o.isUndefined() && !o.isNull()) {
      auto& opt = type->options;
      opt.sleep_timeout = Ms(o, "sleepTimeout", opt.sleep_timeout);
      opt.no_sleep = o["noSleep"].isTrue();
      opt.action_timeout = Ms(o, "actionTimeout", opt.action_timeout);
      opt.sleep_grace_period = Ms(o, "sleepGracePeriod", opt.sleep_grace_period);
      opt.create_state_timeout = Ms(o, "createStateTimeout", opt.create_state_timeout);
      opt.on_create_timeout = Ms(o, "onCreateTimeout", opt.on_create_timeout);
      opt.on_migrate_timeout = Ms(o, "onMigrateTimeout", opt.on_migrate_timeout);
      opt.create_vars_timeout = Ms(o, "createVarsTimeout", opt.create_vars_timeout);
      opt.on_wake_timeout = Ms(o, "onWakeTimeout", opt.on_wake_timeout);
      opt.on_before_actor_start_timeout =
          Ms(o, "onBeforeActorStartTimeout", opt.on_before_actor_start_timeout);
      opt.on_before_connect_timeout = Ms(o, "onBeforeConnectTimeout", opt.on_before_connect_timeout);
      opt.create_conn_state_timeout = Ms(o, "createConnStateTimeout", opt.create_conn_state_timeout);
      opt.on_connect_timeout = Ms(o, "onConnectTimeout", opt.on_connect_timeout);
      opt.state_save_interval = Ms(o, "stateSaveInterval", opt.state_save_interval);
      if (o["maxQueueSize"].isNumber()) opt.max_queue_size = o["maxQueueSize"].as<size_t>();
      if (o["maxQueueMessageSize"].isNumber()) {
        opt.max_queue_message_size = o["maxQueueMessageSize"].as<size_t>();
      }
    }
    // State: `state` (an initial value, copied per instance) or `createState(c, input)`.
    const bool has_initial = !def["state"].isUndefined();
    if (has_initial || IsFn(def, "createState")) {
      type->has_state = true;
      std::optional<Value> initial;
      if (has_initial) initial = FromJs(def["state"]);
      type->make_state = [initial] { return std::make_unique<JsSlot>(initial, true); };
    }
    std::optional<Value> vars;
    if (!def["vars"].isUndefined()) vars = FromJs(def["vars"]);
    type->make_vars = [vars] { return std::make_unique<JsSlot>(vars, false); };

    if (IsFn(def, "createState")) {
      type->create_state = [this, fn = def["createState"]](Invocation inv, Value input) -> Task<void> {
        val args = val::array();
        args.call<void>("push", ToJs(input));
        val state = co_await Call(fn, inv, args);
        try {
          (void)FromJs(state);
        } catch (const ActorError& e) {
          throw ActorError("actor", "invalid_value",
                           "createState returned a state that cannot be saved: " + e.message());
        }
        *static_cast<val*>(inv.instance->state_ptr()) = std::move(state);
      };
    }
    if (IsFn(def, "createVars")) {
      type->create_vars = [this, fn = def["createVars"]](Invocation inv) -> Task<void> {
        val vars = co_await Call(fn, inv, val::array());
        *static_cast<val*>(inv.instance->vars_ptr()) = std::move(vars);
      };
    }
    if (IsFn(def, "onCreate")) type->on_create = InputHook(def["onCreate"]);
    if (IsFn(def, "onMigrate")) {
      type->on_migrate = [this, fn = def["onMigrate"]](Invocation inv, bool is_new) -> Task<void> {
        val args = val::array();
        args.call<void>("push", is_new);
        co_await Call(fn, inv, args);
      };
    }
    val db = def["db"];
    if (db.isTrue() || (!db.isUndefined() && !db.isNull() && !db.isFalse())) {
      type->has_database = true;
      if (IsFn(db, "onMigrate")) {
        type->db_migrate = [this, fn = db["onMigrate"]](Invocation inv, bool) -> Task<void> {
          co_await Call(fn, inv, val::array());
        };
      }
    }
    if (IsFn(def, "onWake")) type->on_wake = Hook(def["onWake"]);
    if (IsFn(def, "onBeforeActorStart")) type->on_before_actor_start = Hook(def["onBeforeActorStart"]);
    if (IsFn(def, "run")) type->run = Hook(def["run"]);
    if (IsFn(def, "onSleep")) type->on_sleep = Hook(def["onSleep"]);
    if (IsFn(def, "onDestroy")) type->on_destroy = Hook(def["onDestroy"]);
    if (IsFn(def, "onBeforeConnect")) {
      type->on_before_connect = [this, fn = def["onBeforeConnect"]](Invocation inv, runtime::Request req,
                                                                    Value params) -> Task<void> {
        inv.request = &req;
        val args = val::array();
        args.call<void>("push", ToJs(params));
        co_await Call(fn, inv, args);
      };
    }
    if (IsFn(def, "createConnState") || !def["connState"].isUndefined()) {
      std::optional<Value> initial;
      if (!def["connState"].isUndefined()) initial = FromJs(def["connState"]);
      val fn = IsFn(def, "createConnState") ? def["createConnState"] : val::undefined();
      type->create_conn_state = [this, fn, initial](Invocation inv, runtime::Request req,
                                                    Value params) -> Task<Value> {
        if (fn.isUndefined()) co_return *initial;
        inv.request = &req;
        val args = val::array();
        args.call<void>("push", ToJs(params));
        val state = co_await Call(fn, inv, args);
        co_return FromJs(state);
      };
    }
    if (IsFn(def, "onConnect")) type->on_connect = ConnHook(def["onConnect"]);
    // Always set: the end of a connection drops its cached JS state.
    type->on_disconnect = [this, fn = IsFn(def, "onDisconnect") ? def["onDisconnect"] : val::undefined()](
                              Invocation inv) -> Task<void> {
      if (!fn.isUndefined()) co_await Call(fn, inv, val::array());
      conn_states_.erase(ConnKey(*inv.instance, inv.conn->id()));
    };
    if (IsFn(def, "onStateChange")) {
      type->on_state_change = [this, fn = def["onStateChange"]](Invocation& inv) {
        val args = val::array();
        args.call<void>("push", *static_cast<val*>(inv.instance->state_ptr()));
        val r = host_.call<val>("invoke", fn, CtxInfo(inv, 0), args);
        if (Host().call<bool>("isThrown", r)) {
          // Logged with its stack when it has one (a plain Error).
          val info = Host().call<val>("errorInfo", r["__keelThrown"]);
          val text = info["stack"].isString() ? info["stack"] : info["message"];
          LogWarn("wasm", "onStateChange threw",
                  {{"actor", inv.instance->actor_id()}, {"error", text.as<std::string>()}});
        }
      };
    }
    if (IsFn(def, "onRequest")) {
      type->on_request = [this, fn = def["onRequest"]](Invocation inv,
                                                      runtime::Request req) -> Task<runtime::Response> {
        inv.request = &req;
        val request = RequestToJs(req);
        request.set("body", BytesToJs(req.body));
        // request.signal: aborted when the client goes away before the response
        // (Request::OnAbort); the handler goes on, its response is dropped.
        if (val ctor = val::global("AbortController"); !ctor.isUndefined()) {
          val controller = ctor.new_();
          request.set("signal", controller["signal"]);
          req.OnAbort([controller] { controller.call<void>("abort"); });
        }
        val args = val::array();
        args.call<void>("push", request);
        // The host turns whatever the handler returned (a Response) into {status, headers, body}.
        val raw = co_await Call(fn, inv, args, "invokeRequest");
        runtime::Response resp;
        resp.status = static_cast<uint16_t>(raw["status"].as<int>());
        val hs = raw["headers"];
        for (size_t i = 0, n = hs["length"].as<size_t>(); i < n; ++i) {
          resp.headers.emplace_back(hs[i][0].as<std::string>(), hs[i][1].as<std::string>());
        }
        resp.body = BytesFromJs(raw["body"]);
        co_return resp;
      };
    }
    if (IsFn(def, "onWebSocket")) {
      type->on_websocket = [this, fn = def["onWebSocket"]](Invocation inv,
                                                         std::shared_ptr<runtime::RawSocket> raw) -> Task<void> {
        const int ws_id = ++next_ws_;
        raw_sockets_[ws_id] = raw;
        // The JS socket exists before the core's handlers are set: setting them delivers the
        // messages that came while onBeforeConnect/onConnect ran (the client may send as
        // soon as it sees the open), and each goes to this socket, which holds it until
        // onWebSocket has run far enough to add its listeners (ActorWebSocket._started).
        val info = val::object();
        info.set("id", ws_id);
        info.set("request", RequestToJs(raw->request()));
        val socket = host_.call<val>("makeSocket", info);
        // Events reach the JS socket object the host keeps for `ws_id`; a handler's promise
        // keeps the actor awake until it settles (the core counts it as activity).
        raw->OnMessage([this, ws_id](Bytes data, bool binary, uint16_t index) -> Task<void> {
          val payload = binary ? BytesToJs(data) : val(std::string(data.begin(), data.end()));
          val r = host_.call<val>("rawEvent", ws_id, std::string("message"), payload, binary, index);
          co_await AwaitJs(std::move(r));
        });
        raw->OnClose([this, ws_id](uint16_t code, std::string reason) -> Task<void> {
          raw_sockets_.erase(ws_id);
          val event = val::object();
          event.set("code", code);
          event.set("reason", reason);
          val r = host_.call<val>("rawEvent", ws_id, std::string("close"), event, false);
          co_await AwaitJs(std::move(r));
        });
        val args = val::array();
        args.call<void>("push", socket);
        // Held events go out however the call ends, even if it never reached onWebSocket.
        struct ReleaseHeld {
          val socket;
          ~ReleaseHeld() { socket.call<void>("_started"); }
        } release{socket};
        co_await Call(fn, inv, args);
      };
    }
    val actions = def["actions"];
    if (!actions.isUndefined() && !actions.isNull()) {
      val names = val::global("Object").call<val>("keys", actions);
      for (size_t i = 0, n = names["length"].as<size_t>(); i < n; ++i) {
        std::string action = names[i].as<std::string>();
        type->actions[action] = [this, fn = actions[action]](Invocation inv, Value args) -> Task<Value> {
          val js_args = ToJs(args.is_array() ? args : Value(Value::Array{}));
          val result = co_await Call(fn, inv, js_args);
          co_return FromJs(result);
        };
      }
    }
    // events / queues: arrays of names, or objects name → {canSubscribe|canPublish}.
    auto declare = [&](const char* key, const char* check,
                       std::map<std::string, runtime::SubscribeCheckFn, std::less<>>& out) {
      val list = def[key];
      if (list.isUndefined() || list.isNull()) return;
      if (list.isArray()) {
        for (size_t i = 0, n = list["length"].as<size_t>(); i < n; ++i) out[list[i].as<std::string>()] = nullptr;
        return;
      }
      val names = val::global("Object").call<val>("keys", list);
      for (size_t i = 0, n = names["length"].as<size_t>(); i < n; ++i) {
        std::string name = names[i].as<std::string>();
        val spec = list[name];
        if (!spec.isUndefined() && !spec.isNull() && IsFn(spec, check)) {
          out[name] = [this, fn = spec[check]](Invocation inv) -> Task<bool> {
            val ok = co_await Call(fn, inv, val::array());
            co_return ok.isTrue();
          };
        } else {
          out[name] = nullptr;
        }
      }
    };
    declare("events", "canSubscribe", type->events);
    declare("queues", "canPublish", type->queues);
    core_->Register(std::move(type));
  }

  // Connects to the engine (after every actor is registered).
  void start() {
    if (client_) return;
    config_.actor_names = core_->ActorNames();
    client_ = std::make_unique<envoy::EnvoyClient>(config_, clock_, *random_, transport_, *core_);
    transport_.set_client(client_.get());
    core_->Attach(*client_);
    core_->SetShutdownCallback([this] {
      stopped_ = true;
      for (auto& d : on_connected_) d.call<void>("resolve", false);
      on_connected_.clear();
      for (auto& d : on_stopped_) d.call<void>("resolve", val::undefined());
      on_stopped_.clear();
    });
    client_->Start();
  }

  // Graceful stop (every actor sleeps, then the socket closes); resolves when done.
  val shutdown(bool immediate) {
    val deferred = Host().call<val>("deferred");
    if (!client_ || stopped_) {
      deferred.call<void>("resolve", val::undefined());
    } else {
      on_stopped_.push_back(deferred);
      if (!client_->shut_down()) client_->Shutdown(immediate);
    }
    return deferred["promise"];
  }

  // Serverless (envoy-protocol.md §4.9): the version-prefixed start body a POST /start
  // carried, injected as if it came on the socket (queued until the engine's Init).
  val injectStart(val body) {
    return Sync([&] {
      if (!client_) throw ActorError("wasm", "invalid_state", "Invalid wasm state 'core registry': not started");
      Bytes bytes = BytesFromJs(body);
      Status s = client_->InjectServerlessStart(bytes);
      if (!s.ok()) throw ActorError(s.error().group(), s.error().code(), s.error().message());
      return val::undefined();
    });
  }
  // (actor, generation) pairs the envoy hosts (a serverless stream ends when it drops to 0).
  int hostedActors() const { return client_ ? static_cast<int>(client_->hosted_actors()) : 0; }

  std::string envoyKey() const { return client_ ? client_->envoy_key() : config_.envoy_key; }
  bool connected() const { return client_ && client_->connected(); }
  int instanceCount() const { return static_cast<int>(core_->instance_count()); }

  // ---- Host input ----
  void timerFired(double id) { clock_.Fire(static_cast<uint64_t>(id)); }
  void wsOpened(int sock) { transport_.Opened(sock); }
  void wsMessage(int sock, val data) {
    transport_.Message(sock, data);
    if (!on_connected_.empty() && client_ && client_->connected()) {
      auto waiters = std::move(on_connected_);
      on_connected_.clear();
      for (auto& d : waiters) d.call<void>("resolve", true);
    }
  }
  // Resolves (true) once the engine's Init arrived on the current connection — at once when
  // it already has — or (false) when the runtime shuts down first.
  val whenConnected() {
    val deferred = Host().call<val>("deferred");
    if (client_ && client_->connected()) {
      deferred.call<void>("resolve", true);
    } else if (stopped_) {
      deferred.call<void>("resolve", false);
    } else {
      on_connected_.push_back(deferred);
    }
    return deferred["promise"];
  }
  void wsClosed(int sock, int code, std::string reason) { transport_.Closed(sock, code, reason); }

  // ---- Context operations (instance handle first) ----

  val getState(int h) {
    return Sync([&] { return *static_cast<val*>(Inst(h).state_ptr()); });
  }
  val setState(int h, val state) {
    return Sync([&] {
      Instance& inst = Inst(h);
      if (inst.in_state_change()) {
        throw ActorError("actor", "state_mutation_reentrant",
                         "State mutations are not allowed inside onStateChange.");
      }
      *static_cast<val*>(inst.state_ptr()) = std::move(state);
      return val::undefined();
    });
  }
  // Raw WebSockets accepted in onWebSocket.
  // Like the C++ WebSocket::send, sending on a closed socket does nothing.
  val rawSend(int ws_id, val data, bool binary) {
    return Sync([&] {
      auto it = raw_sockets_.find(ws_id);
      std::shared_ptr<runtime::RawSocket> raw = it == raw_sockets_.end() ? nullptr : it->second.lock();
      if (!raw || raw->closed()) return val::undefined();
      if (binary) {
        raw->Send(BytesFromJs(data), true);
      } else {
        std::string text = data.as<std::string>();
        raw->Send(Bytes(text.begin(), text.end()), false);
      }
      return val::undefined();
    });
  }
  val rawClose(int ws_id, int code, std::string reason) {
    return Sync([&] {
      RawOf(ws_id)->Close(static_cast<uint16_t>(code), reason);
      return val::undefined();
    });
  }

  val getVars(int h) {
    return Sync([&] { return *static_cast<val*>(Inst(h).vars_ptr()); });
  }
  val setVars(int h, val vars) {
    return Sync([&] {
      *static_cast<val*>(Inst(h).vars_ptr()) = std::move(vars);
      return val::undefined();
    });
  }
  val broadcast(int h, std::string event, val args) {
    return Sync([&] {
      Inst(h).Broadcast(event, Args(args));
      return val::undefined();
    });
  }
  val schedule(int h, double epoch_ms, std::string action, val args) {
    return Sync([&] { return val(Inst(h).ScheduleAt(static_cast<int64_t>(epoch_ms), action, Args(args))); });
  }
  val sleep(int h) {
    return Sync([&] {
      Inst(h).RequestSleep();
      return val::undefined();
    });
  }
  val destroy(int h) {
    return Sync([&] {
      Inst(h).RequestDestroy();
      return val::undefined();
    });
  }
  val keepAwake(int h, val promise) {
    return Sync([&] {
      Inst(h).KeepAwake(AwaitVoid(std::move(promise)));
      return val::undefined();
    });
  }
  val waitUntil(int h, val promise) {
    return Sync([&] {
      Inst(h).WaitUntil(AwaitVoid(std::move(promise)));
      return val::undefined();
    });
  }
  // Stays true once the instance has stopped (like an abort signal), instead of failing.
  val aborted(int h) {
    return Sync([&] {
      Instance* inst = Live(h);
      return val(inst == nullptr || inst->aborted());
    });
  }
  // `max_wait_ms` > 0: saveState({maxWait}); otherwise an immediate save.
  val saveState(int h, double max_wait_ms) {
    std::optional<runtime::milliseconds> max_wait;
    if (max_wait_ms > 0) max_wait = runtime::milliseconds(static_cast<int64_t>(max_wait_ms));
    return Async(h, [max_wait](Instance& inst) -> Task<val> {
      co_await inst.SaveState(max_wait);
      co_return val::undefined();
    });
  }
  val nowMs() { return val(static_cast<double>(clock_.SystemNowMs())); }

  // Connections: ids, params, state (cached as a JS value while JS may mutate it and
  // written back to the core after every invocation), send, disconnect.
  val connIds(int h) {
    return Sync([&] {
      val out = val::array();
      for (const auto& [id, conn] : Inst(h).conns()) {
        if (!conn->transient()) out.call<void>("push", id);
      }
      return out;
    });
  }
  // {hibernatable, transient} of a connection.
  val connFlags(int h, std::string conn_id) {
    return Sync([&] {
      runtime::Conn& conn = ConnOf(h, conn_id);
      val out = val::object();
      out.set("hibernatable", conn.is_hibernatable());
      out.set("transient", conn.transient());
      return out;
    });
  }
  val connParams(int h, std::string conn_id) {
    return Sync([&] { return ToJs(ConnOf(h, conn_id).params()); });
  }
  val connGetState(int h, std::string conn_id) {
    return Sync([&] {
      Instance& inst = Inst(h);
      auto it = inst.conns().find(conn_id);
      if (it == inst.conns().end()) throw ActorError("actor", "conn_not_found", "connection not found");
      std::string key = ConnKey(inst, conn_id);
      auto cached = conn_states_.find(key);
      if (cached == conn_states_.end()) {
        cached = conn_states_.emplace(key, CachedConnState{it->second, ToJs(it->second->state())}).first;
      }
      cached->second.touched = true;
      return cached->second.value;
    });
  }
  val connSetState(int h, std::string conn_id, val state) {
    return Sync([&] {
      Instance& inst = Inst(h);
      auto it = inst.conns().find(conn_id);
      if (it == inst.conns().end()) throw ActorError("actor", "conn_not_found", "connection not found");
      conn_states_[ConnKey(inst, conn_id)] = CachedConnState{it->second, state, true};
      return val::undefined();
    });
  }
  val connSend(int h, std::string conn_id, std::string event, val args) {
    return Sync([&] {
      ConnOf(h, conn_id).Send(event, Args(args));
      return val::undefined();
    });
  }
  val connDisconnect(int h, std::string conn_id, std::string reason) {
    return Sync([&] {
      ConnOf(h, conn_id).Disconnect(reason);
      return val::undefined();
    });
  }

  // KV (user keys; bytes in, bytes out).
  val kvGet(int h, val key) {
    return Guarded([&] {
      Bytes k = BytesFromJs(key);
      return Async(h, [k = std::move(k)](Instance& inst) -> Task<val> {
        std::optional<Bytes> v = co_await inst.KvGet(k);
        co_return v ? BytesToJs(*v) : val::null();
      });
    });
  }
  val kvPut(int h, val key, val value) {
    return Sync([&] {
      Inst(h).KvPut(BytesFromJs(key), BytesFromJs(value));
      return val::undefined();
    });
  }
  val kvDelete(int h, val key) {
    return Sync([&] {
      Inst(h).KvDelete(BytesFromJs(key));
      return val::undefined();
    });
  }
  val kvList(int h, val prefix, bool reverse, double limit) {
    return Guarded([&] {
      Bytes p = BytesFromJs(prefix);
      std::optional<uint64_t> lim;
      if (limit >= 0) lim = static_cast<uint64_t>(limit);
      return Async(h, [p = std::move(p), reverse, lim](Instance& inst) -> Task<val> {
        auto entries = co_await inst.KvListPrefix(p, reverse, lim);
        co_return EntriesToJs(entries);
      });
    });
  }
  // Keys in [start, end), in key order (reverse: from the end).
  val kvListRange(int h, val start, val end, bool reverse, double limit) {
    return Guarded([&] {
      Bytes s = BytesFromJs(start), e = BytesFromJs(end);
      std::optional<uint64_t> lim;
      if (limit >= 0) lim = static_cast<uint64_t>(limit);
      return Async(h,
                   [s = std::move(s), e = std::move(e), reverse, lim](Instance& inst) -> Task<val> {
                     auto entries = co_await inst.KvListRange(s, e, reverse, lim);
                     co_return EntriesToJs(entries);
                   });
    });
  }
  val kvDeleteRange(int h, val start, val end) {
    return Guarded([&] {
      Bytes s = BytesFromJs(start), e = BytesFromJs(end);
      return Async(h, [s = std::move(s), e = std::move(e)](Instance& inst) -> Task<val> {
        co_await inst.KvDeleteRange(s, e);
        co_return val::undefined();
      });
    });
  }

  // Queue. `inv` is the invocation handle of the calling action/hook (0: none), so a
  // completable message is released if the invocation ends without completing it.
  val queueSend(int h, std::string name, val body) {
    return Guarded([&] {
      Value b = FromJs(body);
      return Async(h, [name = std::move(name), b = std::move(b)](Instance& inst) -> Task<val> {
        uint64_t id = co_await inst.QueueSend(name, b);
        co_return val(static_cast<double>(id));
      });
    });
  }
  val queueSize(int h) {
    return Sync([&] { return val(static_cast<double>(Inst(h).queue_size())); });
  }
  val queueReceive(int h, int inv, val options) {
    Instance::QueueReceive r;
    val names = options["names"];
    if (names.isArray()) {
      for (size_t i = 0, n = names["length"].as<size_t>(); i < n; ++i) r.names.push_back(names[i].as<std::string>());
    }
    if (options["timeout"].isNumber()) r.timeout = std::chrono::milliseconds(static_cast<int64_t>(options["timeout"].as<double>()));
    r.completable = options["completable"].isTrue();
    if (options["count"].isNumber()) r.count = options["count"].as<size_t>();
    return Async(h, [this, inv, r = std::move(r)](Instance& inst) -> Task<val> {
      Invocation scratch(&inst, nullptr, nullptr);
      Invocation* target = FindInv(inv);
      if (target == nullptr || target->instance != &inst) target = &scratch;
      auto msgs = co_await inst.QueueReceiveMessages(*target, r);
      val out = val::array();
      for (const auto& m : msgs) {
        val msg = val::object();
        msg.set("id", static_cast<double>(m.id));
        msg.set("name", m.name);
        msg.set("body", ToJs(m.body));
        msg.set("createdAt", static_cast<double>(m.created_at));
        out.call<void>("push", msg);
      }
      co_return out;
    });
  }
  val queueComplete(int h, int inv, double id, val response) {
    std::optional<Value> resp;
    try {
      if (!response.isUndefined()) resp = FromJs(response);
    } catch (...) {
      return Host().call<val>("rejected", ErrorToJs(std::current_exception()));
    }
    return Async(h, [this, inv, id, resp = std::move(resp)](Instance& inst) -> Task<val> {
      Invocation scratch(&inst, nullptr, nullptr);
      Invocation* target = FindInv(inv);
      if (target == nullptr || target->instance != &inst) target = &scratch;
      co_await inst.QueueComplete(*target, static_cast<uint64_t>(id), resp);
      co_return val::undefined();
    });
  }

  // SQL (remote in wasm). `params`: an array (positional) or an object (named).
  val sqlExec(int h, std::string sql_text) {
    return AsyncSql(h, [sql_text = std::move(sql_text)](Instance& inst) -> Task<val> {
      sql::QueryResult r = co_await inst.Database().Exec(sql_text);
      val out = val::object();
      out.set("columns", ColumnsToJs(r.columns));
      out.set("rows", RowsToJs(r.rows));
      co_return out;
    });
  }
  val sqlExecute(int h, std::string sql_text, val params, bool write) {
    std::optional<sql::Params> p;
    try {
      if (!params.isUndefined() && !params.isNull()) p = ParamsFromJs(params, sql_text);
    } catch (...) {
      return Host().call<val>("rejected", ErrorToJs(std::current_exception()));
    }
    return AsyncSql(h, [sql_text = std::move(sql_text), p = std::move(p), write](Instance& inst) -> Task<val> {
      sql::ExecuteResult r;
      if (write) {
        r = co_await inst.Database().ExecuteWrite(sql_text, p);
      } else {
        r = co_await inst.Database().Execute(sql_text, p);
      }
      val out = val::object();
      out.set("columns", ColumnsToJs(r.columns));
      out.set("rows", RowsToJs(r.rows));
      out.set("changes", static_cast<double>(r.changes));
      out.set("lastInsertRowId", r.last_insert_row_id ? val(static_cast<double>(*r.last_insert_row_id)) : val::null());
      out.set("route", std::string(sql::RouteName(r.route)));
      co_return out;
    });
  }
  val sqlWriteMode(int h, bool enter) {
    return Sync([&] {
      Instance& inst = Inst(h);
      if (enter) {
        inst.Database().EnterWriteMode();
      } else {
        inst.Database().LeaveWriteMode();
      }
      return val::undefined();
    });
  }
  val sqlBackend(int h) {
    return Sync([&] { return val(std::string(runtime::SqliteBackendName(Inst(h).Database().kind()))); });
  }

 private:
  struct InstRef {
    std::string actor_id;
    uint32_t generation = 0;
  };
  struct CachedConnState {
    std::weak_ptr<runtime::Conn> conn;
    val value = val::undefined();
    bool touched = false;
  };

  static bool IsFn(const val& obj, const char* name) {
    return obj[name].typeOf().as<std::string>() == "function";
  }
  static std::string ConnKey(const Instance& inst, std::string_view conn_id) {
    std::string key = inst.actor_id();
    key += '\0';
    key += std::to_string(inst.generation());
    key += '\0';
    key += conn_id;
    return key;
  }

  // The handle JS contexts use for `inst` (stable for the instance's life).
  int HandleOf(Instance& inst) {
    auto key = std::make_pair(inst.actor_id(), inst.generation());
    auto it = handle_of_.find(key);
    if (it != handle_of_.end()) return it->second;
    if (refs_.size() >= sweep_at_) Sweep();
    const int h = ++next_handle_;
    refs_.emplace(h, InstRef{inst.actor_id(), inst.generation()});
    handle_of_.emplace(std::move(key), h);
    return h;
  }
  void Sweep() {
    for (auto it = refs_.begin(); it != refs_.end();) {
      Instance* inst = core_->Find(it->second.actor_id);
      if (inst == nullptr || inst->generation() != it->second.generation) {
        handle_of_.erase(std::make_pair(it->second.actor_id, it->second.generation));
        it = refs_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = conn_states_.begin(); it != conn_states_.end();) {
      it = it->second.conn.expired() ? conn_states_.erase(it) : std::next(it);
    }
    sweep_at_ = std::max<size_t>(64, refs_.size() * 2);
  }
  // The instance behind handle `h`, or nullptr once it has stopped.
  Instance* Live(int h) {
    auto it = refs_.find(h);
    Instance* inst = it == refs_.end() ? nullptr : core_->Find(it->second.actor_id);
    if (inst == nullptr || inst->generation() != it->second.generation ||
        inst->phase() == runtime::Phase::kStopped) {
      return nullptr;
    }
    return inst;
  }
  Instance& Inst(int h) {
    Instance* inst = Live(h);
    if (inst == nullptr) throw ActorError("actor", "stopped", "this actor instance has stopped", std::nullopt, true);
    return *inst;
  }
  runtime::Conn& ConnOf(int h, const std::string& conn_id) {
    Instance& inst = Inst(h);
    auto it = inst.conns().find(conn_id);
    if (it == inst.conns().end()) throw ActorError("actor", "conn_not_found", "connection not found");
    return *it->second;
  }
  static val EntriesToJs(const std::vector<std::pair<Bytes, Bytes>>& entries) {
    val out = val::array();
    for (const auto& [k, v] : entries) {
      val pair = val::array();
      pair.call<void>("push", BytesToJs(k));
      pair.call<void>("push", BytesToJs(v));
      out.call<void>("push", pair);
    }
    return out;
  }
  std::shared_ptr<runtime::RawSocket> RawOf(int ws_id) {
    auto it = raw_sockets_.find(ws_id);
    std::shared_ptr<runtime::RawSocket> raw = it == raw_sockets_.end() ? nullptr : it->second.lock();
    if (!raw || raw->closed()) throw ActorError("actor", "websocket_closed", "this WebSocket is closed");
    return raw;
  }
  static val RequestToJs(const runtime::Request& req) {
    val request = val::object();
    request.set("method", req.method);
    request.set("path", req.path);
    request.set("query", req.query);
    val headers = val::array();
    for (const auto& [k, v] : req.headers) {
      val pair = val::array();
      pair.call<void>("push", k);
      pair.call<void>("push", v);
      headers.call<void>("push", pair);
    }
    request.set("headers", headers);
    return request;
  }
  Invocation* FindInv(int inv) {
    auto it = invocations_.find(inv);
    return it == invocations_.end() ? nullptr : it->second;
  }

  // `fn` converts arguments (which may throw a structured error) and returns a promise;
  // a conversion error becomes a rejected promise, as the operation's own errors are.
  template <typename F>
  static val Guarded(F fn) {
    try {
      return fn();
    } catch (...) {
      return Host().call<val>("rejected", ErrorToJs(std::current_exception()));
    }
  }
  template <typename F>
  val Sync(F fn) {
    try {
      return fn();
    } catch (...) {
      return FailMarker(std::current_exception());
    }
  }
  // SQL of an instance that has stopped fails as the core's closed database does
  // (sqlite.closed), not with actor.stopped.
  template <typename F>
  val AsyncSql(int h, F fn) {
    if (Live(h) == nullptr) {
      return Host().call<val>("rejected",
                              ErrorToJs(std::make_exception_ptr(ActorError(
                                  "sqlite", "closed", "Database is closed. Actor stopping: database accessed after actor stopped"))));
    }
    return Async(h, std::move(fn));
  }
  template <typename F>
  val Async(int h, F fn) {
    Instance* inst = nullptr;
    try {
      inst = &Inst(h);
    } catch (...) {
      return Host().call<val>("rejected", ErrorToJs(std::current_exception()));
    }
    return ToPromise(RunAsync(*inst, std::move(fn)));
  }
  template <typename F>
  static Task<val> RunAsync(Instance& inst, F fn) {
    co_return co_await fn(inst);
  }
  static Task<void> AwaitVoid(val promise) { co_await AwaitJs(std::move(promise)); }

  // {handle, inv, actorId, name, key, generation, conn} for the JS context.
  val CtxInfo(Invocation& inv, int inv_handle) {
    Instance& inst = *inv.instance;
    val info = val::object();
    info.set("handle", HandleOf(inst));
    info.set("inv", inv_handle);
    info.set("actorId", inst.actor_id());
    info.set("name", inst.name());
    info.set("generation", static_cast<double>(inst.generation()));
    val key = val::array();
    for (const auto& k : inst.key()) key.call<void>("push", k);
    info.set("key", key);
    if (inv.conn && !inv.conn->transient()) info.set("conn", inv.conn->id());
    if (inv.conn) info.set("connId", inv.conn->id());
    if (inv.request != nullptr) info.set("request", RequestToJs(*inv.request));
    if (inv.instance->in_state_change()) info.set("inStateChange", true);
    return info;
  }

  // Calls a JS hook/action with a context for `inv`; registers the invocation for the
  // call's duration, writes back the connection states JS touched, and releases a queue
  // message the call received without completing.
  Task<val> Call(val fn, Invocation& inv, val args, const char* entry = "invoke") {
    const int id = ++next_inv_;
    invocations_.emplace(id, &inv);
    struct Cleanup {
      WasmRuntime* self;
      Invocation& inv;
      int id;
      ~Cleanup() {
        self->invocations_.erase(id);
        self->WriteBackConnStates();
        if (!inv.holding.empty() && inv.instance != nullptr) inv.instance->QueueRelease(inv);
      }
    } cleanup{this, inv, id};
    val r = host_.call<val>(entry, fn, CtxInfo(inv, id), args);
    val result = co_await AwaitJs(std::move(r));
    // What this call did to the state must be savable: fail it now, with the reason,
    // rather than answer and keep the change only in memory.
    if (inv.instance != nullptr && !inv.instance->in_state_change()) CheckState(*inv.instance);
    co_return result;
  }

  void WriteBackConnStates() {
    for (auto& [key, cached] : conn_states_) {
      if (!cached.touched) continue;
      cached.touched = false;
      if (auto conn = cached.conn.lock()) {
        try {
          conn->state() = FromJs(cached.value);
        } catch (const std::exception& e) {
          LogWarn("wasm", "connection state is not serializable", {{"error", e.what()}});
        }
      }
    }
  }

  runtime::HookFn Hook(val fn) {
    return [this, fn](Invocation inv) -> Task<void> { co_await Call(fn, inv, val::array()); };
  }
  runtime::InputHookFn InputHook(val fn) {
    return [this, fn](Invocation inv, Value input) -> Task<void> {
      val args = val::array();
      args.call<void>("push", ToJs(input));
      co_await Call(fn, inv, args);
    };
  }
  runtime::ConnHookFn ConnHook(val fn) {
    return [this, fn](Invocation inv) -> Task<void> { co_await Call(fn, inv, val::array()); };
  }

  val host_;
  JsClock clock_;
  std::unique_ptr<Random> random_;
  JsTransport transport_;
  envoy::EnvoyConfig config_;
  std::unique_ptr<runtime::Runtime> core_;
  std::unique_ptr<envoy::EnvoyClient> client_;
  bool stopped_ = false;
  std::vector<val> on_stopped_;
  std::vector<val> on_connected_;

  int next_handle_ = 0;
  size_t sweep_at_ = 64;
  std::map<int, InstRef> refs_;
  std::map<std::pair<std::string, uint32_t>, int> handle_of_;
  int next_inv_ = 0;
  std::map<int, Invocation*> invocations_;
  std::map<std::string, CachedConnState> conn_states_;
  int next_ws_ = 0;
  std::map<int, std::weak_ptr<runtime::RawSocket>> raw_sockets_;
};

}  // namespace keel::wasm

EMSCRIPTEN_BINDINGS(keel_wasm) {
  using keel::wasm::WasmRuntime;
  emscripten::function("bridgeSettle", &keel::wasm::BridgeSettle);
  emscripten::class_<WasmRuntime>("WasmRuntime")
      .constructor<emscripten::val, emscripten::val>()
      .function("registerActor", &WasmRuntime::registerActor)
      .function("start", &WasmRuntime::start)
      .function("shutdown", &WasmRuntime::shutdown)
      .function("injectStart", &WasmRuntime::injectStart)
      .function("hostedActors", &WasmRuntime::hostedActors)
      .function("envoyKey", &WasmRuntime::envoyKey)
      .function("connected", &WasmRuntime::connected)
      .function("whenConnected", &WasmRuntime::whenConnected)
      .function("instanceCount", &WasmRuntime::instanceCount)
      .function("timerFired", &WasmRuntime::timerFired)
      .function("wsOpened", &WasmRuntime::wsOpened)
      .function("wsMessage", &WasmRuntime::wsMessage)
      .function("wsClosed", &WasmRuntime::wsClosed)
      .function("getState", &WasmRuntime::getState)
      .function("setState", &WasmRuntime::setState)
      .function("rawSend", &WasmRuntime::rawSend)
      .function("rawClose", &WasmRuntime::rawClose)
      .function("getVars", &WasmRuntime::getVars)
      .function("setVars", &WasmRuntime::setVars)
      .function("broadcast", &WasmRuntime::broadcast)
      .function("schedule", &WasmRuntime::schedule)
      .function("sleep", &WasmRuntime::sleep)
      .function("destroy", &WasmRuntime::destroy)
      .function("keepAwake", &WasmRuntime::keepAwake)
      .function("waitUntil", &WasmRuntime::waitUntil)
      .function("aborted", &WasmRuntime::aborted)
      .function("saveState", &WasmRuntime::saveState)
      .function("nowMs", &WasmRuntime::nowMs)
      .function("connIds", &WasmRuntime::connIds)
      .function("connParams", &WasmRuntime::connParams)
      .function("connGetState", &WasmRuntime::connGetState)
      .function("connSetState", &WasmRuntime::connSetState)
      .function("connSend", &WasmRuntime::connSend)
      .function("connDisconnect", &WasmRuntime::connDisconnect)
      .function("kvGet", &WasmRuntime::kvGet)
      .function("kvPut", &WasmRuntime::kvPut)
      .function("kvDelete", &WasmRuntime::kvDelete)
      .function("kvList", &WasmRuntime::kvList)
      .function("kvDeleteRange", &WasmRuntime::kvDeleteRange)
      .function("kvListRange", &WasmRuntime::kvListRange)
      .function("queueSize", &WasmRuntime::queueSize)
      .function("connFlags", &WasmRuntime::connFlags)
      .function("queueSend", &WasmRuntime::queueSend)
      .function("queueReceive", &WasmRuntime::queueReceive)
      .function("queueComplete", &WasmRuntime::queueComplete)
      .function("sqlExec", &WasmRuntime::sqlExec)
      .function("sqlExecute", &WasmRuntime::sqlExecute)
      .function("sqlWriteMode", &WasmRuntime::sqlWriteMode)
      .function("sqlBackend", &WasmRuntime::sqlBackend);
}
