#include "storage/actor_kv.h"

#include <algorithm>
#include <array>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "protocol/bare/reader.h"
#include "protocol/bare/writer.h"
#include "protocol/engine/records.h"

namespace keel::storage {

namespace {

Error KvError(std::string_view code, std::string message) {
  return Error("kv", std::string(code), std::move(message));
}
Error ActorError(std::string_view code, std::string message) {
  return Error("actor", std::string(code), std::move(message));
}

// The protocol's size of a key (envoy-protocol.md §5.1).
uint64_t KeySize(ByteView key) { return uint64_t{key.size()} + 2; }

std::string KeyTooLong(std::string_view what, size_t max) {
  std::string out(what);
  out += " is too long (max ";
  out += std::to_string(max);
  out += " bytes)";
  return out;
}

// Appends an entry's full key, [kActorSubspace][actor][kActorKvEntryTag][key], to `out`.
void AppendActorKvEntryKey(ByteView actor, ByteView key, Bytes& out) {
  AppendActorKey(actor, kActorKvEntryTag, out);
  out.insert(out.end(), key.begin(), key.end());
}

// --- Records (schemas/engine/v1.bare: KvEntry, KvUsage) -------------------------------

using KvEntry = protocol::engine::latest::KvEntry;
using KvUsage = protocol::engine::latest::KvUsage;

// Appends the stored record of an entry (what WriteRecord(KvEntry) writes) to `out`. The
// record is encoded from a per-thread KvEntry whose buffers are reused, so a put allocates
// nothing per entry once its thread has seen a value that large (a value over 64 KiB is
// not kept).
void AppendEntry(ByteView value, ByteView version, int64_t update_ts, Bytes& out) {
  thread_local KvEntry entry;
  entry.value.assign(value.begin(), value.end());
  entry.metadata.version.assign(version.begin(), version.end());
  entry.metadata.update_ts = update_ts;
  bare::AppendVersionPrefix(protocol::engine::kLatestVersion, out);
  bare::EncodeTo(entry, out);
  if (entry.value.capacity() > (size_t{64} << 10)) Bytes().swap(entry.value);
}

// Bytes AppendEntry writes at most: the version prefix, two varint lengths, the value, the
// version and the 8-byte timestamp.
size_t EntryBound(ByteView value, ByteView version) {
  return 2 + 10 + value.size() + 10 + version.size() + 8;
}

Bytes EncodeEntry(ByteView value, ByteView version, int64_t update_ts) {
  return BuildExact([&](Bytes& out) { AppendEntry(value, version, update_ts, out); });
}

Result<KvEntry> DecodeEntry(ByteView stored) {
  auto entry = protocol::engine::ReadRecord<KvEntry>(stored);
  if (!entry.has_value()) {
    return Unexpected{StorageError(kCorruption, "KvEntry: " + entry.error().message())};
  }
  return entry;
}

Result<uint64_t> DecodeUsage(const std::optional<Bytes>& stored) {
  if (!stored.has_value()) return uint64_t{0};
  auto usage = protocol::engine::ReadRecord<KvUsage>(*stored);
  if (!usage.has_value()) {
    return Unexpected{StorageError(kCorruption, "KvUsage: " + usage.error().message())};
  }
  return usage->stored_bytes;
}

Result<uint64_t> ReadUsage(KvReader& reader, ByteView actor) {
  KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> stored, reader.Get(ActorKvUsageKey(actor)));
  return DecodeUsage(stored);
}

// Writes the usage record, or removes it at 0 (absent = 0).
Status WriteUsage(KvTxn& txn, ByteView actor, uint64_t stored_bytes) {
  if (stored_bytes == 0) return txn.Delete(ActorKvUsageKey(actor));
  return txn.Put(ActorKvUsageKey(actor), protocol::engine::WriteRecord(KvUsage{stored_bytes}));
}

uint64_t SaturatingSub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

// --- Validation (Rivet's order and texts) ---------------------------------------------

Status ValidateKeys(const std::vector<latest::KvKey>& keys, const ActorKvLimits& limits) {
  if (keys.size() > limits.max_keys) {
    return Unexpected{KvError(
        "too_many_keys", "a maximum of " + std::to_string(limits.max_keys) + " keys is allowed")};
  }
  for (const latest::KvKey& key : keys) {
    if (KeySize(key) > limits.max_key_size) {
      return Unexpected{KvError("key_too_large", KeyTooLong("key", limits.max_key_size))};
    }
  }
  return OkStatus();
}

Status ValidateRangeKeys(ByteView start, ByteView end, const ActorKvLimits& limits) {
  if (KeySize(start) > limits.max_key_size) {
    return Unexpected{KvError("start_key_too_large", KeyTooLong("start key", limits.max_key_size))};
  }
  if (KeySize(end) > limits.max_key_size) {
    return Unexpected{KvError("end_key_too_large", KeyTooLong("end key", limits.max_key_size))};
  }
  return OkStatus();
}

Status ValidateListQuery(const latest::KvListQuery& query, const ActorKvLimits& limits) {
  if (const auto* range = query.get_if<latest::KvListRangeQuery>()) {
    return ValidateRangeKeys(range->start, range->end, limits);
  }
  if (const auto* prefix = query.get_if<latest::KvListPrefixQuery>()) {
    if (KeySize(prefix->key) > limits.max_key_size) {
      return Unexpected{KvError("prefix_too_large", KeyTooLong("prefix key", limits.max_key_size))};
    }
  }
  return OkStatus();
}

// Everything of a put that needs no storage: mismatch, count, payload. Returns the payload.
Result<uint64_t> ValidatePutShape(const latest::KvPutRequest& req, const ActorKvLimits& limits) {
  if (req.keys.size() != req.values.size()) {
    return Unexpected{KvError("length_mismatch", "Keys list length != values list length")};
  }
  if (req.keys.size() > limits.max_keys) {
    return Unexpected{KvError(
        "too_many_entries",
        "A maximum of " + std::to_string(limits.max_keys) + " key-value entries is allowed")};
  }
  uint64_t payload = 0;
  for (const latest::KvKey& key : req.keys) payload += KeySize(key);
  for (const latest::KvValue& value : req.values) payload += value.size();
  if (payload > limits.max_put_payload) {
    return Unexpected{
        KvError("payload_too_large", "total payload is too large (max " +
                                         std::to_string(limits.max_put_payload / 1024) + " KiB)")};
  }
  return payload;
}

Status ValidatePutQuotaAndSizes(const latest::KvPutRequest& req, uint64_t payload, uint64_t usage,
                                const ActorKvLimits& limits) {
  uint64_t remaining = SaturatingSub(limits.max_storage, usage);
  if (payload > remaining) {
    std::string message = "Not enough space left in storage (";
    message += std::to_string(remaining);
    message += " bytes remaining, current payload is ";
    message += std::to_string(payload);
    message += " bytes).";
    return Unexpected{ActorError("kv_storage_quota_exceeded", std::move(message))};
  }
  for (const latest::KvKey& key : req.keys) {
    if (KeySize(key) > limits.max_key_size) {
      return Unexpected{KvError("key_too_large", KeyTooLong("key", limits.max_key_size))};
    }
  }
  for (const latest::KvValue& value : req.values) {
    if (value.size() > limits.max_value_size) {
      return Unexpected{KvError(
          "value_too_large",
          "value is too large (max " + std::to_string(limits.max_value_size / 1024) + " KiB)")};
    }
  }
  return OkStatus();
}

// Appends a scanned/read entry to a get or list response.
template <typename Response>
Status AppendEntry(Response& out, ByteView user_key, ByteView stored) {
  KEEL_ASSIGN_OR_RETURN(KvEntry e, DecodeEntry(stored));
  out.keys.emplace_back(user_key.begin(), user_key.end());
  out.values.push_back(std::move(e.value));
  out.metadata.push_back(latest::KvMetadata{std::move(e.metadata.version), e.metadata.update_ts});
  return OkStatus();
}

// Stored bytes of one entry (quota accounting).
Result<uint64_t> EntrySize(ByteView user_key, ByteView stored) {
  KEEL_ASSIGN_OR_RETURN(KvEntry e, DecodeEntry(stored));
  return KeySize(user_key) + e.value.size();
}

// --- Remembered entry sizes (ActorKv::Memo::sizes: [u8 key length][key][u32 size]…) --

constexpr size_t kSizeBytes = 4;

size_t KnownRecordBytes(size_t key_len) { return 1 + key_len + kSizeBytes; }

// Calls `fn(key, size)` for each remembered record, newest first.
template <typename Fn>
void ForEachKnownSize(std::string_view sizes, Fn&& fn) {
  size_t at = 0;
  while (at < sizes.size()) {
    const size_t len = static_cast<uint8_t>(sizes[at]);
    const std::string_view key = sizes.substr(at + 1, len);
    uint32_t size = 0;
    for (size_t b = 0; b < kSizeBytes; ++b) {
      size |= uint32_t{static_cast<uint8_t>(sizes[at + 1 + len + b])} << (8 * b);
    }
    fn(key, size);
    at += KnownRecordBytes(len);
  }
}

std::optional<uint64_t> KnownSize(std::string_view sizes, ByteView key) {
  std::optional<uint64_t> out;
  ForEachKnownSize(sizes, [&](std::string_view k, uint32_t size) {
    if (!out.has_value() && k == AsString(key)) out = size;
  });
  return out;
}

// Appends one record to `out` (`used` bytes of it taken) when it fits in `cap`.
void AppendKnownSize(std::string_view key, uint64_t size, char* out, size_t& used, size_t cap) {
  if (key.size() > 255 || size > UINT32_MAX || used + KnownRecordBytes(key.size()) > cap) return;
  out[used++] = static_cast<char>(key.size());
  std::copy(key.begin(), key.end(), out + used);
  used += key.size();
  for (size_t b = 0; b < kSizeBytes; ++b) out[used++] = static_cast<char>(size >> (8 * b));
}

}  // namespace

