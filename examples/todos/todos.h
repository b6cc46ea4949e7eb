// The to-do list actor (examples/todos/README.md): one SQLite database per key, on the
// local-native backend or the remote one (KEEL_SQLITE_BACKEND=remote) — same code.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/actor.h"

namespace examples {

inline keel::ActorDef<> MakeTodos() {
  keel::ActorDef<> todos("todos");
  // Runs at every start, before anything else touches the database; idempotent.
  todos.database([](keel::Db& db) -> keel::Task<void> {
    co_await db.exec(
        "CREATE TABLE IF NOT EXISTS todos ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  text TEXT NOT NULL,"
        "  created_at INTEGER NOT NULL)");
  });
  todos.event("added");
  // add(text) → the new row id (durable in the engine's page store before the reply).
  todos.action("add", [](keel::Ctx<>& c, std::string text) -> keel::Task<int64_t> {
    if (text.empty()) throw keel::UserError("a to-do needs some text", "empty_text");
    keel::sql::Params params{keel::sql::Value(text), keel::sql::Value(c.now_ms())};
    keel::sql::RunResult r =
        co_await c.db().run("INSERT INTO todos (text, created_at) VALUES (?, ?)", std::move(params));
    const int64_t id = r.last_insert_row_id.value_or(0);
    c.broadcast("added", id, text);
    co_return id;
  });
  // list() → [{id, text, created_at}, …] oldest first.
  todos.action("list", [](keel::Ctx<>& c) -> keel::Task<keel::Value> {
    co_return co_await c.db().execute("SELECT id, text, created_at FROM todos ORDER BY id");
  });
  todos.action("count", [](keel::Ctx<>& c) -> keel::Task<int64_t> {
    keel::sql::QueryResult r = co_await c.db().query("SELECT COUNT(*) FROM todos");
    co_return std::get<int64_t>(r.rows.at(0).at(0));
  });
  // clear() → how many were removed.
  todos.action("clear", [](keel::Ctx<>& c) -> keel::Task<int64_t> {
    keel::sql::RunResult r = co_await c.db().run("DELETE FROM todos");
    co_return r.changes;
  });
  // Which backend this actor's database runs on: "local" or "remote".
  todos.action("backend", [](keel::Ctx<>& c) { return std::string(c.db().backend()); });
  return todos;
}

}  // namespace examples
