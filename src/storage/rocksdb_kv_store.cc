#include "storage/rocksdb_kv_store.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/status.h>
#include <rocksdb/utilities/optimistic_transaction_db.h>
#include <rocksdb/utilities/transaction.h>
#include <rocksdb/write_batch.h>

namespace keel::storage {
namespace {

// An empty vector's data() may be null, which RocksDB's (assert-enabled) Slice::compare
// rejects; point empty slices at a static empty string instead.
rocksdb::Slice ToSlice(ByteView bytes) {
  if (bytes.empty()) return rocksdb::Slice("", 0);
  return rocksdb::Slice(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}
ByteView ToView(const rocksdb::Slice& slice) {
  return ByteView(reinterpret_cast<const uint8_t*>(slice.data()), slice.size());
}
Bytes ToBytes(const rocksdb::Slice& slice) {
  ByteView view = ToView(slice);
  return Bytes(view.begin(), view.end());
}

// Memtable insert hints for the keys of commits made with CommitOptions::rewritten_often.
// RocksDB starts an insert from its previous insert's position only while the new key sorts
// after it, and a key's new version sorts before its older ones. So when two keys are
// rewritten in turn (an actor's state record and a connection's record, on every message),
// each insert searches the skip list from the top. With this extractor set as the column
// family's memtable_insert_with_hint_prefix_extractor, RocksDB keeps a position (a splice
// in the memtable's arena and a map entry, ~280 bytes) per key it is "in domain" for, and
// the key's next insert starts there. A key is in domain only while the thread inserting
// it runs a commit that asked for hints (the flag below), so keys written once or seldom
// cost nothing. When another thread's write leads a write group, RocksDB inserts the group
// on that thread and our keys go unhinted: a slower insert, never a misplaced key (a hint
// is only where the search starts).
thread_local bool t_hint_inserts = false;

class RewriteHints final : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "keel.RewriteHints"; }
  // Each key is its own prefix: one position per key.
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override { return key; }
  bool InDomain(const rocksdb::Slice& /*key*/) const override {
    if (!t_hint_inserts) return false;
    hinted_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  uint64_t hinted() const { return hinted_.load(std::memory_order_relaxed); }

 private:
  mutable std::atomic<uint64_t> hinted_{0};
};

// Sets t_hint_inserts for one commit.
class HintScope {
 public:
  explicit HintScope(bool hint) : previous_(t_hint_inserts) { t_hint_inserts = hint; }
  ~HintScope() { t_hint_inserts = previous_; }
  HintScope(const HintScope&) = delete;
  HintScope& operator=(const HintScope&) = delete;

 private:
  bool previous_;
};

// A write-ahead log file: "<digits>.log" (RocksDB's WAL naming; the info log is "LOG").
bool IsWalFile(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  constexpr std::string_view kSuffix = ".log";
  if (name.size() <= kSuffix.size() || name.substr(name.size() - kSuffix.size()) != kSuffix) {
    return false;
  }
  name.remove_suffix(kSuffix.size());
  return name.find_first_not_of("0123456789") == std::string_view::npos;
}

// A write-ahead log whose space ahead of the writer is written zeros, counted in its size
// (RocksDbKvStoreOptions::preallocate_wal_with_size). Before RocksDB appends past the zeroed
// end it writes zeros up to the next kChunk boundary through its own descriptor and starts
// their writeback, so the appends land in blocks that already exist, are already written
// and lie inside the file size: a synced commit's fdatasync then writes the data alone — no
// inode size, no block allocation and no unwritten-extent conversion to journal. (fallocate
// leaves unwritten extents, converted on the first write into each block: with 4 KiB SQLite
// pages in every commit that is one journal transaction per sync, +60 µs per fdatasync
// here.) The zeros read as the end of the log after a crash (RocksDB skips kZeroType
// records); a clean close trims them. If zeroing fails (a full disk), the log just grows.
class ZeroFilledWal final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  static constexpr uint64_t kChunk = uint64_t{1} << 20;

