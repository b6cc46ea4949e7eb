// SQLite through KeelVfs over a RocksDB-backed PageStore against the same SQL on a plain
// SQLite file with equivalent durability.
//
//   keel:0  plain SQLite file, PRAGMA journal_mode=WAL, PRAGMA synchronous=FULL: every
//           commit is durable (one WAL fdatasync per commit).
//   keel:1  KeelVfs -> PageStorePageSource -> PageStore (sync = true) -> RocksDbKvStore:
//           every SQLite write transaction is one synced RocksDB commit. Journal mode is
//           the default DELETE (the VFS keeps the journal in memory; WAL is refused), with
//           synchronous=FULL (the VFS commits on SQLITE_FCNTL_SYNC whatever the setting).
//
// Same schema in both: CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB), 100-byte blobs.
//   BM_InsertTxn    one prepared INSERT per iteration, autocommit (one durable txn each);
//                   items/s = transactions/s.
//   BM_BulkInsert   one iteration = BEGIN; 10,000 prepared INSERTs; COMMIT;
//                   items/s = rows/s, the time per iteration is the whole transaction.
//   BM_PointSelect  prepared SELECT v FROM t WHERE id=? with a random id on a 10,000-row
//                   table, cache-warm (every row read once first); items/s = selects/s.
// Ratio Keel/plain = time(keel:1) / time(keel:0) for the same benchmark.
//
// Each run opens a fresh database in a new directory under the temp directory ($TMPDIR or
// /tmp: put TMPDIR on the disk you want to measure) and removes it after. Iteration counts
// are fixed so a run stays short on a small shared machine. Synced figures are dominated by
// the disk's fsync latency; count the syncs per commit with e.g.
//   perf stat -e syscalls:sys_enter_fdatasync -e syscalls:sys_enter_fsync
//     vfs_bench --benchmark_filter='InsertTxn/keel:1'   (one command line)
// (subtract the few syncs of open/close, divide by the iterations).
#include <benchmark/benchmark.h>
#include <sqlite3.h>

#include <stdlib.h>  // mkdtemp

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/native/system_clock.h"
#include "base/random.h"
#include "base/result.h"
#include "storage/page_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage/vfs/keel_vfs.h"

namespace keel::storage {
namespace {

constexpr int kBlobSize = 100;
constexpr int kBulkRows = 10000;
constexpr int kSelectRows = 10000;
constexpr char kDbName[] = "bench.db";
constexpr char kVfsName[] = "keel-vfs-bench";

[[noreturn]] void Die(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "vfs_bench: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void Check(const Status& status, std::string_view what) {
  if (!status.has_value()) Die(what, status.error().ToString());
}

void Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    Die(sql, msg);
  }
}

sqlite3_stmt* Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    Die(sql, sqlite3_errmsg(db));
  }
  return stmt;
}

std::filesystem::path MakeTempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "keel-vfs-bench-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("vfs_bench: mkdtemp");
    std::abort();
  }
  return pattern;
}

// The database of the running benchmark: created by a Setup, destroyed by Teardown.
// Member order is destruction order in reverse: the connection closes first, then the VFS
// (unregisters), the page store, the KvStore, and the directory goes last.
struct BenchDb {
  std::filesystem::path dir;
  SystemClock clock;
  Random vfs_random{0x5eed};
  std::unique_ptr<RocksDbKvStore> kv;
  std::unique_ptr<PageStore> pages;
  std::unique_ptr<KeelVfs> vfs;
  sqlite3* db = nullptr;

