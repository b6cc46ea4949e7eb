// MemKvStore specifics (history collection) and the key helpers of kv_store.h.
#include "storage/mem_kv_store.h"

#include <optional>

#include <gtest/gtest.h>

#include "storage/kv_store.h"
#include "storage_test_util.h"

namespace keel::storage {
namespace {

using testing::B;
using testing::IsOk;

TEST(KeyHelpers, CompareKeysIsUnsignedLexicographicWithPrefixesFirst) {
  EXPECT_EQ(CompareKeys(B(""), B("")), 0);
  EXPECT_LT(CompareKeys(B(""), B(std::string("\x00", 1))), 0);
  EXPECT_LT(CompareKeys(B("a"), B(std::string("a\x00", 2))), 0);
  EXPECT_LT(CompareKeys(B("\x7f"), B("\x80")), 0);
  EXPECT_GT(CompareKeys(B("\xff"), B("a\xff")), 0);
  EXPECT_EQ(CompareKeys(B("ab"), B("ab")), 0);
}

TEST(KeyHelpers, PrefixEndIsTheFirstKeyAfterThePrefix) {
  EXPECT_EQ(PrefixEnd(B("a")), B("b"));
  EXPECT_EQ(PrefixEnd(B("a\xff")), B("b"));
  EXPECT_EQ(PrefixEnd(B("a\xfe\xff\xff")), B("a\xff"));
  EXPECT_EQ(PrefixEnd(B("\xff\xff")), std::nullopt);
  EXPECT_EQ(PrefixEnd(B("")), std::nullopt);
  EXPECT_EQ(KeyAfter(B("a")), B(std::string("a\x00", 2)));
}

TEST(KeyHelpers, KeyRangeContainsHalfOpen) {
  KeyRange r = KeyRange::Between(B("b"), B("d"));
  EXPECT_FALSE(r.Contains(B("a")));
  EXPECT_TRUE(r.Contains(B("b")));
  EXPECT_TRUE(r.Contains(B("c\xff")));
  EXPECT_FALSE(r.Contains(B("d")));
  EXPECT_FALSE(r.empty());
  EXPECT_TRUE(KeyRange::Between(B("b"), B("b")).empty());
  EXPECT_TRUE(KeyRange::Between(B("c"), B("b")).empty());
  EXPECT_FALSE(KeyRange::All().empty());
  EXPECT_TRUE(KeyRange::All().Contains(B("\xff\xff")));
  EXPECT_TRUE(KeyRange::Prefix(B("\xff")).Contains(B("\xff\xff\xff")));
}

TEST(MemKvStore, HistoryIsKeptForSnapshotsAndCollectedAfterThem) {
  MemKvStore uut;
  ASSERT_TRUE(IsOk(uut.Put(B("k"), B("v1"))));
  ASSERT_TRUE(IsOk(uut.Put(B("gone"), B("x"))));
  EXPECT_EQ(uut.VersionCountForTest(), 2u);
  {
    auto snapshot = uut.NewSnapshot();
    ASSERT_TRUE(IsOk(snapshot));
    ASSERT_TRUE(IsOk(uut.Put(B("k"), B("v2"))));
    ASSERT_TRUE(IsOk(uut.Put(B("k"), B("v3"))));
    ASSERT_TRUE(IsOk(uut.Delete(B("gone"))));
    // k: v1 (snapshot) + v3 (latest); gone: x (snapshot) + tombstone.
    EXPECT_EQ(uut.VersionCountForTest(), 4u);
    auto old = (*snapshot)->Get(B("k"));
    ASSERT_TRUE(IsOk(old));
    EXPECT_EQ(*old, B("v1"));
  }
  EXPECT_EQ(uut.VersionCountForTest(), 1u);
  auto latest = uut.Get(B("k"));
  ASSERT_TRUE(IsOk(latest));
  EXPECT_EQ(*latest, B("v3"));
}

TEST(MemKvStore, DeletingAnAbsentKeyDoesNotMakeReadersConflict) {
  MemKvStore uut;
  auto reader = uut.Begin();
  ASSERT_TRUE(IsOk(reader));
  ASSERT_TRUE(IsOk((*reader)->Get(B("k"))));
  ASSERT_TRUE(IsOk((*reader)->Put(B("other"), B("1"))));
  ASSERT_TRUE(IsOk(uut.Delete(B("k"))));
  EXPECT_TRUE(IsOk((*reader)->Commit()));
}

}  // namespace
}  // namespace keel::storage
