// The benches' clients' one read (HttpConn, WsConn), with an optional polling window.
//
// A client that blocks in recv() sleeps while the server works; its answer then has to wake
// the client's thread, and on a virtual machine whose idle vCPUs halt that costs tens of µs
// per answer, which no server can save. With a polling window the client first retries a
// non-blocking recv() for up to that long, so an answer that comes within it needs no
// wake-up: what is left is the server's own round trip (both of keel_bench's W1 figures
// are reported: --client-poll-us). The price is a core spent spinning while it waits.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace keel::bench {

// Process-wide: how long a bench client polls before it blocks (0 = never polls).
inline std::atomic<int64_t> g_client_poll_us{0};

// recv(fd, buf, n, 0), polled first for g_client_poll_us. Returns what recv returns; a
// blocking recv keeps the socket's SO_RCVTIMEO.
inline ssize_t RecvPolling(int fd, char* buf, size_t n) {
  const int64_t poll_us = g_client_poll_us.load(std::memory_order_relaxed);
  if (poll_us > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(poll_us);
    do {
      const ssize_t got = ::recv(fd, buf, n, MSG_DONTWAIT);
      if (got >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return got;
    } while (std::chrono::steady_clock::now() < until);
  }
  return ::recv(fd, buf, n, 0);
}

}  // namespace keel::bench
