// actors.md §8.40 raw-websocket: handle.webSocket() to onWebSocket — welcome, echo, ping,
// several sockets, binary payloads, custom paths and queries, close handling, async open,
// c.conn in onWebSocket, a forced sleep closing a non-hibernatable socket cleanly.
// Runs once (bare client): raw WebSocket frames do not depend on the client encoding.
// The ack-state checks need hibernatable raw WebSockets: native only (not in wasm, as in
// Rivet).
#include <variant>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;
using Ws = std::unique_ptr<net::BlockingWsClient>;

// The next text/binary message (a test failure on timeout or close).
std::optional<net::BlockingWsClient::Message> NextMessage(net::BlockingWsClient& ws,
                                                          std::chrono::milliseconds timeout = 5s) {
  auto ev = ws.Receive(timeout);
  if (!ev.has_value()) {
    ADD_FAILURE() << "no message: " << ev.error().ToString();
    return std::nullopt;
  }
  if (auto* m = std::get_if<net::BlockingWsClient::Message>(&*ev)) return *m;
  auto& closed = std::get<net::BlockingWsClient::Closed>(*ev);
  ADD_FAILURE() << "closed (" << closed.code << " " << closed.reason << ") instead of a message";
  return std::nullopt;
}


// Waits for the Closed event; nullopt on timeout.
std::optional<net::BlockingWsClient::Closed> WaitClosed(net::BlockingWsClient& ws, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto ev = ws.Receive(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
    if (!ev.has_value()) return std::nullopt;
    if (auto* c = std::get_if<net::BlockingWsClient::Closed>(&*ev)) return *c;
  }
  return std::nullopt;
}

class RawWebSocketTest : public PlainTest {
 protected:
  Ws Open(client::ActorHandle& h, std::string_view path = "") {
    auto ws = h.WebSocket(path);
    if (!ws.has_value()) {
      ADD_FAILURE() << "webSocket(" << path << "): " << ws.error().ToString();
      throw TestAbort();
    }
    return std::move(*ws);
  }
  client::ActorHandle Actor(const std::string& key) { return client().GetOrCreate("rawWebSocketActor", {key}); }
};

TEST_F(RawWebSocketTest, WelcomeWithConnectionCount) {
  auto h = Actor(UniqueKey("rws-welcome"));
  auto ws = Open(h);
  json w = NextWsJson(*ws);
  EXPECT_EQ(w["type"], "welcome");
  EXPECT_EQ(w["connectionCount"], 1);
}

TEST_F(RawWebSocketTest, EchoesJsonMessages) {
  auto h = Actor(UniqueKey("rws-echo"));
  auto ws = Open(h);
  NextWsJson(*ws);
  const json msg = {{"hello", "world"}, {"n", 42}};
  ASSERT_TRUE(ws->Send(msg.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws), msg);
}

TEST_F(RawWebSocketTest, PingPong) {
  auto h = Actor(UniqueKey("rws-ping"));
  auto ws = Open(h);
  NextWsJson(*ws);
  ASSERT_TRUE(ws->Send(json{{"type", "ping"}}.dump(), false).ok());
  json pong = NextWsJson(*ws);
  EXPECT_EQ(pong["type"], "pong");
  EXPECT_TRUE(pong["timestamp"].is_number()) << pong.dump();
}

TEST_F(RawWebSocketTest, TwoSocketsShareStats) {
  const std::string key = UniqueKey("rws-stats");
  auto h1 = client().GetOrCreate("rawWebSocketActor", {key});
  auto ws1 = Open(h1);
  EXPECT_EQ(NextWsJson(*ws1)["connectionCount"], 1);
  auto h2 = client().Get("rawWebSocketActor", {key});
  auto ws2 = Open(h2);
  EXPECT_EQ(NextWsJson(*ws2)["connectionCount"], 2);
  ASSERT_TRUE(ws1->Send(json{{"type", "noop"}}.dump(), false).ok());
  NextWsJson(*ws1);
  ASSERT_TRUE(ws2->Send(json{{"type", "noop"}}.dump(), false).ok());
  NextWsJson(*ws2);
  ASSERT_TRUE(ws1->Send(json{{"type", "getStats"}}.dump(), false).ok());
  json stats = NextWsJson(*ws1);
  EXPECT_EQ(stats["type"], "stats");
  EXPECT_EQ(stats["connectionCount"], 2);
  EXPECT_EQ(stats["messageCount"], 3);  // every inbound message, both sockets
  json via_action = AsJson(KEEL_OK(h1.Call("getStats")));
  EXPECT_EQ(via_action["connectionCount"], 2);
  EXPECT_EQ(via_action["messageCount"], 3);
}

