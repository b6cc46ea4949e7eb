// The strict BARE primitives (envoy-protocol.md §1.2–§1.5): byte-exact encodings from the
// spec's worked examples, and one rejection test per strictness rule of §1.4, each
// asserting the exact DecodeFailure::Kind.
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "base/bytes.h"
#include "base/utf8.h"
#include "protocol/bare/reader.h"
#include "protocol/bare/writer.h"

namespace keel::bare {
namespace {

using Kind = DecodeFailure::Kind;

// Hex with optional spaces, e.g. "80 01". Aborts the test binary on bad hex (a typo in
// the test itself).
Bytes Hex(std::string_view spaced) {
  std::string compact;
  for (char c : spaced) {
    if (c != ' ') compact.push_back(c);
  }
  auto bytes = FromHex(compact);
  if (!bytes) std::abort();
  return *bytes;
}

Bytes EncodeUint(uint64_t v) {
  Bytes out;
  Writer(out).Uint(v);
  return out;
}

Bytes EncodeInt(int64_t v) {
  Bytes out;
  Writer(out).Int(v);
  return out;
}

std::string KindName(Kind k) { return std::string(DecodeFailureKindName(k)); }

// Runs `read` then ExpectEnd over `in`; returns "ok" or the failure kind's name, so
// assertion messages name the kind.
std::string Outcome(ByteView in, const std::function<bool(Reader&)>& read,
                    const Limits& limits = Limits()) {
  Reader uut(in, limits);
  if (read(uut) && uut.ExpectEnd()) return "ok";
  EXPECT_FALSE(uut.ok());
  return KindName(uut.failure().kind);
}

bool ReadUint(Reader& r) {
  uint64_t v;
  return r.Uint(v);
}
bool ReadStr(Reader& r) {
  std::string s;
  return r.Str(s);
}

// ---- §1.5 worked examples ------------------------------------------------------------

TEST(BareVarint, EncodesTheSpecExamplesByteForByte) {
  EXPECT_EQ(EncodeUint(0), Hex("00"));
  EXPECT_EQ(EncodeUint(127), Hex("7f"));
  EXPECT_EQ(EncodeUint(128), Hex("80 01"));
  EXPECT_EQ(EncodeUint(300), Hex("ac 02"));
  EXPECT_EQ(EncodeUint(16384), Hex("80 80 01"));
  EXPECT_EQ(EncodeUint(~uint64_t{0}), Hex("ff ff ff ff ff ff ff ff ff 01"));
}

TEST(BareVarint, DecodesTheSpecExamplesAndConsumesExactlyTheirBytes) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"00", 0},
      {"7f", 127},
      {"80 01", 128},
      {"ac 02", 300},
      {"80 80 01", 16384},
      {"ff ff ff ff ff ff ff ff ff 01", ~uint64_t{0}},
      {"80 80 80 80 80 80 80 80 80 01", uint64_t{1} << 63},
  };
  for (const auto& [hex, want] : cases) {
    SCOPED_TRACE(hex);
    Bytes in = Hex(hex);
    Reader uut(in);
    uint64_t got = 0;
    ASSERT_TRUE(uut.Uint(got));
    EXPECT_EQ(got, want);
    EXPECT_EQ(uut.offset(), in.size());
    EXPECT_TRUE(uut.ExpectEnd());
  }
}

TEST(BareVarint, ZigZagEncodesTheSpecExamples) {
  EXPECT_EQ(EncodeInt(0), Hex("00"));
  EXPECT_EQ(EncodeInt(-1), Hex("01"));
  EXPECT_EQ(EncodeInt(1), Hex("02"));
  EXPECT_EQ(EncodeInt(-3), Hex("05"));
  EXPECT_EQ(EncodeInt(63), Hex("7e"));
  EXPECT_EQ(EncodeInt(-64), Hex("7f"));
  EXPECT_EQ(EncodeInt(64), Hex("80 01"));
}

