// keel::net internal: what a WebSocket close may carry on the wire (RFC 6455 §5.5, §7.4),
// shared by the socket connections and the in-process ones. Boost-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace keel::net::internal {

// Control frame payloads are at most 125 bytes, 2 of them the code.
inline constexpr size_t kMaxCloseReason = 123;

// 1005, 1006 and 1015 are never sent; below 1000, 1004 and 5000 and up are invalid.
inline bool IsSendableCloseCode(uint16_t code) {
  if (code < 1000 || code >= 5000) return false;
  return code != 1004 && code != 1005 && code != 1006 && code != 1015;
}

// The close a peer receives for WsConnection::Close(code, reason): an unsendable code
// becomes 1000, the reason is cut to kMaxCloseReason bytes.
inline void MakeSendableClose(uint16_t& code, std::string& reason) {
  if (!IsSendableCloseCode(code)) code = 1000;
  if (reason.size() > kMaxCloseReason) reason.resize(kMaxCloseReason);
}

}  // namespace keel::net::internal
