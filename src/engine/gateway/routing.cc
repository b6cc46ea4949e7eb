#include "engine/gateway/routing.h"

#include <array>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "base/ascii.h"
#include "base/utf8.h"
#include "engine/gateway/cbor_check.h"
#include "engine/gateway/envoy_connect.h"
#include "engine/gateway/subprotocols.h"
#include "engine/gateway/url.h"

namespace keel::engine::gateway {
namespace {

constexpr std::string_view kRvtPrefix = "rvt-";
constexpr std::string_view kGatewayPrefix = "/gateway/";

Error GuardError(std::string_view code, std::string message) {
  return Error("guard", std::string(code), std::move(message));
}

Error NoRoute(const GatewayRequest& request) {
  return GuardError("no_route", "No route found for path " + std::string(request.target) + ".");
}

// What the request says about tokens, bypass and target, read from the subprotocols for a
// WebSocket and from headers otherwise.
struct RequestSignals {
  std::optional<std::string> target;
  std::optional<std::string> token;
  bool bypass_connectable = false;
  // WebSocket only: `rivet_actor.<id>` as offered.
  std::optional<std::string> actor_id_raw;
};

RequestSignals ReadSignals(const GatewayRequest& request) {
  RequestSignals out;
  if (request.is_websocket) {
    std::optional<std::string_view> header = FindHeader(request.headers, kHeaderWebSocketProtocol);
    if (!header) return out;
    RivetSubprotocols protocols = ParseRivetSubprotocols(*header);
    out.target = std::move(protocols.target);
    out.token = std::move(protocols.token);
    out.bypass_connectable = protocols.bypass_connectable;
    out.actor_id_raw = std::move(protocols.actor_id_raw);
    return out;
  }
  if (auto target = FindHeader(request.headers, kHeaderTarget)) out.target = std::string(*target);
  if (auto token = FindHeader(request.headers, kHeaderToken)) out.token = std::string(*token);
  out.bypass_connectable = FindHeader(request.headers, kHeaderBypassConnectable).has_value();
  return out;
}

// The path's segments per the direct-form rules in routing.h: nullopt unless the path
// starts with '/' and has no "//". The leading empty segment and a trailing empty one are
// not included.
std::optional<std::vector<std::string_view>> PathSegments(std::string_view path) {
  if (path.empty() || path.front() != '/' || path.find("//") != std::string_view::npos) {
    return std::nullopt;
  }
  std::vector<std::string_view> segments;
  size_t start = 1;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    size_t end = slash == std::string_view::npos ? path.size() : slash;
    segments.push_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return segments;
}

// "/gateway/<segment>" removed from `path`; "/" when nothing is left.
std::string RestAfterActorSegment(std::string_view path, std::string_view actor_segment) {
  std::string_view rest = path.substr(kGatewayPrefix.size() + actor_segment.size());
  return rest.empty() ? std::string("/") : std::string(rest);
}

bool HasRvtParam(const std::vector<QueryParam>& params) {
  for (const QueryParam& p : params) {
    if (std::string_view(p.raw_name).starts_with(kRvtPrefix)) return true;
  }
  return false;
}

// nullopt when there is no actor segment (the request falls through); a malformed actor
// segment is guard.invalid_actor_id: a path under /gateway/ is the gateway's to answer.
Result<std::optional<ActorByIdRoute>> ParseDirectForm(std::string_view path,
                                                      const std::vector<std::string_view>& segments,
                                                      std::optional<std::string_view> raw_query) {
  if (segments.size() < 2 || segments[1].empty()) return std::optional<ActorByIdRoute>();
  std::string_view actor_segment = segments[1];
  std::string_view raw_id = actor_segment;
  std::optional<std::string_view> raw_token;
  size_t at = actor_segment.find('@');
  if (at != std::string_view::npos) {
    raw_id = actor_segment.substr(0, at);
    raw_token = actor_segment.substr(at + 1);
    if (raw_id.empty()) return GuardError("invalid_actor_id", "empty actor id before '@'");
    if (raw_token->empty()) return GuardError("invalid_actor_id", "empty token after '@'");
  }
  Result<std::string> id = PercentDecode(raw_id);
  if (!id.ok()) return GuardError("invalid_actor_id", "invalid url encoding in the actor id");
  ActorByIdRoute route;
  route.actor_id = std::move(id).value();
  if (raw_token) {
    Result<std::string> token = PercentDecode(*raw_token);
    if (!token.ok()) return GuardError("invalid_actor_id", "invalid url encoding in the token");
    route.token = std::move(token).value();
  }
  route.forwarded_path = RestAfterActorSegment(path, actor_segment);
  if (raw_query) {
    route.forwarded_path += '?';
    route.forwarded_path += *raw_query;
  }
  return route;
}

// rvt-* names the query form understands, without the prefix.
constexpr std::array<std::string_view, 9> kKnownRvtNames = {
    "namespace", "method", "key", "runner", "pool", "input", "region", "crash-policy", "token"};

bool IsKnownRvtName(std::string_view name) {
  for (std::string_view known : kKnownRvtNames) {
    if (name == known) return true;
  }
  return false;
}

Result<ActorByQueryRoute> ParseQueryForm(std::string_view path,
                                         const std::vector<std::string_view>& segments,
                                         const std::vector<QueryParam>& params) {
  // rvt-* values, decoded, in order of appearance (prefix stripped from the names).
  std::vector<std::pair<std::string, std::string>> rvt;
  for (const QueryParam& p : params) {
    std::string_view raw_name = p.raw_name;
    if (!raw_name.starts_with(kRvtPrefix)) continue;
    if (!p.value.has_value() || !IsValidUtf8(*p.value)) {
      return GuardError("query_invalid_percent_encoding",
                        "invalid percent-encoding for query gateway param '" + p.raw_name + "'");
    }
    rvt.emplace_back(std::string(raw_name.substr(kRvtPrefix.size())), *p.value);
  }

  if (segments.size() < 2 || segments[1].empty()) {
    return GuardError("query_empty_actor_name", "query gateway actor name must not be empty");
  }
  std::string_view name_segment = segments[1];
  if (name_segment.find('@') != std::string_view::npos) {
    return GuardError("query_path_token_syntax", "query gateway paths must not use @token syntax");
  }
  Result<std::string> name = PercentDecode(name_segment);
  if (!name.ok() || !IsValidUtf8(*name)) {
    return GuardError("query_invalid_percent_encoding",
                      "invalid percent-encoding for query gateway param 'name'");
  }

  std::optional<std::string> namespace_name, method, key, runner, pool, input, region, crash_policy,
      token;
  auto slot = [&](std::string_view n) -> std::optional<std::string>* {
    if (n == "namespace") return &namespace_name;
    if (n == "method") return &method;
    if (n == "key") return &key;
    if (n == "runner") return &runner;
    if (n == "pool") return &pool;
    if (n == "input") return &input;
    if (n == "region") return &region;
    if (n == "crash-policy") return &crash_policy;
    if (n == "token") return &token;
    return nullptr;
  };
  // One pass with a set: a target near the header limit holds thousands of rvt-* params,
  // and this runs on an I/O thread (a pairwise check took ~1 s per request in Debug).
  std::unordered_set<std::string_view> seen;
  seen.reserve(rvt.size());
  for (const auto& [n, value] : rvt) {
    if (!seen.insert(n).second) {
      return GuardError("query_duplicate_param", "duplicate query gateway param: rvt-" + n);
    }
  }
  for (auto& [n, value] : rvt) {
    if (!IsKnownRvtName(n)) {
      return GuardError("query_invalid_params",
                        "invalid query gateway params: unknown param rvt-" + n);
    }
    *slot(n) = std::move(value);
  }
  if (!namespace_name) {
    return GuardError("query_invalid_params",
                      "invalid query gateway params: missing rvt-namespace");
  }
  if (!method) {
    return GuardError("query_invalid_params", "invalid query gateway params: missing rvt-method");
  }

  ActorByQueryRoute route;
  route.namespace_name = std::move(*namespace_name);
  route.name = std::move(name).value();
  route.key = ParseGatewayKey(key.value_or(""));
  route.token = std::move(token);
  if (*method == "get") {
    if (input || region || crash_policy || runner) {
      return GuardError("query_get_disallowed_params",
                        "query gateway method=get does not allow input, region, crashPolicy, or "
                        "runnerName params");
    }
    route.method = QueryMethod::kGet;
  } else if (*method == "getOrCreate") {
    route.method = QueryMethod::kGetOrCreate;
    if (pool) {
      route.pool_name = std::move(pool);
    } else if (runner) {
      route.pool_name = std::move(runner);
    } else {
      return GuardError(
          "query_missing_pool",
          "query gateway method=getOrCreate requires an rvt-runner (or rvt-pool) param");
    }
    if (input) {
      Result<Bytes> bytes = Base64UrlDecode(*input);
      if (!bytes.ok()) {
        return GuardError("query_invalid_base64_input", "invalid base64url in query gateway input");
      }
      if (Status cbor = CheckCborItem(*bytes); !cbor.ok()) {
        return GuardError("query_invalid_cbor_input",
                          "invalid query gateway input cbor: " + cbor.error().message());
      }
      route.input = std::move(bytes).value();
    }
    route.region = std::move(region);
    if (crash_policy) {
      if (*crash_policy == "restart") {
        route.crash_policy = CrashPolicy::kRestart;
      } else if (*crash_policy == "sleep") {
        route.crash_policy = CrashPolicy::kSleep;
      } else if (*crash_policy == "destroy") {
        route.crash_policy = CrashPolicy::kDestroy;
      } else {
        return GuardError("query_invalid_params",
                          "invalid query gateway params: unknown crash policy: " + *crash_policy +
                              ", expected restart, sleep, or destroy");
      }
    }
  } else {
    return GuardError("query_invalid_params", "invalid query gateway params: unknown method: " +
                                                  *method + ", expected get or getOrCreate");
  }

  route.forwarded_path = RestAfterActorSegment(path, name_segment);
  std::vector<QueryParam> kept;
  for (const QueryParam& p : params) {
    if (!std::string_view(p.raw_name).starts_with(kRvtPrefix)) kept.push_back(p);
  }
  if (!kept.empty()) {
    route.forwarded_path += '?';
    route.forwarded_path += JoinRawQuery(kept);
  }
  return route;
}

bool MatchesRequestRule(std::string_view target) {
  return target == "/request" || target.starts_with("/request/") || target.starts_with("/request?");
}

Result<Route> RouteHeaderActor(const GatewayRequest& request, RequestSignals signals) {
  if (request.method == "OPTIONS") {
    return Route(CorsPreflightRoute{CorsPreflightHeaders(request.headers)});
  }
  // PR #4860: plain HTTP only reaches the actor's onRequest handler.
  if (!request.is_websocket && !MatchesRequestRule(request.target)) return NoRoute(request);
  ActorByHeaderRoute route;
  if (request.is_websocket) {
    if (!signals.actor_id_raw) {
      return GuardError("missing_header",
                        "Missing `rivet_actor.*` protocol in sec-websocket-protocol header.");
    }
    Result<std::string> id = PercentDecode(*signals.actor_id_raw);
    if (!id.ok()) {
      return GuardError("invalid_actor_id", "invalid url encoding in `rivet_actor.*` protocol");
    }
    route.actor_id = std::move(id).value();
  } else {
    std::optional<std::string_view> id = FindHeader(request.headers, kHeaderActor);
    if (!id) return GuardError("missing_header", "Missing x-rivet-actor header.");
    route.actor_id = std::string(*id);
  }
  route.token = std::move(signals.token);
  route.bypass_connectable = signals.bypass_connectable;
  route.forwarded_path = std::string(request.target);
  return Route(std::move(route));
}

}  // namespace

std::string OriginFormTarget(std::string_view target) {
  if (target.empty() || target.front() == '/') return std::string(target);
  const size_t scheme_end = target.find("://");
  if (scheme_end == std::string_view::npos) return std::string(target);
  const std::string_view scheme = target.substr(0, scheme_end);
  if (!EqualsIgnoreCase(scheme, "http") && !EqualsIgnoreCase(scheme, "https") &&
      !EqualsIgnoreCase(scheme, "ws") && !EqualsIgnoreCase(scheme, "wss")) {
    return std::string(target);
  }
  // The authority ends at the first '/', '?' or '#'; what follows is the origin-form.
  const std::string_view rest = target.substr(scheme_end + 3);
  const size_t tail = rest.find_first_of("/?#");
  if (tail == std::string_view::npos) return "/";
  if (rest[tail] == '/') return std::string(rest.substr(tail));
  return "/" + std::string(rest.substr(tail));
}

bool IsActorRoute(const Route& route) {
  return std::holds_alternative<ActorByIdRoute>(route) ||
         std::holds_alternative<ActorByQueryRoute>(route) ||
         std::holds_alternative<ActorByHeaderRoute>(route) ||
         std::holds_alternative<CorsPreflightRoute>(route);
}

std::string_view RouteMetricLabel(const Route& route) {
  if (std::holds_alternative<HealthRoute>(route)) return "ws_health";
  if (std::holds_alternative<EnvoyConnectRoute>(route)) return "envoy";
  if (std::holds_alternative<ApiRoute>(route)) return "api";
  return "gateway";
}

Result<Route> ClassifyRequest(const GatewayRequest& received, const RoutingOptions& options) {
  // Everything below, forwarded paths included, sees the origin-form (a copy only for an
  // absolute-form target: the usual origin-form one is used as it is).
  GatewayRequest request = received;
  std::string origin_form;
  if (!received.target.empty() && received.target.front() != '/') {
    origin_form = OriginFormTarget(received.target);
    request.target = origin_form;
  }
  TargetParts parts = SplitTarget(request.target);
  RequestSignals signals = ReadSignals(request);
  const bool preflight = request.method == "OPTIONS";

  // 1. WebSocket health responder.
  if (parts.path == "/health/ws" || parts.path == "/health/ws/") {
    if (options.enable_websocket_health_route) return Route(HealthRoute{});
    return NoRoute(request);
  }

  // 2. Path-based actor routing.
  if (std::optional<std::vector<std::string_view>> segments = PathSegments(parts.path);
      segments && !segments->empty() && (*segments)[0] == "gateway") {
    std::vector<QueryParam> params = ParseQuery(parts.query.value_or(""));
    if (HasRvtParam(params)) {
      if (preflight) return Route(CorsPreflightRoute{CorsPreflightHeaders(request.headers)});
      KEEL_ASSIGN_OR_RETURN(ActorByQueryRoute route, ParseQueryForm(parts.path, *segments, params));
      if (!route.token) route.token = signals.token;
      route.bypass_connectable = signals.bypass_connectable;
      return Route(std::move(route));
    }
    Result<std::optional<ActorByIdRoute>> direct =
        ParseDirectForm(parts.path, *segments, parts.query);
    if (preflight && (!direct.ok() || direct->has_value())) {
      return Route(CorsPreflightRoute{CorsPreflightHeaders(request.headers)});
    }
    if (!direct.ok()) return direct.error();
    if (std::optional<ActorByIdRoute>& route = *direct) {
      if (!route->token) route->token = signals.token;
      route->bypass_connectable = signals.bypass_connectable;
      return Route(std::move(*route));
    }
  }

  // 3. Envoy endpoint by path.
  if (IsEnvoyConnectPath(parts.path)) return Route(EnvoyConnectRoute{signals.token});

  // 4. Header/protocol target routing.
  if (signals.target) {
    const std::string& target = *signals.target;
    if (target == "actor") return RouteHeaderActor(request, std::move(signals));
    if (target == "envoy") return Route(EnvoyConnectRoute{signals.token});
    if (target == "api-public") return Route(ApiRoute{std::string(request.target)});
    return NoRoute(request);
  }

  // 5. No target: the public REST API.
  return Route(ApiRoute{std::string(request.target)});
}

}  // namespace keel::engine::gateway
