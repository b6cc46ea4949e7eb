// actors.md §8.1 access-control: canPublish/canSubscribe vetoes (recording the connection
// that asked), undeclared queues and events, onBeforeConnect rejecting raw HTTP and raw
// WebSocket requests.
#include <gmock/gmock.h>

#include <atomic>
#include <mutex>

#include "support/acceptance.h"
#include "support/expect.h"
#include "support/ws_expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class AccessControlTest : public EncodingTest {
 protected:
  client::ActorHandle Actor(const std::string& key, std::optional<Value> params = std::nullopt) {
    client::GetOrCreateOptions opts;
    opts.params = std::move(params);
    return client().GetOrCreate("accessControlActor", {key}, opts);
  }
};

// Collects event payloads delivered on the client's I/O thread.
struct Inbox {
  std::mutex mu;
  std::vector<json> items;
  void Push(const Value& args) {
    std::lock_guard<std::mutex> lock(mu);
    items.push_back(AsJson(args));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return items.size();
  }
  json at(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    return items.at(i);
  }
};

TEST_P(AccessControlTest, AllowedAction) {
  EXPECT_EQ(KEEL_OK(Actor(UniqueKey("ac-action")).Call<std::string>("allowedAction", "ok")), "allowed:ok");
}

TEST_P(AccessControlTest, CanPublishSeesATransientConnection) {
  auto h = Actor(UniqueKey("ac-publish-conn"));
  KEEL_OK(h.Send("allowedQueue", Value::Object({{"value", "x"}})));
  EXPECT_FALSE(KEEL_OK(h.Call<std::string>("allowedGetLastCanPublishConnId")).empty());
}

TEST_P(AccessControlTest, QueuePublishRules) {
  auto h = Actor(UniqueKey("ac-queues"));
  auto sent = KEEL_OK(h.Send("allowedQueue", Value::Object({{"value", "one"}})));
  EXPECT_EQ(sent.status, "completed");
  auto blocked = h.Send("blockedQueue", Value::Object({{"value", "two"}}));
  ASSERT_FALSE(blocked.has_value());
  EXPECT_EQ(blocked.error().Id(), "auth.forbidden") << blocked.error().ToString();
  EXPECT_EQ(blocked.error().http_status, 403);
  // Undeclared queues: accepted and dropped, with and without waiting.
  EXPECT_EQ(KEEL_OK(h.Send("undeclaredQueue", Value::Object({{"value", "three"}}))).status, "completed");
  client::QueueSendOptions wait;
  wait.wait = true;
  wait.timeout = 50ms;
  auto waited = KEEL_OK(h.Send("undeclaredQueue", Value::Object({{"value", "four"}}), wait));
  EXPECT_EQ(waited.status, "completed");
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("allowedReceiveQueue"))), json({{"value", "one"}}));
  EXPECT_TRUE(AsJson(KEEL_OK(h.Call("allowedReceiveAnyQueue"))).is_null()) << "undeclared sends were never stored";
}

// §4.5: a waiting send to a declared queue nobody consumes ends as timedOut.
TEST_P(AccessControlTest, WaitingSendTimesOutWithoutConsumer) {
  auto h = Actor(UniqueKey("ac-timeout"));
  client::QueueSendOptions wait;
  wait.wait = true;
  wait.timeout = 100ms;
  auto r = KEEL_OK(h.Send("allowedQueue", Value::Object({{"value", "late"}}), wait));
  EXPECT_EQ(r.status, "timedOut");
  EXPECT_FALSE(r.response.has_value());
  // The message itself was stored.
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("allowedReceiveQueue"))), json({{"value", "late"}}));
}

TEST_P(AccessControlTest, ActorWithoutQueues) {
  auto h = client().GetOrCreate("accessControlNoQueuesActor", {UniqueKey("ac-noqueues")});
  EXPECT_EQ(KEEL_OK(h.Send("anyQueue", Value::Object({{"value", "x"}}))).status, "completed");
  client::QueueSendOptions wait;
  wait.wait = true;
  wait.timeout = 50ms;
  EXPECT_EQ(KEEL_OK(h.Send("anyQueue", Value::Object({{"value", "y"}}), wait)).status, "completed");
  EXPECT_TRUE(AsJson(KEEL_OK(h.Call("readAnyQueue"))).is_null());
}