Bytes ActorRecordKey(ByteView actor) { return ActorKey(actor, kActorRecordTag); }
Bytes ActorKvUsageKey(ByteView actor) { return ActorKey(actor, kActorKvUsageTag); }
Bytes ActorKvPrefix(ByteView actor) { return ActorKey(actor, kActorKvEntryTag); }
Bytes ActorKvEntryKey(ByteView actor, ByteView key) {
  Bytes out = ActorKey(actor, kActorKvEntryTag, key.size());  // ActorKey knows its size
  out.insert(out.end(), key.begin(), key.end());
  return out;
}

Status PutActorRecordForTest(KvStore& store, ByteView actor, ByteView record) {
  return store.Put(ActorRecordKey(actor), record);
}

ActorKv::ActorKv(KvStore& store, ActorKvOptions options)
    : store_(store), options_(std::move(options)) {
  if (options_.sole_writer) stripes_ = std::make_unique<Stripe[]>(kStripes);
}

ActorKv::Stripe& ActorKv::StripeOf(ByteView actor) const {
  return stripes_[IdHash{}(AsString(actor)) % kStripes];
}

ActorKv::Memo& ActorKv::Remember(Stripe& stripe, ByteView actor, uint64_t usage) const {
  auto it = stripe.actors.find(AsString(actor));
  if (it == stripe.actors.end()) {
    const size_t cap = std::max<size_t>(1, options_.max_remembered_actors / kStripes);
    if (stripe.actors.size() >= cap) stripe.actors.erase(stripe.actors.begin());
    it = stripe.actors.emplace(std::string(AsString(actor)), Memo{}).first;
  }
  it->second.usage = usage;
  it->second.sizes.clear();
  it->second.puts = 0;
  return it->second;
}

