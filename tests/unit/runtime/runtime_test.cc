// The actor runtime core stepped against a scripted fake engine (tests/support/
// runtime_harness.h): lifecycle and hook order, the output gate, persistence, actions over
// HTTP and WebSocket, sleep, alarms, timeouts and failures. Deterministic: a ManualClock,
// no threads, no sockets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/actor.h"
#include "support/runtime_harness.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using testing::RuntimeHarness;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace latest = protocol::envoy::latest;

struct Counter {
  int64_t count = 0;
};

ActorDef<Counter> CounterDef(std::vector<std::string>* log = nullptr) {
  ActorDef<Counter> def("counter");
  def.event("newCount");
  def.action("increment", [](Ctx<Counter>& c, int64_t n) {
    c.state().count += n;
    c.broadcast("newCount", c.state().count);
    return c.state().count;
  });
  def.action("getCount", [](Ctx<Counter>& c) { return c.state().count; });
  def.action("fail", [](Ctx<Counter>&) -> int { throw UserError("nope", "custom_code"); });
  def.action("crash", [](Ctx<Counter>&) -> int { throw std::runtime_error("secret detail"); });
  if (log != nullptr) {
    def.on_create([log](Ctx<Counter>&) { log->push_back("onCreate"); });
    def.on_wake([log](Ctx<Counter>&) { log->push_back("onWake"); });
    def.on_before_actor_start([log](Ctx<Counter>&) { log->push_back("onBeforeActorStart"); });
    def.on_sleep([log](Ctx<Counter>&) { log->push_back("onSleep"); });
    def.on_destroy([log](Ctx<Counter>&) { log->push_back("onDestroy"); });
    def.on_migrate([log](Ctx<Counter>&, bool is_new) {
      log->push_back(is_new ? "onMigrate(new)" : "onMigrate(wake)");
    });
  }
  return def;
}

TEST(RuntimeCore, ActionOverHttpPersistsBeforeTheResponse) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  ASSERT_TRUE(h.Running("a1", 1));

  auto id = h.Action("a1", "increment", "[5]");
  EXPECT_EQ(h.Status(id), 200);
  EXPECT_EQ(h.Body(id), R"({"output":5})");
  ASSERT_TRUE(h.PersistedState("a1").has_value());
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 5}}));
  // The response left only after the put carrying count=5 was answered.
  const auto& last = h.tunnel_log.back();
  EXPECT_TRUE(last.message.message_kind.is<latest::ToRivetResponseStart>());
  EXPECT_GE(last.kv_puts_before, 1u);
}

TEST(RuntimeCore, OutputGateHoldsTheResponseUntilTheEngineCommits) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  h.hold_kv = true;
  auto id = h.Action("a1", "increment", "[2]");
  EXPECT_EQ(h.Status(id), 0) << "responded before the write was committed";
  ASSERT_EQ(h.held_kv(), 1u);
  // A second action on the same actor waits behind the first flush too.
  auto id2 = h.Action("a1", "increment", "[3]");
  EXPECT_EQ(h.Status(id2), 0);
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(h.Body(id), R"({"output":2})");
  EXPECT_EQ(h.Body(id2), R"({"output":5})");
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 5}}));
}

TEST(RuntimeCore, ReadOnlyActionsDoNotWrite) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  const size_t puts = h.kv_puts();
  auto id = h.Action("a1", "getCount", "[]");
  EXPECT_EQ(h.Body(id), R"({"output":0})");
  EXPECT_EQ(h.kv_puts(), puts);
}

TEST(RuntimeCore, HookOrderOnCreateAndOnWake) {
  std::vector<std::string> log;
  RuntimeHarness h;
  h.Boot({CounterDef(&log).type()});
  h.StartActor("a1", "counter");
  EXPECT_THAT(log, ElementsAre("onMigrate(new)", "onCreate", "onWake", "onBeforeActorStart"));
  h.Action("a1", "increment", "[7]");
  h.StopActor("a1", 1, latest::StopActorReason::kSleepIntent);
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kOk);
  EXPECT_EQ(log.back(), "onSleep");

  log.clear();
  h.StartActor("a1", "counter", 2);
  EXPECT_THAT(log, ElementsAre("onMigrate(wake)", "onWake", "onBeforeActorStart"));
  auto id = h.Action("a1", "getCount", "[]");
  EXPECT_EQ(h.Body(id), R"({"output":7})");
}

