// A raw HTTP request (on_request) whose client went away: the gateway's ToEnvoyRequestAbort
// (envoy-protocol.md §6.3) marks it aborted for the running handler (Request::aborted,
// Request::OnAbort), its response is dropped, and the actor still goes to sleep once the
// handler returns. Stepped against the scripted fake engine (tests/support/
// runtime_harness.h): a ManualClock, no threads, no sockets.
#include <gtest/gtest.h>

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
using testing::RuntimeHarness;
namespace latest = protocol::envoy::latest;

struct Counter {
  int64_t count = 0;
};

// What the test shares with the actor's handler.
struct Probe {
  Completion<bool> release;  // the handler waits on it
  int callbacks = 0;         // OnAbort callbacks run
  int late_callbacks = 0;    // those registered after the abort
  bool aborted_when_resumed = false;
};

// on_request: /request/wait registers an abort callback, waits for the test's release, then
// counts 100 when it was aborted meanwhile, else 1; any other path answers at once.
ActorDef<Counter> WaiterDef(std::shared_ptr<Probe> probe) {
  ActorDef<Counter> def("counter");
  def.options().sleep_timeout = 1000ms;
  def.action("getCount", [](Ctx<Counter>& c) { return c.state().count; });
  def.on_request([probe](Ctx<Counter>& c, const Request& req) -> Task<Response> {
    if (req.path != "/wait") {
      req.OnAbort([probe] { ++probe->callbacks; });
      c.state().count += 1;
      co_return Response::Text(200, "quick");
    }
    req.OnAbort([probe] { ++probe->callbacks; });
    co_await probe->release;
    probe->aborted_when_resumed = req.aborted();
    req.OnAbort([probe] { ++probe->late_callbacks; });
    c.state().count += req.aborted() ? 100 : 1;
    co_return Response::Text(200, "late");
  });
  return def;
}

void SendAbort(RuntimeHarness& h, const latest::MessageId& id) {
  latest::ToEnvoyTunnelMessage m;
  m.message_id = id;
  m.message_id.message_index = 1;
  m.message_kind = latest::ToEnvoyRequestAbort{};
  h.Deliver(latest::ToEnvoy{std::move(m)});
  h.Pump();
}

// Tunnel messages the runtime sent for request `id`.
size_t SentFor(const RuntimeHarness& h, const latest::MessageId& id) {
  size_t n = 0;
  for (const auto& s : h.tunnel_log) {
    if (s.message.message_id.request_id == id.request_id) ++n;
  }
  return n;
}

TEST(RequestAbortState, CallbacksRunOnceInOrderAndLateOnesAtOnce) {
  SetLogLevel(LogLevel::kError);
  runtime::RequestAbort abort;
  std::vector<int> order;
  abort.Listen([&] { order.push_back(1); });
  abort.Listen([&] { throw std::runtime_error("a throwing callback"); });
  abort.Listen([&] { order.push_back(3); });
  abort.Listen(nullptr);  // ignored
  EXPECT_FALSE(abort.aborted());
  EXPECT_TRUE(order.empty());
  abort.Fire();
  EXPECT_TRUE(abort.aborted());
  EXPECT_EQ(order, (std::vector<int>{1, 3})) << "a throwing callback stops none of the others";
  abort.Fire();
  EXPECT_EQ(order, (std::vector<int>{1, 3})) << "a second abort calls nobody again";
  abort.Listen([&] { order.push_back(4); });
  EXPECT_EQ(order, (std::vector<int>{1, 3, 4}));
}

TEST(RequestAbortState, ASettledRequestIsNeverAbortedAndDropsItsCallbacks) {
  runtime::RequestAbort abort;
  auto held = std::make_shared<int>(0);
  abort.Listen([held] { ++*held; });
  EXPECT_EQ(held.use_count(), 2);
  abort.Settle();  // its response went out
  EXPECT_EQ(held.use_count(), 1) << "the callbacks outlive the request's end";
  abort.Fire();
  EXPECT_FALSE(abort.aborted());
  abort.Listen([held] { ++*held; });
  EXPECT_EQ(*held, 0);
  EXPECT_EQ(held.use_count(), 1);
}

