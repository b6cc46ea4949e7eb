#include "engine/gateway/envoy_connect.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

constexpr std::string_view kValid =
    "protocol_version=4&namespace=default&envoy_key=env-1_a&version=7&pool_name=default";

TEST(EnvoyConnectQuery, ParsesAValidQuery) {
  Result<EnvoyConnectParams> r = ParseEnvoyConnectQuery(kValid);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->protocol_version, 4);
  EXPECT_EQ(r->namespace_name, "default");
  EXPECT_EQ(r->envoy_key, "env-1_a");
  EXPECT_EQ(r->version, 7u);
  EXPECT_EQ(r->pool_name, "default");
}

TEST(EnvoyConnectQuery, DecodesValuesAndIgnoresOrderAndUnknownParams) {
  Result<EnvoyConnectParams> r = ParseEnvoyConnectQuery(
      "x=%zz&pool_name=my+pool%21&version=%2B4294967295&envoy_key=abc&namespace=n%20s&"
      "protocol_version=002&protocol_version=9");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->protocol_version, 2);
  EXPECT_EQ(r->namespace_name, "n s");
  EXPECT_EQ(r->pool_name, "my pool!");
  EXPECT_EQ(r->version, 4294967295u);
}

struct BadCase {
  std::string query;
  std::string message;
};

std::string With(std::string_view name, std::string_view value) {
  // kValid with `name`'s value replaced (or the param dropped when value is "<drop>").
  std::string out;
  for (std::string_view part : {"protocol_version=4", "namespace=default", "envoy_key=env-1_a",
                                "version=7", "pool_name=default"}) {
    std::string_view n = part.substr(0, part.find('='));
    std::string piece(part);
    if (n == name) {
      if (value == "<drop>") continue;
      piece = std::string(n) + "=" + std::string(value);
    }
    if (!out.empty()) out += '&';
    out += piece;
  }
  return out;
}

TEST(EnvoyConnectQuery, EveryValidationRowIsWsInvalidRequestWithItsMessage) {
  std::vector<BadCase> cases = {
      {With("protocol_version", "<drop>"), "missing `protocol_version` query parameter"},
      {With("protocol_version", ""), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "four"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "-4"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "+"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "4.0"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "65536"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "%204"), "invalid `protocol_version` query parameter"},
      {With("protocol_version", "0"), "unsupported `protocol_version` query parameter"},
      {With("protocol_version", "1"), "unsupported `protocol_version` query parameter"},
      {With("protocol_version", "5"), "unsupported `protocol_version` query parameter"},
      {With("protocol_version", "65535"), "unsupported `protocol_version` query parameter"},
      {With("namespace", "<drop>"), "missing `namespace` query parameter"},
      {With("pool_name", "<drop>"), "missing `pool_name` query parameter"},
      {With("pool_name", std::string(129, 'p')), "`pool_name` parameter too long (> 128)"},
      {With("envoy_key", "<drop>"), "missing `envoy_key` query parameter"},
      {With("envoy_key", ""), "`envoy_key` parameter too short (< 3)"},
      {With("envoy_key", "ab"), "`envoy_key` parameter too short (< 3)"},
      {With("envoy_key", std::string(129, 'k')), "`envoy_key` parameter too long (> 128)"},
      {With("envoy_key", "-abc"), "`envoy_key` parameter invalid"},
      {With("envoy_key", "abc-"), "`envoy_key` parameter invalid"},
      {With("envoy_key", "ab.c"), "`envoy_key` parameter invalid"},
      {With("envoy_key", "ab%20c"), "`envoy_key` parameter invalid"},
      {With("envoy_key", "ab%C3%A9"), "`envoy_key` parameter invalid"},
      {With("version", "<drop>"), "missing `version` query parameter"},
      {With("version", ""), "invalid `version` query parameter"},
      {With("version", "4294967296"), "invalid `version` query parameter"},
      {With("version", "-1"), "invalid `version` query parameter"},
      {With("version", "1e3"), "invalid `version` query parameter"},
      {With("namespace", "%zz"), "invalid percent-encoding in `namespace` query parameter"},
      {"", "missing `protocol_version` query parameter"},
  };
  for (const BadCase& c : cases) {
    Result<EnvoyConnectParams> r = ParseEnvoyConnectQuery(c.query);
    ASSERT_FALSE(r.ok()) << c.query;
    EXPECT_TRUE(r.error().Is("ws", "invalid_request")) << c.query;
    EXPECT_EQ(r.error().message(), c.message) << c.query;
  }
}

