// KvStore: the one ordered, transactional key-value interface through which the engine
// persists everything (DESIGN.md §2 point 4). Backends: MemKvStore (tests, benchmarks),
// RocksDbKvStore (the embedded default), FaultyKvStore (fault injection over any store),
// later PostgreSQL. The keyspace layout on top of it is in docs/storage.md.
// Thread-safety: a KvStore may be used from any number of threads at once; a KvTxn or
// KvSnapshot is used by one thread at a time (several may exist on different threads).
//
// The contract every backend keeps (the typed suite in tests/unit/storage checks it):
//
//  * Keys and values are arbitrary bytes (the empty key is a key). Keys are ordered
//    lexicographically by unsigned byte, so a key sorts right before its extensions:
//    "a" < "a\x00" < "a\x01" < "ab" < "b".
//  * Ranges are half-open [begin, end); an absent end means "to the end of the keyspace";
//    begin >= end is an empty range, not an error.
//  * Scans return entries in key order (descending with `reverse`, starting from the
//    greatest key < end), at most `limit` of them. A scan is one consistent snapshot.
//  * KvStore::Get/Scan read the latest committed state. A KvSnapshot pins one state.
//  * A KvTxn reads at the snapshot taken by Begin() overlaid with its own uncommitted
//    writes (read-your-writes); other commits made after Begin() are never visible to it.
//  * Commit is atomic: all of the txn's writes become visible at once, or none do.
//  * Conflicts (optimistic, detected at Commit): Commit fails with `storage.conflict`,
//    applying nothing, when another transaction that committed after this one began wrote
//    a key this one
//      - read with Get (whether present or absent),
//      - received from Scan (only the keys returned, see "phantoms" below),
//      - wrote with Put/Delete, or removed with DeleteRange.
//    A transaction without writes commits trivially: its reads are one snapshot.
//    Phantoms are NOT detected: a key inserted into a scanned range by a concurrent commit
//    does not make this txn conflict. Code that needs "nothing appeared in this range"
//    keeps a guard key (e.g. a per-range counter) that both sides read and write.
//    Backends may report conflicts spuriously (e.g. RocksDB when its in-memory conflict
//    history is too short); `storage.conflict` always means "retry the whole transaction",
//    which RunTransaction does.
//  * DeleteRange(range) in a txn deletes every key of the range the txn can see (its
//    snapshot plus its own writes), exactly as if it scanned the range and deleted each key;
//    those keys count as written for conflict detection. Whether a key inserted into the
//    range by a concurrent commit is also deleted is backend-specific (the embedded
//    backends keep it); callers that care use a guard key, as for phantoms.
//  * Durability: a commit with CommitOptions::sync (the default) survives any crash once
//    it returns OK, and so does every commit that returned before it. A commit with
//    sync = false survives a process crash and a clean Close, but may be lost in an OS
//    crash or power failure; if it is lost, every later unsynced commit is lost too (what
//    survives is a prefix of the commit order). (MemKvStore keeps nothing past its own
//    lifetime; the rule is about the durable backends.)
//
// Errors (group "storage"; the code says how a caller reacts):
//   conflict            retry the whole transaction (RunTransaction does).
//   io                  the medium failed (or a fault was injected). From Commit, the
//                       outcome is UNKNOWN: the writes may or may not have been applied.
//   corruption          stored bytes are damaged; do not retry.
//   closed              the store was closed (or is closing); do not retry.
//   invalid_argument    a bad argument or option; do not retry.
//   failed_precondition the call is not allowed in this state (e.g. a finished txn).
//   internal            an unexpected backend status; a bug or an unsupported setup.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/result.h"

