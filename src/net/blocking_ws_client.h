// BlockingWsClient: a WebSocket client with blocking calls, for tests, benchmarks and the
// CLI. Runs its connection on a private one-thread IoRuntime; received events queue until
// Receive takes them. Thread-safety: Send and Close may be called from any thread;
// Receive from one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "base/result.h"
#include "net/client.h"
#include "net/http.h"

namespace keel::net {

class BlockingWsClient {
 public:
  struct Message {
    std::string data;
    bool binary;
  };
  struct Closed {
    uint16_t code;
    std::string reason;
  };
  using Event = std::variant<Message, Closed>;

  // Connects within `timeout`. On net.handshake_failed the server's answer is stored in
  // `*failed_handshake` when given; on success `*handshake` gets the 101 response.
  // Errors: as ConnectWebSocket, plus net.timeout.
  static Result<std::unique_ptr<BlockingWsClient>> Connect(
      WsConnectOptions options, std::chrono::milliseconds timeout,
      HttpResponse* failed_handshake = nullptr, HttpResponse* handshake = nullptr);

  // Closes (1000) if still open, waits briefly for the close handshake, stops the thread.
  ~BlockingWsClient();

  // Queues a message. Errors: net.closed once the connection is closed or closing.
  Status Send(std::string data, bool binary = true);

  // The next event: a message, or Closed (once) when the connection ended. Waits at most
  // `timeout` for it (net.timeout); after Closed was returned, net.closed.
  Result<Event> Receive(std::chrono::milliseconds timeout);

  // Starts the close handshake; Receive then returns the remaining messages and Closed.
  void Close(uint16_t code = 1000, std::string reason = "");

  struct Shared;  // implementation detail

 private:
  BlockingWsClient() = default;
  std::unique_ptr<IoRuntime> runtime_;
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<WsConnection> conn_;
};

}  // namespace keel::net
