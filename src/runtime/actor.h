// The C++ actor API (actors.md §1–§2): typed state, actions as plain functions or
// coroutines, hooks, events, KV, schedule — mapped to json/cbor/bare by keel::ToValue /
// keel::FromValue (value/typed.h), with no macros.
//
//   struct Counter { int64_t count = 0; };
//   keel::ActorDef<Counter> counter("counter");
//   counter.action("increment", [](keel::Ctx<Counter>& c, int64_t n) {
//     c.state().count += n;
//     c.broadcast("newCount", c.state().count);
//     return c.state().count;   // durable before this reaches the client
//   });
//
// A callable's first parameter is the context (`Ctx<State, Vars>&`); the remaining
// parameters are the action's arguments, decoded from the client's argument array (a
// missing trailing argument decodes from `undefined`, so std::optional parameters may be
// omitted). It returns a value, nothing, or a `keel::Task<T>` (then it may `co_await`).
// Throw keel::UserError(...) for a structured error the client sees as it is; any other
// exception reaches clients as `rivetkit.internal_error`.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/core.h"
#include "runtime/task.h"
#include "value/typed.h"
#include "value/value.h"

namespace keel {

using runtime::ActorError;
using runtime::ActorOptions;
using runtime::Conn;
using runtime::Request;
using runtime::Response;
using runtime::UserError;

// State type of an actor without state (`c.state()` then throws actor.state_not_enabled).
struct NoState {};
// Vars type of an actor without vars.
struct NoVars {};

// The actor's KV (actors.md §2.4). Writes are buffered and committed before the next
// response leaves the actor; reads see them at once.
class Kv {
 public:
  explicit Kv(runtime::Instance& inst) : inst_(inst) {}
  Task<std::optional<std::string>> get(std::string_view key) {
    auto v = co_await inst_.KvGet(Bytes(key.begin(), key.end()));
    if (!v) co_return std::nullopt;
    co_return std::string(v->begin(), v->end());
  }
  Task<std::optional<Bytes>> get_bytes(Bytes key) { return inst_.KvGet(std::move(key)); }
  void put(std::string_view key, std::string_view value) {
    inst_.KvPut(Bytes(key.begin(), key.end()), Bytes(value.begin(), value.end()));
  }
  void put_bytes(Bytes key, Bytes value) { inst_.KvPut(std::move(key), std::move(value)); }
  void del(std::string_view key) { inst_.KvDelete(Bytes(key.begin(), key.end())); }
  // Batch variants (one engine request for the reads; writes batch anyway). Unlike
  // Rivet's, they use the same user-key prefix as the single-key calls.
  Task<std::vector<std::optional<std::string>>> batch_get(std::vector<std::string> keys) {
    std::vector<Bytes> raw;
    raw.reserve(keys.size());
    for (const auto& k : keys) raw.emplace_back(k.begin(), k.end());
    auto values = co_await inst_.KvGetMany(std::move(raw));
    std::vector<std::optional<std::string>> out;
    out.reserve(values.size());
    for (auto& v : values) {
      out.push_back(v ? std::optional<std::string>(std::string(v->begin(), v->end())) : std::nullopt);
    }
    co_return out;
  }
  void batch_put(const std::vector<std::pair<std::string, std::string>>& entries) {
    for (const auto& [k, v] : entries) put(k, v);
  }
  void batch_delete(const std::vector<std::string>& keys) {
    for (const auto& k : keys) del(k);
  }
  // Entries whose key starts with `prefix`, ascending (descending with `reverse`).
  Task<std::vector<std::pair<std::string, std::string>>> list(std::string_view prefix,
                                                              bool reverse = false,
                                                              std::optional<uint64_t> limit = {}) {
    auto rows = co_await inst_.KvListPrefix(Bytes(prefix.begin(), prefix.end()), reverse, limit);
    co_return AsText(std::move(rows));
  }
  // Entries in [start, end).
  Task<std::vector<std::pair<std::string, std::string>>> list_range(std::string_view start,
                                                                    std::string_view end,
                                                                    bool reverse = false,
                                                                    std::optional<uint64_t> limit = {}) {
    auto rows = co_await inst_.KvListRange(Bytes(start.begin(), start.end()),
                                          Bytes(end.begin(), end.end()), reverse, limit);
    co_return AsText(std::move(rows));
  }
  Task<void> delete_range(std::string_view start, std::string_view end) {
    return inst_.KvDeleteRange(Bytes(start.begin(), start.end()), Bytes(end.begin(), end.end()));
  }

