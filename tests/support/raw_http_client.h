// A blocking loopback TCP client for byte-exact HTTP tests: it writes what the test gives
// it and reads the server's answers back as raw bytes (keep-alive, HEAD, malformed
// requests, refusals). Every read gives up after a 10 s receive timeout.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace keel::testing {

class RawHttpClient {
 public:
  // Connects to 127.0.0.1:`port`. `receive_buffer` > 0 caps the socket's receive buffer
  // (set before connecting, so the window the server sees stays small).
  explicit RawHttpClient(uint16_t port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawHttpClient() { ::close(fd_); }
  RawHttpClient(const RawHttpClient&) = delete;
  RawHttpClient& operator=(const RawHttpClient&) = delete;

  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // One response head, through the blank line, whatever its Content-Length says (an
  // answer to HEAD); "" on EOF/timeout before a full one.
  std::string ReadHead() {
    for (;;) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) return Take(end + 4);
      if (!ReadMore()) return "";
    }
  }

  // One response head and the Content-Length bytes after it; "" on EOF/timeout before a
  // full one (nothing is consumed then).
  std::string ReadResponse() {
    for (;;) {
      const size_t end = buffer_.find("\r\n\r\n");
      if (end != std::string::npos) {
        const std::string length = Header(buffer_.substr(0, end + 4), "content-length");
        const size_t total = end + 4 + (length.empty() ? 0 : std::stoul(length));
        if (buffer_.size() >= total) return Take(total);
      }
      if (!ReadMore()) return "";
    }
  }

  // Exactly `n` bytes; "" on EOF/timeout before them.
  std::string ReadExactly(size_t n) {
    while (buffer_.size() < n) {
      if (!ReadMore()) return "";
    }
    return Take(n);
  }

  // Everything still unread up to the server's EOF (or the receive timeout).
  std::string ReadToEof() {
    while (ReadMore()) {
    }
    return std::exchange(buffer_, std::string());
  }

  // Bytes received and not yet read (the kernel's receive queue and this client's buffer).
  size_t Available() {
    int queued = 0;
    if (::ioctl(fd_, FIONREAD, &queued) != 0) queued = 0;
    return buffer_.size() + static_cast<size_t>(queued);
  }

  // True when the server closed the connection (EOF or reset) within the receive timeout;
  // anything received before that is discarded.
  bool WaitEof() {
    for (;;) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  // The value of header `name` (ASCII case-insensitive) in a raw response, leading blanks
  // dropped; "" if absent.
  static std::string Header(const std::string& response, std::string_view name) {
    std::string lower = response;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string key = "\r\n" + std::string(name) + ":";
    for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const size_t at = lower.find(key);
    if (at == std::string::npos) return "";
    size_t start = at + key.size();
    while (start < response.size() && response[start] == ' ') ++start;
    return response.substr(start, response.find("\r\n", start) - start);
  }

  // The bytes after a raw response's head.
  static std::string Body(const std::string& response) {
    const size_t end = response.find("\r\n\r\n");
    return end == std::string::npos ? "" : response.substr(end + 4);
  }

 private:
  bool ReadMore() {
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<size_t>(n));
    return true;
  }
  std::string Take(size_t n) {
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

}  // namespace keel::testing
