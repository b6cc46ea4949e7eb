// The KvStore contract (kv_store.h) as a typed test suite, for every backend:
// tests/unit/storage/kv_store_test.cc instantiates it for the embedded backends (label
// unit) and postgres_kv_store_test.cc for PostgreSQL (label integration).
//
//   INSTANTIATE_TYPED_TEST_SUITE_P(Prefix, KvStoreTest, ::testing::Types<MyBackend>,
//                                  contract::BackendNames);
//
// A backend type has `std::unique_ptr<KvStore> Open()`, called once per test on a fresh
// backend object, which returns a fresh, empty store (on failure it reports with
// ADD_FAILURE and returns null); the backend object outlives the store. With BackendNames
// the tests are named after the backend's `static constexpr const char* kName`.
#pragma once

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/kv_store.h"
#include "storage_test_util.h"

namespace keel::storage::contract {

using testing::B;
using testing::IsOk;
using testing::IsStorageError;
using testing::Keys;
using testing::S;

// Names each instantiation after its backend's kName.
struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};

template <typename Backend>
class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uut_ = backend_.Open();
    ASSERT_NE(uut_, nullptr);
  }

  void Put(std::string_view key, std::string_view value) {
    ASSERT_TRUE(IsOk(uut_->Put(B(key), B(value))));
  }

  std::optional<std::string> Get(KvReader& reader, std::string_view key) {
    auto value = reader.Get(B(key));
    EXPECT_TRUE(IsOk(value));
    if (!value.has_value() || !value->has_value()) return std::nullopt;
    return S(**value);
  }
  std::optional<std::string> Get(std::string_view key) { return Get(*uut_, key); }

  std::vector<std::string> ScanKeys(KvReader& reader, const KeyRange& range,
                                    ScanOptions options = {}) {
    auto entries = reader.Scan(range, options);
    EXPECT_TRUE(IsOk(entries));
    return entries.has_value() ? Keys(*entries) : std::vector<std::string>{"<error>"};
  }
  std::vector<std::string> ScanKeys(const KeyRange& range, ScanOptions options = {}) {
    return ScanKeys(*uut_, range, options);
  }

  std::unique_ptr<KvTxn> Begin() {
    auto txn = uut_->Begin();
    EXPECT_TRUE(IsOk(txn));
    return txn.has_value() ? std::move(txn).value() : nullptr;
  }

  // Declared first so the store is destroyed before its directory.
  Backend backend_;
  std::unique_ptr<KvStore> uut_;
};

TYPED_TEST_SUITE_P(KvStoreTest);

inline KeyRange Between(std::string_view begin, std::string_view end) {
  return KeyRange::Between(AsBytes(begin), AsBytes(end));
}
inline KeyRange From(std::string_view begin) { return KeyRange::From(AsBytes(begin)); }
inline ScanOptions Reverse(size_t limit = kNoLimit) { return {.limit = limit, .reverse = true}; }
inline ScanOptions Limit(size_t limit) { return {.limit = limit}; }

// ---- point operations

TYPED_TEST_P(KvStoreTest, EmptyStoreHasNoKeys) {
  EXPECT_EQ(this->Get("missing"), std::nullopt);
  EXPECT_TRUE(this->ScanKeys(KeyRange::All()).empty());
  EXPECT_TRUE(this->ScanKeys(KeyRange::All(), Reverse()).empty());
}

TYPED_TEST_P(KvStoreTest, PutThenGetReturnsTheValue) {
  this->Put("k", "v");
  EXPECT_EQ(this->Get("k"), "v");
  EXPECT_EQ(this->Get(std::string("k\x00", 2)), std::nullopt);
  EXPECT_EQ(this->Get(""), std::nullopt);
}

TYPED_TEST_P(KvStoreTest, PutOverwritesAndDeleteRemoves) {
  this->Put("k", "v1");
  this->Put("k", "v2");
  EXPECT_EQ(this->Get("k"), "v2");
  ASSERT_TRUE(IsOk(this->uut_->Delete(B("k"))));
  EXPECT_EQ(this->Get("k"), std::nullopt);
  EXPECT_TRUE(this->ScanKeys(KeyRange::All()).empty());
  ASSERT_TRUE(IsOk(this->uut_->Delete(B("never-existed"))));
}

