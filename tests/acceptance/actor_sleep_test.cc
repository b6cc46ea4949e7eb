// actors.md §8.26 actor-sleep: idle sleep after sleepTimeout (1000 ms), what keeps an actor
// awake (actions, connections, alarms firing before the timeout, long actions, raw
// WebSockets and HTTP requests, async raw-WebSocket handlers, noSleep) and what does not (a
// pending alarm due after the timeout), waitUntil/keepAwake, and messages sent from onSleep.
// Runs once (bare client): timing checks use the spec's margins.
//
// "Has it slept?" is read from the Observer notes fixtures write in onSleep, so checking
// does not wake the actor; counters read through actions wake it (as in Rivet).
// Adapted: Rivet's listener vs property styles for raw-WebSocket handlers are one API in C++
// (ws.on_message / ws.on_close), so each is checked once; waitUntil/keepAwake promises that
// resolve to undefined or to a value are both Task<void>.
#include <atomic>
#include <future>
#include <mutex>
#include <variant>

#include "support/acceptance.h"
#include "support/db_cells.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

constexpr int kSleepTimeoutMs = 1000;

std::optional<json> NextJson(net::BlockingWsClient& ws, std::chrono::milliseconds timeout = 5s) {
  auto ev = ws.Receive(timeout);
  if (!ev.has_value()) return std::nullopt;
  if (auto* m = std::get_if<net::BlockingWsClient::Message>(&*ev)) return ParseBody(m->data);
  return std::nullopt;
}

class ActorSleepTest : public PlainTest {
 protected:
  int64_t NoteCount(const std::string& actor_id, const std::string& entry) {
    return client().GetOrCreate("observer", {"observer"}).Call<int64_t>("count", actor_id, entry).value_or(-1);
  }
  bool WaitSlept(const std::string& id, int64_t n, std::chrono::milliseconds timeout = 10s) {
    return WaitFor([&] { return NoteCount(id, "sleep") >= n; }, timeout);
  }
  // An async raw-WebSocket handler of 250 ms on an actor with sleepTimeout 100: the actor
  // sleeps only after the handler noted `finished`. (Were the handler ignored, the sleep
  // would come ~100 ms after it started, while it still runs.) Checked by the order of the
  // notes rather than by probing at a set time, which a loaded machine can overrun.
  void ExpectSleepAfter(const std::string& id, const std::string& finished) {
    ASSERT_TRUE(WaitSlept(id, 1, 5s));
    const auto notes = db::Notes(client(), id);
    const int64_t done = db::IndexOf(notes, finished);
    ASSERT_GE(done, 0) << "the handler never finished; " << db::NotesText(notes);
    EXPECT_LT(done, db::IndexOf(notes, "sleep")) << "the actor slept while its handler ran; " << db::NotesText(notes);
  }
  json Counts(client::ActorHandle& h) { return AsJson(KEEL_OK(h.Call("getCounts"))); }
  static void ExpectCounts(const json& c, int64_t start, int64_t sleep) {
    EXPECT_EQ(c["startCount"], start) << c.dump();
    EXPECT_EQ(c["sleepCount"], sleep) << c.dump();
  }
};

TEST_F(ActorSleepTest, TriggerSleepThenWake) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-trigger")});
  const std::string id = KEEL_OK(h.Resolve());
  ExpectCounts(Counts(h), 1, 0);
  KEEL_OK(h.Call("triggerSleep"));
  SleepMs(250);
  ASSERT_TRUE(WaitSlept(id, 1));
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, SelfInitiatedSleepFromRunPersistsState) {
  auto h = client().GetOrCreate("runSelfInitiatedSleep", {UniqueKey("sleep-run")});
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(WaitSlept(id, 1));
  json s;
  ASSERT_TRUE(WaitFor(
      [&] {
        s = AsJson(KEEL_OK(h.Call("getState")));
        return s["wakeCount"].get<int64_t>() >= 2;
      },
      10s));
  EXPECT_EQ(s["marker"], "slept") << "state written before c.sleep() survived";
  EXPECT_EQ(s["sleepCount"], 1);
}