void ActorKv::ForgetLocked(Stripe& stripe, ByteView actor) {
  auto it = stripe.actors.find(AsString(actor));
  if (it != stripe.actors.end()) stripe.actors.erase(it);
}

void ActorKv::Forget(ByteView actor) {
  if (!stripes_) return;
  Stripe& stripe = StripeOf(actor);
  std::lock_guard lock(stripe.mu);
  ForgetLocked(stripe, actor);
}

size_t ActorKv::remembered_actors() const {
  if (!stripes_) return 0;
  size_t n = 0;
  for (size_t i = 0; i < kStripes; ++i) {
    std::lock_guard lock(stripes_[i].mu);
    n += stripes_[i].actors.size();
  }
  return n;
}

Status ActorKv::WriteTransaction(
    ByteView actor, const std::function<Status(KvTxn&, std::optional<uint64_t>&)>& fn) {
  return WriteLocked(actor, [&](std::optional<uint64_t>& usage_after) -> Status {
    return RunTransaction(
        store_,
        [&](KvTxn& txn) -> Status {
          usage_after.reset();
          KEEL_RETURN_IF_ERROR(CheckGuard(txn, actor));
          return fn(txn, usage_after);
        },
        options_.max_attempts, WriteCommit());
  });
}

Status ActorKv::WriteLocked(ByteView actor,
                            const std::function<Status(std::optional<uint64_t>&)>& write) {
  std::optional<uint64_t> usage_after;
  if (!stripes_) return write(usage_after);
  Stripe& stripe = StripeOf(actor);
  std::lock_guard lock(stripe.mu);
  Status st = write(usage_after);
  if (st.has_value() && usage_after.has_value()) {
    Remember(stripe, actor, *usage_after);
  } else {
    ForgetLocked(stripe, actor);
  }
  return st;
}

