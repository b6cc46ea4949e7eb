#include "runtime/core.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "base/ascii.h"
#include "base/build_exact.h"
#include "base/log.h"
#include "engine/gateway/actor_key.h"
#include "engine/gateway/subprotocols.h"
#include "engine/gateway/url.h"
#include "protocol/bare/reader.h"
#include "protocol/bare/writer.h"
#include "protocol/envoy/headers.h"
#include "protocol/envoy/versioned.h"
#include "protocol/persist/versioned.h"

namespace keel::runtime {

namespace latest = envoy::latest;
namespace gw = engine::gateway;

namespace {

constexpr std::string_view kLog = "runtime";
// Engine KV limits (actors.md §2.4): keys per request and payload per put request.
constexpr size_t kMaxKeysPerRequest = 128;
constexpr size_t kMaxPutPayload = 976 * 1024;

Bytes Key1(uint8_t prefix) { return Bytes{prefix}; }

Bytes Prefixed(uint8_t prefix, const Bytes& key) {
  Bytes out;
  out.reserve(key.size() + 1);
  out.push_back(prefix);
  out.insert(out.end(), key.begin(), key.end());
  return out;
}

// KV [2] + connection id: a hibernatable connection's record.
Bytes ConnKey(const std::string& conn_id) {
  return Prefixed(keys::kConnPrefix, Bytes(conn_id.begin(), conn_id.end()));
}

Bytes Unprefixed(const Bytes& key) {
  return key.empty() ? Bytes{} : Bytes(key.begin() + 1, key.end());
}

// KV [6]: version-1 envelope around optional<i64> (actors.md §3.5).
Bytes EncodeAlarmRecord(std::optional<int64_t> ts) {
  Bytes out{1, 0};
  if (ts) {
    out.push_back(1);
    const uint64_t v = static_cast<uint64_t>(*ts);
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  } else {
    out.push_back(0);
  }
  return out;
}

std::optional<int64_t> DecodeAlarmRecord(const Bytes& b) {
  if (b.size() == 11 && b[0] == 1 && b[1] == 0 && b[2] == 1) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{b[3 + i]} << (8 * i);
    return static_cast<int64_t>(v);
  }
  return std::nullopt;
}

// An exception as the runtime's log shows it: a script error with its stack.
std::string ErrorText(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const ActorError& a) {
    return a.group() + "." + a.code() + ": " + a.message();
  } catch (const ScriptError& x) {
    return x.detail();
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

// An exception as it may leave the runtime (an actor's stop reason, which the engine shows
// to clients): as ErrorText, but a script error is only its one-line summary.
std::string StopReasonText(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const ScriptError& x) {
    return x.what();
  } catch (...) {
    return ErrorText(std::current_exception());
  }
}

ActorError Timeout(const char* callback, milliseconds ms) {
  return ActorError("actor", "callback_timed_out",
                    std::string("callback `") + callback + "` timed out after " +
                        std::to_string(ms.count()) + " ms",
                    Value::Object({{"callback_name", callback}, {"duration_ms", ms.count()}}));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Errors and HTTP helpers

ClientError ToClientError(std::exception_ptr error, std::string_view actor_id) {
  try {
    std::rethrow_exception(error);
  } catch (const ActorError& a) {
    if (a.is_public()) return {a.group(), a.code(), a.message(), a.metadata()};
    LogWarn(kLog, "internal error", {{"actor", std::string(actor_id)}, {"error", a.message()}});
  } catch (const ScriptError& x) {
    LogWarn(kLog, "action threw", {{"actor", std::string(actor_id)}, {"error", x.detail()}});
  } catch (const std::exception& x) {
    LogWarn(kLog, "action threw", {{"actor", std::string(actor_id)}, {"error", x.what()}});
  } catch (...) {
    LogWarn(kLog, "action threw a non-exception", {{"actor", std::string(actor_id)}});
  }
  return {"rivetkit", "internal_error", "An internal error occurred", std::nullopt};
}

uint16_t HttpStatusFor(const ClientError& e) {
  if (e.group == "auth" && e.code == "forbidden") return 403;
  if (e.group == "actor") {
    if (e.code == "action_not_found" || e.code == "not_found" || e.code == "route_not_found" ||
        e.code == "request_handler_not_defined") {
      return 404;
    }
    if (e.code == "action_timed_out") return 408;
    if (e.code == "invalid_request") return 400;
    if (e.code == "method_not_allowed") return 405;
  }
  if (e.group == "message") return 400;
  if (e.group == "queue") return 400;
  if (e.group == "inspector" && e.code == "unauthorized") return 401;
  if (e.group == "request" && e.code == "invalid") return 400;
  return 500;
}

const std::string* Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (EqualsIgnoreCase(k, name)) return &v;
  }
  return nullptr;
}

void RequestAbort::Listen(std::function<void()> fn) {
  if (!fn || settled_) return;
  if (aborted_) {
    fn();
    return;
  }
  listeners_.push_back(std::move(fn));
}

void RequestAbort::Settle() {
  if (aborted_) return;
  settled_ = true;
  listeners_.clear();
}

void RequestAbort::Fire() {
  if (aborted_ || settled_) return;
  aborted_ = true;
  // A callback may resume the handler, which may register more (they run at once).
  for (auto& fn : std::exchange(listeners_, {})) {
    try {
      fn();
    } catch (...) {
      LogWarn(kLog, "a request abort callback threw",
              {{"error", ErrorText(std::current_exception())}});
    }
  }
}

Response Response::Text(uint16_t status, std::string_view text) {
  return Response{status, {{"content-type", "text/plain; charset=utf-8"}}, Bytes(text.begin(), text.end())};
}
Response Response::Json(uint16_t status, std::string_view json) {
  return Response{status, {{"content-type", "application/json"}}, Bytes(json.begin(), json.end())};
}

// ---------------------------------------------------------------------------------------
// Conn

Value& Conn::state() {
  if (owner_ != nullptr && hibernatable_ && !closed_ && !touched_) owner_->TouchConn(*this);
  return state_;
}

void Conn::Send(std::string_view event, Value args) {
  if (owner_ == nullptr || closed_) return;
  if (transient_) {
    LogDebug(kLog, "event to a transient connection dropped", {{"event", std::string(event)}});
    return;
  }
  if (raw_ != nullptr) {
    // A raw WebSocket carries the actor's own frames, not the client protocol's events.
    LogWarn(kLog, "event to a raw WebSocket connection dropped: send on the socket instead",
            {{"event", std::string(event)}, {"conn", id_}});
    return;
  }
  Instance* inst = owner_;
  std::string id = id_;
  wire::ToClient msg = wire::Event{std::string(event), std::move(args)};
  inst->Gate([inst, id, msg = std::move(msg)] {
    auto it = inst->conns_.find(id);
    if (it != inst->conns_.end()) inst->SendToConn(*it->second, msg);
  });
}

void Conn::Disconnect(std::string_view reason) {
  if (owner_ == nullptr || closed_) return;
  Instance* inst = owner_;
  if (!transient_) inst->CloseConnSocket(*this, 1000, std::string(reason));
  Spawn(inst->DisconnectConn(id_));
}

// ---------------------------------------------------------------------------------------
// Instance: construction and identity

Instance::Instance(Runtime& runtime, std::shared_ptr<const ActorType> type, envoy::StartActor start)
    : runtime_(runtime),
      type_(std::move(type)),
      actor_id_(std::move(start.actor_id)),
      generation_(start.generation),
      start_(std::make_unique<envoy::StartActor>(std::move(start))) {
  if (start_->config.key) {
    if (auto k = gw::ParseActorKey(*start_->config.key); k.ok()) key_ = std::move(*k);
  }
  input_ = start_->config.input;
}

Instance::~Instance() {
  if (HeldCommits* held = HeldSqlCommits()) held->SetListener(nullptr);
  runtime_.sleep_deadlines_.Forget(*this);
  runtime_.save_deadlines_.Forget(*this);
  if (cold_ && cold_->schedule_timer != TimerId{}) runtime_.clock().Cancel(cold_->schedule_timer);
}

void* Instance::state_ptr() {
  if (!state_) {
    throw ActorError("actor", "state_not_enabled",
                     "State not enabled. Give the actor a state type or createState.");
  }
  return state_->get();
}

int64_t Instance::NowMs() const { return runtime_.clock().SystemNowMs(); }

// ---------------------------------------------------------------------------------------
// SQLite (actors.md §2.5, runtime/sql.h)

std::optional<SqliteBackendKind> Instance::SelectedSqlBackend() const {
  const RuntimeOptions& o = runtime_.options();
  switch (o.sqlite_backend) {
    case SqliteBackendChoice::kRemote:
      return SqliteBackendKind::kRemote;
    case SqliteBackendChoice::kLocal:
      if (o.local_sqlite) return SqliteBackendKind::kLocal;
      return std::nullopt;
    case SqliteBackendChoice::kAuto:
      return o.local_sqlite ? SqliteBackendKind::kLocal : SqliteBackendKind::kRemote;
  }
  return std::nullopt;
}

SqlDatabase& Instance::Database() {
  if (!type_->has_database) {
    throw ActorError("actor", "database_not_configured",
                     "database is not configured for this actor");
  }
  if (db_closed_ || phase_ == Phase::kStopped) {
    throw ActorError("sqlite", "closed",
                     "Database is closed. Actor stopping: database accessed after actor stopped");
  }
  if (db_ == nullptr) {
    std::optional<SqliteBackendKind> kind = SelectedSqlBackend();
    if (!kind.has_value()) {
      throw ActorError("sqlite", "unavailable",
                       "SQLite is unavailable: this runtime has no local SQLite; use the remote "
                       "backend (KEEL_SQLITE_BACKEND=remote)");
    }
    SqlBackendContext context;
    context.actor_id = actor_id_;
    context.generation = generation_;
    context.namespace_name = runtime_.client().config().namespace_name;
    context.client = &runtime_.client();
    auto held = std::make_shared<HeldCommits>();
    held->set_allowed(phase_ != Phase::kLoading);
    held->SetListener([this](const Status& outcome) { OnHeldCommitDone(outcome); });
    context.held_commits = held;
    std::unique_ptr<SqlBackend> backend = *kind == SqliteBackendKind::kLocal
                                              ? runtime_.options().local_sqlite(context)
                                              : MakeRemoteSqlBackend(context);
    if (backend == nullptr) {
      throw ActorError("sqlite", "unavailable", "SQLite is unavailable: the backend failed to open");
    }
    db_ = std::make_unique<SqlDatabase>(std::move(backend), std::move(held));
  }
  return *db_;
}

void Instance::OnHeldCommitDone(const Status& outcome) {
  // Like a failed held KV write: answers that depended on the commit may be with the
  // engine, which now withholds this generation's answers for good.
  if (!outcome.ok()) EndGeneration(outcome.error());
  ReleaseOutputs();
  if (phase_ == Phase::kStopped) runtime_.MaybeFree(*this);
}

Task<void> Instance::CloseDatabase() {
  db_closed_ = true;
  if (db_ == nullptr) co_return;
  try {
    co_await db_->Close();
  } catch (...) {
    LogWarn(kLog, "closing the database failed",
            {{"actor", actor_id_}, {"error", ErrorText(std::current_exception())}});
  }
}

// ---------------------------------------------------------------------------------------
// Owned tasks, hooks with timeouts

void Instance::SpawnOwned(Task<void> task, bool keeps_awake, bool blocks_shutdown,
                          const char* failure_log) {
  ++owned_tasks_;
  // If the task outlives this turn, what it changes before it answers (or without ever
  // answering) is saved within the interval. One deadline per instance: usually a no-op.
  if (!save_deadline_) RequestSave(type_->options.state_save_interval);
  if (keeps_awake) BeginActivity();
  if (blocks_shutdown) ++shutdown_blockers_;
  Spawn(std::move(task), [this, keeps_awake, blocks_shutdown, failure_log](std::exception_ptr e) {
    if (e) LogWarn(kLog, failure_log, {{"actor", actor_id_}, {"error", ErrorText(e)}});
    --owned_tasks_;
    // Changes made by work that produced no output (a raw WebSocket handler, the run
    // handler, a timer) are persisted now rather than with some later output.
    if (phase_ == Phase::kStarted || phase_ == Phase::kGrace) {
      Checkpoint();
      SyncAlarm();
      MaybeFlush();
    }
    if (blocks_shutdown) --shutdown_blockers_;
    if (keeps_awake) EndActivity();
    if (cold_) {
      for (auto& w : std::exchange(cold_->idle_waiters, {})) w();
    }
    if (phase_ == Phase::kStopped) runtime_.MaybeFree(*this);
  });
}

namespace {
// Awaits `task` for at most `timeout`; on expiry throws `make_error()` while the task keeps
// running detached (its owner instance stays alive until it ends).
template <typename T, typename MakeError>
Task<T> WithTimeout(Clock& clock, Task<T> task, milliseconds timeout, MakeError make_error,
                    int& owned) {
  using Outcome = std::pair<std::optional<T>, std::exception_ptr>;
  Completion<Outcome> done;
  ++owned;
  Spawn(std::move(task), [done, &owned](std::optional<T> v, std::exception_ptr e) {
    --owned;
    done.Resolve(Outcome{std::move(v), e});
  });
  TimerId timer{};
  if (!done.ready()) {
    timer = clock.ScheduleAfter(timeout, [done, make_error] {
      done.Resolve(Outcome{std::nullopt, std::make_exception_ptr(make_error())});
    });
  }
  Outcome out = co_await done;
  if (timer != TimerId{}) clock.Cancel(timer);
  if (out.second) std::rethrow_exception(out.second);
  co_return std::move(*out.first);
}

Task<int> AsIntTask(Task<void> t) {
  co_await std::move(t);
  co_return 0;
}
}  // namespace

Task<void> Instance::RunHook(const char* name, milliseconds timeout, Task<void> hook) {
  co_await WithTimeout<int>(runtime_.clock(), AsIntTask(std::move(hook)), timeout,
                            [name, timeout] { return Timeout(name, timeout); }, owned_tasks_);
}

// ---------------------------------------------------------------------------------------
// KV

Task<latest::KvResponseData> Instance::Kv(latest::KvRequestData request) {
  Completion<Result<latest::KvResponseData>> done;
  const bool held_write =
      runtime_.client().engine_holds_outputs() &&
      (request.is<latest::KvPutRequest>() || request.is<latest::KvDeleteRequest>() ||
       request.is<latest::KvDeleteRangeRequest>());
  runtime_.client().SendKv(actor_id_, std::move(request), done.Resolver());
  Result<latest::KvResponseData> r = co_await done;
  if (held_write && phase_ != Phase::kLoading) {
    // The engine stops this generation's answers after any failed write (output_hold.h).
    if (!r.ok()) {
      EndGeneration(r.error());
    } else if (auto* err = r->get_if<latest::KvErrorResponse>()) {
      EndGeneration(Error::FromString(err->message));
    }
  }
  if (!r.ok()) {
    throw ActorError("actor", "kv_failed", r.error().ToString(), std::nullopt, false);
  }
  if (auto* err = r->get_if<latest::KvErrorResponse>()) {
    Error parsed = Error::FromString(err->message);
    throw ActorError(parsed.group(), parsed.code(), parsed.message());
  }
  co_return std::move(*r);
}

