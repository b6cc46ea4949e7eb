// The REST API against actors.md §7: every listing is paged by `limit` and `cursor` (none
// may answer an unbounded list), runner configs refuse unknown fields and out-of-range
// numbers instead of silently using defaults, the sleep/reschedule body is `{}`, and a
// destroyed actor is `actor.not_found` for every per-actor route.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "net/client.h"
#include "support/fake_envoy.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

struct Answer {
  int status = 0;
  json body;
};

Answer Call(TestEngine& te, const std::string& method, const std::string& target,
            const std::string& body = "") {
  net::HttpRequest req;
  req.method = method;
  req.body = body;
  auto r = net::FetchSync(te.http_url() + target, std::move(req), 10s);
  if (!r.has_value()) return {};
  return {r->status, json::parse(r->body, nullptr, false)};
}

std::string Code(const Answer& a) {
  return a.body.is_object() ? a.body.value("group", "") + "." + a.body.value("code", "") : "";
}

// Follows the cursor of `base` (a target with a query) page by page with `limit=1`: every
// page holds one item and names the next, and together they list what one unpaged call does.
// `items(body)` extracts a page's item names.
template <typename ItemsFn>
void ExpectPagedListing(TestEngine& te, const std::string& base, ItemsFn items) {
  Answer all = Call(te, "GET", base);
  ASSERT_EQ(all.status, 200) << base << ": " << all.body.dump();
  const std::vector<std::string> expected = items(all.body);
  ASSERT_GE(expected.size(), 3u) << base << ": " << all.body.dump();
  EXPECT_TRUE(all.body["pagination"]["cursor"].is_null()) << base << ": " << all.body.dump();

  std::vector<std::string> seen;
  std::string cursor;
  for (size_t page = 0; page <= expected.size(); ++page) {
    std::string target = base + "&limit=1";
    if (!cursor.empty()) target += "&cursor=" + cursor;
    Answer a = Call(te, "GET", target);
    ASSERT_EQ(a.status, 200) << target << ": " << a.body.dump();
    std::vector<std::string> got = items(a.body);
    ASSERT_LE(got.size(), 1u) << target << ": " << a.body.dump();
    seen.insert(seen.end(), got.begin(), got.end());
    const json& next = a.body["pagination"]["cursor"];
    if (next.is_null()) break;
    ASSERT_TRUE(next.is_string()) << a.body.dump();
    cursor = next.get<std::string>();
  }
  EXPECT_EQ(seen, expected) << base;
  Answer bad_limit = Call(te, "GET", base + "&limit=0");
  EXPECT_EQ(Code(bad_limit), "api.bad_request") << base << ": " << bad_limit.body.dump();
  Answer bad_cursor = Call(te, "GET", base + "&cursor=%25%25");
  EXPECT_EQ(Code(bad_cursor), "api.bad_request") << base << ": " << bad_cursor.body.dump();
}

std::vector<std::string> ObjectKeys(const json& j) {
  std::vector<std::string> out;
  if (!j.is_object()) return out;
  for (const auto& [k, _] : j.items()) out.push_back(k);
  return out;
}

TEST(RestConformance, NamespacesRunnerConfigsAndActorNamesArePaged) {
  TestEngine te;
  for (const char* name : {"ns-b", "ns-a", "ns-c"}) {
    Answer a = Call(te, "POST", "/namespaces", json{{"name", name}}.dump());
    ASSERT_EQ(a.status, 200) << a.body.dump();
  }
  ExpectPagedListing(te, "/namespaces?x=1", [](const json& body) {
    std::vector<std::string> out;
    for (const auto& ns : body["namespaces"]) out.push_back(ns.value("name", ""));
    return out;
  });

  for (const char* pool : {"p2", "p1", "p3"}) {
    Answer a = Call(te, "PUT", std::string("/runner-configs/") + pool + "?namespace=default",
                    R"({"datacenters":{"default":{"normal":{}}}})");
    ASSERT_EQ(a.status, 200) << a.body.dump();
  }
  ExpectPagedListing(te, "/runner-configs?namespace=default",
                     [](const json& body) { return ObjectKeys(body["runner_configs"]); });
  // `variant` filters by pool kind.
  Answer serverless = Call(te, "GET", "/runner-configs?namespace=default&variant=serverless");
  ASSERT_EQ(serverless.status, 200) << serverless.body.dump();
  EXPECT_TRUE(serverless.body["runner_configs"].empty()) << serverless.body.dump();
  Answer normal = Call(te, "GET", "/runner-configs?namespace=default&variant=normal");
  EXPECT_EQ(ObjectKeys(normal.body["runner_configs"]).size(), 4u) << normal.body.dump();
  Answer bad_variant = Call(te, "GET", "/runner-configs?namespace=default&variant=other");
  EXPECT_EQ(Code(bad_variant), "api.bad_request") << bad_variant.body.dump();

  // Every name a create used is listed, however many: the listing pages them.
  for (const char* name : {"gamma", "alpha", "beta"}) {
    Answer a = Call(te, "POST", "/actors?namespace=default", json{{"name", name}}.dump());
    ASSERT_EQ(a.status, 200) << a.body.dump();
  }
  ExpectPagedListing(te, "/actors/names?namespace=default",
                     [](const json& body) { return ObjectKeys(body["names"]); });
}

