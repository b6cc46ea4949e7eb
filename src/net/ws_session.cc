#include "net/internal/ws_session.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/detail/prng.hpp>

#include "base/log.h"
#include "base/output_batch.h"
#include "net/internal/close_frame.h"
#include "net/io_runtime.h"

namespace keel::net {

WsConnection::~WsConnection() = default;
WsHandler::~WsHandler() = default;

namespace internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
namespace http = boost::beast::http;
using asio::as_tuple;
using asio::use_awaitable;

namespace {
constexpr std::string_view kComponent = "net.ws";
}  // namespace

// ---- endpoints (stream.h) ----

bool IsLocal(const StreamProtocol::endpoint& ep) { return ep.protocol().family() == AF_UNIX; }

asio::ip::tcp::endpoint TcpEndpoint(const StreamProtocol::endpoint& ep) {
  asio::ip::tcp::endpoint out;
  if (IsLocal(ep) || ep.size() > out.capacity()) return out;
  std::memcpy(out.data(), ep.data(), ep.size());
  out.resize(ep.size());
  return out;
}

PeerState PeekPeer(int fd) {
  char byte;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return PeerState::kSending;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return PeerState::kQuiet;
  return PeerState::kGone;
}

std::string EndpointText(const asio::ip::tcp::endpoint& ep) {
  boost::system::error_code ec;
  std::string text = ep.address().to_string(ec);
  if (ep.address().is_v6()) text = "[" + text + "]";
  return text + ":" + std::to_string(ep.port());
}

std::string EndpointText(const StreamProtocol::endpoint& ep) {
  if (!IsLocal(ep)) return EndpointText(TcpEndpoint(ep));
  asio::local::stream_protocol::endpoint local;
  if (ep.size() <= local.capacity()) {
    std::memcpy(local.data(), ep.data(), ep.size());
    local.resize(ep.size());
  }
  return "unix:" + local.path();
}

// ---- the shared write side ----

struct iovec SharedWriteStream::MakeIovec(asio::const_buffer b) {
  struct iovec v;
  v.iov_base = const_cast<void*>(b.data());
  v.iov_len = b.size();
  return v;
}

bool WriteState::Write(const struct iovec* parts, size_t n) {
  std::lock_guard lock(mu);
  return WriteLocked(parts, n);
}

bool WriteState::WriteLocked(const struct iovec* parts, size_t n) {
  if (closed || draining || failed) return false;
  if (!flushing && !corked && OutputBatch::Open()) {
    corked = true;
    OutputBatch::AtEnd([self = shared_from_this()] { self->Uncork(); });
  }
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += parts[i].iov_len;
  size_t sent = 0;
  if (!flushing && !corked) {
    // Nothing waits ahead of these bytes: straight to the kernel, without blocking.
    const std::optional<size_t> r = SendNow(parts, n);
    if (!r.has_value()) return false;
    sent = *r;
    if (sent == total) return true;
  }
  // The rest waits behind what is already pending, in order.
  size_t skip = sent;
  for (size_t i = 0; i < n; ++i) {
    const size_t len = parts[i].iov_len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    pending.append(static_cast<const char*>(parts[i].iov_base) + skip, len - skip);
    skip = 0;
  }
  if (!flushing && !corked) StartFlushLocked();
  return true;
}

std::optional<size_t> WriteState::SendNow(const struct iovec* parts, size_t n) {
  struct msghdr msg {};
  msg.msg_iov = const_cast<struct iovec*>(parts);
  msg.msg_iovlen = n;
  for (;;) {
    const ssize_t r = ::sendmsg(stream.socket().native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
    // The connection is broken; the read side sees it too and reports the close.
    failed = true;
    return std::nullopt;
  }
}

void WriteState::Uncork() {
  std::lock_guard lock(mu);
  if (!corked) return;  // a drain already handed the bytes to a flush
  corked = false;
  if (closed || failed) {
    pending.clear();
    return;
  }
  if (flushing || pending.empty()) return;
  struct iovec part;
  part.iov_base = pending.data();
  part.iov_len = pending.size();
  const std::optional<size_t> sent = SendNow(&part, 1);
  if (!sent.has_value()) {
    pending.clear();
    return;
  }
  pending.erase(0, *sent);
  if (!pending.empty()) StartFlushLocked();
}

void WriteState::StartFlushLocked() {
  flushing = true;
  asio::post(stream.get_executor(), [self = shared_from_this()] { self->Flush(); });
}

void WriteState::Flush() {
  std::unique_lock lock(mu);
  if (closed || failed || pending.empty()) {
    pending.clear();
    flushing = false;
    FinishDrainLocked(lock);
    return;
  }
  in_flight.swap(pending);
  pending.clear();
  // Only this flush touches in_flight, and only one flush runs at a time.
  const asio::const_buffer buffer(in_flight.data(), in_flight.size());
  lock.unlock();
  asio::async_write(stream.socket(), buffer,
                    [self = shared_from_this()](beast::error_code ec, size_t) {
                      std::unique_lock lock(self->mu);
                      self->in_flight.clear();
                      if (ec) {
                        self->failed = true;
                        self->pending.clear();
                      }
                      if (!self->pending.empty() && !self->closed && !self->failed) {
                        lock.unlock();
                        self->Flush();
                        return;
                      }
                      self->flushing = false;
                      self->FinishDrainLocked(lock);
                    });
}

void WriteState::FinishDrainLocked(std::unique_lock<std::mutex>& lock) {
  if (!draining || flushing || !after_drain) return;
  std::function<void()> then = std::move(after_drain);
  after_drain = nullptr;
  lock.unlock();
  then();
}

void WriteState::Drain(std::function<void()> then) {
  std::unique_lock lock(mu);
  draining = true;
  if (corked) {
    // The teardown must not overtake what a batch holds: a flush writes it first.
    corked = false;
    if (!pending.empty() && !flushing && !closed && !failed) StartFlushLocked();
  }
  if (flushing) {
    after_drain = std::move(then);  // Flush runs it when done
    return;
  }
  lock.unlock();
  then();
}

void WriteState::CloseSocket() {
  std::lock_guard lock(mu);
  closed = true;
  pending.clear();
  beast::error_code ignored;
  stream.socket().close(ignored);
}

void beast_close_socket(SharedWriteStream& stream) { stream.state()->CloseSocket(); }

void teardown(beast::role_type role, SharedWriteStream& stream, beast::error_code& ec) {
  {
    std::lock_guard lock(stream.state()->mu);
    stream.state()->draining = true;
  }
  using beast::websocket::teardown;
  teardown(role, stream.state()->stream, ec);
}

void AckPromptly(Stream& stream) {
#ifdef TCP_QUICKACK
  auto& socket = stream.socket();
  if (!socket.is_open()) return;
  const int on = 1;
  // Best effort: a failure only means the ACK is delayed as before.
  (void)::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on));
#else
  (void)stream;
#endif
}

