// The native local-native SQLite backend (runtime/native/local_sql.h) under the stepped
// runtime core: RuntimeHarness is the engine, answering the runtime's get_pages / commit
// from a real storage::PageStore with the engine's generation rule (EnvoySession: record the
// generation, fence every read and commit with it). SQL runs on LocalSqlHost's real SQL
// threads; their page requests come back to the test thread through a queue the test
// drains, so every interleaving here is chosen by the test: a commit is held, the
// connection drops, a start command is replayed while SQL is in flight. Every wait is
// bounded (Drive).
#include "runtime/native/local_sql.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/executor.h"
#include "runtime/actor.h"
#include "storage/mem_kv_store.h"
#include "storage/page_store.h"
#include "support/runtime_harness.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::RuntimeHarness;
namespace latest = protocol::envoy::latest;

// ---- The runtime's executor, drained by the test thread ----

// Post from any thread (the SQL threads hand their page requests and results here); the
// test thread runs the tasks, where the harness's envoy client and runtime live.
class QueueExecutor final : public Executor {
 public:
  void Post(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_all();
  }
  // Runs every queued task, including those they post. Test thread only.
  size_t RunAll() {
    size_t n = 0;
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard lock(mu_);
        if (queue_.empty()) return n;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
      ++n;
    }
  }
  // Until a task is queued (true) or `deadline` passes (false).
  bool WaitUntil(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

// ---- The engine's page I/O over a real PageStore ----

Bytes ActorBytes(const std::string& actor) {
  Bytes id(storage::kKeelActorIdSize, 0);
  for (size_t i = 0; i < actor.size() && i < id.size(); ++i) id[i] = static_cast<uint8_t>(actor[i]);
  return id;
}

class PageEngine {
 public:
  PageEngine() : store_(kv_) {}

  std::optional<latest::ToEnvoy> Answer(const latest::ToRivet& msg) {
    if (const auto* r = std::get_if<latest::ToRivetSqliteGetPagesRequest>(&msg.value)) {
      ++get_pages;
      latest::ToEnvoySqliteGetPagesResponse resp;
      resp.request_id = r->request_id;
      const Bytes actor = ActorBytes(r->data.actor_id);
      Result<std::vector<storage::Page>> pages =
          Unexpected{Error("sqlite", "internal", "not run")};
      if (Status fence = Record(actor, r->data.expected_generation); !fence.ok()) {
        pages = Unexpected{fence.error()};
      } else {
        pages = store_.GetPages(actor, r->data.pgnos, r->data.expected_generation);
      }
      if (pages.ok()) {
        latest::SqliteGetPagesOk ok;
        for (auto& p : *pages) ok.pages.push_back(latest::SqliteFetchedPage{p.pgno, std::move(p.bytes)});
        resp.data = std::move(ok);
      } else {
        resp.data = latest::SqliteErrorResponse{pages.error().ToString()};
      }
      return latest::ToEnvoy{std::move(resp)};
    }
    if (const auto* r = std::get_if<latest::ToRivetSqliteCommitRequest>(&msg.value)) {
      ++commits;
      if (hold_commits) {
        held.push_back(*r);
        return std::nullopt;
      }
      return Commit(*r);
    }
    return std::nullopt;
  }

  // Applies a commit to the store and returns its answer.
  latest::ToEnvoy Commit(const latest::ToRivetSqliteCommitRequest& r) {
    latest::ToEnvoySqliteCommitResponse resp;
    resp.request_id = r.request_id;
    const Bytes actor = ActorBytes(r.data.actor_id);
    Status done = Record(actor, r.data.expected_generation);
    if (done.ok()) {
      storage::CommitRequest commit;
      for (const auto& p : r.data.dirty_pages) commit.dirty_pages.push_back(storage::DirtyPage{p.pgno, p.bytes});
      commit.db_size_pages = r.data.db_size_pages;
      commit.now_ms = r.data.now_ms;
      commit.expected_generation = r.data.expected_generation;
      auto outcome = store_.Commit(actor, commit);
      if (!outcome.ok()) done = Unexpected{outcome.error()};
    }
    if (done.ok()) {
      ++applied;
      resp.data = latest::SqliteCommitOk{};
    } else {
      resp.data = latest::SqliteErrorResponse{done.error().ToString()};
    }
    return latest::ToEnvoy{std::move(resp)};
  }

  std::optional<storage::SqliteHead> Head(const std::string& actor) {
    auto head = store_.ReadHead(ActorBytes(actor));
    EXPECT_TRUE(head.ok());
    return head.ok() ? *head : std::nullopt;
  }
  storage::PageStore& store() { return store_; }

  bool hold_commits = false;
  std::vector<latest::ToRivetSqliteCommitRequest> held;
  int get_pages = 0;
  int commits = 0;  // commit requests received (held or not)
  int applied = 0;  // commits applied to the store

 private:
  // EnvoySession::RecordGeneration: the generation a request carries becomes the recorded
  // one (generations only move forward); an older one is a fence mismatch.
  Status Record(const Bytes& actor, std::optional<uint64_t> generation) {
    if (!generation.has_value()) return OkStatus();
    return store_.SetGeneration(actor, *generation);
  }

  storage::MemKvStore kv_;
  storage::PageStore store_;
};

// ---- What actor code saw (SQL threads never touch it: actor code runs on the test thread) ----

std::map<std::string, std::vector<std::string>>& Seen() {
  static std::map<std::string, std::vector<std::string>> seen;
  return seen;
}
int& Migrations() {
  static int n = 0;
  return n;
}

std::string CodeOf(const ActorError& e) { return e.group() + "." + e.code(); }

ActorDef<> NotesDef() {
  ActorDef<> def("notes");
  // Runs at every start (create and wake), in write mode: one row in `starts` per start.
  def.database([](Db& db) -> Task<void> {
    ++Migrations();
    std::string ddl =
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS starts (n INTEGER);"
        "INSERT INTO starts VALUES (1);";
    co_await db.exec(std::move(ddl));
  });
  def.action("add", [](Ctx<>& c, std::string body) -> Task<int64_t> {
    sql::Params params{sql::Value(body)};
    std::string insert = "INSERT INTO notes (body) VALUES (?)";
    try {
      sql::RunResult r = co_await c.db().run(std::move(insert), std::move(params));
      Seen()[c.actor_id()].push_back("add ok");
      co_return r.last_insert_row_id.value_or(-1);
    } catch (const ActorError& e) {
      Seen()[c.actor_id()].push_back("add " + CodeOf(e) + ": " + e.what());
      throw;
    }
  });
  def.action("list", [](Ctx<>& c) -> Task<Value> {
    std::string select = "SELECT id, body FROM notes ORDER BY id";
    co_return co_await c.db().execute(std::move(select));
  });
  def.action("starts", [](Ctx<>& c) -> Task<int64_t> {
    std::string select = "SELECT COUNT(*) FROM starts";
    sql::QueryResult r = co_await c.db().query(std::move(select));
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  // A statement that never ends by itself (only its 25 s deadline would stop it).
  def.action("spin", [](Ctx<>& c) -> Task<int64_t> {
    std::string forever =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c";
    try {
      sql::QueryResult r = co_await c.db().exec(std::move(forever));
      co_return std::get<int64_t>(r.rows.at(0).at(0));
    } catch (const ActorError& e) {
      Seen()[c.actor_id()].push_back("spin " + CodeOf(e) + ": " + e.what());
      throw;
    }
  });
  // BEGIN, `n` inserts (each its own statement), COMMIT: the shape of W5's insertMany.
  def.action("batch", [](Ctx<>& c, int64_t n) -> Task<int64_t> {
    std::string begin = "BEGIN";
    std::string insert = "INSERT INTO notes (body) VALUES (?)";
    std::string commit = "COMMIT";
    co_await c.db().run(begin);
    int64_t last = 0;
    for (int64_t i = 0; i < n; ++i) {
      sql::Params params{sql::Value("b" + std::to_string(i))};
      sql::RunResult r = co_await c.db().run(insert, std::move(params));
      last = r.last_insert_row_id.value_or(-1);
    }
    co_await c.db().run(commit);
    co_return last;
  });
  // Inside one transaction: an insert, the same id again (a constraint error, caught), a
  // select, COMMIT. Everything the actor saw goes to Seen().
  def.action("dup", [](Ctx<>& c) -> Task<int64_t> {
    std::string begin = "BEGIN";
    std::string insert = "INSERT INTO notes (id, body) VALUES (100, 'first')";
    std::string again = "INSERT INTO notes (id, body) VALUES (100, 'second')";
    std::string select = "SELECT body FROM notes WHERE id = 100";
    std::string commit = "COMMIT";
    co_await c.db().run(begin);
    sql::RunResult a = co_await c.db().run(insert);
    Seen()[c.actor_id()].push_back("insert changes " + std::to_string(a.changes));
    try {
      co_await c.db().run(again);
      Seen()[c.actor_id()].push_back("again ok");
    } catch (const ActorError& e) {
      Seen()[c.actor_id()].push_back("again " + CodeOf(e) + ": " + e.what());
    }
    sql::ExecuteResult r = co_await c.db().execute_raw(select);
    Seen()[c.actor_id()].push_back("select rows " + std::to_string(r.rows.size()) + " route " +
                                   std::to_string(static_cast<int>(r.route)));
    co_await c.db().run(commit);
    co_return a.last_insert_row_id.value_or(-1);
  });
  def.action("get", [](Ctx<>& c, int64_t id) -> Task<std::string> {
    std::string select = "SELECT body FROM notes WHERE id = ?";
    sql::Params params{sql::Value(id)};
    sql::QueryResult r = co_await c.db().query(select, std::move(params));
    co_return r.rows.empty() ? std::string("none") : std::get<std::string>(r.rows[0][0]);
  });
  // A read-only statement that runs far longer than the inline budget (2 ms).
  def.action("slowCount", [](Ctx<>& c) -> Task<int64_t> {
    std::string slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) "
        "SELECT count(*) FROM c";
    sql::QueryResult r = co_await c.db().query(slow);
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  def.action("integrity", [](Ctx<>& c) -> Task<std::string> {
    std::string check = "PRAGMA integrity_check";
    sql::QueryResult r = co_await c.db().exec(std::move(check));
    co_return std::get<std::string>(r.rows.at(0).at(0));
  });
  return def;
}

// A database without a migration (so a start never needs SQL).
ActorDef<> PlainDef() {
  ActorDef<> def("plain");
  def.database();
  def.action("write", [](Ctx<>& c) -> Task<int64_t> {
    std::string ddl = "CREATE TABLE IF NOT EXISTS t (x)";
    try {
      co_await c.db().exec(std::move(ddl));
      Seen()[c.actor_id()].push_back("write ok");
    } catch (const ActorError& e) {
      Seen()[c.actor_id()].push_back("write " + CodeOf(e));
    }
    co_return 0;
  });
  return def;
}

class LocalSql : public ::testing::Test {
 protected:
  void SetUp() override {
    Seen().clear();
    Migrations() = 0;
    host_ = std::make_unique<LocalSqlHost>(exec_, host_options_);
  }
  void TearDown() override {
    h_.reset();
    host_.reset();
  }

  // `holds`: the engine confirms held outputs at every connect (held commits).
  void Boot(runtime::SqliteBackendChoice backend = runtime::SqliteBackendChoice::kLocal,
            uint16_t version = 4, bool holds = false) {
    runtime::RuntimeOptions o;
    o.sqlite_backend = backend;
    o.local_sqlite = host_->Factory();
    h_ = std::make_unique<RuntimeHarness>(std::move(o));
    h_->protocol_version = version;
    h_->engine_holds_outputs = holds;
    h_->answer_sql = [this](const latest::ToRivet& m) { return engine_.Answer(m); };
    h_->Boot({NotesDef().type(), PlainDef().type()});
  }

  // Runs the runtime's executor and the fake engine until `done` holds (true) or `timeout`
  // passes (false). Waits only for the SQL threads' next hand-over, never a fixed time.
  template <typename Pred>
  bool Drive(Pred done, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      exec_.RunAll();
      h_->Pump();
      if (done()) return true;
      if (!exec_.WaitUntil(deadline)) {
        exec_.RunAll();
        h_->Pump();
        return done();
      }
    }
  }

  // An action's reply body, driven to completion ("" when none came within the bound).
  std::string Call(const std::string& actor, const std::string& action, const std::string& args = "[]") {
    auto id = h_->Action(actor, action, args);
    if (!Drive([&] { return h_->Status(id) != 0; })) return "";
    return h_->Body(id);
  }

  void StartRunning(const std::string& actor, uint32_t generation, const std::string& type = "notes") {
    h_->StartActor(actor, type, generation);
    ASSERT_TRUE(Drive([&] { return h_->Running(actor, generation) || h_->Stopped(actor, generation); }));
    ASSERT_TRUE(h_->Running(actor, generation)) << "start failed";
  }

  void StopActor(const std::string& actor, uint32_t generation) {
    h_->StopActor(actor, generation);
    ASSERT_TRUE(Drive([&] { return h_->Stopped(actor, generation).has_value(); }));
  }

  size_t CommitRequests() const {
    size_t n = 0;
    for (const auto& m : h_->sql_requests) n += std::holds_alternative<latest::ToRivetSqliteCommitRequest>(m.value);
    return n;
  }

  // Answers the held commits through the connection (the engine applied and answered them).
  void ReleaseHeldCommits() {
    auto held = std::move(engine_.held);
    engine_.held.clear();
    engine_.hold_commits = false;
    for (const auto& r : held) h_->Deliver(engine_.Commit(r));
  }

  // Drops the connection and reconnects after the backoff (a fresh Init).
  void Reconnect() {
    h_->Disconnect();
    exec_.RunAll();
    h_->Advance(1500ms);  // the reconnect backoff (1–1.25 s)
    h_->Connect();
  }

  // The tests count where statements ran: the wall-clock inline budgets are out of the way,
  // so a preempted test machine cannot change a route (the budgets' own tests set them).
  static LocalSqlOptions CountingOptions() {
    LocalSqlOptions o;
    o.inline_read_budget = std::chrono::seconds(30);
    o.inline_slow_write = std::chrono::seconds(30);
    return o;
  }

  QueueExecutor exec_;
  LocalSqlOptions host_options_ = CountingOptions();
  PageEngine engine_;
  std::unique_ptr<LocalSqlHost> host_;
  std::unique_ptr<RuntimeHarness> h_;
};

TEST_F(LocalSql, DataLivesInThePageStoreAcrossGenerations) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["milk"])"), R"({"output":1})");
  EXPECT_EQ(Call("a1", "add", R"(["eggs"])"), R"({"output":2})");
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"milk"},{"id":2,"body":"eggs"}]})");
  // Every page request carried the generation as its fence.
  for (const auto& m : h_->sql_requests) {
    if (const auto* g = std::get_if<latest::ToRivetSqliteGetPagesRequest>(&m.value)) {
      EXPECT_EQ(g->data.expected_generation, std::optional<uint64_t>(1));
    }
    if (const auto* c = std::get_if<latest::ToRivetSqliteCommitRequest>(&m.value)) {
      EXPECT_EQ(c->data.expected_generation, std::optional<uint64_t>(1));
    }
  }
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  EXPECT_EQ(host_->open_databases(), 0u) << "closed at the end of the shutdown";
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"milk"},{"id":2,"body":"eggs"}]})");
  EXPECT_EQ(Call("a1", "starts"), R"({"output":2})");
  EXPECT_EQ(Migrations(), 2);
  EXPECT_EQ(engine_.Head("a1")->generation, std::optional<uint64_t>(2));
}

