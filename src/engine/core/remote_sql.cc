#include "engine/core/remote_sql.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <variant>

#include "base/log.h"
#include "base/random.h"
#include "engine/core/engine.h"
#include "engine/core/envoy_session.h"
#include "engine/core/orchestrator.h"
#include "protocol/conversion.h"
#include "sqlite/database.h"
#include "sqlite/wire.h"
#include "storage/vfs/keel_vfs.h"

namespace keel::engine {
namespace {

constexpr std::string_view kLog = "remote_sql";

// How long a SQL thread that found no work keeps looking (yielding its core) before it
// sleeps on the condition variable; at most one thread of a connection does. An actor's
// next statement (the next one of a transaction) arrives one runtime round trip after the
// answer, which the worker now writes to the socket itself (~50 µs on loopback): a thread
// still awake takes it without a futex wake-up and its context switches.
constexpr std::chrono::microseconds kLinger{200};

// Makes VFS names unique in the process, across sessions and engines.
std::atomic<uint64_t> next_executor_seq{1};

std::string Hex(ByteView bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

// The answer to a request of `kind`: `data` is the Ok variant or SqliteErrorResponse.
template <typename Data>
latest::ToEnvoy AnswerOf(RemoteSqlKind kind, uint32_t request_id, Data&& data) {
  using D = std::decay_t<Data>;
  (void)kind;  // only errors need it: the Ok types name their kind
  if constexpr (std::is_same_v<D, latest::SqliteErrorResponse>) {
    switch (kind) {
      case RemoteSqlKind::kExec:
        return latest::ToEnvoy{latest::ToEnvoySqliteExecResponse{
            request_id, latest::SqliteExecResponse{std::forward<Data>(data)}}};
      case RemoteSqlKind::kExecute:
        return latest::ToEnvoy{latest::ToEnvoySqliteExecuteResponse{
            request_id, latest::SqliteExecuteResponse{std::forward<Data>(data)}}};
      case RemoteSqlKind::kExecuteWrite:
        break;
    }
    return latest::ToEnvoy{latest::ToEnvoySqliteExecuteWriteResponse{
        request_id, latest::SqliteExecuteWriteResponse{std::forward<Data>(data)}}};
  } else if constexpr (std::is_same_v<D, latest::SqliteExecOk>) {
    return latest::ToEnvoy{latest::ToEnvoySqliteExecResponse{
        request_id, latest::SqliteExecResponse{std::forward<Data>(data)}}};
  } else if constexpr (std::is_same_v<D, latest::SqliteExecuteOk>) {
    return latest::ToEnvoy{latest::ToEnvoySqliteExecuteResponse{
        request_id, latest::SqliteExecuteResponse{std::forward<Data>(data)}}};
  } else {
    static_assert(std::is_same_v<D, latest::SqliteExecuteWriteOk>);
    return latest::ToEnvoy{latest::ToEnvoySqliteExecuteWriteResponse{
        request_id, latest::SqliteExecuteWriteResponse{std::forward<Data>(data)}}};
  }
}

latest::ToEnvoy ErrorAnswer(RemoteSqlKind kind, uint32_t request_id, const Error& error) {
  return AnswerOf(kind, request_id, latest::SqliteErrorResponse{error.ToString()});
}

bool IsStopped(const latest::EventWrapper& event) {
  const auto* update = event.inner.get_if<latest::EventActorStateUpdate>();
  return update != nullptr && update->state.is<latest::ActorStateStopped>();
}

}  // namespace

// ---- requests ----

RemoteSqlRequest RemoteSqlRequest::From(latest::ToRivetSqliteExecRequest&& m) {
  return RemoteSqlRequest{RemoteSqlKind::kExec,
                          m.request_id,
                          std::move(m.data.namespace_id),
                          std::move(m.data.actor_id),
                          m.data.generation,
                          std::move(m.data.sql),
                          std::nullopt};
}

RemoteSqlRequest RemoteSqlRequest::From(latest::ToRivetSqliteExecuteRequest&& m) {
  return RemoteSqlRequest{
      RemoteSqlKind::kExecute,    m.request_id,      std::move(m.data.namespace_id),
      std::move(m.data.actor_id), m.data.generation, std::move(m.data.sql),
      std::move(m.data.params)};
}

RemoteSqlRequest RemoteSqlRequest::From(latest::ToRivetSqliteExecuteWriteRequest&& m) {
  return RemoteSqlRequest{
      RemoteSqlKind::kExecuteWrite, m.request_id,      std::move(m.data.namespace_id),
      std::move(m.data.actor_id),   m.data.generation, std::move(m.data.sql),
      std::move(m.data.params)};
}

// ---- the pieces ----

// The VFS registration and the database of one lane. Destroyed in reverse order: the
// database closes before its VFS unregisters, and the VFS before its Random.
struct RemoteSqlHost::Executor {
  std::string file;
  std::unique_ptr<Random> random;
  std::unique_ptr<storage::KeelVfs> vfs;
  std::shared_ptr<storage::PageStorePageSource> source;
  std::unique_ptr<sql::Database> db;
};

struct RemoteSqlHost::Lane {
  Lane(EngineId a, uint32_t g) : actor(a), generation(g) {}
  const EngineId actor;
  const uint32_t generation;
  // Everything below is guarded by the host's mu_, except `executor`, which only the worker
  // that set `running` touches.
  std::deque<Task> queue;
  size_t in_flight = 0;   // accepted statements not yet answered (queued or running)
  bool running = false;   // a worker runs one of its tasks
  bool ready = false;     // in ready_
  bool stopping = false;  // new SQL is refused
  bool retiring = false;  // the close task is queued (or the lane is gone)
  bool has_executor = false;
  std::unique_ptr<Executor> executor;
};

// RAII in-flight accounting: the lane's count went up when the statement was accepted (under
// mu_); this guard brings it down when the statement is answered or dropped. Never
// destroyed while mu_ is held.
class RemoteSqlHost::InFlight {
 public:
  InFlight(RemoteSqlHost* host, std::shared_ptr<Lane> lane) : host_(host), lane_(std::move(lane)) {}
  InFlight(InFlight&& other) noexcept
      : host_(std::exchange(other.host_, nullptr)), lane_(std::move(other.lane_)) {}
  InFlight& operator=(InFlight&&) = delete;
  ~InFlight() {
    if (host_ != nullptr) host_->FinishOne(lane_);
  }