 private:
  static std::vector<std::pair<std::string, std::string>> AsText(
      std::vector<std::pair<Bytes, Bytes>> rows) {
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(rows.size());
    for (auto& [k, v] : rows) out.emplace_back(std::string(k.begin(), k.end()), std::string(v.begin(), v.end()));
    return out;
  }
  runtime::Instance& inst_;
};

// Durable alarms (actors.md §2.6): the target is an action of this actor.
class Schedule {
 public:
  explicit Schedule(runtime::Instance& inst) : inst_(inst) {}
  template <typename... A>
  std::string after(std::chrono::milliseconds delay, std::string action, const A&... args) {
    int64_t at = 0;  // saturates: a delay past the end of time is "never" (INT64_MAX)
    if (__builtin_add_overflow(inst_.NowMs(), delay.count(), &at)) {
      at = delay.count() > 0 ? INT64_MAX : INT64_MIN;
    }
    return inst_.ScheduleAt(at, std::move(action), Value(Value::Array{ToValue(args)...}));
  }
  template <typename... A>
  std::string at(int64_t epoch_ms, std::string action, const A&... args) {
    return inst_.ScheduleAt(epoch_ms, std::move(action), Value(Value::Array{ToValue(args)...}));
  }

 private:
  runtime::Instance& inst_;
};

// The actor's durable queue (actors.md §2.7).
class Queue {
 public:
  using Message = runtime::Instance::QueueMessage;
  using Receive = runtime::Instance::QueueReceive;

  Queue(runtime::Instance& inst, runtime::Invocation& inv) : inst_(inst), inv_(inv) {}

  // Stores a message; returns its id (ids start at 1). Errors: queue.full,
  // queue.message_too_large.
  template <typename T>
  Task<uint64_t> send(std::string name, const T& body) {
    return inst_.QueueSend(std::move(name), ToValue(body));
  }
  // The next matching message, waiting up to `options.timeout` (forever when unset);
  // nullopt on timeout. Errors: actor.aborted when the actor starts shutting down.
  Task<std::optional<Message>> next(Receive options = {}) {
    options.count = 1;
    auto got = co_await inst_.QueueReceiveMessages(inv_, std::move(options));
    if (got.empty()) co_return std::nullopt;
    co_return std::move(got.front());
  }
  // Up to `count` messages; empty on timeout.
  Task<std::vector<Message>> next_batch(size_t count, Receive options = {}) {
    options.count = count;
    return inst_.QueueReceiveMessages(inv_, std::move(options));
  }
  // Without waiting.
  Task<std::optional<Message>> try_next(Receive options = {}) {
    options.timeout = std::chrono::milliseconds(0);
    return next(std::move(options));
  }
  // Completes a message received with `completable`; `response` goes to a sender waiting
  // on it. Errors: queue.already_completed.
  template <typename T>
  Task<void> complete(const Message& message, const T& response) {
    return inst_.QueueComplete(inv_, message.id, ToValue(response));
  }
  Task<void> complete(const Message& message) { return inst_.QueueComplete(inv_, message.id, std::nullopt); }
  size_t size() const { return inst_.queue_size(); }

 private:
  runtime::Instance& inst_;
  runtime::Invocation& inv_;
};

namespace internal {
// A completable queue message the invocation did not complete goes back to the queue
// when the action, hook or handler ends. Every wrapper that makes a context declares one.
struct ReleaseQueueHold {
  runtime::Invocation& inv;
  ~ReleaseQueueHold() {
    if (!inv.holding.empty()) inv.instance->QueueRelease(inv);
  }
};
}  // namespace internal

// A queue message's body as T (actor.invalid_request when it does not fit).
template <typename T>
T BodyAs(const Queue::Message& m) {
  Result<T> r = FromValue<T>(m.body);
  if (!r.ok()) throw ActorError("actor", "invalid_request", "queue message body: " + r.error().message());
  return std::move(*r);
}


// The actor's SQLite database (actors.md §2.5), on the local-native or the remote backend
// (runtime/sql.h). Every call throws ActorError: actor.database_not_configured when the
// actor declared no database, sqlite.* otherwise.
class Db {
 public:
  explicit Db(runtime::Instance& inst) : inst_(inst) {}

  // Rows as objects (column name → value). Without arguments the text may hold several
  // statements, run as one batch (e.g. "BEGIN; …; COMMIT;"), and the rows are those of
  // the last statement that produced any; with arguments it is ONE statement whose `?`
  // placeholders take them in order (null, bool, integers, floats, text, bytes).
  //
  // SQL is taken as std::string_view and copied before anything suspends, and every
  // parameter list has an overload without it, so a call like
  // `co_await c.db().query("SELECT …")` creates no class temporary inside the co_await
  // expression (g++ 12 destroys those twice).
  template <typename... A>
  Task<Value> execute(std::string_view sql, const A&... args) {
    if constexpr (sizeof...(A) == 0) {
      return ExecRows(inst_, std::string(sql));
    } else {
      return ExecuteRows(inst_, std::string(sql), Params(Value::Array{ToValue(args)...}));
    }
  }
  // Named bindings: `:name` / `@name` / `$name` in the SQL, values from `named` (a map
  // keyed by the names without the prefix).
  Task<Value> execute_named(std::string_view sql, const Value& named) {
    Result<sql::Params> params = runtime::BindNamed(sql, named);
    if (!params.ok()) Throw(params.error());
    return ExecuteRows(inst_, std::string(sql), std::move(*params));
  }

