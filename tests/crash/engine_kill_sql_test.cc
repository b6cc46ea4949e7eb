// keel-engine under SIGKILL while an actor writes its SQLite database: the `todos` example
// actor, hosted by an in-process runtime (RuntimeHost) on the local-native backend (pages
// committed to the engine's page store, small commits on its read path and released by the
// group commit) or the remote one (SQL executed by the engine), takes `add(text)` calls one
// after another through the gateway. At a random moment the engine is killed (kill -9) and
// started again on the same data directory and port; the runtime reconnects by itself.
// After each restart, the test checks that
//  - every acknowledged row is there, with the id its `add` returned;
//  - every other row is one of the adds the kill left unanswered (applied or not), at most
//    one per round: nothing acknowledged was lost and nothing was applied twice;
//  - `count()` agrees with `list()`, and adds go on working on the same database.
// Each backend runs with the engine's data in RocksDB and, again, in a PostgreSQL database
// (a throwaway server per test process): there a kill also drops the engine's database
// sessions, whose table lock the restarted engine waits for.
// The loop is bounded by rounds and time. KEEL_TEST_ENGINE_LOG=info shows the engine's log.
// Also here, as it runs keel-engine processes on PostgreSQL: an engine whose table another
// engine took over exits 1.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/client.h"
#include "engine_process.h"
#include "net/client.h"
#include "runtime/native/serve.h"
#include "support/postgres_admin.h"
#include "support/postgres_cluster.h"
#include "todos/todos.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kRounds = 3;
constexpr auto kTimeBudget = 90s;      // the whole kill loop, for a slow CI machine
constexpr auto kRecoveryGiveUp = 30s;  // the actor answers again after a restart

// What the adds of one round ended with.
struct Adds {
  std::mutex mu;
  std::map<std::string, int64_t> acked;  // text -> the row id its add returned
  std::set<std::string> unanswered;      // adds that failed or never answered
};

// add() one after another until one fails (the engine died under it) or `stop`.
void AddUntilFailure(client::ActorHandle h, const std::string& prefix, Adds& adds,
                     const std::atomic<bool>& stop) {
  for (int i = 0; !stop.load(); ++i) {
    const std::string text = prefix + "-" + std::to_string(i);
    auto id = h.Call<int64_t>("add", text);
    std::lock_guard lock(adds.mu);
    if (!id.has_value()) {
      adds.unanswered.insert(text);
      return;
    }
    adds.acked[text] = *id;
  }
}

// The rows of list(): text -> id (a failed assertion when a text repeats).
std::optional<std::map<std::string, int64_t>> Rows(client::ActorHandle h) {
  std::optional<client::ClientResult<Value>> list;
  const auto deadline = Clock::now() + kRecoveryGiveUp;
  while (Clock::now() < deadline) {
    list = h.Call<Value>("list");
    if (list->has_value()) break;
    std::this_thread::sleep_for(100ms);  // polling the restarted stack, not a synchronisation
  }
  if (!list.has_value() || !list->has_value()) {
    ADD_FAILURE() << "the actor did not answer after the restart: "
                  << (list.has_value() ? list->error().ToString() : "no call");
    return std::nullopt;
  }
  if (!(*list)->is_array()) {
    ADD_FAILURE() << "list() did not return rows";
    return std::nullopt;
  }
  std::map<std::string, int64_t> rows;
  for (const Value& row : (*list)->as_array()) {
    const Value* id = row.Find("id");
    const Value* text = row.Find("text");
    if (id == nullptr || text == nullptr || !id->is_integer() || !text->is_text()) {
      ADD_FAILURE() << "a row without id or text";
      return std::nullopt;
    }
    if (!rows.emplace(text->as_text(), id->as_int()).second) {
      ADD_FAILURE() << "'" << text->as_text() << "' was applied twice";
    }
  }
  return rows;
}

// The actor's SQLite backend, and the engine's storage.
struct Case {
  std::string backend;  // "local" or "remote"
  bool postgres = false;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.backend << (c.postgres ? " on PostgreSQL" : " on RocksDB");
}

// One throwaway PostgreSQL server for the process (each test runs in its own process).
PostgresCluster& Postgres() {
  static std::unique_ptr<PostgresCluster> cluster = [] {
    auto started = PostgresCluster::Start();
    if (!started.has_value()) throw std::runtime_error(started.error().ToString());
    return std::move(*started);
  }();
  return *cluster;
}

class EngineKillSqlTest : public ::testing::TestWithParam<Case> {};

