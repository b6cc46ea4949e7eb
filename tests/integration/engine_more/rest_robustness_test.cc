// The REST API under bad input: wrong JSON types, unknown fields and garbage bodies get a
// structured 400 and the engine keeps serving (a JSON accessor that throws must never take
// the process down); create refuses input and keys the actor could not live with; list
// queries validate their parameters; the admin token's auth scheme is case-insensitive.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "integration/engine_more/rest_call.h"
#include "net/client.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;

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

// A pool name that is not UTF-8 could not be rendered in the listing's JSON: PUT refuses it,
// and a stored one (planted below the API, as an older engine could have stored it) is
// shown with U+FFFD instead of failing the listing.
TEST(RestValidation, PoolNamesMustBeUtf8AndListingSurvivesAStoredOne) {
  TestEngine te;
  const std::string body = R"({"datacenters":{"default":{"normal":{}}}})";
  Answer put = Call(te, "PUT", "/runner-configs/%FF?namespace=default", body);
  EXPECT_EQ(put.status, 400) << put.body.dump();
  EXPECT_EQ(put.body.value("group", "") + "." + put.body.value("code", ""), "runner_config.invalid")
      << put.body.dump();
  Answer list = Call(te, "GET", "/runner-configs?namespace=default", "");
  ASSERT_EQ(list.status, 200) << list.body.dump();
  EXPECT_FALSE(list.body["runner_configs"].contains("\xEF\xBF\xBD"));

  auto ns = te.engine().catalog().FindNamespace("default");
  ASSERT_TRUE(ns.has_value());
  auto planted = te.engine().catalog().PutPool(ns->id, "bad\xFF", {});
  ASSERT_TRUE(planted.has_value()) << planted.error().ToString();
  Answer after = Call(te, "GET", "/runner-configs?namespace=default", "");
  ASSERT_EQ(after.status, 200) << after.body.dump();
  EXPECT_TRUE(after.body["runner_configs"].contains("bad\xEF\xBF\xBD")) << after.body.dump();
  EXPECT_TRUE(after.body["runner_configs"].contains("default")) << after.body.dump();
  Answer deleted = Call(te, "DELETE", "/runner-configs/bad%FF?namespace=default", "");
  EXPECT_EQ(deleted.status, 200) << deleted.body.dump();
}

// Standard base64 of `bytes` zero bytes.
std::string Base64(size_t bytes) {
  std::string out(bytes / 3 * 4, 'A');
  if (bytes % 3 == 1) out += "AA==";
  if (bytes % 3 == 2) out += "AAA=";
  return out;
}

// The runtime keeps the input inside the actor's record (KV [1], max 128 KiB per value), so
// an input that leaves no room in it would brick the actor: create refuses it up front.
TEST(RestValidation, CreateRefusesInputTheActorCouldNotPersist) {
  TestEngine te;
  for (const char* method : {"POST", "PUT"}) {
    nlohmann::json body{
        {"name", "big"}, {"key", std::string(method) + "-200k"}, {"input", Base64(200000)}};
    Answer a = Call(te, method, "/actors?namespace=default", body.dump());
    EXPECT_EQ(a.status, 400) << method << " " << a.body.dump();
    EXPECT_EQ(Code(a), "actor.input_too_large") << method;
  }
  // The limit is 64 KiB: up to it is accepted, one byte more is not.
  nlohmann::json at{{"name", "big"}, {"key", "at"}, {"input", Base64(64 << 10)}};
  Answer ok = Call(te, "POST", "/actors?namespace=default", at.dump());
  EXPECT_EQ(ok.status, 200) << ok.body.dump();
  nlohmann::json over{{"name", "big"}, {"key", "over"}, {"input", Base64((64 << 10) + 1)}};
  Answer refused = Call(te, "POST", "/actors?namespace=default", over.dump());
  EXPECT_EQ(Code(refused), "actor.input_too_large") << refused.body.dump();
}

// Keys are validated in their serialised form (actors.md §4.1), by the parser the engine
// and clients share.
TEST(RestValidation, CreateRefusesKeysThatAreNotSerialisedKeys) {
  TestEngine te;
  const std::pair<std::string, std::string> cases[] = {
      {"", "actor.empty_key"},                          // the empty serialised string
      {"bad\\", "actor.invalid_key"},                   // a lone trailing backslash
      {"a\\x", "actor.invalid_key"},                    // an escape other than \\, \/, \0
      {"a//b", "actor.invalid_key"},                    // an empty component not written \0
      {"a/", "actor.invalid_key"},                      // the same, at the end
      {std::string(1025, 'k'), "actor.key_too_large"},  // over 1024 bytes
  };
  for (const char* method : {"POST", "PUT"}) {
    for (const auto& [key, code] : cases) {
      nlohmann::json body{{"name", "keyed"}, {"key", key}};
      Answer a = Call(te, method, "/actors?namespace=default", body.dump());
      EXPECT_EQ(a.status, 400) << method << " key " << key << ": " << a.body.dump();
      EXPECT_EQ(Code(a), code) << method << " key " << key;
    }
  }
  for (const std::string& key :
       std::vector<std::string>{"/", "a\\/b/\\0", "\\\\", std::string(1024, 'k')}) {
    nlohmann::json body{{"name", "keyed"}, {"key", key}};
    Answer a = Call(te, "POST", "/actors?namespace=default", body.dump());
    EXPECT_EQ(a.status, 200) << key << ": " << a.body.dump();
  }
  Answer listed = Call(te, "GET", "/actors?namespace=default&name=keyed&key=bad%5C", "");
  EXPECT_EQ(Code(listed), "actor.invalid_key") << listed.body.dump();
}

