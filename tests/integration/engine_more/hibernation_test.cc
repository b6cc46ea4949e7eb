// A user WebSocket through the gateway survives its actor's sleep (envoy-protocol.md §6.5):
// the actor closes its side with hibernate = true and stops; the user's socket stays open;
// the user's next message wakes the actor, whose start command lists the request as
// hibernating; the socket re-attaches without a new open and every message the actor had
// not acknowledged is delivered again with its original index.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "engine/server/server.h"
#include "net/blocking_ws_client.h"
#include "net/client.h"
#include "support/fake_envoy.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
namespace v = ::keel::protocol::envoy::latest;

std::string CreateActor(TestEngine& te, const std::string& key = "h1") {
  net::HttpRequest req;
  req.method = "POST";
  req.body = R"({"name":"room","key":")" + key + R"("})";
  auto r = net::FetchSync(te.http_url() + "/actors?namespace=default", std::move(req), 10s);
  if (!r.has_value() || r->status != 200) return "";
  return nlohmann::json::parse(r->body)["actor"]["actor_id"];
}

// The next tunnel message to the envoy whose kind is T.
template <typename T>
Result<std::pair<v::MessageId, T>> NextTunnel(FakeEnvoy& envoy) {
  auto frame = envoy.WaitForFrame(
      [](const v::ToEnvoy& m) {
        const auto* t = std::get_if<v::ToEnvoyTunnelMessage>(&m.value);
        return t != nullptr && std::holds_alternative<T>(t->message_kind.value);
      },
      5s);
  if (!frame.has_value()) return Unexpected{frame.error()};
  auto& t = std::get<v::ToEnvoyTunnelMessage>(frame->msg.value);
  return std::make_pair(t.message_id, std::get<T>(std::move(t.message_kind.value)));
}

Status Reply(FakeEnvoy& envoy, v::MessageId id, v::ToRivetTunnelMessageKind kind) {
  v::ToRivetTunnelMessage msg;
  msg.message_id = id;
  msg.message_kind = std::move(kind);
  return envoy.Send(v::ToRivet{std::move(msg)});
}

std::string Text(const Bytes& b) { return std::string(b.begin(), b.end()); }

TEST(GatewayHibernation, UserSocketSurvivesActorSleepAndUnackedMessagesReplay) {
  engine::EngineOptions options;
  options.ping_interval_ms = 100;
  TestEngine te(options);
  FakeEnvoyOptions eo;
  eo.ws_url = te.ws_url();
  eo.envoy_key = "hibernation-envoy";
  auto envoy = FakeEnvoy::ConnectAndInit(eo);
  ASSERT_TRUE(envoy.has_value()) << envoy.error().ToString();
  FakeEnvoy& fe = **envoy;

  const std::string id = CreateActor(te);
  ASSERT_FALSE(id.empty());
  auto start = fe.WaitCommand(id, 5s);
  ASSERT_TRUE(start.has_value()) << start.error().ToString();
  ASSERT_TRUE(fe.SendRunning(id, 1).has_value());

  // The user connects; the actor accepts the socket as hibernatable.
  net::WsConnectOptions wo;
  wo.url = te.ws_url() + "/gateway/" + id + "/websocket";
  wo.subprotocols = {"rivet"};
  auto user = net::BlockingWsClient::Connect(wo, 5s);
  ASSERT_TRUE(user.has_value()) << user.error().ToString();
  auto open = NextTunnel<v::ToEnvoyWebSocketOpen>(fe);
  ASSERT_TRUE(open.has_value()) << open.error().ToString();
  EXPECT_EQ(open->first.message_index, 0);
  EXPECT_EQ(open->second.path, "/websocket");
  const v::MessageId request = open->first;
  ASSERT_TRUE(Reply(fe, request, v::ToRivetWebSocketOpen{true}).has_value());

  // m1 is acknowledged, m2 is not.
  ASSERT_TRUE((*user)->Send("m1", false).has_value());
  auto m1 = NextTunnel<v::ToEnvoyWebSocketMessage>(fe);
  ASSERT_TRUE(m1.has_value());
  EXPECT_EQ(m1->first.message_index, 1);
  EXPECT_EQ(Text(m1->second.data), "m1");
  EXPECT_FALSE(m1->second.binary);
  ASSERT_TRUE(Reply(fe, request, v::ToRivetWebSocketMessageAck{1}).has_value());
  ASSERT_TRUE((*user)->Send("m2", false).has_value());
  auto m2 = NextTunnel<v::ToEnvoyWebSocketMessage>(fe);
  ASSERT_TRUE(m2.has_value());
  EXPECT_EQ(m2->first.message_index, 2);

  // The actor goes to sleep, hibernating the socket.
  ASSERT_TRUE(Reply(fe, request, v::ToRivetWebSocketClose{std::nullopt, std::nullopt, true})
                  .has_value());
  ASSERT_TRUE(fe.SendIntentSleep(id, 1).has_value());
  auto stop = fe.WaitCommand(id, 5s);
  ASSERT_TRUE(stop.has_value());
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  ASSERT_TRUE(fe.SendStopped(id, 1).has_value());

  // The user's next message wakes the actor; the start lists the hibernating request.
  ASSERT_TRUE((*user)->Send("m3", true).has_value());
  auto wake = fe.WaitCommand(id, 5s);
  ASSERT_TRUE(wake.has_value()) << wake.error().ToString();
  ASSERT_TRUE(wake->inner.is<v::CommandStartActor>());
  EXPECT_EQ(wake->checkpoint.generation, 2u);
  const auto& hibernating = std::get<v::CommandStartActor>(wake->inner.value).hibernating_requests;
  ASSERT_EQ(hibernating.size(), 1u);
  EXPECT_EQ(hibernating[0].gateway_id, request.gateway_id);
  EXPECT_EQ(hibernating[0].request_id, request.request_id);
  ASSERT_TRUE(fe.SendRunning(id, 2).has_value());

  // Re-attached without a new open: m2 again (unacknowledged), then m3, original indices.
  auto again = NextTunnel<v::ToEnvoyWebSocketMessage>(fe);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->first.message_index, 2);
  EXPECT_EQ(Text(again->second.data), "m2");
  auto m3 = NextTunnel<v::ToEnvoyWebSocketMessage>(fe);
  ASSERT_TRUE(m3.has_value());
  EXPECT_EQ(m3->first.message_index, 3);
  EXPECT_EQ(Text(m3->second.data), "m3");
  EXPECT_TRUE(m3->second.binary);
  for (const auto& frame : fe.backlog()) {
    const auto* t = std::get_if<v::ToEnvoyTunnelMessage>(&frame.msg.value);
    EXPECT_FALSE(t != nullptr &&
                 std::holds_alternative<v::ToEnvoyWebSocketOpen>(t->message_kind.value))
        << "a restored socket gets no second open";
  }

  // The restored actor talks to the same user socket.
  v::MessageId out = request;
  out.message_index = 1;
  ASSERT_TRUE(Reply(fe, out, v::ToRivetWebSocketMessage{ToBytes("welcome back"), false})
                  .has_value());
  auto got = (*user)->Receive(5s);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  ASSERT_TRUE(std::holds_alternative<net::BlockingWsClient::Message>(*got));
  EXPECT_EQ(std::get<net::BlockingWsClient::Message>(*got).data, "welcome back");
}

