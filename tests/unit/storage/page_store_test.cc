#include "storage/page_store.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage_test_util.h"

namespace keel::storage {
namespace {

using testing::IsOk;
using testing::IsStorageError;
using testing::TempDir;

constexpr size_t kPage = kSqlitePageSize;

// A 19-byte binary actor id: 0x01, 17 × `fill`, then `last`.
Bytes Actor(uint8_t last, uint8_t fill = 0xAB) {
  Bytes id(kKeelActorIdSize, fill);
  id[0] = 0x01;
  id[kKeelActorIdSize - 1] = last;
  return id;
}

Bytes PageOf(uint8_t fill, size_t size = kPage) { return Bytes(size, fill); }

template <typename T>
::testing::AssertionResult IsSqliteError(const Result<T>& result, std::string_view code) {
  if (result.has_value()) {
    return ::testing::AssertionFailure() << "expected sqlite." << code << ", got a value";
  }
  if (!result.error().Is(kSqliteErrorGroup, code)) {
    return ::testing::AssertionFailure()
           << "expected sqlite." << code << ", got " << result.error().ToString();
  }
  return ::testing::AssertionSuccess();
}

CommitRequest Req(std::vector<std::pair<uint32_t, uint8_t>> pages, uint32_t size,
                  int64_t now_ms = 1000) {
  CommitRequest r;
  for (auto [pgno, fill] : pages) r.dirty_pages.push_back({pgno, PageOf(fill)});
  r.db_size_pages = size;
  r.now_ms = now_ms;
  return r;
}

// Every key of the actor's database in the raw store ([05 a 20, 05 a 22)).
size_t DatabaseKeyCount(KvStore& store, ByteView actor) {
  auto entries = store.Scan(PageStore::DatabaseRange(actor));
  EXPECT_TRUE(IsOk(entries));
  return entries.has_value() ? entries->size() : 0;
}

// ---------------------------------------------------------------------------------------
// Core behaviour over both real backends.

enum class Backend { kMem, kRocksDb };

class PageStoreBackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kMem) {
      store_ = std::make_unique<MemKvStore>();
    } else {
      auto opened = RocksDbKvStore::Open(dir_.path() + "/db");
      ASSERT_TRUE(IsOk(opened));
      store_ = std::move(opened).value();
    }
  }
  void TearDown() override {
    if (store_) {
      EXPECT_TRUE(IsOk(store_->Close()));
    }
  }

  TempDir dir_;
  std::unique_ptr<KvStore> store_;
};

TEST_P(PageStoreBackendTest, CommitThenGetReturnsTheBytes) {
  PageStore pages(*store_);
  Bytes a = Actor(1);
  auto committed = pages.Commit(a, Req({{1, 0x11}, {2, 0x22}, {4, 0x44}}, 4, 1234));
  ASSERT_TRUE(IsOk(committed));
  EXPECT_EQ(committed->head_txid, 1u);

  auto got = pages.GetPages(a, {4, 1, 2, 3, 5, 1});
  ASSERT_TRUE(IsOk(got));
  ASSERT_EQ(got->size(), 6u);
  EXPECT_EQ((*got)[0], (Page{4, PageOf(0x44)}));
  EXPECT_EQ((*got)[1], (Page{1, PageOf(0x11)}));
  EXPECT_EQ((*got)[2], (Page{2, PageOf(0x22)}));
  EXPECT_EQ((*got)[3], (Page{3, PageOf(0x00)}));  // never written below the size: zeros
  EXPECT_EQ((*got)[4], (Page{5, std::nullopt}));  // beyond the size: absent
  EXPECT_EQ((*got)[5], (Page{1, PageOf(0x11)}));

  auto head = pages.ReadHead(a);
  ASSERT_TRUE(IsOk(head));
  ASSERT_TRUE(head->has_value());
  EXPECT_EQ((*head)->head_txid, 1u);
  EXPECT_EQ((*head)->db_size_pages, 4u);
  EXPECT_EQ((*head)->last_commit_ms, 1234);
  EXPECT_EQ((*head)->stored_bytes, 3 * kPage);
  EXPECT_EQ((*head)->generation, std::nullopt);

  // The raw layout: head + 3 pages, page keys big-endian, the guard never written.
  EXPECT_EQ(DatabaseKeyCount(*store_, a), 4u);
  auto raw = store_->Get(PageStore::PageKey(a, 4));
  ASSERT_TRUE(IsOk(raw));
  ASSERT_TRUE(raw->has_value());
  EXPECT_EQ(**raw, PageOf(0x44));
  auto guard = store_->Get(PageStore::GuardKey(a));
  ASSERT_TRUE(IsOk(guard));
  EXPECT_FALSE(guard->has_value());
}

