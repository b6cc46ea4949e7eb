// RuntimeHarness: the actor runtime core and its envoy client, stepped deterministically
// against a scripted fake engine — a ManualClock for time, a fake transport for the
// socket, and an in-memory actor KV the fake engine answers from.
//
// The fake engine answers nothing by itself: Pump() processes what the runtime sent
// (KV requests are applied and answered unless `hold_kv` is set, events are recorded and
// SetAlarm is acknowledged at once, like keel-engine), and tests inspect what came back.
// Everything runs on the test thread.
#pragma once

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/manual_clock.h"
#include "base/random.h"
#include "envoy/envoy_client.h"
#include "protocol/envoy/versioned.h"
#include "protocol/persist/versioned.h"
#include "runtime/core.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::testing {

namespace latest = protocol::envoy::latest;

class HarnessTransport final : public envoy::Transport {
 public:
  void Connect(const std::string& url, const std::vector<std::string>& subprotocols) override {
    connects.push_back(url);
    (void)subprotocols;
    pending_connect = true;
  }
  void Send(Bytes frame) override { sent.push_back(std::move(frame)); }
  void Close(uint16_t code, const std::string& reason) override {
    closes.emplace_back(code, reason);
  }
  std::vector<std::string> connects;
  bool pending_connect = false;
  std::deque<Bytes> sent;
  std::vector<std::pair<uint16_t, std::string>> closes;
};

// What came back on one tunnel request.
struct TunnelReply {
  std::optional<latest::ToRivetResponseStart> response;
  bool ws_open = false;
  std::optional<latest::ToRivetWebSocketClose> ws_close;
  std::vector<latest::ToRivetWebSocketMessage> ws_messages;
  std::optional<uint16_t> last_ack;  // ToRivetWebSocketMessageAck
};

class RuntimeHarness {
 public:
  explicit RuntimeHarness(runtime::RuntimeOptions options = {}, uint64_t seed = 7)
      : clock_(MonoTime(std::chrono::seconds(1000)), 1'700'000'000'000),
        random_(seed),
        runtime_(std::move(options), clock_, random_) {}

  // Registers types, builds the envoy client and connects it (Init exchanged).
  void Boot(std::vector<std::shared_ptr<const runtime::ActorType>> types) {
    for (auto& t : types) runtime_.Register(std::move(t));
    envoy::EnvoyConfig cfg;
    cfg.endpoint = "http://127.0.0.1:6420";
    cfg.protocol_version = protocol_version;
    cfg.actor_names = runtime_.ActorNames();
    client_ = std::make_unique<envoy::EnvoyClient>(cfg, clock_, random_, transport_, runtime_);
    runtime_.Attach(*client_);
    client_->Start();
    Connect();
  }

  void Connect() {
    ASSERT_TRUE(transport_.pending_connect);
    transport_.pending_connect = false;
    client_->OnOpen(engine_holds_outputs);
    latest::ProtocolMetadata meta;
    meta.envoy_lost_threshold = 15000;
    meta.actor_stop_threshold = 30000;
    meta.max_response_payload_size = max_response_payload;
    Deliver(latest::ToEnvoy{latest::ToEnvoyInit{meta}});
    Pump();
  }

  void Disconnect() {
    client_->OnClosed(1006, "");
    transport_.sent.clear();
  }

  void Deliver(const latest::ToEnvoy& msg) {
    Bytes frame;
    auto r = protocol::envoy::EncodeToEnvoy(msg, client_->protocol_version(), frame);
    ASSERT_TRUE(r.ok());
    client_->OnFrame(frame);
  }

  // Sends a start command; returns its command index.
  int64_t StartActor(const std::string& actor_id, const std::string& name, uint32_t generation = 1,
                     std::optional<Value> input = std::nullopt, std::string key = "/",
                     std::vector<latest::MessageId> hibernating = {}) {
    latest::CommandStartActor start;
    for (const auto& h : hibernating) start.hibernating_requests.push_back({h.gateway_id, h.request_id});
    start.config.name = name;
    start.config.key = key;
    start.config.create_ts = clock_.SystemNowMs();
    if (input) start.config.input = EncodeCbor(*input);
    return SendCommand(actor_id, generation, latest::Command{std::move(start)});
  }

