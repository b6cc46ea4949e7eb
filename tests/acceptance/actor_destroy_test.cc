// actors.md §8.13 actor-destroy: after destroy the actor is gone (`actor.not_found` by id and
// by key), the key is free again (getOrCreate / create give a fresh actor with fresh state
// and vars), and stale handles that cached the destroyed id re-resolve transparently for
// actions, queue sends, raw HTTP, raw WebSockets and connections.
//
// Rivet's `destroyObserver` actor (notified through `c.client()`) is the process-wide
// Observer here: `destroyActor`'s onDestroy notes its key under "destroyActor".
#include <variant>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorDestroyTest : public EncodingTest {
 protected:
  client::ActorHandle Actor(const std::string& key) { return client().GetOrCreate("destroyActor", {key}); }

  int64_t DestroyNotes(const std::string& key) {
    return client().GetOrCreate("observer", {"observer"}).Call<int64_t>("count", "destroyActor", key).value_or(-1);
  }

  // Waits until the observer saw the destroy and the id answers actor.not_found.
  void WaitDestroyed(const std::string& id, const std::string& key) {
    ASSERT_TRUE(WaitFor([&] { return DestroyNotes(key) >= 1; }, 10s)) << "onDestroy did not run for " << key;
    auto by_id = client().GetForId("destroyActor", id);
    client::ClientError last;
    ASSERT_TRUE(WaitFor(
        [&] {
          auto r = by_id.Call<int64_t>("getValue");
          if (r.has_value()) return false;
          last = r.error();
          return r.error().Is("actor", "not_found");
        },
        10s))
        << last.ToString();
  }

  // Sets a value, destroys through the action, waits; returns the old id.
  std::string SetAndDestroy(client::ActorHandle& h, const std::string& key, int64_t value = 42) {
    EXPECT_EQ(KEEL_OK(h.Call<int64_t>("setValue", value)), value);
    const std::string id = KEEL_OK(h.Resolve());
    KEEL_OK(h.Call("destroy"));
    WaitDestroyed(id, key);
    return id;
  }
};

TEST_P(ActorDestroyTest, DestroyWithoutConnection) {
  const std::string key = UniqueKey("destroy-plain");
  auto h = Actor(key);
  const std::string id = SetAndDestroy(h, key);
  KEEL_EXPECT_ERROR(client().GetForId("destroyActor", id).Call<int64_t>("getValue"), "actor", "not_found");
  KEEL_EXPECT_ERROR(client().Get("destroyActor", {key}).Resolve(), "actor", "not_found");
  EXPECT_EQ(KEEL_OK(Actor(key).Call<int64_t>("getValue")), 0);
}

TEST_P(ActorDestroyTest, RecreatedActorHasFreshVars) {
  const std::string key = UniqueKey("destroy-vars");
  auto h = Actor(key);
  KEEL_OK(h.Call("setEphemeral", "changed"));
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("getEphemeral")), "changed");
  SetAndDestroy(h, key);
  EXPECT_EQ(KEEL_OK(Actor(key).Call<std::string>("getEphemeral")), "fresh");
}

TEST_P(ActorDestroyTest, DestroyThroughAConnection) {
  const std::string key = UniqueKey("destroy-conn");
  auto conn = Actor(key).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("setValue", 7)), 7);
  const std::string id = conn->actor_id();
  ASSERT_FALSE(id.empty());
  KEEL_OK(conn->Call("destroy"));
  conn->Dispose();
  WaitDestroyed(id, key);
  KEEL_EXPECT_ERROR(client().GetForId("destroyActor", id).Call<int64_t>("getValue"), "actor", "not_found");
  KEEL_EXPECT_ERROR(client().Get("destroyActor", {key}).Resolve(), "actor", "not_found");
  EXPECT_EQ(KEEL_OK(Actor(key).Call<int64_t>("getValue")), 0);
}

TEST_P(ActorDestroyTest, RecreateWithGetOrCreateResolve) {
  const std::string key = UniqueKey("destroy-resolve");
  auto h = Actor(key);
  const std::string old_id = SetAndDestroy(h, key);
  auto fresh = Actor(key);
  const std::string new_id = KEEL_OK(fresh.Resolve());
  EXPECT_NE(new_id, old_id);
  EXPECT_EQ(KEEL_OK(fresh.Call<int64_t>("getValue")), 0);
}

TEST_P(ActorDestroyTest, CreateAfterDestroyReusesTheKey) {
  const std::string key = UniqueKey("destroy-create");
  auto h = Actor(key);
  SetAndDestroy(h, key);
  auto created = KEEL_OK(client().Create("destroyActor", {key}));
  EXPECT_EQ(KEEL_OK(created.Call<int64_t>("getValue")), 0);
}

TEST_P(ActorDestroyTest, StaleHandleActionReResolves) {
  const std::string key = UniqueKey("destroy-stale-action");
  auto h = Actor(key);
  SetAndDestroy(h, key);  // h still caches the destroyed id
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 0);
}

TEST_P(ActorDestroyTest, StaleHandleQueueSend) {
  const std::string key = UniqueKey("destroy-stale-queue");
  auto h = Actor(key);
  SetAndDestroy(h, key);
  KEEL_OK(h.Send("values", Value(11)));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveValue"))), json(11));
}

TEST_P(ActorDestroyTest, StaleHandleFetch) {
  const std::string key = UniqueKey("destroy-stale-fetch");
  auto h = Actor(key);
  SetAndDestroy(h, key);
  auto res = KEEL_OK(h.Fetch("state"));
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(ParseBody(res.body), json({{"key", key}, {"value", 0}}));
}

TEST_P(ActorDestroyTest, StaleHandleWebSocket) {
  const std::string key = UniqueKey("destroy-stale-ws");
  auto h = Actor(key);
  SetAndDestroy(h, key);
  auto ws = KEEL_OK(h.WebSocket());
  auto ev = ws->Receive(5s);
  ASSERT_TRUE(ev.has_value()) << ev.error().ToString();
  auto* m = std::get_if<net::BlockingWsClient::Message>(&*ev);
  ASSERT_NE(m, nullptr) << "webSocket() on a stale getOrCreate handle got a socket to the destroyed actor";
  EXPECT_EQ(ParseBody(m->data), json({{"type", "welcome"}, {"key", key}, {"value", 0}}));
}

TEST_P(ActorDestroyTest, StaleHandleConnect) {
  const std::string key = UniqueKey("destroy-stale-connect");
  auto h = Actor(key);
  SetAndDestroy(h, key);
  auto conn = h.Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("getValue")), 0);
  conn->Dispose();
}

TEST_P(ActorDestroyTest, StaleGetHandleAfterRecreation) {
  const std::string key = UniqueKey("destroy-stale-get");
  auto h = Actor(key);
  KEEL_OK(h.Call<int64_t>("setValue", 5));
  auto g = client().Get("destroyActor", {key});
  const std::string old_id = KEEL_OK(g.Resolve());
  KEEL_OK(h.Call("destroy"));
  WaitDestroyed(old_id, key);
  const std::string new_id = KEEL_OK(Actor(key).Resolve());  // another handle recreates it
  ASSERT_NE(new_id, old_id);
  EXPECT_EQ(KEEL_OK(g.Call<int64_t>("getValue")), 0);
  EXPECT_EQ(KEEL_OK(g.Resolve()), new_id);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorDestroy, ActorDestroyTest);

}  // namespace
}  // namespace keel::acceptance
