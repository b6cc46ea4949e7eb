#include "runtime/native/local_sql.h"

#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/native/system_clock.h"
#include "base/random.h"
#include "envoy/envoy_client.h"
#include "runtime/core.h"
#include "sqlite/database.h"
#include "storage/page_store.h"

namespace keel {
namespace {

namespace latest = protocol::envoy::latest;

constexpr std::string_view kLog = "sqlite";

// How long an idle SQL thread waits for the next job before it parks, yielding its core to
// any other runnable thread meanwhile: above an actor's statement-to-statement gap (the
// answer's trip back to the runtime's executor and the next statement's trip here), short
// enough to cost little when no statement follows. One SQL thread waits so at a time.
constexpr std::chrono::microseconds kSpin{50};

// A read-only statement run inline on the runtime's executor (see LocalSqlBackend::TryInline)
// is given up after LocalSqlOptions::inline_read_budget and run again on a SQL thread, so a
// heavy query does not hold the executor (and with it every actor and the envoy
// connection). An inline statement that took longer than inline_slow_write (a write cannot
// be given up halfway) keeps the database's writes off the executor for the next
// kInlinePause statements.
constexpr int kInlinePause = 256;

// One answer a SQL thread waits for.
template <typename T>
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<T>> value;
  void Set(Result<T> r) {
    std::lock_guard lock(mu);
    if (value.has_value()) return;
    value.emplace(std::move(r));
    cv.notify_all();
  }
};

}  // namespace

// The first page I/O failure (get_pages / commit) of the job running on a database. Written
// by its EnvoyPageSource, read by the job: both on the SQL thread running that job.
struct PageFailure {
  std::optional<Error> error;
  // Set while a statement runs inline on the runtime's executor, which a page request
  // would deadlock (it waits for that executor): the request fails at once instead
  // (sqlite.would_block). Never expected: a statement only runs inline when the VFS holds
  // every page it can read and it cannot end a write transaction.
  bool forbid_io = false;
  // Set beside forbid_io when the engine holds outputs now: the inline statement's commit
  // is written to the socket right there, without waiting for its answer (held commits).
  bool inline_commit = false;
  // A commit sent without waiting failed (written on the runtime's executor, read by
  // whichever thread runs the next statement): the database's memory is ahead of what is
  // stored, so every later page request fails and the instance ends its generation.
  std::atomic<bool> held_failed{false};
};

// One actor generation's database: its serial job queue and, on the SQL threads, its
// connection.
struct LocalDb {
  std::string file_name;
  std::shared_ptr<storage::PageSource> source;
  std::shared_ptr<PageFailure> page_failure = std::make_shared<PageFailure>();
  // Guarded by Core::mu.
  std::deque<std::function<void()>> jobs;
  bool scheduled = false;
  // SQL threads only (one job of this database runs at a time).
  std::unique_ptr<sql::Database> database;
  bool attached = false;
  bool closed = false;
  // Set by a job: posted to the runtime's executor once the job is done and the database
  // is no longer scheduled, so the next statement the answer leads to can run inline.
  std::function<void()> then;
  // Runtime executor only: statements left before writes may run inline again.
  int inline_write_pause = 0;
};

struct LocalSqlHost::Core : std::enable_shared_from_this<LocalSqlHost::Core> {
  Core(Executor& executor, LocalSqlOptions o)
      : runtime_executor(executor),
        options(o),
        random(static_cast<uint64_t>(clock.SystemNowMs()) ^ reinterpret_cast<uintptr_t>(this)),
        vfs("keel-local-" + std::to_string(reinterpret_cast<uintptr_t>(this)), clock, random,
            storage::KeelVfsOptions{o.vfs_cache_pages == 0 ? 1 : o.vfs_cache_pages, 8}) {}

