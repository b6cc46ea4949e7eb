// actors.md §8.10 actor-db-raw (SQLite matrix): `dbActorRaw` through c.db().execute —
// ordered inserts, a string with a NUL byte (hex 610062, SQLite length 1), data across
// handles to one key, one database per key, migrations before the first action.
//
// Beyond upstream, from §2.5 (the point of the matrix: one execution layer, so identical
// answers in every cell): the binding types (null, integer past 2^53, float, text, bytes,
// bool), named bindings, the lower-level interface (run's changes / lastInsertRowId, a
// separate `SELECT last_insert_rowid()`, execute's columns, execute_write's route), the
// routes of a read, a read inside write_mode and a write, and the sqlite.* error codes of
// a bad statement, a bind mismatch, a constraint failure and a second statement in a
// single-statement execute.
//
// Cells: ActorDbRaw/ActorDbRawTest.<Case>/<local|remote>_<json|cbor|bare>.
#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using db::CallSettled;

class ActorDbRawTest : public SqliteCellTest {
 protected:
  client::ActorHandle Raw(std::string_view prefix) { return client().GetOrCreate("dbActorRaw", {UniqueKey(prefix)}); }
  static json ValuesOf(const json& rows) {
    json out = json::array();
    for (const auto& r : rows) out.push_back(r["value"]);
    return out;
  }
};

TEST_P(ActorDbRawTest, RunsOnTheCellBackend) {
  EXPECT_EQ(KEEL_OK(Raw("raw-backend").Call<std::string>("backend")), backend());
}

TEST_P(ActorDbRawTest, InsertAndListInOrder) {
  auto h = Raw("raw-list");
  KEEL_OK(CallSettled<int64_t>(h, "insertValue", "Alice"));
  KEEL_OK(CallSettled<int64_t>(h, "insertValue", "Bob"));
  EXPECT_EQ(ValuesOf(AsJson(KEEL_OK(CallSettled(h, "getValues")))), json::array({"Alice", "Bob"}));
}

TEST_P(ActorDbRawTest, StringWithNulRoundTrips) {
  auto h = Raw("raw-nul");
  const std::string value("a\0b", 3);
  json r = AsJson(KEEL_OK(CallSettled(h, "insertValueReadBack", value)));
  EXPECT_EQ(r["value"], value) << r;
  EXPECT_EQ(r["hex"], "610062") << "bound with its full byte length";
  EXPECT_EQ(r["length"], 1) << "SQLite's length() stops at the NUL";
}

TEST_P(ActorDbRawTest, PersistsAcrossHandles) {
  const std::string key = UniqueKey("raw-handles");
  auto first = client().GetOrCreate("dbActorRaw", {key});
  KEEL_OK(CallSettled<int64_t>(first, "insertValue", "from-first"));
  auto second = client().GetOrCreate("dbActorRaw", {key});
  KEEL_OK(CallSettled<int64_t>(second, "insertValue", "from-second"));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(first, "getCount")), 2);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(second, "getCount")), 2);
}

TEST_P(ActorDbRawTest, SeparateDatabasesPerKey) {
  auto a = Raw("raw-key-a");
  auto b = Raw("raw-key-b");
  KEEL_OK(CallSettled<int64_t>(a, "insertValue", "a1"));
  KEEL_OK(CallSettled<int64_t>(a, "insertValue", "a2"));
  KEEL_OK(CallSettled<int64_t>(b, "insertValue", "b1"));
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(a, "getCount")), 2);
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(b, "getCount")), 1);
}

TEST_P(ActorDbRawTest, MigrationsRunBeforeTheFirstAction) {
  EXPECT_TRUE(KEEL_OK(Raw("raw-migrated").Call<bool>("tableExists")));
}

TEST_P(ActorDbRawTest, BindingTypes) {
  auto h = Raw("raw-binds");
  const int64_t big = (int64_t{1} << 60) + 7;
  const Bytes blob{0, 1, 127, 128, 255};
  const std::string text("t\0x", 3);
  json rows = AsJson(KEEL_OK(CallSettled(h, "bindTypes", Value(nullptr), big, 1.5, text, blob, true)));
  ASSERT_EQ(rows.size(), 1u) << rows;
  json r = rows[0];
  EXPECT_EQ(r["tn"], "null");
  EXPECT_EQ(r["ti"], "integer");
  EXPECT_EQ(AsJson(FromJson(r["i"])), AsJson(Value(big))) << r["i"];
  EXPECT_EQ(r["tr"], "real");
  EXPECT_EQ(r["r"], 1.5);
  EXPECT_EQ(r["tt"], "text");
  EXPECT_EQ(r["t"], text);
  EXPECT_EQ(r["tb"], "blob");
  EXPECT_EQ(r["b"], AsJson(Value(blob)));
  EXPECT_EQ(r["tf"], "integer") << "bool binds as 0/1";
  EXPECT_EQ(r["f"], 1);
}

TEST_P(ActorDbRawTest, NamedBindings) {
  auto h = Raw("raw-named");
  EXPECT_EQ(AsJson(KEEL_OK(CallSettled(h, "insertNamed", "by-name"))), json::array({{{"value", "by-name"}}}));
}

TEST_P(ActorDbRawTest, LowerLevelInterface) {
  auto h = Raw("raw-low");
  KEEL_OK(CallSettled<int64_t>(h, "insertValue", "first"));
  json r = AsJson(KEEL_OK(CallSettled(h, "lowLevel", "second")));
  EXPECT_EQ(r["changes"], 1) << r;
  EXPECT_EQ(r["lastInsertRowId"], 2) << r;
  EXPECT_EQ(r["selectLastInsertRowId"], 2) << "SELECT last_insert_rowid() answers the previous insert: " << r;
  EXPECT_EQ(r["columns"], json::array({"n"})) << r;
  EXPECT_EQ(r["writeRoute"], "write") << r;
}

TEST_P(ActorDbRawTest, RoutesAndWriteMode) {
  auto h = Raw("raw-routes");
  json r = AsJson(KEEL_OK(CallSettled(h, "routes")));
  EXPECT_EQ(r["select"], "read") << r;
  // runtime/sql.h: in write mode an execute is an execute_write (always the writer, WRITE).
  EXPECT_EQ(r["selectInWriteMode"], "write") << "write_mode forces reads to the writer: " << r;
  EXPECT_EQ(r["insert"], "write") << r;
}

TEST_P(ActorDbRawTest, SqliteErrorCodes) {
  auto h = Raw("raw-errors");
  KEEL_EXPECT_ERROR(h.Call("executeSql", "SELEC nothing", Value::ArrayOf({1})), "sqlite", "prepare_failed");
  KEEL_EXPECT_ERROR(h.Call("executeSql", "SELECT ?", Value::ArrayOf({1, 2})), "sqlite", "invalid_bind_parameter");
  KEEL_EXPECT_ERROR(h.Call("executeSql", "INSERT INTO test_data (value, created_at) VALUES (?, 1)",
                           Value::ArrayOf({nullptr})),
                    "sqlite", "execution_failed");
  KEEL_EXPECT_ERROR(h.Call("executeSql", "SELECT ?; SELECT 2", Value::ArrayOf({1})), "sqlite", "invalid_sql");
  // The actor is fine afterwards.
  EXPECT_EQ(KEEL_OK(CallSettled<int64_t>(h, "getCount")), 0);
}

KEEL_ACCEPTANCE_SQLITE_CELLS(ActorDbRaw, ActorDbRawTest);

}  // namespace
}  // namespace keel::acceptance
