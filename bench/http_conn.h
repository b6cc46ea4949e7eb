// HttpConn: one keep-alive HTTP/1.1 client connection on a blocking loopback socket, written
// and read on the calling thread (the HTTP counterpart of WsConn in ws_conn.h; why the
// benches' clients have no I/O thread is said there). Shared by keel_bench and runtime_bench.
// Not for production use: no TLS, loopback only, minimal header parsing.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "recv.h"

namespace keel::bench {

// One keep-alive HTTP/1.1 connection on a blocking socket (Content-Length or chunked
// bodies), reconnecting lazily after a transport error. Thread-compatible.
class HttpConn {
 public:
  explicit HttpConn(uint16_t port,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(15000))
      : port_(port), timeout_(timeout) {}
  ~HttpConn() { Reset(); }
  HttpConn(const HttpConn&) = delete;
  HttpConn& operator=(const HttpConn&) = delete;

  void set_port(uint16_t port) {
    Reset();
    port_ = port;
  }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    in_.clear();
  }

  // Returns the status, 0 on a transport error (the connection is then dropped).
  int Request(const std::string& method, const std::string& target, const std::string& body,
              std::string* out) {
    if (fd_ < 0 && !Connect()) return 0;
    std::string req = method + " " + target +
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "X-Rivet-Encoding: json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body;
    size_t off = 0;
    while (off < req.size()) {
      ssize_t n = ::send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        Reset();
        return 0;
      }
      off += static_cast<size_t>(n);
    }
    bool close_after = false;
    const int status = Read(out, &close_after);
    if (status == 0 || close_after) Reset();
    return status;
  }
  int Post(const std::string& target, const std::string& body, std::string* out) {
    return Request("POST", target, body, out);
  }
  int Get(const std::string& target, std::string* out) { return Request("GET", target, "", out); }
  // How many TCP connections this client has opened (one unless the server closed them).
  int connects() const { return connects_; }

 private:
  bool Connect() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{static_cast<time_t>(timeout_.count() / 1000),
               static_cast<suseconds_t>((timeout_.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Reset();
      return false;
    }
    ++connects_;
    return true;
  }
  bool Fill() {
    char chunk[16384];
    ssize_t n = RecvPolling(fd_, chunk, sizeof chunk);
    if (n <= 0) return false;
    in_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  int Read(std::string* body, bool* close_after) {
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return 0;
    }
    const int status = std::atoi(in_.c_str() + 9);
    size_t length = 0;
    bool chunked = false;
    for (size_t line = in_.find("\r\n") + 2; line < end;) {
      size_t eol = in_.find("\r\n", line);
      std::string h = in_.substr(line, eol - line);
      std::transform(h.begin(), h.end(), h.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      if (h.rfind("content-length:", 0) == 0) length = std::strtoul(h.c_str() + 15, nullptr, 10);
      if (h.rfind("transfer-encoding:", 0) == 0 && h.find("chunked") != std::string::npos)
        chunked = true;
      if (h.rfind("connection:", 0) == 0 && h.find("close") != std::string::npos)
        *close_after = true;
      line = eol + 2;
    }
    in_.erase(0, end + 4);
    body->clear();
    if (!chunked) {
      while (in_.size() < length) {
        if (!Fill()) return 0;
      }
      body->assign(in_, 0, length);
      in_.erase(0, length);
      return status;
    }
    for (;;) {
      size_t eol;
      while ((eol = in_.find("\r\n")) == std::string::npos) {
        if (!Fill()) return 0;
      }
      const size_t size = std::strtoul(in_.c_str(), nullptr, 16);
      while (in_.size() < eol + 2 + size + 2) {
        if (!Fill()) return 0;
      }
      body->append(in_, eol + 2, size);
      in_.erase(0, eol + 2 + size + 2);
      if (size == 0) return status;
    }
  }

  uint16_t port_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::string in_;
  int connects_ = 0;
};

}  // namespace keel::bench
