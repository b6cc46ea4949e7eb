// JSON printer and parser: escapes both ways, numbers, strings, strictness, limits.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "value/value.h"

namespace keel {
namespace {

Value Parsed(std::string_view text) {
  auto v = ParseJson(text);
  EXPECT_TRUE(v.has_value()) << text << ": " << (v ? "" : v.error().ToString());
  return v ? *v : Value();
}

TEST(JsonTest, PrintsScalarsAndContainers) {
  EXPECT_EQ(ToJson(Value()), "null");
  EXPECT_EQ(ToJson(Value(true)), "true");
  EXPECT_EQ(ToJson(Value(-12)), "-12");
  EXPECT_EQ(ToJson(Value(1.5)), "1.5");
  EXPECT_EQ(ToJson(Value(2.0)), "2.0");
  EXPECT_EQ(ToJson(Value(1e300)), "1e+300");
  EXPECT_EQ(ToJson(Value(0.1)), "0.1");
  EXPECT_EQ(ToJson(Value(NAN)), "null");
  EXPECT_EQ(ToJson(Value(-INFINITY)), "null");
  EXPECT_EQ(ToJson(Value::Object({{"a", Value::ArrayOf({1, "x"})}, {"b", Value(Value::Map{})}})),
            R"({"a":[1,"x"],"b":{}})");
  // Non-text keys print as their JSON text.
  EXPECT_EQ(ToJson(Value(Value::Map{{Value(1), Value(2)}, {Value(true), Value(3)}})),
            R"({"1":2,"true":3})");
}

TEST(JsonTest, NestedNonTextKeysStayLinear) {
  // Each key level would escape the previous one's quotes again: 2^60 bytes.
  Value v("x\"y");
  for (int i = 0; i < 60; ++i) v = Value(Value::Map{{v, Value(i)}});
  const std::string json = ToJson(v);
  EXPECT_EQ(json, R"({"{\"[object]\":58}":59})");
  EXPECT_TRUE(ParseJson(json).has_value());
  EXPECT_EQ(ToJson(Value(Value::Map{{Value::ArrayOf({1, "a"}), Value(1)}})), R"({"[1,\"a\"]":1})");
}

TEST(JsonTest, PrintsCompatibilityEscapes) {
  EXPECT_EQ(ToJson(Value(int64_t{1} << 53)), "9007199254740992");
  EXPECT_EQ(ToJson(Value(-(int64_t{1} << 53))), "-9007199254740992");
  EXPECT_EQ(ToJson(Value((int64_t{1} << 53) + 1)), R"(["$BigInt","9007199254740993"])");
  EXPECT_EQ(ToJson(Value(INT64_MIN)), R"(["$BigInt","-9223372036854775808"])");
  EXPECT_EQ(ToJson(Value(UINT64_MAX)), R"(["$BigInt","18446744073709551615"])");
  EXPECT_EQ(ToJson(Value(Bytes{})), R"(["$Uint8Array",""])");
  EXPECT_EQ(ToJson(Value(Bytes{'f', 'o', 'o', 'b'})), R"(["$Uint8Array","Zm9vYg=="])");
  EXPECT_EQ(ToJson(Value(Bytes{'f', 'o', 'o', 'b', 'a'})), R"(["$Uint8Array","Zm9vYmE="])");
  EXPECT_EQ(ToJson(Value(Bytes{0xfb, 0xff})), R"(["$Uint8Array","+/8="])");
  EXPECT_EQ(ToJson(Value::MakeUndefined()), R"(["$Undefined"])");
  // A genuine two-element array starting with "$…" gets one more '$'.
  EXPECT_EQ(ToJson(Value::ArrayOf({"$BigInt", "1"})), R"(["$$BigInt","1"])");
  EXPECT_EQ(ToJson(Value::ArrayOf({"$$x", 2})), R"(["$$$x",2])");
  // Other shapes are left alone.
  EXPECT_EQ(ToJson(Value::ArrayOf({"$x", 1, 2})), R"(["$x",1,2])");
  EXPECT_EQ(ToJson(Value::ArrayOf({"x$", 1})), R"(["x$",1])");
}

TEST(JsonTest, ParsesCompatibilityEscapes) {
  EXPECT_EQ(Parsed(R"(["$BigInt","9007199254740993"])"), Value((int64_t{1} << 53) + 1));
  EXPECT_EQ(Parsed(R"(["$BigInt","-9223372036854775808"])"), Value(INT64_MIN));
  EXPECT_EQ(Parsed(R"(["$BigInt","18446744073709551615"])"), Value(UINT64_MAX));
  EXPECT_EQ(Parsed(R"(["$Uint8Array","Zm9vYmE="])"), Value(Bytes{'f', 'o', 'o', 'b', 'a'}));
  EXPECT_EQ(Parsed(R"(["$ArrayBuffer","Zm9vYmE"])"), Value(Bytes{'f', 'o', 'o', 'b', 'a'}));
  EXPECT_EQ(Parsed(R"(["$Undefined"])"), Value::MakeUndefined());
  EXPECT_EQ(Parsed(R"(["$Undefined",null])"), Value::MakeUndefined());
  EXPECT_EQ(Parsed(R"(["$$BigInt","1"])"), Value::ArrayOf({"$BigInt", "1"}));
  EXPECT_EQ(Parsed(R"(["$$$x",2])"), Value::ArrayOf({"$$x", 2}));
  EXPECT_EQ(Parsed(R"(["$x",1,2])"), Value::ArrayOf({"$x", 1, 2}));
  EXPECT_FALSE(ParseJson(R"(["$BigInt","18446744073709551616"])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$BigInt","-9223372036854775809"])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$BigInt","12a"])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$BigInt",""])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$BigInt",12])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$Uint8Array","Zm9v!"])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$Uint8Array","Z"])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$Uint8Array","Zm9vYmE=="])").has_value());
  EXPECT_FALSE(ParseJson(R"(["$Unknown","x"])").has_value());
  // Leading zeros do not count against the range; more digits than fit say so.
  EXPECT_EQ(Parsed(R"(["$BigInt","0000000000000000000000042"])"), Value(42));
  auto big = ParseJson(R"(["$BigInt","99999999999999999999999"])");
  ASSERT_FALSE(big.has_value());
  EXPECT_NE(big.error().message().find("$BigInt out of 64-bit range"), std::string::npos)
      << big.error().ToString();
}