TEST(BareVarint, ZigZagRoundTripsTheExtremes) {
  for (int64_t v :
       {int64_t{0}, int64_t{-1}, int64_t{1}, int64_t{-3}, int64_t{63}, int64_t{-64}, int64_t{64},
        std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()}) {
    SCOPED_TRACE(v);
    Bytes in = EncodeInt(v);
    Reader uut(in);
    int64_t got = 0;
    ASSERT_TRUE(uut.Int(got));
    EXPECT_EQ(got, v);
    EXPECT_TRUE(uut.ExpectEnd());
  }
  // i64 min maps to u64 max, the longest varint.
  EXPECT_EQ(EncodeInt(std::numeric_limits<int64_t>::min()), Hex("ff ff ff ff ff ff ff ff ff 01"));
}

TEST(BareFixedWidth, IntegersAreLittleEndianAndTwosComplement) {
  Bytes out;
  Writer w(out);
  w.U16(0x0201);
  w.U32(0x06050403);
  w.U64(0x0e0d0c0b0a090807);
  w.I16(-2);
  w.I32(-2);
  w.I64(1700000000000);
  w.I8(-1);
  w.Bool(true);
  w.Bool(false);
  EXPECT_EQ(out, Hex("0102 03040506 0708090a0b0c0d0e feff feffffff 0068e5cf8b010000 ff 01 00"));

  Reader uut(out);
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  int16_t i16;
  int32_t i32;
  int64_t i64;
  int8_t i8;
  bool t;
  bool f;
  ASSERT_TRUE(uut.U16(u16) && uut.U32(u32) && uut.U64(u64) && uut.I16(i16) && uut.I32(i32) &&
              uut.I64(i64) && uut.I8(i8) && uut.Bool(t) && uut.Bool(f));
  EXPECT_EQ(u16, 0x0201);
  EXPECT_EQ(u32, 0x06050403u);
  EXPECT_EQ(u64, 0x0e0d0c0b0a090807u);
  EXPECT_EQ(i16, -2);
  EXPECT_EQ(i32, -2);
  EXPECT_EQ(i64, 1700000000000);
  EXPECT_EQ(i8, -1);
  EXPECT_TRUE(t);
  EXPECT_FALSE(f);
  EXPECT_TRUE(uut.ExpectEnd());
}

TEST(BareFixedWidth, FloatsAreLittleEndianIeeeBits) {
  Bytes out;
  Writer w(out);
  w.F64(1.5);
  w.F32(-2.0f);
  EXPECT_EQ(out, Hex("000000000000f83f 000000c0"));
  Reader uut(out);
  double d;
  float f;
  ASSERT_TRUE(uut.F64(d) && uut.F32(f));
  EXPECT_EQ(d, 1.5);
  EXPECT_EQ(f, -2.0f);
}

TEST(BareStrings, StrAndDataAreLengthPrefixedAndFixedDataIsNot) {
  Bytes out;
  Writer w(out);
  w.Str("hi");
  w.Data(Hex("a1b2"));
  const uint8_t fixed[4] = {1, 2, 3, 4};
  w.FixedData(fixed, 4);
  w.Str("");
  EXPECT_EQ(out, Hex("02 6869 02 a1b2 01020304 00"));

  Reader uut(out);
  std::string s;
  Bytes d;
  uint8_t f[4];
  std::string empty = "x";
  ASSERT_TRUE(uut.Str(s) && uut.Data(d) && uut.FixedData(f, 4) && uut.Str(empty));
  EXPECT_EQ(s, "hi");
  EXPECT_EQ(d, Hex("a1b2"));
  EXPECT_EQ(Bytes(f, f + 4), Hex("01020304"));
  EXPECT_EQ(empty, "");
  EXPECT_TRUE(uut.ExpectEnd());
}

// ---- Truncation ----------------------------------------------------------------------

// One of every primitive, in a fixed order.
Bytes EveryPrimitive() {
  Bytes out;
  Writer w(out);
  w.U8(7);
  w.Bool(true);
  w.U16(0xbeef);
  w.U32(0xdeadbeef);
  w.U64(0x0123456789abcdef);
  w.I64(-5);
  w.Uint(300);
  w.Int(-64);
  w.Str("h\xc3\xa9llo");
  w.Data(Hex("00ff"));
  w.U8(1);  // optional present
  w.U32(42);
  const uint8_t fixed[4] = {9, 8, 7, 6};
  w.FixedData(fixed, 4);
  return out;
}