TEST(RuntimeCore, DestroyRunsOnDestroyAndClearsTheAlarm) {
  std::vector<std::string> log;
  ActorDef<Counter> def = CounterDef(&log);
  def.action("later", [](Ctx<Counter>& c) { c.schedule().after(60s, "increment", 1); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "later", "[]");
  auto alarms = h.EventsOf<latest::EventActorSetAlarm>("a1");
  ASSERT_EQ(alarms.size(), 1u);
  ASSERT_TRUE(alarms[0].alarm_ts.has_value());
  h.StopActor("a1", 1, latest::StopActorReason::kDestroy);
  EXPECT_EQ(log.back(), "onDestroy");
  alarms = h.EventsOf<latest::EventActorSetAlarm>("a1");
  ASSERT_EQ(alarms.size(), 2u);
  EXPECT_FALSE(alarms[1].alarm_ts.has_value());
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());
}

TEST(RuntimeCore, ErrorsAreStructuredAndInternalOnesSanitised) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  auto missing = h.Action("a1", "nope", "[]");
  EXPECT_EQ(h.Status(missing), 404);
  EXPECT_THAT(h.Body(missing), HasSubstr(R"("code":"action_not_found")"));
  auto bad_args = h.Action("a1", "increment", R"(["x"])");
  EXPECT_EQ(h.Status(bad_args), 400);
  EXPECT_THAT(h.Body(bad_args), HasSubstr("invalid_request"));
  auto user = h.Action("a1", "fail", "[]");
  EXPECT_THAT(h.Body(user), HasSubstr(R"("group":"user")"));
  EXPECT_THAT(h.Body(user), HasSubstr(R"("code":"custom_code")"));
  auto internal = h.Action("a1", "crash", "[]");
  EXPECT_EQ(h.Status(internal), 500);
  EXPECT_THAT(h.Body(internal), HasSubstr("internal_error"));
  EXPECT_THAT(h.Body(internal), ::testing::Not(HasSubstr("secret")));
  auto get = h.Http("a1", "GET", "/action/increment");
  EXPECT_EQ(h.Status(get), 405);
  auto unknown_route = h.Http("a1", "GET", "/nowhere");
  EXPECT_EQ(h.Status(unknown_route), 404);
  auto health = h.Http("a1", "GET", "/health");
  EXPECT_EQ(h.Body(health), "ok");
}

TEST(RuntimeCore, CborAndBareActions) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  for (auto enc : {wire::Encoding::kCbor, wire::Encoding::kBare}) {
    Bytes body = wire::Encode(wire::HttpActionRequest{Value::ArrayOf({4})}, enc);
    auto id = h.Http("a1", "POST", "/action/increment", std::string(body.begin(), body.end()),
                     {{"x-rivet-encoding", std::string(wire::EncodingName(enc))}});
    ASSERT_EQ(h.Status(id), 200);
    auto& resp = *h.Reply(id).response->body;
    auto decoded = wire::DecodeHttpActionResponse(resp, enc);
    ASSERT_TRUE(decoded.ok());
    EXPECT_TRUE(decoded->output.is_integer());
  }
  auto id = h.Action("a1", "getCount", "[]");
  EXPECT_EQ(h.Body(id), R"({"output":8})");
}

TEST(RuntimeCore, IdleActorAsksToSleepAndActivityResetsTheTimer) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Advance(900ms);
  h.Action("a1", "increment", "[1]");
  h.Advance(900ms);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty()) << "activity did not reset the timer";
  h.Advance(200ms);
  auto intents = h.EventsOf<latest::EventActorIntent>("a1");
  ASSERT_EQ(intents.size(), 1u);
  EXPECT_TRUE(intents[0].intent.is<latest::ActorIntentSleep>());
}

