// Proves the runtime core and the envoy client core compile, link and run under
// WebAssembly: a counter actor is started by a scripted engine, answers an HTTP action,
// and its state reaches the (fake) engine's KV before the response. Built only by the
// `wasm` preset; scripts/test.sh runs it under Node.
#include <cstdio>
#include <deque>
#include <map>
#include <string>

#include "base/manual_clock.h"
#include "base/random.h"
#include "counter/counter.h"
#include "envoy/envoy_client.h"
#include "protocol/envoy/versioned.h"
#include "runtime/core.h"

namespace latest = keel::protocol::envoy::latest;

namespace {

struct Transport final : keel::envoy::Transport {
  void Connect(const std::string&, const std::vector<std::string>&) override { connecting = true; }
  void Send(keel::Bytes frame) override { sent.push_back(std::move(frame)); }
  void Close(uint16_t, const std::string&) override {}
  bool connecting = false;
  std::deque<keel::Bytes> sent;
};

int failures = 0;
void Check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  keel::ManualClock clock(keel::MonoTime(std::chrono::seconds(1)), 1'700'000'000'000);
  keel::Random random(1);
  Transport transport;
  keel::runtime::Runtime runtime({}, clock, random);
  runtime.Register(examples::MakeCounter().type());
  keel::envoy::EnvoyConfig cfg;
  cfg.actor_names = runtime.ActorNames();
  keel::envoy::EnvoyClient client(cfg, clock, random, transport, runtime);
  runtime.Attach(client);
  client.Start();
  Check(transport.connecting, "connect requested");

  std::map<keel::Bytes, keel::Bytes> kv;
  std::string response;
  auto deliver = [&](const latest::ToEnvoy& msg) {
    keel::Bytes frame;
    if (!keel::protocol::envoy::EncodeToEnvoy(msg, 4, frame).ok()) Check(false, "encode");
    client.OnFrame(frame);
  };
  // The fake engine: applies KV puts, answers gets, records the HTTP response.
  auto pump = [&] {
    for (int round = 0; round < 100 && !transport.sent.empty(); ++round) {
      keel::Bytes frame = std::move(transport.sent.front());
      transport.sent.pop_front();
      auto msg = keel::protocol::envoy::DecodeToRivet(frame, 4);
      if (!msg.ok()) continue;
      if (auto* req = msg->get_if<latest::ToRivetKvRequest>()) {
        latest::ToEnvoyKvResponse resp;
        resp.request_id = req->request_id;
        if (auto* put = req->data.get_if<latest::KvPutRequest>()) {
          for (size_t i = 0; i < put->keys.size(); ++i) kv[put->keys[i]] = put->values[i];
          resp.data = latest::KvResponseData{latest::KvPutResponse{}};
        } else {
          resp.data = latest::KvResponseData{latest::KvGetResponse{}};
        }
        deliver(latest::ToEnvoy{resp});
      } else if (auto* t = msg->get_if<latest::ToRivetTunnelMessage>()) {
        if (auto* start = t->message_kind.get_if<latest::ToRivetResponseStart>()) {
          if (start->body) response.assign(start->body->begin(), start->body->end());
        }
      }
      clock.Advance(keel::Duration::zero());
    }
  };

  client.OnOpen();
  deliver(latest::ToEnvoy{latest::ToEnvoyInit{latest::ProtocolMetadata{15000, 30000, 1 << 20}}});
  pump();
  latest::CommandStartActor start;
  start.config.name = "counter";
  start.config.key = "/";
  deliver(latest::ToEnvoy{latest::ToEnvoyCommands{{{latest::ActorCheckpoint{"a1", 1, 1}, start}}}});
  pump();
  latest::ToEnvoyRequestStart req;
  req.actor_id = "a1";
  req.method = "POST";
  req.path = "/action/increment";
  req.headers = {{"x-rivet-encoding", "json"}};
  std::string body = R"({"args":[5]})";
  req.body = keel::Bytes(body.begin(), body.end());
  latest::ToEnvoyTunnelMessage tunnel;
  tunnel.message_id.request_id = {0, 0, 0, 1};
  tunnel.message_kind = req;
  deliver(latest::ToEnvoy{tunnel});
  pump();
  Check(response == R"({"output":5})", "increment(5) answered {\"output\":5}");
  Check(kv.count(keel::Bytes{1}) == 1, "actor record persisted at KV [1]");
  std::printf("%s: runtime smoke (%s)\n", failures == 0 ? "OK" : "FAILED", response.c_str());
  return failures == 0 ? 0 : 1;
}