  ZeroFilledWal(std::unique_ptr<rocksdb::FSWritableFile> target, int fd)
      : FSWritableFileOwnerWrapper(std::move(target)), fd_(fd) {}
  ~ZeroFilledWal() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // RocksDB calls this before each append of `len` bytes at `offset` (the current size).
  void PrepareWrite(size_t offset, size_t len, const rocksdb::IOOptions& /*options*/,
                    rocksdb::IODebugContext* /*dbg*/) override {
    const uint64_t end = uint64_t{offset} + len;
    if (fd_ < 0 || end <= zeroed_end_) return;
    // Never below `offset`: what lies before it was written by RocksDB.
    uint64_t at = std::max<uint64_t>(zeroed_end_, offset);
    const uint64_t to = (end + kChunk - 1) / kChunk * kChunk;
    static const std::vector<char> kZeros(size_t{64} << 10, '\0');
    while (at < to) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros.size(), to - at));
      const ssize_t wrote = ::pwrite(fd_, kZeros.data(), n, static_cast<off_t>(at));
      if (wrote <= 0) {
        if (wrote < 0 && errno == EINTR) continue;
        ::close(fd_);  // give up zeroing; appends past the zeros grow the file as usual
        fd_ = -1;
        return;
      }
      at += static_cast<uint64_t>(wrote);
    }
    // Start the zeros' writeback now, so the next commit's fdatasync finds little to do.
    ::sync_file_range(fd_, static_cast<off_t>(zeroed_end_), static_cast<off_t>(to - zeroed_end_),
                      SYNC_FILE_RANGE_WRITE);
    zeroed_end_ = to;
  }

  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    zeroed_end_ = std::min(zeroed_end_, size);
    return target()->Truncate(size, options, dbg);
  }

  rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    const uint64_t size = target()->GetFileSize(options, dbg);
    rocksdb::IOStatus closed = target()->Close(options, dbg);
    if (fd_ >= 0) {
      if (zeroed_end_ > size) (void)::ftruncate(fd_, static_cast<off_t>(size));
      ::close(fd_);
      fd_ = -1;
    }
    return closed;
  }

 private:
  int fd_;                   // our own descriptor of the log, for the zeros; -1 once given up
  uint64_t zeroed_end_ = 0;  // the file holds data or written zeros below this offset
};

// Opens write-ahead logs as ZeroFilledWal (RocksDbKvStoreOptions::preallocate_wal_with_size);
// every other file as given.
class WalPreallocatingFileSystem final : public rocksdb::FileSystemWrapper {
 public:
  explicit WalPreallocatingFileSystem(const std::shared_ptr<rocksdb::FileSystem>& base)
      : FileSystemWrapper(base) {}
  const char* Name() const override { return "KeelWalPreallocatingFileSystem"; }

  // Only new logs: a reopened one is opened O_APPEND, which would put the appends after the
  // zeros (it grows as before). Logs written through mmap or direct I/O stay as opened.
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus opened = target()->NewWritableFile(fname, options, result, dbg);
    if (!opened.ok() || !IsWalFile(fname) || options.use_mmap_writes ||
        (*result)->use_direct_io()) {
      return opened;
    }
    const int fd = ::open(fname.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return opened;  // no zeros: the log grows as it is written
    *result = std::make_unique<ZeroFilledWal>(std::move(*result), fd);
    return opened;
  }
};

// Maps a non-OK RocksDB status onto the storage error codes (kv_store.h).
Error FromRocks(const rocksdb::Status& status, std::string_view what) {
  std::string_view code = kInternal;
  if (status.IsBusy() || status.IsTryAgain()) {
    // Busy: another txn wrote a tracked key after our snapshot. TryAgain: the memtable
    // history no longer reaches back to our snapshot, so RocksDB cannot tell; a fresh
    // txn (new snapshot) can. Both mean "retry the transaction".
    code = kConflict;
  } else if (status.IsIOError()) {
    code = kIo;
  } else if (status.IsCorruption()) {
    code = kCorruption;
  } else if (status.IsInvalidArgument()) {
    code = kInvalidArgument;
  } else if (status.IsShutdownInProgress()) {
    code = kClosed;
  }
  return StorageError(code, std::string(what) + ": " + status.ToString());
}

Error ClosedError() { return StorageError(kClosed, "the store is closed"); }
Error FinishedError() {
  return StorageError(kFailedPrecondition, "the transaction already committed or rolled back");
}