Task<std::optional<Bytes>> Instance::KvGet(Bytes key) {
  Bytes full = Prefixed(keys::kUserPrefix, key);
  if (auto it = overlay_.find(full); it != overlay_.end()) co_return it->second;
  if (auto it = inflight_.find(full); it != inflight_.end()) co_return it->second;
  latest::KvGetRequest get;
  get.keys.push_back(full);
  latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(get)});
  // A write staged while the read was in flight wins.
  if (auto it = overlay_.find(full); it != overlay_.end()) co_return it->second;
  if (auto it = inflight_.find(full); it != inflight_.end()) co_return it->second;
  const auto* resp = r.get_if<latest::KvGetResponse>();
  if (resp == nullptr) throw ActorError("actor", "kv_failed", "unexpected KV response", {}, false);
  for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
    if (resp->keys[i] == full) co_return resp->values[i];
  }
  co_return std::nullopt;
}

Task<std::vector<std::optional<Bytes>>> Instance::KvGetMany(std::vector<Bytes> keys) {
  std::vector<std::optional<Bytes>> out(keys.size());
  std::vector<bool> known(keys.size(), false);
  auto from_overlay = [this, &keys, &out, &known] {
    for (size_t i = 0; i < keys.size(); ++i) {
      Bytes full = Prefixed(keys::kUserPrefix, keys[i]);
      if (auto it = overlay_.find(full); it != overlay_.end()) {
        out[i] = it->second, known[i] = true;
      } else if (auto it2 = inflight_.find(full); it2 != inflight_.end()) {
        out[i] = it2->second, known[i] = true;
      }
    }
  };
  from_overlay();
  latest::KvGetRequest get;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!known[i]) get.keys.push_back(Prefixed(keys::kUserPrefix, keys[i]));
  }
  if (get.keys.empty()) co_return out;
  latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(get)});
  std::map<Bytes, Bytes> found;
  if (const auto* resp = r.get_if<latest::KvGetResponse>()) {
    for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
      found[resp->keys[i]] = resp->values[i];
    }
  }
  std::fill(known.begin(), known.end(), false);
  from_overlay();  // writes staged while the read was in flight win
  for (size_t i = 0; i < keys.size(); ++i) {
    if (known[i]) continue;
    auto it = found.find(Prefixed(keys::kUserPrefix, keys[i]));
    out[i] = it == found.end() ? std::nullopt : std::optional<Bytes>(it->second);
  }
  co_return out;
}

namespace {
// The engine's per-key limits (envoy-protocol.md §5: a key counts 2 bytes of framing), checked
// when the write is staged so the caller gets the error — the engine would reject the whole
// flush, failing every answer that waits for it (and, with held outputs, the generation).
constexpr size_t kMaxKvKeySize = 2048;
constexpr size_t kMaxKvValueSize = 131072;

void CheckUserKey(const Bytes& stored_key) {
  if (stored_key.size() + 2 > kMaxKvKeySize) {
    throw ActorError("kv", "key_too_large",
                     "key is too long (max " + std::to_string(kMaxKvKeySize) + " bytes)");
  }
}
}  // namespace

void Instance::KvPut(Bytes key, Bytes value) {
  Bytes stored = Prefixed(keys::kUserPrefix, key);
  CheckUserKey(stored);
  if (value.size() > kMaxKvValueSize) {
    throw ActorError("kv", "value_too_large",
                     "value is too large (max " + std::to_string(kMaxKvValueSize / 1024) + " KiB)");
  }
  StageWrite(std::move(stored), std::move(value));
}

void Instance::KvDelete(Bytes key) {
  Bytes stored = Prefixed(keys::kUserPrefix, key);
  CheckUserKey(stored);
  StageWrite(std::move(stored), std::nullopt);
}

namespace {
// Applies staged writes over a listed range, so reads see their own writes.
std::vector<std::pair<Bytes, Bytes>> MergeOverlay(
    std::vector<std::pair<Bytes, Bytes>> listed,
    const std::map<Bytes, std::optional<Bytes>>& inflight,
    const std::map<Bytes, std::optional<Bytes>>& overlay,
    const std::function<bool(const Bytes&)>& in_range, bool reverse,
    std::optional<uint64_t> limit) {
  std::map<Bytes, Bytes> merged(std::make_move_iterator(listed.begin()),
                                std::make_move_iterator(listed.end()));
  for (const auto* layer : {&inflight, &overlay}) {
    for (const auto& [k, v] : *layer) {
      if (!in_range(k)) continue;
      if (v) {
        merged[k] = *v;
      } else {
        merged.erase(k);
      }
    }
  }
  std::vector<std::pair<Bytes, Bytes>> out;
  if (reverse) {
    for (auto it = merged.rbegin(); it != merged.rend(); ++it) out.emplace_back(it->first, it->second);
  } else {
    for (auto& kv : merged) out.emplace_back(kv.first, kv.second);
  }
  if (limit && out.size() > *limit) out.resize(*limit);
  for (auto& kv : out) kv.first = Unprefixed(kv.first);
  return out;
}
}  // namespace

Task<std::vector<std::pair<Bytes, Bytes>>> Instance::KvListPrefix(Bytes prefix, bool reverse,
                                                                  std::optional<uint64_t> limit) {
  Bytes full = Prefixed(keys::kUserPrefix, prefix);
  latest::KvListRequest list;
  list.query = latest::KvListQuery{latest::KvListPrefixQuery{full}};
  list.reverse = reverse;
  // Staged deletes may hide listed entries: ask for enough to still fill the limit.
  if (limit) list.limit = *limit + overlay_.size() + inflight_.size();
  latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(list)});
  std::vector<std::pair<Bytes, Bytes>> listed;
  if (const auto* resp = r.get_if<latest::KvListResponse>()) {
    for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
      listed.emplace_back(resp->keys[i], resp->values[i]);
    }
  }
  auto in_range = [&full](const Bytes& k) {
    return k.size() >= full.size() && std::equal(full.begin(), full.end(), k.begin());
  };
  co_return MergeOverlay(std::move(listed), inflight_, overlay_, in_range, reverse, limit);
}

Task<std::vector<std::pair<Bytes, Bytes>>> Instance::KvListRange(Bytes start, Bytes end,
                                                                 bool reverse,
                                                                 std::optional<uint64_t> limit) {
  Bytes s = Prefixed(keys::kUserPrefix, start);
  Bytes e = Prefixed(keys::kUserPrefix, end);
  latest::KvListRequest list;
  list.query = latest::KvListQuery{latest::KvListRangeQuery{s, e, true}};
  list.reverse = reverse;
  if (limit) list.limit = *limit + overlay_.size() + inflight_.size();
  latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(list)});
  std::vector<std::pair<Bytes, Bytes>> listed;
  if (const auto* resp = r.get_if<latest::KvListResponse>()) {
    for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
      listed.emplace_back(resp->keys[i], resp->values[i]);
    }
  }
  auto in_range = [&s, &e](const Bytes& k) { return k >= s && k < e; };
  co_return MergeOverlay(std::move(listed), inflight_, overlay_, in_range, reverse, limit);
}

Task<void> Instance::KvDeleteRange(Bytes start, Bytes end) {
  // Order against staged writes: commit them first, then delete the range.
  co_await WaitDurable();
  latest::KvDeleteRangeRequest del;
  del.start = Prefixed(keys::kUserPrefix, start);
  del.end = Prefixed(keys::kUserPrefix, end);
  co_await Kv(latest::KvRequestData{std::move(del)});
}

// ---------------------------------------------------------------------------------------
// Output gate

void Instance::StageWrite(Bytes key, std::optional<Bytes> value) {
  overlay_[std::move(key)] = std::move(value);
  ++staged_seq_;
}

void Instance::Checkpoint() {
  static const std::vector<ScheduledEvent> kNoEvents;
  if (phase_ == Phase::kStopped || !record_initialized_) return;
  StageTouchedConns();
  protocol::persist::latest::Actor record;
  if (input_) record.input = *input_;
  record.has_initialized = true;
  record.state = state_ ? EncodeCbor(state_->Save()) : EncodeCbor(Value(Value::Null{}));
  const bool state_changed = record.state != persisted_state_;
  for (const auto& ev : cold_ ? cold_->schedule : kNoEvents) {
    protocol::persist::latest::ScheduleEvent e;
    e.event_id = ev.id;
    e.timestamp = ev.ts;
    e.action = ev.action;
    e.args = EncodeCbor(ev.args);
    record.scheduled_events.push_back(std::move(e));
  }
  Bytes bytes = protocol::persist::WriteActor(record);
  if (bytes.size() > kMaxKvValueSize) {
    // The engine refuses a value this large: staged, it would fail the whole flush (with
    // held outputs, the generation). Not staged; the outputs fail instead (Gate).
    const bool first = oversized_record_ == 0;
    oversized_record_ = bytes.size();
    if (first) {
      LogError(kLog, "the actor's state is too large to save: asking to sleep",
               {{"actor", actor_id_}, {"bytes", std::to_string(bytes.size())}});
      // What is in memory cannot be saved: the next instance starts from the last record
      // that was (onSleep may still shrink it). Until it stops, outputs fail (Gate).
      if (phase_ == Phase::kStarted && !stop_received_ && !sleep_requested_ &&
          !destroy_requested_) {
        sleep_requested_ = true;
        runtime_.client().RequestSleep(actor_id_, generation_);
      }
    }
    return;
  }
  oversized_record_ = 0;
  if (bytes == persisted_record_) return;
  persisted_record_ = bytes;
  persisted_state_ = std::move(record.state);
  StageWrite(Key1(keys::kActorRecord), std::move(bytes));
  if (state_changed && type_->on_state_change && !in_state_change_ && phase_ == Phase::kStarted) {
    in_state_change_ = true;
    Invocation inv{this, nullptr, nullptr};
    try {
      type_->on_state_change(inv);
    } catch (...) {
      LogWarn(kLog, "onStateChange threw", {{"actor", actor_id_}, {"error", ErrorText(std::current_exception())}});
    }
    in_state_change_ = false;
    // A state change made inside onStateChange is refused by the typed layer; vars may
    // change freely. Re-serialise in case the hook touched nothing (cheap compare).
  }
  SyncAlarm();
}

bool Instance::AlarmSettled() const {
  return !alarm_push_in_flight_ && DesiredAlarm() == pushed_alarm_;
}

std::optional<int64_t> Instance::DesiredAlarm() const {
  if (destroy_alarm_cleared_) return std::nullopt;
  std::optional<int64_t> earliest;
  if (!cold_) return earliest;
  for (const auto& ev : cold_->schedule) {
    if (!earliest || ev.ts < *earliest) earliest = ev.ts;
  }
  return earliest;
}

void Instance::SyncAlarm() {
  if (alarm_push_in_flight_ || phase_ == Phase::kStopped || !record_initialized_) return;
  const std::optional<int64_t> want = DesiredAlarm();
  if (want == pushed_alarm_) return;
  alarm_push_in_flight_ = true;
  runtime_.client().SetAlarm(actor_id_, generation_, want, [this, want](Status st) {
    alarm_push_in_flight_ = false;
    if (st.ok()) {
      pushed_alarm_ = want;
      StageWrite(Key1(keys::kAlarm), EncodeAlarmRecord(want));
      MaybeFlush();
      SyncAlarm();
    } else {
      LogWarn(kLog, "alarm not acknowledged", {{"actor", actor_id_}, {"error", st.error().ToString()}});
      FailOutputs(ClientError{"actor", "alarm_failed", "the engine did not store the alarm", {}});
    }
    ReleaseOutputs();
    if (phase_ == Phase::kStopped) runtime_.MaybeFree(*this);
  });
}

void Instance::Gate(std::function<void()> send, std::function<void(const ClientError&)> fail,
                    bool wire) {
  Checkpoint();
  SyncAlarm();
  MaybeFlush();
  if (oversized_record_ != 0) return EnqueueRefusal(std::move(fail), wire);
  EnqueueOutput(staged_seq_, std::move(send), std::move(fail), wire);
}

void Instance::GateAt(uint64_t needs, std::function<void()> send,
                      std::function<void(const ClientError&)> fail) {
  SyncAlarm();
  MaybeFlush();
  if (oversized_record_ != 0) return EnqueueRefusal(std::move(fail), true);
  EnqueueOutput(needs, std::move(send), std::move(fail));
}

void Instance::EnqueueRefusal(std::function<void(const ClientError&)> fail, bool wire) {
  const ClientError e{"actor",
                      "state_too_large",
                      "The actor's state is too large to save: its record (state, scheduled "
                      "events and input) is " +
                          std::to_string(oversized_record_) + " bytes; the limit is " +
                          std::to_string(kMaxKvValueSize) + " bytes.",
                      {}};
  // Behind the outputs before it, like the output it replaces.
  auto refuse = [fail, e] {
    if (fail) fail(e);
  };
  EnqueueOutput(staged_seq_, std::move(refuse), std::move(fail), wire);
}

void Instance::EnqueueOutput(uint64_t needs, std::function<void()> send,
                             std::function<void(const ClientError&)> fail, bool wire) {
  Output out{needs, std::move(send), std::move(fail), wire};
  if (generation_ended_) {
    if (out.fail) out.fail(ClientError{"actor", "storage_failed", "the actor is restarting after a failed write", {}});
    return;
  }
  if (outputs_.empty() && Releasable(out)) {
    out.send();
    return;
  }
  outputs_.push_back(std::move(out));
}

bool Instance::Releasable(const Output& o) const {
  if (!AlarmSettled()) return false;
  // Held outputs: the engine keeps this output from the client until the writes sent before
  // it on the same socket are durable.
  const bool held = o.wire && runtime_.client().engine_holds_outputs();
  const uint64_t epoch = runtime_.client().socket_epoch();
  if (o.needs_seq > durable_seq_ && !(held && o.needs_seq <= sent_seq_ && epoch == sent_epoch_)) {
    return false;
  }
  // Local-native commits sent without waiting (HeldCommits): the output may follow them
  // only on the socket they went out on.
  const HeldCommits* commits = HeldSqlCommits();
  if (commits != nullptr && commits->pending() > 0 && !(held && epoch == commits->epoch())) {
    return false;
  }
  return true;
}

void Instance::ReleaseOutputs() {
  while (!outputs_.empty()) {
    Output& front = outputs_.front();
    if (!Releasable(front)) return;
    Output out = std::move(front);
    outputs_.erase(outputs_.begin());
    // An idle instance keeps no output buffer.
    if (outputs_.empty()) outputs_.shrink_to_fit();
    out.send();
  }
}