  // The lower-level interface (actors.md §2.5).
  Task<sql::QueryResult> exec(std::string_view sql) {
    return inst_.Database().Exec(std::string(sql));
  }
  Task<sql::QueryResult> query(std::string_view sql) { return query(sql, sql::Params{}); }
  Task<sql::QueryResult> query(std::string_view sql, sql::Params params) {
    return QueryOf(inst_, std::string(sql), std::move(params));
  }
  Task<sql::RunResult> run(std::string_view sql) { return run(sql, sql::Params{}); }
  Task<sql::RunResult> run(std::string_view sql, sql::Params params) {
    return RunOf(inst_, std::string(sql), std::move(params));
  }
  Task<sql::ExecuteResult> execute_raw(std::string_view sql) {
    return inst_.Database().Execute(std::string(sql), std::nullopt);
  }
  Task<sql::ExecuteResult> execute_raw(std::string_view sql, sql::Params params) {
    return inst_.Database().Execute(std::string(sql), std::move(params));
  }
  Task<sql::ExecuteResult> execute_write(std::string_view sql) {
    return inst_.Database().ExecuteWrite(std::string(sql), std::nullopt);
  }
  Task<sql::ExecuteResult> execute_write(std::string_view sql, sql::Params params) {
    return inst_.Database().ExecuteWrite(std::string(sql), std::move(params));
  }
  // Runs `fn()` (returning void or Task<void>) with every execute forced to the writer.
  template <typename F>
  Task<void> write_mode(F fn) {
    return WriteMode(inst_, std::function<Task<void>()>(
                                [fn = std::move(fn)]() mutable -> Task<void> {
                                  if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
                                    fn();
                                    co_return;
                                  } else {
                                    co_await fn();
                                  }
                                }));
  }
  // "local" or "remote": the backend this actor's database uses.
  std::string_view backend() {
    return runtime::SqliteBackendName(inst_.Database().kind());
  }

 private:
  [[noreturn]] static void Throw(const Error& e) {
    throw ActorError(e.group(), e.code(), e.message());
  }
  static sql::Params Params(const Value::Array& args) {
    Result<sql::Params> params = runtime::ToSqlParams(args);
    if (!params.ok()) Throw(params.error());
    return std::move(*params);
  }
  static Task<Value> ExecRows(runtime::Instance& inst, std::string sql) {
    sql::QueryResult r = co_await inst.Database().Exec(std::move(sql));
    co_return runtime::RowsToObjects(r.columns, r.rows);
  }
  static Task<Value> ExecuteRows(runtime::Instance& inst, std::string sql, sql::Params params) {
    sql::ExecuteResult r = co_await inst.Database().Execute(std::move(sql), std::move(params));
    co_return runtime::RowsToObjects(r.columns, r.rows);
  }
  static Task<sql::QueryResult> QueryOf(runtime::Instance& inst, std::string sql,
                                        sql::Params params) {
    sql::ExecuteResult r = co_await inst.Database().Execute(std::move(sql), std::move(params));
    co_return sql::QueryResult{std::move(r.columns), std::move(r.rows)};
  }
  static Task<sql::RunResult> RunOf(runtime::Instance& inst, std::string sql, sql::Params params) {
    sql::ExecuteResult r = co_await inst.Database().Execute(std::move(sql), std::move(params));
    co_return sql::RunResult{r.changes, r.last_insert_row_id};
  }
  static Task<void> WriteMode(runtime::Instance& inst, std::function<Task<void>()> fn) {
    runtime::SqlDatabase& db = inst.Database();
    db.EnterWriteMode();
    struct Leave {
      runtime::SqlDatabase& db;
      ~Leave() { db.LeaveWriteMode(); }
    } leave{db};
    co_await fn();
  }
  runtime::Instance& inst_;
};

