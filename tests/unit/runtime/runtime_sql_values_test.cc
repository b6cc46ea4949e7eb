// The runtime's SQL front without an engine behind it: pure functions (named bindings,
// value conversions, remote error classification, backend choice) and backend selection.
// Split from runtime_sql_test.cc (whose fake engine needs native SQLite) so that the same
// source also runs in wasm (tests/wasm); natively both files form runtime_sql_test.
#include "runtime/sql.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/actor.h"
#include "support/runtime_harness.h"

namespace keel {
namespace {

using ::testing::HasSubstr;
using testing::RuntimeHarness;

// ---- Pure functions ----

TEST(RuntimeSqlValues, NamedBindingsFollowFirstAppearanceAndSkipLiteralsAndComments) {
  Value named = Value::Object({{"b", 2}, {"a", "x"}, {"c", nullptr}});
  auto params = runtime::BindNamed(
      "SELECT ':nope', \"@nope\", [$nope] -- :nope\n /* @nope */ FROM t WHERE x = :b AND y = @a "
      "AND z = :b AND w = $c",
      named);
  ASSERT_TRUE(params.ok()) << params.error().ToString();
  ASSERT_EQ(params->size(), 3u);
  EXPECT_EQ((*params)[0], sql::Value(int64_t{2}));
  EXPECT_EQ((*params)[1], sql::Value(std::string("x")));
  EXPECT_EQ((*params)[2], sql::Value(sql::Null{}));
}

TEST(RuntimeSqlValues, NamedBindingErrors) {
  auto missing = runtime::BindNamed("SELECT :a, :b", Value::Object({{"a", 1}}));
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.error().Is("sqlite", "invalid_bind_parameter"));
  EXPECT_THAT(missing.error().message(), HasSubstr("b"));
  auto mixed = runtime::BindNamed("SELECT :a, ?", Value::Object({{"a", 1}}));
  ASSERT_FALSE(mixed.ok());
  EXPECT_TRUE(mixed.error().Is("sqlite", "invalid_bind_parameter"));
  auto not_map = runtime::BindNamed("SELECT :a", Value(Value::Array{Value(1)}));
  ASSERT_FALSE(not_map.ok());
  // A quote inside a literal is escaped by doubling it.
  auto escaped = runtime::BindNamed("SELECT 'it''s :not', :yes", Value::Object({{"yes", 1}}));
  ASSERT_TRUE(escaped.ok());
  EXPECT_EQ(escaped->size(), 1u);
}

TEST(RuntimeSqlValues, ValueConversions) {
  EXPECT_EQ(*runtime::ToSqlValue(Value(true), "p"), sql::Value(int64_t{1}));
  EXPECT_EQ(*runtime::ToSqlValue(Value(1.5), "p"), sql::Value(1.5));
  EXPECT_EQ(*runtime::ToSqlValue(Value(Bytes{1, 0, 2}), "p"), sql::Value(sql::Blob{Bytes{1, 0, 2}}));
  EXPECT_EQ(*runtime::ToSqlValue(Value::MakeUndefined(), "p"), sql::Value(sql::Null{}));
  auto big = runtime::ToSqlValue(Value(uint64_t{1} << 63), "p");
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(big.error().Is("sqlite", "invalid_bind_parameter"));
  auto array = runtime::ToSqlValue(Value(Value::Array{}), "p");
  ASSERT_FALSE(array.ok());
  EXPECT_THAT(array.error().message(), HasSubstr("array"));

  Value rows = runtime::RowsToObjects({"id", "name"}, {{int64_t{1}, std::string("a")},
                                                       {int64_t{2}, sql::Null{}}});
  ASSERT_TRUE(rows.is_array());
  ASSERT_EQ(rows.as_array().size(), 2u);
  EXPECT_EQ(*rows.as_array()[0].Find("name"), Value("a"));
  EXPECT_TRUE(rows.as_array()[1].Find("name")->is_null());
}

TEST(RuntimeSqlValues, RemoteErrorsAreClassifiedByTheirCodeOnly) {
  EXPECT_TRUE(runtime::ClassifyRemoteSqlError("sqlite.remote_fence_mismatch: stale").Is(
      "sqlite", "remote_fence_mismatch"));
  EXPECT_TRUE(runtime::ClassifyRemoteSqlError("sqlite.remote_unavailable: no").Is(
      "sqlite", "remote_unavailable"));
  // The execution layer's own errors keep their code: same error as the local backend.
  Error prepare = runtime::ClassifyRemoteSqlError("sqlite.prepare_failed: failed to prepare: x");
  EXPECT_TRUE(prepare.Is("sqlite", "prepare_failed"));
  EXPECT_EQ(prepare.message(), "failed to prepare: x");
  // So does the page store's cap on a transaction (the local backend's error too).
  EXPECT_TRUE(runtime::ClassifyRemoteSqlError("sqlite.commit_too_large: sqlite commit too large: x")
                  .Is("sqlite", "commit_too_large"));
  // Words in the message never decide (Rivet matched "unavailable" / "unsupported").
  Error other = runtime::ClassifyRemoteSqlError("actor.not_owned: the service is unavailable");
  EXPECT_TRUE(other.Is("sqlite", "remote_execution_failed"));
  EXPECT_THAT(other.message(), HasSubstr("actor.not_owned"));
  EXPECT_TRUE(runtime::ClassifyRemoteSqlError("unsupported thing").Is("sqlite",
                                                                      "remote_execution_failed"));
  EXPECT_TRUE(runtime::ParseSqliteBackendChoice("REMOTE").ok());
  EXPECT_FALSE(runtime::ParseSqliteBackendChoice("sideways").ok());
}

// ---- Backend selection (no engine involved) ----

TEST(RuntimeSqlSelection, LocalWithoutALocalBuildIsUnavailable) {
  runtime::RuntimeOptions o;
  o.sqlite_backend = runtime::SqliteBackendChoice::kLocal;  // no local_sqlite factory
  RuntimeHarness h(o);
  ActorDef<> def("plain");
  def.database();
  def.action("q", [](Ctx<>& c) -> Task<int64_t> {
    co_await c.db().exec("SELECT 1");
    co_return 1;
  });
  h.Boot({def.type()});
  h.StartActor("a1", "plain");
  auto r = h.Action("a1", "q", "[]");
  EXPECT_THAT(h.Body(r), HasSubstr(R"("code":"unavailable")"));
  EXPECT_TRUE(h.sql_requests.empty());
}

TEST(RuntimeSqlSelection, AnActorWithoutADatabaseIsNotConfigured) {
  RuntimeHarness h;
  ActorDef<> def("plain");
  def.action("q", [](Ctx<>& c) -> Task<int64_t> {
    co_await c.db().exec("SELECT 1");
    co_return 1;
  });
  h.Boot({def.type()});
  h.StartActor("a1", "plain");
  auto r = h.Action("a1", "q", "[]");
  EXPECT_THAT(h.Body(r), HasSubstr(R"("code":"database_not_configured")"));
}

}  // namespace
}  // namespace keel
