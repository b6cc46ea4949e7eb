// keel::sql::Database — Keel's one SQL execution layer (envoy-protocol.md §8.1–§8.3),
// used by the runtime's local-native backend and by the engine's remote SQL executor, so
// the two cannot drift: same PRAGMAs, same statement classification, same routes, same
// reader authorizer, same results.
//
// One Database per actor database. It opens the database file `file_name` through the
// registered SQLite VFS `vfs_name` (the KeelVfs, whose PageSource is the engine's page
// store or get_pages/commit over the envoy connection).
//
// Operations (§8.1):
//   Exec(sql)                 one or more statements on the writer, no parameters; the
//                             result is the columns and rows of the last statement that
//                             produced any.
//   Execute(sql, params)      exactly one statement, routed per §8.3: READ for a
//                             reader-eligible statement with the read pool enabled and no
//                             write mode, else WRITE (not read-only, or transaction
//                             control / attach / detach / schema / temp / data writes) or
//                             WRITE_FALLBACK (read-only but not eligible, no statement,
//                             classification failed, or write mode).
//   ExecuteWrite(sql, params) exactly one statement, always on the writer, route WRITE.
//   Query / Run               Execute projected to rows / to changes.
//   Close()                   waits for nothing (calls are synchronous); later calls fail
//                             with sqlite.closed.
//
// Connections: Keel's VFS serves one open handle per database (its locking is a no-op),
// so the manager keeps ONE physical SQLite connection and applies the §8.3 rules to it:
// "reader" use installs the reader authorizer for the statement's prepare and requires
// sqlite3_stmt_readonly; "write mode" is the connection being inside a transaction
// (autocommit off), which is exactly Rivet's writer stickiness — a manual BEGIN … COMMIT
// spread over several calls stays on the writer and its SELECTs report WRITE_FALLBACK.
// Routes and results are those of a pooled manager (for `changes` see below, for the
// few deliberate differences "Where one connection is not a pool"); concurrency between
// actors comes from the callers (the engine's worker pool), not from readers of one
// database.
//
// Statement rules: SQL with a NUL byte → sqlite.invalid_sql ("… contains a NUL byte");
// Execute/ExecuteWrite with anything but whitespace after the first statement (even a
// comment) → sqlite.invalid_sql "sqlite execute only supports a single statement"; no
// statement at all → success, empty result, route WRITE_FALLBACK (Execute). params[i]
// binds parameter i+1; more params than placeholders → sqlite.invalid_bind_parameter;
// fewer → the rest stay NULL. Text parameters bind with their full length (NUL survives).
// A prepare failure → sqlite.prepare_failed ("failed to prepare …: <sqlite message>"); a
// step failure → sqlite.execution_failed with SQLite's message; a statement running past
// `statement_deadline` is interrupted → sqlite.statement_timeout.
//
// Columns: names as SQLite reports them ("" when none); cells by storage class; TEXT that
// is not valid UTF-8 is returned with U+FFFD replacements. SQLite stores a NaN parameter
// as NULL; -0.0 survives as a REAL.
//
// changes / last_insert_row_id (§8.1): SQLite's counter as the serving connection of a
// pooled manager would read it after the statement — READ reports changes 0 (a reader
// never writes); a writer statement reports sqlite3_changes64 if an INSERT/UPDATE/DELETE
// ran in the current writer lease, else 0 (with the read pool enabled a lease ends when a
// writer use finishes in autocommit — Rivet opens a fresh writer per write outside a
// transaction; with it disabled the lease never ends). So a SELECT on the writer right
// after an INSERT in the same transaction reports that insert's count (§8.1 caveat), and a
// CREATE TABLE after an earlier, committed INSERT reports 0. last_insert_row_id =
// sqlite3_last_insert_rowid, present only when changes > 0; a statement with no SQL
// reports changes 0 and no rowid.
//
// Where one connection is not a pool (deliberate, not emulated): connection state
// outlives a writer lease — TEMP objects, settings PRAGMAs (foreign_keys, cache_size, …)
// and the rowid returned by the SQL function last_insert_rowid(), which therefore reports
// the last insert even on READ (Rivet's reader would say 0). Classification prepares on
// this connection, so a settings PRAGMA that SQLite applies while preparing (e.g.
// `PRAGMA foreign_keys = ON`, read-only per SQLite, hence routed READ and then refused by
// the reader authorizer with "not authorized", as in Rivet) still changes the setting
// here; use ExecuteWrite or Exec for settings.
//
// Statement cache: Execute/ExecuteWrite keep up to `statement_cache_size` prepared
// statements, keyed by the exact SQL text (least recently used evicted), with what their
// classifying prepare recorded, so a repeated statement skips parsing, planning and
// classification; routes, results and errors are those of a fresh prepare. A statement is
// reset and its bindings cleared after every use, whatever the use ended in. Cached: one
// plain statement (no trailing SQL) of at most 4 KiB with no transaction control, PRAGMA,
// ATTACH/DETACH, schema or TEMP write — those are prepared every time. The whole cache is
// dropped after any statement that writes the schema (or TEMP), uses a PRAGMA, attaches or
// detaches, or rolls back (which may undo a schema change); after any failed statement (an
// error may have rolled the transaction back); after every Exec; and at Close. SQLite
// itself re-prepares a cached statement whose schema changed (prepare_v2), under the
// authorizer mode of that use.
//
// Thread-safety: every method may be called from any thread; calls on one Database are
// serialised by an internal mutex (one connection).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "sqlite/types.h"

