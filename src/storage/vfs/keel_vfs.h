// KeelVfs: a SQLite VFS that serves each database from a PageSource (envoy-protocol §7):
// the PageStore directly (engine side, remote SQL) or, later, get_pages/commit requests over
// the envoy protocol (native runtime). Debian's libsqlite3 is built without
// SQLITE_ENABLE_BATCH_ATOMIC_WRITE, so the VFS itself turns every SQLite write transaction
// into exactly ONE atomic PageSource::Commit (docs/toolchain.md "Keel decisions").
//
// Usage:
//   KeelVfs vfs("keel-actor-x-g1", clock, random);
//   vfs.Register();                                  // sqlite3_vfs_register (not default)
//   vfs.Attach("actor-x", std::make_shared<PageStorePageSource>(store, actor, gen));
//   sqlite3_open_v2("actor-x", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs.name());
//
// Files:
//  * Main database (SQLITE_OPEN_MAIN_DB, name attached with Attach): a file of
//    db_size_pages × 4096 bytes backed by the PageSource. On open the VFS reads page 1 and
//    takes the size from the header (offset 28, big-endian u32), as Rivet's VFS does
//    (§7.5); a never-committed database (error sqlite.not_found, or page 1 absent) is an
//    empty file and SQLite creates it on the first write. Reads are served from the
//    transaction's dirty-page buffer, then from a bounded LRU cache of committed pages
//    (KeelVfsOptions::cache_pages), then from one GetPages (the missed page plus up to
//    KeelVfsOptions::read_ahead_pages following committed pages). Absent bytes read as zeros.
//    At most one open handle per attached name (a second open fails with SQLITE_CANTOPEN),
//    because locking is a no-op (below).
//  * Everything else — rollback journals, statement journals, temp databases, VACUUM's
//    scratch database — is an in-memory file owned by its handle and freed by xClose.
//    xDelete is a no-op and xAccess reports only attached main databases as existing, so
//    SQLite never sees a "hot journal" (none is ever needed, see below). WAL is refused.
//
// Page size: fixed at 4096 (the protocol's page size). `PRAGMA page_size` with any other
// value fails (SQLITE_FCNTL_PRAGMA), as do `PRAGMA journal_mode=WAL` and `=OFF`; a write
// of a page-1 header announcing another page size fails with SQLITE_IOERR_WRITE; opening
// a stored database whose header says otherwise fails with SQLITE_CANTOPEN. xSectorSize is
// 4096, so a fresh database gets 4096-byte pages by default. journal_mode OFF is refused
// because without a journal SQLite cannot replay a rolled-back transaction whose pages had
// already spilled into the buffer; DELETE (Rivet's setting), TRUNCATE, PERSIST and MEMORY
// all work, with any `synchronous` and `locking_mode`.
//
// THE COMMIT. With a rollback journal SQLite 3.40 commits a write transaction like this
// (pager.c: sqlite3PagerCommitPhaseOne, then pager_end_transaction):
//   1. journal: xOpen, xWrite of the header and of the original content of every page the
//      transaction changes (some of that may happen earlier, when the page cache spills);
//   2. xSync(journal) (once or twice, depending on synchronous/IOCAP flags);
//   3. xWrite(main db) of every dirty page (spilled pages may have been written earlier),
//      including page 1 whose header holds the new change counter and size in pages;
//      xTruncate/xWrite only to GROW the file;
//   4. sqlite3PagerSync: xFileControl(main db, SQLITE_FCNTL_SYNC) — sent ALWAYS, even with
//      `PRAGMA synchronous=OFF` — followed by xSync(main db) unless synchronous=OFF;
//   5. journal finalize (xClose + xDelete, xTruncate(0) or a zeroed header, by
//      journal_mode / locking_mode): from here on SQLite considers the txn committed;
//   6. only now, if the database shrank (VACUUM, incremental vacuum), xTruncate(main db);
//      then xFileControl(SQLITE_FCNTL_COMMIT_PHASETWO) and xUnlock (not in EXCLUSIVE mode).
// The VFS buffers every main-db xWrite/xTruncate in memory (dirty pages and a pending size);
// nothing reaches the PageSource before step 4. Step 4 — SQLITE_FCNTL_SYNC, or xSync should
// SQLite ever call it alone — flushes the buffer as ONE
// PageSource::Commit(all dirty pages, size, clock.SystemNowMs()); a flush with nothing
// buffered is a no-op (the xSync right after the FCNTL, read-only transactions). The size
// committed is the one in the dirty page-1 header (offset 28, when valid: offset 24 ==
// offset 92, SQLite's own check) if that is not above the file size, else the file size;
// so a shrinking transaction is one commit too and the step-6 truncation finds nothing
// left to do. (Should a pure shrink ever still be pending at COMMIT_PHASETWO, it is sent as
// a second, size-only commit: harmless, the first commit's header already describes it.)
// Why this is atomic and crash-safe:
//  * the PageSource applies a commit all-or-nothing (PageStore: one KvStore transaction);
//  * so the stored database is only ever the state before or after a whole SQLite
//    transaction. A crash before the commit loses only memory (buffer and in-memory
//    journal) and the store still holds the previous committed state; once the commit
//    returns, the store holds the new state. No stored state ever needs a journal to be
//    repaired, which is why the journal may live in memory and is never reported as hot;
//  * SQLite only reaches step 4 with a complete journal (step 2) and only finalizes it
//    after step 4 succeeded, so whatever happens to the commit SQLite can still roll back.
// Commit failure: the flush returns SQLITE_IOERR_FSYNC, drops the buffer and the page
// cache (a storage.io outcome is unknown), and re-reads the committed size from page 1 (if
// that read fails too the handle is dead: every later call fails until it is reopened).
// SQLite then rolls the transaction back: it replays its journal through xWrite/xTruncate
// and syncs again, which sends one more Commit carrying the pre-transaction content of
// every page the transaction touched and the pre-transaction size. So after a failed
// COMMIT the stored database is the pre-transaction state as soon as the store accepts
// that commit (even if the failed commit had in fact been applied); if it fails too, the
// outcome is the failed commit's (unknown for storage.io) and SQLite reports the error.
// A ROLLBACK of a transaction whose pages never spilled writes nothing and commits nothing;
// after a spill it sends one commit that restores the original pages.
// Not covered: a transaction over several attached databases (super-journal) is one
// commit per database, not atomic across them.
//
// Locking: a no-op for one process (xLock/xUnlock succeed, xCheckReservedLock says no
// reservation). Safe because a database name can be open in only one handle at a time and
// the store is single-writer per actor (§7.3). Device characteristics:
// ATOMIC4K | SAFE_APPEND | SEQUENTIAL | POWERSAFE_OVERWRITE — true here because no write is
// visible to anyone before the commit, which applies everything at once, in order.
// No shared memory, no mmap (io_methods version 1). Time: xCurrentTime/xCurrentTimeInt64
// come from Clock::SystemNowMs; xRandomness from the given keel::Random; xSleep returns at
// once without waiting (a busy handler spins; with no-op locking SQLITE_BUSY cannot occur
// between our own connections). No loadable extensions (xDlOpen fails).
//
// Thread-safety: SQLite (THREADSAFE=1) may call the VFS from several threads; the registry,
// Random and the per-handle open-count are guarded by one mutex. One handle is used by its
// connection only. The Clock must tolerate calls from the threads that run SQLite. A
// PageSource is called from the thread running the SQL statement, synchronously.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/random.h"
#include "base/result.h"
#include "storage/page_store.h"

