// MemKvStore: the in-memory KvStore for tests, simulation and benchmarks. Multi-version:
// every key keeps the versions that a live snapshot or transaction may still read, so
// snapshots are real, and each commit gets the next global version, against which
// Commit checks the txn's read and write set (a key conflicts when its newest version,
// tombstones included, is newer than the txn's snapshot).
// Thread-safety: as KvStore; one mutex serialises all access (it is a test store).
#pragma once

#include <cstddef>
#include <memory>

#include "storage/kv_store.h"

namespace keel::storage {

namespace internal {
struct MemState;
}  // namespace internal

class MemKvStore : public KvStore {
 public:
  MemKvStore();
  ~MemKvStore() override;
  MemKvStore(const MemKvStore&) = delete;
  MemKvStore& operator=(const MemKvStore&) = delete;

  // KvStore
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override;
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override;
  Result<std::unique_ptr<KvSnapshot>> NewSnapshot() override;
  Result<std::unique_ptr<KvTxn>> Begin() override;
  Status Close() override;
  // Nothing to make durable (the store keeps nothing past its lifetime). Errors: closed.
  Status SyncWrites() override;

  // Stored versions of all keys, tombstones and history included (to test that history
  // is collected once no snapshot needs it).
  size_t VersionCountForTest() const;

 private:
  // Shared with snapshots and transactions so they never dangle.
  std::shared_ptr<internal::MemState> state_;
};

}  // namespace keel::storage