TYPED_TEST_P(KvStoreTest, EmptyKeyAndEmptyValueAreOrdinaryEntries) {
  this->Put("", "");
  this->Put("a", "");
  EXPECT_EQ(this->Get(""), "");
  EXPECT_EQ(this->Get("a"), "");
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"", "a"}));
}

TYPED_TEST_P(KvStoreTest, LargeValuesRoundTrip) {
  std::string big(4 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) >> 3);
  this->Put("big", big);
  this->Put("small", "s");
  EXPECT_EQ(this->Get("big"), big);
  auto entries = this->uut_->ScanPrefix(B("big"));
  ASSERT_TRUE(IsOk(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].value, B(big));
}

// ---- ordering and scans

TYPED_TEST_P(KvStoreTest, KeysAreOrderedByUnsignedBytesWithPrefixesFirst) {
  std::vector<std::string> sorted = {std::string(""),
                                     std::string("\x00", 1),
                                     std::string("\x00\x00", 2),
                                     std::string("\x00\xff", 2),
                                     "\x01",
                                     "a",
                                     std::string("a\x00", 2),
                                     "a\x01",
                                     "ab",
                                     "a\x7f",
                                     "a\xff",
                                     "b",
                                     "\x7f",
                                     "\x80",
                                     "\xfe",
                                     "\xff",
                                     std::string("\xff\x00", 2),
                                     "\xff\xff"};
  std::vector<std::string> shuffled = sorted;
  std::reverse(shuffled.begin(), shuffled.end());
  std::rotate(shuffled.begin(), shuffled.begin() + 7, shuffled.end());
  auto txn = this->Begin();
  for (const std::string& k : shuffled) ASSERT_TRUE(IsOk(txn->Put(B(k), B("v"))));
  ASSERT_TRUE(IsOk(txn->Commit()));

  EXPECT_EQ(this->ScanKeys(KeyRange::All()), sorted);
  std::vector<std::string> reversed(sorted.rbegin(), sorted.rend());
  EXPECT_EQ(this->ScanKeys(KeyRange::All(), Reverse()), reversed);
}

