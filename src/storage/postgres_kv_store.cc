#include "storage/postgres_kv_store.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/hash.h"

namespace keel::storage {
namespace internal {
namespace {

// ---- libpq handles

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// One server connection. Used by one thread at a time (a pool lease, or the session of a
// snapshot or transaction).
struct Conn {
  std::unique_ptr<PGconn, PgConnDeleter> pg;
  // The connection failed, or its protocol state is unknown: it is closed, never reused.
  bool broken = false;
  // The statements prepared on this connection: SQL text -> name. The store's statements
  // are a few dozen fixed texts; parsing and planning the commit's every time cost more
  // than its execution.
  std::unordered_map<std::string, std::string> prepared;
};

// Statements with parameters are prepared per connection, up to this many (a safety bound:
// the store's texts are fewer); beyond it they are sent unnamed, as before preparing.
constexpr size_t kMaxPreparedPerConnection = 64;

// Type OIDs of the binary parameters (pg_type.dat; fixed across versions).
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kBoolArrayOid = 1000;
constexpr Oid kByteaArrayOid = 1001;
constexpr Oid kInt8ArrayOid = 1016;

// Advisory lock spaces, as the first of two int4 keys (a space of its own: locks on one
// int8 key, which the per-key commit locks use, never meet two-int4 locks).
constexpr int32_t kTableLockSpace = 0x4b454c54;   // "KELT": held by the store that owns a table
constexpr int32_t kCreateLockSpace = 0x4b454c43;  // "KELC": serialises CREATE TABLE of a name
// "KELF": the high half of a table's fence lock, an int8 one (FenceLockId), which every
// commit takes shared before its key locks and a claim takes exclusive.
constexpr int32_t kFenceLockSpace = 0x4b454c46;

// The table of owner epochs, one row per keel table in the database: a store that takes a
// table bumps its row, and every commit checks the row still holds its own epoch.
constexpr std::string_view kOwnersTable = "keel_owners";

// ---- binary parameters

void AppendInt32(std::string& out, int32_t v) {
  uint32_t u = static_cast<uint32_t>(v);
  const char bytes[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16),
                         static_cast<char>(u >> 8), static_cast<char>(u)};
  out.append(bytes, 4);
}
void AppendInt64(std::string& out, int64_t v) {
  uint64_t u = static_cast<uint64_t>(v);
  AppendInt32(out, static_cast<int32_t>(u >> 32));
  AppendInt32(out, static_cast<int32_t>(u & 0xffffffffu));
}
int64_t ReadInt64(const char* p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; ++i) u = (u << 8) | static_cast<uint8_t>(p[i]);
  return static_cast<int64_t>(u);
}

// A one-dimensional array in PostgreSQL's binary format (array_send): header, then each
// element as a length (-1: NULL) and its bytes. `element(i, out)` appends element i's
// bytes and returns false for NULL.
template <typename ElementFn>
std::string EncodeArray(Oid element_type, size_t count, bool has_nulls, ElementFn element) {
  std::string out;
  AppendInt32(out, count == 0 ? 0 : 1);
  AppendInt32(out, has_nulls ? 1 : 0);
  AppendInt32(out, static_cast<int32_t>(element_type));
  if (count == 0) return out;
  AppendInt32(out, static_cast<int32_t>(count));
  AppendInt32(out, 1);  // lower bound
  std::string item;
  for (size_t i = 0; i < count; ++i) {
    item.clear();
    if (!element(i, item)) {
      AppendInt32(out, -1);
      continue;
    }
    AppendInt32(out, static_cast<int32_t>(item.size()));
    out += item;
  }
  return out;
}

std::string ByteaArray(const std::vector<ByteView>& items) {
  return EncodeArray(kByteaOid, items.size(), false, [&](size_t i, std::string& out) {
    out.append(reinterpret_cast<const char*>(items[i].data()), items[i].size());
    return true;
  });
}
std::string Int8Array(const std::vector<std::optional<int64_t>>& items) {
  bool nulls = std::any_of(items.begin(), items.end(), [](const auto& x) { return !x; });
  return EncodeArray(kInt8Oid, items.size(), nulls, [&](size_t i, std::string& out) {
    if (!items[i].has_value()) return false;
    AppendInt64(out, *items[i]);
    return true;
  });
}
std::string Int8Array(const std::vector<int64_t>& items) {
  return EncodeArray(kInt8Oid, items.size(), false, [&](size_t i, std::string& out) {
    AppendInt64(out, items[i]);
    return true;
  });
}
std::string BoolArray(const std::vector<bool>& items) {
  return EncodeArray(kBoolOid, items.size(), false, [&](size_t i, std::string& out) {
    out.push_back(items[i] ? 1 : 0);
    return true;
  });
}

// The parameters of one statement, all sent in binary. Views passed to AddBytea must
// outlive the statement's execution; arrays are owned.
class Params {
 public:
  Params() = default;
  Params(Params&&) = default;
  Params& operator=(Params&&) = default;

  void AddBytea(ByteView value) {
    // libpq reads a null pointer as SQL NULL: an empty value points at a static byte.
    static const char kEmpty = 0;
    Add(value.empty() ? &kEmpty : reinterpret_cast<const char*>(value.data()), value.size(),
        kByteaOid);
  }
  void AddInt8(int64_t value) {
    std::string out;
    AppendInt64(out, value);
    AddOwned(std::move(out), kInt8Oid);
  }
  void AddOwned(std::string data, Oid type) {
    owned_.push_back(std::move(data));
    Add(owned_.back().data(), owned_.back().size(), type);
  }