 private:
  RemoteSqlHost* host_;
  std::shared_ptr<Lane> lane_;
};

struct RemoteSqlHost::Statement {
  RemoteSqlRequest request;
  std::optional<sql::Params> params;
  InFlight in_flight;
};

// A lane's unit of work: a statement, or (nullopt) closing the lane's executor.
struct RemoteSqlHost::Task {
  std::optional<Statement> statement;
};

struct RemoteSqlHost::HeldBatch {
  std::vector<latest::EventWrapper> events;
  std::vector<std::shared_ptr<Lane>> awaited;  // stopping lanes it waits for
  MonoTime deadline;
};

// ---- host ----

void RemoteSqlRegistry::Add(RemoteSqlHost* host) {
  std::lock_guard lock(mu_);
  hosts_.insert(host);
}

void RemoteSqlRegistry::Remove(RemoteSqlHost* host) {
  std::lock_guard lock(mu_);
  hosts_.erase(host);
}

void RemoteSqlRegistry::StopAll() {
  // Holding the lock: a host being destroyed right now waits in Remove until it is stopped.
  std::lock_guard lock(mu_);
  for (RemoteSqlHost* host : hosts_) host->Stop();
  hosts_.clear();
}

RemoteSqlHost::RemoteSqlHost(Engine& engine, EnvoySession& session)
    : engine_(engine), session_(session), registry_(engine.sql_hosts()) {
  registry_->Add(this);
}

RemoteSqlHost::~RemoteSqlHost() {
  registry_->Remove(this);
  Stop();  // a no-op when the engine's StopAll already stopped this host
}

void RemoteSqlHost::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_host_) return;
    stopped_host_ = true;
  }
  std::vector<Task> dropped;
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    exiting_ = true;
    closed_ = true;
    for (auto& [key, lane] : lanes_) {
      lane->stopping = true;
      CancelQueuedLocked(*lane, dropped);
    }
  }
  AnswerCancelled(dropped, /*send=*/false);
  // Running statements end now (sqlite.closed) instead of at their deadline: the thread
  // stopping this host (a socket thread, or the engine's destructor) waits for them.
  aborting_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(mu_);
    threads.swap(threads_);
  }
  work_cv_.notify_all();
  for (auto& t : threads) {
    // The last reference to the session is never dropped on a SQL thread (they only hold
    // raw references; releases go through the engine's workers), so this is a safeguard.
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
    } else {
      t.join();
    }
  }
  // Executors whose close task never ran (no thread was left to run it).
  for (auto& [key, lane] : lanes_) {
    if (lane->executor != nullptr) CloseExecutor(*lane);
  }
}

