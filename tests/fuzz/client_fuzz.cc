// libFuzzer target for the client protocol decoders (client/versioned.h): WebSocket
// messages and HTTP bodies from untrusted clients, framed with a 2-byte little-endian
// version (actors.md §4.7–§4.8).
//
// Input: byte 0 picks the message type (b % 8, order of kMessages below); the remaining
// bytes are the framed payload. A violated property traps, so libFuzzer keeps the input
// as a crash artifact. Checked:
//  1. No input crashes a decoder (ASan/UBSan watch memory and arithmetic).
//  2. A payload that decodes at version N re-encodes at N (a value that came from N is
//     representable at N, so no ConversionError is legitimate) and the re-encoded
//     payload decodes to an equal value. It also equals the input, except a v1 ToClient:
//     v1 Init carries a connection token that v2+ drop (re-encoded as "").
//  3. The generated v3 and version-N codecs are canonical on their own: bodies they
//     accept re-encode to exactly those bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>

#include "base/bytes.h"
#include "protocol/bare/codec.h"
#include "protocol/client/v1.h"
#include "protocol/client/v2.h"
#include "protocol/client/v3.h"
#include "protocol/client/versioned.h"
#include "fuzz_support.h"

namespace {

namespace client = keel::protocol::client;
using keel::Bytes;
using keel::ByteView;
using keel::Result;
using keel::protocol::ConversionError;

using keel::fuzz::CheckCanonical;
using keel::fuzz::SameBytes;
using keel::fuzz::Violation;

// Marks a message that has no v1/v2 form.
struct Absent {};

template <typename T1, typename T2, typename T3>
void Check(ByteView framed, Result<T3> (*decode)(ByteView),
           Result<Bytes, ConversionError> (*encode)(const T3&, uint16_t), bool lossy_v1) {
  const char* name = TypeName(static_cast<const T3*>(nullptr)).data();
  auto decoded = decode(framed);
  if (decoded.has_value()) {
    // Decoding succeeded, so the 2-byte prefix is there and names a supported version.
    const auto version = static_cast<uint16_t>(framed[0] | (framed[1] << 8));
    auto reencoded = encode(*decoded, version);
    if (!reencoded.has_value()) {
      Violation("re-encode at the decoded version",
                std::string(name) + ": " + keel::protocol::ToString(reencoded.error()));
    }
    auto again = decode(*reencoded);
    if (!again.has_value()) {
      Violation("decode of re-encoded payload",
                std::string(name) + ": " + again.error().ToString());
    }
    if (!(*again == *decoded)) Violation("round trip", std::string(name) + ": values differ");
    if (!(lossy_v1 && version == 1) && !SameBytes(*reencoded, framed)) {
      Violation("round trip bytes", std::string(name) + ": " + keel::ToHex(framed) +
                                        " re-encodes to " + keel::ToHex(*reencoded));
    }
  }

  if (framed.size() < 2) return;
  const auto version = static_cast<uint16_t>(framed[0] | (framed[1] << 8));
  const ByteView body = framed.subspan(2);
  CheckCanonical<T3>(body, name);
  if constexpr (!std::is_same_v<T2, Absent>) {
    if (version == 2) CheckCanonical<T2>(body, name);
    if (version == 1) CheckCanonical<T1>(body, name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ByteView framed(data + 1, size - 1);
  using namespace client;  // NOLINT: the three schema namespaces below
  switch (data[0] % 8) {
    case 0:
      Check<v1::ToServer, v2::ToServer, v3::ToServer>(framed, DecodeToServer, EncodeToServer,
                                                      false);
      break;
    case 1:
      Check<v1::ToClient, v2::ToClient, v3::ToClient>(framed, DecodeToClient, EncodeToClient, true);
      break;
    case 2:
      Check<v1::HttpActionRequest, v2::HttpActionRequest, v3::HttpActionRequest>(
          framed, DecodeHttpActionRequest, EncodeHttpActionRequest, false);
      break;
    case 3:
      Check<v1::HttpActionResponse, v2::HttpActionResponse, v3::HttpActionResponse>(
          framed, DecodeHttpActionResponse, EncodeHttpActionResponse, false);
      break;
    case 4:
      Check<v1::HttpResponseError, v2::HttpResponseError, v3::HttpResponseError>(
          framed, DecodeHttpResponseError, EncodeHttpResponseError, false);
      break;
    case 5:
      Check<v1::HttpResolveResponse, v2::HttpResolveResponse, v3::HttpResolveResponse>(
          framed, DecodeHttpResolveResponse, EncodeHttpResolveResponse, false);
      break;
    case 6:
      Check<Absent, Absent, v3::HttpQueueSendRequest>(framed, DecodeHttpQueueSendRequest,
                                                      EncodeHttpQueueSendRequest, false);
      break;
    case 7:
      Check<Absent, Absent, v3::HttpQueueSendResponse>(framed, DecodeHttpQueueSendResponse,
                                                       EncodeHttpQueueSendResponse, false);
      break;
  }
  return 0;
}
