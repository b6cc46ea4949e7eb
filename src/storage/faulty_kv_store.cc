#include "storage/faulty_kv_store.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/random.h"

namespace keel::storage {
namespace internal {

// Shared by the store, its snapshots and txns (so none dangles).
struct FaultState {
  FaultState(std::unique_ptr<KvStore> base_store, uint64_t seed)
      : base(std::move(base_store)), rng(seed) {}

  std::unique_ptr<KvStore> base;

  // Fault settings and counters.
  mutable std::mutex mu;
  uint64_t operations = 0;
  uint64_t fail_at = 0;  // operation number that fails; 0: none armed
  uint64_t commit_failures_left = 0;
  uint64_t sync_failures_left = 0;
  CommitFault commit_fault = CommitFault::kNotApplied;
  double commit_failure_probability = 0;
  Random rng;
  uint64_t injected = 0;

  // Serialises commits and SimulateCrash. The undo log maps every key written by an
  // unsynced commit since the last synced one to its value before the first of them
  // (nullopt: absent); restoring it yields the state as of the last synced commit.
  mutable std::mutex commit_mu;
  std::map<Bytes, std::optional<Bytes>, KeyLess> undo;
  size_t unsynced_commits = 0;
  uint64_t syncs = 0;  // guarded by commit_mu
  // Bumped by SimulateCrash; handles from an older epoch are dead.
  std::atomic<uint64_t> epoch{0};

  // Counts one operation; returns the error to inject, if this is the armed one.
  std::optional<Error> CountOperation(std::string_view what) {
    std::lock_guard lock(mu);
    ++operations;
    if (fail_at != 0 && operations == fail_at) {
      fail_at = 0;
      ++injected;
      return StorageError(kIo, "injected fault: " + std::string(what) + " (operation " +
                                   std::to_string(operations) + ")");
    }
    return std::nullopt;
  }

  // Counts a commit; returns the fault to inject, if any.
  std::optional<std::pair<CommitFault, Error>> CountCommit() {
    if (std::optional<Error> e = CountOperation("commit")) {
      return std::pair{CommitFault::kNotApplied, std::move(*e)};
    }
    std::lock_guard lock(mu);
    if (commit_failures_left > 0) {
      --commit_failures_left;
      ++injected;
      return std::pair{commit_fault, StorageError(kIo, commit_fault == CommitFault::kNotApplied
                                                           ? "injected commit failure"
                                                           : "injected commit failure "
                                                             "(the commit was applied)")};
    }
    if (commit_failure_probability > 0 && rng.NextDouble() < commit_failure_probability) {
      ++injected;
      return std::pair{CommitFault::kNotApplied,
                       StorageError(kIo, "injected random commit failure")};
    }
    return std::nullopt;
  }
};

}  // namespace internal

namespace {

using internal::FaultState;

Error CrashedError() {
  return StorageError(kIo, "the store crashed (simulated) after this was opened");
}
Error FinishedError() {
  return StorageError(kFailedPrecondition, "the transaction already committed or rolled back");
}

class FaultySnapshot : public KvSnapshot {
 public:
  FaultySnapshot(std::shared_ptr<FaultState> state, std::unique_ptr<KvSnapshot> base)
      : state_(std::move(state)), epoch_(state_->epoch.load()), base_(std::move(base)) {}

  // KvSnapshot
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override {
    if (state_->epoch.load() != epoch_) return CrashedError();
    if (std::optional<Error> e = state_->CountOperation("get")) return *e;
    return base_->Get(key);
  }
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    if (state_->epoch.load() != epoch_) return CrashedError();
    if (std::optional<Error> e = state_->CountOperation("scan")) return *e;
    return base_->Scan(range, options);
  }

 private:
  std::shared_ptr<FaultState> state_;
  uint64_t epoch_;
  std::unique_ptr<KvSnapshot> base_;
};

class FaultyTxn : public KvTxn {
 public:
  FaultyTxn(std::shared_ptr<FaultState> state, std::unique_ptr<KvTxn> base)
      : state_(std::move(state)), epoch_(state_->epoch.load()), base_(std::move(base)) {}