TEST(EnvoyConnectQuery, AcceptsBoundaryValues) {
  for (const std::string& q :
       {With("protocol_version", "2"), With("protocol_version", "3"),
        With("pool_name", std::string(128, 'p')), With("pool_name", ""), With("envoy_key", "abc"),
        With("envoy_key", std::string(128, 'k')), With("envoy_key", "a-b"),
        With("envoy_key", "_a_"), With("envoy_key", "A9z"), With("version", "0"),
        With("namespace", "")}) {
    EXPECT_TRUE(ParseEnvoyConnectQuery(q).ok()) << q;
  }
}

TEST(EnvoyConnectQuery, ChecksInTheEngineOrder) {
  // Several problems at once: the first check in engine order reports.
  Result<EnvoyConnectParams> r = ParseEnvoyConnectQuery("envoy_key=x&version=y");
  EXPECT_EQ(r.error().message(), "missing `protocol_version` query parameter");
  r = ParseEnvoyConnectQuery("protocol_version=4&envoy_key=x&version=y&pool_name=p");
  EXPECT_EQ(r.error().message(), "missing `namespace` query parameter");
  r = ParseEnvoyConnectQuery("protocol_version=4&namespace=n&envoy_key=x&version=y");
  EXPECT_EQ(r.error().message(), "missing `pool_name` query parameter");
  r = ParseEnvoyConnectQuery("protocol_version=4&namespace=n&pool_name=p&envoy_key=x&version=y");
  EXPECT_EQ(r.error().message(), "`envoy_key` parameter too short (< 3)");
}

TEST(EnvoyConnectQuery, FleetCapLowersTheMaximum) {
  EXPECT_EQ(ParseEnvoyConnectQuery(kValid, 3).error().message(),
            "unsupported `protocol_version` query parameter");
  EXPECT_TRUE(ParseEnvoyConnectQuery(With("protocol_version", "3"), 3).ok());
}

TEST(EnvoyConnectPath, MatchesExactlyWithOptionalTrailingSlash) {
  EXPECT_TRUE(IsEnvoyConnectPath("/envoys/connect"));
  EXPECT_TRUE(IsEnvoyConnectPath("/envoys/connect/"));
  EXPECT_FALSE(IsEnvoyConnectPath("/envoys/connect//"));
  EXPECT_FALSE(IsEnvoyConnectPath("/envoys/connectx"));
  EXPECT_FALSE(IsEnvoyConnectPath("/envoys"));
  EXPECT_FALSE(IsEnvoyConnectPath("/api/envoys/connect"));
}

TEST(EnvoyConnectUrl, BuildsSchemePathAndOrderedEncodedParams) {
  EnvoyConnectParams p{4, "default", "6f1c", 1, "default"};
  EXPECT_EQ(BuildEnvoyConnectUrl("https://api.example.com", p),
            "wss://api.example.com/envoys/connect?protocol_version=4&namespace=default&"
            "envoy_key=6f1c&version=1&pool_name=default");
  EXPECT_EQ(BuildEnvoyConnectUrl("http://127.0.0.1:6420///", p),
            "ws://127.0.0.1:6420/envoys/connect?protocol_version=4&namespace=default&"
            "envoy_key=6f1c&version=1&pool_name=default");
  // The engine's Unix socket (--unix-socket): the path stays the authority.
  EXPECT_EQ(BuildEnvoyConnectUrl("http+unix://%2Ftmp%2Fe.sock", p),
            "ws+unix://%2Ftmp%2Fe.sock/envoys/connect?protocol_version=4&namespace=default&"
            "envoy_key=6f1c&version=1&pool_name=default");
  EnvoyConnectParams q{3, "my ns/1", "key_1", 4294967295u, "pool&x=é"};
  EXPECT_EQ(BuildEnvoyConnectUrl("https://h/base/", q),
            "wss://h/base/envoys/connect?protocol_version=3&namespace=my%20ns%2F1&"
            "envoy_key=key_1&version=4294967295&pool_name=pool%26x%3D%C3%A9");
}

TEST(EnvoyConnectUrl, RoundTripsThroughTheEngineParser) {
  EnvoyConnectParams p{4, "ns with space+plus", "env-key_1", 42, "pool/é"};
  std::string url = BuildEnvoyConnectUrl("http://localhost:6420/", p);
  std::string_view query = std::string_view(url).substr(url.find('?') + 1);
  Result<EnvoyConnectParams> parsed = ParseEnvoyConnectQuery(query);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(*parsed, p);
}

TEST(EnvoyConnectUrl, ReplacesSchemesAsPlainSubstrings) {
  EnvoyConnectParams p{4, "n", "abc", 1, "p"};
  std::string url = BuildEnvoyConnectUrl("ws://already", p);
  EXPECT_TRUE(url.starts_with("ws://already/envoys/connect?")) << url;
  url = BuildEnvoyConnectUrl("https://a/?next=http://b", p);
  EXPECT_TRUE(url.starts_with("wss://a/?next=ws://b/envoys/connect?")) << url;
}

}  // namespace
}  // namespace keel::engine::gateway
