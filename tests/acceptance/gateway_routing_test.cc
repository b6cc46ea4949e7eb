// actors.md §8.34 gateway-routing: header routing (x-rivet-target/x-rivet-actor, only
// /request… paths), query routing (rvt-* params validated and stripped), comma keys.
#include "support/acceptance.h"
#include "support/expect.h"

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

}  // namespace
}  // namespace keel::acceptance
