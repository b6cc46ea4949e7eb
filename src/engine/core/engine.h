// Engine: the composition root of keel-engine's core. It owns storage, the catalog, the
// orchestrator, the gateway and the REST API, and routes every HTTP request the server
// shell receives (actors.md §5.1): envoy endpoint, actor gateway routes, REST API,
// /health and /metrics.
//
// Threads (DESIGN.md §2): the shell's I/O threads parse HTTP and WebSocket frames and run
// the hot paths that need no fsync (tunnel frames both ways, pongs, and actor KV requests,
// which commit unsynced and are answered after the group commit's covering WAL sync:
// kv_sync()). Everything else that touches storage runs on a separate worker pool: the
// orchestrator's serial loop, the group commit's syncs, serial executors per envoy
// connection for its page requests (in arrival order per actor), and REST handlers. No I/O
// thread waits for a disk's fsync: it syncs itself only when syncs are faster than waking
// the sync thread (EngineOptions::inline_sync_us). Remote SQL (blocking SQLite
// calls) runs on neither: each envoy connection has its own small, lazily started thread
// pool for it (engine/core/remote_sql.h).
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "base/result.h"
#include "engine/common/metrics.h"
#include "engine/orchestrator/actor_machine.h"
#include "net/io_runtime.h"
#include "net/http_server.h"
#include "storage/actor_kv.h"
#include "storage/group_sync.h"
#include "storage/kv_store.h"
#include "storage/page_store.h"

