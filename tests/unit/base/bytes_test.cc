#include "base/bytes.h"

#include <stdexcept>

#include <initializer_list>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "base/build_exact.h"

namespace keel {
namespace {

TEST(Bytes, ToHexIsLowercaseWithoutSeparators) {
  Bytes data = {0x00, 0x0f, 0xab, 0xff};
  EXPECT_EQ(ToHex(data), "000fabff");
}

TEST(Bytes, ToHexOfEmptyIsEmpty) { EXPECT_EQ(ToHex(Bytes()), ""); }

TEST(Bytes, FromHexAcceptsBothCases) {
  EXPECT_EQ(FromHex("0FaB"), std::optional<Bytes>(Bytes{0x0f, 0xab}));
}

TEST(Bytes, FromHexOfEmptyIsEmptyBytes) {
  std::optional<Bytes> uut = FromHex("");
  ASSERT_TRUE(uut.has_value());
  EXPECT_TRUE(uut->empty());
}

TEST(Bytes, FromHexInvertsToHexForEveryByteValue) {
  Bytes all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(FromHex(ToHex(all)), std::optional<Bytes>(all));
}

TEST(Bytes, FromHexRejectsOddLength) {
  EXPECT_EQ(FromHex("0"), std::nullopt);
  EXPECT_EQ(FromHex("abc"), std::nullopt);
}

TEST(Bytes, FromHexRejectsNonHexDigits) {
  for (std::string text : std::initializer_list<std::string>{"0g", "g0", "zz", " 0", "0x00", "0-",
                                                             std::string("0\0", 2)}) {
    EXPECT_EQ(FromHex(text), std::nullopt) << "text: " << text;
  }
}

TEST(Bytes, AsBytesAndAsStringViewTheSameMemory) {
  std::string text("hi\0there", 8);
  ByteView view = AsBytes(text);
  EXPECT_EQ(view.data(), reinterpret_cast<const uint8_t*>(text.data()));
  EXPECT_EQ(view.size(), text.size());
  EXPECT_EQ(AsString(view), text);
}

void AppendRun(Bytes& out, uint8_t value, size_t count) {
  for (size_t i = 0; i < count; ++i) out.push_back(value);
}

TEST(BuildExact, ReturnsWhatFillAppendedWithNoSpareCapacity) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{100}, size_t{5000}}) {
    Bytes built = BuildExact([&](Bytes& out) {
      EXPECT_TRUE(out.empty());  // the scratch buffer starts empty every time
      AppendRun(out, 0x5a, n);
    });
    EXPECT_EQ(built, Bytes(n, 0x5a));
    EXPECT_EQ(built.capacity(), n);
  }
}

TEST(BuildExact, ABuildInsideAnotherUsesItsOwnBuffer) {
  Bytes inner;
  Bytes outer = BuildExact([&](Bytes& out) {
    AppendRun(out, 1, 10);
    inner = BuildExact([](Bytes& nested) { AppendRun(nested, 2, 7); });
    AppendRun(out, 3, 5);
  });
  Bytes expected(10, 1);
  AppendRun(expected, 3, 5);
  EXPECT_EQ(outer, expected);
  EXPECT_EQ(inner, Bytes(7, 2));
}

TEST(BuildExact, AThrowingFillLeavesTheScratchBufferUsable) {
  EXPECT_THROW(BuildExact([](Bytes& out) {
                 AppendRun(out, 9, 4);
                 throw std::runtime_error("encoder failed");
               }),
               std::runtime_error);
  // Released by the throw: the next build gets it, empty, rather than a fresh buffer
  // holding the failed build's bytes.
  Bytes built = BuildExact([](Bytes& out) {
    EXPECT_TRUE(out.empty());
    AppendRun(out, 4, 2);
  });
  EXPECT_EQ(built, Bytes(2, 4));
  Bytes after = BuildExact([](Bytes& out) { AppendRun(out, 5, 1); });
  EXPECT_EQ(after, Bytes(1, 5));
}

TEST(BuildExact, ALargeBuildIsNotKeptForTheNextOne) {
  const size_t large = 1 << 20;
  Bytes big = BuildExact([&](Bytes& out) { AppendRun(out, 7, large); });
  EXPECT_EQ(big.size(), large);
  size_t scratch_capacity = 0;
  BuildExact([&](Bytes& out) { scratch_capacity = out.capacity(); });
  EXPECT_LT(scratch_capacity, large);
}

}  // namespace
}  // namespace keel