TEST_P(PageStoreBackendTest, TruncateGenerationAndDelete) {
  PageStore pages(*store_);
  Bytes a = Actor(1);
  ASSERT_TRUE(IsOk(pages.SetGeneration(a, 3)));
  ASSERT_TRUE(IsOk(pages.Commit(a, Req({{1, 1}, {2, 2}, {3, 3}, {4, 4}}, 4))));
  CommitRequest shrink = Req({{1, 9}}, 2);
  shrink.expected_generation = 3;
  shrink.expected_head_txid = 1;
  auto c2 = pages.Commit(a, shrink);
  ASSERT_TRUE(IsOk(c2));
  EXPECT_EQ(c2->head_txid, 2u);
  EXPECT_EQ(DatabaseKeyCount(*store_, a), 3u);  // head + pages 1, 2
  CommitRequest stale = Req({{1, 7}}, 2);
  stale.expected_generation = 2;
  EXPECT_TRUE(IsSqliteError(pages.Commit(a, stale), kSqliteFenceMismatch));
  auto got = pages.GetPages(a, {1, 2, 3}, 3, 2);
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(9));
  EXPECT_EQ((*got)[1].bytes, PageOf(2));
  EXPECT_EQ((*got)[2].bytes, std::nullopt);

  ASSERT_TRUE(IsOk(pages.Delete(a)));
  EXPECT_EQ(DatabaseKeyCount(*store_, a), 0u);
  EXPECT_TRUE(IsSqliteError(pages.GetPages(a, {1}), kSqliteNotFound));
}

INSTANTIATE_TEST_SUITE_P(Backends, PageStoreBackendTest,
                         ::testing::Values(Backend::kMem, Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kMem ? "Mem" : "RocksDb";
                         });

// ---------------------------------------------------------------------------------------
// Detailed behaviour over MemKvStore.

class PageStoreTest : public ::testing::Test {
 protected:
  MemKvStore store_;
  PageStore pages_{store_};
  Bytes a_ = Actor(1);
};

TEST_F(PageStoreTest, NeverWrittenDatabaseIsNotFound) {
  for (const std::vector<uint32_t>& pgnos : {std::vector<uint32_t>{1}, std::vector<uint32_t>{}}) {
    auto got = pages_.GetPages(a_, pgnos);
    ASSERT_TRUE(IsSqliteError(got, kSqliteNotFound));
    EXPECT_EQ(got.error().ToString(),
              "sqlite.not_found: sqlite database was not found in this bucket branch");
  }
  // A recorded generation alone does not create the database.
  ASSERT_TRUE(IsOk(pages_.SetGeneration(a_, 1)));
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(a_, {1}), kSqliteNotFound));
  auto created = pages_.Commit(a_, Req({}, 0));
  ASSERT_TRUE(IsOk(created));
  EXPECT_EQ(created->head_txid, 1u);
  auto got = pages_.GetPages(a_, {1, 2});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ(*got, (std::vector<Page>{{1, std::nullopt}, {2, std::nullopt}}));
  auto empty = pages_.GetPages(a_, {});
  ASSERT_TRUE(IsOk(empty));
  EXPECT_TRUE(empty->empty());
}

TEST_F(PageStoreTest, UnwrittenPagesAbsentWhenZeroFillIsOff) {
  PageStoreOptions options;
  options.zero_fill_unwritten = false;
  PageStore pages(store_, options);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{2, 0x22}}, 3))));
  auto got = pages.GetPages(a_, {1, 2, 3, 4});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ(*got, (std::vector<Page>{
                      {1, std::nullopt}, {2, PageOf(0x22)}, {3, std::nullopt}, {4, std::nullopt}}));
}

TEST_F(PageStoreTest, PageZeroRefused) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}}, 1))));
  auto got = pages_.GetPages(a_, {1, 0});
  ASSERT_TRUE(IsSqliteError(got, kSqliteInvalidPage));
  EXPECT_EQ(got.error().message(), "get_pages does not accept page 0");
  auto c = pages_.Commit(a_, Req({{0, 1}}, 1));
  ASSERT_TRUE(IsSqliteError(c, kSqliteInvalidPage));
  EXPECT_EQ(c.error().message(), "sqlite commit does not accept page 0");
  // Page 0 is checked before existence too.
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(Actor(2), {0}), kSqliteInvalidPage));
}

TEST_F(PageStoreTest, HeadTxidIncrements) {
  for (uint64_t i = 1; i <= 5; ++i) {
    auto c = pages_.Commit(a_, Req({{static_cast<uint32_t>(i), static_cast<uint8_t>(i)}}, 5,
                                   static_cast<int64_t>(100 * i)));
    ASSERT_TRUE(IsOk(c));
    EXPECT_EQ(c->head_txid, i);
  }
  // An empty commit is valid and still advances the txid.
  auto c = pages_.Commit(a_, Req({}, 5, 999));
  ASSERT_TRUE(IsOk(c));
  EXPECT_EQ(c->head_txid, 6u);
  auto head = pages_.ReadHead(a_);
  ASSERT_TRUE(IsOk(head));
  EXPECT_EQ((*head)->head_txid, 6u);
  EXPECT_EQ((*head)->last_commit_ms, 999);
  EXPECT_EQ((*head)->stored_bytes, 5 * kPage);
  // Rewriting an existing page does not change stored bytes.
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{3, 0x33}}, 5))));
  head = pages_.ReadHead(a_);
  EXPECT_EQ((*head)->stored_bytes, 5 * kPage);
}

