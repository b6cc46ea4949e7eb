// RemoteSqlHost: remote SQL (envoy-protocol.md §8: v4 exec / execute / execute_write) for
// ONE envoy connection, owned by its EnvoySession. It runs an actor's SQL inside the engine
// on Keel's one execution layer (keel::sql::Database) over the actor's page store, so a
// runtime without SQLite (wasm) gets the same results and routes as a native one.
//
// Acceptance — Submit, on the socket thread; no storage, no SQLite. In this order, each
// failure answered at once with SqliteErrorResponse{Error::ToString()}, nothing executed:
//   1. namespaceId is the connection's namespace name (what clients send, §8.4
//      INCONSISTENCY) or its id text                 else actor.not_found "actor does not exist"
//   2. the actor id parses and this connection hosts the actor (EnvoySession::CheckOwner, the
//      KV/page paths' rule)                          else actor.invalid_id / actor.not_owned
//   3. generation == the generation hosted here      else sqlite.remote_fence_mismatch
//   4. that generation has not started stopping      else sqlite.actor_stopping
//   5. SQL ≤ kMaxSqlBytes, ≤ kMaxParams params, bind bytes ≤ kMaxBindBytes (sqlite/types.h)
//                     else sqlite.sql_too_large / sqlite.too_many_params / sqlite.bind_too_large
// After execution the answer, encoded at the connection's version, must fit
// EngineOptions::max_response_payload (the negotiated maxResponsePayloadSize), else the
// answer is sqlite.response_too_large "remote sqlite response exceeds
// maxResponsePayloadSize" — a size only known once the statement ran, so a write whose
// answer is too large has been applied; only its answer is refused. An answer that cannot be
// encoded is sqlite.response_unencodable. Every answer carries the request's own id and the
// response variant of its request kind. Statement errors are the execution layer's
// (sqlite.prepare_failed, execution_failed, invalid_sql, invalid_bind_parameter,
// statement_timeout), and a stale executor's storage fence is sqlite.remote_fence_mismatch.
// Keel decision vs §8.6 ("Starting is rejected"): SQL is accepted as soon as this
// connection hosts the generation, Starting included — migrations run before the runtime
// reports Running.
//
// Executors (§8.5). A "lane" per (actor, generation) holds its FIFO of accepted statements,
// its in-flight count and at most one executor: a KeelVfs registered under a unique name
// (keel-remote-<session>-<actor hex>-g<gen>-<n>) serving the actor's database from a
// PageStorePageSource fenced by the generation, and a keel::sql::Database opened on it. The
// executor is created by the lane's first statement (an actor that never runs SQL has none),
// after recording the generation in the page store (EnvoySession::RecordGeneration: a
// generation older than the recorded one → sqlite.remote_fence_mismatch), reused after, and
// closed when the lane retires. A later generation gets a fresh lane and executor over the
// same persisted pages; a stale executor can neither read nor commit once a newer
// generation is recorded, so its commit can never land after the newer generation started.
//
// Threads (§8.6). SQLite calls block, so they never run on the socket thread, the
// orchestrator loop or the engine's worker strands: each connection has its own pool of at
// most EngineOptions::remote_sql_workers_per_connection threads, started only while more
// lanes have work than threads are free (an idle connection has none) and joined when the
// host is destroyed. Fairness: lanes with work wait in one round-robin queue; a worker takes
// the first lane, runs ONE statement of it, and puts it back at the end if more are queued,
// so one lane's statements run one at a time in arrival order and a busy actor cannot
// starve the others. Pings, stops, KV and tunnel traffic never wait for SQL. The worker
// that ran a statement writes its answer to the socket itself (net's WebSocket Send writes
// from the calling thread), and a worker that runs out of work looks for the next statement
// for 200 µs (yielding its core; at most one per connection) before it sleeps, so a
// transaction sent statement by statement does not pay a thread wake-up per statement.
//
// Stopping (Keel's definition of "an actor generation starts stopping"): the envoy's
// EventActorStateUpdate{Stopped} for that generation arrives on this connection — the
// runtime has then finished onSleep/onDestroy, which may themselves use SQL (actors.md §2.5),
// so SQL is accepted during the shutdown hooks —, or the connection closes, or the
// connection no longer hosts the generation (a newer one arrived here, or the periodic
// Sweep finds it gone). From then on new SQL for it is rejected (sqlite.actor_stopping; once
// the orchestrator has applied the stop, actor.not_owned). In-flight SQL is counted per lane
// from acceptance — queued statements that have not started count too — by an RAII guard
// that travels with the statement. An events batch that contains such a Stopped, and every
// later events batch (to keep their order), is held back from the orchestrator until the
// stopping lanes' in-flight counts reach zero or EngineOptions::actor_stop_threshold_ms
// passes; at the budget, statements still queued are answered sqlite.actor_stopping and a
// running statement is let finish (the database is never closed under it). A lane retires
// (executor closed, VFS unregistered, on a SQL thread) once it is stopping and idle. On
// connection close, held batches are forwarded at once (before the orchestrator hears of
// the close), queued statements are dropped unanswered, and running ones finish. Only
// events batches are held: command acks, metadata and ToRivetStopping go through at once
// (at worst the orchestrator sends a stop to a generation the envoy already ended, which
// the envoy ignores, §4.4).
//
// Thread-safety: Submit/OnEvents/OnConnectionClosed come from the socket thread, Sweep from
// the ping timer, ReleaseHeld from timers and the engine's workers; all state is guarded by
// one mutex. Stop (and the destructor) interrupts running statements and joins the SQL
// threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "engine/common/id.h"
#include "protocol/envoy/versioned.h"
#include "sqlite/types.h"

