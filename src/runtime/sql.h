// Per-actor SQLite in the runtime core (actors.md §2.5, envoy-protocol.md §8.7) — sans-I/O.
//
// An actor type that declares a database gets one SqlBackend per instance (actor id +
// generation), created at its first SQL call and closed at the end of its shutdown:
//   * local-native: SQLite runs in the runtime process over the Keel VFS, whose pages live
//     in the engine's page store (get_pages/commit on the envoy connection). Needs a build
//     with SQLite: the native shell supplies it as RuntimeOptions::local_sqlite.
//   * remote: every statement travels to the engine (v4 exec/execute/execute_write) and runs
//     there on the same execution layer (keel::sql::Database), against the same page store.
// Selection (RuntimeOptions::sqlite_backend, env KEEL_SQLITE_BACKEND in the native shell):
// auto → local when the build has it, else remote; local → local, or sqlite.unavailable when
// the build has none (wasm); remote → remote. A remote backend on a v2/v3 connection fails
// each call with sqlite.remote_unavailable.
//
// Both backends sit behind the same front (SqlDatabase), which checks the remote SQL limits
// and that SQL text and text parameters are UTF-8 (types.h) before anything runs, so a
// statement either backend would refuse is refused the same way by both, and results are
// identical in every cell.
//
// Errors are thrown as ActorError with group "sqlite" (or the envoy's own error for a
// timeout / shutdown). Remote error texts are classified only by their `group.code` prefix
// (never by other words in the message):
//   sqlite.remote_fence_mismatch, sqlite.remote_unavailable,
//   sqlite.commit_too_large (a transaction over the page store's
//   cap; the local backend refuses it with the same error)        → the same code
//   the execution layer's own codes (sqlite.prepare_failed, execution_failed, invalid_sql,
//   invalid_bind_parameter, statement_timeout, closed, the limits' sql_too_large,
//   too_many_params, bind_too_large, response_too_large)          → the same code (parity
//                                                                   with local execution)
//   anything else the engine answers                              → sqlite.remote_execution_failed
//   a request sent before the connection dropped                  →
//   sqlite.remote_indeterminate_result
// Thread-safety: the runtime's one executor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "runtime/task.h"
#include "sqlite/types.h"
#include "value/value.h"

namespace keel::envoy {
class EnvoyClient;
}

namespace keel::runtime {

enum class SqliteBackendKind { kLocal, kRemote };
enum class SqliteBackendChoice { kAuto, kLocal, kRemote };
// "auto" | "local" | "remote" (case-insensitive). Errors: config.invalid_sqlite_backend.
Result<SqliteBackendChoice> ParseSqliteBackendChoice(std::string_view text);
std::string_view SqliteBackendName(SqliteBackendKind kind);  // "local" | "remote"

// One actor generation's database. Calls may overlap (an actor's concurrent actions); a
// backend runs them one at a time in call order.
class SqlBackend {
 public:
  virtual ~SqlBackend() = default;
  virtual SqliteBackendKind kind() const = 0;
  virtual Task<sql::QueryResult> Exec(std::string sql) = 0;
  // `write`: execute_write (always the writer, route WRITE).
  virtual Task<sql::ExecuteResult> Execute(std::string sql, std::optional<sql::Params> params,
                                           bool write) = 0;
  // Lets calls already made finish, then releases the database. Idempotent.
  virtual Task<void> Close() = 0;
};

// Held commits: local-native page commits sent without waiting for their answer. On a
// connection where the engine holds outputs (EnvoyClient::engine_holds_outputs), the
// local-native backend lets a statement finish as soon as its commit is written to the
// socket; the engine keeps every later answer of the actor from clients until that commit
// is durable, exactly as for the instance's KV writes (docs/runtime.md, "Held outputs").
// This object is how the backend tells its instance what is in flight:
//   * Sent(epoch) when a commit was written to the socket of `epoch` without waiting: the
//     instance's outputs may then leave only on that socket (or once nothing is pending);
//   * Done(status) with the commit's answer: a failure means outputs that depended on it
//     may already be with the engine, which withholds them for good, so the instance ends
//     its generation (Instance::EndGeneration) — the next one starts from durable state.
// The backend's Close waits for every pending commit (WhenSettled): an instance reports
// itself stopped only after its last commit is durable or known lost.
// Thread-safety: the runtime's one executor.
class HeldCommits {
 public:
  using Listener = std::function<void(const Status& outcome)>;

