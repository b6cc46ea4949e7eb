#include "engine/gateway/subprotocols.h"

namespace keel::engine::gateway {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Sets `slot` to what follows `prefix` in `entry` unless `slot` is already set.
bool TakePrefixed(std::string_view entry, std::string_view prefix,
                  std::optional<std::string>& slot) {
  if (!entry.starts_with(prefix)) return false;
  if (!slot.has_value()) slot = std::string(entry.substr(prefix.size()));
  return true;
}

}  // namespace

std::vector<std::string_view> SplitSubprotocols(std::string_view header) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t comma = header.find(',', start);
    std::string_view entry = Trim(header.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (!entry.empty()) out.push_back(entry);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string JoinSubprotocols(std::span<const std::string> protocols) {
  std::string out;
  for (const std::string& p : protocols) {
    if (!out.empty()) out += ", ";
    out += p;
  }
  return out;
}

RivetSubprotocols ParseRivetSubprotocols(std::string_view header) {
  RivetSubprotocols out;
  for (std::string_view entry : SplitSubprotocols(header)) {
    if (entry == kSubprotocolRivet) {
      out.rivet = true;
    } else if (entry == kSubprotocolBypassConnectable) {
      out.bypass_connectable = true;
    } else if (TakePrefixed(entry, kSubprotocolTargetPrefix, out.target) ||
               TakePrefixed(entry, kSubprotocolActorPrefix, out.actor_id_raw) ||
               TakePrefixed(entry, kSubprotocolTokenPrefix, out.token) ||
               TakePrefixed(entry, kSubprotocolEncodingPrefix, out.encoding) ||
               TakePrefixed(entry, kSubprotocolConnParamsPrefix, out.conn_params_raw) ||
               TakePrefixed(entry, kSubprotocolInspectorTokenPrefix, out.inspector_token) ||
               TakePrefixed(entry, kSubprotocolTestAckHookPrefix, out.test_ack_hook)) {
      continue;
    }
  }
  return out;
}

}  // namespace keel::engine::gateway
