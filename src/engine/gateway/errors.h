// How gateway and engine errors leave the process: the HTTP status and JSON body of a REST
// or gateway error (actors.md §5.9, §7), and WebSocket close frames with their client-side
// parsing (envoy-protocol.md §3.6). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace keel::engine::gateway {

// The HTTP status for an error, exactly the gateway's table (actors.md §5.9):
//   api.not_found 404, api.unauthorized 401, api.forbidden 403, guard.rate_limit 429,
//   guard.upstream_error 502, guard.routing_error 502, guard.retry_attempts_exceeded 502,
//   guard.invalid_response_body 502, guard.request_timeout 504, actor.not_found 404,
//   guard.service_unavailable 503, guard.actor_ready_timeout 503, guard.no_route 404,
//   guard.invalid_request_body 413;
//   unstructured/internal 500: group "unknown" (Error::FromString's fallback), group
//   "internal", or core.internal_error;
//   any other structured error 400 (incl. guard.actor_runner_failed and other guard.*).
int HttpStatusFor(const Error& error);

// True for the errors HttpStatusFor maps to 500.
bool IsInternalError(const Error& error);

// `{"group":…,"code":…,"message":…,"metadata":…}`. Strings are JSON-escaped; invalid
// UTF-8 becomes U+FFFD so the output is always valid JSON. REQUIRES: `metadata_json` is a
// valid JSON value; it is inserted verbatim.
std::string ErrorJson(const Error& error, std::string_view metadata_json = "{}");

// JSON string literal (with the quotes) for arbitrary bytes, as ErrorJson escapes them.
std::string JsonQuote(std::string_view text);

// WebSocket close-reason limit: a close frame payload is 125 bytes, 2 of them the code.
inline constexpr size_t kMaxCloseReasonBytes = 123;
inline constexpr uint16_t kCloseNormal = 1000;
inline constexpr uint16_t kCloseInternalError = 1011;
// A clean end without error closes with code 1000 and this reason.
inline constexpr std::string_view kCleanCloseReason = "ws.closed";
// The envoy's own close on shutdown (code 1000).
inline constexpr std::string_view kEnvoyShutdownCloseReason = "envoy.shutdown";

// "<group>.<code>#<ray_id>" cut to at most kMaxCloseReasonBytes bytes, backing off to a
// UTF-8 character boundary so the reason stays valid text. Internal errors (IsInternalError)
// are reported as core.internal_error.
std::string CloseReason(const Error& error, std::string_view ray_id);

// 1000 for ws.eviction and ws.connection_closed, 1011 for everything else.
uint16_t CloseCode(const Error& error);

struct ParsedCloseReason {
  std::string group;
  std::string code;
  // What follows the first '#', when there is one (possibly empty).
  std::optional<std::string> ray_id;

  friend bool operator==(const ParsedCloseReason&, const ParsedCloseReason&) = default;
};

// The client's reading of a close reason: split at the first '#' (right side: ray id),
// then the left side at the first '.' into group and code. nullopt ("unparsed") when there
// is no '.' or the group or the code is empty.
std::optional<ParsedCloseReason> ParseCloseReason(std::string_view reason);

}  // namespace keel::engine::gateway
