// The envoy connection endpoint's URL (envoy-protocol.md §3.1, §3.2): the runtime builds it
// with BuildEnvoyConnectUrl; the engine validates the query of an incoming `/envoys/connect`
// upgrade with ParseEnvoyConnectQuery. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace keel::engine::gateway {

inline constexpr std::string_view kEnvoyConnectPath = "/envoys/connect";
// Protocol versions the engine accepts from an envoy (v1 is refused).
inline constexpr uint16_t kMinEnvoyProtocolVersion = 2;
inline constexpr uint16_t kMaxEnvoyProtocolVersion = 4;
inline constexpr size_t kMaxPoolNameBytes = 128;
inline constexpr size_t kMinEnvoyKeyBytes = 3;
inline constexpr size_t kMaxEnvoyKeyBytes = 128;

struct EnvoyConnectParams {
  uint16_t protocol_version = kMaxEnvoyProtocolVersion;
  std::string namespace_name;
  std::string envoy_key;
  // The envoy's deployment version.
  uint32_t version = 0;
  std::string pool_name;

  friend bool operator==(const EnvoyConnectParams&, const EnvoyConnectParams&) = default;
};

// True when `path` (query excluded) is exactly "/envoys/connect" or "/envoys/connect/".
bool IsEnvoyConnectPath(std::string_view path);

// Validates the connect query (raw, without '?'), in the engine's order: protocol_version,
// namespace, pool_name, envoy_key, version. For each name the first occurrence counts;
// values are form-decoded. Numbers are decimal with an optional leading '+'.
// `max_protocol_version` lets a fleet cap the version below this build's ceiling.
// Every failure is ws.invalid_request with one of these messages:
//   "missing `protocol_version` query parameter", "invalid `protocol_version` query
//   parameter" (not a u16), "unsupported `protocol_version` query parameter" (< 2 or >
//   max), "missing `namespace` query parameter", "missing `pool_name` query parameter",
//   "`pool_name` parameter too long (> 128)", "missing `envoy_key` query parameter",
//   "`envoy_key` parameter too short (< 3)", "`envoy_key` parameter too long (> 128)",
//   "`envoy_key` parameter invalid" (outside [0-9A-Za-z_-] or a leading/trailing '-'),
//   "missing `version` query parameter", "invalid `version` query parameter" (not a u32),
//   "invalid percent-encoding in `<name>` query parameter".
// The namespace's existence (namespace.not_found) and the pool's runner config
// (ws.no_runner_config) are the caller's checks.
Result<EnvoyConnectParams> ParseEnvoyConnectQuery(
    std::string_view raw_query, uint16_t max_protocol_version = kMaxEnvoyProtocolVersion);

// The envoy's WebSocket URL for an HTTP endpoint: every "http://" becomes "ws://" and every
// "https://" becomes "wss://" (plain substring replacement), trailing '/' are stripped, and
// "/envoys/connect?protocol_version=…&namespace=…&envoy_key=…&version=…&pool_name=…" is
// appended in exactly that order with each value PercentEncode'd.
std::string BuildEnvoyConnectUrl(std::string_view endpoint, const EnvoyConnectParams& params);

}  // namespace keel::engine::gateway
