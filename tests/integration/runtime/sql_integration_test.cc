// Per-actor SQLite (actors.md §2.5) in the native runtime under a real keel-engine
// (TestEngine on loopback port 0), hosted in-process by RuntimeHost, reached by HTTP
// actions through the gateway — on both backends: local-native (SQLite in the runtime over
// the Keel VFS, pages via get_pages/commit) and remote (v4 exec/execute/execute_write run
// by the engine). Both use the engine's one page store with the same generation fencing,
// so a database written by one backend is read by the other.
//
// Covered: data across sleep/wake (a new generation), a runtime restart and a runtime
// crash with the database open; destroy deleting the database; switching backends in both directions; protocol
// v3 (no remote SQL, page I/O still there); a manual transaction spanning actions staying
// on the writer; a stop while SQL is in flight (the stop waits, each statement is applied
// whole and once, SQL after the database closed fails sqlite.closed).
// The stepped, interleaving-exact cases (a commit lost with the connection, a replayed
// start around SQL, fencing, host teardown) are in tests/unit/runtime/local_sql_test.cc.
//
// Synchronisation: actor code notes what it did in a process-wide Journal (it runs on the
// runtime's thread); tests wait for specific notes, replies or engine states, every wait
// bounded. Actor code that must observe a stop in progress checks the journal between its
// own statements (all on the runtime thread), so "SQL in flight while the stop begins" is
// guaranteed by construction, not by timing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/common/id.h"
#include "engine/core/engine.h"
#include "runtime/actor.h"
#include "runtime/native/serve.h"
#include "support/gateway_http.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// ---- What actor code did, per actor id, across threads ----

class Journal {
 public:
  void Note(const std::string& actor, std::string entry) {
    std::lock_guard<std::mutex> lock(mu_);
    log_[actor].push_back(std::move(entry));
  }
  std::vector<std::string> Of(const std::string& actor) {
    std::lock_guard<std::mutex> lock(mu_);
    return log_[actor];
  }
  bool Has(const std::string& actor, const std::string& entry) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto& l = log_[actor];
    return std::find(l.begin(), l.end(), entry) != l.end();
  }
  // The first entry starting with `prefix`, or "".
  std::string Find(const std::string& actor, const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : log_[actor]) {
      if (e.rfind(prefix, 0) == 0) return e;
    }
    return "";
  }
  // Forgets what `actor` did so far (a test that reuses an actor across instances).
  void Clear(const std::string& actor) {
    std::lock_guard<std::mutex> lock(mu_);
    log_.erase(actor);
    counters_.erase(actor);
  }
  void Set(const std::string& actor, int64_t value) {
    std::lock_guard<std::mutex> lock(mu_);
    counters_[actor] = value;
  }
  int64_t Get(const std::string& actor) {
    std::lock_guard<std::mutex> lock(mu_);
    return counters_[actor];
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> log_;
  std::map<std::string, int64_t> counters_;
};

Journal& J() {
  static Journal journal;
  return journal;
}

// One statement that inserts kBatchRows rows: applied whole or not at all.
constexpr int64_t kBatchRows = 500;
constexpr const char* kBatch =
    "WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < 500) "
    "INSERT INTO bulk (k) SELECT k FROM s";

// Runs batches until a statement fails (the database closed under the stop), noting how
// many succeeded. A waitUntil task: it outlives the grace period.
Task<void> ChurnUntilClosed(runtime::Instance* inst, std::string id) {
  Db db(*inst);
  int64_t ok = 0;
  J().Note(id, "background churning");
  try {
    for (int i = 0; i < 100000; ++i) {
      std::string batch = kBatch;
      sql::Params none;
      co_await db.run(std::move(batch), std::move(none));
      J().Set(id, ++ok);
    }
    J().Note(id, "background never failed");
  } catch (const ActorError& e) {
    J().Note(id, "background failed " + e.group() + "." + e.code() + " after " + std::to_string(ok));
  }
}

