#include "storage/vfs/keel_vfs.h"

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "base/manual_clock.h"
#include "base/random.h"
#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/page_store.h"

namespace keel::storage {
namespace {

Bytes Actor(uint8_t last) {
  Bytes id(kKeelActorIdSize, 0xAB);
  id[0] = 0x01;
  id[kKeelActorIdSize - 1] = last;
  return id;
}

// Counts the requests that reach the wrapped source.
class CountingSource : public PageSource {
 public:
  explicit CountingSource(std::shared_ptr<PageSource> inner) : inner_(std::move(inner)) {}
  Result<std::vector<Page>> GetPages(const std::vector<uint32_t>& pgnos) override {
    ++get_pages;
    return inner_->GetPages(pgnos);
  }
  Status Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                int64_t now_ms) override {
    ++commits;
    last_commit_pages = dirty_pages.size();
    last_size = db_size_pages;
    last_now_ms = now_ms;
    Status s = inner_->Commit(std::move(dirty_pages), db_size_pages, now_ms);
    if (!s.has_value()) ++failed_commits;
    return s;
  }
  int get_pages = 0;
  int commits = 0;
  int failed_commits = 0;
  size_t last_commit_pages = 0;
  uint32_t last_size = 0;
  int64_t last_now_ms = 0;

 private:
  std::shared_ptr<PageSource> inner_;
};

// Commits through a synced or an unsynced PageStore over the same KvStore, as chosen.
class SwitchableSource : public PageSource {
 public:
  SwitchableSource(PageStore& synced, PageStore& unsynced, Bytes actor)
      : synced_(synced, actor), unsynced_(unsynced, actor) {}
  Result<std::vector<Page>> GetPages(const std::vector<uint32_t>& pgnos) override {
    return synced_.GetPages(pgnos);
  }
  Status Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                int64_t now_ms) override {
    ++commits;
    return (sync ? synced_ : unsynced_).Commit(std::move(dirty_pages), db_size_pages, now_ms);
  }
  bool sync = true;
  int commits = 0;

 private:
  PageStorePageSource synced_;
  PageStorePageSource unsynced_;
};

std::string NextVfsName() {
  static std::atomic<int> counter{0};
  return "keel-vfs-test-" + std::to_string(counter++);
}

class Db {
 public:
  Db() = default;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  ~Db() { Close(); }

  int Open(const std::string& name, const char* vfs) {
    Close();
    int rc = sqlite3_open_v2(name.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs);
    if (rc != SQLITE_OK) Close();
    return rc;
  }
  void Close() {
    if (db_ != nullptr) {
      EXPECT_EQ(sqlite3_close(db_), SQLITE_OK);
      db_ = nullptr;
    }
  }
  sqlite3* get() { return db_; }

  int Exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    last_error_ = err != nullptr ? err : "";
    sqlite3_free(err);
    return rc;
  }
  void MustExec(const std::string& sql) {
    ASSERT_EQ(Exec(sql), SQLITE_OK) << sql << ": " << last_error_;
  }
  // Every row's columns joined by ',' and rows by ';'.
  std::string Query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
    if (rc != SQLITE_OK) return "prepare error: " + std::string(sqlite3_errmsg(db_));
    std::string out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      if (!out.empty()) out += ';';
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        if (i > 0) out += ',';
        const unsigned char* text = sqlite3_column_text(stmt, i);
        out += text != nullptr ? reinterpret_cast<const char*>(text) : "NULL";
      }
    }
    if (rc != SQLITE_DONE) out += "step error: " + std::string(sqlite3_errmsg(db_));
    sqlite3_finalize(stmt);
    return out;
  }
  int64_t Count(const std::string& table = "t") {
    std::string s = Query("SELECT count(*) FROM " + table);
    return std::stoll(s);
  }
  const std::string& last_error() const { return last_error_; }

 private:
  sqlite3* db_ = nullptr;
  std::string last_error_;
};

class KeelVfsTest : public ::testing::Test {
 protected:
  KeelVfsTest()
      : clock_(MonoTime(), 1'700'000'000'000),
        random_(7),
        pages_(kv_),
        vfs_(NextVfsName(), clock_, random_, KeelVfsOptions{64, 4}) {
    EXPECT_TRUE(vfs_.Register().has_value());
  }

