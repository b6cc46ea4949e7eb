// FaultyKvStore: injected failures surface as structured errors and change nothing, the
// store keeps working afterwards, and SimulateCrash loses exactly the unsynced commits.
#include "storage/faulty_kv_store.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage_test_util.h"

namespace keel::storage {
namespace {

using testing::B;
using testing::IsOk;
using testing::IsStorageError;
using testing::S;
using testing::TempDir;

std::string Dump(KvReader& reader) {
  auto all = reader.Scan(KeyRange::All());
  EXPECT_TRUE(IsOk(all));
  std::string out;
  if (!all.has_value()) return "<error>";
  for (const KeyValue& kv : *all) out += S(kv.key) + "=" + S(kv.value) + ";";
  return out;
}

Status Write(KvStore& store, std::vector<std::pair<std::string, std::optional<std::string>>> ops,
             bool sync) {
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvTxn> txn, store.Begin());
  for (const auto& [key, value] : ops) {
    KEEL_RETURN_IF_ERROR(value.has_value() ? txn->Put(B(key), B(*value)) : txn->Delete(B(key)));
  }
  return txn->Commit({.sync = sync});
}

// Built by appending: g++ 12 -O3 reports a false -Wrestrict on `"k" + std::to_string(i)`.
std::string NumberedKey(int i) {
  std::string key = "k";
  key += std::to_string(i);
  return key;
}

TEST(FaultyKvStore, NthOperationFailsOnceAndTheStoreKeepsWorking) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  ASSERT_TRUE(IsOk(uut.Put(B("a"), B("1"))));
  uut.FailNthOperation(2);
  EXPECT_TRUE(IsOk(uut.Get(B("a"))));                           // 1st
  EXPECT_TRUE(IsStorageError(uut.Scan(KeyRange::All()), kIo));  // 2nd: injected
  EXPECT_TRUE(IsOk(uut.Scan(KeyRange::All())));                 // one-shot
  EXPECT_EQ(uut.injected_failure_count(), 1u);

  // Inside a txn: the failed read leaves the txn usable.
  auto txn = uut.Begin();
  ASSERT_TRUE(IsOk(txn));
  uut.FailNthOperation(1);
  EXPECT_TRUE(IsStorageError((*txn)->Get(B("a")), kIo));
  auto a = (*txn)->Get(B("a"));
  ASSERT_TRUE(IsOk(a));
  EXPECT_EQ(*a, B("1"));
  ASSERT_TRUE(IsOk((*txn)->Put(B("a"), B("2"))));
  ASSERT_TRUE(IsOk((*txn)->Commit()));
  EXPECT_EQ(Dump(uut.base()), "a=2;");
}

TEST(FaultyKvStore, NthOperationCanBeACommitThatThenAppliesNothing) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  auto txn = uut.Begin();
  ASSERT_TRUE(IsOk(txn));
  ASSERT_TRUE(IsOk((*txn)->Put(B("a"), B("1"))));
  uint64_t before = uut.operation_count();
  uut.FailNthOperation(1);
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kIo));
  EXPECT_EQ(uut.operation_count(), before + 1);
  EXPECT_EQ(Dump(uut.base()), "");
  ASSERT_TRUE(IsOk(uut.Put(B("a"), B("2"))));
  EXPECT_EQ(Dump(uut), "a=2;");
}

TEST(FaultyKvStore, FailedCommitsWriteNothing) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  ASSERT_TRUE(IsOk(uut.Put(B("keep"), B("1"))));
  uut.FailNextCommits(2);
  EXPECT_TRUE(IsStorageError(Write(uut, {{"a", "1"}, {"keep", std::nullopt}}, true), kIo));
  EXPECT_TRUE(IsStorageError(Write(uut, {{"b", "1"}}, false), kIo));
  EXPECT_EQ(Dump(uut.base()), "keep=1;");
  EXPECT_TRUE(IsOk(Write(uut, {{"c", "1"}}, true)));
  EXPECT_EQ(Dump(uut), "c=1;keep=1;");
  EXPECT_EQ(uut.injected_failure_count(), 2u);
}

TEST(FaultyKvStore, AppliedButFailedCommitReportsIoAfterApplying) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  uut.FailNextCommits(1, CommitFault::kAppliedButFailed);
  EXPECT_TRUE(IsStorageError(Write(uut, {{"a", "1"}}, true), kIo));
  EXPECT_EQ(Dump(uut), "a=1;");
}