TEST_F(RawWebSocketTest, BinaryPayloadsAreReversed) {
  auto h = client().GetOrCreate("rawWebSocketBinaryActor", {UniqueKey("rws-binary")});
  auto ws = Open(h);
  ASSERT_TRUE(ws->Send(std::string("\x01\x02\x03\x04\x05", 5), true).ok());
  auto m = NextMessage(*ws);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->binary);
  EXPECT_EQ(m->data, std::string("\x05\x04\x03\x02\x01", 5));
  std::string big(1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 256);
  ASSERT_TRUE(ws->Send(big, true).ok());
  auto m2 = NextMessage(*ws);
  ASSERT_TRUE(m2.has_value());
  EXPECT_EQ(m2->data, std::string(big.rbegin(), big.rend()));
}

TEST_F(RawWebSocketTest, CustomPathReachesOnWebSocket) {
  auto h = Actor(UniqueKey("rws-path"));
  auto ws = Open(h, "custom/path");
  EXPECT_EQ(NextWsJson(*ws)["type"], "welcome");
  ASSERT_TRUE(ws->Send(json{{"type", "getRequestInfo"}}.dump(), false).ok());
  json info = NextWsJson(*ws);
  EXPECT_NE(info["url"].get<std::string>().find("custom/path"), std::string::npos) << info.dump();
}

TEST_F(RawWebSocketTest, CloseDecrementsConnectionCount) {
  auto h = Actor(UniqueKey("rws-close"));
  auto ws1 = Open(h);
  EXPECT_EQ(NextWsJson(*ws1)["connectionCount"], 1);
  auto ws2 = Open(h);
  EXPECT_EQ(NextWsJson(*ws2)["connectionCount"], 2);
  ws1->Close();
  EXPECT_TRUE(WaitFor([&] { return AsJson(KEEL_OK(h.Call("getStats")))["connectionCount"] == 1; }, 5s));
  ws2->Close();
  EXPECT_TRUE(WaitFor([&] { return AsJson(KEEL_OK(h.Call("getStats")))["connectionCount"] == 0; }, 5s));
}

TEST_F(RawWebSocketTest, AsyncOpenHandler) {
  auto h = client().GetOrCreate("rawWebSocketAsyncOpenActor", {UniqueKey("rws-async-open")});
  auto ws = Open(h);
  json m = NextWsJson(*ws);
  EXPECT_EQ(m, json({{"type", "async-open"}, {"openCount", 1}}));
}

TEST_F(RawWebSocketTest, ConnContextInOnWebSocket) {
  auto h = client().GetOrCreate("rawWebSocketConnContextActor", {UniqueKey("rws-conn")});
  auto ws = Open(h);
  json m = NextWsJson(*ws);
  EXPECT_EQ(m["type"], "connContext");
  EXPECT_TRUE(m["hasConn"].get<bool>());
  EXPECT_TRUE(m["connId"].is_string() && !m["connId"].get<std::string>().empty()) << m.dump();
  EXPECT_TRUE(m["stateAssigned"].get<bool>());
}

// rawWebSocketAsyncOpenActor's sockets do not hibernate (rawWebSocketActor's do).
TEST_F(RawWebSocketTest, ForcedSleepClosesCleanly) {
  auto h = client().GetOrCreate("rawWebSocketAsyncOpenActor", {UniqueKey("rws-sleep")});
  auto ws = Open(h);
  EXPECT_EQ(NextWsJson(*ws)["type"], "async-open");
  const std::string id = KEEL_OK(h.Resolve());
  KEEL_STATUS_OK(client().SleepActor(id));
  auto closed = WaitClosed(*ws, 10s);
  ASSERT_TRUE(closed.has_value()) << "the socket was not closed by the sleep";
  EXPECT_NE(closed->code, 1006) << closed->reason;
  EXPECT_FALSE(ws->Send("after close", false).ok());
}

