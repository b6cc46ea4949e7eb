// actors.md §8.7 actor-conn: persistent connections from every kind of handle, events
// (on/once/unsubscribe), connection params (fixed and per-attempt getParams), connection
// lifecycle hooks, status accessors and listeners, payload limits over a connection.
//
// C++ client equivalents: `ready` → ActorConn::WaitReady(); listeners that must see the
// first attempt are registered in Connect(setup), which runs before the first attempt.
#include <atomic>
#include <mutex>
#include <thread>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

// Event payloads delivered on the client's I/O thread.
class Inbox {
 public:
  void Push(const Value& args) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(AsJson(args));
  }
  std::vector<json> Items() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_;
  }
  size_t Size() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }
  bool WaitSize(size_t n, std::chrono::milliseconds timeout = 5s) {
    return WaitFor([&] { return Size() >= n; }, timeout);
  }

 private:
  std::mutex mu_;
  std::vector<json> items_;
};

// The first argument of each event.
std::vector<json> FirstArgs(const std::vector<json>& events) {
  std::vector<json> out;
  for (const auto& e : events) out.push_back(e.is_array() && !e.empty() ? e[0] : json());
  return out;
}

Value Items(int n) {
  Value::Array items;
  for (int i = 0; i < n; ++i) items.emplace_back("Item " + std::to_string(i) + " with some additional text to increase size");
  return Value::Object({{"items", Value(std::move(items))}});
}

class ActorConnTest : public EncodingTest {};

TEST_P(ActorConnTest, CreateThenGetConnect) {
  const std::string key = UniqueKey("conn-create-get");
  KEEL_OK(client().Create("counter", {key}));
  auto conn = client().Get("counter", {key}).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("increment", 5)), 5);
  conn->Dispose();
}

TEST_P(ActorConnTest, GetForIdConnect) {
  auto h = client().GetOrCreate("counter", {UniqueKey("conn-for-id")});
  KEEL_OK(h.Call<int64_t>("increment", 3));
  const std::string id = KEEL_OK(h.Resolve());
  auto conn = client().GetForId("counter", id).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("getCount")), 3);
  conn->Dispose();
}

TEST_P(ActorConnTest, GetOrCreateConnect) {
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-goc")}).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("increment", 7)), 7);
  conn->Dispose();
}

TEST_P(ActorConnTest, CreatedHandleConnect) {
  auto h = KEEL_OK(client().Create("counter", {UniqueKey("conn-created")}));
  auto conn = h.Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("increment", 9)), 9);
  conn->Dispose();
}

TEST_P(ActorConnTest, EventsFromOwnAndOtherHandlesInOrder) {
  const std::string key = UniqueKey("conn-events");
  Inbox inbox;
  auto conn = client().GetOrCreate("counter", {key}).Connect(
      [&](client::ActorConn& c) { c.On("newCount", [&](const Value& args) { inbox.Push(args); }); });
  KEEL_OK(conn->Call<int64_t>("setCount", 1));
  auto other = client().GetOrCreate("counter", {key});
  KEEL_OK(other.Call<int64_t>("setCount", 2));
  KEEL_OK(other.Call<int64_t>("setCount", 3));
  ASSERT_TRUE(inbox.WaitSize(3));
  EXPECT_EQ(FirstArgs(inbox.Items()), (std::vector<json>{1, 2, 3}));
  conn->Dispose();
}

TEST_P(ActorConnTest, BroadcastSequenceInOrder) {
  Inbox inbox;
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-seq")}).Connect(
      [&](client::ActorConn& c) { c.On("newCount", [&](const Value& args) { inbox.Push(args); }); });
  KEEL_OK(conn->Call<int64_t>("increment", 5));
  KEEL_OK(conn->Call<int64_t>("increment", 3));
  ASSERT_TRUE(inbox.WaitSize(2));
  EXPECT_EQ(FirstArgs(inbox.Items()), (std::vector<json>{5, 8}));
  conn->Dispose();
}

TEST_P(ActorConnTest, OnceDeliversOnlyTheFirstEvent) {
  Inbox once;
  Inbox all;
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-once")}).Connect([&](client::ActorConn& c) {
    c.Once("newCount", [&](const Value& args) { once.Push(args); });
    c.On("newCount", [&](const Value& args) { all.Push(args); });
  });
  KEEL_OK(conn->Call<int64_t>("increment", 5));
  KEEL_OK(conn->Call<int64_t>("increment", 3));
  ASSERT_TRUE(all.WaitSize(2));
  EXPECT_EQ(FirstArgs(once.Items()), (std::vector<json>{5}));
  conn->Dispose();
}

TEST_P(ActorConnTest, UnsubscribeStopsDelivery) {
  Inbox inbox;
  Inbox witness;
  client::ActorConn::Unsubscribe off;
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-unsub")}).Connect([&](client::ActorConn& c) {
    off = c.On("newCount", [&](const Value& args) { inbox.Push(args); });
    c.On("newCount", [&](const Value& args) { witness.Push(args); });
  });
  KEEL_OK(conn->Call<int64_t>("increment", 5));
  ASSERT_TRUE(inbox.WaitSize(1));
  off();
  KEEL_OK(conn->Call<int64_t>("increment", 3));
  ASSERT_TRUE(witness.WaitSize(2));  // the event arrived, the removed listener did not see it
  EXPECT_EQ(FirstArgs(inbox.Items()), (std::vector<json>{5}));
  conn->Dispose();
}

