#include "base/utf8.h"

#include <cstdint>
#include <cstring>

namespace keel {

size_t Utf8SequenceLength(std::string_view text, size_t i, size_t* bad) {
  const auto lead = static_cast<uint8_t>(text[i]);
  if (lead < 0x80) return 1;
  // Table 3-7: the lead byte fixes how many continuation bytes follow and the range of the
  // first one (which is what excludes overlong forms, surrogates and code points above
  // U+10FFFF); the others are always 80..BF.
  size_t trailing = 0;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    trailing = 1;
  } else if (lead == 0xE0) {
    trailing = 2, lo = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    trailing = 2;
  } else if (lead == 0xED) {
    trailing = 2, hi = 0x9F;
  } else if (lead == 0xF0) {
    trailing = 3, lo = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    trailing = 3;
  } else if (lead == 0xF4) {
    trailing = 3, hi = 0x8F;
  } else {
    if (bad != nullptr) *bad = 1;
    return 0;
  }
  size_t n = 1;
  while (n <= trailing && i + n < text.size()) {
    const auto c = static_cast<uint8_t>(text[i + n]);
    if (c < (n == 1 ? lo : 0x80) || c > (n == 1 ? hi : 0xBF)) break;
    ++n;
  }
  if (n == trailing + 1) return n;
  if (bad != nullptr) *bad = n;
  return 0;
}

namespace {

// Index of the first byte at or after `i` that is not ASCII (text.size() when none).
size_t SkipAscii(std::string_view text, size_t i) {
  while (text.size() - i >= 8) {
    uint64_t chunk;
    std::memcpy(&chunk, text.data() + i, 8);
    if ((chunk & 0x8080808080808080ull) != 0) break;
    i += 8;
  }
  while (i < text.size() && static_cast<uint8_t>(text[i]) < 0x80) ++i;
  return i;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  size_t i = SkipAscii(text, 0);
  while (i < text.size()) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) return false;
    i = SkipAscii(text, i + n);
  }
  return true;
}

std::string LossyUtf8(std::string_view text) {
  size_t i = SkipAscii(text, 0);
  size_t bad = 0;
  while (i < text.size()) {  // most text is well-formed: find the first flaw, if any
    const size_t n = Utf8SequenceLength(text, i, &bad);
    if (n == 0) break;
    i = SkipAscii(text, i + n);
  }
  if (i == text.size()) return std::string(text);
  std::string out(text.substr(0, i));
  while (i < text.size()) {
    const size_t n = Utf8SequenceLength(text, i, &bad);
    if (n == 0) {
      out.append(kUtf8Replacement);
      i += bad;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace keel
