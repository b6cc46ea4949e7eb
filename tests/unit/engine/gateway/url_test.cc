#include "engine/gateway/url.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

TEST(PercentDecode, DecodesEscapesOfEitherCaseAndKeepsPlus) {
  struct Case {
    std::string_view in;
    std::string_view out;
  };
  for (const Case& c : std::vector<Case>{{"", ""},
                                         {"abc", "abc"},
                                         {"a%20b", "a b"},
                                         {"ab%20cd%21ef", "ab cd!ef"},
                                         {"%41%42c", "ABc"},
                                         {"%2f%2F", "//"},
                                         {"a+b", "a+b"},
                                         {"%00", std::string_view("\0", 1)},
                                         {"%E2%82%AC", "\xE2\x82\xAC"},
                                         {"%ff", "\xff"}}) {
    Result<std::string> r = PercentDecode(c.in);
    ASSERT_TRUE(r.ok()) << c.in;
    EXPECT_EQ(*r, c.out) << c.in;
  }
}

TEST(PercentDecode, RejectsBadEscapes) {
  for (std::string_view in : {"%", "%2", "a%", "%zz", "%2g", "%g2", "abc%4", "%%41"}) {
    Result<std::string> r = PercentDecode(in);
    ASSERT_FALSE(r.ok()) << in;
    EXPECT_TRUE(r.error().Is("url", "invalid_percent_encoding")) << in;
  }
}

TEST(FormDecode, TurnsPlusIntoSpaceBeforeDecoding) {
  EXPECT_EQ(*FormDecode("a+b%2Bc"), "a b+c");
  EXPECT_EQ(*FormDecode("+++"), "   ");
  EXPECT_TRUE(FormDecode("a+%").error().Is("url", "invalid_percent_encoding"));
}

TEST(PercentEncode, EncodesEverythingButUnreservedWithUppercaseHex) {
  EXPECT_EQ(PercentEncode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(PercentEncode("a b/c?d&e=f+g%"), "a%20b%2Fc%3Fd%26e%3Df%2Bg%25");
  EXPECT_EQ(PercentEncode("\xE2\x82\xAC"), "%E2%82%AC");
  EXPECT_EQ(PercentEncode(std::string_view("\0\xff", 2)), "%00%FF");
  EXPECT_EQ(PercentEncode(""), "");
}

TEST(PercentEncode, RoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(*PercentDecode(PercentEncode(all)), all);
}

TEST(SplitTarget, SplitsAtFirstQuestionMarkAndDropsFragment) {
  struct Case {
    std::string_view target;
    std::string_view path;
    std::optional<std::string_view> query;
  };
  for (const Case& c : std::vector<Case>{
           {"/a/b", "/a/b", std::nullopt},
           {"/a?x=1", "/a", "x=1"},
           {"/a?", "/a", ""},
           {"/a?x=1?y=2", "/a", "x=1?y=2"},
           {"/a#frag", "/a", std::nullopt},
           {"/a?x=1#frag", "/a", "x=1"},
           {"", "", std::nullopt},
       }) {
    TargetParts parts = SplitTarget(c.target);
    EXPECT_EQ(parts.path, c.path) << c.target;
    EXPECT_EQ(parts.query, c.query) << c.target;
  }
}

TEST(ParseQuery, KeepsRawBytesAndDecodesEachParam) {
  std::vector<QueryParam> params = ParseQuery("a=1&b+c=d%20e&flag&&e=&f=x=y&%zz=%41");
  ASSERT_EQ(params.size(), 6u);
  EXPECT_EQ(params[0].raw_name, "a");
  EXPECT_EQ(params[0].raw_value, "1");
  EXPECT_TRUE(params[0].has_equals);
  EXPECT_EQ(params[1].raw_name, "b+c");
  EXPECT_EQ(params[1].raw_value, "d%20e");
  EXPECT_EQ(params[1].name, "b c");
  EXPECT_EQ(params[1].value, "d e");
  EXPECT_EQ(params[2].raw_name, "flag");
  EXPECT_FALSE(params[2].has_equals);
  EXPECT_EQ(params[2].value, "");
  EXPECT_EQ(params[2].Raw(), "flag");
  EXPECT_TRUE(params[3].has_equals);
  EXPECT_EQ(params[3].Raw(), "e=");
  EXPECT_EQ(params[4].raw_value, "x=y");
  EXPECT_EQ(params[4].value, "x=y");
  EXPECT_EQ(params[5].name, std::nullopt);
  EXPECT_EQ(params[5].value, "A");
}

TEST(ParseQuery, EmptyQueryHasNoParams) {
  EXPECT_TRUE(ParseQuery("").empty());
  EXPECT_TRUE(ParseQuery("&&&").empty());
}

TEST(JoinRawQuery, ReproducesTheOriginalBytesMinusEmptySegments) {
  EXPECT_EQ(JoinRawQuery(ParseQuery("a=%20&b+c&d=&e=%zz")), "a=%20&b+c&d=&e=%zz");
  EXPECT_EQ(JoinRawQuery(ParseQuery("&a=1&&b=2&")), "a=1&b=2");
}

TEST(Base64Url, EncodesWithoutPaddingAndRoundTrips) {
  EXPECT_EQ(Base64UrlEncode(AsBytes("")), "");
  EXPECT_EQ(Base64UrlEncode(AsBytes("f")), "Zg");
  EXPECT_EQ(Base64UrlEncode(AsBytes("fo")), "Zm8");
  EXPECT_EQ(Base64UrlEncode(AsBytes("foo")), "Zm9v");
  EXPECT_EQ(Base64UrlEncode(Bytes{0xfb, 0xff}), "-_8");
  for (std::string_view s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    Result<Bytes> r = Base64UrlDecode(Base64UrlEncode(AsBytes(s)));
    ASSERT_TRUE(r.ok()) << s;
    EXPECT_EQ(AsString(*r), s);
  }
  EXPECT_EQ(*Base64UrlDecode("-_8"), (Bytes{0xfb, 0xff}));
}

TEST(Base64Url, RejectsPaddingForeignAlphabetDanglingCharAndTrailingBits) {
  for (std::string_view in : {"Zg==", "Zg=", "+/8", "Z", "Zm9vY", "Zh", "a b"}) {
    Result<Bytes> r = Base64UrlDecode(in);
    ASSERT_FALSE(r.ok()) << in;
    EXPECT_TRUE(r.error().Is("base64", "invalid")) << in;
  }
}

TEST(Base64, StandardAlphabetWithPadding) {
  EXPECT_EQ(Base64Encode(AsBytes("")), "");
  EXPECT_EQ(Base64Encode(AsBytes("f")), "Zg==");
  EXPECT_EQ(Base64Encode(AsBytes("fo")), "Zm8=");
  EXPECT_EQ(Base64Encode(AsBytes("foobar")), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode(Bytes{0xfb, 0xff}), "+/8=");
  EXPECT_EQ(*Base64Decode("+/8="), (Bytes{0xfb, 0xff}));
  EXPECT_EQ(AsString(*Base64Decode("Zm9vYmFy")), "foobar");
  EXPECT_TRUE(Base64Decode("")->empty());
}

TEST(Base64, RejectsNonCanonicalInput) {
  for (std::string_view in : {"Zg", "Zg=", "Z===", "====", "Zh==", "Zg=a", "-_8=", "Zm9v\n"}) {
    Result<Bytes> r = Base64Decode(in);
    ASSERT_FALSE(r.ok()) << in;
    EXPECT_TRUE(r.error().Is("base64", "invalid")) << in;
  }
}

}  // namespace
}  // namespace keel::engine::gateway