TYPED_TEST_P(KvStoreTest, ScanHonoursHalfOpenBoundsInBothDirections) {
  for (const char* k : {"a", "b", "c", "d", "e"}) this->Put(k, "v");
  using V = std::vector<std::string>;
  EXPECT_EQ(this->ScanKeys(Between("b", "d")), (V{"b", "c"}));
  EXPECT_EQ(this->ScanKeys(Between("b", "d"), Reverse()), (V{"c", "b"}));
  // Bounds between keys.
  EXPECT_EQ(this->ScanKeys(Between("aa", "cc")), (V{"b", "c"}));
  EXPECT_EQ(this->ScanKeys(Between("aa", "cc"), Reverse()), (V{"c", "b"}));
  // Bounds outside the stored keys.
  EXPECT_EQ(this->ScanKeys(Between("", "zz")), (V{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(this->ScanKeys(Between("", "zz"), Reverse()), (V{"e", "d", "c", "b", "a"}));
  EXPECT_EQ(this->ScanKeys(From("c")), (V{"c", "d", "e"}));
}

TYPED_TEST_P(KvStoreTest, EmptyAndInvertedRangesReturnNothing) {
  for (const char* k : {"a", "b", "c"}) this->Put(k, "v");
  for (ScanOptions options : {ScanOptions{}, Reverse()}) {
    EXPECT_TRUE(this->ScanKeys(Between("b", "b"), options).empty());
    EXPECT_TRUE(this->ScanKeys(Between("c", "a"), options).empty());
    EXPECT_TRUE(this->ScanKeys(Between("bb", "bc"), options).empty());
    EXPECT_TRUE(this->ScanKeys(Between("", ""), options).empty());
    EXPECT_TRUE(this->ScanKeys(From("d"), options).empty());
  }
}

TYPED_TEST_P(KvStoreTest, ScanLimitsApplyFromTheScanStart) {
  for (const char* k : {"a", "b", "c", "d"}) this->Put(k, "v");
  using V = std::vector<std::string>;
  EXPECT_TRUE(this->ScanKeys(KeyRange::All(), Limit(0)).empty());
  EXPECT_TRUE(this->ScanKeys(KeyRange::All(), Reverse(0)).empty());
  EXPECT_EQ(this->ScanKeys(KeyRange::All(), Limit(1)), (V{"a"}));
  EXPECT_EQ(this->ScanKeys(KeyRange::All(), Reverse(1)), (V{"d"}));
  EXPECT_EQ(this->ScanKeys(Between("b", "d"), Limit(1)), (V{"b"}));
  EXPECT_EQ(this->ScanKeys(Between("b", "d"), Reverse(1)), (V{"c"}));
  EXPECT_EQ(this->ScanKeys(KeyRange::All(), Limit(1000)), (V{"a", "b", "c", "d"}));
  EXPECT_EQ(this->ScanKeys(KeyRange::All(), Reverse(3)), (V{"d", "c", "b"}));
}

TYPED_TEST_P(KvStoreTest, ReverseScanStartsFromTheEndOfTheKeyspace) {
  for (const char* k : {"a", "b", "\xff", "\xff\xff"}) this->Put(k, "v");
  using V = std::vector<std::string>;
  EXPECT_EQ(this->ScanKeys(From("b"), Reverse(2)), (V{"\xff\xff", "\xff"}));
  EXPECT_EQ(this->ScanKeys(From(""), Reverse()), (V{"\xff\xff", "\xff", "b", "a"}));
}

TYPED_TEST_P(KvStoreTest, PrefixScanUsesTrueBytePrefixes) {
  for (std::string k :
       {std::string("o\xff"), std::string("p"), std::string("p\x00", 2), std::string("p\x01"),
        std::string("p\xff"), std::string("p\xff\xff"), std::string("q"), std::string("\xff"),
        std::string("\xff\x01"), std::string("\xff\xff\x02")}) {
    this->Put(k, "v");
  }
  using V = std::vector<std::string>;
  auto prefix = [&](std::string_view p, ScanOptions options = {}) {
    auto entries = this->uut_->ScanPrefix(AsBytes(p), options);
    EXPECT_TRUE(IsOk(entries));
    return entries.has_value() ? Keys(*entries) : V{"<error>"};
  };
  EXPECT_EQ(prefix("p"), (V{"p", std::string("p\x00", 2), "p\x01", "p\xff", "p\xff\xff"}));
  EXPECT_EQ(prefix("p", Reverse(2)), (V{"p\xff\xff", "p\xff"}));
  EXPECT_EQ(prefix("p\xff"), (V{"p\xff", "p\xff\xff"}));
  // A prefix of only 0xff bytes has no end key: it runs to the end of the keyspace.
  EXPECT_EQ(prefix("\xff"), (V{"\xff", "\xff\x01", "\xff\xff\x02"}));
  EXPECT_EQ(prefix("\xff\xff"), (V{"\xff\xff\x02"}));
  EXPECT_EQ(prefix("x"), V{});
}

TYPED_TEST_P(KvStoreTest, PagesWithKeyAfterCoverEveryKeyOnce) {
  std::vector<std::string> all;
  auto txn = this->Begin();
  for (int i = 0; i < 25; ++i) {
    std::string k = "k";  // appended: g++ 12 -O3 has a false -Wrestrict on "k" + string
    k += std::to_string(100 + i);
    all.push_back(k);
    ASSERT_TRUE(IsOk(txn->Put(B(k), B("v"))));
  }
  ASSERT_TRUE(IsOk(txn->Commit()));
  std::vector<std::string> forward;
  KeyRange range = KeyRange::Prefix(AsBytes("k"));
  for (int page = 0; page < 10; ++page) {
    auto entries = this->uut_->Scan(range, Limit(4));
    ASSERT_TRUE(IsOk(entries));
    if (entries->empty()) break;
    for (const KeyValue& kv : *entries) forward.push_back(S(kv.key));
    range.begin = KeyAfter(entries->back().key);
  }
  EXPECT_EQ(forward, all);
  std::vector<std::string> backward;
  range = KeyRange::Prefix(AsBytes("k"));
  for (int page = 0; page < 10; ++page) {
    auto entries = this->uut_->Scan(range, Reverse(4));
    ASSERT_TRUE(IsOk(entries));
    if (entries->empty()) break;
    for (const KeyValue& kv : *entries) backward.push_back(S(kv.key));
    range.end = entries->back().key;
  }
  EXPECT_EQ(backward, std::vector<std::string>(all.rbegin(), all.rend()));
}

// ---- DeleteRange

TYPED_TEST_P(KvStoreTest, DeleteRangeRemovesExactlyTheRange) {
  for (const char* k : {"a", "b", "b\x00", "c", "d", "e"}) this->Put(k, "v");
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->DeleteRange(Between("b", "d"))));
  ASSERT_TRUE(IsOk(txn->Commit()));
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"a", "d", "e"}));

  txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->DeleteRange(From("d"))));
  ASSERT_TRUE(IsOk(txn->DeleteRange(Between("z", "a"))));  // inverted: nothing
  ASSERT_TRUE(IsOk(txn->Commit()));
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"a"}));
}

