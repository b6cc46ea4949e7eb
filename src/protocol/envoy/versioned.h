// The envoy protocol at the edge: bytes of any supported version in, latest (v4) types
// out, and back (DESIGN.md §2 point 6). Everything inside Keel uses `envoy::latest`.
//
// * WebSocket frames carry a bare value at the connection's negotiated version
//   (no prefix): DecodeToRivet / EncodeToEnvoy and friends.
// * The serverless start body and engine-internal stored messages carry a 2-byte
//   little-endian version prefix (envoy-protocol.md §1.6): *Framed variants.
//
// Decoding upgrades through v1 -> v2 -> v3 -> v4; encoding downgrades the other way and
// fails with a typed ConversionError (ProtocolCompatibilityError when a feature is
// missing at the target) instead of producing bytes the peer would misread.
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"
#include "protocol/bare/codec.h"
#include "protocol/conversion.h"
#include "protocol/envoy/v4.h"

namespace keel::protocol::envoy {

namespace latest = v4;

inline constexpr uint16_t kLatestVersion = 4;
inline constexpr uint16_t kOldestVersion = 1;
// The engine accepts envoy connections at these versions (envoy-protocol.md §3.2).
inline constexpr uint16_t kMinConnectVersion = 2;
// Keel's held-outputs capability (docs/runtime.md "Held outputs"): a native runtime asks
// with this upgrade header set to "1"; the engine confirms with the same header on its 101.
inline constexpr std::string_view kHoldOutputsHeader = "x-keel-hold-outputs";
// Keel's early-requests capability (docs/engine.md "Early requests"): the envoy keeps an HTTP
// request that arrives for an actor it is still starting until the start is over (and
// refuses it with kNotStartedHeader when the start fails), so the engine may forward it
// right behind the start command. Asked and confirmed like kHoldOutputsHeader.
inline constexpr std::string_view kEarlyRequestsHeader = "x-keel-early-requests";
// On a 503 answer to an HTTP request: the actor never started, the request was not handled
// (the gateway may send it again, to the actor's next instance).
inline constexpr std::string_view kNotStartedHeader = "x-keel-not-started";

bool IsSupportedVersion(uint16_t version);

// Errors: `protocol.decode_failed` (malformed bytes), `protocol.unsupported_version`,
// `protocol.incompatible_message` (a v2 SQLite message, which no later version has).
Result<latest::ToRivet> DecodeToRivet(ByteView frame, uint16_t version,
                                      const bare::Limits& limits = {});
Result<latest::ToEnvoy> DecodeToEnvoy(ByteView frame, uint16_t version,
                                      const bare::Limits& limits = {});
Result<latest::ToEnvoyConn> DecodeToEnvoyConn(ByteView frame, uint16_t version,
                                              const bare::Limits& limits = {});
Result<latest::ToGateway> DecodeToGateway(ByteView frame, uint16_t version,
                                          const bare::Limits& limits = {});
Result<latest::ToOutbound> DecodeToOutbound(ByteView frame, uint16_t version,
                                            const bare::Limits& limits = {});
Result<latest::ActorCommandKeyData> DecodeActorCommandKeyData(ByteView frame, uint16_t version,
                                                              const bare::Limits& limits = {});

// Encoding for `version` appends to `out` (so callers can reuse buffers); on error `out`
// is left as it was. An unsupported version is an IncompatibleMessageError.
Result<void, ConversionError> EncodeToRivet(const latest::ToRivet& msg, uint16_t version, Bytes& out);
Result<void, ConversionError> EncodeToEnvoy(const latest::ToEnvoy& msg, uint16_t version, Bytes& out);
Result<void, ConversionError> EncodeToEnvoyConn(const latest::ToEnvoyConn& msg, uint16_t version,
                                                Bytes& out);
Result<void, ConversionError> EncodeToGateway(const latest::ToGateway& msg, uint16_t version,
                                              Bytes& out);
Result<void, ConversionError> EncodeToOutbound(const latest::ToOutbound& msg, uint16_t version,
                                               Bytes& out);
Result<void, ConversionError> EncodeActorCommandKeyData(const latest::ActorCommandKeyData& msg,
                                                        uint16_t version, Bytes& out);

// The 2-byte little-endian version prefix (vbare "embedded version").
void AppendVersionPrefix(uint16_t version, Bytes& out);
// Splits a framed payload into (version, body). Errors: `protocol.decode_failed` when
// shorter than 2 bytes, `protocol.unsupported_version` ("invalid version: N").
Result<std::pair<uint16_t, ByteView>> SplitVersionPrefix(ByteView framed);

template <typename T>
struct Framed {
  uint16_t version = 0;
  T value;
};

Result<Framed<latest::ToEnvoy>> DecodeToEnvoyFramed(ByteView framed);
Result<Framed<latest::ToEnvoyConn>> DecodeToEnvoyConnFramed(ByteView framed);
Result<Framed<latest::ToGateway>> DecodeToGatewayFramed(ByteView framed);
Result<Framed<latest::ToOutbound>> DecodeToOutboundFramed(ByteView framed);
Result<Framed<latest::ActorCommandKeyData>> DecodeActorCommandKeyDataFramed(ByteView framed);

Result<Bytes, ConversionError> EncodeToEnvoyFramed(const latest::ToEnvoy& msg, uint16_t version);
Result<Bytes, ConversionError> EncodeToEnvoyConnFramed(const latest::ToEnvoyConn& msg,
                                                       uint16_t version);
Result<Bytes, ConversionError> EncodeToGatewayFramed(const latest::ToGateway& msg, uint16_t version);
Result<Bytes, ConversionError> EncodeToOutboundFramed(const latest::ToOutbound& msg,
                                                      uint16_t version);
Result<Bytes, ConversionError> EncodeActorCommandKeyDataFramed(
    const latest::ActorCommandKeyData& msg, uint16_t version);

}  // namespace keel::protocol::envoy
