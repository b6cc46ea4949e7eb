// EnvoyClient over NativeTransport against a real keel-engine on loopback: the handshake,
// a start command from an actor created through REST, KV through the envoy, and the
// reconnect loop after the engine drops the connection or restarts.
//
// The client runs on the strand of its own one-thread IoRuntime (timers through a
// StrandClock), as a native runtime would. Every wait is bounded: conditions are polled
// on the strand every few milliseconds until a deadline.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/random.h"
#include "engine/core/engine.h"
#include "envoy/envoy_client.h"
#include "envoy/native/native_transport.h"
#include "net/client.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"
#include "storage/mem_kv_store.h"
#include "support/test_engine.h"

namespace keel::envoy {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace v = ::keel::protocol::envoy::latest;

engine::EngineOptions FastOptions() {
  engine::EngineOptions o;
  o.ping_interval_ms = 100;
  o.ping_timeout_ms = 1500;
  o.envoy_lost_threshold_ms = 5000;
  o.thresholds.envoy_lost_ms = 5000;
  o.actor_stop_threshold_ms = 2000;
  o.thresholds.stop_ms = 2000;
  o.thresholds.start_ms = 3000;
  o.seed = 42;
  return o;
}

// A host that starts and stops actors at once. Runs on the client's strand only.
class AutoHost final : public EnvoyHost {
 public:
  void OnStartActor(StartActor start) override {
    starts.push_back(start.actor_id);
    client->ActorRunning(start.actor_id, start.generation);
  }
  void OnStopActor(const std::string& actor_id, uint32_t generation, v::StopActorReason) override {
    client->ActorStopped(actor_id, generation);
  }
  void OnTunnelMessage(const std::string&, const v::ToEnvoyTunnelMessage&) override {}
  void OnConnected(const v::ProtocolMetadata&) override { ++connected; }
  void OnDisconnected() override { ++disconnected; }
  void OnShutdown() override { ++shutdowns; }

  EnvoyClient* client = nullptr;
  std::vector<std::string> starts;
  int connected = 0;
  int disconnected = 0;
  int shutdowns = 0;
};

// The client with its transport, strand and clock.
class Envoy {
 public:
  Envoy(EnvoyConfig config) : strand_(runtime_.MakeStrand()), clock_(runtime_.clock(), *strand_) {
    transport_ = std::make_unique<NativeTransport>(runtime_, *strand_);
    client_ = std::make_unique<EnvoyClient>(std::move(config), clock_, random_, *transport_, host_);
    host_.client = client_.get();
    transport_->set_client(client_.get());
    Run([&] { client_->Start(); });
  }

  ~Envoy() {
    Run([&] { client_->Shutdown(/*immediate=*/true); });
    runtime_.Stop();
    transport_.reset();
    client_.reset();
  }

  // Runs `fn` on the strand and waits for it.
  template <typename Fn>
  auto Run(Fn fn) -> decltype(fn()) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    strand_->Post([&task] { task(); });
    if (result.wait_for(5s) != std::future_status::ready) {
      ADD_FAILURE() << "strand task did not run";
      std::abort();
    }
    return result.get();
  }

  // Polls `pred` on the strand until it holds; false after `timeout`.
  bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Run(pred)) return true;
      std::this_thread::sleep_for(5ms);
    }
    return Run(pred);
  }

  EnvoyClient& client() { return *client_; }
  AutoHost& host() { return host_; }
  // The socket under the client: frames written here bypass the client's own checks.
  NativeTransport& transport() { return *transport_; }

 private:
  net::IoRuntime runtime_{1};
  std::unique_ptr<Executor> strand_;
  StrandClock clock_;
  Random random_{1};
  AutoHost host_;
  std::unique_ptr<NativeTransport> transport_;
  std::unique_ptr<EnvoyClient> client_;
};