TYPED_TEST_P(KvStoreTest, DeleteRangeCoversTheTxnsOwnWritesInOrder) {
  for (const char* k : {"a", "c1"}) this->Put(k, "v");
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("c2"), B("mine"))));
  ASSERT_TRUE(IsOk(txn->DeleteRange(KeyRange::Prefix(AsBytes("c")))));
  EXPECT_EQ(this->Get(*txn, "c1"), std::nullopt);
  EXPECT_EQ(this->Get(*txn, "c2"), std::nullopt);
  ASSERT_TRUE(IsOk(txn->Put(B("c3"), B("after"))));  // a write after the range delete stays
  EXPECT_EQ(this->ScanKeys(*txn, KeyRange::All()), (std::vector<std::string>{"a", "c3"}));
  ASSERT_TRUE(IsOk(txn->Commit()));
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"a", "c3"}));
  EXPECT_EQ(this->Get("c3"), "after");
}

// ---- snapshots and transactions

TYPED_TEST_P(KvStoreTest, SnapshotDoesNotSeeLaterCommits) {
  this->Put("a", "1");
  this->Put("b", "1");
  auto snapshot = this->uut_->NewSnapshot();
  ASSERT_TRUE(IsOk(snapshot));
  this->Put("a", "2");
  ASSERT_TRUE(IsOk(this->uut_->Delete(B("b"))));
  this->Put("c", "2");
  EXPECT_EQ(this->Get(**snapshot, "a"), "1");
  EXPECT_EQ(this->Get(**snapshot, "b"), "1");
  EXPECT_EQ(this->Get(**snapshot, "c"), std::nullopt);
  EXPECT_EQ(this->ScanKeys(**snapshot, KeyRange::All()), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(this->ScanKeys(**snapshot, KeyRange::All(), Reverse()),
            (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(this->Get("a"), "2");
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"a", "c"}));
}

TYPED_TEST_P(KvStoreTest, TxnReadsAtItsSnapshotNotLaterCommits) {
  this->Put("a", "1");
  auto txn = this->Begin();
  this->Put("a", "2");
  this->Put("b", "2");
  EXPECT_EQ(this->Get(*txn, "a"), "1");
  EXPECT_EQ(this->Get(*txn, "b"), std::nullopt);
  EXPECT_EQ(this->ScanKeys(*txn, KeyRange::All()), (std::vector<std::string>{"a"}));
  txn->Rollback();
}