TEST_F(PageStoreTest, ExpectedHeadTxidMismatchRefusedWithNothingWritten) {
  CommitRequest first = Req({{1, 1}}, 1);
  first.expected_head_txid = 0;  // a new database has head txid 0
  ASSERT_TRUE(IsOk(pages_.Commit(a_, first)));

  CommitRequest wrong = Req({{1, 2}, {2, 2}}, 2);
  wrong.expected_head_txid = 5;
  auto c = pages_.Commit(a_, wrong);
  ASSERT_TRUE(IsSqliteError(c, kSqliteFenceMismatch));
  EXPECT_EQ(c.error().ToString(),
            "sqlite.remote_fence_mismatch: sqlite head txid fence mismatch: expected head txid 5, "
            "current head txid 1");
  auto got = pages_.GetPages(a_, {1, 2});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(1));
  EXPECT_EQ((*got)[1].bytes, std::nullopt);
  EXPECT_EQ((*pages_.ReadHead(a_))->head_txid, 1u);
  EXPECT_EQ(DatabaseKeyCount(store_, a_), 2u);

  wrong.expected_head_txid = 1;
  auto ok = pages_.Commit(a_, wrong);
  ASSERT_TRUE(IsOk(ok));
  EXPECT_EQ(ok->head_txid, 2u);

  EXPECT_TRUE(IsSqliteError(pages_.GetPages(a_, {1}, std::nullopt, 1), kSqliteFenceMismatch));
  EXPECT_TRUE(IsOk(pages_.GetPages(a_, {1}, std::nullopt, 2)));
}

TEST_F(PageStoreTest, TruncationDeletesPagesAboveTheNewSize) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}}, 5))));
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{2, 0x22}}, 2))));
  for (uint32_t pgno = 3; pgno <= 5; ++pgno) {
    auto raw = store_.Get(PageStore::PageKey(a_, pgno));
    ASSERT_TRUE(IsOk(raw));
    EXPECT_FALSE(raw->has_value()) << pgno;
  }
  EXPECT_EQ((*pages_.ReadHead(a_))->stored_bytes, 2 * kPage);
  // Growing again: the discarded pages read as zeros, not their old bytes.
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{5, 0x55}}, 5))));
  auto got = pages_.GetPages(a_, {1, 2, 3, 4, 5});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(1));
  EXPECT_EQ((*got)[1].bytes, PageOf(0x22));
  EXPECT_EQ((*got)[2].bytes, PageOf(0));
  EXPECT_EQ((*got)[3].bytes, PageOf(0));
  EXPECT_EQ((*got)[4].bytes, PageOf(0x55));
  EXPECT_EQ((*pages_.ReadHead(a_))->stored_bytes, 3 * kPage);
  // Truncate to zero removes every page.
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({}, 0))));
  EXPECT_EQ(DatabaseKeyCount(store_, a_), 1u);
  EXPECT_EQ((*pages_.ReadHead(a_))->stored_bytes, 0u);
}

TEST_F(PageStoreTest, LargeTruncationSpansSeveralScans) {
  CommitRequest big;
  for (uint32_t pgno = 1; pgno <= 700; ++pgno) big.dirty_pages.push_back({pgno, PageOf(7)});
  big.db_size_pages = 700;
  ASSERT_TRUE(IsOk(pages_.Commit(a_, big)));
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({}, 10))));
  EXPECT_EQ(DatabaseKeyCount(store_, a_), 11u);
  EXPECT_EQ((*pages_.ReadHead(a_))->stored_bytes, 10 * kPage);
}

TEST_F(PageStoreTest, DirtyPagesAboveTheSizeAreDropped) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}, {3, 3}}, 2))));
  EXPECT_EQ(DatabaseKeyCount(store_, a_), 2u);  // head + page 1
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({}, 3))));
  auto got = pages_.GetPages(a_, {3});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(0));
}

TEST_F(PageStoreTest, OversizedCommitRefusedBeforeAnyWrite) {
  FaultyKvStore faulty(std::make_unique<MemKvStore>());
  PageStoreOptions options;
  options.max_commit_bytes = 2 * kPage;
  PageStore pages(faulty, options);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{1, 1}, {2, 2}}, 2))));  // exactly at the cap
  uint64_t ops = faulty.operation_count();
  auto c = pages.Commit(a_, Req({{1, 9}, {2, 9}, {3, 9}}, 3));
  ASSERT_TRUE(IsSqliteError(c, kSqliteCommitTooLarge));
  EXPECT_EQ(c.error().ToString(),
            "sqlite.commit_too_large: sqlite commit too large: actual_size_bytes=12288, "
            "max_size_bytes=8192");
  EXPECT_EQ(faulty.operation_count(), ops);  // not even a read
  auto got = pages.GetPages(a_, {1, 3});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(1));
  EXPECT_EQ((*got)[1].bytes, std::nullopt);
  EXPECT_EQ(PageStoreOptions{}.max_commit_bytes, size_t{16} << 20);
}

