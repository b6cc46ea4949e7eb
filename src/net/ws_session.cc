#include "net/internal/ws_session.h"

#include <chrono>
#include <exception>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include "base/log.h"

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
// RFC 6455 §5.5: control frame payloads are at most 125 bytes, 2 of them the code.
constexpr size_t kMaxCloseReason = 123;

// RFC 6455 §7.4: 1005, 1006 and 1015 are never sent; below 1000 and 1004 are invalid.
bool IsSendableCloseCode(uint16_t code) {
  if (code < 1000 || code >= 5000) return false;
  return code != 1004 && code != 1005 && code != 1006 && code != 1015;
}
}  // namespace

void AckPromptly(beast::tcp_stream& stream) {
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
  if (!ws_) return;
  beast::error_code ignored;
  beast::get_lowest_layer(*ws_).socket().close(ignored);
}

bool WsSession::RuntimeStopped() const {
  return ioc_->stopped();
}

void WsSession::Send(std::string data, bool binary) {
  if (RuntimeStopped()) return;
  asio::dispatch(strand_, [self = shared_from_this(), data = std::move(data), binary]() mutable {
    if (self->close_requested_ || self->finished_ || self->aborted_) return;
    self->queue_.push_back(Outgoing{std::move(data), binary});
    if (self->open_ && !self->writing_) self->StartWrite();
  });
}

void WsSession::Close(uint16_t code, std::string reason) {
  if (RuntimeStopped()) return;
  if (!IsSendableCloseCode(code)) code = 1000;
  if (reason.size() > kMaxCloseReason) reason.resize(kMaxCloseReason);
  asio::dispatch(strand_, [self = shared_from_this(), code, reason = std::move(reason)]() mutable {
    if (self->close_requested_ || self->finished_) return;
    self->close_requested_ = true;
    self->close_code_ = code;
    self->close_reason_ = std::move(reason);
    if (self->open_ && !self->writing_) self->StartClose();
  });
}

void WsSession::Abort() {
  if (RuntimeStopped()) return;
  asio::dispatch(strand_, [self = shared_from_this()] {
    self->aborted_ = true;
    if (self->ws_) {
      beast::get_lowest_layer(*self->ws_).close();
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
    if (!self->sent_since_read_) AckPromptly(self->ws_->next_layer());
  }));
}

void WsSession::StartWrite() {
  writing_ = true;
  sent_since_read_ = true;
  Outgoing& front = queue_.front();
  ws_->binary(front.binary);
  ws_->async_write(asio::buffer(front.data),
                   asio::bind_executor(strand_, [self = shared_from_this()](
                                                    beast::error_code ec, size_t) {
                     self->writing_ = false;
                     if (ec) {
                       // The read loop sees the failure too and reports the close.
                       self->queue_.clear();
                       return;
                     }
                     self->queue_.pop_front();
                     if (!self->open_) return;
                     if (!self->queue_.empty()) {
                       self->StartWrite();
                     } else if (self->close_requested_ && !self->close_sent_) {
                       self->StartClose();
                     }
                   }));
}

void WsSession::StartClose() {
  close_sent_ = true;
  writing_ = true;
  websocket::close_reason reason(static_cast<websocket::close_code>(close_code_),
                                 beast::string_view(close_reason_));
  ws_->async_close(reason, asio::bind_executor(strand_, [self = shared_from_this()](
                                                            beast::error_code) {
                     self->writing_ = false;
                   }));
}

void WsSession::Finish(const std::shared_ptr<WsHandler>& handler, uint16_t code,
                       std::string reason) {
  open_ = false;
  queue_.clear();
  if (ack_timer_) ack_timer_->cancel();
  if (finished_) return;
  finished_ = true;
  if (ws_) {
    beast::error_code ignored;
    beast::get_lowest_layer(*ws_).socket().close(ignored);
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
  open_ = true;
  if (!queue_.empty()) {
    StartWrite();
  } else if (close_requested_) {
    StartClose();
  }
  beast::flat_buffer buffer;
  uint16_t code = 1006;
  std::string reason;
  for (;;) {
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
      } else if (close_sent_) {
        code = close_code_;
        reason = close_reason_;
      } else {
        KEEL_LOG(kDebug, kComponent, "connection lost",
                 {{"peer", remote_address_}, {"error", ec.message()}});
      }
      break;
    }
    sent_since_read_ = false;
    ArmAckCheck();
    std::string message = beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
    const bool binary = ws_->got_binary();
    try {
      handler->OnMessage(std::move(message), binary);
    } catch (const std::exception& e) {
      LogError(kComponent, "WsHandler::OnMessage threw", {{"what", e.what()}});
    } catch (...) {
      LogError(kComponent, "WsHandler::OnMessage threw");
    }
  }
  Finish(handler, code, std::move(reason));
}

asio::awaitable<void> WsSession::RunServer(beast::tcp_stream stream,
                                           http::request<http::string_body> request,
                                           std::string subprotocol, Headers headers,
                                           std::shared_ptr<WsHandler> handler) {
  ws_.emplace(std::move(stream));
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
  if (aborted_) {
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
  ws_->read_message_max(max_message_);
  if (aborted_) {
    Finish(handler, 1006, "");
    co_return;
  }
  co_await ReadLoop(std::move(handler));
}

}  // namespace internal
}  // namespace keel::net
