// The `sqlbench` actor of keel_bench's W5 (docs/benchmarks.md): one SQLite database per key,
// shaped like the Rivet anchor's `sqlbench` (table items(id, name, qty); insertOne,
// insertMany(n) in one transaction with one statement per row, getById, count) so that the
// same calls are measured on Keel, Rivet and Durable Objects. Runs on whichever backend the
// runtime process selects (KEEL_SQLITE_BACKEND=local|remote); `backend()` says which.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "runtime/actor.h"

namespace keel::bench {

inline keel::ActorDef<> MakeSqlBench() {
  keel::ActorDef<> def("sqlbench");
  // A 10,000-row transaction on the remote backend is 10,002 round trips to the engine.
  def.options().action_timeout = std::chrono::milliseconds(300000);
  def.database([](keel::Db& db) -> keel::Task<void> {
    std::string ddl =
        "CREATE TABLE IF NOT EXISTS items ("
        "  id INTEGER PRIMARY KEY,"
        "  name TEXT NOT NULL,"
        "  qty INTEGER NOT NULL)";
    co_await db.exec(std::move(ddl));
  });

  // insertOne(name, qty) → the new row id (durable before the reply: one commit).
  def.action("insertOne", [](keel::Ctx<>& c, std::string name, int64_t qty) -> keel::Task<int64_t> {
    std::string sql = "INSERT INTO items (name, qty) VALUES (?, ?)";
    keel::sql::Params params;
    params.emplace_back(std::move(name));
    params.emplace_back(qty);
    keel::sql::RunResult r = co_await c.db().run(std::move(sql), std::move(params));
    co_return r.last_insert_row_id.value_or(0);
  });

  // insertMany(n, prefix) → {inserted, actor_us}: BEGIN; n INSERT statements, each its own
  // call (on the remote backend each is a round trip to the engine, as in Rivet's
  // `c.db.transaction`); COMMIT. `actor_us` is the time inside the action.
  def.action("insertMany",
             [](keel::Ctx<>& c, int64_t n, std::string prefix) -> keel::Task<keel::Value> {
               const auto t0 = std::chrono::steady_clock::now();
               // Named, not defaulted: no braced temporary inside a co_await (g++ 12).
               keel::sql::Params no_params;
               std::string begin = "BEGIN";
               co_await c.db().run(std::move(begin), no_params);
               bool failed = false;
               std::exception_ptr error;
               int64_t inserted = 0;
               try {
                 for (int64_t i = 0; i < n; ++i) {
                   std::string sql = "INSERT INTO items (name, qty) VALUES (?, ?)";
                   keel::sql::Params params;
                   params.emplace_back(prefix + "-" + std::to_string(i));
                   params.emplace_back(i);
                   co_await c.db().run(std::move(sql), std::move(params));
                   ++inserted;
                 }
               } catch (...) {
                 failed = true;
                 error = std::current_exception();
               }
               if (failed) {
                 std::string rollback = "ROLLBACK";
                 try {
                   co_await c.db().run(std::move(rollback), no_params);
                 } catch (...) {
                   // The original error is the one to report.
                 }
                 std::rethrow_exception(error);
               }
               std::string commit = "COMMIT";
               co_await c.db().run(std::move(commit), no_params);
               const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now() - t0)
                                   .count();
               keel::Value out = keel::Value::Object(
                   {{"inserted", keel::Value(inserted)}, {"actor_us", keel::Value(static_cast<int64_t>(us))}});
               co_return out;
             });

  // getById(id) → {id, name, qty} or null.
  def.action("getById", [](keel::Ctx<>& c, int64_t id) -> keel::Task<keel::Value> {
    std::string sql = "SELECT id, name, qty FROM items WHERE id = ?";
    keel::Value rows = co_await c.db().execute(std::move(sql), id);
    if (!rows.is_array() || rows.as_array().empty()) co_return keel::Value(nullptr);
    co_return std::move(rows.as_array().front());
  });

  // count() → the number of rows.
  def.action("count", [](keel::Ctx<>& c) -> keel::Task<int64_t> {
    std::string sql = "SELECT COUNT(*) FROM items";
    keel::sql::Params no_params;
    keel::sql::QueryResult r = co_await c.db().query(std::move(sql), std::move(no_params));
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });

  // "local" or "remote": the backend this actor's database runs on.
  def.action("backend", [](keel::Ctx<>& c) { return std::string(c.db().backend()); });
  return def;
}

}  // namespace keel::bench