  ~BenchDb() {
    if (db != nullptr) sqlite3_close_v2(db);
    vfs.reset();
    pages.reset();
    if (kv != nullptr) (void)kv->Close();
    kv.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
std::unique_ptr<BenchDb> g_db;

// keel == false: plain WAL file; true: KeelVfs over RocksDB.
void OpenDb(bool keel) {
  g_db = std::make_unique<BenchDb>();
  BenchDb& b = *g_db;
  b.dir = MakeTempDir();
  if (keel) {
    std::unique_ptr<RocksDbKvStore> kv;
    {
      auto opened = RocksDbKvStore::Open((b.dir / "kv").string());
      if (!opened.has_value()) Die("open RocksDB", opened.error().ToString());
      kv = std::move(opened).value();
    }
    b.kv = std::move(kv);
    PageStoreOptions page_options;
    page_options.sync = true;  // the default, spelled out: synced commits
    b.pages = std::make_unique<PageStore>(*b.kv, page_options);
    b.vfs = std::make_unique<KeelVfs>(kVfsName, b.clock, b.vfs_random);
    Check(b.vfs->Register(), "vfs register");
    Check(b.vfs->Attach(kDbName, std::make_shared<PageStorePageSource>(
                                     *b.pages, Bytes(kKeelActorIdSize, 0xAB))),
          "vfs attach");
    if (sqlite3_open_v2(kDbName, &b.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        b.vfs->name()) != SQLITE_OK) {
      Die("sqlite open (keel)", b.db != nullptr ? sqlite3_errmsg(b.db) : "?");
    }
    Exec(b.db, "PRAGMA synchronous=FULL");
  } else {
    const std::string path = (b.dir / kDbName).string();
    if (sqlite3_open_v2(path.c_str(), &b.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        nullptr) != SQLITE_OK) {
      Die("sqlite open (plain)", b.db != nullptr ? sqlite3_errmsg(b.db) : "?");
    }
    Exec(b.db, "PRAGMA journal_mode=WAL");
    Exec(b.db, "PRAGMA synchronous=FULL");
  }
  Exec(b.db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
}

void SetupDb(const benchmark::State& state) { OpenDb(state.range(0) != 0); }

// Also fills the table with ids 1..kSelectRows in one transaction and reads every row once.
void SetupSelect(const benchmark::State& state) {
  OpenDb(state.range(0) != 0);
  sqlite3* db = g_db->db;
  Exec(db,
       "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) "
       "INSERT INTO t(id, v) SELECT i, randomblob(100) FROM n");
  Exec(db, "SELECT count(*), sum(length(v)) FROM t");
}

void TeardownDb(const benchmark::State&) { g_db.reset(); }

std::vector<uint8_t> Blob(uint64_t seed) {
  std::vector<uint8_t> blob(kBlobSize);
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<uint8_t>(seed * 131 + i * 7);
  return blob;
}

// Inserts one row with a fresh rowid and the blob; false (and the error reported) on failure.
bool InsertRow(benchmark::State& state, sqlite3_stmt* insert, const std::vector<uint8_t>& blob) {
  sqlite3_bind_blob(insert, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(insert);
  sqlite3_reset(insert);
  if (rc != SQLITE_DONE) {
    state.SkipWithError((std::string("insert: ") + sqlite3_errstr(rc)).c_str());
    return false;
  }
  return true;
}

void BM_InsertTxn(benchmark::State& state) {
  sqlite3* db = g_db->db;
  sqlite3_stmt* insert = Prepare(db, "INSERT INTO t(v) VALUES (?1)");
  std::vector<uint8_t> blob = Blob(1);
  uint64_t n = 0;
  for (auto _ : state) {
    blob[0] = static_cast<uint8_t>(n++);
    if (!InsertRow(state, insert, blob)) break;
  }
  sqlite3_finalize(insert);
  state.SetItemsProcessed(state.iterations());
}

void BM_BulkInsert(benchmark::State& state) {
  sqlite3* db = g_db->db;
  sqlite3_stmt* insert = Prepare(db, "INSERT INTO t(v) VALUES (?1)");
  std::vector<uint8_t> blob = Blob(2);
  uint64_t n = 0;
  for (auto _ : state) {
    Exec(db, "BEGIN");
    for (int i = 0; i < kBulkRows; ++i) {
      blob[0] = static_cast<uint8_t>(n++);
      if (!InsertRow(state, insert, blob)) break;
    }
    Exec(db, "COMMIT");
  }
  sqlite3_finalize(insert);
  state.SetItemsProcessed(state.iterations() * kBulkRows);
}

void BM_PointSelect(benchmark::State& state) {
  sqlite3* db = g_db->db;
  sqlite3_stmt* select = Prepare(db, "SELECT v FROM t WHERE id = ?1");
  Random random(42);
  for (auto _ : state) {
    sqlite3_bind_int64(select, 1, random.Uniform<int64_t>(1, kSelectRows));
    const int rc = sqlite3_step(select);
    if (rc != SQLITE_ROW || sqlite3_column_bytes(select, 0) != kBlobSize) {
      sqlite3_reset(select);
      state.SkipWithError((std::string("select: ") + sqlite3_errstr(rc)).c_str());
      break;
    }
    benchmark::DoNotOptimize(sqlite3_column_blob(select, 0));
    sqlite3_reset(select);
  }
  sqlite3_finalize(select);
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_InsertTxn)
    ->Setup(SetupDb)
    ->Teardown(TeardownDb)
    ->ArgName("keel")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(300)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_BulkInsert)
    ->Setup(SetupDb)
    ->Teardown(TeardownDb)
    ->ArgName("keel")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(5)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_PointSelect)
    ->Setup(SetupSelect)
    ->Teardown(TeardownDb)
    ->ArgName("keel")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(200000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace keel::storage
