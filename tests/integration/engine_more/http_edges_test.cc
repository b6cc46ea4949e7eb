// keel-engine's HTTP edges, byte for byte through a running EngineServer (memory storage,
// loopback port 0): HEAD on /health and /metrics answers like GET without a body, and the
// requests its HTTP server refuses before routing get the engine's JSON errors with CORS, as
// do requests that reach it once it has shut down.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.h"
#include "engine/server/server.h"
#include "support/ipv6.h"
#include "support/raw_http_client.h"

namespace keel::engine {
namespace {

using RawClient = keel::testing::RawHttpClient;

std::unique_ptr<EngineServer> StartEngine() {
  EngineConfig config;
  config.port = 0;
  config.storage = StorageKind::kMemory;
  config.io_spin_us = 0;
  auto server = EngineServer::Start(config);
  EXPECT_TRUE(server.has_value()) << (server.has_value() ? "" : server.error().ToString());
  return server.has_value() ? std::move(*server) : nullptr;
}

// One keep-alive connection: each HEAD answer is a head alone, stating the GET's status,
// type and length, and the GET that follows is read from its first byte — including after a
// HEAD the engine answers 404 with a JSON body.
TEST(EngineHttpEdges, HeadOnHealthAndMetricsAnswersLikeGetWithoutABody) {
  auto server = StartEngine();
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.connected());
  for (const std::string target : {"/health", "/metrics", "/no-such-route"}) {
    ASSERT_TRUE(client.Send("HEAD " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string head = client.ReadHead();
    ASSERT_FALSE(head.empty()) << target;
    ASSERT_TRUE(client.Send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string get = client.ReadResponse();
    ASSERT_EQ(get.rfind("HTTP/1.1 ", 0), 0u) << target << ": " << get.substr(0, 80);
    EXPECT_EQ(head.substr(0, 12), get.substr(0, 12)) << target;
    EXPECT_EQ(RawClient::Header(head, "content-type"), RawClient::Header(get, "content-type"));
    if (target == "/health") {  // the others' text changes (metrics; the route's method)
      EXPECT_EQ(RawClient::Header(head, "content-length"), RawClient::Header(get, "content-length"))
          << target;
    }
    EXPECT_FALSE(RawClient::Body(get).empty()) << target;
  }
  ASSERT_TRUE(client.Send("HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string health = client.ReadHead();
  EXPECT_EQ(health.rfind("HTTP/1.1 200", 0), 0u) << health;
  EXPECT_EQ(RawClient::Header(health, "content-type"), "application/json");
  EXPECT_EQ(RawClient::Header(health, "content-length"), "15");  // {"status":"ok"}
  ASSERT_TRUE(client.Send("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const std::string metrics = client.ReadHead();
  EXPECT_EQ(metrics.rfind("HTTP/1.1 200", 0), 0u) << metrics;
  EXPECT_EQ(client.ReadToEof(), "");  // no body, then the close the client asked for
}

// 413, 431 and 400 from the HTTP server are errors.md's JSON errors with the CORS response
// headers (the Origin echoed when the server parsed it before refusing), and the connection
// closes after them. So is an upgrade request (GET, Connection: upgrade, Upgrade:
// websocket) whose handshake fields are wrong, before any route sees it — not Boost.Beast's
// plain-text words — and a wrong version gets 426 naming the one spoken.
TEST(EngineHttpEdges, RefusedRequestsAreJsonErrorsWithCorsAndCloseTheConnection) {
  auto server = StartEngine();
  ASSERT_NE(server, nullptr);
  const std::string ws_line = "GET /gateway/nosuchactor/websocket HTTP/1.1\r\n";
  const std::string upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
  const std::string origin = "Origin: https://app.example\r\n";
  const std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  const std::string version = "Sec-WebSocket-Version: 13\r\n";
  const struct {
    std::string request;
    int status;
    const char* code;
    const char* allow_origin;
    const char* says;
  } cases[] = {
      // 70 MB announced: refused on the header, before any of the body is sent.
      {"POST /actors?namespace=default HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
       "Content-Type: application/json\r\nContent-Length: 70000000\r\n\r\n",
       413, "invalid_request_body", "https://app.example", "request body too large"},
      {"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nCookie: " +
           std::string(70 * 1024, 'c') + "\r\n\r\n",
       431, "request_header_too_large", "https://app.example", "request header too large"},
      {"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nNo Colon Here\r\n\r\n",
       400, "malformed_request", "https://app.example", "malformed request"},
      // Nothing parsed: CORS for any origin.
      {"NOT HTTP\r\n\r\n", 400, "malformed_request", "*", "malformed request"},
      {ws_line + "Host: x\r\n" + upgrade + origin + version + "\r\n", 400,
       "invalid_websocket_handshake", "https://app.example", "missing Sec-WebSocket-Key"},
      {ws_line + "Host: x\r\n" + upgrade + origin + "Sec-WebSocket-Key: " + std::string(40, 'k') +
           "\r\n" + version + "\r\n",
       400, "invalid_websocket_handshake", "https://app.example", "invalid Sec-WebSocket-Key"},
      {ws_line + "Host: x\r\n" + upgrade + origin + key + "\r\n", 400,
       "invalid_websocket_handshake", "https://app.example", "missing Sec-WebSocket-Version"},
      {ws_line + "Host: x\r\n" + upgrade + origin + key + "Sec-WebSocket-Version: 8\r\n\r\n", 426,
       "invalid_websocket_handshake", "https://app.example", "only 13 is supported"},
      {ws_line + upgrade + origin + key + version + "\r\n", 400, "invalid_websocket_handshake",
       "https://app.example", "missing Host"},
  };
  for (const auto& c : cases) {
    RawClient client(server->port());
    ASSERT_TRUE(client.connected());
    ASSERT_TRUE(client.Send(c.request));
    const std::string res = client.ReadResponse();
    ASSERT_EQ(res.rfind("HTTP/1.1 " + std::to_string(c.status), 0), 0u) << res.substr(0, 200);
    EXPECT_EQ(RawClient::Header(res, "content-type"), "application/json") << c.status;
    EXPECT_EQ(RawClient::Header(res, "connection"), "close") << c.status;
    EXPECT_EQ(RawClient::Header(res, "access-control-allow-origin"), c.allow_origin) << c.status;
    EXPECT_EQ(RawClient::Header(res, "access-control-allow-credentials"), "true") << c.status;
    auto body = nlohmann::json::parse(RawClient::Body(res), nullptr, false);
    ASSERT_TRUE(body.is_object()) << RawClient::Body(res);
    EXPECT_EQ(body.value("group", ""), "guard") << body.dump();
    EXPECT_EQ(body.value("code", ""), c.code) << body.dump();
    EXPECT_NE(body.value("message", "").find(c.says), std::string::npos) << body.dump();
    EXPECT_TRUE(body.contains("metadata")) << body.dump();
    EXPECT_EQ(RawClient::Header(res, "sec-websocket-version"), c.status == 426 ? "13" : "")
        << c.says;
    EXPECT_EQ(client.ReadToEof(), "") << c.says;  // closed after the answer
  }
  // The same upgrade with its fields right is upgraded.
  {
    RawClient client(server->port());
    ASSERT_TRUE(client.Send(ws_line + "Host: x\r\n" + upgrade + origin + key + version + "\r\n"));
    const std::string head = client.ReadHead();
    EXPECT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << head;
    EXPECT_EQ(RawClient::Header(head, "sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  }
  // Still serving.
  RawClient client(server->port());
  ASSERT_TRUE(client.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(RawClient::Body(client.ReadResponse()), R"({"status":"ok"})");
}

// The REST API and the engine's own paths answer an absolute-form target (RFC 9112 §3.2.2:
// what a client talking to a proxy sends) as its path and query, and a target that is
// neither that nor a path starting with '/' gets a structured 400 — not the route its
// target with the first character cut off would name.
TEST(EngineHttpEdges, TargetsAreOriginOrAbsoluteForm) {
  auto server = StartEngine();
  ASSERT_NE(server, nullptr);
  auto get = [&](const std::string& target) {
    RawClient client(server->port());
    EXPECT_TRUE(client.Send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"));
    return client.ReadResponse();
  };
  const std::string port = std::to_string(server->port());
  for (const std::string& target : std::vector<std::string>{
           "/namespaces", "http://127.0.0.1:" + port + "/namespaces", "HTTP://x/namespaces?"}) {
    const std::string res = get(target);
    EXPECT_EQ(res.rfind("HTTP/1.1 200", 0), 0u) << target << ": " << res.substr(0, 200);
    auto body = nlohmann::json::parse(RawClient::Body(res), nullptr, false);
    EXPECT_TRUE(body.is_object() && body.contains("namespaces")) << target << ": " << body.dump();
  }
  const std::string health = get("http://x/health");
  EXPECT_EQ(RawClient::Body(health), R"({"status":"ok"})") << health.substr(0, 200);
  // "namespaces" without its '/' used to be served as "/amespaces"; "xnamespaces" as
  // "/namespaces".
  for (const std::string target : {"xnamespaces", "namespaces", "*"}) {
    const std::string res = get(target);
    EXPECT_EQ(res.rfind("HTTP/1.1 400", 0), 0u) << target << ": " << res.substr(0, 200);
    auto body = nlohmann::json::parse(RawClient::Body(res), nullptr, false);
    ASSERT_TRUE(body.is_object()) << res;
    EXPECT_EQ(body.value("group", "") + "." + body.value("code", ""), "api.bad_request")
        << body.dump();
  }
}

// A request on a connection opened before Shutdown() is answered 503
// guard.service_unavailable as JSON, with CORS for a browser's origin — not a plain-text
// word a client cannot decode — and the connection stays usable for the next one.
TEST(EngineHttpEdges, RequestsAfterShutdownAreJsonServiceUnavailable) {
  auto server = StartEngine();
  ASSERT_NE(server, nullptr);
  RawClient client(server->port());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(RawClient::Body(client.ReadResponse()), R"({"status":"ok"})");

  server->Shutdown();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(client.Send(
        "GET /actors?namespace=default HTTP/1.1\r\nHost: x\r\nOrigin: https://app.test\r\n\r\n"));
    const std::string res = client.ReadResponse();
    ASSERT_EQ(res.rfind("HTTP/1.1 503 ", 0), 0u) << res.substr(0, 120);
    EXPECT_EQ(RawClient::Header(res, "content-type"), "application/json");
    EXPECT_EQ(RawClient::Header(res, "access-control-allow-origin"), "https://app.test");
    const auto body = nlohmann::json::parse(RawClient::Body(res), nullptr, false);
    ASSERT_TRUE(body.is_object()) << RawClient::Body(res);
    EXPECT_EQ(body.value("group", ""), "guard") << body.dump();
    EXPECT_EQ(body.value("code", ""), "service_unavailable") << body.dump();
    EXPECT_EQ(body.value("message", ""), "the engine is shutting down") << body.dump();
  }
}

// One HTTP/1.1 request over IPv6 loopback with Connection: close; the whole answer.
std::string GetOverIpv6(uint16_t port, std::string_view target) {
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  addr.sin6_port = htons(port);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req =
        "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      timeval timeout{10, 0};  // bounded: the engine closes after its answer
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, n);
    }
  }
  ::close(fd);
  return out;
}

TEST(EngineHttpEdges, UrlsBracketAnIpv6Host) {
  EXPECT_EQ(HttpUrl("::1", 6420), "http://[::1]:6420");
  EXPECT_EQ(HttpUrl("[::1]", 6420), "http://[::1]:6420");
  EXPECT_EQ(HttpUrl("127.0.0.1", 80), "http://127.0.0.1:80");
  EngineConfig config;
  config.host = "::1";
  EXPECT_EQ(ToEngineOptions(config, 7000).public_url, "http://[::1]:7000");
  if (!keel::testing::HasIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback on this machine";

  config.port = 0;
  config.storage = StorageKind::kMemory;
  config.io_spin_us = 0;
  auto server = EngineServer::Start(config);
  ASSERT_TRUE(server.has_value()) << server.error().ToString();
  const std::string res = GetOverIpv6((*server)->port(), "/datacenters");
  ASSERT_EQ(res.rfind("HTTP/1.1 200", 0), 0u) << res.substr(0, 200);
  const auto body = nlohmann::json::parse(RawClient::Body(res), nullptr, false);
  ASSERT_TRUE(body.is_object()) << res;
  EXPECT_EQ(body["datacenters"][0].value("url", ""),
            "http://[::1]:" + std::to_string((*server)->port()))
      << body.dump();
}

// Records warnings; installed for one test.
class WarningSink : public LogSink {
 public:
  void Write(LogLevel level, std::string_view, std::string_view message) override {
    std::lock_guard lock(mu_);
    if (level == LogLevel::kWarn) warnings_.emplace_back(message);
  }
  bool Saw(std::string_view part) {
    std::lock_guard lock(mu_);
    for (const auto& w : warnings_) {
      if (w.find(part) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> warnings_;
};

// Every way of starting an engine (keel-engine's main, a runtime's --with-engine) goes
// through EngineServer::Start, which warns when there is no admin token.
TEST(EngineHttpEdges, StartWarnsWithoutAnAdminToken) {
  for (bool with_token : {false, true}) {
    WarningSink sink;
    SetLogSink(&sink);
    SetLogLevel(LogLevel::kInfo);
    EngineConfig config;
    config.port = 0;
    config.storage = StorageKind::kMemory;
    config.io_spin_us = 0;
    if (with_token) config.admin_token = "t0ken";
    auto server = EngineServer::Start(config);
    EXPECT_TRUE(server.has_value()) << server.error().ToString();
    if (server.has_value()) server->reset();
    SetLogSink(nullptr);
    EXPECT_EQ(sink.Saw("no admin token"), !with_token) << with_token;
  }
}

}  // namespace
}  // namespace keel::engine
