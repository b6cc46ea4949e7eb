// actors.md §8.11 actor-db-stress (SQLite matrix): `dbStressActor` under concurrent inserts
// and destroys, rapid create/insert/destroy cycles, many sequential inserts, autocommit
// upserts, and the kitchen-sink smoke (parallel statements, savepoints, rollbacks, deletes,
// VACUUM) followed by a concurrent burst and a sleep/wake.
//
// Scaled down from Rivet for the 2-core CI budget (the SQLite categories together run six
// cells): the kitchen sink runs 48 rounds instead of 320 and the burst's smoke 24 instead
// of 96. Everything else is Rivet's size (5 × insertBatch(500) racing destroys, 10 cycles,
// 100 sequential inserts under 30 s, 240 upserts, the burst's 2 × 320 upserts). The smoke's
// meta keys cycle over 24, so "meta ≥ 19" holds from 19 rounds on.
//
// Cells: ActorDbStress/ActorDbStressTest.<Case>/<local|remote>_<json|cbor|bare>.
#include <future>

#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;
using db::CallSettled;

constexpr int64_t kSmokeRounds = 48;       // Rivet: 320
constexpr int64_t kBurstSmokeRounds = 24;  // Rivet: 96
constexpr int64_t kBurstUpserts = 320;     // as Rivet
constexpr int kSequentialInserts = 100;    // as Rivet

class ActorDbStressTest : public SqliteCellTest {
 protected:
  client::ActorHandle Stress(std::string_view prefix) {
    return client().GetOrCreate("dbStressActor", {UniqueKey(prefix)});
  }
  static void ExpectSmokeOk(const json& s) {
    EXPECT_GE(s["metaCount"].get<int64_t>(), 19) << s;
    EXPECT_GT(s["dataCount"].get<int64_t>(), 0) << s;
    EXPECT_GT(s["payloadCount"].get<int64_t>(), 0) << s;
    EXPECT_GT(s["pageCount"].get<int64_t>(), 0) << s;
    EXPECT_EQ(s["integrity"], "ok") << s;
  }
};

TEST_P(ActorDbStressTest, RunsOnTheCellBackend) {
  EXPECT_EQ(KEEL_OK(Stress("stress-backend").Call<std::string>("backend")), backend());
}

// Five actors each get insertBatch(500) and a destroy at the same time: all ten calls
// settle (errors allowed) — nothing hangs or crashes — and the runtime keeps serving.
TEST_P(ActorDbStressTest, ConcurrentInsertBatchAndDestroySettle) {
  std::vector<std::future<bool>> calls;
  for (int i = 0; i < 5; ++i) {
    auto h = Stress("stress-race");
    KEEL_OK(h.Resolve());
    calls.push_back(std::async(std::launch::async, [h]() mutable { return h.Call("insertBatch", 500).has_value(); }));
    calls.push_back(std::async(std::launch::async, [h]() mutable { return h.Call("destroy").has_value(); }));
  }
  int settled = 0;
  for (auto& f : calls) {
    if (f.wait_for(60s) == std::future_status::ready) {
      f.get();
      ++settled;
    }
  }
  EXPECT_EQ(settled, 10) << "calls still pending after 60 s";
  auto fresh = Stress("stress-after-race");
  EXPECT_EQ(KEEL_OK(fresh.Call<int64_t>("insertBatch", 3)), 3);
  EXPECT_EQ(KEEL_OK(fresh.Call<std::string>("integrityCheck")), "ok");
}

TEST_P(ActorDbStressTest, RapidCreateInsertDestroyCycles) {
  for (int i = 0; i < 10; ++i) {
    auto h = Stress("stress-cycle");
    EXPECT_GE(KEEL_OK(h.Call<int64_t>("insertBatch", 10)), 10) << "cycle " << i;
    EXPECT_GE(KEEL_OK(h.Call<int64_t>("getCount")), 10) << "cycle " << i;
    KEEL_OK(h.Call("destroy"));
  }
}

TEST_P(ActorDbStressTest, SequentialInsertsFinishInTime) {
  auto h = Stress("stress-sequential");
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kSequentialInserts; ++i) KEEL_OK(CallSettled<int64_t>(h, "insertBatch", 1));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 30s);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), kSequentialInserts);
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "integrityCheck")), "ok");
}

TEST_P(ActorDbStressTest, AutocommitUpsertsOverThirtyTwoKeys) {
  auto h = Stress("stress-upsert");
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "upsertMetaRows", 240)), 32);
  EXPECT_EQ(KEEL_OK(CallSettled<std::string>(h, "integrityCheck")), "ok");
}

TEST_P(ActorDbStressTest, KitchenSinkThenBurstThenSleep) {
  auto h = Stress("stress-sink");
  const std::string id = KEEL_OK(h.Resolve());
  json first = AsJson(KEEL_OK(CallSettled(h, "kitchenSinkSmoke", kSmokeRounds)));
  ExpectSmokeOk(first);

  // A concurrent burst on the same actor: two upsert runs and a smoke.
  auto up1 = std::async(std::launch::async, [h]() mutable { return h.Call<int64_t>("upsertMetaRows", kBurstUpserts); });
  auto up2 = std::async(std::launch::async, [h]() mutable { return h.Call<int64_t>("upsertMetaRows", kBurstUpserts); });
  auto smoke = std::async(std::launch::async, [h]() mutable { return h.Call("kitchenSinkSmoke", kBurstSmokeRounds); });
  ASSERT_EQ(up1.wait_for(90s), std::future_status::ready);
  ASSERT_EQ(up2.wait_for(90s), std::future_status::ready);
  ASSERT_EQ(smoke.wait_for(90s), std::future_status::ready);
  auto r1 = up1.get();
  auto r2 = up2.get();
  auto rs = smoke.get();
  EXPECT_TRUE(r1.has_value()) << r1.error().ToString();
  EXPECT_TRUE(r2.has_value()) << r2.error().ToString();
  ASSERT_TRUE(rs.has_value()) << rs.error().ToString();
  json burst = AsJson(*rs);
  ExpectSmokeOk(burst);

  // Sleep, wake, smoke again: nothing lost, still consistent.
  const int64_t sleeps = db::NoteCount(client(), id, "sleep");
  KEEL_OK(h.Call("triggerSleep"));
  ASSERT_TRUE(db::WaitNotes(client(), id, "sleep", sleeps + 1, 5s));
  json after = AsJson(KEEL_OK(CallSettled(h, "kitchenSinkSmoke", kBurstSmokeRounds)));
  ExpectSmokeOk(after);
  EXPECT_GE(after["metaCount"].get<int64_t>(), burst["metaCount"].get<int64_t>()) << after;
  EXPECT_GT(after["dataCount"].get<int64_t>(), burst["dataCount"].get<int64_t>()) << after;
}

KEEL_ACCEPTANCE_SQLITE_CELLS(ActorDbStress, ActorDbStressTest);

}  // namespace
}  // namespace keel::acceptance
