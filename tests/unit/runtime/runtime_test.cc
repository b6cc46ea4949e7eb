// The actor runtime core stepped against a scripted fake engine (tests/support/
// runtime_harness.h): lifecycle and hook order, the output gate, persistence, actions over
// HTTP and WebSocket, sleep, alarms, timeouts and failures. Deterministic: a ManualClock,
// no threads, no sockets.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "base/log.h"
#include "protocol/envoy/versioned.h"
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

// Boots `type`, starts its actor a1 (name "counter") and opens a1's /connect socket (JSON).
latest::MessageId StartAndConnect(RuntimeHarness& h, std::shared_ptr<const runtime::ActorType> type) {
  h.Boot({std::move(type)});
  h.StartActor("a1", "counter");
  return h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
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

// Boots the counter on a socket whose engine confirmed held outputs, and starts a1.
void BootHeld(RuntimeHarness& h) {
  h.engine_holds_outputs = true;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
}

// Held outputs (docs/runtime.md): on a socket where the engine confirmed them, an answer
// leaves right after the writes it depends on, without waiting for their acknowledgement —
// the engine keeps it from the client until they are durable.
TEST(RuntimeHeldOutputs, TheAnswerFollowsItsWriteWithoutWaitingForTheAck) {
  RuntimeHarness h;
  BootHeld(h);
  ASSERT_TRUE(h.client().engine_holds_outputs());
  h.hold_kv = true;
  const size_t before = h.tunnel_log.size();
  const size_t requests = h.kv_requests();
  auto id = h.Action("a1", "increment", "[2]");
  ASSERT_EQ(h.held_kv(), 1u) << "the write is still unanswered";
  EXPECT_EQ(h.Body(id), R"({"output":2})");
  ASSERT_EQ(h.tunnel_log.size(), before + 1);
  const auto& sent = h.tunnel_log.back();
  EXPECT_TRUE(sent.message.message_kind.is<latest::ToRivetResponseStart>());
  // The put carrying count=2 went out before the answer, on the same socket.
  EXPECT_EQ(sent.kv_requests_before, requests + 1);
  ASSERT_TRUE(h.held_kv_requests().front().data.is<latest::KvPutRequest>());
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 2}}));
}

// Writes do not wait for the answer of the one before them either: each action's put and
// answer leave at once, up to 8 flushes in flight; the next waits for the oldest answer.
TEST(RuntimeHeldOutputs, WritesInFlightDoNotHoldBackTheNextAction) {
  RuntimeHarness h;
  BootHeld(h);
  h.hold_kv = true;
  std::vector<latest::MessageId> ids;
  for (int i = 1; i <= 9; ++i) ids.push_back(h.Action("a1", "increment", "[1]"));
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(h.Body(ids[static_cast<size_t>(i)]), "{\"output\":" + std::to_string(i + 1) + "}");
  }
  EXPECT_EQ(h.held_kv(), 8u);
  EXPECT_EQ(h.Status(ids[8]), 0) << "a ninth flush went out with eight in flight";
  h.ReleaseOldestKv(1);
  EXPECT_EQ(h.Body(ids[8]), R"({"output":9})");
  EXPECT_EQ(h.held_kv(), 8u);
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 9}}));
}

TEST(RuntimeHeldOutputs, WithoutTheEnginesConfirmationTheAnswerWaitsForTheAck) {
  RuntimeHarness h;  // engine_holds_outputs = false: the engine did not confirm
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  EXPECT_FALSE(h.client().engine_holds_outputs());
  h.hold_kv = true;
  auto id = h.Action("a1", "increment", "[2]");
  EXPECT_EQ(h.Status(id), 0);
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(h.Body(id), R"({"output":2})");
}

TEST(RuntimeHeldOutputs, WaitingForDurabilityStillWaitsForTheAck) {
  // The stop sequence waits for its writes to be durable before it reports Stopped: a local
  // wait, not a wire output, so held outputs do not shorten it.
  RuntimeHarness h;
  BootHeld(h);
  h.hold_kv = true;
  h.Action("a1", "increment", "[3]");
  h.StopActor("a1", 1, latest::StopActorReason::kSleepIntent);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value()) << "reported stopped before its write was durable";
  h.hold_kv = false;
  h.ReleaseKv();
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kOk);
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 3}}));
}

TEST(RuntimeHeldOutputs, AFailedWriteEndsTheGenerationWithoutWritingMore) {
  RuntimeHarness h;
  BootHeld(h);
  h.Action("a1", "increment", "[1]");  // durable: count = 1
  h.hold_kv = true;
  auto id = h.Action("a1", "increment", "[5]");
  EXPECT_EQ(h.Body(id), R"({"output":6})") << "sent; the engine holds it";
  h.hold_kv = false;
  const size_t puts = h.kv_puts();
  h.FailHeldKv("storage.io: sync failed");
  // The engine withheld the answer (and every later one of this generation): the instance
  // ends now and reports it, so the actor restarts from durable state.
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kError);
  EXPECT_THAT(h.Stopped("a1", 1)->message.value_or(""), HasSubstr("actor.storage_failed"));
  EXPECT_EQ(h.kv_puts(), puts) << "an ended generation writes nothing more";
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 1}}));
  // The next generation starts from what is durable.
  h.StartActor("a1", "counter", 2);
  ASSERT_TRUE(h.Running("a1", 2));
  EXPECT_EQ(h.Body(h.Action("a1", "getCount", "[]")), R"({"output":1})");
}

TEST(RuntimeHeldOutputs, ASocketLostWithAWriteInFlightEndsTheGeneration) {
  RuntimeHarness h;
  BootHeld(h);
  h.hold_kv = true;
  auto id = h.Action("a1", "increment", "[4]");
  EXPECT_EQ(h.Body(id), R"({"output":4})");
  // The write's fate is unknown (envoy.kv_indeterminate) and the held answer died with the
  // socket: the generation ends, and says so on the next socket.
  h.DropHeldKv();
  h.Disconnect();
  h.hold_kv = false;
  h.Advance(std::chrono::seconds(2));
  h.Connect();
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kError);
}

// Starts a1 with every KV request held, answers the startup's read (the harness preloads
// nothing) and leaves its first write held.
void StartWithTheWriteHeld(RuntimeHarness& h) {
  h.hold_kv = true;
  h.StartActor("a1", "counter");
  ASSERT_EQ(h.held_kv(), 1u);
  ASSERT_TRUE(h.held_kv_requests().front().data.is<latest::KvGetRequest>());
  h.ReleaseOldestKv(1);
  ASSERT_EQ(h.held_kv(), 1u) << "the startup wrote nothing";
  ASSERT_TRUE(h.held_kv_requests().front().data.is<latest::KvPutRequest>());
}

// A new actor's startup writes its record (hasInitialized) and, on a socket whose engine
// holds outputs, reports Running and answers without waiting for that write's answer: the
// engine keeps the answers until it is durable.
TEST(RuntimeHeldOutputs, ANewActorRunsBeforeItsStartupWriteIsAnswered) {
  RuntimeHarness h;
  h.engine_holds_outputs = true;
  h.Boot({CounterDef().type()});
  ASSERT_NO_FATAL_FAILURE(StartWithTheWriteHeld(h));
  ASSERT_TRUE(h.Running("a1", 1)) << "waited for the answer of the startup's write";
  // The first action's write follows the startup's at once, and its answer follows both.
  auto id = h.Action("a1", "increment", "[2]");
  EXPECT_EQ(h.Body(id), R"({"output":2})") << "sent behind its write; the engine holds it";
  EXPECT_EQ(h.held_kv(), 2u);
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 2}}));
}

TEST(RuntimeHeldOutputs, WithoutHeldOutputsTheStartWaitsForItsWrite) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  ASSERT_NO_FATAL_FAILURE(StartWithTheWriteHeld(h));
  EXPECT_FALSE(h.Running("a1", 1)) << "running before the startup's write was durable";
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_TRUE(h.Running("a1", 1));
}

// The startup's write fails after the instance reported Running (and answered):
// the failure rule ends the generation, and the next one starts from what is durable.
TEST(RuntimeHeldOutputs, AStartupWriteThatFailsAfterRunningEndsTheGeneration) {
  RuntimeHarness h;
  h.engine_holds_outputs = true;
  h.Boot({CounterDef().type()});
  ASSERT_NO_FATAL_FAILURE(StartWithTheWriteHeld(h));
  ASSERT_TRUE(h.Running("a1", 1));
  EXPECT_EQ(h.Body(h.Action("a1", "increment", "[2]")), R"({"output":2})")
      << "sent; the engine holds it";
  h.hold_kv = false;
  h.FailHeldKv("storage.io: sync failed");
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kError);
  EXPECT_THAT(h.Stopped("a1", 1)->message.value_or(""), HasSubstr("actor.storage_failed"));
  EXPECT_FALSE(h.PersistedState("a1").has_value()) << "nothing of generation 1 is durable";
  h.StartActor("a1", "counter", 2);
  ASSERT_TRUE(h.Running("a1", 2));
  EXPECT_EQ(h.Body(h.Action("a1", "getCount", "[]")), R"({"output":0})");
}

// It fails while the startup still runs (a later hook waits): the start fails, and the
// instance never reports Running.
TEST(RuntimeHeldOutputs, AStartupWriteThatFailsWhileTheStartRunsFailsTheStart) {
  ActorDef<Counter> def("counter");
  Completion<int> wake;
  def.on_wake([wake](Ctx<Counter>&) -> Task<void> { co_await wake; });
  RuntimeHarness h;
  h.engine_holds_outputs = true;
  h.Boot({def.type()});
  ASSERT_NO_FATAL_FAILURE(StartWithTheWriteHeld(h));  // the record, before onWake
  h.hold_kv = false;
  h.FailHeldKv("storage.io: sync failed");
  EXPECT_FALSE(h.Stopped("a1", 1).has_value()) << "onWake still runs";
  wake.Resolve(0);
  h.Pump();
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kError);
  EXPECT_THAT(h.Stopped("a1", 1)->message.value_or(""), HasSubstr("storage_failed"));
  EXPECT_FALSE(h.Running("a1", 1));
}

