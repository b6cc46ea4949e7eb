// Clock: the one seam through which Keel code reads time and schedules timers.
//
// Cores never read real time; they take a `Clock&` and are driven by a ManualClock in
// tests and simulation, or by a native clock in shells. MonoTime is a monotonic instant
// with an arbitrary per-clock epoch; wall time is Unix epoch milliseconds, the unit the
// protocol uses. Thread-safety: defined by each implementation (ManualClock and
// SystemClock are single-threaded).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <ratio>
#include <utility>

namespace keel {

// Tag clock for MonoTime. It has no now(): only a Clock instance knows the current time.
struct MonoClock {
  using rep = int64_t;
  using period = std::nano;
  using duration = std::chrono::nanoseconds;
  using time_point = std::chrono::time_point<MonoClock, duration>;
  static constexpr bool is_steady = true;
};

// A span of monotonic time.
using Duration = std::chrono::nanoseconds;
// A monotonic instant. Only comparable with instants of the same Clock instance.
using MonoTime = MonoClock::time_point;
// A wall-clock instant: Unix epoch milliseconds.
using WallTime = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;

// Identifies a scheduled timer. Schedule never returns the value-initialized TimerId{},
// so it can stand for "no timer".
enum class TimerId : uint64_t {};

class Clock {
 public:
  Clock() = default;
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;

  // Never decreases.
  virtual MonoTime MonotonicNow() const = 0;
  // Unix epoch milliseconds. May jump in either direction (it is the wall clock).
  virtual int64_t SystemNowMs() const = 0;
  WallTime SystemNow() const { return WallTime(std::chrono::milliseconds(SystemNowMs())); }

  // Runs `callback` once, when the clock is serviced at or after `deadline`. Never runs
  // it synchronously, even when `deadline` has already passed. Timers fire in deadline
  // order; equal deadlines fire in the order they were scheduled. Callbacks may schedule
  // and cancel timers. Pending callbacks are destroyed, unrun, with the clock.
  virtual TimerId Schedule(MonoTime deadline, std::function<void()> callback) = 0;
  // Returns true if the timer was pending and now never will fire; false if it already
  // fired (including from inside its own callback), was cancelled, or is unknown.
  virtual bool Cancel(TimerId id) = 0;

  TimerId ScheduleAfter(Duration delay, std::function<void()> callback) {
    return Schedule(MonotonicNow() + delay, std::move(callback));
  }
};

}  // namespace keel