void Instance::FailOutputs(const ClientError& error) {
  std::vector<Output> failed;
  while (!outputs_.empty() && (outputs_.front().needs_seq <= staged_seq_)) {
    failed.push_back(std::move(outputs_.front()));
    outputs_.erase(outputs_.begin());
  }
  for (auto& o : failed) {
    if (o.fail) o.fail(error);
  }
}

namespace {
// Flushes one instance may have in flight on a socket whose engine holds outputs. The
// engine commits an actor's writes in the order they arrive and answers them in that
// order, so a write need not wait for the answer of the one before it: the answer that
// depends on it follows it on the socket, and a failure of any ends the generation.
constexpr uint8_t kMaxHeldFlushes = 8;
}  // namespace

void Instance::MaybeFlush() {
  if (in_turn_ || overlay_.empty() || generation_ended_) return;
  // Held outputs: the requests are written to the socket at once, and what waits for them
  // may follow them right away (ReleaseOutputs below).
  const bool held = runtime_.client().engine_holds_outputs();
  if (flushing_ > 0 &&
      (!held || flushing_ >= kMaxHeldFlushes || sent_epoch_ != runtime_.client().socket_epoch())) {
    return;
  }
  ++flushing_;
  std::map<Bytes, std::optional<Bytes>> batch = std::move(overlay_);
  overlay_.clear();
  const uint64_t seq = staged_seq_;

  std::vector<latest::KvRequestData> requests;
  // Sized for the usual batch (one request of each kind at most): no regrowth per key.
  const size_t puts = static_cast<size_t>(std::count_if(
      batch.begin(), batch.end(), [](const auto& kv) { return kv.second.has_value(); }));
  auto reserve = [](auto& list, size_t n) { list.reserve(std::min(n, kMaxKeysPerRequest)); };
  latest::KvPutRequest put;
  reserve(put.keys, puts);
  reserve(put.values, puts);
  size_t put_bytes = 0;
  latest::KvDeleteRequest del;
  reserve(del.keys, batch.size() - puts);
  for (const auto& [k, v] : batch) {
    if (v) {
      if (!put.keys.empty() &&
          (put.keys.size() >= kMaxKeysPerRequest || put_bytes + k.size() + v->size() > kMaxPutPayload)) {
        requests.emplace_back(std::move(put));
        put = {};
        put_bytes = 0;
      }
      put_bytes += k.size() + v->size();
      put.keys.push_back(k);
      put.values.push_back(*v);
    } else {
      if (del.keys.size() >= kMaxKeysPerRequest) {
        requests.emplace_back(std::move(del));
        del = {};
      }
      del.keys.push_back(k);
    }
  }
  if (!put.keys.empty()) requests.emplace_back(std::move(put));
  if (!del.keys.empty()) requests.emplace_back(std::move(del));
  if (inflight_.empty()) {
    inflight_ = std::move(batch);
  } else {
    for (auto& [k, v] : batch) inflight_[k] = std::move(v);
  }

  if (held) {
    sent_seq_ = seq;
    sent_epoch_ = runtime_.client().socket_epoch();
  }
  struct Outcome {
    size_t remaining;
    std::optional<Error> failure;
  };
  auto outcome = std::make_shared<Outcome>(Outcome{requests.size(), std::nullopt});
  for (auto& req : requests) {
    runtime_.client().SendKv(actor_id_, std::move(req),
                             [this, seq, held, outcome](Result<latest::KvResponseData> r) {
                               std::optional<Error>& failure = outcome->failure;
                               if (!r.ok()) {
                                 failure = r.error();
                               } else if (auto* err = r->get_if<latest::KvErrorResponse>()) {
                                 failure = Error::FromString(err->message);
                               }
                               if (--outcome->remaining == 0) {
                                 OnFlushDone(seq, failure ? Status(*failure) : OkStatus(), held);
                               }
                             });
  }
  if (held && flushing_) ReleaseOutputs();
}

void Instance::OnFlushDone(uint64_t seq, Status status, bool held) {
  --flushing_;
  if (!status.ok() && held && phase_ != Phase::kLoading) {
    // (A startup's failed write fails the start instead: its WaitWritten, or the flag below.)
    EndGeneration(status.error());
  } else if (status.ok()) {
    durable_seq_ = std::max(durable_seq_, seq);  // flushes are answered in order
    if (flushing_ == 0) inflight_.clear();
  } else {
    LogError(kLog, "writes failed", {{"actor", actor_id_}, {"error", status.error().ToString()}});
    if (held) startup_write_failed_ = true;  // still loading (above): the start fails
    // The record must be written again by the next checkpoint.
    if (inflight_.count(Key1(keys::kActorRecord))) {
      persisted_record_.clear();
      persisted_state_.clear();
    }
    inflight_.clear();
    durable_seq_ = seq;
    std::vector<Output> failed;
    while (!outputs_.empty() && outputs_.front().needs_seq <= seq) {
      failed.push_back(std::move(outputs_.front()));
      outputs_.erase(outputs_.begin());
    }
    const ClientError err{"actor", "storage_failed",
                          "the actor's writes could not be committed: " + status.error().ToString(),
                          {}};
    for (auto& o : failed) {
      if (o.fail) o.fail(err);
    }
  }
  ReleaseOutputs();
  MaybeFlush();
  if (phase_ == Phase::kStopped) runtime_.MaybeFree(*this);
}

void Instance::StopTimersAndWaiters() {
  runtime_.sleep_deadlines_.Set(*this, std::nullopt);
  // Grace saves after onSleep/onDestroy and at the end; a stopped instance saves no more.
  // Waiting save_state calls go on to wait for what is staged (or fail with the instance).
  runtime_.save_deadlines_.Set(*this, std::nullopt);
  if (cold_) {
    for (auto& w : std::exchange(cold_->save_waiters, {})) w.Resolve(true);
  }
  if (cold_ && cold_->schedule_timer != TimerId{}) {
    runtime_.clock().Cancel(cold_->schedule_timer);
    cold_->schedule_timer = {};
  }
  aborted_ = true;
  AbortQueueWaiters();
}

void Instance::EndGeneration(const Error& cause) {
  if (generation_ended_) return;
  generation_ended_ = true;
  LogError(kLog, "a write failed after the answers depending on it were sent: ending this generation",
           {{"actor", actor_id_}, {"generation", std::to_string(generation_)}, {"error", cause.ToString()}});
  const Phase was = phase_;
  phase_ = Phase::kStopped;
  StopTimersAndWaiters();
  // Nothing more is written: the next instance starts from what is durable.
  overlay_.clear();
  std::vector<Output> failed = std::move(outputs_);
  outputs_.clear();
  const ClientError err{"actor", "storage_failed",
                        "the actor's writes could not be committed: " + cause.ToString(), {}};
  for (auto& o : failed) {
    if (o.fail) o.fail(err);
  }
  if (was == Phase::kLoading) runtime_.SettleEarlyRequests(*this, false);
  if (was != Phase::kStopped) {
    runtime_.client().ActorStopped(
        actor_id_, generation_,
        Error("actor", "storage_failed",
              "a write failed after its answers were sent; restarting from durable state: " +
                  cause.ToString()));
    runtime_.Retire(*this);
  }
}

// An output that sends nothing, behind everything staged so far: not a wire output, it is
// released once those writes are durable; as a wire output, with held outputs, once they
// are on the socket.
Task<void> Instance::WaitBehindWrites(bool wire) {
  Completion<std::optional<ClientError>> done;
  Gate([done] { done.Resolve(std::nullopt); }, [done](const ClientError& e) { done.Resolve(e); },
       wire);
  std::optional<ClientError> err = co_await done;
  if (err) throw ActorError(err->group, err->code, err->message, err->metadata);
}

Task<void> Instance::WaitDurable() { co_await WaitBehindWrites(/*wire=*/false); }

Task<void> Instance::WaitWritten() { co_await WaitBehindWrites(/*wire=*/true); }

Task<void> Instance::SaveState(std::optional<milliseconds> max_wait) {
  if (max_wait && max_wait->count() > 0 && phase_ != Phase::kFinalizing &&
      phase_ != Phase::kStopped) {
    Completion<bool> due;
    cold().save_waiters.push_back(due);
    RequestSave(*max_wait);
    co_await due;
  }
  co_await WaitDurable();
}

// ---------------------------------------------------------------------------------------
// Throttled saves
//
// Work that answers (an action, a request, a hook whose output the gate holds) saves before
// its answer. Work that has not answered yet — a `run` loop, a long action, a wait_until
// task — may change the state for seconds, so its changes are saved on a deadline instead:
// armed when such work starts, and again while work is still running when it passes.

void Instance::RequestSave(milliseconds within) {
  const MonoTime at = runtime_.clock().MonotonicNow() + within;
  if (save_deadline_ && *save_deadline_ <= at) return;
  runtime_.save_deadlines_.Set(*this, at);
}

void Instance::OnSaveDeadline() {
  if (phase_ == Phase::kStarted || phase_ == Phase::kGrace) {
    Checkpoint();
    SyncAlarm();
    MaybeFlush();
  }
  if (cold_) {
    for (auto& w : std::exchange(cold_->save_waiters, {})) w.Resolve(true);
  }
  const bool live =
      phase_ == Phase::kLoading || phase_ == Phase::kStarted || phase_ == Phase::kGrace;
  if (live && owned_tasks_ > 0 && !save_deadline_) RequestSave(type_->options.state_save_interval);
}

// ---------------------------------------------------------------------------------------
// Schedule

std::string Instance::ScheduleAt(int64_t epoch_ms, std::string action, Value args) {
  // A name that is not an action would only fail when the event fires (logged, possibly
  // after the actor slept for days): the caller learns it now.
  if (type_->actions.find(action) == type_->actions.end()) {
    throw ActorError("actor", "action_not_found",
                     "Cannot schedule `" + action + "`: the actor has no action of that name.");
  }
  ScheduledEvent ev{runtime_.random().Uuid4(), epoch_ms, std::move(action), std::move(args)};
  std::string id = ev.id;
  std::vector<ScheduledEvent>& schedule = cold().schedule;
  auto pos = std::upper_bound(schedule.begin(), schedule.end(), ev, [](const auto& a, const auto& b) {
    return std::tie(a.ts, a.id) < std::tie(b.ts, b.id);
  });
  schedule.insert(pos, std::move(ev));
  if (phase_ == Phase::kStarted) ArmScheduleTimer();
  return id;
}

void Instance::ArmScheduleTimer() {
  if (!cold_) return;  // nothing scheduled
  if (cold_->schedule_timer != TimerId{}) {
    runtime_.clock().Cancel(cold_->schedule_timer);
    cold_->schedule_timer = {};
  }
  if (cold_->schedule.empty() || phase_ != Phase::kStarted) return;
  // A timer waits a day at most and looks again: an event in any year (up to INT64_MAX ms)
  // arms without overflowing the clock's nanoseconds.
  constexpr int64_t kMaxDelayMs = 24 * 3600 * 1000;
  const int64_t ts = cold_->schedule.front().ts;
  const int64_t now = NowMs();
  const int64_t delay = ts <= now ? 0 : (ts - now > kMaxDelayMs ? kMaxDelayMs : ts - now);
  cold_->schedule_timer = runtime_.clock().ScheduleAfter(milliseconds(delay), [this] {
    cold_->schedule_timer = {};
    FireDueEvents();
  });
}

void Instance::FireDueEvents() {
  // Not once the actor asked to sleep or be destroyed, while the engine's stop is on its
  // way (actors.md §2.6): an event due now runs on the next instance (an overdue event
  // runs at its start), not on the one going away.
  if (phase_ != Phase::kStarted || sleep_requested_ || destroy_requested_) return;
  const int64_t now = NowMs();
  while (cold_ && !cold_->schedule.empty() && cold_->schedule.front().ts <= now) {
    ScheduledEvent ev = std::move(cold_->schedule.front());
    cold_->schedule.erase(cold_->schedule.begin());
    auto task = [](Instance* self, ScheduledEvent ev) -> Task<void> {
      try {
        co_await self->InvokeAction(ev.action, ev.args, nullptr);
      } catch (...) {
        LogWarn(kLog, "scheduled action failed",
                {{"actor", self->actor_id_}, {"action", ev.action},
                 {"error", ErrorText(std::current_exception())}});
      }
      co_await self->WaitDurable();
    };
    SpawnOwned(task(this, std::move(ev)), /*keeps_awake=*/true, /*blocks_shutdown=*/true);
  }
  Checkpoint();
  MaybeFlush();
  ArmScheduleTimer();
}

// ---------------------------------------------------------------------------------------
// Sleep

bool Instance::CanSleep() const {
  // A run handler blocked in a queue receive counts as idle (actors.md §3.3 rule 6).
  return phase_ == Phase::kStarted && !type_->options.no_sleep && activity_ == 0 &&
         (!run_active_ || (cold_ && cold_->run_waiting_on_queue > 0)) && conns_.empty();
}

void Instance::ResetSleepTimer() {
  if (!CanSleep() || sleep_requested_) {
    runtime_.sleep_deadlines_.Set(*this, std::nullopt);
    return;
  }
  runtime_.sleep_deadlines_.Set(*this,
                                runtime_.clock().MonotonicNow() + type_->options.sleep_timeout);
}

void Instance::OnSleepDeadline() {
  if (CanSleep() && !sleep_requested_) {
    sleep_requested_ = true;
    LogDebug(kLog, "idle: asking to sleep", {{"actor", actor_id_}});
    runtime_.client().RequestSleep(actor_id_, generation_);
  }
}

void Instance::RequestSleep() {
  if (phase_ == Phase::kLoading) throw ActorError("actor", "starting", "Actor is starting.");
  if (phase_ != Phase::kStarted || stop_received_) {
    throw ActorError("actor", "stopping", "Actor is stopping.");
  }
  if (sleep_requested_ || destroy_requested_) return;
  sleep_requested_ = true;
  runtime_.client().RequestSleep(actor_id_, generation_);
}

void Instance::RequestDestroy() {
  if (phase_ == Phase::kLoading) throw ActorError("actor", "starting", "Actor is starting.");
  if (destroy_requested_) return;
  destroy_requested_ = true;
  runtime_.client().RequestStop(actor_id_, generation_);
}

void Instance::KeepAwake(Task<void> task) { SpawnOwned(std::move(task), true, true); }
// actors.md §2.10: a rejection is logged and otherwise ignored.
void Instance::WaitUntil(Task<void> task) {
  SpawnOwned(std::move(task), false, true, "actor wait_until promise rejected");
}

// ---------------------------------------------------------------------------------------
// Startup (actors.md §1.4, §3.2)

