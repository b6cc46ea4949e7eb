// Helpers shared by the storage tests: a self-removing temporary directory, byte/string
// conversions and an assertion on structured storage errors.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

#include "base/bytes.h"
#include "base/result.h"
#include "storage/kv_store.h"
#include "support/temp_dir.h"

namespace keel::storage::testing {

// A fresh directory under the system temp dir, removed with everything in it on
// destruction.
using ::keel::testing::TempDir;

inline Bytes B(std::string_view s) {
  ByteView v = AsBytes(s);
  return Bytes(v.begin(), v.end());
}
inline std::string S(ByteView b) { return std::string(AsString(b)); }

inline std::vector<std::string> Keys(const std::vector<KeyValue>& entries) {
  std::vector<std::string> out;
  for (const KeyValue& kv : entries) out.push_back(S(kv.key));
  return out;
}

// Passes when `result` holds the error `storage.<code>`.
template <typename T>
::testing::AssertionResult IsStorageError(const Result<T>& result, std::string_view code) {
  if (result.has_value()) {
    return ::testing::AssertionFailure() << "expected storage." << code << ", got a value";
  }
  if (!result.error().Is(kErrorGroup, code)) {
    return ::testing::AssertionFailure()
           << "expected storage." << code << ", got " << result.error().ToString();
  }
  return ::testing::AssertionSuccess();
}

// Passes when `result` holds a value; prints the error otherwise.
template <typename T>
::testing::AssertionResult IsOk(const Result<T>& result) {
  if (result.has_value()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << result.error().ToString();
}

}  // namespace keel::storage::testing
