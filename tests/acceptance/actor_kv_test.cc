// actors.md §8.17 actor-kv: `kvActor` wraps the actor KV (text keys, ranges, bytes).
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

class ActorKvTest : public EncodingTest {};

json Entry(const std::string& k, const std::string& v) { return json{{"key", k}, {"value", v}}; }

TEST_P(ActorKvTest, PutGetAndPrefixList) {
  auto h = client().GetOrCreate("kvActor", {UniqueKey("kv-text")});
  EXPECT_EQ(KEEL_OK(h.Call<bool>("putText", "greeting", "hello")), true);
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getText", "greeting"))), "hello");
  EXPECT_TRUE(AsJson(KEEL_OK(h.Call("getText", "missing"))).is_null());
  KEEL_OK(h.Call("putText", "prefix-a", "alpha"));
  KEEL_OK(h.Call("putText", "prefix-b", "beta"));
  KEEL_OK(h.Call("putText", "other", "gamma"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("listText", "prefix-"))),
            json::array({Entry("prefix-a", "alpha"), Entry("prefix-b", "beta")}));
}

TEST_P(ActorKvTest, RangesAndDeleteRange) {
  auto h = client().GetOrCreate("kvActor", {UniqueKey("kv-range")});
  for (const char* k : {"a", "b", "c", "d"}) KEEL_OK(h.Call("putText", k, std::string("v") + k));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("listRangeText", "b", "d"))),
            json::array({Entry("b", "vb"), Entry("c", "vc")}))
      << "end is exclusive";
  Value opts = Value::Object({{"reverse", true}, {"limit", 2}});
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("listRangeText", "a", "d", opts))),
            json::array({Entry("c", "vc"), Entry("b", "vb")}));
  KEEL_OK(h.Call("deleteRange", "b", "d"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("listText", ""))), json::array({Entry("a", "va"), Entry("d", "vd")}))
      << "list(\"\") lists every user key ascending";
}

TEST_P(ActorKvTest, BinaryValueRoundTrips) {
  auto h = client().GetOrCreate("kvActor", {UniqueKey("kv-bytes")});
  const std::vector<int64_t> values{4, 8, 15, 16, 23, 42};
  EXPECT_EQ(KEEL_OK(h.Call<std::vector<int64_t>>("roundtripArrayBuffer", "bytes", values)), values);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorKv, ActorKvTest);

}  // namespace
}  // namespace keel::acceptance
