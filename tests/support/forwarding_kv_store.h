// ForwardingKvStore: a KvStore that passes every call to the store it owns, for test stores
// that change a call or two (hold a write, fail a sync, claim to be remote) and keep the
// rest as the real store does it.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "storage/kv_store.h"

namespace keel::testing {

class ForwardingKvStore : public storage::KvStore {
 public:
  explicit ForwardingKvStore(std::unique_ptr<storage::KvStore> base) : base_(std::move(base)) {}

  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override { return base_->Get(key); }
  Result<std::vector<storage::KeyValue>> Scan(const storage::KeyRange& range,
                                              const storage::ScanOptions& options) override {
    return base_->Scan(range, options);
  }
  Result<std::unique_ptr<storage::KvSnapshot>> NewSnapshot() override {
    return base_->NewSnapshot();
  }
  Result<std::unique_ptr<storage::KvTxn>> Begin() override { return base_->Begin(); }
  Status Close() override { return base_->Close(); }
  Status SyncWrites() override { return base_->SyncWrites(); }
  bool SkipsSyncs() const override { return base_->SkipsSyncs(); }
  bool IsRemote() const override { return base_->IsRemote(); }
  Status WriteUnchecked(std::span<const storage::KvWrite> writes,
                        const storage::CommitOptions& options) override {
    return base_->WriteUnchecked(writes, options);
  }

 protected:
  storage::KvStore& base() { return *base_; }

 private:
  std::unique_ptr<storage::KvStore> base_;
};

}  // namespace keel::testing
