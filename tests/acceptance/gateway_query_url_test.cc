// actors.md §8.33 gateway-query-url: a dynamic handle's gateway URL is the query form
// (rvt-namespace, rvt-method, rvt-crash-policy) and reaches the actor's inspector.
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class GatewayQueryUrlTest : public PlainTest {};

// `url` with `path` inserted before its query string.
std::string WithPath(const std::string& url, const std::string& path) {
  const size_t q = url.find('?');
  if (q == std::string::npos) return url + path;
  return url.substr(0, q) + path + url.substr(q);
}

std::string QueryParam(const std::string& url, const std::string& name) {
  const size_t q = url.find('?');
  if (q == std::string::npos) return "";
  std::string query = url.substr(q + 1);
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    std::string pair = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    if (pair.rfind(name + "=", 0) == 0) return pair.substr(name.size() + 1);
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  return "";
}

net::Headers Bearer() { return {{"authorization", "Bearer " + std::string(kInspectorToken)}}; }

TEST_F(GatewayQueryUrlTest, GetOrCreateUrlReachesInspector) {
  auto h = client().GetOrCreate("counter", {UniqueKey("gq-goc")});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 5)), 5);
  const std::string url = h.GatewayUrl();
  EXPECT_FALSE(QueryParam(url, "rvt-namespace").empty()) << url;
  EXPECT_EQ(QueryParam(url, "rvt-method"), "getOrCreate") << url;
  EXPECT_EQ(QueryParam(url, "rvt-crash-policy"), "sleep") << url;
  auto r = HttpUrl("GET", WithPath(url, "/inspector/state"), "", Bearer());
  ASSERT_EQ(r.status, 200) << r.body;
  json body = ParseBody(r.body);
  EXPECT_EQ(body["state"], json({{"count", 5}})) << body;
  EXPECT_EQ(body["isStateEnabled"], true) << body;
}

TEST_F(GatewayQueryUrlTest, GetUrlResolvesExistingActor) {
  const std::string key = UniqueKey("gq-get");
  KEEL_OK(client().GetOrCreate("counter", {key}).Call("increment", 2));
  auto h = client().Get("counter", {key});
  const std::string url = h.GatewayUrl();
  EXPECT_EQ(QueryParam(url, "rvt-method"), "get") << url;
  EXPECT_EQ(QueryParam(url, "rvt-runner"), "") << "get carries no pool: " << url;
  auto r = HttpUrl("GET", WithPath(url, "/inspector/state"), "", Bearer());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body)["state"], json({{"count", 2}}));
}

TEST_F(GatewayQueryUrlTest, GetForIdUrlIsDirect) {
  auto h = client().GetOrCreate("counter", {UniqueKey("gq-id")});
  const std::string id = KEEL_OK(h.Resolve());
  const std::string url = client().GetForId("counter", id).GatewayUrl();
  EXPECT_EQ(url, Endpoint() + "/gateway/" + id);
  auto r = HttpUrl("GET", url + "/inspector/state", "", Bearer());
  EXPECT_EQ(r.status, 200) << r.body;
}

}  // namespace
}  // namespace keel::acceptance