TEST(JsonTest, ParsesNumbers) {
  EXPECT_EQ(Parsed("0"), Value(0));
  EXPECT_EQ(Parsed("-0").kind(), Value::Kind::kInt);
  EXPECT_EQ(Parsed("9223372036854775807"), Value(INT64_MAX));
  EXPECT_EQ(Parsed("-9223372036854775808"), Value(INT64_MIN));
  EXPECT_EQ(Parsed("18446744073709551615"), Value(UINT64_MAX));
  EXPECT_EQ(Parsed("18446744073709551616"), Value(18446744073709551616.0));
  EXPECT_EQ(Parsed("-9223372036854775809"), Value(-9223372036854775809.0));
  EXPECT_EQ(Parsed("1.5"), Value(1.5));
  EXPECT_EQ(Parsed("1e2"), Value(100.0));
  EXPECT_EQ(Parsed("-2.5E-3"), Value(-0.0025));
  EXPECT_EQ(Parsed("1E+2"), Value(100.0));
  EXPECT_EQ(Parsed("1e400"), Value(INFINITY));
  for (double d : {0.1, 1.0 / 3, 5e-324, 1.7976931348623157e308, -123456.789, 2.0}) {
    EXPECT_EQ(Parsed(ToJson(Value(d))), Value(d)) << ToJson(Value(d));
  }
}

TEST(JsonTest, StringEscapesBothWays) {
  EXPECT_EQ(ToJson(Value("a\"b\\c/\b\f\n\r\t\x01\x1f\x7f")),
            R"("a\"b\\c/\b\f\n\r\t\u0001\u001f\u007f")");
  EXPECT_EQ(Parsed(R"("a\"b\\c\/\b\f\n\r\t\u0001\u001F")"), Value("a\"b\\c/\b\f\n\r\t\x01\x1f"));
  EXPECT_EQ(Parsed(R"("\u00fc\u6C34")"), Value("\u00fc\u6c34"));
  EXPECT_EQ(Parsed(R"("\ud83d\ude00")"), Value("\U0001F600"));
  EXPECT_EQ(Parsed("\"\U0001F600 \u00fc\""), Value("\U0001F600 \u00fc"));
  EXPECT_EQ(ToJson(Value("\U0001F600")), "\"\U0001F600\"");
  EXPECT_EQ(Parsed(R"("\u0000")"), Value(std::string(1, '\0')));
  EXPECT_EQ(ToJson(Value(std::string(1, '\0'))), R"("\u0000")");
}