// A commit in flight when the connection drops (envoy-protocol.md §7.5, §8.8): the envoy
// fails it at once (sqlite.indeterminate_commit) and never resends it; the VFS learns the
// committed size again after the reconnect and SQLite rolls the transaction back with one
// more commit, so the store holds the state before the transaction whether or not the lost
// commit had been applied — never the transaction twice.
class LocalSqlLostCommit : public LocalSql, public ::testing::WithParamInterface<bool> {};

TEST_P(LocalSqlLostCommit, FailsIndeterminateAndTheDatabaseIsTheStateBefore) {
  const bool applied_before_the_drop = GetParam();
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["before"])"), R"({"output":1})");
  const uint64_t txid_before = engine_.Head("a1")->head_txid;
  Seen()["a1"].clear();

  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["lost"])");
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; }));
  const size_t commits_sent = CommitRequests();
  const latest::ToRivetSqliteCommitRequest lost = engine_.held.front();
  if (applied_before_the_drop) {
    engine_.Commit(lost);  // applied by the engine; the answer dies with the socket
    EXPECT_EQ(engine_.Head("a1")->head_txid, txid_before + 1);
  }
  engine_.held.clear();
  engine_.hold_commits = false;

  h_->Disconnect();
  // The SQL thread learns the commit failed and asks for page 1 again: that read waits
  // for the next connection (a get_pages is kept and resent after the next Init).
  ASSERT_TRUE(Drive([&] { return h_->client().pending_sqlite_requests() == 1; }));
  EXPECT_TRUE(Seen()["a1"].empty()) << "the statement is still running";
  exec_.RunAll();
  h_->Advance(1500ms);  // the reconnect backoff
  h_->Connect();
  ASSERT_TRUE(Drive([&] { return Seen()["a1"].size() == 1; }));
  EXPECT_THAT(Seen()["a1"][0], HasSubstr("add sqlite.indeterminate_commit"));
  EXPECT_THAT(Seen()["a1"][0], HasSubstr("disk I/O error")) << "SQLite's own error is kept";
  if (h_->Status(id) != 0) {
    EXPECT_THAT(h_->Body(id), HasSubstr(R"("code":"indeterminate_commit")"));
  }
  // The lost commit was never sent again: after the reconnect exactly one commit went out
  // (SQLite's rollback, restoring the pages the transaction touched).
  ASSERT_EQ(CommitRequests(), commits_sent + 1);
  const auto& rollback = std::get<latest::ToRivetSqliteCommitRequest>(h_->sql_requests.back().value);
  EXPECT_NE(rollback.data.dirty_pages, lost.data.dirty_pages);

  // The state before, readable and intact, in this generation and the next.
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"before"}]})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
  EXPECT_EQ(Call("a1", "add", R"(["after"])"), R"({"output":2})");
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"before"},{"id":2,"body":"after"}]})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

