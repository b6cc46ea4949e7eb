// CBOR codec: RFC 8949 Appendix A vectors both ways, round trips, and malformed input.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "base/bytes.h"
#include "value/value.h"

namespace keel {
namespace {

Bytes Hex(std::string_view hex) { return FromHex(hex).value(); }

Value Decoded(std::string_view hex) {
  auto v = DecodeCbor(Hex(hex));
  EXPECT_TRUE(v.has_value()) << hex << ": " << (v ? "" : v.error().ToString());
  return v ? *v : Value();
}

struct Vector {
  const char* hex;
  Value value;
};

// RFC 8949 Appendix A entries that our (float64-only, definite-length) encoder produces
// byte for byte.
TEST(CborTest, AppendixAEncodeAndDecode) {
  const Vector vectors[] = {
      {"00", Value(0)},
      {"01", Value(1)},
      {"0a", Value(10)},
      {"17", Value(23)},
      {"1818", Value(24)},
      {"1819", Value(25)},
      {"1864", Value(100)},
      {"1903e8", Value(1000)},
      {"1a000f4240", Value(1000000)},
      {"1b000000e8d4a51000", Value(1000000000000LL)},
      {"1bffffffffffffffff", Value(18446744073709551615ULL)},
      {"20", Value(-1)},
      {"29", Value(-10)},
      {"3863", Value(-100)},
      {"3903e7", Value(-1000)},
      {"3b7fffffffffffffff", Value(INT64_MIN)},
      {"fb3ff199999999999a", Value(1.1)},
      {"fb7e37e43c8800759c", Value(1.0e+300)},
      {"fbc010666666666666", Value(-4.1)},
      {"f4", Value(false)},
      {"f5", Value(true)},
      {"f6", Value(nullptr)},
      {"f7", Value::MakeUndefined()},
      {"40", Value(Bytes{})},
      {"4401020304", Value(Bytes{1, 2, 3, 4})},
      {"60", Value("")},
      {"6161", Value("a")},
      {"6449455446", Value("IETF")},
      {"62225c", Value("\"\\")},
      {"62c3bc", Value("\u00fc")},
      {"63e6b0b4", Value("\u6c34")},
      {"64f0908591", Value("\U00010151")},
      {"80", Value(Value::Array{})},
      {"83010203", Value::ArrayOf({1, 2, 3})},
      {"8301820203820405", Value::ArrayOf({1, Value::ArrayOf({2, 3}), Value::ArrayOf({4, 5})})},
      {"a0", Value(Value::Map{})},
      {"a201020304", Value(Value::Map{{Value(1), Value(2)}, {Value(3), Value(4)}})},
      {"a26161016162820203", Value::Object({{"a", 1}, {"b", Value::ArrayOf({2, 3})}})},
      {"826161a161626163", Value::ArrayOf({"a", Value::Object({{"b", "c"}})})},
  };
  for (const auto& v : vectors) {
    EXPECT_EQ(ToHex(EncodeCbor(v.value)), v.hex);
    EXPECT_EQ(Decoded(v.hex), v.value) << v.hex;
  }
  // 25 array entries take a one-byte length.
  Value::Array many;
  for (int i = 1; i <= 25; ++i) many.push_back(Value(i));
  const std::string hex25 = "98190102030405060708090a0b0c0d0e0f101112131415161718181819";
  EXPECT_EQ(ToHex(EncodeCbor(Value(many))), hex25);
  EXPECT_EQ(Decoded(hex25), Value(many));
}

// Appendix A entries in forms we only read: half and single floats, bignums, tags,
// indefinite lengths.
TEST(CborTest, AppendixADecodeOnly) {
  EXPECT_EQ(Decoded("f90000"), Value(0.0));
  EXPECT_EQ(Decoded("f98000").as_double(), 0.0);
  EXPECT_TRUE(std::signbit(Decoded("f98000").as_double()));
  EXPECT_EQ(Decoded("f93c00"), Value(1.0));
  EXPECT_EQ(Decoded("f93e00"), Value(1.5));
  EXPECT_EQ(Decoded("f97bff"), Value(65504.0));
  EXPECT_EQ(Decoded("f90001"), Value(5.960464477539063e-8));
  EXPECT_EQ(Decoded("f90400"), Value(0.00006103515625));
  EXPECT_EQ(Decoded("f9c400"), Value(-4.0));
  EXPECT_EQ(Decoded("f97c00"), Value(INFINITY));
  EXPECT_EQ(Decoded("f9fc00"), Value(-INFINITY));
  EXPECT_TRUE(std::isnan(Decoded("f97e00").as_double()));
  EXPECT_EQ(Decoded("fa47c35000"), Value(100000.0));
  EXPECT_EQ(Decoded("fa7f7fffff"), Value(3.4028234663852886e+38));
  EXPECT_EQ(Decoded("fa7f800000"), Value(INFINITY));
  EXPECT_TRUE(std::isnan(Decoded("fb7ff8000000000000").as_double()));
  EXPECT_EQ(Decoded("fbfff0000000000000"), Value(-INFINITY));
  // Bignums: 2^64 does not fit and stays a byte string; small ones become integers.
  EXPECT_EQ(Decoded("c249010000000000000000"), Value(Bytes{1, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(Decoded("c2420100"), Value(256));
  EXPECT_EQ(Decoded("c34100"), Value(-1));
  EXPECT_EQ(Decoded("c3487fffffffffffffff"), Value(INT64_MIN));
  // Other tags are dropped.
  EXPECT_EQ(Decoded("c074323031332d30332d32315432303a30343a30305a"), Value("2013-03-21T20:04:00Z"));
  EXPECT_EQ(Decoded("c11a514b67b0"), Value(1363896240));
  EXPECT_EQ(Decoded("d74401020304"), Value(Bytes{1, 2, 3, 4}));
  // Indefinite lengths.
  EXPECT_EQ(Decoded("5f42010243030405ff"), Value(Bytes{1, 2, 3, 4, 5}));
  EXPECT_EQ(Decoded("7f657374726561646d696e67ff"), Value("streaming"));
  EXPECT_EQ(Decoded("9fff"), Value(Value::Array{}));
  EXPECT_EQ(Decoded("9f018202039f0405ffff"),
            Value::ArrayOf({1, Value::ArrayOf({2, 3}), Value::ArrayOf({4, 5})}));
  EXPECT_EQ(Decoded("83018202039f0405ff"),
            Value::ArrayOf({1, Value::ArrayOf({2, 3}), Value::ArrayOf({4, 5})}));
  EXPECT_EQ(Decoded("bf61610161629f0203ffff"),
            Value::Object({{"a", 1}, {"b", Value::ArrayOf({2, 3})}}));
  EXPECT_EQ(Decoded("bf6346756ef563416d7421ff"), Value::Object({{"Fun", true}, {"Amt", -2}}));
  // Non-shortest heads are accepted.
  EXPECT_EQ(Decoded("1b0000000000000001"), Value(1));
}

TEST(CborTest, IntegersNormaliseAcrossKinds) {
  EXPECT_EQ(Value(uint64_t{5}).kind(), Value::Kind::kInt);
  EXPECT_EQ(Value(uint64_t{1} << 63).kind(), Value::Kind::kUint);
  EXPECT_EQ(Decoded("1b7fffffffffffffff").kind(), Value::Kind::kInt);
  EXPECT_EQ(Decoded("1b8000000000000000").kind(), Value::Kind::kUint);
}

TEST(CborTest, RoundTripsNestedValues) {
  Value v = Value::Object({{"state", Value::Object({{"n", 1}, {"big", UINT64_MAX}})},
                           {"list", Value::ArrayOf({Value::MakeUndefined(), nullptr, 2.5,
                                                    Bytes{0, 255}, "x", INT64_MIN})}});
  v.Set("nested", Value(Value::Map{{Value(1), Value("one")}, {Value(Bytes{9}), Value(true)}}));
  auto back = DecodeCbor(EncodeCbor(v));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, v);
}

void ExpectInvalid(std::string_view hex, std::string_view fragment, CborLimits limits = {}) {
  auto v = DecodeCbor(Hex(hex), limits);
  ASSERT_FALSE(v.has_value()) << hex;
  EXPECT_TRUE(v.error().Is("value", "invalid_cbor")) << v.error().ToString();
  EXPECT_NE(v.error().message().find(fragment), std::string::npos) << v.error().ToString();
}

TEST(CborTest, RejectsMalformedInput) {
  ExpectInvalid("", "truncated input at offset 0");
  ExpectInvalid("18", "truncated");
  ExpectInvalid("1900", "truncated");
  ExpectInvalid("1b00000000", "truncated");
  ExpectInvalid("6261", "length exceeds input at offset 1");
  ExpectInvalid("5b00000000ffffffff", "length exceeds input");
  ExpectInvalid("9bffffffffffffffff", "array length exceeds input");
  ExpectInvalid("bbffffffffffffffff", "map length exceeds input");
  ExpectInvalid("8301", "array length exceeds input");
  ExpectInvalid("820118", "truncated input at offset 3");
  ExpectInvalid("a10102a1", "trailing bytes at offset 3");
  ExpectInvalid("0000", "trailing bytes at offset 1");
  ExpectInvalid("1c", "reserved additional information");
  ExpectInvalid("3f", "indefinite length on an integer");
  ExpectInvalid("df00", "indefinite length on a tag");
  ExpectInvalid("ff", "unexpected break");
  ExpectInvalid("f0", "unsupported simple value");
  ExpectInvalid("f820", "unsupported simple value");
  ExpectInvalid("3b8000000000000000", "negative integer below INT64_MIN");
  ExpectInvalid("62c328", "invalid UTF-8");    // bad continuation
  ExpectInvalid("62c0af", "invalid UTF-8");    // overlong
  ExpectInvalid("63eda080", "invalid UTF-8");  // surrogate
  ExpectInvalid("7f6161", "truncated");
  ExpectInvalid("5f6161ff", "bad chunk");  // text chunk in a byte string
  ExpectInvalid("5f5f4101ffff", "nested indefinite");
  ExpectInvalid("9f01", "truncated");
  ExpectInvalid("bf0102", "truncated");
  ExpectInvalid("a1ff01", "unexpected break");
}

TEST(CborTest, EnforcesLimits) {
  // 65 nested arrays exceed the default depth of 64; 64 are fine.
  std::string deep(65 * 2, '8');
  for (size_t i = 1; i < deep.size(); i += 2) deep[i] = '1';
  deep += "00";
  ExpectInvalid(deep, "nesting too deep");
  EXPECT_TRUE(DecodeCbor(Hex(deep.substr(2))).has_value());
  // Tags nest too.
  std::string tags;
  for (int i = 0; i < 100; ++i) tags += "c6";
  ExpectInvalid(tags + "00", "nesting too deep");

  CborLimits small;
  small.max_items = 3;
  ExpectInvalid("8401020304", "too many items", small);
  ExpectInvalid("9f01020304ff", "too many items", small);
  EXPECT_TRUE(DecodeCbor(Hex("83010203"), small).has_value());
}

}  // namespace
}  // namespace keel
