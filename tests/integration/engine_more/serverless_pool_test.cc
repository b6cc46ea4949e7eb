// Serverless pools' metadata (actors.md §6.11, §6.12, §7): the engine polls GET
// {url}/metadata of every serverless pool, records the envoy protocol version and actor
// names, keeps a runner-pool error until enough polls in a row succeed, and answers the
// health check and refresh-metadata routes; a failed serverless start (actors.md §6.10 step
// 3) records a runner-pool error too, which fails gateway requests waiting for an actor of
// the pool (§5.6). The serverless runtime is a small HTTP server in the test whose /metadata
// and /start answers the test sets; polls are driven by refresh-metadata (which answers once
// the poll is recorded) rather than by waiting for the interval.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/core/catalog.h"
#include "engine/core/pool_metadata.h"
#include "integration/engine_more/rest_call.h"
#include "net/client.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"
#include "support/fake_envoy.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// A serverless runtime's HTTP surface, as far as metadata and starts go: GET
// /api/rivet/metadata answers what the test set (or nothing at all, `hang`); POST
// /api/rivet/start answers what the test set, where 200 text/event-stream is held open as a
// stream with one ping; everything else is 404.
class FakeRuntime {
 public:
  FakeRuntime() : io_(1) {
    auto server = net::HttpServer::Start(
        io_, net::ServerOptions{},
        [this](std::shared_ptr<net::HttpExchange> ex) { Handle(std::move(ex)); });
    if (!server.has_value()) throw std::runtime_error(server.error().ToString());
    server_ = std::move(*server);
  }
  ~FakeRuntime() {
    {
      std::lock_guard lock(mu_);
      hung_.clear();
      streams_.clear();
    }
    server_.reset();
    io_.Stop();  // no OnPeerGone callback runs once the members are gone
  }

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + "/api/rivet";
  }
  void Answer(int status, std::string body) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = std::move(body);
    hang_ = false;
  }
  void AnswerJson(const json& body) { Answer(200, body.dump()); }
  // `hold`: a 200 text/event-stream answer is a stream held open (after one ping), else a
  // complete response with `body`. `hold_refused`: any other answer is held open too, after
  // `body` (an error body that never ends).
  void AnswerStart(int status, std::string content_type, std::string body, bool hold = true,
                   bool hold_refused = false) {
    std::lock_guard lock(mu_);
    start_hold_ = hold;
    start_hold_refused_ = hold_refused;
    start_status_ = status;
    start_type_ = std::move(content_type);
    start_body_ = std::move(body);
  }
  // Waits (bounded) until at least `n` held start answers lost their client (the engine
  // closed the request).
  bool WaitStreamsGone(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return streams_gone_ >= n; });
  }
  int streams_gone() const {
    std::lock_guard lock(mu_);
    return streams_gone_;
  }
  // Waits (bounded) until at least `n` start requests arrived; the generation the last one
  // starts (its command's checkpoint), 0 when it did not decode.
  std::optional<uint32_t> WaitStarts(int n) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, 10s, [&] { return starts_ >= n; })) return std::nullopt;
    return last_generation_;
  }
  void Hang() {
    std::lock_guard lock(mu_);
    hang_ = true;
  }
  int polls() const {
    std::lock_guard lock(mu_);
    return polls_;
  }
  net::Headers last_headers() const {
    std::lock_guard lock(mu_);
    return last_headers_;
  }
  // The keys the last start's preloaded KV was asked for (its name's preload plan).
  std::vector<Bytes> last_preload_keys() const {
    std::lock_guard lock(mu_);
    return last_preload_keys_;
  }
  // Writes `chunk` on the i-th held stream (in the order the starts arrived); `finish`
  // then ends it, as a runtime ends its request.
  void WriteOnStream(size_t i, std::string chunk, bool finish = false) {
    std::shared_ptr<net::HttpExchange> ex;
    {
      std::lock_guard lock(mu_);
      if (i >= streams_.size()) return;
      ex = streams_[i];
    }
    ex->WriteChunk(std::move(chunk));
    if (finish) ex->FinishStream();
  }
  // Waits (bounded) until at least `n` metadata requests arrived.
  bool WaitPolls(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return polls_ >= n; });
  }

 private:
  void Handle(std::shared_ptr<net::HttpExchange> ex) {
    const net::HttpRequest& req = ex->request();
    if (req.method == "POST" && req.target == "/api/rivet/start") {
      HandleStart(std::move(ex));
      return;
    }
    if (req.method != "GET" || req.target != "/api/rivet/metadata") {
      ex->Respond(net::HttpResponse{404, {}, "Not Found (RivetKit)"});
      return;
    }
    std::unique_lock lock(mu_);
    ++polls_;
    last_headers_ = req.headers;
    cv_.notify_all();
    if (hang_) {
      hung_.push_back(std::move(ex));  // never answered
      return;
    }
    net::HttpResponse r{status_, {{"content-type", "application/json"}}, body_};
    lock.unlock();
    ex->Respond(std::move(r));
  }

  void HandleStart(std::shared_ptr<net::HttpExchange> ex) {
    const std::string& body = ex->request().body;
    uint32_t generation = 0;
    std::vector<Bytes> preload_keys;
    auto framed = protocol::envoy::DecodeToEnvoyFramed(
        ByteView(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
    if (framed.has_value()) {
      if (const auto* cmds = framed->value.get_if<protocol::envoy::latest::ToEnvoyCommands>();
          cmds != nullptr && !cmds->value.empty()) {
        generation = cmds->value[0].checkpoint.generation;
        const auto* start = cmds->value[0].inner.get_if<envoy_proto::CommandStartActor>();
        if (start != nullptr && start->preloaded_kv.has_value()) {
          preload_keys = start->preloaded_kv->requested_get_keys;
        }
      }
    }
    std::unique_lock lock(mu_);
    ++starts_;
    last_generation_ = generation;
    last_preload_keys_ = std::move(preload_keys);
    cv_.notify_all();
    const bool sse = start_status_ == 200 && start_type_ == "text/event-stream";
    if ((start_hold_ && sse) || (start_hold_refused_ && !sse)) {
      ex->OnPeerGone([this] {
        std::lock_guard lock(mu_);
        ++streams_gone_;
        cv_.notify_all();
      });
      ex->StartStream(start_status_, {{"content-type", start_type_}});
      ex->WriteChunk(sse ? std::string("event: ping\ndata:\n\n") : start_body_);
      streams_.push_back(std::move(ex));  // held open
      return;
    }
    net::HttpResponse r{start_status_, {{"content-type", start_type_}}, start_body_};
    lock.unlock();
    ex->Respond(std::move(r));
  }

  net::IoRuntime io_;
  std::unique_ptr<net::HttpServer> server_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int status_ = 200;
  std::string body_ = "{}";
  bool hang_ = false;
  int polls_ = 0;
  net::Headers last_headers_;
  std::vector<std::shared_ptr<net::HttpExchange>> hung_;
  bool start_hold_ = true;
  bool start_hold_refused_ = false;
  int streams_gone_ = 0;
  int start_status_ = 200;
  std::string start_type_ = "text/event-stream";
  std::string start_body_;
  int starts_ = 0;
  uint32_t last_generation_ = 0;
  std::vector<Bytes> last_preload_keys_;
  std::vector<std::shared_ptr<net::HttpExchange>> streams_;
};

json GoodMetadata(int protocol_version = 4) {
  return json{{"runtime", "rivetkit"},
              {"version", "1.2.3"},
              {"envoyProtocolVersion", protocol_version},
              // rivetkit's listing shape and Keel's runtime's (the metadata itself).
              {"actorNames",
               {{"counter", {{"metadata", {{"icon", "c"}}}}},
                {"plain", {{"name", "Plain"}}},
                {std::string(129, 'n'), json::object()}}},
              {"envoy", {{"kind", {{"serverless", json::object()}}}, {"version", 7}}}};
}

engine::EngineOptions Options() {
  engine::EngineOptions o;
  o.metadata_fetch_timeout_ms = 300;  // the hanging runtime's check ends soon
  return o;
}

// `serverless` members beyond the url; the interval keeps the timer out of the tests.
json ServerlessConfig(const std::string& url, json extra = json::object()) {
  json s{{"url", url}, {"metadata_poll_interval", 600000}};
  for (auto& [k, v] : extra.items()) s[k] = v;
  return json{{"datacenters", {{"default", {{"serverless", s}}}}}};
}

Answer PutPool(TestEngine& te, const std::string& pool, const json& body) {
  return Call(te, "PUT", "/runner-configs/" + pool + "?namespace=default", body);
}

json PoolConfig(TestEngine& te, const std::string& pool) {
  Answer a = Call(te, "GET", "/runner-configs?namespace=default&runner_name=" + pool);
  if (a.status != 200) return nullptr;
  return a.body["runner_configs"][pool]["datacenters"]["default"];
}

Answer Refresh(TestEngine& te, const std::string& pool, const json& body = json::object()) {
  return Call(te, "POST", "/runner-configs/" + pool + "/refresh-metadata?namespace=default", body);
}

Answer HealthCheck(TestEngine& te, const json& body) {
  return Call(te, "POST", "/runner-configs/serverless-health-check?namespace=default", body);
}

TEST(ServerlessPool, PollRecordsProtocolVersionActorNamesAndSendsTheHeaders) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata(3));
  TestEngine te(Options());
  Answer put =
      PutPool(te, "sls", ServerlessConfig(runtime.url(), {{"headers", {{"x-token", "t1"}}}}));
  ASSERT_EQ(put.status, 200) << put.body.dump();
  EXPECT_EQ(put.body["endpoint_config_changed"], true);
  // A new endpoint is polled at once (no refresh asked for).
  ASSERT_TRUE(runtime.WaitPolls(1));
  EXPECT_EQ(net::FindHeader(runtime.last_headers(), "x-token"), "t1");
  // refresh-metadata answers once its poll is recorded.
  Answer refreshed = Refresh(te, "sls");
  ASSERT_EQ(refreshed.status, 200) << refreshed.body.dump();
  EXPECT_EQ(refreshed.body, json::object());
  json config = PoolConfig(te, "sls");
  EXPECT_EQ(config["protocol_version"], 3) << config.dump();
  EXPECT_TRUE(config["runner_pool_error"].is_null()) << config.dump();

  Answer names = Call(te, "GET", "/actors/names?namespace=default");
  ASSERT_EQ(names.status, 200) << names.body.dump();
  EXPECT_EQ(names.body["names"]["counter"]["metadata"], (json{{"icon", "c"}})) << names.body.dump();
  EXPECT_EQ(names.body["names"]["plain"]["metadata"], (json{{"name", "Plain"}}))
      << names.body.dump();
  EXPECT_FALSE(names.body["names"].contains(std::string(129, 'n'))) << "over 128 bytes";
}