WsSession::WsSession(std::shared_ptr<asio::io_context> ioc, Strand strand,
                     std::string remote_address, size_t max_message)
    : ioc_(std::move(ioc)),
      strand_(std::move(strand)),
      remote_address_(std::move(remote_address)),
      max_message_(max_message) {
  ShutdownRegistryOf(*ioc_).Add(this);
}

WsSession::~WsSession() { ShutdownRegistryOf(*ioc_).Remove(this); }

void WsSession::CloseOnShutdown() {
  std::shared_ptr<WriteState> out;
  {
    std::lock_guard lock(mu_);
    out = out_;
  }
  if (out) {
    out->CloseSocket();
  } else if (ws_) {
    beast_close_socket(ws_->next_layer());  // mid-handshake
  }
}

bool WsSession::Aborted() {
  std::lock_guard lock(mu_);
  return aborted_;
}

bool WsSession::RuntimeStopped() const {
  return ioc_->stopped();
}

void WsSession::Send(std::string data, bool binary) {
  if (RuntimeStopped()) return;
  std::lock_guard lock(mu_);
  if (close_requested_ || finished_ || aborted_) return;
  if (!open_) {
    queue_.push_back(Outgoing{std::move(data), binary});  // written when the session opens
    return;
  }
  WriteFrameLocked(data, binary);
}

