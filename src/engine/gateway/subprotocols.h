// `Sec-WebSocket-Protocol` handling for Keel/Rivet sockets (actors.md §5.5, envoy-protocol.md
// §3.1). The gateway, the envoy endpoint and the actor runtime read routing, auth and
// connection options out of the offered subprotocols. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel::engine::gateway {

inline constexpr std::string_view kSubprotocolRivet = "rivet";
inline constexpr std::string_view kSubprotocolTargetPrefix = "rivet_target.";
inline constexpr std::string_view kSubprotocolActorPrefix = "rivet_actor.";
inline constexpr std::string_view kSubprotocolTokenPrefix = "rivet_token.";
inline constexpr std::string_view kSubprotocolBypassConnectable = "rivet_bypass_connectable";
inline constexpr std::string_view kSubprotocolEncodingPrefix = "rivet_encoding.";
inline constexpr std::string_view kSubprotocolConnParamsPrefix = "rivet_conn_params.";
inline constexpr std::string_view kSubprotocolInspectorTokenPrefix = "rivet_inspector_token.";
inline constexpr std::string_view kSubprotocolTestAckHookPrefix = "rivet_test_ack_hook.";

// Splits a header value on ',' and trims spaces and tabs around each entry; entries that
// are empty after trimming are dropped. The views point into `header`.
std::vector<std::string_view> SplitSubprotocols(std::string_view header);

// Joins subprotocols the way the clients send them: ", " between entries.
std::string JoinSubprotocols(std::span<const std::string> protocols);

// The Rivet subprotocols found in one header value. For each prefix the first offered entry
// wins. Values are kept exactly as offered: `actor_id_raw` and `conn_params_raw` are
// percent-encoded on the wire and are decoded by whoever consumes them (PercentDecode), so
// a bad escape only fails the consumer that cares.
struct RivetSubprotocols {
  bool rivet = false;                          // `rivet`
  std::optional<std::string> target;           // `rivet_target.<t>`
  std::optional<std::string> actor_id_raw;     // `rivet_actor.<url-encoded id>`
  std::optional<std::string> token;            // `rivet_token.<token>`
  bool bypass_connectable = false;             // `rivet_bypass_connectable`
  std::optional<std::string> encoding;         // `rivet_encoding.<json|cbor|bare>`
  std::optional<std::string> conn_params_raw;  // `rivet_conn_params.<url-encoded JSON>`
  std::optional<std::string> inspector_token;  // `rivet_inspector_token.<t>`
  std::optional<std::string> test_ack_hook;    // `rivet_test_ack_hook.<t>`
};

// Never fails: unknown entries are ignored.
RivetSubprotocols ParseRivetSubprotocols(std::string_view header);

}  // namespace keel::engine::gateway
