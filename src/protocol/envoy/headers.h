// HTTP header lists as the envoy protocol carries them: a BARE map<str, str>, so one
// entry per name (the decoder rejects a repeated key as malformed). Every producer of
// tunnel headers — the gateway for requests and WebSocket opens, the runtime for responses —
// merges repeated names first, as HTTP allows (RFC 9110 §5.3): values joined with ", "
// in order ("; " for Cookie, RFC 6265 §5.4), names compared case-insensitively, the first
// spelling kept. Set-Cookie cannot be merged losslessly; its values are joined with ", " too
// (the map cannot carry several — a limit of the wire format, as in Rivet's).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/ascii.h"

namespace keel::protocol::envoy {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

inline HeaderList MergeRepeatedHeaders(HeaderList headers) {
  HeaderList out;
  out.reserve(headers.size());
  for (auto& [name, value] : headers) {
    auto it = out.begin();
    for (; it != out.end(); ++it) {
      if (EqualsIgnoreCase(it->first, name)) break;
    }
    if (it == out.end()) {
      out.emplace_back(std::move(name), std::move(value));
    } else {
      it->second += EqualsIgnoreCase(name, "cookie") ? "; " : ", ";
      it->second += value;
    }
  }
  return out;
}

}  // namespace keel::protocol::envoy