  int size() const { return static_cast<int>(values_.size()); }
  const Oid* types() const { return types_.data(); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  void Add(const char* data, size_t size, Oid type) {
    types_.push_back(type);
    values_.push_back(data);
    lengths_.push_back(static_cast<int>(size));
    formats_.push_back(1);
  }

  std::deque<std::string> owned_;  // a deque: pointers into it stay valid as it grows
  std::vector<Oid> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

struct Statement {
  std::string sql;
  Params params;
};

// ---- errors

Error ClosedError() { return StorageError(kClosed, "the store is closed"); }
Error FinishedError() {
  return StorageError(kFailedPrecondition, "the transaction already committed or rolled back");
}

std::string KeyForMessage(ByteView key) {
  constexpr size_t kMaxBytes = 32;
  std::string hex = ToHex(key.first(std::min(key.size(), kMaxBytes)));
  return key.size() > kMaxBytes ? hex + "..." : hex;
}

// libpq's messages end with a newline and may span lines; errors are one line.
std::string OneLine(const char* text) {
  std::string out = text != nullptr ? text : "";
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
  for (char& c : out) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return out;
}

// The storage error for a failed statement (`result` may be null: the send failed).
// A lost connection is `io` and marks `conn` broken; serialization failures and deadlocks
// are `conflict`; everything else the server says is `internal`.
Error StatementError(Conn& conn, const PGresult* result, std::string_view what) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string sqlstate = state != nullptr ? state : "";
  std::string message = OneLine(result != nullptr ? PQresultErrorMessage(result) : "");
  if (message.empty()) message = OneLine(PQerrorMessage(conn.pg.get()));
  // Class 08 is "connection exception"; 57P01-57P03: the server is shutting down or
  // terminated this backend (pg_terminate_backend).
  bool lost = PQstatus(conn.pg.get()) != CONNECTION_OK || sqlstate.starts_with("08") ||
              sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03";
  std::string prefix(what);
  if (lost) {
    conn.broken = true;
    return StorageError(kIo, prefix + ": lost the connection to the server: " + message);
  }
  if (sqlstate == "40001" || sqlstate == "40P01") {
    return StorageError(kConflict, prefix + ": " + message);
  }
  if (!sqlstate.empty()) message += " (SQLSTATE " + sqlstate + ")";
  return StorageError(kInternal, prefix + ": " + message);
}

bool ResultOk(const PGresult* result) {
  ExecStatusType status = PQresultStatus(result);
  return status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
}

// The name under which `sql` is prepared on `conn`, preparing it first (one round trip, once
// per connection and text); nullptr when it goes unnamed (no parameters: a transaction
// control statement, cheap to parse; or the connection holds enough). REQUIRES: not in
// pipeline mode.
Result<const std::string*> PreparedName(Conn& conn, const std::string& sql, const Params& params,
                                        std::string_view what) {
  if (params.size() == 0) return nullptr;
  if (auto it = conn.prepared.find(sql); it != conn.prepared.end()) return &it->second;
  if (conn.prepared.size() >= kMaxPreparedPerConnection) return nullptr;
  std::string name = "keel_" + std::to_string(conn.prepared.size());
  PgResult result(
      PQprepare(conn.pg.get(), name.c_str(), sql.c_str(), params.size(), params.types()));
  if (result == nullptr || !ResultOk(result.get())) {
    return StatementError(conn, result.get(), what);
  }
  return &conn.prepared.emplace(sql, std::move(name)).first->second;
}

// One statement in one round trip, results in binary.
Result<PgResult> Exec(Conn& conn, const std::string& sql, const Params& params,
                      std::string_view what) {
  if (conn.broken) return StorageError(kIo, std::string(what) + ": the connection was lost");
  KEEL_ASSIGN_OR_RETURN(const std::string* name, PreparedName(conn, sql, params, what));
  PgResult result(name != nullptr
                      ? PQexecPrepared(conn.pg.get(), name->c_str(), params.size(), params.values(),
                                       params.lengths(), params.formats(), 1)
                      : PQexecParams(conn.pg.get(), sql.c_str(), params.size(), params.types(),
                                     params.values(), params.lengths(), params.formats(), 1));
  if (result == nullptr || !ResultOk(result.get())) {
    return StatementError(conn, result.get(), what);
  }
  return result;
}

// Several statements (simple-query text, no parameters) in one round trip; the result of
// the last one.
Result<PgResult> ExecText(Conn& conn, const char* sql, std::string_view what) {
  if (conn.broken) return StorageError(kIo, std::string(what) + ": the connection was lost");
  PgResult result(PQexec(conn.pg.get(), sql));
  if (result == nullptr || !ResultOk(result.get())) {
    return StatementError(conn, result.get(), what);
  }
  return result;
}

// Sends `statements` as one pipeline (one round trip) and returns their results, or the
// first error (the server skips what follows an error up to the pipeline's end).
Result<std::vector<PgResult>> ExecPipeline(Conn& conn, const std::vector<Statement>& statements,
                                           std::string_view what) {
  if (conn.broken) return StorageError(kIo, std::string(what) + ": the connection was lost");
  PGconn* pg = conn.pg.get();
  auto send_failed = [&]() -> Error {
    Error error = StatementError(conn, nullptr, what);
    // Whatever was sent may be half a pipeline: never reuse the connection.
    conn.broken = true;
    return error;
  };
  std::vector<const std::string*> names;
  names.reserve(statements.size());
  for (const Statement& s : statements) {
    KEEL_ASSIGN_OR_RETURN(const std::string* name, PreparedName(conn, s.sql, s.params, what));
    names.push_back(name);
  }
  if (PQenterPipelineMode(pg) != 1) return send_failed();
  for (size_t i = 0; i < statements.size(); ++i) {
    const Statement& s = statements[i];
    const int sent =
        names[i] != nullptr
            ? PQsendQueryPrepared(pg, names[i]->c_str(), s.params.size(), s.params.values(),
                                  s.params.lengths(), s.params.formats(), 1)
            : PQsendQueryParams(pg, s.sql.c_str(), s.params.size(), s.params.types(),
                                s.params.values(), s.params.lengths(), s.params.formats(), 1);
    if (sent != 1) return send_failed();
  }
  if (PQpipelineSync(pg) != 1) return send_failed();

  std::vector<PgResult> results;
  std::optional<Error> first_error;
  for (size_t i = 0; i < statements.size(); ++i) {
    PgResult result(PQgetResult(pg));
    if (result == nullptr) {
      conn.broken = true;
      return first_error.value_or(StatementError(conn, nullptr, what));
    }
    ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_PIPELINE_ABORTED && !ResultOk(result.get()) && !first_error) {
      first_error = StatementError(conn, result.get(), what);
    }
    if (conn.broken) return *first_error;
    // Each statement's results end with a null.
    while (PGresult* extra = PQgetResult(pg)) PQclear(extra);
    results.push_back(std::move(result));
  }
  PgResult sync(PQgetResult(pg));
  if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC ||
      PQexitPipelineMode(pg) != 1) {
    Error error = first_error.value_or(StatementError(conn, sync.get(), what));
    conn.broken = true;
    return error;
  }
  if (first_error) return *first_error;
  return results;
}

// Ends whatever transaction `conn` is in, so it can go back to the pool. False when the
// connection is not reusable.
bool MakeIdle(Conn& conn) {
  if (conn.broken || PQstatus(conn.pg.get()) != CONNECTION_OK) return false;
  if (PQpipelineStatus(conn.pg.get()) != PQ_PIPELINE_OFF) return false;
  if (PQtransactionStatus(conn.pg.get()) == PQTRANS_IDLE) return true;
  if (PQtransactionStatus(conn.pg.get()) == PQTRANS_ACTIVE) return false;
  PgResult result(PQexec(conn.pg.get(), "ROLLBACK"));
  return result != nullptr && ResultOk(result.get()) &&
         PQtransactionStatus(conn.pg.get()) == PQTRANS_IDLE;
}

// False when an idle connection has obviously gone: the server sends nothing to an idle
// session that does not LISTEN, so readable data is a termination notice or EOF (the
// server restarted, or pg_terminate_backend). Costs one poll(2), no round trip.
bool LooksAlive(Conn& conn) {
  if (conn.broken || PQstatus(conn.pg.get()) != CONNECTION_OK) return false;
  pollfd fd{.fd = PQsocket(conn.pg.get()), .events = POLLIN, .revents = 0};
  if (fd.fd < 0) return false;
  return ::poll(&fd, 1, 0) == 0;
}

void IgnoreNotice(void*, const char*) {}