TYPED_TEST_P(KvStoreTest, TxnReadsItsOwnWritesMergedInKeyOrder) {
  for (const char* k : {"a", "c", "e"}) this->Put(k, "old");
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("b"), B("new"))));
  ASSERT_TRUE(IsOk(txn->Put(B("c"), B("new"))));
  ASSERT_TRUE(IsOk(txn->Delete(B("e"))));
  ASSERT_TRUE(IsOk(txn->Put(B("f"), B("new"))));
  EXPECT_EQ(this->Get(*txn, "b"), "new");
  EXPECT_EQ(this->Get(*txn, "c"), "new");
  EXPECT_EQ(this->Get(*txn, "e"), std::nullopt);
  using V = std::vector<std::string>;
  EXPECT_EQ(this->ScanKeys(*txn, KeyRange::All()), (V{"a", "b", "c", "f"}));
  EXPECT_EQ(this->ScanKeys(*txn, KeyRange::All(), Reverse()), (V{"f", "c", "b", "a"}));
  EXPECT_EQ(this->ScanKeys(*txn, Between("b", "f"), Reverse(1)), (V{"c"}));
  EXPECT_EQ(this->ScanKeys(*txn, From("d"), Limit(1)), (V{"f"}));
  // Buffered writes outside the bounds stay outside.
  EXPECT_EQ(this->ScanKeys(*txn, Between("b", "d")), (V{"b", "c"}));
  EXPECT_EQ(this->ScanKeys(*txn, Between("aa", "e"), Reverse()), (V{"c", "b"}));
  auto entries = txn->Scan(Between("c", "d"));
  ASSERT_TRUE(IsOk(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ(S((*entries)[0].value), "new");
  // Nothing is visible outside before Commit.
  EXPECT_EQ(this->Get("b"), std::nullopt);
  EXPECT_EQ(this->Get("e"), "old");
  ASSERT_TRUE(IsOk(txn->Commit()));
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (V{"a", "b", "c", "f"}));
}

TYPED_TEST_P(KvStoreTest, RolledBackOrDroppedTxnWritesNothing) {
  this->Put("a", "1");
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("a"), B("2"))));
  ASSERT_TRUE(IsOk(txn->Put(B("b"), B("2"))));
  ASSERT_TRUE(IsOk(txn->DeleteRange(KeyRange::All())));
  txn->Rollback();
  txn->Rollback();  // idempotent
  EXPECT_TRUE(IsStorageError(txn->Commit(), kFailedPrecondition));
  {
    auto dropped = this->Begin();
    ASSERT_TRUE(IsOk(dropped->Put(B("c"), B("3"))));
  }
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"a"}));
  EXPECT_EQ(this->Get("a"), "1");
}

