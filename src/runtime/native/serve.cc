#include "runtime/native/serve.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <random>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "base/native/allocator.h"
#include "base/native/spdlog_backend.h"
#include "base/native/stop_signals.h"
#include "base/output_batch.h"
#include "envoy/envoy_client.h"
#include "envoy/native/native_transport.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"
#include "runtime/native/local_sql.h"

namespace keel {

namespace {

std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::move(fallback);
}

std::optional<LogLevel> ParseLevel(std::string_view s) {
  for (LogLevel l : {LogLevel::kTrace, LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn,
                     LogLevel::kError, LogLevel::kOff}) {
    if (LogLevelName(l) == s) return l;
  }
  return std::nullopt;
}


}  // namespace

uint64_t EntropySeed() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

std::optional<ServeSettings> ParseServeSettings(int argc, char** argv, int& exit_code) {
  ServeSettings s;
  s.endpoint = EnvOr("KEEL_ENDPOINT", s.endpoint);
  s.token = EnvOr("KEEL_TOKEN", "");
  s.namespace_name = EnvOr("KEEL_NAMESPACE", s.namespace_name);
  s.pool = EnvOr("KEEL_POOL", s.pool);
  s.log_level = EnvOr("KEEL_LOG_LEVEL", s.log_level);
  s.sqlite_backend = EnvOr("KEEL_SQLITE_BACKEND", s.sqlite_backend);
  s.hold_outputs = EnvOr("KEEL_HOLD_OUTPUTS", "1") != "0";
  s.early_requests = EnvOr("KEEL_EARLY_REQUESTS", "1") != "0";
  s.runtime_thread = EnvOr("KEEL_RUNTIME_THREAD", "0") == "1";
  if (const char* v = std::getenv("KEEL_INSPECTOR_TOKEN"); v != nullptr && *v) s.inspector_token = v;
  std::string version = EnvOr("KEEL_ENVOY_VERSION", "1");
  try {
    s.envoy_version = static_cast<uint32_t>(std::stoul(version));
  } catch (...) {
    std::fprintf(stderr, "KEEL_ENVOY_VERSION must be a number, got `%s`\n", version.c_str());
    exit_code = 2;
    return std::nullopt;
  }
  CLI::App app{"Keel runtime: hosts actors as an envoy of keel-engine"};
  app.add_option("--endpoint", s.endpoint, "engine URL (env KEEL_ENDPOINT)");
  app.add_option("--token", s.token, "engine token (env KEEL_TOKEN)");
  app.add_option("--namespace", s.namespace_name, "namespace (env KEEL_NAMESPACE)");
  app.add_option("--pool", s.pool, "pool / runner config name (env KEEL_POOL)");
  app.add_option("--envoy-version", s.envoy_version, "deployment version (env KEEL_ENVOY_VERSION)");
  app.add_option("--protocol-version", s.protocol_version, "envoy protocol version (2-4)")
      ->check(CLI::Range(2, 4));
  app.add_option("--log-level", s.log_level, "trace|debug|info|warn|error|off");
  app.add_option("--sqlite-backend", s.sqlite_backend,
                 "auto|local|remote: where actor databases run (env KEEL_SQLITE_BACKEND)");
  bool no_hold = false;
  app.add_flag("--no-hold-outputs", no_hold,
               "wait for each write's acknowledgement before answering, instead of letting the "
               "engine hold answers until their writes are durable (env KEEL_HOLD_OUTPUTS=0)");
  app.add_flag("--runtime-thread", s.runtime_thread,
               "with --with-engine: run the actors on a thread of their own instead of the "
               "engine's event loop (env KEEL_RUNTIME_THREAD=1)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return std::nullopt;
  }
  if (no_hold) s.hold_outputs = false;
  if (auto b = runtime::ParseSqliteBackendChoice(s.sqlite_backend); !b.ok()) {
    std::fprintf(stderr, "%s\n", b.error().message().c_str());
    exit_code = 2;
    return std::nullopt;
  }
  if (!ParseLevel(s.log_level)) {
    std::fprintf(stderr, "unknown --log-level `%s`\n", s.log_level.c_str());
    exit_code = 2;
    return std::nullopt;
  }
  if (s.endpoint.rfind("http://", 0) != 0 && s.endpoint.rfind("https://", 0) != 0 &&
      s.endpoint.rfind("http+unix://", 0) != 0) {
    std::fprintf(stderr,
                 "--endpoint must start with http://, https:// or http+unix:// (the engine's "
                 "--unix-socket, percent-encoded), got `%s`\n",
                 s.endpoint.c_str());
    exit_code = 2;
    return std::nullopt;
  }
  return s;
}

