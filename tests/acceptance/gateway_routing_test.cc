// actors.md §8.34 gateway-routing: header routing (x-rivet-target/x-rivet-actor, only
// /request… paths), query routing (rvt-* params validated and stripped), comma keys.
#include <chrono>
#include <memory>
#include <string>

#include "net/blocking_ws_client.h"
#include "support/acceptance.h"
#include "support/expect.h"
#include "support/ws_expect.h"

namespace keel::acceptance {
namespace {

class GatewayRoutingTest : public PlainTest {
 protected:
  std::string ActorId(const std::string& key) {
    auto h = client().GetOrCreate("rawHttpActor", {key});
    auto id = h.Resolve();
    EXPECT_TRUE(id.has_value()) << id.error().ToString();
    return id.has_value() ? *id : std::string();
  }
};

bool Ok(int status) { return status >= 200 && status < 300; }

TEST_F(GatewayRoutingTest, HeaderRoutingToRequestPath) {
  const std::string id = ActorId(UniqueKey("gr-header"));
  auto r = Http("GET", "/request/api/hello", "", {{"x-rivet-target", "actor"}, {"x-rivet-actor", id}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body), json({{"message", "Hello from actor!"}}));
}

TEST_F(GatewayRoutingTest, HeaderRoutingOutsideRequestIsNotRouted) {
  const std::string id = ActorId(UniqueKey("gr-header-api"));
  auto r = Http("GET", "/api/hello", "", {{"x-rivet-target", "actor"}, {"x-rivet-actor", id}});
  EXPECT_FALSE(Ok(r.status)) << r.status << " " << r.body;
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(ParseBody(r.body)["code"], "no_route") << r.body;
}

TEST_F(GatewayRoutingTest, HeaderRoutingWithoutActorHeaderFails) {
  auto r = Http("GET", "/request/api/hello", "", {{"x-rivet-target", "actor"}});
  EXPECT_FALSE(Ok(r.status)) << r.status << " " << r.body;
  EXPECT_EQ(ParseBody(r.body)["code"], "missing_header") << r.body;
}

TEST_F(GatewayRoutingTest, QueryRoutingGetOrCreate) {
  auto r = Http("GET", "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=" +
                           UniqueKey("query-routing") + "&rvt-runner=default");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body), json({{"message", "Hello from actor!"}}));
}

TEST_F(GatewayRoutingTest, QueryRoutingGetExisting) {
  const std::string key = UniqueKey("gr-get");
  ActorId(key);
  auto r = Http("GET", "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-method=get&rvt-key=" + key);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body)["message"], "Hello from actor!");
}

TEST_F(GatewayRoutingTest, UnknownRvtParamRejected) {
  auto r = Http("GET", "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=" +
                           UniqueKey("gr-bogus") + "&rvt-runner=default&rvt-bogus=1");
  EXPECT_FALSE(Ok(r.status)) << r.status << " " << r.body;
  EXPECT_EQ(ParseBody(r.body)["code"], "query_invalid_params") << r.body;
}

TEST_F(GatewayRoutingTest, DuplicateRvtParamRejected) {
  auto r = Http("GET", "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-namespace=default&rvt-method=getOrCreate&rvt-key=" +
                           UniqueKey("gr-dup") + "&rvt-runner=default");
  EXPECT_FALSE(Ok(r.status)) << r.status << " " << r.body;
  EXPECT_EQ(ParseBody(r.body)["code"], "query_duplicate_param") << r.body;
}

// Beyond upstream: the rest of the §5.3 validation table.
TEST_F(GatewayRoutingTest, QueryFormValidation) {
  const std::string base = "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-key=" + UniqueKey("gr-valid");
  struct Case {
    std::string query, code;
  };
  const std::vector<Case> cases = {
      {"&rvt-method=get&rvt-runner=default", "query_get_disallowed_params"},
      {"&rvt-method=get&rvt-crash-policy=sleep", "query_get_disallowed_params"},
      {"&rvt-method=getOrCreate", "query_missing_pool"},
      {"&rvt-method=destroy&rvt-runner=default", "query_invalid_params"},
  };
  for (const auto& c : cases) {
    auto r = Http("GET", base + c.query);
    EXPECT_FALSE(Ok(r.status)) << c.query << ": " << r.status << " " << r.body;
    json body = ParseBody(r.body);
    EXPECT_EQ(body["group"], "guard") << c.query << ": " << r.body;
    EXPECT_EQ(body["code"], c.code) << c.query << ": " << r.body;
  }
}

