// ActorKv: the engine side of the per-actor KV store (envoy-protocol.md §5) on top of a
// KvStore, with the protocol's exact semantics, limits and error texts, in the keyspace of
// docs/storage.md §3.5. Used by the engine's envoy connection (KvRequest → KvResponse) and
// by actor destroy (DropAll). Thread-safety: safe from many threads at once (each call
// runs its own transaction or batch; the sole writer's per-actor state is under per-stripe
// mutexes).
//
// Keys (docs/storage.md §2, §3.5; ‹a› = the actor id in its fixed-width binary form):
//   05 ‹a› 01          actor record — the GUARD. Written by the engine (ActorRecord); ActorKv
//                      only reads it: absent → `actor.not_found` (every operation, reads
//                      too, checks it in its snapshot/txn), and every write reads it
//                      in its txn so a KV write racing a destroy (which rewrites the record)
//                      conflicts and is retried (the sole writer remembers it instead:
//                      see below). Options::check_actor_record may inspect it
//                      (e.g. reject a destroyed actor). PutActorRecordForTest writes one.
//   05 ‹a› 03          KvUsage — versioned envelope: u16 LE schema version (1), then BARE
//                      `struct { stored_bytes: u64 }`. Absent = 0.
//   05 ‹a› 10 ‹key›    KvEntry — versioned envelope: u16 LE schema version (1), then BARE
//                      `struct { value: data, metadata: struct { version: data, update_ts: i64 }
//                      }`.
// Stored bytes of an entry (what the quota counts): len(key) + 2 + len(value), the
// protocol's own size accounting (§5.1); metadata is not counted. Every write adjusts the
// usage record in the same transaction, so the usage is exact and concurrent KV writers of
// one actor always conflict on it (it doubles as the phantom guard of delete-range/drop).
//
// Sole writer (ActorKvOptions::sole_writer, the engine's setting): when this object is the
// only writer of the actors' KV keys, every write of one actor runs under that actor's
// lock (a stripe of them), and a put needs no transaction: once the guard passed and the
// usage was read, both are remembered per actor, so a put reads only the old entries (for
// the quota) and commits the entries and the new usage as one unchecked batch
// (KvStore::WriteUnchecked) — the entries alone when the total did not change. The stored
// sizes of the keys the actor's latest puts wrote are remembered too (a few bytes each,
// kMaxKnownSizeBytes at most per actor), so rewriting one of them (an actor's state
// record, on every call) reads nothing at all. Delete, delete-range and drop stay
// transactions (under the same lock), remember the usage they leave and forget the sizes;
// a failed write forgets everything. The guard is re-read after Forget (DropAll calls it:
// destroy is the one change of the record that check_actor_record rejects).
//
// Error codes (every one is answered as `KvErrorResponse{ "group.code: message" }`; the
// message after the prefix is Rivet's text byte for byte where Rivet has one; the numbers
// follow Limits, the texts below are for the defaults):
//   actor.invalid_id        "actor id must be 19 bytes (binary form), got N" (Keel's own)
//   actor.not_found         "actor does not exist" (guard record absent)
//   kv.too_many_keys        "a maximum of 128 keys is allowed" (get, delete)
//   kv.key_too_large        "key is too long (max 2048 bytes)" (get, put, delete; len+2 counted)
//   kv.length_mismatch      "Keys list length != values list length" (put)
//   kv.too_many_entries     "A maximum of 128 key-value entries is allowed" (put)
//   kv.payload_too_large    "total payload is too large (max 976 KiB)" (put)
//   kv.value_too_large      "value is too large (max 128 KiB)" (put)
//   kv.start_key_too_large  "start key is too long (max 2048 bytes)" (list range, delete range)
//   kv.end_key_too_large    "end key is too long (max 2048 bytes)" (list range, delete range)
//   kv.prefix_too_large     "prefix key is too long (max 2048 bytes)" (list prefix)
//   actor.kv_storage_quota_exceeded
//                           "Not enough space left in storage (N bytes remaining, current
//                           payload is M bytes)." (put: usage + payload > quota)
//   storage.<code>          any KvStore failure (kv_store.h), incl. `storage.corruption` for
//                           an undecodable KvEntry/KvUsage record and `storage.conflict`
//                           after max_attempts.
//   storage.internal        an unexpected C++ exception (Handle never throws).
// Put validation order (Rivet's): guard, length mismatch, entry count, payload, quota, key
// sizes, value sizes. Every rejected request writes nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/bytes.h"
#include "base/error.h"
#include "base/result.h"
#include "protocol/envoy/versioned.h"
#include "storage/actor_keys.h"
#include "storage/kv_store.h"