namespace keel::engine {

class Catalog;
class Orchestrator;
class Gateway;
class RestApi;
class RemoteSqlRegistry;
class PoolMetadata;

// Token comparison whose time does not depend on where the inputs differ (only on their
// lengths), for every token the engine checks.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

struct EngineOptions {
  // ProtocolMetadata (envoy-protocol.md §3.4) and liveness (§3.5).
  int64_t envoy_lost_threshold_ms = 15000;
  int64_t actor_stop_threshold_ms = 30000;
  uint64_t max_response_payload = 20 << 20;
  int64_t ping_interval_ms = 3000;
  int64_t ping_timeout_ms = 15000;
  int64_t envoy_eligible_threshold_ms = 10000;
  // Serverful allocation picks at random among up to this many of the pool's eligible
  // highest-version envoys (actors.md §6.4, actor_allocation_candidate_sample_size).
  int64_t allocation_candidate_sample_size = 100;
  // GET /envoys keeps listing an envoy that stopped (stop_ts: disconnected, stopping or
  // drained) for this long, and at most max_stopped_envoys such envoys (the longest
  // stopped forgotten first), so the listing and the memory behind it stay bounded
  // (docs/engine.md "GET /envoys"). An envoy that still hosts actors is always kept.
  int64_t stopped_envoy_retention_ms = 10 * 60 * 1000;
  size_t max_stopped_envoys = 1000;
  // A hibernating WebSocket whose keepalive record is older than this is not offered to a
  // restarted actor (envoy-protocol.md §6.5, hibernating_request_eligible_threshold).
  int64_t hibernating_request_eligible_threshold_ms = 90000;
  orch::Thresholds thresholds;
  // Serverless pools' metadata polling (actors.md §6.11, §6.12; engine/core/pool_metadata.h):
  // a pool without its own `metadata_poll_interval` is polled this often, no pool more
  // often than the minimum; a runner-pool error is cleared after this many polls in a row
  // succeed; one fetch of `/metadata` (a poll or a health check) gives up after the timeout.
  int64_t metadata_poll_interval_ms = 10000;
  int64_t min_metadata_poll_interval_ms = 5000;
  int64_t runner_pool_error_clear_successes = 3;
  int64_t metadata_fetch_timeout_ms = 10000;
  // A serverless pool created without its own `drain_grace_period` gets this one (rounded up
  // to whole seconds, the field's unit); its requests are drained this long before their
  // `request_lifespan` ends (actors.md §6.10 step 4, serverless_drain_grace_period).
  int64_t serverless_drain_grace_period_ms = 10000;
  // Gateway (actors.md §5.6, §6.12).
  int64_t actor_ready_timeout_ms = 10000;
  int64_t response_start_timeout_ms = 300000;
  int64_t ws_open_timeout_ms = 15000;
  // Hibernatable WebSockets (§6.5): a message unacknowledged for this long, or more than
  // this many unacknowledged bytes, closes the socket (gateway_hws_ack_timeout,
  // gateway_hws_max_pending_bytes).
  int64_t hws_ack_timeout_ms = 30000;
  uint64_t hws_max_pending_bytes = uint64_t{128} << 20;
  int max_rewakes = 8;
  // A destroyed actor's data deletion that fails (docs/storage.md §3.8) is tried again
  // after this many ms, the wait doubling up to 5 minutes, for as long as the engine runs;
  // each engine start also retries it. 0: only at the next start.
  int64_t data_deletion_retry_ms = 1000;
  // Keys that deletion removes per commit, the actor's KV first, then its database: the
  // work between two of its chunks, which the orchestrator never waits for (> 0).
  size_t data_deletion_chunk_keys = 1024;
  // Budget of the KV an actor's start command carries (envoy-protocol.md §5.4; the plan
  // comes from the envoy's actor-name metadata, engine/core/preload.h). 0 disables.
  int64_t preload_max_total_bytes = 1 << 20;
  // Serial executors per envoy connection for its SQLite page requests (an actor always
  // uses the same one). 1 serialises every page commit of the connection; more let
  // different actors' synced commits overlap (group commit). 1..64. (KV requests run on the
  // connection's read path and share GroupSync's WAL syncs instead.)
  int storage_executors_per_connection = 8;
  // Page commits of at most this many page bytes (a typical OLTP commit is 2–4 pages) are
  // committed where they are read, without waiting for the disk, when the actor has no
  // page request waiting on its storage executor; their answer (and held outputs) waits for
  // the group commit's WAL sync, as a KV write's does (docs/engine.md "Page commits"). This
  // saves the hand-off to a worker and gives the commit a shared sync. 0 turns it off.
  size_t inline_page_commit_bytes = 64 << 10;
  // KV writes' WAL syncs run on the committing thread (after its ready handlers) while the
  // recent syncs took less than this many µs and writes come one at a time
  // (storage::GroupSync, "Where syncs run"); 0 = always on the sync thread.
  int inline_sync_us = 20;
  // After its syncs the KV sync thread polls this many µs for the next write before it
  // sleeps (storage::GroupSync::Options::linger); 0 = never.
  int sync_linger_us = 300;
  // The CPUs the KV sync thread runs on (storage::GroupSync::PinThread), and why, for the
  // log line; empty: where the scheduler puts it. EngineServer works them out from
  // EngineConfig::sync_thread_cpus and the data directory's disk.
  std::vector<int> sync_thread_cpus;
  std::string sync_thread_why;
  // Held outputs (engine/core/output_hold.h): confirmed to envoys that ask for them.
  bool hold_outputs = true;
  // Early start (docs/engine.md "Early start"): on a connection with held outputs, a
  // start command leaves while its commit is still being synced, and the new instance's
  // answers wait for that sync like any held output.
  bool early_start = true;
  // Early requests (docs/engine.md "Early requests"): on a connection whose envoy asked for
  // them, an HTTP request waiting for an actor that is starting there is forwarded right
  // behind the start command instead of after the instance's Running event.
  bool early_requests = true;
  // Remote SQL (envoy-protocol.md §8.6): threads per envoy connection that run SQL, started
  // only when statements are waiting (an idle connection has none). 1..1024.
  int remote_sql_workers_per_connection = 32;
  // A remote SQL statement running longer than this is interrupted (sqlite.statement_timeout);
  // below the envoy's 30 s request timeout so the answer still reaches it. 0 = never.
  int64_t remote_sql_statement_deadline_ms = 25000;
  // Auth (issue 4): REST needs the admin token when set; envoys use their namespace's token
  // or the admin token; the gateway is open unless a gateway token is set.
  std::optional<std::string> admin_token;
  std::map<std::string, std::string> namespace_tokens;
  std::optional<std::string> gateway_token;
  // Identity.
  uint16_t datacenter_label = 1;
  std::string datacenter_name = "default";
  std::string public_url = "http://127.0.0.1:6420";
  std::string engine_version = "keel-engine/0.1.0";
  uint64_t seed = 0;  // ids and jitter; 0 = derive from the wall clock
};

// The remote SQL series of /metrics (engine/core/remote_sql.h). Valid as long as the Engine.
struct RemoteSqlMetrics {
  Counter* executors_created = nullptr;  // keel_remote_sql_executors_created_total
  Gauge* executors_active = nullptr;     // keel_remote_sql_executors_active
  // keel_remote_sql_requests_total{outcome}: answered with a result / with the statement's
  // SQL error / refused before execution (validation, limits, fence, stopping, response
  // size) / dropped after acceptance (stop budget passed, connection closed).
  Counter* ok = nullptr;
  Counter* failed = nullptr;
  Counter* rejected = nullptr;
  Counter* cancelled = nullptr;
};

class Engine {
 public:
  // Opens the core on `store` (taken over). `io` runs sockets; `workers` runs storage work;
  // both outlive the engine. Loads the catalog (creating default/default on first start)
  // and resumes every actor's state machine from storage.
  static Result<std::unique_ptr<Engine>> Open(EngineOptions options,
                                              std::unique_ptr<storage::KvStore> store,
                                              net::IoRuntime& io, net::IoRuntime& workers);
  ~Engine();

  // Every HTTP request of the server shell.
  void Handle(std::shared_ptr<net::HttpExchange> exchange);

  // Graceful shutdown (issue 4): stop accepting envoys and gateway traffic, stop every
  // running actor with GOING_AWAY, wait (bounded by actor_stop_threshold) for them, close
  // envoy connections with ws.going_away and flush storage. `done` runs once, on a worker.
  void Shutdown(std::function<void()> done);

