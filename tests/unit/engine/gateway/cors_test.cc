#include "engine/gateway/cors.h"

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

TEST(Cors, PreflightEchoesOriginAndRequestedHeaders) {
  HeaderList request = {{"Origin", "https://app.example"},
                        {"Access-Control-Request-Headers", "content-type, x-foo"}};
  EXPECT_EQ(CorsPreflightHeaders(request),
            (HeaderList{{"access-control-allow-origin", "https://app.example"},
                        {"access-control-allow-credentials", "true"},
                        {"access-control-expose-headers", "*"},
                        {"access-control-allow-methods", "GET, POST, PUT, DELETE, OPTIONS, PATCH"},
                        {"access-control-allow-headers", "content-type, x-foo"},
                        {"access-control-max-age", "86400"}}));
  EXPECT_EQ(kPreflightStatus, 204);
}

TEST(Cors, PreflightDefaultsToWildcards) {
  HeaderList out = CorsPreflightHeaders({});
  EXPECT_EQ(out[0], (Header{"access-control-allow-origin", "*"}));
  EXPECT_EQ(out[4], (Header{"access-control-allow-headers", "*"}));
}

TEST(Cors, ResponseHeadersCarryOriginCredentialsAndExpose) {
  HeaderList request = {{"oRiGiN", "http://localhost:3000"}};
  EXPECT_EQ(CorsResponseHeaders(request),
            (HeaderList{{"access-control-allow-origin", "http://localhost:3000"},
                        {"access-control-allow-credentials", "true"},
                        {"access-control-expose-headers", "*"}}));
  EXPECT_EQ(CorsResponseHeaders({})[0], (Header{"access-control-allow-origin", "*"}));
}

TEST(FindHeader, IsCaseInsensitiveAndFirstWins) {
  HeaderList h = {{"X-Rivet-Target", "actor"}, {"x-rivet-target", "envoy"}};
  EXPECT_EQ(FindHeader(h, "x-rivet-target"), "actor");
  EXPECT_EQ(FindHeader(h, "x-rivet-actor"), std::nullopt);
}

}  // namespace
}  // namespace keel::engine::gateway
