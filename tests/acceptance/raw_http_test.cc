// actors.md §8.39 raw-http: onRequest through handle.Fetch (/request/<path>): JSON and
// binary bodies, state across requests, lower-cased headers, 404s, a router kept in vars.
// Not applicable in C++: a handler returning something other than a Response (the type
// system forbids it; see README), and fetch(Request)/URL-object overloads of the TS client.
#include <gmock/gmock.h>

#include <chrono>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

class RawHttpTest : public PlainTest {};

net::HttpRequest Req(std::string method, std::string body = "", net::Headers headers = {}) {
  net::HttpRequest r;
  r.method = std::move(method);
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

TEST_F(RawHttpTest, GetJson) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-hello")});
  auto r = KEEL_OK(h.Fetch("api/hello"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body), json({{"message", "Hello from actor!"}}));
}

TEST_F(RawHttpTest, PostEchoesJson) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-echo")});
  const json payload = {{"test", "data"}, {"number", 123}};
  auto r = KEEL_OK(h.Fetch("api/echo", Req("POST", payload.dump(),
                                            {{"content-type", "application/json"}, {"x-echo-me", "back"}})));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ParseBody(r.body), payload);
  // Response headers set by the handler reach the caller.
  EXPECT_EQ(HeaderOf(r.headers, "content-type"), "application/json");
  EXPECT_EQ(HeaderOf(r.headers, "x-echo-me"), "back");
}

TEST_F(RawHttpTest, StatePersistsAcrossRequests) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-state")});
  for (int i = 0; i < 3; ++i) KEEL_OK(h.Fetch("api/hello"));
  auto r = KEEL_OK(h.Fetch("api/state"));
  EXPECT_EQ(ParseBody(r.body), json({{"requestCount", 4}})) << "the inspecting request counts too";
}

TEST_F(RawHttpTest, HeadersArriveLowerCased) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-headers")});
  auto r = KEEL_OK(h.Fetch("api/headers", Req("GET", "", {{"X-Custom-Header", "custom-value"}, {"X-Another", "Another"}})));
  json headers = ParseBody(r.body);
  EXPECT_EQ(headers["x-custom-header"], "custom-value") << headers;
  EXPECT_EQ(headers["x-another"], "Another") << headers;
}

TEST_F(RawHttpTest, UnknownPathIs404) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-404")});
  auto r = KEEL_OK(h.Fetch("api/nonexistent"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "Not Found");
}

TEST_F(RawHttpTest, NoHandlerIs404) {
  auto h = client().GetOrCreate("rawHttpNoHandlerActor", {UniqueKey("rh-nohandler")});
  // The runtime answers actor.request_handler_not_defined, which no handle retries.
  const auto started = std::chrono::steady_clock::now();
  auto r = h.Fetch("api/anything");
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2)) << "retried a plain 404";
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_NE(r->body.find("request_handler_not_defined"), std::string::npos) << r->body;
}

TEST_F(RawHttpTest, EchoRouteOnlyForPost) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-methods")});
  auto post = KEEL_OK(h.Fetch("api/echo", Req("POST", "hi", {{"content-type", "text/plain"}})));
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.body, "hi");
  for (const char* m : {"GET", "PUT", "DELETE", "PATCH"}) {
    auto r = KEEL_OK(h.Fetch("api/echo", Req(m, std::string(m) == "GET" ? "" : "x")));
    EXPECT_EQ(r.status, 404) << m;
  }
}

TEST_F(RawHttpTest, BinaryBodyEchoedExactly) {
  auto h = client().GetOrCreate("rawHttpActor", {UniqueKey("rh-binary")});
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  auto r = KEEL_OK(h.Fetch("api/echo", Req("POST", bytes, {{"content-type", "application/octet-stream"}})));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, bytes);
  EXPECT_EQ(HeaderOf(r.headers, "content-type"), "application/octet-stream");
}

TEST_F(RawHttpTest, RouterInVars) {
  auto h = client().GetOrCreate("rawHttpHonoActor", {UniqueKey("rh-router")});
  auto root = KEEL_OK(h.Fetch(""));
  EXPECT_EQ(ParseBody(root.body), json({{"message", "Welcome to Hono actor!"}})) << root.status;
  auto users = KEEL_OK(h.Fetch("users"));
  EXPECT_EQ(ParseBody(users.body), json::array({{{"id", 1}, {"name", "Alice"}}, {{"id", 2}, {"name", "Bob"}}}));
  auto user = KEEL_OK(h.Fetch("users/123"));
  EXPECT_EQ(ParseBody(user.body), json({{"id", 123}, {"name", "User 123"}}));
  auto created = KEEL_OK(h.Fetch("users", Req("POST", R"({"name":"Charlie","email":"charlie@example.com"})",
                                              {{"content-type", "application/json"}})));
  EXPECT_EQ(created.status, 201);
  EXPECT_EQ(ParseBody(created.body), json({{"id", 3}, {"name", "Charlie"}, {"email", "charlie@example.com"}}));
  auto updated = KEEL_OK(h.Fetch("users/1", Req("PUT", R"({"name":"Alice Updated"})", {{"content-type", "application/json"}})));
  EXPECT_EQ(ParseBody(updated.body), json({{"id", 1}, {"name", "Alice Updated"}}));
  auto deleted = KEEL_OK(h.Fetch("users/2", Req("DELETE")));
  EXPECT_EQ(ParseBody(deleted.body), json({{"message", "User 2 deleted"}}));
  auto missing = KEEL_OK(h.Fetch("nope"));
  EXPECT_EQ(missing.status, 404);
}

TEST_F(RawHttpTest, LeadingSlashIsOptional) {
  auto h = client().GetOrCreate("rawHttpRequestPropertiesActor", {UniqueKey("rh-slash")});
  auto with = KEEL_OK(h.Fetch("/test/path"));
  auto without = KEEL_OK(h.Fetch("test/path"));
  EXPECT_EQ(ParseBody(with.body)["pathname"], "/test/path");
  EXPECT_EQ(ParseBody(without.body)["pathname"], "/test/path");
  EXPECT_EQ(ParseBody(with.body)["url"].get<std::string>().find("//test"), std::string::npos);
}

// Rivet's Request+init header merging: the C++ Fetch takes one request whose headers are
// sent along with the client's own; both kinds arrive.
TEST_F(RawHttpTest, RequestHeadersMergeWithClientHeaders) {
  client::ClientOptions opts = client().options();
  opts.headers = {{"x-client-header", "from-client"}};
  client::Client c(opts);
  auto h = c.GetOrCreate("rawHttpActor", {UniqueKey("rh-merge")});
  auto r = KEEL_OK(h.Fetch("api/headers", Req("GET", "", {{"x-request-header", "from-request"}})));
  json headers = ParseBody(r.body);
  EXPECT_EQ(headers["x-client-header"], "from-client") << headers;
  EXPECT_EQ(headers["x-request-header"], "from-request") << headers;
}

}  // namespace
}  // namespace keel::acceptance