TEST(FaultyKvStore, RandomCommitFailuresReplayFromTheSeed) {
  auto run = [](uint64_t seed) {
    FaultyKvStore uut(std::make_unique<MemKvStore>(), seed);
    uut.SetCommitFailureProbability(0.5);
    std::string pattern;
    for (int i = 0; i < 64; ++i) {
      bool ok = Write(uut, {{NumberedKey(i), "v"}}, false).has_value();
      pattern += ok ? '1' : '0';
    }
    uut.ClearFaults();
    // Exactly the successful commits were applied.
    auto all = uut.Scan(KeyRange::All());
    EXPECT_TRUE(IsOk(all));
    EXPECT_EQ(all->size(), static_cast<size_t>(std::count(pattern.begin(), pattern.end(), '1')));
    EXPECT_EQ(uut.injected_failure_count(),
              static_cast<uint64_t>(std::count(pattern.begin(), pattern.end(), '0')));
    return pattern;
  };
  std::string first = run(42);
  EXPECT_EQ(first, run(42));
  EXPECT_NE(first.find('0'), std::string::npos);
  EXPECT_NE(first.find('1'), std::string::npos);
}

TEST(FaultyKvStore, SimulateCrashLosesExactlyTheUnsyncedCommits) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "1"}, {"b", "1"}, {"r/1", "x"}, {"r/2", "y"}}, true)));
  const std::string durable = Dump(uut);
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "2"}, {"c", "2"}}, false)));
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "3"}, {"b", std::nullopt}}, false)));
  {
    auto txn = uut.Begin();
    ASSERT_TRUE(IsOk(txn));
    ASSERT_TRUE(IsOk((*txn)->DeleteRange(KeyRange::Prefix(AsBytes("r/")))));
    ASSERT_TRUE(IsOk((*txn)->Put(B("r/3"), B("z"))));
    ASSERT_TRUE(IsOk((*txn)->Commit({.sync = false})));
  }
  EXPECT_EQ(uut.unsynced_commit_count(), 3u);
  EXPECT_EQ(Dump(uut), "a=3;c=2;r/3=z;");
  ASSERT_TRUE(IsOk(uut.SimulateCrash()));
  EXPECT_EQ(Dump(uut), durable);
  EXPECT_EQ(uut.unsynced_commit_count(), 0u);
  // A second crash with nothing unsynced changes nothing.
  ASSERT_TRUE(IsOk(uut.SimulateCrash()));
  EXPECT_EQ(Dump(uut), durable);
}

TEST(FaultyKvStore, SyncedCommitMakesEarlierUnsyncedCommitsDurable) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "1"}}, false)));
  ASSERT_TRUE(IsOk(Write(uut, {{"b", "1"}}, true)));
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "2"}, {"c", "1"}}, false)));
  ASSERT_TRUE(IsOk(uut.SimulateCrash()));
  EXPECT_EQ(Dump(uut), "a=1;b=1;");
}

TEST(FaultyKvStore, HandlesOpenAcrossACrashFailAndNewOnesWork) {
  FaultyKvStore uut(std::make_unique<MemKvStore>());
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "1"}}, false)));
  auto txn = uut.Begin();
  ASSERT_TRUE(IsOk(txn));
  ASSERT_TRUE(IsOk((*txn)->Put(B("b"), B("1"))));
  auto snapshot = uut.NewSnapshot();
  ASSERT_TRUE(IsOk(snapshot));
  ASSERT_TRUE(IsOk(uut.SimulateCrash()));
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kIo));
  EXPECT_TRUE(IsStorageError((*snapshot)->Get(B("a")), kIo));
  EXPECT_EQ(Dump(uut), "");
  ASSERT_TRUE(IsOk(Write(uut, {{"c", "1"}}, true)));
  EXPECT_EQ(Dump(uut), "c=1;");
}

TEST(FaultyKvStore, SimulateCrashWorksOverRocksDb) {
  TempDir dir;
  auto rocks = RocksDbKvStore::Open(dir.path() + "/db");
  ASSERT_TRUE(IsOk(rocks));
  FaultyKvStore uut(std::move(rocks).value());
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "1"}}, true)));
  ASSERT_TRUE(IsOk(Write(uut, {{"a", "2"}, {"b", "2"}}, false)));
  ASSERT_TRUE(IsOk(uut.SimulateCrash()));
  EXPECT_EQ(Dump(uut), "a=1;");
}

}  // namespace
}  // namespace keel::storage