bool ActorKv::IsWrite(const latest::KvRequestData& request) {
  return !request.is<latest::KvGetRequest>() && !request.is<latest::KvListRequest>();
}

CommitOptions ActorKv::WriteCommit() const { return CommitOptions{.sync = options_.sync_writes}; }

Status ActorKv::CheckActorId(ByteView actor) const {
  if (actor.size() != options_.actor_id_size) {
    return Unexpected{
        ActorError("invalid_id", "actor id must be " + std::to_string(options_.actor_id_size) +
                                     " bytes (binary form), got " + std::to_string(actor.size()))};
  }
  return OkStatus();
}

Status ActorKv::CheckGuard(KvReader& reader, ByteView actor) const {
  KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> record, reader.Get(ActorRecordKey(actor)));
  if (!record.has_value()) {
    return Unexpected{ActorError("not_found", "actor does not exist")};
  }
  if (options_.check_actor_record) return options_.check_actor_record(*record);
  return OkStatus();
}

Result<latest::KvGetResponse> ActorKv::Get(ByteView actor, const latest::KvGetRequest& request) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> snap, store_.NewSnapshot());
  KEEL_RETURN_IF_ERROR(CheckGuard(*snap, actor));
  KEEL_RETURN_IF_ERROR(ValidateKeys(request.keys, options_.limits));
  latest::KvGetResponse out;
  for (const latest::KvKey& key : request.keys) {
    KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> stored, snap->Get(ActorKvEntryKey(actor, key)));
    if (!stored.has_value()) continue;
    KEEL_RETURN_IF_ERROR(AppendEntry(out, key, *stored));
  }
  return out;
}

Result<latest::KvListResponse> ActorKv::List(ByteView actor, const latest::KvListRequest& request) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> snap, store_.NewSnapshot());
  KEEL_RETURN_IF_ERROR(CheckGuard(*snap, actor));
  KEEL_RETURN_IF_ERROR(ValidateListQuery(request.query, options_.limits));

  const Bytes prefix = ActorKvPrefix(actor);
  KeyRange range;
  if (const auto* r = request.query.get_if<latest::KvListRangeQuery>()) {
    Bytes begin = ActorKvEntryKey(actor, r->start);
    Bytes end = ActorKvEntryKey(actor, r->end);
    // Inclusive end: the smallest key after it. Exclusive: the end itself.
    range = KeyRange::Between(begin, r->exclusive ? end : KeyAfter(end));
  } else if (const auto* p = request.query.get_if<latest::KvListPrefixQuery>()) {
    range = KeyRange::Prefix(ActorKvEntryKey(actor, p->key));
  } else {
    range = KeyRange::Prefix(prefix);
  }
  ScanOptions scan;
  scan.reverse = request.reverse.value_or(false);
  uint64_t limit = request.limit.value_or(options_.limits.default_list_limit);
  scan.limit = limit > kNoLimit ? kNoLimit : static_cast<size_t>(limit);

  KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> entries, snap->Scan(range, scan));
  latest::KvListResponse out;
  out.keys.reserve(entries.size());
  out.values.reserve(entries.size());
  out.metadata.reserve(entries.size());
  for (const KeyValue& kv : entries) {
    // Every key of the range starts with `prefix` (it is inside Prefix(prefix)).
    ByteView user_key = ByteView(kv.key).subspan(prefix.size());
    KEEL_RETURN_IF_ERROR(AppendEntry(out, user_key, kv.value));
  }
  return out;
}

