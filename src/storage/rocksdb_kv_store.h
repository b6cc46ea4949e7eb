// RocksDbKvStore: the embedded, on-disk KvStore (the engine's default backend), over a
// RocksDB OptimisticTransactionDB in one data directory. RocksDB types stay in the .cc.
// How the contract in kv_store.h maps onto RocksDB:
//  * a txn takes a RocksDB snapshot at Begin (set_snapshot) and reads through it;
//    Get and the keys returned by Scan are tracked with GetForUpdate, Put/Delete are
//    tracked writes, so RocksDB's commit-time validation (keys written after the snapshot)
//    is exactly the conflict rule; Status::Busy and Status::TryAgain (memtable history too
//    short to validate) from Commit both become `storage.conflict`.
//  * DeleteRange inside a txn: OptimisticTransactionDB rejects range tombstones, so the
//    txn iterates the range in its own view and deletes each key (cost: a scan plus one
//    tombstone per key; fine for per-actor data, which is what the engine deletes).
//  * CommitOptions::sync is WriteOptions::sync for that commit.
// Thread-safety: as KvStore. Close() waits for calls in flight on other threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "storage/kv_store.h"

namespace keel::storage {

namespace internal {
struct RocksDbState;
}  // namespace internal

struct RocksDbKvStoreOptions {
  // Create the directory (parents included) and an empty database when missing.
  // Default: true.
  bool create_if_missing = true;
  // Fail Open with `storage.invalid_argument` when a database already exists.
  // Default: false.
  bool error_if_exists = false;
  // Memtable size before a flush to disk. Default: 64 MiB.
  size_t write_buffer_size = size_t{64} << 20;
  // Bytes of recent write history RocksDB keeps in memory to validate optimistic commits.
  // A txn that outlives this much writing by others fails with `storage.conflict`.
  // Default: 128 MiB.
  int64_t conflict_history_bytes = int64_t{128} << 20;
  // Lock stripes used while validating commits in parallel (more: less contention
  // between concurrent commits, more memory). Default: 65536.
  uint32_t commit_lock_stripes = 1 << 16;
  // The write-ahead log's space ahead of its writes is written zeros inside its file size,
  // 1 MiB at a time (rocksdb_kv_store.cc, ZeroFilledWal), so an append lands in blocks that
  // exist and were written: the fdatasync of a synced commit writes the data and flushes,
  // without also journaling the file's size (about 40 % of a small sync on ext4 here) or
  // the conversion of a fallocated block (+60 µs per sync when each commit carries a 4 KiB
  // SQLite page). RocksDB reads the zero tail after a crash as the end of the log (kZeroType
  // records); a clean close trims it. Costs 1 MiB of zeros written per 1 MiB of log.
  // Default: true; the environment variable KEEL_WAL_PREALLOCATE_SIZE=0 turns it off.
  bool preallocate_wal_with_size = true;
  // When the database lives on a filesystem kept in memory (tmpfs, ramfs), whose fsync does
  // nothing, synced commits and SyncWrites skip the call: a write that returned is already
  // as durable as that storage gets (it survives the process, not the machine). Default:
  // true; false (or the environment variable KEEL_SYNC_ON_MEMORY_FS=1) makes the calls
  // anyway, for comparisons.
  bool skip_syncs_on_memory_fs = true;
};

// True when `path` is on a filesystem kept in memory (tmpfs, ramfs), where an fsync has
// nothing to write; false when it is not, or cannot be told.
bool OnMemoryFilesystem(const std::string& path);

class RocksDbKvStore : public KvStore {
 public:
  // Opens (by default creating) the database in directory `path`.
  // Errors: invalid_argument (bad path or options, missing/existing database as the
  // options demand), io (e.g. the directory is locked by another open store), corruption.
  static Result<std::unique_ptr<RocksDbKvStore>> Open(const std::string& path,
                                                      const RocksDbKvStoreOptions& options = {});

  ~RocksDbKvStore() override;
  RocksDbKvStore(const RocksDbKvStore&) = delete;
  RocksDbKvStore& operator=(const RocksDbKvStore&) = delete;

  // KvStore
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override;
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override;
  Result<std::unique_ptr<KvSnapshot>> NewSnapshot() override;
  Result<std::unique_ptr<KvTxn>> Begin() override;
  // Syncs the WAL, releases every open snapshot and txn (they then return
  // `storage.closed`) and closes the database files, so the path can be reopened.
  Status Close() override;
  // One fsync of the WAL (DB::SyncWAL); concurrent commits go on meanwhile. Nothing on a
  // filesystem in memory (SkipsSyncs()).
  Status SyncWrites() override;
  // True on a filesystem kept in memory (RocksDbKvStoreOptions::skip_syncs_on_memory_fs).
  bool SkipsSyncs() const override;
  // One WriteBatch straight to the base DB: no OCC locks, tracking or validation.
  Status WriteUnchecked(std::span<const KvWrite> writes, const CommitOptions& options) override;

  const std::string& path() const { return path_; }
  // How many synced commits and SyncWrites calls skipped their sync (SkipsSyncs).
  uint64_t syncs_skipped() const;
  // How many memtable inserts started from an insert hint (CommitOptions::rewritten_often).
  uint64_t hinted_inserts() const;

 private:
  RocksDbKvStore(std::string path, std::shared_ptr<internal::RocksDbState> state);

  std::string path_;
  // Shared with snapshots and transactions so they never dangle.
  std::shared_ptr<internal::RocksDbState> state_;
};

}  // namespace keel::storage
