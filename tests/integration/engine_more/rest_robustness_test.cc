// The REST API under bad input: wrong JSON types, unknown fields and garbage bodies get a
// structured 400 and the engine keeps serving (a JSON accessor that throws must never take
// the process down).
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "net/client.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;

struct Answer {
  int status = 0;
  nlohmann::json body;
};

Answer Call(TestEngine& te, const std::string& method, const std::string& target,
            const std::string& body) {
  net::HttpRequest req;
  req.method = method;
  req.body = body;
  auto r = net::FetchSync(te.http_url() + target, std::move(req), 10s);
  if (!r.has_value()) return {};
  return {r->status, nlohmann::json::parse(r->body, nullptr, false)};
}

TEST(RestRobustness, BadBodiesAreStructured400sAndTheEngineKeepsServing) {
  TestEngine te;
  const struct {
    const char* method;
    const char* target;
    const char* body;
  } cases[] = {
      {"PUT", "/runner-configs/x?namespace=default",
       R"({"datacenters":{"default":{"normal":{},"drain_on_version_upgrade":"yes"}}})"},
      {"PUT", "/runner-configs/x?namespace=default", R"({"datacenters":{"default":{}}})"},
      {"PUT", "/runner-configs/x?namespace=default", R"({"datacenters":[1,2]})"},
      {"POST", "/actors?namespace=default", R"({"name":5})"},
      {"POST", "/actors?namespace=default", R"({"name":"a","surprise":1})"},
      {"POST", "/actors?namespace=default", "garbage"},
      {"POST", "/actors?namespace=default", R"({"name":"a","input":"%%%"})"},
      {"PUT", "/actors?namespace=default", R"({"name":"a"})"},
      {"POST", "/namespaces", R"({"name":"Bad Name!"})"},
      {"GET", "/actors?namespace=default&limit=lots&name=a", ""},
  };
  for (const auto& c : cases) {
    Answer a = Call(te, c.method, c.target, c.body);
    EXPECT_EQ(a.status, 400) << c.method << " " << c.target << " " << c.body;
    ASSERT_TRUE(a.body.is_object()) << c.body;
    EXPECT_TRUE(a.body.contains("group") && a.body.contains("code") && a.body.contains("message"))
        << a.body.dump();
  }
  Answer missing_ns = Call(te, "GET", "/actors?namespace=nope&name=a", "");
  EXPECT_EQ(missing_ns.body.value("code", ""), "namespace_not_found");
  Answer ok = Call(te, "POST", "/actors?namespace=default", R"({"name":"fine","key":"k"})");
  EXPECT_EQ(ok.status, 200) << ok.body.dump();
}

}  // namespace
}  // namespace keel::testing
