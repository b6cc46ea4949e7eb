#include "net/io_runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "base/log.h"
#include "net/internal/runtime_access.h"

namespace keel::net {

namespace asio = boost::asio;

namespace {

constexpr std::string_view kComponent = "net";

// One asio timer serves every pending timer of the clock: it waits for the earliest
// deadline, and a timer that is cancelled is only forgotten. Most timers here are guards
// that are cancelled long before they are due (an action's timeout, cancelled when the
// action returns), so scheduling and cancelling one touches two small maps under mu_ and
// nothing of the event loop: no asio timer per guard, and no aborted wait handed back
// through the event loop for each cancel. The asio timer is moved only when a new deadline
// is earlier than the one it waits for; when it fires, it runs what is due and waits for
// the next deadline, if any. Exactly one of {callback runs, Cancel returns true} happens:
// both take the entry out of the maps under mu_.
class AsioClock final : public Clock {
 public:
  explicit AsioClock(asio::io_context& ioc) : timer_(ioc) {}
  ~AsioClock() override {
    std::lock_guard lock(mu_);
    by_id_.clear();
    by_deadline_.clear();
  }

  // Clock
  MonoTime MonotonicNow() const override {
    return MonoTime(std::chrono::duration_cast<Duration>(
        std::chrono::steady_clock::now().time_since_epoch()));
  }
  int64_t SystemNowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  TimerId Schedule(MonoTime deadline, std::function<void()> callback) override {
    std::lock_guard lock(mu_);
    const uint64_t id = next_id_++;
    auto at = by_deadline_.emplace(Key{deadline, id}, std::move(callback)).first;
    by_id_.emplace(id, at);
    if (!armed_for_.has_value() || deadline < *armed_for_) ArmLocked(deadline);
    return TimerId{id};
  }
  bool Cancel(TimerId id) override {
    std::lock_guard lock(mu_);
    auto it = by_id_.find(static_cast<uint64_t>(id));
    if (it == by_id_.end()) return false;
    by_deadline_.erase(it->second);
    by_id_.erase(it);
    return true;  // the asio timer, if it waited for this one, wakes to nothing due
  }

 private:
  using Key = std::pair<MonoTime, uint64_t>;  // deadline, then id: the order scheduled
  using ByDeadline = std::map<Key, std::function<void()>>;

  static std::chrono::steady_clock::time_point AsSteady(MonoTime t) {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(t.time_since_epoch()));
  }

  // Moves the asio timer to `deadline`. A wait it replaces ends with operation_aborted, or
  // may already have completed; either way its handler sees an old generation and returns.
  void ArmLocked(MonoTime deadline) {
    armed_for_ = deadline;
    const uint64_t generation = ++generation_;
    timer_.expires_at(AsSteady(deadline));
    timer_.async_wait([this, generation](const boost::system::error_code&) { Fire(generation); });
  }

  void Fire(uint64_t generation) {
    std::vector<std::function<void()>> due;
    {
      std::lock_guard lock(mu_);
      if (generation != generation_) return;  // replaced by an earlier deadline
      armed_for_.reset();
      const MonoTime now = MonotonicNow();
      while (!by_deadline_.empty() && by_deadline_.begin()->first.first <= now) {
        auto first = by_deadline_.begin();
        by_id_.erase(first->first.second);
        due.push_back(std::move(first->second));
        by_deadline_.erase(first);
      }
      if (!by_deadline_.empty()) ArmLocked(by_deadline_.begin()->first.first);
    }
    // One callback that throws must not cost the others their turn.
    for (auto& callback : due) {
      try {
        callback();
      } catch (const std::exception& e) {
        LogError(kComponent, "a timer callback threw", {{"what", e.what()}});
      } catch (...) {
        LogError(kComponent, "a timer callback threw");
      }
    }
  }

  std::mutex mu_;
  asio::steady_timer timer_;           // guarded by mu_
  std::optional<MonoTime> armed_for_;  // what timer_ waits for; guarded by mu_
  uint64_t generation_ = 0;            // of timer_'s current wait; guarded by mu_
  uint64_t next_id_ = 1;               // guarded by mu_
  ByDeadline by_deadline_;             // guarded by mu_
  std::unordered_map<uint64_t, ByDeadline::iterator> by_id_;  // guarded by mu_
};

using Strand = asio::strand<asio::io_context::executor_type>;

// The tasks handed off while a HandoffScope is open on this thread (see io_runtime.h), and
// whether its outermost scope runs them here.
struct Handoffs {
  int depth = 0;
  bool run_here = false;
  std::vector<std::pair<Strand, std::function<void()>>> tasks;
};
thread_local Handoffs t_handoffs;

// Messages delivered inside an outermost HandoffScope, by every thread of the process.
std::atomic<uint64_t> g_deliveries{0};

class StrandExecutor final : public Executor {
 public:
  explicit StrandExecutor(std::shared_ptr<asio::io_context> ioc)
      : ioc_(std::move(ioc)), strand_(asio::make_strand(*ioc_)) {}
  // After the runtime is gone the strand is shut down and drops (destroys) `fn`.
  void Post(std::function<void()> fn) override { asio::post(strand_, std::move(fn)); }
  void Handoff(std::function<void()> fn) override {
    if (t_handoffs.depth > 0) {
      t_handoffs.tasks.emplace_back(strand_, std::move(fn));
    } else {
      asio::post(strand_, std::move(fn));
    }
  }

