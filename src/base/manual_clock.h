// ManualClock: a Clock whose time moves only when told to, for tests, simulation and
// any core that must be deterministic. Advancing fires due timers in (deadline, schedule
// order); a callback sees MonotonicNow() equal to its own deadline. Also hosts
// internal::TimerQueue, the deadline-ordered queue shared with SystemClock.
// Thread-safety: none; use from one thread (or strand) only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>

#include "base/clock.h"

namespace keel {

namespace internal {

// Timers ordered by (deadline, id); ids increase with every Add, so ties keep scheduling
// order. Does not run callbacks itself: the owner pops and runs them, which lets callbacks
// mutate the queue freely.
class TimerQueue {
 public:
  struct Due {
    MonoTime deadline;
    std::function<void()> callback;
  };

  TimerQueue() = default;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  TimerId Add(MonoTime deadline, std::function<void()> callback);
  bool Cancel(TimerId id);
  // Removes and returns the first timer with deadline <= `limit`, if any.
  std::optional<Due> PopDue(MonoTime limit);
  std::optional<MonoTime> NextDeadline() const;
  size_t size() const { return by_deadline_.size(); }

 private:
  using Key = std::pair<MonoTime, uint64_t>;

  uint64_t next_id_ = 1;
  std::map<Key, std::function<void()>> by_deadline_;
  std::unordered_map<uint64_t, MonoTime> deadline_by_id_;
};

}  // namespace internal

class ManualClock final : public Clock {
 public:
  explicit ManualClock(MonoTime start = MonoTime(), int64_t system_now_ms = 0);

  // Clock
  MonoTime MonotonicNow() const override { return now_; }
  int64_t SystemNowMs() const override;
  TimerId Schedule(MonoTime deadline, std::function<void()> callback) override;
  bool Cancel(TimerId id) override;

  // Moves time forward by `delta`, firing every timer due by the new time, including
  // timers scheduled by callbacks during this call. Before each callback, time is set to
  // that timer's deadline (or stays put if the deadline is already past). Wall time moves
  // by the same amount as monotonic time. Returns the number of callbacks run.
  // A negative `delta` is treated as zero (time never goes backwards).
  size_t Advance(Duration delta);
  // Like Advance, to an absolute instant. A `target` in the past only fires timers that
  // are already due.
  size_t AdvanceTo(MonoTime target);

  // Sets wall time without touching monotonic time or firing timers.
  void SetSystemNowMs(int64_t ms);

  size_t PendingTimers() const { return timers_.size(); }
  std::optional<MonoTime> NextDeadline() const { return timers_.NextDeadline(); }

 private:
  // Moves both clocks forward to `t`; no-op if `t` is not after now_.
  void MoveTo(MonoTime t);

  MonoTime now_;
  Duration system_now_;  // since the Unix epoch
  internal::TimerQueue timers_;
};

}  // namespace keel