  void Sent(uint64_t socket_epoch) {
    ++pending_;
    epoch_ = socket_epoch;
  }
  void Done(const Status& outcome) {
    if (pending_ > 0) --pending_;
    if (listener_) listener_(outcome);
    if (pending_ == 0) {
      std::vector<std::function<void()>> waiters;
      waiters.swap(settled_);
      for (auto& w : waiters) w();
    }
  }
  size_t pending() const { return pending_; }
  // The socket the newest pending commit went out on.
  uint64_t epoch() const { return epoch_; }
  // The instance's hook, called after each Done; cleared (nullptr) when it goes away.
  void SetListener(Listener listener) { listener_ = std::move(listener); }
  // Whether commits may be held now: not while the instance loads (a start's writes gate
  // no output to a client; a failed one must fail the start, as a KV write's does).
  bool allowed() const { return allowed_; }
  void set_allowed(bool allowed) { allowed_ = allowed; }
  // Runs `k` once nothing is pending (now, if nothing is).
  void WhenSettled(std::function<void()> k) {
    if (pending_ == 0) {
      k();
      return;
    }
    settled_.push_back(std::move(k));
  }

 private:
  size_t pending_ = 0;
  uint64_t epoch_ = 0;
  bool allowed_ = false;
  Listener listener_;
  std::vector<std::function<void()>> settled_;
};

struct SqlBackendContext {
  std::string actor_id;
  uint32_t generation = 0;
  std::string namespace_name;
  envoy::EnvoyClient* client = nullptr;
  // The instance's held-commit tracker (local-native only uses it); never null from an
  // Instance.
  std::shared_ptr<HeldCommits> held_commits;
};
using LocalSqlFactory = std::function<std::unique_ptr<SqlBackend>(const SqlBackendContext&)>;

std::unique_ptr<SqlBackend> MakeRemoteSqlBackend(const SqlBackendContext& context);

// Maps a remote SqliteErrorResponse text to the error the actor sees (see above).
Error ClassifyRemoteSqlError(std::string_view text);

// The front every SQL call of an instance goes through: limits, closed state, write mode.
class SqlDatabase {
 public:
  explicit SqlDatabase(std::unique_ptr<SqlBackend> backend,
                       std::shared_ptr<HeldCommits> held_commits = nullptr)
      : backend_(std::move(backend)), held_commits_(std::move(held_commits)) {}
  SqliteBackendKind kind() const { return backend_->kind(); }
  // The backend's held commits (the instance's gate reads them); null when none were given.
  HeldCommits* held_commits() const { return held_commits_.get(); }

  Task<sql::QueryResult> Exec(std::string sql);
  // In write mode an Execute is an ExecuteWrite.
  Task<sql::ExecuteResult> Execute(std::string sql, std::optional<sql::Params> params);
  Task<sql::ExecuteResult> ExecuteWrite(std::string sql, std::optional<sql::Params> params);
  Task<void> Close();
  bool closed() const { return closed_; }

  // Nested write-mode scopes (migrations, Db::write_mode).
  void EnterWriteMode() { ++write_mode_; }
  void LeaveWriteMode() { --write_mode_; }
  bool write_mode() const { return write_mode_ > 0; }

 private:
  void CheckUsable(std::string_view sql, const std::optional<sql::Params>& params) const;
  std::unique_ptr<SqlBackend> backend_;
  std::shared_ptr<HeldCommits> held_commits_;
  bool closed_ = false;
  int write_mode_ = 0;
};

// ---- Values between actors and SQL (actors.md §2.5 bindings) ----

// null/undefined → Null, bool → Integer 0/1, integers → Integer (above INT64_MAX is an
// error), float → Float, text → Text, bytes → Blob. Errors: sqlite.invalid_bind_parameter.
Result<sql::Value> ToSqlValue(const Value& value, std::string_view name);
Value FromSqlValue(const sql::Value& value);
// Positional bindings from an array of Values.
Result<sql::Params> ToSqlParams(const Value::Array& args);
// Named bindings: `:name`, `@name` and `$name` in `sql` (outside string literals, quoted
// identifiers and comments) become positions in order of first appearance — SQLite's own
// numbering of named parameters — and take their values from the map `named`, whose keys
// are the names without the prefix character. A name missing from the map →
// sqlite.invalid_bind_parameter; `?`/`?NNN` placeholders mixed with names → the same error.
Result<sql::Params> BindNamed(std::string_view sql, const Value& named);
// [{column: value, …}, …]; a duplicated column name keeps the last value.
Value RowsToObjects(const std::vector<std::string>& columns, const std::vector<sql::Row>& rows);

}  // namespace keel::runtime
