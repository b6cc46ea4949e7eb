#include "base/manual_clock.h"

#include <algorithm>

namespace keel {
namespace internal {

TimerId TimerQueue::Add(MonoTime deadline, std::function<void()> callback) {
  uint64_t id = next_id_++;
  by_deadline_.emplace(Key(deadline, id), std::move(callback));
  deadline_by_id_.emplace(id, deadline);
  return TimerId(id);
}

bool TimerQueue::Cancel(TimerId id) {
  auto it = deadline_by_id_.find(static_cast<uint64_t>(id));
  if (it == deadline_by_id_.end()) return false;
  by_deadline_.erase(Key(it->second, it->first));
  deadline_by_id_.erase(it);
  return true;
}

std::optional<TimerQueue::Due> TimerQueue::PopDue(MonoTime limit) {
  if (by_deadline_.empty()) return std::nullopt;
  auto first = by_deadline_.begin();
  if (first->first.first > limit) return std::nullopt;
  Due due{first->first.first, std::move(first->second)};
  deadline_by_id_.erase(first->first.second);
  by_deadline_.erase(first);
  return due;
}

std::optional<MonoTime> TimerQueue::NextDeadline() const {
  if (by_deadline_.empty()) return std::nullopt;
  return by_deadline_.begin()->first.first;
}

}  // namespace internal

ManualClock::ManualClock(MonoTime start, int64_t system_now_ms)
    : now_(start), system_now_(std::chrono::milliseconds(system_now_ms)) {}

int64_t ManualClock::SystemNowMs() const {
  return std::chrono::floor<std::chrono::milliseconds>(system_now_).count();
}

TimerId ManualClock::Schedule(MonoTime deadline, std::function<void()> callback) {
  return timers_.Add(deadline, std::move(callback));
}

bool ManualClock::Cancel(TimerId id) { return timers_.Cancel(id); }

size_t ManualClock::Advance(Duration delta) {
  return AdvanceTo(delta > Duration::zero() ? now_ + delta : now_);
}

size_t ManualClock::AdvanceTo(MonoTime target) {
  size_t fired = 0;
  // Re-query the queue after every callback: callbacks may add or cancel timers, and a
  // new timer due by `target` must fire in this same call. Timers already due at now_
  // fire even when `target` lies in the past.
  while (auto due = timers_.PopDue(std::max(target, now_))) {
    MoveTo(due->deadline);
    due->callback();
    ++fired;
  }
  MoveTo(target);
  return fired;
}

void ManualClock::SetSystemNowMs(int64_t ms) { system_now_ = std::chrono::milliseconds(ms); }

void ManualClock::MoveTo(MonoTime t) {
  if (t <= now_) return;
  system_now_ += t - now_;
  now_ = t;
}

}  // namespace keel
