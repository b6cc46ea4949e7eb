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
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "base/bytes.h"
#include "protocol/bare/codec.h"
#include "protocol/envoy/v1.h"
#include "protocol/envoy/v2.h"
#include "protocol/envoy/v3.h"
#include "protocol/envoy/v4.h"
#include "protocol/envoy/versioned.h"

namespace {

namespace envoy = keel::protocol::envoy;
using keel::Bytes;
using keel::ByteView;

[[noreturn]] void Violation(const char* property, const std::string& detail) {
  std::fprintf(stderr, "to_envoy_fuzz: property violated: %s: %s\n", property, detail.c_str());
  __builtin_trap();
}

bool SameBytes(const Bytes& a, ByteView b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// Property 3 for one generated codec.
template <typename T>
void CheckCanonical(ByteView in, const char* codec) {
  auto value = keel::bare::DecodeValue<T>(in);
  if (!value.has_value()) return;
  Bytes out;
  keel::bare::EncodeTo(*value, out);
  if (!SameBytes(out, in)) {
    Violation("canonical encoding", std::string(codec) + " accepted " + keel::ToHex(in) +
                                        " but re-encodes to " + keel::ToHex(out));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto version = static_cast<uint16_t>(1 + data[0] % 4);
  const ByteView frame(data + 1, size - 1);

  auto decoded = envoy::DecodeToEnvoy(frame, version);
  if (decoded.has_value()) {
    Bytes reencoded;
    auto encoded = envoy::EncodeToEnvoy(*decoded, version, reencoded);
    if (!encoded.has_value()) {
      Violation("re-encode at the decoded version", keel::protocol::ToString(encoded.error()));
    }
    auto again = envoy::DecodeToEnvoy(reencoded, version);
    if (!again.has_value()) {
      Violation("decode of re-encoded frame", again.error().ToString());
    }
    if (!(*again == *decoded)) Violation("round trip", "decoded values differ");
    if (version != 2 && !SameBytes(reencoded, frame)) {
      Violation("round trip bytes",
                keel::ToHex(frame) + " re-encodes to " + keel::ToHex(reencoded));
    }
  }

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
