// Property checks shared by the libFuzzer targets. A violated property traps, so libFuzzer
// keeps the input as a crash artifact.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "base/bytes.h"
#include "protocol/bare/codec.h"
#include "protocol/conversion.h"

namespace keel::fuzz {

[[noreturn]] inline void Violation(const char* property, const std::string& detail) {
  std::fprintf(stderr, "fuzz: property violated: %s: %s\n", property, detail.c_str());
  __builtin_trap();
}

inline bool SameBytes(const Bytes& a, ByteView b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// A generated codec is canonical on its own: bytes it accepts re-encode to exactly those
// bytes (decoding is strict, so only one encoding of a value is accepted).
template <typename T>
void CheckCanonical(ByteView in, const char* codec) {
  auto value = bare::DecodeValue<T>(in);
  if (!value.has_value()) return;
  Bytes out;
  bare::EncodeTo(*value, out);
  if (!SameBytes(out, in)) {
    Violation("canonical encoding", std::string(codec) + " accepted " + ToHex(in) +
                                        " but re-encodes to " + ToHex(out));
  }
}

// A frame that decodes at `version` re-encodes at `version` (a value that came from a
// version is representable there, so no ConversionError is legitimate), the result
// decodes to an equal value, and — when `exact_bytes` — equals the frame.
//   decode: (ByteView, uint16_t) -> Result<T>
//   encode: (const T&, uint16_t, Bytes&) -> Result<void, ConversionError>
template <typename Decode, typename Encode>
void CheckVersionedRoundTrip(ByteView frame, uint16_t version, Decode decode, Encode encode,
                             bool exact_bytes) {
  auto decoded = decode(frame, version);
  if (!decoded.has_value()) return;
  Bytes reencoded;
  auto encoded = encode(*decoded, version, reencoded);
  if (!encoded.has_value()) {
    Violation("re-encode at the decoded version", protocol::ToString(encoded.error()));
  }
  auto again = decode(reencoded, version);
  if (!again.has_value()) Violation("decode of re-encoded frame", again.error().ToString());
  if (!(*again == *decoded)) Violation("round trip", "decoded values differ");
  if (exact_bytes && !SameBytes(reencoded, frame)) {
    Violation("round trip bytes", ToHex(frame) + " re-encodes to " + ToHex(reencoded));
  }
}

}  // namespace keel::fuzz