bool ReadEveryPrimitive(Reader& r) {
  uint8_t u8;
  bool b;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  int64_t i64;
  uint64_t uv;
  int64_t iv;
  std::string s;
  Bytes d;
  bool present;
  uint32_t opt;
  uint8_t fixed[4];
  return r.U8(u8) && r.Bool(b) && r.U16(u16) && r.U32(u32) && r.U64(u64) && r.I64(i64) &&
         r.Uint(uv) && r.Int(iv) && r.Str(s) && r.Data(d) && r.Present(present) && present &&
         r.U32(opt) && r.FixedData(fixed, 4);
}

TEST(BareTruncation, EveryStrictPrefixOfAValidSequenceFailsAsTruncated) {
  Bytes full = EveryPrimitive();
  ASSERT_EQ(Outcome(full, ReadEveryPrimitive), "ok");
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix length " + std::to_string(n));
    Reader uut(ByteView(full).first(n));
    EXPECT_FALSE(ReadEveryPrimitive(uut));
    EXPECT_EQ(KindName(uut.failure().kind), KindName(Kind::kTruncated));
    EXPECT_LE(uut.failure().offset, n);
  }
}

TEST(BareTruncation, AnUnfinishedVarintIsTruncated) {
  EXPECT_EQ(Outcome(Hex("80"), ReadUint), "truncated");
  EXPECT_EQ(Outcome(Hex("ff ff ff"), ReadUint), "truncated");
  EXPECT_EQ(Outcome(Bytes{}, ReadUint), "truncated");
}

TEST(BareTruncation, AStrOrDataLongerThanTheInputIsTruncatedAtItsLengthPrefix) {
  Bytes in = Hex("05 6869");
  Reader uut(in);
  std::string s;
  EXPECT_FALSE(uut.Str(s));
  EXPECT_EQ(uut.failure().kind, Kind::kTruncated);
  EXPECT_EQ(uut.failure().offset, 0u);

  Reader data(in);
  Bytes d;
  EXPECT_FALSE(data.Data(d));
  EXPECT_EQ(data.failure().kind, Kind::kTruncated);
}

// ---- Canonical varints and overflow --------------------------------------------------

TEST(BareVarint, NonCanonicalEncodingsAreRejected) {
  for (const char* hex :
       {"80 00", "ff 00", "80 80 00", "81 80 00", "80 80 80 80 80 80 80 80 80 00"}) {
    SCOPED_TRACE(hex);
    Bytes in = Hex(hex);
    Reader uut(in);
    uint64_t v;
    EXPECT_FALSE(uut.Uint(v));
    EXPECT_EQ(KindName(uut.failure().kind), KindName(Kind::kNonCanonicalVarint));
    EXPECT_EQ(uut.failure().offset, 0u);
  }
}

TEST(BareVarint, NonCanonicalIsReportedAtTheVarintStartNotTheInputStart) {
  Bytes in = Hex("01 80 00");
  Reader uut(in);
  uint64_t a;
  uint64_t b;
  ASSERT_TRUE(uut.Uint(a));
  EXPECT_FALSE(uut.Uint(b));
  EXPECT_EQ(uut.failure().kind, Kind::kNonCanonicalVarint);
  EXPECT_EQ(uut.failure().offset, 1u);
}

TEST(BareVarint, ATenthByteAboveOneOverflows) {
  for (const char* hex : {"ff ff ff ff ff ff ff ff ff 02", "80 80 80 80 80 80 80 80 80 7f"}) {
    SCOPED_TRACE(hex);
    EXPECT_EQ(Outcome(Hex(hex), ReadUint), "varint_overflow");
  }
}

TEST(BareVarint, AnElevenByteVarintOverflows) {
  EXPECT_EQ(Outcome(Hex("ff ff ff ff ff ff ff ff ff ff 01"), ReadUint), "varint_overflow");
  EXPECT_EQ(Outcome(Hex("80 80 80 80 80 80 80 80 80 80 01"), ReadUint), "varint_overflow");
}