namespace keel::storage {

namespace latest = ::keel::protocol::envoy::latest;

// Keel v1 engine ids in binary form (docs/storage.md §2): [version][UUID][dc label].
inline constexpr size_t kActorIdSize = 19;

// Record tags of docs/storage.md §3.5 (the subspace is in storage/actor_keys.h).
inline constexpr uint8_t kActorRecordTag = 0x01;
inline constexpr uint8_t kActorKvUsageTag = 0x03;
inline constexpr uint8_t kActorKvEntryTag = 0x10;

// The protocol's limits (envoy-protocol.md §5.1). Configurable for tests only.
struct ActorKvLimits {
  // Max key size, counted as len(key) + 2.
  size_t max_key_size = 2048;
  size_t max_value_size = 131072;
  // Max keys per get/put/delete request.
  size_t max_keys = 128;
  // Max Σ(len(key) + 2) + Σ len(value) of one put.
  size_t max_put_payload = 999424;
  // Max stored bytes per actor (see the file comment for what counts).
  uint64_t max_storage = uint64_t{10} << 30;
  // List limit when the request has none.
  uint64_t default_list_limit = 16384;
};

struct ActorKvOptions {
  // Written as KvMetadata.version (UTF-8 bytes) on every put.
  std::string engine_version;
  ActorKvLimits limits;
  // Width of the binary actor id; ids of another size are rejected (actor.invalid_id).
  size_t actor_id_size = kActorIdSize;
  // Attempts of each transaction on storage.conflict (RunTransaction).
  int max_attempts = kDefaultMaxAttempts;
  // Keys deleted per transaction by DropAll (docs/storage.md §3.8: bounded chunks).
  size_t drop_chunk_keys = 1024;
  // Whether Put/Delete/DeleteRange/Drop commit with sync. false: the caller must make each
  // write durable before acknowledging it (KvStore::SyncWrites, e.g. through GroupSync),
  // and hold read answers that may show unsynced writes (GroupSync::AfterRead). DropAll
  // (destroy) always syncs.
  bool sync_writes = true;
  // Optional: called with the bytes of the (present) actor record; an error is answered
  // as is (e.g. `actor.not_found` for a destroyed actor). Default: presence is enough.
  // With sole_writer a write consults it only while the actor is not remembered.
  std::function<Status(ByteView record)> check_actor_record;
  // This ActorKv is the only writer of the actor KV keys (`05 ‹a› 03`, `05 ‹a› 10 …`) in
  // its store: no other process, no other ActorKv, no direct store writes. Enables the
  // sole-writer path of the file comment. A change of an actor record that
  // check_actor_record (or absence) rejects must be followed by Forget or DropAll.
  bool sole_writer = false;
  // Sole writer: actors remembered at most (usage, a u64 each); beyond it, some are
  // forgotten and re-read on their next write.
  size_t max_remembered_actors = 1 << 16;
};

// Key builders (docs/storage.md §3.5). `actor` is the binary id (not validated here).
Bytes ActorRecordKey(ByteView actor);
Bytes ActorKvUsageKey(ByteView actor);
// `05 ‹a› 10` — every KV entry of the actor starts with it.
Bytes ActorKvPrefix(ByteView actor);
Bytes ActorKvEntryKey(ByteView actor, ByteView key);

// Writes `record` at the guard key `05 ‹a› 01` (the engine writes its ActorRecord there;
// tests and tools use any bytes). Errors: storage.*.
Status PutActorRecordForTest(KvStore& store, ByteView actor, ByteView record = {});

// What an actor name asks the engine to preload into its start commands
// (envoy-protocol.md §5.4): exact keys, then prefixes in priority order, each prefix with a
// byte budget and whether a partial prefix is useful to the actor.
struct PreloadPlan {
  struct Prefix {
    latest::KvKey prefix;
    uint64_t max_bytes = 0;
    bool partial = false;
  };
  std::vector<latest::KvKey> keys;
  std::vector<Prefix> prefixes;
};

class ActorKv {
 public:
  // `store` must outlive this object.
  ActorKv(KvStore& store, ActorKvOptions options);

  // Answers one KV request of actor `actor` (binary id) with exactly one response: the
  // operation's success variant or KvErrorResponse{"group.code: message"} (codes above).
  // Never throws. `now_ms` becomes KvMetadata.update_ts of put entries. Completes
  // synchronously.
  latest::KvResponseData Handle(ByteView actor, const latest::KvRequestData& request,
                                int64_t now_ms);
  // Put, delete, delete-range and drop (they commit); get and list only read.
  static bool IsWrite(const latest::KvRequestData& request);

