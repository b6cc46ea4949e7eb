// IoRuntime: the I/O event loop of a native Keel process — one Asio io_context run by N
// threads, plus a thread-safe Clock and serial Executors (strands) backed by it.
//
// Every keel::net server and client runs on an IoRuntime. Destroy HttpServers before their
// runtime. Connections, exchanges and strands may outlive it: ~IoRuntime closes their
// sockets (peers see the connection end) and from then on their calls do nothing.
// Thread-safety: all methods may be called from any thread, except the destructor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "base/clock.h"
#include "base/executor.h"

namespace keel::net {

namespace internal {
struct RuntimeAccess;
}  // namespace internal

class IoRuntime {
 public:
  // Starts `threads` threads (at least 1) running the event loop until Stop().
  //
  // `spin` > 0: after running a handler, one thread at a time (the first to find the loop
  // empty) keeps polling for new events, yielding its core between polls, until `spin` has
  // passed without one; only then does it block in the kernel. An event that arrives within
  // that window is picked up without a thread wake-up, which on a virtual machine with
  // halted idle cores costs tens of microseconds per hand-off. The price is CPU: at most
  // `spin` of one core after each burst of events; an idle process sleeps.
  //
  // While work is expected from another thread (Expect below), the window stretches: the
  // polling thread keeps polling up to kExpectedSpinFactor × `spin` after its last handler,
  // and the usual window starts again when the expectation ends.
  explicit IoRuntime(int threads, std::chrono::microseconds spin = {});
  static constexpr int kExpectedSpinFactor = 20;
  IoRuntime(const IoRuntime&) = delete;
  IoRuntime& operator=(const IoRuntime&) = delete;
  // Shutdown(). REQUIRES: not called from one of this runtime's threads; every HttpServer
  // on it is already destroyed.
  ~IoRuntime();

  // Stop(), join, close the sockets of surviving connections and destroy all pending work
  // now (unrun handlers, coroutine frames, posted tasks), while this object stays valid for
  // the code those destructors run. For an owner whose own state is held by pending
  // handlers (a connection's read loop owning a handler that owns the owner): without it
  // neither would ever be freed. Work posted afterwards is destroyed unrun at destruction.
  // Idempotent. REQUIRES: as for the destructor.
  void Shutdown();

  // Runs `fn` later on some runtime thread (never synchronously). Dropped after Stop().
  void Post(std::function<void()> fn);

  // An expectation of work that another thread will bring soon — a write's answer that a
  // sync thread sends after its fsync, say — after which the next event is likely (the
  // client's next request). While one is held, a polling thread does not go to sleep (up
  // to kExpectedSpinFactor × spin), and the spin window counts from when the last one ends,
  // so the event that follows is picked up without a wake-up. Without `spin` this costs
  // nothing and does nothing; it never wakes a thread that already sleeps. Copies share
  // one expectation, which ends when the last copy is destroyed.
  class Expectation {
   public:
    Expectation() = default;

   private:
    friend class IoRuntime;
    std::shared_ptr<void> hold_;
  };
  Expectation Expect();
  // Expectations held now (tests, metrics); always 0 without `spin`.
  int expectations() const;
  // With `spin`: how many times a thread has stopped polling and gone to sleep in the
  // kernel (tests, metrics). Always 0 without `spin`.
  uint64_t polling_sleeps() const;

  // A serial executor (an Asio strand): tasks run one at a time, in posting order, on
  // runtime threads, never synchronously inside Post. After Stop, posted tasks are
  // destroyed unrun.
  std::unique_ptr<Executor> MakeStrand();

  // A thread-safe Clock: MonotonicNow is steady_clock, SystemNowMs the real wall clock.
  // Timer callbacks run on runtime threads; different timers' callbacks may run
  // concurrently when the runtime has several threads, so the deadline-order guarantee of
  // Clock holds only with one thread. Cancel is race-free: it returns true exactly when
  // the callback will not run. Pending callbacks are destroyed unrun at Stop().
  Clock& clock();

  // Stops the event loop: pending work is abandoned (its handlers are destroyed at
  // destruction), threads are joined (except the calling thread when it is one of ours).
  // Idempotent.
  void Stop();
  bool stopped() const;

  // True when the calling thread is one of this runtime's threads.
  bool InRuntimeThread() const;

  int threads() const;

 private:
  friend struct internal::RuntimeAccess;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HandoffScope: opened by a socket's read loop around the synchronous delivery of one
// inbound message. While it is open on a thread, Executor::Handoff to a strand
// (MakeStrand) keeps the task on this thread; when the outermost scope closes, the kept
// tasks run in handoff order, each through its strand — at once when the strand is free
// and belongs to the runtime running this thread, else behind the strand's queued tasks,
// as Post would. Tasks handed off meanwhile run in the same loop.
//
// So the work a message hands to another strand (an envoy frame to the actors, whose
// answer is the reply) runs before the read loop re-arms its read and before the event
// loop polls the kernel again: on the engine-in-process path that takes an `epoll_wait`
// and a speculative `recvmsg` off every call's critical path.
//
// Only for a message that found the process otherwise idle: `armed_at` is Deliveries()
// when its read was started, and if another message was delivered since (by any read
// loop), the scope posts its tasks, as Post does, so a burst from many sockets is still
// handled stage by stage (W2's throughput). Never hold a scope across a suspension point
// (co_await): its state is the thread's. Not copyable.
class HandoffScope {
 public:
  explicit HandoffScope(uint64_t armed_at);
  ~HandoffScope();  // runs the kept tasks when outermost; a task that throws is logged
  HandoffScope(const HandoffScope&) = delete;
  HandoffScope& operator=(const HandoffScope&) = delete;

  // How many messages have been delivered inside outermost scopes, process-wide.
  static uint64_t Deliveries();
};

}  // namespace keel::net
