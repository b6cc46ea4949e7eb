// The runtime under a real keel-engine (TestEngine on loopback port 0), hosted in-process
// by RuntimeHost on its own thread, reached by real HTTP and WebSocket clients through the
// gateway: actions, durability across sleep and runtime crashes, connections and events,
// alarms that wake a sleeping actor. Every wait is bounded.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat.h"
#include "counter/counter.h"
#include "engine/core/engine.h"
#include "engine/core/gateway.h"
#include "net/blocking_ws_client.h"
#include "net/client.h"
#include "runtime/actor.h"
#include "runtime/native/serve.h"
#include "scheduler/scheduler.h"
#include "support/gateway_http.h"
#include "support/raw_http_client.h"
#include "support/test_engine.h"
#include "wire/client_messages.h"

namespace keel::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

class RuntimeIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = MakeHost();
    host_->Start();
    ASSERT_TRUE(WaitFor([&] { return host_->connected(); })) << "runtime never connected";
  }

  std::unique_ptr<RuntimeHost> MakeHost() {
    ServeSettings s;
    s.endpoint = engine_.http_url();
    s.inspector_token = "test-inspector";
    auto counter = examples::MakeCounter();
    counter.options().sleep_timeout = 500ms;
    return std::make_unique<RuntimeHost>(
        s, std::vector<std::shared_ptr<const runtime::ActorType>>{
               counter.type(), examples::MakeChatRoom().type(), examples::MakeScheduler().type()});
  }

  std::string base() const { return engine_.http_url(); }

  TestEngine engine_;
  std::unique_ptr<RuntimeHost> host_;
};

