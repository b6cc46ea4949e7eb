#include "storage/mem_kv_store.h"

#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace keel::storage {
namespace internal {
namespace {

// One committed state of a key; `deleted` marks a tombstone.
struct Version {
  uint64_t version;
  bool deleted;
  Bytes value;
};
// Ascending by version; never empty while in the map.
using Chain = std::vector<Version>;
using Data = std::map<Bytes, Chain, KeyLess>;
// A txn's buffered writes; nullopt is a delete.
using WriteMap = std::map<Bytes, std::optional<Bytes>, KeyLess>;

// The newest version of `chain` visible at `version`, or null when the key is absent there.
const Version* VisibleAt(const Chain& chain, uint64_t version) {
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if (it->version <= version) return it->deleted ? nullptr : &*it;
  }
  return nullptr;
}

std::string KeyForMessage(ByteView key) {
  constexpr size_t kMaxBytes = 32;
  std::string hex = ToHex(key.first(std::min(key.size(), kMaxBytes)));
  return key.size() > kMaxBytes ? hex + "..." : hex;
}

}  // namespace

// Invariants (all under `mu`):
//  * every version in `data` is <= `committed`;
//  * for each key and each live reader version r, the chain still holds the newest
//    version <= r, and it always holds the key's newest version (tombstones included)
//    unless that is a tombstone older than every reader;
//  * a key whose chain holds more than one version, or a tombstone, is in `gc_pending`
//    (so it is collected when the oldest reader goes away).
struct MemState {
  mutable std::mutex mu;
  bool closed = false;
  uint64_t committed = 0;
  Data data;
  std::multiset<uint64_t> readers;
  std::set<Bytes, KeyLess> gc_pending;

  uint64_t OldestReaderLocked() const { return readers.empty() ? committed : *readers.begin(); }

  // Drops every version of `it` that no live reader can see (a version is visible to the
  // readers between it and the next version; the newest is always kept, it is what
  // commits check against), and erases the key when only a tombstone older than every
  // reader is left. Returns whether the key still holds history or a tombstone.
  bool CollectLocked(Data::iterator it) {
    Chain& chain = it->second;
    size_t kept = 0;
    for (size_t i = 0; i < chain.size(); ++i) {
      bool newest = i + 1 == chain.size();
      auto reader = readers.lower_bound(chain[i].version);
      if (newest || (reader != readers.end() && *reader < chain[i + 1].version)) {
        if (kept != i) chain[kept] = std::move(chain[i]);
        ++kept;
      }
    }
    chain.resize(kept);
    if (chain.size() == 1 && chain[0].deleted && chain[0].version <= OldestReaderLocked()) {
      data.erase(it);
      return false;
    }
    return chain.size() > 1 || chain.back().deleted;
  }

  void SweepLocked() {
    for (auto it = gc_pending.begin(); it != gc_pending.end();) {
      auto d = data.find(*it);
      if (d == data.end() || !CollectLocked(d)) {
        it = gc_pending.erase(it);
      } else {
        ++it;
      }
    }
  }

  void AddReaderLocked(uint64_t version) { readers.insert(version); }

  void ReleaseReaderLocked(uint64_t version) {
    uint64_t before = OldestReaderLocked();
    auto it = readers.find(version);
    if (it != readers.end()) readers.erase(it);
    if (OldestReaderLocked() > before) SweepLocked();
  }

  // Entries of `range` as of `version`, overlaid with `writes` (may be null).
  std::vector<KeyValue> ScanLocked(uint64_t version, const WriteMap* writes, const KeyRange& range,
                                   const ScanOptions& options) const {
    std::vector<KeyValue> out;
    if (options.limit == 0 || range.empty()) return out;
    auto lo = data.lower_bound(range.begin);
    auto hi = range.end ? data.lower_bound(*range.end) : data.end();
    static const WriteMap kNoWrites;
    const WriteMap& w = writes != nullptr ? *writes : kNoWrites;
    auto wlo = w.lower_bound(range.begin);
    auto whi = range.end ? w.lower_bound(*range.end) : w.end();
    if (options.reverse) {
      Merge(std::make_reverse_iterator(hi), std::make_reverse_iterator(lo),
            std::make_reverse_iterator(whi), std::make_reverse_iterator(wlo), -1, version,
            options.limit, &out);
    } else {
      Merge(lo, hi, wlo, whi, 1, version, options.limit, &out);
    }
    return out;
  }

