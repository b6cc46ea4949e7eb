// net::ConnectInProcess: a WebSocket to an HttpServer handler of this process, no socket.
#include "net/in_process.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace keel::net {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kWait{5000};

// Records one side's events and fails the test if they ever overlap or nest.
class Recorder final : public WsHandler {
 public:
  // Runs inside OnMessage, after the message was recorded (e.g. to answer).
  std::function<void(const std::string&)> on_message;

  void OnMessage(std::string data, bool binary) override {
    Enter();
    {
      std::lock_guard lock(mu_);
      messages_.push_back((binary ? "b:" : "t:") + data);
    }
    cv_.notify_all();
    if (on_message) on_message(data);
    Leave();
  }
  void OnClose(uint16_t code, std::string reason) override {
    Enter();
    {
      std::lock_guard lock(mu_);
      close_ = std::make_pair(code, std::move(reason));
      messages_at_close_ = messages_.size();
    }
    cv_.notify_all();
    Leave();
  }

  bool WaitMessages(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return messages_.size() >= n; });
  }
  bool WaitClose() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return close_.has_value(); });
  }
  std::vector<std::string> messages() {
    std::lock_guard lock(mu_);
    return messages_;
  }
  std::optional<std::pair<uint16_t, std::string>> close() {
    std::lock_guard lock(mu_);
    return close_;
  }
  size_t messages_at_close() {
    std::lock_guard lock(mu_);
    return messages_at_close_;
  }
  int overlaps() const { return overlaps_.load(); }

 private:
  void Enter() {
    if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
  }
  void Leave() { inside_.fetch_sub(1); }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> messages_;
  std::optional<std::pair<uint16_t, std::string>> close_;
  size_t messages_at_close_ = 0;
  std::atomic<int> inside_{0};
  std::atomic<int> overlaps_{0};
};

struct Connected {
  Result<std::shared_ptr<WsConnection>> conn = Error{"test", "unset", ""};
  HttpResponse handshake;
};

// Connects and waits for `done`.
Connected Connect(IoRuntime& rt, HttpServer::Handler server, std::shared_ptr<WsHandler> handler,
                  WsConnectOptions options = {}) {
  if (options.url.empty()) options.url = "ws://engine.local/envoys/connect?x=1";
  std::promise<Connected> p;
  ConnectInProcess(rt, std::move(server), std::move(options), std::move(handler),
                   [&p](Result<std::shared_ptr<WsConnection>> conn, HttpResponse handshake) {
                     p.set_value(Connected{std::move(conn), std::move(handshake)});
                   });
  auto f = p.get_future();
  if (f.wait_for(kWait) != std::future_status::ready) return Connected{};
  return f.get();
}

// A server that accepts every upgrade with `rivet` and echoes each message back with
// "echo:" in front; it keeps its side of the last connection and the request it saw.
struct EchoServer {
  std::shared_ptr<Recorder> handler = std::make_shared<Recorder>();
  std::mutex mu;
  std::shared_ptr<WsConnection> conn;
  HttpRequest request;

  HttpServer::Handler Handler() {
    return [this](std::shared_ptr<HttpExchange> ex) {
      {
        std::lock_guard lock(mu);
        request = ex->request();
      }
      auto c = ex->AcceptWebSocket("rivet", handler, {{"x-accepted", "yes"}});
      std::weak_ptr<WsConnection> weak = c;
      handler->on_message = [weak](const std::string& data) {
        if (auto c = weak.lock()) c->Send("echo:" + data, true);
      };
      std::lock_guard lock(mu);
      conn = std::move(c);
    };
  }
  std::shared_ptr<WsConnection> Conn() {
    std::lock_guard lock(mu);
    return conn;
  }
};