void WsSession::WriteFrameLocked(std::string& data, bool binary) {
  // RFC 6455 §5.2: FIN, opcode; the length in 7, 16 or 64 bits; the client's masking key.
  unsigned char header[14];
  size_t n = 0;
  header[n++] = static_cast<unsigned char>(0x80 | (binary ? 0x2 : 0x1));
  const uint64_t len = data.size();
  const unsigned char mask_bit = client_ ? 0x80 : 0x00;
  if (len < 126) {
    header[n++] = static_cast<unsigned char>(mask_bit | len);
  } else if (len <= 0xffff) {
    header[n++] = static_cast<unsigned char>(mask_bit | 126);
    header[n++] = static_cast<unsigned char>(len >> 8);
    header[n++] = static_cast<unsigned char>(len);
  } else {
    header[n++] = static_cast<unsigned char>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      header[n++] = static_cast<unsigned char>(len >> shift);
    }
  }
  if (client_) {
    // §5.3: a fresh unpredictable key per frame (Beast's own generator); the payload is ours
    // to mask in place.
    uint32_t key = 0;
    while (key == 0) key = websocket::detail::make_prng(true)();
    unsigned char k[4];
    std::memcpy(k, &key, 4);
    std::memcpy(header + n, k, 4);
    n += 4;
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(data[i] ^ k[i & 3]);
  }
  struct iovec parts[2];
  parts[0].iov_base = header;
  parts[0].iov_len = n;
  parts[1].iov_base = data.data();
  parts[1].iov_len = data.size();
  std::lock_guard out_lock(out_->mu);
  if (out_->close_sent) return;  // Beast answered or sent a close: no data after it
  sent_since_read_.store(true, std::memory_order_relaxed);
  (void)out_->WriteLocked(parts, data.empty() ? 1 : 2);
}

void WsSession::Close(uint16_t code, std::string reason) {
  if (RuntimeStopped()) return;
  MakeSendableClose(code, reason);
  {
    std::lock_guard lock(mu_);
    if (close_requested_ || finished_) return;
    // From here no data frame is written; the close frame follows every one already written.
    close_requested_ = true;
    close_code_ = code;
    close_reason_ = std::move(reason);
  }
  asio::dispatch(strand_, [self = shared_from_this()] {
    bool start = false;
    {
      std::lock_guard lock(self->mu_);
      start = self->open_ && !self->close_sent_ && !self->finished_;
    }
    if (start) self->StartClose();
  });
}

void WsSession::Abort() {
  if (RuntimeStopped()) return;
  asio::dispatch(strand_, [self = shared_from_this()] {
    std::shared_ptr<WriteState> out;
    {
      std::lock_guard lock(self->mu_);
      self->aborted_ = true;
      out = self->out_;
    }
    if (out) {
      out->CloseSocket();
    } else if (self->ws_) {
      beast_close_socket(self->ws_->next_layer());
    }
  });
}

// A reply within kAckCheck carries the ACK as usual; otherwise it is sent on its own then,
// so a Nagle peer waits at most ~1 ms instead of the 40 ms delayed-ACK timer.
constexpr auto kAckCheck = std::chrono::milliseconds(1);

void WsSession::ArmAckCheck() {
  if (ack_check_armed_ || !ws_) return;
  if (!ack_timer_) ack_timer_.emplace(strand_);
  ack_check_armed_ = true;
  ack_timer_->expires_after(kAckCheck);
  ack_timer_->async_wait(asio::bind_executor(strand_, [self = shared_from_this()](beast::error_code ec) {
    self->ack_check_armed_ = false;
    if (ec || self->finished_ || self->aborted_ || !self->ws_) return;
    if (!self->sent_since_read_.load(std::memory_order_relaxed)) {
      AckPromptly(self->ws_->next_layer().tcp());
    }
  }));
}

void WsSession::StartClose() {
  uint16_t code;
  std::string text;
  {
    std::lock_guard lock(mu_);
    close_sent_ = true;
    code = close_code_;
    text = close_reason_;
  }
  websocket::close_reason reason(static_cast<websocket::close_code>(code), beast::string_view(text));
  ws_->async_close(reason, asio::bind_executor(strand_, [self = shared_from_this()](
                                                            beast::error_code) {}));
}

void WsSession::Finish(const std::shared_ptr<WsHandler>& handler, uint16_t code,
                       std::string reason) {
  std::shared_ptr<WriteState> out;
  {
    std::lock_guard lock(mu_);
    open_ = false;
    queue_.clear();
    if (finished_) return;
    finished_ = true;
    out = out_;
  }
  if (ack_timer_) ack_timer_->cancel();
  if (out) {
    out->CloseSocket();
  } else if (ws_) {
    beast_close_socket(ws_->next_layer());
  }
  try {
    handler->OnClose(code, std::move(reason));
  } catch (const std::exception& e) {
    LogError(kComponent, "WsHandler::OnClose threw", {{"what", e.what()}});
  } catch (...) {
    LogError(kComponent, "WsHandler::OnClose threw");
  }
}

