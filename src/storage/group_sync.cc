#include "storage/group_sync.h"

#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "base/output_batch.h"

namespace keel::storage {

struct GroupSync::State {
  KvStore* store = nullptr;
  PostFn post;
  std::function<void()> on_sync;

  mutable std::mutex mu;
  std::condition_variable idle;  // signalled when `running` becomes false
  std::condition_variable wake;  // own-thread mode: signalled when `scheduled` becomes true
  // Continuations for the next sync: writes committed before it, and reads that came
  // after such writes (in arrival order). Non-empty only while `scheduled`.
  std::vector<Continuation> next;
  // Reads that came while a sync ran and no write was waiting: they need only that sync.
  std::vector<Continuation> after_running;
  bool scheduled = false;  // a RunSyncs task is posted or running
  bool running = false;    // RunSyncs is inside its loop (it may touch the store)
  bool stopped = false;
  uint64_t syncs = 0;
};

GroupSync::GroupSync(KvStore& store, std::function<void()> on_sync)
    : state_(std::make_shared<State>()) {
  state_->store = &store;
  state_->on_sync = std::move(on_sync);
  thread_ = std::thread([state = state_] { ThreadMain(state); });
}

GroupSync::GroupSync(KvStore& store, PostFn post, std::function<void()> on_sync)
    : state_(std::make_shared<State>()) {
  state_->store = &store;
  state_->post = std::move(post);
  state_->on_sync = std::move(on_sync);
}

GroupSync::~GroupSync() { Stop(); }

void GroupSync::AfterWrite(Continuation k) {
  std::unique_lock lock(state_->mu);
  if (state_->stopped) return;
  state_->next.push_back(std::move(k));
  if (state_->scheduled) return;
  state_->scheduled = true;
  lock.unlock();
  if (state_->post) {
    state_->post([state = state_] { RunSyncs(state); });
  } else {
    state_->wake.notify_one();
  }
}

void GroupSync::ThreadMain(const std::shared_ptr<State>& state) {
  for (;;) {
    {
      std::unique_lock lock(state->mu);
      state->wake.wait(lock, [&] { return state->stopped || state->scheduled; });
      if (state->stopped) return;
    }
    RunSyncs(state);  // clears `scheduled` once nothing is waiting
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

void GroupSync::RunSyncs(const std::shared_ptr<State>& state) {
  Status status = OkStatus();
  for (;;) {
    std::vector<Continuation> batch;
    // Reads that came while the last sync or its continuations ran and found no write
    // waiting (else they are in `next`): that sync covers everything they may show.
    std::vector<Continuation> reads;
    {
      std::lock_guard lock(state->mu);
      if (!state->stopped) {
        reads.swap(state->after_running);
        batch.swap(state->next);
      }
      if (reads.empty() && batch.empty()) {
        state->scheduled = false;
        state->running = false;
        state->idle.notify_all();
        return;
      }
      state->running = true;
    }
    // The answers of one sync go out together: one write per connection (OutputBatch),
    // not one per answer.
    if (!reads.empty()) {
      OutputBatch answers;
      for (Continuation& k : reads) k(status);
    }
    if (batch.empty()) continue;
    // Every write in `batch` had committed before its AfterWrite, so before this call.
    status = state->store->SyncWrites();
    if (state->on_sync) state->on_sync();
    {
      OutputBatch answers;
      for (Continuation& k : batch) k(status);
    }
    std::lock_guard lock(state->mu);
    ++state->syncs;
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

}  // namespace keel::storage
