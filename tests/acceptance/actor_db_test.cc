// actors.md §8.12 actor-db (SQLite matrix): `dbActorRaw` CRUD, transactions, sleep/wake
// cycles, an async onDisconnect write, a 1000-row statement, payloads around page
// boundaries, VACUUM shrink/regrow, many updates in one execute, round-robin updates in one
// transaction, a mixed workload's integrity across sleep, and churn of `dbLifecycle` actors
// (sleep, destroy, wake). Plus §2.5: an actor without a database fails with
// actor.database_not_configured, and a destroyed actor's database is gone.
//
// Cells: every case runs in native/local and native/remote (one ctest entry each) × json,
// cbor, bare — ActorDb/ActorDbTest.Crud/remote_cbor — with the same expectations; each
// first checks that its actor really runs on the cell's backend.
//
// ActorDbTest_Runtime (once per cell, named <backend>_bare) starts private runtimes:
// committed rows survive a hard crash (Rivet runs that check only with a crash-capable
// driver; here the runtime is SIGKILLed), a database written on this cell's backend is read
// on the other one after the runtime restarts with the other KEEL_SQLITE_BACKEND, and a
// migration that throws fails the start (`dbLifecycleFailing`, checked in each encoding
// inside the one test). In wasm (one cell, wasm/remote) the backend switch does not apply;
// instead WasmLocalIsNotACell checks that a wasm runtime started with the local backend has
// no SQLite (sqlite.unavailable).
#include <csignal>
#include <future>

#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;
using db::CallSettled;
using db::NoteCount;
using db::WaitNotes;

class ActorDbTest : public SqliteCellTest {
 protected:
  client::ActorHandle Raw(std::string_view prefix) { return client().GetOrCreate("dbActorRaw", {UniqueKey(prefix)}); }
  void ExpectCellBackend(client::ActorHandle h) {
    EXPECT_EQ(KEEL_OK(h.Call<std::string>("backend")), backend()) << h.name();
  }
  // Asks the actor to sleep and waits for its onSleep (at most `timeout`); returns how long
  // it took.
  std::chrono::milliseconds SleepAndWait(client::ActorHandle h, const std::string& id,
                                         std::chrono::milliseconds timeout = 5s) {
    const int64_t before = NoteCount(client(), id, "sleep");
    const auto t0 = std::chrono::steady_clock::now();
    KEEL_OK(h.Call("triggerSleep"));
    EXPECT_TRUE(WaitNotes(client(), id, "sleep", before + 1, timeout)) << "no onSleep after triggerSleep";
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  }
};

TEST_P(ActorDbTest, RunsOnTheCellBackend) {
  ExpectCellBackend(Raw("db-backend"));
  ExpectCellBackend(client().GetOrCreate("dbLifecycle", {UniqueKey("db-backend-lc")}));
}

TEST_P(ActorDbTest, FreshActorIsEmpty) {
  auto h = Raw("db-fresh");
  ExpectCellBackend(h);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getCount")), 0);
}

TEST_P(ActorDbTest, Crud) {
  auto h = Raw("db-crud");
  ExpectCellBackend(h);
  const int64_t alice = KEEL_OK(CallSettled<int64_t>(h, "insertValue", "Alice"));
  const int64_t bob = KEEL_OK(CallSettled<int64_t>(h, "insertValue", "Bob"));
  EXPECT_LT(alice, bob);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "updateValue", alice, "Alice-updated")), 1);
  EXPECT_EQ(AsJson(KEEL_OK(CallSettled(h, "getValues"))),
            (json::array({{{"id", alice}, {"value", "Alice-updated"}}, {{"id", bob}, {"value", "Bob"}}})));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "deleteValue", bob)), 1);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 1);
  // BEGIN; INSERT; UPDATE … WHERE id = last_insert_rowid(); COMMIT; in one execute.
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "multiStatementInsert", "gamma")), "gamma-updated");
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 2);
}

TEST_P(ActorDbTest, TransactionCommitAndRollback) {
  auto h = Raw("db-tx");
  ExpectCellBackend(h);
  KEEL_OK(CallSettled(h, "transactionCommit", "committed"));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 1);
  KEEL_OK(CallSettled(h, "transactionRollback", "rolled-back"));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 1);
  EXPECT_EQ(AsJson(KEEL_OK(CallSettled(h, "getValues")))[0]["value"], "committed");
}

