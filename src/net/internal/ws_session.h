// keel::net internal: the WebSocket connection shared by the server (after an upgrade)
// and the client (after a handshake). Pulls in Beast; included only by src/net/*.cc.
//
// Reads, the handshake, control frames (Beast's pongs, keep-alive pings, the close
// handshake) and the close run on `strand_`, through Beast. Data frames do not: Send frames
// the message itself and writes it to the socket from the calling thread (any thread), so a
// worker that produced an answer puts it on the wire without waking the I/O thread. Both
// paths end in SharedWriteStream, Beast's next layer, which appends every write — one whole
// frame (or handshake message) at a time — to the connection's single byte stream under one
// mutex: frames never interleave, and bytes go out in the order they were accepted.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/uio.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket/teardown.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "net/http.h"
#include "net/internal/runtime_access.h"
#include "net/internal/stream.h"

namespace keel::net::internal {

using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

// The write side of one connection (TCP or Unix socket), shared by every thread that writes to it.
// All writes are appended to one ordered byte stream under `mu`: sent at once (non-blocking sendmsg
// in the writer's thread) when nothing is waiting, else queued in `pending` and written by one
// flush at a time on the stream's executor (the connection's strand). A write made while an
// OutputBatch is open on the writing thread corks the stream: it and every later write (from any
// thread) wait in `pending` until that batch ends, which sends them with one sendmsg (Uncork).
// Everything that closes the socket goes through CloseSocket (under `mu`), so a writer never
// uses a closed — possibly reused — descriptor.
struct WriteState : std::enable_shared_from_this<WriteState> {
  explicit WriteState(Stream s) : stream(std::move(s)) {}

  // Appends the bytes of `parts` (n of them) to the stream. False when nothing more may be
  // written (closed, torn down, or a write failed): the bytes are dropped.
  bool Write(const struct iovec* parts, size_t n);
  bool WriteLocked(const struct iovec* parts, size_t n);
  // Closes the socket now; later writes are dropped. Idempotent, any thread.
  void CloseSocket();
  // Later writes are dropped; `then` runs (on the strand) once the accepted bytes are
  // written, or at once when none are waiting.
  void Drain(std::function<void()> then);

  Stream stream;  // its socket: reads and Beast on the strand only
  std::mutex mu;
  // Guarded by mu:
  std::string pending;     // accepted, waiting for the flush
  std::string in_flight;   // being written by the flush (only the flush touches it)
  bool flushing = false;   // a flush is posted or running
  bool closed = false;     // the socket is closed (or about to be): no write touches it
  bool draining = false;   // torn down: accept nothing more
  bool failed = false;     // a write failed: the connection is broken
  bool frames = false;     // past the handshake: every write is one whole frame
  bool close_sent = false;  // a close frame went out: no data frame may follow
  bool corked = false;      // an OutputBatch holds `pending` until it ends (Uncork)
  std::function<void()> after_drain;

 private:
  // Sends what the cork held (the rest, if the socket does not take it all, by a flush).
  void Uncork();
  // Non-blocking sendmsg of `parts` from this thread. Returns the bytes the kernel took, or
  // nullopt when the connection is broken (`failed` is then set).
  std::optional<size_t> SendNow(const struct iovec* parts, size_t n);
  void StartFlushLocked();
  void Flush();
  void FinishDrainLocked(std::unique_lock<std::mutex>& lock);
};

// Beast's next layer for a WebSocket: reads go to the TCP stream; writes (the handshake,
// control frames) go through the shared WriteState. A write completes at once (through the
// handler's executor, never inline): its bytes are accepted in order, whether or not they
// have reached the kernel yet. Deliberately has no next_layer(), so Beast's
// get_lowest_layer() stops here and its socket closes and teardowns reach the overloads
// below, which keep the state's `closed` flag in step.
class SharedWriteStream {
 public:
  using executor_type = Stream::executor_type;

  explicit SharedWriteStream(Stream stream)
      : state_(std::make_shared<WriteState>(std::move(stream))) {}
  template <typename Executor>
  explicit SharedWriteStream(const Executor& ex)
      : state_(std::make_shared<WriteState>(Stream(ex))) {}