  Executor& runtime_executor;
  const LocalSqlOptions options;
  SystemClock clock;
  Random random;
  storage::KeelVfs vfs;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<LocalDb>> ready;  // databases with jobs, round-robin
  // ready.size(), readable without mu by a spinning SQL thread.
  std::atomic<size_t> ready_count{0};
  // SQL threads spinning for the next job (at most one); guarded by mu. Post skips the
  // condition variable while one spins: it will see the job.
  size_t spinners = 0;
  std::vector<std::thread> threads;
  bool stopping = false;
  bool joined = false;  // Stop finished: Post runs jobs inline
  // Page requests SQL threads wait for, failed by Shutdown.
  std::map<uint64_t, std::function<void()>> aborts;
  uint64_t next_call = 0;
  bool aborted = false;
  // Set by Shutdown: a running statement is interrupted (sqlite.closed) instead of holding
  // the SQL thread — and the host's destructor joining it — up to the statement deadline.
  std::atomic<bool> abort_statements{false};
  std::atomic<size_t> open{0};
  std::atomic<uint64_t> inline_statements{0};
  std::atomic<uint64_t> thread_statements{0};
  std::atomic<uint64_t> inline_given_up{0};
  std::atomic<uint64_t> prefetches{0};

  // Queues `job` on `db`'s serial queue. Once the host has stopped (its SQL threads are
  // joined) the job runs here, on the caller's thread: its page requests fail at once
  // (Shutdown), and nothing is left queued that would keep the database open.
  void Post(const std::shared_ptr<LocalDb>& db, std::function<void()> job) {
    {
      std::lock_guard lock(mu);
      if (!joined) {
        db->jobs.push_back(std::move(job));
        if (!db->scheduled) {
          db->scheduled = true;
          ready.push_back(db);
          ready_count.store(ready.size(), std::memory_order_release);
          if (spinners == 0) cv.notify_one();
        }
        if (threads.empty() && !stopping) {
          const size_t n = options.threads == 0 ? 1 : options.threads;
          for (size_t i = 0; i < n; ++i) threads.emplace_back([this] { Work(); });
        }
        return;
      }
    }
    job();
    if (db->then) runtime_executor.Post(std::exchange(db->then, nullptr));
  }

  void Work() {
    std::unique_lock lock(mu);
    for (;;) {
      if (ready.empty() && !stopping && spinners == 0) {
        // An actor's statements come one after another, each posted when the previous
        // answer reached the runtime's executor (~10 µs later). Parking in between costs
        // this thread two context switches per statement, so one SQL thread first waits for
        // the next job a bounded time, yielding (see kSpin).
        ++spinners;
        lock.unlock();
        const auto until = std::chrono::steady_clock::now() + kSpin;
        while (ready_count.load(std::memory_order_acquire) == 0 &&
               std::chrono::steady_clock::now() < until) {
          std::this_thread::yield();  // not a pause loop: on 2 cores that starves the runtime
        }
        lock.lock();
        --spinners;
      }
      cv.wait(lock, [this] { return !ready.empty() || stopping; });
      if (ready.empty()) return;  // stopping, and every queued job has run
      std::shared_ptr<LocalDb> db = std::move(ready.front());
      ready.pop_front();
      ready_count.store(ready.size(), std::memory_order_release);
      if (!ready.empty()) cv.notify_one();  // Post did not wake anyone while this one spun
      std::function<void()> job = std::move(db->jobs.front());
      db->jobs.pop_front();
      lock.unlock();
      job();
      job = nullptr;
      std::function<void()> then = std::move(db->then);
      db->then = nullptr;
      lock.lock();
      if (db->jobs.empty()) {
        db->scheduled = false;
      } else {
        ready.push_back(std::move(db));
        ready_count.store(ready.size(), std::memory_order_release);
      }
      if (then) {
        lock.unlock();
        runtime_executor.Post(std::move(then));
        lock.lock();
      }
    }
  }

