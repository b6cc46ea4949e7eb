// The REST API against actors.md §7: every listing is paged by `limit` and `cursor` (none
// may answer an unbounded list, and a cursor is given only when more items follow), runner
// configs refuse unknown fields and out-of-range numbers instead of silently using
// defaults, the sleep/reschedule body is `{}`, a destroyed actor is `actor.not_found` for
// every per-actor route, GET /envoys answers the spec's envoy shape (stopped envoys listed
// with stop_ts, for a bounded time and number), names have length limits, and
// GET /health/fanout, /runners and /runners/names are served.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "integration/engine_more/rest_call.h"
#include "net/client.h"
#include "support/fake_envoy.h"
#include "support/temp_dir.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

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
    // A cursor is given only when more items follow: no page, the last included, is empty.
    ASSERT_EQ(got.size(), 1u) << target << ": " << a.body.dump();
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

// Ids are drawn at random from the engine's seed, so a run that repeats an earlier run's
// seed on the same store draws that run's ids again. Those are taken and creation draws
// on: every namespace and actor, a destroyed one included, keeps its id and its record.
TEST(RestConformance, ARunWithAnEarlierRunsSeedTakesNoneOfItsIds) {
  TempDir dir;
  engine::EngineOptions options;
  options.seed = 7;
  TestEngine te(options, dir.path());
  auto create_namespace = [&](const std::string& name) {
    Answer a = Call(te, "POST", "/namespaces", json{{"name", name}}.dump());
    EXPECT_EQ(a.status, 200) << name << ": " << a.body.dump();
    return a.body["namespace"].value("namespace_id", "");
  };
  auto create_actor = [&](const std::string& key) {
    Answer a =
        Call(te, "POST", "/actors?namespace=default", json{{"name", "s"}, {"key", key}}.dump());
    EXPECT_EQ(a.status, 200) << key << ": " << a.body.dump();
    return a.body["actor"].value("actor_id", "");
  };
  const std::string one = create_namespace("one");
  const std::string kept = create_actor("kept");
  const std::string gone = create_actor("gone");
  ASSERT_EQ(Call(te, "DELETE", "/actors/" + gone + "?namespace=default").status, 200);

  te.Restart();  // the same seed again
  const std::string two = create_namespace("two");
  const std::string fresh = create_actor("fresh");
  Answer namespaces = Call(te, "GET", "/namespaces");
  std::set<std::string> ns_ids;
  for (const auto& ns : namespaces.body["namespaces"]) {
    ns_ids.insert(ns.value("namespace_id", ""));
  }
  EXPECT_EQ(ns_ids.size(), 3u) << namespaces.body.dump();  // default, one, two
  EXPECT_TRUE(ns_ids.count(one) == 1 && ns_ids.count(two) == 1) << namespaces.body.dump();

  EXPECT_NE(fresh, kept);
  EXPECT_NE(fresh, gone);
  Answer listed = Call(te, "GET", "/actors?namespace=default&name=s&include_destroyed=true");
  std::map<std::string, json> by_key;
  for (const auto& actor : listed.body["actors"]) by_key[actor.value("key", "")] = actor;
  ASSERT_EQ(by_key.size(), 3u) << listed.body.dump();
  EXPECT_EQ(by_key["kept"].value("actor_id", ""), kept);
  EXPECT_EQ(by_key["gone"].value("actor_id", ""), gone);
  EXPECT_TRUE(by_key["gone"].contains("destroy_ts")) << listed.body.dump();
  EXPECT_EQ(by_key["fresh"].value("actor_id", ""), fresh);
  EXPECT_FALSE(by_key["fresh"].contains("destroy_ts")) << listed.body.dump();
}

