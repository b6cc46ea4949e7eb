// actors.md §8.37 manager-driver: get/getOrCreate/create semantics, creation input,
// exact key matching (including '/' inside a component and the empty key).
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::AnyOf;

class ManagerDriverTest : public EncodingTest {};

// The default key is shared by the three encodings of this process: relative counts.
TEST_P(ManagerDriverTest, GetOrCreateDefaultKeyAndCompositeKey) {
  auto a = client().GetOrCreate("counter");
  const int64_t before = KEEL_OK(a.Call<int64_t>("getCount"));
  EXPECT_EQ(KEEL_OK(a.Call<int64_t>("increment", 5)), before + 5);
  EXPECT_EQ(KEEL_OK(client().GetOrCreate("counter").Call<int64_t>("getCount")), before + 5);
  auto b = client().GetOrCreate("counter", {UniqueKey("counter-b"), "testing"});
  EXPECT_EQ(KEEL_OK(b.Call<int64_t>("increment", 10)), 10);
  EXPECT_EQ(KEEL_OK(a.Call<int64_t>("getCount")), before + 5);
}

TEST_P(ManagerDriverTest, CreateOnExistingKeyIsDuplicate) {
  const std::string key = UniqueKey("dup");
  auto h = client().GetOrCreate("counter", {key});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 5)), 5);
  auto created = client().Create("counter", {key});
  ASSERT_FALSE(created.has_value());
  EXPECT_THAT(created.error().Id(), AnyOf("actor.duplicate_key", "actor.destroyed_during_creation"))
      << created.error().ToString();
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getCount")), 5);
}

TEST_P(ManagerDriverTest, GetMissingThenAfterCreate) {
  const std::string key = UniqueKey("get-later");
  KEEL_EXPECT_ERROR(client().Get("counter", {key}).Resolve(), "actor", "not_found");
  auto created = client().GetOrCreate("counter", {key});
  EXPECT_EQ(KEEL_OK(created.Call<int64_t>("increment", 3)), 3);
  EXPECT_EQ(KEEL_OK(client().Get("counter", {key}).Call<int64_t>("getCount")), 3);
}

// Rivet: params are accepted by an actor without createConnState.
TEST_P(ManagerDriverTest, ArbitraryParamsAccepted) {
  client::GetOrCreateOptions opts;
  opts.params = Value::Object({{"anything", "goes"}, {"n", 1}});
  auto h = client().GetOrCreate("counter", {UniqueKey("params")}, opts);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 1)), 1);
}

TEST_P(ManagerDriverTest, SameUniqueKeySharesState) {
  const std::string key = UniqueKey("shared");
  auto a = client().GetOrCreate("counter", {key});
  auto b = client().GetOrCreate("counter", {key});
  KEEL_OK(a.Call("increment", 4));
  EXPECT_EQ(KEEL_OK(b.Call<int64_t>("increment", 6)), 10);
}

// Rivet creates with no key; a unique key keeps the three encodings apart here.
TEST_P(ManagerDriverTest, CreateInputReachesCreateStateAndOnCreate) {
  client::CreateOptions opts;
  opts.input = Value::Object({{"name", "test-input"}, {"value", 123}});
  auto h = KEEL_OK(client().Create("inputActor", {UniqueKey("input")}, opts));
  json inputs = AsJson(KEEL_OK(h.Call("getInputs")));
  EXPECT_EQ(inputs["initialInput"], json({{"name", "test-input"}, {"value", 123}}));
  EXPECT_EQ(inputs["onCreateInput"], inputs["initialInput"]);
}

TEST_P(ManagerDriverTest, CreateWithoutInput) {
  auto h = KEEL_OK(client().Create("inputActor", {UniqueKey("no-input")}));
  json inputs = AsJson(KEEL_OK(h.Call("getInputs")));
  EXPECT_TRUE(inputs["initialInput"].is_null()) << inputs;
  EXPECT_TRUE(inputs["onCreateInput"].is_null()) << inputs;
}

TEST_P(ManagerDriverTest, GetOrCreateWithInputOnlyOnCreation) {
  const std::string key = UniqueKey("goc-input");
  client::GetOrCreateOptions opts;
  opts.input = Value::Object({{"name", "first"}});
  auto first = client().GetOrCreate("inputActor", {key}, opts);
  json a = AsJson(KEEL_OK(first.Call("getInputs")));
  EXPECT_EQ(a["initialInput"], json({{"name", "first"}}));
  EXPECT_EQ(a["onCreateInput"], json({{"name", "first"}}));
  auto again = client().GetOrCreate("inputActor", {key});
  EXPECT_EQ(AsJson(KEEL_OK(again.Call("getInputs"))), a);
}

TEST_P(ManagerDriverTest, SlashInKeyComponentIsPreserved) {
  const client::ActorKey key{"tenant/with/slash-" + UniqueKey("t"), "room"};
  auto h = client().GetOrCreate("counter", key);
  EXPECT_EQ(KEEL_OK(h.Call<std::vector<std::string>>("getKey")), key);
}