TEST(RestConformance, EnvoysArePaged) {
  TestEngine te;
  std::vector<std::unique_ptr<FakeEnvoy>> envoys;
  for (const char* key : {"envoy-b", "envoy-c", "envoy-a"}) {
    FakeEnvoyOptions options;
    options.ws_url = te.ws_url();
    options.envoy_key = key;
    auto envoy = FakeEnvoy::ConnectAndInit(options);
    ASSERT_TRUE(envoy.has_value()) << envoy.error().ToString();
    envoys.push_back(std::move(*envoy));
  }
  ExpectPagedListing(te, "/envoys?namespace=default", [](const json& body) {
    std::vector<std::string> out;
    for (const auto& e : body["envoys"]) out.push_back(e.value("envoy_key", ""));
    return out;
  });
}

TEST(RestConformance, RunnerConfigsRefuseUnknownFieldsAndBadNumbers) {
  TestEngine te;
  const std::string target = "/runner-configs/sls?namespace=default";
  auto put = [&](const json& config) {
    return Call(te, "PUT", target, json{{"datacenters", {{"default", config}}}}.dump());
  };
  const json url = "http://127.0.0.1:9/api";
  const std::vector<json> refused = {
      // A misspelt setting must not fall back to its default.
      {{"serverless", {{"url", url}, {"max_concurent_actors", 5}}}},
      {{"normal", json::object()}, {"drain_on_version_upgrad", false}},
      {{"normal", {{"slots", 1}}}},
      // Both kinds at once.
      {{"normal", json::object()}, {"serverless", {{"url", url}}}},
      // Counts are u32: not negative, textual, fractional or larger.
      {{"serverless", {{"url", url}, {"max_concurrent_actors", -1}}}},
      {{"serverless", {{"url", url}, {"max_concurrent_actors", "5"}}}},
      {{"serverless", {{"url", url}, {"request_lifespan", 1.5}}}},
      {{"serverless", {{"url", url}, {"max_runners", 4294967296ull}}}},
      {{"serverless", {{"url", url}, {"headers", "x-a: b"}}}},
      {{"serverless", "http://127.0.0.1:9/api"}},
  };
  for (const json& config : refused) {
    Answer a = put(config);
    EXPECT_EQ(a.status, 400) << config.dump() << ": " << a.body.dump();
    EXPECT_EQ(Code(a), "api.bad_request") << config.dump();
  }
  Answer missing = Call(te, "GET", "/runner-configs?namespace=default&runner_name=sls");
  EXPECT_TRUE(missing.body["runner_configs"].empty()) << missing.body.dump();

  Answer ok = put({{"serverless",
                    {{"url", url},
                     {"headers", {{"x-a", "b"}}},
                     {"max_runners", 4294967295ull},
                     {"max_concurrent_actors", 5},
                     {"request_lifespan", 60}}},
                   {"drain_on_version_upgrade", false}});
  ASSERT_EQ(ok.status, 200) << ok.body.dump();
  Answer listed = Call(te, "GET", "/runner-configs?namespace=default&runner_name=sls");
  const json& config = listed.body["runner_configs"]["sls"]["datacenters"]["default"];
  EXPECT_EQ(config["serverless"].value("max_concurrent_actors", 0u), 5u) << listed.body.dump();
  EXPECT_EQ(config["serverless"].value("max_runners", 0ull), 4294967295ull);
  EXPECT_EQ(config["serverless"].value("request_lifespan", 0u), 60u);
  EXPECT_EQ(config.value("drain_on_version_upgrade", true), false);
}

