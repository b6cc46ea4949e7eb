// keel::Serve — runs actor definitions as a native runtime process (an envoy of a pool):
// reads its settings, connects to keel-engine and hosts actors until SIGINT/SIGTERM,
// then stops gracefully (the engine moves the actors elsewhere).
//
//   int main(int argc, char** argv) { return keel::Serve(argc, argv, counter, chat); }
//
// Settings, flags over environment over defaults:
//   --endpoint  KEEL_ENDPOINT   http://127.0.0.1:6420 (or http+unix://%2Fpath%2Fto%2Fsock:
//                               the engine's --unix-socket, for a runtime on its host)
//   --token     KEEL_TOKEN      (none)
//   --namespace KEEL_NAMESPACE  default
//   --pool      KEEL_POOL       default
//   --envoy-version KEEL_ENVOY_VERSION 1, --protocol-version (4), --log-level (info)
//   --sqlite-backend KEEL_SQLITE_BACKEND auto (local-native; remote: SQL runs in the engine)
//   --runtime-thread KEEL_RUNTIME_THREAD=1 (only with ServeWithEngine's --with-engine)
// Thread-safety: call once, from main.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "net/http_server.h"
#include "runtime/core.h"
#include "runtime/native/local_sql.h"

namespace keel {

struct ServeSettings {
  std::string endpoint = "http://127.0.0.1:6420";
  std::string token;
  std::string namespace_name = "default";
  std::string pool = "default";
  uint32_t envoy_version = 1;
  uint16_t protocol_version = 4;
  std::string log_level = "info";
  std::optional<std::string> inspector_token;
  // auto | local | remote (runtime/sql.h).
  std::string sqlite_backend = "auto";
  // Ask the engine to hold answers until their writes are durable (docs/runtime.md, "Held
  // outputs"); off: every answer waits for its writes' acknowledgement here.
  bool hold_outputs = true;
  // Offer early requests (docs/engine.md "Early requests"): the engine may send an HTTP
  // request right behind its actor's start command (env KEEL_EARLY_REQUESTS=0: off).
  bool early_requests = true;
  // With --with-engine (runtime/native/with_engine.h): the actors run on a thread of their
  // own instead of the engine's event loop (--runtime-thread, env KEEL_RUNTIME_THREAD=1).
  bool runtime_thread = false;
  // RuntimeOptions::test_hooks (acceptance fixtures; never in production).
  bool test_hooks = false;
  // An engine in this process (its request handler, engine::EngineServer::handler()): the
  // envoy connection goes to it without a socket (net::ConnectInProcess), and `endpoint`
  // only names it. Set by ServeWithEngine (runtime/native/with_engine.h), never parsed.
  net::HttpServer::Handler in_process_engine;
  // Run on this event loop (e.g. the in-process engine's I/O runtime) instead of a thread of
  // the runtime's own: a frame from the engine then reaches the actor on the thread that
  // read it, without a wake-up. Never parsed. With it, Stop does not stop the loop, Kill
  // does, and the RuntimeHost must be destroyed only after the loop was stopped (no task of
  // its may run during or after its destruction); the loop must outlive it.
  net::IoRuntime* event_loop = nullptr;
};

// A seed for keel::Random from the OS (native shells only; cores never read entropy).
uint64_t EntropySeed();

// Parses flags and the environment; on --help or a bad flag prints and returns the exit
// code to use in `exit_code`.
std::optional<ServeSettings> ParseServeSettings(int argc, char** argv, int& exit_code);

// The log level ParseServeSettings accepted (info when it is not one).
LogLevel ServeLogLevel(const ServeSettings& settings);

// Runs until a signal (or `stop` becomes ready, for tests). Returns the exit code.
int ServeTypes(const ServeSettings& settings,
               std::vector<std::shared_ptr<const runtime::ActorType>> types);

template <typename... Defs>
int Serve(int argc, char** argv, const Defs&... defs) {
  int code = 0;
  auto settings = ParseServeSettings(argc, argv, code);
  if (!settings) return code;
  return ServeTypes(*settings, {defs.type()...});
}

// A runtime hosted on a background thread (tests, embedding): Start connects, the
// destructor shuts down gracefully (bounded) and joins.
class RuntimeHost {
 public:
  RuntimeHost(ServeSettings settings, std::vector<std::shared_ptr<const runtime::ActorType>> types);
  ~RuntimeHost();
  RuntimeHost(const RuntimeHost&) = delete;
  RuntimeHost& operator=(const RuntimeHost&) = delete;

  void Start();
  // Graceful shutdown; returns once the envoy stopped or `timeout` passed.
  void Stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));
  // Abrupt: drop the connection without telling the engine (simulates a crash).
  void Kill();
  // Runs `fn` on the runtime's thread and waits for it.
  void RunSync(std::function<void()> fn);
  bool connected();
  const std::string& envoy_key() const;
  // Where the local-native backend's statements ran (logged when Serve stops).
  LocalSqlStats sql_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Logs the runtime's "stopped" line, with where its SQL statements ran.
void LogRuntimeStopped(const RuntimeHost& host);

}  // namespace keel