// A destroyed actor releases its key (§6.2), so the key index no longer finds it; with
// include_destroyed the key filter still lists it, next to the key's live actor (§6.9).
TEST(RestValidation, KeyFilterHonoursIncludeDestroyed) {
  TestEngine te;
  auto create = [&](const std::string& key) {
    Answer a = Call(te, "POST", "/actors?namespace=default",
                    nlohmann::json{{"name", "counter"}, {"key", key}}.dump());
    EXPECT_EQ(a.status, 200) << a.body.dump();
    return a.body["actor"].value("actor_id", "");
  };
  auto destroy = [&](const std::string& id) {
    Answer a = Call(te, "DELETE", "/actors/" + id + "?namespace=default", "");
    EXPECT_EQ(a.status, 200) << a.body.dump();
  };
  auto ids = [&](const std::string& query) {
    Answer a = Call(te, "GET", "/actors?namespace=default&name=counter&" + query, "");
    EXPECT_EQ(a.status, 200) << query << ": " << a.body.dump();
    std::vector<std::string> out;
    for (const auto& actor : a.body["actors"]) out.push_back(actor.value("actor_id", ""));
    return out;
  };
  using Ids = std::vector<std::string>;
  // Only a destroyed actor has the key.
  const std::string gone = create("only-destroyed");
  destroy(gone);
  EXPECT_EQ(ids("key=only-destroyed"), Ids{});
  EXPECT_EQ(ids("key=only-destroyed&include_destroyed=true"), Ids{gone});
  // A destroyed actor and the live one that took its key afterwards, oldest first.
  const std::string old = create("x");
  destroy(old);
  const std::string live = create("x");
  create("other");
  EXPECT_EQ(ids("key=x"), Ids{live});
  EXPECT_EQ(ids("key=x&include_destroyed=false"), Ids{live});
  EXPECT_EQ(ids("key=x&include_destroyed=true"), (Ids{old, live}));
  // Pages through the key's actors with the cursor.
  Answer first = Call(
      te, "GET", "/actors?namespace=default&name=counter&key=x&include_destroyed=true&limit=1", "");
  ASSERT_EQ(first.body["actors"].size(), 1u) << first.body.dump();
  EXPECT_EQ(first.body["actors"][0].value("actor_id", ""), old);
  ASSERT_TRUE(first.body["pagination"]["cursor"].is_string()) << first.body.dump();
  const std::string cursor = first.body["pagination"]["cursor"].get<std::string>();
  EXPECT_EQ(ids("key=x&include_destroyed=true&limit=1&cursor=" + cursor), Ids{live});
}

TEST(RestValidation, ListAndKvQueriesRejectInvalidValues) {
  TestEngine te;
  Answer created = Call(te, "POST", "/actors?namespace=default",
                        nlohmann::json{{"name", "q"}, {"key", "k"}}.dump());
  ASSERT_EQ(created.status, 200) << created.body.dump();
  const std::string id = created.body["actor"].value("actor_id", "");
  for (const std::string& query : std::vector<std::string>{
           "name=q&limit=0", "name=q&limit=-1", "name=q&limit=lots", "name=q&limit=1.5",
           "name=q&limit=", "name=q&limit=99999999999999999999999",
           "name=q&include_destroyed=maybe", "name=q&include_destroyed=", "actor_ids=bad",
           "actor_ids=" + id + ",bad", "actor_id=bad"}) {
    Answer a = Call(te, "GET", "/actors?namespace=default&" + query, "");
    EXPECT_EQ(a.status, 400) << query << ": " << a.body.dump();
    EXPECT_EQ(Code(a), "api.bad_request") << query;
  }
  for (const std::string& query :
       std::vector<std::string>{"name=q&limit=1", "name=q&limit=1000", "name=q&limit=5000",
                                "name=q&include_destroyed=true", "name=q&include_destroyed=false",
                                "actor_ids=" + id, "actor_id=" + id}) {
    Answer a = Call(te, "GET", "/actors?namespace=default&" + query, "");
    EXPECT_EQ(a.status, 200) << query << ": " << a.body.dump();
    EXPECT_EQ(a.body["actors"].size(), 1u) << query;
  }
  // The KV key in the path is standard base64 (padded); anything else is refused, not read as
  // raw bytes.
  for (const char* key : {"AQ", "A", "%2525", "not-base64!"}) {
    Answer a = Call(te, "GET", "/actors/" + id + "/kv/keys/" + key + "?namespace=default", "");
    EXPECT_EQ(a.status, 400) << key << ": " << a.body.dump();
    EXPECT_EQ(Code(a), "api.bad_request") << key;
  }
  Answer missing = Call(te, "GET", "/actors/" + id + "/kv/keys/AQ==?namespace=default", "");
  EXPECT_EQ(Code(missing), "actor.kv_key_not_found") << missing.body.dump();
}

// RFC 7235 §2.1: the auth scheme is case-insensitive; the token is compared exactly.
TEST(RestValidation, AdminTokenSchemeIsCaseInsensitive) {
  engine::EngineOptions options;
  options.admin_token = "secret";
  TestEngine te(options);
  auto status = [&](std::optional<std::string> auth) {
    net::Headers headers;
    if (auth.has_value()) headers.emplace_back("authorization", *auth);
    return Call(te, "GET", "/namespaces", "", std::move(headers)).status;
  };
  for (const char* ok :
       {"Bearer secret", "bearer secret", "BEARER secret", "bEaReR secret", "Bearer  secret"}) {
    EXPECT_EQ(status(ok), 200) << ok;
  }
  EXPECT_EQ(status(std::nullopt), 401);
  for (const char* bad : {"Bearer Secret", "bearer wrong", "Basic secret", "Bearersecret", "secret",
                          "Bearer", "Bearer secret extra"}) {
    EXPECT_EQ(status(bad), 403) << bad;
  }
}

}  // namespace
}  // namespace keel::testing