  // Runtime executor: takes `db` for a statement run on the calling thread; false when a
  // job of it is queued or running on a SQL thread (or the host has stopped).
  bool Claim(LocalDb& db) {
    std::lock_guard lock(mu);
    if (db.scheduled || !db.jobs.empty() || joined || stopping || aborted) return false;
    db.scheduled = true;
    return true;
  }
  // Gives a claimed `db` back (to the SQL threads, should jobs have been queued meanwhile).
  void Release(const std::shared_ptr<LocalDb>& db) {
    std::lock_guard lock(mu);
    if (db->jobs.empty() || joined) {
      db->scheduled = false;
      return;
    }
    ready.push_back(db);
    ready_count.store(ready.size(), std::memory_order_release);
    if (spinners == 0) cv.notify_one();
  }

  // Sends one page request from a SQL thread through the runtime's executor and waits.
  template <typename T>
  Result<T> Call(std::function<void(std::function<void(Result<T>)>)> send) {
    auto waiter = std::make_shared<Waiter<T>>();
    uint64_t id = 0;
    {
      std::lock_guard lock(mu);
      if (aborted) return Unexpected{Error{"sqlite", "closed", "Database is closed: the runtime is shutting down"}};
      id = ++next_call;
      aborts[id] = [waiter] {
        waiter->Set(Unexpected{Error{"sqlite", "closed", "Database is closed: the runtime is shutting down"}});
      };
    }
    runtime_executor.Post([waiter, send = std::move(send)] {
      send([waiter](Result<T> r) { waiter->Set(std::move(r)); });
    });
    {
      std::unique_lock lock(waiter->mu);
      waiter->cv.wait_for(lock, options.page_request_timeout,
                          [&] { return waiter->value.has_value(); });
    }
    {
      std::lock_guard lock(mu);
      aborts.erase(id);
    }
    std::lock_guard lock(waiter->mu);
    if (!waiter->value.has_value()) {
      return Unexpected{Error{"envoy", "sqlite_timeout", "sqlite page request timed out"}};
    }
    return std::move(*waiter->value);
  }

  void Shutdown() {
    std::map<uint64_t, std::function<void()>> pending;
    {
      std::lock_guard lock(mu);
      aborted = true;
      pending.swap(aborts);
    }
    abort_statements.store(true, std::memory_order_relaxed);
    for (auto& [id, abort] : pending) abort();
  }

  void Stop() {
    Shutdown();
    std::vector<std::thread> joining;
    {
      std::lock_guard lock(mu);
      stopping = true;
      joining.swap(threads);
    }
    cv.notify_all();
    for (auto& t : joining) t.join();
    // Jobs queued after the last worker left (never, unless Post raced the join) run here.
    std::deque<std::shared_ptr<LocalDb>> left;
    {
      std::lock_guard lock(mu);
      joined = true;
      left.swap(ready);
    }
    for (auto& db : left) {
      while (!db->jobs.empty()) {
        std::function<void()> job = std::move(db->jobs.front());
        db->jobs.pop_front();
        job();
        if (db->then) runtime_executor.Post(std::exchange(db->then, nullptr));
      }
      db->scheduled = false;
    }
  }

