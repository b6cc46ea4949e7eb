// WsConn: one WebSocket client connection (RFC 6455) on a blocking loopback socket, written
// and read on the calling thread. The WebSocket counterpart of keel_bench's HttpConn: the
// bench measures the server's round trip, so its clients put no thread between the socket
// and the caller (a client with an I/O thread adds one hand-off and one thread wake-up to
// every answer — keel::net::BlockingWsClient does: its echo round trip is ~35 µs here
// against ~17 µs for this one).
//
// Frames: masked on the way out, one send() per frame; fragmented messages are joined,
// pings answered, pongs skipped, a close frame ends the connection. Not for production use:
// no TLS, no extensions, loopback only. Thread-compatible.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/detail/prng.hpp>

#include "recv.h"

namespace keel::bench {

class WsConn {
 public:
  struct Message {
    std::string data;
    bool binary = true;
  };

  // Connects to 127.0.0.1:`port` and upgrades `path` offering `subprotocols`. On failure
  // returns null and says why in `*error`.
  static std::unique_ptr<WsConn> Connect(uint16_t port, const std::string& path,
                                         const std::vector<std::string>& subprotocols,
                                         std::chrono::milliseconds timeout, std::string* error) {
    std::unique_ptr<WsConn> c(new WsConn);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    c->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd_ < 0) return Failed(error, "socket() failed");
    int one = 1;
    ::setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return Failed(error, "connect() failed: " + std::string(std::strerror(errno)));
    }
    namespace wsd = boost::beast::websocket::detail;
    wsd::sec_ws_key_type key;
    wsd::make_sec_ws_key(key);
    std::string protocols;
    for (const auto& p : subprotocols) protocols += (protocols.empty() ? "" : ", ") + p;
    std::string req =
        "GET " + path +
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
        std::string(key.data(), key.size()) + "\r\n";
    if (!protocols.empty()) req += "Sec-WebSocket-Protocol: " + protocols + "\r\n";
    req += "\r\n";
    if (!c->SendAll(req)) return Failed(error, "sending the upgrade request failed");
    size_t end;
    while ((end = c->in_.find("\r\n\r\n")) == std::string::npos) {
      if (!c->Fill(deadline)) return Failed(error, "no upgrade response");
    }
    std::string head = c->in_.substr(0, end + 2);
    c->in_.erase(0, end + 4);
    if (head.rfind("HTTP/1.1 101", 0) != 0) {
      return Failed(error, "upgrade refused: " + head.substr(0, head.find("\r\n")));
    }
    wsd::sec_ws_accept_type accept;
    wsd::make_sec_ws_accept(accept, boost::beast::string_view(key.data(), key.size()));
    std::string lower = head;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    const std::string want = "sec-websocket-accept: ";
    const size_t at = lower.find(want);
    if (at == std::string::npos ||
        head.compare(at + want.size(), accept.size(), accept.data(), accept.size()) != 0) {
      return Failed(error, "the upgrade response's Sec-WebSocket-Accept is missing or wrong");
    }
    return c;
  }

  ~WsConn() {
    if (fd_ < 0) return;
    if (open_) {
      const unsigned char close_1000[2] = {0x03, 0xe8};
      (void)WriteFrame(0x8, std::string_view(reinterpret_cast<const char*>(close_1000), 2));
    }
    ::close(fd_);
  }
  WsConn(const WsConn&) = delete;
  WsConn& operator=(const WsConn&) = delete;

  // Sends one data message in one frame. False once the connection failed or closed.
  bool Send(std::string_view data, bool binary = true) {
    return open_ && WriteFrame(binary ? 0x2 : 0x1, data);
  }

  // The next data message; nullopt on timeout, close or error (open() then turns false,
  // except after a timeout between messages). A timeout is kept to within a factor of two.
  std::optional<Message> Receive(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    Message message;
    bool in_message = false;
    while (open_) {
      // Header: 2 bytes, the extended length, the mask key when masked.
      if (!Need(2, deadline)) return in_message ? Broken() : std::nullopt;
      const auto b0 = static_cast<unsigned char>(in_[0]);
      const auto b1 = static_cast<unsigned char>(in_[1]);
      const bool fin = (b0 & 0x80) != 0;
      const int opcode = b0 & 0x0f;
      const bool masked = (b1 & 0x80) != 0;
      uint64_t len = b1 & 0x7f;
      size_t header = 2;
      if (len >= 126) {
        const size_t ext = len == 126 ? 2 : 8;
        if (!Need(header + ext, deadline)) return in_message ? Broken() : std::nullopt;
        len = 0;
        for (size_t i = 0; i < ext; ++i)
          len = (len << 8) | static_cast<unsigned char>(in_[header + i]);
        header += ext;
      }
      if (len > kMaxMessage || message.data.size() + len > kMaxMessage) return Broken();
      unsigned char mask[4] = {0, 0, 0, 0};
      if (masked) {
        if (!Need(header + 4, deadline)) return in_message ? Broken() : std::nullopt;
        std::memcpy(mask, in_.data() + header, 4);
        header += 4;
      }
      if (!Need(header + len, deadline)) return in_message ? Broken() : std::nullopt;
      std::string payload = in_.substr(header, len);
      in_.erase(0, header + len);
      if (masked) {
        for (size_t i = 0; i < payload.size(); ++i)
          payload[i] = static_cast<char>(payload[i] ^ mask[i & 3]);
      }
      switch (opcode) {
        case 0x1:
        case 0x2:
          if (in_message) return Broken();
          message.binary = opcode == 0x2;
          message.data = std::move(payload);
          in_message = true;
          break;
        case 0x0:
          if (!in_message) return Broken();
          message.data += payload;
          break;
        case 0x8:
          // Answer the close and end; the server closes the TCP connection.
          (void)WriteFrame(0x8, payload.substr(0, 2));
          open_ = false;
          return std::nullopt;
        case 0x9:
          if (!WriteFrame(0xA, payload)) return Broken();
          continue;
        case 0xA:
          continue;
        default:
          return Broken();
      }
      if (fin) return message;
    }
    return std::nullopt;
  }

  bool open() const { return open_; }

 private:
  static constexpr uint64_t kMaxMessage = 64ull << 20;

  WsConn() = default;

  static std::unique_ptr<WsConn> Failed(std::string* error, std::string why) {
    if (error != nullptr) *error = std::move(why);
    return nullptr;
  }

  std::nullopt_t Broken() {
    open_ = false;
    return std::nullopt;
  }

  bool SendAll(std::string_view bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        open_ = false;
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  bool WriteFrame(int opcode, std::string_view data) {
    std::string frame;
    frame.reserve(14 + data.size());
    frame.push_back(static_cast<char>(0x80 | opcode));
    const uint64_t len = data.size();
    if (len < 126) {
      frame.push_back(static_cast<char>(0x80 | len));
    } else if (len <= 0xffff) {
      frame.push_back(static_cast<char>(0x80 | 126));
      frame.push_back(static_cast<char>(len >> 8));
      frame.push_back(static_cast<char>(len & 0xff));
    } else {
      frame.push_back(static_cast<char>(0x80 | 127));
      for (int shift = 56; shift >= 0; shift -= 8)
        frame.push_back(static_cast<char>((len >> shift) & 0xff));
    }
    // RFC 6455 §5.3: a fresh key per frame.
    uint32_t key = 0;
    while (key == 0) key = boost::beast::websocket::detail::make_prng(true)();
    unsigned char k[4];
    std::memcpy(k, &key, 4);
    frame.append(reinterpret_cast<const char*>(k), 4);
    const size_t at = frame.size();
    frame.append(data);
    for (size_t i = 0; i < data.size(); ++i)
      frame[at + i] = static_cast<char>(frame[at + i] ^ k[i & 3]);
    return SendAll(frame);
  }

  // Reads until `in_` holds at least `n` bytes or `deadline` passes.
  bool Need(size_t n, std::chrono::steady_clock::time_point deadline) {
    while (in_.size() < n) {
      if (!Fill(deadline)) return false;
    }
    return true;
  }

  // One recv, blocking up to the receive timeout (set once per distinct Receive timeout:
  // a blocking recv is one syscall where poll-then-recv is two).
  bool Fill(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (left > recv_timeout_ || left < recv_timeout_ / 2) {
      recv_timeout_ = left;
      timeval tv{static_cast<time_t>(left.count() / 1000),
                 static_cast<suseconds_t>((left.count() % 1000) * 1000)};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    char chunk[16384];
    const ssize_t n = RecvPolling(fd_, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;  // timed out
    if (n <= 0) {
      open_ = false;
      return false;
    }
    in_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool open_ = true;
  std::chrono::milliseconds recv_timeout_{0};
  std::string in_;
};

}  // namespace keel::bench
