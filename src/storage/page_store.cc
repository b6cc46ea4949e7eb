#include "storage/page_store.h"

#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>

#include "storage/actor_keys.h"

namespace keel::storage {
namespace {

constexpr uint8_t kGuardTag = 0x01;
constexpr uint8_t kHeadTag = 0x20;
constexpr uint8_t kPageTag = 0x21;
constexpr uint8_t kDatabaseEndTag = 0x22;
// u16 version + u64 txid + u32 size + i64 now_ms + u64 stored + presence byte.
// Page keys read per scan while truncating.
constexpr size_t kTruncateScanLimit = 256;

void AppendU32Be(Bytes& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}



Error FenceError(std::string message) {
  return SqliteError(kSqliteFenceMismatch, std::move(message));
}

std::string GenerationText(const std::optional<uint64_t>& g) {
  return g.has_value() ? std::to_string(*g) : std::string("none");
}

// Checks the optional fences against the head (absent head: no generation, txid 0).
Status CheckFences(const std::optional<SqliteHead>& head,
                   const std::optional<uint64_t>& expected_generation,
                   const std::optional<uint64_t>& expected_head_txid) {
  if (expected_generation.has_value()) {
    std::optional<uint64_t> recorded = head ? head->generation : std::nullopt;
    if (recorded != expected_generation) {
      std::string m = "sqlite generation fence mismatch: expected generation ";
      m += std::to_string(*expected_generation);
      m += ", recorded generation ";
      m += GenerationText(recorded);
      return Unexpected{FenceError(std::move(m))};
    }
  }
  if (expected_head_txid.has_value()) {
    uint64_t current = head ? head->head_txid : 0;
    if (current != *expected_head_txid) {
      std::string m = "sqlite head txid fence mismatch: expected head txid ";
      m += std::to_string(*expected_head_txid);
      m += ", current head txid ";
      m += std::to_string(current);
      return Unexpected{FenceError(std::move(m))};
    }
  }
  return OkStatus();
}

Result<std::optional<SqliteHead>> ReadHeadFrom(KvReader& reader, ByteView actor) {
  KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> raw, reader.Get(PageStore::HeadKey(actor)));
  if (!raw.has_value()) return std::optional<SqliteHead>();
  KEEL_ASSIGN_OR_RETURN(SqliteHead head, PageStore::DecodeHead(*raw));
  return std::optional<SqliteHead>(std::move(head));
}

bool Committed(const std::optional<SqliteHead>& head) {
  return head.has_value() && head->head_txid > 0;
}

Error CorruptPage(uint32_t pgno, size_t got, size_t want) {
  std::string m = "sqlite page ";
  m += std::to_string(pgno);
  m += " is stored with ";
  m += std::to_string(got);
  m += " bytes, expected ";
  m += std::to_string(want);
  return StorageError(kCorruption, std::move(m));
}

}  // namespace

Error SqliteError(std::string_view code, std::string message) {
  return Error(std::string(kSqliteErrorGroup), std::string(code), std::move(message));
}

PageStore::PageStore(KvStore& store, PageStoreOptions options)
    : store_(store), options_(std::move(options)) {
  PageStoreOptions defaults;
  // SQLite pages are 512..65536 bytes; anything beyond 65536 is a misconfiguration.
  if (options_.page_size == 0 || options_.page_size > 65536)
    options_.page_size = defaults.page_size;
  if (options_.actor_id_size == 0) options_.actor_id_size = defaults.actor_id_size;
  if (options_.max_attempts < 1) options_.max_attempts = defaults.max_attempts;
  if (options_.delete_chunk_keys == 0) options_.delete_chunk_keys = defaults.delete_chunk_keys;
}

Bytes PageStore::HeadKey(ByteView actor) { return ActorKey(actor, kHeadTag); }
Bytes PageStore::GuardKey(ByteView actor) { return ActorKey(actor, kGuardTag); }

Bytes PageStore::PageKey(ByteView actor, uint32_t pgno) {
  Bytes key = ActorKey(actor, kPageTag, 4);
  AppendU32Be(key, pgno);
  return key;
}

KeyRange PageStore::DatabaseRange(ByteView actor) {
  return KeyRange::Between(ActorKey(actor, kHeadTag), ActorKey(actor, kDatabaseEndTag));
}

Bytes PageStore::EncodeHead(const SqliteHead& head) { return protocol::engine::WriteRecord(head); }

