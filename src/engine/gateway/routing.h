// The gateway's routing decision (actors.md §5.1-§5.5, envoy-protocol.md §3.1): given the
// method, request target, headers and whether the request is a WebSocket upgrade, decide
// where it goes and pull out everything the next step needs (actor id or query, token,
// the path to forward). Actor lookup, waking and tunnelling are the caller's. Pure;
// thread-safe.
//
// Order (§5.1):
//   1. path "/health/ws" or "/health/ws/": Health if enabled, else guard.no_route.
//   2. path form, first segment "gateway" and no "//" in the path:
//      - any raw query name starting with "rvt-" → query form (§5.3); its errors are final;
//      - else direct form `/gateway/{id}[@{token}]{rest}`; with no actor segment it falls
//        through, a malformed actor segment is guard.invalid_actor_id (Keel: Rivet falls
//        through to the REST API, which answered a gateway path).
//      OPTIONS on either form → CorsPreflight (the query is not validated for a preflight).
//   3. path "/envoys/connect" or "/envoys/connect/" → EnvoyConnect. (Legacy runner paths
//      are not supported and fall through.)
//   4. target: `rivet_target.<t>` subprotocol (WebSocket) or `x-rivet-target` (HTTP):
//      "actor" → header form (§5.4), "envoy" → EnvoyConnect, "api-public" → Api,
//      anything else → guard.no_route. For "actor": OPTIONS → CorsPreflight; a non-WebSocket
//      target that is not "/request", "/request/…" or "/request?…" → guard.no_route.
//   5. no target → Api.
//
// Direct form, precisely: the path (query excluded) must start with '/' and contain no
// "//"; its '/'-separated segments (ignoring the leading empty one and a trailing empty
// one) start with "gateway" followed by a non-empty actor segment. The actor segment splits
// at its first '@' into id and token, both must be non-empty, and both are strictly
// percent-decoded; a failure there is guard.invalid_actor_id (400). The forwarded path is the rest
// of the path after the actor segment ("/" when empty) followed by the original "?query"
// byte-for-byte when the target had a '?'.
//
// Tokens: the path token (`@token`) or `rvt-token` wins; otherwise `rivet_token.<t>`
// (WebSocket) or `x-rivet-token` (HTTP). Bypass: `rivet_bypass_connectable` (WebSocket) or
// the presence of `x-rivet-bypass-connectable` (HTTP), for every actor form.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "base/bytes.h"
#include "base/result.h"
#include "engine/gateway/actor_key.h"
#include "engine/gateway/cors.h"