TEST(RuntimeHeldOutputs, OversizedUserKvIsRefusedAtThePutNotAtTheFlush) {
  // The engine would reject the whole flush (and, with held outputs, end the generation);
  // the runtime checks the engine's per-key limits when the write is staged instead.
  ActorDef<NoState> def("kv");
  def.action("put", [](Ctx<NoState>& c, std::string k, int64_t size) {
    c.kv().put(k, std::string(static_cast<size_t>(size), 'v'));
  });
  RuntimeHarness h;
  h.engine_holds_outputs = true;
  h.Boot({def.type()});
  h.StartActor("k1", "kv");
  auto big = h.Action("k1", "put", R"(["a", 131073])");
  EXPECT_THAT(h.Body(big), HasSubstr("value_too_large"));
  auto long_key = h.Action("k1", "put", "[\"" + std::string(2046, 'k') + "\", 1]");
  EXPECT_THAT(h.Body(long_key), HasSubstr("key_too_large"));
  auto ok = h.Action("k1", "put", R"(["a", 131072])");
  EXPECT_EQ(h.Status(ok), 200) << h.Body(ok);
  EXPECT_TRUE(h.Running("k1", 1)) << "a refused put does not end the generation";
  EXPECT_EQ(h.kv("k1").count(Bytes{4, 'a'}), 1u);
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

// An event in the far future (any int64 epoch ms, or a delay past the end of time) is
// scheduled and stored like any other: its timer waits in bounded steps instead of
// overflowing the clock, and it does not fire early.
TEST(RuntimeCore, AnEventInTheFarFutureIsKeptAndDoesNotFire) {
  ActorDef<Counter> def = CounterDef();
  def.options().no_sleep = true;
  def.action("never", [](Ctx<Counter>& c) {
    c.schedule().at(INT64_MAX, "increment", 1);
    c.schedule().after(std::chrono::milliseconds::max(), "increment", 1);
    c.schedule().at(int64_t{18000000000000000}, "increment", 1);  // the year ~572,000
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Action("a1", "never", "[]");
  EXPECT_EQ(h.Status(id), 200) << h.Body(id);
  auto alarms = h.EventsOf<latest::EventActorSetAlarm>("a1");
  ASSERT_FALSE(alarms.empty());
  ASSERT_TRUE(alarms.back().alarm_ts.has_value());
  EXPECT_EQ(*alarms.back().alarm_ts, int64_t{18000000000000000});
  h.Advance(std::chrono::hours(24 * 3));
  auto count = h.Action("a1", "getCount", "[]");
  EXPECT_EQ(h.Body(count), R"({"output":0})");
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

// BENCHMARKS W4: an awake idle actor waits on the runtime's one shared sleep timer, and an
// actor that went to sleep leaves nothing behind in the runtime or the envoy client but its
// command dedup entry (envoy-protocol.md §4.4), which still drops a replayed start — until
// the envoy acknowledged the slept generations' commands, a second later; then nothing.
TEST(RuntimeMemory, SleepingActorsLeaveNoPerActorEntries) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  h.Boot({def.type()});
  // Engine-style ids (inline in the dedup table) and ids too long to inline.
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back(i % 4 == 3 ? "an-actor-id-longer-than-the-inline-dedup-key-" + std::to_string(i)
                             : "actor" + std::to_string(1000000 + i) + "xxxxxxxxxxxxxxxxxx");
  }
  for (const auto& id : ids) {
    h.StartActor(id, "counter");
    ASSERT_TRUE(h.Running(id, 1)) << id;
    auto r = h.Action(id, "increment", "[1]");
    ASSERT_EQ(h.Status(r), 200);
  }
  EXPECT_EQ(h.runtime().instance_count(), ids.size());
  EXPECT_EQ(h.runtime().sleep_deadline_count(), ids.size());
  EXPECT_EQ(h.client().actor_entries(), ids.size());
  EXPECT_EQ(h.client().route_entries(), 0u) << "finished requests keep no route";
  EXPECT_EQ(h.client().dedup_entries(), 0u) << "a hosted actor's dedup entry lives in its entry";

  // Every idle deadline passes on the one timer: each actor asks to sleep once.
  h.Advance(1000ms);
  for (const auto& id : ids) ASSERT_EQ(h.EventsOf<latest::EventActorIntent>(id).size(), 1u) << id;
  EXPECT_EQ(h.runtime().sleep_deadline_count(), 0u);
  std::map<std::string, int64_t> stop_index;
  for (const auto& id : ids) {
    stop_index[id] = h.StopActor(id, 1, latest::StopActorReason::kSleepIntent);
    ASSERT_TRUE(h.Stopped(id, 1).has_value()) << id;
  }
  h.Advance(Duration::zero());  // instances are freed on a zero-delay timer
  EXPECT_EQ(h.runtime().instance_count(), 0u);
  EXPECT_EQ(h.runtime().retired_count(), 0u);
  EXPECT_EQ(h.runtime().freed_instances(), ids.size());
  EXPECT_EQ(h.runtime().sleep_deadline_count(), 0u);
  EXPECT_EQ(h.client().actor_entries(), 0u);
  EXPECT_EQ(h.client().hosted_actors(), 0u);
  EXPECT_EQ(h.client().route_entries(), 0u);
  EXPECT_EQ(h.client().dedup_entries(), ids.size());

  // A replayed start of a slept generation is still a replay: nothing starts.
  const uint64_t duplicates = h.client().duplicate_commands();
  for (const auto& id : ids) {
    latest::CommandStartActor start;
    start.config.name = "counter";
    start.config.key = "/";
    latest::CommandWrapper w;
    w.checkpoint = latest::ActorCheckpoint{id, 1, 1};
    w.inner = latest::Command{std::move(start)};
    h.Deliver(latest::ToEnvoy{latest::ToEnvoyCommands{{w}}});
  }
  h.Pump();
  EXPECT_EQ(h.client().duplicate_commands(), duplicates + ids.size());
  EXPECT_EQ(h.runtime().instance_count(), 0u);

  // The next generation starts and finds its state.
  h.StartActor(ids[0], "counter", 2);
  ASSERT_TRUE(h.Running(ids[0], 2));
  EXPECT_EQ(h.Body(h.Action(ids[0], "getCount", "[]")), R"({"output":1})");
  EXPECT_EQ(h.client().dedup_entries(), ids.size());

  // A second after they slept, the slept generations' commands are acknowledged to the
  // engine (one message, each with its last command index) and their entries are gone.
  h.Advance(1000ms);
  std::map<std::string, int64_t> acked;
  for (const auto& ack : h.command_acks) {
    for (const auto& cp : ack.last_command_checkpoints) {
      EXPECT_EQ(cp.generation, 1u) << cp.actor_id;
      acked[cp.actor_id] = cp.index;
    }
  }
  EXPECT_EQ(acked.size(), ids.size());
  for (const auto& id : ids) EXPECT_EQ(acked[id], stop_index[id]) << id;
  EXPECT_EQ(h.client().dedup_entries(), 0u);
  EXPECT_EQ(h.client().released_dedup_entries(), ids.size());
  EXPECT_EQ(h.client().actor_entries(), 1u) << "the awake generation 2 keeps its entry";
}

TEST(RuntimeCore, OpenConnectionsKeepTheActorAwake) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
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
  auto ws = StartAndConnect(h, CounterDef().type());
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

// The value of header `name` in `headers` ("" when absent).
std::string HeaderOf(const std::vector<std::pair<std::string, std::string>>& headers,
                     std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

// Boots the counter, starts a1 with its state read held (so it is still starting) and
// sends it increment(5); the request's id.
latest::MessageId StartHeldThenRequest(RuntimeHarness& h) {
  h.Boot({CounterDef().type()});
  h.hold_kv = true;
  h.StartActor("a1", "counter");
  return h.Action("a1", "increment", "[5]");
}

// Early requests (docs/engine.md): an engine may send an HTTP request right behind the
// start command. The instance keeps it while it starts and handles it once it runs — after
// its Running event — instead of refusing it.
TEST(RuntimeEarlyRequests, ARequestThatArrivesWhileTheActorStartsIsHandledOnceItRuns) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.hold_kv = true;  // the start waits for its state read
  h.StartActor("a1", "counter");
  auto first = h.Action("a1", "increment", "[5]");
  auto second = h.Action("a1", "increment", "[2]");
  EXPECT_FALSE(h.Reply(first).response.has_value()) << "answered before the actor ran";
  EXPECT_FALSE(h.Running("a1", 1));
  h.hold_kv = false;
  h.ReleaseKv();
  ASSERT_TRUE(h.Running("a1", 1));
  // Both were handled, in arrival order.
  EXPECT_EQ(h.Status(first), 200);
  EXPECT_EQ(h.Body(first), R"({"output":5})");
  EXPECT_EQ(h.Body(second), R"({"output":7})");
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 7}}));
  // Keeping them cost the running instance nothing (BENCHMARKS W4).
  const runtime::Instance* inst = h.runtime().Find("a1");
  ASSERT_NE(inst, nullptr);
  EXPECT_FALSE(inst->has_early_requests());
  EXPECT_FALSE(inst->has_cold_parts());
}

// The start fails: the requests kept meanwhile were not handled and are refused with the
// not-started mark (the engine sends them to the next instance), before the Stopped event.
TEST(RuntimeEarlyRequests, AStartThatFailsRefusesTheKeptRequestsAsNotStarted) {
  RuntimeHarness h;
  auto id = StartHeldThenRequest(h);
  const size_t events_before = h.events().size();
  h.hold_kv = false;
  h.FailHeldKv("storage.io: the disk is gone");
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_FALSE(h.Running("a1", 1));
  ASSERT_TRUE(h.Reply(id).response.has_value());
  const auto& response = *h.Reply(id).response;
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(HeaderOf(response.headers, protocol::envoy::kNotStartedHeader), "1");
  EXPECT_THAT(h.Body(id), HasSubstr("not_started"));
  // The refusal went out before the Stopped event.
  const auto& sent = h.tunnel_log.back();
  EXPECT_TRUE(sent.message.message_kind.is<latest::ToRivetResponseStart>());
  EXPECT_EQ(sent.events_before, events_before);
}

// A stop that came while the actor started ends it right after startup: the kept requests
// are refused as not started, and none of them ran.
TEST(RuntimeEarlyRequests, AStopDuringStartupRefusesTheKeptRequestsUnhandled) {
  RuntimeHarness h;
  auto id = StartHeldThenRequest(h);
  h.StopActor("a1", 1);
  h.hold_kv = false;
  h.ReleaseKv();
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Status(id), 503);
  EXPECT_EQ(HeaderOf(h.Reply(id).response->headers, protocol::envoy::kNotStartedHeader), "1");
  auto state = h.PersistedState("a1");
  EXPECT_TRUE(!state.has_value() || *state == Value::Object({{"count", 0}}))
      << "the refused request ran";
}

// A request for an actor this runtime does not run (refused by the envoy client itself, as
// the Rust envoy does) carries the not-started mark too: it was not handled, so an engine
// that sent it early may send it again.
TEST(RuntimeEarlyRequests, ARequestForAnActorNotRunningHereIsMarkedNotStarted) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  auto id = h.Action("nobody", "increment", "[1]");
  EXPECT_EQ(h.Status(id), 503);
  EXPECT_EQ(HeaderOf(h.Reply(id).response->headers, protocol::envoy::kNotStartedHeader), "1");
  EXPECT_EQ(h.Body(id), "Actor not found");
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
  // The socket dies with the put unanswered: the engine may or may not have it. The
  // envoy client fails the sent request at once (envoy.kv_indeterminate) instead of
  // waiting for the 30 s sweep; the action's answer fails instead of claiming durability
  // (it cannot travel without the socket: the gateway answers the caller).
  h.Disconnect();
  h.DropHeldKv();
  h.hold_kv = false;
  EXPECT_EQ(h.Status(id), 0) << "answered without a commit";
  h.Advance(1500ms);  // the reconnect backoff (1–1.25 s)
  h.Connect();
  EXPECT_EQ(h.Status(id), 0) << "the failed answer is not delivered late";
  // The next action writes the whole record again, right after the reconnect.
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

namespace keel {
namespace {

// A hook that hangs until the test releases it (then its frame completes and is freed).
struct Hang {
  Completion<int> c;
  Task<void> Wait() const { co_await c; }
};

struct HookCase {
  const char* name;
  std::chrono::milliseconds timeout;
  std::function<void(ActorDef<Counter>&, const Hang&)> install;
};

class StartHookTimeout : public ::testing::TestWithParam<HookCase> {};

TEST_P(StartHookTimeout, FailsTheStartAfterItsTimeout) {
  const HookCase& hc = GetParam();
  ActorDef<Counter> def("counter");
  Hang hang;
  hc.install(def, hang);
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Advance(hc.timeout - 1ms);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  h.Advance(1ms);
  auto stopped = h.Stopped("a1", 1);
  ASSERT_TRUE(stopped.has_value()) << hc.name;
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_THAT(stopped->message.value_or(""),
              HasSubstr(std::string("callback `") + hc.name + "` timed out after " +
                        std::to_string(hc.timeout.count()) + " ms"));
  EXPECT_FALSE(h.Running("a1", 1));
  hang.c.Resolve(0);
  h.Pump();
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, StartHookTimeout,
    ::testing::Values(
        HookCase{"onMigrate", 30000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_migrate([h](Ctx<Counter>&, bool) { return h.Wait(); });
                 }},
        HookCase{"createState", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.create_state([h](Ctx<Counter>&) -> Task<Counter> {
                     co_await h.Wait();
                     co_return Counter{};
                   });
                 }},
        HookCase{"onCreate", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_create([h](Ctx<Counter>&) { return h.Wait(); });
                 }},
        HookCase{"createVars", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.create_vars([h](Ctx<Counter>&) -> Task<NoVars> {
                     co_await h.Wait();
                     co_return NoVars{};
                   });
                 }},
        HookCase{"onWake", 30000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_wake([h](Ctx<Counter>&) { return h.Wait(); });
                 }},
        HookCase{"onBeforeActorStart", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_before_actor_start([h](Ctx<Counter>&) { return h.Wait(); });
                 }}),
    [](const ::testing::TestParamInfo<HookCase>& info) { return std::string(info.param.name); });

