#include "sqlite/database.h"

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "base/manual_clock.h"
#include "base/random.h"
#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/page_store.h"
#include "storage/vfs/keel_vfs.h"
#include "support/temp_dir.h"

namespace keel::sql {
namespace {

using namespace std::chrono_literals;
using storage::FaultyKvStore;
using storage::KeelVfs;
using storage::MemKvStore;
using storage::PageStore;
using storage::PageStorePageSource;

// --- helpers -----------------------------------------------------------------------

Value I(int64_t v) { return v; }
Value F(double v) { return v; }
Value T(std::string v) { return v; }
Value B(Bytes v) { return Blob{std::move(v)}; }

// The value of `result`, or a recorded failure and a default value.
template <typename T>
T Ok(Result<T> result, std::string_view what = "") {
  if (!result.ok()) {
    ADD_FAILURE() << what << ": unexpected error " << result.error().ToString();
    return T{};
  }
  return std::move(result).value();
}

// Passes when `result` is the error `sqlite.<code>` whose message contains `text`.
template <typename T>
::testing::AssertionResult IsSqlError(const Result<T>& result, std::string_view code,
                                      std::string_view text = "") {
  if (result.ok()) return ::testing::AssertionFailure() << "expected sqlite." << code;
  const Error& e = result.error();
  if (!e.Is("sqlite", code)) {
    return ::testing::AssertionFailure() << "expected sqlite." << code << ", got " << e.ToString();
  }
  if (e.message().find(text) == std::string::npos) {
    return ::testing::AssertionFailure() << "message lacks \"" << text << "\": " << e.ToString();
  }
  return ::testing::AssertionSuccess();
}

Bytes Actor(uint8_t last) {
  Bytes id(storage::kKeelActorIdSize, 0xAB);
  id[0] = 0x01;
  id[storage::kKeelActorIdSize - 1] = last;
  return id;
}

std::string NextVfsName() {
  static std::atomic<int> counter{0};
  return "keel-sql-test-" + std::to_string(counter++);
}

// A database served by a KeelVfs over a PageStore on an in-memory (optionally faulty)
// KvStore, as the engine's remote executor uses it.
class SqlDatabaseTest : public ::testing::Test {
 protected:
  SqlDatabaseTest()
      : clock_(MonoTime(), 1'700'000'000'000),
        random_(5),
        faulty_(std::make_unique<MemKvStore>(), 3),
        pages_(faulty_),
        vfs_(NextVfsName(), clock_, random_) {
    EXPECT_TRUE(vfs_.Register().has_value());
    EXPECT_TRUE(
        vfs_.Attach("db", std::make_shared<PageStorePageSource>(pages_, Actor(1))).has_value());
  }

  std::unique_ptr<Database> Open(DatabaseOptions options = {}) {
    auto db = Database::Open(vfs_.name(), "db", options);
    if (!db.ok()) {
      ADD_FAILURE() << db.error().ToString();
      return nullptr;
    }
    return std::move(db).value();
  }

  // `items(id INTEGER PRIMARY KEY, label TEXT)`, created through the writer.
  void CreateItems(Database& db) {
    Ok(db.ExecuteWrite("CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT)"));
  }

  ManualClock clock_;
  Random random_;
  FaultyKvStore faulty_;
  PageStore pages_;
  KeelVfs vfs_;  // declared before any Database member so it outlives them
};

// --- classification (A.8) ---------------------------------------------------------

class SqlClassificationTest : public SqlDatabaseTest {
 protected:
  void SetUp() override {
    db_ = Open();
    ASSERT_NE(db_, nullptr);
    CreateItems(*db_);
  }
  Classification C(std::string_view sql) { return Ok(Classify(*db_, sql), sql); }
  std::unique_ptr<Database> db_;
};

TEST_F(SqlClassificationTest, Sc1PlainSelectIsReaderEligible) {
  Classification c = C("SELECT 1 AS value");
  EXPECT_TRUE(c.has_statement);
  EXPECT_TRUE(c.readonly);
  EXPECT_FALSE(c.has_trailing_sql);
  EXPECT_FALSE(c.requires_write_route());
  EXPECT_FALSE(c.pragma_usage);
  EXPECT_TRUE(c.reader_eligible());
}

TEST_F(SqlClassificationTest, Sc2PragmaQueryIsReaderEligibleAndRecordsPragma) {
  Classification c = C("PRAGMA user_version");
  EXPECT_TRUE(c.readonly);
  EXPECT_TRUE(c.pragma_usage);
  EXPECT_TRUE(c.reader_eligible());
}

TEST_F(SqlClassificationTest, Sc3TableInfoRunsOnReadUnderTheReaderAuthorizer) {
  Classification c = C("PRAGMA table_info(items)");
  EXPECT_TRUE(c.reader_eligible());
  EXPECT_TRUE(c.pragma_usage);
  ExecuteResult r = Ok(db_->Execute("PRAGMA table_info(items)"));
  EXPECT_EQ(r.route, Route::kRead);
  ASSERT_EQ(r.rows.size(), 2u);
  auto name = std::find(r.columns.begin(), r.columns.end(), "name");
  ASSERT_NE(name, r.columns.end());
  const size_t i = static_cast<size_t>(name - r.columns.begin());
  EXPECT_EQ(r.rows[0][i], T("id"));
  EXPECT_EQ(r.rows[1][i], T("label"));
}

TEST_F(SqlClassificationTest, Sc4PragmaAssignmentIsNotReadOnly) {
  Classification c = C("PRAGMA user_version = 7");
  EXPECT_FALSE(c.readonly);
  EXPECT_FALSE(c.reader_eligible());
  EXPECT_TRUE(c.pragma_usage);
}

TEST_F(SqlClassificationTest, Sc5InsertReturningIsAWrite) {
  Classification c = C("INSERT INTO items(label) VALUES ('a') RETURNING id");
  EXPECT_FALSE(c.readonly);
  EXPECT_FALSE(c.reader_eligible());
  EXPECT_TRUE(c.write_operations);
  EXPECT_FALSE(c.schema_writes);
  EXPECT_FALSE(c.temp_writes);
}

TEST_F(SqlClassificationTest, Sc6CteFeedingInsertIsAWrite) {
  Classification c =
      C("WITH src(l) AS (SELECT 'x') INSERT INTO items(label) SELECT l FROM src RETURNING id");
  EXPECT_TRUE(c.write_operations);
  EXPECT_FALSE(c.reader_eligible());
}

TEST_F(SqlClassificationTest, Sc7VacuumIsNotEligible) {
  Classification c = C("VACUUM");
  EXPECT_FALSE(c.readonly);
  EXPECT_FALSE(c.reader_eligible());
}

TEST_F(SqlClassificationTest, Sc8AttachRecordsAttach) {
  Classification c = C("ATTACH DATABASE ':memory:' AS attached");
  EXPECT_TRUE(c.attach);
  EXPECT_FALSE(c.reader_eligible());
  EXPECT_TRUE(C("DETACH DATABASE attached").detach);
}

TEST_F(SqlClassificationTest, Sc9BeginIsReadOnlyButTransactionControl) {
  Classification c = C("BEGIN");
  EXPECT_TRUE(c.readonly);  // per SQLite
  EXPECT_TRUE(c.transaction_control);
  EXPECT_FALSE(c.reader_eligible());
  EXPECT_TRUE(C("COMMIT").transaction_control);
  EXPECT_TRUE(C("ROLLBACK").transaction_control);
}

TEST_F(SqlClassificationTest, Sc10SavepointIsTransactionControl) {
  Classification c = C("SAVEPOINT manual");
  EXPECT_TRUE(c.readonly);
  EXPECT_TRUE(c.transaction_control);
  EXPECT_FALSE(c.reader_eligible());
  EXPECT_TRUE(C("RELEASE manual").transaction_control);
  EXPECT_TRUE(C("ROLLBACK TO manual").transaction_control);
}

TEST_F(SqlClassificationTest, Sc11TwoStatementsHaveTrailingSql) {
  Classification c = C("SELECT 1; SELECT 2");
  EXPECT_TRUE(c.readonly);
  EXPECT_TRUE(c.has_trailing_sql);
  EXPECT_FALSE(c.reader_eligible());
  // A trailing comment counts; whitespace does not.
  EXPECT_TRUE(C("SELECT 1; -- done").has_trailing_sql);
  EXPECT_FALSE(C("SELECT 1;  \n\t").has_trailing_sql);
  EXPECT_FALSE(C("SELECT 1 -- part of the statement").has_trailing_sql);
}

TEST_F(SqlClassificationTest, SchemaTempAndFunctionFlags) {
  Classification create = C("CREATE TABLE t2(x)");
  EXPECT_TRUE(create.schema_writes);
  EXPECT_TRUE(create.write_operations);
  EXPECT_FALSE(create.temp_writes);
  EXPECT_TRUE(C("CREATE INDEX ix ON items(label)").schema_writes);
  EXPECT_TRUE(C("CREATE VIEW v AS SELECT 1").schema_writes);
  EXPECT_TRUE(C("ALTER TABLE items ADD COLUMN extra").schema_writes);
  EXPECT_TRUE(C("DROP TABLE items").schema_writes);
  // REINDEX and ANALYZE are authorized per index / table, so give them one.
  Ok(db_->ExecuteWrite("CREATE INDEX items_label ON items(label)"));
  EXPECT_TRUE(C("REINDEX items").schema_writes);
  EXPECT_TRUE(C("ANALYZE").schema_writes);

  Classification temp = C("CREATE TEMP TABLE scratch(x)");
  EXPECT_TRUE(temp.temp_writes);
  EXPECT_TRUE(temp.write_operations);
  EXPECT_FALSE(temp.schema_writes);
  Ok(db_->ExecuteWrite("CREATE TEMP TABLE scratch(x)"));
  Classification temp_insert = C("INSERT INTO temp.scratch VALUES (1)");
  EXPECT_TRUE(temp_insert.temp_writes);
  EXPECT_TRUE(temp_insert.write_operations);

  Classification fn = C("SELECT abs(-1)");
  EXPECT_TRUE(fn.function_calls);
  EXPECT_TRUE(fn.reader_eligible());
}

TEST_F(SqlClassificationTest, NoStatementAndMalformedSql) {
  for (std::string_view sql : {"", "   ", "-- only a comment", "/* c */", ";"}) {
    Classification c = C(sql);
    EXPECT_FALSE(c.has_statement) << sql;
    EXPECT_TRUE(c.readonly) << sql;
    EXPECT_FALSE(c.has_trailing_sql) << sql;
    EXPECT_FALSE(c.reader_eligible()) << sql;
  }
  EXPECT_TRUE(IsSqlError(Classify(*db_, "SELECT FROM"), "prepare_failed", "syntax error"));
  EXPECT_TRUE(
      IsSqlError(Classify(*db_, std::string_view("SELECT 1\0", 9)), "invalid_sql", "NUL byte"));
}

TEST_F(SqlClassificationTest, ClassifyingDoesNotExecute) {
  Ok(Classify(*db_, "INSERT INTO items(label) VALUES ('never')"));
  Ok(Classify(*db_, "DROP TABLE items"));
  ExecuteResult r = Ok(db_->Execute("SELECT count(*) FROM items"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(0)}}));
}