TEST(RuntimeCore, OpenConnectionsKeepTheActorAwake) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  h.Advance(5000ms);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  h.WsClose(ws);
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeCore, NoSleepNeverSleeps) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  def.options().no_sleep = true;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Advance(60s);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
}

TEST(RuntimeCore, WebSocketConnectionActionsAndEvents) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  auto init = wire::DecodeToClient(h.Reply(ws).ws_messages[0].data, wire::Encoding::kJson);
  ASSERT_TRUE(init.ok());
  ASSERT_TRUE(std::holds_alternative<wire::Init>(*init));
  EXPECT_EQ(std::get<wire::Init>(*init).actor_id, "a1");

  h.WsSend(ws, wire::Encode(wire::ToServer{wire::SubscriptionRequest{"newCount", true}}, wire::Encoding::kJson),
           false);
  h.WsSend(ws, wire::Encode(wire::ToServer{wire::ActionRequest{1, "increment", Value::ArrayOf({3})}},
                            wire::Encoding::kJson),
           false);
  auto& msgs = h.Reply(ws).ws_messages;
  ASSERT_EQ(msgs.size(), 3u);
  auto ev = wire::DecodeToClient(msgs[1].data, wire::Encoding::kJson);
  auto resp = wire::DecodeToClient(msgs[2].data, wire::Encoding::kJson);
  ASSERT_TRUE(ev.ok() && resp.ok());
  ASSERT_TRUE(std::holds_alternative<wire::Event>(*ev));
  EXPECT_EQ(std::get<wire::Event>(*ev).name, "newCount");
  EXPECT_EQ(std::get<wire::Event>(*ev).args, Value::ArrayOf({3}));
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(*resp));
  EXPECT_EQ(std::get<wire::ActionResponse>(*resp).id, 1u);
  EXPECT_EQ(std::get<wire::ActionResponse>(*resp).output, Value(3));

  // An error answers the action and keeps the connection.
  h.WsSend(ws, wire::Encode(wire::ToServer{wire::ActionRequest{2, "fail", Value::Array{}}}, wire::Encoding::kJson),
           false);
  auto err = wire::DecodeToClient(msgs.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(err.ok());
  ASSERT_TRUE(std::holds_alternative<wire::ErrorMsg>(*err));
  EXPECT_EQ(std::get<wire::ErrorMsg>(*err).action_id, std::optional<uint64_t>(2));
  EXPECT_FALSE(h.Reply(ws).ws_close.has_value());

  // A malformed frame closes it with actor.invalid_request.
  h.WsSend(ws, Bytes{'{', 'x'}, false);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("actor.invalid_request"));
}

TEST(RuntimeCore, UnsupportedEncodingIsRefused) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.xml");
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1003));
  EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("actor.unsupported_websocket_encoding"));
}