TEST(RestConformance, SleepAndRescheduleTakeAnEmptyObjectAndDestroyedActorsAreNotFound) {
  TestEngine te;
  Answer created =
      Call(te, "POST", "/actors?namespace=default", json{{"name", "s"}, {"key", "k"}}.dump());
  ASSERT_EQ(created.status, 200) << created.body.dump();
  const std::string id = created.body["actor"].value("actor_id", "");
  for (const char* verb : {"sleep", "reschedule"}) {
    const std::string target = "/actors/" + id + "/" + verb + "?namespace=default";
    for (const char* body : {R"({"force":true})", "[]", "garbage"}) {
      Answer a = Call(te, "POST", target, body);
      EXPECT_EQ(a.status, 400) << verb << " " << body << ": " << a.body.dump();
      EXPECT_EQ(Code(a), "api.bad_request") << verb << " " << body;
    }
  }
  Answer slept = Call(te, "POST", "/actors/" + id + "/sleep?namespace=default", "{}");
  EXPECT_EQ(slept.status, 200) << slept.body.dump();

  Answer destroyed = Call(te, "DELETE", "/actors/" + id + "?namespace=default");
  ASSERT_EQ(destroyed.status, 200) << destroyed.body.dump();
  EXPECT_EQ(destroyed.body, json::object());
  // Already destroyed: 404 actor.not_found for DELETE (not a second success) and the rest.
  const std::pair<const char*, std::string> after[] = {
      {"DELETE", "/actors/" + id},
      {"GET", "/actors/" + id},
      {"POST", "/actors/" + id + "/sleep"},
      {"POST", "/actors/" + id + "/reschedule"},
      {"GET", "/actors/" + id + "/kv/keys/AQ=="},
  };
  for (const auto& [method, path] : after) {
    Answer a = Call(te, method, path + "?namespace=default", method[0] == 'P' ? "{}" : "");
    EXPECT_EQ(a.status, 404) << method << " " << path << ": " << a.body.dump();
    EXPECT_EQ(Code(a), "actor.not_found") << method << " " << path;
  }
  // The record is still listed with include_destroyed, with its destroy_ts.
  Answer listed =
      Call(te, "GET", "/actors?namespace=default&actor_ids=" + id + "&include_destroyed=true");
  ASSERT_EQ(listed.body["actors"].size(), 1u) << listed.body.dump();
  EXPECT_TRUE(listed.body["actors"][0].contains("destroy_ts")) << listed.body.dump();
}

// actors.md §6.2: a duplicate key fails with `actor.duplicate_key` whose metadata names the
// key and the actor that owns it.
TEST(RestConformance, DuplicateKeyMetadataNamesTheExistingActor) {
  TestEngine te;
  const std::string body = json{{"name", "dup"}, {"key", "a/b"}}.dump();
  Answer first = Call(te, "POST", "/actors?namespace=default", body);
  ASSERT_EQ(first.status, 200) << first.body.dump();
  Answer second = Call(te, "POST", "/actors?namespace=default", body);
  EXPECT_EQ(second.status, 400) << second.body.dump();
  EXPECT_EQ(Code(second), "actor.duplicate_key") << second.body.dump();
  EXPECT_EQ(second.body["metadata"],
            (json{{"key", "a/b"}, {"existing_actor_id", first.body["actor"]["actor_id"]}}))
      << second.body.dump();
  // get-or-create answers the existing actor instead, and says it did not create it.
  Answer got = Call(te, "PUT", "/actors?namespace=default", body);
  ASSERT_EQ(got.status, 200) << got.body.dump();
  EXPECT_EQ(got.body["actor"]["actor_id"], first.body["actor"]["actor_id"]);
  EXPECT_EQ(got.body.value("created", true), false) << got.body.dump();
}

}  // namespace
}  // namespace keel::testing
