// PoolMetadata: the engine's view of each serverless pool's runtime, learnt by polling
// `GET {url}/metadata` (actors.md §6.11), and the pool's runner-pool error.
//
// Every serverless pool of this datacenter is polled with its configured headers every
// `metadata_poll_interval` ms (the pool's value, else EngineOptions::metadata_poll_interval_ms,
// never below EngineOptions::min_metadata_poll_interval_ms). A poll that finds what a
// rivetkit runtime answers (JSON, `runtime == "rivetkit"`, a non-empty `version`, an
// `envoyProtocolVersion` the engine speaks when given) records the envoy protocol version
// on the pool (Catalog::NotePoolProtocolVersion: GET /runner-configs `protocol_version`,
// the serverless start body's version), the runtime's `version` and `envoy.version`, and
// the actor names with their metadata (GET /actors/names). A poll that does not sets the
// pool's runner-pool error (GET /runner-configs `runner_pool_error`), as does a failed
// serverless start (RecordStartFailure); it stays until
// EngineOptions::runner_pool_error_clear_successes polls or serverless starts in a row
// succeed. The error is kept
// in memory only: a restarted engine polls again and finds out anew.
//
// Polls run on timers of the engine's I/O clock and fetch with net::Fetch (bounded by
// EngineOptions::metadata_fetch_timeout_ms); what they learn is stored from the worker
// pool. A pool that is deleted or made `normal` stops being polled at once (PoolChanged);
// Stop() cancels every timer and waits for a result being stored, after which no callback
// touches the engine again.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "engine/common/id.h"
#include "net/http.h"

namespace keel::engine {

class Engine;

// A serverless pool's runner-pool error: why a metadata fetch did not find a usable
// runtime, or (the serverless_* kinds) why a serverless start failed (actors.md §6.10 step
// 3). Rendered as `{"<code>": {…}}` (MetadataFailureJson), the shape of the actor `error`
// field.
struct MetadataFailure {
  enum class Kind : uint8_t {
    kInvalidRequest,              // invalid_request{message}: the URL cannot be fetched
    kRequestFailed,               // request_failed{message}: connect/reset/malformed answer
    kRequestTimedOut,             // request_timed_out{timeout_ms}
    kNonSuccessStatus,            // non_success_status{status_code, body}
    kInvalidResponseJson,         // invalid_response_json{body}
    kInvalidResponseSchema,       // invalid_response_schema{message}
    kUnsupportedProtocolVersion,  // unsupported_protocol_version{version, min, max}
    // POST {url}/start (Gateway::DispatchServerlessStart):
    kServerlessHttpError,          // serverless_http_error{status_code, body}: not 200, or
                                   // 200 without content-type text/event-stream
    kServerlessStreamEndedEarly,   // serverless_stream_ended_early{}
    kServerlessConnectionError,    // serverless_connection_error{message}
    kServerlessInvalidSsePayload,  // serverless_invalid_sse_payload{message}
  };
  Kind kind = Kind::kRequestFailed;
  std::string message;
  int status_code = 0;
  std::string body;  // an excerpt, at most kBodyExcerptBytes (cut at a UTF-8 boundary)
  int64_t timeout_ms = 0;
  int64_t protocol_version = 0;
  friend bool operator==(const MetadataFailure&, const MetadataFailure&) = default;
};

// What a runtime's `/metadata` said (the fields the engine uses).
struct RuntimeMetadata {
  std::string version;
  std::optional<uint16_t> envoy_protocol_version;
  std::optional<uint32_t> envoy_version;
  // Actor name → its metadata as JSON object text.
  std::vector<std::pair<std::string, std::string>> actor_names;
};

inline constexpr size_t kBodyExcerptBytes = 512;

// Validates a `/metadata` answer (or the fetch's error, net.timeout after `timeout_ms`).
// Pure. `actorNames` values may be the metadata itself (Keel's runtime) or `{metadata: …}`
// (rivetkit's listing shape); anything that is not an object is read as `{}`. Names that
// are empty or over 128 bytes are skipped, and at most 1024 names are taken.
using MetadataResult = std::pair<std::optional<RuntimeMetadata>, std::optional<MetadataFailure>>;
MetadataResult CheckMetadataResponse(const Result<net::HttpResponse>& response, int64_t timeout_ms);

// `{"<code>": {…}}` as JSON text.
std::string MetadataFailureJson(const MetadataFailure& failure);

// Keeps at most kBodyExcerptBytes of `body`, not cutting a UTF-8 sequence.
std::string BodyExcerpt(const std::string& body);

// A pool's state as GET /runner-configs shows it.
struct PoolMetadataView {
  std::optional<MetadataFailure> error;  // the runner-pool error
  std::optional<RuntimeMetadata> last;   // the last successful poll (actor names dropped)
};

class PoolMetadata {
 public:
  explicit PoolMetadata(Engine& engine);
  ~PoolMetadata();  // Stop()
  PoolMetadata(const PoolMetadata&) = delete;
  PoolMetadata& operator=(const PoolMetadata&) = delete;

  // Starts polling every serverless pool of the catalog (call after Catalog::Load).
  void Start();
  // Cancels every timer; pending fetches' results are dropped. Idempotent. Must not be
  // called from one of this object's callbacks.
  void Stop();

  // After a pool was put or deleted: starts, re-times or stops its polling. A new pool, or
  // a serverless url/headers change, resets its state and polls at once.
  void PoolChanged(const EngineId& ns, const std::string& name);

  // Polls the pool now; `done` runs once the poll's result is recorded (OkStatus whatever it
  // found), or with runner_config.not_found when the pool is not a serverless pool here,
  // or core.unavailable when the engine stops first. Runs on an engine thread.
  void Refresh(const EngineId& ns, const std::string& name, std::function<void(Status)> done);

  // One fetch of `{url}/metadata` with `headers`, checked (the health check).
  void Check(std::string url, net::Headers headers, std::function<void(MetadataResult)> done);

  PoolMetadataView View(const EngineId& ns, const std::string& name) const;

  // A serverless start of the pool failed: `failure` becomes its runner-pool error (the
  // latest failure wins, one slot for polls and starts alike). A start that succeeded (the
  // runtime's envoy took the actor) counts towards clearing it as a successful poll does.
  // No-ops for a pool that is not a serverless pool here.
  void RecordStartFailure(const EngineId& ns, const std::string& name, MetadataFailure failure);
  void RecordStartSuccess(const EngineId& ns, const std::string& name);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace keel::engine