  int64_t StopActor(const std::string& actor_id, uint32_t generation,
                    latest::StopActorReason reason = latest::StopActorReason::kSleepIntent) {
    latest::CommandStopActor stop;
    stop.reason = reason;
    return SendCommand(actor_id, generation, latest::Command{stop});
  }

  int64_t SendCommand(const std::string& actor_id, uint32_t generation, latest::Command cmd) {
    int64_t& index = command_index_[{actor_id, generation}];
    ++index;
    latest::CommandWrapper w;
    w.checkpoint = latest::ActorCheckpoint{actor_id, generation, index};
    w.inner = std::move(cmd);
    last_commands_ = latest::ToEnvoyCommands{{w}};
    Deliver(latest::ToEnvoy{*last_commands_});
    Pump();
    return index;
  }
  // Delivers the last command batch again (a replay).
  void ReplayLastCommands() {
    Deliver(latest::ToEnvoy{*last_commands_});
    Pump();
  }

  // Processes everything the runtime sent, repeatedly, until it is quiet.
  void Pump() {
    for (int round = 0; round < 1000; ++round) {
      clock_.Advance(Duration::zero());
      if (transport_.sent.empty()) return;
      while (!transport_.sent.empty()) {
        Bytes frame = std::move(transport_.sent.front());
        transport_.sent.pop_front();
        auto msg = protocol::envoy::DecodeToRivet(frame, client_->protocol_version());
        ASSERT_TRUE(msg.ok()) << msg.error().ToString();
        Handle(*msg);
      }
    }
    FAIL() << "runtime never went quiet";
  }

  // Answers held KV requests (in order) and pumps.
  void ReleaseKv() { ReleaseOldestKv(held_kv_.size()); }
  // Answers the `n` oldest held KV requests (in order; the rest stay held) and pumps.
  void ReleaseOldestKv(size_t n = 1) {
    n = std::min(n, held_kv_.size());
    std::vector<latest::ToRivetKvRequest> first(held_kv_.begin(), held_kv_.begin() + static_cast<ptrdiff_t>(n));
    held_kv_.erase(held_kv_.begin(), held_kv_.begin() + static_cast<ptrdiff_t>(n));
    for (auto& req : first) AnswerKv(req);
    Pump();
  }
  // Answers every held KV request with KvErrorResponse{`error`} (a rejected or unsynced
  // write, as the engine reports it) and pumps.
  void FailHeldKv(const std::string& error) {
    auto held = std::move(held_kv_);
    held_kv_.clear();
    for (auto& req : held) {
      latest::ToEnvoyKvResponse resp;
      resp.request_id = req.request_id;
      resp.data = latest::KvResponseData{latest::KvErrorResponse{error}};
      Deliver(latest::ToEnvoy{std::move(resp)});
    }
    Pump();
  }
  size_t held_kv() const { return held_kv_.size(); }
  const std::vector<latest::ToRivetKvRequest>& held_kv_requests() const { return held_kv_; }
  // Forgets held KV requests unanswered (their answers are lost with a socket).
  void DropHeldKv() { held_kv_.clear(); }

  void Advance(Duration d) {
    clock_.Advance(d);
    Pump();
  }

  // ---- Tunnel ----
  latest::MessageId NextMessageId() {
    latest::MessageId id;
    ++next_request_;
    id.gateway_id = {1, 2, 3, 4};
    for (int i = 0; i < 4; ++i) id.request_id[i] = static_cast<uint8_t>(next_request_ >> (8 * i));
    return id;
  }

  // Sends an HTTP request to an actor; returns the request id to look up its reply.
  latest::MessageId Http(const std::string& actor_id, const std::string& method, const std::string& path,
                         std::string body = "",
                         std::vector<std::pair<std::string, std::string>> headers = {}) {
    latest::MessageId id = NextMessageId();
    latest::ToEnvoyRequestStart start;
    start.actor_id = actor_id;
    start.method = method;
    start.path = path;
    start.headers = std::move(headers);
    if (!body.empty()) start.body = Bytes(body.begin(), body.end());
    latest::ToEnvoyTunnelMessage m;
    m.message_id = id;
    m.message_kind = std::move(start);
    Deliver(latest::ToEnvoy{std::move(m)});
    Pump();
    return id;
  }