TEST(RequestAbortState, CopiesOfARequestShareItAndPlainRequestsHaveNone) {
  Request plain;
  int called = 0;
  plain.OnAbort([&] { ++called; });  // never called: nothing can abort it
  EXPECT_FALSE(plain.aborted());

  Request served;
  served.abort_state = std::make_shared<runtime::RequestAbort>();
  const Request copy = served;
  copy.OnAbort([&] { ++called; });
  served.abort_state->Fire();
  EXPECT_TRUE(copy.aborted());
  EXPECT_TRUE(served.aborted());
  EXPECT_EQ(called, 1);
}

TEST(RuntimeRequestAbort, ARunningHandlerLearnsOfTheAbortAndItsResponseIsDropped) {
  auto probe = std::make_shared<Probe>();
  RuntimeHarness h;
  h.Boot({WaiterDef(probe).type()});
  h.StartActor("a1", "counter");
  auto id = h.Http("a1", "GET", "/request/wait");
  EXPECT_EQ(SentFor(h, id), 0u) << "the handler is still waiting";
  EXPECT_EQ(probe->callbacks, 0);

  SendAbort(h, id);
  EXPECT_EQ(probe->callbacks, 1) << "the waiting handler's callback ran on the abort";
  EXPECT_EQ(SentFor(h, id), 0u);

  probe->release.Resolve(true);
  h.Pump();
  EXPECT_TRUE(probe->aborted_when_resumed);
  EXPECT_EQ(probe->late_callbacks, 1) << "a callback registered after the abort runs at once";
  EXPECT_EQ(probe->callbacks, 1);
  EXPECT_EQ(SentFor(h, id), 0u) << "the aborted request's response went out";
  // What the handler changed after the abort is saved all the same.
  ASSERT_TRUE(h.PersistedState("a1").has_value());
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 100}}));

  // The actor serves the next request, and once idle it still asks to sleep.
  auto next = h.Http("a1", "GET", "/request/quick");
  EXPECT_EQ(h.Status(next), 200);
  EXPECT_EQ(h.Body(next), "quick");
  h.Advance(1000ms);
  auto intents = h.EventsOf<latest::EventActorIntent>("a1");
  ASSERT_EQ(intents.size(), 1u) << "the aborted request kept the actor awake";
  EXPECT_TRUE(intents[0].intent.is<latest::ActorIntentSleep>());
}

TEST(RuntimeRequestAbort, AnAbortWhileTheResponseWaitsForItsWriteDropsTheResponse) {
  auto probe = std::make_shared<Probe>();
  RuntimeHarness h;
  h.Boot({WaiterDef(probe).type()});
  h.StartActor("a1", "counter");
  h.hold_kv = true;
  auto id = h.Http("a1", "GET", "/request/quick");
  ASSERT_GE(h.held_kv(), 1u) << "the handler's write is not committed yet";
  EXPECT_EQ(SentFor(h, id), 0u) << "the response waits for the write";
  SendAbort(h, id);
  EXPECT_EQ(probe->callbacks, 1);
  h.hold_kv = false;
  h.ReleaseKv();
  EXPECT_EQ(SentFor(h, id), 0u) << "the gate released an aborted request's response";
  EXPECT_EQ(*h.PersistedState("a1"), Value::Object({{"count", 1}}));
}

TEST(RuntimeRequestAbort, AnAbortAfterTheResponseChangesNothing) {
  auto probe = std::make_shared<Probe>();
  RuntimeHarness h;
  h.Boot({WaiterDef(probe).type()});
  h.StartActor("a1", "counter");
  auto id = h.Http("a1", "GET", "/request/quick");
  EXPECT_EQ(h.Body(id), "quick");
  SendAbort(h, id);  // crossed the response on the way: dropped
  EXPECT_EQ(probe->callbacks, 0) << "a request whose response went out was told of an abort";
  EXPECT_EQ(SentFor(h, id), 1u);

  // An abort for a request the actor never saw, and for an action, are ignored too.
  latest::MessageId unknown = h.NextMessageId();
  SendAbort(h, unknown);
  auto action = h.Action("a1", "getCount", "[]");
  SendAbort(h, action);
  EXPECT_EQ(h.Body(action), R"({"output":1})");
  EXPECT_EQ(h.Body(h.Http("a1", "GET", "/request/again")), "quick");
}

}  // namespace
}  // namespace keel