// --- routes (§8.3 table) ----------------------------------------------------------

class SqlRouteTest : public SqlDatabaseTest {
 protected:
  void SetUp() override {
    db_ = Open();
    ASSERT_NE(db_, nullptr);
    CreateItems(*db_);
  }
  Route RouteOf(std::string_view sql) { return Ok(db_->Execute(sql), sql).route; }
  std::unique_ptr<Database> db_;
};

TEST_F(SqlRouteTest, SelectWithNothingPendingIsRead) {
  EXPECT_EQ(RouteOf("SELECT * FROM items"), Route::kRead);
}

TEST_F(SqlRouteTest, SelectInsideManualTransactionIsWriteFallback) {
  EXPECT_EQ(RouteOf("BEGIN"), Route::kWrite);
  EXPECT_EQ(RouteOf("SELECT * FROM items"), Route::kWriteFallback);
  EXPECT_EQ(RouteOf("PRAGMA user_version"), Route::kWriteFallback);
  EXPECT_EQ(RouteOf("COMMIT"), Route::kWrite);
}

TEST_F(SqlRouteTest, DataWritesAreWrite) {
  EXPECT_EQ(RouteOf("INSERT INTO items(label) VALUES ('a')"), Route::kWrite);
  EXPECT_EQ(RouteOf("UPDATE items SET label = 'b'"), Route::kWrite);
  EXPECT_EQ(RouteOf("DELETE FROM items WHERE id = 5"), Route::kWrite);
  EXPECT_EQ(RouteOf("INSERT INTO items(label) VALUES ('c') RETURNING id"), Route::kWrite);
  EXPECT_EQ(RouteOf("UPDATE items SET label = 'd' RETURNING label"), Route::kWrite);
  EXPECT_EQ(RouteOf("WITH s(l) AS (SELECT 'e') INSERT INTO items(label) SELECT l FROM s"),
            Route::kWrite);
  EXPECT_EQ(RouteOf("WITH s(i) AS (SELECT 1) DELETE FROM items WHERE id IN (SELECT i FROM s)"),
            Route::kWrite);
}

TEST_F(SqlRouteTest, TransactionControlIsWrite) {
  EXPECT_EQ(RouteOf("BEGIN"), Route::kWrite);
  EXPECT_EQ(RouteOf("COMMIT"), Route::kWrite);
  EXPECT_EQ(RouteOf("BEGIN"), Route::kWrite);
  EXPECT_EQ(RouteOf("ROLLBACK"), Route::kWrite);
  EXPECT_EQ(RouteOf("SAVEPOINT x"), Route::kWrite);
  EXPECT_EQ(RouteOf("SAVEPOINT y"), Route::kWrite);
  EXPECT_EQ(RouteOf("ROLLBACK TO y"), Route::kWrite);
  EXPECT_EQ(RouteOf("RELEASE y"), Route::kWrite);
  EXPECT_EQ(RouteOf("RELEASE x"), Route::kWrite);
  EXPECT_FALSE(db_->InTransaction());
}

TEST_F(SqlRouteTest, SchemaChangesAreWrite) {
  EXPECT_EQ(RouteOf("CREATE TABLE other(x)"), Route::kWrite);
  EXPECT_EQ(RouteOf("ALTER TABLE other ADD COLUMN y"), Route::kWrite);
  EXPECT_EQ(RouteOf("CREATE INDEX other_x ON other(x)"), Route::kWrite);
  EXPECT_EQ(RouteOf("DROP INDEX other_x"), Route::kWrite);
  EXPECT_EQ(RouteOf("DROP TABLE other"), Route::kWrite);
  EXPECT_EQ(RouteOf("CREATE TEMP TABLE scratch(x)"), Route::kWrite);
  EXPECT_EQ(RouteOf("INSERT INTO temp.scratch VALUES (1)"), Route::kWrite);
}

TEST_F(SqlRouteTest, PragmaQueryIsReadAndAssignmentIsWrite) {
  EXPECT_EQ(RouteOf("PRAGMA user_version"), Route::kRead);
  EXPECT_EQ(RouteOf("PRAGMA user_version = 7"), Route::kWrite);
  EXPECT_EQ(RouteOf("PRAGMA table_info(items)"), Route::kRead);
}

TEST_F(SqlRouteTest, VacuumAttachAndDetachAreWrite) {
  Ok(db_->Execute("INSERT INTO items(label) VALUES ('keep')"));
  EXPECT_EQ(RouteOf("VACUUM"), Route::kWrite);
  EXPECT_EQ(RouteOf("ATTACH DATABASE ':memory:' AS attached"), Route::kWrite);
  EXPECT_EQ(RouteOf("DETACH DATABASE attached"), Route::kWrite);
  ExecuteResult r = Ok(db_->Execute("SELECT label FROM items"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{T("keep")}}));
}

TEST_F(SqlRouteTest, MalformedSqlFailsWithThePrepareError) {
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT FROM"), "prepare_failed",
                         "failed to prepare sqlite execute statement: near \"FROM\": syntax "
                         "error"));
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT * FROM missing"), "prepare_failed",
                         "no such table: missing"));
}

TEST_F(SqlRouteTest, TwoStatementsAreRefused) {
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT 1; SELECT 2"), "invalid_sql",
                         "sqlite execute only supports a single statement"));
  EXPECT_TRUE(IsSqlError(db_->Execute("INSERT INTO items(label) VALUES ('x'); SELECT 2"),
                         "invalid_sql", "single statement"));
  EXPECT_TRUE(
      IsSqlError(db_->ExecuteWrite("SELECT 1; SELECT 2"), "invalid_sql", "single statement"));
  // A trailing comment is "more SQL" too.
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT 1; -- trailing"), "invalid_sql", "single statement"));
  // Nothing was executed.
  ExecuteResult r = Ok(db_->Execute("SELECT count(*) FROM items"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(0)}}));
  // Whitespace after the statement, or a comment inside it, is fine.
  EXPECT_EQ(RouteOf("SELECT 1;  \n"), Route::kRead);
  EXPECT_EQ(RouteOf("SELECT 1 -- inside"), Route::kRead);
}

TEST_F(SqlRouteTest, ExecuteWriteIsAlwaysWrite) {
  EXPECT_EQ(Ok(db_->ExecuteWrite("SELECT 1")).route, Route::kWrite);
  EXPECT_EQ(Ok(db_->ExecuteWrite("PRAGMA user_version")).route, Route::kWrite);
  EXPECT_EQ(Ok(db_->ExecuteWrite("")).route, Route::kWrite);
  EXPECT_EQ(Ok(db_->ExecuteWrite("BEGIN")).route, Route::kWrite);
  EXPECT_EQ(Ok(db_->ExecuteWrite("SELECT 1")).route, Route::kWrite);
  EXPECT_EQ(Ok(db_->ExecuteWrite("COMMIT")).route, Route::kWrite);
}

