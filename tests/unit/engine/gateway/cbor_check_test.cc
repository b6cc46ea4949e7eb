#include "engine/gateway/cbor_check.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

TEST(CheckCborItem, AcceptsWellFormedItems) {
  std::vector<Bytes> ok = {
      {0x00},                                // 0
      {0x17},                                // 23
      {0x18, 0x18},                          // 24
      {0x1b, 0, 0, 0, 0, 0, 0, 0, 1},        // u64
      {0x20},                                // -1
      {0x40},                                // h''
      {0x43, 1, 2, 3},                       // h'010203'
      {0x63, 'a', 'b', 'c'},                 // "abc"
      {0x62, 0xC3, 0xA9},                    // "é"
      {0x80},                                // []
      {0x82, 0x01, 0x02},                    // [1, 2]
      {0xa1, 0x61, 'a', 0x01},               // {"a": 1}
      {0x9f, 0x01, 0x02, 0xff},              // [_ 1, 2]
      {0xbf, 0x61, 'a', 0x01, 0xff},         // {_ "a": 1}
      {0x5f, 0x41, 0x01, 0x42, 2, 3, 0xff},  // (_ h'01', h'0203')
      {0x7f, 0x61, 'a', 0xff},               // (_ "a")
      {0xc1, 0x1a, 0, 0, 0, 1},              // 1(1)
      {0xf4},
      {0xf5},
      {0xf6},
      {0xf7},                                // false true null undefined
      {0xf8, 0x20},                          // simple(32)
      {0xf9, 0x3c, 0x00},                    // 1.0 half
      {0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0},  // 1.0 double
      {0x01, 0x02},                          // trailing bytes after one item are ignored
  };
  for (const Bytes& b : ok) {
    EXPECT_TRUE(CheckCborItem(b).ok()) << ToHex(b);
  }
}

TEST(CheckCborItem, RejectsMalformedItems) {
  std::vector<Bytes> bad = {
      {},                                                      // empty
      {0x18},                                                  // missing argument byte
      {0x1c},                                                  // reserved additional information
      {0x1f},                                                  // indefinite unsigned
      {0x3f},                                                  // indefinite negative
      {0xdf, 0x01},                                            // indefinite tag
      {0x43, 1, 2},                                            // short byte string
      {0x62, 0xC3},                                            // short text
      {0x62, 0xff, 0xfe},                                      // text not UTF-8
      {0x82, 0x01},                                            // array missing an item
      {0xa1, 0x01},                                            // map missing a value
      {0x9f, 0x01},                                            // indefinite array without break
      {0xff},                                                  // lone break
      {0x5f, 0x61, 'a', 0xff},                                 // text chunk in a byte string
      {0x5f, 0x5f, 0xff, 0xff},                                // nested indefinite chunk
      {0xf8, 0x10},                                            // two-byte simple value below 32
      {0xc1},                                                  // tag without content
      {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},  // huge count
      {0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},  // huge length
  };
  for (const Bytes& b : bad) {
    Status s = CheckCborItem(b);
    ASSERT_FALSE(s.ok()) << ToHex(b);
    EXPECT_TRUE(s.error().Is("cbor", "invalid")) << ToHex(b);
  }
}

TEST(CheckCborItem, BoundsNestingDepth) {
  Bytes shallow(kMaxCborDepth, 0x81);
  shallow.push_back(0x00);
  EXPECT_TRUE(CheckCborItem(shallow).ok());
  Bytes deep(kMaxCborDepth + 1, 0x81);
  deep.push_back(0x00);
  EXPECT_FALSE(CheckCborItem(deep).ok());
  Bytes very_deep(100000, 0x81);
  EXPECT_FALSE(CheckCborItem(very_deep).ok());
}

}  // namespace
}  // namespace keel::engine::gateway