// ---- keys and lock hashes

// A 64-bit hash of (table, key) naming the key's advisory lock. Distinct keys may share a
// lock (a collision only makes two commits wait for each other).
int64_t KeyLockId(uint32_t table_oid, ByteView key) {
  return static_cast<int64_t>(HashBytes(key, table_oid));
}

using WriteMap = std::map<Bytes, std::optional<Bytes>, KeyLess>;

// One row of a range read: key, value (when asked for) and xmin (when asked for).
struct Row {
  Bytes key;
  Bytes value;
  int64_t xmin = 0;
};

Bytes CellBytes(const PGresult* result, int row, int column) {
  const char* p = PQgetvalue(result, row, column);
  int n = PQgetlength(result, row, column);
  return Bytes(reinterpret_cast<const uint8_t*>(p), reinterpret_cast<const uint8_t*>(p) + n);
}

bool ValidTableName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

}  // namespace

// The session of a snapshot or transaction: its connection, in its REPEATABLE READ
// transaction. `mu` is held for each call on it, so Close (on another thread) waits for a
// call in flight and then closes the connection.
struct PgSession {
  std::mutex mu;
  std::unique_ptr<Conn> conn;  // null once closed by Close or finished
};

// Everything the store, its snapshots and transactions share.
struct PostgresState {
  std::string conninfo;       // may hold a password: never in a message (use `target`)
  std::string target;         // Redacted(conninfo)
  std::string table;          // the table's name, quoted
  std::string table_literal;  // its quoted name as an SQL string literal, for to_regclass
  size_t max_idle = 8;
  uint32_t table_oid = 0;

  // Statement texts, built once.
  std::string get_sql;      // k -> v
  std::string txn_get_sql;  // k -> v, xmin
  std::string states_sql;   // bytea[] -> (k, xmin) of those present
  std::string locks_sql;    // (int8[], bool[]): advisory xact locks, in array order
  std::string apply_sql;    // check owner, keys/xmins; deletes, puts (see AppendCommit)
  std::string owner_sql;    // the table's owner epoch
  std::string name_literal;  // the table's unquoted name as an SQL string literal

  // This store's epoch in keel_owners (set by Open). Once another store has claimed the
  // table, `lost` is set for good and every write fails with LostError().
  int64_t epoch = 0;
  std::atomic<bool> lost{false};
  std::function<void(const Error&)> on_lost;
  std::once_flag lost_once;
  std::string lost_reason;  // written once, before `lost` is set

  std::atomic<bool> closed{false};
  std::mutex mu;  // guards what follows
  std::vector<std::unique_ptr<Conn>> idle;
  std::set<std::shared_ptr<PgSession>> sessions;

  std::mutex lock_mu;               // guards lock_conn
  std::unique_ptr<Conn> lock_conn;  // holds the table's session advisory lock

  Result<std::unique_ptr<Conn>> Connect() {
    auto conn = std::make_unique<Conn>();
    // Named "keel" in pg_stat_activity unless the URL names it otherwise, so an operator
    // can find (and end) the sessions of an engine that is gone.
    const char* const keywords[] = {"dbname", "fallback_application_name", nullptr};
    const char* const values[] = {conninfo.c_str(), "keel", nullptr};
    conn->pg.reset(PQconnectdbParams(keywords, values, /*expand_dbname=*/1));
    if (conn->pg == nullptr) {
      return StorageError(kIo, "cannot connect to PostgreSQL at " + target + ": out of memory");
    }
    if (PQstatus(conn->pg.get()) != CONNECTION_OK) {
      return StorageError(kIo, "cannot connect to PostgreSQL at " + target + ": " +
                                   OneLine(PQerrorMessage(conn->pg.get())));
    }
    // Notices (e.g. "relation already exists, skipping") would go to stderr.
    PQsetNoticeProcessor(conn->pg.get(), IgnoreNotice, nullptr);
    // A synced commit must reach the disk even where the server's default is `off`; other
    // settings (remote_write, remote_apply, local) are at least that and kept.
    KEEL_RETURN_IF_ERROR(ExecText(*conn,
                                  "SELECT set_config('synchronous_commit', 'on', false) "
                                  "WHERE current_setting('synchronous_commit') = 'off'",
                                  "connection setup"));
    return conn;
  }

  // A connection for one call: an idle one that still looks alive, or a new one.
  Result<std::unique_ptr<Conn>> Acquire() {
    for (;;) {
      std::unique_ptr<Conn> conn;
      {
        std::lock_guard lock(mu);
        if (closed) return ClosedError();
        if (idle.empty()) break;
        conn = std::move(idle.back());
        idle.pop_back();
      }
      if (LooksAlive(*conn)) return conn;
    }
    return Connect();
  }

  void Release(std::unique_ptr<Conn> conn) {
    if (conn == nullptr || !MakeIdle(*conn)) return;
    std::lock_guard lock(mu);
    if (closed || idle.size() >= max_idle) return;  // closed when `conn` goes out of scope
    idle.push_back(std::move(conn));
  }