TEST_P(ActorDbTest, SleepWakeCyclesKeepRows) {
  auto h = Raw("db-cycles");
  ExpectCellBackend(h);
  const std::string id = KEEL_OK(h.Resolve());
  KEEL_OK(CallSettled<int64_t>(h, "insertValue", "one"));
  KEEL_OK(CallSettled<int64_t>(h, "insertValue", "two"));
  for (int cycle = 1; cycle <= 3; ++cycle) {
    const auto took = SleepAndWait(h, id);
    // Rivet: the "sleep" observer event arrives within ~250 ms; 1 s leaves room for ASan.
    EXPECT_LT(took.count(), 1000) << "cycle " << cycle << ": onSleep ran " << took.count() << " ms after triggerSleep";
    EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 2) << "cycle " << cycle;
  }
}

TEST_P(ActorDbTest, AsyncOnDisconnectWriteCompletesBeforeSleep) {
  const std::string key = UniqueKey("db-disconnect");
  client::GetOrCreateOptions opts;
  opts.params = Value::Object({{"insertOnDisconnect", true}, {"disconnectDelayMs", 250}});
  auto with_params = client().GetOrCreate("dbActorRaw", {key}, opts);
  auto plain = client().GetOrCreate("dbActorRaw", {key});
  ExpectCellBackend(plain);
  const std::string id = KEEL_OK(plain.Resolve());
  const int64_t sleeps = NoteCount(client(), id, "sleep");
  // A stateless call: its transient connection disconnects after the action; onDisconnect
  // writes 250 ms later, then the actor idles out (sleepTimeout 100).
  EXPECT_EQ(KEEL_OK(with_params.Call<std::string>("ping")), "pong");
  ASSERT_TRUE(WaitNotes(client(), id, "sleep", sleeps + 1, 5s)) << "the actor never slept";
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(plain, "getDisconnectCount")), 1);
}

TEST_P(ActorDbTest, InsertManyInOneStatement) {
  auto h = Raw("db-many");
  ExpectCellBackend(h);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "insertMany", 1000)), 1000);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 1000);
}

TEST_P(ActorDbTest, PayloadsAroundPageBoundaries) {
  auto h = Raw("db-payload");
  ExpectCellBackend(h);
  for (int64_t size : {4095, 4096, 4097, 8191, 8192, 8193, 12287, 12288, 12289, 16383, 16384, 16385, 32768}) {
    json info = AsJson(KEEL_OK(CallSettled(h, "insertPayloadOfSize", size)));
    EXPECT_EQ(info["size"], size) << info;
    EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getPayloadSize", info["id"].get<int64_t>())), size);
  }
}

TEST_P(ActorDbTest, VacuumShrinksAndRegrows) {
  auto h = Raw("db-vacuum");
  ExpectCellBackend(h);
  const int64_t base = KEEL_OK(CallSettled<int64_t>(h, "getPageCount"));
  for (int i = 0; i < 12; ++i) KEEL_OK(CallSettled(h, "insertPayloadOfSize", 16384));
  const int64_t grown = KEEL_OK(CallSettled<int64_t>(h, "getPageCount"));
  EXPECT_GT(grown, base);
  KEEL_OK(CallSettled(h, "reset"));
  KEEL_OK(CallSettled(h, "vacuum"));
  const int64_t shrunk = KEEL_OK(CallSettled<int64_t>(h, "getPageCount"));
  EXPECT_LE(shrunk, grown);
  EXPECT_LT(shrunk, grown) << "VACUUM after deleting every row gives pages back";
  for (int i = 0; i < 12; ++i) KEEL_OK(CallSettled(h, "insertPayloadOfSize", 16384));
  EXPECT_GT(KEEL_OK(CallSettled<int64_t>(h, "getPageCount")), shrunk);
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "integrityCheck")), "ok");
}