Result<SqliteHead> PageStore::DecodeHead(ByteView bytes) {
  auto head = protocol::engine::ReadRecord<SqliteHead>(bytes);
  if (!head.has_value()) {
    return Unexpected{StorageError(kCorruption, "sqlite head record: " + head.error().message())};
  }
  return head;
}

Status PageStore::CheckActor(ByteView actor) const {
  if (actor.size() != options_.actor_id_size) {
    std::string m = "invalid sqlite actor id: expected ";
    m += std::to_string(options_.actor_id_size);
    m += " bytes, got ";
    m += std::to_string(actor.size());
    return Unexpected{SqliteError(kSqliteInvalidActorId, std::move(m))};
  }
  return OkStatus();
}

Result<std::optional<SqliteHead>> PageStore::ReadHead(ByteView actor) {
  KEEL_RETURN_IF_ERROR(CheckActor(actor));
  return ReadHeadFrom(store_, actor);
}

Result<std::vector<Page>> PageStore::GetPages(ByteView actor, const std::vector<uint32_t>& pgnos,
                                              std::optional<uint64_t> expected_generation,
                                              std::optional<uint64_t> expected_head_txid) {
  KEEL_RETURN_IF_ERROR(CheckActor(actor));
  for (uint32_t pgno : pgnos) {
    if (pgno == 0) {
      return Unexpected{SqliteError(kSqliteInvalidPage, "get_pages does not accept page 0")};
    }
  }
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<KvSnapshot> snapshot, store_.NewSnapshot());
  KEEL_ASSIGN_OR_RETURN(std::optional<SqliteHead> head, ReadHeadFrom(*snapshot, actor));
  KEEL_RETURN_IF_ERROR(CheckFences(head, expected_generation, std::nullopt));
  if (!Committed(head)) {
    return Unexpected{SqliteError(kSqliteNotFound, std::string(kSqliteDatabaseNotFoundMessage))};
  }
  KEEL_RETURN_IF_ERROR(CheckFences(head, std::nullopt, expected_head_txid));

  std::vector<Page> pages;
  pages.reserve(pgnos.size());
  for (uint32_t pgno : pgnos) {
    Page page;
    page.pgno = pgno;
    if (pgno <= head->db_size_pages) {
      KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> bytes, snapshot->Get(PageKey(actor, pgno)));
      if (bytes.has_value()) {
        if (bytes->size() != options_.page_size) {
          return Unexpected{CorruptPage(pgno, bytes->size(), options_.page_size)};
        }
        page.bytes = std::move(bytes);
      } else if (options_.zero_fill_unwritten) {
        page.bytes = Bytes(options_.page_size, 0);
      }
    }
    pages.push_back(std::move(page));
  }
  return pages;
}