  // Fails unless this store still holds the table's lock. The lock lives as long as its
  // connection; if the server dropped that (a restart), the lock is taken again when no
  // other store took it meanwhile — neither holds it now nor claimed the table since (the
  // owner epoch is still ours).
  Status CheckTableLock() {
    if (lost) return LostError();
    std::lock_guard lock(lock_mu);
    if (lock_conn != nullptr && LooksAlive(*lock_conn)) return OkStatus();
    lock_conn.reset();
    KEEL_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, Connect());
    KEEL_ASSIGN_OR_RETURN(PgResult result, TryTableLock(*conn));
    if (!GotTableLock(result.get())) return Lost("another store holds its lock now");
    Params params;
    KEEL_ASSIGN_OR_RETURN(PgResult owner, Exec(*conn, owner_sql, params, "reading the owner"));
    if (PQntuples(owner.get()) != 1 || ReadInt64(PQgetvalue(owner.get(), 0, 0)) != epoch) {
      // Ended rather than kept: the other store may be gone, and the next one to open the
      // table must not wait for a lock this store will never use.
      (void)Exec(*conn, UnlockSql(), LockParams(), "unlocking the table");
      return Lost("another store opened it and may have written to it");
    }
    lock_conn = std::move(conn);
    return OkStatus();
  }

  // Marks the table lost for good (the first time: notes `how` and tells on_lost) and
  // returns the error every write returns from now on.
  Error Lost(std::string_view how) {
    std::call_once(lost_once, [&] {
      lost_reason = how;
      lost = true;
      if (on_lost) on_lost(LostError());
    });
    return LostError();
  }
  Error LostError() const {
    return StorageError(kFailedPrecondition, "table " + table + " at " + target +
                                                 " is no longer this store's: " + lost_reason +
                                                 "; it writes nothing more");
  }

  Params LockParams() const {
    Params params;
    params.AddInt8(table_oid);
    return params;
  }
  // The fence lock's id: keel's space in the high half, the table's oid in the low one (a
  // key lock's 64-bit hash could equal it, which would only make the two wait for each
  // other).
  int64_t FenceLockId() const {
    return static_cast<int64_t>((uint64_t{static_cast<uint32_t>(kFenceLockSpace)} << 32) |
                                table_oid);
  }
  static std::string UnlockSql() {
    return "SELECT pg_advisory_unlock(" + std::to_string(kTableLockSpace) +
           ", ($1::int8 - 2147483648)::int4)";
  }

  Result<PgResult> TryTableLock(Conn& conn) {
    return Exec(conn,
                "SELECT pg_try_advisory_lock(" + std::to_string(kTableLockSpace) +
                    ", ($1::int8 - 2147483648)::int4)",
                LockParams(), "locking the table");
  }

  // Claims the table for this store (it holds the table's lock): bumps the owner epoch
  // under the exclusive fence lock, so a commit of the last owner still in flight finishes
  // before (and this store reads what it wrote), and every later one finds the epoch
  // changed and applies nothing.
  Status Claim(Conn& conn) {
    std::vector<Statement> statements;
    statements.push_back({"BEGIN", {}});
    Statement fence{"SELECT pg_advisory_xact_lock($1::int8)", {}};
    fence.params.AddInt8(FenceLockId());
    statements.push_back(std::move(fence));
    statements.push_back({"INSERT INTO " + std::string(kOwnersTable) + " (tbl, epoch) VALUES (" +
                              name_literal + ", 1) ON CONFLICT (tbl) DO UPDATE SET epoch = " +
                              std::string(kOwnersTable) + ".epoch + 1 RETURNING epoch",
                          {}});
    statements.push_back({"COMMIT", {}});
    KEEL_ASSIGN_OR_RETURN(std::vector<PgResult> results,
                          ExecPipeline(conn, statements, "claiming the table"));
    const PGresult* claimed = results[2].get();
    if (PQntuples(claimed) != 1) return StorageError(kInternal, "claiming the table: no epoch");
    epoch = ReadInt64(PQgetvalue(claimed, 0, 0));
    return OkStatus();
  }
  static bool GotTableLock(const PGresult* result) {
    return PQntuples(result) == 1 && PQgetlength(result, 0, 0) == 1 &&
           PQgetvalue(result, 0, 0)[0] != 0;
  }

  Result<std::shared_ptr<PgSession>> Register(std::unique_ptr<Conn> conn) {
    auto session = std::make_shared<PgSession>();
    session->conn = std::move(conn);
    std::lock_guard lock(mu);
    if (closed) return ClosedError();  // the connection closes with `session`
    sessions.insert(session);
    return session;
  }

  // Ends the session: its transaction is rolled back and the connection pooled.
  void Finish(const std::shared_ptr<PgSession>& session) {
    std::unique_ptr<Conn> conn;
    {
      std::lock_guard lock(session->mu);
      conn = std::move(session->conn);
    }
    {
      std::lock_guard lock(mu);
      sessions.erase(session);
    }
    Release(std::move(conn));
  }

  // The value of `key` in what `conn` sees (the latest state, or its session's snapshot).
  Result<std::optional<Bytes>> GetValue(Conn& conn, ByteView key) {
    // Such a key cannot be stored (writes refuse it).
    if (key.size() > PostgresKvStore::kMaxKeyBytes) return std::optional<Bytes>();
    Params params;
    params.AddBytea(key);
    KEEL_ASSIGN_OR_RETURN(PgResult result, Exec(conn, get_sql, params, "get"));
    if (PQntuples(result.get()) == 0) return std::optional<Bytes>();
    return std::optional<Bytes>(CellBytes(result.get(), 0, 0));
  }

  // The entries of `range` in what `conn` sees, as KvReader::Scan returns them.
  Result<std::vector<KeyValue>> ScanValues(Conn& conn, const KeyRange& range,
                                           const ScanOptions& options) {
    std::vector<KeyValue> out;
    if (options.limit == 0 || range.empty()) return out;
    KEEL_ASSIGN_OR_RETURN(std::vector<Row> rows,
                          ScanRows(conn, range, options.reverse, options.limit,
                                   /*values=*/true, /*xmins=*/false));
    out.reserve(rows.size());
    for (Row& row : rows) out.push_back({std::move(row.key), std::move(row.value)});
    return out;
  }

  // A range read: rows of `range` in scan order, at most `limit`, with values and xmins
  // when asked for.
  Result<std::vector<Row>> ScanRows(Conn& conn, const KeyRange& range, bool reverse, size_t limit,
                                    bool values, bool xmins) {
    std::string sql = "SELECT k";
    if (values) sql += ", v";
    if (xmins) sql += ", xmin::text::int8";
    sql += " FROM " + table + " WHERE k >= $1";
    Params params;
    params.AddBytea(range.begin);
    if (range.end.has_value()) {
      sql += " AND k < $2";
      params.AddBytea(*range.end);
    }
    sql += reverse ? " ORDER BY k DESC" : " ORDER BY k";
    if (limit != kNoLimit) {
      params.AddInt8(static_cast<int64_t>(std::min<size_t>(limit, INT64_MAX)));
      sql += " LIMIT $" + std::to_string(params.size());
    }
    KEEL_ASSIGN_OR_RETURN(PgResult result, Exec(conn, sql, params, "scan"));
    std::vector<Row> rows(PQntuples(result.get()));
    for (int i = 0; i < static_cast<int>(rows.size()); ++i) {
      rows[i].key = CellBytes(result.get(), i, 0);
      int column = 1;
      if (values) rows[i].value = CellBytes(result.get(), i, column++);
      if (xmins) rows[i].xmin = ReadInt64(PQgetvalue(result.get(), i, column));
    }
    return rows;
  }

  // The statements of one commit, after any statements already in `out`: a READ COMMITTED
  // transaction that takes the shared fence lock and the keys' advisory locks (sorted by
  // lock id, exclusive for written keys), checks that the table is still this store's (its
  // owner epoch) and that each key of `expected` still has the stated xmin (nullopt:
  // absent), and only then applies `writes`. The next-to-last statement's result is read
  // by Applied.
  using Expected = std::vector<std::pair<ByteView, std::optional<int64_t>>>;
  void AppendCommit(const Expected& expected, const WriteMap& writes, const CommitOptions& options,
                    std::vector<Statement>& out) const {
    std::map<int64_t, bool> locks;  // lock id -> exclusive
    for (const auto& [key, xmin] : expected) locks.emplace(KeyLockId(table_oid, key), false);
    for (const auto& [key, value] : writes) locks[KeyLockId(table_oid, key)] = true;
    // The fence first: a committer waiting for it holds no key lock, so a claim waiting
    // for the committers that hold it cannot close a cycle.
    std::vector<int64_t> lock_ids = {FenceLockId()};
    std::vector<bool> exclusive = {false};
    for (const auto& [id, x] : locks) {
      lock_ids.push_back(id);
      exclusive.push_back(x);
    }
    std::vector<ByteView> check_keys, delete_keys, put_keys, put_values;
    std::vector<std::optional<int64_t>> check_xmins;
    for (const auto& [key, xmin] : expected) {
      check_keys.push_back(key);
      check_xmins.push_back(xmin);
    }
    for (const auto& [key, value] : writes) {
      if (value.has_value()) {
        put_keys.push_back(key);
        put_values.push_back(*value);
      } else {
        delete_keys.push_back(key);
      }
    }
    out.push_back({"BEGIN ISOLATION LEVEL READ COMMITTED", {}});
    if (!options.sync) out.push_back({"SET LOCAL synchronous_commit = off", {}});
    Statement locks_statement{locks_sql, {}};
    locks_statement.params.AddOwned(Int8Array(lock_ids), kInt8ArrayOid);
    locks_statement.params.AddOwned(BoolArray(exclusive), kBoolArrayOid);
    out.push_back(std::move(locks_statement));
    Statement apply{apply_sql, {}};
    apply.params.AddOwned(ByteaArray(check_keys), kByteaArrayOid);
    apply.params.AddOwned(Int8Array(check_xmins), kInt8ArrayOid);
    apply.params.AddOwned(ByteaArray(delete_keys), kByteaArrayOid);
    apply.params.AddOwned(ByteaArray(put_keys), kByteaArrayOid);
    apply.params.AddOwned(ByteaArray(put_values), kByteaArrayOid);
    apply.params.AddInt8(epoch);
    out.push_back(std::move(apply));
    out.push_back({"COMMIT", {}});
  }
};

}  // namespace internal

