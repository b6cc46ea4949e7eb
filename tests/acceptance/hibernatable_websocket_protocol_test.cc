// actors.md §8.35 hibernatable-websocket-protocol. Runs once (bare client).
//
// The first two checks exercise hibernatable *raw* WebSockets (message indexes, the ack
// probe, replay of the unacknowledged frames after a wake): native only, as in Rivet (the
// wasm runtime has none). The stale-connection cleanup check uses hibernatable /connect
// connections.
#include <variant>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class HibernatableWebSocketProtocolTest : public PlainTest {
 protected:
  int64_t NoteCount(const std::string& actor_id, const std::string& entry) {
    return client().GetOrCreate("observer", {"observer"}).Call<int64_t>("count", actor_id, entry).value_or(-1);
  }
};

const std::string kAckProbe = json{{"__rivetkitTestHibernatableAckStateV1", true}}.dump();

TEST_F(HibernatableWebSocketProtocolTest, MessageIndexesAndAcks) {
  if (RuntimeKind() == "wasm") {
    GTEST_SKIP() << "not applicable: the wasm runtime has no hibernatable raw WebSockets (actors.md §3.6)";
  }
  auto h = client().GetOrCreate("rawWebSocketActor", {UniqueKey("hws-index")});
  auto ws = KEEL_OK(h.WebSocket());
  EXPECT_EQ(NextWsJson(*ws)["type"], "welcome");
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 1}}.dump(), false).ok());
  json echo = NextWsJson(*ws);
  EXPECT_EQ(echo["payload"], 1);
  EXPECT_EQ(echo["rivetMessageIndex"], 1);
  // The probe (index 2) reports the runtime's bookkeeping before it: 1 received, 1 acked.
  ASSERT_TRUE(ws->Send(kAckProbe, false).ok());
  EXPECT_EQ(NextWsJson(*ws), json({{"lastSentIndex", 1}, {"lastAckedIndex", 1}, {"pendingIndexes", json::array()}}));
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 2}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws)["rivetMessageIndex"], 3) << "the probe consumed index 2";
}

TEST_F(HibernatableWebSocketProtocolTest, BufferedMessagesReplayedAfterWake) {
  if (RuntimeKind() == "wasm") {
    GTEST_SKIP() << "not applicable: the wasm runtime has no hibernatable raw WebSockets (actors.md §3.6)";
  }
  auto h = client().GetOrCreate("rawWebSocketActor", {UniqueKey("hws-replay")});
  auto ws = KEEL_OK(h.WebSocket());
  EXPECT_EQ(NextWsJson(*ws)["type"], "welcome");
  const std::string id = KEEL_OK(h.Resolve());
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 1}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws)["rivetMessageIndex"], 1);
  // Index 2: the actor answers, then sleeps; the socket stays open at the gateway.
  ASSERT_TRUE(ws->Send(json{{"type", "scheduleSleep"}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws)["type"], "sleepScheduled");
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s)) << "the actor did not sleep";
  // Sent while it sleeps: they wake it and arrive exactly once, with their own indexes.
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 3}}.dump(), false).ok());
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 4}}.dump(), false).ok());
  json a = NextWsJson(*ws);
  json b = NextWsJson(*ws);
  EXPECT_EQ(a["payload"], 3);
  EXPECT_EQ(a["rivetMessageIndex"], 3);
  EXPECT_EQ(b["payload"], 4);
  EXPECT_EQ(b["rivetMessageIndex"], 4);
  EXPECT_GE(NoteCount(id, "wake"), 2) << "the messages were handled by a new instance";
  // The probe (index 5) reports everything before it acknowledged.
  ASSERT_TRUE(ws->Send(kAckProbe, false).ok());
  EXPECT_EQ(NextWsJson(*ws), json({{"lastSentIndex", 4}, {"lastAckedIndex", 4}, {"pendingIndexes", json::array()}}));
  // Nothing acknowledged was replayed, and nothing was handled twice.
  ASSERT_TRUE(ws->Send(json{{"type", "getIndexedMessageOrder"}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws)["order"], json({1, 3, 4}));
}

TEST_F(HibernatableWebSocketProtocolTest, StaleConnectionCleanedUpAtWake) {
  const std::string key = UniqueKey("hws-stale");
  auto conn = client().GetOrCreate("fileSystemHibernationCleanupActor", {key}).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<std::string>("ping")), "pong");
  const std::string id = conn->actor_id();
  KEEL_OK(conn->Call("triggerSleep"));
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "sleep") >= 1; }, 10s));
  SleepMs(200);
  conn->Dispose();  // while the actor sleeps
  SleepMs(100);
  auto fresh = client().GetOrCreate("fileSystemHibernationCleanupActor", {key}).Connect();
  KEEL_STATUS_OK(fresh->WaitReady());
  json counts;
  ASSERT_TRUE(WaitFor(
      [&] {
        counts = AsJson(KEEL_OK(fresh->Call("getCounts")));
        return counts["disconnectWakeCounts"].size() >= 1;
      },
      5s))
      << counts.dump();
  EXPECT_GE(counts["sleepCount"].get<int64_t>(), 1);
  EXPECT_GE(counts["wakeCount"].get<int64_t>(), 2);
  // onDisconnect for the stale connection ran during the restore, after onWake.
  EXPECT_EQ(counts["disconnectWakeCounts"], json({2})) << counts.dump();
  fresh->Dispose();
}

}  // namespace
}  // namespace keel::acceptance