TEST_F(ActorSleepTest, IdleSleepAfterTimeout) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-idle")});
  const std::string id = KEEL_OK(h.Resolve());
  ExpectCounts(Counts(h), 1, 0);
  SleepMs(kSleepTimeoutMs - 250);
  EXPECT_EQ(NoteCount(id, "sleep"), 0) << "slept before its timeout";
  EXPECT_TRUE(WaitSlept(id, 1, 5s));
  EXPECT_EQ(NoteCount(id, "sleep"), 1);
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, OpenConnectionPreventsSleep) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-conn")});
  const std::string id = KEEL_OK(h.Resolve());
  auto conn = h.Connect();
  ExpectCounts(AsJson(KEEL_OK(conn->Call("getCounts"))), 1, 0);
  SleepMs(kSleepTimeoutMs + 250);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  ExpectCounts(AsJson(KEEL_OK(conn->Call("getCounts"))), 1, 0);
  conn->Dispose();
  SleepMs(kSleepTimeoutMs + 250);
  EXPECT_TRUE(WaitSlept(id, 1, 2s));
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, WaitUntilSendsToTheCallerBeforeShutdown) {
  const std::string key = UniqueKey("sleep-waituntil-msg");
  std::mutex mu;
  std::vector<json> events;
  auto conn = client().GetOrCreate("sleepWithWaitUntilMessage", {key}).Connect([&](client::ActorConn& c) {
    c.On("sleeping", [&](const Value& a) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(AsJson(a));
    });
  });
  ExpectCounts(AsJson(KEEL_OK(conn->Call("getCounts"))), 1, 0);
  const std::string id = conn->actor_id();
  KEEL_OK(conn->Call("triggerSleepWithWaitUntil"));
  ASSERT_TRUE(WaitSlept(id, 1));
  const bool got = WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return !events.empty();
      },
      2s);
  conn->Dispose();
  if (!got) {
    FAIL() << "an event sent from a waitUntil task (10 ms after c.sleep()) to the calling "
                    "connection never reached the client; expected exactly one `sleeping` event [1]";
  }
  SleepMs(100);
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(events.size(), 1u) << "exactly one `sleeping` event";
    EXPECT_EQ(events[0], json({1}));  // startCount of the instance that slept
  }
  auto fresh = client().GetOrCreate("sleepWithWaitUntilMessage", {key}).Connect();
  ExpectCounts(AsJson(KEEL_OK(fresh->Call("getCounts"))), 2, 1);
  fresh->Dispose();
}

TEST_F(ActorSleepTest, WaitUntilInOnWake) {
  auto h = client().GetOrCreate("sleepWithWaitUntilInOnWake", {UniqueKey("sleep-wake-waituntil")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getCounts")))["startCount"], 1);
  EXPECT_TRUE(WaitFor([&] { return NoteCount(id, "waitUntilDone") >= 1; }, 5s));
}

TEST_F(ActorSleepTest, WaitUntilResolvingOrRejectingIsHarmless) {
  auto h = client().GetOrCreate("counterWaitUntilProbe", {UniqueKey("sleep-waituntil-probe")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("waitUntilResolves")), "ok");
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("waitUntilRejects")), "ok");
  SleepMs(50);  // the rejected task settled (logged "actor wait_until promise rejected")
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment")), 1);
}

TEST_F(ActorSleepTest, KeepAwakeIsHarmless) {
  auto h = client().GetOrCreate("counterWaitUntilProbe", {UniqueKey("sleep-keepawake-probe")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("keepAwakeResolves")), "ok");
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment")), 1);
}

TEST_F(ActorSleepTest, ActionsResetTheIdleTimer) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-reset")});
  const std::string id = KEEL_OK(h.Resolve());
  ExpectCounts(Counts(h), 1, 0);
  SleepMs(750);
  ExpectCounts(Counts(h), 1, 0);
  SleepMs(750);
  ExpectCounts(Counts(h), 1, 0);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  EXPECT_TRUE(WaitSlept(id, 1, 5s));
  EXPECT_EQ(NoteCount(id, "sleep"), 1);
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, AlarmBeforeTimeoutCountsAsActivity) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-alarm-early")});
  const std::string id = KEEL_OK(h.Resolve());
  KEEL_OK(h.Call("setAlarm", 750));
  SleepMs(1250);
  EXPECT_EQ(NoteCount(id, "alarm"), 1);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  ExpectCounts(Counts(h), 1, 0);
}

