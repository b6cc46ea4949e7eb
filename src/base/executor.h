// Executor: the one seam through which Keel code hands work to "some thread later".
//
// Cores never start threads; a shell gives them an Executor. Natively it is an Asio strand
// (keel::net), in tests a ManualExecutor the test drains step by step, in wasm the JS event
// loop. Contract: Post never runs `fn` synchronously; tasks posted to one executor run one
// at a time, in posting order (a serial executor). Thread-safety: Post may be called from any
// thread for native executors; ManualExecutor is single-threaded.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <utility>

namespace keel {

class Executor {
 public:
  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  virtual ~Executor() = default;

  virtual void Post(std::function<void()> fn) = 0;

  // Post for a task handed over by the code that delivers an inbound message (an envoy
  // frame to the actors' strand). Same contract as Post; an executor may run it sooner:
  // the native strand runs it as soon as the delivering handler has returned, before the
  // event loop polls again (net::HandoffScope). By default, Post.
  virtual void Handoff(std::function<void()> fn) { Post(std::move(fn)); }
};

// Runs posted tasks only when the owner calls RunOne/RunAll: deterministic tests.
class ManualExecutor final : public Executor {
 public:
  void Post(std::function<void()> fn) override { queue_.push_back(std::move(fn)); }

  // Runs the oldest task; false when there was none.
  bool RunOne() {
    if (queue_.empty()) return false;
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    fn();
    return true;
  }
  // Runs tasks (including ones they post) until the queue is empty; returns how many ran.
  size_t RunAll() {
    size_t n = 0;
    while (RunOne()) ++n;
    return n;
  }
  size_t pending() const { return queue_.size(); }

 private:
  std::deque<std::function<void()>> queue_;
};

}  // namespace keel
