// MergeRepeatedHeaders: tunnel header lists become valid BARE maps (one key per name).
#include "protocol/envoy/headers.h"

#include <gtest/gtest.h>

#include "protocol/envoy/versioned.h"

namespace keel::protocol::envoy {
namespace {

TEST(MergeRepeatedHeaders, JoinsRepeatedNamesCaseInsensitivelyKeepingOrder) {
  HeaderList in = {{"X-Foo", "a"}, {"accept", "text/html"}, {"x-foo", "b"}, {"X-FOO", "c"}};
  HeaderList want = {{"X-Foo", "a, b, c"}, {"accept", "text/html"}};
  EXPECT_EQ(MergeRepeatedHeaders(in), want);
}

TEST(MergeRepeatedHeaders, CookiesJoinWithSemicolons) {
  HeaderList in = {{"cookie", "a=1"}, {"Cookie", "b=2"}};
  HeaderList want = {{"cookie", "a=1; b=2"}};
  EXPECT_EQ(MergeRepeatedHeaders(in), want);
}

TEST(MergeRepeatedHeaders, UniqueNamesAreUnchanged) {
  HeaderList in = {{"a", "1"}, {"b", ""}, {"c", "3"}};
  EXPECT_EQ(MergeRepeatedHeaders(in), in);
  EXPECT_TRUE(MergeRepeatedHeaders({}).empty());
}

// Why it matters: the decoder refuses a map with a repeated key, so unmerged headers make
// the whole frame undecodable at the peer.
TEST(MergeRepeatedHeaders, MergedRequestStartDecodesWhereTheRawOneDoesNot) {
  latest::ToEnvoyTunnelMessage m;
  latest::ToEnvoyRequestStart start;
  start.actor_id = "a1";
  start.method = "GET";
  start.path = "/request/x";
  start.headers = {{"x-foo", "a"}, {"x-foo", "b"}};
  m.message_kind = start;
  Bytes raw;
  ASSERT_TRUE(EncodeToEnvoy(latest::ToEnvoy{m}, 4, raw).ok());
  EXPECT_FALSE(DecodeToEnvoy(raw, 4).ok());
  start.headers = MergeRepeatedHeaders(start.headers);
  m.message_kind = start;
  Bytes merged;
  ASSERT_TRUE(EncodeToEnvoy(latest::ToEnvoy{m}, 4, merged).ok());
  auto decoded = DecodeToEnvoy(merged, 4);
  ASSERT_TRUE(decoded.ok()) << decoded.error().ToString();
  const auto* t = decoded->get_if<latest::ToEnvoyTunnelMessage>();
  ASSERT_NE(t, nullptr);
  const auto* s = t->message_kind.get_if<latest::ToEnvoyRequestStart>();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->headers, (HeaderList{{"x-foo", "a, b"}}));
}

}  // namespace
}  // namespace keel::protocol::envoy
