// ParsePreloadPlan (engine/core/preload.h): the "preload" member of an actor name's
// metadata becomes a plan; anything malformed means no plan (the actor then reads its KV
// itself), never an exception.
#include "engine/core/preload.h"

#include <gtest/gtest.h>

#include <string>

namespace keel::engine {
namespace {

TEST(ParsePreloadPlan, ReadsKeysAndPrefixesInOrder) {
  auto plan = ParsePreloadPlan(
      R"({"icon":"x","preload":{"keys":[[1],[6,255]],)"
      R"("prefixes":[{"prefix":[2],"maxBytes":65536,"partial":false},)"
      R"({"prefix":[5,1,2],"maxBytes":10,"partial":true},{"prefix":[7],"maxBytes":0}]}})");
  ASSERT_TRUE(plan.has_value());
  ASSERT_EQ(plan->keys.size(), 2u);
  EXPECT_EQ(plan->keys[0], (Bytes{1}));
  EXPECT_EQ(plan->keys[1], (Bytes{6, 255}));
  ASSERT_EQ(plan->prefixes.size(), 3u);
  EXPECT_EQ(plan->prefixes[0].prefix, (Bytes{2}));
  EXPECT_EQ(plan->prefixes[0].max_bytes, 65536u);
  EXPECT_FALSE(plan->prefixes[0].partial);
  EXPECT_EQ(plan->prefixes[1].prefix, (Bytes{5, 1, 2}));
  EXPECT_TRUE(plan->prefixes[1].partial);
  EXPECT_FALSE(plan->prefixes[2].partial) << "partial defaults to false";
}

TEST(ParsePreloadPlan, NoPlanWithoutAPreloadMember) {
  EXPECT_FALSE(ParsePreloadPlan("{}").has_value());
  EXPECT_FALSE(ParsePreloadPlan(R"({"preload":{}})").has_value()) << "an empty plan is none";
  EXPECT_FALSE(ParsePreloadPlan("").has_value());
  EXPECT_FALSE(ParsePreloadPlan("not json").has_value());
  EXPECT_FALSE(ParsePreloadPlan("[1,2]").has_value());
}

TEST(ParsePreloadPlan, MalformedPlansAreRejectedWhole) {
  for (const std::string bad : {
           R"({"preload":[]})",
           R"({"preload":{"keys":[[256]]}})",
           R"({"preload":{"keys":[[-1]]}})",
           R"({"preload":{"keys":[[]]}})",
           R"({"preload":{"keys":["AQ=="]}})",
           R"({"preload":{"keys":[[1.5]]}})",
           R"({"preload":{"keys":{"a":[1]}}})",
           R"({"preload":{"prefixes":[{"prefix":[2]}]}})",
           R"({"preload":{"prefixes":[{"prefix":[2],"maxBytes":-5}]}})",
           R"({"preload":{"prefixes":[{"prefix":[2],"maxBytes":5,"partial":"yes"}]}})",
           R"({"preload":{"prefixes":[{"maxBytes":5}]}})",
           R"({"preload":{"prefixes":[[2]]}})",
       }) {
    EXPECT_FALSE(ParsePreloadPlan(bad).has_value()) << bad;
  }
}

TEST(ParsePreloadPlan, PlansOverTheListLimitsAreRejected) {
  std::string keys;
  for (size_t i = 0; i <= kMaxPreloadKeys; ++i) keys += (i ? ",[" : "[") + std::to_string(i % 256) + "]";
  EXPECT_FALSE(ParsePreloadPlan(R"({"preload":{"keys":[)" + keys + "]}}").has_value());
  std::string prefixes;
  for (size_t i = 0; i <= kMaxPreloadPrefixes; ++i) {
    prefixes += std::string(i ? "," : "") + R"({"prefix":[1],"maxBytes":1})";
  }
  EXPECT_FALSE(ParsePreloadPlan(R"({"preload":{"prefixes":[)" + prefixes + "]}}").has_value());
}

}  // namespace
}  // namespace keel::engine
