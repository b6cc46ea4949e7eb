// actors.md §8.24 actor-schedule: schedule.at / schedule.after run the target action once,
// a scheduled action can use storage (SQLite: `scheduledDb`; also the KV: `scheduledKv`),
// and several schedules fire in time order. Runs once (bare client, the runtime's default
// SQLite backend; actor_sleep_db runs scheduled database work in both cells).
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorScheduleTest : public PlainTest {};

TEST_F(ActorScheduleTest, ScheduleAt) {
  auto h = client().GetOrCreate("scheduled", {UniqueKey("sched-at")});
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  KEEL_OK(h.Call("scheduleTaskAt", now + 250));
  EXPECT_TRUE(WaitFor([&] { return KEEL_OK(h.Call<int64_t>("getLastRun")) > 0; }, 5s));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getScheduledCount")), 1);
}

TEST_F(ActorScheduleTest, ScheduleAfter) {
  auto h = client().GetOrCreate("scheduled", {UniqueKey("sched-after")});
  KEEL_OK(h.Call("scheduleTaskAfter", 250));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getScheduledCount")), 0);
  EXPECT_TRUE(WaitFor([&] { return KEEL_OK(h.Call<int64_t>("getLastRun")) > 0; }, 5s));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getScheduledCount")), 1);
}

TEST_F(ActorScheduleTest, ScheduledActionWritesTheDatabase) {
  auto h = client().GetOrCreate("scheduledDb", {UniqueKey("sched-db")});
  KEEL_OK(h.Call("scheduleDbWrite", 250));
  EXPECT_TRUE(WaitFor([&] { return KEEL_OK(h.Call<int64_t>("getLogCount")) >= 1; }, 5s));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getLogCount")), 1);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getScheduledCount")), 1);
}

TEST_F(ActorScheduleTest, ScheduledActionUsesStorage) {
  auto h = client().GetOrCreate("scheduledKv", {UniqueKey("sched-kv")});
  KEEL_OK(h.Call("scheduleKvWrite", 250));
  EXPECT_TRUE(WaitFor([&] { return KEEL_OK(h.Call<int64_t>("getLogCount")) >= 1; }, 5s));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getLogCount")), 1);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getScheduledCount")), 1);
}

TEST_F(ActorScheduleTest, SchedulesFireInTimeOrder) {
  auto h = client().GetOrCreate("scheduled", {UniqueKey("sched-order")});
  // Scheduled out of order; they fire by time.
  KEEL_OK(h.Call("scheduleTaskAfterWithId", "third", 1250));
  KEEL_OK(h.Call("scheduleTaskAfterWithId", "first", 250));
  KEEL_OK(h.Call("scheduleTaskAfterWithId", "second", 750));
  // Waits on the history rather than probing at set times, which a loaded host can overrun:
  // the order the entries arrive in is the behaviour under test.
  json history;
  auto has = [&](size_t n) {
    return WaitFor(
        [&] {
          history = AsJson(KEEL_OK(h.Call("getTaskHistory")));
          return history.size() >= n;
        },
        5s);
  };
  ASSERT_TRUE(has(1)) << history.dump();
  EXPECT_EQ(history[0], "first") << history.dump();
  ASSERT_TRUE(has(3)) << history.dump();
  EXPECT_EQ(history, json({"first", "second", "third"}));
}

}  // namespace
}  // namespace keel::acceptance