TEST(InProcessWs, TheServerSeesTheUpgradeAndMessagesFlowBothWaysInOrder) {
  IoRuntime rt(2);
  EchoServer server;
  auto client = std::make_shared<Recorder>();
  WsConnectOptions o;
  o.url = "ws://engine.local/envoys/connect?namespace=default";
  o.subprotocols = {"rivet", "rivet_token.abc"};
  o.headers = {{"x-keel-hold-outputs", "1"}};
  Connected c = Connect(rt, server.Handler(), client, o);
  ASSERT_TRUE(c.conn.ok()) << c.conn.error().ToString();
  EXPECT_EQ(c.handshake.status, 101);
  EXPECT_EQ(FindHeader(c.handshake.headers, "sec-websocket-protocol"), "rivet");
  EXPECT_EQ(FindHeader(c.handshake.headers, "x-accepted"), "yes");
  {
    std::lock_guard lock(server.mu);
    EXPECT_EQ(server.request.method, "GET");
    EXPECT_EQ(server.request.target, "/envoys/connect?namespace=default");
    EXPECT_EQ(server.request.remote_address, "in-process");
    EXPECT_EQ(FindHeader(server.request.headers, "sec-websocket-protocol"),
              "rivet, rivet_token.abc");
    EXPECT_EQ(FindHeader(server.request.headers, "x-keel-hold-outputs"), "1");
    EXPECT_EQ(FindHeader(server.request.headers, "upgrade"), "websocket");
  }
  EXPECT_EQ((*c.conn)->remote_address(), "in-process");

  constexpr int kN = 200;
  for (int i = 0; i < kN; ++i) (*c.conn)->Send(std::to_string(i), i % 2 == 0);
  ASSERT_TRUE(client->WaitMessages(kN));
  const auto got = client->messages();
  const auto seen = server.handler->messages();
  ASSERT_EQ(seen.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(seen[i], (i % 2 == 0 ? "b:" : "t:") + std::to_string(i));
    EXPECT_EQ(got[i], "b:echo:" + std::to_string(i));
  }
  (*c.conn)->Close(1000, "done");
  ASSERT_TRUE(client->WaitClose());
  ASSERT_TRUE(server.handler->WaitClose());
  EXPECT_EQ(client->close(), std::make_pair(uint16_t{1000}, std::string("done")));
  EXPECT_EQ(server.handler->close(), std::make_pair(uint16_t{1000}, std::string("done")));
  EXPECT_EQ(client->overlaps(), 0);
  EXPECT_EQ(server.handler->overlaps(), 0);
}

TEST(InProcessWs, ARefusedUpgradeIsAHandshakeFailureWithTheServersAnswer) {
  IoRuntime rt(1);
  auto refuse = [](std::shared_ptr<HttpExchange> ex) {
    ex->Respond(
        HttpResponse{403, {{"content-type", "application/json"}}, R"({"code":"forbidden"})"});
  };
  auto handler = std::make_shared<Recorder>();
  Connected c = Connect(rt, refuse, handler);
  ASSERT_FALSE(c.conn.ok());
  EXPECT_TRUE(c.conn.error().Is("net", "handshake_failed")) << c.conn.error().ToString();
  EXPECT_EQ(c.handshake.status, 403);
  EXPECT_EQ(c.handshake.body, R"({"code":"forbidden"})");

  // An exchange dropped without an answer is a 500.
  Connected dropped = Connect(
      rt, [](std::shared_ptr<HttpExchange>) {}, handler);
  ASSERT_FALSE(dropped.conn.ok());
  EXPECT_TRUE(dropped.conn.error().Is("net", "handshake_failed"));
  EXPECT_EQ(dropped.handshake.status, 500);

  // An answer given later, from another thread, completes the connect too.
  std::promise<std::shared_ptr<HttpExchange>> handed;
  auto later = [&handed](std::shared_ptr<HttpExchange> ex) { handed.set_value(std::move(ex)); };
  std::promise<Connected> p;
  ConnectInProcess(rt, later, WsConnectOptions{.url = "ws://e/x"}, handler,
                   [&p](Result<std::shared_ptr<WsConnection>> conn, HttpResponse hs) {
                     p.set_value(Connected{std::move(conn), std::move(hs)});
                   });
  auto held_future = handed.get_future();
  ASSERT_EQ(held_future.wait_for(kWait), std::future_status::ready);
  std::thread([held = held_future.get()] {
    held->Respond(HttpResponse{503, {}, "starting"});
  }).join();
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  Connected late = f.get();
  ASSERT_FALSE(late.conn.ok());
  EXPECT_EQ(late.handshake.status, 503);

  // A bad URL never reaches the server.
  bool called = false;
  Connected bad = Connect(
      rt, [&](std::shared_ptr<HttpExchange>) { called = true; }, handler,
      WsConnectOptions{.url = "ftp://nope"});
  ASSERT_FALSE(bad.conn.ok());
  EXPECT_TRUE(bad.conn.error().Is("net", "invalid_argument")) << bad.conn.error().ToString();
  EXPECT_FALSE(called);
  EXPECT_TRUE(handler->messages().empty());
  EXPECT_FALSE(handler->close().has_value()) << "a connect that failed reports through done only";
}

