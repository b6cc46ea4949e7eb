// FaultyKvStore: a KvStore wrapper that injects failures into any other store, so the
// engine's error, retry and crash-recovery paths can be tested deterministically (after
// leveldb's fault_injection_test and sqlite's test_vfs.c). With no fault armed it behaves
// exactly like the store it wraps. What each fault models:
//  * FailNthOperation(n): the n-th Get/Scan/Commit from now fails once with `storage.io`
//    (counting calls on the store, its snapshots and txns; ScanPrefix and the Put/Delete
//    helpers count as the Scan/Commit they make). A failed Get/Scan changes nothing; a
//    failed Commit applies nothing. The store and the txn keep working afterwards.
//  * FailNextCommits(count, fault): the next `count` commits fail with `storage.io`,
//    either applying nothing (kNotApplied) or after applying everything
//    (kAppliedButFailed: the "outcome unknown" case of the contract).
//  * SetCommitFailureProbability(p): each commit fails (applying nothing) with
//    probability p, drawn from a keel::Random seeded at construction, so a seed replays.
//  * SyncWrites() counts as an operation ("sync"); FailNextSyncs(count) fails the next
//    `count` of them. A failed sync reports `storage.io` and the unsynced commits stay
//    unsynced (SimulateCrash still undoes them).
//  * SimulateCrash(): an OS crash or power loss at this instant. Every commit made with
//    sync = false since the last synced commit is undone, and nothing else: a synced
//    commit makes everything before it durable, as a WAL fsync does. Losing all of them
//    is the worst case the durability contract allows (a real crash may keep a prefix).
//    Snapshots and txns opened before the crash fail with `storage.io` from then on; the
//    store itself keeps working, like a restarted process.
// Limits: the crash model sees only writes made through this wrapper (never write to
// base() directly when using SimulateCrash); a commit with writes counts as synced even
// if the backend had nothing to write. Commits are serialised by one mutex (the undo log
// is recorded at commit), which is fine for a test store.
// Thread-safety: as KvStore; fault settings may be changed from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "storage/kv_store.h"

namespace keel::storage {

namespace internal {
struct FaultState;
}  // namespace internal

enum class CommitFault {
  kNotApplied,        // the commit fails and applies nothing
  kAppliedButFailed,  // the commit applies, then reports storage.io
};

class FaultyKvStore : public KvStore {
 public:
  // Wraps `base` (owned). `seed` drives SetCommitFailureProbability.
  explicit FaultyKvStore(std::unique_ptr<KvStore> base, uint64_t seed = 1);
  ~FaultyKvStore() override;
  FaultyKvStore(const FaultyKvStore&) = delete;
  FaultyKvStore& operator=(const FaultyKvStore&) = delete;

  // KvStore
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override;
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override;
  Result<std::unique_ptr<KvSnapshot>> NewSnapshot() override;
  Result<std::unique_ptr<KvTxn>> Begin() override;
  Status Close() override;
  // Marks every commit made so far synced (the crash model keeps them), after the base
  // store's SyncWrites.
  Status SyncWrites() override;
  // The wrapped store's (a remote store stays remote under faults).
  bool IsRemote() const override;

  // Arms a one-shot failure of the n-th counted operation from now; n = 0 disarms.
  void FailNthOperation(uint64_t n);
  void FailNextCommits(uint64_t count, CommitFault fault = CommitFault::kNotApplied);
  void FailNextSyncs(uint64_t count);
  // REQUIRES: 0 <= p <= 1 (clamped otherwise).
  void SetCommitFailureProbability(double p);
  // Disarms every fault (does not undo anything).
  void ClearFaults();

  // Undoes every unsynced commit since the last synced one (see the file comment).
  // Errors: whatever the base store returns while restoring.
  Status SimulateCrash();

  // Counted operations so far (Get, Scan, Commit).
  uint64_t operation_count() const;
  uint64_t injected_failure_count() const;
  // Successful SyncWrites calls so far.
  uint64_t sync_count() const;
  // Commits with sync = false that SimulateCrash would undo now.
  size_t unsynced_commit_count() const;

  // The wrapped store, for inspecting state without faults. Writing to it directly
  // bypasses the crash model.
  KvStore& base();

 private:
  std::shared_ptr<internal::FaultState> state_;
};

}  // namespace keel::storage
