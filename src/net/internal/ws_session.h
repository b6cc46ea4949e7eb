// keel::net internal: the WebSocket connection shared by the server (after an upgrade)
// and the client (after a handshake). Pulls in Beast; included only by src/net/*.cc.
//
// All state below the public methods is touched on `strand_` only. Writes form a single
// chain (queue + one writer), so there is never more than one async_write on the stream;
// the close frame goes out after the queue drains.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "net/http.h"
#include "net/internal/runtime_access.h"

namespace keel::net::internal {

using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;
using WsStream = boost::beast::websocket::stream<boost::beast::tcp_stream>;

// Sends the ACK for what the peer sent now if one is pending (Linux TCP_QUICKACK; a no-op
// elsewhere). Linux delays ACKs (up to 40 ms) on an interactive connection, expecting data to
// carry them; a peer that leaves Nagle's algorithm on (Deno's WebSocket and fetch set
// TCP_NODELAY=0) holds its next small frame until that ACK arrives — a 40 ms stall whenever
// it sends two messages we do not answer. Not called on every read: quick-ACK mode sends a
// separate ACK packet ahead of each reply, which cost ~18 µs per loopback round trip.
void AckPromptly(boost::beast::tcp_stream& stream);

class WsSession final : public WsConnection,
                        public ShutdownCloser,
                        public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(std::shared_ptr<boost::asio::io_context> ioc, Strand strand,
            std::string remote_address, size_t max_message);
  ~WsSession() override;

  // WsConnection
  void Send(std::string data, bool binary) override;
  void Close(uint16_t code, std::string reason) override;
  const std::string& remote_address() const override { return remote_address_; }

  // --- strand only ---
  // Server side: takes over the upgraded TCP stream, answers the handshake (adding the
  // subprotocol and headers), then runs the session until closed. Calls handler->OnClose
  // exactly once before finishing.
  boost::asio::awaitable<void> RunServer(
      boost::beast::tcp_stream stream,
      boost::beast::http::request<boost::beast::http::string_body> request,
      std::string subprotocol, Headers headers, std::shared_ptr<WsHandler> handler);
  // Client side: `stream` has completed its handshake. Same contract as RunServer.
  boost::asio::awaitable<void> RunClient(WsStream stream, std::shared_ptr<WsHandler> handler);
  // Drops the socket at once (server shutdown); the running session reports 1006.
  void Abort();

  const Strand& strand() const { return strand_; }

  // ShutdownCloser
  void CloseOnShutdown() override;

 private:
  struct Outgoing {
    std::string data;
    bool binary;
  };

  bool RuntimeStopped() const;
  boost::asio::awaitable<void> ReadLoop(std::shared_ptr<WsHandler> handler);
  void StartWrite();
  void StartClose();
  void Finish(const std::shared_ptr<WsHandler>& handler, uint16_t code, std::string reason);
  void ArmAckCheck();

  std::shared_ptr<boost::asio::io_context> ioc_;  // first: released last
  Strand strand_;
  const std::string remote_address_;
  const size_t max_message_;
  std::optional<WsStream> ws_;
  std::deque<Outgoing> queue_;
  bool open_ = false;      // handshake done, stream usable
  bool writing_ = false;   // a write or the close is in flight
  bool close_requested_ = false;
  bool close_sent_ = false;
  bool finished_ = false;  // OnClose delivered
  bool aborted_ = false;
  // The ACK check (AckPromptly) one kAckCheck after a read that nothing was sent after.
  std::optional<boost::asio::steady_timer> ack_timer_;
  bool ack_check_armed_ = false;
  bool sent_since_read_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
};

}  // namespace keel::net::internal