TEST_P(ActorDbTest, FiftyUpdatesInOneExecute) {
  auto h = Raw("db-updates");
  ExpectCellBackend(h);
  const int64_t id = KEEL_OK(CallSettled<int64_t>(h, "insertValue", "start"));
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "repeatUpdate", id, 50)), "Updated 49");
}

TEST_P(ActorDbTest, RoundRobinUpdatesInOneTransaction) {
  auto h = Raw("db-round-robin");
  ExpectCellBackend(h);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "insertMany", 10)), 10);
  json rows = AsJson(KEEL_OK(CallSettled(h, "roundRobinUpdateValues", 240)));
  ASSERT_EQ(rows.size(), 10u) << rows;
  for (const auto& row : rows) EXPECT_EQ(row["updates"], 24) << rows;
}

TEST_P(ActorDbTest, MixedWorkloadIntegrityAcrossSleep) {
  auto h = Raw("db-mixed");
  ExpectCellBackend(h);
  const std::string id = KEEL_OK(h.Resolve());
  const int64_t rows = KEEL_OK(CallSettled<int64_t>(h, "runMixedWorkload", 40));
  EXPECT_GT(rows, 0);
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "integrityCheck")), "ok");
  SleepAndWait(h, id);
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "integrityCheck")), "ok");
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), rows);
}

// 12 `dbLifecycle` actors insert, sleep, insert; 6 are destroyed and 6 slept; each survivor,
// woken, has 2 rows. Survivors ran onCreate once and the migration at every start; a
// destroyed actor's key starts over with an empty database.
TEST_P(ActorDbTest, LifecycleChurn) {
  constexpr int kActors = 12;
  struct Churned {
    std::string key, id;
    bool destroyed = false;
  };
  std::vector<std::future<Churned>> runs;
  for (int i = 0; i < kActors; ++i) {
    runs.push_back(std::async(std::launch::async, [this, i]() -> Churned {
      Churned out;
      out.key = UniqueKey("db-churn");
      out.destroyed = i % 2 == 0;
      auto h = client().GetOrCreate("dbLifecycle", {out.key});
      auto id = h.Resolve();
      if (!id.has_value()) {
        ADD_FAILURE() << "resolve: " << id.error().ToString();
        return out;
      }
      out.id = *id;
      auto first = CallSettled<int64_t>(h, "insertRow", "first");
      EXPECT_EQ(first.value_or(-1), 1) << (first.has_value() ? "" : first.error().ToString());
      auto sleep = h.Call("triggerSleep");
      EXPECT_TRUE(sleep.has_value()) << sleep.error().ToString();
      EXPECT_TRUE(WaitNotes(client(), out.id, "sleep", 1)) << out.key;
      auto second = CallSettled<int64_t>(h, "insertRow", "second");
      EXPECT_EQ(second.value_or(-1), 2) << (second.has_value() ? "" : second.error().ToString());
      if (out.destroyed) {
        auto d = h.Call("destroy");
        EXPECT_TRUE(d.has_value()) << d.error().ToString();
        EXPECT_TRUE(WaitNotes(client(), out.id, "destroy", 1)) << out.key;
      } else {
        auto s = h.Call("triggerSleep");
        EXPECT_TRUE(s.has_value()) << s.error().ToString();
        EXPECT_TRUE(WaitNotes(client(), out.id, "sleep", 2)) << out.key;
      }
      return out;
    }));
  }
  std::vector<Churned> churned;
  for (auto& f : runs) {
    ASSERT_EQ(f.wait_for(60s), std::future_status::ready) << "a churn sequence hung";
    churned.push_back(f.get());
  }
  auto observer = client().GetOrCreate("dbLifecycleObserver", {"db-lifecycle-observer"});
  for (const auto& c : churned) {
    if (c.id.empty()) continue;
    auto h = client().GetOrCreate("dbLifecycle", {c.key});
    if (c.destroyed) {
      // A new actor under the same key: a fresh database.
      EXPECT_NE(KEEL_OK(h.Resolve()), c.id);
      EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 0) << "a destroyed actor's database is deleted (§2.5)";
      continue;
    }
    EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 2) << c.key;
    json counts = AsJson(KEEL_OK(observer.Call("getCounts", c.id)));
    EXPECT_EQ(counts["create"], 1) << counts;
    EXPECT_EQ(counts["migrate"].get<int64_t>(), NoteCount(client(), c.id, "wake")) << "a migration per start: " << counts;
    EXPECT_GE(counts["migrate"].get<int64_t>(), 3) << counts;
  }
}