TEST(InProcessWs, TheClientHearsNothingBeforeItsDoneReturned) {
  IoRuntime rt(2);
  auto server_handler = std::make_shared<Recorder>();
  std::shared_ptr<WsConnection> server_conn;
  auto server = [&](std::shared_ptr<HttpExchange> ex) {
    server_conn = ex->AcceptWebSocket("", server_handler);
    // Sent before the client has its connection.
    server_conn->Send("hello", false);
    server_conn->Send("again", false);
  };
  std::atomic<bool> done_returned{false};
  std::atomic<bool> early{false};
  auto client = std::make_shared<Recorder>();
  client->on_message = [&](const std::string&) {
    if (!done_returned.load()) early.store(true);
  };
  std::promise<std::shared_ptr<WsConnection>> p;
  ConnectInProcess(rt, server, WsConnectOptions{.url = "ws://e/"}, client,
                   [&](Result<std::shared_ptr<WsConnection>> conn, HttpResponse) {
                     ASSERT_TRUE(conn.ok());
                     // Give a premature delivery every chance to happen now.
                     std::this_thread::sleep_for(milliseconds(20));
                     EXPECT_TRUE(client->messages().empty());
                     done_returned.store(true);
                     p.set_value(*conn);
                   });
  auto conn = p.get_future().get();
  ASSERT_TRUE(client->WaitMessages(2));
  EXPECT_FALSE(early.load());
  EXPECT_EQ(client->messages(), (std::vector<std::string>{"t:hello", "t:again"}));
}

TEST(InProcessWs, ACloseComesAfterTheMessagesSentBeforeItAndEndsBothSides) {
  IoRuntime rt(2);
  EchoServer server;
  auto client = std::make_shared<Recorder>();
  Connected c = Connect(rt, server.Handler(), client);
  ASSERT_TRUE(c.conn.ok());
  auto sc = server.Conn();
  ASSERT_NE(sc, nullptr);
  sc->Send("1", true);
  sc->Send("2", true);
  sc->Close(4001, std::string(300, 'r'));  // the reason is cut as on the wire
  sc->Close(4002, "second close is ignored");
  sc->Send("after the close", true);
  (*c.conn)->Send("also dropped", true);
  ASSERT_TRUE(client->WaitClose());
  ASSERT_TRUE(server.handler->WaitClose());
  EXPECT_EQ(client->messages(), (std::vector<std::string>{"b:1", "b:2"}));
  EXPECT_EQ(client->messages_at_close(), 2u);
  EXPECT_EQ(client->close()->first, 4001);
  EXPECT_EQ(client->close()->second, std::string(123, 'r'));
  EXPECT_EQ(server.handler->close()->first, 4001);
  EXPECT_TRUE(server.handler->messages().empty());

  // A code a peer may not receive goes out as 1000, as on a socket.
  EchoServer s2;
  auto c2h = std::make_shared<Recorder>();
  Connected c2 = Connect(rt, s2.Handler(), c2h);
  ASSERT_TRUE(c2.conn.ok());
  (*c2.conn)->Close(1006, "not sendable");
  ASSERT_TRUE(s2.handler->WaitClose());
  EXPECT_EQ(s2.handler->close()->first, 1000);
}

