// PostgresKvStore: a KvStore kept in one table of a PostgreSQL database (libpq), for an engine
// whose data must live outside its machine (a managed database, backups, a host without a
// durable disk), and the base on which several engines will later share one database. PostgreSQL
// types stay in the .cc. How the contract in kv_store.h maps onto PostgreSQL:
//  * One table, `<table>(k bytea PRIMARY KEY, v bytea NOT NULL)`, created when missing.
//    bytea sorts by unsigned bytes, shorter first on a tie: the contract's key order.
//  * A snapshot, and a transaction's reads, are one REPEATABLE READ transaction on a
//    connection of their own, held until the snapshot is destroyed or the txn finishes.
//  * A transaction buffers its writes in memory (its reads see them: read-your-writes), so
//    nothing it writes is locked or visible before Commit. Commit checks the keys it read
//    (with Get, or received from Scan, present or absent) and the keys it writes against the
//    latest committed state, under transaction-scoped advisory locks on those keys (taken in
//    one order by every committer, so committers cannot deadlock), and fails with
//    `storage.conflict`, applying nothing, when any of them changed after its snapshot; then
//    it applies the writes in the same PostgreSQL transaction. Serialization failures and
//    deadlocks reported by the server are `storage.conflict` too.
//    "Changed" compares row versions: every row the txn reads records the xmin of the version
//    it saw (nullopt: absent), and a key is unchanged when the latest committed state has that
//    same version (a rewrite, even of the same value, or a delete and re-insert makes a
//    version with another xmin). The snapshot's transaction ends before the check, which
//    runs in a READ COMMITTED transaction (a REPEATABLE READ one would not see the latest
//    state); a key written but never read is looked up in the snapshot first.
//    Not detected: a key absent at the snapshot and absent again at Commit, inserted and
//    deleted in between by other commits (a deleted row leaves nothing to compare). Every
//    other change of a key read or written is a conflict. That one gap departs from the
//    contract's wording but not from serializability: under the locks, every key the txn
//    read is at Commit as it was at the snapshot (absent stays absent), so the txn reads and
//    writes exactly what it would have, had it run whole at its commit point.
//  * Round trips: Get, a txn's Get, Begin, NewSnapshot, SyncWrites, WriteUnchecked: one
//    each. A txn's Scan: one per page (one unless more than 1024 of its buffered writes hide
//    rows). Commit: one (a pipeline); two when the txn writes keys it never read; one to
//    end a read-only txn (as Rollback). Statements with parameters are prepared once per
//    connection (one more round trip the first time): planning the commit's statement
//    every time cost more than running it (W1 on PostgreSQL 870 → 480 µs).
//  * CommitOptions::sync = false commits with `synchronous_commit = off`; SyncWrites makes
//    every earlier commit durable by committing one synchronous transaction that writes WAL
//    (a transactional logical-decoding message: a transaction with only an xid commits
//    without a flush). PostgreSQL's WAL is one sequence: flushing it through a commit record
//    flushes everything before. Connections whose server default is `synchronous_commit =
//    off` are set to `on` (for synced commits).
//  * One store per table: Open takes a session advisory lock on the table (by its oid) and
//    holds it until Close, so a second store (a second engine) on the same table fails to
//    open with `storage.failed_precondition` instead of writing beside the first.
//    A lock can be lost while its store runs: the server drops it with its connection (a
//    restart, a backend ended by an operator, a network partition the server gave up on),
//    and the store may not know yet. So each store that opens a table also claims it, bumping
//    the table's owner epoch (a row of `keel_owners`) under an exclusive fence lock, and
//    every commit takes that fence lock shared and applies nothing unless the epoch is still
//    its own: once a second store has opened the table, the first one's commits stop, those
//    in flight finish before the second reads anything. A store that sees its lock's
//    connection gone takes the lock again if no other store holds it and none claimed the
//    table meanwhile; otherwise (or when a commit finds the epoch moved on) the table is lost
//    to it for good: every later write fails with `storage.failed_precondition`, and
//    PostgresKvStoreOptions::on_lost is told once.
//  * Keys longer than kMaxKeyBytes are refused with `storage.invalid_argument` by writes
//    (a btree entry must fit in a third of a page); reading one finds nothing, and range
//    bounds may be longer.
// Errors: a lost or refused connection is `storage.io` (from Commit: outcome unknown);
// SQLSTATE 40001 and 40P01 are `storage.conflict`; anything else from the server is
// `storage.internal` with the server's message.
// Thread-safety: as KvStore. Connections come from a pool that grows on demand; each open
// snapshot or transaction holds one. A pooled connection that the server closed is noticed
// (one poll, no round trip) and replaced before use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "storage/kv_store.h"

namespace keel::storage {

namespace internal {
struct PostgresState;
}  // namespace internal

struct PostgresKvStoreOptions {
  // The table that holds the keyspace (an SQL identifier: letters, digits, '_', starting with
  // a letter or '_', at most 63 bytes). Default: "keel_kv".
  std::string table = "keel_kv";
  // Idle connections kept for reuse; more are opened on demand and closed when returned
  // beyond this. Default: 8.
  size_t max_idle_connections = 8;
  // Called once, on the thread that found out, when the table stops being this store's
  // (another store claimed it; see "One store per table" above): every write has failed
  // and will fail with `storage.failed_precondition` from then on. For an owner that
  // should stop rather than run on without storage. Must not block or call the store.
  std::function<void(const Error&)> on_lost;
};

class PostgresKvStore : public KvStore {
 public:
  // The longest key the store accepts.
  static constexpr size_t kMaxKeyBytes = 2600;

  // Connects with `conninfo` (a libpq connection string: "postgresql://user@host:port/db" or
  // "host=... dbname=..."), creates the table when missing and takes the table's lock.
  // Errors: io (cannot connect), failed_precondition (another store holds the table),
  // invalid_argument (bad options), internal (the server refused the setup).
  static Result<std::unique_ptr<PostgresKvStore>> Open(const std::string& conninfo,
                                                       const PostgresKvStoreOptions& options = {});

  ~PostgresKvStore() override;
  PostgresKvStore(const PostgresKvStore&) = delete;
  PostgresKvStore& operator=(const PostgresKvStore&) = delete;

  // KvStore
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override;
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override;
  Result<std::unique_ptr<KvSnapshot>> NewSnapshot() override;
  Result<std::unique_ptr<KvTxn>> Begin() override;
  // Rolls back open transactions (they and open snapshots then return `storage.closed`),
  // releases the table's lock and closes every connection.
  Status Close() override;
  // One synchronous commit: every commit that returned before is then durable.
  Status SyncWrites() override;
  bool IsRemote() const override { return true; }
  // The writes in one PostgreSQL transaction, without the read checks of KvTxn::Commit (under
  // the same key locks, so a txn checking a key it read sees all of it or none).
  Status WriteUnchecked(std::span<const KvWrite> writes, const CommitOptions& options) override;

  // The connection string with any password replaced by "***" (for logs and errors).
  static std::string Redacted(const std::string& conninfo);

 private:
  explicit PostgresKvStore(std::shared_ptr<internal::PostgresState> state);
  // Shared with snapshots and transactions so they never dangle.
  std::shared_ptr<internal::PostgresState> state_;
};

}  // namespace keel::storage