Result<latest::PreloadedKv> ActorKv::Preload(ByteView actor, const PreloadPlan& plan,
                                             uint64_t max_total_bytes) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> snap, store_.NewSnapshot());
  KEEL_RETURN_IF_ERROR(CheckGuard(*snap, actor));
  latest::PreloadedKv out;
  uint64_t left = max_total_bytes;
  auto add = [&out](ByteView user_key, KvEntry e) {
    out.entries.push_back(latest::PreloadedKvEntry{
        latest::KvKey(user_key.begin(), user_key.end()), std::move(e.value),
        latest::KvMetadata{std::move(e.metadata.version), e.metadata.update_ts}});
  };
  for (const latest::KvKey& key : plan.keys) {
    if (left == 0) break;
    out.requested_get_keys.push_back(key);
    KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> stored, snap->Get(ActorKvEntryKey(actor, key)));
    if (!stored.has_value()) continue;
    KEEL_ASSIGN_OR_RETURN(KvEntry e, DecodeEntry(*stored));
    const uint64_t size = KeySize(key) + e.value.size();
    if (size > left) continue;  // listed but absent: the actor fetches it (§5.4 edge)
    left -= size;
    add(key, std::move(e));
  }
  const size_t prefix_len = ActorKvPrefix(actor).size();
  for (const PreloadPlan::Prefix& p : plan.prefixes) {
    const uint64_t budget = std::min(p.max_bytes, left);
    if (budget == 0) continue;
    // Every entry costs at least 2 bytes, so budget / 2 + 1 rows are enough to know that
    // the prefix does not fit.
    ScanOptions scan;
    scan.limit = static_cast<size_t>(std::min<uint64_t>(budget / 2 + 1, kNoLimit));
    KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> rows,
                          snap->Scan(KeyRange::Prefix(ActorKvEntryKey(actor, p.prefix)), scan));
    const size_t before = out.entries.size();
    uint64_t used = 0;
    bool complete = true;
    for (const KeyValue& kv : rows) {
      ByteView user_key = ByteView(kv.key).subspan(prefix_len);
      KEEL_ASSIGN_OR_RETURN(KvEntry e, DecodeEntry(kv.value));
      const uint64_t size = KeySize(user_key) + e.value.size();
      if (used + size > budget) {
        complete = false;
        break;
      }
      used += size;
      add(user_key, std::move(e));
    }
    if (!complete && !p.partial) {
      out.entries.resize(before);  // all or nothing
      continue;
    }
    left -= used;
    out.requested_prefixes.push_back(p.prefix);
  }
  return out;
}

