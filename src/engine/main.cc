// keel-engine: the gateway, REST API, envoy endpoint and orchestrator in one process, on
// the embedded RocksDB store by default (issue 4, DESIGN.md §3).
//
// Prints `listening on HOST:PORT` on stdout once it serves (port 0 picks a free port), logs
// to stderr, and shuts down gracefully on SIGTERM/SIGINT: no new work, running actors are
// stopped with GOING_AWAY (bounded by the actor stop threshold), envoys are closed with
// ws.going_away, storage is flushed. A second signal exits at once. It stops the same way,
// then exits 1, when its storage is taken over by another engine (PostgreSQL).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "base/log.h"
#include "base/native/allocator.h"
#include "base/native/spdlog_backend.h"
#include "base/native/stop_signals.h"
#include "engine/common/config.h"
#include "engine/server/server.h"

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
  KEEL_LOG(
      kInfo, "engine", "starting",
      {{"config", keel::engine::DescribeConfig(*config)}, {"allocator", keel::AllocatorName()}});
  // EngineServer::Start warns when there is no admin token.

  keel::StopSignals signals;  // before any thread starts

  // Storage taken over by another engine: stop as on SIGTERM, then exit 1.
  auto server = keel::engine::EngineServer::Start(
      *config, [](const keel::Error&) { keel::StopSignals::Interrupt(); });
  if (!server.has_value()) {
    std::fprintf(stderr, "keel-engine: %s\n", server.error().ToString().c_str());
    return 1;
  }
  std::printf("listening on %s:%u\n", (*server)->host().c_str(),
              static_cast<unsigned>((*server)->port()));
  std::fflush(stdout);
  KEEL_LOG(kInfo, "engine", "serving",
           {{"address", (*server)->host() + ":" + std::to_string((*server)->port())}});

  // A second signal ends the wait for the actors at once.
  const int sig = signals.Wait();
  const bool storage_lost = keel::StopSignals::Interrupted();
  if (storage_lost) {
    KEEL_LOG(kError, "engine", "shutting down: the engine's storage is no longer its own");
  } else {
    KEEL_LOG(kInfo, "engine", "signal received, shutting down", {{"signal", std::to_string(sig)}});
  }
  (*server)->Shutdown();
  server->reset();
  KEEL_LOG(kInfo, "engine", "stopped");
  return storage_lost ? 1 : 0;
}
