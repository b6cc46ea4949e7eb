#include "base/manual_clock.h"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

MonoTime At(int64_t ms) { return MonoTime(milliseconds(ms)); }

// Records "name@now_ms" for each fired callback.
class ManualClockTest : public ::testing::Test {
 protected:
  std::function<void()> Record(std::string name) {
    return [this, name] {
      fired_.push_back(name + "@" +
                       std::to_string(std::chrono::duration_cast<milliseconds>(
                                          uut_.MonotonicNow().time_since_epoch())
                                          .count()));
    };
  }

  ManualClock uut_{At(1000), 1'700'000'000'000};
  std::vector<std::string> fired_;
};

using Fired = std::vector<std::string>;

TEST_F(ManualClockTest, StartsAtTheGivenTimes) {
  EXPECT_EQ(uut_.MonotonicNow(), At(1000));
  EXPECT_EQ(uut_.SystemNowMs(), 1'700'000'000'000);
  EXPECT_EQ(uut_.SystemNow().time_since_epoch(), milliseconds(1'700'000'000'000));
}

TEST_F(ManualClockTest, DefaultsToZeroTimes) {
  ManualClock clock;
  EXPECT_EQ(clock.MonotonicNow(), MonoTime());
  EXPECT_EQ(clock.SystemNowMs(), 0);
}

TEST_F(ManualClockTest, AdvanceMovesMonotonicAndWallTimeTogether) {
  uut_.Advance(milliseconds(250));
  EXPECT_EQ(uut_.MonotonicNow(), At(1250));
  EXPECT_EQ(uut_.SystemNowMs(), 1'700'000'000'250);
}

TEST_F(ManualClockTest, WallTimeAccumulatesSubMillisecondSteps) {
  for (int i = 0; i < 4; ++i) uut_.Advance(std::chrono::microseconds(300));
  EXPECT_EQ(uut_.SystemNowMs(), 1'700'000'000'001);
  EXPECT_EQ(uut_.MonotonicNow().time_since_epoch(),
            milliseconds(1000) + std::chrono::microseconds(1200));
}

TEST_F(ManualClockTest, SetSystemNowMsLeavesMonotonicTimeAndTimersAlone) {
  uut_.Schedule(At(1000), Record("due"));
  uut_.SetSystemNowMs(5);
  EXPECT_EQ(uut_.SystemNowMs(), 5);
  EXPECT_EQ(uut_.MonotonicNow(), At(1000));
  EXPECT_TRUE(fired_.empty());
  uut_.Advance(milliseconds(10));
  EXPECT_EQ(uut_.SystemNowMs(), 15);
}

TEST_F(ManualClockTest, TimeNeverGoesBackwards) {
  uut_.Advance(milliseconds(-5));
  EXPECT_EQ(uut_.MonotonicNow(), At(1000));
  uut_.AdvanceTo(At(10));
  EXPECT_EQ(uut_.MonotonicNow(), At(1000));
  EXPECT_EQ(uut_.SystemNowMs(), 1'700'000'000'000);
}

TEST_F(ManualClockTest, AdvanceToAPastTargetStillFiresTimersDueNow) {
  uut_.Schedule(At(500), Record("overdue"));
  uut_.Schedule(At(1001), Record("future"));
  EXPECT_EQ(uut_.AdvanceTo(At(10)), 1u);
  EXPECT_EQ(fired_, (Fired{"overdue@1000"}));
  EXPECT_EQ(uut_.PendingTimers(), 1u);
}

TEST_F(ManualClockTest, ScheduleNeverFiresSynchronously) {
  uut_.Schedule(At(0), Record("past"));
  uut_.Schedule(At(1000), Record("now"));
  EXPECT_TRUE(fired_.empty());
  EXPECT_EQ(uut_.Advance(Duration::zero()), 2u);
  EXPECT_EQ(fired_, (Fired{"past@1000", "now@1000"}));
}