  // Merges committed entries [b, be) with buffered writes [w, we), both in iteration
  // order (`direction` 1 ascending, -1 descending); a buffered write shadows the key.
  template <typename BaseIt, typename WriteIt>
  static void Merge(BaseIt b, BaseIt be, WriteIt w, WriteIt we, int direction, uint64_t version,
                    size_t limit, std::vector<KeyValue>* out) {
    while (out->size() < limit && (b != be || w != we)) {
      int order = b == be ? 1 : w == we ? -1 : direction * CompareKeys(b->first, w->first);
      if (order < 0) {
        if (const Version* v = VisibleAt(b->second, version)) {
          out->push_back({b->first, v->value});
        }
        ++b;
      } else {
        if (w->second.has_value()) out->push_back({w->first, *w->second});
        if (order == 0) ++b;
        ++w;
      }
    }
  }
};

}  // namespace internal

namespace {

using internal::MemState;

Error ClosedError() { return StorageError(kClosed, "the store is closed"); }
Error FinishedError() {
  return StorageError(kFailedPrecondition, "the transaction already committed or rolled back");
}

class MemSnapshot : public KvSnapshot {
 public:
  MemSnapshot(std::shared_ptr<MemState> state, uint64_t version)
      : state_(std::move(state)), version_(version) {}
  ~MemSnapshot() override {
    std::lock_guard lock(state_->mu);
    state_->ReleaseReaderLocked(version_);
  }

  // KvSnapshot
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    auto it = state_->data.find(key);
    if (it == state_->data.end()) return std::optional<Bytes>();
    const internal::Version* v = internal::VisibleAt(it->second, version_);
    return v != nullptr ? std::optional<Bytes>(v->value) : std::nullopt;
  }
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    return state_->ScanLocked(version_, nullptr, range, options);
  }

 private:
  std::shared_ptr<MemState> state_;
  uint64_t version_;
};

class MemTxn : public KvTxn {
 public:
  MemTxn(std::shared_ptr<MemState> state, uint64_t version)
      : state_(std::move(state)), version_(version) {}
  ~MemTxn() override { Rollback(); }

  // KvTxn
  using KvReader::Scan;
  using KvTxn::Commit;