// The sole writer's put (file comment): under the actor's lock, the remembered guard and
// usage, a read of each old entry, one unchecked batch. Same validation order, errors and
// stored bytes as the transaction below.
Status ActorKv::PutAsSoleWriter(ByteView actor, const latest::KvPutRequest& request,
                                int64_t now_ms) {
  Stripe& stripe = StripeOf(actor);
  std::lock_guard lock(stripe.mu);
  auto known = stripe.actors.find(AsString(actor));
  const Memo* memo = known == stripe.actors.end() ? nullptr : &known->second;
  if (memo == nullptr) KEEL_RETURN_IF_ERROR(CheckGuard(store_, actor));
  KEEL_ASSIGN_OR_RETURN(uint64_t payload, ValidatePutShape(request, options_.limits));
  uint64_t usage = 0;
  if (memo != nullptr) {
    usage = memo->usage;
  } else {
    KEEL_ASSIGN_OR_RETURN(usage, ReadUsage(store_, actor));
  }
  KEEL_RETURN_IF_ERROR(ValidatePutQuotaAndSizes(request, payload, usage, options_.limits));
  const uint64_t usage_before = usage;  // what storage holds (remembered or just read)
  const size_t n = request.keys.size();
  const ByteView version = AsBytes(options_.engine_version);
  // The full keys and the encoded entries, back to back in one buffer: one allocation for
  // the whole put (reserved for the most they can take). `writes` views into it once it is
  // complete; until then, each key and entry is known by its offsets.
  Bytes packed;
  {
    size_t bound = 0;
    for (size_t i = 0; i < n; ++i) {
      bound += 2 + actor.size() + request.keys[i].size() + EntryBound(request.values[i], version);
    }
    packed.reserve(bound);
  }
  auto view = [&packed](size_t begin, size_t end) {
    return ByteView(packed.data() + begin, end - begin);
  };
  // Offsets in `packed`: where a key starts, where its entry starts, where the entry ends.
  // Inline room for a put of two keys (an actor's state record and a connection's) and
  // its usage record: no allocation for the lists of the common put.
  boost::container::small_vector<std::array<size_t, 3>, 2> spans(n);
  boost::container::small_vector<KvWrite, 3> writes;
  writes.reserve(n + 1);
  // The index of the request's earlier entry for the same key, or `i` when it has none.
  auto earlier_of = [&request](size_t i) {
    for (size_t j = i; j-- > 0;) {
      if (request.keys[j] == request.keys[i]) return j;
    }
    return i;
  };
  for (size_t i = 0; i < n; ++i) {
    const latest::KvKey& key = request.keys[i];
    const size_t key_begin = packed.size();
    AppendActorKvEntryKey(actor, key, packed);
    const ByteView full_key = view(key_begin, packed.size());
    // A key repeated in this request replaces its earlier value of the request.
    const size_t earlier = earlier_of(i);
    std::optional<uint64_t> size_known;
    if (earlier != i) {
      usage = SaturatingSub(usage, KeySize(key) + request.values[earlier].size());
    } else if (memo != nullptr && (size_known = KnownSize(memo->sizes, key)).has_value()) {
      usage = SaturatingSub(usage, *size_known);
    } else {
      entry_reads_.fetch_add(1, std::memory_order_relaxed);
      KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> old, store_.Get(full_key));
      if (old.has_value()) {
        KEEL_ASSIGN_OR_RETURN(uint64_t old_size, EntrySize(key, *old));
        usage = SaturatingSub(usage, old_size);
      }
    }
    const size_t entry_begin = packed.size();
    AppendEntry(request.values[i], version, now_ms, packed);
    spans[i] = {key_begin, entry_begin, packed.size()};
    usage += KeySize(key) + request.values[i].size();
  }
  for (const auto& [key_begin, entry_begin, entry_end] : spans) {
    writes.push_back(KvWrite{view(key_begin, entry_begin), view(entry_begin, entry_end)});
  }
  // A put that leaves the total unchanged (a value rewritten at the same size, as an
  // actor's state record mostly is) leaves the stored usage as it is: one write less.
  Bytes usage_key;
  Bytes usage_record;
  if (usage != usage_before) {
    usage_key = ActorKvUsageKey(actor);
    if (usage != 0) usage_record = protocol::engine::WriteRecord(KvUsage{usage});
    writes.push_back(usage == 0 ? KvWrite{usage_key, std::nullopt}
                                : KvWrite{usage_key, ByteView(usage_record)});
  }
  CommitOptions commit = WriteCommit();
  commit.rewritten_often = memo != nullptr && memo->puts >= kRewritesHintedAfter;
  Status written = store_.WriteUnchecked(writes, commit);
  if (!written.has_value()) {
    // The outcome may be unknown (storage.io): read everything again next time.
    if (memo != nullptr) stripe.actors.erase(known);
    return written;
  }
  // Remember the sizes this put stored (each key's last value in the request), newest
  // first, then those remembered before for keys it did not write, as many as fit.
  char sizes[kMaxKnownSizeBytes];
  size_t used = 0;
  for (size_t i = n; i-- > 0;) {
    bool later = false;  // the same key again further on: that one was stored
    for (size_t j = i + 1; j < n && !later; ++j) later = request.keys[j] == request.keys[i];
    if (later) continue;
    AppendKnownSize(AsString(request.keys[i]), KeySize(request.keys[i]) + request.values[i].size(),
                    sizes, used, sizeof sizes);
  }
  if (memo != nullptr) {
    ForEachKnownSize(memo->sizes, [&](std::string_view key, uint32_t size) {
      for (const latest::KvKey& written_key : request.keys) {
        if (AsString(written_key) == key) return;
      }
      AppendKnownSize(key, size, sizes, used, sizeof sizes);
    });
  }
  Memo& after = memo != nullptr ? known->second : Remember(stripe, actor, usage);
  after.usage = usage;
  after.sizes.assign(sizes, used);
  if (after.puts < kRewritesHintedAfter) ++after.puts;
  return OkStatus();
}