TYPED_TEST_P(KvStoreTest, FinishedTxnRejectsEveryCall) {
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("a"), B("1"))));
  ASSERT_TRUE(IsOk(txn->Commit()));
  EXPECT_TRUE(IsStorageError(txn->Get(B("a")), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(txn->Scan(KeyRange::All()), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(txn->Put(B("a"), B("2")), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(txn->Delete(B("a")), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(txn->DeleteRange(KeyRange::All()), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(txn->Commit(), kFailedPrecondition));
  EXPECT_EQ(this->Get("a"), "1");
}

TYPED_TEST_P(KvStoreTest, UnsyncedCommitsAreVisibleImmediately) {
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("a"), B("1"))));
  ASSERT_TRUE(IsOk(txn->Commit({.sync = false})));
  EXPECT_EQ(this->Get("a"), "1");
}

// ---- conflicts

TYPED_TEST_P(KvStoreTest, SecondReadModifyWriteOfAKeyConflictsAndAppliesNothing) {
  this->Put("counter", "0");
  auto t1 = this->Begin();
  auto t2 = this->Begin();
  EXPECT_EQ(this->Get(*t1, "counter"), "0");
  EXPECT_EQ(this->Get(*t2, "counter"), "0");
  ASSERT_TRUE(IsOk(t1->Put(B("counter"), B("1"))));
  ASSERT_TRUE(IsOk(t2->Put(B("counter"), B("1"))));
  ASSERT_TRUE(IsOk(t2->Put(B("other"), B("from t2"))));
  ASSERT_TRUE(IsOk(t1->Commit()));
  EXPECT_TRUE(IsStorageError(t2->Commit(), kConflict));
  EXPECT_EQ(this->Get("counter"), "1");
  EXPECT_EQ(this->Get("other"), std::nullopt);
}

TYPED_TEST_P(KvStoreTest, ReadOfAnAbsentKeyConflictsWithAConcurrentInsert) {
  auto t1 = this->Begin();
  EXPECT_EQ(this->Get(*t1, "slot"), std::nullopt);
  ASSERT_TRUE(IsOk(t1->Put(B("claimed-by"), B("t1"))));
  this->Put("slot", "t2");
  EXPECT_TRUE(IsStorageError(t1->Commit(), kConflict));
  EXPECT_EQ(this->Get("claimed-by"), std::nullopt);
}

TYPED_TEST_P(KvStoreTest, ScannedKeyConflictsWithAConcurrentUpdateOrDelete) {
  this->Put("q/1", "a");
  this->Put("q/2", "b");
  auto t1 = this->Begin();
  EXPECT_EQ(this->ScanKeys(*t1, KeyRange::Prefix(AsBytes("q/"))),
            (std::vector<std::string>{"q/1", "q/2"}));
  ASSERT_TRUE(IsOk(t1->Put(B("done"), B("1"))));
  ASSERT_TRUE(IsOk(this->uut_->Delete(B("q/2"))));
  EXPECT_TRUE(IsStorageError(t1->Commit(), kConflict));

  auto t2 = this->Begin();
  EXPECT_EQ(this->ScanKeys(*t2, KeyRange::Prefix(AsBytes("q/")), Limit(1)),
            (std::vector<std::string>{"q/1"}));
  ASSERT_TRUE(IsOk(t2->Put(B("done"), B("2"))));
  this->Put("q/1", "changed");
  EXPECT_TRUE(IsStorageError(t2->Commit(), kConflict));
  EXPECT_EQ(this->Get("done"), std::nullopt);
}

TYPED_TEST_P(KvStoreTest, ConcurrentWritesOfTheSameKeyConflict) {
  auto t1 = this->Begin();
  auto t2 = this->Begin();
  ASSERT_TRUE(IsOk(t1->Put(B("k"), B("1"))));
  ASSERT_TRUE(IsOk(t2->Put(B("k"), B("2"))));
  ASSERT_TRUE(IsOk(t1->Commit()));
  EXPECT_TRUE(IsStorageError(t2->Commit(), kConflict));
  EXPECT_EQ(this->Get("k"), "1");
}

TYPED_TEST_P(KvStoreTest, DeleteRangeConflictsWithAConcurrentUpdateOfADeletedKey) {
  this->Put("r/1", "a");
  auto t1 = this->Begin();
  ASSERT_TRUE(IsOk(t1->DeleteRange(KeyRange::Prefix(AsBytes("r/")))));
  this->Put("r/1", "b");
  EXPECT_TRUE(IsStorageError(t1->Commit(), kConflict));
  EXPECT_EQ(this->Get("r/1"), "b");
}

TYPED_TEST_P(KvStoreTest, TxnsOnDisjointKeysBothCommit) {
  this->Put("a", "0");
  this->Put("b", "0");
  auto t1 = this->Begin();
  auto t2 = this->Begin();
  EXPECT_EQ(this->Get(*t1, "a"), "0");
  EXPECT_EQ(this->Get(*t2, "b"), "0");
  ASSERT_TRUE(IsOk(t1->Put(B("a"), B("1"))));
  ASSERT_TRUE(IsOk(t2->Put(B("b"), B("1"))));
  ASSERT_TRUE(IsOk(t1->Commit()));
  ASSERT_TRUE(IsOk(t2->Commit()));
  EXPECT_EQ(this->Get("a"), "1");
  EXPECT_EQ(this->Get("b"), "1");
}

TYPED_TEST_P(KvStoreTest, ReadOnlyTxnCommitsEvenIfWhatItReadChanged) {
  this->Put("a", "0");
  auto t1 = this->Begin();
  EXPECT_EQ(this->Get(*t1, "a"), "0");
  this->Put("a", "1");
  EXPECT_TRUE(IsOk(t1->Commit()));
}

// ---- RunTransaction

inline Status Increment(KvTxn& txn, ByteView key) {
  KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> value, txn.Get(key));
  int n = value.has_value() ? std::stoi(S(*value)) : 0;
  return txn.Put(key, B(std::to_string(n + 1)));
}

