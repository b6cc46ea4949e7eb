// actors.md §8.14 actor-error-handling: user errors (message only, coded with metadata),
// internal errors (hidden), action timeouts, and the actor serving after an error.
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class ActorErrorHandlingTest : public EncodingTest {};

TEST_P(ActorErrorHandlingTest, MessageOnlyUserError) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-simple")});
  auto e = ErrorOf(h.Call("throwSimpleError"));
  EXPECT_EQ(e.group, "user");
  EXPECT_EQ(e.code, "user_error");
  EXPECT_EQ(e.message, "Simple error message");
  EXPECT_TRUE(!e.metadata.has_value() || e.metadata->is_null() || e.metadata->is_undefined())
      << AsJson(*e.metadata);
}

TEST_P(ActorErrorHandlingTest, CodedUserErrorKeepsMetadata) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-detailed")});
  auto e = ErrorOf(h.Call("throwDetailedError"));
  EXPECT_EQ(e.group, "user");
  EXPECT_EQ(e.code, "detailed_error");
  EXPECT_EQ(e.message, "Detailed error message");
  ASSERT_TRUE(e.metadata.has_value());
  json m = AsJson(*e.metadata);
  EXPECT_EQ(m["reason"], "test");
  EXPECT_TRUE(m["timestamp"].is_number()) << m;
}

TEST_P(ActorErrorHandlingTest, InternalErrorIsHidden) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-internal")});
  auto e = ErrorOf(h.Call("throwInternalError"));
  EXPECT_EQ(e.code, "internal_error");
  EXPECT_EQ(e.message, "An internal error occurred");
  EXPECT_THAT(e.message, ::testing::Not(HasSubstr("This is an internal error")));
}

TEST_P(ActorErrorHandlingTest, LongActionTimesOut) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-timeout")});
  auto e = ErrorOf(h.Call("timeoutAction"));
  EXPECT_THAT(e.message, HasSubstr("timed out")) << e.ToString();
  EXPECT_EQ(e.Id(), "actor.action_timed_out");
  EXPECT_EQ(e.http_status, 408) << "actors.md §3.7";
}

TEST_P(ActorErrorHandlingTest, ShortDelayWithinTimeout) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-delay")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("delayedAction", 200)), "Completed after 200ms");
}

TEST_P(ActorErrorHandlingTest, CustomTimeout) {
  auto h = client().GetOrCreate("customTimeoutActor", {UniqueKey("err-custom")});
  auto e = ErrorOf(h.Call("slowAction"));
  EXPECT_THAT(e.message, HasSubstr("timed out")) << e.ToString();
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("quickAction")), "Quick action completed");
}

// Not in the upstream file, but part of the §3.7 error table the suite relies on.
TEST_P(ActorErrorHandlingTest, UnknownActionIsActionNotFound) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-unknown")});
  auto e = ErrorOf(h.Call("noSuchAction"));
  EXPECT_EQ(e.Id(), "actor.action_not_found") << e.ToString();
  EXPECT_EQ(e.message, "Action `noSuchAction` was not found.");
  EXPECT_EQ(e.http_status, 404);
}

TEST_P(ActorErrorHandlingTest, ActorServesAfterAnError) {
  auto h = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-continue")});
  EXPECT_FALSE(h.Call("throwSimpleError").has_value());
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("successfulAction")), "success");
  EXPECT_FALSE(h.Call("throwInternalError").has_value());
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("successfulAction")), "success");
}

// Upstream checks these through stateless calls; the same errors over a connection (the
// Error frame with an actionId, §4.6) keep their ids and the connection stays usable.
TEST_P(ActorErrorHandlingTest, ErrorsOverAConnection) {
  auto conn = client().GetOrCreate("errorHandlingActor", {UniqueKey("err-conn")}).Connect();
  auto simple = ErrorOf(conn->Call("throwSimpleError"));
  EXPECT_EQ(simple.Id(), "user.user_error");
  EXPECT_EQ(simple.message, "Simple error message");
  auto internal = ErrorOf(conn->Call("throwInternalError"));
  EXPECT_EQ(internal.code, "internal_error");
  EXPECT_EQ(internal.message, "An internal error occurred");
  auto timeout = ErrorOf(conn->Call("timeoutAction"));
  EXPECT_EQ(timeout.Id(), "actor.action_timed_out") << timeout.ToString();
  EXPECT_EQ(KEEL_OK(conn->Call<std::string>("successfulAction")), "success");
  EXPECT_TRUE(conn->is_connected());
  conn->Dispose();
}

KEEL_ACCEPTANCE_ENCODINGS(ActorErrorHandling, ActorErrorHandlingTest);

}  // namespace
}  // namespace keel::acceptance