TEST_F(SqlRouteTest, WriterStaysStickyAcrossCallsUntilCommit) {
  EXPECT_EQ(RouteOf("BEGIN"), Route::kWrite);
  EXPECT_TRUE(db_->InTransaction());
  ExecuteResult insert = Ok(db_->Execute("INSERT INTO items(label) VALUES ('pending')"));
  EXPECT_EQ(insert.route, Route::kWrite);
  ExecuteResult read = Ok(db_->Execute("SELECT label FROM items"));
  EXPECT_EQ(read.route, Route::kWriteFallback);
  EXPECT_EQ(read.rows, (std::vector<Row>{{T("pending")}}));  // sees its own uncommitted row
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(1)}}));
  EXPECT_EQ(RouteOf("COMMIT"), Route::kWrite);
  EXPECT_FALSE(db_->InTransaction());
  ExecuteResult after = Ok(db_->Execute("SELECT label FROM items"));
  EXPECT_EQ(after.route, Route::kRead);
  EXPECT_EQ(after.rows, (std::vector<Row>{{T("pending")}}));
}

TEST_F(SqlRouteTest, ExecBeginKeepsTheWriterForLaterExecutes) {
  Ok(db_->Exec("BEGIN; INSERT INTO items(label) VALUES ('x')"));
  EXPECT_TRUE(db_->InTransaction());
  EXPECT_EQ(RouteOf("SELECT * FROM items"), Route::kWriteFallback);
  Ok(db_->Exec("ROLLBACK"));
  EXPECT_EQ(RouteOf("SELECT * FROM items"), Route::kRead);
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(0)}}));
}

TEST_F(SqlDatabaseTest, ReadPoolDisabledNeverRoutesRead) {
  auto db = Open(DatabaseOptions{.read_pool_enabled = false});
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  EXPECT_EQ(Ok(db->Execute("SELECT * FROM items")).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db->Execute("PRAGMA user_version")).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db->Execute("PRAGMA table_info(items)")).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db->Execute("")).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db->Execute("INSERT INTO items(label) VALUES ('a')")).route, Route::kWrite);
  EXPECT_EQ(Ok(db->Execute("BEGIN")).route, Route::kWrite);
  EXPECT_EQ(Ok(db->Execute("COMMIT")).route, Route::kWrite);
  EXPECT_EQ(Ok(db->Execute("PRAGMA user_version = 3")).route, Route::kWrite);
  // Without readers there is no reader authorizer either.
  ExecuteResult v = Ok(db->Execute("PRAGMA data_version"));
  EXPECT_EQ(v.route, Route::kWriteFallback);
  EXPECT_EQ(v.rows.size(), 1u);
  EXPECT_TRUE(IsSqlError(db->Execute("SELECT FROM"), "prepare_failed", "failed to prepare"));
}

// --- the reader authorizer ----------------------------------------------------------

// Statements that are read-only and reader-eligible by classification, but use a PRAGMA
// or function the §8.3 reader authorizer refuses: they fail on READ with SQLite's
// "not authorized" at prepare, and the same text runs (or fails differently) on the
// writer, which has no authorizer. This is what proves the authorizer is in force on READ.
TEST_F(SqlRouteTest, ReaderAuthorizerRefusesUnlistedPragmas) {
  Classification c = Ok(Classify(*db_, "PRAGMA data_version"));
  ASSERT_TRUE(c.reader_eligible());
  EXPECT_TRUE(IsSqlError(db_->Execute("PRAGMA data_version"), "prepare_failed", "not authorized"));
  ExecuteResult w = Ok(db_->ExecuteWrite("PRAGMA data_version"));
  EXPECT_EQ(w.route, Route::kWrite);
  EXPECT_EQ(w.rows.size(), 1u);
  // Inside a transaction the same statement runs on the writer.
  Ok(db_->Execute("BEGIN"));
  EXPECT_EQ(Ok(db_->Execute("PRAGMA data_version")).route, Route::kWriteFallback);
  Ok(db_->Execute("COMMIT"));
  // A listed PRAGMA with an argument is allowed only from the with-argument list.
  EXPECT_EQ(RouteOf("PRAGMA integrity_check"), Route::kRead);
  EXPECT_EQ(RouteOf("PRAGMA quick_check(items)"), Route::kRead);
  EXPECT_EQ(RouteOf("PRAGMA INDEX_LIST(items)"), Route::kRead);  // names are case-insensitive
  EXPECT_EQ(RouteOf("PRAGMA Page_Count"), Route::kRead);
  // Read-only per SQLite, but a setting with an argument: refused on READ (as in Rivet).
  EXPECT_TRUE(
      IsSqlError(db_->Execute("PRAGMA cache_size = 50"), "prepare_failed", "not authorized"));
}

TEST_F(SqlRouteTest, ReaderAuthorizerRefusesLoadExtension) {
  ASSERT_TRUE(Ok(Classify(*db_, "SELECT load_extension('nope')")).reader_eligible());
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT load_extension('nope')"), "prepare_failed",
                         "not authorized"));
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT LOAD_EXTENSION('nope')"), "prepare_failed",
                         "not authorized"));
  // The writer prepares it and SQLite refuses only when it runs (extension loading is off).
  EXPECT_TRUE(IsSqlError(db_->ExecuteWrite("SELECT load_extension('nope')"), "execution_failed",
                         "failed to step"));
  // Other functions are fine on READ.
  ExecuteResult r = Ok(db_->Execute("SELECT upper('a'), abs(-2)"));
  EXPECT_EQ(r.route, Route::kRead);
  EXPECT_EQ(r.rows, (std::vector<Row>{{T("A"), I(2)}}));
}

// --- query layer (A.10) -------------------------------------------------------------

class SqlQueryTest : public SqlRouteTest {};

TEST_F(SqlQueryTest, Q1TypedBindingRoundTrips) {
  Ok(
      db_->Exec("CREATE TABLE typed(id INTEGER PRIMARY KEY, label TEXT, score REAL, payload "
                "BLOB)"));
  ExecuteResult ins = Ok(db_->Execute("INSERT INTO typed(label, score, payload) VALUES (?, ?, ?)",
                                      Params{T("alpha"), F(3.5), B({1, 2, 3})}));
  EXPECT_EQ(ins.changes, 1);
  ExecuteResult r = Ok(db_->Execute("SELECT id, label, score, payload FROM typed WHERE label = ?",
                                    Params{T("alpha")}));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"id", "label", "score", "payload"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(1), T("alpha"), F(3.5), B({1, 2, 3})}}));
  EXPECT_EQ(r.route, Route::kRead);
}

TEST_F(SqlQueryTest, Q2ExecReturnsOnlyTheLastResult) {
  QueryResult r =
      Ok(db_->Exec("CREATE TABLE counted(id INTEGER); INSERT INTO counted VALUES (1), (2); "
                   "SELECT COUNT(*) AS count FROM counted;"));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"count"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(2)}}));
}

TEST_F(SqlQueryTest, Q3SelectOnReadReportsNoChanges) {
  // Even right after a write: a reader connection never wrote anything.
  Ok(db_->Execute("INSERT INTO items(label) VALUES ('a')"));
  ExecuteResult r = Ok(db_->Execute("SELECT 7 AS value"));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"value"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(7)}}));
  EXPECT_EQ(r.changes, 0);
  EXPECT_FALSE(r.last_insert_row_id.has_value());
  EXPECT_EQ(r.route, Route::kRead);
}

TEST_F(SqlQueryTest, Q4InsertReportsChangesAndRowId) {
  ExecuteResult r = Ok(db_->Execute("INSERT INTO items(label) VALUES ('a')"));
  EXPECT_TRUE(r.columns.empty());
  EXPECT_TRUE(r.rows.empty());
  EXPECT_EQ(r.changes, 1);
  EXPECT_EQ(r.last_insert_row_id, std::optional<int64_t>(1));
  EXPECT_EQ(r.route, Route::kWrite);
}

TEST_F(SqlQueryTest, Q5InsertReturningReturnsTheRow) {
  ExecuteResult r =
      Ok(db_->Execute("INSERT INTO items(label) VALUES (?) RETURNING id, label", Params{T("a")}));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"id", "label"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(1), T("a")}}));
  EXPECT_EQ(r.changes, 1);
  EXPECT_EQ(r.last_insert_row_id, std::optional<int64_t>(1));
  EXPECT_EQ(r.route, Route::kWrite);
}

TEST_F(SqlQueryTest, Q6PragmaUserVersionOnRead) {
  ExecuteResult r = Ok(db_->Execute("PRAGMA user_version"));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"user_version"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(0)}}));
  EXPECT_EQ(r.route, Route::kRead);
}

TEST_F(SqlQueryTest, Q7PragmaAssignmentOnWriteIsVisibleLater) {
  ExecuteResult w = Ok(db_->Execute("PRAGMA user_version = 9"));
  EXPECT_EQ(w.route, Route::kWrite);
  EXPECT_TRUE(w.columns.empty());
  EXPECT_TRUE(w.rows.empty());
  ExecuteResult r = Ok(db_->Execute("PRAGMA user_version"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(9)}}));
  EXPECT_EQ(r.route, Route::kRead);
}