Task<void> Instance::StartSequence() {
  // The vars' default value, built here rather than in the constructor: its constructor is
  // user code, and what it throws fails this start (not the runtime's turn).
  vars_ = type_->make_vars();
  Invocation inv{this, nullptr, nullptr};
  // Load [1] and [6]: from the preloaded KV when the engine sent it, else one KV get.
  std::optional<Bytes> record_bytes;
  std::optional<Bytes> alarm_bytes;
  bool loaded = false;
  if (start_->preloaded_kv) {
    const auto& pre = *start_->preloaded_kv;
    auto requested = [&pre](const Bytes& k) {
      return std::find(pre.requested_get_keys.begin(), pre.requested_get_keys.end(), k) !=
             pre.requested_get_keys.end();
    };
    if (requested(Key1(keys::kActorRecord)) && requested(Key1(keys::kAlarm))) {
      loaded = true;
      for (const auto& e : pre.entries) {
        if (e.key == Key1(keys::kActorRecord)) record_bytes = e.value;
        if (e.key == Key1(keys::kAlarm)) alarm_bytes = e.value;
      }
    }
  }
  if (!loaded) {
    latest::KvGetRequest get;
    get.keys = {Key1(keys::kActorRecord), Key1(keys::kAlarm)};
    latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(get)});
    if (const auto* resp = r.get_if<latest::KvGetResponse>()) {
      for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
        if (resp->keys[i] == Key1(keys::kActorRecord)) record_bytes = resp->values[i];
        if (resp->keys[i] == Key1(keys::kAlarm)) alarm_bytes = resp->values[i];
      }
    }
  }
  std::optional<protocol::persist::latest::Actor> record;
  if (record_bytes) {
    auto parsed = protocol::persist::ReadActor(*record_bytes);
    if (!parsed.ok()) {
      throw ActorError("actor", "invalid_state", "persisted actor record: " + parsed.error().ToString(),
                       {}, false);
    }
    record = std::move(*parsed);
  }
  if (alarm_bytes) pushed_alarm_ = DecodeAlarmRecord(*alarm_bytes);
  const bool is_new = !record || !record->has_initialized;

  if (type_->db_migrate) {
    // The provider's migration, in write mode (actors.md §2.5), before the user's onMigrate.
    SqlDatabase& db = Database();
    db.EnterWriteMode();
    struct LeaveWriteMode {
      SqlDatabase& db;
      ~LeaveWriteMode() { db.LeaveWriteMode(); }
    } leave{db};
    co_await RunHook("db.onMigrate", type_->options.on_migrate_timeout, type_->db_migrate(inv, is_new));
  }
  if (type_->on_migrate) {
    co_await RunHook("onMigrate", type_->options.on_migrate_timeout, type_->on_migrate(inv, is_new));
  }
  if (type_->make_state) state_ = type_->make_state();
  if (is_new) {
    Value input = Value::Undefined{};
    if (input_) {
      if (auto v = DecodeCbor(*input_); v.ok()) input = std::move(*v);
    }
    if (type_->create_state) {
      co_await RunHook("createState", type_->options.create_state_timeout,
                       type_->create_state(inv, input));
    }
    if (type_->on_create) {
      co_await RunHook("onCreate", type_->options.on_create_timeout, type_->on_create(inv, input));
    }
    record_initialized_ = true;
    co_await WaitWritten();  // hasInitialized is flushed right after onCreate
  } else {
    if (state_) {
      auto v = DecodeCbor(record->state);
      if (!v.ok()) {
        throw ActorError("actor", "invalid_state", "persisted state: " + v.error().ToString(), {}, false);
      }
      state_->Load(*v);
    }
    for (const auto& e : record->scheduled_events) {
      Value args = Value::Array{};
      if (e.args) {
        if (auto v = DecodeCbor(*e.args); v.ok()) args = std::move(*v);
      }
      cold().schedule.push_back(ScheduledEvent{e.event_id, e.timestamp, e.action, std::move(args)});
    }
    if (cold_) std::sort(cold_->schedule.begin(), cold_->schedule.end(),
              [](const auto& a, const auto& b) { return std::tie(a.ts, a.id) < std::tie(b.ts, b.id); });
    persisted_record_ = *record_bytes;
    persisted_state_ = record->state;
    record_initialized_ = true;
  }
  std::vector<std::string> stale_conns;
  if (!is_new) co_await RestoreHibernatedConns(stale_conns);
  // Everything the start command carried has been used (the input's CBOR stays in input_).
  start_.reset();
  // Restored raw sockets: onWebSocket installs their handlers again, after onWake (below);
  // their replayed messages wait in RawSocket::pending_ until it has.
  std::vector<std::shared_ptr<Conn>> restored_raw;
  for (const auto& [id, c] : conns_) {
    if (c->raw_ && c->raw_->restored_ && std::find(stale_conns.begin(), stale_conns.end(), id) == stale_conns.end()) {
      restored_raw.push_back(c);
    }
  }
  if (type_->create_vars) {
    co_await RunHook("createVars", type_->options.create_vars_timeout, type_->create_vars(inv));
  }
  if (type_->on_wake) {
    co_await RunHook("onWake", type_->options.on_wake_timeout, type_->on_wake(inv));
  }
  // Sockets that closed while the actor slept: their onDisconnect runs now, after onWake.
  for (const auto& id : stale_conns) co_await DisconnectConn(id);
  for (auto& c : restored_raw) RunRestoredRawSocket(std::move(c));
  if (type_->on_before_actor_start) {
    co_await RunHook("onBeforeActorStart", type_->options.on_before_actor_start_timeout,
                     type_->on_before_actor_start(inv));
  }
  // With held outputs the startup's writes need only be on the socket before Running and
  // every answer that follows: the engine keeps those answers until the writes are durable
  // (a cold start no longer pays their sync before it handles its first request). A write
  // that failed meanwhile fails the start; one that fails later ends the generation.
  co_await WaitWritten();
  if (startup_write_failed_) {
    throw ActorError("actor", "storage_failed",
                     "a write of the actor's startup could not be committed", std::nullopt, false);
  }
}

// ---------------------------------------------------------------------------------------
// Shutdown (actors.md §3.4)

void Instance::OnStopCommand(latest::StopActorReason reason) {
  if (stop_received_) return;
  stop_received_ = true;
  if (phase_ == Phase::kLoading) {
    pending_stop_ = reason;  // handled when startup ends
    return;
  }
  if (phase_ != Phase::kStarted) return;
  SpawnOwned(StopSequence(reason), false, false);
}

Task<void> Instance::StopSequence(latest::StopActorReason reason) {
  const bool destroy =
      reason == latest::StopActorReason::kStopIntent || reason == latest::StopActorReason::kDestroy;
  phase_ = Phase::kGrace;
  StopTimersAndWaiters();
  Invocation inv{this, nullptr, nullptr};

  // Connections: hibernate or close them. Outputs already produced (responses, acks) go
  // out first, so no processed message is replayed to the next instance.
  try {
    co_await WaitDurable();
  } catch (const ActorError&) {
  }
  std::vector<std::string> ids;
  for (const auto& [id, c] : conns_) ids.push_back(id);
  std::vector<std::string> hibernating;
  // Raw WebSockets that do not hibernate stay open through onSleep/onDestroy, so the hook
  // can still send on them (actors.md §8.13), and close after it.
  std::vector<std::string> close_after_hook;
  for (const auto& id : ids) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn& conn = *it->second;
    if (conn.transient_) continue;
    if (!destroy && conn.hibernatable_ && conn.connected_) {
      // The socket stays open at the gateway; its record comes back at wake and no
      // onDisconnect runs (actors.md §3.6). It keeps receiving what onSleep and the
      // shutdown's waitUntil work send (its client messages wait for the next instance)
      // and is handed back to the gateway at the end of the shutdown. The record carries
      // every message processed so far (effect-free ones did not write their index).
      AdvanceDurableIndex(conn, std::nullopt);
      StageWrite(ConnKey(id), ConnRecord(conn));
      hibernating.push_back(id);
      continue;
    }
    if (conn.raw_) {
      close_after_hook.push_back(id);
      continue;
    }
    CloseConnSocket(conn, 1000, destroy ? "actor.destroyed" : "actor.stopped");
    co_await DisconnectConn(id);
  }
  const auto grace_deadline = runtime_.clock().MonotonicNow() + type_->options.sleep_grace_period;
  try {
    const HookFn& hook = destroy ? type_->on_destroy : type_->on_sleep;
    if (hook) {
      co_await RunHook(destroy ? "onDestroy" : "onSleep", type_->options.sleep_grace_period, hook(inv));
    }
  } catch (...) {
    LogWarn(kLog, destroy ? "onDestroy failed" : "onSleep failed",
            {{"actor", actor_id_}, {"error", ErrorText(std::current_exception())}});
  }
  if (!close_after_hook.empty()) {
    // What the hook sent passes the gate before the close frames.
    try {
      co_await WaitDurable();
    } catch (const ActorError&) {
    }
    for (const auto& id : close_after_hook) {
      auto it = conns_.find(id);
      if (it == conns_.end() || it->second->closed_) continue;
      it->second->raw_->closed_ = true;  // close_after_hook holds raw sockets only
      CloseConnSocket(*it->second, 1000, destroy ? "actor.destroyed" : "actor.stopped");
      co_await DisconnectConn(id);
    }
  }
  // Wait for keepAwake / waitUntil / in-flight work, bounded by the grace period.
  while (shutdown_blockers_ > 0 && runtime_.clock().MonotonicNow() < grace_deadline) {
    Completion<bool> woke;
    cold().idle_waiters.push_back([woke] { woke.Resolve(true); });
    TimerId t = runtime_.clock().Schedule(grace_deadline, [woke] { woke.Resolve(false); });
    co_await woke;
    runtime_.clock().Cancel(t);
  }
  phase_ = Phase::kFinalizing;
  if (destroy) destroy_alarm_cleared_ = true;
  for (const auto& id : hibernating) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second->closed_) continue;
    AdvanceDurableIndex(*it->second, std::nullopt);
    StageWrite(ConnKey(id), ConnRecord(*it->second));
  }
  std::optional<Error> failure;
  try {
    co_await WaitDurable();
    // An alarm acknowledged during that wait stages its [6] record after the gate opened:
    // make it durable too, so nothing is in flight once the instance reports Stopped.
    for (int i = 0; i < 4 && (flushing_ || !overlay_.empty()); ++i) co_await WaitDurable();
  } catch (const ActorError& e) {
    failure = Error(e.group(), e.code(), e.message());
  }
  // Hand the hibernating sockets back to the gateway once their records are durable.
  for (const auto& id : hibernating) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second->closed_) continue;
    Conn& conn = *it->second;
    latest::ToRivetTunnelMessage out;
    out.message_id.gateway_id = conn.gateway_id_;
    out.message_id.request_id = conn.request_id_;
    out.message_kind = latest::ToRivetWebSocketClose{std::nullopt, std::nullopt, true};
    runtime_.client().SendTunnel(std::move(out), true);
    if (cold_) cold_->ws_conns.erase({conn.gateway_id_, conn.request_id_});
    conn.closed_ = true;
    conns_.erase(it);
  }
  co_await CloseDatabase();
  if (generation_ended_) co_return;  // EndGeneration reported the stop
  phase_ = Phase::kStopped;
  runtime_.client().ActorStopped(actor_id_, generation_, failure);
  runtime_.Retire(*this);
}

// ---------------------------------------------------------------------------------------
// Actions

Task<Value> Instance::InvokeAction(std::string name, Value args, std::shared_ptr<Conn> conn) {
  auto it = type_->actions.find(name);
  if (it == type_->actions.end()) {
    throw ActorError("actor", "action_not_found", "Action `" + name + "` was not found.");
  }
  BeginActivity();
  struct Guard {
    Instance* self;
    ~Guard() { self->EndActivity(); }
  } guard{this};
  const milliseconds timeout = type_->options.action_timeout;
  co_return co_await WithTimeout<Value>(runtime_.clock(), it->second(Invocation{this, std::move(conn), nullptr}, std::move(args)),
      timeout,
      [] { return ActorError("actor", "action_timed_out", "Action timed out"); }, owned_tasks_);
}

// ---------------------------------------------------------------------------------------
// HTTP surface (actors.md §4.3)

void Instance::SendHttpResponse(const latest::MessageId& id, Response response) {
  latest::ToRivetTunnelMessage msg;
  msg.message_id = id;
  msg.message_id.message_index = 0;
  latest::ToRivetResponseStart start;
  start.status = response.status;
  start.headers = protocol::envoy::MergeRepeatedHeaders(std::move(response.headers));
  if (!response.body.empty()) start.body = std::move(response.body);
  start.stream = false;
  msg.message_kind = std::move(start);
  runtime_.client().SendTunnel(std::move(msg), false);
}

Response Instance::ErrorResponse(const ClientError& e, wire::Encoding encoding) {
  wire::HttpResponseError body{e.group, e.code, e.message, e.metadata};
  Response r;
  r.status = HttpStatusFor(e);
  r.headers = {{"content-type", std::string(wire::ContentType(encoding))}};
  r.body = wire::Encode(body, encoding);
  return r;
}

namespace {
std::optional<wire::Encoding> RequestEncoding(const Request& req) {
  const std::string* h = req.Header("x-rivet-encoding");
  if (h == nullptr || h->empty()) return wire::Encoding::kJson;
  return wire::ParseEncoding(*h);
}

Value ParseParams(const std::string* text) {
  if (text == nullptr || text->empty()) return Value(Value::Null{});
  auto v = ParseJson(*text);
  if (!v.ok()) throw ActorError("request", "invalid", "connection params are not valid JSON");
  return std::move(*v);
}
}  // namespace