  std::shared_ptr<CountingSource> AttachActor(const std::string& name, uint8_t actor) {
    auto source = std::make_shared<CountingSource>(
        std::make_shared<PageStorePageSource>(pages_, Actor(actor)));
    EXPECT_TRUE(vfs_.Attach(name, source).has_value());
    return source;
  }

  uint32_t StoredPageCount(uint8_t actor) {
    auto entries = kv_.Scan(PageStore::DatabaseRange(Actor(actor)));
    EXPECT_TRUE(entries.has_value());
    return static_cast<uint32_t>(entries->size()) - 1;  // minus the head
  }
  SqliteHead Head(uint8_t actor) {
    auto head = pages_.ReadHead(Actor(actor));
    EXPECT_TRUE(head.has_value() && head->has_value());
    return **head;
  }

  ManualClock clock_;
  Random random_;
  MemKvStore kv_;
  PageStore pages_;
  KeelVfs vfs_;
};

TEST_F(KeelVfsTest, CreateInsertSelect) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  db.MustExec("INSERT INTO t(v) VALUES ('a'), ('b'), ('c')");
  EXPECT_EQ(db.Query("SELECT id, v FROM t ORDER BY id"), "1,a;2,b;3,c");
  EXPECT_EQ(db.Query("PRAGMA page_size"), "4096");
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(source->commits, 2);
  EXPECT_EQ(source->last_now_ms, 1'700'000'000'000);
  SqliteHead head = Head(1);
  EXPECT_EQ(head.head_txid, 2u);
  EXPECT_EQ(head.db_size_pages, 2u);
  EXPECT_EQ(head.last_commit_ms, 1'700'000'000'000);
  // Time and randomness come from the VFS.
  EXPECT_EQ(db.Query("SELECT strftime('%s','now')"), "1700000000");
  EXPECT_EQ(db.Query("SELECT typeof(random())"), "integer");
}

// Creates table t(id, v) with `rows` rows of 1000 random bytes.
void CreateBlobTable(Db& db, int rows) {
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<" +
      std::to_string(rows) + ") INSERT INTO t(v) SELECT randomblob(1000) FROM c");
}

TEST_F(KeelVfsTest, CloseAndReopenKeepsData) {
  auto source = AttachActor("db", 1);
  {
    Db db;
    ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
    // More pages than the 64-page VFS cache, so the reopen reads through GetPages.
    CreateBlobTable(db, 300);
    EXPECT_TRUE(vfs_.IsOpen("db"));
  }
  EXPECT_FALSE(vfs_.IsOpen("db"));
  int reads_before = source->get_pages;
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Count(), 300);
  EXPECT_EQ(db.Query("SELECT sum(length(v)) FROM t"), "300000");
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  EXPECT_GT(source->get_pages, reads_before);
  EXPECT_EQ(Head(1).db_size_pages, StoredPageCount(1));
}

// FullyCached says whether a read can reach the PageSource; Prefetch makes it true for a
// database that fits the cache, and then reads, and writes inside a transaction, do no
// source I/O at all (what the runtime's inline statements rely on).
TEST_F(KeelVfsTest, FullyCachedAndPrefetch) {
  auto source = AttachActor("db", 1);
  EXPECT_FALSE(vfs_.FullyCached("db")) << "not open";
  EXPECT_FALSE(vfs_.Prefetch("db").has_value()) << "not open";
  {
    Db db;
    ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
    EXPECT_TRUE(vfs_.FullyCached("db")) << "an empty database";
    CreateBlobTable(db, 40);
    EXPECT_TRUE(vfs_.FullyCached("db")) << "every committed page went through the cache";
  }
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_FALSE(vfs_.FullyCached("db")) << "a reopened database: only page 1 is cached";
  const uint32_t pages = Head(1).db_size_pages;
  ASSERT_GT(pages, 8u);
  ASSERT_LE(pages, 64u) << "fits the test's 64-page cache";
  const int reads = source->get_pages;
  auto loaded = vfs_.Prefetch("db", 4);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_TRUE(*loaded);
  EXPECT_EQ(source->get_pages, reads + static_cast<int>((pages - 1 + 3) / 4)) << "4 per request";
  EXPECT_TRUE(vfs_.FullyCached("db"));
  const int after_prefetch = source->get_pages;
  EXPECT_EQ(db.Count(), 40);
  db.MustExec("BEGIN");
  db.MustExec("INSERT INTO t(v) SELECT v FROM t WHERE id < 5");
  db.MustExec("UPDATE t SET v = zeroblob(10) WHERE id % 3 = 0");
  EXPECT_TRUE(vfs_.FullyCached("db"));
  EXPECT_EQ(source->get_pages, after_prefetch) << "no read reached the source";
  const int commits = source->commits;
  db.MustExec("COMMIT");
  EXPECT_EQ(source->commits, commits + 1);
  EXPECT_TRUE(vfs_.FullyCached("db"));
  EXPECT_EQ(db.Count(), 44);
  EXPECT_EQ(source->get_pages, after_prefetch);
  // Nothing left to load: no request.
  ASSERT_TRUE(vfs_.Prefetch("db").has_value());
  EXPECT_EQ(source->get_pages, after_prefetch);
}