 private:
  std::shared_ptr<asio::io_context> ioc_;  // first: released last
  asio::strand<asio::io_context::executor_type> strand_;
};

// Exposes the protected shutdown(): ~IoRuntime destroys pending handlers while objects
// that outlive the runtime may still hold the context.
class SharedIoContext : public asio::io_context {
 public:
  using asio::execution_context::shutdown;
};

}  // namespace

uint64_t HandoffScope::Deliveries() { return g_deliveries.load(std::memory_order_relaxed); }

HandoffScope::HandoffScope(uint64_t armed_at) {
  Handoffs& h = t_handoffs;
  if (h.depth++ > 0) return;
  // Another delivery since this message's read was started: the loop is busy with other
  // sockets, and posting lets their burst be handled stage by stage (all the reads, then
  // all the actors' work), which keeps throughput.
  h.run_here = g_deliveries.fetch_add(1, std::memory_order_relaxed) == armed_at;
}

HandoffScope::~HandoffScope() {
  Handoffs& h = t_handoffs;
  if (h.depth > 1) {
    --h.depth;
    return;
  }
  const bool run_here = h.run_here;
  // Still open while the tasks run: what they hand off joins this loop, in order.
  while (!h.tasks.empty()) {
    std::vector<std::pair<Strand, std::function<void()>>> round = std::move(h.tasks);
    h.tasks.clear();
    for (auto& [strand, fn] : round) {
      // dispatch runs `fn` here when the strand is free and this thread runs its
      // io_context; otherwise it queues `fn` behind the strand's tasks, in order. A scope
      // closed inside a task of that very strand posts: `fn` must not run inside it. (Asio
      // holds an exception from a task it ran inline until the current handler returns,
      // then the event loop logs it; the catch below is for anything thrown here.)
      try {
        if (!run_here || strand.running_in_this_thread()) {
          asio::post(strand, std::move(fn));
        } else {
          asio::dispatch(strand, std::move(fn));
        }
      } catch (const std::exception& e) {
        LogError(kComponent, "exception escaped a handed-off task", {{"what", e.what()}});
      } catch (...) {
        LogError(kComponent, "unknown exception escaped a handed-off task");
      }
    }
  }
  h.depth = 0;
}

// Expectations held (IoRuntime::Expect) and when the last one ended, shared with the
// expectations so that one may outlive the runtime.
struct Expected {
  std::atomic<int> held{0};
  std::atomic<std::chrono::steady_clock::rep> last_end{0};  // steady_clock ticks
};

// Declaration order matters: the clock's timers are destroyed before the io_context.
struct IoRuntime::Impl {
  Impl(int n, std::chrono::microseconds spin_for)
      : ioc(std::make_shared<SharedIoContext>()),
        work(asio::make_work_guard(*ioc)),
        clock(*ioc),
        spin(spin_for) {
    const int count = n < 1 ? 1 : n;
    threads.reserve(count);
    for (int i = 0; i < count; ++i) {
      threads.emplace_back([this] { Run(); });
    }
  }

