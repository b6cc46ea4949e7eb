// The client protocol's BARE encoding at the edge (actors.md §4.7–§4.8): a 2-byte
// little-endian version prefix, then the message at that version. Versions 1–3 are read
// (upgraded to the latest, v3); writing targets any of them (v3 by default).
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>

#include "base/bytes.h"
#include "base/result.h"
#include "protocol/bare/codec.h"
#include "protocol/conversion.h"
#include "protocol/client/v3.h"

namespace keel::protocol::client {

namespace latest = v3;
inline constexpr uint16_t kLatestVersion = 3;

// Errors: `protocol.decode_failed`, `protocol.unsupported_version`,
// `protocol.incompatible_message` (a message that does not exist at the framed version).
Result<latest::ToServer> DecodeToServer(ByteView framed);
Result<latest::ToClient> DecodeToClient(ByteView framed);
Result<latest::HttpActionRequest> DecodeHttpActionRequest(ByteView framed);
Result<latest::HttpActionResponse> DecodeHttpActionResponse(ByteView framed);
Result<latest::HttpResponseError> DecodeHttpResponseError(ByteView framed);
Result<latest::HttpResolveResponse> DecodeHttpResolveResponse(ByteView framed);
// Queue sends exist from v3 on.
Result<latest::HttpQueueSendRequest> DecodeHttpQueueSendRequest(ByteView framed);
Result<latest::HttpQueueSendResponse> DecodeHttpQueueSendResponse(ByteView framed);

Result<Bytes, ConversionError> EncodeToServer(const latest::ToServer& msg,
                                              uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeToClient(const latest::ToClient& msg,
                                              uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpActionRequest(const latest::HttpActionRequest& msg,
                                                       uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpActionResponse(const latest::HttpActionResponse& msg,
                                                        uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpResponseError(const latest::HttpResponseError& msg,
                                                       uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpResolveResponse(const latest::HttpResolveResponse& msg,
                                                         uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpQueueSendRequest(const latest::HttpQueueSendRequest& msg,
                                                          uint16_t version = kLatestVersion);
Result<Bytes, ConversionError> EncodeHttpQueueSendResponse(
    const latest::HttpQueueSendResponse& msg, uint16_t version = kLatestVersion);

}  // namespace keel::protocol::client
