// keel::ServeWithEngine — keel::Serve that can also run keel-engine in the same process:
//
//   int main(int argc, char** argv) { return keel::ServeWithEngine(argc, argv, counter); }
//
//   prog [RUNTIME FLAGS]                          a runtime, as keel::Serve
//   prog [RUNTIME FLAGS] --with-engine [ENGINE FLAGS]
//                                                 an engine (every keel-engine flag,
//                                                 KEEL_ENGINE_* variable and config file
//                                                 applies) and this runtime in one process
//
// With --with-engine the process prints the engine's `listening on HOST:PORT` line, clients
// reach the actors there as usual, and the runtime's envoy connection goes to the engine
// without a socket (net::ConnectInProcess): a call's frames between the gateway and the
// actor cross no kernel (docs/engine.md, "A runtime in the engine's process"). The actors
// run on the engine's event loop, so a frame the engine reads reaches its actor on the
// same thread; an action that blocks then holds up the engine's sockets too, and
// --runtime-thread (KEEL_RUNTIME_THREAD=1) gives the actors a thread of their own instead.
// Other runtimes may still connect over the network. --endpoint is then ignored; the
// runtime presents the engine's admin token when it has one. The log level is the
// runtime's (--log-level before --with-engine, or KEEL_LOG_LEVEL).
//
// On SIGINT/SIGTERM the engine shuts down first — its running actors are stopped with
// GOING_AWAY through this runtime, so their state is saved — then the runtime stops.
// Thread-safety: call once, from main.
#pragma once

#include <memory>
#include <vector>

#include "runtime/core.h"

namespace keel {

int ServeTypesWithEngine(int argc, char** argv,
                         std::vector<std::shared_ptr<const runtime::ActorType>> types);

template <typename... Defs>
int ServeWithEngine(int argc, char** argv, const Defs&... defs) {
  return ServeTypesWithEngine(argc, argv, {defs.type()...});
}

}  // namespace keel
