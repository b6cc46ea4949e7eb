#include "storage/kv_store.h"

#include <algorithm>
#include <cstring>

namespace keel::storage {

Error StorageError(std::string_view code, std::string message) {
  return Error(std::string(kErrorGroup), std::string(code), std::move(message));
}

int CompareKeys(ByteView a, ByteView b) {
  size_t n = std::min(a.size(), b.size());
  int c = n == 0 ? 0 : std::memcmp(a.data(), b.data(), n);
  if (c != 0) return c < 0 ? -1 : 1;
  if (a.size() == b.size()) return 0;
  return a.size() < b.size() ? -1 : 1;
}

Bytes KeyAfter(ByteView key) {
  Bytes out(key.begin(), key.end());
  out.push_back(0);
  return out;
}

std::optional<Bytes> PrefixEnd(ByteView prefix) {
  Bytes out(prefix.begin(), prefix.end());
  while (!out.empty() && out.back() == 0xff) out.pop_back();
  if (out.empty()) return std::nullopt;
  ++out.back();
  return out;
}

bool KeyRange::Contains(ByteView key) const {
  if (CompareKeys(key, begin) < 0) return false;
  return !end.has_value() || CompareKeys(key, *end) < 0;
}

bool KeyRange::empty() const { return end.has_value() && CompareKeys(begin, *end) >= 0; }

Status KvStore::Put(ByteView key, ByteView value, const CommitOptions& options) {
  return RunTransaction(
      *this, [&](KvTxn& txn) { return txn.Put(key, value); }, kDefaultMaxAttempts, options);
}

Status KvStore::WriteUnchecked(std::span<const KvWrite> writes, const CommitOptions& options) {
  return RunTransaction(
      *this,
      [&](KvTxn& txn) -> Status {
        for (const KvWrite& w : writes) {
          KEEL_RETURN_IF_ERROR(w.value.has_value() ? txn.Put(w.key, *w.value) : txn.Delete(w.key));
        }
        return OkStatus();
      },
      kDefaultMaxAttempts, options);
}

Status KvStore::SyncWrites() {
  return Unexpected{
      StorageError(kFailedPrecondition, "this store cannot sync earlier commits afterwards")};
}

Status KvStore::Delete(ByteView key, const CommitOptions& options) {
  return RunTransaction(
      *this, [&](KvTxn& txn) { return txn.Delete(key); }, kDefaultMaxAttempts, options);
}

}  // namespace keel::storage
