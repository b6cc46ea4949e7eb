// actors.md §8.15 actor-handle: create/get/getOrCreate/getForId handles, resolve, and the
// connection hooks that every stateless call runs (counterWithLifecycle).
#include <gmock/gmock.h>

#include <algorithm>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::AnyOf;

class ActorHandleTest : public EncodingTest {};

int64_t CountOf(const std::vector<std::string>& events, const std::string& e) {
  return std::count(events.begin(), events.end(), e);
}

TEST_P(ActorHandleTest, CreateThenGet) {
  const std::string key = UniqueKey("handle-create");
  KEEL_OK(client().Create("counter", {key}));
  auto h = client().Get("counter", {key});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 5)), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getCount")), 5);
}

TEST_P(ActorHandleTest, GetForIdAfterResolve) {
  const std::string key = UniqueKey("handle-id");
  auto h = client().GetOrCreate("counter", {key});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 3)), 3);
  const std::string id = KEEL_OK(h.Resolve());
  auto by_id = client().GetForId("counter", id);
  EXPECT_EQ(KEEL_OK(by_id.Call<int64_t>("getCount")), 3);
  EXPECT_EQ(KEEL_OK(by_id.Call<int64_t>("increment", 4)), 7);
  // getOrCreate with the same key reaches the same actor.
  EXPECT_EQ(KEEL_OK(client().GetOrCreate("counter", {key}).Call<int64_t>("getCount")), 7);
}

TEST_P(ActorHandleTest, CreateReturnsUsableHandle) {
  auto h = KEEL_OK(client().Create("counter", {UniqueKey("handle-created")}));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 9)), 9);
}

TEST_P(ActorHandleTest, CreateTwiceIsDuplicate) {
  const std::string key = UniqueKey("handle-dup");
  KEEL_OK(client().Create("counter", {key}));
  auto again = client().Create("counter", {key});
  ASSERT_FALSE(again.has_value());
  EXPECT_THAT(again.error().Id(), AnyOf("actor.duplicate_key", "actor.destroyed_during_creation"));
}

TEST_P(ActorHandleTest, GetMissingResolveIsNotFound) {
  KEEL_EXPECT_ERROR(client().Get("counter", {UniqueKey("handle-missing")}).Resolve(), "actor", "not_found");
}

TEST_P(ActorHandleTest, SequentialActions) {
  auto h = client().GetOrCreate("counter", {UniqueKey("handle-seq")});
  KEEL_OK(h.Call("increment", 3));
  KEEL_OK(h.Call("increment", 5));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getCount")), 8);
}

TEST_P(ActorHandleTest, GetOrCreateAndGetShareState) {
  const std::string key = UniqueKey("handle-share");
  auto goc = client().GetOrCreate("counter", {key});
  KEEL_OK(goc.Call("increment", 5));
  auto get = client().Get("counter", {key});
  EXPECT_EQ(KEEL_OK(get.Call<int64_t>("increment", 5)), 10);
  EXPECT_EQ(KEEL_OK(goc.Call<int64_t>("getCount")), 10);
}

TEST_P(ActorHandleTest, ResolveIdWorksWithGetForId) {
  auto h = client().GetOrCreate("counter", {UniqueKey("handle-resolve")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(KEEL_OK(client().GetForId("counter", id).Call<int64_t>("increment", 1)), 1);
}

TEST_P(ActorHandleTest, OnWakeRecordedOnce) {
  const std::string key = UniqueKey("handle-wake");
  for (int i = 0; i < 3; ++i) KEEL_OK(client().GetOrCreate("counterWithLifecycle", {key}).Call("increment", 1));
  auto events = KEEL_OK(client().Get("counterWithLifecycle", {key}).Call<std::vector<std::string>>("getEvents"));
  EXPECT_EQ(CountOf(events, "onWake"), 1) << ::testing::PrintToString(events);
}

std::vector<std::string> EventsOf(client::Client& c, const std::string& key, int64_t want_disconnects) {
  std::vector<std::string> events;
  auto h = c.Get("counterWithLifecycle", {key});
  // onDisconnect of the last call may run just after its response: wait for it.
  WaitFor([&] {
    auto r = h.Call<std::vector<std::string>>("getEvents");
    if (r.has_value()) events = *r;
    return CountOf(events, "onDisconnect") >= want_disconnects;
  });
  return events;
}

TEST_P(ActorHandleTest, StatelessCallsRunConnectionHooks) {
  const std::string key = UniqueKey("handle-hooks");
  client::GetOrCreateOptions tracking;
  tracking.params = Value::Object({{"trackLifecycle", true}});
  auto h = client().GetOrCreate("counterWithLifecycle", {key}, tracking);
  KEEL_OK(h.Call("increment", 1));
  auto events = EventsOf(client(), key, 1);
  EXPECT_EQ(CountOf(events, "onBeforeConnect"), 1) << ::testing::PrintToString(events);
  EXPECT_EQ(CountOf(events, "onConnect"), 1);
  EXPECT_EQ(CountOf(events, "onDisconnect"), 1);
  KEEL_OK(h.Call("increment", 1));
  events = EventsOf(client(), key, 2);
  EXPECT_EQ(CountOf(events, "onBeforeConnect"), 2) << ::testing::PrintToString(events);
  EXPECT_EQ(CountOf(events, "onConnect"), 2);
  EXPECT_EQ(CountOf(events, "onDisconnect"), 2);
  // Calls without trackLifecycle record nothing.
  KEEL_OK(client().Get("counterWithLifecycle", {key}).Call("increment", 1));
  events = EventsOf(client(), key, 2);
  EXPECT_EQ(CountOf(events, "onBeforeConnect"), 2) << ::testing::PrintToString(events);
  EXPECT_EQ(CountOf(events, "onConnect"), 2);
  EXPECT_EQ(CountOf(events, "onDisconnect"), 2);
}

TEST_P(ActorHandleTest, TwoTrackingHandles) {
  const std::string key = UniqueKey("handle-two");
  client::GetOrCreateOptions tracking;
  tracking.params = Value::Object({{"trackLifecycle", true}});
  auto a = client().GetOrCreate("counterWithLifecycle", {key}, tracking);
  auto b = client().GetOrCreate("counterWithLifecycle", {key}, tracking);
  KEEL_OK(a.Call("increment", 1));
  KEEL_OK(b.Call("increment", 1));
  auto events = EventsOf(client(), key, 2);
  EXPECT_EQ(CountOf(events, "onWake"), 1) << ::testing::PrintToString(events);
  EXPECT_EQ(CountOf(events, "onBeforeConnect"), 2);
  EXPECT_EQ(CountOf(events, "onConnect"), 2);
  EXPECT_EQ(CountOf(events, "onDisconnect"), 2);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorHandle, ActorHandleTest);

}  // namespace
}  // namespace keel::acceptance
