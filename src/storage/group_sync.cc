#include "storage/group_sync.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "base/native/cpu_affinity.h"
#include "base/output_batch.h"

namespace keel::storage {

struct GroupSync::State {
  KvStore* store = nullptr;
  Options options;
  // KvStore::SkipsSyncs: a committed write is already as durable as it gets.
  bool nothing_to_sync = false;

  mutable std::mutex mu;
  std::condition_variable idle;  // signalled when `running` becomes false
  std::condition_variable wake;  // own-thread mode: signalled when `thread_turn` becomes true
  // Continuations for the next sync: writes committed before it, and reads that came
  // after such writes (in arrival order). Non-empty only while `scheduled`.
  std::vector<Continuation> next;
  // Reads that came while a sync ran and no write was waiting: they need only that sync.
  std::vector<Continuation> after_running;
  bool scheduled = false;    // a runner (the thread, a posted task, an inline writer) owns syncing
  bool thread_turn = false;  // own-thread mode: the thread is to run the next rounds
  // Own-thread mode: Anticipate's or the linger's deadline (on Now()); the thread polls
  // until then.
  std::chrono::nanoseconds anticipate_until{0};
  uint64_t anticipations = 0;
  uint64_t lingers = 0;
  std::atomic<bool> polling{false};
  bool running = false;      // a runner is inside its loop (it may touch the store)
  bool stopped = false;
  uint64_t syncs = 0;
  uint64_t inline_syncs = 0;
  // How long syncs take lately (negative: none measured yet). Rises fast, falls slowly.
  std::chrono::nanoseconds sync_estimate{-1};
  // How many continuations a sync covers lately (its writes, and reads that came behind
  // them), counting for an inline sync those that arrived while it ran. Above kAloneWrites
  // writes overlap, and sharing syncs on the thread serves them better than syncing each
  // where it was written: the answers of many leave together.
  double writes_per_sync = 1;
  static constexpr double kAloneWrites = 1.5;

  std::chrono::nanoseconds Now() const {
    if (options.now) return options.now();
    return std::chrono::steady_clock::now().time_since_epoch();
  }
  // REQUIRES: mu held.
  bool SyncInline() const {
    return options.inline_below.count() > 0 && sync_estimate.count() >= 0 &&
           sync_estimate < options.inline_below && writes_per_sync < kAloneWrites;
  }
  // REQUIRES: mu held.
  void Observe(std::chrono::nanoseconds took, size_t writes) {
    writes_per_sync += (static_cast<double>(writes) - writes_per_sync) / 4;
    if (sync_estimate.count() < 0) {
      sync_estimate = took;
    } else if (took > sync_estimate) {
      sync_estimate += (took - sync_estimate) / 2;
    } else {
      sync_estimate -= (sync_estimate - took) / 8;
    }
  }
};

GroupSync::GroupSync(KvStore& store) : GroupSync(store, Options{}) {}

GroupSync::GroupSync(KvStore& store, Options options) : state_(std::make_shared<State>()) {
  state_->store = &store;
  state_->options = std::move(options);
  state_->nothing_to_sync = store.SkipsSyncs();
  if (!state_->options.post) thread_ = std::thread([state = state_] { ThreadMain(state); });
}

GroupSync::~GroupSync() { Stop(); }

// An inline sync waiting for its writer's loop (Options::defer). Exactly one of these
// claims it: the task runs it, or the writer hands it to the thread when defer declined, or
// its destruction unrun (the loop stopped first) does — so `scheduled` never sticks and
// never two runners sync at once.
struct GroupSync::DeferredSync {
  explicit DeferredSync(std::shared_ptr<State> s) : state(std::move(s)) {}
  DeferredSync(const DeferredSync&) = delete;
  DeferredSync& operator=(const DeferredSync&) = delete;
  ~DeferredSync() { HandOverUnlessClaimed(); }
  void Run() {
    if (!claimed.exchange(true)) RunSyncs(state, /*inline_caller=*/true);
  }
  void HandOverUnlessClaimed() {
    if (!claimed.exchange(true)) HandOver(state);
  }
  std::shared_ptr<State> state;
  std::atomic<bool> claimed{false};
};

void GroupSync::AfterWrite(Continuation k) {
  std::unique_lock lock(state_->mu);
  if (state_->stopped) return;
  if (state_->nothing_to_sync) {
    // Nothing is ever waiting for a sync, so nothing goes ahead of this write: it is
    // acknowledged here, as after an inline sync.
    lock.unlock();
    OutputBatch answers;
    k(OkStatus());
    return;
  }
  state_->next.push_back(std::move(k));
  if (state_->scheduled) return;
  state_->scheduled = true;
  const bool here = state_->SyncInline();
  lock.unlock();
  if (!here) {
    HandOver(state_);
    return;
  }
  if (!state_->options.defer) {
    RunSyncs(state_, /*inline_caller=*/true);
    return;
  }
  auto sync = std::make_shared<DeferredSync>(state_);
  // Not on an event loop (the sync would hold up a thread with other duties): the thread's.
  if (!state_->options.defer([sync] { sync->Run(); })) sync->HandOverUnlessClaimed();
}

void GroupSync::HandOver(const std::shared_ptr<State>& state) {
  if (state->options.post) {
    state->options.post([state] { RunSyncs(state, /*inline_caller=*/false); });
    return;
  }
  {
    std::lock_guard lock(state->mu);
    state->thread_turn = true;
  }
  state->wake.notify_one();
}

void GroupSync::Anticipate(std::chrono::microseconds window) {
  if (state_->options.post || state_->nothing_to_sync) return;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped || state_->scheduled || state_->SyncInline()) return;
    const std::chrono::nanoseconds until = state_->Now() + window;
    if (until <= state_->anticipate_until) return;
    state_->anticipate_until = until;
    ++state_->anticipations;
  }
  state_->wake.notify_one();
}