TYPED_TEST_P(KvStoreTest, RunTransactionMakesConcurrentIncrementsExact) {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 40;
  std::atomic<int> attempts{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        Status s = RunTransaction(*this->uut_,
                                  [&](KvTxn& txn) {
                                    attempts.fetch_add(1);
                                    return Increment(txn, AsBytes("counter"));
                                  },
                                  /*max_attempts=*/1000, {.sync = false});
        if (!s.has_value()) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(this->Get("counter"), std::to_string(kThreads * kIncrements));
  EXPECT_GE(attempts.load(), kThreads * kIncrements);
}

TYPED_TEST_P(KvStoreTest, RunTransactionGivesUpAfterMaxAttempts) {
  int calls = 0;
  Status s = RunTransaction(
      *this->uut_,
      [&](KvTxn& txn) -> Status {
        ++calls;
        KEEL_RETURN_IF_ERROR(Increment(txn, AsBytes("hot")));
        // Someone else always gets there first.
        return this->uut_->Put(B("hot"), B("100"));
      },
      /*max_attempts=*/3);
  EXPECT_TRUE(IsStorageError(s, kConflict));
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(this->Get("hot"), "100");
  EXPECT_TRUE(IsStorageError(RunTransaction(
                                 *this->uut_, [](KvTxn&) { return OkStatus(); }, 0),
                             kInvalidArgument));
}

TYPED_TEST_P(KvStoreTest, RunTransactionReturnsTheValueOrTheFirstOtherError) {
  this->Put("a", "7");
  Result<int> value = RunTransaction(*this->uut_, [](KvTxn& txn) -> Result<int> {
    KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> v, txn.Get(AsBytes("a")));
    return std::stoi(S(*v));
  });
  ASSERT_TRUE(IsOk(value));
  EXPECT_EQ(*value, 7);

  int calls = 0;
  Status failed = RunTransaction(*this->uut_, [&](KvTxn& txn) -> Status {
    ++calls;
    KEEL_RETURN_IF_ERROR(txn.Put(B("b"), B("1")));
    return StorageError(kInvalidArgument, "caller's own error");
  });
  EXPECT_TRUE(IsStorageError(failed, kInvalidArgument));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(this->Get("b"), std::nullopt);
}

// ---- unchecked batches

TYPED_TEST_P(KvStoreTest, WriteUncheckedAppliesPutsAndDeletesInOrderAtOnce) {
  this->Put("gone", "x");
  this->Put("kept", "y");
  auto snapshot = this->uut_->NewSnapshot();
  ASSERT_TRUE(IsOk(snapshot));
  const Bytes a = B("a"), gone = B("gone"), one = B("1"), two = B("2"), empty;
  const Bytes empty_key;
  const std::vector<KvWrite> writes = {
      {a, ByteView(one)}, {gone, std::nullopt}, {a, ByteView(two)}, {empty_key, ByteView(empty)}};
  ASSERT_TRUE(IsOk(this->uut_->WriteUnchecked(writes, {.sync = false})));
  EXPECT_EQ(this->Get("a"), "2") << "the later write of a key wins";
  EXPECT_EQ(this->Get("gone"), std::nullopt);
  EXPECT_EQ(this->Get(""), "");
  EXPECT_EQ(this->ScanKeys(KeyRange::All()), (std::vector<std::string>{"", "a", "kept"}));
  // One commit: a snapshot from before sees none of it.
  EXPECT_EQ(this->Get(**snapshot, "a"), std::nullopt);
  EXPECT_EQ(this->Get(**snapshot, "gone"), "x");
  ASSERT_TRUE(IsOk(this->uut_->WriteUnchecked({}, {})));
}

