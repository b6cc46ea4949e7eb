// ASCII text helpers shared by every layer (header names, PRAGMA names, tokens): no locale,
// bytes outside A–Z compare as they are. Header-only; builds for wasm.
#pragma once

#include <cstddef>
#include <optional>
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

// The token of an `Authorization` value in the Bearer scheme, whose name is
// case-insensitive (RFC 7235 §2.1: "bearer x" is "Bearer x") and followed by one or more
// spaces. nullopt for another scheme or no token.
constexpr std::optional<std::string_view> BearerToken(std::string_view value) {
  constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || value[kScheme.size()] != ' ' ||
      !EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  std::string_view token = value.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace keel