// §2.5: c.db() on an actor without a database fails with actor.database_not_configured.
TEST_P(ActorDbTest, DatabaseNotConfigured) {
  auto h = client().GetOrCreate("dbNotConfiguredActor", {UniqueKey("db-none")});
  auto q = h.Call("query");
  KEEL_EXPECT_ERROR(q, "actor", "database_not_configured");
  if (!q.has_value()) {
    EXPECT_THAT(q.error().message, ::testing::HasSubstr("database is not configured"));
  }
  KEEL_EXPECT_ERROR(h.Call("backend"), "actor", "database_not_configured");
}

KEEL_ACCEPTANCE_SQLITE_CELLS(ActorDb, ActorDbTest);

// ---- private runtimes (once per cell) ----

class ActorDbTest_Runtime : public SqliteCellTest {
 protected:
  void SetUp() override {
    pool_ = CreatePrivatePool("db-rt");
    ASSERT_FALSE(pool_.empty());
    client::ClientOptions o;
    o.endpoint = Endpoint();
    o.pool = pool_;
    o.encoding = wire::Encoding::kBare;
    o.request_timeout = 15s;
    client_ = std::make_unique<client::Client>(o);
  }
  void TearDown() override {
    if (runtime_) runtime_->Stop(10s);
  }
  void Start(const std::string& sqlite_backend) {
    runtime_ = StartPrivateRuntime(pool_, sqlite_backend);
    ASSERT_NE(runtime_, nullptr);
  }
  // Retries until the actor answers from the new runtime (rescheduling after the old one
  // went away takes a few seconds).
  template <typename R>
  client::ClientResult<R> CallUntilAnswered(client::ActorHandle h, std::string_view action) {
    std::optional<client::ClientResult<R>> r;
    WaitFor(
        [&] {
          r = h.Call<R>(action);
          return r->has_value();
        },
        30s);
    return std::move(*r);
  }

  std::string pool_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<Subprocess> runtime_;
};

TEST_P(ActorDbTest_Runtime, CommittedRowsSurviveHardCrash) {
  Start(backend());
  auto h = client_->GetOrCreate("dbActorRaw", {UniqueKey("db-crash")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("backend")), backend());
  KEEL_OK(h.Call<int64_t>("insertValue", "before-crash-1"));
  KEEL_OK(h.Call<int64_t>("insertValue", "before-crash-2"));
  runtime_->Kill();
  runtime_.reset();
  Start(backend());
  EXPECT_EQ(KEEL_OK(CallUntilAnswered<int64_t>(h, "getCount")), 2);
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("integrityCheck")), "ok");
}

// The pages live in the engine whichever backend executes the SQL, so the runtime can
// change KEEL_SQLITE_BACKEND between runs: written here, read on the other backend.
TEST_P(ActorDbTest_Runtime, DatabaseSurvivesBackendSwitch) {
  if (RuntimeKind() == "wasm") {
    GTEST_SKIP() << "not applicable in wasm: the wasm runtime has only the remote backend, so there is no other "
                    "backend to switch to (WasmLocalIsNotACell checks that KEEL_SQLITE_BACKEND=local is refused)";
  }
  const std::string other = backend() == "local" ? "remote" : "local";
  Start(backend());
  auto h = client_->GetOrCreate("dbActorRaw", {UniqueKey("db-switch")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("backend")), backend());
  const std::string written = "written-on-" + backend();
  KEEL_OK(h.Call<int64_t>("insertValue", written));
  KEEL_OK(h.Call("insertMany", 50));
  ASSERT_TRUE(runtime_->Stop(10s)) << "the runtime did not stop on SIGTERM";
  runtime_.reset();
  Start(other);
  EXPECT_EQ(KEEL_OK(CallUntilAnswered<std::string>(h, "backend")), other);
  json values = AsJson(KEEL_OK(h.Call("getValues")));
  ASSERT_EQ(values.size(), 51u) << values.dump().substr(0, 300);
  EXPECT_EQ(values[0]["value"], written);
  KEEL_OK(h.Call<int64_t>("insertValue", "written-on-" + other));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getCount")), 52);
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("integrityCheck")), "ok");
}

