// The payload limit of tunnel messages (envoy-protocol.md §6.6), shared by the engine, which
// enforces it, and the envoy client, which keeps under it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <variant>

#include "protocol/envoy/versioned.h"

namespace keel::protocol::envoy {

// ProtocolMetadata::maxResponsePayloadSize when the engine has not said (its default).
inline constexpr uint64_t kDefaultMaxResponsePayloadSize = uint64_t{20} << 20;

// The inner payload of a tunnel message as §6.6 measures it: a response start's or chunk's
// body, a WebSocket message's data; 0 for every other kind. The engine closes the envoy
// connection (ws.invalid_packet) on one larger than maxResponsePayloadSize.
inline size_t TunnelPayloadSize(const latest::ToRivetTunnelMessage& msg) {
  const auto& kind = msg.message_kind.value;
  if (const auto* start = std::get_if<latest::ToRivetResponseStart>(&kind)) {
    return start->body.has_value() ? start->body->size() : 0;
  }
  if (const auto* chunk = std::get_if<latest::ToRivetResponseChunk>(&kind)) {
    return chunk->body.size();
  }
  if (const auto* ws = std::get_if<latest::ToRivetWebSocketMessage>(&kind)) {
    return ws->data.size();
  }
  return 0;
}

}  // namespace keel::protocol::envoy