// GET /actors pages like the other listings; a page that is exactly full is the last one
// when nothing follows it (no cursor to an empty page).
TEST(RestConformance, ActorsArePagedWithoutACursorAfterTheLastItem) {
  TestEngine te;
  for (const char* key : {"k1", "k2", "k3"}) {
    Answer a =
        Call(te, "POST", "/actors?namespace=default", json{{"name", "paged"}, {"key", key}}.dump());
    ASSERT_EQ(a.status, 200) << a.body.dump();
  }
  auto ids = [](const json& body) {
    std::vector<std::string> out;
    for (const auto& a : body["actors"]) out.push_back(a.value("actor_id", ""));
    return out;
  };
  ExpectPagedListing(te, "/actors?namespace=default&name=paged", ids);
  Answer full = Call(te, "GET", "/actors?namespace=default&name=paged&limit=3");
  ASSERT_EQ(full.status, 200) << full.body.dump();
  EXPECT_EQ(full.body["actors"].size(), 3u) << full.body.dump();
  EXPECT_TRUE(full.body["pagination"]["cursor"].is_null()) << full.body.dump();
  Answer two = Call(te, "GET", "/actors?namespace=default&name=paged&limit=2");
  ASSERT_TRUE(two.body["pagination"]["cursor"].is_string()) << two.body.dump();
  Answer rest = Call(te, "GET",
                     "/actors?namespace=default&name=paged&limit=2&cursor=" +
                         two.body["pagination"]["cursor"].get<std::string>());
  EXPECT_EQ(rest.body["actors"].size(), 1u) << rest.body.dump();
  EXPECT_TRUE(rest.body["pagination"]["cursor"].is_null()) << rest.body.dump();
}

// The envoy `key` as GET /envoys lists it (null when it is not listed).
json ListedEnvoy(TestEngine& te, const std::string& key) {
  Answer a = Call(te, "GET", "/envoys?namespace=default&envoy_key=" + key);
  if (a.status != 200 || !a.body.is_object()) return nullptr;
  for (const auto& e : a.body["envoys"]) {
    if (e.value("envoy_key", "") == key) return e;
  }
  return nullptr;
}

// Polls GET /envoys until `pred(listed envoy or null)` holds (the engine learns that a
// connection ended on its own schedule); fails the test after 5 s.
template <typename Pred>
json WaitListedEnvoy(TestEngine& te, const std::string& key, Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = ListedEnvoy(te, key);
    if (pred(last)) return last;
    std::this_thread::sleep_for(5ms);
  }
  ADD_FAILURE() << "envoy " << key << " never reached the state; last: " << last.dump();
  return last;
}

// actors.md §7 GET /envoys: {envoy_key, namespace_id, datacenter, pool_name, version, slots,
// create_ts, stop_ts?, last_ping_ts, last_connected_ts?, last_rtt, metadata?}; metadata is
// the envoy's ToRivetMetadata `metadata` (envoy-protocol.md §3.3); stop_ts is set once the
// envoy stops or goes, and cleared when it connects again.
TEST(RestConformance, EnvoysListTheSpecShape) {
  TestEngine te;
  FakeEnvoyOptions options;
  options.ws_url = te.ws_url();
  options.envoy_key = "shape-envoy";
  options.version = 7;
  auto fe = FakeEnvoy::ConnectAndInit(options);
  ASSERT_TRUE(fe.has_value()) << fe.error().ToString();
  envoy_proto::ToRivetMetadata meta;
  meta.metadata = R"({"rivetkit":{"version":"1.2.3"}})";
  ASSERT_TRUE((*fe)->Send(envoy_proto::ToRivet{meta}).has_value());
  // The metadata is dispatched before the KV request behind it, on the same read path.
  ASSERT_TRUE((*fe)->Sync().has_value());

  const json first = ListedEnvoy(te, "shape-envoy");
  ASSERT_TRUE(first.is_object()) << first.dump();
  std::set<std::string> fields;
  for (const auto& [k, _] : first.items()) fields.insert(k);
  EXPECT_EQ(fields, (std::set<std::string>{"envoy_key", "namespace_id", "datacenter", "pool_name",
                                           "version", "slots", "create_ts", "last_ping_ts",
                                           "last_connected_ts", "last_rtt", "metadata"}))
      << first.dump();
  Answer ns = Call(te, "GET", "/namespaces?name=default");
  EXPECT_EQ(first["namespace_id"], ns.body["namespaces"][0]["namespace_id"]) << first.dump();
  EXPECT_EQ(first["datacenter"], "default");
  EXPECT_EQ(first["pool_name"], "default");
  EXPECT_EQ(first["version"], 7);
  EXPECT_EQ(first["slots"], 0) << first.dump();
  EXPECT_GT(first["create_ts"].get<int64_t>(), 0);
  EXPECT_GE(first["last_connected_ts"].get<int64_t>(), first["create_ts"].get<int64_t>());
  EXPECT_GT(first["last_ping_ts"].get<int64_t>(), 0);
  EXPECT_TRUE(first["last_rtt"].is_number_unsigned()) << first.dump();
  EXPECT_EQ(first["metadata"], (json{{"rivetkit", {{"version", "1.2.3"}}}})) << first.dump();

  // `slots`: the actor instances placed on the envoy.
  Answer created = Call(te, "POST", "/actors?namespace=default", json{{"name", "slot"}}.dump());
  ASSERT_EQ(created.status, 200) << created.body.dump();
  const std::string id = created.body["actor"].value("actor_id", "");
  ASSERT_TRUE((*fe)->WaitCommand(id, 5s).has_value());
  EXPECT_EQ(ListedEnvoy(te, "shape-envoy")["slots"], 1);

  // A stopping envoy (ToRivetStopping) is listed with stop_ts, still connected.
  ASSERT_TRUE((*fe)->Send(envoy_proto::ToRivet{envoy_proto::ToRivetStopping{}}).has_value());
  ASSERT_TRUE((*fe)->Sync().has_value());
  const json stopping = ListedEnvoy(te, "shape-envoy");
  ASSERT_TRUE(stopping.contains("stop_ts")) << stopping.dump();
  EXPECT_GE(stopping["stop_ts"].get<int64_t>(), first["last_connected_ts"].get<int64_t>());

  // Connecting again (the same key evicts the old connection) clears stop_ts; create_ts is
  // the first connection's; the metadata stays the envoy's last until it sends another.
  auto again = FakeEnvoy::ConnectAndInit(options);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  const json back = WaitListedEnvoy(
      te, "shape-envoy", [](const json& e) { return e.is_object() && !e.contains("stop_ts"); });
  EXPECT_EQ(back["create_ts"], first["create_ts"]) << back.dump();
  EXPECT_GE(back["last_connected_ts"].get<int64_t>(), stopping["stop_ts"].get<int64_t>());
  EXPECT_EQ(back["metadata"], first["metadata"]) << back.dump();
  envoy_proto::ToRivetMetadata none;
  ASSERT_TRUE((*again)->Send(envoy_proto::ToRivet{none}).has_value());
  ASSERT_TRUE((*again)->Sync().has_value());
  EXPECT_FALSE(ListedEnvoy(te, "shape-envoy").contains("metadata"));

  // A disconnected envoy stays listed, with stop_ts.
  (*again)->Close();
  ASSERT_TRUE((*again)->WaitClosed(5s).has_value());
  const json gone = WaitListedEnvoy(
      te, "shape-envoy", [](const json& e) { return e.is_object() && e.contains("stop_ts"); });
  EXPECT_EQ(gone["create_ts"], first["create_ts"]) << gone.dump();
}

