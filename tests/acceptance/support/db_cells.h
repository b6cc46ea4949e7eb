// Helpers of the SQLite categories (actor_db*, actor_sleep_db): Observer notes read through
// the `observer` actor (never waking the actor they describe) and calls that may race a
// shutdown.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "support/acceptance.h"

namespace keel::acceptance::db {

using namespace std::chrono_literals;

// The Observer notes of `key` (an actor id, usually), oldest first. The Observer is per
// runtime process: for a private runtime pass an `observer` key of that pool.
inline std::vector<std::string> Notes(client::Client& c, const std::string& key,
                                      const std::string& observer = "observer") {
  return c.GetOrCreate("observer", {observer}).Call<std::vector<std::string>>("notes", key).value_or(
      std::vector<std::string>{});
}
inline int64_t NoteCount(client::Client& c, const std::string& key, const std::string& entry,
                         const std::string& observer = "observer") {
  return c.GetOrCreate("observer", {observer}).Call<int64_t>("count", key, entry).value_or(-1);
}
// Waits until `key` has at least `n` notes `entry`.
inline bool WaitNotes(client::Client& c, const std::string& key, const std::string& entry, int64_t n,
                      std::chrono::milliseconds timeout = 10s) {
  return WaitFor([&] { return NoteCount(c, key, entry) >= n; }, timeout);
}
// The notes as one line, for failure messages: "notes: [wake, sleep]".
inline std::string NotesText(const std::vector<std::string>& notes) {
  std::string out;
  for (const auto& n : notes) out += (out.empty() ? "" : ", ") + n;
  return "notes: [" + out + "]";
}
// Index of the first note `entry` at or after `from` in `notes`, or -1.
inline int64_t IndexOf(const std::vector<std::string>& notes, const std::string& entry, size_t from = 0) {
  for (size_t i = from; i < notes.size(); ++i) {
    if (notes[i] == entry) return static_cast<int64_t>(i);
  }
  return -1;
}

// A call that may race the actor's shutdown: a database call issued while the instance
// closes fails with sqlite.closed ("Actor stopping: database accessed after actor
// stopped", actors.md §8.12); retried for up to `timeout` (scheduling errors are retried by
// the client itself).
template <typename R = Value, typename... Args>
client::ClientResult<R> CallSettled(client::ActorHandle h, std::string_view action, const Args&... args) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (true) {
    auto r = h.Call<R>(action, args...);
    if (r.has_value() || !r.error().Is("sqlite", "closed") || std::chrono::steady_clock::now() > deadline) return r;
    SleepMs(50);
  }
}

}  // namespace keel::acceptance::db
