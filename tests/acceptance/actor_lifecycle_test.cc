// actors.md §8.18 actor-lifecycle: destroy racing startup (actions and stop wait for the
// start to finish), rapid create/destroy, run handlers that sleep, exit, destroy or ignore
// the abort signal. Runs once (bare client): it checks lifecycle ordering, not encodings.
//
// Rivet's `lifecycleObserver` actor (reached through `c.client()`) is the process-wide
// Observer here: fixtures note "wake"/"sleep"/"destroy"/"started" under their actor id.
#include <future>
#include <thread>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorLifecycleTest : public PlainTest {
 protected:
  int64_t NoteCount(const std::string& actor_id, const std::string& entry) {
    return client().GetOrCreate("observer", {"observer"}).Call<int64_t>("count", actor_id, entry).value_or(-1);
  }
  // Waits until `name`/`id` answers actor.not_found.
  bool WaitNotFound(const std::string& name, const std::string& id, std::chrono::milliseconds timeout = 10s) {
    auto h = client().GetForId(name, id);
    return WaitFor(
        [&] {
          auto r = h.Call("ping");
          return !r.has_value() && r.error().Is("actor", "not_found");
        },
        timeout);
  }
};

TEST_F(ActorLifecycleTest, PingInFlightThenDestroy) {
  auto h = client().GetOrCreate("startStopRaceActor", {UniqueKey("lc-ping-destroy")});
  const std::string id = KEEL_OK(h.Resolve());
  auto ping = std::async(std::launch::async, [&] { return h.Call<std::string>("ping"); });
  KEEL_OK(client().GetForId("startStopRaceActor", id).Call("destroy"));
  auto pong = ping.get();
  ASSERT_TRUE(pong.has_value()) << pong.error().ToString();
  EXPECT_EQ(*pong, "pong");
  EXPECT_TRUE(WaitNotFound("startStopRaceActor", id));
  KEEL_EXPECT_ERROR(client().GetForId("startStopRaceActor", id).Call("ping"), "actor", "not_found");
}

TEST_F(ActorLifecycleTest, FiveActorsDestroyedImmediately) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(KEEL_OK(client().GetOrCreate("startStopRaceActor", {UniqueKey("lc-five")}).Resolve()));
  }
  for (const auto& id : ids) KEEL_STATUS_OK(client().DestroyActor(id));
  for (const auto& id : ids) EXPECT_TRUE(WaitNotFound("startStopRaceActor", id)) << id;
}

TEST_F(ActorLifecycleTest, GetStateDuringOnWakeThenDestroy) {
  auto h = client().GetOrCreate("startStopRaceActor", {UniqueKey("lc-state-race")});
  const std::string id = KEEL_OK(h.Resolve());
  // Sent while the 100 ms onWake still runs: it waits for the start.
  auto state = std::async(std::launch::async, [&] { return h.Call("getState"); });
  SleepMs(20);
  auto destroyed = std::async(std::launch::async, [&] { return client().GetForId("startStopRaceActor", id).Call("destroy"); });
  auto s = state.get();
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  json j = AsJson(*s);
  EXPECT_EQ(j["initialized"], true) << j.dump();
  EXPECT_EQ(j["startCompleted"], true) << j.dump();
  auto d = destroyed.get();
  EXPECT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_TRUE(WaitNotFound("startStopRaceActor", id));
  EXPECT_EQ(NoteCount(id, "started"), 1) << "the stop waited for the start";
  EXPECT_EQ(NoteCount(id, "destroy"), 1);
}

TEST_F(ActorLifecycleTest, TenRapidCreateDestroyPairs) {
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    const std::string id = KEEL_OK(client().GetOrCreate("startStopRaceActor", {UniqueKey("lc-rapid")}).Resolve());
    KEEL_STATUS_OK(client().DestroyActor(id));
    ids.push_back(id);
  }
  for (const auto& id : ids) EXPECT_TRUE(WaitNotFound("startStopRaceActor", id)) << id;
}

TEST_F(ActorLifecycleTest, KeyReusableAfterDestroy) {
  const std::string key = UniqueKey("lc-reuse");
  const std::string id = KEEL_OK(client().GetOrCreate("startStopRaceActor", {key}).Resolve());
  KEEL_STATUS_OK(client().DestroyActor(id));
  ASSERT_TRUE(WaitNotFound("startStopRaceActor", id));
  auto again = client().GetOrCreate("startStopRaceActor", {key});
  EXPECT_EQ(KEEL_OK(again.Call<std::string>("ping")), "pong");
  EXPECT_NE(KEEL_OK(again.Resolve()), id);
}

TEST_F(ActorLifecycleTest, SelfInitiatedSleepFromRun) {
  auto h = client().GetOrCreate("runSelfInitiatedSleep", {UniqueKey("lc-run-sleep")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s));
  json s;
  ASSERT_TRUE(WaitFor(
      [&] {
        s = AsJson(KEEL_OK(h.Call("getState")));
        return s["wakeCount"].get<int64_t>() >= 2 && s["runCount"].get<int64_t>() >= 2;
      },
      10s))
      << s.dump();
  EXPECT_EQ(s["sleepCount"], 1);
  EXPECT_EQ(s["marker"], "slept");
}

TEST_F(ActorLifecycleTest, EarlyExitingRunDoesNotStopTheActor) {
  auto h = client().GetOrCreate("runWithEarlyExit", {UniqueKey("lc-early-exit")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return AsJson(KEEL_OK(h.Call("getState")))["runExited"] == true; }, 5s));
  EXPECT_EQ(NoteCount(id, "sleep"), 0) << "returning from run does not stop the actor";
  // Later it idles to sleep: onSleep exactly once, never destroyed.
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s));
  json s = AsJson(KEEL_OK(h.Call("getState")));
  EXPECT_GE(s["wakeCount"].get<int64_t>(), 2);
  EXPECT_EQ(NoteCount(id, "sleep"), 1);
  EXPECT_EQ(NoteCount(id, "destroy"), 0);
}

TEST_F(ActorLifecycleTest, RunCallingDestroy) {
  auto h = client().GetOrCreate("runSelfInitiatedDestroy", {UniqueKey("lc-run-destroy")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "destroy") >= 1; }, 10s));
  EXPECT_TRUE(WaitNotFound("runSelfInitiatedDestroy", id));
}

TEST_F(ActorLifecycleTest, DestroyAfterRunExitedRunsOnDestroyOnce) {
  auto h = client().GetOrCreate("runWithEarlyExit", {UniqueKey("lc-exit-destroy")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return AsJson(KEEL_OK(h.Call("getState")))["runExited"] == true; }, 5s));
  KEEL_OK(h.Call("destroy"));
  ASSERT_TRUE(WaitNotFound("runWithEarlyExit", id));
  EXPECT_EQ(NoteCount(id, "destroy"), 1);
}

TEST_F(ActorLifecycleTest, RunIgnoringAbortIsBoundedByGrace) {
  auto h = client().GetOrCreate("runIgnoresAbortStopTimeout", {UniqueKey("lc-ignore-abort")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitFor([&] { return AsJson(KEEL_OK(h.Call("getState")))["runStarted"] == true; }, 5s));
  const auto start = std::chrono::steady_clock::now();
  KEEL_STATUS_OK(client().DestroyActor(id));
  ASSERT_TRUE(WaitNotFound("runIgnoresAbortStopTimeout", id, 5s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 1500ms) << "destroy took "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
}

}  // namespace
}  // namespace keel::acceptance
