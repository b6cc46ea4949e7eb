// Assertion helpers for client results in acceptance tests.
#pragma once

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "client/client.h"

namespace keel::acceptance {

// The error of a result that must have failed (a test failure when it succeeded).
template <typename T>
client::ClientError ErrorOf(const client::ClientResult<T>& r, std::string_view what = "") {
  if (r.has_value()) {
    ADD_FAILURE() << what << ": expected an error, got a value";
    return client::ClientError{};
  }
  return r.error();
}

}  // namespace keel::acceptance

// EXPECT that `result` failed with group.code.
#define KEEL_EXPECT_ERROR(result, group_, code_)                                              \
  do {                                                                                        \
    auto&& keel_r = (result);                                                                 \
    if (keel_r.has_value()) {                                                                 \
      ADD_FAILURE() << #result << ": expected " << group_ << "." << code_ << ", got a value"; \
    } else {                                                                                  \
      EXPECT_EQ(keel_r.error().group, group_) << keel_r.error().ToString();                   \
      EXPECT_EQ(keel_r.error().code, code_) << keel_r.error().ToString();                     \
    }                                                                                         \
  } while (0)

// KEEL_OK for a ClientStatus (no value): fails and ends the test with the error.
#define KEEL_STATUS_OK(expr)                                                  \
  do {                                                                        \
    auto keel_status = (expr);                                                \
    if (!keel_status.has_value()) {                                           \
      ADD_FAILURE() << #expr << " failed: " << keel_status.error().ToString(); \
      throw ::keel::acceptance::TestAbort();                                  \
    }                                                                         \
  } while (0)