TEST(ServerlessPool, PollsRepeatAtTheIntervalAndStopWhenThePoolGoes) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata());
  engine::EngineOptions o = Options();
  o.min_metadata_poll_interval_ms = 20;
  TestEngine te(o);
  ASSERT_EQ(
      PutPool(te, "sls", ServerlessConfig(runtime.url(), {{"metadata_poll_interval", 20}})).status,
      200);
  // Without any refresh, the timer polls again and again.
  ASSERT_TRUE(runtime.WaitPolls(3));
  auto ns = te.engine().catalog().FindNamespace("default");
  ASSERT_TRUE(ns.has_value());
  EXPECT_TRUE(te.engine().pool_metadata().View(ns->id, "sls").last.has_value());
  // Made normal: its polling state (and timer) is gone, refresh-metadata refuses it.
  Answer normal =
      PutPool(te, "sls", json{{"datacenters", {{"default", {{"normal", json::object()}}}}}});
  ASSERT_EQ(normal.status, 200) << normal.body.dump();
  EXPECT_EQ(normal.body["endpoint_config_changed"], false);
  EXPECT_FALSE(te.engine().pool_metadata().View(ns->id, "sls").last.has_value());
  EXPECT_EQ(Code(Refresh(te, "sls")), "runner_config.not_found");
  // Serverless again, then deleted.
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  EXPECT_TRUE(te.engine().pool_metadata().View(ns->id, "sls").last.has_value());
  ASSERT_EQ(Call(te, "DELETE", "/runner-configs/sls?namespace=default").status, 200);
  EXPECT_FALSE(te.engine().pool_metadata().View(ns->id, "sls").last.has_value());
  EXPECT_EQ(Code(Refresh(te, "sls")), "runner_config.not_found");
}