void Instance::HandleHttp(const latest::MessageId& id, Request req) {
  const std::string& path = req.path;
  auto respond_error = [&](ClientError e) {
    auto enc = RequestEncoding(req).value_or(wire::Encoding::kJson);
    SendHttpResponse(id, ErrorResponse(e, enc));
  };
  if (path.rfind("/action/", 0) == 0) {
    if (req.method != "POST") {
      return respond_error({"actor", "method_not_allowed", "Method not allowed", {}});
    }
    auto name = gw::PercentDecode(std::string_view(path).substr(8));
    if (!name.ok() || name->find('/') != std::string::npos) {
      return respond_error({"actor", "action_not_found", "Action `" + path.substr(8) + "` was not found.", {}});
    }
    SpawnOwned(HttpAction(id, std::move(req), std::move(*name)), true, true);
    return;
  }
  if (path.rfind("/queue/", 0) == 0) {
    if (req.method != "POST") {
      return respond_error({"actor", "method_not_allowed", "Method not allowed", {}});
    }
    auto name = gw::PercentDecode(std::string_view(path).substr(7));
    if (!name.ok() || name->empty() || name->find('/') != std::string::npos) {
      return respond_error({"queue", "invalid_message_key", "Invalid queue name", {}});
    }
    SpawnOwned(HttpQueueSend(id, std::move(req), std::move(*name)), true, true);
    return;
  }
  if (path == "/request" || path.rfind("/request/", 0) == 0) {
    if (!type_->on_request) {
      return respond_error({"actor", "request_handler_not_defined", "This actor has no onRequest handler", {}});
    }
    req.path = path.size() == 8 ? "/" : path.substr(8);
    // Until its response goes out, the gateway may abort the request (its client left):
    // the handler goes on, and sees it through Request::aborted / OnAbort.
    auto abort = std::make_shared<RequestAbort>();
    req.abort_state = abort;
    cold().raw_requests[std::make_pair(id.gateway_id, id.request_id)] = abort;
    // Every raw request is a transient connection: its hooks run first (actors.md §4.9).
    auto task = [](Instance* self, latest::MessageId id, Request req,
                   std::shared_ptr<RequestAbort> abort) -> Task<void> {
      Response resp;
      std::string conn_id;
      try {
        std::shared_ptr<Conn> conn = self->NewConn(/*transient=*/true);
        conn->params_ = ParseParams(req.Header("x-rivet-conn-params"));
        conn_id = conn->id_;
        co_await self->ConnectSetup(conn, req);
        resp = co_await WithTimeout<Response>(self->runtime_.clock(),
            self->type_->on_request(Invocation{self, conn, nullptr}, std::move(req)),
            self->type_->options.action_timeout,
            [] { return ActorError("actor", "action_timed_out", "Action timed out"); },
            self->owned_tasks_);
      } catch (...) {
        ClientError e = ToClientError(std::current_exception(), self->actor_id_);
        resp = self->ErrorResponse(e, wire::Encoding::kJson);
      }
      // Nobody waits for an aborted request's response: it is dropped, here or when the
      // gate would release it. What the handler changed is saved all the same (SpawnOwned).
      // The request can be aborted until its response goes out.
      auto forget = [self, id, abort] {
        if (self->cold_ != nullptr) {
          self->cold_->raw_requests.erase(std::make_pair(id.gateway_id, id.request_id));
        }
        abort->Settle();
      };
      if (abort->aborted()) {
        forget();
      } else {
        self->Gate(
            [self, id, abort, forget, resp = std::move(resp)]() mutable {
              forget();
              if (!abort->aborted()) self->SendHttpResponse(id, std::move(resp));
            },
            [self, id, abort, forget](const ClientError& e) {
              forget();
              if (!abort->aborted()) {
                self->SendHttpResponse(id, self->ErrorResponse(e, wire::Encoding::kJson));
              }
            });
      }
      if (!conn_id.empty()) co_await self->DisconnectConn(conn_id);
    };
    SpawnOwned(task(this, id, std::move(req), std::move(abort)), true, true);
    return;
  }
  if (path == "/metadata" || path == "/health" || path == "/") {
    if (req.method != "GET") return respond_error({"actor", "method_not_allowed", "Method not allowed", {}});
    if (path == "/health") return SendHttpResponse(id, Response::Text(200, "ok"));
    if (path == "/") return SendHttpResponse(id, Response::Text(200, "This is a Keel actor.\n"));
    Value meta = Value::Object({{"runtime", "keel"},
                                {"version", runtime_.options().version},
                                {"type", runtime_.options().production ? "deployed" : "local"}});
    return SendHttpResponse(id, Response::Json(200, ToJson(meta)));
  }
  if (path == "/inspector/state") {
    const std::string* auth = req.Header("authorization");
    const auto& token = runtime_.options().inspector_token;
    const std::optional<std::string_view> given =
        auth == nullptr ? std::nullopt : BearerToken(*auth);
    if (!token || !given || *given != *token) {
      return respond_error({"inspector", "unauthorized", "Inspector token is missing or wrong", {}});
    }
    if (req.method != "GET") return respond_error({"actor", "method_not_allowed", "Method not allowed", {}});
    Value body = Value::Object({{"state", state_ ? state_->Save() : Value(Value::Null{})},
                                {"isStateEnabled", state_ != nullptr}});
    return SendHttpResponse(id, Response::Json(200, ToJson(body)));
  }
  respond_error({"actor", "route_not_found", "Route not found: " + path, {}});
}

std::optional<wire::Encoding> Instance::AcceptHttpBody(const latest::MessageId& id,
                                                       const Request& req) {
  const std::optional<wire::Encoding> enc = RequestEncoding(req);
  if (!enc) {
    SendHttpResponse(id, ErrorResponse({"request", "invalid", "unsupported x-rivet-encoding", {}},
                                       wire::Encoding::kJson));
    return std::nullopt;
  }
  if (req.body.size() > runtime_.options().max_incoming_message_size) {
    SendHttpResponse(
        id, ErrorResponse({"message", "incoming_too_long", "Incoming message too long", {}}, *enc));
    return std::nullopt;
  }
  return enc;
}

Task<void> Instance::HttpAction(latest::MessageId id, Request req, std::string action) {
  const std::optional<wire::Encoding> accepted = AcceptHttpBody(id, req);
  if (!accepted) co_return;
  const wire::Encoding enc = *accepted;
  auto fail = [this, id, enc](const ClientError& e) {
    SendHttpResponse(id, ErrorResponse(e, enc));
  };
  std::string conn_id;
  try {
    auto decoded = wire::DecodeHttpActionRequest(req.body, enc);
    if (!decoded.ok()) {
      throw ActorError("actor", "invalid_request", decoded.error().message());
    }
    Value args = std::move(decoded->args);
    if (args.is_null() || args.is_undefined()) args = Value::Array{};
    std::shared_ptr<Conn> conn = NewConn(/*transient=*/true);
    conn->params_ = ParseParams(req.Header("x-rivet-conn-params"));
    conn_id = conn->id_;
    co_await ConnectSetup(conn, std::move(req));  // nothing below reads the request
    Value output = co_await InvokeAction(action, std::move(args), conn);
    Bytes body = wire::Encode(wire::HttpActionResponse{std::move(output)}, enc);
    if (body.size() > runtime_.options().max_outgoing_message_size) {
      throw ActorError("message", "outgoing_too_long", "Outgoing message too long");
    }
    Response resp{200, {{"content-type", std::string(wire::ContentType(enc))}}, std::move(body)};
    Gate([this, id, resp = std::move(resp)]() mutable { SendHttpResponse(id, std::move(resp)); }, fail);
  } catch (...) {
    ClientError e = ToClientError(std::current_exception(), actor_id_);
    Gate([fail, e] { fail(e); }, fail);
  }
  if (!conn_id.empty()) co_await DisconnectConn(conn_id);
}

// ---------------------------------------------------------------------------------------
// Connections (actors.md §1.6, §4.6)

std::shared_ptr<Conn> Instance::NewConn(bool transient) {
  auto conn = std::make_shared<Conn>();
  conn->owner_ = this;
  conn->id_ = runtime_.random().Uuid4();
  conn->transient_ = transient;
  conns_.emplace(conn->id_, conn);
  return conn;
}

Task<void> Instance::ConnectSetup(std::shared_ptr<Conn> conn, Request request,
                                  std::function<void()> before_on_connect) {
  const ActorOptions& o = type_->options;
  if (type_->on_before_connect) {
    co_await RunHook("onBeforeConnect", o.on_before_connect_timeout,
                     type_->on_before_connect(Invocation{this, conn, nullptr}, request, conn->params_));
  }
  if (type_->create_conn_state) {
    auto make = [](ConnStateFn fn, Invocation inv, Request req, Value params) -> Task<int> {
      // The state lands through the Invocation's conn.
      auto conn = inv.conn;
      conn->state_ = co_await fn(std::move(inv), std::move(req), std::move(params));
      co_return 0;
    };
    co_await WithTimeout<int>(
        runtime_.clock(),
        make(type_->create_conn_state, Invocation{this, conn, nullptr}, std::move(request),
             conn->params_),
        o.create_conn_state_timeout,
        [t = o.create_conn_state_timeout] { return Timeout("createConnState", t); }, owned_tasks_);
  }
  conn->connected_ = true;
  if (before_on_connect) before_on_connect();
  if (type_->on_connect) {
    co_await RunHook("onConnect", o.on_connect_timeout, type_->on_connect(Invocation{this, conn, nullptr}));
  }
}

Task<void> Instance::DisconnectConn(std::string conn_id) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end() || it->second->closed_) co_return;
  std::shared_ptr<Conn> shared = it->second;
  Conn& conn = *shared;
  conn.closed_ = true;
  if (conn.connected_ && type_->on_disconnect) {
    BeginActivity();
    try {
      co_await type_->on_disconnect(Invocation{this, shared, nullptr});
    } catch (...) {
      LogWarn(kLog, "onDisconnect failed", {{"actor", actor_id_}, {"error", ErrorText(std::current_exception())}});
    }
    EndActivity();
  }
  if (cold_) {
    auto& routes = cold_->ws_conns;
    for (auto r = routes.begin(); r != routes.end();) {
      r = r->second == conn_id ? routes.erase(r) : std::next(r);
    }
  }
  if (conn.hibernatable_) StageWrite(ConnKey(conn_id), std::nullopt);
  conns_.erase(conn_id);
  ResetSleepTimer();
}

void Instance::SendToConn(Conn& conn, const wire::ToClient& msg) {
  if (conn.closed_ || conn.transient_) return;
  latest::ToRivetTunnelMessage out;
  out.message_id.gateway_id = conn.gateway_id_;
  out.message_id.request_id = conn.request_id_;
  out.message_id.message_index = conn.next_server_index_++;
  latest::ToRivetWebSocketMessage m;
  m.data = wire::Encode(msg, conn.encoding_);
  if (const uint64_t limit = runtime_.client().max_tunnel_payload(); m.data.size() > limit) {
    // One WebSocket message cannot be split, and the engine would close the whole envoy
    // connection on it (envoy-protocol.md §6.6): the client is told instead.
    std::optional<uint64_t> action_id;
    if (const auto* reply = std::get_if<wire::ActionResponse>(&msg)) action_id = reply->id;
    if (const auto* error = std::get_if<wire::ErrorMsg>(&msg)) action_id = error->action_id;
    LogWarn(kLog, "a message to a connection was over the envoy connection's payload limit",
            {{"actor_id", actor_id_},
             {"bytes", std::to_string(m.data.size())},
             {"limit", std::to_string(limit)}});
    m.data = wire::Encode(
        wire::ToClient{wire::ErrorMsg{
            "message", "outgoing_too_long",
            "Outgoing message too long: " + std::to_string(m.data.size()) +
                " bytes, over the envoy connection's limit of " + std::to_string(limit) + " bytes",
            std::nullopt, action_id}},
        conn.encoding_);
  }
  m.binary = !wire::UsesTextFrames(conn.encoding_);
  out.message_kind = std::move(m);
  runtime_.client().SendTunnel(std::move(out), false);
}

void Instance::CloseConnSocket(Conn& conn, uint16_t code, std::string reason) {
  if (conn.transient_) return;
  latest::ToRivetTunnelMessage out;
  out.message_id.gateway_id = conn.gateway_id_;
  out.message_id.request_id = conn.request_id_;
  latest::ToRivetWebSocketClose close;
  close.code = code;
  close.reason = std::move(reason);
  close.hibernate = false;
  out.message_kind = std::move(close);
  runtime_.client().SendTunnel(std::move(out), true);
  if (cold_) cold_->ws_conns.erase({conn.gateway_id_, conn.request_id_});
}

void Instance::HandleWsOpen(const latest::MessageId& id, Request req) {
  auto refuse = [this, &id](uint16_t code, std::string reason) {
    latest::ToRivetTunnelMessage out;
    out.message_id = id;
    latest::ToRivetWebSocketClose close;
    close.code = code;
    close.reason = std::move(reason);
    out.message_kind = std::move(close);
    runtime_.client().SendTunnel(std::move(out), true);
  };
  const std::string* proto = req.Header("sec-websocket-protocol");
  gw::RivetSubprotocols sp = gw::ParseRivetSubprotocols(proto ? *proto : std::string_view{});
  const bool raw = req.path != "/connect";
  if (raw && !type_->on_websocket) return refuse(1011, "actor.not_found");
  auto enc = wire::ParseEncoding(sp.encoding.value_or("json"));
  if (!raw && !enc) return refuse(1003, "actor.unsupported_websocket_encoding");

  Value params;
  try {
    if (sp.conn_params_raw) {
      auto decoded = gw::PercentDecode(*sp.conn_params_raw);
      if (!decoded.ok()) throw ActorError("request", "invalid", "connection params are not URL-encoded");
      params = ParseParams(&*decoded);
    }
  } catch (const ActorError& e) {
    return refuse(1011, e.group() + "." + e.code());
  }
  if (raw) return OpenRawSocket(id, std::move(req), std::move(params));
  std::shared_ptr<Conn> conn = AcceptSocket(id, req, std::move(params), /*hibernatable=*/true);
  conn->encoding_ = *enc;
  const std::string conn_id = conn->id_;

  auto setup = [](Instance* self, std::shared_ptr<Conn> c, std::string conn_id, Request req) -> Task<void> {
    std::optional<ClientError> failed;
    // Init goes out before onConnect runs, so events sent from onConnect follow it.
    auto send_init = [self, conn_id] {
      wire::ToClient init = wire::Init{self->actor_id_, conn_id};
      self->Gate([self, conn_id, init] {
        auto it = self->conns_.find(conn_id);
        if (it != self->conns_.end()) self->SendToConn(*it->second, init);
      });
    };
    try {
      co_await self->ConnectSetup(c, std::move(req), send_init);
    } catch (...) {
      failed = ToClientError(std::current_exception(), self->actor_id_);
    }
    auto it = self->conns_.find(conn_id);
    if (it == self->conns_.end()) co_return;
    if (!failed) {
      if (it->second->hibernatable_) self->StageConnIfChanged(*it->second);
      co_return;
    }
    const ClientError& e = *failed;
    self->SendToConn(*it->second, wire::ErrorMsg{e.group, e.code, e.message, e.metadata, std::nullopt});
    self->CloseConnSocket(*it->second, 1011, e.group + "." + e.code);
    co_await self->DisconnectConn(conn_id);
  };
  SpawnOwned(setup(this, std::move(conn), conn_id, std::move(req)), false, true);
}