Status GroupSync::PinThread(std::span<const int> cpus) {
  if (!thread_.joinable()) {
    return Unexpected{Error{"storage", "failed_precondition",
                            state_->options.post ? "syncs run on posted tasks, not on a thread"
                                                 : "the sync thread has stopped"}};
  }
  return keel::PinThread(thread_.native_handle(), cpus);
}

void GroupSync::ThreadMain(const std::shared_ptr<State>& state) {
  pthread_setname_np(pthread_self(), kThreadName);  // for top -H, perf, /proc/PID/task
  std::unique_lock lock(state->mu);
  for (;;) {
    state->wake.wait(lock, [&] {
      return state->stopped || state->thread_turn || state->anticipate_until > state->Now();
    });
    // Anticipated or lingering: poll, without sleeping in the kernel, until a write's turn
    // comes.
    while (!state->stopped && !state->thread_turn && state->anticipate_until > state->Now()) {
      state->polling.store(true, std::memory_order_relaxed);
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
    state->polling.store(false, std::memory_order_relaxed);
    if (state->stopped) return;
    if (!state->thread_turn) continue;  // the window passed without a write
    state->thread_turn = false;
    state->anticipate_until = std::chrono::nanoseconds{0};  // what was anticipated came
    lock.unlock();
    RunSyncs(state, /*inline_caller=*/false);  // clears `scheduled` once nothing is waiting
    lock.lock();
    if (state->options.linger.count() > 0 && !state->SyncInline()) {
      // An Anticipate that came once the round was over may have set a longer window.
      state->anticipate_until =
          std::max(state->anticipate_until, state->Now() + state->options.linger);
      ++state->lingers;
    }
  }
}

void GroupSync::AfterRead(Continuation k) {
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    if (!state_->next.empty()) {
      state_->next.push_back(std::move(k));
      return;
    }
    if (state_->running) {
      state_->after_running.push_back(std::move(k));
      return;
    }
  }
  k(OkStatus());
}

void GroupSync::RunSyncs(const std::shared_ptr<State>& state, bool inline_caller) {
  Status status = OkStatus();
  bool synced = false;
  for (;;) {
    std::vector<Continuation> batch;
    // Reads that came while the last sync or its continuations ran and found no write
    // waiting (else they are in `next`): that sync covers everything they may show.
    std::vector<Continuation> reads;
    bool hand_over = false;
    {
      std::lock_guard lock(state->mu);
      if (!state->stopped) {
        reads.swap(state->after_running);
        // A writer's thread makes one sync: writes waiting after it are the thread's.
        if (!(inline_caller && synced)) batch.swap(state->next);
      }
      if (reads.empty() && batch.empty()) {
        state->running = false;
        state->idle.notify_all();
        hand_over = !state->stopped && !state->next.empty();
        if (!hand_over) state->scheduled = false;
      } else {
        state->running = true;
      }
    }
    if (reads.empty() && batch.empty()) {
      if (hand_over) HandOver(state);
      return;
    }
    // The answers of one sync go out together: one write per connection (OutputBatch),
    // not one per answer.
    if (!reads.empty()) {
      OutputBatch answers;
      for (Continuation& k : reads) k(status);
    }
    if (batch.empty()) continue;
    // Every write in `batch` had committed before its AfterWrite, so before this call.
    const std::chrono::nanoseconds started = state->Now();
    status = state->store->SyncWrites();
    const std::chrono::nanoseconds took = state->Now() - started;
    if (state->options.on_sync) state->options.on_sync(inline_caller);
    {
      OutputBatch answers;
      for (Continuation& k : batch) k(status);
    }
    synced = true;
    std::lock_guard lock(state->mu);
    ++state->syncs;
    if (inline_caller) ++state->inline_syncs;
    state->Observe(took, batch.size() + (inline_caller ? state->next.size() : 0));
  }
}

void GroupSync::Stop() {
  std::vector<Continuation> dropped;
  std::vector<Continuation> dropped_reads;
  {
    std::unique_lock lock(state_->mu);
    state_->stopped = true;
    state_->wake.notify_all();
    state_->idle.wait(lock, [&] { return !state_->running; });
    dropped.swap(state_->next);
    dropped_reads.swap(state_->after_running);
  }
  // Destroyed outside the lock: they may own connections whose teardown takes locks.
  dropped.clear();
  dropped_reads.clear();
  if (thread_.joinable()) thread_.join();
}

bool GroupSync::writes_waiting() const {
  std::lock_guard lock(state_->mu);
  return !state_->next.empty();
}

uint64_t GroupSync::sync_count() const {
  std::lock_guard lock(state_->mu);
  return state_->syncs;
}

uint64_t GroupSync::anticipations() const {
  std::lock_guard lock(state_->mu);
  return state_->anticipations;
}

uint64_t GroupSync::lingers() const {
  std::lock_guard lock(state_->mu);
  return state_->lingers;
}

bool GroupSync::anticipating() const { return state_->polling.load(std::memory_order_relaxed); }

uint64_t GroupSync::inline_sync_count() const {
  std::lock_guard lock(state_->mu);
  return state_->inline_syncs;
}

}  // namespace keel::storage
