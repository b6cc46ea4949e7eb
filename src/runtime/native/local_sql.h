// LocalSqlHost: the native runtime's local-native SQLite backend (issue 7, actors.md §2.5,
// envoy-protocol.md §7.5). Each actor generation that uses its database gets a
// keel::sql::Database — the same execution layer the engine's remote executor runs — over
// one process-wide KeelVfs whose files are served by get_pages / commit requests on the
// runtime's envoy connection, with the generation as the fence (expectedGeneration). The
// database therefore lives in the engine's page store and survives the runtime.
//
// Threads: SQLite is blocking, the runtime core is not. Statements run on a small pool of
// SQL threads (`threads`, default 2); one database's statements run one at a time in call
// order (a serial queue per database, served round-robin, so a busy actor cannot starve
// the others). A SQL thread that runs out of work first waits up to 50 µs for the next job,
// yielding its core, before it parks (one thread at a time): an actor's statements arrive
// one after another, and parking between them costs two thread switches per statement. A
// page request from a SQL thread is handed to the runtime's executor (where the envoy
// client lives) and the SQL thread waits for its answer, bounded by `page_request_timeout`.
// Results go back to the runtime's executor, where the awaiting actor coroutine resumes.
//
// Inline statements: a statement that needs no page I/O runs right away on the runtime's
// executor instead — when nothing of its database is queued, the VFS holds every page of
// the database (KeelVfs::FullyCached; after the first statements on a SQL thread the rest
// of a database that fits vfs_cache_pages is prefetched) and the statement cannot end a
// write transaction: a read-only statement, or a write inside an open transaction (never
// transaction control, PRAGMA, ATTACH/DETACH). Its writes only reach the VFS buffer and
// the in-memory journal; the commit is made at COMMIT (or by an autocommit write), on a
// SQL thread, and is durable before that statement answers, as before. With held commits
// (the engine holds outputs and the instance allows it, runtime/sql.h HeldCommits) a commit
// is only written to the socket, never waited for, so autocommit writes and transaction
// control run inline too (still never PRAGMA, ATTACH/DETACH or trailing SQL); on a SQL
// thread such a commit costs one hand-off to the executor instead of a round trip. A
// held commit that fails marks the database failed: every later page request of it fails
// (actor.storage_failed) and the instance ends its generation. A read-only
// statement that runs past 2 ms is given up (nothing happened) and runs on a SQL thread; a
// write inline cannot be given up, so one that took over 2 ms keeps that database's writes
// off the executor for its next 256 statements. Same keel::sql::Database calls, so results,
// errors and routes do not depend on where a statement ran.
//
// Failure: a commit whose outcome is unknown (connection lost after it was sent:
// sqlite.indeterminate_commit, a timeout) fails the statement; the VFS drops its cache,
// learns the committed size again and SQLite rolls the transaction back with one more
// commit, so the database is the state before or after that transaction (before, once the
// rollback commit lands) and never has it twice — the envoy never resends a commit. A
// statement that failed because a page request failed reports that request's error
// (sqlite.indeterminate_commit, sqlite.remote_fence_mismatch, envoy.sqlite_timeout,
// sqlite.closed, ...; SQLite's own "disk I/O error" is in the message), and the connection
// is reopened from the page store at the next statement (an open transaction is gone), so
// a dead VFS handle never lingers. Shutdown() fails every waiting page request with
// sqlite.closed so no SQL thread waits on an executor that no longer runs, and interrupts
// running statements (sqlite.closed) so none holds a SQL thread up to its deadline.
//
// Lifetime: create before the Runtime whose RuntimeOptions::local_sqlite it feeds and
// destroy after it. Backends keep the shared core alive: one destroyed after its host runs
// its remaining calls on the caller's thread (page requests fail with sqlite.closed) and
// closes its database there. Thread-safety: Factory()'s backends are used on the runtime
// executor; everything else is internal.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/executor.h"
#include "runtime/sql.h"
#include "storage/vfs/keel_vfs.h"

namespace keel {

struct LocalSqlOptions {
  size_t threads = 2;
  std::chrono::milliseconds page_request_timeout{35000};
  // Committed pages the VFS keeps per open database (SQLite's own page cache sits above).
  size_t vfs_cache_pages = 256;
  // Run a statement that needs no page I/O on the runtime's executor instead of a SQL
  // thread (see "Inline statements" above). The environment variable
  // KEEL_SQLITE_INLINE=0 turns it off (A/B measurements).
  bool inline_statements = true;
  // A read-only statement running inline is given up after this long (and runs on a SQL
  // thread); an inline write that took longer keeps its database's writes off the executor
  // for its next 256 statements. Wall-clock times: tests that count where statements ran
  // raise them, so a preempted test machine does not change the route.
  std::chrono::microseconds inline_read_budget{2000};
  std::chrono::microseconds inline_slow_write{2000};
};

// Where statements ran (tests, metrics).
struct LocalSqlStats {
  uint64_t inline_statements = 0;  // Execute calls run on the runtime's executor
  uint64_t thread_statements = 0;  // Exec/Execute calls run on a SQL thread
  uint64_t inline_given_up = 0;    // read-only statements given up inline (over budget)
  uint64_t prefetches = 0;         // databases loaded whole into the VFS cache
};

class LocalSqlHost {
 public:
  // `runtime_executor`: where the envoy client and the runtime core run.
  LocalSqlHost(Executor& runtime_executor, LocalSqlOptions options = {});
  ~LocalSqlHost();  // Shutdown(), then joins the SQL threads
  LocalSqlHost(const LocalSqlHost&) = delete;
  LocalSqlHost& operator=(const LocalSqlHost&) = delete;

  // For RuntimeOptions::local_sqlite.
  runtime::LocalSqlFactory Factory();
  // Fails waiting page requests and every later one with sqlite.closed, and interrupts
  // running statements (sqlite.closed). Idempotent.
  void Shutdown();
  // Databases currently open (tests, metrics).
  size_t open_databases() const;
  LocalSqlStats stats() const;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace keel