class ConnectHookTimeout : public ::testing::TestWithParam<HookCase> {};

TEST_P(ConnectHookTimeout, RejectsTheConnection) {
  const HookCase& hc = GetParam();
  ActorDef<Counter> def = CounterDef();
  Hang hang;
  hc.install(def, hang);
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  h.Advance(hc.timeout - 1ms);
  EXPECT_FALSE(h.Reply(ws).ws_close.has_value());
  h.Advance(1ms);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value()) << hc.name;
  EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1011));
  EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("actor.callback_timed_out"));
  auto err = wire::DecodeToClient(h.Reply(ws).ws_messages.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(err.ok() && std::holds_alternative<wire::ErrorMsg>(*err));
  EXPECT_THAT(std::get<wire::ErrorMsg>(*err).message, HasSubstr(hc.name));
  hang.c.Resolve(0);
  h.Pump();
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, ConnectHookTimeout,
    ::testing::Values(
        HookCase{"onBeforeConnect", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_before_connect([h](Ctx<Counter>&, const Value&) { return h.Wait(); });
                 }},
        HookCase{"createConnState", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.create_conn_state([h](Ctx<Counter>&, const Value&) -> Task<int> {
                     co_await h.Wait();
                     co_return 1;
                   });
                 }},
        HookCase{"onConnect", 5000ms,
                 [](ActorDef<Counter>& d, const Hang& h) {
                   d.on_connect([h](Ctx<Counter>&, Conn&) { return h.Wait(); });
                 }}),
    [](const ::testing::TestParamInfo<HookCase>& info) { return std::string(info.param.name); });

// Each idle rule of actors.md §3.3 that keeps an actor awake past its sleep timeout.
TEST(RuntimeIdle, KeepAwakeTaskBlocksSleepUntilItEnds) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  Hang hang;
  def.action("busy", [hang](Ctx<Counter>& c) { c.keep_awake(hang.Wait()); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "busy", "[]");
  h.Advance(10s);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  hang.c.Resolve(0);
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeIdle, InFlightActionBlocksSleep) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  Hang hang;
  def.action("slow", [hang](Ctx<Counter>&) -> Task<int> {
    co_await hang.Wait();
    co_return 1;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Action("a1", "slow", "[]");
  h.Advance(30s);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  hang.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(h.Body(id), R"({"output":1})");
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeIdle, ActiveRunHandlerBlocksSleepUntilItReturns) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  Hang hang;
  def.run([hang](Ctx<Counter>&) { return hang.Wait(); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Advance(10s);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  hang.c.Resolve(0);  // run returns: the actor stays alive, then idles to sleep
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeIdle, ScheduledActionRunningBlocksSleep) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_timeout = 1000ms;
  Hang hang;
  def.action("slow", [hang](Ctx<Counter>&) { return hang.Wait(); });
  def.action("later", [](Ctx<Counter>& c) { c.schedule().after(500ms, "slow"); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "later", "[]");
  h.Advance(20s);  // the alarm fired at 500 ms; its action is still running
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  hang.c.Resolve(0);
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeLifecycle, WaitUntilDelaysStopWithinTheGracePeriod) {
  ActorDef<Counter> def = CounterDef();
  def.options().sleep_grace_period = 2000ms;
  Hang hang;
  def.action("bg", [hang](Ctx<Counter>& c) { c.wait_until(hang.Wait()); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "bg", "[]");
  h.StopActor("a1", 1);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  hang.c.Resolve(0);
  h.Pump();
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());

  // A task that never ends is abandoned at the grace deadline.
  Hang forever;
  ActorDef<Counter> def2 = CounterDef();
  def2.options().sleep_grace_period = 2000ms;
  def2.action("bg", [forever](Ctx<Counter>& c) { c.wait_until(forever.Wait()); });
  RuntimeHarness h2;
  h2.Boot({def2.type()});
  h2.StartActor("a2", "counter");
  h2.Action("a2", "bg", "[]");
  h2.StopActor("a2", 1);
  h2.Advance(1999ms);
  EXPECT_FALSE(h2.Stopped("a2", 1).has_value());
  h2.Advance(1ms);
  EXPECT_TRUE(h2.Stopped("a2", 1).has_value());
  forever.c.Resolve(0);
  h2.Pump();
}

// Throttled saves (actors.md §3.5): work that changes state without answering — a long
// action, a run loop — has its changes saved within state_save_interval, not only when it
// answers or the actor stops.
TEST(RuntimeSaves, AHangingActionsChangeIsSavedWithinTheInterval) {
  ActorDef<Counter> def = CounterDef();
  def.options().state_save_interval = 1000ms;
  Hang hang;
  def.action("setAndHang", [hang](Ctx<Counter>& c) -> Task<int> {
    c.state().count = 41;
    co_await hang.Wait();
    co_return 1;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Action("a1", "setAndHang", "[]");
  h.Advance(999ms);
  EXPECT_NE(h.PersistedState("a1"), Value::Object({{"count", 41}}));
  h.Advance(1ms);
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 41}}));
  EXPECT_EQ(h.Status(id), 0) << "the action has not answered";
  hang.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(h.Body(id), R"({"output":1})");
}

TEST(RuntimeSaves, ARunLoopIsSavedAgainEveryIntervalWhileItRuns) {
  ActorDef<Counter> def = CounterDef();
  def.options().state_save_interval = 500ms;
  Hang first;
  Hang second;
  def.run([first, second](Ctx<Counter>& c) -> Task<void> {
    c.state().count = 1;
    co_await first.Wait();
    c.state().count = 2;
    co_await second.Wait();
    c.state().count = 3;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Advance(500ms);
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 1}}));
  first.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 1}})) << "no output, no save yet";
  h.Advance(500ms);
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 2}}));
  second.c.Resolve(0);  // the handler returns: its end saves at once
  h.Pump();
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 3}}));
  // Nothing runs any more: no deadline stays armed and no save is written.
  const size_t puts = h.kv_puts();
  h.Advance(5s);
  EXPECT_EQ(h.runtime().save_deadline_count(), 0u);
  EXPECT_EQ(h.kv_puts(), puts);
}

TEST(RuntimeSaves, AnIdleActorWritesNothingAndStillSleeps) {
  ActorDef<Counter> def = CounterDef();
  def.options().state_save_interval = 100ms;
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Action("a1", "increment", "[2]");
  EXPECT_EQ(h.Body(id), R"({"output":2})");
  const size_t puts = h.kv_puts();
  h.Advance(1000ms);
  EXPECT_EQ(h.kv_puts(), puts) << "an unchanged state is not written again";
  EXPECT_EQ(h.runtime().save_deadline_count(), 0u);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeSaves, SaveStateWithMaxWaitSavesByThenAndResumesAfterTheCommit) {
  ActorDef<Counter> def = CounterDef();
  def.options().state_save_interval = 10s;
  auto log = std::make_shared<std::vector<std::string>>();
  Hang forever;
  def.action("deferred", [log, forever](Ctx<Counter>& c) -> Task<int> {
    c.state().count = 73;
    co_await c.save_state(100ms);
    log->push_back("saved");
    co_await forever.Wait();
    co_return 0;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "deferred", "[]");
  h.Advance(99ms);
  EXPECT_NE(h.PersistedState("a1"), Value::Object({{"count", 73}}));
  EXPECT_TRUE(log->empty());
  h.hold_kv = true;
  h.Advance(1ms);
  ASSERT_EQ(h.held_kv(), 1u) << "the save went out at its deadline";
  EXPECT_TRUE(log->empty()) << "resumed before the engine committed";
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 73}}));
  EXPECT_THAT(*log, ElementsAre("saved"));
  forever.c.Resolve(0);
  h.Pump();
}

