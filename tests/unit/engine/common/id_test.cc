#include "engine/common/id.h"

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine {
namespace {

std::array<uint8_t, 16> ZeroUuid() { return {}; }

std::string Zeros(size_t n) { return std::string(n, '0'); }

TEST(EngineId, NilIdIsVersionOneThenZeros) {
  // Bytes [01, 0 x 18] are the integer 1: digit '1' then 29 zero digits.
  EXPECT_EQ(EngineId().ToString(), "1" + Zeros(29));
  EXPECT_EQ(EngineId::FromUuid(ZeroUuid(), 0), EngineId());
}

TEST(EngineId, FirstUuidByteIsTheSecondLeastSignificantByte) {
  // uuid[0] = 0x01 → bytes [01, 01, 0...] = 1 + 256 = 257 = 7*36 + 5 → "57" then zeros.
  auto uuid = ZeroUuid();
  uuid[0] = 0x01;
  EXPECT_EQ(EngineId::FromUuid(uuid, 0).ToString(), "57" + Zeros(28));
  // uuid[0] = 0xff → 1 + 255*256 = 65281 = 1*36^3 + 14*36^2 + 13*36 + 13 → "dde1".
  uuid[0] = 0xff;
  EXPECT_EQ(EngineId::FromUuid(uuid, 0).ToString(), "dde1" + Zeros(26));
}

TEST(EngineId, DatacenterLabelIsTheBigEndianTopBytes) {
  // Label 1 → byte 18 = 0x01 → value 1 + 2^144. 2^144 ≡ 0 (mod 4) and ≡ 1 (mod 9)
  // (2^6 ≡ 1 mod 9), so 2^144 ≡ 28 (mod 36) and the first digit is 29 = 't'. The full
  // expected text was computed with Python's arbitrary-precision ints from the same rule.
  EngineId uut = EngineId::FromUuid(ZeroUuid(), 1);
  EXPECT_EQ(uut.datacenter_label(), 1);
  EXPECT_EQ(uut.bytes()[17], 0x00);
  EXPECT_EQ(uut.bytes()[18], 0x01);
  EXPECT_EQ(uut.ToString(), "tlf0xcg1buacno4zofgpr7isbeal00");
}

TEST(EngineId, MixedVectorMatchesReference) {
  // bytes = [01, 10 11 ... 1f, ab cd]; expected computed with Python from the rule.
  std::array<uint8_t, 16> uuid;
  for (size_t i = 0; i < uuid.size(); ++i) uuid[i] = static_cast<uint8_t>(0x10 + i);
  EngineId uut = EngineId::FromUuid(uuid, 0xabcd);
  EXPECT_EQ(uut.ToString(), "l3wy1yto6tovoz4x0h2waih3qvfmd3");
  EXPECT_EQ(uut.datacenter_label(), 0xabcd);
  EXPECT_EQ(uut.uuid(), uuid);
  auto parsed = EngineId::Parse("l3wy1yto6tovoz4x0h2waih3qvfmd3");
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(*parsed, uut);
}

TEST(EngineId, GeneratedIdsRoundTripThroughTextAndBytes) {
  Random random(42);
  for (int i = 0; i < 1000; ++i) {
    auto label = static_cast<uint16_t>(random.Uniform<uint32_t>(0, 0xffff));
    EngineId uut = EngineId::Generate(random, label);
    EXPECT_EQ(uut.datacenter_label(), label);
    std::string text = uut.ToString();
    ASSERT_EQ(text.size(), EngineId::kTextSize);
    auto parsed = EngineId::Parse(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.error().ToString();
    EXPECT_EQ(*parsed, uut);
    auto from_bytes = EngineId::FromBytes(uut.bytes());
    ASSERT_TRUE(from_bytes.ok());
    EXPECT_EQ(*from_bytes, uut);
  }
}

// The text form computed the slow, obvious way: repeated division of the little-endian
// byte string by 36, one byte at a time.
std::string ReferenceText(ByteView bytes) {
  std::vector<uint8_t> value(bytes.begin(), bytes.end());
  std::string out;
  for (size_t d = 0; d < EngineId::kTextSize; ++d) {
    uint32_t rem = 0;
    for (size_t i = value.size(); i-- > 0;) {
      uint32_t cur = (rem << 8) | value[i];
      value[i] = static_cast<uint8_t>(cur / 36);
      rem = cur % 36;
    }
    out += "0123456789abcdefghijklmnopqrstuvwxyz"[rem];
  }
  return out;
}

TEST(EngineId, TextMatchesByteWiseReferenceAcrossEveryByte) {
  // One 0xff (and one 0x80) byte at each position after the version, so every limb and
  // limb boundary of the text conversion carries a value of its own.
  for (uint8_t fill : {uint8_t{0xff}, uint8_t{0x80}, uint8_t{0x01}}) {
    for (size_t pos = 1; pos < EngineId::kByteSize; ++pos) {
      std::array<uint8_t, EngineId::kByteSize> bytes{};
      bytes[0] = EngineId::kVersion;
      bytes[pos] = fill;
      auto id = EngineId::FromBytes(ByteView(bytes.data(), bytes.size()));
      ASSERT_TRUE(id.ok());
      std::string text = id->ToString();
      EXPECT_EQ(text, ReferenceText(id->bytes())) << "byte " << pos;
      auto parsed = EngineId::Parse(text);
      ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.error().ToString();
      EXPECT_EQ(*parsed, *id) << "byte " << pos;
    }
  }
  Random random(7);
  for (int i = 0; i < 200; ++i) {
    EngineId id = EngineId::Generate(random, static_cast<uint16_t>(i * 331));
    EXPECT_EQ(id.ToString(), ReferenceText(id.bytes()));
  }
}

TEST(EngineId, GenerateSetsUuidVersionAndVariant) {
  Random random(7);
  for (int i = 0; i < 100; ++i) {
    auto uuid = EngineId::Generate(random, 3).uuid();
    EXPECT_EQ(uuid[6] >> 4, 4);
    EXPECT_EQ(uuid[8] >> 6, 2);
  }
}

TEST(EngineId, GenerateIsDeterministicForASeed) {
  Random a(99);
  Random b(99);
  EXPECT_EQ(EngineId::Generate(a, 1), EngineId::Generate(b, 1));
}

TEST(EngineId, HashAndOrderingSupportContainers) {
  Random random(1);
  std::unordered_set<EngineId> hashed;
  std::set<EngineId> ordered;
  for (int i = 0; i < 100; ++i) {
    EngineId id = EngineId::Generate(random, 0);
    hashed.insert(id);
    ordered.insert(id);
  }
  EXPECT_EQ(hashed.size(), 100u);
  EXPECT_EQ(ordered.size(), 100u);
  EXPECT_EQ(EngineId().Hash(), EngineId::FromUuid(ZeroUuid(), 0).Hash());
  EXPECT_LT(EngineId::FromUuid(ZeroUuid(), 0), EngineId::FromUuid(ZeroUuid(), 1));
}

void ExpectInvalid(std::string_view text, std::string_view message_part) {
  auto result = EngineId::Parse(text);
  ASSERT_FALSE(result.ok()) << "accepted: " << text;
  EXPECT_TRUE(result.error().Is("id", "invalid")) << result.error().ToString();
  EXPECT_NE(result.error().message().find(message_part), std::string::npos)
      << result.error().ToString();
}

TEST(EngineId, ParseRejectsWrongLength) {
  ExpectInvalid("", "30 characters, got 0");
  ExpectInvalid("1" + Zeros(28), "30 characters, got 29");
  ExpectInvalid("1" + Zeros(30), "30 characters, got 31");
}

TEST(EngineId, ParseRejectsCharactersOutsideLowercaseBase36) {
  ExpectInvalid("1" + Zeros(28) + "A", "invalid character 'A' at position 29");
  ExpectInvalid("1" + Zeros(13) + "-" + Zeros(15), "invalid character '-' at position 14");
  ExpectInvalid("1" + Zeros(13) + " " + Zeros(15), "byte 0x20");
  std::string with_nul = "1" + Zeros(29);
  with_nul[5] = '\0';
  ExpectInvalid(with_nul, "byte 0x00 at position 5");
  std::string high = "1" + Zeros(29);
  high[3] = static_cast<char>(0xc3);
  ExpectInvalid(high, "byte 0xc3");
}

TEST(EngineId, ParseRejectsOverflow) {
  // 36^30 - 1 > 2^152 - 1.
  ExpectInvalid(std::string(30, 'z'), "does not fit");
  // 2^152 itself: computed with Python from the rule.
  ExpectInvalid("4vy2rubcii3hz9btllv019jpuvxd74", "does not fit");
}

TEST(EngineId, ParseRejectsOtherVersions) {
  ExpectInvalid(Zeros(30), "unsupported id version 0");
  ExpectInvalid("2" + Zeros(29), "unsupported id version 2");
  // Largest 152-bit value: byte 0 = 0xff. Computed with Python from the rule.
  ExpectInvalid("3vy2rubcii3hz9btllv019jpuvxd74", "unsupported id version 255");
}

TEST(EngineId, FromBytesRejectsWrongSizeAndVersion) {
  std::array<uint8_t, 19> bytes{};
  bytes[0] = 1;
  EXPECT_TRUE(EngineId::FromBytes(bytes).ok());
  auto short_result = EngineId::FromBytes(ByteView(bytes.data(), 18));
  ASSERT_FALSE(short_result.ok());
  EXPECT_TRUE(short_result.error().Is("id", "invalid"));
  EXPECT_EQ(short_result.error().message(), "binary id must be 19 bytes, got 18");
  bytes[0] = 2;
  auto bad_version = EngineId::FromBytes(bytes);
  ASSERT_FALSE(bad_version.ok());
  EXPECT_TRUE(bad_version.error().Is("id", "invalid"));
  EXPECT_EQ(bad_version.error().message(), "unsupported id version 2 (expected 1)");
}

}  // namespace
}  // namespace keel::engine
