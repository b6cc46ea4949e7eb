#include "engine/gateway/routing.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/gateway/url.h"

namespace keel::engine::gateway {
namespace {

// One request; headers owned by the fixture so the span stays valid.
struct Req {
  std::string method = "GET";
  std::string target;
  HeaderList headers;
  bool is_websocket = false;
};

Result<Route> Classify(const Req& r, RoutingOptions options = {}) {
  return ClassifyRequest(GatewayRequest{r.method, r.target, r.headers, r.is_websocket}, options);
}

Req Http(std::string target, HeaderList headers = {}, std::string method = "GET") {
  return Req{std::move(method), std::move(target), std::move(headers), false};
}

Req Ws(std::string target, std::string protocols) {
  Req r{"GET", std::move(target), {}, true};
  if (!protocols.empty()) r.headers.emplace_back("Sec-WebSocket-Protocol", std::move(protocols));
  return r;
}

template <typename T>
T Expect(const Result<Route>& r) {
  EXPECT_TRUE(r.ok()) << r.error().ToString();
  if (!r.ok()) return T{};
  EXPECT_TRUE(std::holds_alternative<T>(*r)) << "variant index " << r->index();
  if (!std::holds_alternative<T>(*r)) return T{};
  return std::get<T>(*r);
}

void ExpectError(const Result<Route>& r, std::string_view group, std::string_view code,
                 std::string_view what) {
  ASSERT_FALSE(r.ok()) << what << " routed, variant " << r->index();
  EXPECT_TRUE(r.error().Is(group, code)) << what << ": " << r.error().ToString();
}

// §5.1 step 1

TEST(Routing, WebSocketHealthPathNeedsTheOption) {
  RoutingOptions on{.enable_websocket_health_route = true};
  Expect<HealthRoute>(Classify(Ws("/health/ws", ""), on));
  Expect<HealthRoute>(Classify(Ws("/health/ws/", ""), on));
  Expect<HealthRoute>(Classify(Http("/health/ws?x=1"), on));
  ExpectError(Classify(Ws("/health/ws", "")), "guard", "no_route", "health disabled");
  ExpectError(Classify(Http("/health/ws", {{"x-rivet-target", "actor"}})), "guard", "no_route",
              "health disabled with target");
  Expect<ApiRoute>(Classify(Http("/health/wsx"), on));
}

// §5.2 direct form

TEST(Routing, DirectFormParsesIdTokenAndRest) {
  struct Case {
    std::string target;
    std::string actor_id;
    std::optional<std::string> token;
    std::string forwarded;
  };
  for (const Case& c : std::vector<Case>{
           {"/gateway/actor-123/api/v1/endpoint", "actor-123", std::nullopt, "/api/v1/endpoint"},
           {"/gateway/actor-123@my-token/api/v1/endpoint", "actor-123", "my-token",
            "/api/v1/endpoint"},
           {"/gateway/abc", "abc", std::nullopt, "/"},
           {"/gateway/abc/", "abc", std::nullopt, "/"},
           {"/gateway/abc/x/", "abc", std::nullopt, "/x/"},
           {"/gateway/abc?x=1", "abc", std::nullopt, "/?x=1"},
           {"/gateway/abc/", "abc", std::nullopt, "/"},
           {"/gateway/abc/p?", "abc", std::nullopt, "/p?"},
           {"/gateway/abc/p?b=%20&a=+&&c", "abc", std::nullopt, "/p?b=%20&a=+&&c"},
           {"/gateway/a%40b@t%2Fk/p%20q", "a@b", "t/k", "/p%20q"},
           {"/gateway/abc@tok@more/x", "abc", "tok@more", "/x"},
           {"/gateway/abc/action/increment", "abc", std::nullopt, "/action/increment"},
       }) {
    ActorByIdRoute r = Expect<ActorByIdRoute>(Classify(Http(c.target)));
    EXPECT_EQ(r.actor_id, c.actor_id) << c.target;
    EXPECT_EQ(r.token, c.token) << c.target;
    EXPECT_EQ(r.forwarded_path, c.forwarded) << c.target;
    EXPECT_FALSE(r.bypass_connectable);
  }
}

TEST(Routing, MalformedDirectFormFallsThrough) {
  for (std::string target :
       {"/gateway", "/gateway/", "/gateway//abc", "/gateway/abc//x", "//gateway/abc",
        "/gatewayx/abc", "/Gateway/abc", "/api/gateway/abc", "gateway/abc"}) {
    // No target header: falls through to the REST API with the original target.
    ApiRoute api = Expect<ApiRoute>(Classify(Http(target)));
    EXPECT_EQ(api.target, target);
  }
  // A malformed actor segment is the gateway's error, not the REST API's (Keel).
  for (std::string target : {"/gateway/@tok/x", "/gateway/abc@/x", "/gateway/a%zz/x",
                             "/gateway/ab%ZZ/action/x", "/gateway/abc@t%4/x"}) {
    ExpectError(Classify(Http(target)), "guard", "invalid_actor_id", target);
    ExpectError(Classify(Http(target, {{"x-rivet-target", "envoy"}})), "guard", "invalid_actor_id",
                target);
    Expect<CorsPreflightRoute>(Classify(Http(target, {}, "OPTIONS")));
  }
  // With a header target the fall-through continues into header routing.
  Expect<EnvoyConnectRoute>(Classify(Http("/gateway//abc", {{"x-rivet-target", "envoy"}})));
}

TEST(Routing, DirectFormTokenFallsBackToHeaderOrSubprotocol) {
  EXPECT_EQ(
      Expect<ActorByIdRoute>(Classify(Http("/gateway/abc/x", {{"X-Rivet-Token", "h"}}))).token,
      "h");
  EXPECT_EQ(
      Expect<ActorByIdRoute>(Classify(Http("/gateway/abc@p/x", {{"x-rivet-token", "h"}}))).token,
      "p");
  EXPECT_EQ(
      Expect<ActorByIdRoute>(Classify(Ws("/gateway/abc/connect", "rivet, rivet_token.w"))).token,
      "w");
  // A WebSocket's token comes from subprotocols only.
  Req ws = Ws("/gateway/abc/connect", "rivet");
  ws.headers.emplace_back("x-rivet-token", "h");
  EXPECT_EQ(Expect<ActorByIdRoute>(Classify(ws)).token, std::nullopt);
}

TEST(Routing, DirectFormBypassFromHeaderOrSubprotocol) {
  EXPECT_TRUE(
      Expect<ActorByIdRoute>(Classify(Http("/gateway/abc/x", {{"x-rivet-bypass-connectable", ""}})))
          .bypass_connectable);
  EXPECT_TRUE(Expect<ActorByIdRoute>(
                  Classify(Ws("/gateway/abc/connect", "rivet, rivet_bypass_connectable")))
                  .bypass_connectable);
}

TEST(Routing, WebSocketPathFormNeedsNoSubprotocolHeader) {
  ActorByIdRoute r = Expect<ActorByIdRoute>(Classify(Ws("/gateway/abc/websocket/x", "")));
  EXPECT_EQ(r.forwarded_path, "/websocket/x");
}

// §5.3 query form

TEST(Routing, QueryFormGetParsesEverything) {
  ActorByQueryRoute r = Expect<ActorByQueryRoute>(Classify(
      Http("/gateway/chat%20room/request/x?rvt-namespace=default&rvt-method=get&rvt-key=tenant,"
           "room%201&rvt-token=t%2B1&rvt-pool=ignored")));
  EXPECT_EQ(r.namespace_name, "default");
  EXPECT_EQ(r.method, QueryMethod::kGet);
  EXPECT_EQ(r.name, "chat room");
  EXPECT_EQ(r.key, (ActorKey{"tenant", "room 1"}));
  EXPECT_EQ(r.token, "t+1");
  EXPECT_EQ(r.pool_name, std::nullopt);
  EXPECT_EQ(r.input, std::nullopt);
  EXPECT_EQ(r.forwarded_path, "/request/x");
}

TEST(Routing, QueryFormGetOrCreateParsesEverything) {
  // CBOR {"a": 1} = a1 61 61 01.
  std::string input = Base64UrlEncode(Bytes{0xa1, 0x61, 0x61, 0x01});
  ActorByQueryRoute r = Expect<ActorByQueryRoute>(
      Classify(Http("/gateway/counter?rvt-namespace=ns&rvt-method=getOrCreate&rvt-runner=pool-a"
                    "&rvt-input=" +
                    input + "&rvt-region=us-east&rvt-crash-policy=destroy")));
  EXPECT_EQ(r.method, QueryMethod::kGetOrCreate);
  EXPECT_EQ(r.name, "counter");
  EXPECT_EQ(r.key, ActorKey{});
  EXPECT_EQ(r.pool_name, "pool-a");
  EXPECT_EQ(r.input, (Bytes{0xa1, 0x61, 0x61, 0x01}));
  EXPECT_EQ(r.region, "us-east");
  EXPECT_EQ(r.crash_policy, CrashPolicy::kDestroy);
  EXPECT_EQ(r.token, std::nullopt);
  EXPECT_EQ(r.forwarded_path, "/");
}

TEST(Routing, QueryFormPoolWinsOverRunnerAndCrashPoliciesParse) {
  std::string base = "/gateway/c?rvt-namespace=ns&rvt-method=getOrCreate&rvt-pool=p";
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-runner=r"))).pool_name, "p");
  EXPECT_EQ(
      Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-crash-policy=restart"))).crash_policy,
      CrashPolicy::kRestart);
  EXPECT_EQ(
      Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-crash-policy=sleep"))).crash_policy,
      CrashPolicy::kSleep);
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base))).crash_policy, std::nullopt);
}