TEST_F(SqlQueryTest, Q8TwoStatementsFail) {
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT 1; SELECT 2;"), "invalid_sql", "single statement"));
}

TEST_F(SqlQueryTest, Q9MalformedFailsToPrepare) {
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT FROM"), "prepare_failed", "failed to prepare"));
  EXPECT_TRUE(IsSqlError(db_->ExecuteWrite("SELECT FROM"), "prepare_failed", "failed to prepare"));
  EXPECT_TRUE(IsSqlError(db_->Exec("SELECT FROM"), "prepare_failed",
                         "failed to prepare sqlite exec statement"));
}

TEST_F(SqlQueryTest, Qn1NulByteInSqlIsRejected) {
  const std::string_view sql("SELECT 1\0 + 1", 13);
  EXPECT_TRUE(IsSqlError(db_->Execute(sql), "invalid_sql", "NUL byte"));
  EXPECT_TRUE(IsSqlError(db_->ExecuteWrite(sql), "invalid_sql", "NUL byte"));
  EXPECT_TRUE(IsSqlError(db_->Exec(sql), "invalid_sql", "NUL byte"));
  EXPECT_TRUE(IsSqlError(db_->Query(sql), "invalid_sql", "NUL byte"));
  EXPECT_TRUE(IsSqlError(db_->Run(sql), "invalid_sql", "NUL byte"));
}

TEST_F(SqlQueryTest, Qn2TextParameterWithNulRoundTrips) {
  const std::string text("a\0b", 3);
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", Params{T(text)}));
  ExecuteResult r = Ok(db_->Execute("SELECT label, hex(label), length(label) FROM items"));
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0][0], T(text));
  EXPECT_EQ(r.rows[0][1], T("610062"));
  EXPECT_EQ(r.rows[0][2], I(1));  // SQLite's length() stops at the NUL
}

TEST_F(SqlQueryTest, BindErrorsAndMissingParameters) {
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT ?", Params{I(1), I(2)}), "invalid_bind_parameter",
                         "failed to bind sqlite parameter"));
  EXPECT_TRUE(IsSqlError(db_->ExecuteWrite("SELECT 1", Params{I(1)}), "invalid_bind_parameter"));
  EXPECT_TRUE(
      IsSqlError(db_->Execute("INSERT INTO items(label) VALUES (?)", Params{T("a"), T("b")}),
                 "invalid_bind_parameter"));
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(0)}}));
  // Fewer parameters than placeholders: the rest stay NULL.
  ExecuteResult r = Ok(db_->Execute("SELECT ?, ?, ?3", Params{I(1)}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(1), Null{}, Null{}}}));
  // Absent params bind nothing; an empty list is fine too.
  EXPECT_EQ(Ok(db_->Execute("SELECT ?")).rows, (std::vector<Row>{{Null{}}}));
  EXPECT_EQ(Ok(db_->Execute("SELECT 1", Params{})).rows, (std::vector<Row>{{I(1)}}));
  // Numbered parameters bind by position.
  EXPECT_EQ(Ok(db_->Execute("SELECT ?2, ?1", Params{T("one"), T("two")})).rows,
            (std::vector<Row>{{T("two"), T("one")}}));
}

TEST_F(SqlQueryTest, NoStatementSucceedsEmptyOnWriteFallback) {
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute("INSERT INTO items(label) VALUES ('a')"));  // changes counter = 1
  for (std::string_view sql : {"", "  \n ", "-- just a comment", "/* block */", ";"}) {
    ExecuteResult r = Ok(db_->Execute(sql), sql);
    EXPECT_TRUE(r.columns.empty()) << sql;
    EXPECT_TRUE(r.rows.empty()) << sql;
    EXPECT_EQ(r.changes, 0) << sql;
    EXPECT_FALSE(r.last_insert_row_id.has_value()) << sql;
    EXPECT_EQ(r.route, Route::kWriteFallback) << sql;
  }
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Execute("")).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db_->Execute("", Params{I(1)})).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db_->Exec("")), QueryResult{});
  EXPECT_EQ(Ok(db_->Exec(" -- nothing ; ")), QueryResult{});
}

TEST_F(SqlQueryTest, ExecKeepsTheLastStatementThatProducedColumnsOrRows) {
  QueryResult r = Ok(db_->Exec(
      "SELECT 1 AS a; INSERT INTO items(label) VALUES ('x'); SELECT label FROM items WHERE 0; "
      "UPDATE items SET label = 'y';"));
  // A SELECT without rows still reports its columns and replaces the earlier result;
  // the INSERT and UPDATE produce neither and do not.
  EXPECT_EQ(r.columns, (std::vector<std::string>{"label"}));
  EXPECT_TRUE(r.rows.empty());
  r = Ok(db_->Exec("SELECT 1 AS a; SELECT 2 AS b; INSERT INTO items(label) VALUES ('z')"));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"b"}));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(2)}}));
  // Statements before a failing one have run (each in autocommit).
  EXPECT_TRUE(IsSqlError(db_->Exec("INSERT INTO items(label) VALUES ('w'); SELECT FROM"),
                         "prepare_failed", "failed to prepare sqlite exec statement"));
  EXPECT_TRUE(IsSqlError(db_->Exec("SELECT 1; INSERT INTO missing VALUES (1)"), "prepare_failed"));
  EXPECT_TRUE(IsSqlError(db_->Exec("INSERT INTO items(id, label) VALUES (1, 'dup')"),
                         "execution_failed", "failed to step sqlite exec statement: UNIQUE"));
  EXPECT_EQ(Ok(db_->Query("SELECT label FROM items ORDER BY id")).rows,
            (std::vector<Row>{{T("y")}, {T("z")}, {T("w")}}));
}

// A batch that opened a transaction and then failed rolls it back: left open, the
// transaction would take in every later statement (answered as if committed, then rolled
// back when the database closes). A transaction opened before the batch is the caller's.
TEST_F(SqlQueryTest, AFailedBatchRollsBackTheTransactionItOpened) {
  EXPECT_TRUE(IsSqlError(
      db_->Exec("BEGIN; INSERT INTO items(label) VALUES ('a'); INSERT INTO missing VALUES (1); "
                "COMMIT;"),
      "prepare_failed",
      "no such table: missing (the transaction the batch opened was rolled back)"));
  EXPECT_FALSE(db_->InTransaction());
  EXPECT_TRUE(IsSqlError(
      db_->Exec("BEGIN; INSERT INTO items(label) VALUES ('b'); INSERT INTO items(id) VALUES (1), "
                "(1); COMMIT;"),
      "execution_failed", "UNIQUE constraint failed: items.id (the transaction the batch opened"));
  EXPECT_FALSE(db_->InTransaction());
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(0)}}));
  ExecuteResult after = Ok(db_->Execute("INSERT INTO items(label) VALUES ('after')"));
  EXPECT_EQ(after.route, Route::kWrite);
  EXPECT_EQ(Ok(db_->Execute("SELECT label FROM items")).route, Route::kRead);

  // The caller's own transaction stays open: the failed statement alone is undone.
  Ok(db_->Execute("BEGIN"));
  EXPECT_TRUE(
      IsSqlError(db_->Exec("INSERT INTO items(label) VALUES ('mine'); SELEC"), "prepare_failed"));
  EXPECT_TRUE(db_->InTransaction());
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Query("SELECT label FROM items ORDER BY id")).rows,
            (std::vector<Row>{{T("after")}, {T("mine")}}));
}

TEST_F(SqlQueryTest, ColumnsAreReportedWithoutRows) {
  ExecuteResult r = Ok(db_->Execute("SELECT id, label AS name, 1 + 1 FROM items WHERE 0"));
  EXPECT_EQ(r.columns, (std::vector<std::string>{"id", "name", "1 + 1"}));
  EXPECT_TRUE(r.rows.empty());
  EXPECT_EQ(r.route, Route::kRead);
  EXPECT_EQ(Ok(db_->Query("SELECT * FROM items")).columns,
            (std::vector<std::string>{"id", "label"}));
}

TEST_F(SqlQueryTest, InvalidUtf8TextIsReplaced) {
  ExecuteResult r = Ok(db_->Execute(
      "SELECT CAST(x'61ff62' AS TEXT), CAST(x'e282' AS TEXT) || 'x', CAST(x'eda080' AS TEXT), "
      "CAST(x'f09f9880' AS TEXT), CAST(x'c0af' AS TEXT), CAST(x'f4908080' AS TEXT)"));
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0][0], T("a\uFFFDb"));
  EXPECT_EQ(r.rows[0][1], T("\uFFFDx"));                   // truncated sequence: one U+FFFD
  EXPECT_EQ(r.rows[0][2], T("\uFFFD\uFFFD\uFFFD"));        // surrogate: one per byte
  EXPECT_EQ(r.rows[0][3], T("\xF0\x9F\x98\x80"));          // valid 4-byte sequence stays
  EXPECT_EQ(r.rows[0][4], T("\uFFFD\uFFFD"));              // overlong
  EXPECT_EQ(r.rows[0][5], T("\uFFFD\uFFFD\uFFFD\uFFFD"));  // above U+10FFFF
  // Stored as given (a blob-like TEXT), returned replaced.
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", Params{T("bad\xFE")}));
  ExecuteResult stored = Ok(db_->Execute("SELECT label, hex(label) FROM items"));
  EXPECT_EQ(stored.rows, (std::vector<Row>{{T("bad\uFFFD"), T("626164FE")}}));
}

