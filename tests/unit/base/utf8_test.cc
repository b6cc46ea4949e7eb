// base/utf8.h: well-formedness by Unicode's Table 3-7 and U+FFFD by maximal subparts.
#include "base/utf8.h"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(Utf8SequenceLength, GivesTheLengthOfEachWellFormedSequence) {
  EXPECT_EQ(Utf8SequenceLength("a", 0), 1u);
  EXPECT_EQ(Utf8SequenceLength("\xC3\xA9", 0), 2u);          // é
  EXPECT_EQ(Utf8SequenceLength("\xE2\x82\xAC", 0), 3u);      // €
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F\x98\x80", 0), 4u);  // 😀
  EXPECT_EQ(Utf8SequenceLength("x\xC3\xA9", 1), 2u);
  // The edges of Table 3-7.
  EXPECT_EQ(Utf8SequenceLength("\xC2\x80", 0), 2u);          // U+0080
  EXPECT_EQ(Utf8SequenceLength("\xE0\xA0\x80", 0), 3u);      // U+0800
  EXPECT_EQ(Utf8SequenceLength("\xED\x9F\xBF", 0), 3u);      // U+D7FF
  EXPECT_EQ(Utf8SequenceLength("\xEE\x80\x80", 0), 3u);      // U+E000
  EXPECT_EQ(Utf8SequenceLength("\xF0\x90\x80\x80", 0), 4u);  // U+10000
  EXPECT_EQ(Utf8SequenceLength("\xF4\x8F\xBF\xBF", 0), 4u);  // U+10FFFF
}

TEST(Utf8SequenceLength, GivesTheMaximalSubpartOfAnIllFormedSequence) {
  struct Case {
    std::string_view text;
    size_t bad;
  };
  const Case cases[] = {
      {"\x80", 1},              // a lone continuation byte
      {"\xC0\xAF", 1},          // C0/C1 never start a sequence (overlong)
      {"\xE0\x80\x80", 1},      // overlong three-byte form: 80 is outside E0's A0..BF
      {"\xED\xA0\x80", 1},      // a surrogate: A0 is outside ED's 80..9F
      {"\xF4\x90\x80\x80", 1},  // past U+10FFFF: 90 is outside F4's 80..8F
      {"\xF5\x80\x80\x80", 1},  // F5..FF never start a sequence
      {"\xC3", 1},              // truncated at the end
      {"\xE2\x82", 2},          // truncated: both bytes are one maximal subpart
      {"\xF0\x9F\x98", 3},
      {"\xE2\x82x", 2},         // cut short by an ASCII byte
      {"\xF0\x9F\xC3\xA9", 2},  // cut short by the start of another sequence
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.text));
    size_t bad = 0;
    EXPECT_EQ(Utf8SequenceLength(c.text, 0, &bad), 0u);
    EXPECT_EQ(bad, c.bad);
    EXPECT_EQ(Utf8SequenceLength(c.text, 0), 0u);  // `bad` is optional
  }
}

TEST(IsValidUtf8, AcceptsWellFormedTextAndRejectsEveryKindOfFlaw) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));
  EXPECT_TRUE(IsValidUtf8(std::string_view("nul\0inside", 10)));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
}

TEST(IsValidUtf8, FindsAFlawAnywhereInALongAsciiRun) {
  // The ASCII fast path reads 8 bytes at a time: a flaw must be found at every offset,
  // including in the tail shorter than 8 bytes.
  for (size_t at = 0; at < 40; ++at) {
    std::string text(40, 'a');
    EXPECT_TRUE(IsValidUtf8(text));
    text[at] = '\x80';
    EXPECT_FALSE(IsValidUtf8(text)) << "flaw at " << at;
    text[at] = 'a';
    text.insert(at, "\xC3\xA9");
    EXPECT_TRUE(IsValidUtf8(text)) << "é at " << at;
  }
}

TEST(LossyUtf8, KeepsWellFormedTextAsItIs) {
  EXPECT_EQ(LossyUtf8(""), "");
  EXPECT_EQ(LossyUtf8("abc \xC3\xA9\xF0\x9F\x98\x80"), "abc \xC3\xA9\xF0\x9F\x98\x80");
}

TEST(LossyUtf8, ReplacesEachMaximalSubpartWithOneReplacementCharacter) {
  const std::string r(kUtf8Replacement);
  EXPECT_EQ(LossyUtf8("a\xffz"), "a" + r + "z");
  EXPECT_EQ(LossyUtf8("\xE2\x82"), r);                     // one subpart, one U+FFFD
  EXPECT_EQ(LossyUtf8("\xE2\x82x"), r + "x");
  EXPECT_EQ(LossyUtf8("\xED\xA0\x80"), r + r + r);         // a surrogate: three subparts
  EXPECT_EQ(LossyUtf8("\xF0\x9F\xC3\xA9"), r + "\xC3\xA9");
  EXPECT_EQ(LossyUtf8("ok\xC3"), "ok" + r);
  EXPECT_TRUE(IsValidUtf8(LossyUtf8("\x80\xBF\xC0\xF5\xFF\xE0\x80")));
}

}  // namespace
}  // namespace keel
