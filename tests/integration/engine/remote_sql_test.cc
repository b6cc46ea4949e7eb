// Remote SQL in the engine end to end (envoy-protocol.md §8): a whole engine in-process
// (TestEngine) driven by scripted fake envoys speaking v4 exec / execute / execute_write
// over real WebSockets — validation, executors per actor generation, the SQL thread pool and
// its fairness, the stop protocol, limits and the statement deadline.
//
// Waits are bounded and wait for something observable (an answer, an ack, a REST state, a
// metric); nothing sleeps to synchronise. "Slow" statements are recursive CTEs whose length
// is calibrated once against this machine's SQLite (SlowSql), so they take about the time a
// test asks for.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/random.h"
#include "engine/common/id.h"
#include "engine/core/engine.h"
#include "engine/core/orchestrator.h"
#include "net/client.h"
#include "protocol/envoy/versioned.h"
#include "sqlite/types.h"
#include "sqlite/wire.h"
#include "storage/vfs/keel_vfs.h"
#include "support/fake_envoy.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace v = ::keel::protocol::envoy::latest;
namespace orch = ::keel::engine::orch;
using Clock = std::chrono::steady_clock;

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

engine::EngineOptions FastOptions() {
  engine::EngineOptions o;
  o.ping_interval_ms = 100;
  o.ping_timeout_ms = 1500;
  o.envoy_lost_threshold_ms = 500;
  o.actor_stop_threshold_ms = 10000;
  o.envoy_eligible_threshold_ms = 2000;
  o.thresholds.envoy_lost_ms = 500;
  o.thresholds.stop_ms = 15000;
  o.thresholds.start_ms = 3000;
  o.thresholds.allocation_ms = 2000;
  o.thresholds.stale_host_exclusion_ms = 3000;
  o.actor_ready_timeout_ms = 5000;
  o.seed = 42;
  return o;
}

enum class Kind { kExec, kExecute, kWrite };

// One decoded remote SQL answer.
struct SqlAnswer {
  uint32_t request_id = 0;
  Kind kind = Kind::kExec;
  std::string error;          // the SqliteErrorResponse text, "" on success
  sql::QueryResult query;     // exec
  sql::ExecuteResult result;  // execute / execute_write
  bool ok() const { return error.empty(); }
};

std::optional<SqlAnswer> AsSqlAnswer(const v::ToEnvoy& m) {
  SqlAnswer a;
  if (const auto* r = m.get_if<v::ToEnvoySqliteExecResponse>()) {
    a.request_id = r->request_id;
    a.kind = Kind::kExec;
    if (const auto* e = r->data.get_if<v::SqliteErrorResponse>()) {
      a.error = e->message;
    } else {
      a.query = sql::FromWire(r->data.get_if<v::SqliteExecOk>()->result);
    }
    return a;
  }
  if (const auto* r = m.get_if<v::ToEnvoySqliteExecuteResponse>()) {
    a.request_id = r->request_id;
    a.kind = Kind::kExecute;
    if (const auto* e = r->data.get_if<v::SqliteErrorResponse>()) {
      a.error = e->message;
    } else {
      a.result = sql::FromWire(r->data.get_if<v::SqliteExecuteOk>()->result);
    }
    return a;
  }
  if (const auto* r = m.get_if<v::ToEnvoySqliteExecuteWriteResponse>()) {
    a.request_id = r->request_id;
    a.kind = Kind::kWrite;
    if (const auto* e = r->data.get_if<v::SqliteErrorResponse>()) {
      a.error = e->message;
    } else {
      a.result = sql::FromWire(r->data.get_if<v::SqliteExecuteWriteOk>()->result);
    }
    return a;
  }
  return std::nullopt;
}

// A recursive CTE counting to `rows`: pure CPU inside SQLite, no storage.
std::string CountTo(int64_t rows) {
  return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < " +
         std::to_string(rows) + ") SELECT max(x) FROM c";
}

class RemoteSqlTest : public ::testing::Test {
 protected:
  void Start(engine::EngineOptions options = FastOptions()) {
    te_ = std::make_unique<TestEngine>(std::move(options));
  }

  TestEngine& te() { return *te_; }
  const engine::RemoteSqlMetrics& metrics() { return te_->engine().remote_sql_metrics(); }
  uint64_t Created() { return metrics().executors_created->Value(); }
  double Active() { return metrics().executors_active->Value(); }

  json Call(const std::string& method, const std::string& target, const std::string& body = "",
            int* status = nullptr) {
    net::HttpRequest req;
    req.method = method;
    if (!body.empty()) req.headers.emplace_back("content-type", "application/json");
    req.body = body;
    auto r = net::FetchSync(te_->http_url() + target, std::move(req), 10s);
    if (!r.has_value()) {
      ADD_FAILURE() << method << " " << target << ": " << r.error().ToString();
      return json();
    }
    if (status != nullptr) *status = r->status;
    return json::parse(r->body, nullptr, false);
  }

  std::unique_ptr<FakeEnvoy> Envoy(std::string key, uint16_t version = 4,
                                   std::string pool = "default") {
    FakeEnvoyOptions o;
    o.ws_url = te_->ws_url();
    o.envoy_key = std::move(key);
    o.protocol_version = version;
    o.pool_name = std::move(pool);
    auto fe = FakeEnvoy::ConnectAndInit(o);
    if (!fe.has_value()) {
      ADD_FAILURE() << "envoy connect: " << fe.error().ToString();
      return nullptr;
    }
    return std::move(*fe);
  }

