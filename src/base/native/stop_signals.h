// StopSignals: SIGINT and SIGTERM for a process that serves until told to stop (keel-engine,
// runtime programs). They are blocked from construction — make one before any thread
// starts, so every thread inherits the mask — and Wait returns the first one; a second one
// then ends the process at once (exit code 130).
// Thread-safety: construct and Wait on the main thread.
#pragma once

#include <signal.h>

namespace keel {

class StopSignals {
 public:
  StopSignals();
  // Blocks until SIGINT or SIGTERM; returns which.
  int Wait();

 private:
  sigset_t set_;
};

}  // namespace keel