INSTANTIATE_TEST_SUITE_P(AppliedOrNot, LocalSqlLostCommit, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Applied" : "NotApplied"; });

TEST_F(LocalSql, RemoteWriteSentBeforeADisconnectIsIndeterminateAndNeverResent) {
  Boot(runtime::SqliteBackendChoice::kRemote);
  ASSERT_NO_FATAL_FAILURE(StartRunning("r1", 1, "plain"));
  h_->hold_sql = true;  // the engine never answers it
  h_->Action("r1", "write", "[]");
  ASSERT_EQ(h_->sql_requests.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<latest::ToRivetSqliteExecRequest>(h_->sql_requests[0].value));
  h_->Disconnect();
  h_->Pump();
  EXPECT_EQ(Seen()["r1"], (std::vector<std::string>{"write sqlite.remote_indeterminate_result"}));
  h_->hold_sql = false;
  h_->Advance(1500ms);
  h_->Connect();
  h_->Advance(20s);  // past a request sweep: nothing is pending to resend
  EXPECT_EQ(h_->sql_requests.size(), 1u) << "a remote statement is never sent twice";
  EXPECT_EQ(h_->client().pending_sqlite_requests(), 0u);
}

// A start command replayed (same checkpoint) while the migration's commit is in flight, and
// again after SQL ran: the envoy client drops both replays, so the migration ran once and
// nothing was applied twice.
TEST_F(LocalSql, ReplayedStartDoesNotRerunTheMigration) {
  Boot();
  engine_.hold_commits = true;
  h_->StartActor("a1", "notes", 1);
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; })) << "the migration's commit";
  EXPECT_FALSE(h_->Running("a1", 1));
  h_->ReplayLastCommands();
  EXPECT_EQ(h_->client().duplicate_commands(), 1u);
  ReleaseHeldCommits();
  ASSERT_TRUE(Drive([&] { return h_->Running("a1", 1); }));
  EXPECT_EQ(Call("a1", "add", R"(["x"])"), R"({"output":1})");
  const int applied = engine_.applied;
  h_->ReplayLastCommands();
  EXPECT_EQ(h_->client().duplicate_commands(), 2u);
  EXPECT_FALSE(Drive([&] { return engine_.applied != applied; }, 200ms)) << "no SQL after a replay";
  EXPECT_EQ(Migrations(), 1);
  EXPECT_EQ(h_->runtime().instance_count(), 1u);
  EXPECT_EQ(Call("a1", "starts"), R"({"output":1})");
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"x"}]})");
}

