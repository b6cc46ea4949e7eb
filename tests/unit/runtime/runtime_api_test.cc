// The typed actor API (runtime/actor.h) as a first-time user writes actors with it,
// following docs/runtime.md: contexts handed to background work, completable queue
// messages in every kind of handler, user callbacks that throw. Stepped against the fake
// engine of tests/support/runtime_harness.h.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/log.h"
#include "protocol/envoy/versioned.h"
#include "runtime/actor.h"
#include "support/runtime_harness.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::RuntimeHarness;
namespace latest = protocol::envoy::latest;

struct Tally {
  int64_t count = 0;
};

struct Job {
  std::string task;
  int64_t n = 0;
};

// Background work waits on it until the test releases it.
struct Latch {
  Completion<int> c;
  Task<void> Wait() const { co_await c; }
};

std::string Text(const latest::ToRivetWebSocketMessage& m) {
  return std::string(m.data.begin(), m.data.end());
}

// ---- A context handed to work that outlives the call (docs/runtime.md "Context") ----

// Background work takes the context by value, as docs/runtime.md shows.
Task<void> AddLater(Ctx<Tally> c, Latch latch, int64_t n) {
  co_await latch.Wait();
  c.state().count += n;
  c.broadcast("changed", c.state().count);
}

Task<void> NotePathLater(Ctx<Tally> c, Latch latch, std::shared_ptr<std::string> seen) {
  co_await latch.Wait();
  *seen = c.request() != nullptr ? c.request()->path : "no request";
}

TEST(RuntimeApi, AContextCopyOutlivesTheCallThatMadeIt) {
  Latch latch, latch2;  // one waiter each
  auto seen = std::make_shared<std::string>();
  ActorDef<Tally> def("tally");
  def.event("changed");
  def.action("addLater",
             [latch](Ctx<Tally>& c, int64_t n) { c.wait_until(AddLater(c, latch, n)); });
  def.action("get", [](Ctx<Tally>& c) { return c.state().count; });
  def.on_request([latch2, seen](Ctx<Tally>& c, const Request&) {
    c.keep_awake(NotePathLater(c, latch2, seen));
    return Response::Text(200, "ok");
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  h.WsSend(ws,
           wire::Encode(wire::ToServer{wire::SubscriptionRequest{"changed", true}},
                        wire::Encoding::kJson),
           false);

  EXPECT_EQ(h.Status(h.Action("a1", "addLater", "[5]")), 200);
  EXPECT_EQ(h.Status(h.Http("a1", "GET", "/request/some/path")), 200);
  // Both calls ended (their frames are gone); the work they started goes on with its copy.
  latch.c.Resolve(0);
  latch2.c.Resolve(0);
  h.Pump();
  EXPECT_EQ(*seen, "/some/path");
  EXPECT_EQ(h.Body(h.Action("a1", "get", "[]")), R"({"output":5})");
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 5}}));
  const auto& msgs = h.Reply(ws).ws_messages;
  ASSERT_FALSE(msgs.empty());
  auto ev = wire::DecodeToClient(msgs.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(ev.ok());
  ASSERT_TRUE(std::holds_alternative<wire::Event>(*ev));
  EXPECT_EQ(std::get<wire::Event>(*ev).name, "changed");
  EXPECT_EQ(std::get<wire::Event>(*ev).args, Value::ArrayOf({5}));
}

// A helper taking the context by value, awaited inside the action (the copy is a
// parameter of a co_await expression: g++ 12 must destroy it exactly once).
Task<int64_t> Bump(Ctx<Tally> c, int64_t by) {
  co_await c.save_state();
  c.state().count += by;
  co_return c.state().count;
}

TEST(RuntimeApi, AContextCopyAwaitedInsideTheActionWorksLikeTheOriginal) {
  ActorDef<Tally> def("tally");
  def.action("bump", [](Ctx<Tally>& c) -> Task<int64_t> {
    int64_t first = co_await Bump(c, 1);
    int64_t second = co_await Bump(c, first + 1);
    co_return second;
  });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  EXPECT_EQ(h.Body(h.Action("a1", "bump", "[]")), R"({"output":3})");
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 3}}));
}

// ---- Completable queue messages in handlers other than actions ----