namespace keel::storage {

inline constexpr std::string_view kErrorGroup = "storage";
inline constexpr std::string_view kConflict = "conflict";
inline constexpr std::string_view kIo = "io";
inline constexpr std::string_view kCorruption = "corruption";
inline constexpr std::string_view kClosed = "closed";
inline constexpr std::string_view kInvalidArgument = "invalid_argument";
inline constexpr std::string_view kFailedPrecondition = "failed_precondition";
inline constexpr std::string_view kInternal = "internal";

// An Error in the "storage" group.
Error StorageError(std::string_view code, std::string message);
inline bool IsConflict(const Error& error) { return error.Is(kErrorGroup, kConflict); }

// -1, 0 or 1 as a orders before, equal to or after b (unsigned bytes, shorter first on tie).
int CompareKeys(ByteView a, ByteView b);

// Transparent ordering for ordered containers keyed by Bytes (lookups by ByteView).
struct KeyLess {
  using is_transparent = void;
  bool operator()(ByteView a, ByteView b) const { return CompareKeys(a, b) < 0; }
};

// The smallest key greater than `key`: key + 0x00. Forward pagination resumes with
// KeyRange::From(KeyAfter(last_key)).
Bytes KeyAfter(ByteView key);

// The smallest key greater than every key starting with `prefix`, or nullopt when there
// is none (prefix empty or all 0xff): strips trailing 0xff bytes and increments the last.
std::optional<Bytes> PrefixEnd(ByteView prefix);

// A half-open key range [begin, end); no end means unbounded above.
struct KeyRange {
  Bytes begin;
  std::optional<Bytes> end;

  static KeyRange All() { return {}; }
  static KeyRange Between(ByteView begin, ByteView end) {
    return {Bytes(begin.begin(), begin.end()), Bytes(end.begin(), end.end())};
  }
  static KeyRange From(ByteView begin) { return {Bytes(begin.begin(), begin.end()), {}}; }
  // Every key that starts with `prefix` (true byte-prefix semantics, 0xff included).
  static KeyRange Prefix(ByteView prefix) {
    return {Bytes(prefix.begin(), prefix.end()), PrefixEnd(prefix)};
  }

  bool Contains(ByteView key) const;
  // True when no key can be in the range (begin >= end).
  bool empty() const;
};

struct KeyValue {
  Bytes key;
  Bytes value;

  friend bool operator==(const KeyValue&, const KeyValue&) = default;
};

inline constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();

struct ScanOptions {
  // At most this many entries; 0 returns none. Default: no limit.
  size_t limit = kNoLimit;
  // Descending key order, starting from the greatest key < end. Default: ascending.
  bool reverse = false;
};

struct CommitOptions {
  // Make the commit durable (fsync) before Commit returns. Default: true. false trades
  // durability of this commit for throughput; see the durability rule above.
  bool sync = true;
  // The keys of this commit are rewritten often (an actor's state record, a connection's
  // record). A store may spend memory on them to make their next rewrite cheaper; nothing
  // else changes. RocksDbKvStore: each key's memtable insert starts from where its
  // previous version went (RocksDB's insert hint), which costs ~280 bytes per key while
  // the memtable holds it. Best effort. Default: false.
  bool rewritten_often = false;
};

// Read access shared by the store (latest state), snapshots and transactions.
class KvReader {
 public:
  virtual ~KvReader() = default;

  // The value of `key`, or nullopt when it is absent.
  // Errors: io, corruption, closed, failed_precondition (finished txn).
  virtual Result<std::optional<Bytes>> Get(ByteView key) = 0;

  // Entries of `range` in key order (see ScanOptions). Errors: as Get.
  virtual Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) = 0;
  Result<std::vector<KeyValue>> Scan(const KeyRange& range) { return Scan(range, {}); }

  Result<std::vector<KeyValue>> ScanPrefix(ByteView prefix, const ScanOptions& options = {}) {
    return Scan(KeyRange::Prefix(prefix), options);
  }
};

// A read-only view pinned at the committed state of the moment it was created. It stays
// valid (but returns `storage.closed`) after the store is closed; destroy it before the
// store object.
class KvSnapshot : public KvReader {};

// An optimistic transaction (see the contract above). Destroying it without Commit rolls
// it back. After Commit (whatever its outcome) or Rollback it is finished: every further
// call returns `storage.failed_precondition`. Destroy it before the store object.
class KvTxn : public KvReader {
 public:
  // Buffered until Commit. Errors: closed, failed_precondition.
  virtual Status Put(ByteView key, ByteView value) = 0;
  virtual Status Delete(ByteView key) = 0;
  // Deletes every key of `range` visible to this txn (contract above). Reads the range,
  // so it costs a scan and can also fail like one (io, corruption).
  virtual Status DeleteRange(const KeyRange& range) = 0;

  // Applies every write atomically. Errors: conflict (nothing applied; retry), io
  // (outcome unknown), closed, failed_precondition. Completes synchronously.
  virtual Status Commit(const CommitOptions& options) = 0;
  Status Commit() { return Commit(CommitOptions{}); }

  // Discards the writes and finishes the txn. Idempotent.
  virtual void Rollback() = 0;
};

