// actors.md §8.20 actor-onstatechange: `onStateChangeActor` counts onStateChange calls in
// vars. C++ detects changes by comparing the serialised state when the actor produces
// output (docs/runtime.md), so the hook runs once per changed action, not per property
// write: IncrementMultipleFiresOnce documents that difference.
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

class ActorOnStateChangeTest : public EncodingTest {};

TEST_P(ActorOnStateChangeTest, OneSetFiresOnce) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-one")});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("setValue", 10)), 10);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 1);
}

TEST_P(ActorOnStateChangeTest, ThreeSetsFireThreeTimes) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-three")});
  KEEL_OK(h.Call("setValue", 1));
  KEEL_OK(h.Call("setValue", 2));
  KEEL_OK(h.Call("setValue", 3));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 3);
}

TEST_P(ActorOnStateChangeTest, ReadsDoNotFire) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-read")});
  KEEL_OK(h.Call("setValue", 5));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 1);
}

TEST_P(ActorOnStateChangeTest, ComputedReadDoesNotFire) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-doubled")});
  KEEL_OK(h.Call("setValue", 3));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getDoubled")), 6);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 1);
}

TEST_P(ActorOnStateChangeTest, ConnectionLifecycleDoesNotFire) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-conn")});
  auto conn = h.Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("getValue")), 0);
  conn->Dispose();
  // Read the count only once the actor has handled the disconnect (its onDisconnect ran),
  // so a hook fired by the disconnect would be seen.
  ASSERT_TRUE(WaitFor([&] {
    auto n = h.Call<int64_t>("getDisconnectCount");
    return n.has_value() && *n == 1;
  }));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 0);
}

// C++ difference (see the file comment): three writes in one action are one change.
TEST_P(ActorOnStateChangeTest, IncrementMultipleFiresOnce) {
  auto h = client().GetOrCreate("onStateChangeActor", {UniqueKey("osc-multi")});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("incrementMultiple")), 3);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getChangeCount")), 1);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorOnStateChange, ActorOnStateChangeTest);

}  // namespace
}  // namespace keel::acceptance
