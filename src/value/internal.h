// Helpers shared by the value codecs; not API.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/error.h"

namespace keel::internal {

// The first failure a parser met: what, and at which offset. Later failures (the steps
// unwinding from the first) do not replace it.
class FirstFailure {
 public:
  // Records `what` at `pos` unless a failure is recorded already. Returns false, so a
  // parser's step can `return Fail(...)`.
  bool Record(const char* what, size_t pos) {
    if (what_ == nullptr) {
      what_ = what;
      pos_ = pos;
    }
    return false;
  }
  // value.<code>: "<what> at offset <pos>".
  Error ToError(const char* code) const {
    return Error(
        "value", code,
        std::string(what_ != nullptr ? what_ : "malformed") + " at offset " + std::to_string(pos_));
  }

 private:
  const char* what_ = nullptr;
  size_t pos_ = 0;
};

// Standard alphabet with padding.
void AppendBase64(ByteView in, std::string& out);
// Standard or URL-safe alphabet, padding optional; nullopt on anything else.
std::optional<Bytes> DecodeBase64(std::string_view in);

}  // namespace keel::internal
