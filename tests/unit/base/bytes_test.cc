#include "base/bytes.h"

#include <initializer_list>
#include <optional>
#include <string>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace keel