// A migration that throws fails the actor's start: calls fail (they neither hang nor reach
// the action), onCreate never runs, the REST record carries the crash, in each encoding;
// then the runtime still exits promptly on SIGTERM. On a private runtime, so the SIGTERM
// check does not stop the shared one.
TEST_P(ActorDbTest_Runtime, FailingMigrationFailsTheStart) {
  Start(backend());
  for (wire::Encoding encoding : {wire::Encoding::kJson, wire::Encoding::kCbor, wire::Encoding::kBare}) {
    SCOPED_TRACE(std::string(wire::EncodingName(encoding)));
    client::ClientOptions o;
    o.endpoint = Endpoint();
    o.pool = pool_;
    o.encoding = encoding;
    client::Client c(o);
    // Observers keyed by the pool: they must run in the private runtime's process.
    auto observer = c.GetOrCreate("dbLifecycleObserver", {"db-lifecycle-observer-" + pool_});
    const int64_t attempts = KEEL_OK(observer.Call<int64_t>("getFailingMigrateAttempts"));
    auto h = c.GetOrCreate("dbLifecycleFailing", {UniqueKey("db-failing")});
    const auto t0 = std::chrono::steady_clock::now();
    auto r = h.Call<std::string>("ping");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
    EXPECT_FALSE(r.has_value()) << "ping answered although the migration throws";
    EXPECT_GT(KEEL_OK(observer.Call<int64_t>("getFailingMigrateAttempts")), attempts);
    const std::string id = KEEL_OK(h.Resolve());
    EXPECT_EQ(NoteCount(c, id, "create", "observer-" + pool_), 0) << "onCreate ran after a failed migration";
    auto info = c.GetActor(id);
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_THAT(info->error.value_or(""), ::testing::HasSubstr("forced migrate failure")) << info->json;
  }
  // The runtime still stops on SIGTERM (actors.md §3.4 / envoy-protocol.md §3.9): an
  // instance whose start failed reported Stopped, so the graceful shutdown does not wait
  // for it.
  runtime_->Signal(SIGTERM);
  const bool exited = runtime_->Wait(5s);
  if (!exited) runtime_->Kill();
  EXPECT_TRUE(exited) << "the runtime was still running 5 s after SIGTERM";
  runtime_.reset();
}

// actors.md §8.0: wasm/local is not a cell of the matrix. A wasm runtime started with
// KEEL_SQLITE_BACKEND=local has no SQLite: the first SQL call — `dbActorRaw`'s migration —
// fails with sqlite.unavailable, so the actor's start fails (the REST record carries it) and
// calls to it are not answered, while actors without a database still work.
TEST_P(ActorDbTest_Runtime, WasmLocalIsNotACell) {
  if (RuntimeKind() != "wasm") {
    GTEST_SKIP() << "not applicable natively: native/local is a cell (the acceptance.<category>.local entries)";
  }
  Start("local");
  auto observer = client_->GetOrCreate("dbLifecycleObserver", {"db-lifecycle-observer-" + pool_});
  EXPECT_EQ(KEEL_OK(observer.Call<int64_t>("getFailingMigrateAttempts")), 0) << "the runtime serves actors";
  auto h = client_->GetOrCreate("dbActorRaw", {UniqueKey("db-wasm-local")});
  auto r = h.Call<std::string>("backend");
  EXPECT_FALSE(r.has_value()) << "an actor with a database answered on wasm/local: " << r.value_or("");
  const std::string id = KEEL_OK(h.Resolve());
  auto info = client_->GetActor(id);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_THAT(info->error.value_or(""), ::testing::HasSubstr("sqlite.unavailable")) << info->json;
}

KEEL_ACCEPTANCE_SQLITE_CELL_ONCE(ActorDb, ActorDbTest_Runtime);

}  // namespace
}  // namespace keel::acceptance