ActorDef<Tally> JobsDef() {
  ActorDef<Tally> def("tally");
  def.queue("jobs");
  def.action("send", [](Ctx<Tally>& c, std::string task) -> Task<uint64_t> {
    Job job{task, 1};
    co_return co_await c.queue().send("jobs", job);
  });
  def.action("take", [](Ctx<Tally>& c) -> Task<std::string> {
    auto m = co_await c.queue().try_next();
    std::string task = m ? BodyAs<Job>(*m).task : "none";
    co_return task;
  });
  return def;
}

// Receives a completable message without completing it.
Task<std::string> PeekJob(Ctx<Tally>& c) {
  Queue::Receive opts;
  opts.completable = true;
  opts.timeout = 0ms;
  auto m = co_await c.queue().next(opts);
  std::string task = m ? BodyAs<Job>(*m).task : "none";
  co_return task;
}

TEST(RuntimeApi, AnUncompletedMessageGoesBackWhenAnyHandlerEnds) {
  ActorDef<Tally> def = JobsDef();
  def.on_request([](Ctx<Tally>& c, const Request&) -> Task<Response> {
    std::string task = co_await PeekJob(c);
    co_return Response::Text(200, task);
  });
  def.on_websocket([](Ctx<Tally>&, WebSocket<Ctx<Tally>>& ws) {
    ws.on_message(
        [](Ctx<Tally>& c, WebSocket<Ctx<Tally>>& self, std::string_view, bool) -> Task<void> {
          std::string task = co_await PeekJob(c);
          self.send(task);
        });
  });
  auto connected = std::make_shared<std::string>();
  def.on_connect(
      [connected](Ctx<Tally>& c, Conn&) -> Task<void> { *connected = co_await PeekJob(c); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  h.Action("a1", "send", R"(["a"])");

  // onRequest: the message it did not complete is there for the next receiver.
  EXPECT_EQ(h.Body(h.Http("a1", "GET", "/request/peek")), "a");
  EXPECT_EQ(h.Body(h.Http("a1", "GET", "/request/peek")), "a") << "the message stayed in flight";
  // A raw WebSocket message handler.
  auto raw = h.OpenWs("a1", "/websocket/peek", "rivet");
  h.WsSend(raw, Bytes{'x'}, false);
  h.WsSend(raw, Bytes{'x'}, false);
  const auto& msgs = h.Reply(raw).ws_messages;
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(Text(msgs[0]), "a");
  EXPECT_EQ(Text(msgs[1]), "a") << "the message stayed in flight";
  // onConnect.
  h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  EXPECT_EQ(*connected, "a");
  EXPECT_EQ(h.Body(h.Action("a1", "take", "[]")), R"({"output":"a"})");
}

// ---- User callbacks that throw ----

TEST(RuntimeApi, AThrowingCanHibernateWebSocketRefusesTheSocketNotTheRuntime) {
  ActorDef<Tally> def("tally");
  def.action("get", [](Ctx<Tally>& c) { return c.state().count; });
  def.on_websocket([](Ctx<Tally>&, WebSocket<Ctx<Tally>>& ws) { ws.send("hi"); });
  def.options().can_hibernate_websocket = [](const Request& r) -> bool {
    if (r.path == "/websocket/int") throw 42;  // not even a std::exception
    if (r.path == "/websocket/std") throw std::runtime_error("secret detail");
    return false;
  };
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  for (const char* path : {"/websocket/int", "/websocket/std"}) {
    auto ws = h.OpenWs("a1", path, "rivet");
    EXPECT_FALSE(h.Reply(ws).ws_open) << path;
    ASSERT_TRUE(h.Reply(ws).ws_close.has_value()) << path;
    EXPECT_EQ(h.Reply(ws).ws_close->code, std::optional<uint16_t>(1011));
    EXPECT_EQ(h.Reply(ws).ws_close->reason, std::optional<std::string>("rivetkit.internal_error"));
  }
  // The actor (and the runtime) go on.
  auto ok = h.OpenWs("a1", "/websocket/fine", "rivet");
  EXPECT_TRUE(h.Reply(ok).ws_open);
  EXPECT_EQ(h.Body(h.Action("a1", "get", "[]")), R"({"output":0})");
}

// ---- Schedule (actors.md §2.6: the target is an action of this actor) ----

TEST(RuntimeApi, SchedulingANameThatIsNoActionFailsAtOnce) {
  ActorDef<Tally> def("tally");
  def.action("tick", [](Ctx<Tally>& c) { ++c.state().count; });
  def.action("plan",
             [](Ctx<Tally>& c, std::string target) { return c.schedule().after(1000ms, target); });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  auto typo = h.Action("a1", "plan", R"(["tikc"])");
  EXPECT_THAT(h.Body(typo), HasSubstr("action_not_found"));
  EXPECT_THAT(h.Body(typo), HasSubstr("tikc"));
  EXPECT_TRUE(h.EventsOf<latest::EventActorSetAlarm>("a1").empty()) << "nothing was scheduled";
  EXPECT_EQ(h.Status(h.Action("a1", "plan", R"(["tick"])")), 200);
  h.Advance(1000ms);
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 1}}));
}

