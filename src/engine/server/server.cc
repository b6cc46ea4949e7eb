#include "engine/server/server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <iterator>
#include <mutex>
#include <span>
#include <system_error>
#include <thread>
#include <utility>

#include "base/log.h"
#include "engine/gateway/cors.h"
#include "engine/gateway/errors.h"
#include "storage/mem_kv_store.h"
#include "storage/postgres_kv_store.h"
#include "storage/rocksdb_kv_store.h"

namespace keel::engine {

std::string HttpUrl(std::string_view host, uint16_t port) {
  std::string out = "http://";
  // An IPv6 literal is bracketed in a URL (RFC 3986 §3.2.2); a bracketed one is kept.
  const bool ipv6 = host.find(':') != std::string_view::npos && !host.starts_with('[');
  if (ipv6) out += '[';
  out += host;
  if (ipv6) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

EngineOptions ToEngineOptions(const EngineConfig& c, uint16_t port) {
  EngineOptions o;
  const auto& t = c.thresholds;
  auto ms = [](std::chrono::milliseconds d) { return static_cast<int64_t>(d.count()); };
  o.envoy_lost_threshold_ms = ms(t.envoy_lost_threshold);
  o.actor_stop_threshold_ms = ms(t.actor_stop_threshold);
  o.max_response_payload = static_cast<uint64_t>(t.max_response_payload_bytes);
  o.ping_interval_ms = ms(t.envoy_ping_interval);
  o.ping_timeout_ms = ms(t.envoy_ping_timeout);
  o.envoy_eligible_threshold_ms = ms(t.envoy_eligible_threshold);
  o.allocation_candidate_sample_size = t.actor_allocation_candidate_sample_size;
  o.hibernating_request_eligible_threshold_ms = ms(t.hibernating_request_eligible_threshold);
  o.hws_ack_timeout_ms = ms(t.gateway_hws_ack_timeout);
  o.hws_max_pending_bytes = static_cast<uint64_t>(t.gateway_hws_max_pending_bytes);
  o.thresholds.allocation_ms = ms(t.actor_allocation_threshold);
  o.thresholds.start_ms = ms(t.actor_start_threshold);
  o.thresholds.stop_ms = ms(t.actor_stop_threshold);
  o.thresholds.retry_duration_ms = ms(t.actor_retry_duration_threshold);
  o.thresholds.base_retry_ms = ms(t.base_retry_timeout);
  o.thresholds.retry_reset_ms = ms(t.retry_reset_duration);
  o.thresholds.max_backoff_exponent = static_cast<int>(t.reschedule_backoff_max_exponent);
  o.thresholds.serverless_base_retry_ms = ms(t.serverless_base_retry_timeout);
  o.thresholds.serverless_retry_reset_ms = ms(t.serverless_retry_reset_duration);
  o.thresholds.serverless_max_backoff_exponent =
      static_cast<int>(t.serverless_backoff_max_exponent);
  o.serverless_drain_grace_period_ms = ms(t.serverless_drain_grace_period);
  o.thresholds.envoy_lost_ms = ms(t.envoy_lost_threshold);
  o.thresholds.stale_host_exclusion_ms = o.thresholds.envoy_lost_ms + o.thresholds.stop_ms;
  o.actor_ready_timeout_ms = ms(t.gateway_actor_ready_timeout);
  o.response_start_timeout_ms = ms(t.gateway_response_start_timeout);
  o.ws_open_timeout_ms = ms(t.gateway_ws_open_timeout);
  o.preload_max_total_bytes = t.preload_max_total_bytes;
  o.metadata_poll_interval_ms = ms(t.metadata_poll_interval);
  o.min_metadata_poll_interval_ms = ms(t.min_metadata_poll_interval);
  o.runner_pool_error_clear_successes = t.runner_pool_error_clear_successes;
  o.inline_page_commit_bytes = static_cast<size_t>(c.inline_page_commit_bytes);
  o.inline_sync_us = c.inline_sync_us;
  o.sync_linger_us = c.sync_linger_us;
  o.admin_token = c.admin_token;
  o.namespace_tokens = c.namespace_tokens;
  o.gateway_token = c.gateway_token;
  o.public_url = HttpUrl(c.host, port);
  return o;
}

SyncThreadPlacement PlaceSyncThread(const EngineConfig& config, bool syncs_to_local_disk,
                                    const SystemRoots& roots) {
  constexpr std::string_view kLogName = "storage";
  if (config.sync_thread_cpus == "off") return {};
  const bool automatic = config.sync_thread_cpus == "auto";
  if (!syncs_to_local_disk) {
    // Nothing waits for a local fsync: where the thread runs does not matter.
    if (!automatic) {
      KEEL_LOG(kWarn, kLogName,
               "sync_thread_cpus is ignored: this storage makes no local disk syncs",
               {{"storage", config.storage == StorageKind::kRocksDb
                                ? "rocksdb on a filesystem kept in memory"
                                : std::string(StorageKindName(config.storage))}});
    }
    return {};
  }
  const std::vector<int> allowed = AllowedCpus();
  if (automatic) {
    CompletionCpus found = FindCompletionCpus(config.data_dir, allowed, roots);
    // The interrupt, once found, is followed (SyncThreadFollower) whether or not pinning
    // helps now: one that goes everywhere, or nowhere usable, may be moved later.
    SyncThreadPlacement placement{.irq = found.irq, .device = found.device};
    if (found.cpus.empty()) {
      KEEL_LOG(kInfo, kLogName, "the KV sync thread runs where the scheduler puts it",
               {{"data_dir", config.data_dir}, {"why", found.reason}});
      return placement;
    }
    placement.cpus = std::move(found.cpus);
    placement.why = "they take the completions of " + found.device + " (IRQ " +
                    std::to_string(found.irq) + "), which holds the data directory";
    return placement;
  }
  auto listed = ParseCpuList(config.sync_thread_cpus);  // validated with the config
  if (!listed.has_value()) return {};
  std::vector<int> usable;
  std::set_intersection(listed->begin(), listed->end(), allowed.begin(), allowed.end(),
                        std::back_inserter(usable));
  if (usable.empty()) {
    KEEL_LOG(kWarn, kLogName,
             "none of sync_thread_cpus may be used by this process: the KV sync thread runs "
             "where the scheduler puts it",
             {{"sync_thread_cpus", config.sync_thread_cpus}, {"allowed", FormatCpuList(allowed)}});
    return {};
  }
  return {std::move(usable), "sync_thread_cpus=" + config.sync_thread_cpus};
}

SyncThreadFollower::SyncThreadFollower(SyncThreadPlacement placement, std::vector<int> allowed,
                                       PinFn pin, SystemRoots roots)
    : placement_(std::move(placement)),
      allowed_(std::move(allowed)),
      pin_(std::move(pin)),
      roots_(std::move(roots)) {
  std::sort(allowed_.begin(), allowed_.end());
}

bool SyncThreadFollower::Recheck() {
  constexpr std::string_view kLogName = "storage";
  if (placement_.irq < 0 || allowed_.empty()) return false;
  const std::optional<std::vector<int>> targets = IrqCpus(placement_.irq, roots_);
  if (!targets.has_value()) return false;  // gone for now (a hot-unplug, a restricted /proc)
  std::vector<int> both;
  std::set_intersection(targets->begin(), targets->end(), allowed_.begin(), allowed_.end(),
                        std::back_inserter(both));
  // Pinning helps only where the interrupt goes to some of the CPUs, not all of them.
  std::vector<int> wanted = both == allowed_ ? std::vector<int>{} : both;
  if (wanted == placement_.cpus) return false;
  const std::string irq_name = "IRQ " + std::to_string(placement_.irq) + " of " + placement_.device;
  const std::string now_goes =
      irq_name + " now goes to CPU" + (targets->size() == 1 ? " " : "s ") + FormatCpuList(*targets);
  if (Status pinned = pin_(wanted.empty() ? std::span<const int>(allowed_) : wanted);
      !pinned.has_value()) {
    if (failed_for_ != wanted) {
      KEEL_LOG(kWarn, kLogName, "the KV sync thread could not follow its disk's interrupt",
               {{"why", now_goes}, {"detail", pinned.error().message()}});
      failed_for_ = wanted;
    }
    return false;
  }
  failed_for_.reset();
  if (wanted.empty()) {
    KEEL_LOG(kInfo, kLogName, "the KV sync thread now runs where the scheduler puts it",
             {{"why", now_goes + (both.empty() ? ", none of which this process may use"
                                               : ", every CPU this process may use")}});
  } else {
    KEEL_LOG(kInfo, kLogName,
             std::string("the KV sync thread moves to ") + (wanted.size() == 1 ? "CPU " : "CPUs ") +
                 FormatCpuList(wanted),
             {{"why", now_goes}});
  }
  placement_.cpus = std::move(wanted);
  return true;
}

net::HttpResponse RefusedRequestResponse(const net::RefusedRequest& refused) {
  Error error{"guard", "malformed_request", "malformed request"};
  if (refused.status == 413) {
    error = Error{"guard", "invalid_request_body", "request body too large"};
  } else if (refused.status == 431) {
    error = Error{"guard", "request_header_too_large", "request header too large"};
  }
  if (refused.websocket_handshake) {
    error = Error{"guard", "invalid_websocket_handshake",
                  "the WebSocket handshake is not valid: " + std::string(refused.reason)};
  }
  net::HttpResponse response{
      refused.status, {{"content-type", "application/json"}}, gateway::ErrorJson(error)};
  for (auto& header : gateway::CorsResponseHeaders(refused.headers)) {
    response.headers.push_back(std::move(header));
  }
  return response;
}

// The engine requests go to: null before the core is open and after shutdown, when every
// request (a WebSocket upgrade too: the refusal's body says why) is answered 503
// guard.service_unavailable.
struct EngineServer::Serving {
  std::atomic<Engine*> engine{nullptr};
  std::atomic<bool> stopped{false};

  void Handle(std::shared_ptr<net::HttpExchange> exchange) const {
    Engine* e = engine.load(std::memory_order_acquire);
    if (e == nullptr) {
      const Error error{"guard", "service_unavailable",
                        stopped.load(std::memory_order_acquire) ? "the engine is shutting down"
                                                                : "the engine is starting"};
      net::HttpResponse response{503,
                                 {{"content-type", "application/json"}, {"retry-after", "1"}},
                                 gateway::ErrorJson(error)};
      for (auto& header : gateway::CorsResponseHeaders(exchange->request().headers)) {
        response.headers.push_back(std::move(header));
      }
      exchange->Respond(std::move(response));
      return;
    }
    e->Handle(std::move(exchange));
  }

  void Stop() {
    stopped.store(true, std::memory_order_release);
    engine.store(nullptr, std::memory_order_release);
  }
};

// The follower's rechecks: a timer on the I/O runtime's clock hands each one to a worker (it
// reads procfs and may move a thread), which then sets the next timer. Every timer and task
// holds this state, so whichever outlives the server finds `stopped` and does nothing.
struct EngineServer::Following : std::enable_shared_from_this<Following> {
  explicit Following(SyncThreadFollower follower) : follower(std::move(follower)) {}

  std::mutex mu;
  bool stopped = false;         // guarded by mu
  SyncThreadFollower follower;  // used under mu

  void ScheduleNext(net::IoRuntime& io, net::IoRuntime& workers) {
    std::lock_guard lock(mu);
    if (stopped) return;
    io.clock().ScheduleAfter(kSyncThreadRecheckInterval,
                             [self = shared_from_this(), &io, &workers] {
                               workers.Post([self, &io, &workers] {
                                 {
                                   std::lock_guard lock(self->mu);
                                   if (self->stopped) return;
                                   self->follower.Recheck();
                                 }
                                 self->ScheduleNext(io, workers);
                               });
                             });
  }
};

EngineServer::EngineServer() : serving_(std::make_shared<Serving>()) {}

Result<std::unique_ptr<EngineServer>> EngineServer::Start(
    const EngineConfig& config, std::function<void(const Error&)> on_storage_lost) {
  // Here rather than in a main: every way of starting an engine (keel-engine, a runtime's
  // --with-engine) warns.
  if (!config.admin_token.has_value()) {
    KEEL_LOG(kWarn, "engine",
             "no admin token: the REST API and envoy endpoint need no authentication, so the "
             "engine only binds loopback addresses");
  }
  std::unique_ptr<storage::KvStore> store;
  // Whether KV writes wait for fsyncs of a local disk (PlaceSyncThread).
  bool syncs_to_local_disk = false;
  if (config.storage == StorageKind::kMemory) {
    store = std::make_unique<storage::MemKvStore>();
  } else if (config.storage == StorageKind::kPostgres) {
    const std::string target = storage::PostgresKvStore::Redacted(config.postgres_url);
    storage::PostgresKvStoreOptions options;
    options.on_lost = [target, on_lost = std::move(on_storage_lost)](const Error& error) {
      KEEL_LOG(kError, "storage",
               "another engine took over this engine's table in PostgreSQL: this engine "
               "writes nothing more and must stop",
               {{"database", target}, {"detail", error.message()}});
      if (on_lost) on_lost(error);
    };
    auto opened = storage::PostgresKvStore::Open(config.postgres_url, options);
    // The table's lock is held by another session. After a restart that is most often the
    // last engine's, which the server drops once it notices the connection closed (at once
    // on a socket the dead process closed; on a host that vanished, when TCP keepalives
    // time out). So wait a little before calling it a second engine.
    const auto wait = std::chrono::milliseconds(config.storage_lock_wait_ms);
    const auto give_up = std::chrono::steady_clock::now() + wait;
    bool said = false;
    while (!opened.has_value() && opened.error().Is("storage", "failed_precondition") &&
           std::chrono::steady_clock::now() < give_up) {
      if (!std::exchange(said, true)) {
        KEEL_LOG(kWarn, "storage",
                 "the database's keel table is locked by another session; waiting",
                 {{"database", target},
                  {"wait_ms", std::to_string(wait.count())},
                  {"detail", opened.error().message()}});
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      opened = storage::PostgresKvStore::Open(config.postgres_url, options);
    }
    if (!opened.has_value()) {
      return Error{
          opened.error().group(), opened.error().code(),
          "cannot open storage in PostgreSQL at " + target + ": " + opened.error().message()};
    }
    KEEL_LOG(kInfo, "storage", "storage is a PostgreSQL database", {{"database", target}});
    store = std::move(*opened);
  } else {
    std::error_code ec;
    std::filesystem::create_directories(config.data_dir, ec);
    auto opened = storage::RocksDbKvStore::Open(config.data_dir + "/store");
    if (!opened.has_value()) {
      return Error{opened.error().group(), opened.error().code(),
                   "cannot open storage in " + config.data_dir + ": " + opened.error().message()};
    }
    if ((*opened)->SkipsSyncs()) {
      KEEL_LOG(kInfo, "storage",
               "the data directory is on a filesystem kept in memory: syncs are skipped",
               {{"data_dir", config.data_dir},
                {"durability", "data survives a crash of the engine, not of the machine"}});
    }
    syncs_to_local_disk = !(*opened)->SkipsSyncs();
    store = std::move(*opened);
  }

  std::unique_ptr<EngineServer> s(new EngineServer());
  // Workers run storage work (orchestrator loop, KV/page requests, REST); I/O threads never
  // wait for an fsync. They mostly block in synced commits, so there are more of them than
  // cores: concurrent commits share WAL syncs. Destroyed after the I/O runtime.
  // Only the I/O threads poll (io_spin_us): a worker's wait is an fsync, not a wake-up.
  s->workers_ = std::make_unique<net::IoRuntime>(std::max(4, 4 * config.threads));
  s->io_ = std::make_unique<net::IoRuntime>(config.threads,
                                            std::chrono::microseconds(config.io_spin_us));
  net::ServerOptions server_options;
  server_options.host = config.host;
  server_options.port = config.port;
  server_options.unix_path = config.unix_socket;
  // Above the 20 MiB maxResponsePayloadSize plus framing (Beast's default is far lower).
  server_options.max_ws_message =
      static_cast<size_t>(config.thresholds.max_response_payload_bytes) + (1 << 20);
  server_options.refusal = RefusedRequestResponse;
  auto server = net::HttpServer::Start(*s->io_, server_options, s->handler());
  if (!server.has_value()) return server.error();
  s->server_ = std::move(*server);
  EngineOptions engine_options = ToEngineOptions(config, s->server_->port());
  SyncThreadPlacement placement = PlaceSyncThread(config, syncs_to_local_disk);
  engine_options.sync_thread_cpus = placement.cpus;
  engine_options.sync_thread_why = placement.why;
  auto engine = Engine::Open(std::move(engine_options), std::move(store), *s->io_, *s->workers_);
  if (!engine.has_value()) return engine.error();
  s->engine_ = std::move(*engine);
  s->serving_->engine.store(s->engine_.get(), std::memory_order_release);
  if (placement.irq >= 0) {
    s->following_ = std::make_shared<Following>(
        SyncThreadFollower(std::move(placement), AllowedCpus(),
                           [engine = s->engine_.get()](std::span<const int> cpus) {
                             return engine->kv_sync().PinThread(cpus);
                           }));
    s->following_->ScheduleNext(*s->io_, *s->workers_);
  }
  return s;
}

EngineServer::~EngineServer() {
  Shutdown();
  StopThreads();
  server_.reset();
  engine_.reset();
}

void EngineServer::Shutdown() {
  StopFollowing();
  if (shut_down_ || engine_ == nullptr) return;
  shut_down_ = true;
  server_->StopAccepting();
  std::promise<void> stopped;
  engine_->Shutdown([&stopped] { stopped.set_value(); });
  stopped.get_future().wait();
  serving_->Stop();
}

void EngineServer::StopFollowing() {
  if (following_ == nullptr) return;
  // Waits for a Recheck under way: none runs (or pins) once this returns.
  std::lock_guard lock(following_->mu);
  following_->stopped = true;  // a pending timer or task finds it and does nothing
}

void EngineServer::StopThreads() {
  StopFollowing();
  serving_->Stop();
  if (io_ != nullptr) io_->Stop();
  if (workers_ != nullptr) workers_->Stop();
}

const std::string& EngineServer::host() const { return server_->host(); }
uint16_t EngineServer::port() const { return server_->port(); }

net::HttpServer::Handler EngineServer::handler() const {
  return [serving = serving_](std::shared_ptr<net::HttpExchange> exchange) {
    serving->Handle(std::move(exchange));
  };
}

}  // namespace keel::engine
