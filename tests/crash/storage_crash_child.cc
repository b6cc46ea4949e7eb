// storage_crash_child: the victim process of storage_crash_test. Not a test by itself.
//
//   storage_crash_child <data dir> <seed> <start seq>
//
// Opens a RocksDbKvStore in <data dir> (synced commits) and, until killed, alternates at
// random between two kinds of transaction, each tagged with a strictly increasing sequence
// number n (starting at <start seq>):
//  * KV:  one KvTxn writing keys "k/<n>/<i>" = "<n>:<c>" for i in [0, c) plus "last" = n.
//         After Commit returns OK it writes "K <n>\n" to stdout.
//  * SQL: one SQLite transaction through KeelVfs over a PageStore on the same store:
//         c rows (seq=n, idx=i, cnt=c, payload=randomblob(random size, some spanning
//         pages)), sometimes an UPDATE of an older seq's payloads, sometimes the DELETE of
//         the oldest seq recorded in table `deleted` in the same transaction. After COMMIT
//         returns SQLITE_OK it writes "S <n>\n" to stdout.
// Once the store is open and the schema exists it writes "R\n" (ready), before any
// transaction. Each line is a single write(2) to the pipe, so the parent never sees half a
// line for a finished commit. Any failure prints to stderr and exits with status 2.
#include <sqlite3.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "base/bytes.h"
#include "base/native/system_clock.h"
#include "base/random.h"
#include "storage/page_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage/vfs/keel_vfs.h"

namespace {

using keel::Bytes;
using keel::ByteView;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "storage_crash_child: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

void Ack(char kind, uint64_t n) {
  std::string line = std::string(1, kind) + " " + std::to_string(n) + "\n";
  ssize_t written = ::write(STDOUT_FILENO, line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) Die("ack write failed");
}

Bytes ToBytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

std::string SeqKey(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%012llu", static_cast<unsigned long long>(n));
  return buf;
}

void Exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    Die("sql '" + sql + "' failed: " + std::to_string(rc) + " " + msg);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) Die("usage: storage_crash_child <data dir> <seed> <start seq>");
  const std::string dir = argv[1];
  const uint64_t seed = std::strtoull(argv[2], nullptr, 10);
  uint64_t seq = std::strtoull(argv[3], nullptr, 10);

  keel::Random random(seed);
  keel::Random vfs_random(seed ^ 0x9e3779b97f4a7c15ULL);
  keel::SystemClock clock;

  auto opened = keel::storage::RocksDbKvStore::Open(dir);
  if (!opened.has_value()) Die("open: " + opened.error().ToString());
  std::unique_ptr<keel::storage::RocksDbKvStore> store = std::move(*opened);

  keel::storage::PageStore pages(*store);  // sync = true by default
  const Bytes actor(keel::storage::kKeelActorIdSize, 0xAB);
  keel::storage::KeelVfs vfs("keel-crash-child", clock, vfs_random);
  if (auto s = vfs.Register(); !s.has_value()) Die("vfs register: " + s.error().ToString());
  if (auto s = vfs.Attach("crash.db", std::make_shared<keel::storage::PageStorePageSource>(
                                          pages, actor));
      !s.has_value()) {
    Die("vfs attach: " + s.error().ToString());
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2("crash.db", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      vfs.name()) != SQLITE_OK) {
    Die(std::string("sqlite open: ") + (db != nullptr ? sqlite3_errmsg(db) : "?"));
  }
  Exec(db,
       "CREATE TABLE IF NOT EXISTS t(seq INTEGER NOT NULL, idx INTEGER NOT NULL, "
       "cnt INTEGER NOT NULL, payload BLOB, PRIMARY KEY(seq, idx));"
       "CREATE TABLE IF NOT EXISTS deleted(seq INTEGER PRIMARY KEY);");
  Ack('R', 0);

  for (;; ++seq) {
    if (random.Uniform(0, 1) == 0) {
      // KV transaction.
      const int count = random.Uniform(1, 8);
      auto txn = store->Begin();
      if (!txn.has_value()) Die("begin: " + txn.error().ToString());
      const std::string value = std::to_string(seq) + ":" + std::to_string(count);
      for (int i = 0; i < count; ++i) {
        std::string key = "k/" + SeqKey(seq) + "/" + std::to_string(i);
        if (auto s = (*txn)->Put(ToBytes(key), ToBytes(value)); !s.has_value()) {
          Die("put: " + s.error().ToString());
        }
      }
      if (auto s = (*txn)->Put(ToBytes("last"), ToBytes(std::to_string(seq))); !s.has_value()) {
        Die("put last: " + s.error().ToString());
      }
      if (auto s = (*txn)->Commit(); !s.has_value()) Die("commit: " + s.error().ToString());
      Ack('K', seq);
    } else {
      // SQL transaction.
      const int count = random.Uniform(1, 5);
      std::string sql = "BEGIN;";
      for (int i = 0; i < count; ++i) {
        // Mostly small rows, sometimes overflow rows spanning several 4 KiB pages.
        int size = random.Uniform(0, 4) == 0 ? random.Uniform(4000, 20000) : random.Uniform(1, 600);
        sql += "INSERT INTO t(seq, idx, cnt, payload) VALUES (" + std::to_string(seq) + ", " +
               std::to_string(i) + ", " + std::to_string(count) + ", randomblob(" +
               std::to_string(size) + "));";
      }
      const int extra = random.Uniform(0, 9);
      if (extra < 3) {
        // Rewrite the payloads of some older seq (row set unchanged).
        sql += "UPDATE t SET payload = randomblob(" + std::to_string(random.Uniform(1, 9000)) +
               ") WHERE seq = (SELECT seq FROM t WHERE seq < " + std::to_string(seq) +
               " ORDER BY random() LIMIT 1);";
      } else if (extra < 6) {
        // Delete the oldest seq, recording it (keeps the database from growing forever).
        sql +=
            "INSERT INTO deleted(seq) SELECT min(seq) FROM t WHERE seq < " + std::to_string(seq) +
            " HAVING count(*) > 0;"
            "DELETE FROM t WHERE seq = (SELECT max(seq) FROM deleted) ;";
      }
      sql += "COMMIT;";
      Exec(db, sql);
      Ack('S', seq);
    }
  }
}