// Reads `range` from `it` in the order and up to the limit of `options`. Checks the
// range bounds itself: the iterate_*_bound read options are only an optimisation (a txn
// iterator's write-batch side does not honour them).
Result<std::vector<KeyValue>> CollectRange(rocksdb::Iterator* it, const KeyRange& range,
                                           const ScanOptions& options, bool keys_only) {
  std::vector<KeyValue> out;
  auto add = [&] {
    out.push_back({ToBytes(it->key()), keys_only ? Bytes() : ToBytes(it->value())});
  };
  if (!options.reverse) {
    for (it->Seek(ToSlice(range.begin)); it->Valid() && out.size() < options.limit; it->Next()) {
      if (range.end.has_value() && CompareKeys(ToView(it->key()), *range.end) >= 0) break;
      add();
    }
  } else {
    if (range.end.has_value()) {
      it->SeekForPrev(ToSlice(*range.end));
      if (it->Valid() && CompareKeys(ToView(it->key()), *range.end) >= 0) it->Prev();
    } else {
      it->SeekToLast();
    }
    for (; it->Valid() && out.size() < options.limit; it->Prev()) {
      if (CompareKeys(ToView(it->key()), range.begin) < 0) break;
      add();
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

// Read options bounded to `range`; the slices point into `range`, which must outlive them.
struct BoundedRead {
  BoundedRead(const KeyRange& range, const rocksdb::Snapshot* snapshot)
      : lower(ToSlice(range.begin)) {
    options.snapshot = snapshot;
    options.iterate_lower_bound = &lower;
    if (range.end.has_value()) {
      upper = ToSlice(*range.end);
      options.iterate_upper_bound = &upper;
    }
  }
  BoundedRead(const BoundedRead&) = delete;
  BoundedRead& operator=(const BoundedRead&) = delete;

  rocksdb::Slice lower;
  rocksdb::Slice upper;
  rocksdb::ReadOptions options;
};

Result<std::vector<KeyValue>> ScanDb(rocksdb::DB* db, const rocksdb::Snapshot* snapshot,
                                     const KeyRange& range, const ScanOptions& options) {
  if (options.limit == 0 || range.empty()) return std::vector<KeyValue>();
  BoundedRead read(range, snapshot);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read.options));
  return CollectRange(it.get(), range, options, /*keys_only=*/false);
}

Result<std::optional<Bytes>> GetDb(rocksdb::DB* db, const rocksdb::Snapshot* snapshot,
                                   ByteView key) {
  rocksdb::ReadOptions read;
  read.snapshot = snapshot;
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db->Get(read, db->DefaultColumnFamily(), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<Bytes>();
  if (!s.ok()) return FromRocks(s, "get");
  return std::optional<Bytes>(ToBytes(value));
}

}  // namespace

namespace internal {

// A snapshot or txn holding RocksDB objects that must be released before the DB closes.
class RocksDbHandle {
 public:
  virtual ~RocksDbHandle() = default;
  // Called by Close with `mu` held exclusively while the DB is still open.
  virtual void ReleaseForClose() = 0;
};

// Lifetime: calls on the DB hold `mu` shared; Close holds it exclusively, releases every
// registered handle's RocksDB objects, then closes the DB. After that `closed` is true and
// `db` is null, and every handle call returns storage.closed.
struct RocksDbState {
  std::shared_mutex mu;
  bool closed = false;  // guarded by mu
  // The DB's Env when not the default one; outlives `db` (declared first).
  std::unique_ptr<rocksdb::Env> env;
  std::unique_ptr<rocksdb::OptimisticTransactionDB> db;
  std::mutex handles_mu;  // ordered after mu
  std::set<RocksDbHandle*> handles;
  // RocksDbKvStoreOptions::skip_syncs_on_memory_fs applies (set before the store is shared).
  bool skip_syncs = false;
  std::atomic<uint64_t> syncs_skipped{0};
  // The column family's insert hint extractor (set at open, never null after it).
  std::shared_ptr<RewriteHints> rewrite_hints;

  ~RocksDbState() { (void)Close(); }

  // Whether a commit asked to be synced makes the call (skip_syncs: it is counted instead).
  bool SyncFor(bool requested) {
    if (!requested || !skip_syncs) return requested;
    syncs_skipped.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // REQUIRES: mu held (shared is enough) for both.
  void Register(RocksDbHandle* handle) {
    std::lock_guard lock(handles_mu);
    handles.insert(handle);
  }
  void Unregister(RocksDbHandle* handle) {
    std::lock_guard lock(handles_mu);
    handles.erase(handle);
  }

  Status Close() {
    std::unique_lock lock(mu);
    if (closed) return OkStatus();
    closed = true;
    if (db == nullptr) return OkStatus();
    {
      std::lock_guard handles_lock(handles_mu);
      for (RocksDbHandle* handle : handles) handle->ReleaseForClose();
    }
    rocksdb::Status flushed = db->FlushWAL(/*sync=*/true);
    rocksdb::Status s = db->Close();
    db.reset();
    if (!flushed.ok()) return FromRocks(flushed, "close: sync WAL");
    if (!s.ok()) return FromRocks(s, "close");
    return OkStatus();
  }
};

}  // namespace internal

namespace {

using internal::RocksDbState;

class RocksDbSnapshot : public KvSnapshot, public internal::RocksDbHandle {
 public:
  // REQUIRES: state->mu held shared and the store open.
  explicit RocksDbSnapshot(std::shared_ptr<RocksDbState> state)
      : state_(std::move(state)), snapshot_(state_->db->GetSnapshot()) {
    state_->Register(this);
  }
  ~RocksDbSnapshot() override {
    // Unregister under `mu` so that Close never sees a handle being destroyed.
    std::shared_lock lock(state_->mu);
    if (!state_->closed) state_->db->ReleaseSnapshot(snapshot_);
    state_->Unregister(this);
  }

  // KvSnapshot
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override {
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    return GetDb(state_->db.get(), snapshot_, key);
  }
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    return ScanDb(state_->db.get(), snapshot_, range, options);
  }

  // RocksDbHandle
  void ReleaseForClose() override {
    state_->db->ReleaseSnapshot(snapshot_);
    snapshot_ = nullptr;
  }

 private:
  std::shared_ptr<RocksDbState> state_;
  const rocksdb::Snapshot* snapshot_;
};

class RocksDbTxn : public KvTxn, public internal::RocksDbHandle {
 public:
  // REQUIRES: state->mu held shared and the store open.
  explicit RocksDbTxn(std::shared_ptr<RocksDbState> state) : state_(std::move(state)) {
    rocksdb::OptimisticTransactionOptions txn_options;
    txn_options.set_snapshot = true;
    txn_.reset(state_->db->BeginTransaction(rocksdb::WriteOptions(), txn_options));
    state_->Register(this);
  }
  ~RocksDbTxn() override {
    // Unregister under `mu` so that Close never sees a handle being destroyed. Destroying
    // an uncommitted RocksDB transaction discards its batch.
    std::shared_lock lock(state_->mu);
    if (!state_->closed) txn_.reset();
    state_->Unregister(this);
  }

  // KvTxn
  using KvReader::Scan;
  using KvTxn::Commit;

  Result<std::optional<Bytes>> Get(ByteView key) override {
    if (finished_) return FinishedError();
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    std::string value;
    rocksdb::Status s = txn_->GetForUpdate(SnapshotRead(), ToSlice(key), &value);
    if (s.IsNotFound()) return std::optional<Bytes>();
    if (!s.ok()) return FromRocks(s, "get");
    return std::optional<Bytes>(Bytes(value.begin(), value.end()));
  }

  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    if (finished_) return FinishedError();
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> out, ScanLocked(range, options, false));
    // Track the returned keys for conflict detection without reading them again.
    for (const KeyValue& kv : out) {
      rocksdb::Status s =
          txn_->GetForUpdate(SnapshotRead(), ToSlice(kv.key), static_cast<std::string*>(nullptr));
      if (!s.ok()) return FromRocks(s, "scan: track key");
    }
    return out;
  }

  Status Put(ByteView key, ByteView value) override {
    if (finished_) return FinishedError();
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    rocksdb::Status s = txn_->Put(ToSlice(key), ToSlice(value));
    if (!s.ok()) return FromRocks(s, "put");
    has_writes_ = true;
    return OkStatus();
  }

  Status Delete(ByteView key) override {
    if (finished_) return FinishedError();
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    rocksdb::Status s = txn_->Delete(ToSlice(key));
    if (!s.ok()) return FromRocks(s, "delete");
    has_writes_ = true;
    return OkStatus();
  }

  // OptimisticTransactionDB rejects range tombstones, so delete the keys one by one
  // (collected first: writing to the batch would invalidate the iterator).
  Status DeleteRange(const KeyRange& range) override {
    if (finished_) return FinishedError();
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> keys, ScanLocked(range, {}, true));
    for (const KeyValue& kv : keys) {
      rocksdb::Status s = txn_->Delete(ToSlice(kv.key));
      if (!s.ok()) return FromRocks(s, "delete range");
      has_writes_ = true;
    }
    return OkStatus();
  }

  Status Commit(const CommitOptions& options) override {
    if (finished_) return FinishedError();
    finished_ = true;
    std::shared_lock lock(state_->mu);
    if (state_->closed) return ClosedError();
    if (!has_writes_) {
      // Read-only: its reads were one snapshot, so there is nothing to validate.
      txn_.reset();
      return OkStatus();
    }
    rocksdb::WriteOptions write;
    write.sync = state_->SyncFor(options.sync);
    txn_->SetWriteOptions(write);
    HintScope hints(options.rewritten_often);
    rocksdb::Status s = txn_->Commit();
    txn_.reset();
    if (!s.ok()) return FromRocks(s, "commit");
    return OkStatus();
  }

  void Rollback() override {
    if (finished_) return;
    finished_ = true;
    std::shared_lock lock(state_->mu);
    // Destroying an uncommitted RocksDB transaction discards its batch.
    if (!state_->closed) txn_.reset();
  }

  // RocksDbHandle
  void ReleaseForClose() override { txn_.reset(); }

 private:
  rocksdb::ReadOptions SnapshotRead() const {
    rocksdb::ReadOptions read;
    read.snapshot = txn_->GetSnapshot();
    return read;
  }

  // REQUIRES: state_->mu held and the store open.
  Result<std::vector<KeyValue>> ScanLocked(const KeyRange& range, const ScanOptions& options,
                                           bool keys_only) {
    if (options.limit == 0 || range.empty()) return std::vector<KeyValue>();
    BoundedRead read(range, txn_->GetSnapshot());
    std::unique_ptr<rocksdb::Iterator> it(txn_->GetIterator(read.options));
    return CollectRange(it.get(), range, options, keys_only);
  }

  std::shared_ptr<RocksDbState> state_;
  std::unique_ptr<rocksdb::Transaction> txn_;
  bool finished_ = false;
  bool has_writes_ = false;
};

}  // namespace

