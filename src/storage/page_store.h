// PageStore: per-actor SQLite page storage (envoy-protocol §7) on top of a KvStore, with
// optional generation / head-txid fencing. Protocol-agnostic: plain C++ types in and out;
// the wire layer maps them to SqliteGetPages*/SqliteCommit* and puts Error::ToString()
// into SqliteErrorResponse.message.
//
// Keyspace (docs/storage.md §3.5, Q = 05 ‹actor› 21):
//   05 ‹actor› 20                SqliteHead, a versioned envelope: u16 LE schema version (1),
//                                then BARE (little-endian, fixed width) of
//                                  struct { head_txid: u64, db_size_pages: u32,
//                                           last_commit_ms: i64, stored_bytes: u64,
//                                           generation: optional<u64> }
//                                `generation` is the owning generation (SetGeneration); it
//                                lives in the head so every commit reads it in its txn and a
//                                concurrent SetGeneration makes that commit conflict/retry.
//                                head_txid 0 means "generation recorded, never committed".
//   05 ‹actor› 21 ‹pgno:u32 BE›  the page, exactly page_size raw bytes.
//   05 ‹actor› 01                the actor record: read (never written) by Commit as the
//                                guard key, so a commit racing the destroy txn conflicts.
// The database is [05 a 20, 05 a 22).
//
// Semantics:
//  * GetPages: one snapshot. pgno 0 → sqlite.invalid_page. Never committed (head absent or
//    head_txid 0) → sqlite.not_found "sqlite database was not found in this bucket branch"
//    (Rivet's text; the VFS treats it as "new, empty database"), also for an empty pgnos
//    list. One Page per requested pgno, in request order: pgno > db_size_pages → absent;
//    stored → its bytes; never written below the size → page_size zero bytes (§7.1 step 4,
//    the default) or absent with `zero_fill_unwritten = false` (the VFS reads both as zeros).
//  * Commit: validated before any txn (nothing written on failure): pgno 0, a page not
//    exactly page_size bytes, or a pgno twice → sqlite.invalid_page; total page bytes >
//    max_commit_bytes → sqlite.commit_too_large. Then one KvStore txn (RunTransaction):
//    read guard + head, check fences, txid = head_txid + 1 (1 creates the database; a
//    create first clears any orphan pages left by an interrupted Delete), write every dirty
//    page with pgno <= db_size_pages (pages above the new size are dropped, as truncation
//    would discard them), delete stored pages above db_size_pages when it shrank, write
//    the head (size, now_ms, stored_bytes = exact count of stored pages × page_size).
//    An empty dirty list is valid (it still bumps the txid and sets the size).
//    storage.io from the KvStore commit means the outcome is unknown (kv_store.h).
//    CommitRequest::sync, when set, replaces PageStoreOptions::sync for that commit.
//  * Fencing: `expected_generation` present → must equal the recorded generation (none
//    recorded counts as a mismatch) else sqlite.remote_fence_mismatch. Absent → no check:
//    §7.3 says Rivet ignores the expected* fields and its VFS leaves them absent, so an
//    un-fenced request behaves exactly like Rivet. `expected_head_txid` present → must
//    equal the current head txid (0 when never committed) else
//    sqlite.remote_fence_mismatch. Fence checks precede the not-found check.
//  * SetGeneration: generations only move forward. Older than the recorded one →
//    sqlite.remote_fence_mismatch; equal → no-op; newer → recorded (creates a head with
//    head_txid 0 when the database does not exist yet, which still reads as not found).
//  * Delete: removes the head and every page, in chunks of `delete_chunk_keys` keys per
//    txn (a 10 GiB database cannot be one txn, docs/storage.md §3.8). The head sorts first,
//    so the first chunk makes the database read as not found; if interrupted, the orphan
//    pages are invisible and the next creating commit clears them; re-running finishes.
//
// Actor ids are the engine's fixed-width binary ids (Keel v1: 19 bytes); any other length
// → sqlite.invalid_actor_id (fixed width is what keeps one actor's keys from being a
// prefix of another's).
//
// Errors: group "sqlite": invalid_actor_id, invalid_page, commit_too_large,
// remote_fence_mismatch, not_found; group "storage": passed through from the KvStore
// (conflict after the retries, io, corruption — including a damaged head record or a page
// of the wrong length —, closed).
// Thread-safety: stateless apart from the store reference; safe from many threads (the
// KvStore serialises commits of one database through the head key).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/result.h"
#include "protocol/engine/records.h"
#include "storage/kv_store.h"