Status ActorKv::Put(ByteView actor, const latest::KvPutRequest& request, int64_t now_ms) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  if (stripes_) return PutAsSoleWriter(actor, request, now_ms);
  const ByteView version = AsBytes(options_.engine_version);
  return RunTransaction(
      store_,
      [&](KvTxn& txn) -> Status {
        KEEL_RETURN_IF_ERROR(CheckGuard(txn, actor));
        KEEL_ASSIGN_OR_RETURN(uint64_t payload, ValidatePutShape(request, options_.limits));
        KEEL_ASSIGN_OR_RETURN(uint64_t usage, ReadUsage(txn, actor));
        KEEL_RETURN_IF_ERROR(ValidatePutQuotaAndSizes(request, payload, usage, options_.limits));
        // Validation is complete: from here on every step writes.
        for (size_t i = 0; i < request.keys.size(); ++i) {
          const latest::KvKey& key = request.keys[i];
          Bytes full = ActorKvEntryKey(actor, key);
          // Read-your-writes: a key repeated in this request sees its earlier value.
          KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> old, txn.Get(full));
          if (old.has_value()) {
            KEEL_ASSIGN_OR_RETURN(uint64_t old_size, EntrySize(key, *old));
            usage = SaturatingSub(usage, old_size);
          }
          KEEL_RETURN_IF_ERROR(txn.Put(full, EncodeEntry(request.values[i], version, now_ms)));
          usage += KeySize(key) + request.values[i].size();
        }
        return WriteUsage(txn, actor, usage);
      },
      options_.max_attempts, WriteCommit());
}

Status ActorKv::Delete(ByteView actor, const latest::KvDeleteRequest& request) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  return WriteTransaction(actor, [&](KvTxn& txn, std::optional<uint64_t>& usage_after) -> Status {
    KEEL_RETURN_IF_ERROR(ValidateKeys(request.keys, options_.limits));
    KEEL_ASSIGN_OR_RETURN(uint64_t usage, ReadUsage(txn, actor));
    bool deleted = false;
    for (const latest::KvKey& key : request.keys) {
      Bytes full = ActorKvEntryKey(actor, key);
      KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> old, txn.Get(full));
      if (!old.has_value()) continue;
      KEEL_ASSIGN_OR_RETURN(uint64_t old_size, EntrySize(key, *old));
      usage = SaturatingSub(usage, old_size);
      KEEL_RETURN_IF_ERROR(txn.Delete(full));
      deleted = true;
    }
    usage_after = usage;
    // Every change of the entries writes the usage: writers conflict on it.
    if (!deleted) return OkStatus();
    return WriteUsage(txn, actor, usage);
  });
}

Status ActorKv::DeleteRange(ByteView actor, const latest::KvDeleteRangeRequest& request) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  return WriteTransaction(actor, [&](KvTxn& txn, std::optional<uint64_t>& usage_after) -> Status {
    KEEL_RETURN_IF_ERROR(ValidateRangeKeys(request.start, request.end, options_.limits));
    if (CompareKeys(request.start, request.end) >= 0) return OkStatus();
    const Bytes prefix = ActorKvPrefix(actor);
    KeyRange range = KeyRange::Between(ActorKvEntryKey(actor, request.start),
                                       ActorKvEntryKey(actor, request.end));
    // TODO(perf): one txn for the whole range; a huge range should be chunked.
    KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> entries, txn.Scan(range));
    if (entries.empty()) return OkStatus();
    KEEL_ASSIGN_OR_RETURN(uint64_t usage, ReadUsage(txn, actor));
    for (const KeyValue& kv : entries) {
      KEEL_ASSIGN_OR_RETURN(uint64_t size,
                            EntrySize(ByteView(kv.key).subspan(prefix.size()), kv.value));
      usage = SaturatingSub(usage, size);
      KEEL_RETURN_IF_ERROR(txn.Delete(kv.key));
    }
    usage_after = usage;
    return WriteUsage(txn, actor, usage);
  });
}

Status ActorKv::Drop(ByteView actor) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  return WriteTransaction(actor, [&](KvTxn& txn, std::optional<uint64_t>& usage_after) -> Status {
    // Read the usage so a concurrent put (which writes it) conflicts with the drop.
    KEEL_ASSIGN_OR_RETURN(uint64_t usage, ReadUsage(txn, actor));
    (void)usage;
    // TODO(perf): one txn for up to the whole quota; DropAll chunks instead.
    KEEL_RETURN_IF_ERROR(txn.DeleteRange(KeyRange::Prefix(ActorKvPrefix(actor))));
    usage_after = 0;
    return txn.Delete(ActorKvUsageKey(actor));
  });
}