// Stopped envoys are not listed forever: at most max_stopped_envoys of them (the longest
// stopped forgotten first), each for at most stopped_envoy_retention_ms.
TEST(RestConformance, StoppedEnvoysAreForgottenBeyondTheirBound) {
  engine::EngineOptions bounded;
  bounded.max_stopped_envoys = 2;
  TestEngine te(bounded);
  auto connect_and_close = [&](const std::string& key) {
    FakeEnvoyOptions options;
    options.ws_url = te.ws_url();
    options.envoy_key = key;
    auto fe = FakeEnvoy::ConnectAndInit(options);
    ASSERT_TRUE(fe.has_value()) << fe.error().ToString();
    (*fe)->Close();
    ASSERT_TRUE((*fe)->WaitClosed(5s).has_value());
    WaitListedEnvoy(te, key, [](const json& e) { return e.is_object() && e.contains("stop_ts"); });
  };
  FakeEnvoyOptions live_options;
  live_options.ws_url = te.ws_url();
  live_options.envoy_key = "live-envoy";
  auto live = FakeEnvoy::ConnectAndInit(live_options);
  ASSERT_TRUE(live.has_value()) << live.error().ToString();
  for (const char* key : {"gone-1", "gone-2", "gone-3"}) {
    ASSERT_NO_FATAL_FAILURE(connect_and_close(key));
  }
  Answer listed = Call(te, "GET", "/envoys?namespace=default");
  std::vector<std::string> keys;
  for (const auto& e : listed.body["envoys"]) keys.push_back(e.value("envoy_key", ""));
  EXPECT_EQ(keys, (std::vector<std::string>{"gone-2", "gone-3", "live-envoy"}))
      << listed.body.dump();

  engine::EngineOptions brief;
  brief.stopped_envoy_retention_ms = 0;
  TestEngine te2(brief);
  FakeEnvoyOptions options;
  options.ws_url = te2.ws_url();
  options.envoy_key = "brief-envoy";
  auto fe = FakeEnvoy::ConnectAndInit(options);
  ASSERT_TRUE(fe.has_value()) << fe.error().ToString();
  ASSERT_TRUE((*fe)->Sync().has_value());
  ASSERT_TRUE(ListedEnvoy(te2, "brief-envoy").is_object());
  (*fe)->Close();
  ASSERT_TRUE((*fe)->WaitClosed(5s).has_value());
  EXPECT_TRUE(
      WaitListedEnvoy(te2, "brief-envoy", [](const json& e) { return e.is_null(); }).is_null());
}