// The engine has moved the actor on (a newer generation is recorded): this generation can
// neither commit nor read, every statement says so, and the store is untouched.
TEST_F(LocalSql, AStaleGenerationIsFencedWithAClearErrorEveryTime) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["kept"])"), R"({"output":1})");
  const uint64_t txid = engine_.Head("a1")->head_txid;
  ASSERT_TRUE(engine_.store().SetGeneration(ActorBytes("a1"), 2).ok());
  for (int i = 0; i < 2; ++i) {
    Seen()["a1"].clear();
    std::string body = Call("a1", "add", R"(["fenced"])");
    EXPECT_THAT(body, HasSubstr(R"("code":"remote_fence_mismatch")")) << "attempt " << i;
    ASSERT_EQ(Seen()["a1"].size(), 1u);
    EXPECT_THAT(Seen()["a1"][0], HasSubstr("older than the recorded generation 2"));
  }
  EXPECT_THAT(Call("a1", "list"), HasSubstr(R"("code":"remote_fence_mismatch")"));
  EXPECT_EQ(engine_.Head("a1")->head_txid, txid);
}

// Shutdown() while a statement waits for its commit's answer: the statement fails at once
// (sqlite.closed), no SQL thread waits for an executor that no longer runs, and every later
// statement fails the same clear way.
TEST_F(LocalSql, HostShutdownFailsAWaitingStatementAndLaterOnes) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  engine_.hold_commits = true;
  h_->Action("a1", "add", R"(["never"])");
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; }));
  const auto started = std::chrono::steady_clock::now();
  host_->Shutdown();
  ASSERT_TRUE(Drive([&] { return !Seen()["a1"].empty(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_THAT(Seen()["a1"][0], HasSubstr("add sqlite.closed"));
  Seen()["a1"].clear();
  EXPECT_THAT(Call("a1", "add", R"(["later"])"), HasSubstr(R"("code":"closed")"));
}

// Shutdown() with a statement running that only its 25 s deadline would end: it is
// interrupted (sqlite.closed) at once, so the host's destructor does not wait for it.
TEST_F(LocalSql, HostShutdownInterruptsARunningStatement) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  h_->Action("a1", "spin", "[]");
  const auto started = std::chrono::steady_clock::now();
  host_->Shutdown();
  ASSERT_TRUE(Drive([&] { return !Seen()["a1"].empty(); }));
  EXPECT_THAT(Seen()["a1"][0], HasSubstr("spin sqlite.closed"));
  host_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

// Backends outliving their host (destroyed after LocalSqlHost): destroying the host does not
// wait for them, a later call fails with sqlite.closed, and destroying a backend whose
// database is still open closes it on the caller's thread (no leak, no crash, no hang).
TEST_F(LocalSql, BackendsDestroyedAfterTheirHost) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  ASSERT_NO_FATAL_FAILURE(StartRunning("a2", 1));
  EXPECT_EQ(Call("a1", "add", R"(["x"])"), R"({"output":1})");
  EXPECT_EQ(Call("a2", "add", R"(["x"])"), R"({"output":1})");
  EXPECT_EQ(host_->open_databases(), 2u);
  const auto started = std::chrono::steady_clock::now();
  host_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_THAT(Call("a1", "add", R"(["y"])"), HasSubstr(R"("code":"closed")"));
  h_.reset();  // the instances and their backends go now, after the host (a2's is open)
}

// Teardown with a statement waiting for a commit answer that will never come (the
// native shell's order after a crash: the event loop is gone, then the host shuts down):
// the waiting statement fails at once with sqlite.closed, nothing hangs.
TEST_F(LocalSql, TeardownWithAStatementWaitingForItsCommit) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  engine_.hold_commits = true;
  h_->Action("a1", "add", R"(["never"])");
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; }));
  const auto started = std::chrono::steady_clock::now();
  host_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  ASSERT_TRUE(Drive([&] { return !Seen()["a1"].empty(); }));
  EXPECT_THAT(Seen()["a1"][0], HasSubstr("add sqlite.closed"));
  h_.reset();
}