Result<CommitOutcome> PageStore::Commit(ByteView actor, const CommitRequest& request) {
  KEEL_RETURN_IF_ERROR(CheckActor(actor));
  // Validation: nothing is written when any of it fails.
  size_t total_bytes = 0;
  std::unordered_set<uint32_t> seen;
  seen.reserve(request.dirty_pages.size());
  for (const DirtyPage& page : request.dirty_pages) {
    if (page.pgno == 0) {
      return Unexpected{SqliteError(kSqliteInvalidPage, "sqlite commit does not accept page 0")};
    }
    if (page.bytes.size() != options_.page_size) {
      std::string m = "sqlite commit page ";
      m += std::to_string(page.pgno);
      m += " had ";
      m += std::to_string(page.bytes.size());
      m += " bytes, expected ";
      m += std::to_string(options_.page_size);
      return Unexpected{SqliteError(kSqliteInvalidPage, std::move(m))};
    }
    if (!seen.insert(page.pgno).second) {
      std::string m = "sqlite commit duplicated page ";
      m += std::to_string(page.pgno);
      m += " in a single request";
      return Unexpected{SqliteError(kSqliteInvalidPage, std::move(m))};
    }
    total_bytes += page.bytes.size();
  }
  if (total_bytes > options_.max_commit_bytes) {
    return Unexpected{CommitTooLargeError(total_bytes, options_.max_commit_bytes)};
  }

  const uint64_t page_size = options_.page_size;
  auto body = [&](KvTxn& txn) -> Result<CommitOutcome> {
    // The guard: a destroy rewrites the actor record, so a racing commit conflicts.
    KEEL_RETURN_IF_ERROR(txn.Get(GuardKey(actor)));
    KEEL_ASSIGN_OR_RETURN(std::optional<SqliteHead> head, ReadHeadFrom(txn, actor));
    KEEL_RETURN_IF_ERROR(
        CheckFences(head, request.expected_generation, request.expected_head_txid));

    const bool creating = !Committed(head);
    SqliteHead next = head.value_or(SqliteHead{});
    if (next.head_txid == std::numeric_limits<uint64_t>::max()) {
      return Unexpected{StorageError(kInternal, "sqlite head txid would overflow")};
    }
    if (creating) {
      // Orphan pages of an interrupted Delete must not show through the new database.
      KEEL_RETURN_IF_ERROR(txn.DeleteRange(KeyRange::Prefix(ActorKey(actor, kPageTag))));
      next.stored_bytes = 0;
      next.db_size_pages = 0;
    }
    const uint32_t old_size = next.db_size_pages;
    uint64_t stored = next.stored_bytes;

    for (const DirtyPage& page : request.dirty_pages) {
      if (page.pgno > request.db_size_pages) continue;  // would be truncated anyway
      Bytes key = PageKey(actor, page.pgno);
      if (creating) {
        stored += page_size;
      } else {
        KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> existing, txn.Get(key));
        if (!existing.has_value()) stored += page_size;
      }
      KEEL_RETURN_IF_ERROR(txn.Put(key, page.bytes));
    }

    if (!creating && request.db_size_pages < old_size) {
      // Truncate: delete stored pages above the new size, counting them for stored_bytes.
      Bytes begin = PageKey(actor, request.db_size_pages + 1);  // db_size_pages < old <= max
      std::optional<Bytes> end = PrefixEnd(ActorKey(actor, kPageTag));
      while (true) {
        KeyRange range{begin, end};
        KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> doomed,
                              txn.Scan(range, ScanOptions{kTruncateScanLimit, false}));
        for (const KeyValue& kv : doomed) {
          KEEL_RETURN_IF_ERROR(txn.Delete(kv.key));
          stored = stored >= page_size ? stored - page_size : 0;
        }
        if (doomed.size() < kTruncateScanLimit) break;
        begin = KeyAfter(doomed.back().key);
      }
    }

    next.head_txid += 1;
    next.db_size_pages = request.db_size_pages;
    next.last_commit_ms = request.now_ms;
    next.stored_bytes = stored;
    KEEL_RETURN_IF_ERROR(txn.Put(HeadKey(actor), EncodeHead(next)));
    return CommitOutcome{next.head_txid};
  };
  return RunTransaction(store_, body, options_.max_attempts,
                        CommitOptions{request.sync.value_or(options_.sync)});
}

Status PageStore::SetGeneration(ByteView actor, uint64_t generation) {
  KEEL_RETURN_IF_ERROR(CheckActor(actor));
  auto body = [&](KvTxn& txn) -> Status {
    KEEL_ASSIGN_OR_RETURN(std::optional<SqliteHead> head, ReadHeadFrom(txn, actor));
    SqliteHead next = head.value_or(SqliteHead{});
    if (next.generation.has_value()) {
      if (generation < *next.generation) {
        std::string m = "sqlite generation ";
        m += std::to_string(generation);
        m += " is older than the recorded generation ";
        m += std::to_string(*next.generation);
        return Unexpected{FenceError(std::move(m))};
      }
      if (generation == *next.generation) return OkStatus();
    }
    next.generation = generation;
    return txn.Put(HeadKey(actor), EncodeHead(next));
  };
  return RunTransaction(store_, body, options_.max_attempts, CommitOptions{options_.sync});
}

Status PageStore::Delete(ByteView actor) {
  for (;;) {
    KEEL_ASSIGN_OR_RETURN(bool done, DeleteSome(actor));
    if (done) return OkStatus();
  }
}

Result<bool> PageStore::DeleteSome(ByteView actor) {
  KEEL_RETURN_IF_ERROR(CheckActor(actor));
  const KeyRange range = DatabaseRange(actor);
  const size_t chunk = options_.delete_chunk_keys;
  auto body = [&](KvTxn& txn) -> Result<size_t> {
    KEEL_ASSIGN_OR_RETURN(std::vector<KeyValue> keys, txn.Scan(range, ScanOptions{chunk, false}));
    for (const KeyValue& kv : keys) KEEL_RETURN_IF_ERROR(txn.Delete(kv.key));
    return keys.size();
  };
  KEEL_ASSIGN_OR_RETURN(size_t deleted, RunTransaction(store_, body, options_.max_attempts,
                                                       CommitOptions{options_.sync}));
  return deleted < chunk;
}

}  // namespace keel::storage