void RemoteSqlHost::Reject(RemoteSqlKind kind, uint32_t request_id, const Error& error) {
  engine_.remote_sql_metrics().rejected->Inc();
  KEEL_LOG(kDebug, kLog, "remote sql refused",
           {{"envoy_key", session_.envoy_key()}, {"error", error.ToString()}});
  session_.Send(ErrorAnswer(kind, request_id, error));
}

void RemoteSqlHost::Submit(RemoteSqlRequest request) {
  const RemoteSqlKind kind = request.kind;
  const uint32_t id = request.request_id;
  // 1. Namespace: clients send the name (§8.4 INCONSISTENCY); the id text is accepted too.
  if (request.namespace_id != session_.params().namespace_name &&
      request.namespace_id != session_.namespace_id().ToString()) {
    Reject(kind, id, Error{"actor", "not_found", "actor does not exist"});
    return;
  }
  // 2. The actor runs on this connection.
  auto owner = session_.CheckOwner(request.actor_id, "sqlite ");
  if (!owner.has_value()) {
    Reject(kind, id, owner.error());
    return;
  }
  const EngineId actor = owner->first;
  const uint32_t hosted = owner->second;
  // 3. The generation is the hosted one.
  if (request.generation != hosted) {
    Reject(kind, id,
           Error{"sqlite", "remote_fence_mismatch",
                 "remote sqlite generation " + std::to_string(request.generation) +
                     " did not match the hosted generation " + std::to_string(hosted)});
    return;
  }
  // 5. Limits (4, stopping, needs the lock and is checked first below).
  std::optional<Error> too_large;
  std::optional<sql::Params> params;
  if (request.params.has_value()) {
    // The count first: a huge list is refused before it is converted.
    too_large = sql::CheckParamCount(request.params->size());
    if (!too_large) {
      params = sql::FromWireParams(request.params);
      request.params.reset();
    }
  }
  if (!too_large) too_large = sql::CheckLimits(request.sql, params);

  std::optional<Error> refused;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;  // nobody to answer
    const Key key{actor, hosted};
    auto it = lanes_.find(key);
    if (stopped_.contains(key) || (it != lanes_.end() && it->second->stopping)) {
      refused = Error{"sqlite", "actor_stopping",
                      "actor " + request.actor_id + " generation " + std::to_string(hosted) +
                          " is stopping; it accepts no more remote sqlite"};
    } else if (too_large.has_value()) {
      refused = std::move(too_large);
    } else {
      if (it == lanes_.end()) {
        // A new generation here: older lanes of the actor are no longer hosted.
        for (auto& [k, old] : lanes_) {
          if (k.first == actor && k.second != hosted) BeginStopLocked(old);
        }
        it = lanes_.emplace(key, std::make_shared<Lane>(actor, hosted)).first;
      }
      const std::shared_ptr<Lane>& lane = it->second;
      // In flight from acceptance: a queued statement that has not started counts.
      ++lane->in_flight;
      lane->queue.push_back(
          Task{Statement{std::move(request), std::move(params), InFlight(this, lane)}});
      ScheduleLocked(lane);
    }
  }
  if (refused.has_value()) Reject(kind, id, *refused);
}