EnvoyConfig ConfigFor(const std::string& endpoint, const std::string& key) {
  EnvoyConfig c;
  c.endpoint = endpoint;
  c.envoy_key = key;
  c.actor_names = {{"counter", "{}"}};
  c.backoff_initial = 20ms;
  c.backoff_max = 200ms;
  return c;
}

json Rest(const std::string& base, const std::string& method, const std::string& target,
          const std::string& body = "") {
  net::HttpRequest req;
  req.method = method;
  if (!body.empty()) req.headers.emplace_back("content-type", "application/json");
  req.body = body;
  auto r = net::FetchSync(base + target, std::move(req), 10s);
  if (!r.has_value()) {
    ADD_FAILURE() << method << " " << target << ": " << r.error().ToString();
    return json();
  }
  EXPECT_EQ(r->status, 200) << method << " " << target << ": " << r->body;
  return json::parse(r->body, nullptr, false);
}

bool WaitConnectable(const std::string& base, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    json a = Rest(base, "GET", "/actors/" + id + "?namespace=default");
    if (a.is_object() && a["actor"].contains("connectable_ts")) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

v::KvRequestData Put(const std::string& key, const std::string& value) {
  v::KvPutRequest put;
  put.keys.push_back(Bytes(key.begin(), key.end()));
  put.values.push_back(Bytes(value.begin(), value.end()));
  return v::KvRequestData{std::move(put)};
}

v::KvRequestData Get(const std::string& key) {
  v::KvGetRequest get;
  get.keys.push_back(Bytes(key.begin(), key.end()));
  return v::KvRequestData{std::move(get)};
}

// Sends `request` through the client and waits for its answer.
Result<v::KvResponseData> Kv(Envoy& envoy, const std::string& actor_id, v::KvRequestData request) {
  auto promise = std::make_shared<std::promise<Result<v::KvResponseData>>>();
  auto future = promise->get_future();
  envoy.Run([&] {
    envoy.client().SendKv(actor_id, std::move(request), [promise](Result<v::KvResponseData> r) {
      promise->set_value(std::move(r));
    });
  });
  if (future.wait_for(5s) != std::future_status::ready) {
    return Error("test", "timeout", "no KV answer");
  }
  return future.get();
}

TEST(NativeTransportTest, ConnectsStartsAnActorAndRoundTripsKv) {
  testing::TestEngine te(FastOptions());
  Envoy envoy(ConfigFor(te.http_url(), "native-envoy"));
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.client().connected(); }));
  EXPECT_TRUE(envoy.Run([&] { return envoy.client().protocol_metadata().has_value(); }));
  EXPECT_EQ(envoy.Run([&] { return envoy.client().protocol_metadata()->envoy_lost_threshold; }),
            5000);
  EXPECT_EQ(envoy.Run([&] { return envoy.host().connected; }), 1);

  json created = Rest(te.http_url(), "POST", "/actors?namespace=default",
                      json{{"name", "counter"}, {"key", "k"}}.dump());
  ASSERT_TRUE(created.is_object());
  const std::string id = created["actor"]["actor_id"];
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.host().starts.size() == 1; }));
  EXPECT_EQ(envoy.Run([&] { return envoy.host().starts[0]; }), id);
  EXPECT_TRUE(WaitConnectable(te.http_url(), id));  // our Running event arrived

  auto put = Kv(envoy, id, Put("hello", "world"));
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_TRUE(put->is<v::KvPutResponse>());
  auto got = Kv(envoy, id, Get("hello"));
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  const auto* response = got->get_if<v::KvGetResponse>();
  ASSERT_NE(response, nullptr);
  ASSERT_EQ(response->values.size(), 1u);
  EXPECT_EQ(std::string(response->values[0].begin(), response->values[0].end()), "world");
  EXPECT_EQ(envoy.Run([&] { return envoy.client().pending_kv_requests(); }), 0u);

  // The engine acknowledges SetAlarm at once (after it stored the alarm).
  auto acked = std::make_shared<std::promise<Status>>();
  auto acked_future = acked->get_future();
  envoy.Run([&] {
    envoy.client().SetAlarm(id, 1, std::nullopt, [acked](Status s) { acked->set_value(s); });
  });
  ASSERT_EQ(acked_future.wait_for(5s), std::future_status::ready);
  Status alarm = acked_future.get();
  EXPECT_TRUE(alarm.has_value()) << alarm.error().ToString();
}

