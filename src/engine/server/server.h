// EngineServer: a running keel-engine — its storage (RocksDB in the data directory, a
// PostgreSQL database, or memory), its threads, the HTTP server on the TCP port (and on the Unix
// socket when one is configured) and the Engine core behind it. keel-engine's main runs one; a
// runtime host can run one in its own process and reach it without a socket through handler()
// (runtime/native/with_engine.h, docs/engine.md "A runtime in the engine's process").
//
// Threads: one I/O runtime (config.threads, polling config.io_spin_us) for sockets and
// the hot paths, and a worker runtime (4 × threads, at least 4) for storage work; no I/O
// thread ever waits for an fsync (engine/core/engine.h).
// Thread-safety: every method may be called from any thread except the destructor, which
// must not run on one of the server's threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/native/cpu_affinity.h"
#include "base/result.h"
#include "engine/common/config.h"
#include "engine/core/engine.h"
#include "net/http_server.h"
#include "net/io_runtime.h"

namespace keel::engine {

// The core's options for `config`, with `port` (the one bound) in its public URL.
EngineOptions ToEngineOptions(const EngineConfig& config, uint16_t port);

// Where the KV sync thread (storage::GroupSync) runs, from EngineConfig::sync_thread_cpus:
// "auto" follows the data directory's disk completions (base/native/cpu_affinity.h), a
// CPU list is kept to the CPUs this process may use. Empty `cpus`: not pinned — "off",
// storage that makes no local disk syncs (`syncs_to_local_disk` false: memory, PostgreSQL,
// a data directory in memory), or nothing to follow (logged with the reason, as is a list
// none of whose CPUs may be used). `roots`: where /sys and /proc are (tests).
struct SyncThreadPlacement {
  std::vector<int> cpus;
  std::string why;  // for the log line, when `cpus` is not empty
  // "auto" on a disk with one completion interrupt: that interrupt and the disk, for
  // SyncThreadFollower (even when `cpus` is empty because the interrupt goes to every CPU
  // the process may use, or cannot be read now). -1 when there is nothing to follow.
  int irq = -1;
  std::string device;
};
SyncThreadPlacement PlaceSyncThread(const EngineConfig& config, bool syncs_to_local_disk,
                                    const SystemRoots& roots = {});

// Keeps an "auto" placement true while the interrupt moves (irqbalance rebalances every
// 10 s by default; an operator may write smp_affinity). Each Recheck re-reads where the
// interrupt goes (base/native/cpu_affinity.h IrqCpus) and, when that changed, moves the
// thread there, or hands it back to the scheduler when the interrupt now goes to every CPU
// the process may use or to none of them; each move is logged with the reason. An
// unreadable answer changes nothing, and a move that fails is tried again at the next
// Recheck (warned once per destination). EngineServer rechecks every
// kSyncThreadRecheckInterval, on a worker thread.
// Thread-safety: one call at a time.
class SyncThreadFollower {
 public:
  // Moves the thread; `cpus` is never empty (all of `allowed` hands it to the scheduler).
  using PinFn = std::function<Status(std::span<const int> cpus)>;
  // `placement`: what the engine started with (its `cpus` are where the thread is now).
  // `allowed`: the CPUs the process may use (AllowedCpus()).
  SyncThreadFollower(SyncThreadPlacement placement, std::vector<int> allowed, PinFn pin,
                     SystemRoots roots = {});
  // True when it moved the thread.
  bool Recheck();
  // Where the thread is kept now; empty: where the scheduler puts it.
  const std::vector<int>& cpus() const { return placement_.cpus; }

 private:
  SyncThreadPlacement placement_;
  std::vector<int> allowed_;  // sorted
  PinFn pin_;
  SystemRoots roots_;
  std::optional<std::vector<int>> failed_for_;  // the destination last warned about
};
inline constexpr std::chrono::seconds kSyncThreadRecheckInterval{10};

// "http://HOST:PORT", an IPv6 literal host bracketed ("http://[::1]:6420").
std::string HttpUrl(std::string_view host, uint16_t port);

// The engine's answer to a request its HTTP server refuses before routing
// (net::ServerOptions::refusal): the JSON error of errors.md §1.4 with the CORS response
// headers, like the gateway's own early errors — guard.invalid_request_body (413),
// guard.request_header_too_large (431), guard.malformed_request (400).
net::HttpResponse RefusedRequestResponse(const net::RefusedRequest& refused);

class EngineServer {
 public:
  // Opens storage, binds (port 0 picks a free port), opens the core (loading the catalog
  // and resuming every actor's state machine) and serves. Requests that arrive before the
  // core is open are answered 503. Errors: storage.* (the data directory cannot be opened),
  // net.bind_failed / net.invalid_argument (the address or Unix socket), and the core's
  // errors from Engine::Open.
  // `on_storage_lost` is called once, from whichever thread finds out, if the engine's
  // storage stops being its own while it runs (PostgreSQL: another engine took its table
  // over). Nothing more can be written then (writes fail storage.failed_precondition), so
  // the owner should shut the engine down; it must not block or do so itself. The loss is
  // logged at error either way.
  static Result<std::unique_ptr<EngineServer>> Start(
      const EngineConfig& config, std::function<void(const Error&)> on_storage_lost = {});

  // Shutdown() unless done, then stops the threads and closes storage.
  ~EngineServer();
  EngineServer(const EngineServer&) = delete;
  EngineServer& operator=(const EngineServer&) = delete;

  // Graceful and blocking: stop accepting, stop every running actor with GOING_AWAY
  // (bounded by the actor stop threshold), close envoys with ws.going_away, flush storage.
  // Idempotent.
  void Shutdown();

  const std::string& host() const;
  uint16_t port() const;
  // The handler every request of the server goes through, for in-process connections
  // (net::ConnectInProcess). It answers 503 after Shutdown.
  net::HttpServer::Handler handler() const;
  Engine& engine() { return *engine_; }
  // The event loop of sockets and hot paths; a runtime in this process may run on it
  // (ServeSettings::event_loop).
  net::IoRuntime& io() { return *io_; }
  // Stops the I/O and worker threads (nothing runs on them afterwards) without freeing
  // anything yet: for what must go away between the last task and the server. Call after
  // Shutdown. Idempotent.
  void StopThreads();

 private:
  struct Serving;
  EngineServer();

  std::unique_ptr<net::IoRuntime> workers_;
  std::unique_ptr<net::IoRuntime> io_;
  std::shared_ptr<Serving> serving_;
  std::unique_ptr<net::HttpServer> server_;
  std::unique_ptr<Engine> engine_;
  // The sync thread's follower and its timer (Start); stopped before the threads.
  struct Following;
  std::shared_ptr<Following> following_;
  void StopFollowing();
  bool shut_down_ = false;
};

}  // namespace keel::engine