TEST(Routing, QueryFormKeyForms) {
  std::string base = "/gateway/c?rvt-namespace=ns&rvt-method=get";
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base))).key, ActorKey{});
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-key="))).key, ActorKey{});
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-key=a,,b"))).key,
            (ActorKey{"a", "", "b"}));
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-key=a+b%2Cc"))).key,
            (ActorKey{"a b", "c"}));
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-key=a/b"))).key, ActorKey{"a/b"});
}

TEST(Routing, QueryFormForwardsNonRvtParamsByteForByte) {
  struct Case {
    std::string target;
    std::string forwarded;
  };
  std::string rvt = "rvt-namespace=ns&rvt-method=get";
  for (const Case& c : std::vector<Case>{
           {"/gateway/c/path?" + rvt, "/path"},
           {"/gateway/c/path?z=1&" + rvt + "&a=2", "/path?z=1&a=2"},
           {"/gateway/c/p?q=a+b%20c%2b&" + rvt + "&x&y=&%zz=%yy&e=%E2%82%AC",
            "/p?q=a+b%20c%2b&x&y=&%zz=%yy&e=%E2%82%AC"},
           {"/gateway/c?b=2&" + rvt + "&a=1&b=1", "/?b=2&a=1&b=1"},
           {"/gateway/c/?&&" + rvt + "&&k=v&&", "/?k=v"},
           {"/gateway/c/p?rvt%2Dx=1&" + rvt + "&RVT-y=2", "/p?rvt%2Dx=1&RVT-y=2"},
       }) {
    EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(c.target))).forwarded_path, c.forwarded)
        << c.target;
  }
}