void RemoteSqlHost::ScheduleLocked(const std::shared_ptr<Lane>& lane) {
  if (lane->running || lane->ready || lane->queue.empty()) return;
  lane->ready = true;
  ready_.push_back(lane);
  const size_t max_threads =
      static_cast<size_t>(std::clamp(engine_.options().remote_sql_workers_per_connection, 1, 1024));
  ready_size_.store(ready_.size(), std::memory_order_relaxed);
  if (ready_.size() > free_workers_ && threads_.size() < max_threads && !exiting_) {
    ++free_workers_;  // the new thread starts free
    threads_.emplace_back([this] { WorkerMain(); });
  } else if (ready_.size() > lingering_) {
    // A lingering thread takes the lane without a wake-up (it re-checks under mu_ before
    // it sleeps, so the lane is never left waiting).
    work_cv_.notify_one();
  }
}

void RemoteSqlHost::BeginStopLocked(const std::shared_ptr<Lane>& lane) {
  lane->stopping = true;
  if (lane->in_flight == 0) RetireLocked(lane);
}

void RemoteSqlHost::RetireLocked(const std::shared_ptr<Lane>& lane) {
  if (lane->retiring) return;
  lane->retiring = true;
  if (!lane->has_executor && !lane->running) {
    auto it = lanes_.find(Key{lane->actor, lane->generation});
    if (it != lanes_.end() && it->second == lane) lanes_.erase(it);
    return;
  }
  lane->queue.push_back(Task{std::nullopt});  // runs after everything queued before it
  ScheduleLocked(lane);
}

void RemoteSqlHost::CancelQueuedLocked(Lane& lane, std::vector<Task>& out) {
  std::deque<Task> keep;
  for (auto& task : lane.queue) {
    if (task.statement.has_value()) {
      out.push_back(std::move(task));
    } else {
      keep.push_back(std::move(task));
    }
  }
  lane.queue.swap(keep);
}

void RemoteSqlHost::AnswerCancelled(std::vector<Task>& cancelled, bool send) {
  for (auto& task : cancelled) {
    engine_.remote_sql_metrics().cancelled->Inc();
    if (!send) continue;
    const RemoteSqlRequest& r = task.statement->request;
    session_.Send(ErrorAnswer(
        r.kind, r.request_id,
        Error{"sqlite", "actor_stopping",
              "actor " + r.actor_id + " generation " + std::to_string(r.generation) +
                  " stopped before this statement ran (the stop budget of " +
                  std::to_string(engine_.options().actor_stop_threshold_ms) + " ms passed)"}));
  }
  cancelled.clear();  // the in-flight guards end here, outside mu_
}

void RemoteSqlHost::FinishOne(const std::shared_ptr<Lane>& lane) {
  std::lock_guard lock(mu_);
  --lane->in_flight;
  if (lane->in_flight != 0 || !lane->stopping) return;
  RetireLocked(lane);
  if (!held_.empty() && !exiting_) {
    // Released from an engine worker: a SQL thread never holds the session's last reference.
    engine_.PostWork([weak = session_.weak_from_this()] {
      if (auto self = weak.lock()) self->remote_sql().ReleaseHeld(self);
    });
  }
}

// ---- events and stops ----

