// ASCII text helpers shared by every layer (header names, PRAGMA names, tokens): no locale,
// bytes outside A–Z compare as they are. Header-only; builds for wasm.
#pragma once

#include <cstddef>
#include <string_view>

namespace keel {

constexpr char AsciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// ASCII case-insensitive equality.
constexpr bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

}  // namespace keel