// A database larger than the cache is never FullyCached and Prefetch loads nothing.
TEST_F(KeelVfsTest, PrefetchSkipsADatabaseLargerThanTheCache) {
  auto source = AttachActor("db", 1);
  {
    Db db;
    ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
    CreateBlobTable(db, 300);
    EXPECT_FALSE(vfs_.FullyCached("db"));
  }
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  const int reads = source->get_pages;
  auto loaded = vfs_.Prefetch("db");
  ASSERT_TRUE(loaded.has_value());
  EXPECT_FALSE(*loaded);
  EXPECT_EQ(source->get_pages, reads);
  EXPECT_FALSE(vfs_.FullyCached("db"));
}

TEST_F(KeelVfsTest, SecondHandleOnSameDatabaseIsRefused) {
  AttachActor("db", 1);
  Db a, b;
  ASSERT_EQ(a.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_NE(b.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_FALSE(vfs_.Detach("db").has_value());
  EXPECT_FALSE(vfs_.Unregister().has_value());
  Db c;
  EXPECT_NE(c.Open("not-attached", vfs_.name()), SQLITE_OK);
  EXPECT_FALSE(
      vfs_.Attach("db", std::make_shared<PageStorePageSource>(pages_, Actor(9))).has_value());
  a.Close();
  EXPECT_TRUE(vfs_.Detach("db").has_value());
}

TEST_F(KeelVfsTest, MultiStatementTransactionIsExactlyOneCommit) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  int before = source->commits;
  uint64_t txid_before = Head(1).head_txid;
  db.MustExec("BEGIN");
  for (int i = 0; i < 50; ++i)
    db.MustExec("INSERT INTO t(v) VALUES ('row" + std::to_string(i) + "')");
  db.MustExec("UPDATE t SET v = v || '!' WHERE id % 2 = 0");
  db.MustExec("DELETE FROM t WHERE id > 40");
  db.MustExec("CREATE TABLE u(x)");
  EXPECT_EQ(source->commits, before);  // nothing reaches the store before COMMIT
  db.MustExec("COMMIT");
  EXPECT_EQ(source->commits, before + 1);
  EXPECT_EQ(Head(1).head_txid, txid_before + 1);
  EXPECT_EQ(db.Count(), 40);
  // Read-only statements commit nothing.
  EXPECT_EQ(db.Query("SELECT v FROM t WHERE id = 2"), "row1!");
  EXPECT_EQ(source->commits, before + 1);
}

TEST_F(KeelVfsTest, TransactionLargerThanSqliteCacheIsStillOneCommit) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("PRAGMA cache_size = 10");  // forces SQLite to spill dirty pages mid-txn
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  int before = source->commits;
  db.MustExec("BEGIN");
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200) "
      "INSERT INTO t(v) SELECT randomblob(2000) FROM c");
  EXPECT_EQ(source->commits, before);
  db.MustExec("COMMIT");
  EXPECT_EQ(source->commits, before + 1);
  EXPECT_GT(source->last_commit_pages, 100u);
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Count(), 200);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");

  // Rolling back a spilled transaction: SQLite replays its journal into the buffer and
  // syncs, which commits at most once, with the original content.
  db.MustExec("PRAGMA cache_size = 10");
  const std::string kBefore = db.Query("SELECT sum(length(v)), count(*), max(id) FROM t");
  const uint32_t size_before = Head(1).db_size_pages;
  before = source->commits;
  db.MustExec("BEGIN");
  db.MustExec("UPDATE t SET v = zeroblob(10)");
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200) "
      "INSERT INTO t(v) SELECT randomblob(2000) FROM c");
  db.MustExec("ROLLBACK");
  EXPECT_LE(source->commits, before + 1);
  EXPECT_EQ(db.Query("SELECT sum(length(v)), count(*), max(id) FROM t"), kBefore);
  EXPECT_EQ(Head(1).db_size_pages, size_before);
  EXPECT_EQ(StoredPageCount(1), size_before);
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT sum(length(v)), count(*), max(id) FROM t"), kBefore);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
}

