// actors.md §8.22 actor-run: the run handler starts after startup, an active run keeps the
// actor awake, a run blocked in a queue receive does not, an exiting or throwing run leaves
// the actor alive until it idles to sleep. Runs once (bare client); sleepTimeout 1000 ms.
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorRunTest : public PlainTest {
 protected:
  int64_t NoteCount(const std::string& actor_id, const std::string& entry) {
    return client().GetOrCreate("observer", {"observer"}).Call<int64_t>("count", actor_id, entry).value_or(-1);
  }
  json State(client::ActorHandle& h) { return AsJson(KEEL_OK(h.Call("getState"))); }
};

TEST_F(ActorRunTest, RunStartsAfterStartup) {
  auto h = client().GetOrCreate("runWithTicks", {UniqueKey("run-start")});
  KEEL_OK(h.Resolve());
  json s;
  EXPECT_TRUE(WaitFor(
      [&] {
        s = State(h);
        return s["tickCount"].get<int64_t>() > 0;
      },
      5s))
      << s.dump();
  EXPECT_EQ(s["runStarted"], true);
}

TEST_F(ActorRunTest, TicksKeepIncreasing) {
  auto h = client().GetOrCreate("runWithTicks", {UniqueKey("run-ticks")});
  const int64_t first = State(h)["tickCount"].get<int64_t>();
  EXPECT_TRUE(WaitFor([&] { return State(h)["tickCount"].get<int64_t>() > first + 2; }, 5s));
}

TEST_F(ActorRunTest, ActiveRunKeepsTheActorAwake) {
  auto h = client().GetOrCreate("runWithTicks", {UniqueKey("run-awake")});
  const std::string id = KEEL_OK(h.Resolve());
  const int64_t before = State(h)["tickCount"].get<int64_t>();
  SleepMs(1000 + 300);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  json s = State(h);
  EXPECT_EQ(s["runExited"], false);
  EXPECT_EQ(s["wakeCount"], 1);
  EXPECT_GT(s["tickCount"].get<int64_t>(), before);
}

TEST_F(ActorRunTest, ActorWithoutRunIdlesToSleep) {
  auto h = client().GetOrCreate("runWithoutHandler", {UniqueKey("run-none")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_EQ(State(h)["wakeCount"], 1);
  SleepMs(1000 + 300);
  EXPECT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 5s));
  EXPECT_EQ(State(h)["wakeCount"], 2);
}

TEST_F(ActorRunTest, QueueConsumerProcessesInOrder) {
  auto h = client().GetOrCreate("runWithQueueConsumer", {UniqueKey("run-consumer")});
  for (int i = 1; i <= 3; ++i) KEEL_OK(h.Send("messages", Value::Object({{"n", i}})));
  json s;
  ASSERT_TRUE(WaitFor(
      [&] {
        s = State(h);
        return s["processed"].size() >= 3;
      },
      5s))
      << s.dump();
  EXPECT_EQ(s["processed"], json({{{"n", 1}}, {{"n", 2}}, {{"n", 3}}}));
  EXPECT_EQ(s["runStarted"], true);
}

TEST_F(ActorRunTest, RunBlockedInQueueReceiveAllowsSleep) {
  auto h = client().GetOrCreate("runWithQueueConsumer", {UniqueKey("run-consumer-sleep")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_EQ(State(h)["wakeCount"], 1);
  SleepMs(1000 + 500);
  EXPECT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 5s));
  json s = State(h);
  EXPECT_GE(s["wakeCount"].get<int64_t>(), 2) << "run restarted on wake";
  EXPECT_EQ(s["runStarted"], true);
}

TEST_F(ActorRunTest, EarlyExitIdlesToSleep) {
  auto h = client().GetOrCreate("runWithEarlyExit", {UniqueKey("run-early")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s));
  EXPECT_EQ(NoteCount(id, "sleep"), 1);
  EXPECT_EQ(NoteCount(id, "destroy"), 0);
  EXPECT_EQ(State(h)["runStarted"], true);
}

TEST_F(ActorRunTest, ThrowingRunIdlesToSleep) {
  auto h = client().GetOrCreate("runWithError", {UniqueKey("run-error")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return State(h)["runExited"] == true; }, 5s));
  EXPECT_EQ(NoteCount(id, "destroy"), 0);
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s));
  EXPECT_EQ(NoteCount(id, "destroy"), 0);
  EXPECT_GE(State(h)["wakeCount"].get<int64_t>(), 2);
}

}  // namespace
}  // namespace keel::acceptance