TEST_F(ManualClockTest, TimersFireInDeadlineOrderAtTheirDeadlines) {
  uut_.Schedule(At(1300), Record("c"));
  uut_.Schedule(At(1100), Record("a"));
  uut_.Schedule(At(1200), Record("b"));
  EXPECT_EQ(uut_.AdvanceTo(At(2000)), 3u);
  EXPECT_EQ(fired_, (Fired{"a@1100", "b@1200", "c@1300"}));
  EXPECT_EQ(uut_.MonotonicNow(), At(2000));
}

TEST_F(ManualClockTest, EqualDeadlinesFireInSchedulingOrder) {
  uut_.Schedule(At(1500), Record("first"));
  uut_.Schedule(At(1100), Record("early"));
  uut_.Schedule(At(1500), Record("second"));
  uut_.Schedule(At(1500), Record("third"));
  uut_.Advance(seconds(1));
  EXPECT_EQ(fired_, (Fired{"early@1100", "first@1500", "second@1500", "third@1500"}));
}

TEST_F(ManualClockTest, TimersAfterTheTargetStayPending) {
  uut_.Schedule(At(1100), Record("a"));
  uut_.Schedule(At(1101), Record("b"));
  EXPECT_EQ(uut_.AdvanceTo(At(1100)), 1u);
  EXPECT_EQ(fired_, (Fired{"a@1100"}));
  EXPECT_EQ(uut_.PendingTimers(), 1u);
  EXPECT_EQ(uut_.NextDeadline(), At(1101));
}

TEST_F(ManualClockTest, PendingTimersAndNextDeadlineTrackTheQueue) {
  EXPECT_EQ(uut_.PendingTimers(), 0u);
  EXPECT_EQ(uut_.NextDeadline(), std::nullopt);
  TimerId late = uut_.Schedule(At(3000), Record("late"));
  uut_.Schedule(At(2000), Record("soon"));
  EXPECT_EQ(uut_.PendingTimers(), 2u);
  EXPECT_EQ(uut_.NextDeadline(), At(2000));
  uut_.AdvanceTo(At(2000));
  EXPECT_EQ(uut_.NextDeadline(), At(3000));
  uut_.Cancel(late);
  EXPECT_EQ(uut_.PendingTimers(), 0u);
  EXPECT_EQ(uut_.NextDeadline(), std::nullopt);
}

TEST_F(ManualClockTest, ScheduleAfterIsRelativeToNow) {
  uut_.Advance(milliseconds(500));
  uut_.ScheduleAfter(milliseconds(100), Record("a"));
  EXPECT_EQ(uut_.NextDeadline(), At(1600));
  uut_.Advance(milliseconds(100));
  EXPECT_EQ(fired_, (Fired{"a@1600"}));
}

TEST_F(ManualClockTest, TimerIdsAreDistinctAndNeverTheNullId) {
  TimerId a = uut_.Schedule(At(1), Record("a"));
  TimerId b = uut_.Schedule(At(1), Record("b"));
  EXPECT_NE(a, TimerId{});
  EXPECT_NE(b, TimerId{});
  EXPECT_NE(a, b);
}

TEST_F(ManualClockTest, CancelledTimerNeverFires) {
  TimerId id = uut_.Schedule(At(1100), Record("cancelled"));
  uut_.Schedule(At(1200), Record("kept"));
  EXPECT_TRUE(uut_.Cancel(id));
  uut_.Advance(seconds(1));
  EXPECT_EQ(fired_, (Fired{"kept@1200"}));
}

TEST_F(ManualClockTest, CancelReturnsFalseForUnknownFiredOrAlreadyCancelledTimers) {
  EXPECT_FALSE(uut_.Cancel(TimerId{}));
  EXPECT_FALSE(uut_.Cancel(TimerId{12345}));
  TimerId fired = uut_.Schedule(At(1000), Record("a"));
  uut_.Advance(Duration::zero());
  EXPECT_FALSE(uut_.Cancel(fired));
  TimerId twice = uut_.Schedule(At(5000), Record("b"));
  EXPECT_TRUE(uut_.Cancel(twice));
  EXPECT_FALSE(uut_.Cancel(twice));
}