namespace keel::sql {

struct Classification;

struct DatabaseOptions {
  // §8.3 read pool. Disabled → every Execute runs as a writer use (WRITE/WRITE_FALLBACK).
  bool read_pool_enabled = true;
  // Prepared statements kept per connection (see "Statement cache" above); 0 = none.
  size_t statement_cache_size = 64;
  // Interrupt a statement (sqlite3_progress_handler) that runs longer than this; 0 = never.
  std::chrono::milliseconds statement_deadline{25000};
  // The owner's stop switch: once it reads true, a running statement is interrupted and
  // fails with sqlite.closed ("… interrupted: the database is closing"), so whoever waits
  // for the statement (a host joining its SQL threads at shutdown) is not held up to the
  // deadline. Must outlive the Database. nullptr: none.
  const std::atomic<bool>* abort = nullptr;
};

// TryExecute's question to its caller, asked once the statement is prepared and classified
// and before anything runs.
struct Admission {
  bool run = false;
  // For a read-only statement: give up, having changed nothing, once it has run this long
  // (0: no limit). Ignored for any other statement, which always runs to its end.
  std::chrono::microseconds read_budget{0};
};
// (classification, the connection is inside a transaction) → whether the call runs here.
using Admit = std::function<Admission(const Classification&, bool in_transaction)>;

struct StatementCacheStats {
  uint64_t hits = 0;       // Execute/ExecuteWrite calls served by a cached statement
  uint64_t misses = 0;     // … that prepared their statement
  uint64_t evictions = 0;  // entries dropped to make room
  uint64_t clears = 0;     // times the whole cache was dropped (schema change, error, Exec)
  size_t size = 0;         // entries now
};

class Database {
 public:
  // Opens `file_name` through VFS `vfs_name` and configures the connection (§7.5:
  // page_size 4096, journal_mode DELETE, synchronous NORMAL, temp_store MEMORY,
  // auto_vacuum NONE, locking_mode EXCLUSIVE); an empty `vfs_name` means SQLite's default
  // VFS. The VFS must outlive the Database (or its Close). Errors: sqlite.open_failed.
  static Result<std::unique_ptr<Database>> Open(const std::string& vfs_name,
                                                const std::string& file_name,
                                                DatabaseOptions options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  Result<QueryResult> Exec(std::string_view sql);
  Result<ExecuteResult> Execute(std::string_view sql, const std::optional<Params>& params = {});
  Result<ExecuteResult> ExecuteWrite(std::string_view sql,
                                     const std::optional<Params>& params = {});
  // Execute (`write_only` false) or ExecuteWrite, but only if `admit` lets it run: returns
  // std::nullopt — nothing ran, the database and the connection are as before — when
  // `admit` declines, when the statement cannot be classified (the ordinary call reports
  // why), or when a read-only statement ran past Admission::read_budget and was given up.
  // Otherwise the result (or error) is exactly the ordinary call's. A caller uses it to
  // decide where a statement runs from what it is (local_sql.cc: on the runtime's thread
  // when it needs no page I/O).
  std::optional<Result<ExecuteResult>> TryExecute(std::string_view sql,
                                                  const std::optional<Params>& params,
                                                  bool write_only, const Admit& admit);
  Result<QueryResult> Query(std::string_view sql, const std::optional<Params>& params = {});
  Result<RunResult> Run(std::string_view sql, const std::optional<Params>& params = {});

  StatementCacheStats statement_cache_stats() const;
  // True while a manual transaction is open (the writer is "held", §8.3 stickiness).
  bool InTransaction() const;
  // Closes the connection (rolling back an open transaction). Idempotent.
  void Close();
  bool closed() const;

  struct Impl;

 private:
  friend Result<Classification> Classify(Database& db, std::string_view sql);
  explicit Database(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Statement classification (§8.3), exposed for tests: prepares `sql` with a recording
// authorizer on `db`'s connection without executing it. A text with no statement is
// read-only. Errors: sqlite.closed, sqlite.invalid_sql (NUL byte), sqlite.prepare_failed.
struct Classification {
  bool has_statement = false;
  bool readonly = false;
  bool has_trailing_sql = false;
  bool transaction_control = false;
  bool attach = false;
  bool detach = false;
  bool pragma_usage = false;
  bool function_calls = false;
  bool schema_writes = false;
  bool temp_writes = false;
  bool write_operations = false;
  bool requires_write_route() const {
    return transaction_control || attach || detach || schema_writes || temp_writes ||
           write_operations;
  }
  bool reader_eligible() const {
    return has_statement && readonly && !has_trailing_sql && !requires_write_route();
  }
};
Result<Classification> Classify(Database& db, std::string_view sql);

}  // namespace keel::sql
