// The runtime hosted serverlessly (keel::ServerlessHost, actors.md Appendix B, envoy-protocol
// §4.9) under a real keel-engine: TestEngine on loopback with a serverless pool whose url
// is the host's /api/rivet; creating an actor there makes the engine POST /start, the host
// connects an envoy, injects the start and holds the SSE stream while the actor runs.
// Also the host's own answers: health, metadata, structured /start errors, the SSE wire
// format and cancellation. Every wait is bounded.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "counter/counter.h"
#include "net/client.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"
#include "runtime/actor.h"
#include "runtime/native/serverless.h"
#include "support/gateway_http.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
namespace latest = protocol::envoy::latest;

// A version-prefixed ToEnvoyCommands[CommandStartActor] like the engine's.
std::string StartBody(const std::string& actor_id, const std::string& name, uint16_t version = 4) {
  latest::CommandWrapper w;
  w.checkpoint = latest::ActorCheckpoint{actor_id, 1, 0};
  latest::CommandStartActor start;
  start.config.name = name;
  start.config.key = "k";
  start.config.create_ts = 1;
  w.inner = std::move(start);
  auto body = protocol::envoy::EncodeToEnvoyFramed(
      latest::ToEnvoy{latest::ToEnvoyCommands{{std::move(w)}}}, version);
  EXPECT_TRUE(body.has_value());
  return body.has_value() ? std::string(body->begin(), body->end()) : std::string();
}

class ServerlessTest : public ::testing::Test {
 protected:
  void StartHost(std::chrono::milliseconds sleep_timeout = 60000ms) {
    auto counter = examples::MakeCounter();
    counter.options().sleep_timeout = sleep_timeout;
    ServerlessOptions o;
    o.stop_timeout = 3000ms;
    host_ = std::make_unique<ServerlessHost>(
        o, std::vector<std::shared_ptr<const runtime::ActorType>>{counter.type()});
    auto port = host_->Start();
    ASSERT_TRUE(port.has_value()) << port.error().ToString();
    ASSERT_NE(*port, 0);
    host_url_ = "http://127.0.0.1:" + std::to_string(*port) + "/api/rivet";
  }

