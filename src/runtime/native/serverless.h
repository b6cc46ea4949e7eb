// keel::ServerlessHost — the runtime hosted serverlessly (actors.md Appendix B and §6.10,
// envoy-protocol.md §4.9): an HTTP server the engine calls instead of the runtime
// connecting on its own.
//
// Routes, under `base_path` (default /api/rivet):
//   GET  {base} or {base}/   200 text/plain
//   GET  {base}/health       200 {"status":"ok","runtime":"rivetkit","version":...}
//   GET  {base}/metadata     200 {"runtime":"rivetkit","version","envoyProtocolVersion",
//                                 "actorNames":{name:{metadata}},"envoy":{"kind":{"serverless":{}},"version"}}
//   GET|POST {base}/start    the serverless start (below)
//   OPTIONS *                204
//   anything else            404 "Not Found (RivetKit)"
//
// /start: headers x-rivet-endpoint, x-rivet-pool-name (or legacy x-rivet-runner-name),
// x-rivet-namespace-name are required (400 request/invalid), x-rivet-token is optional; when
// the options pin an endpoint or namespace the headers must match (400
// config/endpoint_mismatch, config/namespace_mismatch); a body above max_start_payload is
// 413 message/incoming_too_long. Then an envoy connection for (endpoint, namespace, pool)
// is created if there is none yet (cached for the host's life, with its own
// runtime::Runtime holding the registered actor types — the core's Runtime serves exactly
// one EnvoyClient) and the body is injected with EnvoyClient::InjectServerlessStart
// (rejected: 400 with its group/code, e.g. serverless/invalid_payload). The answer is a
// text/event-stream: `event: ping` at once and every `ping_interval` until the client goes
// away, or until the actor instance it started (actor id + generation) has stopped — then
// `event: stopping` and the stream ends.
//
// Errors are JSON {"group","code","message"[,"metadata"]}.
// Threads: one IoRuntime thread serves HTTP; every EnvoyClient/Runtime call runs on one
// strand of it (the handler posts there). All public methods may be called from any
// thread that is not the host's own.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "runtime/core.h"

namespace keel {

struct ServerlessOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 picks a free port (Start returns it)
  std::string base_path = "/api/rivet";
  size_t max_start_payload = size_t{1} << 20;
  // When set, /start's x-rivet-endpoint / x-rivet-namespace-name must equal them.
  std::optional<std::string> endpoint;
  std::optional<std::string> namespace_name;
  // Envoy identity and wire version of the connections /start creates.
  uint32_t envoy_version = 1;
  uint16_t protocol_version = 4;
  std::chrono::milliseconds ping_interval{1000};
  // Graceful stop bound used by the destructor.
  std::chrono::milliseconds stop_timeout{5000};
  std::optional<std::string> inspector_token;
  std::string version = "0.1.0";
  // Where actor databases run (docs/sqlite.md): auto (local-native), local or remote.
  runtime::SqliteBackendChoice sqlite_backend = runtime::SqliteBackendChoice::kAuto;
};

struct ServerlessStats {
  uint64_t starts_accepted = 0;    // /start bodies injected (stream opened)
  uint64_t starts_rejected = 0;    // /start answered with an error
  uint64_t streams_stopping = 0;   // streams ended by `event: stopping` (actor stopped)
  uint64_t streams_cancelled = 0;  // streams ended because the client went away
  size_t open_streams = 0;
  size_t envoys = 0;            // envoy connections created (cached)
  size_t connected_envoys = 0;  // ... of which are connected now
};

class ServerlessHost {
 public:
  ServerlessHost(ServerlessOptions options,
                 std::vector<std::shared_ptr<const runtime::ActorType>> types);
  // Stop(options.stop_timeout), then joins.
  ~ServerlessHost();
  ServerlessHost(const ServerlessHost&) = delete;
  ServerlessHost& operator=(const ServerlessHost&) = delete;

  // Binds and serves; returns the bound port. Errors: net.bind_failed,
  // net.invalid_argument, serverless.already_started.
  Result<uint16_t> Start();
  uint16_t port() const;
  // Stops accepting, ends every open stream (`event: stopping`), shuts every envoy
  // connection down gracefully (bounded by `timeout`), then stops the thread. Idempotent.
  void Stop(std::chrono::milliseconds timeout);

  ServerlessStats stats();
  // Runs `fn` on the strand and waits for it (no-op once stopped).
  void RunSync(std::function<void()> fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JSON bodies of the routes above (exposed for tests and other shells).
std::string ServerlessHealthJson(const std::string& version);
std::string ServerlessMetadataJson(
    const std::vector<std::pair<std::string, std::string>>& actor_names, const std::string& version,
    uint16_t protocol_version, uint32_t envoy_version);
std::string ServerlessErrorJson(const std::string& group, const std::string& code,
                                const std::string& message, const std::string& metadata_json = "");

}  // namespace keel
