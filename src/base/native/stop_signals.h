// StopSignals: SIGINT and SIGTERM for a process that serves until told to stop (keel-engine,
// runtime programs). They are blocked from construction — make one before any thread
// starts, so every thread inherits the mask — and Wait returns the first one; a second one
// from outside then ends the process at once (exit code 130). Interrupt stands in for the
// first signal, and is never taken for a second one.
// Thread-safety: construct and Wait on the main thread.
#pragma once

#include <signal.h>

namespace keel {

class StopSignals {
 public:
  StopSignals();
  // Blocks until SIGINT or SIGTERM; returns which.
  int Wait();

  // For code that finds the process cannot go on (its storage was taken over, say): ends
  // Wait as a SIGTERM to the process would, and Interrupted() tells the two apart, so the
  // process can stop the same orderly way and then exit non-zero. Any thread; never blocks.
  static void Interrupt();
  static bool Interrupted();

 private:
  sigset_t set_;
};

}  // namespace keel