TEST(Routing, QueryFormTokenAndBypassFromRequest) {
  std::string base = "/gateway/c?rvt-namespace=ns&rvt-method=get";
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(base, {{"x-rivet-token", "h"}}))).token, "h");
  EXPECT_EQ(
      Expect<ActorByQueryRoute>(Classify(Http(base + "&rvt-token=q", {{"x-rivet-token", "h"}})))
          .token,
      "q");
  ActorByQueryRoute ws =
      Expect<ActorByQueryRoute>(Classify(Ws(base, "rivet_token.w, rivet_bypass_connectable")));
  EXPECT_EQ(ws.token, "w");
  EXPECT_TRUE(ws.bypass_connectable);
}

TEST(Routing, QueryFormErrors) {
  struct Case {
    std::string target;
    std::string code;
  };
  std::string get = "rvt-namespace=ns&rvt-method=get";
  std::string goc = "rvt-namespace=ns&rvt-method=getOrCreate&rvt-pool=p";
  for (const Case& c : std::vector<Case>{
           // Percent-encoding, name segment.
           {"/gateway/c?" + get + "&rvt-key=%zz", "query_invalid_percent_encoding"},
           {"/gateway/c?" + get + "&rvt-key=%FF", "query_invalid_percent_encoding"},
           {"/gateway/c%zz?" + get, "query_invalid_percent_encoding"},
           {"/gateway?" + get, "query_empty_actor_name"},
           {"/gateway/?" + get, "query_empty_actor_name"},
           {"/gateway/c@tok?" + get, "query_path_token_syntax"},
           // Duplicates and unknown names.
           {"/gateway/c?" + get + "&rvt-namespace=ns", "query_duplicate_param"},
           {"/gateway/c?" + get + "&rvt-key=a&rvt-key=b", "query_duplicate_param"},
           {"/gateway/c?" + get + "&rvt-method=get", "query_duplicate_param"},
           {"/gateway/c?" + get + "&rvt-unknown=1", "query_invalid_params"},
           {"/gateway/c?" + get + "&rvt-", "query_invalid_params"},
           {"/gateway/c?" + get + "&rvt-bypass_connectable=true", "query_invalid_params"},
           {"/gateway/c?" + get + "&rvt-crash_policy=sleep", "query_invalid_params"},
           {"/gateway/c?" + get + "&rvt-Key=a", "query_invalid_params"},
           // Required params and method.
           {"/gateway/c?rvt-method=get", "query_invalid_params"},
           {"/gateway/c?rvt-namespace=ns", "query_invalid_params"},
           {"/gateway/c?rvt-namespace=ns&rvt-method=create", "query_invalid_params"},
           {"/gateway/c?rvt-namespace=ns&rvt-method=GET", "query_invalid_params"},
           {"/gateway/c?rvt-namespace=ns&rvt-method=", "query_invalid_params"},
           // get disallows getOrCreate-only params.
           {"/gateway/c?" + get + "&rvt-input=oA", "query_get_disallowed_params"},
           {"/gateway/c?" + get + "&rvt-region=r", "query_get_disallowed_params"},
           {"/gateway/c?" + get + "&rvt-crash-policy=sleep", "query_get_disallowed_params"},
           {"/gateway/c?" + get + "&rvt-runner=r", "query_get_disallowed_params"},
           // getOrCreate needs a pool; input and crash policy must parse.
           {"/gateway/c?rvt-namespace=ns&rvt-method=getOrCreate", "query_missing_pool"},
           {"/gateway/c?" + goc + "&rvt-input=oA==", "query_invalid_base64_input"},
           {"/gateway/c?" + goc + "&rvt-input=o+A", "query_invalid_base64_input"},
           {"/gateway/c?" + goc + "&rvt-input=A", "query_invalid_base64_input"},
           {"/gateway/c?" + goc + "&rvt-input=", "query_invalid_cbor_input"},
           {"/gateway/c?" + goc + "&rvt-input=gQ", "query_invalid_cbor_input"},
           {"/gateway/c?" + goc + "&rvt-crash-policy=explode", "query_invalid_params"},
       }) {
    ExpectError(Classify(Http(c.target)), "guard", c.code, c.target);
  }
}

