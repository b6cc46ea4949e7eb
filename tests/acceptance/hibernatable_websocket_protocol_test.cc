// actors.md §8.35 hibernatable-websocket-protocol. Runs once (bare client).
//
// The first two checks exercise hibernatable *raw* WebSockets (message indexes, acks,
// replay of the unacknowledged frames after a wake). The C++ runtime closes raw sockets on
// sleep and does not expose message indexes (docs/runtime.md "Not yet"), so they are
// KNOWN GAP skips; the first still checks what does hold today (the socket closes cleanly
// on sleep instead of hibernating). The stale-connection cleanup check uses hibernatable
// /connect connections, which the C++ runtime supports.
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

TEST_F(HibernatableWebSocketProtocolTest, MessageIndexesAndAcks) {
  auto h = client().GetOrCreate("rawWebSocketActor", {UniqueKey("hws-index")});
  auto ws = KEEL_OK(h.WebSocket());
  auto first = ws->Receive(5s);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 1}}.dump(), false).ok());
  auto echo = ws->Receive(5s);
  ASSERT_TRUE(echo.has_value()) << echo.error().ToString();
  auto* m = std::get_if<net::BlockingWsClient::Message>(&*echo);
  ASSERT_NE(m, nullptr);
  json j = ParseBody(m->data);
  if (!j["rivetMessageIndex"].is_number()) {
    GTEST_SKIP() << "KNOWN GAP: raw WebSocket handlers get no rivetMessageIndex and the ack probe is not "
                    "implemented; expected index 1 and ack state {lastSentIndex:1, lastAckedIndex:1, "
                    "pendingIndexes:[]}";
  }
  EXPECT_EQ(j["rivetMessageIndex"], 1);
}

TEST_F(HibernatableWebSocketProtocolTest, BufferedMessagesReplayedAfterWake) {
  // What holds today: scheduleSleep puts the actor to sleep and the raw socket is closed
  // cleanly (not hibernated).
  auto h = client().GetOrCreate("rawWebSocketActor", {UniqueKey("hws-replay")});
  auto ws = KEEL_OK(h.WebSocket());
  ASSERT_TRUE(ws->Receive(5s).has_value());
  ASSERT_TRUE(ws->Send(json{{"type", "scheduleSleep"}}.dump(), false).ok());
  bool closed = false;
  uint16_t code = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!closed && std::chrono::steady_clock::now() < deadline) {
    auto ev = ws->Receive(1s);
    if (!ev.has_value()) continue;
    if (auto* c = std::get_if<net::BlockingWsClient::Closed>(&*ev)) {
      closed = true;
      code = c->code;
    }
  }
  if (closed) {
    EXPECT_NE(code, 1006);
    GTEST_SKIP() << "KNOWN GAP: raw WebSockets do not hibernate (closed with " << code
                 << " on sleep); expected the socket to stay open, the two indexedEcho messages sent while "
                    "asleep to arrive after the wake with indexes 3 and 4, ack state 4/4/[], and the actor's "
                    "indexed order [1, 3, 4]";
  }
  ADD_FAILURE() << "the raw socket neither hibernated with indexes nor closed on sleep";
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
