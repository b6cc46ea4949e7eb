// libFuzzer target for the envoy's ToEnvoy decoder: every engine -> envoy WebSocket frame
// (and the serverless start body) goes through envoy::DecodeToEnvoy (envoy-protocol.md
// §1.6, §2.13).
//
// Input: byte 0 picks the version (1 + b % 4); the remaining bytes are one frame. A
// violated property traps, so libFuzzer keeps the input as a crash artifact. Checked:
//  1. No input crashes the decoder (ASan/UBSan watch memory and arithmetic).
//  2. A frame that decodes at version N re-encodes at N (a value that came from N is
//     representable at N, so no ConversionError is legitimate) and the re-encoded bytes
//     decode to an equal value. They also equal the frame, except at v2: decoding v2
//     drops CommandStartActor.sqliteStartupData (v3+ have none) and re-encoding writes
//     it as absent.
//  3. The generated v4 and version-N codecs are canonical on their own: bytes they
//     accept re-encode to exactly those bytes.
#include <cstddef>
#include <cstdint>

#include "protocol/envoy/v1.h"
#include "protocol/envoy/v2.h"
#include "protocol/envoy/v3.h"
#include "protocol/envoy/v4.h"
#include "protocol/envoy/versioned.h"
#include "fuzz_support.h"

namespace envoy = keel::protocol::envoy;
using keel::fuzz::CheckCanonical;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto version = static_cast<uint16_t>(1 + data[0] % 4);
  const keel::ByteView frame(data + 1, size - 1);

  keel::fuzz::CheckVersionedRoundTrip(
      frame, version, [](keel::ByteView f, uint16_t v) { return envoy::DecodeToEnvoy(f, v); },
      envoy::EncodeToEnvoy, /*exact_bytes=*/version != 2);

  CheckCanonical<envoy::v4::ToEnvoy>(frame, "v4::ToEnvoy");
  switch (version) {
    case 1:
      CheckCanonical<envoy::v1::ToEnvoy>(frame, "v1::ToEnvoy");
      break;
    case 2:
      CheckCanonical<envoy::v2::ToEnvoy>(frame, "v2::ToEnvoy");
      break;
    case 3:
      CheckCanonical<envoy::v3::ToEnvoy>(frame, "v3::ToEnvoy");
      break;
    default:
      break;
  }
  return 0;
}
