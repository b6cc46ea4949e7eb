// SystemClock: the real Clock for native shells (steady_clock for monotonic time,
// system_clock for wall time).
//
// Its timers are a plain list serviced only by an explicit RunDue() call: nothing fires
// on its own and no thread is started. This is a stopgap for tools and simple loops; the
// Asio event loops of the engine and runtime shells will provide a Clock whose timers
// are serviced by the io_context instead.
// Thread-safety: MonotonicNow/SystemNowMs are safe from any thread; Schedule, Cancel and
// RunDue are not thread-safe and must be called from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

#include "base/clock.h"
#include "base/manual_clock.h"

namespace keel {

class SystemClock final : public Clock {
 public:
  SystemClock() = default;

  // Clock
  MonoTime MonotonicNow() const override;
  int64_t SystemNowMs() const override;
  TimerId Schedule(MonoTime deadline, std::function<void()> callback) override;
  bool Cancel(TimerId id) override;

  // Runs every timer whose deadline is at or before MonotonicNow() (read once, at entry),
  // in deadline order, including timers that callbacks schedule already due by then.
  // Returns the number of callbacks run. Never blocks or sleeps.
  size_t RunDue();

  size_t PendingTimers() const { return timers_.size(); }
  // The earliest pending deadline, for a caller that waits until then.
  std::optional<MonoTime> NextDeadline() const { return timers_.NextDeadline(); }

 private:
  internal::TimerQueue timers_;
};

}  // namespace keel