asio::awaitable<void> WsSession::ReadLoop(std::shared_ptr<WsHandler> handler) {
  bool close_now = false;
  {
    std::lock_guard lock(mu_);
    out_ = ws_->next_layer().state();
    {
      std::lock_guard out_lock(out_->mu);
      out_->frames = true;  // the handshake is done: from here every write is one frame
    }
    open_ = !finished_ && !aborted_;
    if (open_) {
      // What was sent before the handshake finished goes first, in order.
      for (auto& o : queue_) WriteFrameLocked(o.data, o.binary);
    }
    queue_.clear();
    close_now = open_ && close_requested_ && !close_sent_;
  }
  if (close_now) StartClose();
  beast::flat_buffer buffer;
  uint16_t code = 1006;
  std::string reason;
  for (;;) {
    const uint64_t armed_at = HandoffScope::Deliveries();
    auto [ec, n] = co_await ws_->async_read(buffer, as_tuple(use_awaitable));
    if (ec) {
      // When we closed first, Beast may end the pending read with operation_aborted even
      // though the peer's close frame arrived; reason() tells whether it did.
      const websocket::close_reason& r = ws_->reason();
      if (r.code != websocket::close_code::none) {
        code = static_cast<uint16_t>(r.code);
        reason.assign(r.reason.data(), r.reason.size());
      } else if (ec == websocket::error::closed) {
        code = 1005;  // a close frame without a status code
      } else if (ec == websocket::error::message_too_big) {
        code = 1009;
        reason = "message too big";
      } else if (ec == websocket::error::bad_frame_payload) {
        // Beast failed the connection (RFC 6455 §7.1.7) and sent the peer the close code it
        // names: 1007 for a text message that is not UTF-8, 1002 for any other violation.
        code = 1007;
        reason = "invalid frame payload data";
      } else if (ec == websocket::condition::protocol_violation) {
        code = 1002;
        reason = "protocol error";
      } else if (std::lock_guard lock(mu_); close_sent_) {
        code = close_code_;
        reason = close_reason_;
      } else {
        KEEL_LOG(kDebug, kComponent, "connection lost",
                 {{"peer", remote_address_}, {"error", ec.message()}});
      }
      break;
    }
    sent_since_read_.store(false, std::memory_order_relaxed);
    ArmAckCheck();
    std::string message = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    const bool binary = ws_->got_binary();
    try {
      HandoffScope handoffs(armed_at);  // see io_runtime.h
      handler->OnMessage(std::move(message), binary);
    } catch (const std::exception& e) {
      LogError(kComponent, "WsHandler::OnMessage threw", {{"what", e.what()}});
    } catch (...) {
      LogError(kComponent, "WsHandler::OnMessage threw");
    }
  }
  Finish(handler, code, std::move(reason));
}

asio::awaitable<void> WsSession::RunServer(Stream stream, http::request<http::string_body> request,
                                           std::string subprotocol, Headers headers,
                                           std::shared_ptr<WsHandler> handler) {
  ws_.emplace(std::move(stream));
  ws_->auto_fragment(false);  // Beast writes only control frames, each in one piece
  ws_->set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws_->read_message_max(max_message_);
  ws_->set_option(websocket::stream_base::decorator(
      [subprotocol = std::move(subprotocol), headers = std::move(headers)](
          websocket::response_type& res) {
        if (!subprotocol.empty()) res.set(http::field::sec_websocket_protocol, subprotocol);
        for (const auto& [name, value] : headers) {
          if (IsValidHeaderField(name, value)) res.insert(name, value);
        }
      }));
  if (Aborted()) {
    Finish(handler, 1006, "");
    co_return;
  }
  auto [ec] = co_await ws_->async_accept(request, as_tuple(use_awaitable));
  if (ec) {
    KEEL_LOG(kDebug, kComponent, "handshake failed",
             {{"peer", remote_address_}, {"error", ec.message()}});
    Finish(handler, 1006, "");
    co_return;
  }
  co_await ReadLoop(std::move(handler));
}

asio::awaitable<void> WsSession::RunClient(WsStream stream, std::shared_ptr<WsHandler> handler) {
  ws_.emplace(std::move(stream));
  {
    std::lock_guard lock(mu_);
    client_ = true;
  }
  ws_->read_message_max(max_message_);
  if (Aborted()) {
    Finish(handler, 1006, "");
    co_return;
  }
  co_await ReadLoop(std::move(handler));
}

}  // namespace internal
}  // namespace keel::net
