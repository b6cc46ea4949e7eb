// keel-engine: the gateway, REST API, envoy endpoint and orchestrator in one process, on
// the embedded RocksDB store by default (issue 4, DESIGN.md §3).
//
// Prints `listening on HOST:PORT` on stdout once it serves (port 0 picks a free port), logs
// to stderr, and shuts down gracefully on SIGTERM/SIGINT: no new work, running actors are
// stopped with GOING_AWAY (bounded by the actor stop threshold), envoys are closed with
// ws.going_away, storage is flushed. A second signal exits at once.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>

#include "base/log.h"
#include "base/native/spdlog_backend.h"
#include "engine/common/config.h"
#include "engine/core/engine.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"

namespace {

using keel::engine::EngineConfig;
using keel::engine::EngineOptions;

EngineOptions ToOptions(const EngineConfig& c, uint16_t port) {
  EngineOptions o;
  const auto& t = c.thresholds;
  auto ms = [](std::chrono::milliseconds d) { return static_cast<int64_t>(d.count()); };
  o.envoy_lost_threshold_ms = ms(t.envoy_lost_threshold);
  o.actor_stop_threshold_ms = ms(t.actor_stop_threshold);
  o.max_response_payload = static_cast<uint64_t>(t.max_response_payload_bytes);
  o.ping_interval_ms = ms(t.envoy_ping_interval);
  o.ping_timeout_ms = ms(t.envoy_ping_timeout);
  o.envoy_eligible_threshold_ms = ms(t.envoy_eligible_threshold);
  o.thresholds.allocation_ms = ms(t.actor_allocation_threshold);
  o.thresholds.start_ms = ms(t.actor_start_threshold);
  o.thresholds.stop_ms = ms(t.actor_stop_threshold);
  o.thresholds.retry_duration_ms = ms(t.actor_retry_duration_threshold);
  o.thresholds.base_retry_ms = ms(t.base_retry_timeout);
  o.thresholds.retry_reset_ms = ms(t.retry_reset_duration);
  o.thresholds.max_backoff_exponent = static_cast<int>(t.reschedule_backoff_max_exponent);
  o.thresholds.envoy_lost_ms = ms(t.envoy_lost_threshold);
  o.thresholds.stale_host_exclusion_ms = o.thresholds.envoy_lost_ms + o.thresholds.stop_ms;
  o.actor_ready_timeout_ms = ms(t.gateway_actor_ready_timeout);
  o.response_start_timeout_ms = ms(t.gateway_response_start_timeout);
  o.ws_open_timeout_ms = ms(t.gateway_ws_open_timeout);
  o.preload_max_total_bytes = t.preload_max_total_bytes;
  o.inline_page_commit_bytes = static_cast<size_t>(c.inline_page_commit_bytes);
  o.admin_token = c.admin_token;
  o.namespace_tokens = c.namespace_tokens;
  o.gateway_token = c.gateway_token;
  o.public_url = "http://" + c.host + ":" + std::to_string(port);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  auto config = keel::engine::LoadEngineConfig(argc, argv, [](const char* name) {
    return std::getenv(name);
  });
  if (!config.has_value()) {
    if (keel::engine::IsHelpRequested(config.error())) {
      std::fputs(config.error().message().c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "keel-engine: %s\n", config.error().ToString().c_str());
    return 2;
  }
  keel::InstallSpdlogSink();
  keel::SetLogLevel(config->log_level);
  KEEL_LOG(kInfo, "engine", "starting", {{"config", keel::engine::DescribeConfig(*config)}});
  if (!config->admin_token.has_value()) {
    KEEL_LOG(kWarn, "engine",
             "no admin token: the REST API and envoy endpoint need no authentication, so the "
             "engine only binds loopback addresses");
  }

  // Signals are taken by sigwait below, so block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<keel::storage::KvStore> store;
  if (config->storage == keel::engine::StorageKind::kMemory) {
    store = std::make_unique<keel::storage::MemKvStore>();
  } else {
    std::error_code ec;
    std::filesystem::create_directories(config->data_dir, ec);
    auto opened = keel::storage::RocksDbKvStore::Open(config->data_dir + "/store");
    if (!opened.has_value()) {
      std::fprintf(stderr, "keel-engine: cannot open storage in %s: %s\n",
                   config->data_dir.c_str(), opened.error().ToString().c_str());
      return 1;
    }
    store = std::move(*opened);
  }

  // Workers run storage work (orchestrator loop, KV/page requests, REST); I/O threads never
  // wait for an fsync. They mostly block in synced commits, so there are more of them than
  // cores: concurrent commits share WAL syncs. Destroyed after the I/O runtime. (One I/O
  // thread by default: see EngineConfig::threads.)
  // Only the I/O threads poll (--io-spin-us): a worker's wait is an fsync, not a wake-up.
  keel::net::IoRuntime workers(std::max(4, 4 * config->threads));
  keel::net::IoRuntime io(config->threads, std::chrono::microseconds(config->io_spin_us));
  keel::net::ServerOptions server_options;
  server_options.host = config->host;
  server_options.port = config->port;
  server_options.unix_path = config->unix_socket;
  // Above the 20 MiB maxResponsePayloadSize plus framing (Beast's default is far lower).
  server_options.max_ws_message =
      static_cast<size_t>(config->thresholds.max_response_payload_bytes) + (1 << 20);

  std::unique_ptr<keel::engine::Engine> engine;
  // Requests that arrive while the engine is still opening get 503.
  std::atomic<keel::engine::Engine*> serving{nullptr};
  auto server = keel::net::HttpServer::Start(
      io, server_options, [&serving](std::shared_ptr<keel::net::HttpExchange> exchange) {
        keel::engine::Engine* e = serving.load(std::memory_order_acquire);
        if (e == nullptr) {
          exchange->Respond(keel::net::HttpResponse{503, {}, "starting"});
          return;
        }
        e->Handle(std::move(exchange));
      });
  if (!server.has_value()) {
    std::fprintf(stderr, "keel-engine: %s\n", server.error().ToString().c_str());
    return 1;
  }
  auto opened = keel::engine::Engine::Open(ToOptions(*config, (*server)->port()), std::move(store),
                                           io, workers);
  if (!opened.has_value()) {
    std::fprintf(stderr, "keel-engine: %s\n", opened.error().ToString().c_str());
    return 1;
  }
  engine = std::move(*opened);
  serving.store(engine.get(), std::memory_order_release);
  std::printf("listening on %s:%u\n", (*server)->host().c_str(),
              static_cast<unsigned>((*server)->port()));
  std::fflush(stdout);
  KEEL_LOG(kInfo, "engine", "serving",
           {{"address", (*server)->host() + ":" + std::to_string((*server)->port())}});

  int sig = 0;
  sigwait(&signals, &sig);
  KEEL_LOG(kInfo, "engine", "signal received, shutting down", {{"signal", std::to_string(sig)}});
  (*server)->StopAccepting();
  std::promise<void> stopped;
  engine->Shutdown([&stopped] { stopped.set_value(); });
  // A second signal, or the stop threshold plus a margin, ends the wait.
  std::thread second([&signals] {
    int again = 0;
    sigwait(&signals, &again);
    std::_Exit(130);
  });
  second.detach();
  stopped.get_future().wait();
  serving.store(nullptr, std::memory_order_release);
  io.Stop();
  workers.Stop();
  server->reset();
  engine.reset();
  KEEL_LOG(kInfo, "engine", "stopped");
  return 0;
}
