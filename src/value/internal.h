// Helpers shared by the value codecs; not API.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace keel::internal {

// Well-formed UTF-8 per RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF.
bool ValidUtf8(const uint8_t* p, size_t n);

// Standard alphabet with padding.
void AppendBase64(ByteView in, std::string& out);
// Standard or URL-safe alphabet, padding optional; nullopt on anything else.
std::optional<Bytes> DecodeBase64(std::string_view in);

}  // namespace keel::internal