void RemoteSqlHost::OnEvents(const std::shared_ptr<EnvoySession>& self,
                             std::vector<latest::EventWrapper> events) {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Lane>> awaited;
  for (const auto& event : events) {
    if (!IsStopped(event)) continue;
    auto id = EngineId::Parse(event.checkpoint.actor_id);
    if (!id.has_value()) continue;  // the orchestrator ends the connection for it
    const Key key{*id, event.checkpoint.generation};
    stopped_.insert(key);
    auto it = lanes_.find(key);
    if (it == lanes_.end()) continue;
    if (it->second->in_flight > 0) awaited.push_back(it->second);
    BeginStopLocked(it->second);
  }
  if (held_.empty() && awaited.empty()) {
    // Forwarded under mu_, so batches reach the orchestrator in arrival order even when a
    // held one is released concurrently.
    engine_.orchestrator().OnEvents(self, std::move(events));
    return;
  }
  const auto budget = std::chrono::milliseconds(engine_.options().actor_stop_threshold_ms);
  const bool waits = !awaited.empty();
  held_.push_back(
      HeldBatch{std::move(events), std::move(awaited), engine_.clock().MonotonicNow() + budget});
  // A batch that waits for nothing leaves right after the batches ahead of it.
  if (!waits) return;
  // Handed to an engine worker, so the timer thread never drops the session's last reference.
  engine_.clock().ScheduleAfter(budget, [engine = &engine_, weak = std::weak_ptr(self)] {
    engine->PostWork([weak] {
      if (auto s = weak.lock()) s->remote_sql().ReleaseHeld(s);
    });
  });
}

void RemoteSqlHost::ReleaseHeld(const std::shared_ptr<EnvoySession>& self) {
  std::vector<Task> cancelled;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    ReleaseHeldLocked(self, cancelled);
  }
  AnswerCancelled(cancelled, /*send=*/true);
}

void RemoteSqlHost::ReleaseHeldLocked(const std::shared_ptr<EnvoySession>& self,
                                      std::vector<Task>& cancelled) {
  const MonoTime now = engine_.clock().MonotonicNow();
  while (!held_.empty()) {
    HeldBatch& head = held_.front();
    const bool drained = std::all_of(head.awaited.begin(), head.awaited.end(),
                                     [](const auto& lane) { return lane->in_flight == 0; });
    if (!drained && now < head.deadline) return;
    if (!drained) {
      // The stop budget passed: what has not started never will; a running statement
      // finishes (its lane retires after it).
      for (auto& lane : head.awaited) CancelQueuedLocked(*lane, cancelled);
      KEEL_LOG(kWarn, kLog, "stop budget passed with remote sql still in flight",
               {{"envoy_key", session_.envoy_key()}});
    }
    engine_.orchestrator().OnEvents(self, std::move(head.events));
    held_.pop_front();
  }
}

void RemoteSqlHost::OnConnectionClosed(const std::shared_ptr<EnvoySession>& self) {
  std::vector<Task> dropped;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    // The orchestrator must see the stops before the close; their answers cannot be sent.
    while (!held_.empty()) {
      engine_.orchestrator().OnEvents(self, std::move(held_.front().events));
      held_.pop_front();
    }
    std::vector<std::shared_ptr<Lane>> lanes;
    for (auto& [key, lane] : lanes_) lanes.push_back(lane);
    for (auto& lane : lanes) {
      CancelQueuedLocked(*lane, dropped);
      BeginStopLocked(lane);
    }
    stopped_.clear();
  }
  AnswerCancelled(dropped, /*send=*/false);
}

void RemoteSqlHost::Sweep() {
  std::vector<Key> keys;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    for (const auto& [key, lane] : lanes_) {
      if (!lane->stopping) keys.push_back(key);
    }
    keys.insert(keys.end(), stopped_.begin(), stopped_.end());
  }
  std::vector<Key> gone;
  for (const Key& key : keys) {
    if (engine_.orchestrator().HostedGeneration(session_, key.first) != key.second) {
      gone.push_back(key);
    }
  }
  if (gone.empty()) return;
  std::lock_guard lock(mu_);
  for (const Key& key : gone) {
    stopped_.erase(key);
    auto it = lanes_.find(key);
    if (it != lanes_.end() && !it->second->stopping) BeginStopLocked(it->second);
  }
}

// ---- SQL threads ----