// A target near the header limit holds thousands of rvt-* params (the duplicate check is
// one pass over them; its cost is not asserted here): all distinct, they are unknown
// params, and one repeat at the very end is still found and named.
TEST(Routing, QueryFormWithThousandsOfRvtParamsFindsTheLastRepeat) {
  constexpr int kParams = 3000;
  std::string many;
  for (int i = 0; i < kParams; ++i) many += "&rvt-p" + std::to_string(i) + "=";
  const std::string base = "/gateway/c?rvt-namespace=ns&rvt-method=get";
  ExpectError(Classify(Http(base + many)), "guard", "query_invalid_params", "many unknown");
  Result<Route> dup = Classify(Http(base + many + "&rvt-p7=x"));
  ExpectError(dup, "guard", "query_duplicate_param", "late duplicate");
  if (!dup.ok()) {
    EXPECT_EQ(dup.error().message(), "duplicate query gateway param: rvt-p7");
  }
}

// The clients (actors.md §4.2) and §5.3 name the pool rvt-runner: the error names it too.
TEST(Routing, QueryFormMissingPoolNamesRvtRunner) {
  Result<Route> r = Classify(Http("/gateway/c?rvt-namespace=ns&rvt-method=getOrCreate"));
  ExpectError(r, "guard", "query_missing_pool", "no pool");
  if (!r.ok()) {
    EXPECT_NE(r.error().message().find("rvt-runner"), std::string::npos) << r.error().message();
  }
}