TEST_P(ActorConnTest, ParamsReachCreateConnState) {
  const std::string key = UniqueKey("conn-params");
  client::GetOrCreateOptions o1;
  o1.params = Value::Object({{"name", "user1"}});
  client::GetOrCreateOptions o2;
  o2.params = Value::Object({{"name", "user2"}});
  auto c1 = client().GetOrCreate("counterWithParams", {key}, o1).Connect();
  auto c2 = client().GetOrCreate("counterWithParams", {key}, o2).Connect();
  KEEL_OK(c1->Call<int64_t>("increment", 1));
  KEEL_OK(c2->Call<int64_t>("increment", 2));
  auto init = AsJson(KEEL_OK(c1->Call("getInitializers")));
  EXPECT_NE(std::find(init.begin(), init.end(), "user1"), init.end()) << init.dump();
  EXPECT_NE(std::find(init.begin(), init.end(), "user2"), init.end()) << init.dump();
  c1->Dispose();
  c2->Dispose();
}

TEST_P(ActorConnTest, GetParamsCalledPerConnection) {
  const std::string key = UniqueKey("conn-getparams");
  std::atomic<int> calls{0};
  client::GetOrCreateOptions o;
  o.get_params = [&]() -> Result<Value> {
    const int n = ++calls;
    return Value::Object({{"name", "user" + std::to_string(n)}});
  };
  auto h = client().GetOrCreate("counterWithParams", {key}, o);
  auto c1 = h.Connect();
  KEEL_OK(c1->Call<int64_t>("increment", 1));
  c1->Dispose();
  auto c2 = h.Connect();
  KEEL_OK(c2->Call<int64_t>("increment", 1));
  EXPECT_EQ(AsJson(KEEL_OK(c2->Call("getInitializers"))), json({"user1", "user2"}));
  EXPECT_EQ(calls.load(), 2);
  c2->Dispose();
}

TEST_P(ActorConnTest, GetParamsFailureIsReportedOnceThenRetried) {
  std::atomic<int> attempts{0};
  std::atomic<int> errors{0};
  std::mutex mu;
  std::string error_id;
  client::GetOrCreateOptions o;
  o.get_params = [&]() -> Result<Value> {
    if (++attempts == 1) return Unexpected(Error("test", "params_failed", "first attempt fails"));
    return Value::Object({{"name", "retried"}});
  };
  auto conn = client().GetOrCreate("counterWithParams", {UniqueKey("conn-getparams-fail")}, o)
                  .Connect([&](client::ActorConn& c) {
                    c.OnError([&](const client::ClientError& e) {
                      ++errors;
                      std::lock_guard<std::mutex> lock(mu);
                      error_id = e.Id();
                    });
                  });
  auto first = conn->Call<int64_t>("increment", 1);
  ASSERT_FALSE(first.has_value());
  EXPECT_EQ(first.error().Id(), "client.get_params_failed") << first.error().ToString();
  // The connection keeps retrying; later actions succeed.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = conn->Call<int64_t>("increment", 1);
        return r.has_value();
      },
      10s));
  EXPECT_EQ(errors.load(), 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(error_id, "client.get_params_failed");
  }
  EXPECT_GE(attempts.load(), 2);
  conn->Dispose();
}

TEST_P(ActorConnTest, LifecycleHooksOrder) {
  client::GetOrCreateOptions o;
  o.params = Value::Object({{"trackLifecycle", true}});
  auto h = client().GetOrCreate("counterWithLifecycle", {UniqueKey("conn-lifecycle")}, o);
  auto conn = h.Connect();
  KEEL_STATUS_OK(conn->WaitReady());
  EXPECT_EQ(AsJson(KEEL_OK(conn->Call("getEvents"))), json({"onWake", "onBeforeConnect", "onConnect"}));
  conn->Dispose();
  // Read over HTTP without trackLifecycle: the transient connection adds no events.
  const std::string id = KEEL_OK(h.Resolve());
  auto by_id = client().GetForId("counterWithLifecycle", id);
  json events;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = by_id.Call("getEvents");
        if (!r.has_value()) return false;
        events = AsJson(*r);
        for (const auto& e : events) {
          if (e == "onDisconnect") return true;
        }
        return false;
      },
      5s))
      << events.dump();
  // Ends with onDisconnect (possibly followed by onWake when the actor slept meanwhile).
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[3], "onDisconnect") << events.dump();
}

TEST_P(ActorConnTest, IsConnectedFalseAtFirstThenTrue) {
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-isconnected")}).Connect();
  EXPECT_FALSE(conn->is_connected());
  EXPECT_TRUE(WaitFor([&] { return conn->is_connected(); }, 10s));
  conn->Dispose();
}