  // POST /action/<name> with a JSON body {"args": args_json}.
  latest::MessageId Action(const std::string& actor_id, const std::string& name,
                           const std::string& args_json) {
    return Http(actor_id, "POST", "/action/" + name, "{\"args\":" + args_json + "}",
                {{"x-rivet-encoding", "json"}});
  }

  latest::MessageId OpenWs(const std::string& actor_id, const std::string& path,
                           const std::string& protocols) {
    latest::MessageId id = NextMessageId();
    latest::ToEnvoyWebSocketOpen open;
    open.actor_id = actor_id;
    open.path = path;
    open.headers = {{"sec-websocket-protocol", protocols}};
    latest::ToEnvoyTunnelMessage m;
    m.message_id = id;
    m.message_kind = std::move(open);
    Deliver(latest::ToEnvoy{std::move(m)});
    Pump();
    return id;
  }

  void WsSend(latest::MessageId id, Bytes data, bool binary) {
    WsSendAt(id, std::move(data), binary, ++ws_index_[id.request_id]);
  }
  // With an explicit gateway message index (a replay after wake reuses old indexes).
  void WsSendAt(latest::MessageId id, Bytes data, bool binary, uint16_t index) {
    latest::ToEnvoyWebSocketMessage msg;
    msg.data = std::move(data);
    msg.binary = binary;
    latest::ToEnvoyTunnelMessage m;
    m.message_id = id;
    m.message_id.message_index = index;
    m.message_kind = std::move(msg);
    Deliver(latest::ToEnvoy{std::move(m)});
    Pump();
  }

  void WsClose(latest::MessageId id) {
    latest::ToEnvoyTunnelMessage m;
    m.message_id = id;
    m.message_kind = latest::ToEnvoyWebSocketClose{1000, std::string("bye")};
    Deliver(latest::ToEnvoy{std::move(m)});
    Pump();
  }

  TunnelReply& Reply(const latest::MessageId& id) { return replies_[id.request_id]; }
  // The JSON body of an HTTP reply (empty when there is none yet).
  std::string Body(const latest::MessageId& id) {
    auto& r = Reply(id);
    if (!r.response || !r.response->body) return "";
    return std::string(r.response->body->begin(), r.response->body->end());
  }
  uint16_t Status(const latest::MessageId& id) {
    auto& r = Reply(id);
    return r.response ? r.response->status : 0;
  }

  // ---- State the fake engine keeps ----
  std::map<Bytes, Bytes>& kv(const std::string& actor_id) { return kv_[actor_id]; }
  std::optional<Value> PersistedState(const std::string& actor_id);
  const std::vector<latest::EventWrapper>& events() const { return events_; }
  // Events of one kind for one actor.
  template <typename T>
  std::vector<T> EventsOf(const std::string& actor_id) const {
    std::vector<T> out;
    for (const auto& e : events_) {
      if (e.checkpoint.actor_id != actor_id) continue;
      if (const T* t = e.inner.template get_if<T>()) out.push_back(*t);
    }
    return out;
  }
  // The Stopped event of an actor generation, if any.
  std::optional<latest::ActorStateStopped> Stopped(const std::string& actor_id, uint32_t generation) const {
    for (const auto& e : events_) {
      if (e.checkpoint.actor_id != actor_id || e.checkpoint.generation != generation) continue;
      if (const auto* su = e.inner.template get_if<latest::EventActorStateUpdate>()) {
        if (const auto* st = su->state.template get_if<latest::ActorStateStopped>()) return *st;
      }
    }
    return std::nullopt;
  }
  bool Running(const std::string& actor_id, uint32_t generation) const {
    for (const auto& e : events_) {
      if (e.checkpoint.actor_id != actor_id || e.checkpoint.generation != generation) continue;
      if (const auto* su = e.inner.template get_if<latest::EventActorStateUpdate>()) {
        if (su->state.template is<latest::ActorStateRunning>()) return true;
      }
    }
    return false;
  }
  size_t kv_puts() const { return kv_puts_; }
  size_t kv_requests() const { return kv_requests_; }  // received, answered or held