TEST(ServerlessPool, BadAnswerSetsTheRunnerPoolErrorUntilThreeSuccessesInARow) {
  FakeRuntime runtime;
  runtime.Answer(500, "boom");
  TestEngine te(Options());
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  json config = PoolConfig(te, "sls");
  EXPECT_EQ(config["runner_pool_error"],
            (json{{"non_success_status", {{"status_code", 500}, {"body", "boom"}}}}))
      << config.dump();
  EXPECT_TRUE(config["protocol_version"].is_null()) << config.dump();

  runtime.AnswerJson(GoodMetadata());
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  config = PoolConfig(te, "sls");
  EXPECT_FALSE(config["runner_pool_error"].is_null()) << "two successes do not clear it";
  EXPECT_EQ(config["protocol_version"], 4) << "but what they learnt is recorded";
  // A failure in between starts the count again.
  runtime.AnswerJson(json{{"runtime", "other"}, {"version", "1"}});
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  config = PoolConfig(te, "sls");
  ASSERT_TRUE(config["runner_pool_error"].contains("invalid_response_schema")) << config.dump();
  runtime.AnswerJson(GoodMetadata());
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Refresh(te, "sls").status, 200);
  EXPECT_FALSE(PoolConfig(te, "sls")["runner_pool_error"].is_null());
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  config = PoolConfig(te, "sls");
  EXPECT_TRUE(config["runner_pool_error"].is_null()) << config.dump();
}