  std::string CreateActor(const std::string& name, const std::string& key,
                          const std::string& pool = "") {
    json body{{"name", name}, {"key", key}};
    if (!pool.empty()) body["runner_name_selector"] = pool;
    int status = 0;
    json r = Call("POST", "/actors?namespace=default", body.dump(), &status);
    if (status != 200 || !r.is_object() || !r.contains("actor")) {
      ADD_FAILURE() << "create actor: " << status << " " << r.dump();
      return "";
    }
    return r["actor"]["actor_id"].get<std::string>();
  }

  // Waits for the start of `id` on `fe` and reports Running; returns the generation.
  uint32_t StartOn(FakeEnvoy& fe, const std::string& id) {
    auto cmd = fe.WaitCommand(id, 5s);
    if (!cmd.has_value()) {
      ADD_FAILURE() << "no start for " << id << ": " << cmd.error().ToString();
      return 0;
    }
    EXPECT_TRUE(cmd->inner.is<v::CommandStartActor>());
    EXPECT_TRUE(fe.SendRunning(id, cmd->checkpoint.generation).has_value());
    return cmd->checkpoint.generation;
  }

  orch::Transition Transition(const std::string& id) {
    auto info = te_->engine().orchestrator().Read(*engine::EngineId::Parse(id));
    return info.has_value() ? info->workflow.transition : orch::Transition::kCreated;
  }

  // Polls `pred` every 5 ms for up to `timeout`.
  bool Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return pred();
  }

  // ---- remote SQL ----

  uint32_t Send(FakeEnvoy& fe, Kind kind, const std::string& actor, uint64_t generation,
                std::string text, std::optional<sql::Params> params = std::nullopt,
                std::string ns = "default") {
    const uint32_t id = next_request_++;
    v::ToRivet msg;
    if (kind == Kind::kExec) {
      msg = v::ToRivet{v::ToRivetSqliteExecRequest{
          id, v::SqliteExecRequest{std::move(ns), actor, generation, std::move(text)}}};
    } else if (kind == Kind::kExecute) {
      msg = v::ToRivet{v::ToRivetSqliteExecuteRequest{
          id, v::SqliteExecuteRequest{std::move(ns), actor, generation, std::move(text),
                                      sql::ToWireParams(params)}}};
    } else {
      msg = v::ToRivet{v::ToRivetSqliteExecuteWriteRequest{
          id, v::SqliteExecuteWriteRequest{std::move(ns), actor, generation, std::move(text),
                                           sql::ToWireParams(params)}}};
    }
    Status sent = fe.Send(msg);
    EXPECT_TRUE(sent.has_value()) << sent.error().ToString();
    kinds_[id] = kind;
    return id;
  }

  // The answer to request `id`; other messages stay in the backlog.
  SqlAnswer Wait(FakeEnvoy& fe, uint32_t id, std::chrono::milliseconds timeout = 10s) {
    auto frame = fe.WaitForFrame(
        [&](const v::ToEnvoy& m) {
          auto a = AsSqlAnswer(m);
          return a.has_value() && a->request_id == id;
        },
        timeout);
    if (!frame.has_value()) {
      ADD_FAILURE() << "no answer to remote sql request " << id << ": " << frame.error().ToString();
      SqlAnswer none;
      none.error = "<no answer>";
      return none;
    }
    SqlAnswer a = *AsSqlAnswer(frame->msg);
    EXPECT_EQ(a.kind, kinds_[id]) << "the answer's variant matches the request kind";
    return a;
  }

  SqlAnswer Run(FakeEnvoy& fe, Kind kind, const std::string& actor, uint64_t generation,
                std::string text, std::optional<sql::Params> params = std::nullopt,
                std::string ns = "default") {
    return Wait(
        fe, Send(fe, kind, actor, generation, std::move(text), std::move(params), std::move(ns)));
  }

  int64_t Count(FakeEnvoy& fe, const std::string& actor, uint32_t generation,
                const std::string& table = "t") {
    SqlAnswer a = Run(fe, Kind::kExecute, actor, generation, "SELECT count(*) FROM " + table);
    if (!a.ok() || a.result.rows.size() != 1) {
      ADD_FAILURE() << "count: " << a.error;
      return -1;
    }
    return std::get<int64_t>(a.result.rows[0].at(0));
  }

  // A statement that runs about `ms` on this machine (calibrated once per process on a
  // scratch actor of `fe`).
  std::string SlowSql(FakeEnvoy& fe, int64_t ms) {
    static double rows_per_ms = 0;
    if (rows_per_ms == 0) {
      const std::string scratch = CreateActor("calibrate", "k" + std::to_string(next_request_));
      const uint32_t gen = StartOn(fe, scratch);
      int64_t rows = 200000;
      for (int i = 0; i < 6; ++i) {
        const auto t0 = Clock::now();
        SqlAnswer a = Run(fe, Kind::kExecute, scratch, gen, CountTo(rows));
        const auto took =
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
        EXPECT_TRUE(a.ok()) << a.error;
        if (took >= 150000 || i == 5) {
          rows_per_ms = static_cast<double>(rows) * 1000.0 / static_cast<double>(took);
          break;
        }
        rows *= 4;
      }
    }
    return CountTo(std::max<int64_t>(1000, static_cast<int64_t>(rows_per_ms * ms)));
  }

  std::unique_ptr<TestEngine> te_;
  uint32_t next_request_ = 1;
  std::map<uint32_t, Kind> kinds_;
};

sql::Value Text(std::string s) { return sql::Value{std::move(s)}; }
sql::Value Int(int64_t i) { return sql::Value{i}; }

// ---- round trips and routes --------------------------------------------------------------