template <typename S = NoState, typename V = NoVars>
class Ctx {
 public:
  explicit Ctx(runtime::Invocation& inv) : inv_(&inv) {}
  // A copy is a context of its own that may outlive the call it was copied from: pass it
  // by value to work that goes on after the action or hook returned (keep_awake,
  // wait_until, a raw WebSocket's later messages). It shares the calling connection, keeps
  // its own copy of the request, and its completable queue messages go back to the queue
  // when the last copy is gone (unless completed). A reference (`Ctx&`) is valid only
  // during the call.
  Ctx(const Ctx& other)
      : owned_(other.owned_ ? other.owned_ : Detach(*other.inv_)), inv_(&owned_->inv) {}
  Ctx& operator=(const Ctx& other) {
    if (this != &other) {
      owned_ = other.owned_ ? other.owned_ : Detach(*other.inv_);
      inv_ = &owned_->inv;
    }
    return *this;
  }

  // The actor's state. Throws actor.state_not_enabled for stateless actors and
  // actor.state_mutation_reentrant inside onStateChange.
  S& state() {
    if (inv_->instance->in_state_change()) {
      throw ActorError("actor", "state_mutation_reentrant",
                       "State mutations are not allowed inside onStateChange.");
    }
    return *static_cast<S*>(inv_->instance->state_ptr());
  }
  V& vars() { return *static_cast<V*>(inv_->instance->vars_ptr()); }

  const std::string& actor_id() const { return inv_->instance->actor_id(); }
  const std::string& name() const { return inv_->instance->name(); }
  const std::vector<std::string>& key() const { return inv_->instance->key(); }
  int64_t now_ms() const { return inv_->instance->NowMs(); }

  // The calling connection (actions over a connection or HTTP), else nullptr.
  Conn* conn() const { return inv_->conn.get(); }
  // The HTTP request behind the current connection hook or raw request, else nullptr.
  const Request* request() const { return inv_->request; }

  template <typename... A>
  void broadcast(std::string_view event, const A&... args) {
    inv_->instance->Broadcast(event, Value(Value::Array{ToValue(args)...}));
  }
  template <typename... A>
  void send(Conn& conn, std::string_view event, const A&... args) {
    conn.Send(event, Value(Value::Array{ToValue(args)...}));
  }

  Kv kv() { return Kv(*inv_->instance); }
  Queue queue() { return Queue(*inv_->instance, *inv_); }
  Schedule schedule() { return Schedule(*inv_->instance); }
  // The actor's database; throws actor.database_not_configured without ActorDef::database.
  Db db() { return Db(*inv_->instance); }

  void sleep() { inv_->instance->RequestSleep(); }
  void destroy() { inv_->instance->RequestDestroy(); }
  bool aborted() const { return inv_->instance->aborted(); }
  void keep_awake(Task<void> task) { inv_->instance->KeepAwake(std::move(task)); }
  void wait_until(Task<void> task) { inv_->instance->WaitUntil(std::move(task)); }
  // Persists now and resumes once the engine committed (state is saved before every
  // response anyway; this is for long actions that want a checkpoint midway).
  Task<void> save_state() { return inv_->instance->SaveState(); }
  // Persists at the latest `max_wait` from now — sooner when a throttled save is due sooner
  // (ActorOptions::state_save_interval) — and resumes once the engine committed.
  Task<void> save_state(std::chrono::milliseconds max_wait) {
    return inv_->instance->SaveState(max_wait);
  }

  runtime::Instance& instance() { return *inv_->instance; }

 private:
  // The invocation of a copied context (see the copy constructor).
  struct Owned {
    runtime::Invocation inv;
    std::optional<Request> request;
    Owned() = default;
    Owned(const Owned&) = delete;
    Owned& operator=(const Owned&) = delete;
    ~Owned() {
      // (A stopped instance's next one loads in-flight messages as available anyway.)
      if (!inv.holding.empty() && inv.instance->phase() != runtime::Phase::kStopped) {
        inv.instance->QueueRelease(inv);
      }
    }
  };
  static std::shared_ptr<Owned> Detach(const runtime::Invocation& from) {
    auto owned = std::make_shared<Owned>();
    owned->inv.instance = from.instance;
    owned->inv.conn = from.conn;
    owned->inv.is_run = from.is_run;
    if (from.request != nullptr) {
      owned->request.emplace(*from.request);
      owned->inv.request = &*owned->request;
    }
    return owned;
  }

  std::shared_ptr<Owned> owned_;  // set for copies
  runtime::Invocation* inv_;
};

namespace internal {
template <typename T>
struct IsTask;
}  // namespace internal

// A raw WebSocket in onWebSocket (actors.md §4.9). Handlers get a fresh context per call, so
// they may outlive the onWebSocket hook that installed them.
template <typename Context>
class WebSocket {
 public:
  WebSocket(runtime::Instance* inst, std::shared_ptr<Conn> conn, std::shared_ptr<runtime::RawSocket> raw)
      : inst_(inst), conn_(std::move(conn)), raw_(std::move(raw)) {}

