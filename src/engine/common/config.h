// EngineConfig: everything the keel-engine binary is configured with, and its loader.
//
// Sources, lowest to highest precedence: built-in defaults < a JSON config file
// (`--config FILE`, or KEEL_ENGINE_CONFIG) < environment variables KEEL_ENGINE_<KEY>
// (the JSON key upper-cased, e.g. KEEL_ENGINE_PORT, KEEL_ENGINE_ENVOY_LOST_THRESHOLD_MS)
// < command-line flags. Every JSON key can be set from the environment; only the common
// ones have flags. A source that sets the namespace tokens replaces the whole list.
// Used by the keel-engine main and the engine wiring. Thread-safety: plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/log.h"
#include "base/result.h"

namespace keel::engine {

enum class StorageKind : uint8_t {
  kRocksDb,   // "rocksdb": durable, under data_dir
  kMemory,    // "memory": nothing survives the process
  kPostgres,  // "postgres": durable, in a PostgreSQL database (postgres_url)
};

// "rocksdb", "memory" or "postgres".
std::string_view StorageKindName(StorageKind kind);

// Engine timing and size policy. Defaults are Rivet's (actors.md §6.12, envoy-protocol.md
// §3.4/§3.5); JSON/env keys are the field names, with `_ms` for durations.
struct EngineThresholds {
  using Ms = std::chrono::milliseconds;

  // Orchestration (actors.md §6.4–§6.7).
  Ms actor_allocation_threshold{2000};        // serverless Allocating → lost
  Ms actor_start_threshold{30000};            // serverful Starting → lost
  Ms actor_stop_threshold{30000};             // stop intent → lost; ProtocolMetadata
  Ms actor_retry_duration_threshold{300000};  // Reallocating gives up → Sleeping
  Ms base_retry_timeout{2000};                // reallocation backoff base
  Ms retry_reset_duration{600000};            // backoff attempt counter reset
  int64_t reschedule_backoff_max_exponent = 8;
  int64_t actor_allocation_candidate_sample_size = 100;
  Ms hibernating_request_eligible_threshold{90000};

  // Envoy connections (envoy-protocol.md §3.4, §3.5).
  Ms envoy_eligible_threshold{10000};                     // pinged within → can receive actors
  Ms envoy_lost_threshold{15000};                         // ProtocolMetadata.envoyLostThreshold
  Ms envoy_ping_timeout{15000};                           // no pong for this long → ws.timed_out
  Ms envoy_ping_interval{3000};                           // plus [0, 128) ms jitter
  int64_t max_response_payload_bytes = 20 * 1024 * 1024;  // ProtocolMetadata; 20 MiB

  // Serverless pools (actors.md §6.10, §6.11).
  Ms serverless_drain_grace_period{10000};
  Ms serverless_base_retry_timeout{2000};
  Ms serverless_retry_reset_duration{600000};
  int64_t serverless_backoff_max_exponent = 8;
  // Metadata polling (engine/core/pool_metadata.h): a runner-pool error is cleared after
  // this many successful polls in a row (1..1000000); pools without their own interval are
  // polled every metadata_poll_interval, none more often than min_metadata_poll_interval
  // (at least 100 ms; the default interval may not be below it).
  int64_t runner_pool_error_clear_successes = 3;
  Ms metadata_poll_interval{10000};
  Ms min_metadata_poll_interval{5000};
  int64_t preload_max_total_bytes = 1048576;

  // Gateway (actors.md §5.6).
  Ms gateway_actor_ready_timeout{10000};
  Ms gateway_response_start_timeout{300000};
  Ms gateway_ws_open_timeout{15000};
  Ms gateway_tunnel_ping_timeout{30000};
  Ms gateway_hws_ack_timeout{30000};
  int64_t gateway_hws_max_pending_bytes = 128 * 1024 * 1024;