  // ---- for the core's parts ----
  const EngineOptions& options() const { return options_; }
  Clock& clock() { return clock_; }
  storage::KvStore& store() { return *store_; }
  storage::ActorKv& actor_kv() { return *actor_kv_; }
  // The group commit of actor KV writes: they commit unsynced and are acknowledged once a
  // shared WAL sync covers them (envoy_session.cc).
  storage::GroupSync& kv_sync() { return *kv_sync_; }
  void metrics_kv_write_synced() { kv_writes_synced_->Inc(); }
  void metrics_held_output_write_failed() { held_output_write_failures_->Inc(); }
  // keel_sqlite_page_commits_total{path}: committed on the read path and synced by the
  // group commit (`inline`), or on a storage executor with a synced commit (`worker`).
  void metrics_page_commit(bool inline_path) {
    (inline_path ? page_commits_inline_ : page_commits_worker_)->Inc();
  }
  // Gateway: an HTTP request handed to an instance still starting (early requests), and
  // one sent again because that instance never ran it.
  void metrics_early_request() { early_requests_->Inc(); }
  void metrics_request_sent_again(bool refused_not_started) {
    (refused_not_started ? resent_not_started_ : resent_never_ran_)->Inc();
  }
  storage::PageStore& page_store() { return *page_store_; }
  // This engine is the only one writing its store (every backend Keel has: a store several
  // engines share, later, must answer false). What only this engine writes then needs no
  // transaction: ActorKv's puts (storage/actor_kv.h, "Sole writer") and the orchestrator's
  // steps (Orchestrator, CommitStep).
  static constexpr bool sole_writer() { return true; }
  Catalog& catalog() { return *catalog_; }
  Orchestrator& orchestrator() { return *orchestrator_; }
  Gateway& gateway() { return *gateway_; }
  PoolMetadata& pool_metadata() { return *pool_metadata_; }
  MetricsRegistry& metrics() { return metrics_; }
  const RemoteSqlMetrics& remote_sql_metrics() const { return remote_sql_metrics_; }
  // Remote SQL hosts of live sessions: the engine stops them (joining their SQL threads)
  // before it goes away, since a session may outlive the engine.
  const std::shared_ptr<RemoteSqlRegistry>& sql_hosts() const { return sql_hosts_; }
  net::IoRuntime& io() { return io_; }
  std::unique_ptr<Executor> MakeWorkerStrand() { return workers_.MakeStrand(); }
  void PostWork(std::function<void()> fn) { workers_.Post(std::move(fn)); }
  std::string NewRayId();
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }
  // The previous engine on this store ended without closing it (crash, kill, power loss):
  // an early start it sent may not have become durable, so each actor's first allocation
  // in this run skips one generation (docs/engine.md "Early start").
  bool unclean_start() const { return unclean_start_; }
  // This engine's run: a counter stored in the store (keys::EngineRun), bumped each open.
  uint64_t run() const { return run_; }

  void metrics_envoy_connected(int delta);
  void metrics_malformed_frame();
  void ObserveCommit(Duration took);

 private:
  Engine(EngineOptions options, std::unique_ptr<storage::KvStore> store, net::IoRuntime& io,
         net::IoRuntime& workers);
  void HandleEnvoyConnect(std::shared_ptr<net::HttpExchange> exchange);
  void HandleHealth(net::HttpExchange& exchange);
  void HandleMetrics(net::HttpExchange& exchange);

  EngineOptions options_;
  net::IoRuntime& io_;
  net::IoRuntime& workers_;
  Clock& clock_;
  std::unique_ptr<storage::KvStore> store_;
  std::unique_ptr<storage::ActorKv> actor_kv_;
  std::unique_ptr<storage::GroupSync> kv_sync_;
  std::unique_ptr<storage::PageStore> page_store_;
  MetricsRegistry metrics_;
  Gauge* envoys_gauge_ = nullptr;
  Counter* malformed_frames_ = nullptr;
  Counter* requests_ = nullptr;
  Histogram* commit_seconds_ = nullptr;
  Counter* kv_syncs_ = nullptr;
  Counter* kv_inline_syncs_ = nullptr;
  Counter* kv_writes_synced_ = nullptr;
  Counter* held_output_write_failures_ = nullptr;
  Counter* page_commits_inline_ = nullptr;
  Counter* page_commits_worker_ = nullptr;
  Counter* early_requests_ = nullptr;
  Counter* resent_not_started_ = nullptr;
  Counter* resent_never_ran_ = nullptr;
  RemoteSqlMetrics remote_sql_metrics_;
  std::shared_ptr<RemoteSqlRegistry> sql_hosts_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Orchestrator> orchestrator_;
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<RestApi> api_;
  std::unique_ptr<PoolMetadata> pool_metadata_;
  std::atomic<uint64_t> next_session_id_{1};
  std::atomic<uint64_t> next_ray_{1};
  std::atomic<bool> shutting_down_{false};
  bool unclean_start_ = false;
  uint64_t run_ = 0;
  // Removes the open marker (keys::EngineOpen) with a synced commit, which also makes
  // every earlier commit durable. Once; errors are logged.
  void MarkClosed();
  std::atomic<bool> marked_closed_{false};
  bool opened_ = false;  // Open completed
};

}  // namespace keel::engine