TEST_F(RuntimeIntegrationTest, CounterActionsThroughTheGateway) {
  const std::string id = CreateActor(base(), "counter", "room-1");
  ASSERT_FALSE(id.empty());
  int status = 0;
  EXPECT_EQ(Action(base(), id, "increment", {5}, &status), (json{{"output", 5}}));
  EXPECT_EQ(status, 200);
  EXPECT_EQ(Action(base(), id, "increment", {2}), (json{{"output", 7}}));
  EXPECT_EQ(Action(base(), id, "getCount", json::array()), (json{{"output", 7}}));
  auto missing = Action(base(), id, "nope", json::array(), &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(missing["code"], "action_not_found");
  auto health = Call(base(), "GET", "/gateway/" + id + "/health");
  EXPECT_EQ(health.body, "ok");
  auto inspector = Call(base(), "GET", "/gateway/" + id + "/inspector/state", "",
                        {{"authorization", "Bearer test-inspector"}});
  EXPECT_EQ(json::parse(inspector.body, nullptr, false),
            (json{{"state", {{"count", 7}}}, {"isStateEnabled", true}}));
}

TEST_F(RuntimeIntegrationTest, GetOrCreateByKeyInTheQueryForm) {
  auto call = [&](int n) {
    auto r = Call(base(), "POST",
                  "/gateway/counter/action/increment?rvt-namespace=default&rvt-method=getOrCreate"
                  "&rvt-key=tenant,room&rvt-runner=default",
                  json{{"args", {n}}}.dump(), {{"content-type", "application/json"}});
    return json::parse(r.body, nullptr, false);
  };
  EXPECT_EQ(call(1), (json{{"output", 1}}));
  EXPECT_EQ(call(10), (json{{"output", 11}}));
}

TEST_F(RuntimeIntegrationTest, StateSurvivesSleepAndWake) {
  const std::string id = CreateActor(base(), "counter", "sleepy");
  EXPECT_EQ(Action(base(), id, "increment", {3}), (json{{"output", 3}}));
  // Idle for sleep_timeout (500 ms): the actor asks to sleep and the engine stops it.
  ASSERT_TRUE(WaitSleeping(base(), id));
  // The next request wakes it (a new generation) with its state.
  EXPECT_EQ(Action(base(), id, "increment", {4}), (json{{"output", 7}}));
}

TEST_F(RuntimeIntegrationTest, StateSurvivesARuntimeCrash) {
  const std::string id = CreateActor(base(), "counter", "crashy");
  for (int i = 1; i <= 20; ++i) ASSERT_EQ(Action(base(), id, "increment", {1}), (json{{"output", i}}));
  host_->Kill();
  host_ = MakeHost();
  host_->Start();
  ASSERT_TRUE(WaitFor([&] { return host_->connected(); }));
  // Rescheduled to the new runtime with every acknowledged increment.
  json out;
  ASSERT_TRUE(WaitFor([&] {
    out = Action(base(), id, "getCount", json::array());
    return out.contains("output");
  }, 10000ms)) << out.dump();
  EXPECT_EQ(out["output"], 20);
}

TEST_F(RuntimeIntegrationTest, GracefulStopHandsTheActorsBackToTheEngine) {
  const std::string id = CreateActor(base(), "counter", "graceful");
  EXPECT_EQ(Action(base(), id, "increment", {4}), (json{{"output", 4}}));
  // Stopping tells the engine, which stops the actor (GOING_AWAY): it reports Stopped
  // before the runtime goes, so the engine does not wait for a lost threshold.
  host_->Stop(10s);
  ASSERT_TRUE(WaitFor([&] {
    auto r = Call(base(), "GET", "/actors/" + id + "?namespace=default");
    auto j = json::parse(r.body, nullptr, false);
    return !j.is_discarded() && j.contains("actor") && j["actor"]["connectable_ts"].is_null();
  }));
  host_ = MakeHost();
  host_->Start();
  ASSERT_TRUE(WaitFor([&] { return host_->connected(); }));
  EXPECT_EQ(Action(base(), id, "getCount", json::array()), (json{{"output", 4}}));
}

TEST_F(RuntimeIntegrationTest, WebSocketConnectionWithEvents) {
  const std::string id = CreateActor(base(), "chat", "lobby");
  net::WsConnectOptions opts;
  opts.url = engine_.ws_url() + "/gateway/" + id + "/connect";
  opts.subprotocols = {"rivet", "rivet_encoding.json",
                       "rivet_conn_params.%7B%22nickname%22%3A%22ada%22%7D"};
  auto ws = net::BlockingWsClient::Connect(opts, 5s);
  ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
  auto next = [&]() -> wire::ToClient {
    auto m = (*ws)->Receive(5s);
    auto* msg = m.ok() ? std::get_if<net::BlockingWsClient::Message>(&*m) : nullptr;
    if (msg == nullptr) {
      ADD_FAILURE() << "socket closed";
      return wire::Init{};
    }
    auto decoded = wire::DecodeToClient(Bytes(msg->data.begin(), msg->data.end()), wire::Encoding::kJson);
    EXPECT_TRUE(decoded.ok()) << msg->data;
    return decoded.ok() ? *decoded : wire::ToClient{wire::Init{}};
  };
  auto init = next();
  ASSERT_TRUE(std::holds_alternative<wire::Init>(init));
  EXPECT_EQ(std::get<wire::Init>(init).actor_id, id);
  auto send = [&](const wire::ToServer& m) {
    Bytes b = wire::Encode(m, wire::Encoding::kJson);
    ASSERT_TRUE((*ws)->Send(std::string(b.begin(), b.end()), false).ok());
  };
  send(wire::SubscriptionRequest{"message", true});
  send(wire::ActionRequest{1, "send", Value::ArrayOf({"hello"})});
  auto ev = next();
  ASSERT_TRUE(std::holds_alternative<wire::Event>(ev));
  EXPECT_EQ(std::get<wire::Event>(ev).name, "message");
  const Value& m = std::get<wire::Event>(ev).args.as_array().at(0);
  EXPECT_EQ(*m.Find("from"), Value("ada"));
  EXPECT_EQ(*m.Find("text"), Value("hello"));
  auto resp = next();
  ASSERT_TRUE(std::holds_alternative<wire::ActionResponse>(resp));
  EXPECT_EQ(std::get<wire::ActionResponse>(resp).output, Value(1));
  (*ws)->Close();
}

TEST_F(RuntimeIntegrationTest, ConnectionSurvivesTheActorSleeping) {
  const std::string id = CreateActor(base(), "counter", "hibernate");
  net::WsConnectOptions opts;
  opts.url = engine_.ws_url() + "/gateway/" + id + "/connect";
  opts.subprotocols = {"rivet", "rivet_encoding.json"};
  auto ws = net::BlockingWsClient::Connect(opts, 5s);
  ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
  auto next = [&]() -> std::optional<wire::ToClient> {
    auto m = (*ws)->Receive(8s);
    auto* msg = m.ok() ? std::get_if<net::BlockingWsClient::Message>(&*m) : nullptr;
    if (msg == nullptr) return std::nullopt;
    auto decoded = wire::DecodeToClient(Bytes(msg->data.begin(), msg->data.end()), wire::Encoding::kJson);
    if (!decoded.ok()) return std::nullopt;
    return *decoded;
  };
  auto call = [&](uint64_t action_id, int n) -> std::optional<Value> {
    Bytes b = wire::Encode(wire::ToServer{wire::ActionRequest{action_id, "increment", Value::ArrayOf({n})}},
                           wire::Encoding::kJson);
    if (!(*ws)->Send(std::string(b.begin(), b.end()), false).ok()) return std::nullopt;
    for (int i = 0; i < 4; ++i) {
      auto m = next();
      if (!m) return std::nullopt;
      if (auto* r = std::get_if<wire::ActionResponse>(&*m); r != nullptr && r->id == action_id) return r->output;
    }
    return std::nullopt;
  };
  ASSERT_TRUE(next().has_value());  // Init
  EXPECT_EQ(call(1, 2), std::optional<Value>(Value(2)));
  // Sleep the actor: the socket stays open at the gateway (no close reaches the client).
  auto slept = Call(base(), "POST", "/actors/" + id + "/sleep?namespace=default");
  ASSERT_EQ(slept.status, 200) << slept.body;
  ASSERT_TRUE(WaitSleeping(base(), id));
  // The next message wakes it on the same socket, with state and connection intact.
  EXPECT_EQ(call(2, 3), std::optional<Value>(Value(5)));
  (*ws)->Close();
}

TEST_F(RuntimeIntegrationTest, AlarmWakesASleepingActor) {
  const std::string id = CreateActor(base(), "scheduler", "r1");
  auto out = Action(base(), id, "remind", {"tea", 1500});
  ASSERT_TRUE(out.contains("output")) << out.dump();
  // Put it to sleep before the alarm is due.
  auto slept = Call(base(), "POST", "/actors/" + id + "/sleep?namespace=default");
  ASSERT_EQ(slept.status, 200) << slept.body;
  ASSERT_TRUE(WaitSleeping(base(), id));
  // Nobody calls it: the engine wakes it at the alarm time (1.5 s after `remind`).
  ASSERT_TRUE(WaitFor([&] {
    auto r = Call(base(), "GET", "/actors/" + id + "?namespace=default");
    auto j = json::parse(r.body, nullptr, false);
    return !j.is_discarded() && j.contains("actor") && !j["actor"]["connectable_ts"].is_null();
  }, 8000ms)) << "the alarm did not wake the actor";
  auto fired = Action(base(), id, "fired", json::array());
  EXPECT_EQ(fired["output"][0]["text"], "tea");
  EXPECT_EQ(Action(base(), id, "pending", json::array()), (json{{"output", json::array()}}));
}

// A raw request whose client leaves while its on_request handler waits (envoy-protocol.md
// §6.3): the gateway tells the runtime, the handler sees it (Request::OnAbort / aborted) and
// records it in the state, its response goes nowhere, and the actor serves the next request
// and still goes to sleep.
struct Waiter {
  int64_t started = 0;
  int64_t aborted = 0;
};

class RequestAbortIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ActorDef<Waiter> waiter("waiter");
    waiter.options().sleep_timeout = 500ms;
    waiter.action("started", [](Ctx<Waiter>& c) { return c.state().started; });
    waiter.action("aborted", [](Ctx<Waiter>& c) { return c.state().aborted; });
    // /request/wait waits until its client leaves; any other path answers at once.
    waiter.on_request([](Ctx<Waiter>& c, const runtime::Request& req) -> Task<runtime::Response> {
      if (req.path != "/wait") co_return runtime::Response::Text(200, "quick");
      c.state().started += 1;
      Completion<bool> gone;
      req.OnAbort([gone] { gone.Resolve(true); });
      co_await gone;
      if (req.aborted()) c.state().aborted += 1;
      co_return runtime::Response::Text(200, "nobody reads this");
    });
    ServeSettings s;
    s.endpoint = engine_.http_url();
    host_ = std::make_unique<RuntimeHost>(
        s, std::vector<std::shared_ptr<const runtime::ActorType>>{waiter.type()});
    host_->Start();
    ASSERT_TRUE(WaitFor([&] { return host_->connected(); })) << "runtime never connected";
  }
  std::string base() const { return engine_.http_url(); }

  TestEngine engine_;
  std::unique_ptr<RuntimeHost> host_;
};