TEST(JsonTest, RoundTrips) {
  Value v = Value::Object({{"n", 1},
                           {"f", -0.5},
                           {"big", UINT64_MAX},
                           {"bytes", Bytes{1, 2, 3}},
                           {"u", Value::MakeUndefined()},
                           {"esc", Value::ArrayOf({"$Undefined", Value::ArrayOf({"$$", 1})})},
                           {"s", "line\nbreak \u00e9"},
                           {"nested", Value::ArrayOf({Value::Object({{"", nullptr}}), false})}});
  auto back = ParseJson(ToJson(v));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, v);
  EXPECT_EQ(ToJson(*back), ToJson(v));
}

void ExpectInvalid(std::string_view text, std::string_view fragment, size_t max_depth = 64) {
  auto v = ParseJson(text, max_depth);
  ASSERT_FALSE(v.has_value()) << text;
  EXPECT_TRUE(v.error().Is("value", "invalid_json")) << v.error().ToString();
  EXPECT_NE(v.error().message().find(fragment), std::string::npos) << v.error().ToString();
}

TEST(JsonTest, RejectsMalformedInput) {
  ExpectInvalid("", "unexpected end of input at offset 0");
  ExpectInvalid("   ", "unexpected end");
  ExpectInvalid("nul", "invalid literal");
  ExpectInvalid("True", "unexpected character");
  ExpectInvalid("1 2", "trailing characters at offset 2");
  ExpectInvalid("01", "leading zero");
  ExpectInvalid("-", "invalid number");
  ExpectInvalid("1.", "invalid number");
  ExpectInvalid(".5", "unexpected character");
  ExpectInvalid("1e", "invalid number");
  ExpectInvalid("+1", "unexpected character");
  ExpectInvalid("NaN", "unexpected character");
  ExpectInvalid("[1,]", "unexpected character");
  ExpectInvalid("[1", "unterminated array");
  ExpectInvalid("[1 2]", "expected ',' or ']'");
  ExpectInvalid("{\"a\":1,}", "expected object key");
  ExpectInvalid("{\"a\" 1}", "expected ':'");
  ExpectInvalid("{a:1}", "expected object key");
  ExpectInvalid("{\"a\":1", "unterminated object");
  ExpectInvalid("\"abc", "unterminated string");
  ExpectInvalid("\"a\nb\"", "control character");
  ExpectInvalid("\"\\x\"", "invalid escape");
  ExpectInvalid("\"\\u12x4\"", "invalid \\u escape at offset 5");
  ExpectInvalid("\"\\u12", "truncated \\u escape");
  ExpectInvalid("\"\\ud800\"", "unpaired high surrogate");
  ExpectInvalid("\"\\ud800\\u0041\"", "unpaired high surrogate");
  ExpectInvalid("\"\\udc00\"", "unpaired low surrogate");
  ExpectInvalid("\"\xff\"", "invalid UTF-8");
  ExpectInvalid("\"\xc0\xaf\"", "invalid UTF-8");
  ExpectInvalid("\"\xed\xa0\x80\"", "invalid UTF-8");
  ExpectInvalid("\"\xf4\x90\x80\x80\"", "invalid UTF-8");
  ExpectInvalid("\"\xe6\xb0\"", "invalid UTF-8");
  ExpectInvalid("\xef\xbb\xbf{}", "unexpected character");  // no BOM
}

TEST(JsonTest, EnforcesDepthLimit) {
  EXPECT_TRUE(ParseJson(std::string(64, '[') + std::string(64, ']')).has_value());
  ExpectInvalid(std::string(65, '[') + std::string(65, ']'), "nesting too deep");
  ExpectInvalid(std::string(100000, '['), "nesting too deep");
  ExpectInvalid("{\"a\":{\"b\":1}}", "nesting too deep", 1);
}

}  // namespace
}  // namespace keel
