// Task<T>: the C++20 coroutine type of the actor runtime — actions, hooks and the
// runtime's own sequences (start, shutdown) are Tasks.
//
// A Task is lazy (it starts when awaited or spawned), single-owner and resumed inline:
// nothing here knows about threads or event loops. The runtime core resumes coroutines
// from its input methods (a KV response arrived, a timer fired), all on the actor's one
// logical executor, so a Task never runs concurrently with another piece of the same
// actor. Exceptions propagate to the awaiter (and to Spawn's completion).
//
// Completion<T> turns a callback into something a coroutine can await: the runtime hands
// `Resolve` to the envoy client as a callback and the action `co_await`s the completion.
// Thread-safety: none (one executor).
#pragma once

#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <variant>

#if __has_include(<coroutine>)
#include <coroutine>
namespace keel::coro {
using std::coroutine_handle;
using std::noop_coroutine;
using std::suspend_always;
using std::suspend_never;
}  // namespace keel::coro
#else
// libc++ 13 (Debian's Emscripten) only has the experimental header (toolchain.md §5).
#include <experimental/coroutine>
namespace keel::coro {
using std::experimental::coroutine_handle;
using std::experimental::noop_coroutine;
using std::experimental::suspend_always;
using std::experimental::suspend_never;
}  // namespace keel::coro
#endif

namespace keel {

template <typename T = void>
class Task;

namespace internal {

template <typename T>
struct TaskResult {
  std::variant<std::monostate, T, std::exception_ptr> v;
  template <typename U>
  void return_value(U&& value) {
    v.template emplace<1>(std::forward<U>(value));
  }
  T Take() {
    if (auto* e = std::get_if<2>(&v)) std::rethrow_exception(*e);
    return std::move(std::get<1>(v));
  }
  void SetException(std::exception_ptr e) { v.template emplace<2>(std::move(e)); }
};

template <>
struct TaskResult<void> {
  std::exception_ptr error;
  void return_void() {}
  void Take() {
    if (error) std::rethrow_exception(error);
  }
  void SetException(std::exception_ptr e) { error = std::move(e); }
};

// The final suspend of every Task: resumes the awaiter when the task finished after it
// suspended. One non-template type (it only needs the promise's handoff flag and
// continuation) whose await_suspend returns bool: clang 14 turns a call of a
// `void(coroutine_handle)` function right before a resume function returns into a required
// tail call, and for Task<T> with T of internal linkage the optimiser rewrote a per-T
// await_suspend into exactly that — which wasm without the tail-call feature cannot compile.
struct FinalAwaiter {
  bool* handoff;
  coro::coroutine_handle<>* continuation;
  bool await_ready() noexcept { return false; }
  bool await_suspend(coro::coroutine_handle<>) noexcept {
    if (std::exchange(*handoff, true) && *continuation) continuation->resume();
    return true;
  }
  void await_resume() noexcept {}
};

template <typename T>
struct TaskPromise : TaskResult<T> {
  coro::coroutine_handle<> continuation;

  Task<T> get_return_object();
  coro::suspend_always initial_suspend() noexcept { return {}; }
  // Who resumes the awaiter: the awaiter itself when the task finished inside
  // await_suspend (no suspension, no stack growth in loops of synchronous tasks), else
  // the task's final suspend. No symmetric transfer: it needs wasm tail calls, which
  // Debian's Emscripten does not enable by default.
  bool handoff = false;
  FinalAwaiter final_suspend() noexcept { return FinalAwaiter{&handoff, &continuation}; }
  void unhandled_exception() { this->SetException(std::current_exception()); }
};

}  // namespace internal

template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = internal::TaskPromise<T>;
  using value_type = T;

  Task() = default;
  explicit Task(coro::coroutine_handle<promise_type> h) : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  bool valid() const { return static_cast<bool>(h_); }

  // Awaiting starts the task and resumes the awaiter when it finishes.
  auto operator co_await() && noexcept {
    struct Awaiter {
      coro::coroutine_handle<promise_type> h;
      bool await_ready() noexcept { return !h || h.done(); }
      bool await_suspend(coro::coroutine_handle<> awaiting) noexcept {
        h.promise().continuation = awaiting;
        h.resume();
        // Finished already: continue without suspending. Otherwise the final suspend
        // resumes us.
        return !std::exchange(h.promise().handoff, true);
      }
      T await_resume() {
        if (!h) std::abort();  // awaiting an empty Task is a programming error
        return h.promise().Take();
      }
    };
    return Awaiter{h_};
  }
  auto operator co_await() & noexcept { return std::move(*this).operator co_await(); }

 private:
  coro::coroutine_handle<promise_type> h_;
};

template <typename T>
Task<T> internal::TaskPromise<T>::get_return_object() {
  return Task<T>(coro::coroutine_handle<TaskPromise>::from_promise(*this));
}

namespace internal {
// A fire-and-forget coroutine that frees itself when done.
struct Detached {
  struct promise_type {
    Detached get_return_object() { return {}; }
    coro::suspend_never initial_suspend() noexcept { return {}; }
    coro::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }  // SpawnImpl catches everything
  };
};

template <typename T, typename Done>
Detached SpawnImpl(Task<T> task, Done done) {
  std::exception_ptr error;
  if constexpr (std::is_void_v<T>) {
    try {
      co_await std::move(task);
    } catch (...) {
      error = std::current_exception();
    }
    done(error);
  } else {
    std::optional<T> value;
    try {
      value.emplace(co_await std::move(task));
    } catch (...) {
      error = std::current_exception();
    }
    done(std::move(value), error);
  }
}
}  // namespace internal

// Starts `task` now (it runs inline until its first suspension) and calls `done` when it
// finishes: `done(std::exception_ptr)` for Task<void>, `done(std::optional<T>,
// std::exception_ptr)` otherwise (exactly one of them set).
template <typename T, typename Done>
void Spawn(Task<T> task, Done done) {
  internal::SpawnImpl(std::move(task), std::move(done));
}
inline void Spawn(Task<void> task) {
  Spawn(std::move(task), [](std::exception_ptr) {});
}

// A one-shot value a coroutine can await, resolved by a callback. Copies share state.
// Resolving resumes the waiter inline. Awaiting twice, or resolving twice, is a no-op for
// the second resolve; only one coroutine may wait.
template <typename T>
class Completion {
 public:
  Completion() : s_(std::make_shared<Shared>()) {}

  bool ready() const { return s_->value.has_value(); }

  void Resolve(T value) const {
    auto s = s_;  // the waiter may drop the last other reference when resumed
    if (s->value) return;
    s->value.emplace(std::move(value));
    if (auto w = std::exchange(s->waiter, {})) w.resume();
  }
  // A callback that resolves this completion (for APIs taking std::function).
  std::function<void(T)> Resolver() const {
    return [s = *this](T value) { s.Resolve(std::move(value)); };
  }

  auto operator co_await() const noexcept {
    struct Awaiter {
      std::shared_ptr<Shared> s;
      bool await_ready() noexcept { return s->value.has_value(); }
      void await_suspend(coro::coroutine_handle<> h) noexcept { s->waiter = h; }
      T await_resume() { return std::move(*s->value); }
    };
    return Awaiter{s_};
  }

 private:
  struct Shared {
    std::optional<T> value;
    coro::coroutine_handle<> waiter;
  };
  std::shared_ptr<Shared> s_;
};

}  // namespace keel