TEST_F(RequestAbortIntegrationTest, AHandlerSeesItsClientLeaveAndTheActorStillSleeps) {
  const std::string id = CreateActor(base(), "waiter", "w1");
  ASSERT_FALSE(id.empty());
  auto client = std::make_unique<RawHttpClient>(engine_.port());
  ASSERT_TRUE(client->connected());
  ASSERT_TRUE(client->Send("GET /gateway/" + id + "/request/wait HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(WaitFor([&] {
    return Action(base(), id, "started", json::array()) == json{{"output", 1}};
  })) << "the handler never started";
  client.reset();  // the user goes away while the handler waits

  ASSERT_TRUE(WaitFor([&] {
    return Action(base(), id, "aborted", json::array()) == json{{"output", 1}};
  })) << "the handler never learnt that its client left";
  auto quick = Call(base(), "GET", "/gateway/" + id + "/request/quick");
  EXPECT_EQ(quick.status, 200) << quick.body;
  EXPECT_EQ(quick.body, "quick");
  // Idle for sleep_timeout (500 ms): nothing of the aborted request keeps it awake.
  ASSERT_TRUE(WaitSleeping(base(), id)) << "the actor never went to sleep";
  EXPECT_EQ(Action(base(), id, "aborted", json::array()), (json{{"output", 1}}));
  EXPECT_EQ(engine_.engine().gateway().in_flight(), 0u);
}