TEST_F(SqlQueryTest, BlobsRoundTripIncludingEmpty) {
  Ok(db_->Exec("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b)"));
  Ok(db_->Execute("INSERT INTO blobs(b) VALUES (?), (?), (x'')",
                  Params{B({0, 1, 0xFF, 0}), B({})}));
  ExecuteResult r = Ok(db_->Execute("SELECT b, typeof(b), length(b) FROM blobs ORDER BY id"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{B({0, 1, 0xFF, 0}), T("blob"), I(4)},
                                      {B({}), T("blob"), I(0)},
                                      {B({}), T("blob"), I(0)}}));
  // An empty text stays text, not NULL.
  EXPECT_EQ(Ok(db_->Execute("SELECT ?, typeof(?1)", Params{T("")})).rows,
            (std::vector<Row>{{T(""), T("text")}}));
}

TEST_F(SqlQueryTest, FloatsRoundTrip) {
  ExecuteResult r =
      Ok(db_->Execute("SELECT ?, ?, ?, ?, typeof(?4)",
                      Params{F(-0.0), F(1.5), F(std::numeric_limits<double>::denorm_min()),
                             F(std::numeric_limits<double>::quiet_NaN())}));
  ASSERT_EQ(r.rows.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<double>(r.rows[0][0]));
  EXPECT_EQ(std::get<double>(r.rows[0][0]), 0.0);
  EXPECT_TRUE(std::signbit(std::get<double>(r.rows[0][0])));  // -0.0 keeps its sign
  EXPECT_EQ(r.rows[0][1], F(1.5));
  EXPECT_EQ(r.rows[0][2], F(std::numeric_limits<double>::denorm_min()));
  // SQLite turns a NaN parameter into NULL; the layer reports what SQLite stored.
  EXPECT_EQ(r.rows[0][3], Value(Null{}));
  EXPECT_EQ(r.rows[0][4], T("null"));
  Ok(db_->Execute("INSERT INTO items(id, label) VALUES (1, ?)", Params{F(2.25)}));
  EXPECT_EQ(Ok(db_->Query("SELECT label, typeof(label) FROM items")).rows,
            (std::vector<Row>{{T("2.25"), T("text")}}));  // TEXT affinity converts
}

TEST_F(SqlQueryTest, LastInsertRowidFunctionSeesTheLastInsert) {
  Ok(db_->Execute("INSERT INTO items(id, label) VALUES (41, 'a')"));
  ExecuteResult r = Ok(db_->Execute("SELECT last_insert_rowid()"));
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(41)}}));
  EXPECT_EQ(r.route, Route::kRead);
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute("INSERT INTO items(label) VALUES ('b')"));
  EXPECT_EQ(Ok(db_->Execute("SELECT last_insert_rowid()")).rows, (std::vector<Row>{{I(42)}}));
  Ok(db_->Execute("COMMIT"));
}

TEST_F(SqlQueryTest, ChangesFollowTheServingConnection) {
  ExecuteResult two = Ok(db_->Execute("INSERT INTO items(label) VALUES ('a'), ('b')"));
  EXPECT_EQ(two.changes, 2);
  EXPECT_EQ(two.last_insert_row_id, std::optional<int64_t>(2));
  // A later writer use is a new lease: nothing ran in it yet.
  ExecuteResult create = Ok(db_->Execute("CREATE TABLE other(x)"));
  EXPECT_EQ(create.changes, 0);
  EXPECT_FALSE(create.last_insert_row_id.has_value());
  ExecuteResult select = Ok(db_->ExecuteWrite("SELECT count(*) FROM items"));
  EXPECT_EQ(select.changes, 0);
  EXPECT_EQ(select.rows, (std::vector<Row>{{I(2)}}));
  ExecuteResult none = Ok(db_->Execute("UPDATE items SET label = 'c' WHERE id > 100"));
  EXPECT_EQ(none.changes, 0);
  EXPECT_FALSE(none.last_insert_row_id.has_value());
  ExecuteResult update = Ok(db_->Execute("UPDATE items SET label = 'c'"));
  EXPECT_EQ(update.changes, 2);
  EXPECT_EQ(update.last_insert_row_id, std::optional<int64_t>(2));

  // Inside a transaction the writer is held: §8.1's caveat applies.
  Ok(db_->Execute("BEGIN"));
  EXPECT_EQ(Ok(db_->Execute("SELECT 1")).changes, 0);  // nothing ran in this lease yet
  ExecuteResult ins = Ok(db_->Execute("INSERT INTO items(label) VALUES ('d')"));
  EXPECT_EQ(ins.changes, 1);
  ExecuteResult after = Ok(db_->Execute("SELECT count(*) FROM items"));
  EXPECT_EQ(after.route, Route::kWriteFallback);
  EXPECT_EQ(after.changes, 1);
  EXPECT_EQ(after.last_insert_row_id, std::optional<int64_t>(3));
  EXPECT_EQ(Ok(db_->Execute("CREATE TABLE more(x)")).changes, 1);
  EXPECT_EQ(Ok(db_->Execute("COMMIT")).changes, 1);
  EXPECT_EQ(Ok(db_->Execute("SELECT 1")).changes, 0);  // READ again

  RunResult run = Ok(db_->Run("DELETE FROM items WHERE id = 1"));
  EXPECT_EQ(run.changes, 1);
  EXPECT_EQ(run.last_insert_row_id, std::optional<int64_t>(3));
  QueryResult q = Ok(db_->Query("SELECT id FROM items ORDER BY id"));
  EXPECT_EQ(q.columns, (std::vector<std::string>{"id"}));
  EXPECT_EQ(q.rows, (std::vector<Row>{{I(2)}, {I(3)}}));
}

TEST_F(SqlDatabaseTest, ChangesPersistOnTheWriterWhenThePoolIsDisabled) {
  auto db = Open(DatabaseOptions{.read_pool_enabled = false});
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  EXPECT_EQ(Ok(db->Execute("INSERT INTO items(label) VALUES ('a')")).changes, 1);
  // One writer kept forever: SQLite's counter as is.
  ExecuteResult select = Ok(db->Execute("SELECT 7"));
  EXPECT_EQ(select.route, Route::kWriteFallback);
  EXPECT_EQ(select.changes, 1);
  EXPECT_EQ(select.last_insert_row_id, std::optional<int64_t>(1));
  EXPECT_EQ(Ok(db->Execute("CREATE TABLE other(x)")).changes, 1);
}

// --- statement deadline -------------------------------------------------------------

constexpr std::string_view kEndless =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

// The owner's stop switch interrupts a running statement at once (no deadline here), so a
// host joining its SQL threads at shutdown does not wait for it.
TEST_F(SqlDatabaseTest, TheAbortSwitchInterruptsARunningStatement) {
  std::atomic<bool> abort{false};
  auto db = Open(DatabaseOptions{.statement_deadline = 0ms, .abort = &abort});
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Ok(db->Execute("SELECT 1")).rows, (std::vector<Row>{{I(1)}}));
  std::promise<Result<ExecuteResult>> done;
  std::thread runner([&] { done.set_value(db->Execute(kEndless)); });
  auto fut = done.get_future();
  // Still running while the switch is off.
  EXPECT_EQ(fut.wait_for(50ms), std::future_status::timeout);
  const auto start = std::chrono::steady_clock::now();
  abort.store(true);
  ASSERT_EQ(fut.wait_for(5s), std::future_status::ready);
  runner.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_TRUE(IsSqlError(fut.get(), "closed", "interrupted"));
}