TEST_P(AccessControlTest, AllowedSubscriptionReceivesEvents) {
  const std::string key = UniqueKey("ac-sub");
  auto h = Actor(key);
  auto conn = h.Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  Inbox inbox;
  conn->On("allowedEvent", [&inbox](const Value& args) { inbox.Push(args); });
  // The subscription is checked asynchronously: wait until canSubscribe ran.
  ASSERT_TRUE(WaitFor([&] {
    auto id = conn->Call<std::string>("allowedGetLastCanSubscribeConnId");
    return id.has_value() && !id->empty();
  }));
  KEEL_OK(conn->Call("allowedBroadcastAllowedEvent", "hello"));
  ASSERT_TRUE(WaitFor([&] { return inbox.size() >= 1; }, 5s));
  EXPECT_EQ(inbox.at(0), json::array({{{"value", "hello"}}}));
  conn->Dispose();
}

TEST_P(AccessControlTest, BlockedSubscriptionFailsTheNextAction) {
  auto conn = Actor(UniqueKey("ac-blocked")).Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  std::mutex mu;
  std::vector<std::string> errors;
  conn->OnError([&](const client::ClientError& e) {
    std::lock_guard<std::mutex> lock(mu);
    errors.push_back(e.Id());
  });
  conn->On("blockedEvent", [](const Value&) {});
  auto r = conn->Action("allowedAction", Value::ArrayOf({"after-block"}), 10s);
  ASSERT_FALSE(r.has_value()) << "the connection was refused its subscription";
  EXPECT_EQ(r.error().Id(), "auth.forbidden") << r.error().ToString();
  conn->Dispose();
  // The refusal also reached the connection's error listener, as the same error.
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(errors, ::testing::Contains("auth.forbidden"));
}

TEST_P(AccessControlTest, UndeclaredEventReachesListener) {
  auto conn = Actor(UniqueKey("ac-undeclared")).Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  Inbox inbox;
  conn->On("undeclaredEvent", [&inbox](const Value& args) { inbox.Push(args); });
  // Resend until the subscription is in place (it travels ahead of the action, but is
  // processed asynchronously); bounded.
  ASSERT_TRUE(WaitFor(
      [&] {
        KEEL_OK(conn->Call("allowedBroadcastUndeclaredEvent", "surprise"));
        return WaitFor([&] { return inbox.size() >= 1; }, 200ms);
      },
      5s));
  EXPECT_EQ(inbox.at(0), json::array({{{"value", "surprise"}}}));
  conn->Dispose();
}

TEST_P(AccessControlTest, RawHttpAllowedAndDenied) {
  const std::string key = UniqueKey("ac-http");
  auto allowed = KEEL_OK(Actor(key, Value::Object({{"allowRequest", true}})).Fetch("/status"));
  EXPECT_EQ(allowed.status, 200);
  EXPECT_EQ(ParseBody(allowed.body), json({{"ok", true}}));
  auto denied = Actor(key, Value::Object({{"allowRequest", false}})).Fetch("/status");
  const int status = denied.has_value() ? denied->status : denied.error().http_status;
  EXPECT_EQ(status, 403);
}

TEST_P(AccessControlTest, RawWebSocketAllowedAndDenied) {
  const std::string key = UniqueKey("ac-ws");
  auto ws = KEEL_OK(Actor(key, Value::Object({{"allowWebSocket", true}})).WebSocket());
  auto first = ws->Receive(5s);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto* msg = std::get_if<net::BlockingWsClient::Message>(&*first);
  ASSERT_NE(msg, nullptr);
  EXPECT_EQ(ParseBody(msg->data), json({{"type", "welcome"}}));
  ws->Close();

  auto denied = Actor(key, Value::Object({{"allowWebSocket", false}})).WebSocket();
  if (!denied.has_value()) {
    EXPECT_EQ(denied.error().code, "forbidden") << denied.error().ToString();
  } else {
    // A denied socket gets no messages; §4.6: the reason is <group>.<code>[#rayId].
    EXPECT_TRUE(keel::testing::NextIsClose(
        **denied, 1011,
        ::testing::AnyOf(::testing::Eq("auth.forbidden"), ::testing::StartsWith("auth.forbidden#")),
        5s));
  }
}

KEEL_ACCEPTANCE_ENCODINGS(AccessControl, AccessControlTest);

}  // namespace
}  // namespace keel::acceptance