struct RuntimeHost::Impl {
  explicit Impl(ServeSettings s)
      : settings(std::move(s)),
        own_io(settings.event_loop == nullptr ? std::make_unique<net::IoRuntime>(1) : nullptr),
        io(settings.event_loop != nullptr ? *settings.event_loop : *own_io) {}

  ServeSettings settings;
  // The runtime's event loop: a thread of its own, or the one it was given.
  std::unique_ptr<net::IoRuntime> own_io;
  net::IoRuntime& io;
  // Each task's writes to the engine leave in one piece: a KV write, the answer behind it
  // and the client message's ack are one sendmsg and one wake-up of the engine.
  std::unique_ptr<Executor> strand = std::make_unique<OutputBatchExecutor>(io.MakeStrand());
  envoy::StrandClock clock{io.clock(), *strand};
  Random random{EntropySeed()};
  // Before `core`: the runtime's databases close before the SQL threads stop.
  std::unique_ptr<LocalSqlHost> sql;
  std::unique_ptr<runtime::Runtime> core;
  std::unique_ptr<envoy::NativeTransport> transport;
  std::unique_ptr<envoy::EnvoyClient> client;
  std::promise<void> stopped;
  bool stopped_set = false;
  bool stop_called = false;  // Stop ran (its caller's thread only)
  std::string key;
  // Heap trimming (ScheduleTrim): Runtime::freed_instances() at the last trim and at the
  // last check.
  uint64_t freed_at_trim = 0;
  uint64_t freed_last_check = 0;

  // glibc keeps freed memory in its arenas, and what an actor allocated is spread over pages
  // shared with other actors: without a trim, a runtime whose actors went to sleep keeps
  // their RSS (BENCHMARKS W4). Every half second, when instances were freed — after a burst
  // has settled (none freed since the last check), or every 256 — the free pages go back to
  // the OS. One timer per runtime; runs on the strand.
  void ScheduleTrim();

  class ShutdownHook;
};

RuntimeHost::RuntimeHost(ServeSettings settings,
                         std::vector<std::shared_ptr<const runtime::ActorType>> types)
    : impl_(std::make_unique<Impl>(std::move(settings))) {
  Impl& m = *impl_;
  runtime::RuntimeOptions ro;
  ro.inspector_token = m.settings.inspector_token;
  ro.test_hooks = m.settings.test_hooks;
  ro.sqlite_backend =
      runtime::ParseSqliteBackendChoice(m.settings.sqlite_backend).value_or(runtime::SqliteBackendChoice::kAuto);
  m.sql = std::make_unique<LocalSqlHost>(*m.strand);
  ro.local_sqlite = m.sql->Factory();
  m.core = std::make_unique<runtime::Runtime>(ro, m.clock, m.random);
  for (auto& t : types) m.core->Register(std::move(t));
  envoy::EnvoyConfig cfg;
  cfg.endpoint = m.settings.endpoint;
  cfg.token = m.settings.token;
  cfg.namespace_name = m.settings.namespace_name;
  cfg.pool_name = m.settings.pool;
  cfg.version = m.settings.envoy_version;
  cfg.protocol_version = m.settings.protocol_version;
  cfg.actor_names = m.core->ActorNames();
  cfg.metadata_json = R"({"keel":{"version":"0.1.0"}})";
  net::WsConnectOptions ws;
  // The runtime core keeps HTTP requests that arrive while their actor starts
  // (Runtime::SettleEarlyRequests), so the engine may send them behind the start command.
  if (m.settings.early_requests) {
    ws.headers.emplace_back(std::string(protocol::envoy::kEarlyRequestsHeader), "1");
  }
  m.transport = std::make_unique<envoy::NativeTransport>(m.io, *m.strand, std::move(ws),
                                                         m.settings.hold_outputs);
  if (m.settings.in_process_engine != nullptr) {
    m.transport->set_in_process_server(m.settings.in_process_engine);
  }
  m.client = std::make_unique<envoy::EnvoyClient>(cfg, m.clock, m.random, *m.transport, *m.core);
  m.transport->set_client(m.client.get());
  m.core->Attach(*m.client);
  m.core->SetShutdownCallback([&m] {
    if (!m.stopped_set) {
      m.stopped_set = true;
      m.stopped.set_value();
    }
  });
  m.key = m.client->envoy_key();
}

