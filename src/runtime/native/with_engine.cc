#include "runtime/native/with_engine.h"

#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "base/log.h"
#include "base/native/allocator.h"
#include "base/native/spdlog_backend.h"
#include "base/native/stop_signals.h"
#include "engine/common/config.h"
#include "engine/server/server.h"
#include "runtime/native/serve.h"

namespace keel {

int ServeTypesWithEngine(int argc, char** argv,
                         std::vector<std::shared_ptr<const runtime::ActorType>> types) {
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--with-engine") {
      split = i;
      break;
    }
  }
  int code = 0;
  auto settings = ParseServeSettings(split, argv, code);
  if (!settings.has_value()) return code;
  if (split == argc) return ServeTypes(*settings, std::move(types));

  // The engine sees the program name and what follows --with-engine.
  std::vector<char*> engine_argv{argv[0]};
  for (int i = split + 1; i < argc; ++i) engine_argv.push_back(argv[i]);
  auto config = engine::LoadEngineConfig(static_cast<int>(engine_argv.size()), engine_argv.data(),
                                         [](const char* name) { return std::getenv(name); });
  if (!config.has_value()) {
    if (engine::IsHelpRequested(config.error())) {
      std::fputs(config.error().message().c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "%s --with-engine: %s\n", argv[0], config.error().ToString().c_str());
    return 2;
  }
  InstallSpdlogSink();
  SetLogLevel(ServeLogLevel(*settings));
  StopSignals signals;  // before any thread starts
  KEEL_LOG(kInfo, "engine", "starting in the runtime's process",
           {{"config", engine::DescribeConfig(*config)}, {"allocator", AllocatorName()}});
  auto server =
      engine::EngineServer::Start(*config, [](const Error&) { StopSignals::Interrupt(); });
  if (!server.has_value()) {
    std::fprintf(stderr, "%s --with-engine: %s\n", argv[0], server.error().ToString().c_str());
    return 1;
  }
  // The `listening on` line's form, as keel-engine prints it; the URL brackets an IPv6 host.
  const std::string address = (*server)->host() + ":" + std::to_string((*server)->port());
  settings->endpoint = engine::HttpUrl((*server)->host(), (*server)->port());
  settings->in_process_engine = (*server)->handler();
  if (!settings->runtime_thread) settings->event_loop = &(*server)->io();
  if (config->admin_token.has_value()) settings->token = *config->admin_token;

  std::string names;
  for (const auto& t : types) names += (names.empty() ? "" : ",") + t->name;
  {
    RuntimeHost host(*settings, std::move(types));
    host.Start();
    std::printf("listening on %s\n", address.c_str());
    std::fflush(stdout);
    KEEL_LOG(kInfo, "engine", "serving, with the runtime in its process",
             {{"address", address},
              {"namespace", settings->namespace_name},
              {"pool", settings->pool},
              {"actors", names},
              {"envoy_key", host.envoy_key()}});
    const int sig = signals.Wait();
    if (StopSignals::Interrupted()) {
      KEEL_LOG(kError, "engine", "shutting down: the engine's storage is no longer its own");
    } else {
      KEEL_LOG(kInfo, "engine", "signal received, shutting down",
               {{"signal", std::to_string(sig)}});
    }
    (*server)->Shutdown();
    host.Stop(std::chrono::milliseconds(5000));
    LogRuntimeStopped(host);
    // The runtime runs on the engine's event loop: no task of its may outlive it.
    (*server)->StopThreads();
  }
  server->reset();
  KEEL_LOG(kInfo, "engine", "stopped");
  return StopSignals::Interrupted() ? 1 : 0;
}

}  // namespace keel
