// actors.md §8.8 actor-db-init-order (SQLite matrix): the database is migrated before every
// hook that may query it — createState, onCreate, createVars and onWake see the migrated
// table; onWake runs (and writes) at every start; onSleep sees the rows written so far and
// its own insert survives into the next instance; onDestroy sees every row.
//
// `dbInitOrderActor` has sleepTimeout 100, so tests that need "the first instance" make that
// call first (no Resolve before it) and compare start-dependent counts with the Observer's
// wake notes instead of assuming no idle sleep happened in between.
//
// Cells: ActorDbInitOrder/ActorDbInitOrderTest.<Case>/<local|remote>_<json|cbor|bare>.
#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using db::CallSettled;
using db::NoteCount;
using db::WaitNotes;

class ActorDbInitOrderTest : public SqliteCellTest {
 protected:
  client::ActorHandle Actor(std::string_view prefix) {
    return client().GetOrCreate("dbInitOrderActor", {UniqueKey(prefix)});
  }
  std::vector<int64_t> Noted(std::string_view what, const std::string& id) {
    return KEEL_OK(client().GetOrCreate("dbInitOrderObserver", {"db-init-order-observer"})
                       .Call<std::vector<int64_t>>(what, id));
  }
};

TEST_P(ActorDbInitOrderTest, RunsOnTheCellBackend) {
  EXPECT_EQ(KEEL_OK(Actor("init-backend").Call<std::string>("backend")), backend());
}

TEST_P(ActorDbInitOrderTest, CreateStateCanQuery) {
  EXPECT_EQ(KEEL_OK(Actor("init-create-state").Call<int64_t>("getCreateStateRows")), 0);
}

TEST_P(ActorDbInitOrderTest, OnCreateCanQuery) {
  EXPECT_EQ(KEEL_OK(Actor("init-on-create").Call<int64_t>("getOnCreateRows")), 0);
}

TEST_P(ActorDbInitOrderTest, CreateVarsCanQuery) {
  EXPECT_EQ(KEEL_OK(Actor("init-create-vars").Call<int64_t>("getCreateVarsRows")), 0);
}

TEST_P(ActorDbInitOrderTest, OnWakeRunsAtEveryStart) {
  auto h = Actor("init-wake");
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getWakeCount")), 1) << "one wake row after the first start";
  const std::string id = KEEL_OK(h.Resolve());
  const int64_t sleeps = NoteCount(client(), id, "sleep");
  KEEL_OK(h.Call("triggerSleep"));
  ASSERT_TRUE(WaitNotes(client(), id, "sleep", sleeps + 1));
  const int64_t wakes = KEEL_OK(CallSettled<int64_t>(h, "getWakeCount"));
  EXPECT_GE(wakes, 2) << "onWake wrote again after sleep + wake";
  EXPECT_EQ(wakes, NoteCount(client(), id, "wake")) << "one row per start";
}

TEST_P(ActorDbInitOrderTest, OnSleepSeesRowsAndItsInsertSurvives) {
  auto h = Actor("init-sleep");
  // First instance: the wake row + this item, then sleep.
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("insertItemAndSleep", "item")), 2);
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitNotes(client(), id, "sleep", 1));
  std::vector<int64_t> seen = Noted("getSleepRows", id);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen[0], 2) << "onSleep sees the 2 existing rows";
  EXPECT_GE(KEEL_OK(CallSettled<int64_t>(h, "getSleepEventCount")), 1) << "onSleep's insert is visible after wake";
}

TEST_P(ActorDbInitOrderTest, OnDestroySeesEveryRow) {
  auto h = Actor("init-destroy");
  KEEL_OK(h.Call("triggerSleep"));  // first instance: wake row; onSleep adds sleep-event
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitNotes(client(), id, "sleep", 1));
  KEEL_OK(h.Call("destroy"));  // second instance: another wake row, then destroy
  ASSERT_TRUE(WaitNotes(client(), id, "destroy", 1));
  std::vector<int64_t> seen = Noted("getDestroyRows", id);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], 3) << "wake-event, sleep-event, wake-event";
}

KEEL_ACCEPTANCE_SQLITE_CELLS(ActorDbInitOrder, ActorDbInitOrderTest);

}  // namespace
}  // namespace keel::acceptance