TEST_F(SqlDatabaseTest, StatementDeadlineInterruptsAndTheConnectionStaysUsable) {
  auto db = Open(DatabaseOptions{.statement_deadline = 30ms});
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(IsSqlError(db->Execute(kEndless), "statement_timeout", "30 ms"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(Ok(db->Execute("SELECT 1")).rows, (std::vector<Row>{{I(1)}}));
  EXPECT_TRUE(IsSqlError(db->ExecuteWrite(kEndless), "statement_timeout"));
  EXPECT_TRUE(
      IsSqlError(db->Exec("INSERT INTO items(label) VALUES ('a'); " + std::string(kEndless)),
                 "statement_timeout"));
  // Inside a transaction: the interrupted SELECT does not end the transaction.
  Ok(db->Execute("BEGIN"));
  Ok(db->Execute("INSERT INTO items(label) VALUES ('b')"));
  EXPECT_TRUE(IsSqlError(db->Execute(kEndless), "statement_timeout"));
  EXPECT_TRUE(db->InTransaction());
  Ok(db->Execute("COMMIT"));
  EXPECT_EQ(Ok(db->Query("SELECT label FROM items ORDER BY id")).rows,
            (std::vector<Row>{{T("a")}, {T("b")}}));
  // A statement within its deadline is unaffected.
  EXPECT_EQ(Ok(db->Execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                           "WHERE x < 1000) SELECT count(*) FROM c"))
                .rows,
            (std::vector<Row>{{I(1000)}}));
}

// --- lifecycle ----------------------------------------------------------------------

TEST_F(SqlDatabaseTest, ClosedDatabaseFailsEveryCall) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  EXPECT_FALSE(db->closed());
  db->Close();
  EXPECT_TRUE(db->closed());
  EXPECT_FALSE(vfs_.IsOpen("db"));
  EXPECT_TRUE(IsSqlError(db->Execute("SELECT 1"), "closed", "Database is closed."));
  EXPECT_TRUE(IsSqlError(db->ExecuteWrite("SELECT 1"), "closed"));
  EXPECT_TRUE(IsSqlError(db->Exec("SELECT 1"), "closed"));
  EXPECT_TRUE(IsSqlError(db->Query("SELECT 1"), "closed"));
  EXPECT_TRUE(IsSqlError(db->Run("SELECT 1"), "closed"));
  EXPECT_TRUE(IsSqlError(Classify(*db, "SELECT 1"), "closed"));
  EXPECT_FALSE(db->InTransaction());
  db->Close();  // idempotent
  EXPECT_TRUE(db->closed());
}

TEST_F(SqlDatabaseTest, CloseRollsBackAnOpenTransaction) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  Ok(db->Execute("INSERT INTO items(label) VALUES ('kept')"));
  Ok(db->Execute("BEGIN"));
  Ok(db->Execute("INSERT INTO items(label) VALUES ('dropped')"));
  db->Close();
  db = Open();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Ok(db->Query("SELECT label FROM items")).rows, (std::vector<Row>{{T("kept")}}));
}

TEST_F(SqlDatabaseTest, OpenFailures) {
  EXPECT_TRUE(IsSqlError(Database::Open("no-such-vfs", "db"), "open_failed", "no such vfs"));
  EXPECT_TRUE(IsSqlError(Database::Open(vfs_.name(), "not-attached"), "open_failed"));
  auto db = Open();
  ASSERT_NE(db, nullptr);
  // The KeelVfs serves one handle per database.
  EXPECT_TRUE(IsSqlError(Database::Open(vfs_.name(), "db"), "open_failed"));
}

TEST_F(SqlDatabaseTest, OpenAppliesTheWriterPragmas) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  auto one = [&](std::string_view pragma) {
    ExecuteResult r = Ok(db->ExecuteWrite(pragma), pragma);
    return r.rows.size() == 1 && r.rows[0].size() == 1 ? r.rows[0][0] : Value(Null{});
  };
  EXPECT_EQ(one("PRAGMA page_size"), I(4096));
  EXPECT_EQ(one("PRAGMA journal_mode"), T("delete"));
  EXPECT_EQ(one("PRAGMA synchronous"), I(1));  // NORMAL
  EXPECT_EQ(one("PRAGMA temp_store"), I(2));   // MEMORY
  EXPECT_EQ(one("PRAGMA auto_vacuum"), I(0));  // NONE
  EXPECT_EQ(one("PRAGMA locking_mode"), T("exclusive"));
}

// --- remote parity (A.9) --------------------------------------------------------------

TEST_F(SqlDatabaseTest, Rp1MigrationsPersistAcrossCloseAndReopen) {
  {
    auto db = Open();
    ASSERT_NE(db, nullptr);
    Ok(db->ExecuteWrite("CREATE TABLE _migrations(id INTEGER PRIMARY KEY, name TEXT)"));
    Ok(db->ExecuteWrite("CREATE TABLE items(id INTEGER PRIMARY KEY, label TEXT)"));
    ExecuteResult m =
        Ok(db->ExecuteWrite("INSERT INTO _migrations(name) VALUES (?)", Params{T("init")}));
    EXPECT_EQ(m.changes, 1);
  }
  // A new generation: a new VFS registration over the same page store.
  ASSERT_TRUE(vfs_.Detach("db").has_value());
  KeelVfs next(NextVfsName(), clock_, random_);
  ASSERT_TRUE(next.Register().has_value());
  ASSERT_TRUE(
      next.Attach("db", std::make_shared<PageStorePageSource>(pages_, Actor(1))).has_value());
  auto reopened = Database::Open(next.name(), "db");
  ASSERT_TRUE(reopened.ok()) << reopened.error().ToString();
  Database& db = **reopened;
  ExecuteResult migrations = Ok(db.Execute("SELECT id, name FROM _migrations"));
  EXPECT_EQ(migrations.route, Route::kRead);
  EXPECT_EQ(migrations.rows, (std::vector<Row>{{I(1), T("init")}}));
  ExecuteResult tables =
      Ok(db.Execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'items'"));
  EXPECT_EQ(tables.rows, (std::vector<Row>{{T("items")}}));
  db.Close();
}

TEST_F(SqlDatabaseTest, Rp2ExecuteWriteOfReadOnlySqlIsWrite) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  ExecuteResult r = Ok(db->ExecuteWrite("SELECT COUNT(*) FROM items"));
  EXPECT_EQ(r.route, Route::kWrite);
  EXPECT_EQ(r.rows, (std::vector<Row>{{I(0)}}));
}

TEST_F(SqlDatabaseTest, Rp3ManualTransactionsAcrossCalls) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  Ok(db->ExecuteWrite("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"));
  auto route = [&](std::string_view sql) { return Ok(db->Execute(sql), sql).route; };

  EXPECT_EQ(route("BEGIN"), Route::kWrite);
  EXPECT_EQ(route("INSERT INTO t VALUES (1, 'one')"), Route::kWrite);
  ExecuteResult inside = Ok(db->Execute("SELECT id, v FROM t"));
  EXPECT_EQ(inside.route, Route::kWriteFallback);
  EXPECT_EQ(inside.rows, (std::vector<Row>{{I(1), T("one")}}));
  EXPECT_EQ(route("COMMIT"), Route::kWrite);

  EXPECT_EQ(route("BEGIN"), Route::kWrite);
  EXPECT_EQ(route("INSERT INTO t VALUES (2, 'two')"), Route::kWrite);
  EXPECT_EQ(route("ROLLBACK"), Route::kWrite);

  EXPECT_EQ(route("BEGIN"), Route::kWrite);
  EXPECT_EQ(route("INSERT INTO t VALUES (3, 'three')"), Route::kWrite);
  EXPECT_EQ(route("SAVEPOINT sp"), Route::kWrite);
  EXPECT_EQ(route("UPDATE t SET v = 'changed' WHERE id = 3"), Route::kWrite);
  EXPECT_EQ(route("ROLLBACK TO sp"), Route::kWrite);
  EXPECT_EQ(route("RELEASE sp"), Route::kWrite);
  EXPECT_EQ(route("COMMIT"), Route::kWrite);

  ExecuteResult final_rows = Ok(db->Execute("SELECT id, v FROM t ORDER BY id"));
  EXPECT_EQ(final_rows.route, Route::kRead);
  EXPECT_EQ(final_rows.rows, (std::vector<Row>{{I(1), T("one")}, {I(3), T("three")}}));
}

// --- storage failures ---------------------------------------------------------------

TEST_F(SqlDatabaseTest, FailedPageCommitSurfacesAndTheDatabaseStaysUsable) {
  auto db = Open();
  ASSERT_NE(db, nullptr);
  CreateItems(*db);
  Ok(db->Execute("INSERT INTO items(label) VALUES ('before')"));

  faulty_.FailNextCommits(1);
  EXPECT_TRUE(IsSqlError(db->Execute("INSERT INTO items(label) VALUES ('lost')"),
                         "execution_failed", "failed to step sqlite execute statement"));
  EXPECT_FALSE(db->InTransaction());
  ExecuteResult read = Ok(db->Execute("SELECT label FROM items"));
  EXPECT_EQ(read.route, Route::kRead);
  EXPECT_EQ(read.rows, (std::vector<Row>{{T("before")}}));

  // A failed COMMIT of a manual transaction.
  Ok(db->Execute("BEGIN"));
  Ok(db->Execute("INSERT INTO items(label) VALUES ('in txn')"));
  faulty_.FailNextCommits(1);
  EXPECT_TRUE(IsSqlError(db->Execute("COMMIT"), "execution_failed"));
  if (db->InTransaction()) Ok(db->Execute("ROLLBACK"));
  EXPECT_EQ(Ok(db->Query("SELECT label FROM items")).rows, (std::vector<Row>{{T("before")}}));

  // Writes work again once the store does.
  EXPECT_EQ(Ok(db->Execute("INSERT INTO items(label) VALUES ('after')")).changes, 1);
  db->Close();
  db = Open();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Ok(db->Query("SELECT label FROM items ORDER BY id")).rows,
            (std::vector<Row>{{T("before")}, {T("after")}}));
}