TEST(ServerlessPool, ChangedEndpointClearsTheErrorAndIsPolledAtOnce) {
  FakeRuntime bad;
  bad.Answer(503, "down");
  FakeRuntime good;
  good.AnswerJson(GoodMetadata(2));
  TestEngine te(Options());
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(bad.url())).status, 200);
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  ASSERT_FALSE(PoolConfig(te, "sls")["runner_pool_error"].is_null());
  Answer moved = PutPool(te, "sls", ServerlessConfig(good.url()));
  EXPECT_EQ(moved.body["endpoint_config_changed"], true) << moved.body.dump();
  EXPECT_TRUE(PoolConfig(te, "sls")["runner_pool_error"].is_null())
      << "a new endpoint starts clean";
  ASSERT_TRUE(good.WaitPolls(1)) << "the new endpoint is polled without a refresh";
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  EXPECT_EQ(PoolConfig(te, "sls")["protocol_version"], 2);
}

TEST(ServerlessPool, EndpointConfigChangedOnlyForANewOrChangedServerlessEndpoint) {
  TestEngine te(Options());
  const std::string url = "http://127.0.0.1:9/api";
  const json normal{{"datacenters", {{"default", {{"normal", json::object()}}}}}};
  auto changed = [&](const json& body) {
    Answer a = PutPool(te, "p", body);
    EXPECT_EQ(a.status, 200) << a.body.dump();
    return a.body.value("endpoint_config_changed", true);
  };
  EXPECT_FALSE(changed(normal)) << "a new normal pool has no endpoint";
  EXPECT_FALSE(changed(normal));
  EXPECT_TRUE(changed(ServerlessConfig(url))) << "normal made serverless";
  EXPECT_FALSE(changed(ServerlessConfig(url))) << "the same endpoint";
  EXPECT_FALSE(changed(ServerlessConfig(url, {{"max_runners", 5}}))) << "not an endpoint field";
  EXPECT_TRUE(changed(ServerlessConfig(url, {{"headers", {{"a", "1"}}}}))) << "headers added";
  EXPECT_FALSE(changed(ServerlessConfig(url, {{"headers", {{"a", "1"}}}})));
  EXPECT_TRUE(changed(ServerlessConfig(url, {{"headers", {{"a", "2"}}}}))) << "header changed";
  EXPECT_TRUE(changed(ServerlessConfig(url + "2", {{"headers", {{"a", "2"}}}}))) << "url changed";
  EXPECT_FALSE(changed(normal)) << "serverless made normal";
  EXPECT_TRUE(changed(ServerlessConfig(url)));
  // The datacenter omitted: the pool is deleted (no endpoint added).
  EXPECT_FALSE(changed(json{{"datacenters", json::object()}}));
  EXPECT_TRUE(PoolConfig(te, "p").is_null());
  EXPECT_TRUE(changed(ServerlessConfig(url))) << "a new serverless pool";
}