TEST(BareVarint, ATagAboveU32IsAnUnknownTag) {
  Bytes in = EncodeUint(uint64_t{1} << 32);
  Reader uut(in);
  uint32_t tag;
  EXPECT_FALSE(uut.Tag(tag));
  EXPECT_EQ(uut.failure().kind, Kind::kUnknownTag);

  Bytes max = EncodeUint(0xffffffffu);
  Reader ok(max);
  ASSERT_TRUE(ok.Tag(tag));
  EXPECT_EQ(tag, 0xffffffffu);
}

// ---- bool and optional -----------------------------------------------------------------

TEST(BareBool, AByteAboveOneIsRejected) {
  auto read_bool = [](Reader& r) {
    bool b;
    return r.Bool(b);
  };
  EXPECT_EQ(Outcome(Hex("00"), read_bool), "ok");
  EXPECT_EQ(Outcome(Hex("01"), read_bool), "ok");
  EXPECT_EQ(Outcome(Hex("02"), read_bool), "invalid_bool");
  EXPECT_EQ(Outcome(Hex("ff"), read_bool), "invalid_bool");
}

TEST(BareOptional, APresenceByteAboveOneIsRejected) {
  Bytes in = Hex("01 02");
  Reader uut(in);
  bool present;
  ASSERT_TRUE(uut.Present(present));
  EXPECT_TRUE(present);
  EXPECT_FALSE(uut.Present(present));
  EXPECT_EQ(uut.failure().kind, Kind::kInvalidBool);
  EXPECT_EQ(uut.failure().offset, 1u);
}

// ---- UTF-8 ---------------------------------------------------------------------------

Bytes StrBytes(std::string_view content) {
  Bytes out;
  Writer(out).Str(content);
  return out;
}

TEST(BareUtf8, MalformedSequencesAreRejectedAsInvalidUtf8) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"lone continuation", "\x80"},
      {"continuation after ascii", "ab\xbf"},
      {"overlong two-byte NUL", "\xc0\x80"},
      {"overlong two-byte c1", "\xc1\xbf"},
      {"overlong three-byte", "\xe0\x80\x80"},
      {"overlong four-byte", "\xf0\x80\x80\x80"},
      {"high surrogate", "\xed\xa0\x80"},
      {"low surrogate", "\xed\xbf\xbf"},
      {"above U+10FFFF", "\xf4\x90\x80\x80"},
      {"lead byte f5", "\xf5\x80\x80\x80"},
      {"byte ff", "\xff"},
      {"truncated two-byte", "\xc3"},
      {"truncated three-byte", "\xe2\x82"},
      {"truncated four-byte", "\xf0\x9f\x92"},
      {"bad continuation", "\xe2\x28\xa1"},
      {"invalid after the ascii fast path", "abcdefghijklmnop\x80"},
  };
  for (const auto& [name, content] : cases) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(IsValidUtf8(content));
    Bytes in = StrBytes(content);
    Reader uut(in);
    std::string s;
    EXPECT_FALSE(uut.Str(s));
    EXPECT_EQ(KindName(uut.failure().kind), KindName(Kind::kInvalidUtf8));
    EXPECT_EQ(uut.failure().offset, 0u);  // reported at the length prefix
  }
}

TEST(BareUtf8, WellFormedSequencesOfEveryLengthAreAccepted) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"ascii", "actor-1"},
      {"NUL", std::string("a\0b", 3)},
      {"two-byte", "\xc3\xb1"},
      {"smallest two-byte", "\xc2\x80"},
      {"three-byte", "\xe2\x82\xac"},
      {"smallest three-byte", "\xe0\xa0\x80"},
      {"last before surrogates", "\xed\x9f\xbf"},
      {"first after surrogates", "\xee\x80\x80"},
      {"four-byte", "\xf0\x9f\x92\xac"},
      {"U+10FFFF", "\xf4\x8f\xbf\xbf"},
      {"mixed over the fast path", "abcdefgh\xc3\xb1ijklmnop\xf0\x9f\x92\xac"},
  };
  for (const auto& [name, content] : cases) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(IsValidUtf8(content));
    Bytes in = StrBytes(content);
    Reader uut(in);
    std::string s;
    ASSERT_TRUE(uut.Str(s));
    EXPECT_EQ(s, content);
    EXPECT_TRUE(uut.ExpectEnd());
  }
}