TEST_F(KeelVfsTest, RollbackCommitsNothing) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  db.MustExec("INSERT INTO t(v) VALUES ('keep')");
  int before = source->commits;
  db.MustExec("BEGIN");
  db.MustExec("INSERT INTO t(v) VALUES ('gone')");
  db.MustExec("DELETE FROM t WHERE v = 'keep'");
  db.MustExec("ROLLBACK");
  EXPECT_EQ(source->commits, before);
  EXPECT_EQ(db.Query("SELECT v FROM t"), "keep");
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT v FROM t"), "keep");
}

TEST_F(KeelVfsTest, RejectsOtherPageSizesAndWal) {
  AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_NE(db.Exec("PRAGMA page_size = 8192"), SQLITE_OK);
  EXPECT_NE(db.last_error().find("4096"), std::string::npos) << db.last_error();
  EXPECT_NE(db.Exec("PRAGMA journal_mode = WAL"), SQLITE_OK);
  EXPECT_NE(db.Exec("PRAGMA journal_mode = off"), SQLITE_OK);
  db.MustExec("PRAGMA page_size = 4096");
  db.MustExec("CREATE TABLE t(x)");
  EXPECT_EQ(db.Query("PRAGMA page_size"), "4096");
  EXPECT_EQ(db.Query("PRAGMA journal_mode"), "delete");
}

// Every journal/synchronous/locking configuration still commits once per transaction.
class KeelVfsPragmaTest : public KeelVfsTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(KeelVfsPragmaTest, OneCommitPerTransactionAndDurable) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec(GetParam());
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  for (int txn = 0; txn < 3; ++txn) {
    int before = source->commits;
    db.MustExec("BEGIN; INSERT INTO t(v) VALUES ('a'); INSERT INTO t(v) VALUES ('b'); COMMIT");
    EXPECT_EQ(source->commits, before + 1);
  }
  int before = source->commits;
  db.MustExec("BEGIN; DELETE FROM t; ROLLBACK");
  EXPECT_EQ(source->commits, before);
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Count(), 6);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
}

INSTANTIATE_TEST_SUITE_P(
    Modes, KeelVfsPragmaTest,
    ::testing::Values("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL",
                      "PRAGMA journal_mode=TRUNCATE; PRAGMA synchronous=NORMAL",
                      "PRAGMA journal_mode=PERSIST; PRAGMA synchronous=OFF",
                      "PRAGMA journal_mode=MEMORY; PRAGMA synchronous=NORMAL",
                      "PRAGMA journal_mode=DELETE; PRAGMA synchronous=NORMAL; "
                      "PRAGMA temp_store=MEMORY; PRAGMA auto_vacuum=NONE; "
                      "PRAGMA locking_mode=EXCLUSIVE",
                      "PRAGMA locking_mode=EXCLUSIVE; PRAGMA synchronous=OFF"));

TEST_F(KeelVfsTest, VacuumTruncatesStoredPages) {
  auto source = AttachActor("db", 1);
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200) "
      "INSERT INTO t(v) SELECT randomblob(3000) FROM c");
  uint32_t big = Head(1).db_size_pages;
  EXPECT_GT(big, 150u);
  EXPECT_EQ(StoredPageCount(1), big);
  db.MustExec("DELETE FROM t WHERE id > 10");
  EXPECT_EQ(Head(1).db_size_pages, big);  // freed pages stay on the freelist
  int before = source->commits;
  db.MustExec("VACUUM");
  EXPECT_EQ(source->commits, before + 1);
  uint32_t small = Head(1).db_size_pages;
  EXPECT_LT(small, 30u);
  EXPECT_EQ(source->last_size, small);
  EXPECT_EQ(StoredPageCount(1), small);
  EXPECT_EQ(db.Count(), 10);
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Count(), 10);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  // Grows again after the shrink.
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<50) "
      "INSERT INTO t(v) SELECT randomblob(3000) FROM c");
  EXPECT_EQ(db.Count(), 60);
  EXPECT_EQ(StoredPageCount(1), Head(1).db_size_pages);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
}

