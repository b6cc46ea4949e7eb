// keel::net internal: reaches the io_context behind an IoRuntime. Included only by
// src/net/*.cc (it pulls in Asio); never by a public header.
#pragma once

#include <memory>
#include <mutex>
#include <unordered_set>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>

#include "net/io_runtime.h"

namespace keel::net::internal {

// The io_context is shared: every object that holds Asio I/O objects or strands (server
// state, connections, WebSocket sessions, strand executors, client stream controls) keeps a
// reference, declared as its FIRST member so it is released last. ~IoRuntime stops and shuts
// the context down (destroying every pending handler); objects still alive afterwards keep
// the shut-down context alive, so destroying them (or calling them: their posts are dropped)
// stays safe in any order.
struct RuntimeAccess {
  static boost::asio::io_context& IoContext(IoRuntime& runtime);
  static std::shared_ptr<boost::asio::io_context> SharedIoContext(IoRuntime& runtime);
};

inline boost::asio::io_context& IoContextOf(IoRuntime& runtime) {
  return RuntimeAccess::IoContext(runtime);
}
inline std::shared_ptr<boost::asio::io_context> SharedIoContextOf(IoRuntime& runtime) {
  return RuntimeAccess::SharedIoContext(runtime);
}

// An object owning sockets that may outlive its runtime (a connection the engine still
// holds). ~IoRuntime calls CloseOnShutdown once, after the runtime threads are joined, so
// peers see the connection end even while the object lives on.
class ShutdownCloser {
 public:
  // No runtime thread runs during this call; it must only close sockets.
  virtual void CloseOnShutdown() = 0;

 protected:
  ~ShutdownCloser() = default;
};

// Per-io_context registry of ShutdownClosers (an Asio service, so objects find it through
// their io_context). Objects Add themselves when built and Remove themselves FIRST in their
// destructor; the registry lock makes CloseOnShutdown and destruction mutually exclusive.
class ShutdownRegistry final : public boost::asio::execution_context::service {
 public:
  using key_type = ShutdownRegistry;
  inline static boost::asio::execution_context::id id;

  explicit ShutdownRegistry(boost::asio::execution_context& context)
      : boost::asio::execution_context::service(context) {}

  void Add(ShutdownCloser* closer) {
    std::lock_guard lock(mu_);
    if (closed_) {
      closer->CloseOnShutdown();
      return;
    }
    closers_.insert(closer);
  }
  void Remove(ShutdownCloser* closer) {
    std::lock_guard lock(mu_);
    closers_.erase(closer);
  }
  // Idempotent.
  void CloseAll() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (ShutdownCloser* closer : closers_) closer->CloseOnShutdown();
    closers_.clear();
  }

 private:
  void shutdown() override { CloseAll(); }

  std::mutex mu_;
  bool closed_ = false;
  std::unordered_set<ShutdownCloser*> closers_;
};

inline ShutdownRegistry& ShutdownRegistryOf(boost::asio::io_context& ioc) {
  return boost::asio::use_service<ShutdownRegistry>(ioc);
}

}  // namespace keel::net::internal
