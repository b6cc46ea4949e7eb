// The runtime's SQLite front and remote backend (runtime/sql.h), stepped deterministically:
// the fake engine of RuntimeHarness answers remote SQL with the real execution layer
// (keel::sql::Database over a KeelVfs over a PageStore), as keel-engine does.
// The cases that need no SQL engine (pure functions, backend selection) are in
// runtime_sql_values_test.cc, linked into the same binary, so the wasm build runs them too.
#include "runtime/sql.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/manual_clock.h"
#include "base/random.h"
#include "runtime/actor.h"
#include "sqlite/database.h"
#include "sqlite/wire.h"
#include "storage/mem_kv_store.h"
#include "storage/page_store.h"
#include "storage/vfs/keel_vfs.h"
#include "support/runtime_harness.h"

namespace keel {
namespace {

using ::testing::HasSubstr;
using testing::RuntimeHarness;
namespace latest = protocol::envoy::latest;

// ---- A fake engine that executes remote SQL with the real execution layer ----

class FakeSqlEngine {
 public:
  FakeSqlEngine() : store_(kv_), vfs_("keel-runtime-sql-test", clock_, random_) {
    EXPECT_TRUE(vfs_.Register().ok());
  }
  ~FakeSqlEngine() {
    dbs_.clear();
    for (const auto& name : attached_) (void)vfs_.Detach(name);
  }

  std::optional<latest::ToEnvoy> Answer(const latest::ToRivet& msg) {
    const auto& v = msg.value;
    if (const auto* r = std::get_if<latest::ToRivetSqliteExecRequest>(&v)) {
      ++requests;
      latest::ToEnvoySqliteExecResponse resp;
      resp.request_id = r->request_id;
      auto out = Db(r->data.actor_id, r->data.generation).Exec(r->data.sql);
      if (out.ok()) {
        resp.data = latest::SqliteExecOk{sql::ToWire(*out)};
      } else {
        resp.data = latest::SqliteErrorResponse{out.error().ToString()};
      }
      return latest::ToEnvoy{std::move(resp)};
    }
    if (const auto* r = std::get_if<latest::ToRivetSqliteExecuteRequest>(&v)) {
      ++requests;
      latest::ToEnvoySqliteExecuteResponse resp;
      resp.request_id = r->request_id;
      auto out = Db(r->data.actor_id, r->data.generation)
                     .Execute(r->data.sql, sql::FromWireParams(r->data.params));
      if (out.ok()) {
        resp.data = latest::SqliteExecuteOk{sql::ToWire(*out)};
      } else {
        resp.data = latest::SqliteErrorResponse{out.error().ToString()};
      }
      return latest::ToEnvoy{std::move(resp)};
    }
    if (const auto* r = std::get_if<latest::ToRivetSqliteExecuteWriteRequest>(&v)) {
      ++requests;
      ++write_requests;
      latest::ToEnvoySqliteExecuteWriteResponse resp;
      resp.request_id = r->request_id;
      auto out = Db(r->data.actor_id, r->data.generation)
                     .ExecuteWrite(r->data.sql, sql::FromWireParams(r->data.params));
      if (out.ok()) {
        resp.data = latest::SqliteExecuteWriteOk{sql::ToWire(*out)};
      } else {
        resp.data = latest::SqliteErrorResponse{out.error().ToString()};
      }
      return latest::ToEnvoy{std::move(resp)};
    }
    return std::nullopt;
  }

  int requests = 0;
  int write_requests = 0;

 private:
  static Bytes ActorBytes(const std::string& actor) {
    Bytes id(storage::kKeelActorIdSize, 0);
    for (size_t i = 0; i < actor.size() && i < id.size(); ++i) id[i] = static_cast<uint8_t>(actor[i]);
    return id;
  }
  sql::Database& Db(const std::string& actor, uint64_t generation) {
    const std::string name = actor + "-g" + std::to_string(generation);
    auto it = dbs_.find(name);
    if (it != dbs_.end()) return *it->second;
    EXPECT_TRUE(vfs_.Attach(name, std::make_shared<storage::PageStorePageSource>(store_, ActorBytes(actor))).ok());
    attached_.push_back(name);
    auto db = sql::Database::Open(vfs_.name(), name);
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    return *(dbs_[name] = std::move(*db));
  }