TEST(GatewayHibernation, SocketThatCannotHibernateClosesWhenTheActorStops) {
  TestEngine te;
  FakeEnvoyOptions eo;
  eo.ws_url = te.ws_url();
  eo.envoy_key = "plain-envoy";
  auto envoy = FakeEnvoy::ConnectAndInit(eo);
  ASSERT_TRUE(envoy.has_value());
  FakeEnvoy& fe = **envoy;
  const std::string id = CreateActor(te);
  ASSERT_TRUE(fe.WaitCommand(id, 5s).has_value());
  ASSERT_TRUE(fe.SendRunning(id, 1).has_value());
  net::WsConnectOptions wo;
  wo.url = te.ws_url() + "/gateway/" + id + "/websocket";
  auto user = net::BlockingWsClient::Connect(wo, 5s);
  ASSERT_TRUE(user.has_value());
  auto open = NextTunnel<v::ToEnvoyWebSocketOpen>(fe);
  ASSERT_TRUE(open.has_value());
  ASSERT_TRUE(Reply(fe, open->first, v::ToRivetWebSocketOpen{false}).has_value());
  // hibernate = true is not honoured for a socket opened without canHibernate.
  ASSERT_TRUE(Reply(fe, open->first, v::ToRivetWebSocketClose{std::nullopt, std::nullopt, true})
                  .has_value());
  auto got = (*user)->Receive(5s);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  ASSERT_TRUE(std::holds_alternative<net::BlockingWsClient::Closed>(*got));
  const auto& closed = std::get<net::BlockingWsClient::Closed>(*got);
  EXPECT_EQ(closed.code, 1000);
  EXPECT_EQ(closed.reason, "actor.stopped");
}

// The engine's options for a config file / environment setting these thresholds, as
// keel-engine builds them (engine::ToEngineOptions).
engine::EngineOptions OptionsFrom(const engine::EngineThresholds& thresholds) {
  engine::EngineConfig config;
  config.thresholds = thresholds;
  engine::EngineOptions options = engine::ToEngineOptions(config, 0);
  options.ping_interval_ms = 100;
  return options;
}

// A running actor on a fake envoy, with a user socket it accepted as hibernatable.
struct HibernatableSocket {
  std::unique_ptr<TestEngine> te;
  std::unique_ptr<FakeEnvoy> envoy;
  std::string id;
  std::unique_ptr<net::BlockingWsClient> user;
  v::MessageId request;