TEST_F(RemoteSqlTest, ExecExecuteAndExecuteWriteRoundTripWithRoutes) {
  Start();
  auto fe = Envoy("rt-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string id = CreateActor("rt", "k");
  const uint32_t gen = StartOn(*fe, id);
  ASSERT_EQ(gen, 1u);

  // exec: several statements; the result is the last one that produced rows.
  SqlAnswer created = Run(*fe, Kind::kExec, id, gen,
                          "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                          "INSERT INTO t(v) VALUES ('a');"
                          "SELECT id, v FROM t;"
                          "CREATE INDEX tv ON t(v)");
  ASSERT_TRUE(created.ok()) << created.error;
  EXPECT_EQ(created.query.columns, (std::vector<std::string>{"id", "v"}));
  ASSERT_EQ(created.query.rows.size(), 1u);
  EXPECT_EQ(created.query.rows[0], (sql::Row{Int(1), Text("a")}));

  SqlAnswer insert =
      Run(*fe, Kind::kExecute, id, gen, "INSERT INTO t(v) VALUES (?)", sql::Params{Text("b")});
  ASSERT_TRUE(insert.ok()) << insert.error;
  EXPECT_EQ(insert.result.route, sql::Route::kWrite);
  EXPECT_EQ(insert.result.changes, 1);
  EXPECT_EQ(insert.result.last_insert_row_id, std::optional<int64_t>(2));

  SqlAnswer select = Run(*fe, Kind::kExecute, id, gen, "SELECT id, v FROM t ORDER BY id");
  ASSERT_TRUE(select.ok()) << select.error;
  EXPECT_EQ(select.result.route, sql::Route::kRead);
  EXPECT_EQ(select.result.columns, (std::vector<std::string>{"id", "v"}));
  EXPECT_EQ(select.result.rows, (std::vector<sql::Row>{{Int(1), Text("a")}, {Int(2), Text("b")}}));

  // execute_write: always the writer, even for a read.
  SqlAnswer forced = Run(*fe, Kind::kWrite, id, gen, "SELECT count(*) FROM t");
  ASSERT_TRUE(forced.ok()) << forced.error;
  EXPECT_EQ(forced.result.route, sql::Route::kWrite);
  EXPECT_EQ(forced.result.rows, (std::vector<sql::Row>{{Int(2)}}));

  // A manual transaction across requests stays on the writer (§8.3 stickiness).
  SqlAnswer begin = Run(*fe, Kind::kExecute, id, gen, "BEGIN");
  ASSERT_TRUE(begin.ok()) << begin.error;
  EXPECT_EQ(begin.result.route, sql::Route::kWrite);
  SqlAnswer in_txn = Run(*fe, Kind::kExecute, id, gen, "INSERT INTO t(v) VALUES ('c')");
  ASSERT_TRUE(in_txn.ok()) << in_txn.error;
  EXPECT_EQ(in_txn.result.route, sql::Route::kWrite);
  SqlAnswer read_in_txn = Run(*fe, Kind::kExecute, id, gen, "SELECT count(*) FROM t");
  ASSERT_TRUE(read_in_txn.ok()) << read_in_txn.error;
  EXPECT_EQ(read_in_txn.result.route, sql::Route::kWriteFallback);
  EXPECT_EQ(read_in_txn.result.rows, (std::vector<sql::Row>{{Int(3)}}));
  SqlAnswer commit = Run(*fe, Kind::kExecute, id, gen, "COMMIT");
  ASSERT_TRUE(commit.ok()) << commit.error;
  EXPECT_EQ(commit.result.route, sql::Route::kWrite);
  SqlAnswer after = Run(*fe, Kind::kExecute, id, gen, "SELECT count(*) FROM t");
  ASSERT_TRUE(after.ok()) << after.error;
  EXPECT_EQ(after.result.route, sql::Route::kRead);
  EXPECT_EQ(after.result.rows, (std::vector<sql::Row>{{Int(3)}}));

  // Every value kind round-trips, a NUL inside text included.
  const std::string with_nul("x\0y", 3);
  SqlAnswer values = Run(*fe, Kind::kExecute, id, gen, "SELECT ?, ?, ?, ?, ?",
                         sql::Params{sql::Null{}, Int(-7), sql::Value{2.5}, Text(with_nul),
                                     sql::Blob{Bytes{0, 1, 255}}});
  ASSERT_TRUE(values.ok()) << values.error;
  ASSERT_EQ(values.result.rows.size(), 1u);
  EXPECT_EQ(values.result.rows[0], (sql::Row{sql::Null{}, Int(-7), sql::Value{2.5}, Text(with_nul),
                                             sql::Blob{Bytes{0, 1, 255}}}));

  // One executor for the generation, reused by every call; visible on /metrics.
  EXPECT_EQ(Created(), 1u);
  EXPECT_EQ(Active(), 1.0);
  net::HttpRequest req;
  req.method = "GET";
  auto text = net::FetchSync(te().http_url() + "/metrics", std::move(req), 10s);
  ASSERT_TRUE(text.has_value());
  EXPECT_NE(text->body.find("keel_remote_sql_executors_created_total 1"), std::string::npos)
      << text->body;
  EXPECT_NE(text->body.find("keel_remote_sql_executors_active 1"), std::string::npos);
  EXPECT_NE(text->body.find("keel_remote_sql_requests_total{outcome=\"ok\"}"), std::string::npos);
}

TEST_F(RemoteSqlTest, SqlErrorsAreTheExecutionLayersAndTheExecutorKeepsWorking) {
  Start();
  auto fe = Envoy("err-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string id = CreateActor("err", "k");
  const uint32_t gen = StartOn(*fe, id);
  SqlAnswer malformed = Run(*fe, Kind::kExecute, id, gen, "SELEC 1");
  EXPECT_TRUE(StartsWith(malformed.error, "sqlite.prepare_failed: ")) << malformed.error;
  SqlAnswer exec_malformed = Run(*fe, Kind::kExec, id, gen, "CREATE TABLE (");
  EXPECT_TRUE(StartsWith(exec_malformed.error, "sqlite.prepare_failed: ")) << exec_malformed.error;
  SqlAnswer two = Run(*fe, Kind::kExecute, id, gen, "SELECT 1; SELECT 2");
  EXPECT_TRUE(StartsWith(two.error, "sqlite.invalid_sql: ")) << two.error;
  SqlAnswer fine = Run(*fe, Kind::kExecute, id, gen, "SELECT 41 + 1");
  ASSERT_TRUE(fine.ok()) << fine.error;
  EXPECT_EQ(fine.result.rows, (std::vector<sql::Row>{{Int(42)}}));
  EXPECT_EQ(Created(), 1u);
}

// ---- executors per (actor, generation) ---------------------------------------------------

TEST_F(RemoteSqlTest, ExecutorsAreLazyOnePerGenerationAndANewGenerationSeesTheData) {
  Start();
  auto fe = Envoy("gen-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string quiet = CreateActor("quiet", "k");
  const std::string id = CreateActor("gen", "k");
  const uint32_t quiet_gen = StartOn(*fe, quiet);
  ASSERT_EQ(StartOn(*fe, id), 1u);
  // KV and pages do not create executors; neither does an actor that never runs SQL.
  auto put = fe->Kv(quiet, KvPut({{"a", "1"}}));
  ASSERT_TRUE(put.has_value() && put->is<v::KvPutResponse>());
  ASSERT_TRUE(fe->Sync().has_value());
  EXPECT_EQ(Created(), 0u);

  ASSERT_TRUE(
      Run(*fe, Kind::kExec, id, 1, "CREATE TABLE t(v); INSERT INTO t VALUES (1), (2)").ok());
  EXPECT_EQ(Created(), 1u);
  EXPECT_EQ(Count(*fe, id, 1), 2);
  ASSERT_TRUE(Run(*fe, Kind::kWrite, id, 1, "INSERT INTO t VALUES (3)").ok());
  EXPECT_EQ(Created(), 1u);
  EXPECT_EQ(Active(), 1.0);

  // Reschedule: stop generation 1, start generation 2 on the same connection.
  int status = 0;
  Call("POST", "/actors/" + id + "/reschedule?namespace=default", "{}", &status);
  ASSERT_EQ(status, 200);
  auto stop = fe->WaitCommand(id, 5s);
  ASSERT_TRUE(stop.has_value()) << stop.error().ToString();
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  ASSERT_TRUE(fe->SendStopped(id, 1).has_value());
  auto start = fe->WaitCommand(id, 5s);
  ASSERT_TRUE(start.has_value()) << start.error().ToString();
  ASSERT_TRUE(start->inner.is<v::CommandStartActor>());
  const uint32_t gen2 = start->checkpoint.generation;
  ASSERT_EQ(gen2, 2u);
  // Generation 1's executor is closed once its stop went through.
  EXPECT_TRUE(Eventually([&] { return Active() == 0.0; })) << Active();

  // Starting (Running not yet reported) already accepts SQL: a fresh executor, same data.
  SqlAnswer rows = Run(*fe, Kind::kExecute, id, gen2, "SELECT v FROM t ORDER BY v");
  ASSERT_TRUE(rows.ok()) << rows.error;
  EXPECT_EQ(rows.result.rows, (std::vector<sql::Row>{{Int(1)}, {Int(2)}, {Int(3)}}));
  EXPECT_EQ(Created(), 2u);
  EXPECT_EQ(Active(), 1.0);
  const engine::EngineId eid = *engine::EngineId::Parse(id);
  auto head = te().engine().page_store().ReadHead(eid.bytes());
  ASSERT_TRUE(head.has_value() && head->has_value());
  EXPECT_EQ((*head)->generation, std::optional<uint64_t>(gen2));
  // Generation 1's storage fence: its page source can no longer read or commit.
  storage::PageStorePageSource stale_source(te().engine().page_store(),
                                            Bytes(eid.bytes().begin(), eid.bytes().end()), 1);
  auto stale_read = stale_source.GetPages({1});
  ASSERT_FALSE(stale_read.has_value());
  EXPECT_TRUE(stale_read.error().Is("sqlite", "remote_fence_mismatch"))
      << stale_read.error().ToString();
  ASSERT_TRUE(fe->SendRunning(id, gen2).has_value());

  // The old generation is fenced: refused, nothing written.
  SqlAnswer stale = Run(*fe, Kind::kWrite, id, 1, "INSERT INTO t VALUES (99)");
  EXPECT_EQ(stale.error,
            "sqlite.remote_fence_mismatch: remote sqlite generation 1 did not match the hosted "
            "generation 2");
  EXPECT_EQ(Count(*fe, id, gen2), 3);
  EXPECT_EQ(Created(), 2u);
  (void)quiet_gen;

  // Closing the connection closes its executors.
  fe->Close();
  ASSERT_TRUE(fe->WaitClosed(5s).has_value());
  EXPECT_TRUE(Eventually([&] { return Active() == 0.0; })) << Active();
}

// ---- validation --------------------------------------------------------------------------

TEST_F(RemoteSqlTest, StaleGenerationWrongNamespaceAndForeignConnectionAreRefused) {
  Start();
  auto fe = Envoy("val-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string id = CreateActor("val", "k");
  const uint32_t gen = StartOn(*fe, id);
  auto other = Envoy("val-other");  // connected after the allocation: hosts nothing
  ASSERT_NE(other, nullptr);
  const std::string insert = "INSERT INTO t VALUES (1)";

  SqlAnswer stale = Run(*fe, Kind::kWrite, id, gen - 1, insert);
  EXPECT_EQ(stale.error,
            "sqlite.remote_fence_mismatch: remote sqlite generation 0 did not match the hosted "
            "generation 1");
  SqlAnswer future = Run(*fe, Kind::kExec, id, gen + 1, insert);
  EXPECT_TRUE(StartsWith(future.error, "sqlite.remote_fence_mismatch: ")) << future.error;
  SqlAnswer huge_gen = Run(*fe, Kind::kExecute, id, (uint64_t{1} << 32) + gen, insert);
  EXPECT_TRUE(StartsWith(huge_gen.error, "sqlite.remote_fence_mismatch: ")) << huge_gen.error;

  SqlAnswer wrong_ns = Run(*fe, Kind::kExecute, id, gen, insert, std::nullopt, "other-ns");
  EXPECT_EQ(wrong_ns.error, "actor.not_found: actor does not exist");
  SqlAnswer foreign = Run(*other, Kind::kWrite, id, gen, insert);
  EXPECT_TRUE(StartsWith(foreign.error, "actor.not_owned: ")) << foreign.error;
  SqlAnswer bad_id = Run(*fe, Kind::kExecute, "not an id", gen, insert);
  EXPECT_TRUE(StartsWith(bad_id.error, "actor.invalid_id: ")) << bad_id.error;
  Random random(7);
  const std::string unknown = engine::EngineId::Generate(random, 1).ToString();
  SqlAnswer missing = Run(*fe, Kind::kExecute, unknown, 1, insert);
  EXPECT_TRUE(StartsWith(missing.error, "actor.not_owned: ")) << missing.error;
  // Nothing ran: not even an executor exists yet.
  EXPECT_EQ(Created(), 0u);
  EXPECT_EQ(metrics().rejected->Value(), 7u);

  // The namespace's id text is accepted as well as its name.
  json actor = Call("GET", "/actors/" + id + "?namespace=default")["actor"];
  const std::string ns_id = actor["namespace_id"].get<std::string>();
  ASSERT_TRUE(Run(*fe, Kind::kExec, id, gen, "CREATE TABLE t(v)", std::nullopt, ns_id).ok());
  EXPECT_EQ(Count(*fe, id, gen), 0);
  EXPECT_EQ(Created(), 1u);
}

TEST_F(RemoteSqlTest, SizeLimitsAreRefusedBeforeAnythingRuns) {
  Start();
  auto fe = Envoy("lim-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string id = CreateActor("lim", "k");
  const uint32_t gen = StartOn(*fe, id);
  ASSERT_TRUE(Run(*fe, Kind::kExec, id, gen, "CREATE TABLE t(v)").ok());

  // SQL text: exactly the limit passes, one byte more is refused.
  const std::string head = "INSERT INTO t VALUES (1) --";
  std::string at_limit = head + std::string(sql::kMaxSqlBytes - head.size(), 'x');
  ASSERT_EQ(at_limit.size(), sql::kMaxSqlBytes);
  SqlAnswer fits = Run(*fe, Kind::kExecute, id, gen, at_limit);
  ASSERT_TRUE(fits.ok()) << fits.error;
  SqlAnswer too_long = Run(*fe, Kind::kExecute, id, gen, at_limit + "x");
  EXPECT_EQ(too_long.error,
            "sqlite.sql_too_large: sqlite sql had 1048577 bytes, exceeding limit 1048576");
  SqlAnswer exec_too_long = Run(*fe, Kind::kExec, id, gen, at_limit + "x");
  EXPECT_TRUE(StartsWith(exec_too_long.error, "sqlite.sql_too_large: ")) << exec_too_long.error;

  // Parameter count.
  sql::Params many(sql::kMaxParams + 1, Int(1));
  SqlAnswer too_many = Run(*fe, Kind::kWrite, id, gen, "INSERT INTO t VALUES (?)", many);
  EXPECT_EQ(too_many.error,
            "sqlite.too_many_params: sqlite request had 1025 bind params, exceeding "
            "limit 1024");

  // Bind bytes: two blobs over 1 MiB together.
  sql::Params big{sql::Blob{Bytes(600 * 1024, 1)}, sql::Blob{Bytes(600 * 1024, 2)}};
  SqlAnswer too_big = Run(*fe, Kind::kExecute, id, gen, "INSERT INTO t VALUES (?), (?)", big);
  EXPECT_EQ(too_big.error,
            "sqlite.bind_too_large: sqlite bind params had 1228800 bytes, exceeding "
            "limit 1048576");

  EXPECT_EQ(Count(*fe, id, gen), 1);  // only the statement that fit
}

TEST_F(RemoteSqlTest, ResponsesLargerThanMaxResponsePayloadAreRefused) {
  engine::EngineOptions o = FastOptions();
  o.max_response_payload = 64 * 1024;
  Start(o);
  auto fe = Envoy("big-envoy");
  ASSERT_NE(fe, nullptr);
  EXPECT_EQ(fe->metadata()->max_response_payload_size, 64u * 1024);
  const std::string id = CreateActor("big", "k");
  const uint32_t gen = StartOn(*fe, id);
  ASSERT_TRUE(Run(*fe, Kind::kExec, id, gen, "CREATE TABLE t(b)").ok());
  ASSERT_TRUE(Run(*fe, Kind::kWrite, id, gen, "INSERT INTO t VALUES (zeroblob(100000))").ok());

  for (Kind kind : {Kind::kExec, Kind::kExecute, Kind::kWrite}) {
    SqlAnswer big = Run(*fe, kind, id, gen, "SELECT b FROM t");
    EXPECT_EQ(big.error,
              "sqlite.response_too_large: remote sqlite response exceeds maxResponsePayloadSize");
  }
  SqlAnswer small = Run(*fe, Kind::kExecute, id, gen, "SELECT length(b) FROM t");
  ASSERT_TRUE(small.ok()) << small.error;
  EXPECT_EQ(small.result.rows, (std::vector<sql::Row>{{Int(100000)}}));
  EXPECT_EQ(Count(*fe, id, gen), 1);
  EXPECT_FALSE(fe->closed().has_value());
}

// ---- versions ----------------------------------------------------------------------------

TEST_F(RemoteSqlTest, AV3ConnectionServesPagesButCannotCarryRemoteSqlAndV4Can) {
  Start();
  int status = 0;
  Call("PUT", "/runner-configs/pool-v3?namespace=default",
       json{{"datacenters", {{"default", {{"normal", json::object()}}}}}}.dump(), &status);
  ASSERT_EQ(status, 200);
  auto v3 = Envoy("v3-envoy", 3, "pool-v3");
  ASSERT_NE(v3, nullptr);
  const std::string id3 = CreateActor("v3", "k", "pool-v3");
  const uint32_t gen3 = StartOn(*v3, id3);

  v::SqliteCommitRequest commit;
  commit.actor_id = id3;
  commit.dirty_pages.push_back(v::SqliteDirtyPage{1, Bytes(4096, 0xab)});
  commit.db_size_pages = 1;
  auto committed = v3->Commit(commit);
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_TRUE(committed->is<v::SqliteCommitOk>()) << ErrorText(*committed);
  v::SqliteGetPagesRequest get;
  get.actor_id = id3;
  get.pgnos = {1};
  auto pages = v3->GetPages(get);
  ASSERT_TRUE(pages.has_value()) << pages.error().ToString();
  ASSERT_TRUE(pages->is<v::SqliteGetPagesOk>()) << ErrorText(*pages);
  EXPECT_EQ(pages->get_if<v::SqliteGetPagesOk>()->pages.at(0).bytes,
            std::optional<Bytes>(Bytes(4096, 0xab)));
  // The connection recorded the generation as the page store's owner (its fence).
  const engine::EngineId eid3 = *engine::EngineId::Parse(id3);
  auto head = te().engine().page_store().ReadHead(eid3.bytes());
  ASSERT_TRUE(head.has_value() && head->has_value());
  EXPECT_EQ((*head)->generation, std::optional<uint64_t>(gen3));
  // The v3 client cannot even encode remote SQL.
  Status sent = v3->Send(v::ToRivet{
      v::ToRivetSqliteExecRequest{1, v::SqliteExecRequest{"default", id3, gen3, "SELECT 1"}}});
  EXPECT_FALSE(sent.has_value());

  auto v4 = Envoy("v4-envoy");
  ASSERT_NE(v4, nullptr);
  const std::string id4 = CreateActor("v4", "k");
  const uint32_t gen4 = StartOn(*v4, id4);
  SqlAnswer one = Run(*v4, Kind::kExecute, id4, gen4, "SELECT 1");
  ASSERT_TRUE(one.ok()) << one.error;
  EXPECT_EQ(one.result.rows, (std::vector<sql::Row>{{Int(1)}}));
  ASSERT_TRUE(v3->Sync().has_value());
}

// ---- the pool: off the read loop, fair ---------------------------------------------------

TEST_F(RemoteSqlTest, ASlowStatementDelaysNeitherPingsNorKvNorAnotherActorsSql) {
  Start();  // pings every 100 ms, the engine closes after 1.5 s without a pong
  auto fe = Envoy("slow-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string a = CreateActor("slow", "a");
  const std::string b = CreateActor("slow", "b");
  const uint32_t ga = StartOn(*fe, a);
  const uint32_t gb = StartOn(*fe, b);
  const std::string slow = SlowSql(*fe, 2500);

  const auto t0 = Clock::now();
  const uint32_t slow_id = Send(*fe, Kind::kExecute, a, ga, slow);
  const int pings_before = fe->pings_seen();
  auto put = fe->Kv(b, KvPut({{"k", "v"}}));
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_TRUE(put->is<v::KvPutResponse>()) << ErrorText(*put);
  SqlAnswer quick = Run(*fe, Kind::kExecute, b, gb, "SELECT 7");
  ASSERT_TRUE(quick.ok()) << quick.error;
  // Wait until pings kept coming for a while; the slow answer is still outstanding.
  ASSERT_TRUE(Eventually([&] { return fe->pings_seen() >= pings_before + 5; }, 3s));
  for (const auto& f : fe->backlog()) {
    auto answer = AsSqlAnswer(f.msg);
    EXPECT_FALSE(answer.has_value() && answer->request_id == slow_id)
        << "the slow statement finished before the other requests were answered";
  }
  SqlAnswer done = Wait(*fe, slow_id, 20s);
  ASSERT_TRUE(done.ok()) << done.error;
  EXPECT_GE(Clock::now() - t0, 500ms);
  EXPECT_FALSE(fe->closed().has_value());
  ASSERT_TRUE(fe->Sync().has_value());
}

TEST_F(RemoteSqlTest, OneBusyActorDoesNotStarveAnotherOnTheSameConnection) {
  engine::EngineOptions o = FastOptions();
  o.remote_sql_workers_per_connection = 1;  // one thread: the order shows the scheduling
  Start(o);
  auto fe = Envoy("fair-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string a = CreateActor("fair", "a");
  const std::string b = CreateActor("fair", "b");
  const uint32_t ga = StartOn(*fe, a);
  const uint32_t gb = StartOn(*fe, b);
  const std::string slow = SlowSql(*fe, 300);

  std::vector<uint32_t> a_ids;
  for (int i = 0; i < 3; ++i) a_ids.push_back(Send(*fe, Kind::kExecute, a, ga, slow));
  const uint32_t b_id = Send(*fe, Kind::kExecute, b, gb, "SELECT 1");
  std::vector<uint32_t> order;
  while (order.size() < 4) {
    auto frame =
        fe->WaitForFrame([](const v::ToEnvoy& m) { return AsSqlAnswer(m).has_value(); }, 20s);
    ASSERT_TRUE(frame.has_value()) << frame.error().ToString();
    SqlAnswer answer = *AsSqlAnswer(frame->msg);
    EXPECT_TRUE(answer.ok()) << answer.error;
    order.push_back(answer.request_id);
  }
  // Round robin over actors: a's first, then b's, then the rest of a's in arrival order.
  EXPECT_EQ(order, (std::vector<uint32_t>{a_ids[0], b_id, a_ids[1], a_ids[2]}));
}

// A transaction sent statement after statement (each answered before the next is sent: the
// SQL thread that answered lingers for the next one), then bursts of two actors sent without
// waiting: every statement is answered, each actor's in arrival order, exactly once.
TEST_F(RemoteSqlTest, StatementAfterStatementAndPipelinedBurstsAreAllAnsweredInOrder) {
  Start();
  auto fe = Envoy("pipe-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string a = CreateActor("pipe", "a");
  const std::string b = CreateActor("pipe", "b");
  const uint32_t ga = StartOn(*fe, a);
  const uint32_t gb = StartOn(*fe, b);
  ASSERT_TRUE(Run(*fe, Kind::kExec, a, ga, "CREATE TABLE t(i INTEGER PRIMARY KEY, v)").ok());
  ASSERT_TRUE(Run(*fe, Kind::kExec, b, gb, "CREATE TABLE t(i INTEGER PRIMARY KEY, v)").ok());
  ASSERT_TRUE(Run(*fe, Kind::kExec, a, ga, "BEGIN").ok());
  for (int i = 0; i < 100; ++i) {
    SqlAnswer r = Run(*fe, Kind::kWrite, a, ga, "INSERT INTO t(v) VALUES (?)",
                      sql::Params{Int(i)});
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_EQ(r.result.last_insert_row_id, std::optional<int64_t>(i + 1));
  }
  ASSERT_TRUE(Run(*fe, Kind::kExec, a, ga, "COMMIT").ok());

  std::vector<uint32_t> sent_a;
  std::vector<uint32_t> sent_b;
  for (int i = 0; i < 200; ++i) {
    sent_a.push_back(Send(*fe, Kind::kWrite, a, ga, "INSERT INTO t(v) VALUES (?)",
                          sql::Params{Int(i)}));
    sent_b.push_back(Send(*fe, Kind::kWrite, b, gb, "INSERT INTO t(v) VALUES (?)",
                          sql::Params{Int(i)}));
  }
  const std::set<uint32_t> of_a(sent_a.begin(), sent_a.end());
  std::vector<uint32_t> got_a;
  std::vector<uint32_t> got_b;
  while (got_a.size() + got_b.size() < sent_a.size() + sent_b.size()) {
    auto frame =
        fe->WaitForFrame([](const v::ToEnvoy& m) { return AsSqlAnswer(m).has_value(); }, 20s);
    ASSERT_TRUE(frame.has_value()) << frame.error().ToString();
    SqlAnswer answer = *AsSqlAnswer(frame->msg);
    ASSERT_TRUE(answer.ok()) << answer.error;
    (of_a.contains(answer.request_id) ? got_a : got_b).push_back(answer.request_id);
  }
  EXPECT_EQ(got_a, sent_a);
  EXPECT_EQ(got_b, sent_b);
  EXPECT_EQ(Count(*fe, a, ga), 300);
  EXPECT_EQ(Count(*fe, b, gb), 200);
}

// ---- stop --------------------------------------------------------------------------------

// Waits for whichever comes first: the answer to `sql_id` or an event ack for `actor`.
// Returns "sql" or "ack".
std::string FirstOf(FakeEnvoy& fe, uint32_t sql_id, const std::string& actor, SqlAnswer* answer) {
  auto frame = fe.WaitForFrame(
      [&](const v::ToEnvoy& m) {
        if (auto a = AsSqlAnswer(m)) return a->request_id == sql_id;
        if (const auto* ack = m.get_if<v::ToEnvoyAckEvents>()) {
          for (const auto& c : ack->last_event_checkpoints) {
            if (c.actor_id == actor) return true;
          }
        }
        return false;
      },
      20s);
  if (!frame.has_value()) {
    ADD_FAILURE() << frame.error().ToString();
    return "";
  }
  if (auto a = AsSqlAnswer(frame->msg)) {
    *answer = *a;
    return "sql";
  }
  return "ack";
}

TEST_F(RemoteSqlTest, TheStopWaitsForRunningSqlAndLaterSqlIsRefused) {
  Start();  // actor stop budget 10 s
  auto fe = Envoy("stop-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string a = CreateActor("stop", "a");
  const std::string b = CreateActor("stop", "b");
  const uint32_t ga = StartOn(*fe, a);
  const uint32_t gb = StartOn(*fe, b);
  const std::string slow = SlowSql(*fe, 2000);
  // The first SlowSql of a process calibrates on a scratch actor whose executor stays open
  // (ctest runs each case in its own process): count from here.
  const double active_before = Active();
  ASSERT_TRUE(Run(*fe, Kind::kExec, a, ga, "CREATE TABLE t(v)").ok());

  int status = 0;
  Call("POST", "/actors/" + a + "/sleep?namespace=default", "{}", &status);
  ASSERT_EQ(status, 200);
  auto stop = fe->WaitCommand(a, 5s);
  ASSERT_TRUE(stop.has_value()) << stop.error().ToString();
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  // onSleep runs SQL: accepted after the stop command, until Stopped.
  ASSERT_TRUE(Run(*fe, Kind::kWrite, a, ga, "INSERT INTO t VALUES ('on sleep')").ok());
  const uint32_t slow_id = Send(*fe, Kind::kExecute, a, ga, slow);
  ASSERT_TRUE(fe->SendStopped(a, ga).has_value());
  // SQL after Stopped is refused at once, while the slow statement still runs.
  SqlAnswer late = Run(*fe, Kind::kWrite, a, ga, "INSERT INTO t VALUES ('late')");
  EXPECT_TRUE(StartsWith(late.error, "sqlite.actor_stopping: ")) << late.error;
  EXPECT_NE(Transition(a), orch::Transition::kSleeping);
  // A later event of another actor is held behind the stop: its ack comes after the slow
  // statement's answer, and by then the orchestrator has applied a's stop.
  ASSERT_TRUE(fe->SendSetAlarm(b, gb, std::nullopt).has_value());
  SqlAnswer answer;
  EXPECT_EQ(FirstOf(*fe, slow_id, b, &answer), "sql");
  EXPECT_TRUE(answer.ok()) << answer.error;
  EXPECT_EQ(FirstOf(*fe, 0, b, &answer), "ack");
  EXPECT_EQ(Transition(a), orch::Transition::kSleeping);
  EXPECT_TRUE(Eventually([&] { return Active() == active_before; })) << Active();
  // Once applied, the actor is not hosted any more.
  SqlAnswer after = Run(*fe, Kind::kWrite, a, ga, "INSERT INTO t VALUES ('after')");
  EXPECT_TRUE(StartsWith(after.error, "actor.not_owned: ")) << after.error;
}

TEST_F(RemoteSqlTest, AtTheStopBudgetQueuedSqlIsRefusedAndTheStopGoesThrough) {
  engine::EngineOptions o = FastOptions();
  o.actor_stop_threshold_ms = 300;
  Start(o);
  auto fe = Envoy("budget-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string a = CreateActor("budget", "a");
  const std::string b = CreateActor("budget", "b");
  const uint32_t ga = StartOn(*fe, a);
  const uint32_t gb = StartOn(*fe, b);
  const std::string slow = SlowSql(*fe, 2000);
  // The first SlowSql of a process calibrates on a scratch actor whose executor stays open
  // (ctest runs each case in its own process): count from here.
  const double active_before = Active();

  const uint32_t running = Send(*fe, Kind::kExecute, a, ga, slow);
  const uint32_t queued = Send(*fe, Kind::kExecute, a, ga, "SELECT 1");
  ASSERT_TRUE(fe->SendStopped(a, ga).has_value());
  ASSERT_TRUE(fe->SendSetAlarm(b, gb, std::nullopt).has_value());
  // After 300 ms the stop (and b's event behind it) goes through; the queued statement is
  // refused; the running one finishes and is answered.
  SqlAnswer answer;
  EXPECT_EQ(FirstOf(*fe, running, b, &answer), "ack");
  SqlAnswer refused = Wait(*fe, queued);
  EXPECT_TRUE(StartsWith(refused.error, "sqlite.actor_stopping: ")) << refused.error;
  SqlAnswer finished = Wait(*fe, running, 20s);
  EXPECT_TRUE(finished.ok()) << finished.error;
  EXPECT_EQ(metrics().cancelled->Value(), 1u);
  EXPECT_TRUE(Eventually([&] { return Active() == active_before; })) << Active();
}

// ---- deadline ----------------------------------------------------------------------------

TEST_F(RemoteSqlTest, TheStatementDeadlineInterruptsAndTheExecutorKeepsWorking) {
  engine::EngineOptions o = FastOptions();
  o.remote_sql_statement_deadline_ms = 300;
  Start(o);
  auto fe = Envoy("deadline-envoy");
  ASSERT_NE(fe, nullptr);
  const std::string id = CreateActor("deadline", "k");
  const uint32_t gen = StartOn(*fe, id);
  const auto t0 = Clock::now();
  SqlAnswer endless = Run(*fe, Kind::kExecute, id, gen, CountTo(int64_t{1} << 50));
  EXPECT_TRUE(StartsWith(endless.error, "sqlite.statement_timeout")) << endless.error;
  EXPECT_LT(Clock::now() - t0, 10s);
  SqlAnswer after = Run(*fe, Kind::kExecute, id, gen, "SELECT 2");
  ASSERT_TRUE(after.ok()) << after.error;
  EXPECT_EQ(after.result.rows, (std::vector<sql::Row>{{Int(2)}}));
  EXPECT_EQ(Created(), 1u);
}

}  // namespace
}  // namespace keel::testing