void RemoteSqlHost::WorkerMain() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (ready_.empty() && !exiting_ && lingering_ == 0) {
      ++lingering_;
      lock.unlock();
      const auto until = std::chrono::steady_clock::now() + kLinger;
      while (ready_size_.load(std::memory_order_relaxed) == 0 &&
             !aborting_.load(std::memory_order_relaxed) &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
      lock.lock();
      --lingering_;
    }
    work_cv_.wait(lock, [&] { return !ready_.empty() || exiting_; });
    if (ready_.empty()) return;  // exiting, nothing left to run
    std::shared_ptr<Lane> lane = std::move(ready_.front());
    ready_.pop_front();
    ready_size_.store(ready_.size(), std::memory_order_relaxed);
    lane->ready = false;
    lane->running = true;
    --free_workers_;
    std::optional<Task> task(std::move(lane->queue.front()));
    lane->queue.pop_front();
    lock.unlock();
    if (task->statement.has_value()) {
      RunStatement(*lane, *task->statement);
    } else {
      CloseExecutor(*lane);
    }
    task.reset();  // ends the statement's in-flight guard, outside mu_
    lock.lock();
    ++free_workers_;
    lane->running = false;
    lane->has_executor = lane->executor != nullptr;
    if (lane->retiring && lane->queue.empty() && !lane->has_executor) {
      auto it = lanes_.find(Key{lane->actor, lane->generation});
      if (it != lanes_.end() && it->second == lane) lanes_.erase(it);
    } else if (!lane->queue.empty()) {
      // Round robin: the lane goes behind every other lane with work.
      lane->ready = true;
      ready_.push_back(std::move(lane));
      ready_size_.store(ready_.size(), std::memory_order_relaxed);
      // This thread takes the front itself; another is needed only beyond that.
      if (ready_.size() > 1 + lingering_) work_cv_.notify_one();
    }
  }
}

Result<std::unique_ptr<RemoteSqlHost::Executor>> RemoteSqlHost::OpenExecutor(const Lane& lane) {
  // Generations only move forward in storage: an older one than recorded is refused here.
  KEEL_RETURN_IF_ERROR(session_.RecordGeneration(lane.actor, lane.generation));
  auto ex = std::make_unique<Executor>();
  const uint64_t seq = next_executor_seq.fetch_add(1, std::memory_order_relaxed);
  ex->file = lane.actor.ToString();
  ex->random = std::make_unique<Random>(engine_.options().seed ^ (seq * 0x9e3779b97f4a7c15ull));
  ex->vfs = std::make_unique<storage::KeelVfs>(
      "keel-remote-" + std::to_string(session_.id()) + "-" + Hex(lane.actor.bytes()) + "-g" +
          std::to_string(lane.generation) + "-" + std::to_string(seq),
      engine_.clock(), *ex->random);
  KEEL_RETURN_IF_ERROR(ex->vfs->Register());
  ex->source = std::make_shared<storage::PageStorePageSource>(
      engine_.page_store(), Bytes(lane.actor.bytes().begin(), lane.actor.bytes().end()),
      lane.generation);
  KEEL_RETURN_IF_ERROR(ex->vfs->Attach(ex->file, ex->source));
  sql::DatabaseOptions options;
  options.statement_deadline = std::chrono::milliseconds(
      std::max<int64_t>(0, engine_.options().remote_sql_statement_deadline_ms));
  options.abort = &aborting_;
  auto db = sql::Database::Open(ex->vfs->name(), ex->file, options);
  if (!db.has_value()) {
    (void)ex->vfs->Detach(ex->file);
    return Unexpected{db.error()};
  }
  ex->db = std::move(*db);
  engine_.remote_sql_metrics().executors_created->Inc();
  engine_.remote_sql_metrics().executors_active->Inc();
  KEEL_LOG(kDebug, kLog, "remote sql executor opened",
           {{"envoy_key", session_.envoy_key()},
            {"actor", ex->file},
            {"generation", std::to_string(lane.generation)},
            {"vfs", ex->vfs->name()}});
  return ex;
}