void Instance::HandleWsMessage(const latest::MessageId& id, const Bytes& data, bool binary) {
  if (!cold_) return;
  auto it = cold_->ws_conns.find({id.gateway_id, id.request_id});
  if (it == cold_->ws_conns.end()) return;
  auto cit = conns_.find(it->second);
  if (cit == conns_.end()) return;
  Conn& conn = *cit->second;
  if (conn.raw_ && !conn.hibernatable_) {
    DeliverRaw(conn.raw_, data, binary, id.message_index);
    return;
  }
  if (!conn.raw_ && data.size() > runtime_.options().max_incoming_message_size) {
    CloseConnSocket(conn, 1011, "message.incoming_too_long");
    Spawn(DisconnectConn(conn.id_));
    return;
  }
  (void)binary;
  std::optional<uint16_t> index;
  if (conn.hibernatable_) {
    // A replay after wake carries indexes this connection already processed.
    const uint16_t idx = id.message_index;
    if (static_cast<int16_t>(idx - conn.last_client_index_) <= 0 && conn.last_client_index_ != 0) {
      LogDebug(kLog, "replayed client message ignored",
               {{"actor", actor_id_}, {"index", std::to_string(idx)}, {"last", std::to_string(conn.last_client_index_)}});
      AnswerReplayedAction(conn, data);
      return;
    }
    if (phase_ == Phase::kLoading) {
      // A restored socket's replay can overtake the end of startup: keep it for then.
      cold().early_ws.push_back(EarlyWsMessage{id, data, binary});
      return;
    }
    // During a sleep shutdown the message is neither answered nor acknowledged (nor
    // counted as received): the gateway replays it to the next instance (actors.md §3.4).
    if (phase_ != Phase::kStarted) return;
    conn.last_client_index_ = idx;
    conn.processing_.insert(idx);
    index = idx;
  }
  if (conn.raw_) {
    if (AnswerAckProbe(conn, data)) {
      StageConnProcessed(conn, index);
      FinishClientMessage(conn.id_, *index);
      return;
    }
    DeliverRaw(conn.raw_, data, binary, *index);
    return;
  }
  auto msg = wire::DecodeToServer(data, conn.encoding_);
  if (!msg.ok()) {
    CloseConnSocket(conn, 1011, "actor.invalid_request");
    Spawn(DisconnectConn(conn.id_));
    return;
  }
  if (auto* action = std::get_if<wire::ActionRequest>(&*msg)) {
    SpawnOwned(ConnAction(conn.id_, std::move(*action), index), true, true);
    return;
  }
  const auto& sub = std::get<wire::SubscriptionRequest>(*msg);
  auto ev = type_->events.find(sub.event_name);
  if (!sub.subscribe || ev == type_->events.end() || !ev->second) {
    if (sub.subscribe) {
      conn.subscriptions_.insert(sub.event_name);
    } else {
      conn.subscriptions_.erase(sub.event_name);
    }
    // Written before the message is acknowledged (the ack passes the gate).
    StageConnProcessed(conn, index);
    if (index) FinishClientMessage(conn.id_, *index);
    return;
  }
  // A guarded subscription is processed (and acknowledged) only once its guard allowed it
  // and it is staged: acknowledged earlier, a runtime crash before the record was written
  // lost a subscription the gateway would not replay.
  auto check = [](Instance* self, std::string conn_id, std::string name,
                  std::optional<uint16_t> index) -> Task<void> {
    auto it = self->conns_.find(conn_id);
    if (it == self->conns_.end()) co_return;
    bool ok = false;
    std::optional<ClientError> err;
    try {
      ok = co_await self->type_->events.find(name)->second(Invocation{self, it->second, nullptr});
    } catch (...) {
      err = ToClientError(std::current_exception(), self->actor_id_);
    }
    it = self->conns_.find(conn_id);
    if (it == self->conns_.end()) co_return;
    if (ok && !err) {
      it->second->subscriptions_.insert(name);
      self->StageConnProcessed(*it->second, index);
      if (index) self->FinishClientMessage(conn_id, *index);
      self->MaybeFlush();
      co_return;
    }
    if (index) self->FinishClientMessage(conn_id, *index);
    ClientError e = err.value_or(ClientError{"auth", "forbidden", "Forbidden", {}});
    self->SendToConn(*it->second, wire::ErrorMsg{e.group, e.code, e.message, e.metadata, std::nullopt});
    self->CloseConnSocket(*it->second, 1011, e.group + "." + e.code);
    co_await self->DisconnectConn(conn_id);
  };
  SpawnOwned(check(this, conn.id_, sub.event_name, index), true, false);
}

Task<void> Instance::ConnAction(std::string conn_id, wire::ActionRequest req,
                                std::optional<uint16_t> index) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) co_return;
  const uint64_t staged_before = staged_seq_;
  wire::ToClient reply;
  try {
    Value output = co_await InvokeAction(req.name, std::move(req.args), it->second);
    reply = wire::ActionResponse{req.id, std::move(output)};
  } catch (...) {
    ClientError e = ToClientError(std::current_exception(), actor_id_);
    reply = wire::ErrorMsg{e.group, e.code, e.message, e.metadata, req.id};
  }
  // The record says this message was processed, in the same commit as its effects (the
  // flush an in-action broadcast would start waits for the end of the turn, see
  // Runtime::OnTunnelMessage), so a replay after a runtime crash does not apply it twice.
  // The answer waits for both: its effects and the index. When nothing was staged while
  // the action ran — a read-only action, or one whose only effects are SQL, which commits
  // on its own — there is nothing a replay could apply twice from KV, so the index is not
  // written at all (it rides along with the next record written, at the latest the one
  // written when the actor sleeps): no synced commit per read, and the gateway's ack goes
  // out right behind the answer. Until that ack arrives a crash makes the gateway replay
  // the message and the next instance runs it again (its answer may then arrive twice;
  // clients drop an answer to a request they no longer wait for). Anything staged
  // meanwhile, by this action or one interleaved with it, makes the index part of the
  // commit, as before.
  Checkpoint();
  if (auto c = conns_.find(conn_id); c != conns_.end()) StageMessageDone(*c->second, index, staged_before);
  auto send = [this, conn_id, reply = std::move(reply), index]() {
    auto c = conns_.find(conn_id);
    if (c == conns_.end()) return;
    if (std::holds_alternative<wire::ActionResponse>(reply)) {
      Bytes encoded = wire::Encode(reply, c->second->encoding_);
      if (encoded.size() > runtime_.options().max_outgoing_message_size) {
        SendToConn(*c->second, wire::ErrorMsg{"message", "outgoing_too_long", "Outgoing message too long",
                                              std::nullopt, std::get<wire::ActionResponse>(reply).id});
        return;
      }
    }
    SendToConn(*c->second, reply);
    if (index) FinishClientMessage(conn_id, *index);
  };
  const uint64_t action_id = req.id;
  GateAt(
      staged_seq_, std::move(send),
      [this, conn_id = std::move(conn_id), action_id](const ClientError& e) {
        auto c = conns_.find(conn_id);
        if (c != conns_.end())
          SendToConn(*c->second, wire::ErrorMsg{e.group, e.code, e.message, e.metadata, action_id});
      });
}

void Instance::HandleWsClose(const latest::MessageId& id) {
  if (!cold_) return;
  auto it = cold_->ws_conns.find({id.gateway_id, id.request_id});
  if (it == cold_->ws_conns.end()) return;
  std::string conn_id = it->second;
  cold_->ws_conns.erase(it);
  auto cit = conns_.find(conn_id);
  if (cit != conns_.end() && cit->second->raw_) {
    std::shared_ptr<RawSocket> raw = cit->second->raw_;
    raw->closed_ = true;
    if (raw->on_close_) {
      auto closed = [](Instance* self, std::shared_ptr<RawSocket> raw, std::string conn_id) -> Task<void> {
        try {
          co_await raw->on_close_(1000, "");
        } catch (...) {
          LogWarn(kLog, "raw WebSocket close handler failed",
                  {{"actor", self->actor_id_}, {"error", ErrorText(std::current_exception())}});
        }
        co_await self->DisconnectConn(conn_id);
      };
      SpawnOwned(closed(this, raw, conn_id), true, true);
      return;
    }
  }
  SpawnOwned(DisconnectConn(conn_id), false, true);
}

// ---------------------------------------------------------------------------------------
// Hibernatable connections (actors.md §3.6, envoy-protocol.md §6.5)

Bytes Instance::ConnRecord(Conn& conn) const {
  protocol::persist::latest::Conn r;
  // The record is written whenever a message changes the connection, so what never
  // changes is not copied for it: the parameters are encoded once, and the id, path and
  // headers are lent to the record and taken back once it is encoded.
  if (!conn.params_encoded_) {
    conn.params_cbor_ = EncodeCbor(conn.params_);
    conn.params_encoded_ = true;
  }
  r.id = std::move(conn.id_);
  r.parameters = std::move(conn.params_cbor_);
  r.request_path = std::move(conn.request_path_);
  r.request_headers = std::move(conn.request_headers_);
  struct GiveBack {
    Conn& conn;
    protocol::persist::latest::Conn& r;
    ~GiveBack() {
      conn.id_ = std::move(r.id);
      conn.params_cbor_ = std::move(r.parameters);
      conn.request_path_ = std::move(r.request_path);
      conn.request_headers_ = std::move(r.request_headers);
    }
  } give_back{conn, r};
  r.state = EncodeCbor(conn.state_);
  r.subscriptions.reserve(conn.subscriptions_.size());
  for (const auto& s : conn.subscriptions_) r.subscriptions.push_back({s});
  r.gateway_id = conn.gateway_id_;
  r.request_id = conn.request_id_;
  r.server_message_index = conn.next_server_index_;
  r.client_message_index = conn.durable_index_;
  return protocol::persist::WriteConn(r);
}

namespace {
// What a connection record says beyond routing: its state, subscriptions and processed
// message index, appended to `out`.
void AppendConnDigest(const Value& state, const std::set<std::string, std::less<>>& subscriptions,
                      uint16_t index, Bytes& out) {
  AppendCbor(state, out);
  out.push_back(static_cast<uint8_t>(index >> 8));
  out.push_back(static_cast<uint8_t>(index & 0xff));
  for (const auto& s : subscriptions) {
    out.push_back(0);
    out.insert(out.end(), s.begin(), s.end());
  }
}

Bytes ConnDigest(const Value& state, const std::set<std::string, std::less<>>& subscriptions,
                 uint16_t index) {
  return BuildExact([&](Bytes& out) { AppendConnDigest(state, subscriptions, index, out); });
}

// Whether the digest of a connection differs from `persisted`, the one its last record was
// written with; if so, `persisted` becomes the new one. Checked after every message, so it
// is built in the thread's scratch buffer and copied only when it changed.
bool TakeChangedDigest(Bytes& persisted, const Value& state,
                       const std::set<std::string, std::less<>>& subscriptions, uint16_t index) {
  return WithScratch([&](Bytes& digest) {
    AppendConnDigest(state, subscriptions, index, digest);
    if (digest == persisted) return false;
    persisted.assign(digest.begin(), digest.end());
    return true;
  });
}
}  // namespace

void Instance::TouchConn(Conn& conn) {
  conn.touched_ = true;
  cold().touched_conns.push_back(conn.id_);
}

void Instance::StageTouchedConns() {
  if (!cold_ || cold_->touched_conns.empty()) return;
  std::vector<std::string> touched = std::move(cold_->touched_conns);
  cold_->touched_conns.clear();
  for (const auto& id : touched) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    it->second->touched_ = false;
    StageConnIfChanged(*it->second);
  }
}

void Instance::StageConnIfChanged(Conn& conn) {
  if (!conn.hibernatable_ || conn.closed_ || conn.transient_) return;
  if (!TakeChangedDigest(conn.persisted_digest_, conn.state_, conn.subscriptions_,
                         conn.durable_index_)) {
    return;
  }
  StageWrite(ConnKey(conn.id_), ConnRecord(conn));
}

// Everything up to the oldest message still being processed (other than `finishing`, which
// is done once its caller says so) has been processed.
uint16_t Instance::ProcessedUpto(const Conn& conn, std::optional<uint16_t> finishing) {
  for (uint16_t p : conn.processing_) {
    if (p != finishing) return static_cast<uint16_t>(p - 1);
  }
  return conn.last_client_index_;
}

void Instance::AdvanceDurableIndex(Conn& conn, std::optional<uint16_t> finishing) {
  const uint16_t upto = ProcessedUpto(conn, finishing);
  if (static_cast<int16_t>(upto - conn.durable_index_) > 0) conn.durable_index_ = upto;
}

void Instance::StageConnProcessed(Conn& conn, std::optional<uint16_t> index) {
  if (index) AdvanceDurableIndex(conn, index);
  StageConnIfChanged(conn);
}

void Instance::StageMessageDone(Conn& conn, std::optional<uint16_t> index, uint64_t staged_before) {
  StageConnIfChanged(conn);
  if (staged_seq_ != staged_before) StageConnProcessed(conn, index);
}

void Instance::DeliverEarlyMessages() {
  if (!cold_) return;
  std::vector<EarlyWsMessage> early = std::move(cold_->early_ws);
  cold_->early_ws.clear();
  for (const auto& m : early) HandleWsMessage(m.id, m.data, m.binary);
}

// A message is done: acknowledge everything up to the oldest one still being processed
// (acks are cumulative), after the outputs it caused (the ack goes through the gate).
void Instance::FinishClientMessage(const std::string& conn_id, uint16_t index) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return;
  Conn& conn = *it->second;
  conn.processing_.erase(index);
  const uint16_t upto = ProcessedUpto(conn, std::nullopt);
  if (upto == conn.acked_index_) return;
  conn.acked_index_ = upto;
  latest::ToRivetTunnelMessage ack;
  ack.message_id.gateway_id = conn.gateway_id_;
  ack.message_id.request_id = conn.request_id_;
  ack.message_kind = latest::ToRivetWebSocketMessageAck{upto};
  Gate([this, ack = std::move(ack)]() mutable { runtime_.client().SendTunnel(std::move(ack), true); });
}

