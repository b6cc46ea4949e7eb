// actors.md §8.28 actor-state: the `counter` fixture's state persists per (name, key).
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

class ActorStateTest : public EncodingTest {};

// The default key ([]) is shared by every encoding of this process, so the check is
// relative to the count the actor had before.
TEST_P(ActorStateTest, DefaultKeyGetOrCreateTwiceReachesOneActor) {
  auto first = client().GetOrCreate("counter");
  const int64_t before = KEEL_OK(first.Call<int64_t>("getCount"));
  EXPECT_EQ(KEEL_OK(first.Call<int64_t>("increment", 5)), before + 5);
  auto second = client().GetOrCreate("counter");
  EXPECT_EQ(KEEL_OK(second.Call<int64_t>("increment", 3)), before + 8);
}

TEST_P(ActorStateTest, NewHandleSeesPersistedCount) {
  const std::string key = UniqueKey("state-persist");
  auto h = client().GetOrCreate("counter", {key});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 5)), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 3)), 8);
  auto fresh = client().GetOrCreate("counter", {key});
  EXPECT_EQ(KEEL_OK(fresh.Call<int64_t>("getCount")), 8);
}

TEST_P(ActorStateTest, DifferentKeysHaveIndependentState) {
  auto a = client().GetOrCreate("counter", {UniqueKey("state-a")});
  auto b = client().GetOrCreate("counter", {UniqueKey("state-b")});
  EXPECT_EQ(KEEL_OK(a.Call<int64_t>("increment", 5)), 5);
  EXPECT_EQ(KEEL_OK(b.Call<int64_t>("increment", 10)), 10);
  EXPECT_EQ(KEEL_OK(a.Call<int64_t>("getCount")), 5);
  EXPECT_EQ(KEEL_OK(b.Call<int64_t>("getCount")), 10);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorState, ActorStateTest);

}  // namespace
}  // namespace keel::acceptance
