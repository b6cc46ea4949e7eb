// libFuzzer target for the application-value codecs (value/value.h) and the client
// protocol messages built on them (wire/client_messages.h): everything a client sends
// passes through these decoders before an actor sees it.
//
// Input: byte 0 picks the decoder (b % 16: 0 CBOR, 1 JSON, 2.. a wire message type and
// encoding); the remaining bytes are the payload. A violated property traps. Checked:
//  1. No input crashes or aborts a decoder (ASan/UBSan watch memory and arithmetic).
//  2. CBOR: a decoded value re-encodes to bytes that decode again and re-encode to the
//     same bytes (bytes, not values, are compared: NaN != NaN), and its JSON rendering
//     parses back.
//  3. JSON: a parsed value prints to JSON that parses back and prints identically, and
//     survives a CBOR round trip.
//  4. Wire: a decoded message re-encodes in the same encoding, decodes again, and
//     re-encodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/bytes.h"
#include "fuzz_support.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace {

using keel::Bytes;
using keel::ByteView;
using keel::Value;
using keel::fuzz::Violation;
namespace wire = keel::wire;

void CheckCborValue(const Value& v, const char* where) {
  const Bytes once = keel::EncodeCbor(v);
  // Escapes may add a level of nesting at the leaves, so re-reading needs headroom.
  keel::CborLimits roomy;
  roomy.max_depth = 1024;
  roomy.max_items = SIZE_MAX;
  auto again = keel::DecodeCbor(once, roomy);
  if (!again) Violation("CBOR re-decode", std::string(where) + ": " + again.error().ToString());
  if (keel::EncodeCbor(*again) != once) Violation("CBOR round trip bytes", where);
  const std::string json = keel::ToJson(v);
  auto parsed = keel::ParseJson(json, 1024);
  if (!parsed) {
    Violation("JSON rendering parses",
              std::string(where) + ": " + json + ": " + parsed.error().ToString());
  }
  if (keel::ToJson(*parsed) != json) Violation("JSON idempotent", json);
}

template <typename Msg, typename Decode>
void CheckWire(ByteView in, wire::Encoding e, Decode decode) {
  auto m = decode(in, e, keel::CborLimits{});
  if (!m) {
    if (!m.error().Is("wire", "invalid_message"))
      Violation("wire error code", m.error().ToString());
    return;
  }
  const Bytes once = wire::Encode(*m, e);
  keel::CborLimits roomy;
  roomy.max_depth = 1024;
  roomy.max_items = SIZE_MAX;
  auto again = decode(once, e, roomy);
  if (!again) Violation("wire re-decode", again.error().ToString() + " for " + keel::ToHex(once));
  if (wire::Encode(*again, e) != once) Violation("wire round trip bytes", keel::ToHex(once));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ByteView in(data + 1, size - 1);
  const uint8_t selector = data[0] % 16;
  if (selector == 0) {
    auto v = keel::DecodeCbor(in);
    if (v) CheckCborValue(*v, "cbor");
    return 0;
  }
  if (selector == 1) {
    auto v = keel::ParseJson(keel::AsString(in));
    if (v) CheckCborValue(*v, "json");
    return 0;
  }
  // 2..15: seven message types x two encodings, plus bare for all of them via the high
  // bit of byte 0.
  const int type = (selector - 2) % 7;
  wire::Encoding e = selector < 9 ? wire::Encoding::kJson : wire::Encoding::kCbor;
  if (data[0] & 0x80) e = wire::Encoding::kBare;
  switch (type) {
    case 0:
      CheckWire<wire::ToClient>(in, e, wire::DecodeToClient);
      break;
    case 1:
      CheckWire<wire::ToServer>(in, e, wire::DecodeToServer);
      break;
    case 2:
      CheckWire<wire::HttpActionRequest>(in, e, wire::DecodeHttpActionRequest);
      break;
    case 3:
      CheckWire<wire::HttpActionResponse>(in, e, wire::DecodeHttpActionResponse);
      break;
    case 4:
      CheckWire<wire::HttpQueueSendRequest>(in, e, wire::DecodeHttpQueueSendRequest);
      break;
    case 5:
      CheckWire<wire::HttpQueueSendResponse>(in, e, wire::DecodeHttpQueueSendResponse);
      break;
    default:
      CheckWire<wire::HttpResponseError>(in, e, wire::DecodeHttpResponseError);
      break;
  }
  return 0;
}
