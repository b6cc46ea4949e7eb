// GroupSync: group commit for writes committed with sync = false.
//
// A caller commits without waiting for the disk, then hands GroupSync the continuation that
// acknowledges the write. One KvStore::SyncWrites (one WAL fsync) covers every write whose
// AfterWrite came before it started, and the continuations run after it, with its status.
// While a sync runs, later writes gather for the next one, so under load many writes share
// one fsync and its cost; a lone write waits for exactly one sync, as a synced commit would.
// Nothing is acknowledged before it is durable: an acknowledgement is the continuation.
//
// Reads: a read may see writes that are committed but not yet durable. AfterRead holds the
// read's answer until every write that was waiting when it arrived is durable (at once when
// none is), so no answer shows data that a crash could take back.
//
// Syncs run one at a time on GroupSync's own thread (or, with the `post` constructor, on the
// threads of `post`). A dedicated thread is cheaper than a pool: a write wakes exactly one
// thread, which then sleeps only in the fsync. Continuations run on the syncing thread, or — AfterRead with nothing pending — on the caller's, before it
// returns. Stop() (and the destructor) waits for a running sync to finish; continuations
// still waiting then are destroyed without running (their connections are going away).
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "base/result.h"
#include "storage/kv_store.h"

namespace keel::storage {

class GroupSync {
 public:
  // Runs `status` = the result of the covering SyncWrites (storage.io: durability unknown).
  using Continuation = std::function<void(Status status)>;
  using PostFn = std::function<void(std::function<void()>)>;

  // `store` must outlive this object. Syncs run on a thread this object starts. `on_sync`
  // (optional) runs after each SyncWrites, on the syncing thread (metrics).
  explicit GroupSync(KvStore& store, std::function<void()> on_sync = nullptr);
  // As above, but syncs run as tasks given to `post` (runs a task later on some thread).
  GroupSync(KvStore& store, PostFn post, std::function<void()> on_sync = nullptr);
  ~GroupSync();
  GroupSync(const GroupSync&) = delete;
  GroupSync& operator=(const GroupSync&) = delete;

  // After a commit made with sync = false has returned: `k` runs once it is durable.
  void AfterWrite(Continuation k);
  // For the answer of a read: `k` runs once the writes waiting now are durable.
  void AfterRead(Continuation k);

  // See the file comment. Idempotent. REQUIRES: not called from a continuation.
  void Stop();

  // Completed SyncWrites calls (successful or not).
  uint64_t sync_count() const;
  // True while writes wait for the next sync. A continuation with much to do can then hand
  // its work to another thread instead of delaying that sync (continuations of one sync
  // run one after another, before the next sync starts).
  bool writes_waiting() const;

 private:
  struct State;
  static void RunSyncs(const std::shared_ptr<State>& state);
  static void ThreadMain(const std::shared_ptr<State>& state);
  std::shared_ptr<State> state_;
  std::thread thread_;  // joinable only without `post`
};

}  // namespace keel::storage
