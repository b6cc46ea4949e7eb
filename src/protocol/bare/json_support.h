// Helpers used by the generated JSON mappers (conformance-vector form: 64-bit integers
// as decimal strings, bytes as lowercase hex). Native-only: includes nlohmann::json.
#pragma once

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "base/bytes.h"

namespace keel::bare::json_support {

using Json = nlohmann::ordered_json;

inline bool Fail(std::string* err, std::string_view path, std::string_view what) {
  if (err != nullptr && err->empty()) {
    *err = std::string(path) + ": " + std::string(what);
  }
  return false;
}

template <typename T>
bool ParseDecimal(const Json& j, T& out) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
  }
  if (j.is_number_unsigned()) {
    auto v = j.get<uint64_t>();
    if constexpr (std::is_signed_v<T>) {
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
    } else {
      if (v > std::numeric_limits<T>::max()) return false;
    }
    out = static_cast<T>(v);
    return true;
  }
  if (j.is_number_integer()) {
    auto v = j.get<int64_t>();
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min())) return false;
    if (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      return false;
    }
    out = static_cast<T>(v);
    return true;
  }
  return false;
}

template <typename T>
bool ReadPrim(const Json& j, T& out, std::string_view bare_type, std::string_view path,
              std::string* err) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!j.is_boolean()) return Fail(err, path, "expected a boolean");
    out = j.get<bool>();
    return true;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!j.is_string()) return Fail(err, path, "expected a string");
    out = j.get<std::string>();
    return true;
  } else if constexpr (std::is_same_v<T, Bytes>) {
    if (!j.is_string()) return Fail(err, path, "expected a hex string");
    auto bytes = FromHex(j.get_ref<const std::string&>());
    if (!bytes) return Fail(err, path, "invalid hex");
    out = std::move(*bytes);
    return true;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!j.is_number()) return Fail(err, path, "expected a number");
    out = j.get<T>();
    return true;
  } else {
    if (!ParseDecimal(j, out)) {
      return Fail(err, path, std::string("expected ") + std::string(bare_type));
    }
    return true;
  }
}

inline bool ReadFixedHex(const Json& j, uint8_t* out, size_t n, std::string_view path,
                         std::string* err) {
  if (!j.is_string()) return Fail(err, path, "expected a hex string");
  auto bytes = FromHex(j.get_ref<const std::string&>());
  if (!bytes || bytes->size() != n) return Fail(err, path, "expected " + std::to_string(n) + " hex bytes");
  std::copy(bytes->begin(), bytes->end(), out);
  return true;
}

}  // namespace keel::bare::json_support