TEST_F(KeelVfsTest, DatabasesOfDifferentActorsAreIsolated) {
  AttachActor("a", 1);
  AttachActor("b", 2);
  Db a, b;
  ASSERT_EQ(a.Open("a", vfs_.name()), SQLITE_OK);
  ASSERT_EQ(b.Open("b", vfs_.name()), SQLITE_OK);
  a.MustExec("CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('from a')");
  b.MustExec("CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('from b'), ('b2')");
  b.MustExec("CREATE TABLE only_b(x)");
  EXPECT_EQ(a.Query("SELECT v FROM t"), "from a");
  EXPECT_EQ(b.Query("SELECT v FROM t ORDER BY v"), "b2;from b");
  EXPECT_EQ(a.Query("SELECT count(*) FROM sqlite_master WHERE name = 'only_b'"), "0");
  a.Close();
  b.Close();
  ASSERT_EQ(a.Open("a", vfs_.name()), SQLITE_OK);
  ASSERT_EQ(b.Open("b", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(a.Query("SELECT v FROM t"), "from a");
  EXPECT_EQ(b.Query("SELECT v FROM t ORDER BY v"), "b2;from b");
  EXPECT_EQ(Head(1).head_txid, 2u);  // CREATE, INSERT
  EXPECT_EQ(Head(2).head_txid, 3u);  // CREATE, INSERT, CREATE
}

// --- Fault injection ----------------------------------------------------------------

class KeelVfsFaultTest : public ::testing::TestWithParam<CommitFault> {
 protected:
  KeelVfsFaultTest()
      : clock_(MonoTime(), 1'700'000'000'000),
        random_(11),
        faulty_(new FaultyKvStore(std::make_unique<MemKvStore>(), 3)),
        pages_(*faulty_),
        vfs_(NextVfsName(), clock_, random_, KeelVfsOptions{16, 4}) {
    EXPECT_TRUE(vfs_.Register().has_value());
  }

  ManualClock clock_;
  Random random_;
  std::unique_ptr<FaultyKvStore> faulty_;
  PageStore pages_;
  KeelVfs vfs_;
};

TEST_P(KeelVfsFaultTest, FailedCommitLeavesPreTransactionState) {
  auto source =
      std::make_shared<CountingSource>(std::make_shared<PageStorePageSource>(pages_, Actor(1)));
  ASSERT_TRUE(vfs_.Attach("db", source).has_value());
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  db.MustExec(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100) "
      "INSERT INTO t(v) SELECT 'v' || x FROM c");
  const std::string kBefore = "100|" + db.Query("SELECT group_concat(v) FROM t");
  auto content = [&] {
    return std::to_string(db.Count()) + "|" + db.Query("SELECT group_concat(v) FROM t");
  };
  ASSERT_EQ(content(), kBefore);

  faulty_->FailNextCommits(1, GetParam());
  int rc = db.Exec(
      "BEGIN; INSERT INTO t(v) VALUES ('new'); UPDATE t SET v = 'changed' WHERE id < 50; "
      "DELETE FROM t WHERE id > 90; "
      "CREATE TABLE big(b); INSERT INTO big SELECT randomblob(5000) FROM t; COMMIT");
  EXPECT_EQ(rc & 0xff, SQLITE_IOERR) << db.last_error();
  if (sqlite3_get_autocommit(db.get()) == 0) db.Exec("ROLLBACK");
  EXPECT_GE(source->failed_commits, 1);
  EXPECT_EQ(content(), kBefore);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(db.Query("SELECT count(*) FROM sqlite_master WHERE name = 'big'"), "0");

  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(content(), kBefore);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");

  // The database keeps working.
  db.MustExec("INSERT INTO t(v) VALUES ('after')");
  EXPECT_EQ(db.Count(), 101);
}

TEST_P(KeelVfsFaultTest, FailedAutocommitStatementIsRolledBack) {
  auto source =
      std::make_shared<CountingSource>(std::make_shared<PageStorePageSource>(pages_, Actor(1)));
  ASSERT_TRUE(vfs_.Attach("db", source).has_value());
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(v)");
  db.MustExec("INSERT INTO t VALUES (1)");
  faulty_->FailNextCommits(1, GetParam());
  EXPECT_NE(db.Exec("INSERT INTO t VALUES (2)"), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT group_concat(v) FROM t"), "1");
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT group_concat(v) FROM t"), "1");
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
}

INSTANTIATE_TEST_SUITE_P(Faults, KeelVfsFaultTest,
                         ::testing::Values(CommitFault::kNotApplied,
                                           CommitFault::kAppliedButFailed));

// Fails requests on demand.
class FlakySource : public PageSource {
 public:
  explicit FlakySource(std::shared_ptr<PageSource> inner) : inner_(std::move(inner)) {}
  Result<std::vector<Page>> GetPages(const std::vector<uint32_t>& pgnos) override {
    if (fail_gets) return SqliteError("test", "injected get_pages failure");
    return inner_->GetPages(pgnos);
  }
  Status Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                int64_t now_ms) override {
    if (fail_commits) return SqliteError("test", "injected commit failure");
    return inner_->Commit(std::move(dirty_pages), db_size_pages, now_ms);
  }
  bool fail_gets = false;
  bool fail_commits = false;

 private:
  std::shared_ptr<PageSource> inner_;
};

TEST_F(KeelVfsTest, SourceLostDuringFailedCommitKillsTheHandleUntilReopen) {
  auto flaky =
      std::make_shared<FlakySource>(std::make_shared<PageStorePageSource>(pages_, Actor(1)));
  ASSERT_TRUE(vfs_.Attach("db", flaky).has_value());
  Db db;
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(v); INSERT INTO t VALUES ('before')");
  flaky->fail_commits = true;
  flaky->fail_gets = true;
  EXPECT_NE(db.Exec("INSERT INTO t VALUES ('lost')"), SQLITE_OK);
  // The source is back, but this handle stays dead: its view of the store is unknown.
  flaky->fail_commits = false;
  flaky->fail_gets = false;
  EXPECT_NE(db.Exec("INSERT INTO t VALUES ('x')"), SQLITE_OK);
  db.Close();
  ASSERT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT group_concat(v) FROM t"), "before");
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  db.MustExec("INSERT INTO t VALUES ('after')");
  EXPECT_EQ(db.Query("SELECT group_concat(v) FROM t"), "before,after");
}

TEST_F(KeelVfsTest, OpenFailsWhenTheSourceFails) {
  auto flaky =
      std::make_shared<FlakySource>(std::make_shared<PageStorePageSource>(pages_, Actor(1)));
  ASSERT_TRUE(vfs_.Attach("db", flaky).has_value());
  flaky->fail_gets = true;
  Db db;
  EXPECT_EQ(db.Open("db", vfs_.name()), SQLITE_CANTOPEN);
  EXPECT_FALSE(vfs_.IsOpen("db"));
  flaky->fail_gets = false;
  EXPECT_EQ(db.Open("db", vfs_.name()), SQLITE_OK);
}

TEST_F(KeelVfsTest, GenerationFencing) {
  ASSERT_TRUE(pages_.SetGeneration(Actor(1), 2).has_value());
  ASSERT_TRUE(
      vfs_.Attach("old", std::make_shared<PageStorePageSource>(pages_, Actor(1), 1)).has_value());
  ASSERT_TRUE(
      vfs_.Attach("new", std::make_shared<PageStorePageSource>(pages_, Actor(1), 2)).has_value());
  Db db;
  EXPECT_NE(db.Open("old", vfs_.name()), SQLITE_OK);  // sqlite.remote_fence_mismatch
  ASSERT_EQ(db.Open("new", vfs_.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(v); INSERT INTO t VALUES (1)");
  EXPECT_EQ(Head(1).generation, std::optional<uint64_t>(2));
}

TEST(KeelVfsLimitTest, CommitTooLargeFailsTheTransactionCleanly) {
  ManualClock clock;
  Random random(1);
  MemKvStore kv;
  PageStoreOptions options;
  options.max_commit_bytes = 64 * 1024;  // 16 pages
  PageStore pages(kv, options);
  KeelVfs vfs(NextVfsName(), clock, random);
  ASSERT_TRUE(vfs.Register().has_value());
  ASSERT_TRUE(vfs.Attach("db", std::make_shared<PageStorePageSource>(pages, Actor(1))).has_value());
  Db db;
  ASSERT_EQ(db.Open("db", vfs.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(v BLOB); INSERT INTO t VALUES (x'01')");
  EXPECT_NE(db.Exec("INSERT INTO t VALUES (randomblob(200000))"), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT count(*) FROM t"), "1");
  db.MustExec("INSERT INTO t VALUES (randomblob(10000))");
  db.Close();
  ASSERT_EQ(db.Open("db", vfs.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("SELECT count(*) FROM t"), "2");
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
}

TEST(KeelVfsCrashTest, RandomTransactionsAndCrashesKeepTheLastSyncedState) {
  ManualClock clock(MonoTime(), 1'700'000'000'000);
  Random vfs_random(5);
  Random rng(20261130);
  FaultyKvStore faulty(std::make_unique<MemKvStore>(), 9);
  PageStoreOptions unsynced_options;
  unsynced_options.sync = false;
  PageStore synced(faulty);
  PageStore unsynced(faulty, unsynced_options);
  KeelVfs vfs(NextVfsName(), clock, vfs_random, KeelVfsOptions{32, 4});
  ASSERT_TRUE(vfs.Register().has_value());
  auto source = std::make_shared<SwitchableSource>(synced, unsynced, Actor(3));
  ASSERT_TRUE(vfs.Attach("db", source).has_value());

  Db db;
  ASSERT_EQ(db.Open("db", vfs.name()), SQLITE_OK);
  db.MustExec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  int64_t acknowledged = 0;  // rows after the last acknowledged commit
  int64_t synced_rows = 0;   // rows after the last acknowledged synced commit
  int crashes = 0;
  for (int step = 0; step < 200; ++step) {
    SCOPED_TRACE("step " + std::to_string(step) + " seed " + std::to_string(rng.seed()));
    int op = rng.Uniform(0, 9);
    if (op == 0) {
      // Crash: the process dies (connection gone), unsynced commits are lost.
      db.Close();
      ASSERT_TRUE(faulty.SimulateCrash().has_value());
      ++crashes;
      acknowledged = synced_rows;
      ASSERT_EQ(db.Open("db", vfs.name()), SQLITE_OK);
      ASSERT_EQ(db.Query("PRAGMA integrity_check"), "ok");
      ASSERT_EQ(db.Count(), acknowledged);
      continue;
    }
    source->sync = rng.Uniform(0, 3) == 0;
    int before = source->commits;
    if (op <= 5) {
      int n = rng.Uniform(1, 20);
      int size = rng.Uniform(10, 3000);
      db.MustExec("BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<" +
                  std::to_string(n) + ") INSERT INTO t(v) SELECT randomblob(" +
                  std::to_string(size) + ") FROM c; UPDATE t SET v = zeroblob(10) WHERE id % 7 = " +
                  std::to_string(rng.Uniform(0, 6)) + "; COMMIT");
      acknowledged += n;
    } else if (op <= 7) {
      int64_t deleted =
          std::stoll(db.Query("SELECT count(*) FROM t WHERE id % 3 = " + std::to_string(op - 6)));
      db.MustExec("DELETE FROM t WHERE id % 3 = " + std::to_string(op - 6));
      acknowledged -= deleted;
      if (deleted == 0) {
        ASSERT_EQ(db.Count(), acknowledged);
        continue;
      }
    } else if (op == 8) {
      // An abandoned transaction (rolled back) changes nothing.
      db.MustExec("BEGIN; INSERT INTO t(v) VALUES (randomblob(5000)); DELETE FROM t; ROLLBACK");
      ASSERT_EQ(source->commits, before);
      ASSERT_EQ(db.Count(), acknowledged);
      continue;
    } else {
      db.MustExec("VACUUM");
    }
    ASSERT_EQ(source->commits, before + 1);
    if (source->sync) synced_rows = acknowledged;
    ASSERT_EQ(db.Count(), acknowledged);
  }
  EXPECT_GT(crashes, 5);
  db.Close();
  ASSERT_TRUE(faulty.SimulateCrash().has_value());
  ASSERT_EQ(db.Open("db", vfs.name()), SQLITE_OK);
  EXPECT_EQ(db.Query("PRAGMA integrity_check"), "ok");
  EXPECT_EQ(db.Count(), synced_rows);
}

}  // namespace
}  // namespace keel::storage
