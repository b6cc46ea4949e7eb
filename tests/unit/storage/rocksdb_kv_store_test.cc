// RocksDbKvStore specifics: opening, persistence across close/reopen, Close semantics.
#include "storage/rocksdb_kv_store.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "storage_test_util.h"

namespace keel::storage {
namespace {

using testing::B;
using testing::IsOk;
using testing::IsStorageError;
using testing::Keys;
using testing::TempDir;

std::unique_ptr<RocksDbKvStore> OpenOrFail(const std::string& path,
                                           const RocksDbKvStoreOptions& options = {}) {
  auto store = RocksDbKvStore::Open(path, options);
  EXPECT_TRUE(IsOk(store));
  return store.has_value() ? std::move(store).value() : nullptr;
}

TEST(RocksDbKvStore, DataSurvivesCloseAndReopen) {
  TempDir dir;
  std::string path = dir.path() + "/db";
  {
    auto uut = OpenOrFail(path);
    ASSERT_NE(uut, nullptr);
    ASSERT_TRUE(IsOk(uut->Put(B("a"), B("1"))));
    ASSERT_TRUE(IsOk(uut->Put(B("b"), B("2"), {.sync = false})));
    auto txn = uut->Begin();
    ASSERT_TRUE(IsOk(txn));
    ASSERT_TRUE(IsOk((*txn)->Put(B("c"), B("3"))));
    ASSERT_TRUE(IsOk((*txn)->Delete(B("a"))));
    ASSERT_TRUE(IsOk((*txn)->Commit({.sync = false})));
    ASSERT_TRUE(IsOk(uut->Close()));
  }
  auto uut = OpenOrFail(path);
  ASSERT_NE(uut, nullptr);
  auto all = uut->Scan(KeyRange::All(), {.reverse = true});
  ASSERT_TRUE(IsOk(all));
  EXPECT_EQ(Keys(*all), (std::vector<std::string>{"c", "b"}));
  auto b = uut->Get(B("b"));
  ASSERT_TRUE(IsOk(b));
  EXPECT_EQ(*b, B("2"));
}

// Extents of `file` that are allocated but never written (FIEMAP_EXTENT_UNWRITTEN, what
// fallocate leaves); nullopt where the file system cannot tell (no FIEMAP, e.g. tmpfs).
std::optional<int> UnwrittenExtents(const std::string& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  constexpr uint32_t kExtents = 256;
  std::vector<char> buf(sizeof(fiemap) + kExtents * sizeof(fiemap_extent), 0);
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  map->fm_start = 0;
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = kExtents;
  const int rc = ::ioctl(fd, FS_IOC_FIEMAP, map);
  ::close(fd);
  if (rc != 0) return std::nullopt;
  int unwritten = 0;
  for (uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
    if ((map->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0) ++unwritten;
  }
  return unwritten;
}

// A second store on a directory that is open says why in words (the usual cause is a second
// engine on the same data directory), and the first store keeps working.
TEST(RocksDbKvStore, OpeningADirectoryInUseSaysSoAndLeavesTheOpenStoreAlone) {
  TempDir dir;
  std::string path = dir.path() + "/db";
  auto first = OpenOrFail(path);
  ASSERT_NE(first, nullptr);
  auto second = RocksDbKvStore::Open(path);
  ASSERT_FALSE(second.has_value());
  EXPECT_TRUE(second.error().Is("storage", "io")) << second.error().ToString();
  EXPECT_NE(second.error().message().find("in use by another store"), std::string::npos)
      << second.error().message();
  EXPECT_NE(second.error().message().find(path), std::string::npos);
  ASSERT_TRUE(IsOk(first->Put(B("k"), B("v"))));
  ASSERT_TRUE(IsOk(first->Close()));
  // Closed, the directory opens again.
  auto third = OpenOrFail(path);
  ASSERT_NE(third, nullptr);
  auto v = third->Get(B("k"));
  ASSERT_TRUE(IsOk(v));
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ(**v, B("v"));
}

// The write-ahead log's space ahead of the writes is part of its file size and written
// (zeros, not fallocated: a synced commit's fdatasync then journals neither the inode size
// nor an extent conversion), and a store copied while open — the files as a crash leaves
// them, the log ending in zeros — opens with every synced write, including 4 KiB values
// written across several zeroed chunks, and takes new ones. With the option off the log
// grows with what was written.
TEST(RocksDbKvStore, WalSpaceIsWrittenAheadInItsSizeAndItsZeroTailReadsAsTheEnd) {
  for (const bool preallocate : {true, false}) {
    SCOPED_TRACE(preallocate ? "zeroed ahead" : "growing size");
    TempDir dir;
    const std::string path = dir.path() + "/db";
    const std::string crashed = dir.path() + "/crashed";
    RocksDbKvStoreOptions options;
    options.write_buffer_size = size_t{16} << 20;  // no flush: one log holds it all
    options.preallocate_wal_with_size = preallocate;
    auto uut = OpenOrFail(path, options);
    ASSERT_NE(uut, nullptr);
    ASSERT_TRUE(IsOk(uut->Put(B("a"), B("1"))));
    ASSERT_TRUE(IsOk(uut->Put(B("b"), B("2"))));
    auto wal = [&]() -> std::pair<std::string, uintmax_t> {
      std::pair<std::string, uintmax_t> largest{"", 0};
      for (const auto& entry : std::filesystem::directory_iterator(path)) {
        if (entry.path().extension() == ".log" && entry.file_size() >= largest.second) {
          largest = {entry.path().string(), entry.file_size()};
        }
      }
      return largest;
    };
    if (preallocate) {
      EXPECT_GE(wal().second, uintmax_t{1} << 20) << "the zeroed space is in the size";
    } else {
      EXPECT_GT(wal().second, 0u);
      EXPECT_LT(wal().second, uintmax_t{64} << 10) << "only what was written";
    }
    // 600 synced 4 KiB values: ~2.4 MiB of log, past two zeroed chunks.
    const Bytes page(4096, 0x5a);
    for (int i = 0; i < 600; ++i) ASSERT_TRUE(IsOk(uut->Put(B("p" + std::to_string(i)), page)));
    if (preallocate) {
      EXPECT_GE(wal().second, uintmax_t{3} << 20);
      std::optional<int> unwritten = UnwrittenExtents(wal().first);
      if (unwritten.has_value()) {
        EXPECT_EQ(*unwritten, 0) << "the log's space ahead was fallocated, not written";
      }
    }
    std::filesystem::copy(path, crashed, std::filesystem::copy_options::recursive);
    ASSERT_TRUE(IsOk(uut->Close()));

    {
      auto copy = OpenOrFail(crashed, options);
      ASSERT_NE(copy, nullptr);
      auto all = copy->Scan(KeyRange::All(), {});
      ASSERT_TRUE(IsOk(all));
      ASSERT_EQ(all->size(), 602u);
      EXPECT_EQ(Keys(*all).front(), "a");
      EXPECT_EQ(all->back().value, page);
      ASSERT_TRUE(IsOk(copy->Put(B("c"), B("3"))));
      ASSERT_TRUE(IsOk(copy->Close()));
    }
    auto again = OpenOrFail(crashed, options);
    ASSERT_NE(again, nullptr);
    auto c = again->Get(B("c"));
    ASSERT_TRUE(IsOk(c));
    EXPECT_EQ(*c, B("3"));
    auto count = again->Scan(KeyRange::All(), {});
    ASSERT_TRUE(IsOk(count));
    EXPECT_EQ(count->size(), 603u);
  }
}

// SyncWrites (the group commit's one fsync) runs while other threads commit, and fails
// with storage.closed once the store is closed. (Its durability — surviving power loss —
// cannot be observed in a test; FaultyKvStore models it for the engine's tests.)
TEST(RocksDbKvStore, SyncWritesRunsBesideConcurrentCommitsAndFailsWhenClosed) {
  TempDir dir;
  auto uut = OpenOrFail(dir.path() + "/db");
  ASSERT_NE(uut, nullptr);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    // k0 always: the syncs may all finish before this thread first runs.
    for (int i = 0; i < 200 && (i == 0 || !stop.load()); ++i) {
      ASSERT_TRUE(IsOk(uut->Put(B("k" + std::to_string(i)), B("v"), {.sync = false})));
    }
  });
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(IsOk(uut->SyncWrites()));
  stop = true;
  writer.join();
  EXPECT_TRUE(IsOk(uut->SyncWrites()));
  auto got = uut->Get(B("k0"));
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ(*got, B("v"));
  ASSERT_TRUE(IsOk(uut->Close()));
  EXPECT_TRUE(IsStorageError(uut->SyncWrites(), kClosed));
}

// Every way of asking for a sync: a synced one-key write, a synced transaction, a synced
// unchecked batch and SyncWrites.
void SyncEveryWay(RocksDbKvStore& uut) {
  ASSERT_TRUE(IsOk(uut.Put(B("a"), B("1"), {.sync = true})));
  auto txn = uut.Begin();
  ASSERT_TRUE(IsOk(txn));
  ASSERT_TRUE(IsOk((*txn)->Put(B("b"), B("2"))));
  ASSERT_TRUE(IsOk((*txn)->Commit({.sync = true})));
  const Bytes key = B("c");
  const Bytes value = B("3");
  const std::vector<KvWrite> writes = {KvWrite{key, ByteView(value)}};
  ASSERT_TRUE(IsOk(uut.WriteUnchecked(writes, {.sync = true})));
  ASSERT_TRUE(IsOk(uut.SyncWrites()));
}

// On tmpfs an fsync does nothing, so the store does not make the call. What a synced write
// wrote is in the files all the same: a copy of the directory taken while the store is
// open (what a crashed process leaves) holds every write.
TEST(RocksDbKvStore, SyncsAreSkippedOnAFilesystemInMemoryAndTheWritesAreInTheFiles) {
  if (!OnMemoryFilesystem("/dev/shm")) GTEST_SKIP() << "/dev/shm is not tmpfs here";
  TempDir dir("keel-test", "/dev/shm");
  auto uut = OpenOrFail(dir.path() + "/db");
  ASSERT_NE(uut, nullptr);
  EXPECT_TRUE(uut->SkipsSyncs());
  SyncEveryWay(*uut);
  EXPECT_EQ(uut->syncs_skipped(), 4u);
  ASSERT_TRUE(IsOk(uut->Put(B("d"), B("4"), {.sync = false})));
  EXPECT_EQ(uut->syncs_skipped(), 4u);  // an unsynced write asked for nothing

  std::filesystem::copy(dir.path() + "/db", dir.path() + "/copy",
                        std::filesystem::copy_options::recursive);
  auto copy = OpenOrFail(dir.path() + "/copy");
  ASSERT_NE(copy, nullptr);
  auto all = copy->Scan(KeyRange::All());
  ASSERT_TRUE(IsOk(all));
  EXPECT_EQ(Keys(*all), (std::vector<std::string>{"a", "b", "c", "d"}));
  ASSERT_TRUE(IsOk(uut->Close()));
  EXPECT_TRUE(IsStorageError(uut->SyncWrites(), kClosed));
}

TEST(RocksDbKvStore, SyncsAreMadeOnADiskAndWhenSkippingIsTurnedOff) {
  TempDir dir;
  if (OnMemoryFilesystem(dir.path())) GTEST_SKIP() << "the temp directory is in memory here";
  auto on_disk = OpenOrFail(dir.path() + "/db");
  ASSERT_NE(on_disk, nullptr);
  EXPECT_FALSE(on_disk->SkipsSyncs());
  SyncEveryWay(*on_disk);
  EXPECT_EQ(on_disk->syncs_skipped(), 0u);

  if (!OnMemoryFilesystem("/dev/shm")) return;
  TempDir shm("keel-test", "/dev/shm");
  auto turned_off = OpenOrFail(shm.path() + "/db", {.skip_syncs_on_memory_fs = false});
  ASSERT_NE(turned_off, nullptr);
  EXPECT_FALSE(turned_off->SkipsSyncs());
  SyncEveryWay(*turned_off);
  EXPECT_EQ(turned_off->syncs_skipped(), 0u);
}

// Commits made with CommitOptions::rewritten_often insert each key from a hint (its previous
// version's position); other commits do not. Either way every key lands where a search
// puts it: keys rewritten many times in turn (the case hints are for), keys inserted before
// and after one another, hinted and unhinted writes of the same keys, through a batch and
// through a transaction, all read back newest-first in key order, before and after reopen.
TEST(RocksDbKvStore, InsertHintsOnlyForCommitsThatAskAndEveryKeyStaysInPlace) {
  TempDir dir;
  const std::string path = dir.path() + "/db";
  std::map<std::string, std::string> expected;
  auto check = [&](KvStore& store) {
    auto all = store.Scan(KeyRange::All());
    ASSERT_TRUE(IsOk(all));
    ASSERT_EQ(all->size(), expected.size());
    size_t i = 0;
    for (const auto& [k, v] : expected) {
      EXPECT_EQ((*all)[i].key, B(k)) << i;
      EXPECT_EQ((*all)[i].value, B(v)) << k;
      auto got = store.Get(B(k));
      ASSERT_TRUE(IsOk(got));
      EXPECT_EQ(*got, B(v)) << k;
      ++i;
    }
  };
  {
    auto uut = OpenOrFail(path);
    ASSERT_NE(uut, nullptr);
    ASSERT_TRUE(IsOk(uut->Put(B("plain"), B("0"), {.sync = false})));
    EXPECT_EQ(uut->hinted_inserts(), 0u);
    uint64_t hinted = 0;
    for (int round = 0; round < 60; ++round) {
      for (int actor = 0; actor < 4; ++actor) {
        // Two records per actor, written in turn; every third round also a key that sorts
        // before both and one that sorts between them.
        const std::string base = "actor" + std::to_string(actor);
        std::vector<std::string> keys = {base + "/state", base + "/conn"};
        if (round % 3 == 0) {
          keys.push_back(base + "/a");
          keys.push_back(base + "/d" + std::to_string(round));
        }
        const bool hint = (round + actor) % 4 != 0;
        std::vector<Bytes> key_bytes, value_bytes;
        for (const std::string& k : keys) {
          expected[k] = std::to_string(round) + ":" + k;
          key_bytes.push_back(B(k));
          value_bytes.push_back(B(expected[k]));
        }
        std::vector<KvWrite> writes;
        for (size_t i = 0; i < keys.size(); ++i) writes.push_back({key_bytes[i], value_bytes[i]});
        ASSERT_TRUE(IsOk(uut->WriteUnchecked(writes, {.sync = false, .rewritten_often = hint})));
        if (hint) hinted += keys.size();
        ASSERT_EQ(uut->hinted_inserts(), hinted) << "round " << round << " actor " << actor;
      }
      if (round % 10 == 0) {
        auto txn = uut->Begin();
        ASSERT_TRUE(IsOk(txn));
        ASSERT_TRUE(IsOk((*txn)->Put(B("actor0/state"), B("txn" + std::to_string(round)))));
        ASSERT_TRUE(IsOk((*txn)->Commit({.sync = false, .rewritten_often = true})));
        expected["actor0/state"] = "txn" + std::to_string(round);
        ASSERT_EQ(uut->hinted_inserts(), ++hinted);
      }
    }
    expected["plain"] = "0";
    check(*uut);
    ASSERT_TRUE(IsOk(uut->Close()));
  }
  auto reopened = OpenOrFail(path);
  ASSERT_NE(reopened, nullptr);
  check(*reopened);
  EXPECT_EQ(reopened->hinted_inserts(), 0u) << "the log's replay asks for no hints";
}

TEST(RocksDbKvStore, DestructorClosesSoThePathCanBeReopened) {
  TempDir dir;
  std::string path = dir.path() + "/db";
  {
    auto uut = OpenOrFail(path);
    ASSERT_NE(uut, nullptr);
    ASSERT_TRUE(IsOk(uut->Put(B("k"), B("v"))));
  }
  auto uut = OpenOrFail(path);
  ASSERT_NE(uut, nullptr);
  auto v = uut->Get(B("k"));
  ASSERT_TRUE(IsOk(v));
  EXPECT_EQ(*v, B("v"));
}

TEST(RocksDbKvStore, OpenCreatesParentDirectories) {
  TempDir dir;
  std::string path = dir.path() + "/a/b/c/db";
  auto uut = OpenOrFail(path);
  ASSERT_NE(uut, nullptr);
  EXPECT_TRUE(std::filesystem::is_directory(path));
  EXPECT_EQ(uut->path(), path);
}

TEST(RocksDbKvStore, OpenReportsStructuredErrors) {
  TempDir dir;
  EXPECT_TRUE(IsStorageError(RocksDbKvStore::Open(""), kInvalidArgument));
  EXPECT_TRUE(
      IsStorageError(RocksDbKvStore::Open(dir.path() + "/missing", {.create_if_missing = false}),
                     kInvalidArgument));
  std::string path = dir.path() + "/db";
  auto first = OpenOrFail(path);
  ASSERT_NE(first, nullptr);
  // The directory is locked by the open store.
  EXPECT_TRUE(IsStorageError(RocksDbKvStore::Open(path), kIo));
  ASSERT_TRUE(IsOk(first->Close()));
  EXPECT_TRUE(
      IsStorageError(RocksDbKvStore::Open(path, {.error_if_exists = true}), kInvalidArgument));
}

TEST(RocksDbKvStore, CloseReleasesOpenTxnsAndSnapshots) {
  TempDir dir;
  std::string path = dir.path() + "/db";
  auto uut = OpenOrFail(path);
  ASSERT_NE(uut, nullptr);
  ASSERT_TRUE(IsOk(uut->Put(B("a"), B("1"))));
  auto txn = uut->Begin();
  ASSERT_TRUE(IsOk(txn));
  ASSERT_TRUE(IsOk((*txn)->Put(B("b"), B("uncommitted"))));
  auto snapshot = uut->NewSnapshot();
  ASSERT_TRUE(IsOk(snapshot));
  ASSERT_TRUE(IsOk(uut->Close()));
  // The files are released although the handles are still alive.
  auto reopened = OpenOrFail(path);
  ASSERT_NE(reopened, nullptr);
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kClosed));
  EXPECT_TRUE(IsStorageError((*snapshot)->Get(B("a")), kClosed));
  auto b = reopened->Get(B("b"));
  ASSERT_TRUE(IsOk(b));
  EXPECT_EQ(*b, std::nullopt);
}

}  // namespace
}  // namespace keel::storage