// --- the statement cache ------------------------------------------------------------

class SqlStatementCacheTest : public SqlRouteTest {
 protected:
  Params P(std::vector<Value> values) { return Params(std::move(values)); }
  StatementCacheStats Stats() { return db_->statement_cache_stats(); }
};

TEST_F(SqlStatementCacheTest, ARepeatedStatementIsPreparedOnceAndReusedWithNewParams) {
  constexpr std::string_view kInsert = "INSERT INTO items(id, label) VALUES (?, ?)";
  const StatementCacheStats before = Stats();
  for (int64_t i = 1; i <= 5; ++i) {
    ExecuteResult r = Ok(db_->Execute(kInsert, P({I(i), T("row-" + std::to_string(i))})));
    EXPECT_EQ(r.route, Route::kWrite);
    EXPECT_EQ(r.changes, 1);
    EXPECT_EQ(r.last_insert_row_id, i);
  }
  EXPECT_EQ(Stats().misses - before.misses, 1u);
  EXPECT_EQ(Stats().hits - before.hits, 4u);
  // Fewer params than placeholders: the rest is NULL, not the last use's binding.
  Ok(db_->Execute(kInsert, P({I(6)})));
  constexpr std::string_view kSelect = "SELECT label FROM items WHERE id = ?";
  for (int64_t i = 1; i <= 6; ++i) {
    ExecuteResult r = Ok(db_->Execute(kSelect, P({I(i)})));
    EXPECT_EQ(r.route, Route::kRead);
    EXPECT_EQ(r.rows, (std::vector<Row>{{i == 6 ? Value(Null{}) : T("row-" + std::to_string(i))}}));
  }
  // No params at all: every placeholder NULL again.
  EXPECT_EQ(Ok(db_->Execute(kSelect)).rows, std::vector<Row>{});
  // The same text inside a manual transaction is the same statement, routed on the writer.
  Ok(db_->Execute("BEGIN"));
  EXPECT_EQ(Ok(db_->Execute(kSelect, P({I(2)}))).route, Route::kWriteFallback);
  EXPECT_EQ(Ok(db_->ExecuteWrite(kSelect, P({I(2)}))).rows, (std::vector<Row>{{T("row-2")}}));
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Execute(kSelect, P({I(2)}))).route, Route::kRead);
  EXPECT_EQ(Stats().size, 2u);
}

TEST_F(SqlStatementCacheTest, TheLeastRecentlyUsedStatementIsEvicted) {
  DatabaseOptions options;
  options.statement_cache_size = 2;
  db_.reset();
  db_ = Open(options);
  ASSERT_NE(db_, nullptr);
  for (int round = 0; round < 3; ++round) {
    for (int64_t v : {1, 2, 3}) {
      const std::string sql = "SELECT " + std::to_string(v) + " AS v";
      EXPECT_EQ(Ok(db_->Execute(sql)).rows, (std::vector<Row>{{I(v)}}));
    }
  }
  EXPECT_EQ(Stats().size, 2u);
  EXPECT_EQ(Stats().hits, 0u);  // 1, 2, 3 in turn: each evicted before its next use
  EXPECT_EQ(Stats().evictions, 7u);
  Ok(db_->Execute("SELECT 3 AS v"));  // the most recent is still there
  EXPECT_EQ(Stats().hits, 1u);

  options.statement_cache_size = 0;  // no cache at all
  db_.reset();
  db_ = Open(options);
  ASSERT_NE(db_, nullptr);
  Ok(db_->Execute("SELECT 1"));
  Ok(db_->Execute("SELECT 1"));
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_EQ(Stats().hits, 0u);
}

TEST_F(SqlStatementCacheTest, SchemaChangesDropTheCache) {
  EXPECT_EQ(Ok(db_->Execute("SELECT * FROM items")).columns,
            (std::vector<std::string>{"id", "label"}));
  EXPECT_EQ(Stats().size, 1u);
  Ok(db_->Execute("ALTER TABLE items ADD COLUMN qty INTEGER"));
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_EQ(Ok(db_->Execute("SELECT * FROM items")).columns,
            (std::vector<std::string>{"id", "label", "qty"}));

  // A cached statement whose table is gone fails as a fresh prepare would.
  Ok(db_->Execute("CREATE TABLE other(x)"));
  Ok(db_->Execute("INSERT INTO other VALUES (?)", P({I(1)})));
  EXPECT_EQ(Stats().size, 1u);
  Ok(db_->Execute("DROP TABLE other"));
  EXPECT_TRUE(IsSqlError(db_->Execute("INSERT INTO other VALUES (?)", P({I(1)})),
                         "prepare_failed", "no such table: other"));

  // ROLLBACK undoes a schema change the cache has seen statements for.
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute("CREATE TABLE scratch(x)"));
  Ok(db_->Execute("INSERT INTO scratch VALUES (?)", P({I(1)})));
  EXPECT_EQ(Stats().size, 1u);
  Ok(db_->Execute("ROLLBACK"));
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_TRUE(IsSqlError(db_->Execute("INSERT INTO scratch VALUES (?)", P({I(1)})),
                         "prepare_failed", "no such table: scratch"));

  // A schema change made by Exec (migrations) drops it too.
  Ok(db_->Execute("SELECT * FROM items"));
  Ok(db_->Exec("ALTER TABLE items ADD COLUMN note TEXT; SELECT 1"));
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_EQ(Ok(db_->Execute("SELECT * FROM items")).columns,
            (std::vector<std::string>{"id", "label", "qty", "note"}));
}

TEST_F(SqlStatementCacheTest, ASchemaChangeSqliteSeesByItselfIsHandledOnStep) {
  // The cache is dropped on every schema write it sees; a cached statement must still be
  // safe if SQLite recompiles it (prepare_v2 re-prepares on step).
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", P({T("a")})));
  Ok(db_->Execute("CREATE INDEX items_label ON items(label)"));
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", P({T("b")})));
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", P({T("c")})));
  EXPECT_EQ(Ok(db_->Execute("SELECT count(*) FROM items WHERE label >= ?", P({T("b")}))).rows,
            (std::vector<Row>{{I(2)}}));
}

TEST_F(SqlStatementCacheTest, AStatementStoppedByAnErrorIsResetBeforeItsNextUse) {
  // abs(INT64_MIN) overflows while stepping, after the first row.
  Ok(db_->Exec("INSERT INTO items(id, label) VALUES (1, 'a'), (2, 'b'), (3, 'c')"));
  constexpr std::string_view kSql =
      "SELECT id, abs(CASE WHEN id = 2 THEN ? ELSE id END) FROM items ORDER BY id";
  EXPECT_EQ(Ok(db_->Execute(kSql, P({I(5)}))).rows,
            (std::vector<Row>{{I(1), I(1)}, {I(2), I(5)}, {I(3), I(3)}}));
  EXPECT_EQ(Stats().size, 1u);
  EXPECT_TRUE(IsSqlError(db_->Execute(kSql, P({I(std::numeric_limits<int64_t>::min())})),
                         "execution_failed", "integer overflow"));
  EXPECT_EQ(Ok(db_->Execute(kSql, P({I(7)}))).rows,
            (std::vector<Row>{{I(1), I(1)}, {I(2), I(7)}, {I(3), I(3)}}));

  // A failing cached INSERT inside a transaction: the transaction stays open and usable.
  constexpr std::string_view kInsert = "INSERT INTO items(id, label) VALUES (?, ?)";
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute(kInsert, P({I(10), T("x")})));
  EXPECT_TRUE(IsSqlError(db_->Execute(kInsert, P({I(10), T("dup")})), "execution_failed",
                         "UNIQUE constraint failed"));
  EXPECT_TRUE(db_->InTransaction());
  EXPECT_EQ(Ok(db_->Execute(kInsert, P({I(11), T("y")}))).changes, 1);
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(5)}}));

  // A bind failure leaves no stale binding behind.
  EXPECT_TRUE(IsSqlError(db_->Execute(kInsert, P({I(12), T("z"), I(0)})), "invalid_bind_parameter"));
  Ok(db_->Execute(kInsert, P({I(12)})));
  EXPECT_EQ(Ok(db_->Query("SELECT label FROM items WHERE id = 12")).rows,
            (std::vector<Row>{{Value(Null{})}}));
}

TEST_F(SqlStatementCacheTest, AnInterruptedCachedStatementRunsAgain) {
  DatabaseOptions options;
  options.statement_deadline = 50ms;
  db_.reset();
  db_ = Open(options);
  ASSERT_NE(db_, nullptr);
  constexpr std::string_view kSql =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
      "SELECT count(*) FROM c";
  EXPECT_EQ(Ok(db_->Execute(kSql, P({I(10)}))).rows, (std::vector<Row>{{I(10)}}));
  EXPECT_TRUE(IsSqlError(db_->Execute(kSql, P({I(1'000'000'000'000)})), "statement_timeout"));
  EXPECT_EQ(Ok(db_->Execute(kSql, P({I(20)}))).rows, (std::vector<Row>{{I(20)}}));
}