TEST_F(RawWebSocketTest, QueryPreservedWithPath) {
  auto h = Actor(UniqueKey("rws-query"));
  auto ws = Open(h, "api/v1/stream?token=abc123&user=test");
  NextWsJson(*ws);
  ASSERT_TRUE(ws->Send(json{{"type", "getRequestInfo"}}.dump(), false).ok());
  json info = NextWsJson(*ws);
  const std::string url = info["url"].get<std::string>();
  EXPECT_NE(url.find("api/v1/stream"), std::string::npos) << url;
  EXPECT_NE(url.find("token=abc123"), std::string::npos) << url;
  EXPECT_NE(url.find("user=test"), std::string::npos) << url;
}

TEST_F(RawWebSocketTest, QueryOnly) {
  auto h = Actor(UniqueKey("rws-query-only"));
  auto ws = Open(h, "?token=secret&session=123");
  EXPECT_EQ(NextWsJson(*ws)["type"], "welcome");
  ASSERT_TRUE(ws->Send(json{{"type", "getRequestInfo"}}.dump(), false).ok());
  json info = NextWsJson(*ws);
  const std::string url = info["url"].get<std::string>();
  EXPECT_NE(url.find("token=secret"), std::string::npos) << url;
  EXPECT_NE(url.find("session=123"), std::string::npos) << url;
}

TEST_F(RawWebSocketTest, IndexedEchoStrictlyIncreasing) {
  auto h = Actor(UniqueKey("rws-indexed"));
  auto ws = Open(h);
  NextWsJson(*ws);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", i}}.dump(), false).ok());
    json echo = NextWsJson(*ws);
    EXPECT_EQ(echo["payload"], i);
    EXPECT_EQ(echo["rivetMessageIndex"], i) << "indexes start at 1 and grow by one per client message";
  }
  // The actor handled them in that order too.
  ASSERT_TRUE(ws->Send(json{{"type", "getIndexedMessageOrder"}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws), json({{"type", "indexedMessageOrder"}, {"order", {1, 2, 3}}}));
}

TEST_F(RawWebSocketTest, AckStateAfterOneMessage) {
  if (RuntimeKind() == "wasm") {
    GTEST_SKIP() << "not applicable: the wasm runtime has no hibernatable raw WebSockets (actors.md §3.6)";
  }
  auto h = Actor(UniqueKey("rws-ack"));
  auto ws = Open(h);
  NextWsJson(*ws);
  ASSERT_TRUE(ws->Send(json{{"type", "indexedEcho"}, {"payload", 1}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws)["rivetMessageIndex"], 1);
  ASSERT_TRUE(ws->Send(json{{"__rivetkitTestHibernatableAckStateV1", true}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws), json({{"lastSentIndex", 1}, {"lastAckedIndex", 1}, {"pendingIndexes", json::array()}}));
}

// Rivet batches acks (flushed at 500000 bytes of acked payload or after 5 s) and acks a
// single message over that threshold promptly; Keel acks every message once handled, so a
// 508000-byte message is acknowledged before the next message is read.
TEST_F(RawWebSocketTest, LargeMessageAckedPromptly) {
  if (RuntimeKind() == "wasm") {
    GTEST_SKIP() << "not applicable: the wasm runtime has no hibernatable raw WebSockets (actors.md §3.6)";
  }
  auto h = Actor(UniqueKey("rws-large"));
  auto ws = Open(h);
  NextWsJson(*ws);
  const std::string big(508000, 'x');
  ASSERT_TRUE(ws->Send(big, false).ok());
  auto echo = NextMessage(*ws);
  ASSERT_TRUE(echo.has_value());
  EXPECT_EQ(echo->data.size(), big.size());
  ASSERT_TRUE(ws->Send(json{{"__rivetkitTestHibernatableAckStateV1", true}}.dump(), false).ok());
  EXPECT_EQ(NextWsJson(*ws), json({{"lastSentIndex", 1}, {"lastAckedIndex", 1}, {"pendingIndexes", json::array()}}));
}

}  // namespace
}  // namespace keel::acceptance