TEST(RuntimeSaves, AnEarlierDeadlineWinsAndAStopReleasesAWaitingSave) {
  ActorDef<Counter> def = CounterDef();
  def.options().state_save_interval = 300ms;
  auto log = std::make_shared<std::vector<std::string>>();
  def.action("deferred", [log](Ctx<Counter>& c, int64_t n, int64_t ms) -> Task<int> {
    c.state().count = n;
    co_await c.save_state(std::chrono::milliseconds(ms));
    log->push_back("saved " + std::to_string(n));
    co_return 0;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  // max_wait 5 s, but the action's throttled save is due at 300 ms.
  auto id = h.Action("a1", "deferred", "[5, 5000]");
  h.Advance(300ms);
  EXPECT_THAT(*log, ElementsAre("saved 5"));
  EXPECT_EQ(h.Body(id), R"({"output":0})");
  // A stop before the deadline: the waiting call resumes with the grace save, and the
  // instance stops with its state written.
  h.Action("a1", "deferred", "[6, 60000]");
  h.StopActor("a1", 1);
  h.Pump();
  EXPECT_THAT(*log, ElementsAre("saved 5", "saved 6"));
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.PersistedState("a1"), Value::Object({{"count", 6}}));
}

// Records what is logged while it is installed.
class CapturedLogs final : public LogSink {
 public:
  CapturedLogs() { SetLogSink(this); }
  ~CapturedLogs() override { SetLogSink(nullptr); }
  void Write(LogLevel level, std::string_view, std::string_view message) override {
    if (level >= LogLevel::kWarn) lines.emplace_back(message);
  }
  std::vector<std::string> lines;
};

TEST(RuntimeLifecycle, ARejectedWaitUntilTaskIsLoggedAndIgnored) {
  ActorDef<Counter> def = CounterDef();
  def.action("bgFails", [](Ctx<Counter>& c) {
    c.wait_until([]() -> Task<void> {
      throw UserError("background boom", "boom");
      co_return;
    }());
    return 1;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  CapturedLogs logs;
  auto id = h.Action("a1", "bgFails", "[]");
  EXPECT_EQ(h.Body(id), R"({"output":1})");
  ASSERT_EQ(logs.lines.size(), 1u);
  EXPECT_THAT(logs.lines[0], HasSubstr("actor wait_until promise rejected"));
  EXPECT_THAT(logs.lines[0], HasSubstr("background boom"));
  // The actor goes on serving.
  EXPECT_EQ(h.Body(h.Action("a1", "increment", "[2]")), R"({"output":2})");
}

TEST(RuntimeLifecycle, AbortSignalFiresAtTheStartOfShutdown) {
  ActorDef<Counter> def = CounterDef();
  auto seen = std::make_shared<std::vector<bool>>();
  def.on_wake([seen](Ctx<Counter>& c) { seen->push_back(c.aborted()); });
  def.on_sleep([seen](Ctx<Counter>& c) { seen->push_back(c.aborted()); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.StopActor("a1", 1);
  EXPECT_EQ(*seen, (std::vector<bool>{false, true}));
}

TEST(RuntimeLifecycle, VarsAreRebuiltOnEveryStartAndNeverPersisted) {
  struct Vars {
    int starts = 0;
    std::string note;
  };
  auto created = std::make_shared<int>(0);
  ActorDef<Counter, Vars> def("counter");
  def.create_vars([created](Ctx<Counter, Vars>&) { return Vars{++*created, "fresh"}; });
  def.action("touch", [](Ctx<Counter, Vars>& c) {
    c.vars().note = "touched";
    return c.vars().starts;
  });
  def.action("note", [](Ctx<Counter, Vars>& c) { return c.vars().note; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  EXPECT_EQ(h.Body(h.Action("a1", "touch", "[]")), R"({"output":1})");
  EXPECT_EQ(h.Body(h.Action("a1", "note", "[]")), R"({"output":"touched"})");
  h.StopActor("a1", 1);
  h.StartActor("a1", "counter", 2);
  EXPECT_EQ(h.Body(h.Action("a1", "touch", "[]")), R"({"output":2})");
  h.Action("a1", "note", "[]");
  EXPECT_EQ(*created, 2);
}

TEST(RuntimeLifecycle, CreateStateAndOnCreateReceiveTheInput) {
  struct Input {
    int64_t start = 0;
  };
  ActorDef<Counter> def("counter");
  auto got = std::make_shared<int64_t>(-1);
  def.create_state([](Ctx<Counter>&, Input in) { return Counter{in.start}; });
  def.on_create([got](Ctx<Counter>&, Input in) { *got = in.start; });
  def.action("getCount", [](Ctx<Counter>& c) { return c.state().count; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter", 1, Value::Object({{"start", 42}}));
  EXPECT_EQ(*got, 42);
  EXPECT_EQ(h.Body(h.Action("a1", "getCount", "[]")), R"({"output":42})");
}

// actors.md §2.6: an event that comes due after the actor asked to sleep, while the
// engine's stop is still on its way, does not run on the instance going away; the next
// instance runs it.
TEST(RuntimeAlarms, AnEventDueAfterASleepRequestRunsOnTheNextInstance) {
  ActorDef<Counter> def = CounterDef();
  def.action("laterThenSleep", [](Ctx<Counter>& c) {
    c.schedule().after(50ms, "increment", 1);
    c.sleep();
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  EXPECT_EQ(h.Status(h.Action("a1", "laterThenSleep", "[]")), 200);
  ASSERT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u) << "no sleep intent";
  h.Advance(100ms);  // the stop is late
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 0) << "ran while going to sleep";
  h.StopActor("a1", 1);
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  h.StartActor("a1", "counter", 2);
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 1) << "not run on the next instance";
}

TEST(RuntimeAlarms, UnchangedAlarmIsNotPushedAgainAfterWake) {
  ActorDef<Counter> def = CounterDef();
  def.action("later", [](Ctx<Counter>& c) { c.schedule().after(60s, "increment", 1); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "later", "[]");
  ASSERT_EQ(h.EventsOf<latest::EventActorSetAlarm>("a1").size(), 1u);
  h.StopActor("a1", 1);
  h.StartActor("a1", "counter", 2);
  h.Action("a1", "getCount", "[]");
  // Same earliest timestamp as stored at KV [6]: no second SetAlarm (dedup).
  EXPECT_EQ(h.EventsOf<latest::EventActorSetAlarm>("a1").size(), 1u);
  // A new, earlier event changes the alarm.
  h.Action("a1", "later", "[]");
  EXPECT_EQ(h.EventsOf<latest::EventActorSetAlarm>("a1").size(), 1u) << "a later event leaves the earliest alone";
}

TEST(RuntimeHttp, OnRequestGetsThePathAfterRequest) {
  ActorDef<Counter> def = CounterDef();
  def.on_request([](Ctx<Counter>& c, const Request& req) {
    c.state().count += 1;
    return Response::Text(201, req.method + " " + req.path + " ?" + req.query + " " +
                                   std::string(req.body.begin(), req.body.end()));
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto id = h.Http("a1", "PUT", "/request/test/path?foo=bar&foo=baz", "payload");
  EXPECT_EQ(h.Status(id), 201);
  EXPECT_EQ(h.Body(id), "PUT /test/path ?foo=bar&foo=baz payload");
  EXPECT_EQ(h.Body(h.Http("a1", "GET", "/request")), "GET / ? ");
  // The state change made by the handler is durable before its response.
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 2}}));

  RuntimeHarness h2;
  h2.Boot({CounterDef().type()});
  h2.StartActor("a1", "counter");
  EXPECT_EQ(h2.Status(h2.Http("a1", "GET", "/request/x")), 404);
}

TEST(RuntimeHttp, TheInspectorTakesItsTokenInTheBearerSchemeInAnyCase) {
  runtime::RuntimeOptions options;
  options.inspector_token = "s3cret";
  RuntimeHarness h(options);
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "increment", "[4]");
  for (const char* auth : {"Bearer s3cret", "bearer s3cret", "BEARER   s3cret"}) {
    auto id = h.Http("a1", "GET", "/inspector/state", "", {{"authorization", auth}});
    EXPECT_EQ(h.Status(id), 200) << auth;
    EXPECT_THAT(h.Body(id), HasSubstr(R"("count":4)")) << auth;
  }
  for (const char* auth : {"Bearer wrong", "Basic s3cret", "Bearer", "s3cret"}) {
    auto id = h.Http("a1", "GET", "/inspector/state", "", {{"authorization", auth}});
    EXPECT_NE(h.Status(id), 200) << auth;
    EXPECT_THAT(h.Body(id), HasSubstr("unauthorized")) << auth;
  }
}

TEST(RuntimeHttp, OversizedActionBodyIsRefused) {
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  std::string big(70000, ' ');
  auto id = h.Http("a1", "POST", "/action/increment", "{\"args\":[1]}" + big, {{"x-rivet-encoding", "json"}});
  EXPECT_EQ(h.Status(id), 400);
  EXPECT_THAT(h.Body(id), HasSubstr("incoming_too_long"));
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

struct Job {
  std::string task;
  int64_t n = 0;
};

ActorDef<Counter> QueueDef() {
  ActorDef<Counter> def = CounterDef();
  def.queue("jobs");
  def.queue("secret", [](Ctx<Counter>&) { return false; });
  def.options().max_queue_size = 3;
  def.options().max_queue_message_size = 200;
  def.action("take", [](Ctx<Counter>& c) -> Task<std::optional<std::string>> {
    auto m = co_await c.queue().try_next();
    if (!m) co_return std::nullopt;
    co_return m->name + ":" + BodyAs<Job>(*m).task;
  });
  def.action("send", [](Ctx<Counter>& c, std::string task) -> Task<uint64_t> {
    // Named, not `send("jobs", Job{task, 1})` inside the co_await: g++ 12 destroys braced
    // aggregate temporaries of a co_await expression twice (docs/runtime.md).
    Job job{task, 1};
    co_return co_await c.queue().send("jobs", job);
  });
  def.action("takeAndComplete", [](Ctx<Counter>& c, std::string answer) -> Task<std::string> {
    Queue::Receive opts;
    opts.completable = true;
    opts.timeout = std::chrono::milliseconds(0);
    auto m = co_await c.queue().next(opts);
    if (!m) co_return "none";
    co_await c.queue().complete(*m, answer);
    co_return BodyAs<Job>(*m).task;
  });
  def.action("takeButForget", [](Ctx<Counter>& c) -> Task<std::string> {
    Queue::Receive opts;
    opts.completable = true;
    opts.timeout = std::chrono::milliseconds(0);
    auto m = co_await c.queue().next(opts);
    co_return m ? BodyAs<Job>(*m).task : "none";
  });
  def.action("takeTwice", [](Ctx<Counter>& c) -> Task<std::string> {
    Queue::Receive opts;
    opts.completable = true;
    opts.timeout = std::chrono::milliseconds(0);
    auto m = co_await c.queue().next(opts);
    if (!m) co_return "none";
    co_await c.queue().next(opts);  // throws: the first is not completed
    co_return "unreachable";
  });
  def.action("completeTwice", [](Ctx<Counter>& c) -> Task<std::string> {
    Queue::Receive opts;
    opts.completable = true;
    opts.timeout = std::chrono::milliseconds(0);
    auto m = co_await c.queue().next(opts);
    if (!m) co_return "none";
    co_await c.queue().complete(*m);
    co_await c.queue().complete(*m);  // throws
    co_return "unreachable";
  });
  return def;
}

std::string QueueBody(const std::string& task, bool wait = false, int timeout_ms = 0) {
  std::string body = R"({"body":{"task":")" + task + R"(","n":1})";
  if (wait) body += R"(,"wait":true,"timeout":)" + std::to_string(timeout_ms);
  return body + "}";
}

TEST(RuntimeQueue, HttpSendStoresDurablyAndActionsReceive) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  auto id = h.Http("a1", "POST", "/queue/jobs", QueueBody("wash"), {{"x-rivet-encoding", "json"}});
  EXPECT_EQ(h.Status(id), 200);
  EXPECT_EQ(h.Body(id), R"({"status":"completed"})");
  // Stored under [5,1,2] + u64 BE id 1 before the response.
  EXPECT_EQ(h.kv("a1").count(Bytes{5, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1}), 1u);
  EXPECT_EQ(h.kv("a1").count(Bytes{5, 1, 1}), 1u);
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":"jobs:wash"})");
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":null})");
  EXPECT_EQ(h.kv("a1").count(Bytes{5, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1}), 0u) << "received messages are deleted";
}

TEST(RuntimeQueue, UndeclaredIsDroppedForbiddenIsRefusedLimitsApply) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  auto dropped = h.Http("a1", "POST", "/queue/unknown", QueueBody("x"));
  EXPECT_EQ(h.Body(dropped), R"({"status":"completed"})");
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":null})");
  auto forbidden = h.Http("a1", "POST", "/queue/secret", QueueBody("x"));
  EXPECT_EQ(h.Status(forbidden), 403);
  EXPECT_THAT(h.Body(forbidden), HasSubstr("forbidden"));
  auto big = h.Http("a1", "POST", "/queue/jobs", QueueBody(std::string(300, 'x')));
  EXPECT_EQ(h.Status(big), 400);
  EXPECT_THAT(h.Body(big), HasSubstr("message_too_large"));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(h.Status(h.Http("a1", "POST", "/queue/jobs", QueueBody("j"))), 200);
  auto full = h.Http("a1", "POST", "/queue/jobs", QueueBody("j"));
  EXPECT_EQ(h.Status(full), 400);
  EXPECT_THAT(h.Body(full), HasSubstr("Queue is full. Limit is 3 messages."));
}

TEST(RuntimeQueue, WaitingSendGetsTheCompletionOrTimesOut) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  auto waiting = h.Http("a1", "POST", "/queue/jobs", QueueBody("paint", true, 5000));
  EXPECT_EQ(h.Status(waiting), 0);
  EXPECT_EQ(h.Body(h.Action("a1", "takeAndComplete", R"(["done!"])")), R"({"output":"paint"})");
  EXPECT_EQ(h.Body(waiting), R"({"status":"completed","response":"done!"})");

  auto timed = h.Http("a1", "POST", "/queue/jobs", QueueBody("never", true, 1000));
  h.Advance(1000ms);
  EXPECT_EQ(h.Body(timed), R"({"status":"timedOut"})");
}

TEST(RuntimeQueue, WaitingSendWhoseMessageIsTakenWithoutCompletionIsAnsweredAtOnce) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  auto waiting = h.Http("a1", "POST", "/queue/jobs", QueueBody("sweep", true, 5000));
  // A completable receive that ends without completing releases it: still waiting.
  EXPECT_EQ(h.Body(h.Action("a1", "takeButForget", "[]")), R"({"output":"sweep"})");
  EXPECT_EQ(h.Status(waiting), 0);
  // A plain receive consumes it: nothing can complete it any more, so the sender hears
  // `completed` (no response) now, not `timedOut` after 5 s.
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":"jobs:sweep"})");
  EXPECT_EQ(h.Status(waiting), 200);
  EXPECT_EQ(h.Body(waiting), R"({"status":"completed"})");
  h.Advance(5000ms);
  EXPECT_EQ(h.Body(waiting), R"({"status":"completed"})") << "answered once";
}

TEST(RuntimeQueue, CompletableRules) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "send", R"(["a"])");
  // Received but not completed: back in the queue when the action ends.
  EXPECT_EQ(h.Body(h.Action("a1", "takeButForget", "[]")), R"({"output":"a"})");
  EXPECT_EQ(h.Body(h.Action("a1", "takeButForget", "[]")), R"({"output":"a"})");
  auto twice = h.Action("a1", "takeTwice", "[]");
  EXPECT_THAT(h.Body(twice), HasSubstr("previous_message_not_completed"));
  auto complete_twice = h.Action("a1", "completeTwice", "[]");
  EXPECT_THAT(h.Body(complete_twice), HasSubstr("already_completed"));
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":null})");
}

TEST(RuntimeQueue, MessagesSurviveSleep) {
  RuntimeHarness h;
  h.Boot({QueueDef().type()});
  h.StartActor("a1", "counter");
  h.Action("a1", "send", R"(["kept"])");
  h.StopActor("a1", 1);
  h.StartActor("a1", "counter", 2);
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":"jobs:kept"})");
}

