// The EnvoyClient test fixture shared by the envoy unit tests: a fake transport that
// records what the client asks of the socket, a recording host for the actor runtime and a
// ManualClock for time. Engine frames are encoded with the real codec at the connection's
// version, and everything the client sends is decoded back, so tests see the wire as the
// engine would.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/manual_clock.h"
#include "base/random.h"
#include "envoy/envoy_client.h"
#include "protocol/envoy/versioned.h"

namespace keel::envoy::test {

using namespace std::chrono_literals;
namespace pe = ::keel::protocol::envoy;
namespace v = ::keel::protocol::envoy::latest;

class FakeTransport final : public Transport {
 public:
  struct ConnectCall {
    std::string url;
    std::vector<std::string> subprotocols;
  };

  void Connect(const std::string& url, const std::vector<std::string>& subprotocols) override {
    connects.push_back({url, subprotocols});
  }
  void Send(Bytes frame) override { sent.push_back(std::move(frame)); }
  void Close(uint16_t code, const std::string& reason) override {
    closes.emplace_back(code, reason);
  }

  std::vector<ConnectCall> connects;
  std::vector<Bytes> sent;
  std::vector<std::pair<uint16_t, std::string>> closes;
};

class RecordingHost final : public EnvoyHost {
 public:
  void OnStartActor(StartActor start) override { starts.push_back(std::move(start)); }
  void OnStopActor(const std::string& actor_id, uint32_t generation,
                   v::StopActorReason reason) override {
    stops.emplace_back(actor_id, generation, reason);
    if (on_stop) on_stop(actor_id, generation);
  }
  void OnTunnelMessage(const std::string& actor_id, const v::ToEnvoyTunnelMessage& m) override {
    tunnel.emplace_back(actor_id, m);
  }
  void OnConnected(const v::ProtocolMetadata&) override { ++connected; }
  void OnDisconnected() override { ++disconnected; }
  void OnShutdown() override { ++shutdowns; }

  std::vector<StartActor> starts;
  std::vector<std::tuple<std::string, uint32_t, v::StopActorReason>> stops;
  std::vector<std::pair<std::string, v::ToEnvoyTunnelMessage>> tunnel;
  int connected = 0;
  int disconnected = 0;
  int shutdowns = 0;
  // Runs inside OnStopActor (e.g. to stop synchronously).
  std::function<void(const std::string&, uint32_t)> on_stop;
};

inline v::CommandWrapper StartCmd(const std::string& actor, uint32_t gen, int64_t index) {
  v::CommandStartActor start;
  start.config.name = "counter";
  start.config.create_ts = 1234;
  return v::CommandWrapper{v::ActorCheckpoint{actor, gen, index}, v::Command{std::move(start)}};
}

inline v::CommandWrapper StopCmd(const std::string& actor, uint32_t gen, int64_t index,
                                 v::StopActorReason reason = v::StopActorReason::kSleepIntent) {
  return v::CommandWrapper{v::ActorCheckpoint{actor, gen, index},
                           v::Command{v::CommandStopActor{reason}}};
}

inline v::KvRequestData KvGet(std::string key) {
  v::KvGetRequest get;
  get.keys.push_back(Bytes(key.begin(), key.end()));
  return v::KvRequestData{std::move(get)};
}

class EnvoyClientTest : public ::testing::Test {
 protected:
  void Make(EnvoyConfig config = {}) {
    if (config.envoy_key.empty() && !random_key_) config.envoy_key = "test-envoy";
    version_ = config.protocol_version;
    client_ = std::make_unique<EnvoyClient>(std::move(config), clock_, random_, transport_, host_);
  }

  // Start + open + Init; drops what was sent so far. `max_payload`: the Init's
  // maxResponsePayloadSize.
  void Connect(int64_t lost_threshold_ms = 10000, uint64_t max_payload = 20 << 20) {
    if (client_ == nullptr) Make();
    client_->Start();
    client_->OnOpen();
    Init(lost_threshold_ms, max_payload);
    transport_.sent.clear();
  }

  void Init(int64_t lost_threshold_ms = 10000, uint64_t max_payload = 20 << 20) {
    Deliver(v::ToEnvoyInit{v::ProtocolMetadata{lost_threshold_ms, 30000, max_payload}});
  }

  void Deliver(const v::ToEnvoy& msg) {
    Bytes frame;
    auto encoded = pe::EncodeToEnvoy(msg, version_, frame);
    ASSERT_TRUE(encoded.has_value());
    client_->OnFrame(frame);
  }

  void Commands(std::vector<v::CommandWrapper> commands) {
    Deliver(v::ToEnvoyCommands{std::move(commands)});
  }

  // Every frame sent so far, decoded at the connection's version.
  std::vector<v::ToRivet> Sent() {
    std::vector<v::ToRivet> out;
    for (const auto& frame : transport_.sent) {
      auto msg = pe::DecodeToRivet(frame, version_);
      EXPECT_TRUE(msg.has_value());
      if (msg.has_value()) out.push_back(std::move(*msg));
    }
    return out;
  }
  std::vector<v::ToRivet> TakeSent() {
    auto out = Sent();
    transport_.sent.clear();
    return out;
  }
  template <typename T>
  std::vector<T> SentOf() {
    std::vector<T> out;
    for (auto& m : Sent()) {
      if (auto* t = m.get_if<T>()) out.push_back(*t);
    }
    return out;
  }
  // All sent events, flattened.
  std::vector<v::EventWrapper> SentEvents() {
    std::vector<v::EventWrapper> out;
    for (auto& e : SentOf<v::ToRivetEvents>()) {
      for (auto& w : e.value) out.push_back(w);
    }
    return out;
  }

  // Closes the socket, then advances timer by timer (the lost timer and sweeps may come
  // first) until the client connects again; returns how long that took.
  Duration DropAndReconnect(const std::string& reason = "ws.closed") {
    const size_t before = transport_.connects.size();
    client_->OnClosed(1006, reason);
    const MonoTime dropped = clock_.MonotonicNow();
    while (transport_.connects.size() == before && clock_.NextDeadline().has_value()) {
      clock_.AdvanceTo(*clock_.NextDeadline());
    }
    return clock_.MonotonicNow() - dropped;
  }

  ManualClock clock_;
  Random random_{7};
  FakeTransport transport_;
  RecordingHost host_;
  std::unique_ptr<EnvoyClient> client_;
  uint16_t version_ = 4;
  bool random_key_ = false;
};

}  // namespace keel::envoy::test