TEST(ServerlessPool, HealthCheckReportsSuccessOrWhatItFound) {
  FakeRuntime runtime;
  TestEngine te(Options());
  auto check = [&](const json& headers = json::object()) {
    Answer a = HealthCheck(te, json{{"url", runtime.url()}, {"headers", headers}});
    EXPECT_EQ(a.status, 200) << a.body.dump();
    return a.body;
  };
  runtime.AnswerJson(GoodMetadata(3));
  EXPECT_EQ(check({{"x-token", "abc"}}),
            (json{{"success",
                   {{"version", "1.2.3"}, {"envoy_protocol_version", 3}, {"envoy_version", 7}}}}));
  EXPECT_EQ(net::FindHeader(runtime.last_headers(), "x-token"), "abc");
  // Keel's runtime answers with only the required fields too.
  runtime.AnswerJson(json{{"runtime", "rivetkit"}, {"version", "0.1"}});
  EXPECT_EQ(check(), (json{{"success", {{"version", "0.1"}}}}));

  runtime.Answer(404, std::string(2000, 'x'));
  json failure = check();
  ASSERT_TRUE(failure.contains("failure")) << failure.dump();
  const json& status = failure["failure"]["error"]["non_success_status"];
  EXPECT_EQ(status["status_code"], 404) << failure.dump();
  EXPECT_EQ(status["body"], std::string(engine::kBodyExcerptBytes, 'x')) << "the body is cut";

  runtime.Answer(200, "not json");
  EXPECT_EQ(check(),
            (json{{"failure", {{"error", {{"invalid_response_json", {{"body", "not json"}}}}}}}}));

  runtime.AnswerJson(json{{"runtime", "keel"}, {"version", "1"}});
  EXPECT_TRUE(check()["failure"]["error"].contains("invalid_response_schema"));
  runtime.AnswerJson(json{{"runtime", "rivetkit"}, {"version", ""}});
  EXPECT_TRUE(check()["failure"]["error"].contains("invalid_response_schema"));
  runtime.AnswerJson(json{{"runtime", "rivetkit"}});
  EXPECT_TRUE(check()["failure"]["error"].contains("invalid_response_schema"));

  for (int version : {1, 5}) {
    runtime.AnswerJson(GoodMetadata(version));
    EXPECT_EQ(
        check()["failure"]["error"],
        (json{{"unsupported_protocol_version", {{"version", version}, {"min", 2}, {"max", 4}}}}));
  }

  runtime.Hang();
  EXPECT_EQ(check()["failure"]["error"], (json{{"request_timed_out", {{"timeout_ms", 300}}}}));

  // Nothing listens there any more: the connection is refused.
  std::string closed_url;
  {
    FakeRuntime gone;
    closed_url = gone.url();
  }
  Answer refused = HealthCheck(te, json{{"url", closed_url}});
  EXPECT_TRUE(refused.body["failure"]["error"].contains("request_failed")) << refused.body.dump();
  Answer ftp = HealthCheck(te, json{{"url", "ftp://127.0.0.1/x"}});
  EXPECT_TRUE(ftp.body["failure"]["error"].contains("invalid_request")) << ftp.body.dump();

  EXPECT_EQ(Code(HealthCheck(te, json::object())), "api.bad_request");
  EXPECT_EQ(Code(HealthCheck(te, json{{"url", runtime.url()}, {"headers", "a: b"}})),
            "api.bad_request");
  EXPECT_EQ(Code(HealthCheck(te, json{{"url", runtime.url()}, {"other", 1}})), "api.bad_request");
  EXPECT_EQ(Code(Call(te, "POST", "/runner-configs/serverless-health-check?namespace=nope",
                      json{{"url", runtime.url()}})),
            "actor.namespace_not_found");
}

TEST(ServerlessPool, RefreshMetadataOfAPoolThatIsNotServerlessHereIsNotFound) {
  TestEngine te(Options());
  Answer unknown = Refresh(te, "nope");
  EXPECT_EQ(unknown.status, 400) << unknown.body.dump();
  EXPECT_EQ(Code(unknown), "runner_config.not_found") << unknown.body.dump();
  EXPECT_EQ(Code(Refresh(te, "default")), "runner_config.not_found") << "a normal pool";
  EXPECT_EQ(Code(Refresh(te, "default", json{{"x", 1}})), "api.bad_request");
  EXPECT_EQ(Code(Call(te, "POST", "/runner-configs/nope/refresh-metadata?namespace=nope",
                      json::object())),
            "actor.namespace_not_found");
}

}  // namespace
}  // namespace keel::testing