  ManualClock clock_{MonoTime(std::chrono::seconds(1)), 1'700'000'000'000};
  Random random_{3};
  storage::MemKvStore kv_;
  storage::PageStore store_;
  storage::KeelVfs vfs_;
  std::vector<std::string> attached_;
  std::map<std::string, std::unique_ptr<sql::Database>> dbs_;
};

ActorDef<> TodosDef(std::vector<std::string>* log = nullptr) {
  ActorDef<> def("todos");
  def.database([log](Db& db) -> Task<void> {
    if (log) log->push_back("migrate");
    co_await db.execute_raw("CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY, text TEXT)");
  });
  def.on_migrate([log](Ctx<>&, bool) {
    if (log) log->push_back("onMigrate");
  });
  def.action("add", [](Ctx<>& c, std::string text) -> Task<int64_t> {
    sql::Params params{sql::Value(text)};  // g++ 12: no braced temporaries inside co_await
    sql::RunResult r = co_await c.db().run("INSERT INTO todos (text) VALUES (?)", std::move(params));
    co_return r.last_insert_row_id.value_or(-1);
  });
  def.action("list", [](Ctx<>& c) -> Task<Value> {
    co_return co_await c.db().execute("SELECT id, text FROM todos ORDER BY id");
  });
  def.action("named", [](Ctx<>& c, std::string text) -> Task<Value> {
    Value named = Value::Object({{"t", text}});  // g++ 12: name temporaries before co_await
    co_return co_await c.db().execute_named("SELECT :t AS t, :t || '!' AS u", named);
  });
  def.action("route", [](Ctx<>& c) -> Task<std::string> {
    sql::ExecuteResult r = co_await c.db().execute_raw("SELECT 1");
    co_return std::string(sql::RouteName(r.route));
  });
  def.action("huge", [](Ctx<>& c) -> Task<int64_t> {
    std::string sql = "SELECT '" + std::string(sql::kMaxSqlBytes, 'x') + "'";
    co_await c.db().exec(std::move(sql));
    co_return 0;
  });
  def.action("bad", [](Ctx<>& c) -> Task<int64_t> {
    co_await c.db().exec("SELEC nonsense");
    co_return 0;
  });
  def.action("backend", [](Ctx<>& c) { return std::string(c.db().backend()); });
  return def;
}

runtime::RuntimeOptions RemoteOptions() {
  runtime::RuntimeOptions o;
  o.sqlite_backend = runtime::SqliteBackendChoice::kRemote;
  return o;
}

class RuntimeRemoteSql : public ::testing::Test {
 protected:
  void Boot(runtime::RuntimeOptions options = RemoteOptions(), std::vector<std::string>* log = nullptr) {
    h_ = std::make_unique<RuntimeHarness>(std::move(options));
    h_->answer_sql = [this](const latest::ToRivet& m) { return engine_.Answer(m); };
    h_->Boot({TodosDef(log).type()});
  }
  FakeSqlEngine engine_;
  std::unique_ptr<RuntimeHarness> h_;
};

TEST_F(RuntimeRemoteSql, MigrationRunsInWriteModeBeforeOnMigrateThenActionsUseTheDatabase) {
  std::vector<std::string> log;
  Boot(RemoteOptions(), &log);
  h_->StartActor("a1", "todos");
  ASSERT_TRUE(h_->Running("a1", 1));
  EXPECT_EQ(log, (std::vector<std::string>{"migrate", "onMigrate"}));
  // The migration's execute went out as execute_write (write mode).
  EXPECT_EQ(engine_.write_requests, 1);

  auto id1 = h_->Action("a1", "add", R"(["milk"])");
  EXPECT_EQ(h_->Body(id1), R"({"output":1})");
  auto id2 = h_->Action("a1", "add", R"(["eggs"])");
  EXPECT_EQ(h_->Body(id2), R"({"output":2})");
  auto list = h_->Action("a1", "list", "[]");
  EXPECT_EQ(h_->Body(list), R"({"output":[{"id":1,"text":"milk"},{"id":2,"text":"eggs"}]})");
  auto named = h_->Action("a1", "named", R"(["hi"])");
  EXPECT_EQ(h_->Body(named), R"({"output":[{"t":"hi","u":"hi!"}]})");
  auto route = h_->Action("a1", "route", "[]");
  EXPECT_EQ(h_->Body(route), R"({"output":"read"})");
  auto backend = h_->Action("a1", "backend", "[]");
  EXPECT_EQ(h_->Body(backend), R"({"output":"remote"})");
  // Every request carried the actor's generation and the namespace name (§8.7).
  for (const auto& m : h_->sql_requests) {
    if (const auto* r = std::get_if<latest::ToRivetSqliteExecuteRequest>(&m.value)) {
      EXPECT_EQ(r->data.generation, 1u);
      EXPECT_EQ(r->data.namespace_id, "default");
      EXPECT_EQ(r->data.actor_id, "a1");
    }
  }
}

TEST_F(RuntimeRemoteSql, ErrorsReachTheCallerWithTheExecutionLayersCode) {
  Boot();
  h_->StartActor("a1", "todos");
  auto bad = h_->Action("a1", "bad", "[]");
  EXPECT_EQ(h_->Status(bad), 500);
  // Public sqlite errors keep their group and code.
  EXPECT_THAT(h_->Body(bad), HasSubstr(R"("group":"sqlite")"));
  EXPECT_THAT(h_->Body(bad), HasSubstr(R"("code":"prepare_failed")"));
}

TEST_F(RuntimeRemoteSql, OversizedSqlFailsBeforeAnyRequest) {
  Boot();
  h_->StartActor("a1", "todos");
  const int before = engine_.requests;
  auto huge = h_->Action("a1", "huge", "[]");
  EXPECT_THAT(h_->Body(huge), HasSubstr(R"("code":"sql_too_large")"));
  EXPECT_EQ(engine_.requests, before);
}

TEST_F(RuntimeRemoteSql, RequestSentBeforeADisconnectIsIndeterminate) {
  // The HTTP reply would be lost with the socket, so the action reports what it saw.
  static std::vector<std::string> seen;
  seen.clear();
  h_ = std::make_unique<RuntimeHarness>(RemoteOptions());
  h_->answer_sql = [this](const latest::ToRivet& m) { return engine_.Answer(m); };
  ActorDef<> def("writer");
  def.database();
  def.action("write", [](Ctx<>& c) -> Task<int64_t> {
    try {
      co_await c.db().exec("CREATE TABLE t (x)");
      seen.push_back("ok");
    } catch (const ActorError& e) {
      seen.push_back(e.group() + "." + e.code());
    }
    co_return 0;
  });
  h_->Boot({def.type()});
  h_->StartActor("a1", "writer");
  h_->hold_sql = true;
  h_->Action("a1", "write", "[]");
  ASSERT_EQ(h_->sql_requests.size(), 1u);
  EXPECT_TRUE(seen.empty());  // waiting for the engine
  h_->Disconnect();
  h_->Pump();
  EXPECT_EQ(seen, (std::vector<std::string>{"sqlite.remote_indeterminate_result"}));
}

TEST_F(RuntimeRemoteSql, ProtocolV3MakesRemoteSqlUnavailable) {
  auto options = RemoteOptions();
  h_ = std::make_unique<RuntimeHarness>(options);
  h_->protocol_version = 3;
  h_->answer_sql = [this](const latest::ToRivet& m) { return engine_.Answer(m); };
  ActorDef<> def("plain");
  def.database();
  def.action("count", [](Ctx<>& c) -> Task<int64_t> {
    co_await c.db().exec("SELECT 1");
    co_return 1;
  });
  h_->Boot({def.type()});
  h_->StartActor("a1", "plain");
  auto r = h_->Action("a1", "count", "[]");
  EXPECT_THAT(h_->Body(r), HasSubstr(R"("code":"remote_unavailable")"));
  EXPECT_EQ(engine_.requests, 0);
}

TEST_F(RuntimeRemoteSql, OnSleepMayUseTheDatabaseAndItIsClosedAfterwards) {
  h_ = std::make_unique<RuntimeHarness>(RemoteOptions());
  h_->answer_sql = [this](const latest::ToRivet& m) { return engine_.Answer(m); };
  ActorDef<> def("sleepy");
  def.database([](Db& db) -> Task<void> {
    co_await db.exec("CREATE TABLE IF NOT EXISTS log (event TEXT)");
  });
  def.on_sleep([](Ctx<>& c) -> Task<void> {
    co_await c.db().run("INSERT INTO log VALUES ('sleep')");
  });
  def.action("count", [](Ctx<>& c) -> Task<int64_t> {
    sql::QueryResult r = co_await c.db().query("SELECT COUNT(*) FROM log");
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  h_->Boot({def.type()});
  h_->StartActor("a1", "sleepy", 1);
  h_->StopActor("a1", 1);
  ASSERT_TRUE(h_->Stopped("a1", 1).has_value());
  // The next generation sees onSleep's row.
  h_->StartActor("a1", "sleepy", 2);
  auto r = h_->Action("a1", "count", "[]");
  EXPECT_EQ(h_->Body(r), R"({"output":1})");
}

}  // namespace
}  // namespace keel
