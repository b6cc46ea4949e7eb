// The client protocol's messages (actors.md §4.4–§4.8) in its three encodings, with
// application values (args, output, metadata, queue bodies) as keel::Value:
//
//  * json: text; `{"body": {"tag": "<Variant>", "val": {...}}}` for WebSocket messages
//    (camelCase fields), plain objects for the HTTP bodies; values inlined as JSON with
//    the compatibility escapes; ids emitted as ["$BigInt","<n>"], plain numbers
//    accepted.
//  * cbor: the same structure as a CBOR map; ids as unsigned integers; an absent
//    `actionId` in Error is an explicit null.
//  * bare: versioned BARE (u16 LE version prefix; v3 written, v1–v3 read) whose `Cbor`
//    fields hold the CBOR encoding of the value.
//
// Decoding treats input as hostile: it never crashes and fails with `wire.invalid_message`
// naming the problem (malformed JSON/CBOR/BARE, wrong envelope, missing or mistyped
// field, args that are not an array). Unknown fields are ignored. Values nest at most
// limits.max_depth deep and hold at most limits.max_items entries. In json/cbor an
// optional field that is absent, null or undefined decodes as absent, and a missing value
// field (output, body) as undefined; json omits undefined value fields as JSON.stringify
// does.
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "base/bytes.h"
#include "base/result.h"
#include "value/value.h"

namespace keel::wire {

enum class Encoding { kJson, kCbor, kBare };

// "json" | "cbor" | "bare" (as in `x-rivet-encoding` and `rivet_encoding.<name>`).
std::optional<Encoding> ParseEncoding(std::string_view name);
std::string_view EncodingName(Encoding encoding);
// application/json | application/octet-stream
std::string_view ContentType(Encoding encoding);
// JSON travels in text WebSocket frames, CBOR and BARE in binary ones.
bool UsesTextFrames(Encoding encoding);

// ---- WebSocket: server -> client ----
struct Init {
  std::string actor_id, connection_id;
  friend bool operator==(const Init&, const Init&) = default;
};
// The protocol's `Error` message.
struct ErrorMsg {
  std::string group, code, message;
  std::optional<Value> metadata;
  std::optional<uint64_t> action_id;
  friend bool operator==(const ErrorMsg&, const ErrorMsg&) = default;
};
struct ActionResponse {
  uint64_t id = 0;
  Value output;
  friend bool operator==(const ActionResponse&, const ActionResponse&) = default;
};
struct Event {
  std::string name;
  Value args;  // an array
  friend bool operator==(const Event&, const Event&) = default;
};
using ToClient = std::variant<Init, ErrorMsg, ActionResponse, Event>;

// ---- WebSocket: client -> server ----
struct ActionRequest {
  uint64_t id = 0;
  std::string name;
  Value args;  // an array
  friend bool operator==(const ActionRequest&, const ActionRequest&) = default;
};
struct SubscriptionRequest {
  std::string event_name;
  bool subscribe = false;
  friend bool operator==(const SubscriptionRequest&, const SubscriptionRequest&) = default;
};
using ToServer = std::variant<ActionRequest, SubscriptionRequest>;

// ---- HTTP bodies ----
struct HttpActionRequest {
  Value args;  // an array
  friend bool operator==(const HttpActionRequest&, const HttpActionRequest&) = default;
};
struct HttpActionResponse {
  Value output;
  friend bool operator==(const HttpActionResponse&, const HttpActionResponse&) = default;
};
struct HttpQueueSendRequest {
  Value body;
  std::optional<std::string> name;
  std::optional<bool> wait;
  std::optional<uint64_t> timeout;  // milliseconds
  friend bool operator==(const HttpQueueSendRequest&, const HttpQueueSendRequest&) = default;
};
struct HttpQueueSendResponse {
  std::string status;  // "completed" | "timedOut"
  std::optional<Value> response;
  friend bool operator==(const HttpQueueSendResponse&, const HttpQueueSendResponse&) = default;
};
struct HttpResponseError {
  std::string group, code, message;
  std::optional<Value> metadata;
  friend bool operator==(const HttpResponseError&, const HttpResponseError&) = default;
};

// Encoding cannot fail. For json the bytes are UTF-8 text.
Bytes Encode(const ToClient& msg, Encoding encoding);
Bytes Encode(const ToServer& msg, Encoding encoding);
Bytes Encode(const HttpActionRequest& msg, Encoding encoding);
Bytes Encode(const HttpActionResponse& msg, Encoding encoding);
Bytes Encode(const HttpQueueSendRequest& msg, Encoding encoding);
Bytes Encode(const HttpQueueSendResponse& msg, Encoding encoding);
Bytes Encode(const HttpResponseError& msg, Encoding encoding);

// Errors: `wire.invalid_message`.
Result<ToClient> DecodeToClient(ByteView in, Encoding encoding, const CborLimits& limits = {});
Result<ToServer> DecodeToServer(ByteView in, Encoding encoding, const CborLimits& limits = {});
Result<HttpActionRequest> DecodeHttpActionRequest(ByteView in, Encoding encoding,
                                                  const CborLimits& limits = {});
Result<HttpActionResponse> DecodeHttpActionResponse(ByteView in, Encoding encoding,
                                                    const CborLimits& limits = {});
Result<HttpQueueSendRequest> DecodeHttpQueueSendRequest(ByteView in, Encoding encoding,
                                                        const CborLimits& limits = {});
Result<HttpQueueSendResponse> DecodeHttpQueueSendResponse(ByteView in, Encoding encoding,
                                                          const CborLimits& limits = {});
Result<HttpResponseError> DecodeHttpResponseError(ByteView in, Encoding encoding,
                                                  const CborLimits& limits = {});

}  // namespace keel::wire
