// actors.md §8.9 actor-db-pragma-migration (SQLite matrix): `dbPragmaMigrationActor`'s
// migration is guarded by PRAGMA user_version (1: items table, 2: status column with a
// default), so it runs at every start without harm.
//
// Cells: ActorDbPragmaMigration/ActorDbPragmaMigrationTest.<Case>/<local|remote>_<encoding>.
#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using db::CallSettled;

class ActorDbPragmaMigrationTest : public SqliteCellTest {
 protected:
  client::ActorHandle Actor(std::string_view prefix) {
    return client().GetOrCreate("dbPragmaMigrationActor", {UniqueKey(prefix)});
  }
};

TEST_P(ActorDbPragmaMigrationTest, RunsOnTheCellBackend) {
  EXPECT_EQ(KEEL_OK(Actor("pragma-backend").Call<std::string>("backend")), backend());
}

TEST_P(ActorDbPragmaMigrationTest, FreshActorIsAtVersionTwo) {
  auto h = Actor("pragma-fresh");
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getUserVersion")), 2);
  EXPECT_EQ(KEEL_OK(CallSettled<std::vector<std::string>>(h, "getColumns")),
            (std::vector<std::string>{"id", "name", "status"}));
}

TEST_P(ActorDbPragmaMigrationTest, InsertWithoutStatusIsActive) {
  auto h = Actor("pragma-default");
  const int64_t id = KEEL_OK(CallSettled<int64_t>(h, "insertItem", "plain"));
  EXPECT_EQ(AsJson(KEEL_OK(CallSettled(h, "getItems"))),
            json::array({{{"id", id}, {"name", "plain"}, {"status", "active"}}}));
}

TEST_P(ActorDbPragmaMigrationTest, ExplicitStatusIsKept) {
  auto h = Actor("pragma-explicit");
  const int64_t id = KEEL_OK(CallSettled<int64_t>(h, "insertItemWithStatus", "done", "completed"));
  EXPECT_EQ(AsJson(KEEL_OK(CallSettled(h, "getItems"))),
            json::array({{{"id", id}, {"name", "done"}, {"status", "completed"}}}));
}

TEST_P(ActorDbPragmaMigrationTest, MigrationRerunsHarmlesslyAfterWake) {
  auto h = Actor("pragma-wake");
  const std::string id = KEEL_OK(h.Resolve());
  KEEL_OK(CallSettled<int64_t>(h, "insertItem", "old"));
  const int64_t wakes = db::NoteCount(client(), id, "wake");
  const int64_t sleeps = db::NoteCount(client(), id, "sleep");
  KEEL_OK(h.Call("triggerSleep"));
  ASSERT_TRUE(db::WaitNotes(client(), id, "sleep", sleeps + 1));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getUserVersion")), 2);
  EXPECT_GT(db::NoteCount(client(), id, "wake"), wakes) << "a new instance ran the migration again";
  KEEL_OK(CallSettled<int64_t>(h, "insertItem", "new"));
  json items = AsJson(KEEL_OK(CallSettled(h, "getItems")));
  ASSERT_EQ(items.size(), 2u) << items;
  EXPECT_EQ(items[0]["name"], "old");
  EXPECT_EQ(items[1]["name"], "new");
  EXPECT_EQ(items[1]["status"], "active");
}

KEEL_ACCEPTANCE_SQLITE_CELLS(ActorDbPragmaMigration, ActorDbPragmaMigrationTest);

}  // namespace
}  // namespace keel::acceptance