namespace keel::testing {
namespace {

std::string CreateActor(TestEngine& te, const std::string& pool, const std::string& key = "k") {
  Answer created = Call(te, "POST", "/actors?namespace=default",
                        json{{"name", "counter"}, {"key", key}, {"runner_name_selector", pool}});
  if (created.status != 200) return "";
  return created.body["actor"].value("actor_id", "");
}

// An envoy of pool "sls" (the runtime's envoy the serverless starts would connect).
Result<std::unique_ptr<FakeEnvoy>> ConnectPoolEnvoy(TestEngine& te) {
  FakeEnvoyOptions eo;
  eo.ws_url = te.ws_url();
  eo.pool_name = "sls";
  eo.envoy_key = "sls-envoy";
  return FakeEnvoy::ConnectAndInit(eo);
}

// A gateway request to the actor, with an Origin (the error answer carries CORS headers).
Result<net::HttpResponse> GatewayGet(TestEngine& te, const std::string& id) {
  net::HttpRequest req;
  req.method = "GET";
  req.headers = {{"origin", "https://app.test"}};
  return net::FetchSync(te.http_url() + "/gateway/" + id + "/hello", std::move(req), 30s);
}

// actors.md §6.10 step 3 and §5.6: a start the pool refuses (an error status, or 200 that is
// not an event stream), or whose event stream ends early or does not parse, becomes the pool's
// runner-pool error at once — not when the start threshold runs out — and a gateway request waiting
// for an actor of the pool fails with guard.actor_runner_failed (before its 10 s ready timeout: it
// would answer guard.actor_ready_timeout) carrying the error; the actor, backing off, shows it too.
TEST(ServerlessPool, RefusedStartSetsThePoolErrorAndFailsWaitingGatewayRequests) {
  struct Case {
    int status;
    std::string type;
    std::string body;
    json expected;
  };
  const std::vector<Case> cases = {
      {500, "text/plain", "start boom",
       json{{"serverless_http_error", {{"status_code", 500}, {"body", "start boom"}}}}},
      {200, "application/json; charset=utf-8", "{\"not\":\"sse\"}",
       json{{"serverless_http_error", {{"status_code", 200}, {"body", "{\"not\":\"sse\"}"}}}}},
      // An event stream that ends before the runtime's envoy took the actor (no `stopping`);
      // a field SSE does not know is ignored, as the format says.
      {200, "text/event-stream", ": hi\nevent: ping\nbogus: 1\ndata:\n\n",
       json{{"serverless_stream_ended_early", json::object()}}},
      {200, "text/event-stream", std::string("event: ping\ndata: a\0b\n\n", 23),
       json{{"serverless_invalid_sse_payload", {{"message", "an SSE line holds a NUL byte"}}}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected.dump());
    FakeRuntime runtime;
    runtime.AnswerJson(GoodMetadata());
    runtime.AnswerStart(c.status, c.type, c.body, /*hold=*/false);
    engine::EngineOptions o = Options();
    o.thresholds.serverless_base_retry_ms = 600000;  // no retry within the test
    TestEngine te(o);
    ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
    ASSERT_EQ(Refresh(te, "sls").status, 200);
    EXPECT_TRUE(PoolConfig(te, "sls")["runner_pool_error"].is_null());

    const std::string id = CreateActor(te, "sls");
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(runtime.WaitStarts(1).has_value());
    const json& expected = c.expected;

    auto r = GatewayGet(te, id);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    json body = json::parse(r->body, nullptr, false);
    EXPECT_EQ(r->status, 400) << r->body;  // the structured default (actors.md §5.9)
    EXPECT_EQ(body.value("group", ""), "guard") << r->body;
    EXPECT_EQ(body.value("code", ""), "actor_runner_failed") << r->body;
    EXPECT_EQ(body["metadata"]["actor_id"], id) << r->body;
    EXPECT_EQ(body["metadata"]["runner_pool_error"], expected) << r->body;
    EXPECT_EQ(net::FindHeader(r->headers, "content-type"), "application/json");
    EXPECT_EQ(net::FindHeader(r->headers, "access-control-allow-origin"), "https://app.test");

    json config = PoolConfig(te, "sls");
    EXPECT_EQ(config["runner_pool_error"], expected) << config.dump();
    Answer actor = Call(te, "GET", "/actors/" + id + "?namespace=default");
    ASSERT_EQ(actor.status, 200) << actor.body.dump();
    EXPECT_EQ(actor.body["actor"]["error"], (json{{"runner_pool_error", expected}}))
        << actor.body.dump();
    EXPECT_TRUE(actor.body["actor"].contains("reschedule_ts")) << "it backs off";
  }
}

// Neither the pool "sls" nor the actor `id` shows an error.
void ExpectNoPoolOrActorError(TestEngine& te, const std::string& id) {
  json config = PoolConfig(te, "sls");
  EXPECT_TRUE(config["runner_pool_error"].is_null()) << config.dump();
  Answer actor = Call(te, "GET", "/actors/" + id + "?namespace=default");
  EXPECT_FALSE(actor.body["actor"].contains("error")) << actor.body.dump();
}

// The error stays until runner_pool_error_clear_successes successes in a row, and a start
// the runtime's envoy took counts as one: here one is enough.
TEST(ServerlessPool, StartThatTheEnvoyTakesClearsThePoolError) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata());
  runtime.AnswerStart(503, "text/plain", "");
  engine::EngineOptions o = Options();
  o.runner_pool_error_clear_successes = 1;
  o.thresholds.serverless_base_retry_ms = 600000;  // retried when an envoy of the pool connects
  TestEngine te(o);
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  const std::string id = CreateActor(te, "sls");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(runtime.WaitStarts(1).has_value());
  auto r = GatewayGet(te, id);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_NE(r->body.find("actor_runner_failed"), std::string::npos) << r->body;
  EXPECT_EQ(PoolConfig(te, "sls")["runner_pool_error"],
            (json{{"serverless_http_error", {{"status_code", 503}, {"body", ""}}}}));