TYPED_TEST_P(KvStoreTest, TxnThatReadAKeyConflictsWithALaterUncheckedWriteOfIt) {
  this->Put("usage", "1");
  auto t1 = this->Begin();
  EXPECT_EQ(this->Get(*t1, "usage"), "1");
  ASSERT_TRUE(IsOk(t1->Put(B("usage"), B("2"))));
  const Bytes key = B("usage"), value = B("5");
  ASSERT_TRUE(IsOk(this->uut_->WriteUnchecked(std::vector<KvWrite>{{key, ByteView(value)}}, {})));
  EXPECT_TRUE(IsStorageError(t1->Commit(), kConflict));
  EXPECT_EQ(this->Get("usage"), "5");
}

// ---- Close

TYPED_TEST_P(KvStoreTest, CloseFailsLaterCallsWithClosed) {
  this->Put("a", "1");
  auto txn = this->Begin();
  ASSERT_TRUE(IsOk(txn->Put(B("b"), B("1"))));
  auto snapshot = this->uut_->NewSnapshot();
  ASSERT_TRUE(IsOk(snapshot));
  ASSERT_TRUE(IsOk(this->uut_->Close()));
  ASSERT_TRUE(IsOk(this->uut_->Close()));  // idempotent
  EXPECT_TRUE(IsStorageError(this->uut_->Get(B("a")), kClosed));
  EXPECT_TRUE(IsStorageError(this->uut_->Scan(KeyRange::All()), kClosed));
  EXPECT_TRUE(IsStorageError(this->uut_->Begin(), kClosed));
  EXPECT_TRUE(IsStorageError(this->uut_->NewSnapshot(), kClosed));
  EXPECT_TRUE(IsStorageError(this->uut_->Put(B("c"), B("1")), kClosed));
  EXPECT_TRUE(IsStorageError((*snapshot)->Get(B("a")), kClosed));
  EXPECT_TRUE(IsStorageError(txn->Get(B("a")), kClosed));
  EXPECT_TRUE(IsStorageError(txn->Commit(), kClosed));
  const Bytes key = B("d");
  EXPECT_TRUE(IsStorageError(
      this->uut_->WriteUnchecked(std::vector<KvWrite>{{key, std::nullopt}}, {}), kClosed));
}

REGISTER_TYPED_TEST_SUITE_P(
    KvStoreTest, EmptyStoreHasNoKeys, PutThenGetReturnsTheValue, PutOverwritesAndDeleteRemoves,
    EmptyKeyAndEmptyValueAreOrdinaryEntries, LargeValuesRoundTrip,
    KeysAreOrderedByUnsignedBytesWithPrefixesFirst, ScanHonoursHalfOpenBoundsInBothDirections,
    EmptyAndInvertedRangesReturnNothing, ScanLimitsApplyFromTheScanStart,
    ReverseScanStartsFromTheEndOfTheKeyspace, PrefixScanUsesTrueBytePrefixes,
    PagesWithKeyAfterCoverEveryKeyOnce, DeleteRangeRemovesExactlyTheRange,
    DeleteRangeCoversTheTxnsOwnWritesInOrder, SnapshotDoesNotSeeLaterCommits,
    TxnReadsAtItsSnapshotNotLaterCommits, TxnReadsItsOwnWritesMergedInKeyOrder,
    RolledBackOrDroppedTxnWritesNothing, FinishedTxnRejectsEveryCall,
    UnsyncedCommitsAreVisibleImmediately, SecondReadModifyWriteOfAKeyConflictsAndAppliesNothing,
    ReadOfAnAbsentKeyConflictsWithAConcurrentInsert,
    ScannedKeyConflictsWithAConcurrentUpdateOrDelete, ConcurrentWritesOfTheSameKeyConflict,
    DeleteRangeConflictsWithAConcurrentUpdateOfADeletedKey, TxnsOnDisjointKeysBothCommit,
    ReadOnlyTxnCommitsEvenIfWhatItReadChanged, RunTransactionMakesConcurrentIncrementsExact,
    RunTransactionGivesUpAfterMaxAttempts, RunTransactionReturnsTheValueOrTheFirstOtherError,
    WriteUncheckedAppliesPutsAndDeletesInOrderAtOnce,
    TxnThatReadAKeyConflictsWithALaterUncheckedWriteOfIt, CloseFailsLaterCallsWithClosed);

}  // namespace keel::storage::contract