namespace keel::storage {

// Where a database's pages live: the two §7 requests, synchronous. Page numbers are
// 1-based; every page is kSqlitePageSize bytes.
class PageSource {
 public:
  virtual ~PageSource() = default;

  // One Page per requested pgno, in request order; absent bytes read as zeros (pgno beyond
  // the size, or never written). A database that was never committed is the error
  // sqlite.not_found (the VFS opens it as an empty database); any other error is an I/O
  // failure.
  virtual Result<std::vector<Page>> GetPages(const std::vector<uint32_t>& pgnos) = 0;

  // Atomically: every dirty page (distinct pgnos, 4096 bytes each) becomes current, the
  // size becomes `db_size_pages` (pages above it are discarded), `now_ms` is the commit
  // time. An error means the outcome is unknown unless the error says otherwise.
  virtual Status Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                        int64_t now_ms) = 0;
};

// A PageSource over a PageStore for one actor, optionally fenced by a generation
// (expected_generation on every request). `store` must outlive it.
class PageStorePageSource : public PageSource {
 public:
  PageStorePageSource(PageStore& store, Bytes actor,
                      std::optional<uint64_t> generation = std::nullopt);

  Result<std::vector<Page>> GetPages(const std::vector<uint32_t>& pgnos) override;
  Status Commit(std::vector<DirtyPage> dirty_pages, uint32_t db_size_pages,
                int64_t now_ms) override;