  executor_type get_executor() { return state_->stream.get_executor(); }
  // The socket stream, for connecting and setting its timers before the WebSocket runs.
  Stream& tcp() { return state_->stream; }
  const std::shared_ptr<WriteState>& state() const { return state_; }

  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return state_->stream.async_read_some(buffers, std::forward<Token>(token));
  }

  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::beast::error_code, std::size_t)>(
        [](auto handler, std::shared_ptr<WriteState> st, const ConstBuffers& bufs) {
          std::vector<struct iovec> parts;
          std::size_t total = 0;
          for (boost::asio::const_buffer b : boost::beast::buffers_range_ref(bufs)) {
            if (b.size() == 0) continue;
            parts.push_back(MakeIovec(b));
            total += b.size();
          }
          boost::beast::error_code ec;
          {
            std::lock_guard lock(st->mu);
            // A close frame (FIN + opcode 8) ends the data frames.
            if (st->frames && !parts.empty() &&
                *static_cast<const unsigned char*>(parts.front().iov_base) == 0x88) {
              st->close_sent = true;
            }
            if (!st->WriteLocked(parts.data(), parts.size())) {
              ec = boost::asio::error::broken_pipe;
              total = 0;
            }
          }
          auto ex = st->stream.get_executor();
          boost::asio::post(ex, boost::beast::bind_front_handler(std::move(handler), ec, total));
        },
        token, state_, buffers);
  }

 private:
  static struct iovec MakeIovec(boost::asio::const_buffer b);

  std::shared_ptr<WriteState> state_;
};

// Beast's customisation points for SharedWriteStream (found by argument-dependent lookup).
void beast_close_socket(SharedWriteStream& stream);
void teardown(boost::beast::role_type role, SharedWriteStream& stream,
              boost::beast::error_code& ec);
template <typename TeardownHandler>
void async_teardown(boost::beast::role_type role, SharedWriteStream& stream,
                    TeardownHandler&& handler) {
  // The socket's write side shuts down only after every accepted byte is written.
  auto h = std::make_shared<std::decay_t<TeardownHandler>>(
      std::forward<TeardownHandler>(handler));
  WriteState* st = stream.state().get();
  stream.state()->Drain([st, role, h] {
    using boost::beast::websocket::async_teardown;
    async_teardown(role, st->stream, std::move(*h));
  });
}

using WsStream = boost::beast::websocket::stream<SharedWriteStream>;

// Sends the ACK for what the peer sent now if one is pending (Linux TCP_QUICKACK; a no-op
// elsewhere). Linux delays ACKs (up to 40 ms) on an interactive connection, expecting data to
// carry them; a peer that leaves Nagle's algorithm on (Deno's WebSocket and fetch set
// TCP_NODELAY=0) holds its next small frame until that ACK arrives — a 40 ms stall whenever
// it sends two messages we do not answer. Not called on every read: quick-ACK mode sends a
// separate ACK packet ahead of each reply, which cost ~18 µs per loopback round trip.
void AckPromptly(Stream& stream);

class WsSession final : public WsConnection,
                        public ShutdownCloser,
                        public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(std::shared_ptr<boost::asio::io_context> ioc, Strand strand,
            std::string remote_address, size_t max_message);
  ~WsSession() override;

  // WsConnection. Send writes from the calling thread (see the file comment).
  void Send(std::string data, bool binary) override;
  void Close(uint16_t code, std::string reason) override;
  const std::string& remote_address() const override { return remote_address_; }

  // --- strand only ---
  // Server side: takes over the upgraded TCP stream, answers the handshake (adding the
  // subprotocol and headers), then runs the session until closed. Calls handler->OnClose
  // exactly once before finishing.
  boost::asio::awaitable<void> RunServer(
      Stream stream, boost::beast::http::request<boost::beast::http::string_body> request,
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
  bool Aborted();
  boost::asio::awaitable<void> ReadLoop(std::shared_ptr<WsHandler> handler);
  // Frames `data` and appends it to the byte stream. Requires mu_, open_.
  void WriteFrameLocked(std::string& data, bool binary);
  void StartClose();
  void Finish(const std::shared_ptr<WsHandler>& handler, uint16_t code, std::string reason);
  void ArmAckCheck();

  std::shared_ptr<boost::asio::io_context> ioc_;  // first: released last
  Strand strand_;
  const std::string remote_address_;
  const size_t max_message_;
  bool client_ = false;      // client frames are masked (RFC 6455 §5.3)
  std::optional<WsStream> ws_;  // set on the strand before open_; Beast calls on the strand
  std::shared_ptr<WriteState> out_;  // ws_'s write side; set with open_
  // The connection's mutex: guards the flags and queue below (mu_ before out_->mu).
  std::mutex mu_;
  std::deque<Outgoing> queue_;  // sent before the handshake finished
  bool open_ = false;      // handshake done: Send writes frames
  bool close_requested_ = false;
  bool close_sent_ = false;
  bool finished_ = false;  // OnClose delivered
  bool aborted_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;
  // The ACK check (AckPromptly) one kAckCheck after a read that nothing was sent after.
  // Strand only, but sent_since_read_, which any sender sets.
  std::optional<boost::asio::steady_timer> ack_timer_;
  bool ack_check_armed_ = false;
  std::atomic<bool> sent_since_read_{false};
};

}  // namespace keel::net::internal