  bool hold_kv = false;
  bool ack_alarms = true;
  // The wire version Boot connects at.
  uint16_t protocol_version = 4;
  // The Init's maxResponsePayloadSize (the engine's tunnel payload limit).
  uint64_t max_response_payload = uint64_t{20} << 20;
  // SQLite page and remote SQL requests, in the order the runtime sent them; answered by
  // `answer_sql` (when set and `hold_sql` is off) as they arrive.
  std::vector<latest::ToRivet> sql_requests;
  bool hold_sql = false;
  std::function<std::optional<latest::ToEnvoy>(const latest::ToRivet&)> answer_sql;
  // Tunnel messages in the order the runtime sent them, with the KV put count at the time
  // (the output gate check: a response must come after the put carrying its writes).
  struct Sent {
    latest::ToRivetTunnelMessage message;
    size_t kv_puts_before;      // KV writes answered before it
    size_t kv_requests_before;  // KV requests received (answered or held) before it
    size_t sql_requests_before;  // SQLite requests received (answered or held) before it
    size_t events_before = 0;    // events received before it
  };
  // Claimed at every Connect: the engine holds outputs (EnvoyClient::engine_holds_outputs).
  bool engine_holds_outputs = false;
  std::vector<Sent> tunnel_log;
  // ToRivetAckCommands in the order the runtime sent them.
  std::vector<latest::ToRivetAckCommands> command_acks;

  ManualClock& clock() { return clock_; }
  runtime::Runtime& runtime() { return runtime_; }
  envoy::EnvoyClient& client() { return *client_; }
  HarnessTransport& transport() { return transport_; }

 private:
  void Handle(const latest::ToRivet& msg) {
    const auto& v = msg.value;
    if (const auto* kv = std::get_if<latest::ToRivetKvRequest>(&v)) {
      ++kv_requests_;
      if (hold_kv) {
        held_kv_.push_back(*kv);
      } else {
        AnswerKv(*kv);
      }
    } else if (const auto* evs = std::get_if<latest::ToRivetEvents>(&v)) {
      for (const auto& e : evs->value) {
        auto& seen = event_index_[{e.checkpoint.actor_id, e.checkpoint.generation}];
        if (e.checkpoint.index < seen) continue;  // a resend
        seen = e.checkpoint.index + 1;
        events_.push_back(e);
        if (ack_alarms && e.inner.template is<latest::EventActorSetAlarm>()) {
          latest::ToEnvoyAckEvents ack;
          ack.last_event_checkpoints.push_back(e.checkpoint);
          Deliver(latest::ToEnvoy{ack});
        }
      }
    } else if (const auto* ack = std::get_if<latest::ToRivetAckCommands>(&v)) {
      command_acks.push_back(*ack);
    } else if (const auto* t = std::get_if<latest::ToRivetTunnelMessage>(&v)) {
      tunnel_log.push_back(Sent{*t, kv_puts_, kv_requests_, sql_requests.size(), events_.size()});
      auto& r = replies_[t->message_id.request_id];
      const auto& k = t->message_kind.value;
      if (const auto* s = std::get_if<latest::ToRivetResponseStart>(&k)) r.response = *s;
      if (std::holds_alternative<latest::ToRivetWebSocketOpen>(k)) r.ws_open = true;
      if (const auto* c = std::get_if<latest::ToRivetWebSocketClose>(&k)) r.ws_close = *c;
      if (const auto* m = std::get_if<latest::ToRivetWebSocketMessage>(&k)) r.ws_messages.push_back(*m);
      if (const auto* a = std::get_if<latest::ToRivetWebSocketMessageAck>(&k)) r.last_ack = a->index;
    } else if (std::holds_alternative<latest::ToRivetSqliteGetPagesRequest>(v) ||
               std::holds_alternative<latest::ToRivetSqliteCommitRequest>(v) ||
               std::holds_alternative<latest::ToRivetSqliteExecRequest>(v) ||
               std::holds_alternative<latest::ToRivetSqliteExecuteRequest>(v) ||
               std::holds_alternative<latest::ToRivetSqliteExecuteWriteRequest>(v)) {
      sql_requests.push_back(msg);
      if (!hold_sql && answer_sql) {
        if (auto answer = answer_sql(msg)) Deliver(*answer);
      }
    }
  }

