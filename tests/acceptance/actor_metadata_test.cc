// actors.md §8.19 actor-metadata: `metadataActor` reports c.name; tags/region are
// simulated in state (as in Rivet's fixture).
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

class ActorMetadataTest : public EncodingTest {};

TEST_P(ActorMetadataTest, NameIsTheRegistryKey) {
  auto h = client().GetOrCreate("metadataActor", {UniqueKey("meta-name")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("getActorName")), "metadataActor");
}

TEST_P(ActorMetadataTest, NameIsAvailableInOnWake) {
  auto h = client().GetOrCreate("metadataActor", {UniqueKey("meta-wake")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("getStoredActorName")), "metadataActor");
}

TEST_P(ActorMetadataTest, StoredTags) {
  auto h = client().GetOrCreate("metadataActor", {UniqueKey("meta-tags")});
  Value tags = Value::Object({{"env", "test"}, {"purpose", "acceptance"}});
  EXPECT_TRUE(KEEL_OK(h.Call<bool>("setupTestTags", tags)));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getStoredTag", "env"))), "test");
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getStoredTag", "purpose"))), "acceptance");
  EXPECT_TRUE(AsJson(KEEL_OK(h.Call("getStoredTag", "unknown"))).is_null());
}

TEST_P(ActorMetadataTest, MetadataObject) {
  auto h = client().GetOrCreate("metadataActor", {UniqueKey("meta-object")});
  KEEL_OK(h.Call("setupTestTags", Value::Object({{"env", "test"}})));
  KEEL_OK(h.Call("setupTestRegion", "us-west-1"));
  json m = AsJson(KEEL_OK(h.Call("getMetadata")));
  EXPECT_EQ(m["name"], "metadataActor");
  EXPECT_EQ(m["tags"], json({{"env", "test"}}));
  EXPECT_EQ(m["region"], "us-west-1");
}

TEST_P(ActorMetadataTest, RegionRoundTrips) {
  auto h = client().GetOrCreate("metadataActor", {UniqueKey("meta-region")});
  KEEL_OK(h.Call("setupTestRegion", "eu-central-1"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getMetadata")))["region"], "eu-central-1");
}

KEEL_ACCEPTANCE_ENCODINGS(ActorMetadata, ActorMetadataTest);

}  // namespace
}  // namespace keel::acceptance