  // SQL thread: opens the database on first use.
  Status EnsureOpen(LocalDb& db) {
    if (db.closed) return Unexpected{Error{"sqlite", "closed", "Database is closed."}};
    if (db.database != nullptr) return {};
    if (!db.attached) {
      if (Status s = vfs.Attach(db.file_name, db.source); !s.ok()) return s;
      db.attached = true;
    }
    sql::DatabaseOptions database_options;
    database_options.abort = &abort_statements;
    auto opened = sql::Database::Open(vfs.name(), db.file_name, database_options);
    if (!opened.ok()) return Unexpected{opened.error()};
    db.database = std::move(*opened);
    open.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // SQL thread: closes the connection and forgets the file; the next EnsureOpen reopens it
  // from the page store (after a page I/O failure: whatever the VFS held is suspect).
  void ResetDb(LocalDb& db) {
    if (db.database != nullptr) {
      db.database->Close();
      db.database.reset();
      open.fetch_sub(1, std::memory_order_relaxed);
    }
    if (db.attached) {
      if (Status s = vfs.Detach(db.file_name); !s.ok()) {
        LogWarn(kLog, "detaching a database failed", {{"file", db.file_name}, {"error", s.error().ToString()}});
      }
      db.attached = false;
    }
  }

  // SQL thread: closes and forgets the file for good.
  void CloseDb(LocalDb& db) {
    ResetDb(db);
    db.closed = true;
  }
};

namespace {

// Whether a commit of this database may be sent without waiting for its answer now: the
// instance allows it (it is not loading), no held commit of it failed, and the engine holds
// outputs on the open connection. Runtime executor only.
bool CanHoldCommit(envoy::EnvoyClient* client, const runtime::HeldCommits* held,
                   const PageFailure& failure) {
  return held != nullptr && held->allowed() &&
         !failure.held_failed.load(std::memory_order_acquire) && client->engine_holds_outputs();
}

// Runtime executor: writes a commit to the connection. When it may be held (CanHoldCommit),
// `answer` runs at once with success and the engine's real answer goes to `held`; otherwise
// `answer` gets the engine's answer.
void SendCommit(envoy::EnvoyClient* client, const std::shared_ptr<runtime::HeldCommits>& held,
                const std::shared_ptr<PageFailure>& failure, latest::SqliteCommitRequest req,
                std::function<void(Result<latest::SqliteCommitResponse>)> answer) {
  if (!CanHoldCommit(client, held.get(), *failure)) {
    client->SqliteCommit(std::move(req), std::move(answer));
    return;
  }
  // An answer given inside the call (the client shutting down, a request the connection
  // cannot carry) never reached the engine: it goes to the statement as usual.
  struct Sending {
    bool now = true;
    std::optional<Result<latest::SqliteCommitResponse>> answer;
  };
  auto sending = std::make_shared<Sending>();
  client->SqliteCommit(std::move(req), [held, failure, sending](Result<latest::SqliteCommitResponse> r) {
    if (sending->now) {
      sending->answer.emplace(std::move(r));
      return;
    }
    Status outcome = OkStatus();
    if (!r.ok()) {
      outcome = Unexpected{r.error()};
    } else if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
      outcome = Unexpected{Error::FromString(err->message)};
    }
    if (!outcome.ok()) {
      failure->held_failed.store(true, std::memory_order_release);
      LogError(kLog, "a commit sent without waiting failed; the actor's generation ends",
               {{"error", outcome.error().ToString()}});
    }
    held->Done(outcome);
  });
  sending->now = false;
  if (sending->answer.has_value()) {
    answer(std::move(*sending->answer));
    return;
  }
  held->Sent(client->socket_epoch());
  answer(latest::SqliteCommitResponse{latest::SqliteCommitOk{}});
}

Error HeldCommitFailed() {
  return Error{"actor", "storage_failed",
               "an earlier commit of this database failed after the answers depending on it "
               "were sent; the actor restarts from its durable state"};
}

// get_pages / commit on the envoy connection, fenced by the generation.
class EnvoyPageSource final : public storage::PageSource {
 public:
  EnvoyPageSource(std::shared_ptr<LocalSqlHost::Core> core, envoy::EnvoyClient* client,
                  std::string actor_id, uint32_t generation, std::shared_ptr<PageFailure> failure,
                  std::shared_ptr<runtime::HeldCommits> held)
      : core_(std::move(core)),
        client_(client),
        actor_id_(std::move(actor_id)),
        generation_(generation),
        failure_(std::move(failure)),
        held_(std::move(held)) {}