// At wake: sockets the gateway still holds (hibernatingRequests) come back as they were;
// records of sockets that closed meanwhile are returned in `stale` (onDisconnect runs for
// them after onWake).
Task<void> Instance::RestoreHibernatedConns(std::vector<std::string>& stale) {
  // The [2] records, in key order (as a KV list returns them): from the preloaded KV when
  // the engine scanned [2] (our preload plan asks for it with partial=false, so a listed
  // prefix carries every record under it), else one KV list.
  const Bytes conn_prefix = Key1(keys::kConnPrefix);
  std::vector<std::pair<const Bytes*, const Bytes*>> records;  // key, value
  bool preloaded = false;
  if (start_->preloaded_kv) {
    const auto& pre = *start_->preloaded_kv;
    const auto& listed = pre.requested_prefixes;
    preloaded = std::find(listed.begin(), listed.end(), conn_prefix) != listed.end();
    if (preloaded) {
      for (const auto& e : pre.entries) {
        if (!e.key.empty() && e.key[0] == keys::kConnPrefix) records.emplace_back(&e.key, &e.value);
      }
      auto by_key = [](const auto& a, const auto& b) { return *a.first < *b.first; };
      std::sort(records.begin(), records.end(), by_key);
    }
  }
  latest::KvResponseData r;
  if (!preloaded) {
    latest::KvListRequest list;
    list.query = latest::KvListQuery{latest::KvListPrefixQuery{conn_prefix}};
    latest::KvRequestData req{std::move(list)};
    r = co_await Kv(std::move(req));
    if (const auto* resp = r.get_if<latest::KvListResponse>()) {
      for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
        records.emplace_back(&resp->keys[i], &resp->values[i]);
      }
    }
  }
  std::set<std::pair<latest::GatewayId, latest::RequestId>> alive;
  for (const auto& h : start_->hibernating_requests) alive.insert({h.gateway_id, h.request_id});
  std::set<std::pair<latest::GatewayId, latest::RequestId>> restored;
  for (const auto& [key, value] : records) {
    auto rec = protocol::persist::ReadConn(*value);
    if (!rec.ok()) {
      StageWrite(*key, std::nullopt);
      continue;
    }
    auto conn = std::make_shared<Conn>();
    conn->owner_ = this;
    conn->id_ = rec->id;
    conn->transient_ = false;
    conn->hibernatable_ = true;
    conn->connected_ = true;
    if (auto v = DecodeCbor(rec->parameters); v.ok()) {
      conn->params_ = std::move(*v);
      conn->params_cbor_ = rec->parameters;
      conn->params_encoded_ = true;
    }
    if (auto v = DecodeCbor(rec->state); v.ok()) conn->state_ = std::move(*v);
    for (const auto& sub : rec->subscriptions) conn->subscriptions_.insert(sub.event_name);
    conn->gateway_id_ = rec->gateway_id;
    conn->request_id_ = rec->request_id;
    conn->next_server_index_ = rec->server_message_index;
    conn->last_client_index_ = rec->client_message_index;
    conn->acked_index_ = rec->client_message_index;
    conn->durable_index_ = rec->client_message_index;
    conn->request_path_ = rec->request_path;
    conn->request_headers_ = rec->request_headers;
    conn->persisted_digest_ = ConnDigest(conn->state_, conn->subscriptions_, conn->durable_index_);
    // A record whose path is not /connect is a raw WebSocket (can_hibernate_websocket).
    const std::string_view path = conn->request_path_;
    const std::string_view bare_path = path.substr(0, path.find('?'));
    if (bare_path != "/connect" && !type_->on_websocket) {
      // A raw socket of a version of this actor that had onWebSocket: nothing can take it
      // now; the gateway is told to close it below (listed but not restored).
      StageWrite(*key, std::nullopt);
      continue;
    }
    if (bare_path != "/connect") {
      Request req;
      req.method = "GET";
      req.path = std::string(bare_path);
      if (bare_path.size() < path.size()) req.query = std::string(path.substr(bare_path.size() + 1));
      req.headers = conn->request_headers_;
      AttachRawSocket(*conn, std::move(req), /*restored=*/true);
    }
    const std::string* proto = nullptr;
    for (const auto& [k, v] : conn->request_headers_) {
      if (k == "sec-websocket-protocol" || k == "Sec-WebSocket-Protocol") proto = &v;
    }
    gw::RivetSubprotocols sp = gw::ParseRivetSubprotocols(proto ? *proto : std::string_view{});
    conn->encoding_ = wire::ParseEncoding(sp.encoding.value_or("json")).value_or(wire::Encoding::kJson);
    const auto route = std::make_pair(conn->gateway_id_, conn->request_id_);
    conns_.emplace(conn->id_, conn);
    if (!alive.count(route)) {
      stale.push_back(conn->id_);
      continue;
    }
    restored.insert(route);
    LogDebug(kLog, "connection restored",
             {{"actor", actor_id_}, {"conn", conn->id_}, {"index", std::to_string(conn->last_client_index_)}});
    cold().ws_conns[route] = conn->id_;
    runtime_.client().RegisterRequest(actor_id_, conn->gateway_id_, conn->request_id_);
    latest::ToRivetTunnelMessage open;
    open.message_id.gateway_id = conn->gateway_id_;
    open.message_id.request_id = conn->request_id_;
    open.message_kind = latest::ToRivetWebSocketOpen{true};
    runtime_.client().SendTunnel(std::move(open), true);
  }
  // Listed by the engine but unknown here: tell the gateway to close it.
  for (const auto& h : start_->hibernating_requests) {
    if (restored.count({h.gateway_id, h.request_id})) continue;
    bool is_stale = false;
    for (const auto& id : stale) is_stale = is_stale || (conns_[id]->gateway_id_ == h.gateway_id &&
                                                       conns_[id]->request_id_ == h.request_id);
    if (is_stale) continue;
    latest::ToRivetTunnelMessage close;
    close.message_id.gateway_id = h.gateway_id;
    close.message_id.request_id = h.request_id;
    close.message_kind = latest::ToRivetWebSocketClose{1000, std::string("ws.meta_not_found_during_restore"), false};
    runtime_.client().SendTunnel(std::move(close), true);
  }
}

// ---------------------------------------------------------------------------------------
// Raw WebSockets (actors.md §4.9)

void RawSocket::Send(Bytes data, bool binary) {
  if (owner_ == nullptr || closed_) return;
  Instance* inst = owner_;
  if (const uint64_t limit = inst->runtime_.client().max_tunnel_payload(); data.size() > limit) {
    // One WebSocket message cannot be split, and the engine would close the whole envoy
    // connection on it (envoy-protocol.md §6.6).
    throw ActorError("message", "outgoing_too_long",
                     "a WebSocket message of " + std::to_string(data.size()) +
                         " bytes is over the envoy connection's limit of " + std::to_string(limit) +
                         " bytes (maxResponsePayloadSize)");
  }
  std::string id = conn_id_;
  inst->Gate([inst, id, data = std::move(data), binary]() mutable {
    auto it = inst->conns_.find(id);
    if (it == inst->conns_.end() || it->second->closed_) return;
    Conn& conn = *it->second;
    latest::ToRivetTunnelMessage out;
    out.message_id.gateway_id = conn.gateway_id_;
    out.message_id.request_id = conn.request_id_;
    out.message_id.message_index = conn.next_server_index_++;
    out.message_kind = latest::ToRivetWebSocketMessage{std::move(data), binary};
    inst->runtime_.client().SendTunnel(std::move(out), false);
  });
}

void RawSocket::Close(uint16_t code, std::string reason) {
  if (owner_ == nullptr || closed_) return;
  closed_ = true;
  Instance* inst = owner_;
  std::string id = conn_id_;
  // After every message sent before it.
  inst->Gate([inst, id, code, reason] {
    auto it = inst->conns_.find(id);
    if (it == inst->conns_.end()) return;
    inst->CloseConnSocket(*it->second, code, reason);
    Spawn(inst->DisconnectConn(id));
  });
}

void RawSocket::OnMessage(MessageFn fn) {
  on_message_ = std::move(fn);
  auto pending = std::move(pending_);
  pending_.clear();
  if (owner_ == nullptr) return;
  auto it = owner_->conns_.find(conn_id_);
  if (it == owner_->conns_.end()) return;
  for (auto& p : pending) owner_->DeliverRaw(it->second->raw_, std::move(p.data), p.binary, p.index);
}

void Instance::DeliverRaw(std::shared_ptr<RawSocket> raw, Bytes data, bool binary, uint16_t index) {
  if (!raw || raw->closed_) return;
  if (!raw->on_message_) {
    raw->pending_.push_back(RawSocket::Pending{std::move(data), binary, index});
    return;
  }
  auto handle = [](Instance* self, std::shared_ptr<RawSocket> raw, Bytes data, bool binary,
                   uint16_t index) -> Task<void> {
    const uint64_t staged_before = self->staged_seq_;
    try {
      co_await raw->on_message_(std::move(data), binary, index);
    } catch (...) {
      ClientError e = ToClientError(std::current_exception(), self->actor_id_);
      raw->Close(1011, e.group + "." + e.code);
    }
    if (!raw->hibernatable_) co_return;
    // Handled (or failed: a replay would fail again): recorded with the handler's effects,
    // then acknowledged, as for /connect messages — and, as there, a handler that staged
    // nothing writes no index of its own (see ConnAction).
    auto it = self->conns_.find(raw->conn_id_);
    if (it == self->conns_.end()) co_return;
    self->Checkpoint();
    self->StageMessageDone(*it->second, index, staged_before);
    self->FinishClientMessage(raw->conn_id_, index);
  };
  // An async message handler counts as activity until it settles (actors.md §3.3 rule 9).
  SpawnOwned(handle(this, std::move(raw), std::move(data), binary, index), true, true);
}

// A replayed message the connection's record says was processed: the gateway was not told
// (its ack died with the previous instance), so the answer may have died too. Running the
// action again would apply its effects twice; instead its caller learns the result is lost
// (a client that did get the answer drops this one: it no longer waits for that id). Not
// a scheduling error: a client must not retry it blindly, the effects are durable.
void Instance::AnswerReplayedAction(Conn& conn, const Bytes& data) {
  if (conn.raw_) return;
  auto msg = wire::DecodeToServer(data, conn.encoding_);
  if (!msg.ok()) return;
  const auto* action = std::get_if<wire::ActionRequest>(&*msg);
  if (action == nullptr) return;
  const std::string conn_id = conn.id_;
  const uint64_t action_id = action->id;
  Gate([this, conn_id, action_id] {
    auto it = conns_.find(conn_id);
    if (it == conns_.end()) return;
    SendToConn(*it->second, wire::ErrorMsg{"actor", "action_result_lost",
                                           "The action ran before the actor restarted and its effects are saved, "
                                           "but its result was lost; do not retry it blindly.",
                                           std::nullopt, action_id});
  });
}

bool Instance::AnswerAckProbe(Conn& conn, const Bytes& data) {
  static constexpr std::string_view kProbe = "__rivetkitTestHibernatableAckStateV1";
  if (!runtime_.options().test_hooks || data.size() > 128) return false;
  std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  if (text.find(kProbe) == std::string_view::npos) return false;
  auto parsed = ParseJson(text);
  if (!parsed.ok()) return false;
  const Value* flag = parsed->Find(kProbe);
  if (flag == nullptr || !flag->is_bool() || !flag->as_bool()) return false;
  // The runtime's bookkeeping before this probe is counted: the last index received, the
  // last acknowledged, and those received but not yet acknowledged.
  const uint16_t probe = conn.last_client_index_;
  const uint16_t last = static_cast<uint16_t>(probe - 1);
  Value::Array pending;
  for (uint16_t i = static_cast<uint16_t>(conn.acked_index_ + 1); static_cast<int16_t>(last - i) >= 0; ++i) {
    pending.push_back(Value(static_cast<int64_t>(i)));
  }
  Value answer = Value::Object({{"lastSentIndex", static_cast<int64_t>(last)},
                                {"lastAckedIndex", static_cast<int64_t>(conn.acked_index_)},
                                {"pendingIndexes", Value(std::move(pending))}});
  const std::string json = ToJson(answer);
  conn.raw_->Send(Bytes(json.begin(), json.end()), false);
  return true;
}

std::shared_ptr<Conn> Instance::AcceptSocket(const latest::MessageId& id, const Request& req, Value params,
                                             bool hibernatable) {
  std::shared_ptr<Conn> conn = NewConn(/*transient=*/false);
  conn->gateway_id_ = id.gateway_id;
  conn->request_id_ = id.request_id;
  conn->params_ = std::move(params);
  conn->hibernatable_ = hibernatable;
  conn->request_path_ = req.path + (req.query.empty() ? "" : "?" + req.query);
  conn->request_headers_ = req.headers;
  cold().ws_conns[{id.gateway_id, id.request_id}] = conn->id_;
  ResetSleepTimer();

  latest::ToRivetTunnelMessage open;
  open.message_id = id;
  open.message_kind = latest::ToRivetWebSocketOpen{hibernatable};
  runtime_.client().SendTunnel(std::move(open), true);
  return conn;
}

std::shared_ptr<RawSocket> Instance::AttachRawSocket(Conn& conn, Request req, bool restored) {
  auto raw = std::make_shared<RawSocket>();
  raw->owner_ = this;
  raw->conn_id_ = conn.id_;
  raw->request_ = std::move(req);
  raw->hibernatable_ = conn.hibernatable_;
  raw->restored_ = restored;
  conn.raw_ = raw;
  return raw;
}

void Instance::OpenRawSocket(const latest::MessageId& id, Request req, Value params) {
  const auto& can_hibernate = type_->options.can_hibernate_websocket;
  bool hibernatable = false;
  try {
    hibernatable = can_hibernate && can_hibernate(req);
  } catch (...) {
    // User code: what it throws refuses this socket (as a failing onBeforeConnect would),
    // not the runtime's turn.
    const ClientError e = ToClientError(std::current_exception(), actor_id_);
    latest::ToRivetTunnelMessage out;
    out.message_id = id;
    out.message_kind = latest::ToRivetWebSocketClose{1011, e.group + "." + e.code, false};
    runtime_.client().SendTunnel(std::move(out), true);
    return;
  }
  std::shared_ptr<Conn> conn = AcceptSocket(id, req, std::move(params), hibernatable);
  std::shared_ptr<RawSocket> raw = AttachRawSocket(*conn, req, /*restored=*/false);

  auto setup = [](Instance* self, std::shared_ptr<Conn> conn, std::shared_ptr<RawSocket> raw,
                  Request req) -> Task<void> {
    std::optional<ClientError> failed;
    try {
      co_await self->ConnectSetup(conn, std::move(req));
      Invocation inv(self, conn, nullptr);
      co_await self->RunHook("onWebSocket", self->type_->options.action_timeout,
                             self->type_->on_websocket(std::move(inv), raw));
    } catch (...) {
      failed = ToClientError(std::current_exception(), self->actor_id_);
    }
    if (failed) {
      raw->Close(1011, failed->group + "." + failed->code);
    } else if (conn->hibernatable_) {
      self->StageConnIfChanged(*conn);  // the record a runtime crash would restore
    }
  };
  SpawnOwned(setup(this, conn, std::move(raw), std::move(req)), false, true);
}

void Instance::RunRestoredRawSocket(std::shared_ptr<Conn> conn) {
  auto run = [](Instance* self, std::shared_ptr<Conn> conn) -> Task<void> {
    std::shared_ptr<RawSocket> raw = conn->raw_;
    try {
      Invocation inv(self, conn, nullptr);
      co_await self->RunHook("onWebSocket", self->type_->options.action_timeout,
                             self->type_->on_websocket(std::move(inv), raw));
    } catch (...) {
      ClientError e = ToClientError(std::current_exception(), self->actor_id_);
      raw->Close(1011, e.group + "." + e.code);
    }
  };
  SpawnOwned(run(this, std::move(conn)), false, true);
}