  // Fixed. An envoy of the pool connecting retries the backing-off actor at once.
  runtime.AnswerStart(200, "text/event-stream", "");
  auto fe = ConnectPoolEnvoy(te);
  ASSERT_TRUE(fe.has_value()) << fe.error().ToString();
  std::optional<uint32_t> generation = runtime.WaitStarts(2);
  ASSERT_TRUE(generation.has_value());
  ASSERT_GT(*generation, 0u);
  EXPECT_FALSE(PoolConfig(te, "sls")["runner_pool_error"].is_null())
      << "an accepted stream is not yet a success";
  // The runtime's envoy takes the actor; the SetAlarm's ack (at once) orders after it.
  ASSERT_TRUE((*fe)->SendRunning(id, *generation).has_value());
  ASSERT_TRUE((*fe)->SendSetAlarm(id, *generation, std::nullopt).has_value());
  auto ack = (*fe)->WaitFor<envoy_proto::ToEnvoyAckEvents>(10s);
  ASSERT_TRUE(ack.has_value()) << ack.error().ToString();
  ExpectNoPoolOrActorError(te, id);
}

// actors.md §6.10 step 3: a refused start whose error body never ends is still the pool's
// error, with what arrived of the body, once a metadata fetch's timeout has passed — not left
// to the start threshold (30 s; the gateway request would end with actor_ready_timeout).
TEST(ServerlessPool, RefusedStartWhoseBodyNeverEndsIsReportedAfterTheFetchTimeout) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata());
  runtime.AnswerStart(502, "text/plain", "upstream sa", /*hold=*/false, /*hold_refused=*/true);
  engine::EngineOptions o = Options();             // metadata_fetch_timeout_ms 300
  o.thresholds.serverless_base_retry_ms = 600000;  // no retry within the test
  TestEngine te(o);
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  const std::string id = CreateActor(te, "sls");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(runtime.WaitStarts(1).has_value());
  const json expected{{"serverless_http_error", {{"status_code", 502}, {"body", "upstream sa"}}}};
  auto r = GatewayGet(te, id);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->status, 400) << r->body;
  json body = json::parse(r->body, nullptr, false);
  EXPECT_EQ(body.value("code", ""), "actor_runner_failed") << r->body;
  EXPECT_EQ(body["metadata"]["runner_pool_error"], expected) << r->body;
  EXPECT_EQ(PoolConfig(te, "sls")["runner_pool_error"], expected);
  EXPECT_TRUE(runtime.WaitStreamsGone(1)) << "the engine closes the request it gave up on";
}

// The actor's `generation`, started by the first start request, is moved: a Stop{GOING_AWAY}
// for it reaches its envoy, which confirms the stop, and the actor starts again (a later
// generation) on the runtime's second start request.
void ExpectMovedToANewRequest(FakeRuntime& runtime, FakeEnvoy& fe, const std::string& id,
                              uint32_t generation) {
  auto stop = fe.WaitCommand(id, 10s);
  ASSERT_TRUE(stop.has_value()) << stop.error().ToString();
  const auto* s = stop->inner.get_if<envoy_proto::CommandStopActor>();
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->reason, envoy_proto::StopActorReason::kGoingAway);
  EXPECT_EQ(stop->checkpoint.generation, generation);
  ASSERT_TRUE(fe.SendStopped(id, generation).has_value());
  std::optional<uint32_t> next = runtime.WaitStarts(2);
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, generation);
}

// An actor of the pool "sls" started by the runtime's first start request and running on
// the pool's envoy (connected first).
struct RunningOnARequest {
  std::unique_ptr<FakeEnvoy> envoy;
  std::string id;
  uint32_t generation = 0;
};

void StartOnTheFirstRequest(TestEngine& te, FakeRuntime& runtime, RunningOnARequest& out) {
  auto fe = ConnectPoolEnvoy(te);
  ASSERT_TRUE(fe.has_value()) << fe.error().ToString();
  out.envoy = std::move(*fe);
  out.id = CreateActor(te, "sls");
  ASSERT_FALSE(out.id.empty());
  std::optional<uint32_t> generation = runtime.WaitStarts(1);
  ASSERT_TRUE(generation.has_value());
  ASSERT_GT(*generation, 0u);
  out.generation = *generation;
  ASSERT_TRUE(out.envoy->SendRunning(out.id, out.generation).has_value());
}