  Result<std::vector<storage::Page>> GetPages(const std::vector<uint32_t>& pgnos) override {
    if (failure_->held_failed.load(std::memory_order_acquire)) return Failed(HeldCommitFailed());
    if (failure_->forbid_io) return Failed(WouldBlock());
    latest::SqliteGetPagesRequest req;
    req.actor_id = actor_id_;
    req.pgnos = pgnos;
    req.expected_generation = generation_;
    envoy::EnvoyClient* client = client_;
    auto r = core_->Call<latest::SqliteGetPagesResponse>(
        [client, req = std::move(req)](std::function<void(Result<latest::SqliteGetPagesResponse>)> done) mutable {
          client->SqliteGetPages(std::move(req), std::move(done));
        });
    if (!r.ok()) return Failed(r.error());
    if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
      Error e = Error::FromString(err->message);
      // A database never committed to: the VFS opens it empty; not a failure.
      if (e.Is("sqlite", "not_found")) return Unexpected{std::move(e)};
      return Failed(std::move(e));
    }
    std::vector<storage::Page> pages;
    auto& ok = *r->get_if<latest::SqliteGetPagesOk>();
    pages.reserve(ok.pages.size());
    for (auto& p : ok.pages) pages.push_back(storage::Page{p.pgno, std::move(p.bytes)});
    return pages;
  }

  Status Commit(std::vector<storage::DirtyPage> dirty_pages, uint32_t db_size_pages,
                int64_t now_ms) override {
    if (failure_->held_failed.load(std::memory_order_acquire)) return Failed(HeldCommitFailed());
    // Inline (on the runtime's executor): only a commit that needs no wait may be sent.
    if (failure_->forbid_io &&
        !(failure_->inline_commit && CanHoldCommit(client_, held_.get(), *failure_))) {
      return Failed(WouldBlock());
    }
    // The engine refuses a commit over its cap; one over the frame limit would instead close
    // the envoy connection, ending every actor on it. Refused here, it fails only this
    // statement, like the engine's refusal.
    size_t commit_bytes = 0;
    for (const auto& p : dirty_pages) commit_bytes += p.bytes.size();
    if (commit_bytes > storage::kDefaultMaxCommitBytes) {
      return Failed(storage::CommitTooLargeError(commit_bytes, storage::kDefaultMaxCommitBytes));
    }
    latest::SqliteCommitRequest req;
    req.actor_id = actor_id_;
    req.dirty_pages.reserve(dirty_pages.size());
    for (auto& p : dirty_pages) req.dirty_pages.push_back(latest::SqliteDirtyPage{p.pgno, std::move(p.bytes)});
    req.db_size_pages = db_size_pages;
    req.now_ms = now_ms;
    req.expected_generation = generation_;
    envoy::EnvoyClient* client = client_;
    Result<latest::SqliteCommitResponse> r = Unexpected{WouldBlock()};
    if (failure_->forbid_io) {
      SendCommit(client, held_, failure_, std::move(req),
                 [&r](Result<latest::SqliteCommitResponse> answer) { r = std::move(answer); });
    } else {
      r = core_->Call<latest::SqliteCommitResponse>(
          [client, held = held_, failure = failure_, req = std::move(req)](
              std::function<void(Result<latest::SqliteCommitResponse>)> done) mutable {
            SendCommit(client, held, failure, std::move(req), std::move(done));
          });
    }
    if (!r.ok()) return Failed(r.error());
    if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
      return Failed(Error::FromString(err->message));
    }
    return {};
  }

 private:
  static Error WouldBlock() {
    return Error{"sqlite", "would_block",
                 "a page request was needed by a statement running on the runtime's thread"};
  }

  // Remembers the job's first page I/O failure (the statement reports it) and returns it.
  Unexpected<Error> Failed(Error e) {
    if (!failure_->error.has_value()) failure_->error = e;
    return Unexpected{std::move(e)};
  }

  std::shared_ptr<LocalSqlHost::Core> core_;
  envoy::EnvoyClient* client_;
  std::string actor_id_;
  uint32_t generation_;
  std::shared_ptr<PageFailure> failure_;
  std::shared_ptr<runtime::HeldCommits> held_;
};

[[noreturn]] void Throw(const Error& e) { throw runtime::ActorError(e.group(), e.code(), e.message()); }

