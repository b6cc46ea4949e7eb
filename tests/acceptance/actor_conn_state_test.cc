// actors.md §8.5 actor-conn-state: per-connection state from createConnState and params,
// independent states, connection ids, events sent from onConnect (directly and through
// c.conns), disconnect tracking, updates, connection-to-connection messages.
#include <algorithm>
#include <mutex>
#include <set>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

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
  bool WaitSize(size_t n, std::chrono::milliseconds timeout = 5s) {
    return WaitFor(
        [&] {
          std::lock_guard<std::mutex> lock(mu_);
          return items_.size() >= n;
        },
        timeout);
  }

 private:
  std::mutex mu_;
  std::vector<json> items_;
};

class ActorConnStateTest : public EncodingTest {
 protected:
  client::ActorHandle Actor(const std::string& key, std::optional<Value> params = std::nullopt) {
    client::GetOrCreateOptions o;
    o.params = std::move(params);
    return client().GetOrCreate("connStateActor", {key}, o);
  }
};

TEST_P(ActorConnStateTest, StateHasIdUsernameRoleCounterCreatedAt) {
  auto conn = Actor(UniqueKey("cs-fields")).Connect();
  json s = AsJson(KEEL_OK(conn->Call("getConnectionState")));
  EXPECT_TRUE(s["id"].is_string() && !s["id"].get<std::string>().empty()) << s.dump();
  EXPECT_EQ(s["username"], "anonymous");
  EXPECT_EQ(s["role"], "user");
  EXPECT_EQ(s["counter"], 0);
  EXPECT_TRUE(s["createdAt"].is_number()) << s.dump();
  EXPECT_EQ(s["id"], conn->connection_id());
  conn->Dispose();
}

TEST_P(ActorConnStateTest, ParamsAppearInState) {
  auto conn = Actor(UniqueKey("cs-params"), Value::Object({{"username", "testuser"}, {"role", "admin"}})).Connect();
  json s = AsJson(KEEL_OK(conn->Call("getConnectionState")));
  EXPECT_EQ(s["username"], "testuser");
  EXPECT_EQ(s["role"], "admin");
  conn->Dispose();
}

TEST_P(ActorConnStateTest, ConnectionsKeepIndependentState) {
  const std::string key = UniqueKey("cs-independent");
  auto c1 = Actor(key, Value::Object({{"username", "user1"}})).Connect();
  auto c2 = Actor(key, Value::Object({{"username", "user2"}})).Connect();
  EXPECT_EQ(KEEL_OK(c1->Call<int64_t>("incrementConnCounter", 5)), 5);
  EXPECT_EQ(KEEL_OK(c2->Call<int64_t>("incrementConnCounter", 10)), 10);
  json s1 = AsJson(KEEL_OK(c1->Call("getConnectionState")));
  json s2 = AsJson(KEEL_OK(c2->Call("getConnectionState")));
  EXPECT_EQ(s1["counter"], 5);
  EXPECT_EQ(s2["counter"], 10);
  EXPECT_EQ(s1["username"], "user1");
  EXPECT_EQ(s2["username"], "user2");
  EXPECT_NE(s1["id"], s2["id"]);
  // The shared counter is one per actor.
  KEEL_OK(c1->Call<int64_t>("incrementSharedCounter", 1));
  EXPECT_EQ(KEEL_OK(c2->Call<int64_t>("incrementSharedCounter", 2)), 3);
  auto all = AsJson(KEEL_OK(c1->Call("getAllConnectionStates")));
  EXPECT_GE(all.size(), 2u) << all.dump();
  c1->Dispose();
  c2->Dispose();
}

TEST_P(ActorConnStateTest, ConnectionIdsIncludeBothConnections) {
  auto h = Actor(UniqueKey("cs-ids"));
  auto c1 = h.Connect();
  auto c2 = h.Connect();
  KEEL_STATUS_OK(c1->WaitReady());
  KEEL_STATUS_OK(c2->WaitReady());
  json ids = AsJson(KEEL_OK(c2->Call("getConnectionIds")));
  EXPECT_GE(ids.size(), 2u) << ids.dump();
  EXPECT_NE(std::find(ids.begin(), ids.end(), json(c1->connection_id())), ids.end()) << ids.dump();
  std::set<std::string> unique;
  for (const auto& id : ids) unique.insert(id.get<std::string>());
  EXPECT_EQ(unique.size(), ids.size()) << "connection ids are unique: " << ids.dump();
  c1->Dispose();
  c2->Dispose();
}