  // Runs the event loop until Stop(). With `spin`, a thread that finds no ready event
  // polls again (yielding its core in between) until `spin` has passed since its last
  // handler or the end of the last expectation — or, while one is held, until
  // kExpectedSpinFactor × `spin` has passed since its last handler — then blocks in the
  // kernel for the next one. One thread polls at a time (the `spinner` token); the others
  // block at once.
  void Loop() {
    using Steady = std::chrono::steady_clock;
    if (spin.count() <= 0) {
      ioc->run();
      return;
    }
    // Returns the token also when a handler throws out of poll()/run_one().
    struct Token {
      std::atomic<bool>& spinner;
      bool held = false;
      bool Take() { return held || (held = !spinner.exchange(true)); }
      void Release() {
        if (held) spinner.store(false);
        held = false;
      }
      ~Token() { Release(); }
    } token{spinner};
    Steady::time_point last_work = Steady::now();
    while (!ioc->stopped()) {
      if (ioc->poll() > 0) {
        last_work = Steady::now();
        continue;
      }
      const Steady::time_point now = Steady::now();
      bool keep_polling;
      if (expected->held.load(std::memory_order_acquire) > 0) {
        keep_polling = now - last_work < spin * kExpectedSpinFactor;
      } else {
        const Steady::time_point ended{
            Steady::duration(expected->last_end.load(std::memory_order_relaxed))};
        keep_polling = now - std::max(last_work, ended) < spin;
      }
      if (keep_polling && token.Take()) {
        std::this_thread::yield();
        continue;
      }
      token.Release();
      sleeps.fetch_add(1, std::memory_order_relaxed);
      if (ioc->run_one() == 0) return;  // stopped
      last_work = Steady::now();
    }
  }

  void Run() {
    in_runtime_thread = this;
    for (;;) {
      try {
        Loop();
        break;
      } catch (const std::exception& e) {
        // Handlers are written not to throw; this is the last line of defence.
        LogError(kComponent, "exception escaped an I/O handler", {{"what", e.what()}});
      } catch (...) {
        LogError(kComponent, "unknown exception escaped an I/O handler");
      }
    }
    in_runtime_thread = nullptr;
  }

  void Stop() {
    std::lock_guard lock(stop_mu);
    stopped.store(true);
    work.reset();
    ioc->stop();
    for (auto& t : threads) {
      if (!t.joinable()) continue;
      if (t.get_id() == std::this_thread::get_id()) continue;  // joined by the destructor
      t.join();
    }
  }

  static thread_local const Impl* in_runtime_thread;

  std::shared_ptr<SharedIoContext> ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  AsioClock clock;
  std::mutex stop_mu;
  std::atomic<bool> stopped{false};
  std::chrono::microseconds spin{0};
  std::atomic<bool> spinner{false};
  std::atomic<uint64_t> sleeps{0};
  std::shared_ptr<Expected> expected = std::make_shared<Expected>();
  std::vector<std::thread> threads;
};

thread_local const IoRuntime::Impl* IoRuntime::Impl::in_runtime_thread = nullptr;

IoRuntime::IoRuntime(int threads, std::chrono::microseconds spin)
    : impl_(std::make_unique<Impl>(threads, spin)) {}

IoRuntime::~IoRuntime() { Shutdown(); }

void IoRuntime::Shutdown() {
  impl_->Stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
  // Closes the sockets of connections that outlive us, then destroys every pending handler
  // now (coroutine frames, posted tasks), releasing the connections they own; see
  // internal/runtime_access.h.
  internal::ShutdownRegistryOf(*impl_->ioc).CloseAll();
  impl_->ioc->shutdown();
}

void IoRuntime::Post(std::function<void()> fn) { asio::post(*impl_->ioc, std::move(fn)); }

IoRuntime::Expectation IoRuntime::Expect() {
  Expectation e;
  if (impl_->spin.count() <= 0) return e;
  std::shared_ptr<Expected> expected = impl_->expected;
  expected->held.fetch_add(1, std::memory_order_relaxed);
  // The end is stamped before the count drops, so a poller that sees none held sees it.
  e.hold_ = std::shared_ptr<void>(nullptr, [expected](void*) {
    expected->last_end.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                             std::memory_order_relaxed);
    expected->held.fetch_sub(1, std::memory_order_release);
  });
  return e;
}

int IoRuntime::expectations() const {
  return impl_->expected->held.load(std::memory_order_relaxed);
}

uint64_t IoRuntime::polling_sleeps() const { return impl_->sleeps.load(std::memory_order_relaxed); }

std::unique_ptr<Executor> IoRuntime::MakeStrand() {
  return std::make_unique<StrandExecutor>(impl_->ioc);
}

Clock& IoRuntime::clock() { return impl_->clock; }

void IoRuntime::Stop() { impl_->Stop(); }

bool IoRuntime::stopped() const { return impl_->stopped.load(); }

bool IoRuntime::InRuntimeThread() const { return Impl::in_runtime_thread == impl_.get(); }

int IoRuntime::threads() const { return static_cast<int>(impl_->threads.size()); }

namespace internal {
asio::io_context& RuntimeAccess::IoContext(IoRuntime& runtime) { return *runtime.impl_->ioc; }
std::shared_ptr<asio::io_context> RuntimeAccess::SharedIoContext(IoRuntime& runtime) {
  return runtime.impl_->ioc;
}
}  // namespace internal

}  // namespace keel::net