TEST(Routing, QueryFormEmptyInputIsNotAllowedButEmptyArrayIs) {
  std::string goc = "/gateway/c?rvt-namespace=ns&rvt-method=getOrCreate&rvt-pool=p";
  EXPECT_EQ(Expect<ActorByQueryRoute>(Classify(Http(goc + "&rvt-input=gA"))).input, Bytes{0x80});
}

TEST(Routing, QueryFormGetAcceptsPoolParam) {
  Expect<ActorByQueryRoute>(
      Classify(Http("/gateway/c?rvt-namespace=ns&rvt-method=get&rvt-pool=p")));
}

// RFC 9112 §3.2.2: the absolute-form of a request target is routed as its origin-form.
TEST(Routing, OriginFormOfAnAbsoluteFormTarget) {
  for (const auto& [in, out] : std::vector<std::pair<std::string, std::string>>{
           {"/gateway/a/b?x=1", "/gateway/a/b?x=1"},
           {"http://h:6420/gateway/a/b?x=1", "/gateway/a/b?x=1"},
           {"HTTPS://h/gateway/a", "/gateway/a"},
           {"ws://user@h/connect?rvt-key=a/b", "/connect?rvt-key=a/b"},
           {"wss://h", "/"},
           {"http://h?x=1", "/?x=1"},
           {"http://h#f", "/#f"},
           // Not absolute-form: left as is (and so routed nowhere but the API).
           {"*", "*"},
           {"gateway/a", "gateway/a"},
           {"ftp://h/gateway/a", "ftp://h/gateway/a"},
           {"://h/gateway/a", "://h/gateway/a"},
           {"", ""},
       }) {
    EXPECT_EQ(OriginFormTarget(in), out) << in;
  }
}

TEST(Routing, AbsoluteFormTargetsAreRoutedLikeTheirOriginForm) {
  ActorByIdRoute direct =
      Expect<ActorByIdRoute>(Classify(Http("http://127.0.0.1:6420/gateway/abc@t/p/q?x=%20")));
  EXPECT_EQ(direct.actor_id, "abc");
  EXPECT_EQ(direct.token, "t");
  EXPECT_EQ(direct.forwarded_path, "/p/q?x=%20");

  ActorByQueryRoute query = Expect<ActorByQueryRoute>(Classify(
      Http("http://h/gateway/counter/act?z=1&rvt-namespace=ns&rvt-method=get&rvt-key=a,b")));
  EXPECT_EQ(query.name, "counter");
  EXPECT_EQ(query.key, (ActorKey{"a", "b"}));
  EXPECT_EQ(query.forwarded_path, "/act?z=1");
  ExpectError(Classify(Http("http://h/gateway/c?rvt-namespace=ns&rvt-method=fetch")), "guard",
              "query_invalid_params", "absolute-form query error");

  ActorByHeaderRoute header = Expect<ActorByHeaderRoute>(Classify(
      Http("http://h/request/x?a=1", {{"x-rivet-target", "actor"}, {"x-rivet-actor", "id"}})));
  EXPECT_EQ(header.forwarded_path, "/request/x?a=1");
  ActorByIdRoute ws = Expect<ActorByIdRoute>(Classify(Ws("ws://h/gateway/abc/connect", "rivet")));
  EXPECT_EQ(ws.forwarded_path, "/connect");
  Expect<EnvoyConnectRoute>(Classify(Ws("ws://h/envoys/connect?namespace=n", "rivet")));
  EXPECT_EQ(Expect<ApiRoute>(Classify(Http("http://h/actors?namespace=n"))).target,
            "/actors?namespace=n");
}

TEST(Routing, DoubleSlashDisablesTheQueryFormToo) {
  ApiRoute api = Expect<ApiRoute>(Classify(Http("/gateway//c?rvt-namespace=ns&rvt-method=get")));
  EXPECT_EQ(api.target, "/gateway//c?rvt-namespace=ns&rvt-method=get");
}

// §5.7 preflight on path forms