TEST(RuntimeQueue, RunBlockedOnReceiveIsIdleAndShutdownAbortsIt) {
  ActorDef<Counter> def = QueueDef();
  def.options().sleep_timeout = 1000ms;
  auto log = std::make_shared<std::vector<std::string>>();
  def.run([log](Ctx<Counter>& c) -> Task<void> {
    try {
      for (;;) {
        auto m = co_await c.queue().next();
        if (m) log->push_back(BodyAs<Job>(*m).task);
      }
    } catch (const ActorError& e) {
      log->push_back(e.group() + "." + e.code());
    }
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  h.Http("a1", "POST", "/queue/jobs", QueueBody("first"));
  EXPECT_EQ(*log, (std::vector<std::string>{"first"}));
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u) << "a run waiting on the queue is idle";
  h.StopActor("a1", 1);
  EXPECT_EQ(log->back(), "actor.aborted");
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

ActorDef<Counter> EchoDef(std::shared_ptr<std::vector<std::string>> log) {
  ActorDef<Counter> def = CounterDef();
  def.on_websocket([log](Ctx<Counter>& c, WebSocket<Ctx<Counter>>& ws) {
    log->push_back("open " + ws.request().path + "?" + ws.request().query);
    ws.send("hello " + c.actor_id());
    ws.on_message([log](Ctx<Counter>& c, WebSocket<Ctx<Counter>>& self, std::string_view text, bool binary) {
      if (text == "close") throw UserError("asked to fail", "bye");
      c.state().count += 1;  // durable before the echo leaves
      log->push_back(std::string(binary ? "bin " : "text ") + std::string(text));
      self.send("echo " + std::string(text));
    });
    ws.on_close([log](Ctx<Counter>&, uint16_t, std::string_view) { log->push_back("closed"); });
  });
  return def;
}

TEST(RuntimeRawWebSocket, EchoesPersistsAndCloses) {
  auto log = std::make_shared<std::vector<std::string>>();
  ActorDef<Counter> def = EchoDef(log);
  def.options().sleep_timeout = 1000ms;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/chat?room=1", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  EXPECT_EQ(std::string(h.Reply(ws).ws_messages[0].data.begin(), h.Reply(ws).ws_messages[0].data.end()),
            "hello a1");
  h.WsSend(ws, Bytes{'h', 'i'}, false);
  h.WsSend(ws, Bytes{1, 2}, true);
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 2}}));
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 3u);
  EXPECT_EQ(std::string(h.Reply(ws).ws_messages[1].data.begin(), h.Reply(ws).ws_messages[1].data.end()),
            "echo hi");
  // An open raw socket keeps the actor awake.
  h.Advance(5s);
  EXPECT_TRUE(h.EventsOf<latest::EventActorIntent>("a1").empty());
  h.WsClose(ws);
  EXPECT_THAT(*log, ElementsAre("open /websocket/chat?room=1", "text hi", std::string("bin \x01\x02"), "closed"));
  h.Advance(1000ms);
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
}

TEST(RuntimeRawWebSocket, HandlerFailureClosesWithTheErrorAndNoHandlerRefuses) {
  auto log = std::make_shared<std::vector<std::string>>();
  RuntimeHarness h;
  h.Boot({EchoDef(log).type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/x", "rivet");
  h.WsSend(ws, Bytes{'c', 'l', 'o', 's', 'e'}, false);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1011));
  EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("user.bye"));

  RuntimeHarness h2;
  h2.Boot({CounterDef().type()});
  h2.StartActor("a1", "counter");
  auto none = h2.OpenWs("a1", "/websocket/x", "rivet");
  ASSERT_TRUE(h2.Reply(none).ws_close.has_value());
  EXPECT_FALSE(h2.Reply(none).ws_open);
}

TEST(RuntimeRawWebSocket, SleepClosesItCleanly) {
  auto log = std::make_shared<std::vector<std::string>>();
  RuntimeHarness h;
  h.Boot({EchoDef(log).type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/x", "rivet");
  h.StopActor("a1", 1);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1000));
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());
}

std::string Text(const latest::ToRivetWebSocketMessage& m) { return std::string(m.data.begin(), m.data.end()); }

// What onSleep sends on a raw socket reaches the client: the socket closes after the hook.
TEST(RuntimeRawWebSocket, OnSleepCanStillSendBeforeTheClose) {
  RuntimeHarness h;
  ActorDef<Counter> d2 = CounterDef();
  auto saved = std::make_shared<std::function<void(std::string)>>();
  d2.on_websocket([saved](Ctx<Counter>&, WebSocket<Ctx<Counter>>& ws) {
    *saved = [raw = ws](std::string text) mutable { raw.send(text); };
  });
  d2.on_sleep([saved](Ctx<Counter>&) { (*saved)("sleeping"); });
  h.Boot({d2.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/x", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.StopActor("a1", 1);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u) << "onSleep's message was lost";
  EXPECT_EQ(Text(h.Reply(ws).ws_messages[0]), "sleeping");
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1000));
  EXPECT_FALSE(h.Reply(ws).ws_close->hibernate);
}

// can_hibernate_websocket: the socket survives the sleep, every handled message is
// acknowledged, the next instance runs onWebSocket again (restored) and handles only what
// was not acknowledged; the handler sees the gateway's indexes.
TEST(RuntimeRawWebSocket, HibernatableSocketSurvivesSleepAndSkipsAcknowledgedReplays) {
  auto log = std::make_shared<std::vector<std::string>>();
  ActorDef<Counter> def = CounterDef();
  def.options().can_hibernate_websocket = [](const runtime::Request& req) { return req.query == "keep=1"; };
  def.on_websocket([log](Ctx<Counter>&, WebSocket<Ctx<Counter>>& ws) {
    log->push_back(std::string(ws.restored() ? "restored " : "open ") + (ws.hibernatable() ? "h" : "-"));
    ws.on_message([log](Ctx<Counter>& c, WebSocket<Ctx<Counter>>& self, std::string_view text, bool) {
      c.state().count += 1;
      log->push_back(std::string(text) + "@" + std::to_string(self.message_index()));
      self.send(std::to_string(self.message_index()));
    });
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto plain = h.OpenWs("a1", "/websocket/x", "rivet");
  auto ws = h.OpenWs("a1", "/websocket/x?keep=1", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, Bytes{'a'}, false);  // index 1
  h.WsSend(ws, Bytes{'b'}, false);  // 2
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(2)) << "handled messages are acknowledged";
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 2u);
  EXPECT_EQ(Text(h.Reply(ws).ws_messages[1]), "2");

  h.StopActor("a1", 1);  // sleep
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_TRUE(h.Reply(ws).ws_close->hibernate) << "handed back to the gateway, not closed";
  ASSERT_TRUE(h.Reply(plain).ws_close.has_value());
  EXPECT_FALSE(h.Reply(plain).ws_close->hibernate) << "a socket the predicate refused closes";

  h.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  h.WsSendAt(ws, Bytes{'b'}, false, 2);  // a replay of an acknowledged message
  h.WsSendAt(ws, Bytes{'c'}, false, 3);
  EXPECT_THAT(*log, ElementsAre("open -", "open h", "a@1", "b@2", "restored h", "c@3"));
  EXPECT_EQ(Text(h.Reply(ws).ws_messages.back()), "3");
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(3));
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 3}}));
}

// A hibernatable raw socket's handler that changes nothing (an echo) writes no index and is
// acknowledged at once; one that changes state is acknowledged only once that change and the
// index are durable.
TEST(RuntimeRawWebSocket, AnEffectFreeHibernatableMessageWritesNothing) {
  ActorDef<Counter> def = CounterDef();
  def.options().can_hibernate_websocket = [](const runtime::Request&) { return true; };
  def.on_websocket([](Ctx<Counter>&, WebSocket<Ctx<Counter>>& ws) {
    ws.on_message([](Ctx<Counter>& c, WebSocket<Ctx<Counter>>& self, std::string_view text, bool) {
      if (text == "inc") c.state().count += 1;
      self.send(std::string(text));
    });
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/x", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.hold_kv = true;
  h.WsSend(ws, Bytes{'e', 'c', 'h', 'o'}, false);  // index 1
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1)) << "the ack waited for nothing";
  EXPECT_EQ(h.held_kv(), 0u) << "an echo wrote its index";
  h.WsSend(ws, Bytes{'i', 'n', 'c'}, false);  // 2
  EXPECT_EQ(h.held_kv(), 1u);
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1)) << "acknowledged before it was durable";
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(2));
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 1}}));
}

// A hibernated raw socket whose actor no longer has onWebSocket (a new version) cannot be
// restored: its record is dropped and the gateway is told to close the socket.
TEST(RuntimeRawWebSocket, HibernatedSocketWithoutAHandlerAtWakeIsClosed) {
  ActorDef<Counter> def = CounterDef();
  def.options().can_hibernate_websocket = [](const runtime::Request&) { return true; };
  def.on_websocket([](Ctx<Counter>&, WebSocket<Ctx<Counter>>&) {});
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/x", "rivet");
  h.StopActor("a1", 1);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  ASSERT_TRUE(h.Reply(ws).ws_close->hibernate);

  RuntimeHarness h2;
  h2.kv("a1") = h.kv("a1");
  h2.Boot({CounterDef().type()});
  h2.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  ASSERT_TRUE(h2.Running("a1", 2));
  ASSERT_TRUE(h2.Reply(ws).ws_close.has_value());
  EXPECT_FALSE(h2.Reply(ws).ws_close->hibernate);
  EXPECT_FALSE(h2.Reply(ws).ws_open);
  for (const auto& [k, v] : h2.kv("a1")) EXPECT_NE(k.empty() ? 0 : k[0], 2) << "the connection record was kept";
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

Bytes JsonFrame(const wire::ToServer& m) { return wire::Encode(m, wire::Encoding::kJson); }

// True when `m` is the answer to a replayed, already processed action `id`.
bool IsResultLost(const wire::ToClient& m, uint64_t id) {
  const auto* e = std::get_if<wire::ErrorMsg>(&m);
  return e != nullptr && e->group == "actor" && e->code == "action_result_lost" && e->action_id == id;
}

std::vector<wire::ToClient> Decoded(const testing::TunnelReply& r) {
  std::vector<wire::ToClient> out;
  for (const auto& m : r.ws_messages) {
    auto d = wire::DecodeToClient(m.data, wire::Encoding::kJson);
    if (d.ok()) out.push_back(*d);
  }
  return out;
}

// The runtime of `h` dies: a new one starts a1 from what `h` committed, with the /connect
// socket `ws` restored, and gets the gateway's replay of `increment(5)` (action `action_id`,
// gateway index `index`). The record must say it was processed: its caller learns the
// result is lost, and the count stays `count`.
void ExpectReplayedIncrementIsLost(RuntimeHarness& h, const latest::MessageId& ws, uint64_t action_id,
                                   uint16_t index, int64_t count) {
  RuntimeHarness h2;
  h2.kv("a1") = h.kv("a1");
  h2.Boot({CounterDef().type()});
  h2.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  h2.WsSendAt(ws, JsonFrame(wire::ActionRequest{action_id, "increment", Value::ArrayOf({5})}), false, index);
  auto replayed = Decoded(h2.Reply(ws));
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_TRUE(IsResultLost(replayed[0], action_id)) << "a processed message was applied again";
  EXPECT_EQ(*h2.PersistedState("a1"), Value::Object({{"count", count}}));
}

TEST(RuntimeHibernation, ConnectionSurvivesSleepWithoutReconnectHooks) {
  auto log = std::make_shared<std::vector<std::string>>();
  ActorDef<Counter> def = CounterDef();
  def.create_conn_state([](Ctx<Counter>&, const Value&) { return std::string("fresh"); });
  def.on_connect([log](Ctx<Counter>&, Conn&) { log->push_back("connect"); });
  def.on_disconnect([log](Ctx<Counter>&, Conn&) { log->push_back("disconnect"); });
  def.on_wake([log](Ctx<Counter>&) { log->push_back("wake"); });
  def.action("whoami", [](Ctx<Counter>& c) { return c.conn() != nullptr ? c.conn()->state() : Value(); });
  def.action("rename", [](Ctx<Counter>& c, std::string n) { c.conn()->state() = Value(n); });
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::SubscriptionRequest{"newCount", true}), false);  // index 1
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "rename", Value::ArrayOf({"ada"})}), false);  // 2
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(2)) << "processed messages are acknowledged";

  h.StopActor("a1", 1);  // sleep
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_TRUE(h.Reply(ws).ws_close->hibernate);
  EXPECT_THAT(*log, ElementsAre("wake", "connect")) << "no onDisconnect on hibernation";

  // The gateway kept the socket; the next generation restores it.
  h.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  EXPECT_THAT(*log, ElementsAre("wake", "connect", "wake"));
  // A replay of an already processed action is not run again (its caller learns the result
  // was lost); a new one is answered.
  const size_t before = h.Reply(ws).ws_messages.size();
  h.WsSendAt(ws, JsonFrame(wire::ActionRequest{1, "rename", Value::ArrayOf({"again"})}), false, 2);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), before + 1);
  EXPECT_TRUE(IsResultLost(Decoded(h.Reply(ws)).back(), 1));
  h.WsSendAt(ws, JsonFrame(wire::ActionRequest{2, "whoami", Value::Array{}}), false, 3);
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value("ada")) << "conn state survived";
  // The subscription survived too.
  h.WsSendAt(ws, JsonFrame(wire::ActionRequest{3, "increment", Value::ArrayOf({1})}), false, 4);
  msgs = Decoded(h.Reply(ws));
  ASSERT_GE(msgs.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<wire::Event>(msgs[msgs.size() - 2]));
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(4));
}

