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

// Beyond upstream (§4.8): every kind of application value survives the round trip in each
// encoding — bytes ($Uint8Array in JSON), integers past 2^53 ($BigInt), negative and float
// numbers, unicode text, null, and a two-element array whose first element starts with '$'
// (escaped with one more '$' in JSON and unescaped on the way back).
TEST_P(ActorStatelessTest, EchoRoundTripsEveryValueKind) {
  auto h = client().GetOrCreate("statelessActor", {UniqueKey("stateless-kinds")});
  const std::vector<std::pair<std::string, Value>> cases = {
      {"bytes", Value(Bytes{0, 1, 2, 250, 255})},
      {"big", Value(int64_t{1} << 60)},
      {"negative", Value(int64_t{-42})},
      {"float", Value(3.25)},
      {"unicode", Value("ünïcødé ✓")},
      {"null", Value(nullptr)},
      {"bool", Value(true)},
      {"dollar", Value::ArrayOf({"$BigInt", "not really"})},
      {"nested", Value::Object({{"list", Value::ArrayOf({1, "two", Value(Bytes{3})})}, {"empty", Value::Object({})}})},
  };
  for (const auto& [name, v] : cases) {
    auto out = h.Call("echo", v);
    ASSERT_TRUE(out.has_value()) << name << ": " << out.error().ToString();
    EXPECT_EQ(*out, v) << name << ": got " << ToJson(*out) << ", sent " << ToJson(v);
  }
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

TEST_P(ActorStatelessTest, AccessingDbThrows) {
  auto h = client().GetOrCreate("statelessActor", {UniqueKey("stateless-db")});
  json r = AsJson(KEEL_OK(h.Call("tryGetDb")));
  EXPECT_EQ(r["success"], false) << r;
  ASSERT_TRUE(r["error"].is_string()) << r;
  EXPECT_THAT(r["error"].get<std::string>(), HasSubstr("database"));
}

TEST_P(ActorStatelessTest, DifferentKeysAreDifferentActors) {
  auto a = client().GetOrCreate("statelessActor", {UniqueKey("stateless-a")});
  auto b = client().GetOrCreate("statelessActor", {UniqueKey("stateless-b")});
  EXPECT_NE(KEEL_OK(a.Call<std::string>("getActorId")), KEEL_OK(b.Call<std::string>("getActorId")));
}

KEEL_ACCEPTANCE_ENCODINGS(ActorStateless, ActorStatelessTest);

}  // namespace
}  // namespace keel::acceptance