TEST(Routing, OptionsOnPathFormsIsAPreflight) {
  HeaderList h = {{"Origin", "https://o"}, {"Access-Control-Request-Headers", "x-a"}};
  CorsPreflightRoute direct =
      Expect<CorsPreflightRoute>(Classify(Http("/gateway/abc/action/x", h, "OPTIONS")));
  EXPECT_EQ(direct.headers, CorsPreflightHeaders(h));
  Expect<CorsPreflightRoute>(
      Classify(Http("/gateway/c?rvt-namespace=ns&rvt-method=get", h, "OPTIONS")));
  // Not validated for a preflight.
  Expect<CorsPreflightRoute>(Classify(Http("/gateway/c?rvt-bogus=1", h, "OPTIONS")));
  // A malformed direct path is not an actor route.
  Expect<ApiRoute>(Classify(Http("/gateway//abc", h, "OPTIONS")));
}

// §5.1 step 3 and envoy-protocol §3.1

TEST(Routing, EnvoyConnectByPath) {
  EnvoyConnectRoute r = Expect<EnvoyConnectRoute>(Classify(
      Ws("/envoys/connect?protocol_version=4&namespace=default", "rivet, rivet_token.adm")));
  EXPECT_EQ(r.token, "adm");
  Expect<EnvoyConnectRoute>(Classify(Ws("/envoys/connect/", "rivet")));
  EXPECT_EQ(
      Expect<EnvoyConnectRoute>(Classify(Http("/envoys/connect", {{"x-rivet-token", "t"}}))).token,
      "t");
  EXPECT_EQ(Expect<EnvoyConnectRoute>(Classify(Ws("/envoys/connect", ""))).token, std::nullopt);
  Expect<ApiRoute>(Classify(Http("/envoys/connect/x")));
  Expect<ApiRoute>(Classify(Http("/envoys")));
}

TEST(Routing, EnvoyConnectByTarget) {
  Expect<EnvoyConnectRoute>(Classify(Ws("/anything", "rivet, rivet_target.envoy")));
  Expect<EnvoyConnectRoute>(Classify(Http("/x", {{"x-rivet-target", "envoy"}})));
}

TEST(Routing, PathFormsComeBeforeHeaderTargets) {
  Expect<ActorByIdRoute>(Classify(Http("/gateway/abc/x", {{"x-rivet-target", "envoy"}})));
  Expect<EnvoyConnectRoute>(Classify(Http("/envoys/connect", {{"x-rivet-target", "actor"}})));
}

// §5.4 header routing and the /request rule

TEST(Routing, RequestRuleRoutesOnlyRequestPathsOverHttp) {
  for (std::string target :
       {"/request", "/request/x", "/request?a=1", "/request/", "/request/a/b?c"}) {
    ActorByHeaderRoute r = Expect<ActorByHeaderRoute>(
        Classify(Http(target, {{"x-rivet-target", "actor"}, {"x-rivet-actor", "id1"}}, "POST")));
    EXPECT_EQ(r.actor_id, "id1") << target;
    EXPECT_EQ(r.forwarded_path, target) << target;
  }
  for (std::string target : {"/requests", "/api/hello", "/action/x", "/", "/queue/q", "/request#x",
                             "/Request", "/x/request", "/requestx?a"}) {
    ExpectError(
        Classify(Http(target, {{"x-rivet-target", "actor"}, {"x-rivet-actor", "id1"}}, "POST")),
        "guard", "no_route", target);
  }
}

TEST(Routing, RequestRuleDoesNotApplyToWebSockets) {
  for (std::string target : {"/connect", "/websocket/x", "/", "/api/hello?x=1"}) {
    ActorByHeaderRoute r = Expect<ActorByHeaderRoute>(Classify(
        Ws(target, "rivet, rivet_target.actor, rivet_actor.abc%2D1, rivet_encoding.cbor")));
    EXPECT_EQ(r.actor_id, "abc-1") << target;
    EXPECT_EQ(r.forwarded_path, target) << target;
  }
}