// An envoy's durable record outlives an engine restart: the next engine lists it as
// stopped, with the create_ts it had, until it reconnects (keeping that create_ts) or is
// forgotten. Forgetting a stopped envoy deletes its record, so envoy keys that come and go
// (each serverless start has a new one) do not grow the store.
TEST(RestConformance, EnvoyRecordsSurviveARestartAndGoWhenForgotten) {
  TempDir dir("keel-envoy-records");
  engine::EngineOptions options;
  options.max_stopped_envoys = 1;
  TestEngine te(options, dir.path());
  auto connect = [&](const std::string& key) {
    FakeEnvoyOptions o;
    o.ws_url = te.ws_url();
    o.envoy_key = key;
    auto fe = FakeEnvoy::ConnectAndInit(o);
    EXPECT_TRUE(fe.has_value()) << fe.error().ToString();
    if (fe.has_value()) {
      EXPECT_TRUE((*fe)->Sync().has_value());
    }
    return fe.has_value() ? std::move(*fe) : nullptr;
  };
  auto close = [&](auto& fe, const std::string& key) {
    fe->Close();
    ASSERT_TRUE(fe->WaitClosed(5s).has_value());
    WaitListedEnvoy(te, key, [](const json& e) { return e.is_object() && e.contains("stop_ts"); });
  };
  // "z-first" stops first, so it is the one forgotten when "a-second" stops (at most one
  // stopped envoy is kept); the keys sort the other way, so a record left behind would be
  // the one a restart keeps.
  auto first = connect("z-first");
  ASSERT_NE(first, nullptr);
  ASSERT_NO_FATAL_FAILURE(close(first, "z-first"));
  auto second = connect("a-second");
  ASSERT_NE(second, nullptr);
  const json before = ListedEnvoy(te, "a-second");
  ASSERT_TRUE(before.is_object());
  ASSERT_NO_FATAL_FAILURE(close(second, "a-second"));
  EXPECT_TRUE(ListedEnvoy(te, "z-first").is_null());

  te.Restart();
  const json after = ListedEnvoy(te, "a-second");
  ASSERT_TRUE(after.is_object()) << "not listed after the restart";
  EXPECT_TRUE(after.contains("stop_ts")) << after.dump();
  EXPECT_EQ(after["create_ts"], before["create_ts"]) << after.dump();
  EXPECT_EQ(after["last_connected_ts"], before["last_connected_ts"]) << after.dump();
  EXPECT_TRUE(ListedEnvoy(te, "z-first").is_null()) << "a forgotten envoy's record came back";

  auto again = connect("a-second");
  ASSERT_NE(again, nullptr);
  const json back = ListedEnvoy(te, "a-second");
  ASSERT_TRUE(back.is_object());
  EXPECT_FALSE(back.contains("stop_ts")) << back.dump();
  EXPECT_EQ(back["create_ts"], before["create_ts"]) << back.dump();
  again->Close();
}