namespace {

using internal::Conn;
using internal::PgResult;
using internal::PgSession;
using internal::PostgresState;
using internal::Row;
using internal::Statement;
using internal::WriteMap;

// A connection borrowed from the pool for one call; returned when it goes out of scope.
class Lease {
 public:
  explicit Lease(std::shared_ptr<PostgresState> state) : state_(std::move(state)) {}
  ~Lease() { state_->Release(std::move(conn_)); }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  Status Acquire() {
    KEEL_ASSIGN_OR_RETURN(conn_, state_->Acquire());
    return OkStatus();
  }
  Conn& conn() { return *conn_; }

 private:
  std::shared_ptr<PostgresState> state_;
  std::unique_ptr<Conn> conn_;
};

// Starts the REPEATABLE READ transaction of a snapshot or txn. Its snapshot is taken by
// its first statement, so that runs too, in the same round trip.
Result<std::shared_ptr<PgSession>> StartSession(const std::shared_ptr<PostgresState>& state) {
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, state->Acquire());
  auto started = internal::ExecText(
      *conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1", "starting a transaction");
  if (!started.has_value()) {
    state->Release(std::move(conn));
    return Unexpected{std::move(started).error()};
  }
  return state->Register(std::move(conn));
}

// Runs `fn(Conn&)` on the session's connection, unless the store or the session is closed.
template <typename Fn>
auto OnSession(PostgresState& state, PgSession& session, Fn&& fn)
    -> decltype(fn(std::declval<Conn&>())) {
  std::lock_guard lock(session.mu);
  if (state.closed || session.conn == nullptr) return internal::ClosedError();
  return fn(*session.conn);
}

}  // namespace
}  // namespace keel::storage
namespace keel::storage {
namespace {

using internal::ByteaArray;
using internal::CellBytes;
using internal::ClosedError;
using internal::Exec;
using internal::ExecPipeline;
using internal::ExecText;
using internal::FinishedError;
using internal::KeyForMessage;
using internal::Params;
using internal::ReadInt64;

// Buffered writes a txn scan lets hide rows of one page before it fetches the next.
constexpr size_t kMaxShadowPerPage = 1024;

Status KeySizeOk(ByteView key) {
  if (key.size() <= PostgresKvStore::kMaxKeyBytes) return OkStatus();
  return StorageError(kInvalidArgument, "key of " + std::to_string(key.size()) +
                                            " bytes; PostgresKvStore accepts at most " +
                                            std::to_string(PostgresKvStore::kMaxKeyBytes));
}

// From Commit, a lost connection leaves the outcome unknown; say so.
Error CommitError(Error error) {
  if (!error.Is(kErrorGroup, kIo)) return error;
  return StorageError(kIo, error.message() + " (the commit may or may not have been applied)");
}

// The first key that changed, from the commit pipeline's apply statement; nullopt when
// none did.
std::optional<Bytes> ChangedKey(const PGresult* apply) {
  if (PQntuples(apply) != 1 || PQgetisnull(apply, 0, 0)) return std::nullopt;
  return CellBytes(apply, 0, 0);
}

Error ConflictError(ByteView key) {
  return StorageError(kConflict, "key " + KeyForMessage(key) +
                                     " was written by a transaction that committed after "
                                     "this one began");
}

// The outcome of a commit from its apply statement (AppendCommit): applied, a conflict on
// the first key that changed, or nothing applied because another store claimed the table.
Status Applied(PostgresState& state, const PGresult* apply) {
  if (PQntuples(apply) != 1 || PQnfields(apply) != 4) {
    return StorageError(kInternal, "commit: unexpected result shape");
  }
  if (PQgetlength(apply, 0, 3) != 1 || PQgetvalue(apply, 0, 3)[0] == 0) {
    return state.Lost("another store claimed it (its owner epoch moved on)");
  }
  if (auto changed = ChangedKey(apply)) return ConflictError(*changed);
  return OkStatus();
}

class PgSnapshot : public KvSnapshot {
 public:
  PgSnapshot(std::shared_ptr<PostgresState> state, std::shared_ptr<PgSession> session)
      : state_(std::move(state)), session_(std::move(session)) {}
  ~PgSnapshot() override { state_->Finish(session_); }

  // KvSnapshot
  using KvReader::Scan;
  Result<std::optional<Bytes>> Get(ByteView key) override {
    return OnSession(*state_, *session_, [&](Conn& conn) { return state_->GetValue(conn, key); });
  }
  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    return OnSession(*state_, *session_,
                     [&](Conn& conn) { return state_->ScanValues(conn, range, options); });
  }

 private:
  std::shared_ptr<PostgresState> state_;
  std::shared_ptr<PgSession> session_;
};

// A transaction: reads in its session's REPEATABLE READ transaction, writes buffered in
// `writes_`. Every row it reads from the server records its key's state at the snapshot in
// `observed_` (the row's xmin, the id of the transaction that wrote that version; nullopt:
// absent). Commit checks the keys read and written against those states (see AppendCommit).
class PgTxn : public KvTxn {
 public:
  PgTxn(std::shared_ptr<PostgresState> state, std::shared_ptr<PgSession> session)
      : state_(std::move(state)), session_(std::move(session)) {}
  ~PgTxn() override { Rollback(); }

  // KvTxn
  using KvReader::Scan;
  using KvTxn::Commit;