  // The newest I/O failure since the last call (not sqlite.not_found, which is no failure),
  // and forgets it. SQLite reports only "disk I/O error"; this says what happened
  // (sqlite.commit_too_large, remote_fence_mismatch, a storage error).
  std::optional<Error> TakeFailure() { return std::exchange(failure_, std::nullopt); }

 private:
  PageStore& store_;
  Bytes actor_;
  std::optional<uint64_t> generation_;
  std::optional<Error> failure_;
};

struct KeelVfsOptions {
  // Committed pages kept per open database handle (LRU). 0 is replaced by 1.
  size_t cache_pages = 2048;  // 8 MiB
  // On a cache miss, also fetch up to this many following committed pages not cached.
  size_t read_ahead_pages = 8;
};

class KeelVfs {
 public:
  // `clock` and `random` must outlive this object.
  KeelVfs(std::string name, Clock& clock, Random& random, KeelVfsOptions options = {});
  // Unregisters. REQUIRES: no SQLite connection uses this VFS any more.
  ~KeelVfs();
  KeelVfs(const KeelVfs&) = delete;
  KeelVfs& operator=(const KeelVfs&) = delete;

  // The name to pass as zVfs to sqlite3_open_v2.
  const char* name() const;

  // sqlite3_vfs_register. Idempotent. Error group "sqlite", code "vfs" on failure.
  Status Register(bool make_default = false);
  // sqlite3_vfs_unregister. Idempotent. Fails (sqlite.vfs) while a database is open.
  Status Unregister();

  // Maps the database file name `db_name` to `source`. Fails (sqlite.vfs) if the name is
  // already attached.
  Status Attach(std::string db_name, std::shared_ptr<PageSource> source);
  // Removes the mapping. Fails (sqlite.vfs) while the database is open or unknown.
  Status Detach(std::string_view db_name);
  // True while a main-database handle for `db_name` is open.
  bool IsOpen(std::string_view db_name) const;

  // True while `db_name` is open and no read through its handle can reach the PageSource:
  // every committed page is cached (or dirty, or reads as zeros) and the handle is not dead.
  // Then a statement that ends no write transaction (no xSync / SQLITE_FCNTL_SYNC) does no
  // PageSource I/O at all: writes are buffered, journals live in memory. False for a
  // database larger than KeelVfsOptions::cache_pages. REQUIRES: called by the thread using
  // the connection, or while no statement of it runs.
  bool FullyCached(std::string_view db_name) const;
  // Loads every committed page of the open `db_name` that is neither cached nor dirty,
  // `batch_pages` per GetPages, so that FullyCached holds; returns false (and fetches
  // nothing) when the database has more pages than the cache holds. Errors: the GetPages
  // error; sqlite.vfs when `db_name` is not open. REQUIRES: as FullyCached.
  Result<bool> Prefetch(std::string_view db_name, size_t batch_pages = 64);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::storage