// Names the API stores have length limits, refused with a structured 400 and not stored:
// namespace names 1-64 bytes, display names up to 255, actor names up to 128 (REST create,
// get-or-create and the gateway's getOrCreate), pool names 1-128.
TEST(RestConformance, NamesOverTheirLimitAreRefused) {
  TestEngine te;
  const std::string long_ns(65, 'n');
  Answer ns = Call(te, "POST", "/namespaces", json{{"name", long_ns}}.dump());
  EXPECT_EQ(ns.status, 400) << ns.body.dump();
  EXPECT_EQ(Code(ns), "namespace.invalid_name") << ns.body.dump();
  Answer display =
      Call(te, "POST", "/namespaces",
           json{{"name", "long-display"}, {"display_name", std::string(256, 'd')}}.dump());
  EXPECT_EQ(display.status, 400) << display.body.dump();
  EXPECT_EQ(Code(display), "namespace.invalid_display_name") << display.body.dump();
  Answer listed = Call(te, "GET", "/namespaces?name=long-display");
  EXPECT_TRUE(listed.body["namespaces"].empty()) << listed.body.dump();
  Answer fits =
      Call(te, "POST", "/namespaces",
           json{{"name", "long-display"}, {"display_name", std::string(255, 'd')}}.dump());
  EXPECT_EQ(fits.status, 200) << fits.body.dump();

  const std::string long_name(129, 'a');
  for (const char* method : {"POST", "PUT"}) {
    Answer a = Call(te, method, "/actors?namespace=default",
                    json{{"name", long_name}, {"key", "k"}}.dump());
    EXPECT_EQ(a.status, 400) << method << ": " << a.body.dump();
    EXPECT_EQ(Code(a), "actor.name_too_large") << method << ": " << a.body.dump();
  }
  Answer names = Call(te, "GET", "/actors/names?namespace=default");
  EXPECT_FALSE(names.body["names"].contains(long_name)) << names.body.dump();
  Answer query = Call(te, "GET", "/actors?namespace=default&name=" + long_name);
  EXPECT_EQ(Code(query), "actor.name_too_large") << query.body.dump();
  Answer gateway =
      Call(te, "POST",
           "/gateway/" + long_name +
               "/action/x?rvt-namespace=default&rvt-method=getOrCreate&rvt-pool=default",
           "{}");
  EXPECT_EQ(gateway.status, 400) << gateway.body.dump();
  EXPECT_EQ(Code(gateway), "actor.name_too_large") << gateway.body.dump();
  Answer fits_name =
      Call(te, "POST", "/actors?namespace=default", json{{"name", std::string(128, 'a')}}.dump());
  EXPECT_EQ(fits_name.status, 200) << fits_name.body.dump();

  const std::string long_pool(129, 'p');
  Answer pool = Call(te, "PUT", "/runner-configs/" + long_pool + "?namespace=default",
                     R"({"datacenters":{"default":{"normal":{}}}})");
  EXPECT_EQ(pool.status, 400) << pool.body.dump();
  EXPECT_EQ(Code(pool), "runner_config.invalid") << pool.body.dump();
  Answer pools = Call(te, "GET", "/runner-configs?namespace=default");
  EXPECT_FALSE(pools.body["runner_configs"].contains(long_pool)) << pools.body.dump();
}

// GET /health/fanout answers each datacenter's health (this engine is the only one);
// GET /runners and /runners/names (the legacy runner protocol) are empty listings, since
// only envoys connect to Keel, with the query checked as for the other listings.
TEST(RestConformance, HealthFanoutAndLegacyRunnerListings) {
  TestEngine te;
  Answer health = Call(te, "GET", "/health/fanout");
  ASSERT_EQ(health.status, 200) << health.body.dump();
  ASSERT_EQ(health.body["datacenters"].size(), 1u) << health.body.dump();
  const json& dc = health.body["datacenters"][0];
  Answer dcs = Call(te, "GET", "/datacenters");
  EXPECT_EQ(dc["datacenter_label"], dcs.body["datacenters"][0]["label"]) << health.body.dump();
  EXPECT_EQ(dc["name"], dcs.body["datacenters"][0]["name"]);
  EXPECT_EQ(dc["url"], dcs.body["datacenters"][0]["url"]);
  EXPECT_EQ(dc["status"], "ok");

  Answer runners = Call(te, "GET", "/runners?namespace=default");
  ASSERT_EQ(runners.status, 200) << runners.body.dump();
  EXPECT_EQ(runners.body,
            (json{{"runners", json::array()}, {"pagination", {{"cursor", nullptr}}}}));
  Answer names = Call(te, "GET", "/runners/names?namespace=default&limit=5");
  ASSERT_EQ(names.status, 200) << names.body.dump();
  EXPECT_EQ(names.body, (json{{"names", json::array()}, {"pagination", {{"cursor", nullptr}}}}));
  for (const char* path : {"/runners", "/runners/names"}) {
    Answer missing = Call(te, "GET", path);
    EXPECT_EQ(Code(missing), "api.bad_request") << path << ": " << missing.body.dump();
    Answer unknown = Call(te, "GET", std::string(path) + "?namespace=nope");
    EXPECT_EQ(Code(unknown), "actor.namespace_not_found") << path << ": " << unknown.body.dump();
    Answer bad_limit = Call(te, "GET", std::string(path) + "?namespace=default&limit=0");
    EXPECT_EQ(Code(bad_limit), "api.bad_request") << path << ": " << bad_limit.body.dump();
  }
}

}  // namespace
}  // namespace keel::testing