  Result<std::optional<Bytes>> Get(ByteView key) override {
    if (finished_) return FinishedError();
    return OnSession(*state_, *session_, [&](Conn& conn) -> Result<std::optional<Bytes>> {
      if (auto w = writes_.find(key); w != writes_.end()) return w->second;
      // Such a key cannot be stored (Put refuses it), so it cannot change either.
      if (key.size() > PostgresKvStore::kMaxKeyBytes) return std::optional<Bytes>();
      Params params;
      params.AddBytea(key);
      KEEL_ASSIGN_OR_RETURN(PgResult result, Exec(conn, state_->txn_get_sql, params, "get"));
      Bytes k(key.begin(), key.end());
      reads_.insert(k);
      if (PQntuples(result.get()) == 0) {
        observed_.insert_or_assign(std::move(k), std::nullopt);
        return std::optional<Bytes>();
      }
      observed_.insert_or_assign(std::move(k), ReadInt64(PQgetvalue(result.get(), 0, 1)));
      return std::optional<Bytes>(CellBytes(result.get(), 0, 0));
    });
  }

  Result<std::vector<KeyValue>> Scan(const KeyRange& range, const ScanOptions& options) override {
    if (finished_) return FinishedError();
    return OnSession(*state_, *session_, [&](Conn& conn) -> Result<std::vector<KeyValue>> {
      std::vector<KeyValue> out;
      if (options.limit == 0 || range.empty()) return out;
      KeyRange rest = range;  // what is left to read, shrinking page by page
      for (;;) {
        auto lo = writes_.lower_bound(rest.begin);
        auto hi = rest.end.has_value() ? writes_.lower_bound(*rest.end) : writes_.end();
        size_t page = kNoLimit;
        if (options.limit != kNoLimit) {
          // Each buffered write hides at most one row, so a page this long fills the result
          // unless more than kMaxShadowPerPage writes hide rows; then the next page goes on.
          size_t need = options.limit - out.size();
          size_t buffered = static_cast<size_t>(std::distance(lo, hi));
          page = need + std::min(buffered, kMaxShadowPerPage);
          if (page < need) page = kNoLimit;
        }
        KEEL_ASSIGN_OR_RETURN(std::vector<Row> rows,
                              state_->ScanRows(conn, rest, options.reverse, page,
                                               /*values=*/true, /*xmins=*/true));
        for (const Row& row : rows) observed_.insert_or_assign(row.key, row.xmin);
        bool exhausted = page == kNoLimit || rows.size() < page;
        // The buffered writes up to the last row fetched (all of them once the server has
        // no more rows), in scan order.
        std::vector<WriteMap::const_iterator> buffered;
        if (!options.reverse) {
          for (auto it = lo; it != hi; ++it) {
            if (!exhausted && CompareKeys(it->first, rows.back().key) > 0) break;
            buffered.push_back(it);
          }
        } else {
          for (auto it = hi; it != lo;) {
            --it;
            if (!exhausted && CompareKeys(it->first, rows.back().key) < 0) break;
            buffered.push_back(it);
          }
        }
        int direction = options.reverse ? -1 : 1;
        size_t r = 0, b = 0;
        while (out.size() < options.limit && (r < rows.size() || b < buffered.size())) {
          int order = r == rows.size() ? 1
                      : b == buffered.size()
                          ? -1
                          : direction * CompareKeys(rows[r].key, buffered[b]->first);
          if (order < 0) {
            reads_.insert(rows[r].key);
            out.push_back({std::move(rows[r].key), std::move(rows[r].value)});
            ++r;
          } else {
            if (buffered[b]->second.has_value()) {
              out.push_back({buffered[b]->first, *buffered[b]->second});
            }
            if (order == 0) ++r;
            ++b;
          }
        }
        if (out.size() >= options.limit || exhausted) return out;
        // Every row fetched was merged (or hidden): go on after the last one.
        if (!options.reverse) {
          rest.begin = KeyAfter(rows.back().key);
        } else {
          rest.end = rows.back().key;
        }
      }
    });
  }

  Status Put(ByteView key, ByteView value) override {
    KEEL_RETURN_IF_ERROR(CheckWritable());
    KEEL_RETURN_IF_ERROR(KeySizeOk(key));
    writes_.insert_or_assign(Bytes(key.begin(), key.end()), Bytes(value.begin(), value.end()));
    return OkStatus();
  }

  Status Delete(ByteView key) override {
    KEEL_RETURN_IF_ERROR(CheckWritable());
    KEEL_RETURN_IF_ERROR(KeySizeOk(key));
    writes_.insert_or_assign(Bytes(key.begin(), key.end()), std::nullopt);
    return OkStatus();
  }

  Status DeleteRange(const KeyRange& range) override {
    if (finished_) return FinishedError();
    return OnSession(*state_, *session_, [&](Conn& conn) -> Status {
      if (range.empty()) return OkStatus();
      KEEL_ASSIGN_OR_RETURN(std::vector<Row> rows,
                            state_->ScanRows(conn, range, /*reverse=*/false, kNoLimit,
                                             /*values=*/false, /*xmins=*/true));
      auto hi = range.end.has_value() ? writes_.lower_bound(*range.end) : writes_.end();
      for (auto it = writes_.lower_bound(range.begin); it != hi; ++it) it->second.reset();
      for (Row& row : rows) {
        observed_.insert_or_assign(row.key, row.xmin);
        writes_.insert_or_assign(std::move(row.key), std::nullopt);
      }
      return OkStatus();
    });
  }

  Status Commit(const CommitOptions& options) override {
    if (finished_) return FinishedError();
    finished_ = true;
    Status status = OnSession(*state_, *session_,
                              [&](Conn& conn) -> Status { return CommitOn(conn, options); });
    // A read-only txn ends here too: the pool rolls its transaction back (it wrote nothing).
    state_->Finish(session_);
    writes_.clear();
    reads_.clear();
    observed_.clear();
    return status;
  }

  void Rollback() override {
    if (finished_) return;
    finished_ = true;
    state_->Finish(session_);
    writes_.clear();
  }

 private:
  Status CheckWritable() const {
    if (finished_) return FinishedError();
    if (state_->closed) return ClosedError();
    return OkStatus();
  }

  Status CommitOn(Conn& conn, const CommitOptions& options) {
    // Without writes the reads were one snapshot: nothing to check or apply.
    if (writes_.empty()) return OkStatus();
    KEEL_RETURN_IF_ERROR(state_->CheckTableLock());
    std::vector<Statement> statements;
    // A key written but never read has no state at the snapshot yet: read it in the
    // snapshot's transaction before that ends (one more round trip, only for such keys).
    std::vector<ByteView> unknown;
    for (const auto& [key, value] : writes_) {
      if (!observed_.contains(key)) unknown.push_back(key);
    }
    if (!unknown.empty()) {
      std::vector<Statement> read;
      read.push_back({state_->states_sql, {}});
      read.back().params.AddOwned(ByteaArray(unknown), internal::kByteaArrayOid);
      read.push_back({"COMMIT", {}});
      auto results = ExecPipeline(conn, read, "commit");
      if (!results.has_value()) return CommitError(std::move(results).error());
      for (ByteView key : unknown) observed_.emplace(Bytes(key.begin(), key.end()), std::nullopt);
      const PGresult* states = (*results)[0].get();
      for (int i = 0; i < PQntuples(states); ++i) {
        observed_.insert_or_assign(CellBytes(states, i, 0), ReadInt64(PQgetvalue(states, i, 1)));
      }
    } else {
      statements.push_back({"COMMIT", {}});  // ends the snapshot's read-only transaction
    }
    PostgresState::Expected expected;
    expected.reserve(reads_.size() + writes_.size());
    for (const auto& [key, xmin] : observed_) {
      if (reads_.contains(key) || writes_.contains(key)) expected.emplace_back(key, xmin);
    }
    state_->AppendCommit(expected, writes_, options, statements);
    auto results = ExecPipeline(conn, statements, "commit");
    if (!results.has_value()) return CommitError(std::move(results).error());
    return Applied(*state_, (*results)[results->size() - 2].get());
  }