void Instance::Broadcast(std::string_view event, Value args) {
  std::vector<std::string> targets;
  for (const auto& [id, c] : conns_) {
    if (!c->transient_ && !c->closed_ && c->subscriptions_.count(event)) targets.push_back(id);
  }
  if (targets.empty()) return;
  wire::ToClient msg = wire::Event{std::string(event), std::move(args)};
  Gate([this, targets = std::move(targets), msg = std::move(msg)] {
    for (const auto& id : targets) {
      auto it = conns_.find(id);
      if (it != conns_.end()) SendToConn(*it->second, msg);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Runtime

Runtime::Runtime(RuntimeOptions options, Clock& clock, Random& random)
    : options_(std::move(options)), clock_(clock), random_(random) {}

Runtime::~Runtime() = default;

InstanceDeadlines::~InstanceDeadlines() {
  if (timer_ != TimerId{}) clock_.Cancel(timer_);
}

void InstanceDeadlines::Set(Instance& instance, std::optional<MonoTime> deadline) {
  std::optional<MonoTime>& slot = instance.*slot_;
  if (slot == deadline) return;
  if (slot) deadlines_.erase({*slot, &instance});
  slot = deadline;
  if (deadline) deadlines_.insert({*deadline, &instance});
  Arm();
}

void InstanceDeadlines::Forget(Instance& instance) {
  std::optional<MonoTime>& slot = instance.*slot_;
  if (slot) deadlines_.erase({*slot, &instance});
  slot.reset();
}

void InstanceDeadlines::Arm() {
  if (deadlines_.empty()) {
    if (timer_ != TimerId{}) clock_.Cancel(timer_);
    timer_ = {};
    return;
  }
  const MonoTime earliest = deadlines_.begin()->first;
  // A timer due no later than the earliest deadline stays: when it fires early it re-arms.
  if (timer_ != TimerId{} && timer_at_ <= earliest) return;
  if (timer_ != TimerId{}) clock_.Cancel(timer_);
  timer_at_ = earliest;
  timer_ = clock_.Schedule(earliest, [this] {
    timer_ = {};
    OnTimer();
  });
}

void InstanceDeadlines::OnTimer() {
  const MonoTime now = clock_.MonotonicNow();
  // One at a time: what an instance does when due may change other deadlines.
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Instance* instance = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    (instance->*slot_).reset();
    (instance->*due_)();
  }
  Arm();
}

void Runtime::Register(std::shared_ptr<const ActorType> type) {
  std::string name = type->name;
  types_[name] = std::move(type);
}

namespace {

// The user's metadata object with the "preload" plan added: the keys and prefixes the
// startup sequence reads, so the engine can put them in the start command. Spliced into
// the user's text rather than re-rendered, so their fields stay byte for byte (a ToJson
// round trip would turn large integers into $BigInt escapes). Not an object, or a
// "preload" of the user's own: unchanged.
std::string WithPreloadPlan(const std::string& metadata_json) {
  auto parsed = ParseJson(metadata_json);
  if (!parsed.ok() || !parsed->is_map() || parsed->Find("preload") != nullptr) return metadata_json;
  const size_t close = metadata_json.find_last_not_of(" \t\r\n");
  if (close == std::string::npos || metadata_json[close] != '}') return metadata_json;
  auto key = [](uint8_t b) { return Value::ArrayOf({Value(unsigned{b})}); };
  const Value plan = Value::Object({
      {"keys", Value::ArrayOf({key(keys::kActorRecord), key(keys::kAlarm)})},
      {"prefixes", Value::ArrayOf({Value::Object({{"prefix", key(keys::kConnPrefix)},
                                                  {"maxBytes", Value(kPreloadMaxConnectionsBytes)},
                                                  {"partial", false}})})},
  });
  std::string out = metadata_json.substr(0, close);
  if (!parsed->as_map().empty()) out += ',';
  out += "\"preload\":";
  AppendJson(plan, out);
  out.append(metadata_json, close, std::string::npos);
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> Runtime::ActorNames() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, t] : types_) out.emplace_back(name, WithPreloadPlan(t->metadata_json));
  return out;
}

Instance* Runtime::Find(std::string_view actor_id) {
  auto it = instances_.find(actor_id);
  return it == instances_.end() ? nullptr : it->second.get();
}

void Runtime::OnStartActor(envoy::StartActor start) {
  auto type = types_.find(start.config.name);
  if (type == types_.end()) {
    LogWarn(kLog, "start for an unknown actor name",
            {{"actor", start.actor_id}, {"name", start.config.name}});
    client_->ActorStopped(start.actor_id, start.generation,
                          Error("actor", "not_registered",
                                "actor name `" + start.config.name + "` is not registered in this runtime"));
    return;
  }
  if (Instance* old = Find(start.actor_id)) {
    // A newer generation replaces a stale instance (the engine already moved on).
    LogWarn(kLog, "start replaces a running instance", {{"actor", start.actor_id}});
    old->phase_ = Phase::kStopped;
    SettleEarlyRequests(*old, false);
    Retire(*old);
  }
  auto inst = std::make_unique<Instance>(*this, type->second, std::move(start));
  Instance* self = inst.get();
  instances_[self->actor_id_] = std::move(inst);
  ++self->owned_tasks_;
  Spawn(self->StartSequence(), [this, self](std::exception_ptr e) {
    --self->owned_tasks_;
    if (e) {
      LogWarn(kLog, "actor failed to start", {{"actor", self->actor_id_}, {"error", ErrorText(e)}});
      self->phase_ = Phase::kStopped;
      SettleEarlyRequests(*self, false);  // their answers go out before the stop
      // The stop reason reaches clients (the engine's "Last error"): no script stack.
      Error err = Error::FromString(StopReasonText(e));
      client_->ActorStopped(self->actor_id_, self->generation_, err);
      Retire(*self);
      return;
    }
    self->phase_ = Phase::kStarted;
    if (HeldCommits* held = self->HeldSqlCommits()) held->set_allowed(true);
    client_->ActorRunning(self->actor_id_, self->generation_);
    self->DeliverEarlyMessages();
    if (self->pending_stop_) {
      // A stop that came while it started ends it at once: the requests kept meanwhile
      // were not handled, and the engine sends them to the next instance.
      SettleEarlyRequests(*self, false);
      auto reason = *self->pending_stop_;
      self->stop_received_ = false;
      self->OnStopCommand(reason);
      return;
    }
    if (self->type_->run) {
      self->run_active_ = true;
      auto run = [](Instance* s) -> Task<void> {
        try {
          Invocation inv{s, nullptr, nullptr};
          inv.is_run = true;
          co_await s->type_->run(std::move(inv));
        } catch (...) {
          LogWarn(kLog, "run handler failed", {{"actor", s->actor_id_}, {"error", ErrorText(std::current_exception())}});
        }
        s->run_active_ = false;
        s->ResetSleepTimer();
      };
      self->SpawnOwned(run(self), false, false);
    }
    self->ResetSleepTimer();
    self->SyncAlarm();
    self->FireDueEvents();
    // Last, as if they had arrived right after startup: the hooks and `run` come first.
    SettleEarlyRequests(*self, true);
  });
}

void Runtime::OnStopActor(const std::string& actor_id, uint32_t generation,
                          latest::StopActorReason reason) {
  Instance* inst = Find(actor_id);
  if (inst == nullptr || inst->generation_ != generation) return;
  inst->OnStopCommand(reason);
}

namespace {

// Most HTTP requests one starting instance keeps (Instance::early_requests_); beyond it they are
// refused as not started, which the engine answers by sending them once the instance runs.
constexpr size_t kMaxEarlyRequests = 256;

// A 503 answer to an HTTP request no instance handled, with the error as JSON, marked as
// such (kNotStartedHeader) so that an engine that sent it early may send it again.
latest::ToRivetTunnelMessage RefusedRequest(const latest::MessageId& id, const ClientError& e) {
  latest::ToRivetTunnelMessage out;
  out.message_id = id;
  latest::ToRivetResponseStart start;
  start.status = 503;
  start.headers = {{"content-type", "application/json"}};
  start.headers.emplace_back(std::string(protocol::envoy::kNotStartedHeader), "1");
  start.body =
      wire::Encode(wire::HttpResponseError{e.group, e.code, e.message, {}}, wire::Encoding::kJson);
  out.message_kind = std::move(start);
  return out;
}

bool IsHttpRequestPart(const latest::ToEnvoyTunnelMessageKind& kind) {
  return std::holds_alternative<latest::ToEnvoyRequestStart>(kind.value) ||
         std::holds_alternative<latest::ToEnvoyRequestChunk>(kind.value) ||
         std::holds_alternative<latest::ToEnvoyRequestAbort>(kind.value);
}

const ClientError kNotStarted{"actor",
                              "not_started",
                              "The actor stopped before it started; the request was not handled.",
                              {}};

}  // namespace

void Runtime::OnTunnelMessage(const std::string& actor_id, const latest::ToEnvoyTunnelMessage& message) {
  Instance* inst = Find(actor_id);
  const auto& kind = message.message_kind.value;
  if (inst != nullptr && inst->phase_ == Phase::kLoading &&
      IsHttpRequestPart(message.message_kind)) {
    // Early requests: kept for the end of startup (SettleEarlyRequests).
    if (!inst->early_requests_) {
      inst->early_requests_ = std::make_unique<std::vector<latest::ToEnvoyTunnelMessage>>();
    }
    auto& early = *inst->early_requests_;
    if (early.size() < kMaxEarlyRequests) {
      early.push_back(message);
    } else if (std::holds_alternative<latest::ToEnvoyRequestStart>(kind)) {
      client_->SendTunnel(RefusedRequest(message.message_id, kNotStarted), false);
    }
    return;
  }
  if (inst == nullptr || inst->phase_ != Phase::kStarted) {
    // Not running here (or stopping): refuse so the gateway can retry elsewhere.
    if (std::holds_alternative<latest::ToEnvoyRequestStart>(kind)) {
      const bool stopping = inst != nullptr;
      ClientError e{"actor", stopping ? "stopping" : "not_found",
                    stopping ? "Actor is stopping." : "Actor is not running on this envoy.", {}};
      client_->SendTunnel(RefusedRequest(message.message_id, e), false);
    } else if (std::holds_alternative<latest::ToEnvoyWebSocketOpen>(kind)) {
      latest::ToRivetTunnelMessage out;
      out.message_id = message.message_id;
      latest::ToRivetWebSocketClose close;
      close.code = 1011;
      close.reason = inst != nullptr ? "actor.stopping" : "actor.not_found";
      out.message_kind = std::move(close);
      client_->SendTunnel(std::move(out), true);
    } else if (inst != nullptr) {
      if (std::holds_alternative<latest::ToEnvoyWebSocketClose>(kind)) inst->HandleWsClose(message.message_id);
      // A restored socket's replay can arrive while the instance still starts: it keeps
      // the messages for the end of startup.
      const auto* m = std::get_if<latest::ToEnvoyWebSocketMessage>(&kind);
      if (m != nullptr && inst->phase_ == Phase::kLoading) inst->HandleWsMessage(message.message_id, m->data, m->binary);
    }
    return;
  }
  DispatchTurn(*inst, message);
}

void Runtime::DispatchTurn(Instance& inst, const latest::ToEnvoyTunnelMessage& message) {
  // One message is one turn of its instance: the flushes it starts wait for the end of
  // its handling, then go out as one write (Instance::in_turn_).
  inst.in_turn_ = true;
  // (An instance that stopped meanwhile is still there: freeing waits for the clock.)
  DispatchTunnel(inst, message);
  inst.in_turn_ = false;
  inst.MaybeFlush();
}

void Runtime::SettleEarlyRequests(Instance& inst, bool started) {
  if (!inst.early_requests_) return;
  const std::unique_ptr<std::vector<latest::ToEnvoyTunnelMessage>> early =
      std::move(inst.early_requests_);
  for (const auto& message : *early) {
    if (!started) {
      if (std::holds_alternative<latest::ToEnvoyRequestStart>(message.message_kind.value)) {
        client_->SendTunnel(RefusedRequest(message.message_id, kNotStarted), false);
      }
      continue;
    }
    DispatchTurn(inst, message);  // as when it arrives (OnTunnelMessage)
  }
}

void Runtime::DispatchTunnel(Instance& inst, const latest::ToEnvoyTunnelMessage& message) {
  const auto& kind = message.message_kind.value;
  const auto route = std::make_pair(message.message_id.gateway_id, message.message_id.request_id);
  if (const auto* start = std::get_if<latest::ToEnvoyRequestStart>(&kind)) {
    Request req;
    req.method = start->method;
    gw::TargetParts parts = gw::SplitTarget(start->path);
    req.path = std::string(parts.path);
    if (parts.query) req.query = std::string(*parts.query);
    req.headers = start->headers;
    if (start->body) req.body = *start->body;
    if (start->stream) {
      inst.cold().streaming[route] = std::move(req);
      return;
    }
    inst.HandleHttp(message.message_id, std::move(req));
  } else if (const auto* chunk = std::get_if<latest::ToEnvoyRequestChunk>(&kind)) {
    if (!inst.cold_) return;
    auto it = inst.cold_->streaming.find(route);
    if (it == inst.cold_->streaming.end()) return;
    it->second.body.insert(it->second.body.end(), chunk->body.begin(), chunk->body.end());
    if (chunk->finish) {
      Request req = std::move(it->second);
      inst.cold_->streaming.erase(it);
      inst.HandleHttp(message.message_id, std::move(req));
    }
  } else if (std::holds_alternative<latest::ToEnvoyRequestAbort>(kind)) {
    // The client went away (§6.3): the route is forgotten, a body still streaming is
    // dropped, and a running on_request handler is told (it is not cancelled; its response
    // is not sent).
    if (!inst.cold_) return;
    inst.cold_->streaming.erase(route);
    auto it = inst.cold_->raw_requests.find(route);
    if (it == inst.cold_->raw_requests.end()) return;
    const std::shared_ptr<RequestAbort> abort = std::move(it->second);
    inst.cold_->raw_requests.erase(it);
    abort->Fire();  // may resume the handler, even to its end
  } else if (const auto* open = std::get_if<latest::ToEnvoyWebSocketOpen>(&kind)) {
    Request req;
    req.method = "GET";
    gw::TargetParts parts = gw::SplitTarget(open->path);
    req.path = std::string(parts.path);
    if (parts.query) req.query = std::string(*parts.query);
    req.headers = open->headers;
    inst.HandleWsOpen(message.message_id, std::move(req));
  } else if (const auto* msg = std::get_if<latest::ToEnvoyWebSocketMessage>(&kind)) {
    inst.HandleWsMessage(message.message_id, msg->data, msg->binary);
  } else if (std::holds_alternative<latest::ToEnvoyWebSocketClose>(kind)) {
    inst.HandleWsClose(message.message_id);
  }
}

void Runtime::OnShutdown() {
  LogInfo(kLog, "envoy shut down");
  if (auto fn = std::exchange(on_shutdown_, nullptr)) fn();
}

void Runtime::Retire(Instance& instance) {
  auto it = instances_.find(instance.actor_id_);
  if (it == instances_.end() || it->second.get() != &instance) return;
  retired_.push_back(std::move(it->second));
  instances_.erase(it);
  MaybeFree(instance);
}

void Runtime::MaybeFree(Instance& instance) {
  // A KV flush or an alarm push in flight calls back into the instance; it frees it then.
  auto busy = [](const Instance& i) {
    const HeldCommits* commits = i.HeldSqlCommits();
    return i.owned_tasks_ > 0 || i.flushing_ || i.alarm_push_in_flight_ ||
           (commits != nullptr && commits->pending() > 0);
  };
  if (busy(instance)) return;
  // Defer: the caller may still be inside one of the instance's own frames.
  auto it = std::find_if(retired_.begin(), retired_.end(),
                         [&](const auto& p) { return p.get() == &instance; });
  if (it == retired_.end()) return;
  Instance* raw = it->get();
  clock_.ScheduleAfter(milliseconds(0), [this, raw, busy] {
    auto it2 = std::find_if(retired_.begin(), retired_.end(), [&](const auto& p) { return p.get() == raw; });
    if (it2 != retired_.end() && !busy(**it2)) {
      retired_.erase(it2);
      ++freed_instances_;
    }
  });
}

}  // namespace keel::runtime
