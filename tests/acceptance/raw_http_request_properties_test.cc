// actors.md §8.38 raw-http-request-properties: what onRequest sees of a raw request —
// path, query (decoded params, last value wins), method, lower-cased headers, bodies of
// any type and size passed through untouched. The fixture echoes them as JSON.
#include <gmock/gmock.h>

#include <thread>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class RawHttpRequestPropertiesTest : public PlainTest {
 protected:
  void SetUp() override {
    handle_.emplace(client().GetOrCreate("rawHttpRequestPropertiesActor", {UniqueKey("rhp")}));
  }
  json Echo(const std::string& path, std::string method = "GET", std::string body = "",
            net::Headers headers = {}, int* status = nullptr) {
    net::HttpRequest r;
    r.method = std::move(method);
    r.body = std::move(body);
    r.headers = std::move(headers);
    // Not KEEL_OK: this also runs on helper threads, where a throw would terminate.
    auto res = handle_->Fetch(path, std::move(r));
    if (!res.has_value()) {
      ADD_FAILURE() << "fetch " << path << ": " << res.error().ToString();
      return json();
    }
    if (status != nullptr) *status = res->status;
    return res->body.empty() ? json() : ParseBody(res->body);
  }
  std::optional<client::ActorHandle> handle_;
};

TEST_F(RawHttpRequestPropertiesTest, PostWithQueryHeadersAndJson) {
  json body = Echo("test/path?foo=bar&baz=qux", "POST", R"({"test":"data"})",
                   {{"Content-Type", "application/json"}, {"X-Custom-Header", "custom-value"},
                    {"Authorization", "Bearer test-token"}});
  EXPECT_THAT(body["url"].get<std::string>(), HasSubstr("/test/path?foo=bar&baz=qux"));
  EXPECT_EQ(body["pathname"], "/test/path");
  EXPECT_EQ(body["search"], "?foo=bar&baz=qux");
  EXPECT_EQ(body["searchParams"], json({{"foo", "bar"}, {"baz", "qux"}}));
  EXPECT_EQ(body["method"], "POST");
  EXPECT_EQ(body["headers"]["content-type"], "application/json");
  EXPECT_EQ(body["headers"]["x-custom-header"], "custom-value");
  EXPECT_EQ(body["headers"]["authorization"], "Bearer test-token");
  EXPECT_EQ(body["body"], json({{"test", "data"}}));
}

TEST_F(RawHttpRequestPropertiesTest, GetWithoutBody) {
  json body = Echo("test");
  EXPECT_EQ(body["method"], "GET");
  EXPECT_TRUE(body["body"].is_null()) << body;
}

