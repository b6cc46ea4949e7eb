#include "engine/gateway/envoy_connect.h"

#include <optional>
#include <vector>

#include "engine/gateway/url.h"

namespace keel::engine::gateway {
namespace {

Error InvalidRequest(std::string message) {
  return Error("ws", "invalid_request", std::move(message));
}

// The decoded value of the first parameter whose decoded name is `name`; nullopt when
// absent. A bad escape in that value is an error.
Result<std::optional<std::string>> Find(const std::vector<QueryParam>& params,
                                        std::string_view name) {
  for (const QueryParam& p : params) {
    if (!p.name.has_value() || *p.name != name) continue;
    if (!p.value.has_value()) {
      return InvalidRequest("invalid percent-encoding in `" + std::string(name) +
                            "` query parameter");
    }
    return std::optional<std::string>(*p.value);
  }
  return std::optional<std::string>();
}

// Decimal unsigned integer with an optional leading '+' (the engine's integer parsing),
// no larger than `max`.
std::optional<uint64_t> ParseUnsigned(std::string_view s, uint64_t max) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > max) return std::nullopt;
  }
  return v;
}

bool IsEnvoyKeyChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
         c == '-';
}

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

}  // namespace

bool IsEnvoyConnectPath(std::string_view path) {
  return path == "/envoys/connect" || path == "/envoys/connect/";
}

Result<EnvoyConnectParams> ParseEnvoyConnectQuery(std::string_view raw_query,
                                                  uint16_t max_protocol_version) {
  std::vector<QueryParam> params = ParseQuery(raw_query);
  EnvoyConnectParams out;

  KEEL_ASSIGN_OR_RETURN(auto protocol_version, Find(params, "protocol_version"));
  if (!protocol_version) return InvalidRequest("missing `protocol_version` query parameter");
  std::optional<uint64_t> pv = ParseUnsigned(*protocol_version, UINT16_MAX);
  if (!pv) return InvalidRequest("invalid `protocol_version` query parameter");
  if (*pv < kMinEnvoyProtocolVersion || *pv > max_protocol_version) {
    return InvalidRequest("unsupported `protocol_version` query parameter");
  }
  out.protocol_version = static_cast<uint16_t>(*pv);

  KEEL_ASSIGN_OR_RETURN(auto namespace_name, Find(params, "namespace"));
  if (!namespace_name) return InvalidRequest("missing `namespace` query parameter");
  out.namespace_name = std::move(*namespace_name);

  KEEL_ASSIGN_OR_RETURN(auto pool_name, Find(params, "pool_name"));
  if (!pool_name) return InvalidRequest("missing `pool_name` query parameter");
  if (pool_name->size() > kMaxPoolNameBytes) {
    return InvalidRequest("`pool_name` parameter too long (> 128)");
  }
  out.pool_name = std::move(*pool_name);

  KEEL_ASSIGN_OR_RETURN(auto envoy_key, Find(params, "envoy_key"));
  if (!envoy_key) return InvalidRequest("missing `envoy_key` query parameter");
  if (envoy_key->size() < kMinEnvoyKeyBytes) {
    return InvalidRequest("`envoy_key` parameter too short (< 3)");
  }
  if (envoy_key->size() > kMaxEnvoyKeyBytes) {
    return InvalidRequest("`envoy_key` parameter too long (> 128)");
  }
  for (char c : *envoy_key) {
    if (!IsEnvoyKeyChar(c)) return InvalidRequest("`envoy_key` parameter invalid");
  }
  if (envoy_key->front() == '-' || envoy_key->back() == '-') {
    return InvalidRequest("`envoy_key` parameter invalid");
  }
  out.envoy_key = std::move(*envoy_key);

  KEEL_ASSIGN_OR_RETURN(auto version, Find(params, "version"));
  if (!version) return InvalidRequest("missing `version` query parameter");
  std::optional<uint64_t> v = ParseUnsigned(*version, UINT32_MAX);
  if (!v) return InvalidRequest("invalid `version` query parameter");
  out.version = static_cast<uint32_t>(*v);
  return out;
}

std::string BuildEnvoyConnectUrl(std::string_view endpoint, const EnvoyConnectParams& params) {
  std::string url = ReplaceAll(std::string(endpoint), "http://", "ws://");
  url = ReplaceAll(std::move(url), "http+unix://", "ws+unix://");
  url = ReplaceAll(std::move(url), "https://", "wss://");
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += kEnvoyConnectPath;
  url += "?protocol_version=";
  url += PercentEncode(std::to_string(params.protocol_version));
  url += "&namespace=";
  url += PercentEncode(params.namespace_name);
  url += "&envoy_key=";
  url += PercentEncode(params.envoy_key);
  url += "&version=";
  url += PercentEncode(std::to_string(params.version));
  url += "&pool_name=";
  url += PercentEncode(params.pool_name);
  return url;
}

}  // namespace keel::engine::gateway