namespace keel::engine::gateway {

inline constexpr std::string_view kHeaderTarget = "x-rivet-target";
inline constexpr std::string_view kHeaderActor = "x-rivet-actor";
inline constexpr std::string_view kHeaderToken = "x-rivet-token";
inline constexpr std::string_view kHeaderBypassConnectable = "x-rivet-bypass-connectable";
inline constexpr std::string_view kHeaderWebSocketProtocol = "sec-websocket-protocol";

struct GatewayRequest {
  std::string_view method;
  // The request target as received: origin-form (path plus optional "?query"), or
  // absolute-form (see OriginFormTarget).
  std::string_view target;
  // Header names are matched case-insensitively; for repeated names the first counts.
  std::span<const Header> headers;
  bool is_websocket = false;
};

struct RoutingOptions {
  // Serve the WebSocket health responder on /health/ws (engine config; off by default).
  bool enable_websocket_health_route = false;
};

struct HealthRoute {
  friend bool operator==(const HealthRoute&, const HealthRoute&) = default;
};

// The envoy endpoint. The caller checks the token when auth is enabled (before upgrading),
// answers a non-WebSocket request with 200 text/plain, and validates the query after the
// upgrade with ParseEnvoyConnectQuery.
struct EnvoyConnectRoute {
  // `rivet_token.<t>` (first offered) for WebSockets, `x-rivet-token` otherwise.
  std::optional<std::string> token;
  friend bool operator==(const EnvoyConnectRoute&, const EnvoyConnectRoute&) = default;
};

struct ActorByIdRoute {
  // Percent-decoded; not validated as an actor id here (the caller parses it, id.invalid).
  std::string actor_id;
  std::optional<std::string> token;
  // Path plus query to hand to the actor, always starting with '/'.
  std::string forwarded_path;
  bool bypass_connectable = false;
  friend bool operator==(const ActorByIdRoute&, const ActorByIdRoute&) = default;
};

enum class QueryMethod { kGet, kGetOrCreate };
enum class CrashPolicy { kRestart, kSleep, kDestroy };

struct ActorByQueryRoute {
  std::string namespace_name;
  QueryMethod method = QueryMethod::kGet;
  // Percent-decoded actor name from the path.
  std::string name;
  ActorKey key;
  // getOrCreate only (rvt-pool, else rvt-runner); always nullopt for get.
  std::optional<std::string> pool_name;
  // getOrCreate only: the decoded rvt-input bytes (one well-formed CBOR item).
  std::optional<Bytes> input;
  std::optional<std::string> region;
  std::optional<CrashPolicy> crash_policy;
  std::optional<std::string> token;
  // Rest of the path ("/" when empty) plus "?" and the non-rvt params' original bytes in
  // their original order (no '?' when none remain).
  std::string forwarded_path;
  bool bypass_connectable = false;
  friend bool operator==(const ActorByQueryRoute&, const ActorByQueryRoute&) = default;
};

struct ActorByHeaderRoute {
  // `x-rivet-actor` as sent (HTTP) or the percent-decoded `rivet_actor.<id>` (WebSocket).
  std::string actor_id;
  std::optional<std::string> token;
  // The full original target (path and query), e.g. "/request/x?a=1".
  std::string forwarded_path;
  bool bypass_connectable = false;
  friend bool operator==(const ActorByHeaderRoute&, const ActorByHeaderRoute&) = default;
};

// Answer with kPreflightStatus and these headers; never reaches the actor.
struct CorsPreflightRoute {
  HeaderList headers;
  friend bool operator==(const CorsPreflightRoute&, const CorsPreflightRoute&) = default;
};

// The public REST API (§7); `target` is forwarded unchanged.
struct ApiRoute {
  std::string target;
  friend bool operator==(const ApiRoute&, const ApiRoute&) = default;
};

using Route = std::variant<HealthRoute, EnvoyConnectRoute, ActorByIdRoute, ActorByQueryRoute,
                           ActorByHeaderRoute, CorsPreflightRoute, ApiRoute>;

// True for routes that reach an actor (and so get CorsResponseHeaders on their responses).
bool IsActorRoute(const Route& route);

// The reference gateway's route metric label: "ws_health", "gateway" (actor routes and
// preflights), "envoy" or "api". ("none" for guard.no_route is the caller's.)
std::string_view RouteMetricLabel(const Route& route);

// RFC 9112 §3.2.2: a server must accept a request target in absolute-form
// ("http://host:port/path?query", which clients send to proxies). Returns its origin-form
// ("/path?query"; "/" when the path is empty, "/?query" for "http://h?query") for an
// absolute-form target with scheme http, https, ws or wss (any case); any other target as
// is. ClassifyRequest routes on this form, and the paths it forwards are in it.
std::string OriginFormTarget(std::string_view target);

// Classifies one request (an absolute-form target as its OriginFormTarget). Errors:
//   guard.no_route — nothing matched (404), incl. the `/request` rule and unknown targets;
//   guard.missing_header — header form without `x-rivet-actor` / `rivet_actor.*`;
//   guard.invalid_actor_id — `rivet_actor.*` with a bad percent escape;
//   query form (§5.3), checked in this order:
//     guard.query_invalid_percent_encoding — an rvt-* value or the name has a bad escape;
//     guard.query_empty_actor_name — no name segment;
//     guard.query_path_token_syntax — the name segment contains '@';
//     guard.query_duplicate_param — an rvt-* name given twice;
//     guard.query_invalid_params — unknown rvt-* name (incl. rvt-bypass_connectable),
//       missing rvt-namespace or rvt-method, unknown method, unknown crash policy;
//     guard.query_get_disallowed_params — get with input, region, crash-policy or runner;
//     guard.query_missing_pool — getOrCreate without rvt-pool / rvt-runner;
//     guard.query_invalid_base64_input, guard.query_invalid_cbor_input — rvt-input.
Result<Route> ClassifyRequest(const GatewayRequest& request, const RoutingOptions& options = {});

}  // namespace keel::engine::gateway
