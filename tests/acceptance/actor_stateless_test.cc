// actors.md §8.29 actor-stateless: `statelessActor` has no state (and no database).
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class ActorStatelessTest : public EncodingTest {};

TEST_P(ActorStatelessTest, PingAndEcho) {
  auto h = client().GetOrCreate("statelessActor", {UniqueKey("stateless")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("ping")), "pong");
  Value payload = Value::Object({{"hello", "world"}, {"n", 42}, {"list", Value::ArrayOf({1, 2, 3})}});
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("echo", payload))), AsJson(payload));
}

TEST_P(ActorStatelessTest, ActorIdIsAString) {
  auto h = client().GetOrCreate("statelessActor", {UniqueKey("stateless-id")});
  const std::string id = KEEL_OK(h.Call<std::string>("getActorId"));
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(id, KEEL_OK(h.Resolve()));
}

TEST_P(ActorStatelessTest, AccessingStateThrows) {
  auto h = client().GetOrCreate("statelessActor", {UniqueKey("stateless-state")});
  json r = AsJson(KEEL_OK(h.Call("tryGetState")));
  EXPECT_EQ(r["success"], false) << r;
  ASSERT_TRUE(r["error"].is_string()) << r;
  EXPECT_THAT(r["error"].get<std::string>(), HasSubstr("state"));
}

// tryGetDb: the C++ runtime has no database API yet (issue 7), so there is nothing to
// access; see README "not covered".

TEST_P(ActorStatelessTest, DifferentKeysAreDifferentActors) {
  auto a = client().GetOrCreate("statelessActor", {UniqueKey("stateless-a")});
  auto b = client().GetOrCreate("statelessActor", {UniqueKey("stateless-b")});
  EXPECT_NE(KEEL_OK(a.Call<std::string>("getActorId")), KEEL_OK(b.Call<std::string>("getActorId")));
}

KEEL_ACCEPTANCE_ENCODINGS(ActorStateless, ActorStatelessTest);

}  // namespace
}  // namespace keel::acceptance