bool OnMemoryFilesystem(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) return false;
  return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

Result<std::unique_ptr<RocksDbKvStore>> RocksDbKvStore::Open(const std::string& path,
                                                             const RocksDbKvStoreOptions& options) {
  if (path.empty()) return StorageError(kInvalidArgument, "RocksDbKvStore: empty path");
  if (options.create_if_missing) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) {
      return StorageError(kIo, "RocksDbKvStore: create directory " + path + ": " + ec.message());
    }
  }
  rocksdb::Options db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.error_if_exists = options.error_if_exists;
  db_options.write_buffer_size = options.write_buffer_size;
  db_options.max_write_buffer_size_to_maintain = options.conflict_history_bytes;
  db_options.keep_log_file_num = 4;
  std::unique_ptr<rocksdb::Env> env;
  bool preallocate = options.preallocate_wal_with_size;
  if (const char* v = std::getenv("KEEL_WAL_PREALLOCATE_SIZE"); v != nullptr && std::string_view(v) == "0") {
    preallocate = false;
  }
  if (preallocate) {
    env = rocksdb::NewCompositeEnv(
        std::make_shared<WalPreallocatingFileSystem>(rocksdb::FileSystem::Default()));
    db_options.env = env.get();
  }
  rocksdb::OptimisticTransactionDBOptions occ_options;
  occ_options.validate_policy = rocksdb::OccValidationPolicy::kValidateParallel;
  // Stripes of the commit-validation locks. RocksDB's default (2^20) costs ~100 ms and
  // tens of MiB per open; collisions only serialise validation, they never cause conflicts.
  occ_options.occ_lock_buckets = options.commit_lock_stripes;
  auto rewrite_hints = std::make_shared<RewriteHints>();
  rocksdb::ColumnFamilyOptions family_options(db_options);
  family_options.memtable_insert_with_hint_prefix_extractor = rewrite_hints;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, family_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::OptimisticTransactionDB* raw = nullptr;
  rocksdb::Status s = rocksdb::OptimisticTransactionDB::Open(
      rocksdb::DBOptions(db_options), occ_options, path, families, &handles, &raw);
  if (!s.ok()) {
    std::string what = "RocksDbKvStore: open " + path;
    // Its LOCK file is held, by another process or by a store open in this one: say so in
    // words, since the usual cause is a second engine on the same data directory.
    const std::string text = s.ToString();
    if (s.IsIOError() && (text.find("While lock file") != std::string::npos ||
                          text.find("lock hold by current process") != std::string::npos)) {
      what +=
          ": in use by another store (is another keel-engine or `keel dev` running on this "
          "data directory?)";
    }
    return FromRocks(s, what);
  }
  // The DB keeps its own default column family handle; release the returned one as the
  // single-family DB::Open does.
  for (rocksdb::ColumnFamilyHandle* handle : handles) raw->DestroyColumnFamilyHandle(handle);
  auto state = std::make_shared<RocksDbState>();
  state->env = std::move(env);
  state->db.reset(raw);
  state->rewrite_hints = std::move(rewrite_hints);
  state->skip_syncs = options.skip_syncs_on_memory_fs && OnMemoryFilesystem(path);
  if (const char* v = std::getenv("KEEL_SYNC_ON_MEMORY_FS");
      v != nullptr && std::string_view(v) == "1") {
    state->skip_syncs = false;
  }
  return std::unique_ptr<RocksDbKvStore>(new RocksDbKvStore(path, std::move(state)));
}

