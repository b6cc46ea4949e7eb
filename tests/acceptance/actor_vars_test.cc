// actors.md §8.30 actor-vars: static vars (C++: the vars struct's member defaults),
// nested vars are per actor, createVars results.
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::MatchesRegex;

class ActorVarsTest : public EncodingTest {};

TEST_P(ActorVarsTest, StaticVarsAsDeclared) {
  auto h = client().GetOrCreate("staticVarActor", {UniqueKey("vars-static")});
  json v = AsJson(KEEL_OK(h.Call("getVars")));
  EXPECT_EQ(v, json({{"counter", 42}, {"name", "test-actor"}}));
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("getName")), "test-actor");
}

TEST_P(ActorVarsTest, NestedVarsArePerActor) {
  auto a = client().GetOrCreate("nestedVarActor", {UniqueKey("vars-nested-a")});
  auto b = client().GetOrCreate("nestedVarActor", {UniqueKey("vars-nested-b")});
  json modified = AsJson(KEEL_OK(a.Call("modifyNested")));
  EXPECT_EQ(modified["nested"]["value"], "modified");
  EXPECT_EQ(modified["nested"]["array"], json({1, 2, 3, 4}));
  EXPECT_EQ(modified["nested"]["obj"]["key"], "new-value");
  json other = AsJson(KEEL_OK(b.Call("getVars")));
  EXPECT_EQ(other["nested"]["value"], "original");
  EXPECT_EQ(other["nested"]["array"], json({1, 2, 3}));
  EXPECT_EQ(other["nested"]["obj"]["key"], "value");
}

TEST_P(ActorVarsTest, CreateVarsShape) {
  auto h = client().GetOrCreate("dynamicVarActor", {UniqueKey("vars-dynamic")});
  json v = AsJson(KEEL_OK(h.Call("getVars")));
  EXPECT_TRUE(v["random"].is_number()) << v;
  ASSERT_TRUE(v["computed"].is_string()) << v;
  EXPECT_THAT(v["computed"].get<std::string>(), MatchesRegex("Actor-[0-9]+"));
}

TEST_P(ActorVarsTest, DifferentActorsGetDifferentCreateVars) {
  auto a = client().GetOrCreate("uniqueVarActor", {UniqueKey("vars-unique-a")});
  auto b = client().GetOrCreate("uniqueVarActor", {UniqueKey("vars-unique-b")});
  json va = AsJson(KEEL_OK(a.Call("getVars")));
  json vb = AsJson(KEEL_OK(b.Call("getVars")));
  ASSERT_TRUE(va["id"].is_number()) << va;
  EXPECT_NE(va["id"], vb["id"]);
}

// Adapted: Rivet's createVars(c, driverCtx) gets a driver context; the C++ createVars gets
// only the context, which must already carry the actor's identity.
TEST_P(ActorVarsTest, CreateVarsSeesTheActorContext) {
  auto h = client().GetOrCreate("driverCtxActor", {UniqueKey("vars-driver")});
  json v = AsJson(KEEL_OK(h.Call("getVars")));
  EXPECT_EQ(v["hasDriverCtx"], true) << v;
}

KEEL_ACCEPTANCE_ENCODINGS(ActorVars, ActorVarsTest);

}  // namespace
}  // namespace keel::acceptance