TEST_F(LocalSql, ProtocolV3StillHasPageIo) {
  Boot(runtime::SqliteBackendChoice::kLocal, 3);
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["v3"])"), R"({"output":1})");
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"v3"}]})");
}

// Several databases with work at once, posted while a SQL thread may be waiting for its
// next job without parking (LocalSqlHost spins briefly and Post then skips the wake-up):
// every statement still runs, in call order per database.
TEST_F(LocalSql, StatementsOfSeveralActorsPostedTogetherAllRun) {
  Boot();
  const std::vector<std::string> actors = {"m1", "m2", "m3", "m4"};
  for (const auto& a : actors) ASSERT_NO_FATAL_FAILURE(StartRunning(a, 1));
  for (int round = 0; round < 3; ++round) {
    std::vector<std::pair<std::string, decltype(h_->Action("", "", ""))>> calls;
    for (int i = 0; i < 5; ++i) {
      for (const auto& a : actors) {
        calls.emplace_back(a, h_->Action(a, "add", "[\"" + a + "-" + std::to_string(i) + "\"]"));
      }
    }
    ASSERT_TRUE(Drive([&] {
      for (const auto& [a, id] : calls) {
        if (h_->Status(id) == 0) return false;
      }
      return true;
    }));
    for (size_t k = 0; k < calls.size(); ++k) {
      const int64_t expected = round * 5 + static_cast<int64_t>(k / actors.size()) + 1;
      EXPECT_EQ(h_->Body(calls[k].second), "{\"output\":" + std::to_string(expected) + "}")
          << calls[k].first << " call " << k;
    }
  }
  EXPECT_EQ(Call("m3", "list").substr(0, 32), R"({"output":[{"id":1,"body":"m3-0")");
}

}  // namespace
}  // namespace keel

// ---- Inline statements (LocalSqlBackend::TryInline) ----

