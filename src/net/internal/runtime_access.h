// keel::net internal: reaches the io_context behind an IoRuntime. Included only by
// src/net/*.cc (it pulls in Asio); never by a public header.
#pragma once

#include <boost/asio/io_context.hpp>

#include "net/io_runtime.h"

namespace keel::net::internal {

struct RuntimeAccess {
  static boost::asio::io_context& IoContext(IoRuntime& runtime);
};

inline boost::asio::io_context& IoContextOf(IoRuntime& runtime) {
  return RuntimeAccess::IoContext(runtime);
}

}  // namespace keel::net::internal
