#include "sqlite/database.h"

#include <sqlite3.h>

#include <array>
#include <climits>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "base/ascii.h"
#include "base/utf8.h"

namespace keel::sql {
namespace {

constexpr std::string_view kWriterPragmas =
    "PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE; PRAGMA synchronous = NORMAL; "
    "PRAGMA temp_store = MEMORY; PRAGMA auto_vacuum = NONE; PRAGMA locking_mode = EXCLUSIVE;";

// The progress handler runs every this many VM instructions; one steady_clock read per
// call keeps the deadline check well under 1% of execution time.
constexpr int kProgressInterval = 1000;

Error SqlError(std::string_view code, std::string message) {
  return Error("sqlite", std::string(code), std::move(message));
}

// `text` (a C string, or `size` bytes) as UTF-8, each ill-formed sequence replaced by
// U+FFFD (§8.1: TEXT cells, and anything else SQLite hands back that ends up in a wire `str`).
std::string LossyUtf8(const char* text, size_t size) {
  if (text == nullptr || size == 0) return {};
  return keel::LossyUtf8(std::string_view(text, size));
}

std::string LossyUtf8(const char* text) {
  return text == nullptr ? std::string() : LossyUtf8(text, std::strlen(text));
}

template <size_t N>
bool InList(const char* name, const std::array<std::string_view, N>& list) {
  if (name == nullptr) return false;
  for (std::string_view entry : list) {
    if (EqualsIgnoreCase(name, entry)) return true;
  }
  return false;
}

// §8.3 reader PRAGMA lists.
constexpr std::array<std::string_view, 26> kReaderPragmas = {
    "application_id", "busy_timeout",   "cache_size",        "collation_list",   "compile_options",
    "database_list",  "encoding",       "foreign_key_check", "foreign_key_list", "freelist_count",
    "function_list",  "index_info",     "index_list",        "index_xinfo",      "integrity_check",
    "journal_mode",   "module_list",    "page_count",        "page_size",        "pragma_list",
    "quick_check",    "schema_version", "table_info",        "table_list",       "table_xinfo",
    "user_version"};
constexpr std::array<std::string_view, 9> kReaderPragmasWithArgument = {
    "foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
    "integrity_check",   "quick_check",      "table_info", "table_xinfo"};

bool IsDataWrite(int code) {
  return code == SQLITE_INSERT || code == SQLITE_UPDATE || code == SQLITE_DELETE;
}

bool IsSchemaWrite(int code) {
  switch (code) {
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_ALTER_TABLE:
    case SQLITE_REINDEX:
    case SQLITE_ANALYZE:
      return true;
    default:
      return false;
  }
}

bool IsTempSchemaWrite(int code) {
  switch (code) {
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
      return true;
    default:
      return false;
  }
}

// The §8.3 reader authorizer: SQLITE_OK or SQLITE_DENY for one action.
int ReaderVerdict(int code, const char* arg1, const char* arg2) {
  if (IsDataWrite(code) || IsSchemaWrite(code) || IsTempSchemaWrite(code)) return SQLITE_DENY;
  switch (code) {
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      return SQLITE_DENY;
    case SQLITE_PRAGMA:  // arg1 = pragma name, arg2 = its argument (or NULL)
      return (arg2 == nullptr ? InList(arg1, kReaderPragmas)
                              : InList(arg1, kReaderPragmasWithArgument))
                 ? SQLITE_OK
                 : SQLITE_DENY;
    case SQLITE_FUNCTION: {  // arg2 = function name
      const char* name = arg2 != nullptr ? arg2 : arg1;
      if (name != nullptr &&
          (EqualsIgnoreCase(name, "load_extension") || EqualsIgnoreCase(name, "writefile"))) {
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    }
    default:
      return SQLITE_OK;
  }
}

// Only ASCII whitespace (space, \t, \n, \f, \r) may follow an execute statement.
bool IsBlank(std::string_view text) {
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\f' && c != '\r') return false;
  }
  return true;
}

struct StmtDeleter {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// Binds `value` to parameter `index` (1-based). SQLITE_TRANSIENT: SQLite copies.
int BindValue(sqlite3_stmt* stmt, int index, const Value& value) {
  struct Binder {
    sqlite3_stmt* stmt;
    int index;
    int operator()(const Null&) const { return sqlite3_bind_null(stmt, index); }
    int operator()(int64_t v) const { return sqlite3_bind_int64(stmt, index, v); }
    int operator()(double v) const { return sqlite3_bind_double(stmt, index, v); }
    int operator()(const std::string& v) const {
      // Explicit length: embedded NUL bytes survive. data() is never null.
      return sqlite3_bind_text64(stmt, index, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    int operator()(const Blob& v) const {
      // A null data pointer would bind NULL; an empty blob must stay a blob.
      if (v.bytes.empty()) return sqlite3_bind_zeroblob(stmt, index, 0);
      return sqlite3_bind_blob64(stmt, index, v.bytes.data(), v.bytes.size(), SQLITE_TRANSIENT);
    }
  };
  return std::visit(Binder{stmt, index}, value);
}

Value ReadColumn(sqlite3_stmt* stmt, int i) {
  switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
      return static_cast<int64_t>(sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
      return sqlite3_column_double(stmt, i);
    case SQLITE_TEXT: {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
      const int size = sqlite3_column_bytes(stmt, i);
      return LossyUtf8(text, size > 0 ? static_cast<size_t>(size) : 0);
    }
    case SQLITE_BLOB: {
      const auto* data = static_cast<const uint8_t*>(sqlite3_column_blob(stmt, i));
      const int size = sqlite3_column_bytes(stmt, i);
      Blob blob;
      if (data != nullptr && size > 0) blob.bytes.assign(data, data + size);
      return blob;
    }
    default:
      return Null{};
  }
}

// What a prepare produced: the statement (null when the text held none) and the text
// after it.
struct Prepared {
  StmtPtr stmt;
  std::string_view tail;
};

// A statement to run and the text after it (a cached statement has none).
struct StmtRef {
  sqlite3_stmt* stmt = nullptr;
  std::string_view tail;
};

// SQL texts longer than this are not cached (one bulk INSERT's text is not worth keeping).
constexpr size_t kMaxCachedSqlBytes = 4096;

// Columns and rows of one statement run to completion.
struct StatementOutput {
  std::vector<std::string> columns;
  std::vector<Row> rows;
};

}  // namespace

// One physical connection and the bookkeeping that makes it behave like Rivet's pooled
// connection manager (§8.3). Everything below `mu` is guarded by it.
//
// The authorizer: ONE callback (Authorize) is installed for the connection's lifetime and
// dispatches on `auth_mode`, because sqlite3_set_authorizer expires every prepared
// statement (switching authorizers between prepare and step would force a re-prepare).
//   kAllow  — writer use: everything allowed (Rivet's writer has no authorizer);
//   kRecord — classification: record the §8.3 flags, allow everything, and note whether
//             the reader authorizer would have denied any action;
//   kReader — reader use: the §8.3 reader authorizer.
// A READ statement is the classification's own prepared statement when the reader
// authorizer would have allowed every action of that prepare (the authorizer is a pure
// function of the action, so a prepare under it would have produced the same program);
// otherwise it is prepared again under kReader, so SQLite itself reports the denial.
// kReader stays in force while a READ statement steps, covering automatic re-prepares.
//
// `changes` and the writer: Rivet reads sqlite3_changes64 on the connection that ran the
// statement. A reader never writes, so READ reports 0. With the read pool enabled Rivet
// opens a fresh writer for each write outside a transaction and closes it when the use
// ends in autocommit, so a writer statement reports a count only if an INSERT/UPDATE/
// DELETE ran during the current writer lease (`writer_held`); with the pool disabled the
// writer is never released. `counter_set` emulates that: it becomes true once a writer use
// of the lease changes sqlite3_changes64 or sqlite3_total_changes64. That is exact: once
// true, the physical counter is the lease's (every DML sets it); while false, a DML that
// went unnoticed changed no rows and left the counter at 0, which is what is reported.
struct Database::Impl {
  enum class AuthMode { kAllow, kRecord, kReader };

  Impl(sqlite3* connection, DatabaseOptions opts) : db(connection), options(opts) {}

  mutable std::mutex mu;
  sqlite3* db = nullptr;
  DatabaseOptions options;

  AuthMode auth_mode = AuthMode::kAllow;
  Classification recorded;
  bool reader_denied = false;

  bool deadline_armed = false;
  std::chrono::steady_clock::time_point deadline;
  bool deadline_hit = false;
  bool abort_hit = false;
  // TryExecute's read budget (Admission::read_budget) for the statement running now.
  bool budget_armed = false;
  std::chrono::steady_clock::time_point budget_deadline;
  bool budget_hit = false;

  bool writer_held = false;
  bool counter_set = false;
  int64_t changes_before = 0;
  int64_t total_changes_before = 0;

  // --- the prepared-statement cache (see the struct comment) ---

  // A reset statement of one SQL text and what its classifying prepare recorded.
  struct CachedStatement {
    std::string sql;
    StmtPtr stmt;
    Classification classification;
    bool reader_denied = false;
  };
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  std::list<CachedStatement> cache_lru;  // most recently used first
  std::unordered_map<std::string_view, std::list<CachedStatement>::iterator, TextHash,
                     std::equal_to<>>
      cache_index;  // keys view cache_lru's texts
  // Set by Record when the classified statement is a ROLLBACK (of a transaction or to a
  // savepoint): it may undo schema changes.
  bool recorded_rollback = false;
  StatementCacheStats cache_stats;

  static int Authorize(void* self, int code, const char* arg1, const char* arg2,
                       const char* database, const char* /*trigger_or_view*/) {
    auto* impl = static_cast<Impl*>(self);
    switch (impl->auth_mode) {
      case AuthMode::kAllow:
        return SQLITE_OK;
      case AuthMode::kReader:
        return ReaderVerdict(code, arg1, arg2);
      case AuthMode::kRecord:
        impl->Record(code, arg1, arg2, database);
        return SQLITE_OK;
    }
    return SQLITE_OK;
  }

  void Record(int code, const char* arg1, const char* arg2, const char* database) {
    Classification& c = recorded;
    switch (code) {
      case SQLITE_TRANSACTION:
      case SQLITE_SAVEPOINT:  // arg1 = "BEGIN" | "COMMIT" | "RELEASE" | "ROLLBACK"
        c.transaction_control = true;
        if (arg1 != nullptr && EqualsIgnoreCase(arg1, "ROLLBACK")) recorded_rollback = true;
        break;
      case SQLITE_ATTACH:
        c.attach = true;
        break;
      case SQLITE_DETACH:
        c.detach = true;
        break;
      case SQLITE_PRAGMA:
        c.pragma_usage = true;
        break;
      case SQLITE_FUNCTION:
        c.function_calls = true;
        break;
      default:
        break;
    }
    const bool data = IsDataWrite(code);
    const bool schema = IsSchemaWrite(code);
    const bool temp_schema = IsTempSchemaWrite(code);
    if (schema) c.schema_writes = true;
    if (temp_schema || (data && database != nullptr && std::strcmp(database, "temp") == 0)) {
      c.temp_writes = true;
    }
    if (data || schema || temp_schema) c.write_operations = true;
    if (ReaderVerdict(code, arg1, arg2) != SQLITE_OK) reader_denied = true;
  }

  static int Progress(void* self) {
    auto* impl = static_cast<Impl*>(self);
    if (impl->options.abort != nullptr && impl->options.abort->load(std::memory_order_relaxed)) {
      impl->abort_hit = true;
      return 1;
    }
    if (impl->budget_armed && std::chrono::steady_clock::now() >= impl->budget_deadline) {
      impl->budget_hit = true;
      return 1;
    }
    if (!impl->deadline_armed || std::chrono::steady_clock::now() < impl->deadline) return 0;
    impl->deadline_hit = true;
    return 1;  // SQLite interrupts the statement (SQLITE_INTERRUPT)
  }

  // Sets auth_mode for a scope; back to kAllow at its end.
  class ModeScope {
   public:
    ModeScope(Impl& impl, AuthMode mode) : impl_(impl) { impl_.auth_mode = mode; }
    ~ModeScope() { impl_.auth_mode = AuthMode::kAllow; }
    ModeScope(const ModeScope&) = delete;
    ModeScope& operator=(const ModeScope&) = delete;

   private:
    Impl& impl_;
  };

  std::string ErrorMessage() const { return LossyUtf8(sqlite3_errmsg(db)); }

  Status CheckOpen() const {
    if (db == nullptr) return SqlError("closed", "Database is closed.");
    return OkStatus();
  }

  static Status CheckSql(std::string_view sql) {
    if (size_t nul = sql.find('\0'); nul != std::string_view::npos) {
      return SqlError("invalid_sql", "sql contains a NUL byte at offset " + std::to_string(nul));
    }
    if (sql.size() >= static_cast<size_t>(INT_MAX)) {
      return SqlError("invalid_sql", "sql is too long");
    }
    return OkStatus();
  }

  // Prepares the first statement of `sql` under the current auth_mode. REQUIRES:
  // CheckSql(sql) passed.
  Result<Prepared> Prepare(std::string_view sql, std::string_view op) {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
    Prepared out{StmtPtr(raw), {}};
    if (rc != SQLITE_OK) {
      return SqlError("prepare_failed", "failed to prepare sqlite " + std::string(op) +
                                            " statement: " + ErrorMessage());
    }
    // SQLite maps the tail back into our buffer even when it copied a non-terminated
    // string; anything else would be a SQLite bug, treated as "nothing follows".
    if (tail != nullptr && tail >= sql.data() && tail <= sql.data() + sql.size()) {
      out.tail = sql.substr(static_cast<size_t>(tail - sql.data()));
    }
    return out;
  }

  // Prepares under kRecord and fills `recorded` (§8.3 classification), without running.
  Result<Prepared> PrepareAndClassify(std::string_view sql, std::string_view op) {
    recorded = Classification{};
    reader_denied = false;
    recorded_rollback = false;
    Result<Prepared> prepared = [&] {
      ModeScope mode(*this, AuthMode::kRecord);
      return Prepare(sql, op);
    }();
    if (!prepared.ok()) return prepared;
    recorded.has_statement = prepared->stmt != nullptr;
    // No statement writes nothing; SQLite has no statement to ask.
    recorded.readonly = !recorded.has_statement || sqlite3_stmt_readonly(prepared->stmt.get());
    recorded.has_trailing_sql = !IsBlank(prepared->tail);
    return prepared;
  }

  Status Bind(sqlite3_stmt* stmt, const std::optional<Params>& params) {
    if (!params.has_value()) return OkStatus();
    const int placeholders = sqlite3_bind_parameter_count(stmt);
    if (params->size() > static_cast<size_t>(placeholders)) {
      return SqlError("invalid_bind_parameter",
                      "failed to bind sqlite parameter: " + std::to_string(params->size()) +
                          " parameters given for " + std::to_string(placeholders) +
                          " placeholders (column index out of range)");
    }
    for (size_t i = 0; i < params->size(); ++i) {
      if (BindValue(stmt, static_cast<int>(i + 1), (*params)[i]) != SQLITE_OK) {
        return SqlError(
            "invalid_bind_parameter",
            "failed to bind sqlite parameter " + std::to_string(i + 1) + ": " + ErrorMessage());
      }
    }
    return OkStatus();
  }

  // Steps `stmt` to completion under the statement deadline, collecting every row.
  Result<StatementOutput> Run(sqlite3_stmt* stmt, std::string_view op) {
    StatementOutput out;
    const int count = sqlite3_column_count(stmt);
    out.columns.reserve(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) out.columns.push_back(LossyUtf8(sqlite3_column_name(stmt, i)));

    deadline_hit = false;
    abort_hit = false;
    budget_hit = false;
    deadline_armed = options.statement_deadline.count() > 0;
    if (deadline_armed) deadline = std::chrono::steady_clock::now() + options.statement_deadline;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      Row& row = out.rows.emplace_back();
      row.reserve(static_cast<size_t>(count));
      for (int i = 0; i < count; ++i) row.push_back(ReadColumn(stmt, i));
    }
    deadline_armed = false;
    if (rc == SQLITE_DONE) return out;
    if ((rc & 0xff) == SQLITE_INTERRUPT && budget_hit) {
      // TryExecute's read budget: the caller runs the statement again elsewhere.
      return SqlError("interrupted", "sqlite " + std::string(op) + " statement gave up its budget");
    }
    if ((rc & 0xff) == SQLITE_INTERRUPT && abort_hit) {
      return SqlError("closed", "sqlite " + std::string(op) +
                                    " statement interrupted: the database is closing");
    }
    if ((rc & 0xff) == SQLITE_INTERRUPT && deadline_hit) {
      return SqlError("statement_timeout", "sqlite " + std::string(op) +
                                               " statement ran longer than " +
                                               std::to_string(options.statement_deadline.count()) +
                                               " ms and was interrupted");
    }
    return SqlError("execution_failed",
                    "failed to step sqlite " + std::string(op) + " statement: " + ErrorMessage());
  }

  // --- writer leases (see the struct comment) ---

  void BeginWriterUse() {
    if (!writer_held) {
      writer_held = true;
      counter_set = false;
    }
    changes_before = sqlite3_changes64(db);
    total_changes_before = sqlite3_total_changes64(db);
  }

  // Notes whether the use ran a DML, and returns the count the writer reports now.
  int64_t WriterChanges() {
    if (sqlite3_changes64(db) != changes_before ||
        sqlite3_total_changes64(db) != total_changes_before) {
      counter_set = true;
    }
    return counter_set ? sqlite3_changes64(db) : 0;
  }

  void EndWriterUse() {
    WriterChanges();
    if (options.read_pool_enabled && sqlite3_get_autocommit(db) != 0) writer_held = false;
  }

  // --- the statement cache ---

  // Statements worth keeping: one plain statement (DML or query) whose program cannot
  // depend on, or change, connection state the cache would not see. Transaction control,
  // PRAGMAs (some apply their setting while preparing), ATTACH/DETACH and schema or TEMP
  // writes are prepared every time.
  bool Cacheable(std::string_view sql, const Classification& c) const {
    return options.statement_cache_size > 0 && sql.size() <= kMaxCachedSqlBytes &&
           c.has_statement && !c.has_trailing_sql && !c.transaction_control && !c.attach &&
           !c.detach && !c.pragma_usage && !c.schema_writes && !c.temp_writes;
  }

  // After a statement that may have changed the schema or the attached databases (or undone
  // such a change: ROLLBACK) the cached classifications may be stale. SQLite re-prepares a
  // cached statement whose schema changed by itself, but the route was chosen from the old
  // classification and a re-prepare failing while stepping would be reported as
  // execution_failed instead of prepare_failed: start over.
  static bool Invalidates(const Classification& c, bool rollback) {
    return c.schema_writes || c.temp_writes || c.attach || c.detach || c.pragma_usage ||
           rollback;
  }

  CachedStatement* Lookup(std::string_view sql) {
    auto it = cache_index.find(sql);
    if (it == cache_index.end()) {
      ++cache_stats.misses;
      return nullptr;
    }
    ++cache_stats.hits;
    cache_lru.splice(cache_lru.begin(), cache_lru, it->second);  // iterators stay valid
    return &*it->second;
  }

  // Takes a statement that just ran (reset, bindings cleared) into the cache, evicting the
  // least recently used entry when full.
  void Insert(std::string_view sql, StmtPtr stmt, const Classification& c, bool denied) {
    if (cache_lru.size() >= options.statement_cache_size) {
      cache_index.erase(cache_lru.back().sql);
      cache_lru.pop_back();
      ++cache_stats.evictions;
    }
    cache_lru.push_front(CachedStatement{std::string(sql), std::move(stmt), c, denied});
    cache_index.emplace(cache_lru.front().sql, cache_lru.begin());
  }

  void ClearCache() {
    if (cache_lru.empty()) return;
    cache_index.clear();
    cache_lru.clear();  // finalizes
    ++cache_stats.clears;
  }

  // A statement between two uses: back to its start, no bindings left (a later call with
  // fewer parameters binds the rest NULL), whatever state the last use left it in — run to
  // the end, stopped by an error or an interrupt, or never stepped.
  static void Rewind(sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }

  // --- operations ---

  Result<ExecuteResult> Execute(std::string_view sql, const std::optional<Params>& params,
                                bool write_only) {
    std::optional<Result<ExecuteResult>> r = ExecuteIf(sql, params, write_only, nullptr);
    return std::move(*r);  // without an admission every call runs
  }

  // Execute, asking `admit` (when given) after the prepare and classification and before
  // anything runs; std::nullopt when the call did not run (see Database::TryExecute).
  std::optional<Result<ExecuteResult>> ExecuteIf(std::string_view sql,
                                                 const std::optional<Params>& params,
                                                 bool write_only, const Admit* admit) {
    std::lock_guard<std::mutex> lock(mu);
    KEEL_RETURN_IF_ERROR(CheckOpen());
    KEEL_RETURN_IF_ERROR(CheckSql(sql));
    const std::string_view op = write_only ? "execute_write" : "execute";

    // The statement and its classification: cached, or prepared (and classified) now.
    CachedStatement* cached = Lookup(sql);
    Prepared fresh;
    Classification c;
    bool denied = false;
    bool rollback = false;
    if (cached != nullptr) {
      c = cached->classification;
      denied = cached->reader_denied;
    } else {
      Result<Prepared> classified = PrepareAndClassify(sql, op);
      if (!classified.ok()) {
        if (admit != nullptr) return std::nullopt;  // the ordinary call reports it
        // Classification failed: the writer attempt re-prepares and reports SQLite's error.
        Result<ExecuteResult> result = OnWriter(
            sql, nullptr, write_only ? Route::kWrite : Route::kWriteFallback, params, op);
        ClearCache();  // nothing is known about what ran
        return result;
      }
      fresh = std::move(*classified);
      c = recorded;
      denied = reader_denied;
      rollback = recorded_rollback;
    }
    const StmtRef ref = cached != nullptr ? StmtRef{cached->stmt.get(), {}}
                                          : StmtRef{fresh.stmt.get(), fresh.tail};

    // The admission: nothing has run yet (a prepare has no effect on the database).
    budget_armed = false;
    if (admit != nullptr) {
      const Admission a = (*admit)(c, sqlite3_get_autocommit(db) == 0);
      if (!a.run) {
        if (cached == nullptr && Cacheable(sql, c) && !Invalidates(c, rollback)) {
          Insert(sql, std::move(fresh.stmt), c, denied);  // prepared for the ordinary call
        }
        return std::nullopt;
      }
      // Only a read-only statement may be given up halfway: SQLite rolls nothing back when
      // it interrupts one (vdbeaux.c sqlite3VdbeHalt), so nothing has happened.
      if (a.read_budget.count() > 0 && c.has_statement && c.readonly) {
        budget_armed = true;
        budget_deadline = std::chrono::steady_clock::now() + a.read_budget;
      }
    }

    Result<ExecuteResult> result = [&] {
      if (write_only) return OnWriter(sql, &ref, Route::kWrite, params, op);
      if (options.read_pool_enabled && sqlite3_get_autocommit(db) != 0 && c.reader_eligible()) {
        return OnReader(sql, ref.stmt, denied, params, op);
      }
      const Route route =
          (!c.readonly || c.requires_write_route()) ? Route::kWrite : Route::kWriteFallback;
      return OnWriter(sql, &ref, route, params, op);
    }();

    if (ref.stmt != nullptr) Rewind(ref.stmt);
    const bool over_budget = budget_hit;
    budget_armed = false;
    budget_hit = false;
    if (over_budget) {
      if (cached == nullptr && Cacheable(sql, c)) Insert(sql, std::move(fresh.stmt), c, denied);
      return std::nullopt;
    }
    if (!result.ok() || Invalidates(c, rollback)) {
      // An error may have rolled a transaction back (SQLite does on I/O errors, SQLITE_FULL,
      // interrupts), undoing schema changes; a statement that changes the schema makes the
      // classifications stale.
      ClearCache();
    } else if (cached == nullptr && Cacheable(sql, c)) {
      Insert(sql, std::move(fresh.stmt), c, denied);
    }
    return result;
  }

  // A writer use. `prepared` is the classification's statement (prepared without effect
  // on the program: kRecord allows everything) or a cached one, or null to prepare here.
  Result<ExecuteResult> OnWriter(std::string_view sql, const StmtRef* prepared, Route route,
                                 const std::optional<Params>& params, std::string_view op) {
    BeginWriterUse();
    Result<ExecuteResult> result = [&]() -> Result<ExecuteResult> {
      Prepared local;
      StmtRef ref;
      if (prepared == nullptr) {
        KEEL_ASSIGN_OR_RETURN(local, Prepare(sql, op));
        ref = StmtRef{local.stmt.get(), local.tail};
        prepared = &ref;
      }
      if (!IsBlank(prepared->tail)) {
        return SqlError("invalid_sql", "sqlite execute only supports a single statement");
      }
      ExecuteResult out;
      out.route = route;
      if (prepared->stmt == nullptr) return out;  // no statement: empty, changes 0
      KEEL_RETURN_IF_ERROR(Bind(prepared->stmt, params));
      KEEL_ASSIGN_OR_RETURN(StatementOutput rows, Run(prepared->stmt, op));
      out.columns = std::move(rows.columns);
      out.rows = std::move(rows.rows);
      out.changes = WriterChanges();
      if (out.changes > 0) out.last_insert_row_id = sqlite3_last_insert_rowid(db);
      return out;
    }();
    EndWriterUse();
    return result;
  }

  // A reader use: route READ under the reader authorizer. REQUIRES: `classified` is a
  // reader-eligible statement (so it exists, is read-only and has nothing after it);
  // `denied`: its classifying prepare saw an action the reader authorizer denies.
  Result<ExecuteResult> OnReader(std::string_view sql, sqlite3_stmt* classified, bool denied,
                                 const std::optional<Params>& params, std::string_view op) {
    ModeScope mode(*this, AuthMode::kReader);
    sqlite3_stmt* stmt = classified;
    Prepared prepared;
    if (denied) {
      KEEL_ASSIGN_OR_RETURN(prepared, Prepare(sql, op));
      if (prepared.stmt == nullptr || !IsBlank(prepared.tail)) {
        // Unreachable: the same text prepared to one statement a moment ago.
        return SqlError("prepare_failed",
                        "failed to prepare sqlite " + std::string(op) + " statement");
      }
      stmt = prepared.stmt.get();
    }
    if (sqlite3_stmt_readonly(stmt) == 0) {
      // A reader connection runs with query_only = ON.
      return SqlError("execution_failed", "failed to step sqlite " + std::string(op) +
                                              " statement: attempt to write a readonly "
                                              "database");
    }
    KEEL_RETURN_IF_ERROR(Bind(stmt, params));
    KEEL_ASSIGN_OR_RETURN(StatementOutput rows, Run(stmt, op));
    ExecuteResult out;
    out.columns = std::move(rows.columns);
    out.rows = std::move(rows.rows);
    out.changes = 0;  // a reader connection never writes
    out.route = Route::kRead;
    return out;
  }

  Result<QueryResult> Exec(std::string_view sql) {
    std::lock_guard<std::mutex> lock(mu);
    KEEL_RETURN_IF_ERROR(CheckOpen());
    KEEL_RETURN_IF_ERROR(CheckSql(sql));
    // A batch that opened a transaction and then failed rolls it back (below): left open,
    // it would silently take in every later statement of the database — answered as if
    // committed, then lost when the database closes.
    const bool began_in_autocommit = sqlite3_get_autocommit(db) != 0;
    BeginWriterUse();
    Result<QueryResult> result = [&]() -> Result<QueryResult> {
      QueryResult last;
      std::string_view rest = sql;
      while (!rest.empty()) {
        KEEL_ASSIGN_OR_RETURN(Prepared prepared, Prepare(rest, "exec"));
        const size_t consumed = rest.size() - prepared.tail.size();
        if (prepared.stmt != nullptr) {
          KEEL_ASSIGN_OR_RETURN(StatementOutput rows, Run(prepared.stmt.get(), "exec"));
          if (!rows.columns.empty() || !rows.rows.empty()) {
            last.columns = std::move(rows.columns);
            last.rows = std::move(rows.rows);
          }
        }
        if (consumed == 0) break;
        rest.remove_prefix(consumed);
      }
      return last;
    }();
    if (!result.ok() && began_in_autocommit && sqlite3_get_autocommit(db) == 0) {
      const int rc = sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      const Error& e = result.error();
      result = Unexpected{
          Error(e.group(), e.code(),
                e.message() + (rc == SQLITE_OK ? " (the transaction the batch opened was "
                                                 "rolled back)"
                                               : " (rolling back the transaction the batch "
                                                 "opened failed: " +
                                                     ErrorMessage() + ")"))};
    }
    EndWriterUse();
    ClearCache();  // any statement may have run (schema changes, ROLLBACK, PRAGMAs)
    return result;
  }

  Result<Classification> Classify(std::string_view sql) {
    std::lock_guard<std::mutex> lock(mu);
    KEEL_RETURN_IF_ERROR(CheckOpen());
    KEEL_RETURN_IF_ERROR(CheckSql(sql));
    KEEL_RETURN_IF_ERROR(PrepareAndClassify(sql, "classification"));
    return recorded;
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mu);
    if (db == nullptr) return;
    ClearCache();
    if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    // Every statement is finalized (the cache just now, the others when their call
    // returns), so close cannot be busy; close_v2 would still release the handle if it
    // were.
    sqlite3_close_v2(db);
    db = nullptr;
    writer_held = false;
    counter_set = false;
  }
};

Result<std::unique_ptr<Database>> Database::Open(const std::string& vfs_name,
                                                 const std::string& file_name,
                                                 DatabaseOptions options) {
  sqlite3* db = nullptr;
  // NOMUTEX: Impl::mu already serialises every use of the connection.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  int rc =
      sqlite3_open_v2(file_name.c_str(), &db, flags, vfs_name.empty() ? nullptr : vfs_name.c_str());
  auto fail = [&](std::string what) -> Error {
    std::string message =
        what + " sqlite database '" + file_name + "' (vfs '" + vfs_name +
        "'): " + (db != nullptr ? LossyUtf8(sqlite3_errmsg(db)) : std::string(sqlite3_errstr(rc)));
    sqlite3_close_v2(db);
    return SqlError("open_failed", std::move(message));
  };
  if (rc != SQLITE_OK) return fail("failed to open");
  rc = sqlite3_exec(db, std::string(kWriterPragmas).c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return fail("failed to configure");

  auto impl = std::make_unique<Impl>(db, options);
  // Both callbacks get the Impl, whose address is stable (heap) and outlives the
  // connection (Close runs before the Impl is destroyed).
  rc = sqlite3_set_authorizer(db, &Impl::Authorize, impl.get());
  if (rc != SQLITE_OK) {
    impl->db = nullptr;
    return fail("failed to install the authorizer on");
  }
  // Always: TryExecute's read budget needs it too; one clock read per 1000 VM steps.
  sqlite3_progress_handler(db, kProgressInterval, &Impl::Progress, impl.get());
  return std::unique_ptr<Database>(new Database(std::move(impl)));
}

Database::Database(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Database::~Database() {
  if (impl_ != nullptr) impl_->Close();
}

Result<QueryResult> Database::Exec(std::string_view sql) { return impl_->Exec(sql); }

Result<ExecuteResult> Database::Execute(std::string_view sql, const std::optional<Params>& params) {
  return impl_->Execute(sql, params, /*write_only=*/false);
}

Result<ExecuteResult> Database::ExecuteWrite(std::string_view sql,
                                             const std::optional<Params>& params) {
  return impl_->Execute(sql, params, /*write_only=*/true);
}

std::optional<Result<ExecuteResult>> Database::TryExecute(std::string_view sql,
                                                          const std::optional<Params>& params,
                                                          bool write_only, const Admit& admit) {
  return impl_->ExecuteIf(sql, params, write_only, &admit);
}

Result<QueryResult> Database::Query(std::string_view sql, const std::optional<Params>& params) {
  KEEL_ASSIGN_OR_RETURN(ExecuteResult result, Execute(sql, params));
  return QueryResult{std::move(result.columns), std::move(result.rows)};
}

Result<RunResult> Database::Run(std::string_view sql, const std::optional<Params>& params) {
  KEEL_ASSIGN_OR_RETURN(ExecuteResult result, Execute(sql, params));
  return RunResult{result.changes, result.last_insert_row_id};
}

bool Database::InTransaction() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->db != nullptr && sqlite3_get_autocommit(impl_->db) == 0;
}

void Database::Close() { impl_->Close(); }

StatementCacheStats Database::statement_cache_stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  StatementCacheStats stats = impl_->cache_stats;
  stats.size = impl_->cache_lru.size();
  return stats;
}

bool Database::closed() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->db == nullptr;
}

Result<Classification> Classify(Database& db, std::string_view sql) {
  return db.impl_->Classify(sql);
}

}  // namespace keel::sql