TEST(BareUtf8, DataIsNotValidatedAsUtf8) {
  Bytes in = Hex("02 c080");
  Reader uut(in);
  Bytes d;
  ASSERT_TRUE(uut.Data(d));
  EXPECT_EQ(d, Hex("c080"));
}

// ---- Trailing bytes --------------------------------------------------------------------

TEST(BareTrailingBytes, ExpectEndRejectsUnconsumedInputAtItsOffset) {
  Bytes in = Hex("03 00");
  Reader uut(in);
  uint8_t tag;
  ASSERT_TRUE(uut.U8(tag));
  EXPECT_FALSE(uut.ExpectEnd());
  EXPECT_EQ(uut.failure().kind, Kind::kTrailingBytes);
  EXPECT_EQ(uut.failure().offset, 1u);
}

TEST(BareTrailingBytes, ExpectEndOnAnEmptyRemainderSucceeds) {
  Reader uut(ByteView{});
  EXPECT_TRUE(uut.ExpectEnd());
}

// ---- Container lengths -----------------------------------------------------------------

TEST(BareLength, ACountTheRemainingInputCannotHoldFailsBeforeAnyAllocation) {
  // A list claiming 2^40 one-byte elements followed by only 5 bytes. The limit is lifted
  // so the only thing standing between the count and a 1 TiB reserve() is the
  // remaining-input check; if it were missing the allocation would abort this test.
  Bytes in = EncodeUint(uint64_t{1} << 40);
  Bytes tail = Hex("0102030405");
  in.insert(in.end(), tail.begin(), tail.end());
  Limits unlimited;
  unlimited.max_container_len = std::numeric_limits<uint64_t>::max();
  Reader uut(in, unlimited);
  uint64_t n = 0;
  EXPECT_FALSE(uut.Length(n, 1));
  EXPECT_EQ(KindName(uut.failure().kind), KindName(Kind::kTruncated));
  EXPECT_EQ(uut.failure().offset, 0u);
}

TEST(BareLength, ACountAboveTheContainerLimitIsTooLong) {
  Bytes in = EncodeUint(uint64_t{1} << 40);
  Reader uut(in);  // default limit 2^24
  uint64_t n = 0;
  EXPECT_FALSE(uut.Length(n, 1));
  EXPECT_EQ(uut.failure().kind, Kind::kTooLong);
}

TEST(BareLength, ACountThatExactlyFitsTheInputIsAccepted) {
  Bytes in = Hex("03 aabbccddeeff");
  Reader uut(in);
  uint64_t n = 0;
  ASSERT_TRUE(uut.Length(n, 2));
  EXPECT_EQ(n, 3u);

  Bytes four = Hex("04 aabbccddeeff");
  Reader too_many(four);
  EXPECT_FALSE(too_many.Length(n, 2));
  EXPECT_EQ(too_many.failure().kind, Kind::kTruncated);
}

TEST(BareLength, ZeroSizedElementsAreBoundedOnlyByTheContainerLimit) {
  Limits limits;
  limits.max_container_len = 1000;
  Bytes ok = EncodeUint(1000);
  Reader uut(ok, limits);
  uint64_t n = 0;
  ASSERT_TRUE(uut.Length(n, 0));
  EXPECT_EQ(n, 1000u);

  Bytes over = EncodeUint(1001);
  Reader too_long(over, limits);
  EXPECT_FALSE(too_long.Length(n, 0));
  EXPECT_EQ(too_long.failure().kind, Kind::kTooLong);
}

TEST(BareLength, MaxContainerLenIsInclusive) {
  Limits limits;
  limits.max_container_len = 2;
  Bytes two = Hex("02 0000");
  Reader uut(two, limits);
  uint64_t n = 0;
  EXPECT_TRUE(uut.Length(n, 1));
  Bytes three = Hex("03 000000");
  Reader over(three, limits);
  EXPECT_FALSE(over.Length(n, 1));
  EXPECT_EQ(over.failure().kind, Kind::kTooLong);
  EXPECT_EQ(over.failure().offset, 0u);
}