// ---- A state that outgrows the engine's value limit ----

struct Notes {
  std::vector<std::string> items;
};

ActorDef<Notes> NotesDef() {
  ActorDef<Notes> def("notes");
  def.action("add", [](Ctx<Notes>& c, int64_t kib) {
    c.state().items.push_back(std::string(static_cast<size_t>(kib) * 1024, 'x'));
    return c.state().items.size();
  });
  def.action("drop", [](Ctx<Notes>& c) {
    c.state().items.pop_back();
    return c.state().items.size();
  });
  return def;
}

size_t PersistedItems(RuntimeHarness& h) {
  auto state = h.PersistedState("a1");
  if (!state || state->Find("items") == nullptr) return 0;
  return state->Find("items")->as_array().size();
}

void CheckOversizedStateIsRefused(bool held) {
  RuntimeHarness h;
  h.engine_holds_outputs = held;
  h.Boot({NotesDef().type()});
  h.StartActor("a1", "notes");
  EXPECT_EQ(h.Body(h.Action("a1", "add", "[100]")), R"({"output":1})");
  // 140 KiB more: the record (state + schedule + input) no longer fits in one KV value
  // (128 KiB). The caller learns why; nothing the engine would refuse is sent, so the actor
  // (and, with held outputs, its generation) goes on.
  auto big = h.Action("a1", "add", "[40]");
  EXPECT_EQ(h.Status(big), 500);
  EXPECT_THAT(h.Body(big), HasSubstr("state_too_large"));
  EXPECT_THAT(h.Body(big), HasSubstr("131072"));
  EXPECT_LE(h.kv("a1")[Bytes{1}].size(), 131072u);
  EXPECT_EQ(PersistedItems(h), 1u);
  // It asks to sleep: the next instance starts from the last state saved.
  EXPECT_EQ(h.EventsOf<latest::EventActorIntent>("a1").size(), 1u);
  // A connection's action is refused the same way.
  auto ws = h.OpenWs("a1", "/connect", "rivet, rivet_encoding.json");
  h.WsSend(ws,
           wire::Encode(wire::ToServer{wire::ActionRequest{1, "add", Value::ArrayOf({1})}},
                        wire::Encoding::kJson),
           false);
  auto err = wire::DecodeToClient(h.Reply(ws).ws_messages.back().data, wire::Encoding::kJson);
  ASSERT_TRUE(err.ok());
  ASSERT_TRUE(std::holds_alternative<wire::ErrorMsg>(*err));
  EXPECT_EQ(std::get<wire::ErrorMsg>(*err).code, "state_too_large");
  // Refused until it fits again (the refused changes stay in memory: 3 items now).
  EXPECT_THAT(h.Body(h.Action("a1", "drop", "[]")), HasSubstr("state_too_large"));
  EXPECT_EQ(h.Body(h.Action("a1", "drop", "[]")), R"({"output":1})");
  EXPECT_EQ(PersistedItems(h), 1u);
  EXPECT_FALSE(h.Stopped("a1", 1).has_value());
  // The engine's stop: the instance ends cleanly with what was saved.
  h.StopActor("a1", 1);
  ASSERT_TRUE(h.Stopped("a1", 1).has_value());
  EXPECT_EQ(h.Stopped("a1", 1)->code, latest::StopCode::kOk);
  h.StartActor("a1", "notes", 2);
  EXPECT_EQ(h.Body(h.Action("a1", "add", "[1]")), R"({"output":2})");
}

