// Result<T, E>: a value or an error, shaped after std::expected (C++23) so it can become
// an alias later. `Result<void>` plays the role of a status. Checked access: calling
// value() on an error (or error() on a value) is a programming bug and aborts.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <type_traits>
#include <utility>
#include <new>

#include "base/error.h"

namespace keel {

namespace internal {
[[noreturn]] inline void ResultAccessFailure(const char* what) {
  std::fprintf(stderr, "keel: bad Result access: %s\n", what);
  std::abort();
}
}  // namespace internal

// Wraps an error so that `return Unexpected(err);` converts to any Result<T, E>.
template <typename E>
struct Unexpected {
  E error;
};
template <typename E>
Unexpected(E) -> Unexpected<E>;

template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  using error_type = E;

  template <typename U = T,
            typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                        !std::is_same_v<std::decay_t<U>, Result>>>
  Result(U&& value) : has_(true) {  // NOLINT: implicit by design
    new (&value_) T(std::forward<U>(value));
  }
  template <typename G>
  Result(Unexpected<G> u) : has_(false) {  // NOLINT
    new (&error_) E(std::move(u.error));
  }
  Result(E error) requires(!std::is_same_v<T, E>) : has_(false) {  // NOLINT
    new (&error_) E(std::move(error));
  }
  Result(const Result& o) : has_(o.has_) {
    if (has_) {
      new (&value_) T(o.value_);
    } else {
      new (&error_) E(o.error_);
    }
  }
  Result(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : has_(o.has_) {
    if (has_) {
      new (&value_) T(std::move(o.value_));
    } else {
      new (&error_) E(std::move(o.error_));
    }
  }
  Result& operator=(const Result& o) {
    if (this != &o) {
      Destroy();
      has_ = o.has_;
      if (has_) {
        new (&value_) T(o.value_);
      } else {
        new (&error_) E(o.error_);
      }
    }
    return *this;
  }
  Result& operator=(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) {
    if (this != &o) {
      Destroy();
      has_ = o.has_;
      if (has_) {
        new (&value_) T(std::move(o.value_));
      } else {
        new (&error_) E(std::move(o.error_));
      }
    }
    return *this;
  }
  ~Result() { Destroy(); }

  bool has_value() const { return has_; }
  bool ok() const { return has_; }
  explicit operator bool() const { return has_; }

  T& value() & {
    if (!has_) internal::ResultAccessFailure("value() on error");
    return value_;
  }
  const T& value() const& {
    if (!has_) internal::ResultAccessFailure("value() on error");
    return value_;
  }
  T&& value() && {
    if (!has_) internal::ResultAccessFailure("value() on error");
    return std::move(value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const E& error() const& {
    if (has_) internal::ResultAccessFailure("error() on value");
    return error_;
  }
  E&& error() && {
    if (has_) internal::ResultAccessFailure("error() on value");
    return std::move(error_);
  }

  template <typename U>
  T value_or(U&& fallback) const& {
    return has_ ? value_ : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void Destroy() {
    if (has_) {
      value_.~T();
    } else {
      error_.~E();
    }
  }

  // A tagged union rather than std::variant: Result is instantiated for every message
  // type, and variant's machinery made the generated codecs slow to compile.
  union {
    T value_;
    E error_;
  };
  bool has_;
};

template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Result() = default;
  template <typename G>
  Result(Unexpected<G> u) : e_(std::move(u.error)) {}  // NOLINT
  Result(E error) : e_(std::move(error)) {}           // NOLINT

  bool has_value() const { return !e_.has_value(); }
  bool ok() const { return has_value(); }
  explicit operator bool() const { return has_value(); }
  void value() const {
    if (!has_value()) internal::ResultAccessFailure("value() on error");
  }
  const E& error() const& {
    if (has_value()) internal::ResultAccessFailure("error() on value");
    return *e_;
  }
  E&& error() && {
    if (has_value()) internal::ResultAccessFailure("error() on value");
    return std::move(*e_);
  }

 private:
  std::optional<E> e_;
};

using Status = Result<void>;

inline Status OkStatus() { return {}; }

}  // namespace keel

#define KEEL_CONCAT_INNER_(a, b) a##b
#define KEEL_CONCAT_(a, b) KEEL_CONCAT_INNER_(a, b)

// Returns the error of `expr` (a Result) from the enclosing function. The error is moved
// out of a temporary but copied out of an lvalue, which is left intact.
#define KEEL_RETURN_IF_ERROR(expr)                                                         \
  do {                                                                                     \
    auto&& keel_status_ = (expr);                                                          \
    if (!keel_status_.has_value()) {                                                       \
      return ::keel::Unexpected{std::forward<decltype(keel_status_)>(keel_status_).error()}; \
    }                                                                                      \
  } while (0)

// `KEEL_ASSIGN_OR_RETURN(auto x, Foo());` declares x from the value or returns the error.
#define KEEL_ASSIGN_OR_RETURN(lhs, expr) \
  KEEL_ASSIGN_OR_RETURN_IMPL_(KEEL_CONCAT_(keel_result_, __LINE__), lhs, expr)
#define KEEL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)           \
  auto tmp = (expr);                                          \
  if (!tmp.has_value()) {                                     \
    return ::keel::Unexpected{std::move(tmp).error()};        \
  }                                                           \
  lhs = std::move(tmp).value()