RocksDbKvStore::RocksDbKvStore(std::string path, std::shared_ptr<internal::RocksDbState> state)
    : path_(std::move(path)), state_(std::move(state)) {}

bool RocksDbKvStore::SkipsSyncs() const { return state_->skip_syncs; }

uint64_t RocksDbKvStore::syncs_skipped() const {
  return state_->syncs_skipped.load(std::memory_order_relaxed);
}

uint64_t RocksDbKvStore::hinted_inserts() const { return state_->rewrite_hints->hinted(); }

RocksDbKvStore::~RocksDbKvStore() { (void)Close(); }

Result<std::optional<Bytes>> RocksDbKvStore::Get(ByteView key) {
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  return GetDb(state_->db.get(), nullptr, key);
}

Result<std::vector<KeyValue>> RocksDbKvStore::Scan(const KeyRange& range,
                                                   const ScanOptions& options) {
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  return ScanDb(state_->db.get(), nullptr, range, options);
}

Result<std::unique_ptr<KvSnapshot>> RocksDbKvStore::NewSnapshot() {
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  return std::unique_ptr<KvSnapshot>(std::make_unique<RocksDbSnapshot>(state_));
}

Result<std::unique_ptr<KvTxn>> RocksDbKvStore::Begin() {
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  return std::unique_ptr<KvTxn>(std::make_unique<RocksDbTxn>(state_));
}