  // KvTxn
  using KvReader::Scan;
  using KvTxn::Commit;

  Result<std::optional<Bytes>> Get(ByteView key) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    if (std::optional<Error> e = state_->CountOperation("get")) return *e;
    return base_->Get(key);
  }

  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    if (std::optional<Error> e = state_->CountOperation("scan")) return *e;
    return base_->Scan(range, options);
  }

  Status Put(ByteView key, ByteView value) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    KEEL_RETURN_IF_ERROR(base_->Put(key, value));
    written_.emplace(key.begin(), key.end());
    return OkStatus();
  }

  Status Delete(ByteView key) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    KEEL_RETURN_IF_ERROR(base_->Delete(key));
    written_.emplace(key.begin(), key.end());
    return OkStatus();
  }

  Status DeleteRange(const KeyRange& range) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    KEEL_RETURN_IF_ERROR(base_->DeleteRange(range));
    deleted_ranges_.push_back(range);
    return OkStatus();
  }

  Status Commit(const CommitOptions& options) override {
    KEEL_RETURN_IF_ERROR(CheckUsable());
    finished_ = true;
    auto fault = state_->CountCommit();
    std::lock_guard lock(state_->commit_mu);
    if (state_->epoch.load() != epoch_) {
      base_->Rollback();
      return CrashedError();
    }
    if (fault && fault->first == CommitFault::kNotApplied) {
      base_->Rollback();
      return fault->second;
    }
    bool has_writes = !written_.empty() || !deleted_ranges_.empty();
    std::map<Bytes, std::optional<Bytes>, KeyLess> before;
    if (has_writes && !options.sync) {
      // Commits are serialised by commit_mu, so the latest state is the one this commit
      // is about to change.
      KEEL_ASSIGN_OR_RETURN(before, BeforeImages());
    }
    KEEL_RETURN_IF_ERROR(base_->Commit(options));
    if (has_writes) {
      if (options.sync) {
        state_->undo.clear();
        state_->unsynced_commits = 0;
      } else {
        // The first image since the last sync wins: it is the durable value.
        state_->undo.merge(before);
        ++state_->unsynced_commits;
      }
    }
    if (fault) return fault->second;
    return OkStatus();
  }

  void Rollback() override {
    finished_ = true;
    base_->Rollback();
  }

 private:
  Status CheckUsable() const {
    if (finished_) return FinishedError();
    if (state_->epoch.load() != epoch_) return CrashedError();
    return OkStatus();
  }

  // The current value (or absence) of every key this commit may change.
  // REQUIRES: state_->commit_mu held.
  Result<std::map<Bytes, std::optional<Bytes>, KeyLess>> BeforeImages() {
    std::map<Bytes, std::optional<Bytes>, KeyLess> out;
    KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> snapshot, state_->base->NewSnapshot());
    for (const Bytes& key : written_) {
      if (state_->undo.contains(key)) continue;
      KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> value, snapshot->Get(key));
      out.emplace(key, std::move(value));
    }
    for (const KeyRange& range : deleted_ranges_) {
      KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> entries, snapshot->Scan(range));
      for (KeyValue& kv : entries) {
        if (state_->undo.contains(kv.key)) continue;
        out.emplace(std::move(kv.key), std::move(kv.value));
      }
    }
    return out;
  }

  std::shared_ptr<FaultState> state_;
  uint64_t epoch_;
  std::unique_ptr<KvTxn> base_;
  bool finished_ = false;
  std::set<Bytes, KeyLess> written_;
  std::vector<KeyRange> deleted_ranges_;
};

}  // namespace

FaultyKvStore::FaultyKvStore(std::unique_ptr<KvStore> base, uint64_t seed)
    : state_(std::make_shared<FaultState>(std::move(base), seed)) {}

FaultyKvStore::~FaultyKvStore() = default;

Result<std::optional<Bytes>> FaultyKvStore::Get(ByteView key) {
  if (std::optional<Error> e = state_->CountOperation("get")) return *e;
  return state_->base->Get(key);
}