TEST_F(PageStoreTest, WrongPageSizeAndDuplicatesRefused) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}}, 1))));
  for (size_t size : {size_t{0}, size_t{1}, kPage - 1, kPage + 1, 2 * kPage}) {
    CommitRequest r = Req({{1, 2}}, 2);
    r.dirty_pages.push_back({2, PageOf(2, size)});
    auto c = pages_.Commit(a_, r);
    ASSERT_TRUE(IsSqliteError(c, kSqliteInvalidPage)) << size;
    EXPECT_EQ(c.error().message(),
              "sqlite commit page 2 had " + std::to_string(size) + " bytes, expected 4096");
  }
  auto dup = pages_.Commit(a_, Req({{1, 2}, {2, 2}, {1, 3}}, 2));
  ASSERT_TRUE(IsSqliteError(dup, kSqliteInvalidPage));
  EXPECT_EQ(dup.error().message(), "sqlite commit duplicated page 1 in a single request");
  // Nothing of the refused commits is visible.
  EXPECT_EQ((*pages_.ReadHead(a_))->head_txid, 1u);
  auto got = pages_.GetPages(a_, {1});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(1));
}

TEST_F(PageStoreTest, PageSizeIsConfigurable) {
  PageStoreOptions options;
  options.page_size = 512;
  PageStore pages(store_, options);
  CommitRequest r;
  r.dirty_pages.push_back({1, PageOf(5, 512)});
  r.db_size_pages = 2;
  ASSERT_TRUE(IsOk(pages.Commit(a_, r)));
  auto got = pages.GetPages(a_, {1, 2});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(5, 512));
  EXPECT_EQ((*got)[1].bytes, PageOf(0, 512));
  r.dirty_pages[0].bytes = PageOf(5, kPage);
  EXPECT_TRUE(IsSqliteError(pages.Commit(a_, r), kSqliteInvalidPage));
  // A 4096-byte store reading the 512-byte pages reports corruption, not a crash.
  EXPECT_TRUE(IsStorageError(pages_.GetPages(a_, {1}), kCorruption));
}

TEST_F(PageStoreTest, InvalidOptionsFallBackToDefaults) {
  PageStoreOptions options;
  options.page_size = 0;
  options.actor_id_size = 0;
  options.max_attempts = 0;
  options.delete_chunk_keys = 0;
  EXPECT_EQ(PageStore(store_, options).options().page_size, kPage);
  options.page_size = size_t{1} << 40;
  PageStore pages(store_, options);
  EXPECT_EQ(pages.options().page_size, kPage);
  EXPECT_EQ(pages.options().actor_id_size, kKeelActorIdSize);
  EXPECT_EQ(pages.options().max_attempts, kDefaultMaxAttempts);
  EXPECT_EQ(pages.options().delete_chunk_keys, 1024u);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{1, 1}}, 1))));
  EXPECT_TRUE(IsOk(pages.Delete(a_)));
}

TEST_F(PageStoreTest, GenerationFencing) {
  ASSERT_TRUE(IsOk(pages_.SetGeneration(a_, 2)));
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}}, 1))));  // no expectation: not fenced

  CommitRequest stale = Req({{1, 0xEE}}, 1);
  stale.expected_generation = 1;
  auto c = pages_.Commit(a_, stale);
  ASSERT_TRUE(IsSqliteError(c, kSqliteFenceMismatch));
  EXPECT_EQ(c.error().ToString(),
            "sqlite.remote_fence_mismatch: sqlite generation fence mismatch: expected generation "
            "1, recorded generation 2");
  auto r = pages_.GetPages(a_, {1}, 1);
  EXPECT_TRUE(IsSqliteError(r, kSqliteFenceMismatch));

  CommitRequest current = Req({{1, 0x22}}, 1);
  current.expected_generation = 2;
  auto ok = pages_.Commit(a_, current);
  ASSERT_TRUE(IsOk(ok));
  EXPECT_EQ(ok->head_txid, 2u);
  auto got = pages_.GetPages(a_, {1}, 2);
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(0x22));

  // Generations only move forward; repeating the current one is a no-op.
  auto older = pages_.SetGeneration(a_, 1);
  ASSERT_TRUE(IsSqliteError(older, kSqliteFenceMismatch));
  EXPECT_EQ(older.error().message(), "sqlite generation 1 is older than the recorded generation 2");
  EXPECT_TRUE(IsOk(pages_.SetGeneration(a_, 2)));
  ASSERT_TRUE(IsOk(pages_.SetGeneration(a_, 3)));
  EXPECT_TRUE(IsSqliteError(pages_.Commit(a_, current), kSqliteFenceMismatch));
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(a_, {1}, 2), kSqliteFenceMismatch));
  auto head = pages_.ReadHead(a_);
  ASSERT_TRUE(IsOk(head));
  EXPECT_EQ((*head)->generation, 3u);
  EXPECT_EQ((*head)->head_txid, 2u);  // SetGeneration keeps the database intact
  EXPECT_EQ((*head)->db_size_pages, 1u);

  // An expectation on an actor without a recorded generation is a mismatch too.
  Bytes b = Actor(2);
  ASSERT_TRUE(IsOk(pages_.Commit(b, Req({{1, 1}}, 1))));
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(b, {1}, 0), kSqliteFenceMismatch));
  CommitRequest fenced = Req({}, 1);
  fenced.expected_generation = 1;
  EXPECT_TRUE(IsSqliteError(pages_.Commit(b, fenced), kSqliteFenceMismatch));
  // ... and on a never-written database the fence error wins over not-found.
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(Actor(3), {1}, 1), kSqliteFenceMismatch));
}