TEST_P(EngineKillSqlTest, AcknowledgedRowsSurviveKill9OfTheEngine) {
  const std::string backend = GetParam().backend;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("keel-engine-kill-sql-" + backend + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  // Where the engine keeps its data: the directory (RocksDB), or the PostgreSQL database.
  const std::vector<std::string> storage =
      GetParam().postgres ? std::vector<std::string>{"--storage", Postgres().uri()}
                          : std::vector<std::string>{"--data-dir", dir.string()};
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  std::printf("seed %u (kill timings)\n", seed);
  std::mt19937 rng(seed);

  auto engine = std::make_unique<EngineProcess>(storage, 0);
  const int port = engine->port();
  ServeSettings settings;
  settings.endpoint = engine->http();
  settings.sqlite_backend = backend;
  auto host = std::make_unique<RuntimeHost>(
      settings,
      std::vector<std::shared_ptr<const runtime::ActorType>>{examples::MakeTodos().type()});
  host->Start();
  client::ClientOptions options;
  options.endpoint = engine->http();
  options.request_timeout = 10s;
  client::Client client(options);
  auto h = client.GetOrCreate("todos", {"kill-" + backend});
  auto first = h.Call<std::string>("backend");
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_EQ(*first, backend);

  std::map<std::string, int64_t> acked;  // over all rounds
  std::set<std::string> unanswered;
  size_t applied_unanswered = 0;
  const auto started = Clock::now();
  int rounds = 0;
  for (; rounds < kRounds && Clock::now() - started < kTimeBudget; ++rounds) {
    Adds adds;
    std::atomic<bool> stop{false};
    std::thread writer(AddUntilFailure, h, "r" + std::to_string(rounds), std::ref(adds),
                       std::cref(stop));
    // The kill lands at a random moment of the adds (not a synchronisation wait).
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 600));
    engine->Kill();
    stop.store(true);
    writer.join();
    engine = std::make_unique<EngineProcess>(storage, port);

    ASSERT_FALSE(adds.acked.empty()) << "round " << rounds << ": no add was acknowledged";
    ASSERT_LE(adds.unanswered.size(), 1u) << "one writer has at most one add in flight";
    acked.insert(adds.acked.begin(), adds.acked.end());
    unanswered.insert(adds.unanswered.begin(), adds.unanswered.end());

    auto rows = Rows(h);
    ASSERT_TRUE(rows.has_value());
    for (const auto& [text, id] : acked) {
      auto it = rows->find(text);
      ASSERT_NE(it, rows->end()) << "acknowledged row '" << text << "' (id " << id
                                 << ") lost after the kill of round " << rounds;
      EXPECT_EQ(it->second, id) << text;
    }
    applied_unanswered = 0;
    for (const auto& [text, id] : *rows) {
      if (acked.count(text) > 0) continue;
      EXPECT_EQ(unanswered.count(text), 1u) << "row '" << text << "' was never added";
      ++applied_unanswered;
    }
    auto count = h.Call<int64_t>("count");
    ASSERT_TRUE(count.has_value()) << count.error().ToString();
    EXPECT_EQ(static_cast<size_t>(*count), rows->size());
    std::printf("round %d: %zu acknowledged adds survive, %zu unanswered, %zu of those applied\n",
                rounds, acked.size(), unanswered.size(), applied_unanswered);
  }
  EXPECT_GE(rounds, 2) << "the time budget allowed fewer than two kills";

  // The database goes on after the kills: a new row takes the next id.
  auto after = h.Call<int64_t>("add", std::string("after-the-kills"));
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  int64_t highest = 0;
  for (const auto& [text, id] : acked) highest = std::max(highest, id);
  EXPECT_GT(*after, highest);

  host.reset();
  engine.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// keel-engine whose PostgreSQL table another engine took over (the server ended its lock
// session first): its next write fails, and it stops the orderly way and exits 1 — for a
// supervisor to see — rather than run on without storage. The other engine serves on.
TEST(EngineTakeoverTest, AnEngineWhoseTableIsTakenOverStopsAndExitsOne) {
  const std::vector<std::string> storage = {"--storage", Postgres().uri()};
  EngineProcess first(storage, 0);
  auto create = [](const EngineProcess& engine, const std::string& key) {
    net::HttpRequest req;
    req.method = "POST";
    req.headers = {{"content-type", "application/json"}};
    req.body = R"({"name":"todos","key":")" + key + R"("})";
    auto res = net::FetchSync(engine.http() + "/actors?namespace=default", std::move(req), 10s);
    return res.has_value() ? res->status : 0;
  };
  ASSERT_EQ(create(first, "before"), 200);
  AdminConnection admin(Postgres().conninfo());
  ASSERT_TRUE(admin.ok());
  ASSERT_GE(admin.Terminate("pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND "
                            "granted)"),
            1);
  EngineProcess second(storage, 0);  // takes the table (its lock is free now)
  EXPECT_NE(create(first, "lost"), 200);
  EXPECT_EQ(first.WaitExit(30s), 1);
  EXPECT_EQ(create(second, "after"), 200);
}

INSTANTIATE_TEST_SUITE_P(Backends, EngineKillSqlTest,
                         ::testing::Values(Case{"local"}, Case{"remote"}, Case{"local", true},
                                           Case{"remote", true}),
                         [](const auto& info) {
                           return info.param.backend + (info.param.postgres ? "_on_postgres" : "");
                         });

}  // namespace
}  // namespace keel::testing