  std::shared_ptr<PostgresState> state_;
  std::shared_ptr<PgSession> session_;
  bool finished_ = false;
  WriteMap writes_;
  std::set<Bytes, KeyLess> reads_;
  std::map<Bytes, std::optional<int64_t>, KeyLess> observed_;
};

// ---- Redacted

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string RedactUri(std::string_view s) {
  size_t authority = s.find("://") + 3;
  std::string out(s.substr(0, authority));
  // As libpq: user information is what precedes an '@' met before any '/'.
  size_t end = s.find_first_of("@/", authority);
  size_t rest = authority;
  if (end != std::string_view::npos && s[end] == '@') {
    std::string_view user = s.substr(authority, end - authority);
    size_t colon = user.find(':');
    out += colon == std::string_view::npos ? user : user.substr(0, colon + 1);
    if (colon != std::string_view::npos) out += "***";
    rest = end;
  }
  size_t query = s.find('?', rest);
  out += s.substr(rest, query == std::string_view::npos ? std::string_view::npos : query - rest);
  if (query == std::string_view::npos) return out;
  out += '?';
  std::string_view params = s.substr(query + 1);
  bool first = true;
  while (true) {
    size_t amp = params.find('&');
    std::string_view param = params.substr(0, amp);
    if (!first) out += '&';
    first = false;
    out += param.starts_with("password=") ? std::string_view("password=***") : param;
    if (amp == std::string_view::npos) break;
    params.remove_prefix(amp + 1);
  }
  return out;
}

std::string RedactKeywords(std::string_view s) {
  constexpr std::string_view kUnparsable = "(an unparsable connection string)";
  std::string out;
  size_t i = 0;
  auto skip_spaces = [&] {
    while (i < s.size() && IsSpace(s[i])) ++i;
  };
  while (true) {
    skip_spaces();
    if (i == s.size()) break;
    size_t key_start = i;
    while (i < s.size() && s[i] != '=' && !IsSpace(s[i])) ++i;
    std::string_view key = s.substr(key_start, i - key_start);
    skip_spaces();
    if (i == s.size() || s[i] != '=') return std::string(kUnparsable);
    ++i;
    skip_spaces();
    size_t value_start = i;
    std::string value;  // unescaped
    if (i < s.size() && s[i] == '\'') {
      ++i;
      while (i < s.size() && s[i] != '\'') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
      if (i == s.size()) return std::string(kUnparsable);
      ++i;
    } else {
      while (i < s.size() && !IsSpace(s[i])) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
    }
    if (!out.empty()) out += ' ';
    out += key;
    out += '=';
    if (key == "password") {
      out += "***";
    } else if (key == "dbname" &&
               (value.find('=') != std::string::npos || value.find("://") != std::string::npos)) {
      // libpq expands a dbname that is itself a connection string.
      std::string inner = PostgresKvStore::Redacted(value);
      out += '\'';
      for (char c : inner) {
        if (c == '\'' || c == '\\') out += '\\';
        out += c;
      }
      out += '\'';
    } else {
      out += s.substr(value_start, i - value_start);
    }
  }
  return out;
}

}  // namespace

// ---- PostgresKvStore

PostgresKvStore::PostgresKvStore(std::shared_ptr<internal::PostgresState> state)
    : state_(std::move(state)) {}

PostgresKvStore::~PostgresKvStore() { (void)Close(); }

std::string PostgresKvStore::Redacted(const std::string& conninfo) {
  std::string_view s = conninfo;
  if (s.starts_with("postgresql://") || s.starts_with("postgres://")) return RedactUri(s);
  return RedactKeywords(s);
}

Result<std::unique_ptr<PostgresKvStore>> PostgresKvStore::Open(
    const std::string& conninfo, const PostgresKvStoreOptions& options) {
  if (!internal::ValidTableName(options.table)) {
    return StorageError(
        kInvalidArgument,
        "table name \"" + options.table + "\" is not an SQL identifier of letters, digits and '_'");
  }
  auto state = std::make_shared<PostgresState>();
  state->conninfo = conninfo;
  state->target = Redacted(conninfo);
  state->table = "\"" + options.table + "\"";
  state->table_literal = "'" + state->table + "'";
  state->max_idle = options.max_idle_connections;
  const std::string& t = state->table;
  state->get_sql = "SELECT v FROM " + t + " WHERE k = $1";
  state->txn_get_sql = "SELECT v, xmin::text::int8 FROM " + t + " WHERE k = $1";
  state->states_sql = "SELECT k, xmin::text::int8 FROM " + t + " WHERE k = ANY($1::bytea[])";
  state->locks_sql =
      "SELECT CASE WHEN x THEN pg_advisory_xact_lock(h) ELSE pg_advisory_xact_lock_shared(h) END "
      "FROM unnest($1::int8[], $2::bool[]) AS u(h, x)";
  // One statement, one snapshot (taken after the locks, by a statement of its own: READ
  // COMMITTED then sees every commit of a key whose lock it waited for). A key changed
  // when its row's xmin is not the one this txn saw (or the row appeared or went): a new
  // version of a row always has the xmin of the transaction that wrote it, and that cannot
  // be the transaction that wrote the version seen, which had committed before.
  // The owner epoch is read by the same snapshot, taken after the fence lock: a claim
  // committed before that is seen, and one not yet committed waits for this commit.
  const std::string owners(internal::kOwnersTable);
  state->name_literal = "'" + options.table + "'";
  state->apply_sql =
      "WITH owned AS (SELECT FROM " + owners + " WHERE tbl = " + state->name_literal +
      " AND epoch = $6), "
      "expected AS (SELECT * FROM unnest($1::bytea[], $2::int8[]) AS e(k, x)), "
      "changed AS (SELECT e.k FROM expected e LEFT JOIN " +
      t +
      " c ON c.k = e.k "
      "WHERE c.xmin::text::int8 IS DISTINCT FROM e.x LIMIT 1), "
      "deleted AS (DELETE FROM " +
      t +
      " WHERE k = ANY($3::bytea[]) "
      "AND EXISTS (SELECT FROM owned) AND NOT EXISTS (SELECT FROM changed) RETURNING 1), "
      "written AS (INSERT INTO " +
      t +
      " (k, v) SELECT * FROM unnest($4::bytea[], $5::bytea[]) "
      "WHERE EXISTS (SELECT FROM owned) AND NOT EXISTS (SELECT FROM changed) "
      "ON CONFLICT (k) DO UPDATE SET v = excluded.v RETURNING 1) "
      "SELECT (SELECT k FROM changed), (SELECT count(*) FROM deleted), "
      "(SELECT count(*) FROM written), EXISTS (SELECT FROM owned)";
  state->owner_sql = "SELECT epoch FROM " + owners + " WHERE tbl = " + state->name_literal;
  state->on_lost = options.on_lost;

  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<Conn> conn, state->Connect());
  // Two stores creating one table at once could both try (CREATE TABLE IF NOT EXISTS is not
  // atomic): an advisory lock on the name orders them.
  // keel_owners likewise, first (one order: no deadlock).
  const std::string create_lock =
      "SELECT pg_advisory_xact_lock(" + std::to_string(internal::kCreateLockSpace) + ", hashtext(";
  std::string setup = "BEGIN; " + create_lock + "'" + owners + "')); CREATE TABLE IF NOT EXISTS " +
                      owners + " (tbl text PRIMARY KEY, epoch int8 NOT NULL); " + create_lock +
                      state->table_literal + ")); CREATE TABLE IF NOT EXISTS " + t +
                      " (k bytea PRIMARY KEY, v bytea NOT NULL); COMMIT; SELECT to_regclass(" +
                      state->table_literal + ")::oid::int8";
  KEEL_ASSIGN_OR_RETURN(PgResult created, ExecText(*conn, setup.c_str(), "creating the table"));
  std::string_view oid_text =
      PQntuples(created.get()) == 1 ? PQgetvalue(created.get(), 0, 0) : std::string_view();
  if (oid_text.empty() ||
      std::from_chars(oid_text.data(), oid_text.data() + oid_text.size(), state->table_oid).ec !=
          std::errc()) {
    return StorageError(kInternal, "table " + t + " was not found after creating it");
  }
  KEEL_ASSIGN_OR_RETURN(PgResult locked, state->TryTableLock(*conn));
  if (!PostgresState::GotTableLock(locked.get())) {
    return StorageError(kFailedPrecondition,
                        "table " + t + " at " + state->target +
                            " is in use by another store (its sessions show as application "
                            "'keel' in pg_stat_activity; one that outlived its engine can be "
                            "ended with pg_terminate_backend)");
  }
  KEEL_RETURN_IF_ERROR(state->Claim(*conn));
  state->lock_conn = std::move(conn);
  return std::unique_ptr<PostgresKvStore>(new PostgresKvStore(std::move(state)));
}