// The engine's tunnel payload limit (maxResponsePayloadSize, here 4 KiB) closes the whole
// envoy connection on a message over it (envoy-protocol.md §6.6). Through the real gateway:
// an HTTP response over it arrives whole (the runtime streams it in pieces), a raw WebSocket
// message over it is refused to the actor's code, and the envoy connection, with every other
// actor on it, stays up. Regression: both went out whole and the engine dropped the runtime.
class PayloadLimitTest : public ::testing::Test {
 protected:
  static engine::EngineOptions Options() {
    engine::EngineOptions o;
    o.max_response_payload = 4096;
    return o;
  }
  void SetUp() override {
    ActorDef<examples::Counter> big("big");
    big.on_request([](Ctx<examples::Counter>&, const runtime::Request& req) {
      return runtime::Response::Text(200, std::string(std::stoul(req.query.substr(2)), 'h'));
    });
    big.on_websocket([](Ctx<examples::Counter>&, WebSocket<Ctx<examples::Counter>>& ws) {
      ws.on_message([](Ctx<examples::Counter>&, WebSocket<Ctx<examples::Counter>>& self,
                       std::string_view text, bool) {
        try {
          self.send(std::string(std::stoul(std::string(text)), 'w'));
        } catch (const runtime::ActorError& e) {
          self.send(e.group() + "." + e.code());
        }
      });
    });
    ServeSettings s;
    s.endpoint = engine_.http_url();
    host_ = std::make_unique<RuntimeHost>(s, std::vector<std::shared_ptr<const runtime::ActorType>>{
                                                 big.type(), examples::MakeCounter().type()});
    host_->Start();
    ASSERT_TRUE(WaitFor([&] { return host_->connected(); })) << "runtime never connected";
  }
  std::string base() const { return engine_.http_url(); }

  TestEngine engine_{Options()};
  std::unique_ptr<RuntimeHost> host_;
};

TEST_F(PayloadLimitTest, AResponseOverTheLimitArrivesWholeAndTheEnvoyStays) {
  const std::string counter = CreateActor(base(), "counter", "neighbour");
  ASSERT_FALSE(counter.empty());
  EXPECT_EQ(Action(base(), counter, "increment", {1}), (json{{"output", 1}}));
  const std::string envoy = host_->envoy_key();
  const std::string id = CreateActor(base(), "big", "http");
  ASSERT_FALSE(id.empty());
  auto r = Call(base(), "GET", "/gateway/" + id + "/request/x?n=10000");
  EXPECT_EQ(r.status, 200) << r.body.substr(0, 200);
  EXPECT_EQ(r.body, std::string(10000, 'h'));
  auto small = Call(base(), "GET", "/gateway/" + id + "/request/x?n=5");
  EXPECT_EQ(small.body, "hhhhh");
  // The neighbour was never restarted: its in-memory state is the same instance's.
  EXPECT_EQ(Action(base(), counter, "increment", {1}), (json{{"output", 2}}));
  EXPECT_TRUE(host_->connected());
  EXPECT_EQ(host_->envoy_key(), envoy);
}

TEST_F(PayloadLimitTest, ARawWebSocketMessageOverTheLimitIsRefusedToTheActor) {
  const std::string id = CreateActor(base(), "big", "ws");
  ASSERT_FALSE(id.empty());
  net::WsConnectOptions opts;
  opts.url = engine_.ws_url() + "/gateway/" + id + "/websocket/";
  auto ws = net::BlockingWsClient::Connect(opts, 5s);
  ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
  auto next = [&]() -> std::string {
    auto m = (*ws)->Receive(5s);
    auto* msg = m.ok() ? std::get_if<net::BlockingWsClient::Message>(&*m) : nullptr;
    if (msg == nullptr) {
      ADD_FAILURE() << "socket closed";
      return "";
    }
    return msg->data;
  };
  ASSERT_TRUE((*ws)->Send("5000", false).ok());
  EXPECT_EQ(next(), "message.outgoing_too_long");
  ASSERT_TRUE((*ws)->Send("4096", false).ok());
  EXPECT_EQ(next(), std::string(4096, 'w'));
  EXPECT_TRUE(host_->connected());
  (*ws)->Close();
}

}  // namespace
}  // namespace keel::testing