TEST_F(PageStoreTest, ActorsAreIsolated) {
  // Ids equal but for the last byte, and an id whose last byte equals the head/page tags.
  Bytes a = Actor(0x20, 0x05);
  Bytes b = Actor(0x21, 0x05);
  Bytes c = Actor(0x20, 0x06);
  ASSERT_TRUE(IsOk(pages_.Commit(a, Req({{1, 0xA1}, {2, 0xA2}}, 2))));
  ASSERT_TRUE(IsOk(pages_.Commit(b, Req({{1, 0xB1}}, 1))));
  ASSERT_TRUE(IsOk(pages_.SetGeneration(c, 7)));
  ASSERT_TRUE(IsOk(pages_.Commit(c, Req({{1, 0xC1}, {2, 0xC2}, {3, 0xC3}}, 3))));

  auto ga = pages_.GetPages(a, {1, 2});
  ASSERT_TRUE(IsOk(ga));
  EXPECT_EQ((*ga)[0].bytes, PageOf(0xA1));
  EXPECT_EQ((*ga)[1].bytes, PageOf(0xA2));
  auto gb = pages_.GetPages(b, {1, 2});
  ASSERT_TRUE(IsOk(gb));
  EXPECT_EQ((*gb)[0].bytes, PageOf(0xB1));
  EXPECT_EQ((*gb)[1].bytes, std::nullopt);
  EXPECT_EQ((*pages_.ReadHead(a))->generation, std::nullopt);

  // Truncating and deleting one leaves the others alone.
  ASSERT_TRUE(IsOk(pages_.Commit(a, Req({}, 0))));
  ASSERT_TRUE(IsOk(pages_.Delete(b)));
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(b, {1}), kSqliteNotFound));
  EXPECT_EQ(DatabaseKeyCount(store_, a), 1u);
  EXPECT_EQ(DatabaseKeyCount(store_, c), 4u);
  auto gc = pages_.GetPages(c, {3}, 7, 1);
  ASSERT_TRUE(IsOk(gc));
  EXPECT_EQ((*gc)[0].bytes, PageOf(0xC3));
}

TEST_F(PageStoreTest, ActorIdMustHaveTheConfiguredWidth) {
  for (size_t size : {size_t{0}, size_t{1}, kKeelActorIdSize - 1, kKeelActorIdSize + 1}) {
    Bytes id(size, 0x01);
    auto got = pages_.GetPages(id, {1});
    ASSERT_TRUE(IsSqliteError(got, kSqliteInvalidActorId)) << size;
    EXPECT_EQ(got.error().message(),
              "invalid sqlite actor id: expected 19 bytes, got " + std::to_string(size));
    EXPECT_TRUE(IsSqliteError(pages_.Commit(id, Req({{1, 1}}, 1)), kSqliteInvalidActorId));
    EXPECT_TRUE(IsSqliteError(pages_.SetGeneration(id, 1), kSqliteInvalidActorId));
    EXPECT_TRUE(IsSqliteError(pages_.Delete(id), kSqliteInvalidActorId));
    EXPECT_TRUE(IsSqliteError(pages_.ReadHead(id), kSqliteInvalidActorId));
  }
  auto all = store_.Scan(KeyRange::All());
  ASSERT_TRUE(IsOk(all));
  EXPECT_TRUE(all->empty());
}

TEST_F(PageStoreTest, DeleteRemovesEverythingInChunks) {
  PageStoreOptions options;
  options.delete_chunk_keys = 3;
  PageStore pages(store_, options);
  ASSERT_TRUE(IsOk(store_.Put(PageStore::GuardKey(a_), AsBytes("actor record"))));
  ASSERT_TRUE(IsOk(pages.SetGeneration(a_, 4)));
  CommitRequest r;
  for (uint32_t pgno = 1; pgno <= 10; ++pgno) r.dirty_pages.push_back({pgno, PageOf(1)});
  r.db_size_pages = 10;
  ASSERT_TRUE(IsOk(pages.Commit(a_, r)));
  Bytes other = Actor(2);
  ASSERT_TRUE(IsOk(pages.Commit(other, Req({{1, 1}}, 1))));

  ASSERT_TRUE(IsOk(pages.Delete(a_)));
  EXPECT_EQ(DatabaseKeyCount(store_, a_), 0u);
  EXPECT_TRUE(IsSqliteError(pages.GetPages(a_, {1}), kSqliteNotFound));
  auto head = pages.ReadHead(a_);
  ASSERT_TRUE(IsOk(head));
  EXPECT_FALSE(head->has_value());
  // The actor record (not part of the database) and the other actor survive.
  auto guard = store_.Get(PageStore::GuardKey(a_));
  ASSERT_TRUE(IsOk(guard));
  EXPECT_TRUE(guard->has_value());
  EXPECT_EQ(DatabaseKeyCount(store_, other), 2u);
  // Deleting again (or an actor that never had a database) is fine; a new commit starts over.
  EXPECT_TRUE(IsOk(pages.Delete(a_)));
  EXPECT_TRUE(IsOk(pages.Delete(Actor(9))));
  auto c = pages.Commit(a_, Req({{1, 2}}, 1));
  ASSERT_TRUE(IsOk(c));
  EXPECT_EQ(c->head_txid, 1u);
  EXPECT_EQ((*pages.ReadHead(a_))->generation, std::nullopt);
}