TEST_F(RawHttpRequestPropertiesTest, FormAndTextBodies) {
  json form = Echo("form", "POST", "field1=value1&field2=value2",
                   {{"content-type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(form["body"], "field1=value1&field2=value2");
  EXPECT_EQ(form["headers"]["content-type"], "application/x-www-form-urlencoded");
  json text = Echo("text", "POST", "Hello, World!", {{"content-type", "text/plain"}});
  EXPECT_EQ(text["body"], "Hello, World!");
  EXPECT_EQ(text["headers"]["content-type"], "text/plain");
}

TEST_F(RawHttpRequestPropertiesTest, HeaderNamesLowerCasedValuesIntact) {
  json body = Echo("headers", "GET", "", {{"X-UPPERCASE", "UPPER"}, {"x-lowercase", "lower"}, {"X-MixedCase", "MiXeD"}});
  EXPECT_EQ(body["headers"]["x-uppercase"], "UPPER");
  EXPECT_EQ(body["headers"]["x-lowercase"], "lower");
  EXPECT_EQ(body["headers"]["x-mixedcase"], "MiXeD");
}

TEST_F(RawHttpRequestPropertiesTest, EmptyPathPercentEncodingAndNoFragment) {
  EXPECT_EQ(Echo("")["pathname"], "/");
  EXPECT_EQ(Echo("path%20with%20spaces/and%2Fslashes")["pathname"], "/path%20with%20spaces/and%2Fslashes");
  json frag = Echo("test#fragment");
  EXPECT_EQ(frag["pathname"], "/test");
  EXPECT_EQ(frag["hash"], "");
}

TEST_F(RawHttpRequestPropertiesTest, Methods) {
  for (const char* m : {"GET", "POST", "PUT", "DELETE", "PATCH"}) {
    const bool with_body = std::string(m) != "GET";
    json body = Echo("method", m, with_body ? R"({"x":1})" : "",
                     with_body ? net::Headers{{"content-type", "application/json"}} : net::Headers{});
    EXPECT_EQ(body["method"], m);
  }
  int status = 0;
  EXPECT_TRUE(Echo("head", "HEAD", "", {}, &status).is_null());
  EXPECT_EQ(status, 200);
  // OPTIONS is answered 204 either by the actor or by the gateway's CORS preflight (§5.7).
  EXPECT_TRUE(Echo("options", "OPTIONS", "", {}, &status).is_null());
  EXPECT_EQ(status, 204);
}

TEST_F(RawHttpRequestPropertiesTest, QueryParamEdgeCases) {
  json body = Echo("q?key=value1&key=value2&array[]=1&array[]=2&nested[prop]=val");
  EXPECT_EQ(body["searchParams"]["key"], "value2") << "last value wins";
  EXPECT_EQ(body["searchParams"]["array[]"], "2");
  EXPECT_EQ(body["searchParams"]["nested[prop]"], "val");
}

TEST_F(RawHttpRequestPropertiesTest, MultipartBodyPassedThrough) {
  const std::string boundary = "----KeelBoundary7MA4YWxkTrZu0gW";
  const std::string multipart = "--" + boundary +
                                "\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n--" + boundary +
                                "--\r\n";
  json body = Echo("upload", "POST", multipart, {{"content-type", "multipart/form-data; boundary=" + boundary}});
  EXPECT_EQ(body["bodyText"], multipart);
  EXPECT_THAT(body["headers"]["content-type"].get<std::string>(), HasSubstr("multipart/form-data"));
}

TEST_F(RawHttpRequestPropertiesTest, LongQueryValue) {
  const std::string value(1000, 'a');
  EXPECT_EQ(Echo("long?param=" + value)["searchParams"]["param"], value);
}

TEST_F(RawHttpRequestPropertiesTest, LargeJsonBodyAccepted) {
  json items = json::array();
  for (int i = 0; i < 10000; ++i) {
    items.push_back({{"id", i}, {"name", "Item " + std::to_string(i)}, {"description", "A fairly long description text that makes each item larger"}});
  }
  const std::string payload = json{{"items", items}}.dump();
  ASSERT_GT(payload.size(), 1000000u);
  int status = 0;
  json body = Echo("large", "POST", payload, {{"content-type", "application/json"}}, &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(body["body"]["items"].size(), 10000u);
}

TEST_F(RawHttpRequestPropertiesTest, BodyWithoutContentTypeAndEmptyBody) {
  json plain = Echo("raw", "POST", "plain body");
  EXPECT_EQ(plain["bodyText"], "plain body");
  int status = 0;
  json empty = Echo("empty", "POST", "", {}, &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(empty["method"], "POST");
}

TEST_F(RawHttpRequestPropertiesTest, CustomMethodWorksOrIsRejected) {
  net::HttpRequest r;
  r.method = "CUSTOM";
  auto res = handle_->Fetch("custom", std::move(r));
  if (res.has_value() && res->status == 200) {
    EXPECT_EQ(ParseBody(res->body)["method"], "CUSTOM");
  }
}

TEST_F(RawHttpRequestPropertiesTest, CookieHeader) {
  json body = Echo("cookies", "GET", "", {{"Cookie", "session=abc123; user=test"}});
  EXPECT_EQ(body["headers"]["cookie"], "session=abc123; user=test");
}

TEST_F(RawHttpRequestPropertiesTest, PercentDecodedQueryValues) {
  json body = Echo("enc?special=%20%21%40%23%24%25%5E%26*()&unicode=%E2%9C%93&email=test%40example.com");
  EXPECT_EQ(body["searchParams"]["special"], " !@#$%^&*()");
  EXPECT_EQ(body["searchParams"]["unicode"], "✓");
  EXPECT_EQ(body["searchParams"]["email"], "test@example.com");
}

TEST_F(RawHttpRequestPropertiesTest, ConcurrentRequestsStaySeparate) {
  json results[3];
  std::thread t0([&] { results[0] = Echo("c1?id=1", "POST", R"({"n":1})", {{"content-type", "application/json"}}); });
  std::thread t1([&] { results[1] = Echo("c2?id=2", "PUT", R"({"n":2})", {{"content-type", "application/json"}}); });
  std::thread t2([&] { results[2] = Echo("c3?id=3", "DELETE"); });
  t0.join();
  t1.join();
  t2.join();
  EXPECT_EQ(results[0]["method"], "POST");
  EXPECT_EQ(results[0]["searchParams"]["id"], "1");
  EXPECT_EQ(results[0]["body"], json({{"n", 1}}));
  EXPECT_EQ(results[1]["method"], "PUT");
  EXPECT_EQ(results[1]["searchParams"]["id"], "2");
  EXPECT_EQ(results[1]["body"], json({{"n", 2}}));
  EXPECT_EQ(results[2]["method"], "DELETE");
  EXPECT_TRUE(results[2]["body"].is_null());
}

}  // namespace
}  // namespace keel::acceptance