TEST(RuntimeHibernation, SocketClosedWhileAsleepRunsOnDisconnectAfterWake) {
  auto log = std::make_shared<std::vector<std::string>>();
  ActorDef<Counter> def = CounterDef();
  def.on_disconnect([log](Ctx<Counter>&, Conn&) { log->push_back("disconnect"); });
  def.on_wake([log](Ctx<Counter>&) { log->push_back("wake"); });
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  h.StopActor("a1", 1);
  size_t records = 0;
  for (const auto& [k, v] : h.kv("a1")) records += (!k.empty() && k[0] == 2);
  EXPECT_EQ(records, 1u) << "the hibernated connection is persisted at [2]+id";
  // Not listed in hibernatingRequests: the client left while the actor slept.
  h.StartActor("a1", "counter", 2);
  EXPECT_THAT(*log, ElementsAre("wake", "wake", "disconnect"));
  records = 0;
  for (const auto& [k, v] : h.kv("a1")) records += (!k.empty() && k[0] == 2);
  EXPECT_EQ(records, 0u);
  (void)ws;
}

TEST(RuntimeHibernation, MessageDuringSleepIsNeitherAnsweredNorAcknowledged) {
  ActorDef<Counter> def = CounterDef();
  Hang hang;
  def.on_sleep([hang](Ctx<Counter>&) { return hang.Wait(); });
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "increment", Value::ArrayOf({1})}), false);
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1));
  h.StopActor("a1", 1);  // grace: onSleep hangs
  const size_t before = h.Reply(ws).ws_messages.size();
  h.WsSend(ws, JsonFrame(wire::ActionRequest{2, "increment", Value::ArrayOf({1})}), false);
  EXPECT_EQ(h.Reply(ws).ws_messages.size(), before);
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1)) << "left for the gateway to replay";
  hang.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(h.PersistedState("a1")->Find("count")->as_int(), 1);
}

// The runtime dies (no sleep, nothing written at shutdown) after answering an action; the
// gateway still holds the socket and replays what the dead instance had not acknowledged.
// The connection record written with the action's effects says it was processed, so the
// next instance does not apply it twice; subscriptions made before the crash survive.
TEST(RuntimeHibernation, ReplayAfterARuntimeCrashDoesNotApplyAnAnsweredActionTwice) {
  RuntimeHarness h;
  auto ws = StartAndConnect(h, CounterDef().type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::SubscriptionRequest{"newCount", true}), false);           // index 1
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "increment", Value::ArrayOf({5})}), false);  // 2
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value(5));

  // A new runtime process starts the actor from what the first one had committed.
  RuntimeHarness h2;
  h2.kv("a1") = h.kv("a1");
  h2.Boot({CounterDef().type()});
  h2.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  // The gateway replays both messages (their acks may not have reached it).
  h2.WsSendAt(ws, JsonFrame(wire::SubscriptionRequest{"newCount", true}), false, 1);
  h2.WsSendAt(ws, JsonFrame(wire::ActionRequest{1, "increment", Value::ArrayOf({5})}), false, 2);
  // Not processed again: the action is not re-run (its answer may have died with the first
  // process, so its caller learns the result was lost); the subscription needs no answer.
  msgs = Decoded(h2.Reply(ws));
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(IsResultLost(msgs[0], 1));
  h2.WsSendAt(ws, JsonFrame(wire::ActionRequest{2, "increment", Value::ArrayOf({1})}), false, 3);
  msgs = Decoded(h2.Reply(ws));
  ASSERT_EQ(msgs.size(), 3u);
  ASSERT_TRUE(std::holds_alternative<wire::Event>(msgs[1])) << "the subscription survived the crash";
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs[2]));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs[2]).output, Value(6)) << "applied once";
  EXPECT_EQ(h2.Reply(ws).last_ack, std::optional<uint16_t>(3));
}

// Over a hibernatable connection, an action with no effects (getCount) writes nothing: it
// is answered and acknowledged at once, with no synced commit of its processed-message
// index. An action that changes state is answered and acknowledged only once its effects
// and its index (covering the earlier read too) are committed, together, in one write.
TEST(RuntimeHibernation, AnEffectFreeActionWritesNothingAndIsAckedAtOnce) {
  RuntimeHarness h;
  auto ws = StartAndConnect(h, CounterDef().type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  const size_t before = Decoded(h.Reply(ws)).size();  // the connection's Init
  h.hold_kv = true;
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "getCount", Value::ArrayOf({})}), false);  // 1
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_EQ(msgs.size(), before + 1) << "the read-only action waited for a write";
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value(0));
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1)) << "the ack waited for nothing";
  EXPECT_EQ(h.held_kv(), 0u) << "a read-only action wrote its index";

  h.WsSend(ws, JsonFrame(wire::ActionRequest{2, "increment", Value::ArrayOf({5})}), false);  // 2
  EXPECT_EQ(Decoded(h.Reply(ws)).size(), before + 1) << "a state change answered before it was durable";
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1)) << "acknowledged before it was durable";
  EXPECT_EQ(h.held_kv(), 1u) << "the state and the index are not one write";
  h.hold_kv = false;
  h.ReleaseKv();
  msgs = Decoded(h.Reply(ws));
  ASSERT_EQ(msgs.size(), before + 2);
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value(5));
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(2));
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 5}}));

  // A crash now: the next instance sees both messages as processed.
  ExpectReplayedIncrementIsLost(h, ws, 2, 2, 5);
}

// An action that broadcasts its new state (increment) to a subscriber starts a write
// mid-action; its
// processed index is staged only when it returns. The answer must still wait for the index:
// a runtime crash at any moment after the client saw it leaves the next instance treating
// the gateway's replay as processed, not applying it a second time. Checked with the
// runtime waiting for its writes and with the engine holding outputs (where the answer
// reaches the client once every write sent before it is durable). State, event and index
// share one write.
void CheckTheAnswerWaitsForItsProcessedIndex(bool engine_holds) {
  RuntimeHarness h;
  h.engine_holds_outputs = engine_holds;
  auto ws = StartAndConnect(h, CounterDef().type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::SubscriptionRequest{"newCount", true}), false);  // 1
  const size_t before = Decoded(h.Reply(ws)).size();
  const size_t requests_before = h.kv_requests();
  const size_t log_before = h.tunnel_log.size();
  h.hold_kv = true;
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "increment", Value::ArrayOf({5})}), false);  // 2
  if (engine_holds) {
    // Durable when the engine releases the answer: the writes sent before it.
    std::optional<size_t> sent_before;
    for (size_t i = log_before; i < h.tunnel_log.size() && !sent_before; ++i) {
      const auto* m = h.tunnel_log[i].message.message_kind.get_if<latest::ToRivetWebSocketMessage>();
      if (m == nullptr) continue;
      auto d = wire::DecodeToClient(m->data, wire::Encoding::kJson);
      if (d.ok() && std::holds_alternative<wire::ActionResponse>(*d)) sent_before = h.tunnel_log[i].kv_requests_before;
    }
    ASSERT_TRUE(sent_before.has_value()) << "no answer sent";
    h.ReleaseOldestKv(*sent_before - requests_before);
  } else {
    // Commit the runtime's writes one by one until the answer leaves.
    while (Decoded(h.Reply(ws)).size() == before) {
      ASSERT_GT(h.held_kv(), 0u) << "waiting for nothing";
      h.ReleaseOldestKv();
    }
  }
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value(5));
  EXPECT_EQ(h.kv_requests() - requests_before, 1u) << "state and processed index written apart";

  // The runtime dies here, with whatever is still held lost.
  ExpectReplayedIncrementIsLost(h, ws, 1, 2, 5);
}
TEST(RuntimeHibernation, TheAnswerWaitsForItsProcessedIndex) { CheckTheAnswerWaitsForItsProcessedIndex(false); }
TEST(RuntimeHibernation, TheHeldAnswerFollowsItsProcessedIndex) { CheckTheAnswerWaitsForItsProcessedIndex(true); }

// Reads that wrote no index still count when the actor sleeps: the record written then says
// they were processed, so a replay after the wake does not run them again.
TEST(RuntimeHibernation, TheSleepRecordCoversReadsThatWroteNoIndex) {
  RuntimeHarness h;
  auto ws = StartAndConnect(h, CounterDef().type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "getCount", Value::ArrayOf({})}), false);  // 1
  h.WsSend(ws, JsonFrame(wire::ActionRequest{2, "getCount", Value::ArrayOf({})}), false);  // 2
  const size_t answered = Decoded(h.Reply(ws)).size();
  h.StopActor("a1", 1);
  h.Pump();

  h.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  h.WsSendAt(ws, JsonFrame(wire::ActionRequest{2, "getCount", Value::ArrayOf({})}), false, 2);
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_EQ(msgs.size(), answered + 1);
  EXPECT_TRUE(IsResultLost(msgs.back(), 2)) << "the sleep record did not cover the reads";
}