TEST_F(ActorSleepTest, AlarmAfterTimeoutDoesNotKeepAwake) {
  auto h = client().GetOrCreate("sleep", {UniqueKey("sleep-alarm-late")});
  const std::string id = KEEL_OK(h.Resolve());
  KEEL_OK(h.Call("setAlarm", 1250));
  // The spec checks at 1200 ms; under a loaded CI machine the check waits for the first
  // sleep instead and asserts the order of the actor's own notes: it slept before the alarm
  // ran (had the pending alarm kept it awake, the alarm would run at 1250 ms and the sleep
  // ~1 s later). The order is read from the notes, not from when a poll saw them: a slow
  // poll may see the sleep and the alarm (which wakes the actor) at once.
  ASSERT_TRUE(WaitSlept(id, 1, 5s));
  const json notes = AsJson(KEEL_OK(
      client().GetOrCreate("observer", {"observer"}).Call("notes", id)));
  ASSERT_TRUE(notes.is_array()) << notes.dump();
  const auto first = [&](const std::string& entry) {
    for (size_t i = 0; i < notes.size(); ++i) {
      if (notes[i] == entry) return static_cast<long>(i);
    }
    return static_cast<long>(notes.size());
  };
  EXPECT_LT(first("sleep"), first("alarm")) << "slept before the alarm was due: " << notes.dump();
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, LongActionKeepsAwake) {
  const std::string key = UniqueKey("sleep-long-rpc");
  std::promise<void> waiting;
  std::atomic<bool> fired{false};
  auto h = client().GetOrCreate("sleepWithLongRpc", {key});
  const std::string id = KEEL_OK(h.Resolve());
  auto conn = h.Connect([&](client::ActorConn& c) {
    c.On("waiting", [&](const Value&) {
      if (!fired.exchange(true)) waiting.set_value();
    });
  });
  std::promise<client::ClientResult<Value>> done;
  KEEL_STATUS_OK(conn->WaitReady());
  conn->ActionAsync("longRunningRpc", Value(Value::Array{}),
                    [&](client::ClientResult<Value> r) { done.set_value(std::move(r)); });
  ASSERT_EQ(waiting.get_future().wait_for(5s), std::future_status::ready);
  SleepMs(kSleepTimeoutMs + 250);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  EXPECT_TRUE(KEEL_OK(h.Call<bool>("finishLongRunningRpc")));
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(5s), std::future_status::ready);
  auto r = fut.get();
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(AsJson(*r), json("complete"));
  conn->Dispose();
  EXPECT_TRUE(WaitSlept(id, 1, std::chrono::milliseconds(kSleepTimeoutMs + 2000)));
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, OpenRawWebSocketKeepsAwake) {
  auto h = client().GetOrCreate("sleepWithRawWebSocket", {UniqueKey("sleep-raw-ws")});
  const std::string id = KEEL_OK(h.Resolve());
  auto ws = KEEL_OK(h.WebSocket());
  auto hello = NextJson(*ws);
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ((*hello)["type"], "connected");
  SleepMs(kSleepTimeoutMs + 250);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  ASSERT_TRUE(ws->Send(json{{"type", "getCounts"}}.dump(), false).ok());
  auto counts = NextJson(*ws);
  ASSERT_TRUE(counts.has_value());
  EXPECT_EQ((*counts)["startCount"], 1);
  EXPECT_EQ((*counts)["sleepCount"], 0);
  ws->Close();
  ws.reset();
  EXPECT_TRUE(WaitSlept(id, 1, std::chrono::milliseconds(kSleepTimeoutMs + 2000)));
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, LongRawHttpRequestKeepsAwake) {
  auto h = client().GetOrCreate("sleepWithRawHttp", {UniqueKey("sleep-raw-http")});
  const std::string id = KEEL_OK(h.Resolve());
  auto res = KEEL_OK(h.Fetch("long-request?duration=" + std::to_string(kSleepTimeoutMs + 300)));
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(NoteCount(id, "sleep"), 0) << "the in-flight request kept the actor awake";
  EXPECT_TRUE(WaitSlept(id, 1, std::chrono::milliseconds(kSleepTimeoutMs + 2000)));
  ExpectCounts(Counts(h), 2, 1);
}

