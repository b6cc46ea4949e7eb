// The benches' WebSocket echo: the loopback floor every server-side figure is read against.
// A keel::net server whose WebSocket connections send every message back as it came, on
// whatever path; other requests get 404. Header-only, for the bench programs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "base/result.h"
#include "net/http_server.h"
#include "net/io_runtime.h"

namespace keel::bench {

// Sends each message back on its own connection.
class EchoHandler final : public net::WsHandler {
 public:
  void OnMessage(std::string data, bool binary) override {
    if (auto conn = conn_.lock()) conn->Send(std::move(data), binary);
  }
  void OnClose(uint16_t, std::string) override {}
  std::weak_ptr<net::WsConnection> conn_;
};

// Accepts `ex` as an echoing WebSocket connection.
inline void AcceptEcho(const std::shared_ptr<net::HttpExchange>& ex) {
  auto handler = std::make_shared<EchoHandler>();
  handler->conn_ = ex->AcceptWebSocket("", handler);
}

// An echo server on `runtime`'s threads, on loopback with the default options (port 0).
inline Result<std::unique_ptr<net::HttpServer>> StartEchoServer(net::IoRuntime& runtime) {
  return net::HttpServer::Start(runtime, net::ServerOptions{}, [](std::shared_ptr<net::HttpExchange> ex) {
    if (!ex->IsWebSocketUpgrade()) {
      ex->Respond(net::HttpResponse{404, {}, ""});
      return;
    }
    AcceptEcho(ex);
  });
}

}  // namespace keel::bench