// One write of KvStore::WriteUnchecked: a put of `value`, or a delete when it is nullopt.
struct KvWrite {
  ByteView key;
  std::optional<ByteView> value;
};

class KvStore : public KvReader {
 public:
  // Errors: closed.
  virtual Result<std::unique_ptr<KvSnapshot>> NewSnapshot() = 0;
  // Starts a transaction at the current committed state. Errors: closed, io.
  virtual Result<std::unique_ptr<KvTxn>> Begin() = 0;

  // Flushes and releases the backend (files, memory). Idempotent. Afterwards every call
  // on the store and on its snapshots and open transactions returns `storage.closed`
  // (open transactions are rolled back). The destructor closes too.
  virtual Status Close() = 0;

  // Makes every commit that returned before this call durable, as if each had been made
  // with sync = true (one WAL fsync covers all of them: the engine's group commit,
  // storage/group_sync.h). Commits running concurrently are not blocked and may or may not
  // be covered. Errors: io (whether the writes are durable is unknown), closed,
  // failed_precondition (the backend cannot do it; the default).
  virtual Status SyncWrites();
  // True when syncs are skipped because they would do nothing: the store's files are on a
  // filesystem kept in memory (RocksDbKvStore on tmpfs). A commit that returned is then
  // as durable as this storage gets (it survives the process, not the machine), and
  // SyncWrites returns at once. Default: false.
  virtual bool SkipsSyncs() const { return false; }
  // True when every call is a round trip to another process (a database server): a
  // thread that serves many others (an event loop) should hand calls to a worker rather
  // than wait them out. Default: false (the data is in this process, a call costs what a
  // memory or local-file access does).
  virtual bool IsRemote() const { return false; }

  // Applies `writes` atomically, in order (a later write of a key wins), as one commit
  // WITHOUT conflict detection for them: the caller guarantees that no transaction writes
  // any of these keys concurrently (e.g. every writer of them holds one lock). A
  // transaction that read or wrote one of them before this commit still conflicts, as
  // with any commit. What it saves is the transaction: no snapshot, no tracked keys, no
  // validation. Durability as Commit. Errors: as Commit (io: the outcome is unknown;
  // closed). The default runs one transaction (RunTransaction); RocksDB writes the batch
  // directly.
  virtual Status WriteUnchecked(std::span<const KvWrite> writes, const CommitOptions& options);

  // One-key write transactions, retried on conflict (RunTransaction).
  Status Put(ByteView key, ByteView value, const CommitOptions& options = {});
  Status Delete(ByteView key, const CommitOptions& options = {});
};

inline constexpr int kDefaultMaxAttempts = 16;

// Runs `fn(KvTxn&)` in a fresh transaction and commits it; when `fn` or Commit fails with
// `storage.conflict`, starts over with a new transaction, at most `max_attempts` times in
// all. `fn` returns Status or Result<T>; it must be safe to re-run (no side effects
// outside the txn, or idempotent ones). Any other error is returned at once (an `fn`
// error rolls the txn back). After the last attempt the conflict is returned.
// There is no backoff (no clock here): callers that need it wrap this call.
// REQUIRES: max_attempts >= 1 (otherwise returns storage.invalid_argument).
template <typename Fn>
auto RunTransaction(KvStore& store, Fn&& fn, int max_attempts = kDefaultMaxAttempts,
                    const CommitOptions& options = {}) -> std::invoke_result_t<Fn&, KvTxn&> {
  using R = std::invoke_result_t<Fn&, KvTxn&>;
  if (max_attempts < 1) {
    return Unexpected{StorageError(kInvalidArgument, "RunTransaction: max_attempts < 1")};
  }
  Error last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    auto txn = store.Begin();
    if (!txn.has_value()) return Unexpected{std::move(txn).error()};
    R result = fn(**txn);
    if (!result.has_value()) {
      if (!IsConflict(result.error())) return result;
      last = result.error();
      continue;
    }
    Status committed = (*txn)->Commit(options);
    if (committed.has_value()) return result;
    if (!IsConflict(committed.error())) return Unexpected{std::move(committed).error()};
    last = committed.error();
  }
  // Appended piecewise: g++ 12 -O3 reports a false -Wrestrict on `"literal" + string`.
  std::string message = "gave up after ";
  message += std::to_string(max_attempts);
  message += " attempts: ";
  message += last.message();
  return Unexpected{StorageError(kConflict, std::move(message))};
}

}  // namespace keel::storage