TEST(Routing, HeaderFormReadsTokenAndBypass) {
  ActorByHeaderRoute http =
      Expect<ActorByHeaderRoute>(Classify(Http("/request", {{"X-Rivet-Target", "actor"},
                                                            {"X-Rivet-Actor", "id"},
                                                            {"X-Rivet-Token", "t"},
                                                            {"X-Rivet-Bypass-Connectable", "1"}})));
  EXPECT_EQ(http.token, "t");
  EXPECT_TRUE(http.bypass_connectable);
  ActorByHeaderRoute plain = Expect<ActorByHeaderRoute>(
      Classify(Http("/request", {{"x-rivet-target", "actor"}, {"x-rivet-actor", "id"}})));
  EXPECT_EQ(plain.token, std::nullopt);
  EXPECT_FALSE(plain.bypass_connectable);
  ActorByHeaderRoute ws = Expect<ActorByHeaderRoute>(Classify(
      Ws("/connect", "rivet_target.actor,rivet_actor.id,rivet_token.w,rivet_bypass_connectable")));
  EXPECT_EQ(ws.token, "w");
  EXPECT_TRUE(ws.bypass_connectable);
}

TEST(Routing, HeaderFormMissingActorIsMissingHeader) {
  ExpectError(Classify(Http("/request", {{"x-rivet-target", "actor"}})), "guard", "missing_header",
              "http");
  ExpectError(Classify(Ws("/connect", "rivet, rivet_target.actor")), "guard", "missing_header",
              "ws");
  ExpectError(Classify(Ws("/connect", "rivet_target.actor, rivet_actor.a%zz")), "guard",
              "invalid_actor_id", "bad escape");
}

TEST(Routing, HeaderFormOptionsIsAPreflightOnAnyPath) {
  HeaderList h = {{"x-rivet-target", "actor"}, {"Origin", "https://o"}};
  CorsPreflightRoute r = Expect<CorsPreflightRoute>(Classify(Http("/api/hello", h, "OPTIONS")));
  EXPECT_EQ(r.headers, CorsPreflightHeaders(h));
  // No x-rivet-actor needed for a preflight.
  Expect<CorsPreflightRoute>(Classify(Http("/request", h, "OPTIONS")));
}

TEST(Routing, HttpTargetHeaderIsIgnoredForWebSocketsAndViceVersa) {
  Req ws = Ws("/request", "rivet");
  ws.headers.emplace_back("x-rivet-target", "actor");
  ws.headers.emplace_back("x-rivet-actor", "id");
  Expect<ApiRoute>(Classify(ws));
  Req http = Http("/request", {{"Sec-WebSocket-Protocol", "rivet_target.actor, rivet_actor.id"}});
  Expect<ApiRoute>(Classify(http));
}

TEST(Routing, OtherTargets) {
  EXPECT_EQ(
      Expect<ApiRoute>(Classify(Http("/actors?namespace=x", {{"x-rivet-target", "api-public"}})))
          .target,
      "/actors?namespace=x");
  Expect<ApiRoute>(Classify(Ws("/x", "rivet_target.api-public")));
  ExpectError(Classify(Http("/x", {{"x-rivet-target", "runner"}})), "guard", "no_route", "runner");
  ExpectError(Classify(Http("/x", {{"x-rivet-target", "bogus"}})), "guard", "no_route", "bogus");
  ExpectError(Classify(Http("/x", {{"x-rivet-target", ""}})), "guard", "no_route", "empty");
  ExpectError(Classify(Http("/x", {{"x-rivet-target", "Actor"}})), "guard", "no_route", "case");
}

TEST(Routing, NoTargetGoesToTheRestApi) {
  for (std::string target :
       {"/", "/actors?namespace=default&name=x", "/metadata", "*", "/request"}) {
    EXPECT_EQ(Expect<ApiRoute>(Classify(Http(target))).target, target);
  }
  Expect<ApiRoute>(Classify(Http("/actors", {}, "OPTIONS")));
  Expect<ApiRoute>(Classify(Ws("/x", "rivet")));
}

TEST(Routing, IsActorRouteCoversActorFormsAndPreflight) {
  EXPECT_TRUE(IsActorRoute(Route(ActorByIdRoute{})));
  EXPECT_TRUE(IsActorRoute(Route(ActorByQueryRoute{})));
  EXPECT_TRUE(IsActorRoute(Route(ActorByHeaderRoute{})));
  EXPECT_TRUE(IsActorRoute(Route(CorsPreflightRoute{})));
  EXPECT_FALSE(IsActorRoute(Route(ApiRoute{})));
  EXPECT_FALSE(IsActorRoute(Route(EnvoyConnectRoute{})));
  EXPECT_FALSE(IsActorRoute(Route(HealthRoute{})));
}

