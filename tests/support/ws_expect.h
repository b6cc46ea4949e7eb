// Expectations on what a net::BlockingWsClient receives next.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <variant>

#include "net/blocking_ws_client.h"

namespace keel::testing {

// Success when the next event `ws` receives within `timeout` is the close with `code` and a
// reason `reason` matches (a string for equality, or a matcher such as
// ::testing::StartsWith("actor.not_found#")); otherwise a failure saying what came instead.
// Use as EXPECT_TRUE(NextIsClose(*ws, 1011, StartsWith("guard.")));
inline ::testing::AssertionResult NextIsClose(
    net::BlockingWsClient& ws, uint16_t code, const ::testing::Matcher<const std::string&>& reason,
    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto ev = ws.Receive(timeout);
  if (!ev.has_value()) {
    return ::testing::AssertionFailure() << "no close: " << ev.error().ToString();
  }
  if (const auto* message = std::get_if<net::BlockingWsClient::Message>(&*ev)) {
    return ::testing::AssertionFailure()
           << "a message came instead of the close: " << message->data;
  }
  const auto& closed = std::get<net::BlockingWsClient::Closed>(*ev);
  if (closed.code != code || !reason.Matches(closed.reason)) {
    std::ostringstream why;
    reason.ExplainMatchResultTo(closed.reason, &why);
    return ::testing::AssertionFailure()
           << "closed " << closed.code << " \"" << closed.reason << "\", wanted " << code
           << " and a reason that " << ::testing::DescribeMatcher<const std::string&>(reason) << " "
           << why.str();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace keel::testing