TEST_F(PageStoreTest, OrphanPagesOfAnInterruptedDeleteStayInvisible) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}, {2, 2}, {3, 3}}, 3))));
  // What a Delete interrupted after its first chunk leaves: no head, some pages.
  ASSERT_TRUE(IsOk(store_.Delete(PageStore::HeadKey(a_))));
  ASSERT_TRUE(IsOk(store_.Delete(PageStore::PageKey(a_, 1))));
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(a_, {2}), kSqliteNotFound));
  auto c = pages_.Commit(a_, Req({{1, 9}}, 3));
  ASSERT_TRUE(IsOk(c));
  EXPECT_EQ(c->head_txid, 1u);
  auto got = pages_.GetPages(a_, {1, 2, 3});
  ASSERT_TRUE(IsOk(got));
  EXPECT_EQ((*got)[0].bytes, PageOf(9));
  EXPECT_EQ((*got)[1].bytes, PageOf(0));
  EXPECT_EQ((*got)[2].bytes, PageOf(0));
  EXPECT_EQ((*pages_.ReadHead(a_))->stored_bytes, kPage);
}

TEST_F(PageStoreTest, CorruptHeadIsReportedNotCrashed) {
  ASSERT_TRUE(IsOk(store_.Put(PageStore::HeadKey(a_), AsBytes("garbage"))));
  EXPECT_TRUE(IsStorageError(pages_.GetPages(a_, {1}), kCorruption));
  EXPECT_TRUE(IsStorageError(pages_.Commit(a_, Req({{1, 1}}, 1)), kCorruption));
  EXPECT_TRUE(IsStorageError(pages_.SetGeneration(a_, 1), kCorruption));
  EXPECT_TRUE(IsStorageError(pages_.ReadHead(a_), kCorruption));
  EXPECT_TRUE(IsOk(pages_.Delete(a_)));  // destroy still cleans it up
  EXPECT_TRUE(IsSqliteError(pages_.GetPages(a_, {1}), kSqliteNotFound));
}

TEST(PageStoreHeadTest, EncodingRoundTripsAndRejectsDamage) {
  SqliteHead head{0x0102030405060708u, 0xA0B0C0D0u, -5, 12288, std::nullopt};
  Bytes enc = PageStore::EncodeHead(head);
  ASSERT_EQ(enc.size(), 31u);
  EXPECT_EQ(enc[0], 1);  // schema version 1, little-endian
  EXPECT_EQ(enc[1], 0);
  EXPECT_EQ(enc[2], 0x08);  // head_txid little-endian
  EXPECT_EQ(enc[30], 0);    // generation absent
  auto dec = PageStore::DecodeHead(enc);
  ASSERT_TRUE(IsOk(dec));
  EXPECT_EQ(*dec, head);

  head.generation = 77;
  enc = PageStore::EncodeHead(head);
  ASSERT_EQ(enc.size(), 39u);
  dec = PageStore::DecodeHead(enc);
  ASSERT_TRUE(IsOk(dec));
  EXPECT_EQ(*dec, head);

  Bytes bad_version = enc;
  bad_version[0] = 2;
  EXPECT_TRUE(IsStorageError(PageStore::DecodeHead(bad_version), kCorruption));
  Bytes bad_presence = enc;
  bad_presence[30] = 2;
  EXPECT_TRUE(IsStorageError(PageStore::DecodeHead(bad_presence), kCorruption));
  Bytes trailing = enc;
  trailing.push_back(0);
  EXPECT_TRUE(IsStorageError(PageStore::DecodeHead(trailing), kCorruption));
  for (size_t n = 0; n < enc.size(); ++n) {
    EXPECT_TRUE(IsStorageError(PageStore::DecodeHead(ByteView(enc.data(), n)), kCorruption)) << n;
  }
}

