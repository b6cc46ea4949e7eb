#include "base/native/system_clock.h"

#include <chrono>
#include <utility>

namespace keel {

MonoTime SystemClock::MonotonicNow() const {
  return MonoTime(
      std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
}

int64_t SystemClock::SystemNowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TimerId SystemClock::Schedule(MonoTime deadline, std::function<void()> callback) {
  return timers_.Add(deadline, std::move(callback));
}

bool SystemClock::Cancel(TimerId id) { return timers_.Cancel(id); }

size_t SystemClock::RunDue() {
  const MonoTime now = MonotonicNow();
  size_t fired = 0;
  while (auto due = timers_.PopDue(now)) {
    due->callback();
    ++fired;
  }
  return fired;
}

}  // namespace keel