  // The operations behind Handle, with structured errors (same codes).
  Result<latest::KvGetResponse> Get(ByteView actor, const latest::KvGetRequest& request);
  Result<latest::KvListResponse> List(ByteView actor, const latest::KvListRequest& request);
  Status Put(ByteView actor, const latest::KvPutRequest& request, int64_t now_ms);
  Status Delete(ByteView actor, const latest::KvDeleteRequest& request);
  // start >= end: success, nothing deleted.
  Status DeleteRange(ByteView actor, const latest::KvDeleteRangeRequest& request);
  // The plan's entries from one snapshot, within `max_total_bytes` (an entry costs what the
  // KV quota counts: its key plus 2, plus its value), by the rules of envoy-protocol.md §5.4: exact
  // keys first — each looked-up key is listed in requested_get_keys (lookups stop once the budget
  // is used up) and its entry is included only if it fits; then each prefix within min(its
  // max_bytes, what is left): it is listed when all of it fits, or when only part fits and
  // `partial` is set (the entries that fit are kept); otherwise its entries are dropped and it is
  // not listed; a prefix with no budget left is skipped. The actor's runtime may trust a listed
  // key's absence and a listed non-partial prefix's completeness. Errors: as Get.
  Result<latest::PreloadedKv> Preload(ByteView actor, const PreloadPlan& plan,
                                      uint64_t max_total_bytes);

  // The protocol's KvDropRequest: one transaction, guard checked.
  Status Drop(ByteView actor);

  // Deletes every KV entry and the usage record of `actor` in chunks of drop_chunk_keys
  // keys per transaction, WITHOUT checking the guard (for destroy, which has already
  // marked the record). Not atomic as a whole; re-running it finishes an interrupted one.
  // Errors: actor.invalid_id, storage.*.
  Status DropAll(ByteView actor);
  // One of DropAll's chunks: true when it deleted the last of them (the usage record too),
  // false when more are left. For a caller that interleaves other work between chunks.
  Result<bool> DropSome(ByteView actor);

  // Sole writer: drops what is remembered of `actor`; its next write re-reads the guard
  // and the usage. A no-op otherwise.
  void Forget(ByteView actor);
  // Sole writer: how many actors are remembered now (tests, metrics).
  size_t remembered_actors() const;
  // Sole writer: reads of old entries the puts made to count the usage (tests, metrics).
  uint64_t entry_reads() const { return entry_reads_.load(std::memory_order_relaxed); }

  // The actor's stored bytes as tracked in `05 ‹a› 03` (0 when absent).
  // Errors: actor.invalid_id, storage.* (corruption when undecodable).
  Result<uint64_t> Usage(ByteView actor);

  const ActorKvOptions& options() const { return options_; }

 private:
  // Sole writer: one lock per stripe of actors, held across each write of its actors, and
  // the usage of the remembered ones (present = the guard passed, usage known).
  struct IdHash {  // lookups by the id's bytes, without a copy
    using is_transparent = void;
    size_t operator()(std::string_view id) const { return std::hash<std::string_view>{}(id); }
  };
  // What is remembered of one actor: its usage, and the stored size (KeySize + value) of
  // keys its latest puts wrote, packed as [u8 key length][key][u32 size, little-endian]…
  // (short enough for the string's inline buffer when it is only a state record's key).
  struct Memo {
    uint64_t usage = 0;
    std::string sizes;
    // Puts since the actor was remembered (saturating). From the kRewritesHintedAfter-th
    // on, a put's keys are written with CommitOptions::rewritten_often: an actor that keeps
    // rewriting its records pays for insert hints, one written once or twice does not.
    uint32_t puts = 0;
  };
  struct Stripe {
    std::mutex mu;
    std::unordered_map<std::string, Memo, IdHash, std::equal_to<>> actors;
  };
  static constexpr size_t kStripes = 64;
  // Bytes of Memo::sizes at most: two records of a UUID-sized key (a connection's) and a
  // short one (the state's) fit.
  static constexpr size_t kMaxKnownSizeBytes = 96;
  // See Memo::puts. An actor created and called once (W4's idle actors) writes twice.
  static constexpr uint32_t kRewritesHintedAfter = 3;

  CommitOptions WriteCommit() const;
  Status CheckActorId(ByteView actor) const;
  Status CheckGuard(KvReader& reader, ByteView actor) const;
  Stripe& StripeOf(ByteView actor) const;
  // Remembers `usage` and no entry sizes. REQUIRES: stripe.mu held.
  Memo& Remember(Stripe& stripe, ByteView actor, uint64_t usage) const;
  // REQUIRES: stripe.mu held.
  static void ForgetLocked(Stripe& stripe, ByteView actor);
  Status PutAsSoleWriter(ByteView actor, const latest::KvPutRequest& request, int64_t now_ms);
  // Runs `write` (a transaction that sets `usage_after` when it commits, or leaves it
  // empty when the usage is unchanged or unknown) under the actor's lock when sole
  // writer, keeping what is remembered in step.
  Status WriteLocked(ByteView actor, const std::function<Status(std::optional<uint64_t>&)>& write);
  // A write transaction of `actor` through WriteLocked: the guard is checked first, then
  // `fn` runs (again on a conflict) and sets usage_after as above.
  Status WriteTransaction(ByteView actor,
                          const std::function<Status(KvTxn&, std::optional<uint64_t>&)>& fn);

  KvStore& store_;
  ActorKvOptions options_;
  std::unique_ptr<Stripe[]> stripes_;  // sole writer only
  std::atomic<uint64_t> entry_reads_{0};
};

}  // namespace keel::storage