Result<std::optional<Bytes>> PostgresKvStore::Get(ByteView key) {
  if (state_->closed) return ClosedError();
  if (key.size() > kMaxKeyBytes) return std::optional<Bytes>();  // no connection needed
  Lease lease(state_);
  KEEL_RETURN_IF_ERROR(lease.Acquire());
  return state_->GetValue(lease.conn(), key);
}

Result<std::vector<KeyValue>> PostgresKvStore::Scan(const KeyRange& range,
                                                    const ScanOptions& options) {
  if (state_->closed) return ClosedError();
  if (options.limit == 0 || range.empty()) return std::vector<KeyValue>();  // nor here
  Lease lease(state_);
  KEEL_RETURN_IF_ERROR(lease.Acquire());
  return state_->ScanValues(lease.conn(), range, options);
}

Result<std::unique_ptr<KvSnapshot>> PostgresKvStore::NewSnapshot() {
  if (state_->closed) return ClosedError();
  KEEL_ASSIGN_OR_RETURN(std::shared_ptr<PgSession> session, StartSession(state_));
  return std::unique_ptr<KvSnapshot>(std::make_unique<PgSnapshot>(state_, std::move(session)));
}

Result<std::unique_ptr<KvTxn>> PostgresKvStore::Begin() {
  if (state_->closed) return ClosedError();
  KEEL_ASSIGN_OR_RETURN(std::shared_ptr<PgSession> session, StartSession(state_));
  return std::unique_ptr<KvTxn>(std::make_unique<PgTxn>(state_, std::move(session)));
}

Status PostgresKvStore::Close() {
  std::set<std::shared_ptr<PgSession>> sessions;
  std::vector<std::unique_ptr<Conn>> idle;
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return OkStatus();
    state_->closed = true;
    sessions.swap(state_->sessions);
    idle.swap(state_->idle);
  }
  // Closing a session's connection ends its transaction on the server. A call in flight on
  // it finishes first (it holds the session's mutex).
  for (const auto& session : sessions) {
    std::lock_guard lock(session->mu);
    session->conn.reset();
  }
  idle.clear();
  std::unique_ptr<Conn> lock_conn;
  {
    std::lock_guard lock(state_->lock_mu);
    lock_conn = std::move(state_->lock_conn);
  }
  if (lock_conn != nullptr && internal::LooksAlive(*lock_conn)) {
    // Released explicitly rather than by disconnecting: the server drops a session's locks
    // only once its backend has noticed the disconnection, and a store opened right after
    // this one would find the table still taken.
    (void)Exec(*lock_conn, PostgresState::UnlockSql(), state_->LockParams(), "unlocking the table");
  }
  return OkStatus();
}

Status PostgresKvStore::SyncWrites() {
  if (state_->closed) return ClosedError();
  Lease lease(state_);
  KEEL_RETURN_IF_ERROR(lease.Acquire());
  // A commit flushes the WAL up to its commit record only when the transaction wrote WAL
  // of its own (a transaction that merely has an xid, e.g. from txid_current(), commits
  // asynchronously): a transactional logical-decoding message is the smallest such
  // write. Flushing that record flushes every record before it.
  auto synced =
      ExecText(lease.conn(), "BEGIN; SELECT pg_logical_emit_message(true, 'keel.sync', ''); COMMIT",
               "syncing writes");
  if (!synced.has_value()) return Unexpected{std::move(synced).error()};
  return OkStatus();
}

Status PostgresKvStore::WriteUnchecked(std::span<const KvWrite> writes,
                                       const CommitOptions& options) {
  if (state_->closed) return ClosedError();
  WriteMap map;
  for (const KvWrite& w : writes) {
    KEEL_RETURN_IF_ERROR(KeySizeOk(w.key));
    map.insert_or_assign(Bytes(w.key.begin(), w.key.end()),
                         w.value.has_value()
                             ? std::optional<Bytes>(Bytes(w.value->begin(), w.value->end()))
                             : std::nullopt);
  }
  if (map.empty()) return OkStatus();
  KEEL_RETURN_IF_ERROR(state_->CheckTableLock());
  Lease lease(state_);
  KEEL_RETURN_IF_ERROR(lease.Acquire());
  // Locked like any commit, so a txn validating a key read concurrently sees the write
  // either entirely before or entirely after its check.
  std::vector<Statement> statements;
  state_->AppendCommit({}, map, options, statements);
  auto results = ExecPipeline(lease.conn(), statements, "write");
  if (!results.has_value()) return CommitError(std::move(results).error());
  return Applied(*state_, (*results)[results->size() - 2].get());
}

}  // namespace keel::storage