// The actor under test: a migration at every start (one row in `starts` per start), notes,
// bulk batches, raw execute for routes.
ActorDef<> NotesDef(const std::string& name, std::chrono::milliseconds grace) {
  ActorDef<> def(name);
  def.options().sleep_grace_period = grace;
  def.database([](Db& db) -> Task<void> {
    std::string ddl =
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS bulk (k INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS starts (n INTEGER);"
        "INSERT INTO starts VALUES (1);";
    co_await db.exec(std::move(ddl));
  });
  def.on_sleep([](Ctx<>& c) { J().Note(c.actor_id(), "onSleep"); });
  def.action("add", [](Ctx<>& c, std::string body) -> Task<int64_t> {
    sql::Params params{sql::Value(body)};
    std::string insert = "INSERT INTO notes (body) VALUES (?)";
    sql::RunResult r = co_await c.db().run(std::move(insert), std::move(params));
    co_return r.last_insert_row_id.value_or(-1);
  });
  def.action("list", [](Ctx<>& c) -> Task<Value> {
    std::string select = "SELECT id, body FROM notes ORDER BY id";
    co_return co_await c.db().execute(std::move(select));
  });
  def.action("count", [](Ctx<>& c, std::string table) -> Task<int64_t> {
    std::string select = "SELECT COUNT(*) FROM " + table;
    sql::Params none;
    sql::QueryResult r = co_await c.db().query(std::move(select), std::move(none));
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  def.action("integrity", [](Ctx<>& c) -> Task<std::string> {
    std::string check = "PRAGMA integrity_check";
    sql::QueryResult r = co_await c.db().exec(std::move(check));
    co_return std::get<std::string>(r.rows.at(0).at(0));
  });
  def.action("backend", [](Ctx<>& c) { return std::string(c.db().backend()); });
  // One statement through execute (routed): {route, rows}.
  def.action("raw", [](Ctx<>& c, std::string sql) -> Task<Value> {
    sql::ExecuteResult r = co_await c.db().execute_raw(std::move(sql));
    Value out = Value::Object({{"route", std::string(sql::RouteName(r.route))}});
    out.Set("rows", runtime::RowsToObjects(r.columns, r.rows));
    co_return out;
  });
  // Batches until the stop has begun (onSleep ran), then one more inside the grace.
  def.action("churn", [](Ctx<>& c) -> Task<int64_t> {
    const std::string id = c.actor_id();
    J().Note(id, "churning");
    int64_t done = 0;
    for (int i = 0; i < 4000 && !J().Has(id, "onSleep"); ++i) {
      std::string batch = kBatch;
      sql::Params none;
      co_await c.db().run(std::move(batch), std::move(none));
      J().Set(id, ++done);
    }
    std::string batch = kBatch;
    sql::Params none;
    co_await c.db().run(std::move(batch), std::move(none));
    J().Set(id, ++done);
    J().Note(id, "churn done " + std::to_string(done));
    co_return done;
  });
  // One batch; returns how many batches the table holds.
  def.action("bulk", [](Ctx<>& c) -> Task<int64_t> {
    std::string batch = kBatch;
    sql::Params none;
    co_await c.db().run(std::move(batch), std::move(none));
    std::string count = "SELECT COUNT(*) / 500 FROM bulk";
    sql::Params none2;
    sql::QueryResult r = co_await c.db().query(std::move(count), std::move(none2));
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  def.action("churnInBackground", [](Ctx<>& c) {
    c.wait_until(ChurnUntilClosed(&c.instance(), c.actor_id()));
    return true;
  });
  return def;
}

// A database without a migration: a start never needs SQL.
ActorDef<> PlainDef() {
  ActorDef<> def("plain");
  def.database();
  def.action("one", [](Ctx<>& c) -> Task<int64_t> {
    std::string select = "SELECT 1";
    sql::QueryResult r = co_await c.db().exec(std::move(select));
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  return def;
}

engine::EngineOptions FastLostEngine() {
  engine::EngineOptions o;
  // A crashed runtime's actors are rescheduled after this long (default 15 s).
  o.envoy_lost_threshold_ms = 3000;
  o.thresholds.envoy_lost_ms = 3000;
  return o;
}

class SqlIntegration : public ::testing::Test {
 protected:
  std::unique_ptr<RuntimeHost> StartHost(const std::string& backend, uint16_t version = 4) {
    ServeSettings s;
    s.endpoint = engine_.http_url();
    s.sqlite_backend = backend;
    s.protocol_version = version;
    auto host = std::make_unique<RuntimeHost>(
        s, std::vector<std::shared_ptr<const runtime::ActorType>>{
               NotesDef("notes", 15000ms).type(), NotesDef("gracenotes", 300ms).type(),
               PlainDef().type()});
    host->Start();
    EXPECT_TRUE(WaitFor([&] { return host->connected(); })) << "runtime never connected";
    return host;
  }

  // A graceful restart of the runtime: the engine stops the actors (GOING_AWAY) and the
  // next request starts them on the new runtime, with `backend`.
  void Restart(const std::string& backend, const std::vector<std::string>& ids, uint16_t version = 4) {
    host_->Stop(10s);
    for (const auto& id : ids) {
      ASSERT_TRUE(WaitFor([&] {
        json a = GetActor(base(), id);
        return a.is_object() && a["connectable_ts"].is_null();
      })) << GetActor(base(), id).dump();
    }
    host_ = StartHost(backend, version);
  }

  // The churn action on `id`, from another thread: {HTTP status, reply}. It issues batches
  // until the instance's onSleep has run, then one more.
  std::future<std::pair<int, json>> StartChurn(const std::string& id) {
    return std::async(std::launch::async, [this, id] {
      int status = 0;
      json out = Action(base(), id, "churn", json::array(), &status);
      return std::make_pair(status, out);
    });
  }

  // Asks `id` to sleep while `churn` (StartChurn) runs. The action still completes, onSleep
  // ran while it was issuing statements, and after the wake every batch it reported is
  // there, whole, once.
  void SleepDuringChurn(const std::string& id, std::future<std::pair<int, json>>& churn) {
    auto slept = Call(base(), "POST", "/actors/" + id + "/sleep?namespace=default");
    ASSERT_EQ(slept.status, 200) << slept.body;
    ASSERT_EQ(churn.wait_for(20s), std::future_status::ready);
    auto [status, out] = churn.get();
    ASSERT_EQ(status, 200) << out.dump();
    const int64_t batches = out["output"].get<int64_t>();
    RecordProperty("batches", std::to_string(batches));
    EXPECT_EQ(batches, J().Get(id));
    auto log = J().Of(id);
    auto on_sleep = std::find(log.begin(), log.end(), "onSleep");
    auto done = std::find(log.begin(), log.end(), "churn done " + std::to_string(batches));
    ASSERT_NE(on_sleep, log.end());
    ASSERT_NE(done, log.end());
    EXPECT_LT(on_sleep, done);
    ASSERT_TRUE(WaitSleeping(base(), id));
    EXPECT_EQ(Out(id, "count", {"bulk"}), batches * kBatchRows);
    EXPECT_EQ(Out(id, "integrity"), "ok");
  }

  void Sleep(const std::string& id) {
    auto slept = Call(base(), "POST", "/actors/" + id + "/sleep?namespace=default");
    ASSERT_EQ(slept.status, 200) << slept.body;
    ASSERT_TRUE(WaitSleeping(base(), id));
  }

  json Out(const std::string& id, const std::string& action, json args = json::array()) {
    json r = Action(base(), id, action, std::move(args));
    EXPECT_TRUE(r.contains("output")) << action << ": " << r.dump();
    return r.contains("output") ? r["output"] : r;
  }

  // The page store's head record of an actor's database (absent: no database).
  std::optional<storage::SqliteHead> Head(const std::string& id) {
    auto parsed = engine::EngineId::Parse(id);
    EXPECT_TRUE(parsed.ok());
    if (!parsed.ok()) return std::nullopt;
    auto head = engine_.engine().page_store().ReadHead(parsed->bytes());
    EXPECT_TRUE(head.ok());
    return head.ok() ? *head : std::nullopt;
  }

  std::string base() const { return engine_.http_url(); }

  TestEngine engine_{FastLostEngine()};
  std::unique_ptr<RuntimeHost> host_;
};

class SqlBackends : public SqlIntegration, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override { host_ = StartHost(GetParam()); }
  std::string Key(const std::string& what) const { return what + "-" + GetParam(); }
};

// 1 + 2: insert/select through actions; the data survives sleep/wake (the migration runs
// again, in a new generation) and a runtime restart; destroy deletes the database.
TEST_P(SqlBackends, DataSurvivesSleepAndRestartAndDestroyDeletesIt) {
  const std::string key = Key("e2e");
  const std::string id = CreateActor(base(), "notes", key);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Out(id, "backend"), GetParam());
  EXPECT_EQ(Out(id, "add", {"milk"}), 1);
  EXPECT_EQ(Out(id, "add", {"eggs"}), 2);
  const json both = json::array({{{"id", 1}, {"body", "milk"}}, {{"id", 2}, {"body", "eggs"}}});
  EXPECT_EQ(Out(id, "list"), both);
  EXPECT_EQ(Out(id, "count", {"starts"}), 1);
  const auto first = Head(id);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(first->generation.has_value());

  ASSERT_NO_FATAL_FAILURE(Sleep(id));
  EXPECT_EQ(Out(id, "list"), both) << "after sleep and wake";
  EXPECT_EQ(Out(id, "count", {"starts"}), 2) << "the migration ran again at the wake";
  const auto woken = Head(id);
  ASSERT_TRUE(woken.has_value());
  EXPECT_GT(woken->generation.value_or(0), *first->generation) << "a new generation wrote it";

  ASSERT_NO_FATAL_FAILURE(Restart(GetParam(), {id}));
  EXPECT_EQ(Out(id, "list"), both) << "after a runtime restart";
  EXPECT_EQ(Out(id, "count", {"starts"}), 3);
  EXPECT_EQ(Out(id, "integrity"), "ok");

  auto destroyed = Call(base(), "DELETE", "/actors/" + id + "?namespace=default");
  ASSERT_EQ(destroyed.status, 200) << destroyed.body;
  EXPECT_TRUE(WaitFor([&] { return !Head(id).has_value(); })) << "the page store still has it";

  // The same key again: a new actor whose database starts empty.
  std::string again;
  ASSERT_TRUE(WaitFor([&] {
    json body{{"name", "notes"}, {"key", key}, {"runner_name_selector", "default"}};
    auto r = Call(base(), "POST", "/actors?namespace=default", body.dump());
    json j = ParseJson(r.body);
    if (r.status != 200 || !j.is_object() || !j.contains("actor")) return false;
    again = j["actor"]["actor_id"].get<std::string>();
    return true;
  })) << "the key was never free again";
  EXPECT_NE(again, id);
  EXPECT_EQ(Out(again, "list"), json::array());
  EXPECT_EQ(Out(again, "count", {"starts"}), 1);
}

// 7: BEGIN in one action, the transaction stays on the writer across calls: the next
// SELECT reports writeFallback and sees the uncommitted row, then COMMIT; afterwards a
// SELECT is a read again.
TEST_P(SqlBackends, ManualTransactionSpanningActionsStaysOnTheWriter) {
  const std::string id = CreateActor(base(), "notes", Key("txn"));
  const std::string count = "SELECT COUNT(*) AS n FROM notes";
  EXPECT_EQ(Out(id, "raw", {count}), (json{{"route", "read"}, {"rows", {{{"n", 0}}}}}));
  EXPECT_EQ(Out(id, "raw", {"BEGIN"})["route"], "write");
  EXPECT_EQ(Out(id, "raw", {"INSERT INTO notes (body) VALUES ('pending')"})["route"], "write");
  EXPECT_EQ(Out(id, "raw", {count}), (json{{"route", "writeFallback"}, {"rows", {{{"n", 1}}}}}));
  EXPECT_EQ(Out(id, "raw", {"COMMIT"})["route"], "write");
  EXPECT_EQ(Out(id, "raw", {count}), (json{{"route", "read"}, {"rows", {{{"n", 1}}}}}));
  // A transaction left open is rolled back when the database closes: not in the next
  // generation.
  EXPECT_EQ(Out(id, "raw", {"BEGIN"})["route"], "write");
  EXPECT_EQ(Out(id, "raw", {"INSERT INTO notes (body) VALUES ('abandoned')"})["route"], "write");
  ASSERT_NO_FATAL_FAILURE(Sleep(id));
  EXPECT_EQ(Out(id, "list"), json::array({{{"id", 1}, {"body", "pending"}}}));
  EXPECT_EQ(Out(id, "integrity"), "ok");
}

// 8: an action keeps SQL in flight while the actor is told to sleep. The stop waits for it
// (within the grace): the action's statements after onSleep still run, its reply arrives,
// and after the wake every batch it was told succeeded is there, whole, once. The actor is
// running (connectable) before the churn begins: this test is about a stop during SQL (the
// churn as the waking request is TheWakingRequestsSqlDoesNotHoldTheActorStarting).
TEST_P(SqlBackends, StopWaitsForAnActionsInFlightSql) {
  const std::string id = CreateActor(base(), "notes", Key("churn"));
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Out(id, "backend"), GetParam());
  ASSERT_TRUE(WaitFor([&] {
    json a = GetActor(base(), id);
    return a.is_object() && !a["connectable_ts"].is_null();
  })) << GetActor(base(), id).dump();
  auto churn = StartChurn(id);
  ASSERT_TRUE(WaitFor([&] { return J().Get(id) >= 1; })) << "never churned";
  SleepDuringChurn(id, churn);
}

// The request that wakes an actor (sent early, behind the start command: docs/engine.md
// "Early requests") runs SQL without pause. The actor is connectable while it does — its
// running event does not wait behind the action's page commits — and a sleep asked for
// then stops it in the middle of the action, which still completes with every batch it
// reported applied.
TEST_P(SqlBackends, TheWakingRequestsSqlDoesNotHoldTheActorStarting) {
  const std::string id = CreateActor(base(), "notes", Key("waking"));
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Out(id, "backend"), GetParam());
  Sleep(id);
  J().Clear(id);  // the churn runs until this instance's onSleep
  auto churn = StartChurn(id);
  ASSERT_TRUE(WaitFor([&] { return J().Get(id) >= 1; })) << "never churned";
  json actor;
  ASSERT_TRUE(WaitFor([&] {
    actor = GetActor(base(), id);
    return (actor.is_object() && !actor["connectable_ts"].is_null()) ||
           !J().Find(id, "churn done").empty();
  })) << actor.dump();
  EXPECT_EQ(J().Find(id, "churn done"), "") << "the actor was connectable only after the action";
  SleepDuringChurn(id, churn);
}

// 8: SQL still running when the grace period (300 ms) ends: the statement in flight is let
// finish (its batch is applied and reported), the database then closes, and the next
// statement fails sqlite.closed — nothing half-applied, nothing lost that was reported.
TEST_P(SqlBackends, SqlAfterTheDatabaseClosedFailsClosed) {
  const std::string id = CreateActor(base(), "gracenotes", Key("grace"));
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Out(id, "churnInBackground"), true);
  ASSERT_TRUE(WaitFor([&] { return J().Get(id) >= 1; })) << "never churned";
  auto slept = Call(base(), "POST", "/actors/" + id + "/sleep?namespace=default");
  ASSERT_EQ(slept.status, 200) << slept.body;
  std::string outcome;
  ASSERT_TRUE(WaitFor([&] { return !(outcome = J().Find(id, "background failed")).empty(); }, 15000ms))
      << ::testing::PrintToString(J().Of(id));
  const int64_t batches = J().Get(id);
  RecordProperty("batches", std::to_string(batches));
  EXPECT_EQ(outcome, "background failed sqlite.closed after " + std::to_string(batches));
  ASSERT_TRUE(WaitSleeping(base(), id));
  EXPECT_EQ(Out(id, "count", {"bulk"}), batches * kBatchRows);
  EXPECT_EQ(Out(id, "integrity"), "ok");
}

// 5 (native): the runtime crashes (RuntimeHost::Kill) while its actor's database is open
// (the local-native backend holds an open connection over the VFS, SQL threads running).
// Tearing it down is bounded and clean; the actor comes back on a new runtime, in a new
// generation, with every batch it reported, each whole. (A crash with a statement still in
// flight cannot be torn down cleanly here: the runtime core never frees the frame of an
// action suspended when its event loop dies, which LeakSanitizer reports. The
// interleaving-exact version — the write's connection drops, the runtime reconnects — is
// LocalSqlLostCommit in tests/unit/runtime/local_sql_test.cc.)
TEST_P(SqlBackends, RuntimeCrashWithTheDatabaseOpen) {
  const std::string id = CreateActor(base(), "notes", Key("crash"));
  ASSERT_FALSE(id.empty());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Out(id, "bulk"), i + 1);
  host_->Kill();
  const auto started = std::chrono::steady_clock::now();
  host_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s) << "teardown after a crash";
  host_ = StartHost(GetParam());
  json count;
  ASSERT_TRUE(WaitFor([&] {
    count = Action(base(), id, "count", {"bulk"});
    return count.contains("output");
  }, 15000ms)) << count.dump();
  EXPECT_EQ(count["output"], 3 * kBatchRows);
  EXPECT_EQ(Out(id, "count", {"starts"}), 2) << "started again, in a new generation";
  EXPECT_EQ(Out(id, "integrity"), "ok");
}