  void PutServerlessPool(const std::string& pool, int request_lifespan_s = 300,
                         int drain_grace_period_s = 10) {
    json body{{"datacenters",
               {{"default",
                 {{"serverless",
                   {{"url", host_url_},
                    {"max_runners", 10},
                    {"request_lifespan", request_lifespan_s},
                    {"drain_grace_period", drain_grace_period_s}}}}}}}};
    auto r = Call(engine_.http_url(), "PUT", "/runner-configs/" + pool + "?namespace=default",
                  body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
  }

  std::string CreateActor(const std::string& key, const std::string& pool) {
    json body{{"name", "counter"}, {"key", key}, {"runner_name_selector", pool}};
    auto r = Call(engine_.http_url(), "POST", "/actors?namespace=default", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    auto j = ParseJson(r.body);
    if (!j.is_object() || !j.contains("actor")) return "";
    return j["actor"]["actor_id"].get<std::string>();
  }

  json Action(const std::string& id, const std::string& name, json args, int* status = nullptr) {
    auto r = Call(engine_.http_url(), "POST", "/gateway/" + id + "/action/" + name,
                  json{{"args", args}}.dump(),
                  {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
    if (status != nullptr) *status = r.status;
    return ParseJson(r.body);
  }

  net::Headers StartHeaders(const std::string& endpoint) {
    return {{"x-rivet-endpoint", endpoint},
            {"x-rivet-pool-name", "sls"},
            {"x-rivet-namespace-name", "default"},
            {"content-type", "application/octet-stream"}};
  }

  void TearDown() override {
    host_.reset();  // the host's envoys leave before the engine goes
  }

  TestEngine engine_;
  std::unique_ptr<ServerlessHost> host_;
  std::string host_url_;
};

TEST_F(ServerlessTest, CounterStartedByTheEnginesServerlessPost) {
  StartHost();
  PutServerlessPool("sls");
  const std::string id = CreateActor("sls-1", "sls");
  ASSERT_FALSE(id.empty());
  int status = 0;
  EXPECT_EQ(Action(id, "increment", {3}, &status), (json{{"output", 3}}));
  EXPECT_EQ(status, 200);

  // The engine POSTed /start once; the host made one envoy connection and holds the stream.
  ServerlessStats s = host_->stats();
  EXPECT_EQ(s.starts_accepted, 1u);
  EXPECT_EQ(s.starts_rejected, 0u);
  EXPECT_EQ(s.envoys, 1u);
  EXPECT_EQ(s.connected_envoys, 1u);
  EXPECT_EQ(s.open_streams, 1u);

  // The stream stays open across pings while the actor runs.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(Action(id, "increment", {2}), (json{{"output", 5}}));
  EXPECT_EQ(Action(id, "getCount", json::array()), (json{{"output", 5}}));
  s = host_->stats();
  EXPECT_EQ(s.open_streams, 1u);
  EXPECT_EQ(s.starts_accepted, 1u);
  EXPECT_EQ(s.streams_stopping + s.streams_cancelled, 0u);
}

TEST_F(ServerlessTest, SleepEndsTheStreamWithStoppingAndTheWakePostsStartAgain) {
  StartHost(500ms);
  PutServerlessPool("sls");
  const std::string id = CreateActor("sleepy", "sls");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Action(id, "increment", {3}), (json{{"output", 3}}));
  // Idle for 500 ms: the actor sleeps, the engine stops it through the envoy, and the
  // stream ends with `event: stopping`.
  ASSERT_TRUE(WaitFor([&] {
    ServerlessStats s = host_->stats();
    return s.streams_stopping == 1 && s.open_streams == 0;
  })) << "the stream never ended";
  // The next request wakes it: a second /start on the cached envoy connection.
  EXPECT_EQ(Action(id, "increment", {4}), (json{{"output", 7}}));
  ServerlessStats s = host_->stats();
  EXPECT_EQ(s.starts_accepted, 2u);
  EXPECT_EQ(s.envoys, 1u);
}

// actors.md §6.10 step 4 with Keel's runtime: an actor whose request nears its lifespan is
// moved (GOING_AWAY) — its state saved, its stream ended with `event: stopping` — and
// started again on a new request at once, so it outlives its requests with nothing lost.
TEST_F(ServerlessTest, AnActorOutlivesItsRequestsLifespanWithItsStateKept) {
  StartHost();
  PutServerlessPool("sls", /*request_lifespan_s=*/2, /*drain_grace_period_s=*/1);
  const std::string id = CreateActor("long-lived", "sls");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(Action(id, "increment", {3}), (json{{"output", 3}}));
  ASSERT_TRUE(WaitFor([&] {
    ServerlessStats s = host_->stats();
    return s.starts_accepted >= 2 && s.streams_stopping >= 1;
  })) << "the actor was not moved to a new request";
  EXPECT_EQ(Action(id, "increment", {4}), (json{{"output", 7}}));
  ServerlessStats s = host_->stats();
  EXPECT_EQ(s.starts_rejected, 0u);
  EXPECT_EQ(s.envoys, 1u) << "the cached envoy connection serves the new request";
  auto pools = Call(engine_.http_url(), "GET", "/runner-configs?namespace=default");
  EXPECT_TRUE(
      ParseJson(pools.body)["runner_configs"]["sls"]["datacenters"]["default"]["runner_pool_error"]
          .is_null())
      << pools.body;
}

// The engine's metadata check (actors.md §6.11) accepts Keel's runtime: the health check
// succeeds, and a poll records the pool's protocol version and actor names, no error.
TEST_F(ServerlessTest, EnginesMetadataCheckAcceptsKeelsRuntime) {
  StartHost();
  auto check =
      Call(engine_.http_url(), "POST", "/runner-configs/serverless-health-check?namespace=default",
           json{{"url", host_url_}}.dump());
  ASSERT_EQ(check.status, 200) << check.body;
  json c = ParseJson(check.body);
  ASSERT_TRUE(c.contains("success")) << check.body;
  EXPECT_EQ(c["success"]["envoy_protocol_version"], 4) << check.body;

  PutServerlessPool("sls");
  auto refreshed = Call(engine_.http_url(), "POST",
                        "/runner-configs/sls/refresh-metadata?namespace=default", "{}");
  ASSERT_EQ(refreshed.status, 200) << refreshed.body;
  auto listed =
      Call(engine_.http_url(), "GET", "/runner-configs?namespace=default&runner_name=sls");
  json dc = ParseJson(listed.body)["runner_configs"]["sls"]["datacenters"]["default"];
  EXPECT_EQ(dc["protocol_version"], 4) << listed.body;
  EXPECT_TRUE(dc["runner_pool_error"].is_null()) << listed.body;
  auto names = Call(engine_.http_url(), "GET", "/actors/names?namespace=default");
  EXPECT_TRUE(ParseJson(names.body)["names"].contains("counter")) << names.body;
}

TEST_F(ServerlessTest, HealthMetadataAndRouting) {
  StartHost();
  auto health = Call(host_url_, "GET", "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(ParseJson(health.body)["status"], "ok");
  EXPECT_EQ(ParseJson(health.body)["runtime"], "rivetkit");

  auto meta = Call(host_url_, "GET", "/metadata");
  ASSERT_EQ(meta.status, 200);
  json m = ParseJson(meta.body);
  EXPECT_EQ(m["runtime"], "rivetkit");
  EXPECT_FALSE(m["version"].get<std::string>().empty());
  EXPECT_EQ(m["envoyProtocolVersion"], 4);
  EXPECT_TRUE(m["actorNames"].contains("counter")) << meta.body;
  EXPECT_TRUE(m["envoy"]["kind"].contains("serverless")) << meta.body;

  auto root = Call(host_url_, "GET", "");
  EXPECT_EQ(root.status, 200);
  EXPECT_THAT(root.body, HasSubstr("RivetKit"));
  auto missing = Call(host_url_, "GET", "/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body, "Not Found (RivetKit)");
  EXPECT_EQ(Call(host_url_, "DELETE", "/start").status, 404);
  EXPECT_EQ(Call(host_url_, "OPTIONS", "/start").status, 204);
}

TEST_F(ServerlessTest, StartRejectsMissingHeadersBadBodiesAndOversizedPayloads) {
  StartHost();
  const std::string endpoint = engine_.http_url();
  // No headers at all.
  auto r = Call(host_url_, "POST", "/start", "x", {{"content-type", "application/octet-stream"}});
  EXPECT_EQ(r.status, 400);
  json j = ParseJson(r.body);
  EXPECT_EQ(j["group"], "request");
  EXPECT_EQ(j["code"], "invalid");
  EXPECT_EQ(j["metadata"]["reason"], "x-rivet-endpoint header is required");
  // The legacy pool header is accepted; the namespace is still missing.
  r = Call(host_url_, "GET", "/start", "",
           {{"x-rivet-endpoint", endpoint}, {"x-rivet-runner-name", "sls"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ParseJson(r.body)["metadata"]["reason"], "x-rivet-namespace-name header is required");

  // Wrong version prefix (a v3 envelope).
  r = Call(host_url_, "POST", "/start", StartBody("a-v3", "counter", 3), StartHeaders(endpoint));
  EXPECT_EQ(r.status, 400) << r.body;
  j = ParseJson(r.body);
  EXPECT_EQ(j["group"], "serverless");
  EXPECT_EQ(j["code"], "invalid_payload");
  EXPECT_THAT(j["message"].get<std::string>(), HasSubstr("version"));
  // Prefix 4 but not a ToEnvoy.
  r = Call(host_url_, "POST", "/start", std::string("\x04\x00\xff\xff\xff", 5),
           StartHeaders(endpoint));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(ParseJson(r.body)["code"], "invalid_payload");

  // Over maxStartPayloadBytes (1 MiB): a structured 413.
  std::string big(size_t{1} << 20, 'x');
  big += "y";
  r = Call(host_url_, "POST", "/start", big, StartHeaders(endpoint));
  EXPECT_EQ(r.status, 413);
  j = ParseJson(r.body);
  EXPECT_EQ(j["group"], "message");
  EXPECT_EQ(j["code"], "incoming_too_long");

  ServerlessStats s = host_->stats();
  EXPECT_EQ(s.starts_accepted, 0u);
  EXPECT_EQ(s.starts_rejected, 5u);
  EXPECT_EQ(s.open_streams, 0u);
}

TEST_F(ServerlessTest, StreamPingsUntilTheClientCancels) {
  StartHost();
  // An engine that is not there: the envoy never gets Init, so the start stays queued and
  // the stream keeps pinging until the client goes away.
  std::mutex mu;
  std::condition_variable cv;
  int head_status = 0;
  std::string content_type;
  std::string data;
  net::IoRuntime io(1);  // after what its callbacks touch: destroyed (joined) first
  net::HttpRequest req;
  req.method = "POST";
  req.headers = StartHeaders("http://127.0.0.1:1");
  req.body = StartBody("queued-actor", "counter");
  net::CancelFn cancel = net::FetchStream(
      io, host_url_ + "/start", std::move(req),
      [&](Result<net::HttpResponse> head) {
        std::lock_guard lock(mu);
        head_status = head.has_value() ? head->status : -1;
        if (head.has_value())
          content_type = std::string(net::FindHeader(head->headers, "content-type"));
        cv.notify_all();
      },
      [&](std::string chunk) {
        std::lock_guard lock(mu);
        data += chunk;
        cv.notify_all();
      },
      [&](Status) {}, 5s);
  {
    std::unique_lock lock(mu);
    auto pings = [&] {
      size_t n = 0;
      for (size_t at = data.find("event: ping\n"); at != std::string::npos;
           at = data.find("event: ping\n", at + 1)) {
        ++n;
      }
      return n;
    };
    // One ping at once, then one per second.
    ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return pings() >= 2; })) << data;
    EXPECT_EQ(head_status, 200);
    EXPECT_EQ(content_type, "text/event-stream");
    EXPECT_EQ(data.substr(0, 18), "event: ping\ndata:\n");
    EXPECT_THAT(data, ::testing::Not(HasSubstr("stopping")));
  }
  EXPECT_EQ(host_->stats().open_streams, 1u);
  cancel();
  EXPECT_TRUE(WaitFor([&] {
    ServerlessStats s = host_->stats();
    return s.open_streams == 0 && s.streams_cancelled == 1;
  }));
  io.Stop();
}

TEST_F(ServerlessTest, StopEndsOpenStreamsWithStopping) {
  StartHost();
  std::mutex mu;
  std::string data;
  bool ended = false;
  net::IoRuntime io(1);  // after what its callbacks touch: destroyed (joined) first
  net::HttpRequest req;
  req.method = "POST";
  req.headers = StartHeaders("http://127.0.0.1:1");
  req.body = StartBody("queued-actor-2", "counter");
  net::CancelFn cancel = net::FetchStream(
      io, host_url_ + "/start", std::move(req), [](Result<net::HttpResponse>) {},
      [&](std::string chunk) {
        std::lock_guard lock(mu);
        data += chunk;
      },
      [&](Status) {
        std::lock_guard lock(mu);
        ended = true;
      },
      5s);
  ASSERT_TRUE(WaitFor([&] { return host_->stats().open_streams == 1; }));
  host_->Stop(2000ms);
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard lock(mu);
    return ended;
  }));
  std::lock_guard lock(mu);
  EXPECT_THAT(data, HasSubstr("event: stopping\n"));
  cancel();
}

}  // namespace
}  // namespace keel::testing