namespace keel {
namespace {

// The statements of a transaction whose database the VFS holds entirely run on the
// runtime's executor; BEGIN and COMMIT (transaction control) and autocommit writes (they
// commit) run on a SQL thread. Still one commit per transaction, durable before COMMIT
// answers, and the data is in the page store for the next generation.
TEST_F(LocalSql, StatementsInsideATransactionRunInline) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["one"])"), R"({"output":1})");
  const LocalSqlStats before = host_->stats();
  const int applied = engine_.applied;
  const int get_pages = engine_.get_pages;
  EXPECT_EQ(Call("a1", "batch", "[50]"), R"({"output":51})");
  const LocalSqlStats after = host_->stats();
  EXPECT_EQ(after.inline_statements - before.inline_statements, 50u);
  EXPECT_EQ(after.thread_statements - before.thread_statements, 2u) << "BEGIN and COMMIT";
  EXPECT_EQ(engine_.applied, applied + 1) << "one commit for the transaction";
  EXPECT_EQ(engine_.get_pages, get_pages) << "no page read";
  // An autocommit write commits: it runs on a SQL thread and is applied before it answers.
  EXPECT_EQ(Call("a1", "add", R"(["two"])"), R"({"output":52})");
  EXPECT_EQ(engine_.applied, applied + 2);
  EXPECT_EQ(host_->stats().inline_statements, after.inline_statements);
  // A point select reads only cached pages: inline.
  EXPECT_EQ(Call("a1", "get", "[51]"), R"({"output":"b49"})");
  EXPECT_EQ(host_->stats().inline_statements, after.inline_statements + 1);
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "get", "[52]"), R"({"output":"two"})");
  EXPECT_EQ(Call("a1", "get", "[26]"), R"({"output":"b24"})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

// A reopened database holds only what it read; after the first statement on a SQL thread
// (here the migration) the rest of a database that fits the VFS cache is prefetched, and
// then statements run inline without any page request.
TEST_F(LocalSql, AReopenedDatabaseIsPrefetchedThenRunsInline) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "batch", "[300]"), R"({"output":300})");
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  const LocalSqlStats before = host_->stats();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  ASSERT_TRUE(Drive([&] { return host_->stats().prefetches > before.prefetches; }));
  const int get_pages = engine_.get_pages;
  const uint64_t inline_before = host_->stats().inline_statements;
  EXPECT_EQ(Call("a1", "get", "[7]"), R"({"output":"b6"})");
  EXPECT_EQ(Call("a1", "get", "[299]"), R"({"output":"b298"})");
  EXPECT_EQ(host_->stats().inline_statements, inline_before + 2);
  EXPECT_EQ(engine_.get_pages, get_pages);
}

// A database larger than the VFS cache: a statement may need a page that is not cached,
// so nothing runs inline and every statement takes the SQL thread, with the same results.
TEST_F(LocalSql, ADatabaseLargerThanTheCacheNeverRunsInline) {
  host_options_.vfs_cache_pages = 4;
  host_ = std::make_unique<LocalSqlHost>(exec_, host_options_);
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  // (Its inserts run inline: before the transaction the database fit the cache, and inside
  // it writes are only buffered.)
  EXPECT_EQ(Call("a1", "batch", "[3000]"), R"({"output":3000})");
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  const uint64_t inline_before = host_->stats().inline_statements;
  const int get_pages = engine_.get_pages;
  EXPECT_EQ(Call("a1", "get", "[2999]"), R"({"output":"b2998"})");
  EXPECT_EQ(Call("a1", "get", "[3]"), R"({"output":"b2"})");
  EXPECT_GT(engine_.get_pages, get_pages) << "pages were read on the SQL thread";
  EXPECT_EQ(Call("a1", "batch", "[5]"), R"({"output":3005})");
  EXPECT_EQ(host_->stats().inline_statements, inline_before);
  EXPECT_EQ(host_->stats().prefetches, 0u);
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

// A read-only statement over the inline budget is given up and runs on a SQL thread.
TEST_F(LocalSql, ALongReadIsGivenUpInlineAndRunsOnASqlThread) {
  host_options_.inline_read_budget = std::chrono::microseconds(100);  // the count takes ms
  host_ = std::make_unique<LocalSqlHost>(exec_, host_options_);
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["x"])"), R"({"output":1})");
  const LocalSqlStats before = host_->stats();
  EXPECT_EQ(Call("a1", "slowCount"), R"({"output":400000})");
  const LocalSqlStats after = host_->stats();
  EXPECT_EQ(after.inline_given_up, before.inline_given_up + 1);
  EXPECT_EQ(after.thread_statements, before.thread_statements + 1);
  EXPECT_EQ(after.inline_statements, before.inline_statements);
}