// §5.7: OPTIONS on a gateway actor route is the gateway's CORS preflight.
TEST_F(GatewayRoutingTest, PreflightAnsweredByGateway) {
  auto r = Http("OPTIONS", "/gateway/rawHttpActor/request/api/hello?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=" +
                               UniqueKey("gr-cors"),
                "", {{"origin", "https://app.example"}, {"access-control-request-headers", "x-custom"}});
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(HeaderOf(r.headers, "access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(HeaderOf(r.headers, "access-control-allow-credentials"), "true");
  EXPECT_EQ(HeaderOf(r.headers, "access-control-allow-headers"), "x-custom");
  EXPECT_EQ(HeaderOf(r.headers, "access-control-max-age"), "86400");
}

TEST_F(GatewayRoutingTest, RvtParamsStrippedOthersForwarded) {
  auto r = Http("GET", "/gateway/rawHttpRequestPropertiesActor/request/echo?myParam=myValue&rvt-namespace=default&rvt-method=getOrCreate&rvt-key=" +
                           UniqueKey("gr-strip") + "&rvt-runner=default");
  ASSERT_EQ(r.status, 200) << r.body;
  json body = ParseBody(r.body);
  EXPECT_EQ(body["search"], "?myParam=myValue") << body;
  EXPECT_EQ(body["searchParams"], json({{"myParam", "myValue"}})) << body;
  EXPECT_EQ(body["url"].get<std::string>().find("rvt-"), std::string::npos) << body;
}

TEST_F(GatewayRoutingTest, CommaSeparatedKey) {
  const std::string tenant = UniqueKey("tenant");
  auto h = client().GetOrCreate("counter", {tenant, "room"});
  KEEL_OK(h.Call("increment", 4));
  auto r = Http("POST", "/gateway/counter/action/getCount?rvt-namespace=default&rvt-method=get&rvt-key=" + tenant + ",room",
                R"({"args":[]})", {{"content-type", "application/json"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body), json({{"output", 4}}));
}

// ---- WebSockets that fail in the gateway, and the key limit on its create path ----------

using namespace std::chrono_literals;

// "ws://127.0.0.1:<port><path>".
std::string WsUrl(const std::string& path) { return "ws" + Endpoint().substr(4) + path; }

// A raw WebSocket through the gateway (no client library), offering `rivet` and the JSON
// encoding. nullptr (and a test failure) when the upgrade is refused.
std::unique_ptr<net::BlockingWsClient> RawGatewaySocket(const std::string& path) {
  net::WsConnectOptions options;
  options.url = WsUrl(path);
  options.subprotocols = {"rivet", "rivet_encoding.json"};
  auto ws = net::BlockingWsClient::Connect(options, 5s);
  if (!ws.has_value()) {
    ADD_FAILURE() << path << ": " << ws.error().ToString();
    return nullptr;
  }
  return std::move(*ws);
}

// The next event must be the close frame, within `within` (errors.md §1.3: `1011
// group.code#ray` from the gateway).
void ExpectClosedWith(net::BlockingWsClient& ws, const std::string& reason_prefix,
                      std::chrono::milliseconds within = 2s) {
  EXPECT_TRUE(keel::testing::NextIsClose(ws, 1011, ::testing::StartsWith(reason_prefix), within));
}

// A well-formed actor id that names no actor: the HTTP request is 404 at once, and the
// WebSocket is accepted and closed at once (§5.9).
TEST_F(GatewayRoutingTest, WebSocketToUnknownActorIdClosesNotFound) {
  const std::string path = "/gateway/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/connect";
  auto r = Http("GET", path);
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(ParseBody(r.body)["code"], "not_found") << r.body;
  for (const std::string& p :
       {path, std::string("/gateway/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/websocket")}) {
    SCOPED_TRACE(p);
    auto ws = RawGatewaySocket(p);
    ASSERT_NE(ws, nullptr);
    ExpectClosedWith(*ws, "actor.not_found#");
  }
}

TEST_F(GatewayRoutingTest, WebSocketQueryGetOfMissingKeyClosesNotFound) {
  const std::string path =
      "/gateway/counter/connect?rvt-namespace=default&rvt-method=get&rvt-key=" +
      UniqueKey("gr-ws-missing");
  auto r = Http("GET", path);
  EXPECT_EQ(r.status, 404) << r.body;
  auto ws = RawGatewaySocket(path);
  ASSERT_NE(ws, nullptr);
  ExpectClosedWith(*ws, "actor.not_found#");
}

// actors.md §4.1: the engine refuses serialised keys over 1024 bytes (actor.key_too_large),
// on the gateway's getOrCreate as on REST create; a key of exactly 1024 bytes is fine.
TEST_F(GatewayRoutingTest, QueryGetOrCreateRefusesAKeyOverTheLimit) {
  const std::string base =
      "/gateway/rawHttpActor/request/api/hello"
      "?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=";
  for (size_t size : {size_t{1025}, size_t{1100}, size_t{5000}}) {
    SCOPED_TRACE(size);
    const std::string key = UniqueKey("gr-big");
    const std::string long_key = key + std::string(size - key.size(), 'k');
    auto r = Http("GET", base + long_key);
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(ParseBody(r.body)["group"], "actor") << r.body;
    EXPECT_EQ(ParseBody(r.body)["code"], "key_too_large") << r.body;
    // REST refuses the same key.
    json create{{"name", "rawHttpActor"}, {"key", long_key}, {"runner_name_selector", "default"}};
    auto rest = Http("PUT", "/actors?namespace=default", create.dump(),
                     {{"content-type", "application/json"}});
    EXPECT_EQ(rest.status, 400) << rest.body;
    EXPECT_EQ(ParseBody(rest.body)["code"], "key_too_large") << rest.body;
  }
  // Two components "a,b" serialise as "a/b": 1024 bytes in all is the largest key allowed.
  const std::string key = UniqueKey("gr-edge");
  const std::string edge = key + "," + std::string(1024 - key.size() - 1, 'e');
  auto ok = Http("GET", base + edge);
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto over = Http("GET", base + edge + "e");
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_EQ(ParseBody(over.body)["code"], "key_too_large") << over.body;
}

TEST_F(GatewayRoutingTest, WebSocketQueryGetOrCreateWithAKeyOverTheLimitCloses) {
  const std::string key = UniqueKey("gr-ws-big");
  auto ws = RawGatewaySocket(
      "/gateway/counter/connect"
      "?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=" +
      key + std::string(1100 - key.size(), 'k'));
  ASSERT_NE(ws, nullptr);
  ExpectClosedWith(*ws, "actor.key_too_large#");
}

}  // namespace
}  // namespace keel::acceptance