TEST_F(ActorSleepTest, NoSleepNeverSleeps) {
  auto h = client().GetOrCreate("sleepWithNoSleepOption", {UniqueKey("sleep-nosleep")});
  const std::string id = KEEL_OK(h.Resolve());
  ExpectCounts(Counts(h), 1, 0);
  SleepMs(2 * kSleepTimeoutMs + 250);
  EXPECT_EQ(NoteCount(id, "sleep"), 0);
  ExpectCounts(Counts(h), 1, 0);
}

TEST_F(ActorSleepTest, AsyncRawWsMessageHandlerDelaysSleep) {
  // sleepTimeout 100, handler 250 ms.
  auto h = client().GetOrCreate("sleepRawWsAsyncMessage", {UniqueKey("sleep-ws-msg")});
  const std::string id = KEEL_OK(h.Resolve());
  auto ws = KEEL_OK(h.WebSocket());
  ASSERT_TRUE(ws->Send("hello", false).ok());
  auto ev = ws->Receive(5s);
  ASSERT_TRUE(ev.has_value());
  ws->Close();
  ws.reset();
  ExpectSleepAfter(id, "message-finished");
  json c = Counts(h);
  ExpectCounts(c, 2, 1);
  EXPECT_EQ(c["messageStarted"], 1);
  EXPECT_EQ(c["messageFinished"], 1);
}

TEST_F(ActorSleepTest, AsyncRawWsCloseHandlerDelaysSleep) {
  auto h = client().GetOrCreate("sleepRawWsAsyncClose", {UniqueKey("sleep-ws-close")});
  const std::string id = KEEL_OK(h.Resolve());
  auto ws = KEEL_OK(h.WebSocket());
  ASSERT_TRUE(ws->Send("hello", false).ok());
  ASSERT_TRUE(ws->Receive(5s).has_value());
  ws->Close();
  ws.reset();
  ExpectSleepAfter(id, "close-finished");
  json c = Counts(h);
  ExpectCounts(c, 2, 1);
  EXPECT_EQ(c["closeStarted"], 1);
  EXPECT_EQ(c["closeFinished"], 1);
}

// onSleep messages the open raw sockets (directly, or after async delays).
void RunSendOnSleep(client::Client& client, const std::string& name) {
  {
    auto h = client.GetOrCreate(name, {UniqueKey("sleep-send-on-sleep")});
    KEEL_OK(h.Resolve());
    auto ws = KEEL_OK(h.WebSocket());
    auto hello = NextJson(*ws);
    ASSERT_TRUE(hello.has_value());
    KEEL_OK(h.Call("triggerSleep"));
    std::optional<json> got;
    std::optional<net::BlockingWsClient::Closed> closed;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!closed && std::chrono::steady_clock::now() < deadline) {
      auto ev = ws->Receive(1s);
      if (!ev.has_value()) continue;
      if (auto* m = std::get_if<net::BlockingWsClient::Message>(&*ev)) {
        got = ParseBody(m->data);
      } else {
        closed = std::get<net::BlockingWsClient::Closed>(*ev);
      }
    }
    ASSERT_TRUE(closed.has_value()) << "the socket closes when the actor sleeps";
    ASSERT_TRUE(got.has_value()) << "what onSleep sent never reached the client (closed with " << closed->code
                                 << "); raw sockets close after onSleep";
    EXPECT_EQ(closed->code, 1000);
    EXPECT_EQ(*got, json({{"type", "sleeping"}, {"sleepCount", 1}}));
  }
}

TEST_F(ActorSleepTest, OnSleepSendsOnRawWebSocket) { RunSendOnSleep(client(), "sleepRawWsSendOnSleep"); }
TEST_F(ActorSleepTest, OnSleepSendsOnRawWebSocketAfterDelay) {
  RunSendOnSleep(client(), "sleepRawWsDelayedSendOnSleep");
}

}  // namespace
}  // namespace keel::acceptance