  void AnswerKv(const latest::ToRivetKvRequest& req) {
    auto& store = kv_[req.actor_id];
    latest::ToEnvoyKvResponse resp;
    resp.request_id = req.request_id;
    const auto& d = req.data.value;
    if (const auto* get = std::get_if<latest::KvGetRequest>(&d)) {
      latest::KvGetResponse out;
      for (const auto& k : get->keys) {
        auto it = store.find(k);
        if (it == store.end()) continue;
        out.keys.push_back(k);
        out.values.push_back(it->second);
        out.metadata.push_back({});
      }
      resp.data = latest::KvResponseData{std::move(out)};
    } else if (const auto* put = std::get_if<latest::KvPutRequest>(&d)) {
      for (size_t i = 0; i < put->keys.size(); ++i) store[put->keys[i]] = put->values[i];
      ++kv_puts_;
      resp.data = latest::KvResponseData{latest::KvPutResponse{}};
    } else if (const auto* del = std::get_if<latest::KvDeleteRequest>(&d)) {
      for (const auto& k : del->keys) store.erase(k);
      ++kv_puts_;
      resp.data = latest::KvResponseData{latest::KvDeleteResponse{}};
    } else if (const auto* list = std::get_if<latest::KvListRequest>(&d)) {
      latest::KvListResponse out;
      const auto& q = list->query.value;
      std::vector<std::pair<Bytes, Bytes>> rows;
      for (const auto& [k, val] : store) {
        bool in = false;
        if (std::holds_alternative<latest::KvListAllQuery>(q)) in = true;
        if (const auto* p = std::get_if<latest::KvListPrefixQuery>(&q)) {
          in = k.size() >= p->key.size() && std::equal(p->key.begin(), p->key.end(), k.begin());
        }
        if (const auto* r = std::get_if<latest::KvListRangeQuery>(&q)) {
          in = k >= r->start && (r->exclusive ? k < r->end : k <= r->end);
        }
        if (in) rows.emplace_back(k, val);
      }
      if (list->reverse.value_or(false)) std::reverse(rows.begin(), rows.end());
      if (list->limit && rows.size() > *list->limit) rows.resize(*list->limit);
      for (auto& [k, val] : rows) {
        out.keys.push_back(k);
        out.values.push_back(val);
        out.metadata.push_back({});
      }
      resp.data = latest::KvResponseData{std::move(out)};
    } else if (const auto* dr = std::get_if<latest::KvDeleteRangeRequest>(&d)) {
      store.erase(store.lower_bound(dr->start), store.lower_bound(dr->end));
      ++kv_puts_;
      resp.data = latest::KvResponseData{latest::KvDeleteResponse{}};
    } else {
      resp.data = latest::KvResponseData{latest::KvErrorResponse{"kv.unsupported: not in the fake"}};
    }
    Deliver(latest::ToEnvoy{std::move(resp)});
  }

  ManualClock clock_;
  Random random_;
  HarnessTransport transport_;
  runtime::Runtime runtime_;
  std::unique_ptr<envoy::EnvoyClient> client_;
  std::map<std::pair<std::string, uint32_t>, int64_t> command_index_;
  std::map<std::pair<std::string, uint32_t>, int64_t> event_index_;
  std::optional<latest::ToEnvoyCommands> last_commands_;
  std::map<std::string, std::map<Bytes, Bytes>> kv_;
  std::vector<latest::ToRivetKvRequest> held_kv_;
  std::vector<latest::EventWrapper> events_;
  std::map<latest::RequestId, TunnelReply> replies_;
  std::map<latest::RequestId, uint16_t> ws_index_;
  uint32_t next_request_ = 0;
  size_t kv_puts_ = 0;
  size_t kv_requests_ = 0;
};

inline std::optional<Value> RuntimeHarness::PersistedState(const std::string& actor_id) {
  auto& store = kv_[actor_id];
  auto it = store.find(Bytes{1});
  if (it == store.end()) return std::nullopt;
  auto record = protocol::persist::ReadActor(it->second);
  if (!record.ok()) return std::nullopt;
  auto v = DecodeCbor(record->state);
  if (!v.ok()) return std::nullopt;
  return std::move(*v);
}

}  // namespace keel::testing