TEST(PageStoreKeyTest, LayoutMatchesDocsStorageMd) {
  Bytes a = Actor(1);
  Bytes head = PageStore::HeadKey(a);
  ASSERT_EQ(head.size(), 21u);
  EXPECT_EQ(head.front(), 0x05);
  EXPECT_EQ(head.back(), 0x20);
  Bytes page = PageStore::PageKey(a, 0x01020304);
  ASSERT_EQ(page.size(), 25u);
  EXPECT_EQ(page[20], 0x21);
  EXPECT_EQ(page[21], 0x01);  // big-endian pgno
  EXPECT_EQ(page[24], 0x04);
  EXPECT_EQ(PageStore::GuardKey(a).back(), 0x01);
  KeyRange db = PageStore::DatabaseRange(a);
  EXPECT_TRUE(db.Contains(head));
  EXPECT_TRUE(db.Contains(PageStore::PageKey(a, 0xFFFFFFFF)));
  EXPECT_FALSE(db.Contains(PageStore::GuardKey(a)));
  // Page keys sort by page number.
  EXPECT_LT(CompareKeys(PageStore::PageKey(a, 255), PageStore::PageKey(a, 256)), 0);
}

TEST_F(PageStoreTest, ClosedStorePassesThrough) {
  ASSERT_TRUE(IsOk(pages_.Commit(a_, Req({{1, 1}}, 1))));
  ASSERT_TRUE(IsOk(store_.Close()));
  EXPECT_TRUE(IsStorageError(pages_.GetPages(a_, {1}), kClosed));
  EXPECT_TRUE(IsStorageError(pages_.Commit(a_, Req({{1, 1}}, 1)), kClosed));
  EXPECT_TRUE(IsStorageError(pages_.SetGeneration(a_, 1), kClosed));
  EXPECT_TRUE(IsStorageError(pages_.Delete(a_), kClosed));
}

TEST_F(PageStoreTest, ConcurrentCommitsAreSerialised) {
  PageStoreOptions options;
  options.max_attempts = 10000;
  PageStore pages(store_, options);
  constexpr int kThreads = 4;
  constexpr int kCommits = 15;
  std::vector<std::vector<uint64_t>> txids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCommits; ++i) {
        auto c = pages.Commit(
            a_, Req({{static_cast<uint32_t>(t + 1), static_cast<uint8_t>(i)}}, kThreads));
        if (c.has_value()) txids[t].push_back(c->head_txid);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::set<uint64_t> all;
  for (const auto& v : txids) {
    EXPECT_EQ(v.size(), static_cast<size_t>(kCommits));
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kCommits));  // every txid distinct
  EXPECT_EQ((*pages.ReadHead(a_))->head_txid, static_cast<uint64_t>(kThreads * kCommits));
  EXPECT_EQ((*pages.ReadHead(a_))->stored_bytes, kThreads * kPage);
}

// ---------------------------------------------------------------------------------------
// Faults and crashes over FaultyKvStore.

class PageStoreFaultTest : public ::testing::Test {
 protected:
  FaultyKvStore faulty_{std::make_unique<MemKvStore>()};
  Bytes a_ = Actor(1);

  void ExpectState(PageStore& pages, uint64_t txid, std::vector<Page> want) {
    auto head = pages.ReadHead(a_);
    ASSERT_TRUE(IsOk(head));
    ASSERT_TRUE(head->has_value());
    EXPECT_EQ((*head)->head_txid, txid);
    std::vector<uint32_t> pgnos;
    for (const Page& p : want) pgnos.push_back(p.pgno);
    auto got = pages.GetPages(a_, pgnos);
    ASSERT_TRUE(IsOk(got));
    EXPECT_EQ(*got, want);
  }
};

TEST_F(PageStoreFaultTest, FailedKvCommitLeavesNoPageVisible) {
  PageStore pages(faulty_);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{1, 1}, {2, 2}}, 2))));
  faulty_.FailNextCommits(1, CommitFault::kNotApplied);
  auto c = pages.Commit(a_, Req({{1, 9}, {2, 9}, {3, 9}}, 3));
  EXPECT_TRUE(IsStorageError(c, kIo));
  ExpectState(pages, 1, {{1, PageOf(1)}, {2, PageOf(2)}, {3, std::nullopt}});
  // A failed shrink does not truncate either.
  faulty_.FailNextCommits(1, CommitFault::kNotApplied);
  EXPECT_TRUE(IsStorageError(pages.Commit(a_, Req({}, 1)), kIo));
  ExpectState(pages, 1, {{1, PageOf(1)}, {2, PageOf(2)}});
  // The store keeps working afterwards.
  auto ok = pages.Commit(a_, Req({{3, 3}}, 3));
  ASSERT_TRUE(IsOk(ok));
  EXPECT_EQ(ok->head_txid, 2u);
}

TEST_F(PageStoreFaultTest, AppliedButFailedCommitIsWhole) {
  PageStore pages(faulty_);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{1, 1}}, 1))));
  faulty_.FailNextCommits(1, CommitFault::kAppliedButFailed);
  EXPECT_TRUE(IsStorageError(pages.Commit(a_, Req({{1, 9}, {2, 9}}, 2)), kIo));
  // Outcome unknown to the caller, but never half: here all of it landed.
  ExpectState(pages, 2, {{1, PageOf(9)}, {2, PageOf(9)}});
}