class LocalSqlBackend final : public runtime::SqlBackend {
 public:
  LocalSqlBackend(std::shared_ptr<LocalSqlHost::Core> core, const runtime::SqlBackendContext& c)
      : core_(std::move(core)),
        db_(std::make_shared<LocalDb>()),
        client_(c.client),
        held_(c.held_commits) {
    db_->file_name = c.actor_id + "-g" + std::to_string(c.generation);
    db_->source = std::make_shared<EnvoyPageSource>(core_, c.client, c.actor_id, c.generation,
                                                    db_->page_failure, held_);
  }
  ~LocalSqlBackend() override {
    if (!closing_) core_->Post(db_, [core = core_.get(), db = db_] { core->CloseDb(*db); });
  }

  runtime::SqliteBackendKind kind() const override { return runtime::SqliteBackendKind::kLocal; }

  Task<sql::QueryResult> Exec(std::string sql) override {
    // g++ 12: a class temporary inside a co_await expression is destroyed twice; name it.
    std::function<Result<sql::QueryResult>(sql::Database&)> job =
        [sql = std::move(sql)](sql::Database& d) { return d.Exec(sql); };
    Result<sql::QueryResult> r = co_await Run<sql::QueryResult>(std::move(job));
    if (!r.ok()) Throw(r.error());
    co_return std::move(*r);
  }

  Task<sql::ExecuteResult> Execute(std::string sql, std::optional<sql::Params> params,
                                   bool write) override {
    if (std::optional<Result<sql::ExecuteResult>> inline_result = TryInline(sql, params, write)) {
      if (!inline_result->ok()) Throw(inline_result->error());
      co_return std::move(**inline_result);
    }
    std::function<Result<sql::ExecuteResult>(sql::Database&)> job =
        [sql = std::move(sql), params = std::move(params), write](sql::Database& d) {
          return write ? d.ExecuteWrite(sql, params) : d.Execute(sql, params);
        };
    Result<sql::ExecuteResult> r = co_await Run<sql::ExecuteResult>(std::move(job));
    if (!r.ok()) Throw(r.error());
    co_return std::move(*r);
  }

  Task<void> Close() override {
    if (closing_) co_return;
    closing_ = true;
    Completion<bool> done;
    core_->Post(db_, [core = core_.get(), db = db_, done] {
      core->CloseDb(*db);
      db->then = [done] { done.Resolve(true); };
    });
    co_await done;
    if (held_ != nullptr) {
      // The instance reports itself stopped after this: its last commits must be durable
      // (or known lost) first.
      Completion<bool> settled;
      held_->WhenSettled([settled] { settled.Resolve(true); });
      co_await settled;
    }
  }