TEST(RuntimeApi, AnInstanceStoppingWithItsStateTooLargeRestartsFromTheLastSave) {
  RuntimeHarness h;
  h.Boot({NotesDef().type()});
  h.StartActor("a1", "notes");
  EXPECT_EQ(h.Body(h.Action("a1", "add", "[100]")), R"({"output":1})");
  EXPECT_THAT(h.Body(h.Action("a1", "add", "[40]")), HasSubstr("state_too_large"));
  h.StopActor("a1", 1);
  auto stopped = h.Stopped("a1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_THAT(stopped->message.value_or(""), HasSubstr("state_too_large"));
  h.StartActor("a1", "notes", 2);
  EXPECT_EQ(h.Body(h.Action("a1", "add", "[1]")), R"({"output":2})") << "from the saved state";
}

TEST(RuntimeApi, AStateTooLargeToSaveFailsTheCallWithAClearError) {
  CheckOversizedStateIsRefused(false);
}
TEST(RuntimeApi, AStateTooLargeToSaveDoesNotEndAHeldGeneration) {
  CheckOversizedStateIsRefused(true);
}

// ---- Vars (docs/runtime.md "State"): ephemeral, never persisted ----

// What vars are for: objects that are not data (actors.md §2.3, "may hold non-serialisable
// objects such as a router").
struct Wiring {
  std::unique_ptr<int> handle;
  std::function<int64_t(int64_t)> scale;
};

TEST(RuntimeApi, VarsMayHoldObjectsThatAreNotData) {
  ActorDef<Tally, Wiring> def("tally");
  def.create_vars([](Ctx<Tally, Wiring>&) {
    Wiring w;
    w.handle = std::make_unique<int>(7);
    w.scale = [](int64_t n) { return n * 10; };
    return w;
  });
  def.action("scaled",
             [](Ctx<Tally, Wiring>& c, int64_t n) { return c.vars().scale(n) + *c.vars().handle; });
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("a1", "tally");
  EXPECT_EQ(h.Body(h.Action("a1", "scaled", "[2]")), R"({"output":27})");
}

// Vars whose constructor fails (it opens something that is not there).
struct FragileVars {
  FragileVars() { throw std::runtime_error("no such device"); }
};

TEST(RuntimeApi, AThrowingVarsConstructorFailsTheStartNotTheRuntime) {
  ActorDef<Tally, FragileVars> fragile("fragile");
  ActorDef<Tally> fine("tally");
  fine.action("get", [](Ctx<Tally>& c) { return c.state().count; });
  RuntimeHarness h;
  h.Boot({fragile.type(), fine.type()});
  h.StartActor("f1", "fragile");
  auto stopped = h.Stopped("f1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_FALSE(h.Running("f1", 1));
  h.StartActor("a1", "tally");
  EXPECT_EQ(h.Body(h.Action("a1", "get", "[]")), R"({"output":0})");
}

// Records the warnings logged while it is installed.
class WarningLog final : public LogSink {
 public:
  WarningLog() { SetLogSink(this); }
  ~WarningLog() override { SetLogSink(nullptr); }
  void Write(LogLevel level, std::string_view, std::string_view message) override {
    if (level >= LogLevel::kWarn) lines.emplace_back(message);
  }
  std::vector<std::string> lines;
};

// What a script runtime (the wasm build's JavaScript) throws for a plain `new Error("boom")`:
// the stop reason, which the engine shows to clients, is its one-line summary; the
// runtime's log keeps the stack with the host's file paths.
TEST(RuntimeApi, AScriptErrorFailingTheStartReportsItsSummaryAndLogsItsStack) {
  ActorDef<Tally> def("scripted");
  def.on_wake([](Ctx<Tally>&) {
    throw runtime::ScriptError("Error: boom",
                               "Error: boom\n    at onWake (/srv/app/actors.mjs:3:11)");
  });
  WarningLog logs;
  RuntimeHarness h;
  h.Boot({def.type()});
  h.StartActor("s1", "scripted");
  auto stopped = h.Stopped("s1", 1);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->code, latest::StopCode::kError);
  EXPECT_EQ(stopped->message, "unknown.unstructured: Error: boom");
  bool logged = false;
  for (const auto& line : logs.lines) {
    logged = logged || (line.find("actor failed to start") != std::string::npos &&
                        line.find("actors.mjs:3:11") != std::string::npos);
  }
  EXPECT_TRUE(logged) << ::testing::PrintToString(logs.lines);
}

}  // namespace
}  // namespace keel