// An inline write that took longer than inline_slow_write (here: any) keeps the database's
// writes off the executor for its next statements; reads stay inline, the data is the same.
TEST_F(LocalSql, ASlowInlineWriteKeepsTheNextWritesOnASqlThread) {
  host_options_.inline_slow_write = std::chrono::microseconds(0);
  host_ = std::make_unique<LocalSqlHost>(exec_, host_options_);
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  const LocalSqlStats before = host_->stats();
  EXPECT_EQ(Call("a1", "batch", "[20]"), R"({"output":20})");
  const LocalSqlStats after = host_->stats();
  EXPECT_EQ(after.inline_statements - before.inline_statements, 1u) << "only the first insert";
  EXPECT_EQ(after.thread_statements - before.thread_statements, 21u) << "BEGIN, 19 inserts, COMMIT";
  EXPECT_EQ(Call("a1", "get", "[20]"), R"({"output":"b19"})");
  EXPECT_EQ(host_->stats().inline_statements, after.inline_statements + 1) << "a read";
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

// Inline or not, an actor sees the same results, errors and routes: an error inside a
// transaction (a constraint failure) leaves the transaction open and COMMIT keeps the
// rest.
class LocalSqlInlineOrNot : public LocalSql, public ::testing::WithParamInterface<bool> {};

TEST_P(LocalSqlInlineOrNot, AnErrorInsideATransactionIsTheSame) {
  host_options_.inline_statements = GetParam();
  host_ = std::make_unique<LocalSqlHost>(exec_, host_options_);
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
  EXPECT_EQ(Call("a1", "add", R"(["x"])"), R"({"output":1})");
  const LocalSqlStats before = host_->stats();
  Seen()["a1"].clear();
  EXPECT_EQ(Call("a1", "dup"), R"({"output":100})");
  ASSERT_EQ(Seen()["a1"].size(), 3u);
  EXPECT_EQ(Seen()["a1"][0], "insert changes 1");
  EXPECT_THAT(Seen()["a1"][1], HasSubstr("again sqlite.execution_failed: "));
  EXPECT_THAT(Seen()["a1"][1], HasSubstr("UNIQUE constraint failed: notes.id"));
  EXPECT_EQ(Seen()["a1"][2], "select rows 1 route " +
                                 std::to_string(static_cast<int>(sql::Route::kWriteFallback)));
  EXPECT_EQ(Call("a1", "get", "[100]"), R"({"output":"first"})");
  const LocalSqlStats after = host_->stats();
  EXPECT_EQ(after.inline_statements - before.inline_statements, GetParam() ? 4u : 0u)
      << "insert, failed insert, select, get";
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

INSTANTIATE_TEST_SUITE_P(Inline, LocalSqlInlineOrNot, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Inline" : "SqlThread"; });

}  // namespace
}  // namespace keel

// ---- Held commits (runtime/sql.h HeldCommits, docs/runtime.md "Held outputs") ----

namespace keel {
namespace {

class LocalSqlHeld : public LocalSql {
 protected:
  void BootHeld() { Boot(runtime::SqliteBackendChoice::kLocal, 4, /*holds=*/true); }

  // The reply of request `id` in the tunnel log: how many SQLite requests the runtime had
  // sent before it (-1 when no reply was sent).
  long SqlRequestsBeforeReply(const latest::MessageId& id) const {
    for (const auto& sent : h_->tunnel_log) {
      if (sent.message.message_id.request_id == id.request_id &&
          std::holds_alternative<latest::ToRivetResponseStart>(sent.message.message_kind.value)) {
        return static_cast<long>(sent.sql_requests_before);
      }
    }
    return -1;
  }

  // Index of the newest commit request the runtime sent.
  long LastCommitIndex() const {
    for (size_t i = h_->sql_requests.size(); i-- > 0;) {
      if (std::holds_alternative<latest::ToRivetSqliteCommitRequest>(h_->sql_requests[i].value)) {
        return static_cast<long>(i);
      }
    }
    return -1;
  }

  // Answers the held commits with `error` (the engine rejected them).
  void RejectHeldCommits(const std::string& error) {
    auto held = std::move(engine_.held);
    engine_.held.clear();
    engine_.hold_commits = false;
    for (const auto& r : held) {
      latest::ToEnvoySqliteCommitResponse resp;
      resp.request_id = r.request_id;
      resp.data = latest::SqliteErrorResponse{error};
      h_->Deliver(latest::ToEnvoy{std::move(resp)});
    }
  }

  // Starts "a1" generation 1 (a new database: the VFS holds all of it, every page written
  // by the migration) and writes one row.
  void StartWithOneRow() {
    ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 1));
    ASSERT_EQ(Call("a1", "add", R"(["one"])"), R"({"output":1})");
  }
};

// With held outputs an autocommit insert runs inline, writes its commit to the socket and
// answers at once, right behind the commit: the engine keeps the answer until the commit
// is durable. The row is in the page store once the engine applies the commit.
TEST_F(LocalSqlHeld, AnInsertAnswersRightBehindItsCommitWithoutWaitingForIt) {
  BootHeld();
  ASSERT_NO_FATAL_FAILURE(StartWithOneRow());
  const LocalSqlStats before = host_->stats();
  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["two"])");
  ASSERT_TRUE(Drive([&] { return h_->Status(id) != 0; }));
  EXPECT_EQ(h_->Body(id), R"({"output":2})");
  ASSERT_EQ(engine_.held.size(), 1u) << "answered while its commit was unanswered";
  const long commit_at = LastCommitIndex();
  ASSERT_GE(commit_at, 0);
  EXPECT_GT(SqlRequestsBeforeReply(id), commit_at) << "the reply left after its commit";
  const LocalSqlStats after = host_->stats();
  EXPECT_EQ(after.inline_statements, before.inline_statements + 1);
  EXPECT_EQ(after.thread_statements, before.thread_statements);

  // A whole transaction inline too: BEGIN, inserts, COMMIT — one commit, held.
  auto batch = h_->Action("a1", "batch", "[20]");
  ASSERT_TRUE(Drive([&] { return h_->Status(batch) != 0; }));
  EXPECT_EQ(h_->Body(batch), R"({"output":22})");
  EXPECT_EQ(engine_.held.size(), 2u);
  EXPECT_EQ(host_->stats().thread_statements, before.thread_statements);

  ReleaseHeldCommits();
  exec_.RunAll();
  ASSERT_NO_FATAL_FAILURE(StopActor("a1", 1));
  EXPECT_EQ(h_->Stopped("a1", 1)->code, latest::StopCode::kOk);
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "get", "[2]"), R"({"output":"two"})");
  EXPECT_EQ(Call("a1", "get", "[22]"), R"({"output":"b19"})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

// Without held outputs nothing changes: the insert waits for its commit's answer.
TEST_F(LocalSqlHeld, WithoutHeldOutputsAnInsertWaitsForItsCommit) {
  Boot();
  ASSERT_NO_FATAL_FAILURE(StartWithOneRow());
  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["two"])");
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; }));
  exec_.RunAll();
  h_->Pump();
  EXPECT_EQ(h_->Status(id), 0) << "answered before its commit";
  ReleaseHeldCommits();
  ASSERT_TRUE(Drive([&] { return h_->Status(id) != 0; }));
  EXPECT_EQ(h_->Body(id), R"({"output":2})");
}