TEST(Routing, MetricLabelsFollowTheReferenceGateway) {
  EXPECT_EQ(RouteMetricLabel(Route(HealthRoute{})), "ws_health");
  EXPECT_EQ(RouteMetricLabel(Route(ActorByIdRoute{})), "gateway");
  EXPECT_EQ(RouteMetricLabel(Route(ActorByQueryRoute{})), "gateway");
  EXPECT_EQ(RouteMetricLabel(Route(ActorByHeaderRoute{})), "gateway");
  EXPECT_EQ(RouteMetricLabel(Route(CorsPreflightRoute{})), "gateway");
  EXPECT_EQ(RouteMetricLabel(Route(EnvoyConnectRoute{})), "envoy");
  EXPECT_EQ(RouteMetricLabel(Route(ApiRoute{})), "api");
}

TEST(Routing, NeverCrashesOnOddTargets) {
  for (const std::string& target : std::vector<std::string>{
           "", "?", "#", "/%", "/gateway/%", "/gateway/%/x?rvt-", "/gateway/x?rvt-input=%",
           "/gateway/x?=&=&rvt-namespace", std::string("/gateway/\0/x", 12), "/\xff\xfe",
           "/gateway/a?rvt-namespace=n&rvt-method=getOrCreate&rvt-pool=p&rvt-input=" +
               std::string(4000, 'A')}) {
    Result<Route> r = Classify(Http(target));
    (void)r;
    Result<Route> w = Classify(Ws(target, ",,,rivet_actor.,rivet_target.actor"));
    (void)w;
  }
}

// Random targets and subprotocol headers built from routing-relevant pieces: every call must
// return (a route or a structured guard error), never crash (run under ASan/UBSan).
TEST(RoutingProperty, RandomRequestsNeverCrashAndErrorsAreGuardErrors) {
  static const std::vector<std::string> kPieces = {
      "/",       "gateway",   "request", "@",   "?",           "&",    "=",
      "rvt-",    "namespace", "method",  "get", "getOrCreate", "key",  "pool",
      "input",   "%",         "%2",      "%41", "+",           "#",    "envoys",
      "connect", "health",    "ws",      "a",   ",",           "\xff", "gA"};
  static const std::vector<std::string> kProtocols = {"rivet",
                                                      "rivet_target.actor",
                                                      "rivet_target.envoy",
                                                      "rivet_actor.a%2",
                                                      "rivet_actor.x",
                                                      "rivet_token.t",
                                                      "rivet_bypass_connectable",
                                                      ",",
                                                      " "};
  std::mt19937 rng(5101);
  std::uniform_int_distribution<size_t> piece(0, kPieces.size() - 1);
  std::uniform_int_distribution<size_t> proto(0, kProtocols.size() - 1);
  std::uniform_int_distribution<int> count(0, 12);
  for (int i = 0; i < 20000; ++i) {
    Req r;
    r.target = "/";
    for (int n = count(rng); n > 0; --n) r.target += kPieces[piece(rng)];
    r.is_websocket = (i % 2) == 0;
    r.method = (i % 7) == 0 ? "OPTIONS" : "GET";
    std::string protocols;
    for (int n = count(rng) / 3; n > 0; --n) protocols += kProtocols[proto(rng)] + ",";
    r.headers.emplace_back("sec-websocket-protocol", protocols);
    if (i % 3 == 0) r.headers.emplace_back("x-rivet-target", "actor");
    if (i % 5 == 0) r.headers.emplace_back("x-rivet-actor", "id");
    Result<Route> route = Classify(r, RoutingOptions{.enable_websocket_health_route = i % 4 == 0});
    if (!route.ok()) {
      ASSERT_EQ(route.error().group(), "guard") << r.target;
    } else if (const auto* q = std::get_if<ActorByQueryRoute>(&*route)) {
      ASSERT_TRUE(q->forwarded_path.starts_with("/")) << r.target;
      for (const QueryParam& p : ParseQuery(SplitTarget(q->forwarded_path).query.value_or(""))) {
        ASSERT_FALSE(p.raw_name.starts_with("rvt-")) << r.target;
      }
    } else if (const auto* d = std::get_if<ActorByIdRoute>(&*route)) {
      ASSERT_TRUE(d->forwarded_path.starts_with("/")) << r.target;
    }
  }
}

}  // namespace
}  // namespace keel::engine::gateway