  friend bool operator==(const EngineThresholds&, const EngineThresholds&) = default;
};

struct EngineConfig {
  // Address to listen on. Without an admin token only loopback is allowed.
  std::string host = "127.0.0.1";
  // TCP port; 0 = pick a free port (the engine logs the one it got).
  uint16_t port = 6420;
  // When set, the engine also listens on a Unix domain socket at this path (owner-only),
  // for runtimes on the same host: they connect with the endpoint http+unix://<path
  // percent-encoded>, skipping the TCP stack (~20 µs less per round trip on this machine
  // kind). The gateway and API answer there too.
  std::string unix_socket;
  // Where the rocksdb backend keeps its files.
  std::string data_dir = "./keel-data";
  StorageKind storage = StorageKind::kRocksDb;
  // The PostgreSQL database of the postgres backend: a libpq URI (postgres:// or
  // postgresql://), given as the storage setting itself (`--storage postgresql://...`).
  // It may carry a password; nothing logs it unredacted.
  std::string postgres_url;
  // How long the engine waits for its PostgreSQL table's lock, held by another session
  // (another engine, or the sessions of one that died and that the server has not yet
  // noticed), before it gives up with storage.failed_precondition; 0..1 hour, 0 = not at all.
  int64_t storage_lock_wait_ms = 15000;
  // Admin token (REST `Authorization: Bearer`, envoy `rivet_token.*`). None = no auth.
  std::optional<std::string> admin_token;
  // Per-namespace tokens, namespace name → token.
  std::map<std::string, std::string> namespace_tokens;
  // Token the gateway requires from clients, if any.
  std::optional<std::string> gateway_token;
  // Threads running the I/O event loop (workers: 4 × threads, at least 4); 1..256. One by
  // default: a single loop thread handles a frame where it was read, while several share
  // one event loop and hand most events to another thread (twice the context
  // switches and 20–35 % more engine CPU per request, measured on 2 cores).
  int threads = 1;
  // How long an I/O thread keeps polling for the next event after its last one before it
  // sleeps in the kernel (net::IoRuntime), in µs; 0..100000, 0 = never poll. A request's
  // hops (client → engine → runtime → engine) then land on a thread that is still awake
  // instead of paying a wake-up each; on 2 virtual cores 100 µs cut W1 over HTTP from
  // ~560 to ~290 µs at ~100 µs more engine CPU per call (docs/benchmarks-history.md, "I/O
  // threads that poll"). An idle engine sleeps.
  int io_spin_us = 100;
  // Page commits up to this many page bytes are committed where the connection reads them
  // and made durable by the group commit's shared WAL sync, instead of a synced commit on a
  // storage worker (engine::EngineOptions::inline_page_commit_bytes); 0..16 MiB, 0 = never.
  int64_t inline_page_commit_bytes = 64 << 10;
  // A KV write's WAL sync runs on the thread that committed it, instead of waking the
  // group commit's sync thread, while no sync is running and the recent syncs took less
  // than this many µs (storage::GroupSync, "Where syncs run"); 0..100000, 0 = never. Only
  // storage that syncs faster than a thread wakes up (tmpfs, drives with power-loss
  // protection) qualifies; a disk's slower syncs keep the thread, where writes share them.
  int inline_sync_us = 20;
  // How long the group commit's sync thread polls for the next KV write after its syncs
  // before it sleeps (storage::GroupSync::Options::linger), in µs; 0..100000, 0 = never.
  // A client that waits for each answer writes again ~50–100 µs after its last sync; the
  // thread is then still awake instead of paying a halted core's wake-up. On 2 virtual
  // cores 300 µs took W1 over WebSocket from 33 to 21 µs over its paired floor (medians
  // of twelve runs; docs/benchmarks-history.md, "The sync thread lingers"). An idle
  // engine sleeps.
  int sync_linger_us = 300;
  // Where the group commit's sync thread runs (storage::GroupSync::PinThread): "auto" —
  // on the CPUs that take the data directory's disk completions, when that disk has one
  // hardware queue whose interrupt goes to some of the CPUs this process may use
  // (base/native/cpu_affinity.h), else where the scheduler puts it; "off" — where the
  // scheduler puts it; or a CPU list ("1", "0,2-3"). Only for rocksdb storage on a disk
  // (not memory, PostgreSQL or tmpfs, where nothing waits for a local fsync).
  std::string sync_thread_cpus = "auto";
  LogLevel log_level = LogLevel::kInfo;
  EngineThresholds thresholds;

  friend bool operator==(const EngineConfig&, const EngineConfig&) = default;
};

// Reads an environment variable: nullptr when unset. Injected so tests need no real env.
using GetEnvFn = std::function<const char*(const char*)>;

// Builds the configuration from defaults, the config file, `getenv` and argv (argv[0] is
// the program name), then validates it (ValidateEngineConfig). An empty environment
// value counts as unset. Errors:
//   config.help_requested — `--help`/`-h` was given; message() is the help text. Not a
//                           failure: print it to stdout and exit 0 (IsHelpRequested).
//   config.invalid_flag   — unknown flag, missing flag value, stray positional argument;
//   config.file_unreadable, config.invalid_json — the config file;
//   config.unknown_key    — a key in the config file that names no setting;
//   config.invalid_value  — a value of the wrong type, range or charset (the message
//                           names the source: flag, env variable or file key);
//   config.insecure_bind  — see ValidateEngineConfig.
Result<EngineConfig> LoadEngineConfig(int argc, char** argv, const GetEnvFn& getenv);

// True for the `config.help_requested` result of LoadEngineConfig.
bool IsHelpRequested(const Error& error);

// Checks a configuration however it was built. Errors: config.invalid_value (empty host,
// threads out of range, a token with characters outside the WebSocket subprotocol token
// set (RFC 7230 tchar), a bad namespace name, a non-positive duration or a ping interval
// not shorter than the ping timeout, a metadata poll interval below its minimum or a minimum
// below 100 ms) and config.insecure_bind (a non-loopback host with no
// admin token: the engine would be open to the network without authentication).
Status ValidateEngineConfig(const EngineConfig& config);

// True for "localhost", IPv4 127.0.0.0/8, "::1" (also bracketed, and IPv4-mapped
// ::ffff:127.x.y.z). Pure string check; nothing is resolved.
bool IsLoopbackHost(std::string_view host);

// True when `token` is non-empty and made only of RFC 7230 tchar characters
// (ALPHA / DIGIT / "!#$%&'*+-.^_`|~"), so `rivet_token.<token>` is a legal subprotocol.
bool IsValidToken(std::string_view token);

// One line for the startup log: host, port, storage, data dir, threads, log level, which
// tokens are set (values redacted) and every threshold that differs from its default.
std::string DescribeConfig(const EngineConfig& config);

}  // namespace keel::engine