TEST(RuntimeCore, RejectedConnectionGetsErrorThenClose) {
  ActorDef<Counter> def = CounterDef();
  def.on_before_connect([](Ctx<Counter>&, const Value& params) {
    const Value* token = params.is_map() ? params.Find("token") : nullptr;
    if (token == nullptr || !token->is_text() || token->as_text() != "secret") {
      throw ActorError("auth", "forbidden", "bad token");
    }
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json, rivet_conn_params.%7B%22token%22%3A%22x%22%7D");
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("auth.forbidden"));
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  auto ok = h.OpenWs("a1", "/connect",
                     "rivet, rivet_encoding.json, rivet_conn_params.%7B%22token%22%3A%22secret%22%7D");
  EXPECT_FALSE(h.Reply(ok).ws_close.has_value());
  // Over HTTP the same rejection is a 403.
  auto http = h.Http("a1", "POST", "/action/getCount", R"({"args":[]})", {{"x-rivet-conn-params", R"({"token":"x"})"}});
  EXPECT_EQ(h.Status(http), 403);
}

TEST(RuntimeCore, ScheduledActionFiresAndAlarmIsAcknowledgedBeforeTheResponse) {
  ActorDef<Counter> def = CounterDef();
  def.action("later", [](Ctx<Counter>& c, int64_t ms) {
    c.schedule().after(std::chrono::milliseconds(ms), "increment", 10);
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.ack_alarms = false;
  auto id = h.Action("a1", "later", "[5000]");
  EXPECT_EQ(h.Status(id), 0) << "answered before the engine stored the alarm";
  auto alarms = h.EventsOf<latest::EventActorSetAlarm>("a1");
  ASSERT_EQ(alarms.size(), 1u);
  EXPECT_EQ(alarms[0].alarm_ts, std::optional<int64_t>(h.clock().SystemNowMs() + 5000));
  // Acknowledge it now.
  latest::ToEnvoyAckEvents ack;
  for (const auto& e : h.events()) ack.last_event_checkpoints.push_back(e.checkpoint);
  h.ack_alarms = true;
  h.Deliver(latest::ToEnvoy{ack});
  h.Pump();
  EXPECT_EQ(h.Status(id), 200);

  h.Advance(4999ms);
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 0);
  h.Advance(1ms);
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 10);
  // The schedule is empty again: the alarm is cleared.
  alarms = h.EventsOf<latest::EventActorSetAlarm>("a1");
  EXPECT_FALSE(alarms.back().alarm_ts.has_value());
}

TEST(RuntimeCore, OverdueEventsRunAtWake) {
  ActorDef<Counter> def = CounterDef();
  def.action("later", [](Ctx<Counter>& c) { c.schedule().after(1000ms, "increment", 1); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "later", "[]");
  h.StopActor("a1", 1);
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  // The sleeping actor misses its alarm; the next start drains it.
  h.Advance(5000ms);
  h.StartActor("a1", "counter", 2);
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 1);
}

TEST(RuntimeCore, HookTimeoutFailsTheStart) {
  ActorDef<Counter> def("counter");
  // The hook hangs until the end of the test (then its frame completes and is freed).
  Completion<int> hang;
  def.on_wake([hang](Ctx<Counter>&) -> Task<void> { co_await hang; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  h.Advance(29999ms);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  h.Advance(1ms);
  auto stopped = h.Stopped("a1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("callback_timed_out"));
  EXPECT_FALSE(h.Running("a1", 1));
  hang.Resolve(0);
  h.Pump();
}

TEST(RuntimeCore, FailingHookFailsTheStart) {
  ActorDef<Counter> def("counter");
  def.on_create([](Ctx<Counter>&) { throw std::runtime_error("boom"); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto stopped = h.Stopped("a1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("boom"));
  EXPECT_EQ(h.runtime().instance_count(), 0u);
}

TEST(RuntimeCore, UnknownActorNameFailsTheStart) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "nope");
  auto stopped = h.Stopped("a1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("not_registered"));
}

TEST(RuntimeCore, StopDuringStartRunsAfterStartup) {
  std::vector<std::string> log;
  RuntimeHarness h;
  h.Boot({CounterDef(&log).type()});
  h.hold_kv = true;
  h.StartActor("a1", "counter");
  h.StopActor("a1", 1);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_TRUE(h.Running("a1", 1));
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(log.back(), "onSleep");
}

TEST(RuntimeCore, DuplicateStartReplayIsIgnored) {
  std::vector<std::string> log;
  RuntimeHarness h;
  h.Boot({CounterDef(&log).type()});
  h.StartActor("a1", "counter");
  h.ReplayLastCommands();
  EXPECT_EQ(std::count(log.begin(), log.end(), "onCreate"), 1);
  EXPECT_EQ(h.runtime().instance_count(), 1u);
}

TEST(RuntimeCore, ConnectionLostDuringAnActionFailsItAndTheNextOneRewritesState) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  h.hold_kv = true;
  auto id = h.Action("a1", "increment", "[4]");
  ASSERT_EQ(h.held_kv(), 1u);
  // The socket dies with the put unanswered: the engine may or may not have it.
  h.Disconnect();
  h.DropHeldKv();
  h.hold_kv = false;
  h.Advance(1500ms);  // the reconnect backoff (1–1.25 s)
  h.Connect();
  EXPECT_EQ(h.Status(id), 0) << "answered without a commit";
  // A sent KV request is never resent; it times out (envoy-protocol.md §3.10) and the
  // action fails instead of claiming durability.
  h.Advance(46s);
  EXPECT_EQ(h.Status(id), 500);
  EXPECT_THAT(h.Body(id), HasSubstr("storage_failed"));
  // The next action writes the whole record again.
  auto next = h.Action("a1", "increment", "[1]");
  EXPECT_EQ(h.Body(next), R"({"output":5})");
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 5}}));
}

TEST(RuntimeCore, KvApiSeesItsOwnWritesAndPersists) {
  ActorDef<NoState> def("kv");
  def.action("put", [](Ctx<NoState>& c, std::string k, std::string v) { c.kv().put(k, v); });
  def.action("get", [](Ctx<NoState>& c, std::string k) -> Task<std::optional<std::string>> {
    co_return co_await c.kv().get(k);
  });
  def.action("putGet", [](Ctx<NoState>& c) -> Task<std::optional<std::string>> {
    c.kv().put("x", "1");
    co_return co_await c.kv().get("x");
  });
  def.action("list", [](Ctx<NoState>& c, std::string prefix) -> Task<std::vector<std::string>> {
    auto rows = co_await c.kv().list(prefix);
    std::vector<std::string> keys;
    for (auto& [k, v] : rows) keys.push_back(k + "=" + v);
    co_return keys;
  });
  def.action("del", [](Ctx<NoState>& c, std::string k) { c.kv().del(k); });
  def.action("state", [](Ctx<NoState>& c) { c.state(); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("k1", "kv");
  EXPECT_EQ(h.Body(h.Action("k1", "putGet", "[]")), R"({"output":"1"})");
  h.Action("k1", "put", R"(["a/1","x"])");
  h.Action("k1", "put", R"(["a/2","y"])");
  h.Action("k1", "put", R"(["b/1","z"])");
  EXPECT_EQ(h.kv("k1").count(Bytes{4, 'a', '/', '1'}), 1u) << "user keys live under prefix 4";
  EXPECT_EQ(h.Body(h.Action("k1", "list", R"(["a/"])")), R"({"output":["a/1=x","a/2=y"]})");
  h.Action("k1", "del", R"(["a/1"])");
  EXPECT_EQ(h.Body(h.Action("k1", "get", R"(["a/1"])")), R"({"output":null})");
  EXPECT_EQ(h.Body(h.Action("k1", "get", R"(["b/1"])")), R"({"output":"z"})");
  auto st = h.Action("k1", "state", "[]");
  EXPECT_THAT(h.Body(st), HasSubstr("state_not_enabled"));
}

TEST(RuntimeCore, ActionTimeout) {
  ActorDef<Counter> def = CounterDef();
  def.options().action_timeout = 100ms;
  Completion<int> hang;
  def.action("hang", [hang](Ctx<Counter>&) -> Task<int> { co_return co_await hang; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Action("a1", "hang", "[]");
  h.Advance(100ms);
  EXPECT_EQ(h.Status(id), 408);
  EXPECT_THAT(h.Body(id), HasSubstr("action_timed_out"));
  // The abandoned action finishes later; its result goes nowhere.
  hang.Resolve(1);
  h.Pump();
  EXPECT_EQ(h.Status(id), 408);
}

TEST(RuntimeCore, OnStateChangeSeesNewStateAndCannotMutate) {
  ActorDef<Counter> def = CounterDef();
  auto seen = std::make_shared<std::vector<int64_t>>();
  auto refused = std::make_shared<int>(0);
  def.on_state_change([seen, refused](Ctx<Counter>& c, const Counter& s) {
    seen->push_back(s.count);
    try {
      c.state().count = 99;
    } catch (const ActorError& e) {
      if (e.code() == "state_mutation_reentrant") ++*refused;
    }
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "increment", "[1]");
  h.Action("a1", "getCount", "[]");
  h.Action("a1", "increment", "[2]");
  EXPECT_EQ(*seen, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(*refused, 2);
  EXPECT_EQ(h.Body(h.Action("a1", "getCount", "[]")), R"({"output":3})");
}

}  // namespace
}  // namespace keel