  Result<std::optional<Bytes>> Get(ByteView key) override {
    if (finished_) return FinishedError();
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    reads_.emplace(key.begin(), key.end());
    if (auto w = writes_.find(key); w != writes_.end()) return w->second;
    auto it = state_->data.find(key);
    if (it == state_->data.end()) return std::optional<Bytes>();
    const internal::Version* v = internal::VisibleAt(it->second, version_);
    return v != nullptr ? std::optional<Bytes>(v->value) : std::nullopt;
  }

  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    if (finished_) return FinishedError();
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    std::vector<KeyValue> out = state_->ScanLocked(version_, &writes_, range, options);
    for (const KeyValue& kv : out) reads_.insert(kv.key);
    return out;
  }

  Status Put(ByteView key, ByteView value) override {
    KEEL_RETURN_IF_ERROR(CheckWritable());
    writes_.insert_or_assign(Bytes(key.begin(), key.end()), Bytes(value.begin(), value.end()));
    return OkStatus();
  }

  Status Delete(ByteView key) override {
    KEEL_RETURN_IF_ERROR(CheckWritable());
    writes_.insert_or_assign(Bytes(key.begin(), key.end()), std::nullopt);
    return OkStatus();
  }

  Status DeleteRange(const KeyRange& range) override {
    if (finished_) return FinishedError();
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    for (KeyValue& kv : state_->ScanLocked(version_, &writes_, range, {})) {
      writes_.insert_or_assign(std::move(kv.key), std::nullopt);
    }
    return OkStatus();
  }

  Status Commit(const CommitOptions& /*options: memory has nothing to sync*/) override {
    if (finished_) return FinishedError();
    finished_ = true;
    std::lock_guard lock(state_->mu);
    // The reader is released on every path below; this txn reads nothing more.
    if (state_->closed) {
      state_->ReleaseReaderLocked(version_);
      return ClosedError();
    }
    if (writes_.empty()) {
      state_->ReleaseReaderLocked(version_);
      return OkStatus();
    }
    for (const Bytes& key : reads_) {
      if (Conflicts(key)) return ConflictLocked(key);
    }
    for (const auto& [key, value] : writes_) {
      if (Conflicts(key)) return ConflictLocked(key);
    }
    state_->ReleaseReaderLocked(version_);
    uint64_t version = ++state_->committed;
    for (auto& [key, value] : writes_) {
      auto it = state_->data.find(key);
      if (!value.has_value()) {
        // Deleting an absent key changes nothing, so it must not make readers conflict.
        if (it == state_->data.end() || it->second.back().deleted) continue;
        it->second.push_back({version, true, {}});
      } else {
        if (it == state_->data.end()) it = state_->data.emplace(key, internal::Chain()).first;
        it->second.push_back({version, false, std::move(*value)});
      }
      if (state_->CollectLocked(it)) state_->gc_pending.insert(key);
    }
    writes_.clear();
    return OkStatus();
  }

  void Rollback() override {
    if (finished_) return;
    finished_ = true;
    writes_.clear();
    std::lock_guard lock(state_->mu);
    state_->ReleaseReaderLocked(version_);
  }

 private:
  Status CheckWritable() const {
    if (finished_) return FinishedError();
    std::lock_guard lock(state_->mu);
    if (state_->closed) return ClosedError();
    return OkStatus();
  }

  // REQUIRES: state_->mu held.
  bool Conflicts(ByteView key) const {
    auto it = state_->data.find(key);
    return it != state_->data.end() && it->second.back().version > version_;
  }

  // REQUIRES: state_->mu held.
  Error ConflictLocked(ByteView key) {
    state_->ReleaseReaderLocked(version_);
    return StorageError(kConflict, "key " + internal::KeyForMessage(key) +
                                       " was written by a transaction that committed after "
                                       "this one began");
  }

  std::shared_ptr<MemState> state_;
  uint64_t version_;
  bool finished_ = false;
  internal::WriteMap writes_;
  std::set<Bytes, KeyLess> reads_;
};

}  // namespace

MemKvStore::MemKvStore() : state_(std::make_shared<MemState>()) {}

MemKvStore::~MemKvStore() { (void)Close(); }

Result<std::optional<Bytes>> MemKvStore::Get(ByteView key) {
  std::lock_guard lock(state_->mu);
  if (state_->closed) return ClosedError();
  auto it = state_->data.find(key);
  if (it == state_->data.end() || it->second.back().deleted) return std::optional<Bytes>();
  return std::optional<Bytes>(it->second.back().value);
}

Result<std::vector<KeyValue>> MemKvStore::Scan(const KeyRange& range, const ScanOptions& options) {
  std::lock_guard lock(state_->mu);
  if (state_->closed) return ClosedError();
  return state_->ScanLocked(state_->committed, nullptr, range, options);
}

Result<std::unique_ptr<KvSnapshot>> MemKvStore::NewSnapshot() {
  std::lock_guard lock(state_->mu);
  if (state_->closed) return ClosedError();
  state_->AddReaderLocked(state_->committed);
  return std::unique_ptr<KvSnapshot>(std::make_unique<MemSnapshot>(state_, state_->committed));
}

Result<std::unique_ptr<KvTxn>> MemKvStore::Begin() {
  std::lock_guard lock(state_->mu);
  if (state_->closed) return ClosedError();
  state_->AddReaderLocked(state_->committed);
  return std::unique_ptr<KvTxn>(std::make_unique<MemTxn>(state_, state_->committed));
}

Status MemKvStore::SyncWrites() {
  std::lock_guard lock(state_->mu);
  if (state_->closed) return ClosedError();
  return OkStatus();
}

Status MemKvStore::Close() {
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  state_->data.clear();
  state_->gc_pending.clear();
  return OkStatus();
}

size_t MemKvStore::VersionCountForTest() const {
  std::lock_guard lock(state_->mu);
  size_t n = 0;
  for (const auto& [key, chain] : state_->data) n += chain.size();
  return n;
}

}  // namespace keel::storage