namespace keel::engine {

namespace latest = protocol::envoy::latest;

class Engine;
class EnvoySession;
class RemoteSqlHost;

enum class RemoteSqlKind { kExec, kExecute, kExecuteWrite };

// One remote SQL request as decoded from the wire (params absent for exec).
struct RemoteSqlRequest {
  RemoteSqlKind kind = RemoteSqlKind::kExec;
  uint32_t request_id = 0;
  std::string namespace_id;
  std::string actor_id;
  uint64_t generation = 0;
  std::string sql;
  std::optional<std::vector<latest::SqliteBindParam>> params;

  static RemoteSqlRequest From(latest::ToRivetSqliteExecRequest&& m);
  static RemoteSqlRequest From(latest::ToRivetSqliteExecuteRequest&& m);
  static RemoteSqlRequest From(latest::ToRivetSqliteExecuteWriteRequest&& m);
};

// The engine's live hosts, shared with them so that either may go first: a session (and its
// host) can outlive the engine — its socket's handlers end after the engine is destroyed.
// StopAll (engine destructor) stops every host so none touches the engine afterwards; a host
// removes itself when destroyed. Thread-safe.
class RemoteSqlRegistry {
 public:
  void Add(RemoteSqlHost* host);
  // Waits while StopAll is stopping `host`.
  void Remove(RemoteSqlHost* host);
  void StopAll();

 private:
  std::mutex mu_;
  std::set<RemoteSqlHost*> hosts_;  // guarded by mu_
};

class RemoteSqlHost {
 public:
  // `engine` and `session` must outlive this object (the session owns it).
  RemoteSqlHost(Engine& engine, EnvoySession& session);
  ~RemoteSqlHost();
  RemoteSqlHost(const RemoteSqlHost&) = delete;
  RemoteSqlHost& operator=(const RemoteSqlHost&) = delete;

  // Drops queued statements, waits for running ones and closes every executor: nothing of
  // this host touches the engine afterwards. Called by the destructor, and by the engine's
  // destructor for sessions that outlive it (their sockets' handlers end later). Idempotent.
  void Stop();

  // Validates and queues `request`, or answers it with the refusal (see the file comment).
  void Submit(RemoteSqlRequest request);

  // Forwards an events batch to the orchestrator, or holds it while a generation it stops
  // still has SQL in flight (see the file comment). `self` is the owning session.
  void OnEvents(const std::shared_ptr<EnvoySession>& self,
                std::vector<latest::EventWrapper> events);

  // The connection closed: forwards held batches now, stops every lane. Call before the
  // orchestrator is told of the close. Idempotent.
  void OnConnectionClosed(const std::shared_ptr<EnvoySession>& self);

  // Stops lanes whose generation this connection no longer hosts and forgets stopped
  // generations the orchestrator has applied (from the ping timer).
  void Sweep();

  // Forwards the held batches that may go now (their lanes drained, or the stop budget
  // passed: queued statements are then answered sqlite.actor_stopping).
  void ReleaseHeld(const std::shared_ptr<EnvoySession>& self);

 private:
  struct Executor;
  struct Lane;
  class InFlight;
  struct Statement;
  struct Task;
  struct HeldBatch;
  using Key = std::pair<EngineId, uint32_t>;

  // All *Locked methods require mu_.
  void ScheduleLocked(const std::shared_ptr<Lane>& lane);
  void BeginStopLocked(const std::shared_ptr<Lane>& lane);
  void RetireLocked(const std::shared_ptr<Lane>& lane);
  void CancelQueuedLocked(Lane& lane, std::vector<Task>& out);
  void ReleaseHeldLocked(const std::shared_ptr<EnvoySession>& self, std::vector<Task>& cancelled);
  void FinishOne(const std::shared_ptr<Lane>& lane);
  void Reject(RemoteSqlKind kind, uint32_t request_id, const Error& error);
  void AnswerCancelled(std::vector<Task>& cancelled, bool send);

  void WorkerMain();
  void RunStatement(Lane& lane, Statement& statement);
  void CloseExecutor(Lane& lane);
  Result<std::unique_ptr<Executor>> OpenExecutor(const Lane& lane);

  Engine& engine_;
  EnvoySession& session_;
  const std::shared_ptr<RemoteSqlRegistry> registry_;

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::map<Key, std::shared_ptr<Lane>> lanes_;  // guarded by mu_
  // Generations whose Stopped arrived here, until the orchestrator has applied it (Sweep).
  std::set<Key> stopped_;                    // guarded by mu_
  std::deque<std::shared_ptr<Lane>> ready_;  // guarded by mu_: lanes with work, in turn
  std::deque<HeldBatch> held_;               // guarded by mu_
  std::vector<std::thread> threads_;         // guarded by mu_
  size_t free_workers_ = 0;                  // guarded by mu_: threads not running a task
  size_t lingering_ = 0;                     // guarded by mu_: free threads looking for work
  std::atomic<size_t> ready_size_{0};        // ready_.size(), for lingering threads
  bool closed_ = false;                      // guarded by mu_: the connection ended
  bool exiting_ = false;                     // guarded by mu_: Stop runs
  bool stopped_host_ = false;                // guarded by mu_: Stop ran (or runs)
  std::atomic<bool> aborting_{false};        // Stop: running statements are interrupted
};

}  // namespace keel::engine