TEST(BareLength, MaxBytesLenLimitsStrAndData) {
  Limits limits;
  limits.max_bytes_len = 3;
  EXPECT_EQ(Outcome(StrBytes("abc"), ReadStr, limits), "ok");
  EXPECT_EQ(Outcome(StrBytes("abcd"), ReadStr, limits), "too_long");
  auto read_data = [](Reader& r) {
    ByteView d;
    return r.DataView(d);
  };
  EXPECT_EQ(Outcome(Hex("03 010203"), read_data, limits), "ok");
  EXPECT_EQ(Outcome(Hex("04 01020304"), read_data, limits), "too_long");
  // The limit applies before the input-size check: a huge claim is too long, not truncated.
  EXPECT_EQ(Outcome(EncodeUint(uint64_t{1} << 40), read_data, limits), "too_long");
}

// ---- Depth -----------------------------------------------------------------------------

TEST(BareDepth, EnterBeyondMaxDepthIsTooDeep) {
  Limits limits;
  limits.max_depth = 2;
  Bytes empty;
  Reader uut(empty, limits);
  EXPECT_TRUE(uut.Enter());
  EXPECT_TRUE(uut.Enter());
  EXPECT_FALSE(uut.Enter());
  EXPECT_EQ(uut.failure().kind, Kind::kTooDeep);
}

TEST(BareDepth, LeaveReleasesALevel) {
  Limits limits;
  limits.max_depth = 2;
  Bytes empty;
  Reader uut(empty, limits);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(uut.Enter());
    ASSERT_TRUE(uut.Enter());
    uut.Leave();
    uut.Leave();
  }
  EXPECT_TRUE(uut.ok());
}

TEST(BareDepth, ZeroMaxDepthRejectsTheFirstEnter) {
  Limits limits;
  limits.max_depth = 0;
  Bytes empty;
  Reader uut(empty, limits);
  EXPECT_FALSE(uut.Enter());
  EXPECT_EQ(uut.failure().kind, Kind::kTooDeep);
}

// ---- Failure bookkeeping ---------------------------------------------------------------

TEST(BareReader, TheFirstFailureIsKeptAndLaterReadsKeepFailing) {
  Bytes in = Hex("02 00 00 00");
  Reader uut(in);
  bool b;
  EXPECT_FALSE(uut.Bool(b));
  uint8_t u8;
  EXPECT_FALSE(uut.U8(u8));  // bytes remain, but the reader has stopped
  std::string s;
  EXPECT_FALSE(uut.Str(s));
  EXPECT_FALSE(uut.ExpectEnd());
  EXPECT_EQ(uut.failure().kind, Kind::kInvalidBool);
  EXPECT_EQ(uut.failure().offset, 0u);
}

TEST(BareReader, ToErrorIsProtocolDecodeFailedNamingTypeKindAndOffset) {
  Bytes in = Hex("01 80 00");
  Reader uut(in);
  uint64_t v;
  ASSERT_TRUE(uut.Uint(v));
  ASSERT_FALSE(uut.Uint(v));
  Error err = uut.ToError("Thing");
  EXPECT_TRUE(err.Is("protocol", "decode_failed")) << err.ToString();
  EXPECT_EQ(err.message(), "Thing: non-canonical varint (non_canonical_varint at byte 1)");
}

TEST(BareReader, EveryFailureKindHasADistinctName) {
  const Kind kinds[] = {
      Kind::kTruncated,       Kind::kNonCanonicalVarint, Kind::kVarintOverflow, Kind::kInvalidBool,
      Kind::kInvalidUtf8,     Kind::kUnknownTag,         Kind::kTooLong,        Kind::kTooDeep,
      Kind::kDuplicateMapKey, Kind::kTrailingBytes,      Kind::kInvalidValue};
  std::vector<std::string> names;
  for (Kind k : kinds) {
    std::string name = KindName(k);
    EXPECT_NE(name, "unknown");
    for (const auto& other : names) EXPECT_NE(name, other);
    names.push_back(name);
  }
}

}  // namespace
}  // namespace keel::bare