namespace keel::storage {

inline constexpr std::string_view kSqliteErrorGroup = "sqlite";
inline constexpr std::string_view kSqliteInvalidActorId = "invalid_actor_id";
inline constexpr std::string_view kSqliteInvalidPage = "invalid_page";
inline constexpr std::string_view kSqliteCommitTooLarge = "commit_too_large";
inline constexpr std::string_view kSqliteFenceMismatch = "remote_fence_mismatch";
inline constexpr std::string_view kSqliteNotFound = "not_found";

// Rivet's text for a database that was never committed (envoy-protocol §7.1 step 3).
inline constexpr std::string_view kSqliteDatabaseNotFoundMessage =
    "sqlite database was not found in this bucket branch";

inline constexpr size_t kSqlitePageSize = 4096;                     // Appendix B
inline constexpr size_t kDefaultMaxCommitBytes = size_t{16} << 20;  // §7.2 RECOMMENDATION
inline constexpr size_t kKeelActorIdSize = 19;                      // docs/storage.md §2

// An Error in the "sqlite" group.
Error SqliteError(std::string_view code, std::string message);

// sqlite.commit_too_large for a commit of `actual` page bytes over the cap `max`. Also what a
// local-SQLite runtime fails such a commit with before sending it (one over the envoy
// connection's frame limit would close the connection of every actor on it).
inline Error CommitTooLargeError(size_t actual, size_t max) {
  return Error(std::string(kSqliteErrorGroup), std::string(kSqliteCommitTooLarge),
               "sqlite commit too large: actual_size_bytes=" + std::to_string(actual) +
                   ", max_size_bytes=" + std::to_string(max));
}

struct PageStoreOptions {
  // Bytes per page; every committed page must be exactly this long. 1..65536.
  size_t page_size = kSqlitePageSize;
  // Cap on the summed page bytes of one commit (sqlite.commit_too_large beyond it).
  size_t max_commit_bytes = kDefaultMaxCommitBytes;
  // Width of the binary actor id. Must be > 0.
  size_t actor_id_size = kKeelActorIdSize;
  // GetPages: a never-written page below db_size_pages reads as page_size zero bytes
  // (true, Rivet's behaviour) or absent (false).
  bool zero_fill_unwritten = true;
  // CommitOptions::sync for every write this store makes.
  bool sync = true;
  // Retries on storage.conflict (RunTransaction).
  int max_attempts = kDefaultMaxAttempts;
  // Keys deleted per transaction by Delete. Must be > 0.
  size_t delete_chunk_keys = 1024;
};

struct Page {
  uint32_t pgno = 0;
  std::optional<Bytes> bytes;

  friend bool operator==(const Page&, const Page&) = default;
};

struct DirtyPage {
  uint32_t pgno = 0;
  Bytes bytes;
};

struct CommitRequest {
  std::vector<DirtyPage> dirty_pages;
  uint32_t db_size_pages = 0;
  int64_t now_ms = 0;
  std::optional<uint64_t> expected_generation;
  std::optional<uint64_t> expected_head_txid;
  // Overrides PageStoreOptions::sync for this commit. false: the commit returns before it
  // is durable, and the caller makes it so (storage/group_sync.h) before acknowledging it.
  std::optional<bool> sync;
};

struct CommitOutcome {
  uint64_t head_txid = 0;  // the new head txid
};

// The decoded head record (see the file comment).
// The head record (schemas/engine/v1.bare `SqliteHead`): head txid, size in pages, last
// commit time, stored bytes and the owning generation (absent until SetGeneration).
using SqliteHead = protocol::engine::latest::SqliteHead;

class PageStore {
 public:
  // `store` must outlive this object. Invalid options (zero sizes, page_size > 65536,
  // max_attempts < 1) are replaced by their defaults.
  explicit PageStore(KvStore& store, PageStoreOptions options = {});

  Result<std::vector<Page>> GetPages(ByteView actor, const std::vector<uint32_t>& pgnos,
                                     std::optional<uint64_t> expected_generation = std::nullopt,
                                     std::optional<uint64_t> expected_head_txid = std::nullopt);

  Result<CommitOutcome> Commit(ByteView actor, const CommitRequest& request);

  Status SetGeneration(ByteView actor, uint64_t generation);

  Status Delete(ByteView actor);
  // One of Delete's chunks: true when it deleted the last key of the database, false when
  // more are left. For a caller that interleaves other work between chunks.
  Result<bool> DeleteSome(ByteView actor);

  // The head record, or nullopt when absent (latest committed state).
  Result<std::optional<SqliteHead>> ReadHead(ByteView actor);

  const PageStoreOptions& options() const { return options_; }

  // Key helpers (exposed for tests and the engine's destroy/sweep code).
  static Bytes HeadKey(ByteView actor);
  static Bytes PageKey(ByteView actor, uint32_t pgno);
  static Bytes GuardKey(ByteView actor);
  // [05 a 20, 05 a 22): the whole database.
  static KeyRange DatabaseRange(ByteView actor);

  static Bytes EncodeHead(const SqliteHead& head);
  // storage.corruption on a wrong version, length or presence byte.
  static Result<SqliteHead> DecodeHead(ByteView bytes);

 private:
  Status CheckActor(ByteView actor) const;

  KvStore& store_;
  PageStoreOptions options_;
};

}  // namespace keel::storage
