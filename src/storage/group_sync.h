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
// Where syncs run: one at a time, on GroupSync's own thread (or, with Options::post, on the
// threads of `post`). A dedicated thread is cheaper than a pool: a write wakes exactly one
// thread, which then sleeps only in the fsync. But waking a thread costs a futex call and,
// when its core is idle, the core's wake-up (tens of µs on a VM): more than the whole sync
// on storage that syncs in a few µs (tmpfs, or a drive with power-loss protection). So with
// Options::inline_below set, a write that finds no sync running or scheduled syncs on the
// writer's own thread — one sync, covering whatever else committed by then; writes that
// come during it go to the thread as usual — when the recent syncs took less than
// inline_below and writes have lately come one at a time. With Options::defer, that sync
// waits until the writer's event loop has run what was ready when the write came, so the
// writes those handlers commit share it (and a writer on no event loop keeps the thread);
// without, it runs before AfterWrite returns.
// After its syncs the thread lingers (Options::linger): it polls for the next write, yielding
// its core between checks, before it sleeps. A client that waits for each answer before it
// sends the next call writes again ~50–100 µs after its last sync, and a thread still awake
// then starts that sync at once, where a sleeping one first costs its core's wake-up (tens
// of µs on a VM whose idle cores halt, more when the scheduler has put it on the other one).
// Sync durations are tracked fast up, slow down (one slow sync sends writes back to the
// thread until many fast ones have run), so a disk's syncs always stay on the thread; and
// overlapping writes (several per sync) keep the thread too, where they share syncs and
// their answers leave together.
//
// On a store that skips syncs (KvStore::SkipsSyncs: its files are in memory, where a sync
// does nothing) there is nothing to wait for: AfterWrite runs its continuation at once, on
// the writer's thread, and no sync is counted.
//
// Continuations run on the syncing thread — the writer's own thread, inside AfterWrite, for
// an inline sync or a store that skips syncs — or, AfterRead with nothing pending, on the
// caller's, before it returns.
// A caller must therefore not hold a lock its continuation takes. Stop() (and the
// destructor) waits for a running sync to finish; continuations still waiting then are
// destroyed without running (their connections are going away).
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <thread>

#include "base/result.h"
#include "storage/kv_store.h"

namespace keel::storage {

class GroupSync {
 public:
  // Runs `status` = the result of the covering SyncWrites (storage.io: durability unknown).
  using Continuation = std::function<void(Status status)>;
  using PostFn = std::function<void(std::function<void()>)>;

  struct Options {
    // Runs a task later on some thread; syncs then run as such tasks. Null: on a thread
    // this object starts.
    PostFn post;
    // Runs after each SyncWrites, on the syncing thread (metrics); `inline_sync`: it ran
    // on a writer's thread.
    std::function<void(bool inline_sync)> on_sync;
    // Syncs shorter than this (recently) run on the writer's thread when none is running
    // (see the file comment). Zero: never.
    std::chrono::nanoseconds inline_below{0};
    // Own-thread mode: how long the thread polls for the next write after its syncs before
    // it sleeps (see the file comment). Not while syncs run inline. Zero: it sleeps at once.
    std::chrono::nanoseconds linger{0};
    // For inline syncs: runs a task on the calling thread's event loop once what is ready
    // there has run; false when the calling thread runs no such loop (the sync then goes
    // to the thread). A task destroyed unrun hands its sync to the thread.
    std::function<bool(std::function<void()>)> defer;
    // The monotonic clock sync durations are measured with (tests). Null: steady_clock.
    std::function<std::chrono::nanoseconds()> now;
  };

  // `store` must outlive this object.
  explicit GroupSync(KvStore& store);
  GroupSync(KvStore& store, Options options);
  ~GroupSync();
  GroupSync(const GroupSync&) = delete;
  GroupSync& operator=(const GroupSync&) = delete;

  // After a commit made with sync = false has returned: `k` runs once it is durable.
  void AfterWrite(Continuation k);
  // For the answer of a read: `k` runs once the writes waiting now are durable.
  void AfterRead(Continuation k);

  // A write is coming soon whose sync is on the critical path of a request (an actor is
  // about to be woken: its start's commit follows within a few hundred µs). Wakes the
  // syncing thread now if it sleeps, and keeps it polling (yielding its core between
  // checks) until that write arrives or `window` has passed. A thread asleep after a
  // pause takes its core's wake-up (~90 µs on a VM whose idle cores halt) and then its
  // own cold code (~35 µs) before the fsync starts; woken in advance, it spends that while
  // the caller prepares the write. Does nothing where no thread would sync that write:
  // with Options::post, on a store that skips syncs, or while syncs run inline.
  void Anticipate(std::chrono::microseconds window);

  // Own-thread mode: runs the sync thread on `cpus` from now on. Where the disk sends its
  // completions to one CPU, a thread kept there is woken by each fsync's end on the CPU it
  // sleeps on, not through a cross-CPU wake-up (base/native/cpu_affinity.h). Errors:
  // storage.failed_precondition with Options::post (there is no such thread) or once
  // stopped; system.affinity when the CPUs cannot be used (the thread stays where it was).
  // REQUIRES: not concurrent with Stop().
  Status PinThread(std::span<const int> cpus);

  // The sync thread's name (pthread_setname_np; at most 15 characters).
  static constexpr const char* kThreadName = "keel-kv-sync";

  // See the file comment. Idempotent. REQUIRES: not called from a continuation.
  void Stop();

  // Completed SyncWrites calls (successful or not), and how many of them ran inline.
  uint64_t sync_count() const;
  uint64_t inline_sync_count() const;
  // Anticipate calls that set the thread polling (or lengthened its polling), and whether
  // it polls now, anticipating or lingering (tests, metrics).
  uint64_t anticipations() const;
  bool anticipating() const;
  // Rounds of syncs after which the thread lingered (Options::linger; tests).
  uint64_t lingers() const;
  // True while writes wait for the next sync. A continuation with much to do can then hand
  // its work to another thread instead of delaying that sync (continuations of one sync
  // run one after another, before the next sync starts).
  bool writes_waiting() const;

 private:
  struct State;
  // Runs rounds (reads to answer, writes to sync) until nothing waits. `inline_caller`: on
  // a writer's thread, which makes one sync at most and hands what waits after it over.
  static void RunSyncs(const std::shared_ptr<State>& state, bool inline_caller);
  // Hands the next rounds to the thread (or to `post`). REQUIRES: `scheduled`, no lock held.
  static void HandOver(const std::shared_ptr<State>& state);
  static void ThreadMain(const std::shared_ptr<State>& state);
  struct DeferredSync;
  std::shared_ptr<State> state_;
  std::thread thread_;  // joinable only without `post`
};

}  // namespace keel::storage