Status ActorKv::DropAll(ByteView actor) {
  for (;;) {
    KEEL_ASSIGN_OR_RETURN(bool done, DropSome(actor));
    if (done) return OkStatus();
  }
}

Result<bool> ActorKv::DropSome(ByteView actor) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  const Bytes prefix = ActorKvPrefix(actor);
  const size_t chunk = options_.drop_chunk_keys == 0 ? 1 : options_.drop_chunk_keys;
  bool done = false;
  // Under the actor's lock, and forgotten after each chunk (usage_after stays empty):
  // the next write re-reads the guard, which the destroy has marked.
  Status st = WriteLocked(actor, [&](std::optional<uint64_t>&) -> Status {
    return RunTransaction(
        store_,
        [&](KvTxn& txn) -> Status {
          done = false;
          // An undecodable usage record is replaced (it is being dropped anyway).
          Result<uint64_t> read_usage = ReadUsage(txn, actor);
          if (!read_usage.has_value() && !read_usage.error().Is(kErrorGroup, kCorruption)) {
            return Unexpected{read_usage.error()};
          }
          uint64_t usage = read_usage.value_or(0);
          ScanOptions scan;
          scan.limit = chunk;
          KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> entries,
                                txn.Scan(KeyRange::Prefix(prefix), scan));
          for (const KeyValue& kv : entries) {
            // An undecodable entry is still deleted; its size just cannot be subtracted.
            auto size = EntrySize(ByteView(kv.key).subspan(prefix.size()), kv.value);
            if (size.has_value()) usage = SaturatingSub(usage, *size);
            KEEL_RETURN_IF_ERROR(txn.Delete(kv.key));
          }
          if (entries.size() < chunk) {
            done = true;
            return txn.Delete(ActorKvUsageKey(actor));
          }
          return WriteUsage(txn, actor, usage);
        },
        options_.max_attempts);
  });
  KEEL_RETURN_IF_ERROR(st);
  return done;
}

Result<uint64_t> ActorKv::Usage(ByteView actor) {
  KEEL_RETURN_IF_ERROR(CheckActorId(actor));
  return ReadUsage(store_, actor);
}

latest::KvResponseData ActorKv::Handle(ByteView actor, const latest::KvRequestData& request,
                                       int64_t now_ms) {
  auto error = [](const Error& e) -> latest::KvResponseData {
    return latest::KvErrorResponse{e.ToString()};
  };
  try {
    return std::visit(
        [&](const auto& req) -> latest::KvResponseData {
          using T = std::decay_t<decltype(req)>;
          if constexpr (std::is_same_v<T, latest::KvGetRequest>) {
            auto r = Get(actor, req);
            if (!r.has_value()) return error(r.error());
            return std::move(r).value();
          } else if constexpr (std::is_same_v<T, latest::KvListRequest>) {
            auto r = List(actor, req);
            if (!r.has_value()) return error(r.error());
            return std::move(r).value();
          } else if constexpr (std::is_same_v<T, latest::KvPutRequest>) {
            Status s = Put(actor, req, now_ms);
            if (!s.has_value()) return error(s.error());
            return latest::KvPutResponse{};
          } else if constexpr (std::is_same_v<T, latest::KvDeleteRequest>) {
            Status s = Delete(actor, req);
            if (!s.has_value()) return error(s.error());
            return latest::KvDeleteResponse{};
          } else if constexpr (std::is_same_v<T, latest::KvDeleteRangeRequest>) {
            Status s = DeleteRange(actor, req);
            if (!s.has_value()) return error(s.error());
            return latest::KvDeleteResponse{};
          } else {
            static_assert(std::is_same_v<T, latest::KvDropRequest>);
            Status s = Drop(actor);
            if (!s.has_value()) return error(s.error());
            return latest::KvDropResponse{};
          }
        },
        request.value);
  } catch (const std::exception& e) {
    return error(StorageError(kInternal, std::string("unexpected exception: ") + e.what()));
  } catch (...) {
    return error(StorageError(kInternal, "unexpected exception"));
  }
}

}  // namespace keel::storage