// actors.md §6.10 step 4: at request_lifespan − drain_grace_period the engine moves the actor
// the request started (Stop{GOING_AWAY} to its envoy), which starts again on a new request
// once stopped; at request_lifespan the engine drops the request. Neither is a pool error.
TEST(ServerlessPool, RequestIsDrainedThenDroppedAtItsLifespan) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata());
  engine::EngineOptions o = Options();
  TestEngine te(o);
  ASSERT_EQ(
      PutPool(te, "sls",
              ServerlessConfig(runtime.url(), {{"request_lifespan", 2}, {"drain_grace_period", 1}}))
          .status,
      200);
  EXPECT_EQ(PoolConfig(te, "sls")["serverless"]["drain_grace_period"], 1);
  RunningOnARequest actor;
  ASSERT_NO_FATAL_FAILURE(StartOnTheFirstRequest(te, runtime, actor));

  // The drain, then a start on a new request.
  ASSERT_NO_FATAL_FAILURE(
      ExpectMovedToANewRequest(runtime, *actor.envoy, actor.id, actor.generation));

  // The drop: the first request is closed by the engine at its lifespan.
  EXPECT_TRUE(runtime.WaitStreamsGone(1));
  ExpectNoPoolOrActorError(te, actor.id);
}

// actors.md §6.10 step 3: `event: stopping` says the runtime behind the request is going
// away. The engine moves the request's actor at once (Stop{GOING_AWAY}, as at the lifespan's
// drain), and it starts again on a new request once stopped; the runtime then ending the
// request is no pool error.
TEST(ServerlessPool, AStoppingEventMovesTheRequestsActor) {
  FakeRuntime runtime;
  runtime.AnswerJson(GoodMetadata());
  TestEngine te(Options());  // the default lifespan (300 s): no drain within the test
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  RunningOnARequest actor;
  ASSERT_NO_FATAL_FAILURE(StartOnTheFirstRequest(te, runtime, actor));
  // The SetAlarm's ack (at once) orders after the envoy's taking the actor.
  ASSERT_TRUE(actor.envoy->SendSetAlarm(actor.id, actor.generation, std::nullopt).has_value());
  ASSERT_TRUE(actor.envoy->WaitFor<envoy_proto::ToEnvoyAckEvents>(10s).has_value());

  runtime.WriteOnStream(0, "event: stopping\ndata:\n\n");
  ASSERT_NO_FATAL_FAILURE(
      ExpectMovedToANewRequest(runtime, *actor.envoy, actor.id, actor.generation));
  runtime.WriteOnStream(0, ": bye\n", /*finish=*/true);
  ExpectNoPoolOrActorError(te, actor.id);
}

// The pool's drain_grace_period defaults to the engine's serverless_drain_grace_period
// (whole seconds, rounded up); a request_lifespan of 0 is refused.
TEST(ServerlessPool, DrainGraceDefaultsToTheEngineSettingAndALifespanOfZeroIsRefused) {
  engine::EngineOptions o = Options();
  o.serverless_drain_grace_period_ms = 2500;
  TestEngine te(o);
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig("http://127.0.0.1:9/api/rivet")).status, 200);
  EXPECT_EQ(PoolConfig(te, "sls")["serverless"]["drain_grace_period"], 3);
  Answer zero = PutPool(
      te, "sls", ServerlessConfig("http://127.0.0.1:9/api/rivet", {{"request_lifespan", 0}}));
  EXPECT_EQ(zero.status, 400) << zero.body.dump();
  EXPECT_NE(zero.body.value("message", "").find("request_lifespan"), std::string::npos)
      << zero.body.dump();
}

// envoy-protocol §5.4: a start's preloaded KV follows its actor name's preload plan as the
// latest metadata poll stored it, not a plan read before that poll changed it.
TEST(ServerlessPool, APollThatChangesAnActorNamesPreloadPlanIsUsedByTheNextStart) {
  FakeRuntime runtime;
  auto metadata_with_plan = [](int key_byte) {
    json m = GoodMetadata();
    m["actorNames"] = {{"counter", {{"metadata", {{"preload", {{"keys", {{key_byte}}}}}}}}}};
    return m;
  };
  runtime.AnswerJson(metadata_with_plan(1));
  TestEngine te(Options());
  ASSERT_EQ(PutPool(te, "sls", ServerlessConfig(runtime.url())).status, 200);
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  ASSERT_FALSE(CreateActor(te, "sls", "a").empty());
  ASSERT_TRUE(runtime.WaitStarts(1).has_value());
  EXPECT_EQ(runtime.last_preload_keys(), (std::vector<Bytes>{Bytes{1}}));

  runtime.AnswerJson(metadata_with_plan(2));
  ASSERT_EQ(Refresh(te, "sls").status, 200);
  // The cached plan is dropped on the orchestrator's strand after the poll's commit; a
  // create is handled on that strand after it (both are posted there in this order).
  ASSERT_FALSE(CreateActor(te, "sls", "b").empty());
  ASSERT_TRUE(runtime.WaitStarts(2).has_value());
  EXPECT_EQ(runtime.last_preload_keys(), (std::vector<Bytes>{Bytes{2}}));
}

}  // namespace
}  // namespace keel::testing