Status RocksDbKvStore::SyncWrites() {
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  if (!state_->SyncFor(true)) return OkStatus();
  rocksdb::Status s = state_->db->SyncWAL();
  if (!s.ok()) return FromRocks(s, "sync WAL");
  return OkStatus();
}

Status RocksDbKvStore::WriteUnchecked(std::span<const KvWrite> writes,
                                      const CommitOptions& options) {
  // Reserved whole: the batch's buffer would otherwise grow (and copy) record by record.
  // Per record: a tag byte and two varint32 lengths (≤ 5 bytes each); 12 bytes of header.
  size_t reserve = 12;
  for (const KvWrite& w : writes) {
    reserve += 11 + w.key.size() + (w.value.has_value() ? w.value->size() : 0);
  }
  rocksdb::WriteBatch batch(reserve);
  for (const KvWrite& w : writes) {
    rocksdb::Status s = w.value.has_value() ? batch.Put(ToSlice(w.key), ToSlice(*w.value))
                                            : batch.Delete(ToSlice(w.key));
    if (!s.ok()) return FromRocks(s, "write batch");
  }
  std::shared_lock lock(state_->mu);
  if (state_->closed) return ClosedError();
  rocksdb::WriteOptions write;
  write.sync = state_->SyncFor(options.sync);
  // The base DB: OptimisticTransactionDB::Write would wrap the batch in a transaction and
  // validate it. Commits still bump each key's sequence number, so transactions that read
  // these keys meanwhile conflict as usual.
  HintScope hints(options.rewritten_often);
  rocksdb::Status s = state_->db->GetBaseDB()->Write(write, &batch);
  if (!s.ok()) return FromRocks(s, "write");
  return OkStatus();
}

Status RocksDbKvStore::Close() { return state_->Close(); }

}  // namespace keel::storage