void RemoteSqlHost::CloseExecutor(Lane& lane) {
  if (lane.executor == nullptr) return;
  Executor& ex = *lane.executor;
  ex.db->Close();
  ex.db.reset();
  Status detached = ex.vfs->Detach(ex.file);
  if (!detached.has_value()) {
    KEEL_LOG(kWarn, kLog, "remote sql executor detach failed",
             {{"error", detached.error().ToString()}});
  }
  lane.executor.reset();
  engine_.remote_sql_metrics().executors_active->Dec();
}

void RemoteSqlHost::RunStatement(Lane& lane, Statement& statement) {
  const RemoteSqlRequest& r = statement.request;
  const RemoteSqlMetrics& metrics = engine_.remote_sql_metrics();
  latest::ToEnvoy answer;
  bool ok = false;
  if (lane.executor == nullptr) {
    auto opened = OpenExecutor(lane);
    if (!opened.has_value()) {
      metrics.failed->Inc();
      session_.Send(ErrorAnswer(r.kind, r.request_id, opened.error()));
      return;
    }
    lane.executor = std::move(*opened);
  }
  sql::Database& db = *lane.executor->db;
  storage::PageStorePageSource& source = *lane.executor->source;
  (void)source.TakeFailure();
  // SQLite says only "disk I/O error" when the page store failed; the store's error says
  // what happened (a commit over the cap, a fence, storage), with SQLite's after it.
  auto failed = [&](const Error& e) {
    std::optional<Error> page = source.TakeFailure();
    if (!page.has_value()) return ErrorAnswer(r.kind, r.request_id, e);
    return ErrorAnswer(
        r.kind, r.request_id,
        Error(page->group(), page->code(), page->message() + " (" + e.ToString() + ")"));
  };
  switch (r.kind) {
    case RemoteSqlKind::kExec: {
      auto result = db.Exec(r.sql);
      ok = result.has_value();
      answer = ok ? AnswerOf(r.kind, r.request_id, latest::SqliteExecOk{sql::ToWire(*result)})
                  : failed(result.error());
      break;
    }
    case RemoteSqlKind::kExecute: {
      auto result = db.Execute(r.sql, statement.params);
      ok = result.has_value();
      answer = ok ? AnswerOf(r.kind, r.request_id, latest::SqliteExecuteOk{sql::ToWire(*result)})
                  : failed(result.error());
      break;
    }
    case RemoteSqlKind::kExecuteWrite: {
      auto result = db.ExecuteWrite(r.sql, statement.params);
      ok = result.has_value();
      answer =
          ok ? AnswerOf(r.kind, r.request_id, latest::SqliteExecuteWriteOk{sql::ToWire(*result)})
             : failed(result.error());
      break;
    }
  }
  // The answer must be encodable at the connection's version and fit the payload limit.
  Bytes frame;
  auto encoded = protocol::envoy::EncodeToEnvoy(answer, session_.protocol_version(), frame);
  std::optional<Error> refused;
  if (!encoded.has_value()) {
    refused =
        Error{"sqlite", "response_unencodable",
              "remote sqlite response cannot be encoded: " + protocol::ToString(encoded.error())};
  } else if (frame.size() > engine_.options().max_response_payload) {
    refused = Error{"sqlite", "response_too_large",
                    "remote sqlite response exceeds maxResponsePayloadSize"};
  }
  if (refused.has_value()) {
    metrics.rejected->Inc();
    frame.clear();
    auto again = protocol::envoy::EncodeToEnvoy(ErrorAnswer(r.kind, r.request_id, *refused),
                                                session_.protocol_version(), frame);
    if (!again.has_value()) {
      KEEL_LOG(kError, kLog, "dropping a remote sql answer that cannot be encoded",
               {{"envoy_key", session_.envoy_key()}, {"error", refused->ToString()}});
      return;
    }
  } else if (ok) {
    metrics.ok->Inc();
  } else {
    metrics.failed->Inc();
  }
  session_.SendEncoded(std::move(frame));
}

}  // namespace keel::engine
