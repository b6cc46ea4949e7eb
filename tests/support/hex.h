// Test helper: bytes from hex written with optional spaces ("0a 02 00 00 00").
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace keel::testing {

inline Bytes Hex(std::string_view spaced) {
  std::string compact;
  for (char c : spaced) {
    if (c != ' ') compact.push_back(c);
  }
  auto bytes = FromHex(compact);
  if (!bytes) std::abort();  // a typo in the test itself
  return *bytes;
}

}  // namespace keel::testing