  void send(std::string_view text) { raw_->Send(Bytes(text.begin(), text.end()), false); }
  void send_binary(Bytes data) { raw_->Send(std::move(data), true); }
  void close(uint16_t code = 1000, std::string reason = "") { raw_->Close(code, std::move(reason)); }
  const Request& request() const { return raw_->request(); }
  Conn& conn() { return *conn_; }
  // Inside a message handler: the gateway's index of the message being handled (from 1, +1
  // per client message; Rivet's event.rivetMessageIndex). 0 elsewhere.
  uint16_t message_index() const { return message_index_; }
  // The socket survives the actor's sleep (ActorOptions::can_hibernate_websocket).
  bool hibernatable() const { return raw_->hibernatable(); }
  // onWebSocket is running again for a socket restored from hibernation (the new instance
  // installs its handlers; the client saw no reconnect).
  bool restored() const { return raw_->restored(); }

  // `fn(Context&, std::string_view data, bool binary)` or `fn(Context&, WebSocket&,
  // std::string_view data, bool binary)` (to answer on this socket), returning nothing or
  // Task<void>. The handler may outlive the hook that installed it; it must not capture
  // this WebSocket (take the argument instead).
  template <typename F>
  void on_message(F fn) {
    // Weak: the connection owns the socket, which owns this handler.
    raw_->OnMessage([inst = inst_, weak = std::weak_ptr<Conn>(conn_),
                     weak_raw = std::weak_ptr<runtime::RawSocket>(raw_),
                     fn = std::move(fn)](Bytes data, bool binary, uint16_t index) -> Task<void> {
      std::shared_ptr<Conn> conn = weak.lock();
      std::shared_ptr<runtime::RawSocket> raw = weak_raw.lock();
      if (!conn || !raw) co_return;
      WebSocket self(inst, conn, raw);
      self.message_index_ = index;
      runtime::Invocation inv(inst, std::move(conn), nullptr);
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
      if constexpr (std::is_invocable_v<const F&, Context&, WebSocket&, std::string_view, bool>) {
        using R = std::invoke_result_t<const F&, Context&, WebSocket&, std::string_view, bool>;
        if constexpr (internal::IsTask<R>::value) {
          co_await fn(ctx, self, text, binary);
        } else {
          fn(ctx, self, text, binary);
        }
      } else {
        using R = std::invoke_result_t<const F&, Context&, std::string_view, bool>;
        if constexpr (internal::IsTask<R>::value) {
          co_await fn(ctx, text, binary);
        } else {
          fn(ctx, text, binary);
        }
      }
    });
  }
  // `fn(Context&, uint16_t code, std::string_view reason)` when the client closes.
  template <typename F>
  void on_close(F fn) {
    raw_->OnClose([inst = inst_, weak = std::weak_ptr<Conn>(conn_), fn = std::move(fn)](
                      uint16_t code, std::string reason) -> Task<void> {
      std::shared_ptr<Conn> conn = weak.lock();
      if (!conn) co_return;
      runtime::Invocation inv(inst, std::move(conn), nullptr);
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      using R = std::invoke_result_t<const F&, Context&, uint16_t, std::string_view>;
      if constexpr (internal::IsTask<R>::value) {
        co_await fn(ctx, code, std::string_view(reason));
      } else {
        fn(ctx, code, std::string_view(reason));
      }
    });
  }

 private:
  runtime::Instance* inst_;
  std::shared_ptr<Conn> conn_;
  std::shared_ptr<runtime::RawSocket> raw_;
  uint16_t message_index_ = 0;
};