// A held commit the engine rejects ends the generation at once: the runtime reports it
// stopped with actor.storage_failed (its answers may be with the engine, which withholds
// them), no later statement of that database reaches the engine, and the next generation
// reads the last state the store accepted.
TEST_F(LocalSqlHeld, ARejectedHeldCommitEndsTheGeneration) {
  BootHeld();
  ASSERT_NO_FATAL_FAILURE(StartWithOneRow());
  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["lost"])");
  ASSERT_TRUE(Drive([&] { return h_->Status(id) != 0; }));
  ASSERT_EQ(engine_.held.size(), 1u);
  const int commits = engine_.commits;
  RejectHeldCommits("storage.io: the disk went away");
  ASSERT_TRUE(Drive([&] { return h_->Stopped("a1", 1).has_value(); }));
  const auto stopped = h_->Stopped("a1", 1);
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("storage_failed"));
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("storage.io"));
  auto after = h_->Action("a1", "add", R"(["after"])");
  ASSERT_TRUE(Drive([&] { return h_->Status(after) != 0; }));
  EXPECT_NE(h_->Status(after), 200) << h_->Body(after);
  EXPECT_EQ(engine_.commits, commits) << "nothing more was committed";
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "list"), R"({"output":[{"id":1,"body":"one"}]})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

// The connection drops while a held commit is unanswered: its outcome is unknown, so the
// generation ends; the next one reads either state, whole.
class LocalSqlHeldLost : public LocalSqlHeld, public ::testing::WithParamInterface<bool> {};

TEST_P(LocalSqlHeldLost, AHeldCommitLostWithTheConnectionEndsTheGeneration) {
  const bool applied = GetParam();
  BootHeld();
  ASSERT_NO_FATAL_FAILURE(StartWithOneRow());
  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["maybe"])");
  ASSERT_TRUE(Drive([&] { return h_->Status(id) != 0; }));
  ASSERT_EQ(engine_.held.size(), 1u);
  if (applied) engine_.Commit(engine_.held.front());
  engine_.held.clear();
  engine_.hold_commits = false;
  Reconnect();
  ASSERT_TRUE(Drive([&] { return h_->Stopped("a1", 1).has_value(); }));
  EXPECT_EQ(h_->Stopped("a1", 1)->code, latest::StopCode::kError);
  EXPECT_THAT(h_->Stopped("a1", 1)->message.value_or(""), HasSubstr("indeterminate_commit"));
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "list"), applied ? R"({"output":[{"id":1,"body":"one"},{"id":2,"body":"maybe"}]})"
                                        : R"({"output":[{"id":1,"body":"one"}]})");
  EXPECT_EQ(Call("a1", "integrity"), R"({"output":"ok"})");
}

INSTANTIATE_TEST_SUITE_P(AppliedOrNot, LocalSqlHeldLost, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Applied" : "NotApplied"; });

// A stop waits for the held commits: the instance reports itself stopped only once its
// last commit is answered (a new generation must never race it).
TEST_F(LocalSqlHeld, AStopWaitsForTheHeldCommits) {
  BootHeld();
  ASSERT_NO_FATAL_FAILURE(StartWithOneRow());
  engine_.hold_commits = true;
  auto id = h_->Action("a1", "add", R"(["two"])");
  ASSERT_TRUE(Drive([&] { return h_->Status(id) != 0; }));
  h_->StopActor("a1", 1);
  // (A bounded look for an absence: the stop runs on the SQL threads and this thread.)
  EXPECT_FALSE(Drive([&] { return h_->Stopped("a1", 1).has_value(); }, 200ms))
      << "stopped with a commit unanswered";
  ReleaseHeldCommits();
  ASSERT_TRUE(Drive([&] { return h_->Stopped("a1", 1).has_value(); }));
  EXPECT_EQ(h_->Stopped("a1", 1)->code, latest::StopCode::kOk);
  ASSERT_NO_FATAL_FAILURE(StartRunning("a1", 2));
  EXPECT_EQ(Call("a1", "get", "[2]"), R"({"output":"two"})");
}

// A start's commits (the migration) are never held: the actor reports itself running only
// once they are answered, and a failed one fails the start as before.
TEST_F(LocalSqlHeld, AStartsCommitsAreNotHeld) {
  BootHeld();
  engine_.hold_commits = true;
  h_->StartActor("a1", "notes", 1);
  ASSERT_TRUE(Drive([&] { return engine_.held.size() == 1; }));
  exec_.RunAll();
  h_->Pump();
  EXPECT_FALSE(h_->Running("a1", 1)) << "running before the migration's commit was answered";
  ReleaseHeldCommits();
  ASSERT_TRUE(Drive([&] { return h_->Running("a1", 1); }));
  EXPECT_EQ(Call("a1", "starts"), R"({"output":1})");
}

}  // namespace
}  // namespace keel