TEST(NativeTransportTest, ReconnectsAfterTheEngineDropsTheConnection) {
  engine::EngineOptions o = FastOptions();
  o.max_response_payload = 1024;
  testing::TestEngine te(o);
  Envoy envoy(ConfigFor(te.http_url(), "drop-envoy"));
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.client().connected(); }));

  // An oversized tunnel payload makes the engine close the whole connection (§6.6). The
  // client streams such a body instead, so the frame is written under it, on the socket.
  envoy.Run([&] {
    v::ToRivetTunnelMessage big;
    big.message_id = v::MessageId{{1, 2, 3, 4}, {5, 6, 7, 8}, 0};
    big.message_kind = v::ToRivetResponseStart{200, {}, Bytes(4096, 'x'), false};
    Bytes frame;
    ASSERT_TRUE(protocol::envoy::EncodeToRivet(v::ToRivet{std::move(big)}, 4, frame).has_value());
    envoy.transport().Send(std::move(frame));
  });
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.host().disconnected >= 1; }));
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.host().connected >= 2; }));
  EXPECT_TRUE(envoy.Run([&] { return envoy.client().connected(); }));
  EXPECT_FALSE(envoy.Run([&] { return envoy.client().shut_down(); }));
}

TEST(NativeTransportTest, ReconnectsAfterAnEngineRestart) {
  testing::TestEngine te(FastOptions());
  Envoy envoy(ConfigFor(te.http_url(), "restart-envoy"));
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.client().connected(); }));
  te.RestartOnSamePort();
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.host().disconnected >= 1; }));
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.host().connected >= 2; }, 10s));
  EXPECT_TRUE(envoy.Run([&] { return envoy.client().connected(); }));
}

TEST(NativeTransportTest, FailedConnectsAreRetriedUntilTheEngineListens) {
  // Nothing listens on the port of a stopped server: every attempt fails (a 1006 close for
  // the client) until an engine starts there.
  uint16_t port = 0;
  {
    testing::TestEngine te(FastOptions());
    port = te.port();
  }
  Envoy envoy(ConfigFor("http://127.0.0.1:" + std::to_string(port), "refused-envoy"));
  std::this_thread::sleep_for(100ms);  // lets a few attempts fail (nothing to wait for)
  EXPECT_FALSE(envoy.Run([&] { return envoy.client().connected(); }));
  EXPECT_FALSE(envoy.Run([&] { return envoy.client().shut_down(); }));
  EXPECT_EQ(envoy.Run([&] { return envoy.host().disconnected; }), 0);  // never opened
  testing::TestEngine listening(FastOptions(), "", 2, 2, port);
  ASSERT_TRUE(envoy.WaitUntil([&] { return envoy.client().connected(); }));
  EXPECT_EQ(envoy.Run([&] { return envoy.host().connected; }), 1);
}

TEST(NativeTransportTest, EvictedBySecondEnvoyWithTheSameKey) {
  testing::TestEngine te(FastOptions());
  Envoy first(ConfigFor(te.http_url(), "same-key"));
  ASSERT_TRUE(first.WaitUntil([&] { return first.client().connected(); }));
  Envoy second(ConfigFor(te.http_url(), "same-key"));
  ASSERT_TRUE(second.WaitUntil([&] { return second.client().connected(); }));
  ASSERT_TRUE(first.WaitUntil([&] { return first.client().shut_down(); }));
  EXPECT_EQ(first.Run([&] { return first.host().shutdowns; }), 1);
  EXPECT_TRUE(second.Run([&] { return second.client().connected(); }));
}

}  // namespace
}  // namespace keel::envoy