TEST_P(ActorConnTest, WaitReadyResolvesWhenOpen) {
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-ready")}).Connect();
  EXPECT_FALSE(conn->is_connected());
  KEEL_STATUS_OK(conn->WaitReady());
  EXPECT_TRUE(conn->is_connected());
  EXPECT_EQ(conn->status(), client::ConnStatus::kConnected);
  // Waiting again on an open connection returns at once.
  KEEL_STATUS_OK(conn->WaitReady(100ms));
  conn->Dispose();
}

TEST_P(ActorConnTest, OnOpenOnceWhileConnected) {
  std::atomic<int> opens{0};
  std::atomic<bool> connected_at_open{false};
  std::shared_ptr<client::ActorConn> conn;
  std::mutex mu;
  client::ActorConn* raw = nullptr;
  conn = client().GetOrCreate("counter", {UniqueKey("conn-onopen")}).Connect([&](client::ActorConn& c) {
    {
      std::lock_guard<std::mutex> lock(mu);
      raw = &c;
    }
    c.OnOpen([&] {
      ++opens;
      std::lock_guard<std::mutex> lock(mu);
      connected_at_open = raw->is_connected();
    });
  });
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  ASSERT_TRUE(WaitFor([&] { return opens.load() >= 1; }, 5s));
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  EXPECT_EQ(opens.load(), 1);
  EXPECT_TRUE(connected_at_open.load());
  conn->Dispose();
}

TEST_P(ActorConnTest, OnCloseOnceOnDispose) {
  std::atomic<int> closes{0};
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-onclose")}).Connect([&](client::ActorConn& c) {
    c.OnClose([&] { ++closes; });
  });
  KEEL_STATUS_OK(conn->WaitReady());
  conn->Dispose();
  ASSERT_TRUE(WaitFor([&] { return closes.load() >= 1; }, 5s));
  conn->Dispose();  // idempotent
  SleepMs(50);
  EXPECT_EQ(closes.load(), 1);
  EXPECT_FALSE(conn->is_connected());
}

TEST_P(ActorConnTest, UnsubscribedOpenAndCloseListenersAreNotCalled) {
  std::atomic<int> opens{0};
  std::atomic<int> closes{0};
  std::atomic<int> witness_closes{0};
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-unsub-open")}).Connect([&](client::ActorConn& c) {
    auto off_open = c.OnOpen([&] { ++opens; });
    off_open();  // before the connection opened
    auto off_close = c.OnClose([&] { ++closes; });
    off_close();
    c.OnClose([&] { ++witness_closes; });
  });
  KEEL_STATUS_OK(conn->WaitReady());
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  conn->Dispose();
  ASSERT_TRUE(WaitFor([&] { return witness_closes.load() == 1; }, 5s));
  EXPECT_EQ(opens.load(), 0);
  EXPECT_EQ(closes.load(), 0);
}

TEST_P(ActorConnTest, MultipleOpenAndCloseListenersAllFire) {
  std::atomic<int> open_a{0}, open_b{0}, close_a{0}, close_b{0};
  auto conn = client().GetOrCreate("counter", {UniqueKey("conn-multi")}).Connect([&](client::ActorConn& c) {
    c.OnOpen([&] { ++open_a; });
    c.OnOpen([&] { ++open_b; });
    c.OnClose([&] { ++close_a; });
    c.OnClose([&] { ++close_b; });
  });
  KEEL_STATUS_OK(conn->WaitReady());
  ASSERT_TRUE(WaitFor([&] { return open_a.load() == 1 && open_b.load() == 1; }, 5s));
  conn->Dispose();
  ASSERT_TRUE(WaitFor([&] { return close_a.load() == 1 && close_b.load() == 1; }, 5s));
}

TEST_P(ActorConnTest, PayloadLimitsOverAConnection) {
  auto conn = client().GetOrCreate("largePayloadConnActor", {UniqueKey("conn-large")}).Connect();
  json summary = AsJson(KEEL_OK(conn->Call("processLargeRequest", Items(800))));
  EXPECT_EQ(summary["itemCount"], 800);
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("getLastRequestSize")), 800);
  // ~90 KB: over maxIncomingMessageSize (64 KiB).
  auto too_big = conn->Call("processLargeRequest", Items(1500));
  ASSERT_FALSE(too_big.has_value());
  EXPECT_EQ(too_big.error().Id(), "message.incoming_too_long") << too_big.error().ToString();
  // The oversized frame closes the socket (1011); the connection reconnects by itself.
  json items = AsJson(KEEL_OK(conn->Call("getLargeResponse", 800)));
  EXPECT_EQ(items["items"].size(), 800u);
  // ~1.2 MB: over maxOutgoingMessageSize (1 MiB); the connection stays usable.
  auto too_long = conn->Call("getLargeResponse", 20000);
  ASSERT_FALSE(too_long.has_value());
  EXPECT_EQ(too_long.error().Id(), "message.outgoing_too_long") << too_long.error().ToString();
  EXPECT_EQ(AsJson(KEEL_OK(conn->Call("getLargeResponse", 1)))["items"].size(), 1u);
  conn->Dispose();
}

KEEL_ACCEPTANCE_ENCODINGS(ActorConn, ActorConnTest);

}  // namespace
}  // namespace keel::acceptance