TEST_F(PageStoreFaultTest, FailedReadsPassThrough) {
  PageStore pages(faulty_);
  ASSERT_TRUE(IsOk(pages.Commit(a_, Req({{1, 1}, {2, 2}}, 2))));
  for (uint64_t n = 1; n <= 3; ++n) {  // head read, then each page read
    faulty_.FailNthOperation(n);
    EXPECT_TRUE(IsStorageError(pages.GetPages(a_, {1, 2}), kIo)) << n;
  }
  for (uint64_t n = 1; n <= 5; ++n) {  // guard, head, 2 page reads, commit
    faulty_.FailNthOperation(n);
    EXPECT_TRUE(IsStorageError(pages.Commit(a_, Req({{1, 7}, {2, 7}}, 2)), kIo)) << n;
    ExpectState(pages, 1, {{1, PageOf(1)}, {2, PageOf(2)}});
  }
  faulty_.ClearFaults();
}

TEST_F(PageStoreFaultTest, RandomFailuresNeverExposeHalfACommit) {
  PageStore pages(faulty_);
  faulty_.SetCommitFailureProbability(0.5);
  uint64_t expected_txid = 0;
  for (int i = 1; i <= 40; ++i) {
    uint8_t fill = static_cast<uint8_t>(i);
    auto c = pages.Commit(a_, Req({{1, fill}, {2, fill}, {3, fill}}, 3));
    if (c.has_value()) expected_txid = c->head_txid;
    faulty_.SetCommitFailureProbability(0);
    auto got = pages.GetPages(a_, {1, 2, 3});
    if (expected_txid == 0) {
      EXPECT_TRUE(IsSqliteError(got, kSqliteNotFound));
    } else {
      ASSERT_TRUE(IsOk(got));
      EXPECT_EQ((*got)[0].bytes, (*got)[1].bytes);
      EXPECT_EQ((*got)[1].bytes, (*got)[2].bytes);
      EXPECT_EQ((*pages.ReadHead(a_))->head_txid, expected_txid);
    }
    faulty_.SetCommitFailureProbability(0.5);
  }
  EXPECT_GT(faulty_.injected_failure_count(), 0u);
  EXPECT_GT(expected_txid, 0u);
}

TEST_F(PageStoreFaultTest, CrashLosesWholeUnsyncedCommits) {
  PageStore synced(faulty_);
  PageStoreOptions options;
  options.sync = false;
  PageStore unsynced(faulty_, options);

  ASSERT_TRUE(IsOk(synced.SetGeneration(a_, 1)));
  ASSERT_TRUE(IsOk(synced.Commit(a_, Req({{1, 1}, {2, 2}, {3, 3}}, 3))));
  ASSERT_TRUE(IsOk(unsynced.Commit(a_, Req({{1, 9}, {2, 9}, {4, 9}}, 4))));
  ASSERT_TRUE(IsOk(unsynced.Commit(a_, Req({{1, 8}}, 1))));  // truncates 2..4
  ASSERT_TRUE(IsOk(unsynced.SetGeneration(a_, 2)));
  EXPECT_EQ(faulty_.unsynced_commit_count(), 3u);
  ExpectState(unsynced, 3, {{1, PageOf(8)}, {2, std::nullopt}});

  ASSERT_TRUE(IsOk(faulty_.SimulateCrash()));
  ExpectState(synced, 1, {{1, PageOf(1)}, {2, PageOf(2)}, {3, PageOf(3)}, {4, std::nullopt}});
  EXPECT_EQ((*synced.ReadHead(a_))->generation, 1u);
  EXPECT_EQ((*synced.ReadHead(a_))->stored_bytes, 3 * kPage);
  EXPECT_EQ(DatabaseKeyCount(faulty_, a_), 4u);

  // A crash with only an unsynced first commit loses the database entirely.
  Bytes b = Actor(2);
  ASSERT_TRUE(IsOk(unsynced.Commit(b, Req({{1, 1}, {2, 2}}, 2))));
  ASSERT_TRUE(IsOk(faulty_.SimulateCrash()));
  EXPECT_TRUE(IsSqliteError(synced.GetPages(b, {1}), kSqliteNotFound));
  EXPECT_EQ(DatabaseKeyCount(faulty_, b), 0u);
}

// CommitRequest::sync overrides the store's option for one commit, both ways.
TEST_F(PageStoreFaultTest, ACommitsOwnSyncOverridesTheStoresOption) {
  PageStore synced(faulty_);
  PageStoreOptions options;
  options.sync = false;
  PageStore unsynced(faulty_, options);

  CommitRequest kept = Req({{1, 1}}, 1);
  kept.sync = true;
  ASSERT_TRUE(IsOk(unsynced.Commit(a_, kept)));
  EXPECT_EQ(faulty_.unsynced_commit_count(), 0u);
  CommitRequest lost = Req({{1, 2}}, 1);
  lost.sync = false;
  ASSERT_TRUE(IsOk(synced.Commit(a_, lost)));
  EXPECT_EQ(faulty_.unsynced_commit_count(), 1u);
  ExpectState(synced, 2, {{1, PageOf(2)}});

  ASSERT_TRUE(IsOk(faulty_.SimulateCrash()));
  ExpectState(synced, 1, {{1, PageOf(1)}});
}

}  // namespace
}  // namespace keel::storage