TEST_F(ManualClockTest, CallbackSchedulingATimerDueNowFiresInTheSameAdvance) {
  uut_.Schedule(At(1100), [this] {
    fired_.push_back("outer");
    uut_.Schedule(uut_.MonotonicNow(), Record("inner"));
  });
  uut_.Schedule(At(1100), Record("sibling"));
  EXPECT_EQ(uut_.Advance(milliseconds(100)), 3u);
  // The inner timer ties with "sibling" but was scheduled later, so it fires after it.
  EXPECT_EQ(fired_, (Fired{"outer", "sibling@1100", "inner@1100"}));
  EXPECT_EQ(uut_.PendingTimers(), 0u);
}

TEST_F(ManualClockTest, CallbackSchedulingATimerInThePastFiresAtTheCurrentTime) {
  uut_.Schedule(At(1100), [this] { uut_.Schedule(At(0), Record("past")); });
  uut_.Advance(milliseconds(200));
  EXPECT_EQ(fired_, (Fired{"past@1100"}));
}

TEST_F(ManualClockTest, CallbackSchedulingATimerWithinTheAdvanceFiresBeforeLaterTimers) {
  uut_.Schedule(At(1100), [this] { uut_.Schedule(At(1150), Record("inner")); });
  uut_.Schedule(At(1200), Record("later"));
  uut_.Advance(milliseconds(500));
  EXPECT_EQ(fired_, (Fired{"inner@1150", "later@1200"}));
}

TEST_F(ManualClockTest, CallbackSchedulingBeyondTheTargetLeavesItPending) {
  uut_.Schedule(At(1100), [this] { uut_.Schedule(At(1600), Record("next")); });
  EXPECT_EQ(uut_.AdvanceTo(At(1500)), 1u);
  EXPECT_TRUE(fired_.empty());
  EXPECT_EQ(uut_.PendingTimers(), 1u);
  uut_.AdvanceTo(At(1600));
  EXPECT_EQ(fired_, (Fired{"next@1600"}));
}

TEST_F(ManualClockTest, CallbackCancellingALaterTimerPreventsIt) {
  TimerId victim = uut_.Schedule(At(1200), Record("victim"));
  bool cancelled = false;
  uut_.Schedule(At(1100), [&] { cancelled = uut_.Cancel(victim); });
  uut_.Advance(seconds(1));
  EXPECT_TRUE(cancelled);
  EXPECT_TRUE(fired_.empty());
}

TEST_F(ManualClockTest, CallbackCancellingATieThatWouldFireNextPreventsIt) {
  TimerId victim{};
  uut_.Schedule(At(1100), [&] { uut_.Cancel(victim); });
  victim = uut_.Schedule(At(1100), Record("victim"));
  uut_.Advance(seconds(1));
  EXPECT_TRUE(fired_.empty());
}

TEST_F(ManualClockTest, CallbackCancellingItsOwnTimerReturnsFalse) {
  TimerId self{};
  bool result = true;
  self = uut_.Schedule(At(1100), [&] { result = uut_.Cancel(self); });
  uut_.Advance(seconds(1));
  EXPECT_FALSE(result);
}

TEST_F(ManualClockTest, SelfReschedulingTimerFiresOncePerPeriod) {
  int ticks = 0;
  std::function<void()> tick = [&] {
    ++ticks;
    uut_.ScheduleAfter(milliseconds(100), tick);
  };
  uut_.ScheduleAfter(milliseconds(100), tick);
  EXPECT_EQ(uut_.Advance(seconds(1)), 10u);
  EXPECT_EQ(ticks, 10);
  EXPECT_EQ(uut_.NextDeadline(), At(2100));
}

TEST_F(ManualClockTest, DestroyingTheClockDropsPendingCallbacksUnrun) {
  auto token = std::make_shared<int>(0);
  bool ran = false;
  {
    ManualClock clock;
    clock.Schedule(At(1), [token, &ran] { ran = true; });
    EXPECT_EQ(token.use_count(), 2);
  }
  EXPECT_FALSE(ran);
  EXPECT_EQ(token.use_count(), 1);
}

}  // namespace
}  // namespace keel