RuntimeHost::~RuntimeHost() {
  Stop(std::chrono::milliseconds(5000));
  if (impl_->own_io != nullptr) impl_->own_io->Stop();
}

void RuntimeHost::Start() {
  RunSync([this] {
    impl_->client->Start();
    impl_->ScheduleTrim();
  });
}

void RuntimeHost::Impl::ScheduleTrim() {
  clock.ScheduleAfter(std::chrono::milliseconds(500), [this] {
    Impl& m = *this;
    if (m.core == nullptr) return;
    // Freed instances, and the dedup entries of slept generations forgotten after their ack.
    const uint64_t freed =
        m.core->freed_instances() + (m.client != nullptr ? m.client->released_dedup_entries() : 0);
    if (freed != m.freed_at_trim && (freed == m.freed_last_check || freed - m.freed_at_trim >= 256)) {
      ReleaseFreeMemory();
      m.freed_at_trim = freed;
    }
    m.freed_last_check = freed;
    if (m.client != nullptr && !m.client->shut_down()) m.ScheduleTrim();
  });
}

void RuntimeHost::RunSync(std::function<void()> fn) {
  if (impl_->io.stopped()) return;
  std::promise<void> done;
  impl_->strand->Post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

void RuntimeHost::Stop(std::chrono::milliseconds timeout) {
  if (impl_->stop_called || impl_->io.stopped()) return;
  impl_->stop_called = true;
  auto fut = impl_->stopped.get_future().share();
  RunSync([this] {
    if (!impl_->client->shut_down()) impl_->client->Shutdown(false);
  });
  fut.wait_for(timeout);
  // A loop the runtime was given is its owner's to stop.
  if (impl_->own_io != nullptr) impl_->own_io->Stop();
  // Nothing answers page requests any more: SQL threads still waiting fail now
  // (sqlite.closed) instead of at the page request timeout.
  impl_->sql->Shutdown();
}

void RuntimeHost::Kill() {
  // Like a crash: the event loop stops and the socket is dropped without a close frame
  // or ToRivetStopping; nothing is flushed. SQL threads waiting for a page answer fail now.
  impl_->io.Stop();
  impl_->sql->Shutdown();
}

LocalSqlStats RuntimeHost::sql_stats() const { return impl_->sql->stats(); }

bool RuntimeHost::connected() {
  bool c = false;
  RunSync([&] { c = impl_->client->connected(); });
  return c;
}

const std::string& RuntimeHost::envoy_key() const { return impl_->key; }

LogLevel ServeLogLevel(const ServeSettings& settings) {
  return ParseLevel(settings.log_level).value_or(LogLevel::kInfo);
}

void LogRuntimeStopped(const RuntimeHost& host) {
  const LocalSqlStats sql = host.sql_stats();
  LogInfo("runtime", "stopped",
          {{"sql_statements_inline", std::to_string(sql.inline_statements)},
           {"sql_statements_on_threads", std::to_string(sql.thread_statements)},
           {"sql_inline_given_up", std::to_string(sql.inline_given_up)},
           {"sql_prefetches", std::to_string(sql.prefetches)}});
}

int ServeTypes(const ServeSettings& settings,
               std::vector<std::shared_ptr<const runtime::ActorType>> types) {
  InstallSpdlogSink();
  SetLogLevel(ServeLogLevel(settings));
  StopSignals signals;

  std::string names;
  for (const auto& t : types) names += (names.empty() ? "" : ",") + t->name;
  RuntimeHost host(settings, std::move(types));
  host.Start();
  LogInfo("runtime", "serving",
          {{"endpoint", settings.endpoint},
           {"namespace", settings.namespace_name},
           {"pool", settings.pool},
           {"actors", names},
           {"envoy_key", host.envoy_key()},
           {"allocator", AllocatorName()}});
  const int sig = signals.Wait();
  LogInfo("runtime", "signal received, stopping actors", {{"signal", std::to_string(sig)}});
  host.Stop(std::chrono::milliseconds(30000));
  LogRuntimeStopped(host);
  return 0;
}

}  // namespace keel