TEST_P(ActorConnStateTest, EventsFromOnConnectReachListeners) {
  Inbox direct;
  Inbox via_conns;
  auto conn = Actor(UniqueKey("cs-onconnect"), Value::Object({{"username", "eventuser"}}))
                  .Connect([&](client::ActorConn& c) {
                    c.On("connectedFromOnConnect", [&](const Value& a) { direct.Push(a); });
                    c.On("connectedFromOnConnectConns", [&](const Value& a) { via_conns.Push(a); });
                  });
  ASSERT_TRUE(direct.WaitSize(1));
  ASSERT_TRUE(via_conns.WaitSize(1)) << "the connection is in c.conns during onConnect";
  KEEL_STATUS_OK(conn->WaitReady());
  json d = direct.Items()[0][0];
  json v = via_conns.Items()[0][0];
  EXPECT_EQ(d["username"], "eventuser");
  EXPECT_EQ(d["id"], conn->connection_id());
  EXPECT_EQ(v, d);
  conn->Dispose();
}

TEST_P(ActorConnStateTest, DisconnectTracking) {
  const std::string key = UniqueKey("cs-disconnect");
  auto observer = Actor(key, Value::Object({{"noCount", true}}));  // stateless, not counted
  auto c1 = Actor(key).Connect();
  KEEL_STATUS_OK(c1->WaitReady());
  c1->Dispose();
  ASSERT_TRUE(WaitFor([&] { return observer.Call<int64_t>("getDisconnectionCount").value_or(-1) == 1; }, 5s));
  auto c2 = Actor(key).Connect();
  KEEL_STATUS_OK(c2->WaitReady());
  json ids = AsJson(KEEL_OK(observer.Call("getConnectionIds")));
  EXPECT_EQ(ids, json({c2->connection_id()}));
  c2->Dispose();
  EXPECT_TRUE(WaitFor([&] { return observer.Call<int64_t>("getDisconnectionCount").value_or(-1) == 2; }, 5s));
}

TEST_P(ActorConnStateTest, UpdateConnectionIsVisibleLater) {
  auto conn = Actor(UniqueKey("cs-update")).Connect();
  json before = AsJson(KEEL_OK(conn->Call("getConnectionState")));
  EXPECT_EQ(before["username"], "anonymous");
  KEEL_OK(conn->Call("updateConnection", Value::Object({{"username", "renamed"}, {"role", "moderator"}})));
  json after = AsJson(KEEL_OK(conn->Call("getConnectionState")));
  EXPECT_EQ(after["username"], "renamed");
  EXPECT_EQ(after["role"], "moderator");
  conn->Dispose();
}

TEST_P(ActorConnStateTest, ConnectionToConnectionMessage) {
  const std::string key = UniqueKey("cs-direct");
  Inbox inbox;
  auto c1 = Actor(key).Connect();
  auto c2 = Actor(key).Connect([&](client::ActorConn& c) {
    c.On("directMessage", [&](const Value& a) { inbox.Push(a); });
  });
  KEEL_STATUS_OK(c1->WaitReady());
  KEEL_STATUS_OK(c2->WaitReady());
  EXPECT_TRUE(KEEL_OK(c1->Call<bool>("sendToConnection", c2->connection_id(), "hello there")));
  ASSERT_TRUE(inbox.WaitSize(1));
  json m = inbox.Items()[0][0];
  EXPECT_EQ(m["from"], c1->connection_id());
  EXPECT_EQ(m["message"], "hello there");
  EXPECT_FALSE(KEEL_OK(c1->Call<bool>("sendToConnection", "no-such-connection", "x")));
  c1->Dispose();
  c2->Dispose();
}

KEEL_ACCEPTANCE_ENCODINGS(ActorConnState, ActorConnStateTest);

}  // namespace
}  // namespace keel::acceptance