Result<std::vector<KeyValue>> FaultyKvStore::Scan(const KeyRange& range,
                                                  const ScanOptions& options) {
  if (std::optional<Error> e = state_->CountOperation("scan")) return *e;
  return state_->base->Scan(range, options);
}

Result<std::unique_ptr<KvSnapshot>> FaultyKvStore::NewSnapshot() {
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> base, state_->base->NewSnapshot());
  return std::unique_ptr<KvSnapshot>(std::make_unique<FaultySnapshot>(state_, std::move(base)));
}

Result<std::unique_ptr<KvTxn>> FaultyKvStore::Begin() {
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvTxn> base, state_->base->Begin());
  return std::unique_ptr<KvTxn>(std::make_unique<FaultyTxn>(state_, std::move(base)));
}

Status FaultyKvStore::Close() { return state_->base->Close(); }

Status FaultyKvStore::SyncWrites() {
  if (std::optional<Error> e = state_->CountOperation("sync")) return Unexpected{std::move(*e)};
  {
    std::lock_guard lock(state_->mu);
    if (state_->sync_failures_left > 0) {
      --state_->sync_failures_left;
      ++state_->injected;
      return Unexpected{StorageError(kIo, "injected sync failure")};
    }
  }
  // Commits hold commit_mu while they apply and record their undo entries, so every commit
  // that has returned is in the undo log now, and none is half-recorded.
  std::lock_guard lock(state_->commit_mu);
  KEEL_RETURN_IF_ERROR(state_->base->SyncWrites());
  state_->undo.clear();
  state_->unsynced_commits = 0;
  ++state_->syncs;
  return OkStatus();
}

uint64_t FaultyKvStore::sync_count() const {
  std::lock_guard lock(state_->commit_mu);
  return state_->syncs;
}

void FaultyKvStore::FailNthOperation(uint64_t n) {
  std::lock_guard lock(state_->mu);
  state_->fail_at = n == 0 ? 0 : state_->operations + n;
}

void FaultyKvStore::FailNextCommits(uint64_t count, CommitFault fault) {
  std::lock_guard lock(state_->mu);
  state_->commit_failures_left = count;
  state_->commit_fault = fault;
}

void FaultyKvStore::FailNextSyncs(uint64_t count) {
  std::lock_guard lock(state_->mu);
  state_->sync_failures_left = count;
}

void FaultyKvStore::SetCommitFailureProbability(double p) {
  std::lock_guard lock(state_->mu);
  state_->commit_failure_probability = std::clamp(p, 0.0, 1.0);
}

void FaultyKvStore::ClearFaults() {
  std::lock_guard lock(state_->mu);
  state_->fail_at = 0;
  state_->commit_failures_left = 0;
  state_->sync_failures_left = 0;
  state_->commit_failure_probability = 0;
}

Status FaultyKvStore::SimulateCrash() {
  std::lock_guard lock(state_->commit_mu);
  state_->epoch.fetch_add(1);
  if (state_->undo.empty()) return OkStatus();
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvTxn> txn, state_->base->Begin());
  for (const auto& [key, value] : state_->undo) {
    KEEL_RETURN_IF_ERROR(value.has_value() ? txn->Put(key, *value) : txn->Delete(key));
  }
  KEEL_RETURN_IF_ERROR(txn->Commit(CommitOptions{.sync = true}));
  state_->undo.clear();
  state_->unsynced_commits = 0;
  return OkStatus();
}

uint64_t FaultyKvStore::operation_count() const {
  std::lock_guard lock(state_->mu);
  return state_->operations;
}

uint64_t FaultyKvStore::injected_failure_count() const {
  std::lock_guard lock(state_->mu);
  return state_->injected;
}

size_t FaultyKvStore::unsynced_commit_count() const {
  std::lock_guard lock(state_->commit_mu);
  return state_->unsynced_commits;
}

KvStore& FaultyKvStore::base() { return *state_->base; }

bool FaultyKvStore::IsRemote() const { return state_->base->IsRemote(); }

}  // namespace keel::storage