namespace internal {

template <typename T>
struct IsTask : std::false_type {};
template <typename T>
struct IsTask<Task<T>> : std::true_type {
  using Inner = T;
};

template <typename F>
struct FnTraits : FnTraits<decltype(&std::decay_t<F>::operator())> {};
template <typename C, typename R, typename... A>
struct FnTraits<R (C::*)(A...) const> {
  using Ret = R;
  using Args = std::tuple<A...>;
};
template <typename C, typename R, typename... A>
struct FnTraits<R (C::*)(A...)> {
  using Ret = R;
  using Args = std::tuple<A...>;
};
template <typename R, typename... A>
struct FnTraits<R (*)(A...)> {
  using Ret = R;
  using Args = std::tuple<A...>;
};
template <typename R, typename... A>
struct FnTraits<R(A...)> {
  using Ret = R;
  using Args = std::tuple<A...>;
};

template <typename Tuple>
struct DropFirst;
template <typename First, typename... Rest>
struct DropFirst<std::tuple<First, Rest...>> {
  using type = std::tuple<std::decay_t<Rest>...>;
};

// Decodes the argument array into the tuple of parameter types.
template <typename Tuple, size_t... I>
Tuple DecodeArgs(const std::string& action, const Value& args, std::index_sequence<I...>) {
  static const Value kUndefined = Value::MakeUndefined();
  const Value::Array* arr = args.is_array() ? &args.as_array() : nullptr;
  auto at = [&](size_t i) -> const Value& {
    return arr != nullptr && i < arr->size() ? (*arr)[i] : kUndefined;
  };
  auto one = [&](auto tag, size_t i) {
    using T = typename decltype(tag)::type;
    Result<T> r = FromValue<T>(at(i));
    if (!r.ok()) {
      throw ActorError("actor", "invalid_request",
                       "argument " + std::to_string(i + 1) + " of `" + action + "`: " +
                           r.error().message());
    }
    return std::move(*r);
  };
  (void)one;  // unused for actions without arguments
  return Tuple{one(std::type_identity<std::tuple_element_t<I, Tuple>>{}, I)...};
}

// Awaits the callable's result, whatever its shape, and maps it to a Value.
template <typename R>
struct ResultMapper {
  template <typename Call>
  static Task<Value> Run(Call call) {
    if constexpr (IsTask<R>::value) {
      using Inner = typename IsTask<R>::Inner;
      if constexpr (std::is_void_v<Inner>) {
        co_await call();
        co_return Value(Value::Null{});
      } else {
        Inner v = co_await call();
        co_return ToValue(v);
      }
    } else if constexpr (std::is_void_v<R>) {
      call();
      co_return Value(Value::Null{});
    } else {
      R v = call();
      co_return ToValue(v);
    }
  }
};

// Runs a hook-like callable (`R f(Ctx&, extra...)`, R void or Task<void>).
template <typename R>
Task<void> RunVoid(std::function<R()> call) {
  if constexpr (IsTask<R>::value) {
    co_await call();
  } else {
    call();
  }
}

}  // namespace internal

template <typename S = NoState, typename V = NoVars>
class ActorDef {
 public:
  using Context = Ctx<S, V>;

  explicit ActorDef(std::string name, ActorOptions options = {})
      : type_(std::make_shared<runtime::ActorType>()) {
    type_->name = std::move(name);
    type_->options = options;
    if constexpr (!std::is_same_v<S, NoState>) {
      type_->has_state = true;
      type_->make_state = [] { return std::make_unique<TypedSlot<S, true>>(); };
    }
    type_->make_vars = [] { return std::make_unique<TypedSlot<V, false>>(); };
  }

  ActorOptions& options() { return type_->options; }

  // An action: `R fn(Ctx&, Args...)`.
  template <typename F>
  ActorDef& action(std::string name, F fn) {
    using Traits = internal::FnTraits<F>;
    using Args = typename internal::DropFirst<typename Traits::Args>::type;
    using R = typename Traits::Ret;
    std::string action_name = name;
    type_->actions[std::move(name)] = [fn = std::move(fn), action_name](
                                          runtime::Invocation inv, Value args) -> Task<Value> {
      return Invoke<R, Args>(fn, std::move(inv), action_name, std::move(args));
    };
    return *this;
  }

  // Declares a queue clients may send to; `can_publish(Ctx&) -> bool` may veto a send.
  ActorDef& queue(std::string name) {
    type_->queues[std::move(name)] = nullptr;
    return *this;
  }
  template <typename F>
  ActorDef& queue(std::string name, F can_publish) {
    type_->queues[std::move(name)] = Check(std::move(can_publish));
    return *this;
  }

  // Declares an event; `can_subscribe(Ctx&) -> bool` may veto a subscription.
  ActorDef& event(std::string name) {
    type_->events[std::move(name)] = nullptr;
    return *this;
  }
  template <typename F>
  ActorDef& event(std::string name, F can_subscribe) {
    type_->events[std::move(name)] = Check(std::move(can_subscribe));
    return *this;
  }