TEST(InProcessWs, DroppingTheClientsConnectionEndsItLikeADeadSocket) {
  IoRuntime rt(2);
  EchoServer server;
  auto client = std::make_shared<Recorder>();
  {
    Connected c = Connect(rt, server.Handler(), client);
    ASSERT_TRUE(c.conn.ok());
  }  // the client's only reference goes away unclosed
  ASSERT_TRUE(server.handler->WaitClose());
  EXPECT_EQ(server.handler->close(), std::make_pair(uint16_t{1006}, std::string()));
  ASSERT_TRUE(client->WaitClose());
  EXPECT_EQ(client->close()->first, 1006);
  // The server's handler was released with the close (no cycle through its connection).
  std::weak_ptr<Recorder> weak = server.handler;
  server.handler.reset();
  EXPECT_TRUE(weak.expired());
}

TEST(InProcessWs, AMessageOverTheLimitClosesWith1009) {
  IoRuntime rt(1);
  EchoServer server;
  auto client = std::make_shared<Recorder>();
  WsConnectOptions o;
  o.url = "ws://e/";
  o.max_message = 16;
  Connected c = Connect(rt, server.Handler(), client, o);
  ASSERT_TRUE(c.conn.ok());
  (*c.conn)->Send(std::string(16, 'x'), true);
  (*c.conn)->Send(std::string(17, 'x'), true);
  ASSERT_TRUE(client->WaitClose());
  EXPECT_EQ(client->close()->first, 1009);
  EXPECT_EQ(server.handler->messages().size(), 1u);
}

// Handlers that answer from inside OnMessage, from several threads at once: every
// message arrives, in each sender's order, and no handler call ever overlaps or nests.
TEST(InProcessWs, DeliveryIsSerialAndNeverReentrantUnderConcurrentSenders) {
  IoRuntime rt(2);
  EchoServer server;
  auto client = std::make_shared<Recorder>();
  Connected c = Connect(rt, server.Handler(), client);
  ASSERT_TRUE(c.conn.ok());
  std::shared_ptr<WsConnection> conn = *c.conn;
  // The client answers every echo of a "p" message once, from inside its OnMessage: a
  // ping-pong that re-enters the pipe from both handlers.
  client->on_message = [conn](const std::string& data) {
    if (data.rfind("echo:p", 0) == 0) conn->Send("q" + data.substr(6), true);
  };
  constexpr int kThreads = 4, kEach = 250;
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([conn, t] {
      for (int i = 0; i < kEach; ++i)
        conn->Send("p" + std::to_string(t) + "." + std::to_string(i), true);
    });
  }
  for (auto& t : senders) t.join();
  // Each p gets an echo and a q, and each q an echo.
  ASSERT_TRUE(client->WaitMessages(2 * kThreads * kEach));
  ASSERT_TRUE(server.handler->WaitMessages(2 * kThreads * kEach));
  EXPECT_EQ(server.handler->overlaps(), 0);
  EXPECT_EQ(client->overlaps(), 0);
  // Per sender, the server saw its messages in order.
  std::vector<int> next(kThreads, 0);
  for (const auto& m : server.handler->messages()) {
    if (m.rfind("b:p", 0) != 0) continue;
    const auto dot = m.find('.');
    const int t = std::stoi(m.substr(3, dot - 3));
    EXPECT_EQ(std::stoi(m.substr(dot + 1)), next[t]) << "sender " << t;
    next[t] = std::stoi(m.substr(dot + 1)) + 1;
  }
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(next[t], kEach);
  conn->Close(1000, "");
  ASSERT_TRUE(server.handler->WaitClose());
}

}  // namespace
}  // namespace keel::net