TEST(RuntimeHibernation, DestroyClosesInsteadOfHibernating) {
  auto log = std::make_shared<std::vector<std::string>>();
  ActorDef<Counter> def = CounterDef();
  def.on_disconnect([log](Ctx<Counter>&, Conn&) { log->push_back("disconnect"); });
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  h.StopActor("a1", 1, latest::StopActorReason::kDestroy);
  ASSERT_TRUE(h.Reply(ws).ws_close.has_value());
  EXPECT_FALSE(h.Reply(ws).ws_close->hibernate);
  EXPECT_THAT(*log, ElementsAre("disconnect"));
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

TEST(RuntimeShutdown, GracefulShutdownWaitsForTheEngineToStopTheActors) {
  std::vector<std::string> log;
  RuntimeHarness h;
  h.Boot({CounterDef(&log).type()});
  bool shut = false;
  h.runtime().SetShutdownCallback([&shut] { shut = true; });
  h.StartActor("a1", "counter");
  h.client().Shutdown(false);
  h.Pump();
  EXPECT_FALSE(shut) << "the envoy ended before its actor stopped";
  h.StopActor("a1", 1, latest::StopActorReason::kGoingAway);
  EXPECT_EQ(log.back(), "onSleep");
  EXPECT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_TRUE(shut);
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

TEST(RuntimeKv, BatchOperationsUseTheUserPrefixAndOneRead) {
  ActorDef<NoState> def("kv");
  def.action("fill", [](Ctx<NoState>& c) { c.kv().batch_put({{"a", "1"}, {"b", "2"}, {"c", "3"}}); });
  def.action("read", [](Ctx<NoState>& c) -> Task<std::vector<std::optional<std::string>>> {
    std::vector<std::string> keys{"a", "b", "zz"};
    co_return co_await c.kv().batch_get(keys);
  });
  def.action("drop", [](Ctx<NoState>& c) {
    std::vector<std::string> keys{"a", "c"};
    c.kv().batch_delete(keys);
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("k1", "kv");
  h.Action("k1", "fill", "[]");
  EXPECT_EQ(h.kv("k1").count(Bytes{4, 'b'}), 1u);
  EXPECT_EQ(h.Body(h.Action("k1", "read", "[]")), R"({"output":["1","2",null]})");
  h.Action("k1", "drop", "[]");
  EXPECT_EQ(h.Body(h.Action("k1", "read", "[]")), R"({"output":[null,"2",null]})");
}

TEST(RuntimeLifecycle, SleepAndDestroyRequestsFromActorCode) {
  std::vector<std::string> log;
  ActorDef<Counter> def = CounterDef(&log);
  def.action("nap", [](Ctx<Counter>& c) { c.sleep(); return 1; });
  def.action("die", [](Ctx<Counter>& c) { c.destroy(); return 2; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  EXPECT_EQ(h.Body(h.Action("a1", "nap", "[]")), R"({"output":1})");
  auto intents = h.EventsOf<latest::EventActorIntent>("a1");
  ASSERT_EQ(intents.size(), 1u);
  EXPECT_TRUE(intents[0].intent.is<latest::ActorIntentSleep>());
  // A second request while the sleep is pending is refused once the stop arrived.
  h.StopActor("a1", 1, latest::StopActorReason::kSleepIntent);
  EXPECT_EQ(log.back(), "onSleep");

  h.StartActor("a1", "counter", 2);
  EXPECT_EQ(h.Body(h.Action("a1", "die", "[]")), R"({"output":2})") << "the calling action still replies";
  intents = h.EventsOf<latest::EventActorIntent>("a1");
  ASSERT_EQ(intents.size(), 2u);
  EXPECT_TRUE(intents[1].intent.is<latest::ActorIntentStop>());
  h.StopActor("a1", 2, latest::StopActorReason::kDestroy);
  EXPECT_EQ(log.back(), "onDestroy");
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

class ConnectEncoding : public ::testing::TestWithParam<wire::Encoding> {};

// The client protocol over /connect in each encoding (frames: json text, cbor/bare binary).
TEST_P(ConnectEncoding, InitActionEventAndErrorFrames) {
  const wire::Encoding enc = GetParam();
  RuntimeHarness h;
  h.Boot({CounterDef().type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding." + std::string(wire::EncodingName(enc)));
  auto decode = [&](size_t i) {
    const auto& m = h.Reply(ws).ws_messages.at(i);
    EXPECT_EQ(m.binary, enc != wire::Encoding::kJson);
    auto d = wire::DecodeToClient(m.data, enc);
    EXPECT_TRUE(d.ok());
    return d.ok() ? *d : wire::ToClient{wire::Init{}};
  };
  const bool binary = enc != wire::Encoding::kJson;
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<wire::Init>(decode(0)));
  h.WsSend(ws, wire::Encode(wire::ToServer{wire::SubscriptionRequest{"newCount", true}}, enc), binary);
  h.WsSend(ws, wire::Encode(wire::ToServer{wire::ActionRequest{7, "increment", Value::ArrayOf({3})}}, enc), binary);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 3u);
  auto ev = decode(1);
  ASSERT_TRUE(std::holds_alternative<wire::Event>(ev));
  EXPECT_EQ(std::get<wire::Event>(ev).args, Value::ArrayOf({3}));
  auto resp = decode(2);
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(resp));
  EXPECT_EQ(std::get<wire::ActionResponse>(resp).id, 7u);
  EXPECT_EQ(std::get<wire::ActionResponse>(resp).output, Value(3));
  h.WsSend(ws, wire::Encode(wire::ToServer{wire::ActionRequest{8, "fail", Value::Array{}}}, enc), binary);
  auto err = decode(3);
  ASSERT_TRUE(std::holds_alternative<wire::ErrorMsg>(err));
  EXPECT_EQ(std::get<wire::ErrorMsg>(err).code, "custom_code");
  EXPECT_EQ(std::get<wire::ErrorMsg>(err).action_id, std::optional<uint64_t>(8));
}

INSTANTIATE_TEST_SUITE_P(Encodings, ConnectEncoding,
                         ::testing::Values(wire::Encoding::kJson, wire::Encoding::kCbor, wire::Encoding::kBare),
                         [](const ::testing::TestParamInfo<wire::Encoding>& info) {
                           return std::string(wire::EncodingName(info.param));
                         });

}  // namespace
}  // namespace keel

// Preloaded KV in the start command (envoy-protocol.md §5.4): the runtime advertises what
// it reads at startup in its actor-name metadata, and a wake whose start command carries
// it needs no KV read before it runs.
namespace keel {
namespace {

std::shared_ptr<const runtime::ActorType> WithMetadata(std::string name, std::string json) {
  auto t = std::make_shared<runtime::ActorType>(*CounterDef().type());
  t->name = std::move(name);
  t->metadata_json = std::move(json);
  return t;
}

std::string MetadataOf(runtime::Runtime& rt, const std::string& name) {
  for (const auto& [n, m] : rt.ActorNames()) {
    if (n == name) return m;
  }
  ADD_FAILURE() << "no actor name " << name;
  return "";
}

TEST(RuntimePreload, ActorNamesAdvertiseThePreloadPlan) {
  RuntimeHarness h;
  h.runtime().Register(CounterDef().type());
  h.runtime().Register(WithMetadata("user", R"({"icon":"x","big":9007199254740993} )"));
  h.runtime().Register(WithMetadata("own", R"({"preload":{"keys":[[9]]}})"));
  h.runtime().Register(WithMetadata("odd", "[1,2]"));

  const Value plan = Value::Object({
      {"keys", Value::ArrayOf({Value::ArrayOf({1}), Value::ArrayOf({6})})},
      {"prefixes", Value::ArrayOf({Value::Object({{"prefix", Value::ArrayOf({2})},
                                                  {"maxBytes", 65536},
                                                  {"partial", false}})})},
  });
  auto counter = ParseJson(MetadataOf(h.runtime(), "counter"));  // the default "{}"
  ASSERT_TRUE(counter.ok());
  EXPECT_EQ(*counter, Value::Object({{"preload", plan}}));

  const std::string user_text = MetadataOf(h.runtime(), "user");
  auto with_user = ParseJson(user_text);
  ASSERT_TRUE(with_user.ok()) << user_text;
  ASSERT_NE(with_user->Find("preload"), nullptr);
  EXPECT_EQ(*with_user->Find("preload"), plan);
  EXPECT_EQ(*with_user->Find("icon"), Value("x"));
  EXPECT_THAT(user_text, HasSubstr(R"("big":9007199254740993)")) << "user fields kept as written";

  EXPECT_EQ(MetadataOf(h.runtime(), "own"), R"({"preload":{"keys":[[9]]}})")
      << "a user plan is kept";
  EXPECT_EQ(MetadataOf(h.runtime(), "odd"), "[1,2]") << "not an object: unchanged";
}

ActorDef<Counter> ConnDef() {
  ActorDef<Counter> def = CounterDef();
  def.action("whoami", [](Ctx<Counter>& c) { return c.conn() != nullptr ? c.conn()->state() : Value(); });
  def.action("rename", [](Ctx<Counter>& c, std::string n) { c.conn()->state() = Value(n); });
  return def;
}

// Generation 1 counts to 5 and sleeps with one hibernated connection whose state is "ada".
latest::MessageId SleepWithAConnection(RuntimeHarness& h) {
  auto ws = StartAndConnect(h, ConnDef().type());
  EXPECT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::ActionRequest{1, "rename", Value::ArrayOf({"ada"})}), false);  // 1
  h.WsSend(ws, JsonFrame(wire::ActionRequest{2, "increment", Value::ArrayOf({5})}), false);  // 2
  h.StopActor("a1", 1);
  EXPECT_TRUE(h.Reply(ws).ws_close.has_value() && h.Reply(ws).ws_close->hibernate);
  size_t records = 0;
  for (const auto& [k, v] : h.kv("a1")) records += (!k.empty() && k[0] == 2);
  EXPECT_EQ(records, 1u);
  return ws;
}

// What the engine would preload from the actor's KV for the runtime's plan: [1] and [6]
// (listed even when absent) and, when `with_conns`, everything under [2]. Entries are
// given out of key order on purpose.
latest::PreloadedKv Preload(RuntimeHarness& h, bool with_conns) {
  latest::PreloadedKv pre;
  pre.requested_get_keys = {Bytes{1}, Bytes{6}};
  if (with_conns) pre.requested_prefixes = {Bytes{2}};
  for (const auto& [k, v] : h.kv("a1")) {
    const bool exact = k == Bytes{1} || k == Bytes{6};
    const bool conn = with_conns && !k.empty() && k[0] == 2;
    if (exact || conn) pre.entries.insert(pre.entries.begin(), latest::PreloadedKvEntry{k, v, {}});
  }
  return pre;
}

void StartWith(RuntimeHarness& h, uint32_t generation, std::optional<latest::PreloadedKv> pre,
               const latest::MessageId& ws) {
  latest::CommandStartActor start;
  start.config.name = "counter";
  start.config.key = "/";
  start.config.create_ts = h.clock().SystemNowMs();
  start.hibernating_requests.push_back({ws.gateway_id, ws.request_id});
  start.preloaded_kv = std::move(pre);
  h.SendCommand("a1", generation, latest::Command{std::move(start)});
}

bool IsGetOrList(const latest::ToRivetKvRequest& r) {
  return r.data.is<latest::KvGetRequest>() || r.data.is<latest::KvListRequest>();
}

// The wake restored the connection (its state and its processed index) and the state.
void ExpectRestored(RuntimeHarness& h, const latest::MessageId& ws) {
  h.WsSendAt(ws, JsonFrame(wire::ActionRequest{3, "whoami", Value::Array{}}), false, 3);
  auto msgs = Decoded(h.Reply(ws));
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value("ada"))
      << "conn state restored";
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(3));
  EXPECT_EQ(h.Body(h.Action("a1", "getCount", "[]")), R"({"output":5})") << "persisted state";
}

TEST(RuntimePreload, WakeWithPreloadedKvRunsWithoutReadingKv) {
  RuntimeHarness h;
  auto ws = SleepWithAConnection(h);
  latest::PreloadedKv pre = Preload(h, /*with_conns=*/true);
  ASSERT_EQ(pre.entries.size(), 2u) << "[1] and one [2] record; no alarm was ever set";

  h.hold_kv = true;  // any KV request now stays unanswered
  StartWith(h, 2, std::move(pre), ws);
  ASSERT_TRUE(h.Running("a1", 2)) << "the start waited for a KV answer";
  for (const auto& r : h.held_kv_requests()) EXPECT_FALSE(IsGetOrList(r));
  h.hold_kv = false;
  h.ReleaseKv();
  ExpectRestored(h, ws);
}

TEST(RuntimePreload, WakeWithoutPreloadReadsKv) {
  RuntimeHarness h;
  auto ws = SleepWithAConnection(h);

  h.hold_kv = true;
  StartWith(h, 2, std::nullopt, ws);
  EXPECT_FALSE(h.Running("a1", 2));
  ASSERT_EQ(h.held_kv(), 1u);
  EXPECT_TRUE(h.held_kv_requests()[0].data.is<latest::KvGetRequest>()) << "[1] and [6]";
  h.ReleaseKv();
  EXPECT_FALSE(h.Running("a1", 2));
  ASSERT_EQ(h.held_kv(), 1u);
  EXPECT_TRUE(h.held_kv_requests()[0].data.is<latest::KvListRequest>()) << "the [2] records";
  h.hold_kv = false;
  h.ReleaseKv();
  ASSERT_TRUE(h.Running("a1", 2));
  ExpectRestored(h, ws);
}

TEST(RuntimePreload, WakeWithoutThePreloadedConnPrefixListsIt) {
  RuntimeHarness h;
  auto ws = SleepWithAConnection(h);

  h.hold_kv = true;
  StartWith(h, 2, Preload(h, /*with_conns=*/false), ws);
  EXPECT_FALSE(h.Running("a1", 2));
  ASSERT_EQ(h.held_kv(), 1u) << "[1] and [6] came preloaded: no get";
  const auto* list = h.held_kv_requests()[0].data.get_if<latest::KvListRequest>();
  ASSERT_NE(list, nullptr);
  const auto* prefix = list->query.get_if<latest::KvListPrefixQuery>();
  ASSERT_NE(prefix, nullptr);
  EXPECT_EQ(prefix->key, Bytes{2});
  h.hold_kv = false;
  h.ReleaseKv();
  ASSERT_TRUE(h.Running("a1", 2));
  ExpectRestored(h, ws);
}

// ---- the envoy connection's payload limit (envoy-protocol.md §6.6) ----------------------
// The engine closes the whole envoy connection, ending every actor on it, on a tunnel message
// whose payload is over maxResponsePayloadSize. What an actor sends over it is refused with
// message.outgoing_too_long (a WebSocket message cannot be split) or streamed (HTTP).

ActorDef<Counter> LimitDef() {
  ActorDef<Counter> def = CounterDef();
  def.event("blob");
  def.action("shout", [](Ctx<Counter>& c, int64_t n) {
    c.broadcast("blob", std::string(static_cast<size_t>(n), 'b'));
    return n;
  });
  def.action("reply",
             [](Ctx<Counter>&, int64_t n) { return std::string(static_cast<size_t>(n), 'r'); });
  def.on_websocket([](Ctx<Counter>&, WebSocket<Ctx<Counter>>& ws) {
    ws.on_message([](Ctx<Counter>&, WebSocket<Ctx<Counter>>& self, std::string_view text, bool) {
      try {
        self.send(std::string(std::stoul(std::string(text)), 'w'));
        self.send("sent");
      } catch (const ActorError& e) {
        self.send(e.group() + "." + e.code() + ": " + e.what());
      }
    });
  });
  def.on_request([](Ctx<Counter>&, const Request& req) {
    return Response::Text(200, std::string(std::stoul(req.query.substr(2)), 'h'));
  });
  return def;
}

TEST(RuntimePayloadLimit, ARawWebSocketMessageOverTheLimitThrowsAndTheSocketStays) {
  RuntimeHarness h;
  h.max_response_payload = 200;
  h.Boot({LimitDef().type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, Bytes{'2', '0', '0'}, false);
  h.WsSend(ws, Bytes{'2', '0', '1'}, false);
  const auto& msgs = h.Reply(ws).ws_messages;
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(Text(msgs[0]), std::string(200, 'w'));
  EXPECT_EQ(Text(msgs[1]), "sent");
  EXPECT_THAT(Text(msgs[2]),
              HasSubstr("message.outgoing_too_long: a WebSocket message of 201 bytes"));
  EXPECT_THAT(Text(msgs[2]), HasSubstr("limit of 200 bytes"));
  EXPECT_FALSE(h.Reply(ws).ws_close.has_value());
  EXPECT_EQ(h.client().oversized_tunnel_messages(), 0u)
      << "nothing over the limit reached the client";
}

TEST(RuntimePayloadLimit, AnEventOrReplyOverTheLimitIsAnErrorToTheConnection) {
  RuntimeHarness h;
  h.max_response_payload = 300;
  auto ws = StartAndConnect(h, LimitDef().type());
  h.WsSend(
      ws,
      wire::Encode(wire::ToServer{wire::SubscriptionRequest{"blob", true}}, wire::Encoding::kJson),
      false);
  const auto& msgs = h.Reply(ws).ws_messages;
  const size_t before = msgs.size();
  h.WsSend(ws,
           wire::Encode(wire::ToServer{wire::ActionRequest{1, "shout", Value::ArrayOf({400})}},
                        wire::Encoding::kJson),
           false);
  ASSERT_EQ(msgs.size(), before + 2);
  auto event = wire::DecodeToClient(msgs[before].data, wire::Encoding::kJson);
  ASSERT_TRUE(event.ok());
  ASSERT_TRUE(std::holds_alternative<wire::ErrorMsg>(*event)) << Text(msgs[before]);
  EXPECT_EQ(std::get<wire::ErrorMsg>(*event).code, "outgoing_too_long");
  EXPECT_EQ(std::get<wire::ErrorMsg>(*event).action_id, std::nullopt);
  EXPECT_THAT(std::get<wire::ErrorMsg>(*event).message, HasSubstr("limit of 300 bytes"));
  auto shout = wire::DecodeToClient(msgs[before + 1].data, wire::Encoding::kJson);
  ASSERT_TRUE(shout.ok() && std::holds_alternative<wire::ActionResponse>(*shout));
  EXPECT_EQ(std::get<wire::ActionResponse>(*shout).output, Value(400));

  // A reply under maxOutgoingMessageSize (1 MiB) but over the connection's limit.
  h.WsSend(ws,
           wire::Encode(wire::ToServer{wire::ActionRequest{2, "reply", Value::ArrayOf({400})}},
                        wire::Encoding::kJson),
           false);
  ASSERT_EQ(msgs.size(), before + 3);
  auto reply = wire::DecodeToClient(msgs.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(reply.ok() && std::holds_alternative<wire::ErrorMsg>(*reply)) << Text(msgs.back());
  EXPECT_EQ(std::get<wire::ErrorMsg>(*reply).code, "outgoing_too_long");
  EXPECT_EQ(std::get<wire::ErrorMsg>(*reply).action_id, std::optional<uint64_t>(2));
  // Under the limit everything still flows, on the same connection.
  h.WsSend(ws,
           wire::Encode(wire::ToServer{wire::ActionRequest{3, "reply", Value::ArrayOf({5})}},
                        wire::Encoding::kJson),
           false);
  auto small = wire::DecodeToClient(msgs.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(small.ok() && std::holds_alternative<wire::ActionResponse>(*small));
  EXPECT_EQ(std::get<wire::ActionResponse>(*small).output, Value("rrrrr"));
  EXPECT_FALSE(h.Reply(ws).ws_close.has_value());
}

// An HTTP response over the limit leaves as a stream of pieces under it, whole and in order.
TEST(RuntimePayloadLimit, AnHttpResponseOverTheLimitIsStreamed) {
  RuntimeHarness h;
  h.max_response_payload = 100;
  h.Boot({LimitDef().type()});
  h.StartActor("a1", "counter");
  const size_t logged = h.tunnel_log.size();
  auto id = h.Http("a1", "GET", "/request/x?n=250");
  std::string body;
  bool finished = false;
  size_t pieces = 0;
  for (size_t i = logged; i < h.tunnel_log.size(); ++i) {
    const auto& m = h.tunnel_log[i].message;
    if (m.message_id.request_id != id.request_id) continue;
    ++pieces;
    EXPECT_FALSE(finished) << "nothing after the last chunk";
    if (const auto* start = m.message_kind.get_if<latest::ToRivetResponseStart>()) {
      EXPECT_EQ(start->status, 200);
      EXPECT_TRUE(start->stream);
      ASSERT_TRUE(start->body.has_value());
      EXPECT_LE(start->body->size(), 100u);
      body.append(start->body->begin(), start->body->end());
    } else if (const auto* chunk = m.message_kind.get_if<latest::ToRivetResponseChunk>()) {
      EXPECT_LE(chunk->body.size(), 100u);
      body.append(chunk->body.begin(), chunk->body.end());
      finished = chunk->finish;
    }
  }
  EXPECT_EQ(pieces, 3u);
  EXPECT_TRUE(finished);
  EXPECT_EQ(body, std::string(250, 'h'));
}

// An action on one connection that changes another hibernatable connection's state stages
// that connection's record with the action's effects: a runtime crash right after the
// answer restores the change. Regression: only the calling connection's record was written,
// the other's at the actor's sleep, so a crash lost an acknowledged change.
TEST(RuntimeHibernation, AnotherConnectionsStateChangedByAnActionSurvivesACrash) {
  ActorDef<Counter> def = CounterDef();
  def.create_conn_state([](Ctx<Counter>&, const Value&) { return std::string("fresh"); });
  def.action("whoami", [](Ctx<Counter>& c) { return c.conn()->state(); });
  def.action("renameOthers", [](Ctx<Counter>& c, std::string n) {
    for (const auto& [id, conn] : c.instance().conns()) {
      if (conn.get() != c.conn() && !conn->transient()) conn->state() = Value(n);
    }
  });
  RuntimeHarness h;
  auto ws1 = StartAndConnect(h, def.type());
  auto ws2 = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  ASSERT_TRUE(h.Reply(ws1).ws_open && h.Reply(ws2).ws_open);
  h.WsSend(ws1, JsonFrame(wire::ActionRequest{1, "renameOthers", Value::ArrayOf({"ada"})}), false);
  auto answered = Decoded(h.Reply(ws1));
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(answered.back()));

  // The runtime dies; a new one restores both sockets from what was committed.
  RuntimeHarness h2;
  h2.kv("a1") = h.kv("a1");
  h2.Boot({def.type()});
  h2.StartActor("a1", "counter", 2, std::nullopt, "/", {ws1, ws2});
  h2.WsSendAt(ws2, JsonFrame(wire::ActionRequest{1, "whoami", Value::Array{}}), false, 1);
  auto msgs = Decoded(h2.Reply(ws2));
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value("ada"));
  h2.WsSendAt(ws1, JsonFrame(wire::ActionRequest{2, "whoami", Value::Array{}}), false, 2);
  msgs = Decoded(h2.Reply(ws1));
  ASSERT_FALSE(msgs.empty());
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs.back()));
  EXPECT_EQ(std::get<wire::ActionResponse>(msgs.back()).output, Value("fresh"));
}

// A raw WebSocket carries the actor's own frames: an event sent to its connection is not
// written into them as a client-protocol frame (it is dropped, with a warning).
TEST(RuntimeRawWebSocket, AnEventToARawSocketsConnectionIsNotWrittenIntoTheStream) {
  ActorDef<Counter> def = CounterDef();
  def.on_websocket([](Ctx<Counter>&, WebSocket<Ctx<Counter>>& ws) {
    ws.on_message([](Ctx<Counter>&, WebSocket<Ctx<Counter>>& self, std::string_view, bool) {
      self.conn().Send("newCount", Value::ArrayOf({1}));
      self.send("after");
    });
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "counter");
  auto ws = h.OpenWs("a1", "/websocket/", "rivet");
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, Bytes{'x'}, false);
  ASSERT_EQ(h.Reply(ws).ws_messages.size(), 1u);
  EXPECT_EQ(Text(h.Reply(ws).ws_messages[0]), "after");
}

// A subscription whose event has a can_subscribe guard is acknowledged to the gateway only
// once the guard allowed it and the subscription is in the connection's record: a runtime
// crash after the ack then keeps it. Regression: the ack went out before the guard ran, so
// a crash before the record was written lost a subscription the gateway would not replay.
TEST(RuntimeHibernation, AGuardedSubscriptionIsAcknowledgedOnlyOnceStored) {
  Hang hang;
  ActorDef<Counter> def = CounterDef();
  def.event("guarded", [hang](Ctx<Counter>&) -> Task<bool> {
    co_await hang.Wait();
    co_return true;
  });
  def.action("ping", [](Ctx<Counter>& c) {
    c.broadcast("guarded", 1);
    return 1;
  });
  RuntimeHarness h;
  auto ws = StartAndConnect(h, def.type());
  ASSERT_TRUE(h.Reply(ws).ws_open);
  h.WsSend(ws, JsonFrame(wire::SubscriptionRequest{"guarded", true}), false);  // index 1
  EXPECT_EQ(h.Reply(ws).last_ack, std::nullopt) << "acknowledged before the guard answered";
  hang.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(h.Reply(ws).last_ack, std::optional<uint16_t>(1));

  // The runtime dies; the next one restores the socket: the subscription is there.
  RuntimeHarness h2;
  h2.kv("a1") = h.kv("a1");
  h2.Boot({def.type()});
  h2.StartActor("a1", "counter", 2, std::nullopt, "/", {ws});
  h2.WsSendAt(ws, JsonFrame(wire::ActionRequest{1, "ping", Value::Array{}}), false, 2);
  auto msgs = Decoded(h2.Reply(ws));
  ASSERT_EQ(msgs.size(), 2u);
  ASSERT_TRUE(std::holds_alternative<wire::Event>(msgs[0]));
  EXPECT_EQ(std::get<wire::Event>(msgs[0]).name, "guarded");
  EXPECT_TRUE(std::holds_alternative<wire::ActionResponse>(msgs[1]));
}

}  // namespace
}  // namespace keel