  // createState: `S fn(Ctx&)` or `S fn(Ctx&, Input)` (or Task<S>), first start only.
  template <typename F>
  ActorDef& create_state(F fn) {
    type_->create_state = [fn = std::move(fn)](runtime::Invocation inv, Value input) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      S s = co_await CallWithInput<S>(fn, ctx, input);
      *static_cast<S*>(inv.instance->state_ptr()) = std::move(s);
    };
    return *this;
  }
  // onCreate: `fn(Ctx&)` or `fn(Ctx&, Input)`, first start only.
  template <typename F>
  ActorDef& on_create(F fn) {
    type_->on_create = [fn = std::move(fn)](runtime::Invocation inv, Value input) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      co_await CallWithInput<void>(fn, ctx, input);
    };
    return *this;
  }
  // Declares the actor's SQLite database (actors.md §2.5). `migrate(Db&)` (void or
  // Task<void>), when given, runs at every start — create and wake — in write mode, before
  // onMigrate and state creation/restore; it must be idempotent (guard on
  // `PRAGMA user_version`, or use IF NOT EXISTS).
  ActorDef& database() {
    type_->has_database = true;
    return *this;
  }
  template <typename F>
  ActorDef& database(F migrate) {
    type_->has_database = true;
    type_->db_migrate = [migrate = std::move(migrate)](runtime::Invocation inv, bool) -> Task<void> {
      Db db(*inv.instance);
      std::function<std::invoke_result_t<F&, Db&>()> call = [&] { return migrate(db); };
      co_await internal::RunVoid<std::invoke_result_t<F&, Db&>>(std::move(call));
    };
    return *this;
  }
  // onMigrate: `fn(Ctx&, bool is_new)`, every start, before state is created or restored.
  template <typename F>
  ActorDef& on_migrate(F fn) {
    type_->on_migrate = [fn = std::move(fn)](runtime::Invocation inv, bool is_new) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      co_await internal::RunVoid<std::invoke_result_t<F&, Context&, bool>>([&] { return fn(ctx, is_new); });
    };
    return *this;
  }
  // createVars: `V fn(Ctx&)` (or Task<V>), every start.
  template <typename F>
  ActorDef& create_vars(F fn) {
    type_->create_vars = [fn = std::move(fn)](runtime::Invocation inv) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      using R = std::invoke_result_t<F&, Context&>;
      if constexpr (internal::IsTask<R>::value) {
        ctx.vars() = co_await fn(ctx);
      } else {
        ctx.vars() = fn(ctx);
      }
    };
    return *this;
  }
  template <typename F>
  ActorDef& on_wake(F fn) { type_->on_wake = Hook(std::move(fn)); return *this; }
  template <typename F>
  ActorDef& on_before_actor_start(F fn) { type_->on_before_actor_start = Hook(std::move(fn)); return *this; }
  // run: a background task started after startup; returning does not stop the actor.
  template <typename F>
  ActorDef& run(F fn) { type_->run = Hook(std::move(fn)); return *this; }
  template <typename F>
  ActorDef& on_sleep(F fn) { type_->on_sleep = Hook(std::move(fn)); return *this; }
  template <typename F>
  ActorDef& on_destroy(F fn) { type_->on_destroy = Hook(std::move(fn)); return *this; }

  // onBeforeConnect: `fn(Ctx&, const Value& params)`; throwing rejects the connection.
  template <typename F>
  ActorDef& on_before_connect(F fn) {
    type_->on_before_connect = [fn = std::move(fn)](runtime::Invocation inv, Request req,
                                                    Value params) -> Task<void> {
      inv.request = &req;
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      co_await internal::RunVoid<std::invoke_result_t<F&, Context&, const Value&>>(
          [&] { return fn(ctx, params); });
    };
    return *this;
  }
  // createConnState: `T fn(Ctx&, const Value& params)`; T is stored as the conn's state.
  template <typename F>
  ActorDef& create_conn_state(F fn) {
    type_->create_conn_state = [fn = std::move(fn)](runtime::Invocation inv, Request req,
                                                    Value params) -> Task<Value> {
      inv.request = &req;
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      using R = std::invoke_result_t<F&, Context&, const Value&>;
      co_return co_await internal::ResultMapper<R>::Run([&fn, &ctx, &params] { return fn(ctx, params); });
    };
    return *this;
  }
  template <typename F>
  ActorDef& on_connect(F fn) { type_->on_connect = ConnHook(std::move(fn)); return *this; }
  template <typename F>
  ActorDef& on_disconnect(F fn) { type_->on_disconnect = ConnHook(std::move(fn)); return *this; }

  // onStateChange: synchronous `void fn(Ctx&, const S& state)` after each change an
  // action, hook or timer made (changes are detected when the actor's output is gated).
  template <typename F>
  ActorDef& on_state_change(F fn) {
    type_->on_state_change = [fn = std::move(fn)](runtime::Invocation& inv) {
      Context ctx(inv);
      fn(ctx, *static_cast<const S*>(inv.instance->state_ptr()));
    };
    return *this;
  }

  // onRequest: `Response fn(Ctx&, const Request&)` (or Task<Response>) for /request/….
  template <typename F>
  ActorDef& on_request(F fn) {
    type_->on_request = [fn = std::move(fn)](runtime::Invocation inv, Request req) -> Task<Response> {
      inv.request = &req;
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      using R = std::invoke_result_t<F&, Context&, const Request&>;
      if constexpr (internal::IsTask<R>::value) {
        co_return co_await fn(ctx, req);
      } else {
        co_return fn(ctx, req);
      }
    };
    return *this;
  }

  // onWebSocket: `fn(Ctx&, WebSocket<Ctx>&)` for WebSocket paths other than /connect (the
  // client uses /websocket/<path>); install handlers with ws.on_message / ws.on_close.
  template <typename F>
  ActorDef& on_websocket(F fn) {
    type_->on_websocket = [fn = std::move(fn)](runtime::Invocation inv,
                                               std::shared_ptr<runtime::RawSocket> raw) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      WebSocket<Context> ws(inv.instance, inv.conn, std::move(raw));
      using R = std::invoke_result_t<F&, Context&, WebSocket<Context>&>;
      if constexpr (internal::IsTask<R>::value) {
        co_await fn(ctx, ws);
      } else {
        fn(ctx, ws);
      }
    };
    return *this;
  }

  std::shared_ptr<const runtime::ActorType> type() const { return type_; }
  const std::string& name() const { return type_->name; }

 private:
  // `kPersisted`: the state, saved and loaded through keel::ToValue/FromValue. Vars are
  // never persisted, so they need no codec and may hold anything (a unique_ptr, a
  // std::function, a client object).
  template <typename T, bool kPersisted>
  class TypedSlot final : public runtime::Slot {
   public:
    void* get() override { return &value_; }
    Value Save() const override {
      if constexpr (!kPersisted || std::is_same_v<T, NoState>) {
        return Value(Value::Null{});
      } else {
        return ToValue(value_);
      }
    }
    void Load(const Value& v) override {
      if constexpr (kPersisted && !std::is_same_v<T, NoState>) {
        Result<T> r = FromValue<T>(v);
        if (!r.ok()) throw ActorError("actor", "invalid_state", r.error().message(), {}, false);
        value_ = std::move(*r);
      }
    }

   private:
    T value_{};
  };

  template <typename R, typename Args, typename F>
  static Task<Value> Invoke(const F& fn, runtime::Invocation inv, std::string action, Value args) {
    Context ctx(inv);
    Args decoded = internal::DecodeArgs<Args>(action, args,
                                              std::make_index_sequence<std::tuple_size_v<Args>>{});
    internal::ReleaseQueueHold release{inv};
    co_return co_await internal::ResultMapper<R>::Run([&fn, &ctx, &decoded] {
      return std::apply([&](auto&... a) { return fn(ctx, std::move(a)...); }, decoded);
    });
  }

  template <typename Out, typename F>
  static Task<Out> CallWithInput(const F& fn, Context& ctx, const Value& input) {
    using Traits = internal::FnTraits<F>;
    constexpr size_t arity = std::tuple_size_v<typename Traits::Args>;
    using R = typename Traits::Ret;
    auto call = [&]() -> R {
      if constexpr (arity == 1) {
        return fn(ctx);
      } else {
        using In = std::decay_t<std::tuple_element_t<1, typename Traits::Args>>;
        Result<In> in = FromValue<In>(input);
        if (!in.ok()) throw ActorError("actor", "invalid_request", "input: " + in.error().message());
        return fn(ctx, std::move(*in));
      }
    };
    if constexpr (internal::IsTask<R>::value) {
      co_return co_await call();
    } else if constexpr (std::is_void_v<R>) {
      call();
      co_return;
    } else {
      co_return call();
    }
  }

  // A `bool fn(Ctx&)` (or Task<bool>) veto check: canSubscribe, canPublish.
  template <typename F>
  static runtime::SubscribeCheckFn Check(F fn) {
    return [fn = std::move(fn)](runtime::Invocation inv) -> Task<bool> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      using R = std::invoke_result_t<F&, Context&>;
      if constexpr (internal::IsTask<R>::value) {
        co_return co_await fn(ctx);
      } else {
        co_return fn(ctx);
      }
    };
  }

  template <typename F>
  static runtime::HookFn Hook(F fn) {
    return [fn = std::move(fn)](runtime::Invocation inv) -> Task<void> {
      Context ctx(inv);
      using R = std::invoke_result_t<F&, Context&>;
      internal::ReleaseQueueHold release{inv};
      if constexpr (internal::IsTask<R>::value) {
        co_await fn(ctx);
      } else {
        fn(ctx);
      }
    };
  }
  template <typename F>
  static runtime::ConnHookFn ConnHook(F fn) {
    return [fn = std::move(fn)](runtime::Invocation inv) -> Task<void> {
      Context ctx(inv);
      internal::ReleaseQueueHold release{inv};
      Conn& conn = *inv.conn;
      using R = std::invoke_result_t<F&, Context&, Conn&>;
      if constexpr (internal::IsTask<R>::value) {
        co_await fn(ctx, conn);
      } else {
        fn(ctx, conn);
      }
    };
  }

  std::shared_ptr<runtime::ActorType> type_;
};

}  // namespace keel
