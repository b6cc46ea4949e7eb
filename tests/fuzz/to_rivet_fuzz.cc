// libFuzzer target for the engine's ToRivet decoder: every envoy WebSocket frame the
// engine reads goes through envoy::DecodeToRivet (envoy-protocol.md §1.6, §2.13).
//
// Input: byte 0 picks the connection version (2 + b % 3, the versions the engine
// accepts, §3.2); the remaining bytes are one frame. A violated property traps, so
// libFuzzer keeps the input as a crash artifact. Checked:
//  1. No input crashes the decoder (ASan/UBSan watch memory and arithmetic).
//  2. A frame that decodes at version N re-encodes at N: between v2 and v4 ToRivet
//     conversion is a field copy (v2 SQLite requests are refused while decoding), so no
//     ConversionError is legitimate. The re-encoded bytes decode to an equal value and
//     equal the frame (decoding is strict, so the accepted form is the canonical one).
//  3. The generated v4 and version-N codecs are canonical on their own: bytes they
//     accept re-encode to exactly those bytes.
#include <cstddef>
#include <cstdint>

#include "protocol/envoy/v2.h"
#include "protocol/envoy/v3.h"
#include "protocol/envoy/v4.h"
#include "protocol/envoy/versioned.h"
#include "fuzz_support.h"

namespace envoy = keel::protocol::envoy;
using keel::fuzz::CheckCanonical;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto version = static_cast<uint16_t>(2 + data[0] % 3);
  const keel::ByteView frame(data + 1, size - 1);

  keel::fuzz::CheckVersionedRoundTrip(
      frame, version, [](keel::ByteView f, uint16_t v) { return envoy::DecodeToRivet(f, v); },
      envoy::EncodeToRivet, /*exact_bytes=*/true);

  CheckCanonical<envoy::v4::ToRivet>(frame, "v4::ToRivet");
  if (version == 3) CheckCanonical<envoy::v3::ToRivet>(frame, "v3::ToRivet");
  if (version == 2) CheckCanonical<envoy::v2::ToRivet>(frame, "v2::ToRivet");
  return 0;
}
