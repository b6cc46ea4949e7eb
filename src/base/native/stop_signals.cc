#include "base/native/stop_signals.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

namespace keel {
namespace {
std::atomic<bool> interrupted{false};
}  // namespace

void StopSignals::Interrupt() {
  // Process-directed: every thread blocks SIGTERM, so the sigwait in Wait takes it.
  if (!interrupted.exchange(true)) ::kill(::getpid(), SIGTERM);
}

bool StopSignals::Interrupted() { return interrupted.load(); }

StopSignals::StopSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
}

int StopSignals::Wait() {
  int sig = 0;
  sigwait(&set_, &sig);
  std::thread second([set = set_] {
    for (;;) {
      siginfo_t info{};
      if (sigwaitinfo(&set, &info) < 0) continue;  // EINTR
      // Interrupt's own kill is no second request to stop: the process may find it cannot
      // go on while it is already stopping, and the orderly stop must run to its end.
      if (info.si_code == SI_USER && info.si_pid == ::getpid()) continue;
      std::_Exit(130);
    }
  });
  second.detach();
  return sig;
}

}  // namespace keel
