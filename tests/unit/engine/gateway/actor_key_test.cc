#include "engine/gateway/actor_key.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

struct KeyCase {
  ActorKey key;
  std::string serialized;
};

const std::vector<KeyCase>& KeyCases() {
  static const std::vector<KeyCase> cases = {
      {{}, "/"},
      {{"a"}, "a"},
      {{"a", "b", "c"}, "a/b/c"},
      {{""}, "\\0"},
      {{"", ""}, "\\0/\\0"},
      {{"a", ""}, "a/\\0"},
      {{"/"}, "\\/"},
      {{"a/b"}, "a\\/b"},
      {{"\\"}, "\\\\"},
      {{"\\0"}, "\\\\0"},
      {{"0"}, "0"},
      {{"a\\/b", "c"}, "a\\\\\\/b/c"},
      {{"tenant", "room 1", "\xE2\x82\xAC"}, "tenant/room 1/\xE2\x82\xAC"},
      {{"//"}, "\\/\\/"},
  };
  return cases;
}

TEST(ActorKey, SerializesPerSpec) {
  for (const KeyCase& c : KeyCases()) {
    EXPECT_EQ(SerializeActorKey(c.key), c.serialized);
  }
}

TEST(ActorKey, ParsesBackToTheSameKey) {
  for (const KeyCase& c : KeyCases()) {
    Result<ActorKey> r = ParseActorKey(c.serialized);
    ASSERT_TRUE(r.ok()) << c.serialized << ": " << r.error().ToString();
    EXPECT_EQ(*r, c.key) << c.serialized;
  }
}

TEST(ActorKey, DistinctKeysSerializeDistinctly) {
  std::vector<std::string> seen;
  for (const KeyCase& c : KeyCases()) seen.push_back(SerializeActorKey(c.key));
  for (size_t i = 0; i < seen.size(); ++i) {
    for (size_t j = i + 1; j < seen.size(); ++j) EXPECT_NE(seen[i], seen[j]);
  }
}

TEST(ActorKey, EmptyStringIsEmptyKeyError) {
  EXPECT_TRUE(ParseActorKey("").error().Is("actor", "empty_key"));
}

TEST(ActorKey, RejectsStringsTheSerializerNeverWrites) {
  for (std::string_view in :
       {"a\\", "\\x", "a\\0", "\\0a", "\\0\\\\", "a//b", "a/", "/a", "//", "\\0/", "a/\\"}) {
    Result<ActorKey> r = ParseActorKey(in);
    ASSERT_FALSE(r.ok()) << in;
    EXPECT_TRUE(r.error().Is("actor", "invalid_key")) << in;
  }
}

TEST(ActorKey, ValidateEnforcesEmptyAndLengthLimit) {
  EXPECT_TRUE(ValidateSerializedActorKey("/").ok());
  EXPECT_TRUE(ValidateSerializedActorKey(std::string(1024, 'k')).ok());
  EXPECT_TRUE(
      ValidateSerializedActorKey(std::string(1025, 'k')).error().Is("actor", "key_too_large"));
  EXPECT_TRUE(ValidateSerializedActorKey("").error().Is("actor", "empty_key"));
}

TEST(ActorKey, ValidateRefusesWhatTheParserRefuses) {
  for (const KeyCase& c : KeyCases()) {
    EXPECT_TRUE(ValidateSerializedActorKey(c.serialized).ok()) << c.serialized;
  }
  for (std::string_view in : {"bad\\", "\\x", "a\\0", "a//b", "a/", "/a", "\\0/"}) {
    Status s = ValidateSerializedActorKey(in);
    ASSERT_FALSE(s.ok()) << in;
    EXPECT_TRUE(s.error().Is("actor", "invalid_key")) << in;
  }
  // The length limit is checked first: an over-long string is not parsed.
  EXPECT_TRUE(ValidateSerializedActorKey(std::string(1024, 'k') + "\\")
                  .error()
                  .Is("actor", "key_too_large"));
}

TEST(GatewayKey, SplitsOnEveryComma) {
  EXPECT_EQ(ParseGatewayKey(""), ActorKey{});
  EXPECT_EQ(ParseGatewayKey("a"), ActorKey{"a"});
  EXPECT_EQ(ParseGatewayKey("tenant,room"), (ActorKey{"tenant", "room"}));
  EXPECT_EQ(ParseGatewayKey("a,,b"), (ActorKey{"a", "", "b"}));
  EXPECT_EQ(ParseGatewayKey(","), (ActorKey{"", ""}));
  EXPECT_EQ(ParseGatewayKey("a/b"), ActorKey{"a/b"});
}

TEST(GatewayKey, FormatsAndRefusesUnrepresentableKeys) {
  EXPECT_EQ(*FormatGatewayKey({}), "");
  EXPECT_EQ(*FormatGatewayKey({"tenant", "room"}), "tenant,room");
  EXPECT_EQ(*FormatGatewayKey({"a", ""}), "a,");
  EXPECT_TRUE(FormatGatewayKey({"a,b"}).error().Is("actor", "invalid_key"));
  EXPECT_TRUE(FormatGatewayKey({""}).error().Is("actor", "invalid_key"));
  for (const ActorKey& key : {ActorKey{}, ActorKey{"x"}, ActorKey{"a", "", "b"}}) {
    EXPECT_EQ(ParseGatewayKey(*FormatGatewayKey(key)), key);
  }
}

}  // namespace
}  // namespace keel::engine::gateway

namespace keel::engine::gateway {
namespace {

// Seeded, so failures reproduce; the alphabet is weighted toward the escaping characters.
std::string RandomString(std::mt19937& rng, size_t max_len) {
  static constexpr char kAlphabet[] = {'a', 'b', '0', '/', '\\', ',', ' ', '\xC3', '\xA9'};
  std::uniform_int_distribution<size_t> len(0, max_len);
  std::uniform_int_distribution<size_t> pick(0, sizeof(kAlphabet) - 1);
  std::string s;
  for (size_t n = len(rng); n > 0; --n) s += kAlphabet[pick(rng)];
  return s;
}

TEST(ActorKeyProperty, SerializeThenParseIsIdentity) {
  std::mt19937 rng(4860);
  std::uniform_int_distribution<size_t> parts(0, 4);
  for (int i = 0; i < 5000; ++i) {
    ActorKey key;
    for (size_t n = parts(rng); n > 0; --n) key.push_back(RandomString(rng, 5));
    Result<ActorKey> back = ParseActorKey(SerializeActorKey(key));
    ASSERT_TRUE(back.ok()) << SerializeActorKey(key);
    ASSERT_EQ(*back, key) << SerializeActorKey(key);
  }
}

TEST(ActorKeyProperty, AcceptedStringsAreCanonical) {
  std::mt19937 rng(4861);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = RandomString(rng, 8);
    Result<ActorKey> key = ParseActorKey(s);
    if (!key.ok()) continue;
    ++accepted;
    ASSERT_EQ(SerializeActorKey(*key), s);
  }
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace keel::engine::gateway