// Beyond upstream (§4.1): components the gateway's comma-separated query form cannot carry
// (a comma, an empty component) and the serialisation escapes ('\\', '/') still address
// exactly one actor each, and c.key() reports them verbatim.
TEST_P(ManagerDriverTest, KeyComponentsNeedingEscapes) {
  const std::string u = UniqueKey("esc");
  const std::vector<client::ActorKey> keys = {
      {u, "with,comma"}, {u, ""}, {u, "back\\slash"}, {u, "\\0"}, {u, "ünïcødé ✓"}, {u}};
  std::vector<std::string> ids;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto h = client().GetOrCreate("counter", keys[i]);
    EXPECT_EQ(KEEL_OK(h.Call<std::vector<std::string>>("getKey")), keys[i]) << i;
    EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", static_cast<int64_t>(i + 1))), static_cast<int64_t>(i + 1)) << i;
    ids.push_back(KEEL_OK(h.Resolve()));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    for (size_t j = i + 1; j < ids.size(); ++j) EXPECT_NE(ids[i], ids[j]) << i << " vs " << j;
  }
  // A Get handle finds each one again.
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(KEEL_OK(client().Get("counter", keys[i]).Call<int64_t>("getCount")), static_cast<int64_t>(i + 1)) << i;
  }
}

TEST_P(ManagerDriverTest, KeyMatchingIsExact) {
  const std::string a = UniqueKey("exact");
  auto abc = client().GetOrCreate("counter", {a, "b", "c"});
  auto ab = client().GetOrCreate("counter", {a, "b"});
  auto just_a = client().GetOrCreate("counter", {a});
  KEEL_OK(abc.Call("increment", 1));
  KEEL_OK(ab.Call("increment", 2));
  KEEL_OK(just_a.Call("increment", 3));
  EXPECT_EQ(KEEL_OK(abc.Call<int64_t>("getCount")), 1);
  EXPECT_EQ(KEEL_OK(ab.Call<int64_t>("getCount")), 2);
  EXPECT_EQ(KEEL_OK(just_a.Call<int64_t>("getCount")), 3);
  const std::string id_abc = KEEL_OK(abc.Resolve());
  EXPECT_NE(id_abc, KEEL_OK(ab.Resolve()));
  EXPECT_NE(id_abc, KEEL_OK(just_a.Resolve()));
}

// The C++ client has no string-key overload; {"x"} is the one-component key, and the
// REST lookup of the same key finds the same actor.
TEST_P(ManagerDriverTest, StringKeyEqualsOneComponentKey) {
  const std::string x = UniqueKey("x");
  auto h = client().GetOrCreate("counter", {x});
  KEEL_OK(h.Call("increment", 7));
  auto listed = KEEL_OK(client().ListActors("counter", client::ActorKey{x}));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].actor_id, KEEL_OK(h.Resolve()));
  EXPECT_EQ(KEEL_OK(client().Get("counter", {x}).Call<int64_t>("getCount")), 7);
}

TEST_P(ManagerDriverTest, NoKeyIsEmptyKeyAndDistinctFromKeyed) {
  auto none = client().GetOrCreate("counter");
  auto empty = client().GetOrCreate("counter", client::ActorKey{});
  EXPECT_EQ(KEEL_OK(none.Resolve()), KEEL_OK(empty.Resolve()));
  EXPECT_EQ(KEEL_OK(none.Call<std::vector<std::string>>("getKey")), std::vector<std::string>{});
  auto keyed = client().GetOrCreate("counter", {UniqueKey("keyed")});
  EXPECT_NE(KEEL_OK(keyed.Resolve()), KEEL_OK(none.Resolve()));
  EXPECT_EQ(KEEL_OK(keyed.Call<int64_t>("getCount")), 0);
}

TEST_P(ManagerDriverTest, KeyedInstancesAreSeparateAndDefaultPersists) {
  auto def = client().GetOrCreate("counter");
  const int64_t before = KEEL_OK(def.Call<int64_t>("getCount"));
  KEEL_OK(def.Call("increment", 1));
  std::vector<client::ActorHandle> keyed;
  for (int i = 0; i < 3; ++i) {
    keyed.push_back(client().GetOrCreate("counter", {UniqueKey("multi")}));
    KEEL_OK(keyed.back().Call("increment", (i + 1) * 10));
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(KEEL_OK(keyed[i].Call<int64_t>("getCount")), (i + 1) * 10);
  EXPECT_EQ(KEEL_OK(client().GetOrCreate("counter").Call<int64_t>("getCount")), before + 1);
}

KEEL_ACCEPTANCE_ENCODINGS(ManagerDriver, ManagerDriverTest);

}  // namespace
}  // namespace keel::acceptance