 private:
  // Runs the statement here, on the runtime's executor, when that needs no page I/O and
  // nothing of this database is queued: the database is open, the VFS holds every page it
  // can read (KeelVfs::FullyCached), and the statement is one that cannot end a write
  // transaction — a read-only statement, or a write inside an open transaction (never
  // transaction control, PRAGMA, ATTACH/DETACH: those may commit or do anything). Writes
  // then only reach the VFS's buffer and the in-memory journal; the commit happens later,
  // at COMMIT, on a SQL thread. This spares the two thread hand-offs per statement (~4
  // context switches) that dominate a batch of small statements. A read-only statement
  // running past the inline read budget is given up (SQLite undoes nothing for an interrupted
  // read-only statement: nothing happened) and runs on a SQL thread. std::nullopt: run it
  // there. Results, errors and routes are those of the SQL-thread path (the same
  // keel::sql::Database call); SQLite is used by one thread at a time (Claim).
  std::optional<Result<sql::ExecuteResult>> TryInline(const std::string& sql,
                                                      const std::optional<sql::Params>& params,
                                                      bool write) {
    LocalDb& db = *db_;
    if (!core_->options.inline_statements || !core_->Claim(db)) return std::nullopt;
    std::optional<Result<sql::ExecuteResult>> r;
    if (db.database != nullptr && !db.closed && core_->vfs.FullyCached(db.file_name)) {
      const bool writes = db.inline_write_pause == 0;
      if (db.inline_write_pause > 0) --db.inline_write_pause;
      // With held commits a statement that commits only writes the commit to the socket,
      // so writes outside a transaction and transaction control may run here too.
      const bool commits = CanHoldCommit(client_, held_.get(), *db.page_failure);
      const std::chrono::microseconds read_budget = core_->options.inline_read_budget;
      const sql::Admit admit = [writes, commits, read_budget](const sql::Classification& c,
                                                              bool in_transaction) {
        sql::Admission a;
        if (c.attach || c.detach || c.pragma_usage || c.has_trailing_sql) return a;
        if (c.transaction_control) {
          a.run = writes && commits;
        } else if (c.readonly) {
          a.run = true;
          a.read_budget = read_budget;
        } else {
          a.run = writes && (in_transaction || commits);
        }
        return a;
      };
      db.page_failure->error.reset();
      db.page_failure->forbid_io = true;
      db.page_failure->inline_commit = commits;
      const auto start = std::chrono::steady_clock::now();
      bool admitted = false;
      bool admitted_write = false;
      const sql::Admit counted = [&](const sql::Classification& c, bool in_transaction) {
        sql::Admission a = admit(c, in_transaction);
        admitted = a.run;
        admitted_write = a.run && !c.readonly;
        return a;
      };
      r = db.database->TryExecute(sql, params, write, counted);
      if (r.has_value()) {
        core_->inline_statements.fetch_add(1, std::memory_order_relaxed);
      } else if (admitted) {
        core_->inline_given_up.fetch_add(1, std::memory_order_relaxed);
      }
      const auto took = std::chrono::steady_clock::now() - start;
      db.page_failure->forbid_io = false;
      db.page_failure->inline_commit = false;
      // Only a write that ran here counts: a statement not admitted ran nothing, and a read
      // over its budget was given up.
      if (admitted_write && took > core_->options.inline_slow_write) {
        db.inline_write_pause = kInlinePause;
      }
      if (std::optional<Error> page = std::exchange(db.page_failure->error, std::nullopt)) {
        // Not expected (see PageFailure::forbid_io), but for a commit refused before it was
        // sent. SQLite saw an I/O error and may have rolled back; report it as the
        // SQL-thread path reports a page failure.
        if (!page->Is("sqlite", "commit_too_large")) {
          LogWarn(kLog, "a statement running inline needed page I/O",
                  {{"file", db.file_name}, {"error", page->ToString()}});
        }
        if (!r.has_value() || !r->ok()) {
          // Also when the call was given up: a rerun elsewhere must not find a connection
          // that lost its transaction to the I/O error.
          const std::string what = r.has_value() ? r->error().ToString() : "not run";
          r = Unexpected{Error(page->group(), page->code(),
                               page->message() + " (" + what +
                                   "; the database reopens at the next statement)")};
          core_->ResetDb(db);
        }
      }
    }
    core_->Release(db_);
    return r;
  }