  static HibernatableSocket Open(const engine::EngineOptions& options) {
    HibernatableSocket s;
    s.te = std::make_unique<TestEngine>(options);
    FakeEnvoyOptions eo;
    eo.ws_url = s.te->ws_url();
    eo.envoy_key = "hws-envoy";
    auto envoy = FakeEnvoy::ConnectAndInit(eo);
    EXPECT_TRUE(envoy.has_value()) << envoy.error().ToString();
    if (!envoy.has_value()) return s;
    s.envoy = std::move(*envoy);
    s.id = CreateActor(*s.te, "hws");
    EXPECT_FALSE(s.id.empty());
    EXPECT_TRUE(s.envoy->WaitCommand(s.id, 5s).has_value());
    EXPECT_TRUE(s.envoy->SendRunning(s.id, 1).has_value());
    net::WsConnectOptions wo;
    wo.url = s.te->ws_url() + "/gateway/" + s.id + "/websocket";
    wo.subprotocols = {"rivet"};
    auto user = net::BlockingWsClient::Connect(wo, 5s);
    EXPECT_TRUE(user.has_value()) << user.error().ToString();
    if (!user.has_value()) return s;
    s.user = std::move(*user);
    auto open = NextTunnel<v::ToEnvoyWebSocketOpen>(*s.envoy);
    EXPECT_TRUE(open.has_value());
    if (!open.has_value()) return s;
    s.request = open->first;
    EXPECT_TRUE(Reply(*s.envoy, s.request, v::ToRivetWebSocketOpen{true}).has_value());
    return s;
  }

  // The close the user sees next (nullopt: a message came, or nothing within 5 s).
  std::optional<net::BlockingWsClient::Closed> NextClose() {
    auto event = user->Receive(5s);
    if (!event.has_value()) return std::nullopt;
    if (auto* closed = std::get_if<net::BlockingWsClient::Closed>(&*event)) return *closed;
    return std::nullopt;
  }
};

// gateway_hws_max_pending_bytes: more unacknowledged bytes than that close the socket.
TEST(GatewayHibernation, MaxPendingBytesSettingBoundsTheReplayBuffer) {
  engine::EngineThresholds t;
  t.gateway_hws_max_pending_bytes = 10;
  auto s = HibernatableSocket::Open(OptionsFrom(t));
  ASSERT_NE(s.user, nullptr);
  ASSERT_TRUE(s.user->Send("aaaaaa", false).has_value());
  ASSERT_TRUE(NextTunnel<v::ToEnvoyWebSocketMessage>(*s.envoy).has_value());
  ASSERT_TRUE(s.user->Send("bbbbbb", false).has_value());  // 12 bytes unacknowledged > 10
  auto closed = s.NextClose();
  ASSERT_TRUE(closed.has_value()) << "the socket stayed open";
  EXPECT_EQ(closed->code, 1011);
  EXPECT_NE(closed->reason.find("guard.websocket_pending_limit_reached"), std::string::npos)
      << closed->reason;
}

// gateway_hws_ack_timeout_ms: a message unacknowledged for longer closes the socket.
TEST(GatewayHibernation, AckTimeoutSettingClosesASocketTheActorDoesNotAcknowledge) {
  engine::EngineThresholds t;
  t.gateway_hws_ack_timeout = std::chrono::milliseconds(1);
  auto s = HibernatableSocket::Open(OptionsFrom(t));
  ASSERT_NE(s.user, nullptr);
  ASSERT_TRUE(s.user->Send("m1", false).has_value());
  ASSERT_TRUE(NextTunnel<v::ToEnvoyWebSocketMessage>(*s.envoy).has_value());
  std::this_thread::sleep_for(20ms);  // let m1 stay unacknowledged past the 1 ms timeout
  ASSERT_TRUE(s.user->Send("m2", false).has_value());
  auto closed = s.NextClose();
  ASSERT_TRUE(closed.has_value()) << "the socket stayed open";
  EXPECT_NE(closed->reason.find("guard.websocket_ack_timeout"), std::string::npos)
      << closed->reason;
}

// hibernating_request_eligible_threshold_ms: a hibernating socket whose keepalive is older
// than that is not offered to the restarted actor.
TEST(GatewayHibernation, EligibleThresholdSettingDropsStaleHibernatingRequests) {
  engine::EngineThresholds t;
  t.hibernating_request_eligible_threshold = std::chrono::milliseconds(1);
  auto s = HibernatableSocket::Open(OptionsFrom(t));
  ASSERT_NE(s.user, nullptr);
  FakeEnvoy& fe = *s.envoy;
  ASSERT_TRUE(
      Reply(fe, s.request, v::ToRivetWebSocketClose{std::nullopt, std::nullopt, true}).has_value());
  ASSERT_TRUE(fe.SendIntentSleep(s.id, 1).has_value());
  auto stop = fe.WaitCommand(s.id, 5s);
  ASSERT_TRUE(stop.has_value());
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  ASSERT_TRUE(fe.SendStopped(s.id, 1).has_value());
  std::this_thread::sleep_for(20ms);  // the keepalive record ages past the 1 ms threshold
  ASSERT_TRUE(s.user->Send("wake", false).has_value());
  auto wake = fe.WaitCommand(s.id, 5s);
  ASSERT_TRUE(wake.has_value()) << wake.error().ToString();
  ASSERT_TRUE(wake->inner.is<v::CommandStartActor>());
  EXPECT_TRUE(std::get<v::CommandStartActor>(wake->inner.value).hibernating_requests.empty());
}

}  // namespace
}  // namespace keel::testing
