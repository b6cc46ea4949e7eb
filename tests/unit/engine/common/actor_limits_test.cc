#include "engine/common/actor_limits.h"

#include <gtest/gtest.h>

namespace keel::engine {
namespace {

TEST(ActorLimits, InputUpToTheLimitIsAccepted) {
  EXPECT_TRUE(ValidateActorInput(0).ok());
  EXPECT_TRUE(ValidateActorInput(kMaxActorInputBytes).ok());
  Status over = ValidateActorInput(kMaxActorInputBytes + 1);
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(over.error().Is("actor", "input_too_large")) << over.error().ToString();
}

// The input shares the actor record (one KV value) with state and schedule: the limit
// leaves at least half of the value for them.
TEST(ActorLimits, InputLeavesHalfTheActorRecordForStateAndSchedule) {
  static_assert(kMaxActorKvValueBytes == 131072);
  static_assert(kMaxActorInputBytes * 2 <= kMaxActorKvValueBytes);
  EXPECT_EQ(kMaxActorInputBytes, 65536u);
}

}  // namespace
}  // namespace keel::engine
