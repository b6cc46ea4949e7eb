// Byte buffers and views. `Bytes` owns, `ByteView` borrows (the viewed memory must
// outlive the view). Hex helpers are for tests, tools and logs, not hot paths.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline ByteView AsBytes(std::string_view s) {
  return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
inline std::string_view AsString(ByteView b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

// Lowercase hex, no separators.
std::string ToHex(ByteView bytes);
// Accepts upper or lower case, no separators; nullopt on odd length or a non-hex digit.
std::optional<Bytes> FromHex(std::string_view hex);

}  // namespace keel