TEST_F(SqlStatementCacheTest, PragmasAndTransactionControlAreNotCached) {
  Ok(db_->ExecuteWrite("PRAGMA foreign_keys = ON"));
  Ok(db_->ExecuteWrite("PRAGMA foreign_keys = OFF"));
  Ok(db_->ExecuteWrite("PRAGMA foreign_keys = ON"));
  EXPECT_EQ(Ok(db_->ExecuteWrite("PRAGMA foreign_keys")).rows, (std::vector<Row>{{I(1)}}));
  Ok(db_->ExecuteWrite("PRAGMA foreign_keys = OFF"));
  EXPECT_EQ(Ok(db_->ExecuteWrite("PRAGMA foreign_keys")).rows, (std::vector<Row>{{I(0)}}));
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute("COMMIT"));
  Ok(db_->Execute("SAVEPOINT s"));
  Ok(db_->Execute("RELEASE s"));
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_EQ(Stats().hits, 0u);
  // Two statements are refused whatever the cache holds.
  Ok(db_->Execute("SELECT 1"));
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT 1; SELECT 2"), "invalid_sql"));
}

TEST_F(SqlStatementCacheTest, CloseFinalizesTheCache) {
  Ok(db_->Execute("INSERT INTO items(label) VALUES (?)", P({T("a")})));
  Ok(db_->Execute("SELECT * FROM items"));
  EXPECT_EQ(Stats().size, 2u);
  db_->Close();
  EXPECT_EQ(Stats().size, 0u);
  EXPECT_TRUE(IsSqlError(db_->Execute("SELECT * FROM items"), "closed"));
  db_ = Open();
  ASSERT_NE(db_, nullptr);
  EXPECT_EQ(Ok(db_->Execute("SELECT label FROM items")).rows, (std::vector<Row>{{T("a")}}));
}

// --- other VFS, threads ------------------------------------------------------------

using ::keel::testing::TempDir;

TEST(SqlDatabaseUnixVfs, WorksOverSqliteDefaultVfsWithAFile) {
  TempDir dir;
  const std::string file = dir.path() + "/actor.db";
  {
    auto db = Database::Open("unix", file);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    Ok((*db)->Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"));
    EXPECT_EQ(Ok((*db)->Execute("SELECT sum(x) FROM t")).route, Route::kRead);
  }
  auto db = Database::Open("", file);  // "" = SQLite's default VFS
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  EXPECT_EQ(Ok((*db)->Query("SELECT sum(x) FROM t")).rows, (std::vector<Row>{{I(3)}}));
  EXPECT_EQ(Ok((*db)->ExecuteWrite("PRAGMA journal_mode")).rows, (std::vector<Row>{{T("delete")}}));
}

TEST(SqlDatabaseUnixVfs, CallsFromSeveralThreadsAreSerialised) {
  TempDir dir;
  auto opened = Database::Open("unix", dir.path() + "/threads.db");
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  Database& db = **opened;
  Ok(db.Exec("PRAGMA synchronous = OFF; CREATE TABLE t(x)"));
  std::atomic<int> failures{0};
  auto worker = [&](int base) {
    for (int i = 0; i < 40; ++i) {
      if (!db.Execute("INSERT INTO t VALUES (?)", Params{I(base + i)}).ok()) ++failures;
      if (!db.Execute("SELECT count(*) FROM t").ok()) ++failures;
    }
  };
  std::thread a(worker, 0), b(worker, 1000);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Ok(db.Query("SELECT count(*), count(DISTINCT x) FROM t")).rows,
            (std::vector<Row>{{I(80), I(80)}}));
}

}  // namespace
}  // namespace keel::sql

// --- TryExecute (the runtime's inline statements) ---------------------------------

namespace keel::sql {
namespace {

class SqlTryExecuteTest : public SqlRouteTest {
 protected:
  // Admits everything; records what it was asked.
  Admit All(std::chrono::microseconds budget = {}) {
    return [this, budget](const Classification& c, bool in_transaction) {
      asked.push_back(c);
      in_txn.push_back(in_transaction);
      return Admission{true, budget};
    };
  }
  Admit None() {
    return [this](const Classification& c, bool in_transaction) {
      asked.push_back(c);
      in_txn.push_back(in_transaction);
      return Admission{};
    };
  }
  std::vector<Classification> asked;
  std::vector<bool> in_txn;
};

TEST_F(SqlTryExecuteTest, AdmittedIsTheOrdinaryCall) {
  auto r = db_->TryExecute("INSERT INTO items(label) VALUES (?)", Params{T("a")}, false, All());
  ASSERT_TRUE(r.has_value());
  ExecuteResult w = Ok(std::move(*r));
  EXPECT_EQ(w.route, Route::kWrite);
  EXPECT_EQ(w.changes, 1);
  EXPECT_EQ(w.last_insert_row_id, std::optional<int64_t>(1));
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_TRUE(asked[0].write_operations);
  EXPECT_FALSE(in_txn[0]);
  auto s = db_->TryExecute("SELECT label FROM items", std::nullopt, false, All());
  ASSERT_TRUE(s.has_value());
  ExecuteResult q = Ok(std::move(*s));
  EXPECT_EQ(q.route, Route::kRead);
  EXPECT_EQ(q.rows, (std::vector<Row>{{T("a")}}));
  auto t = db_->TryExecute("SELECT label FROM items", std::nullopt, true, All());
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(Ok(std::move(*t)).route, Route::kWrite) << "execute_write";
}

TEST_F(SqlTryExecuteTest, DeclinedRunsNothing) {
  Ok(db_->Execute("BEGIN"));
  EXPECT_FALSE(
      db_->TryExecute("INSERT INTO items(label) VALUES ('x')", std::nullopt, false, None())
          .has_value());
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_TRUE(in_txn[0]);
  // The statement was kept prepared: the ordinary call that follows is a cache hit.
  const uint64_t hits = db_->statement_cache_stats().hits;
  ExecuteResult w = Ok(db_->Execute("INSERT INTO items(label) VALUES ('x')"));
  EXPECT_EQ(w.changes, 1);
  EXPECT_EQ(db_->statement_cache_stats().hits, hits + 1);
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(1)}}));
  // A statement that cannot be classified is not run either: the ordinary call reports it.
  EXPECT_FALSE(db_->TryExecute("SELEKT 1", std::nullopt, false, All()).has_value());
  EXPECT_TRUE(IsSqlError(db_->Execute("SELEKT 1"), "prepare_failed"));
  // A closed database answers at once.
  db_->Close();
  auto closed = db_->TryExecute("SELECT 1", std::nullopt, false, All());
  ASSERT_TRUE(closed.has_value());
  EXPECT_TRUE(IsSqlError(*closed, "closed"));
}

// An error inside a transaction is the ordinary call's error, and the transaction stays
// open (SQLite undoes the failed statement only).
TEST_F(SqlTryExecuteTest, ErrorInsideATransactionIsTheOrdinaryError) {
  Ok(db_->Execute("BEGIN"));
  auto a = db_->TryExecute("INSERT INTO items(id, label) VALUES (1, 'a')", std::nullopt, false,
                           All());
  ASSERT_TRUE(a.has_value() && a->ok());
  auto dup = db_->TryExecute("INSERT INTO items(id, label) VALUES (1, 'b')", std::nullopt,
                             false, All());
  ASSERT_TRUE(dup.has_value());
  EXPECT_TRUE(IsSqlError(*dup, "execution_failed", "UNIQUE constraint failed: items.id"));
  EXPECT_TRUE(db_->InTransaction());
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Query("SELECT id, label FROM items")).rows,
            (std::vector<Row>{{I(1), T("a")}}));
}

// A read-only statement over its budget is given up: nothing happened, the transaction is
// intact, and the ordinary call then gives the full answer.
TEST_F(SqlTryExecuteTest, ReadOnlyStatementOverItsBudgetIsGivenUp) {
  const std::string slow =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
      "SELECT count(*) FROM c";
  EXPECT_FALSE(db_->TryExecute(slow, std::nullopt, false, All(1us)).has_value());
  Ok(db_->Execute("BEGIN"));
  Ok(db_->Execute("INSERT INTO items(label) VALUES ('kept')"));
  EXPECT_FALSE(db_->TryExecute(slow, std::nullopt, false, All(1us)).has_value());
  EXPECT_TRUE(db_->InTransaction()) << "an interrupted read-only statement rolls nothing back";
  EXPECT_EQ(Ok(db_->Query(slow)).rows, (std::vector<Row>{{I(300000)}}));
  // A write is never given up: the budget applies to read-only statements only.
  auto w = db_->TryExecute(
      "INSERT INTO items(label) SELECT 'n' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
      "SELECT x + 1 FROM c WHERE x < 20000) SELECT x FROM c)",
      std::nullopt, false, All(1us));
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(Ok(std::move(*w)).changes, 20000);
  Ok(db_->Execute("COMMIT"));
  EXPECT_EQ(Ok(db_->Query("SELECT count(*) FROM items")).rows, (std::vector<Row>{{I(20001)}}));
}

}  // namespace
}  // namespace keel::sql