INSTANTIATE_TEST_SUITE_P(Backends, SqlBackends, ::testing::Values("local", "remote"),
                         [](const auto& info) { return info.param; });

// 3: a database written by the local-native backend is read by the remote one and vice
// versa — the same page store, the same generation fence.
TEST_F(SqlIntegration, BackendsShareTheDatabase) {
  host_ = StartHost("local");
  const std::string id = CreateActor(base(), "notes", "switch");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Out(id, "backend"), "local");
  EXPECT_EQ(Out(id, "add", {"from local"}), 1);

  ASSERT_NO_FATAL_FAILURE(Restart("remote", {id}));
  EXPECT_EQ(Out(id, "backend"), "remote");
  EXPECT_EQ(Out(id, "list"), json::array({{{"id", 1}, {"body", "from local"}}}));
  EXPECT_EQ(Out(id, "add", {"from remote"}), 2);

  ASSERT_NO_FATAL_FAILURE(Restart("local", {id}));
  EXPECT_EQ(Out(id, "backend"), "local");
  EXPECT_EQ(Out(id, "list"),
            json::array({{{"id", 1}, {"body", "from local"}}, {{"id", 2}, {"body", "from remote"}}}));
  EXPECT_EQ(Out(id, "count", {"starts"}), 3);
  EXPECT_EQ(Out(id, "integrity"), "ok");
  const auto head = Head(id);
  ASSERT_TRUE(head.has_value());
  EXPECT_GE(head->generation.value_or(0), 3u);
}

// 4: at protocol v3 remote SQL does not exist (sqlite.remote_unavailable), but page I/O
// does, so the local-native backend works.
TEST_F(SqlIntegration, ProtocolV3HasNoRemoteSqlButLocalWorks) {
  host_ = StartHost("remote", 3);
  const std::string plain = CreateActor(base(), "plain", "v3");
  ASSERT_FALSE(plain.empty());
  int status = 0;
  json err = Action(base(), plain, "one", json::array(), &status);
  EXPECT_EQ(err["group"], "sqlite") << err.dump();
  EXPECT_EQ(err["code"], "remote_unavailable") << err.dump();
  EXPECT_NE(status, 200);

  ASSERT_NO_FATAL_FAILURE(Restart("local", {plain}, 3));
  EXPECT_EQ(Out(plain, "one"), 1);
  const std::string notes = CreateActor(base(), "notes", "v3");
  EXPECT_EQ(Out(notes, "backend"), "local");
  EXPECT_EQ(Out(notes, "add", {"v3"}), 1);
  EXPECT_EQ(Out(notes, "list"), json::array({{{"id", 1}, {"body", "v3"}}}));
}

}  // namespace
}  // namespace keel::testing