  template <typename T>
  Task<Result<T>> Run(std::function<Result<T>(sql::Database&)> fn) {
    Completion<Result<T>> done;
    Executor* back = &core_->runtime_executor;
    core_->Post(db_, [core = core_.get(), db = db_, fn = std::move(fn), done, back]() mutable {
      db->page_failure->error.reset();
      core->thread_statements.fetch_add(1, std::memory_order_relaxed);
      Result<T> r = [&]() -> Result<T> {
        if (Status s = core->EnsureOpen(*db); !s.ok()) return Unexpected{s.error()};
        return fn(*db->database);
      }();
      const bool failed = !r.ok();
      if (std::optional<Error> page = std::exchange(db->page_failure->error, std::nullopt);
          page.has_value() && !r.ok()) {
        // SQLite only says "disk I/O error"; the page request's error says what happened
        // (sqlite.indeterminate_commit, remote_fence_mismatch, envoy.sqlite_timeout,
        // sqlite.closed, ...). The connection is reopened from the page store at the next
        // call: after a failed commit SQLite rolled back (or the VFS handle is dead), and an
        // open transaction is gone either way.
        r = Unexpected{Error(page->group(), page->code(),
                             page->message() + " (" + r.error().ToString() +
                                 "; the database reopens at the next statement)")};
        core->ResetDb(*db);
      }
      std::function<void()> answer = [done, r = std::move(r)]() mutable {
        done.Resolve(std::move(r));
      };
      if (!failed && core->options.inline_statements && db->database != nullptr &&
          !core->vfs.FullyCached(db->file_name)) {
        // Load the rest of a database that fits the VFS cache, so that its later
        // statements can run inline (TryInline). The answer goes out first; the database
        // stays scheduled meanwhile, so the next statement queues behind the prefetch.
        back->Post(std::move(answer));
        auto loaded = core->vfs.Prefetch(db->file_name);
        db->page_failure->error.reset();
        if (loaded.ok() && *loaded) core->prefetches.fetch_add(1, std::memory_order_relaxed);
        if (!loaded.ok()) {
          LogWarn(kLog, "prefetching a database failed",
                  {{"file", db->file_name}, {"error", loaded.error().ToString()}});
        }
        return;
      }
      db->then = std::move(answer);
    });
    Result<T> r = co_await done;
    co_return r;
  }

  std::shared_ptr<LocalSqlHost::Core> core_;
  std::shared_ptr<LocalDb> db_;
  envoy::EnvoyClient* client_;
  std::shared_ptr<runtime::HeldCommits> held_;
  bool closing_ = false;
};

}  // namespace

namespace {

LocalSqlOptions WithEnvironment(LocalSqlOptions options) {
  if (const char* v = std::getenv("KEEL_SQLITE_INLINE"); v != nullptr && std::string_view(v) == "0") {
    options.inline_statements = false;
  }
  return options;
}

}  // namespace

LocalSqlHost::LocalSqlHost(Executor& runtime_executor, LocalSqlOptions options)
    : core_(std::make_shared<Core>(runtime_executor, WithEnvironment(options))) {
  if (Status s = core_->vfs.Register(); !s.ok()) {
    LogWarn(kLog, "registering the Keel VFS failed", {{"error", s.error().ToString()}});
  }
}

LocalSqlHost::~LocalSqlHost() {
  core_->Stop();
  // Every queued job ran. A database is still open only when its backend outlives the host:
  // it closes when that backend goes (on the caller's thread, Post), and the VFS is
  // unregistered when the last backend releases the core (~KeelVfs).
  if (core_->open.load(std::memory_order_relaxed) > 0) return;
  if (Status s = core_->vfs.Unregister(); !s.ok()) {
    LogWarn(kLog, "unregistering the Keel VFS failed", {{"error", s.error().ToString()}});
  }
}

runtime::LocalSqlFactory LocalSqlHost::Factory() {
  std::shared_ptr<Core> core = core_;
  return [core](const runtime::SqlBackendContext& c) -> std::unique_ptr<runtime::SqlBackend> {
    return std::make_unique<LocalSqlBackend>(core, c);
  };
}

void LocalSqlHost::Shutdown() { core_->Shutdown(); }

size_t LocalSqlHost::open_databases() const { return core_->open.load(std::memory_order_relaxed); }

LocalSqlStats LocalSqlHost::stats() const {
  LocalSqlStats s;
  s.inline_statements = core_->inline_statements.load(std::memory_order_relaxed);
  s.thread_statements = core_->thread_statements.load(std::memory_order_relaxed);
  s.inline_given_up = core_->inline_given_up.load(std::memory_order_relaxed);
  s.prefetches = core_->prefetches.load(std::memory_order_relaxed);
  return s;
}

}  // namespace keel
