#include "envoy/envoy_client.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "base/log.h"
#include "engine/gateway/envoy_connect.h"
#include "protocol/conversion.h"

namespace keel::envoy {
namespace {

constexpr std::string_view kLog = "envoy_client";
constexpr uint16_t kServerlessVersion = 4;

using ActorKey = std::pair<std::string, uint32_t>;
using RouteKey = std::pair<latest::GatewayId, latest::RequestId>;

Error ShutdownError() { return Error("envoy", "shutdown", "envoy shutting down"); }

// A close reason "group.code#ray" (§3.6); nullopt when it does not parse.
std::optional<std::pair<std::string, std::string>> ParseCloseReason(std::string_view reason) {
  const std::string_view main = reason.substr(0, reason.find('#'));
  const size_t dot = main.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == main.size()) return std::nullopt;
  return std::make_pair(std::string(main.substr(0, dot)), std::string(main.substr(dot + 1)));
}

std::string RandomEnvoyKey(Random& random) {
  static constexpr std::string_view kAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string key(24, '0');
  for (char& c : key) c = kAlphabet[random.Uniform<size_t>(0, kAlphabet.size() - 1)];
  return key;
}

// True when an outgoing tunnel message ends its request: no more traffic for it can
// arrive from the gateway that the actor would still care about (§6.3, §6.4).
bool EndsRequest(const latest::ToRivetTunnelMessage& message) {
  const auto& kind = message.message_kind;
  if (const auto* start = kind.get_if<latest::ToRivetResponseStart>()) return !start->stream;
  if (const auto* chunk = kind.get_if<latest::ToRivetResponseChunk>()) return chunk->finish;
  return kind.is<latest::ToRivetResponseAbort>() || kind.is<latest::ToRivetWebSocketClose>();
}

}  // namespace

struct EnvoyClient::State {
  // One hosted actor instance (§4.4–§4.7).
  struct Actor {
    int64_t last_command_index = 0;
    bool stop_received = false;
    int64_t next_event_index = 0;
    // Unacknowledged events by index, resent after every Init.
    std::map<int64_t, latest::EventWrapper> history;
    // SetAlarm acknowledgements waiting for ToEnvoyAckEvents, by event index.
    std::map<int64_t, AckCallback> alarm_acks;
  };

  struct PendingKv {
    uint64_t seq = 0;  // creation order: unsent requests go out in it
    std::string actor_id;
    latest::KvRequestData data;
    KvCallback done;
    bool sent = false;
    MonoTime deadline;
  };

  enum class Socket : uint8_t { kNone, kConnecting, kOpen };

  State(EnvoyConfig c, Clock& clk, Random& rnd, Transport& t, EnvoyHost& h)
      : config(std::move(c)), clock(clk), random(rnd), transport(t), host(h) {
    envoy_key = config.envoy_key.empty() ? RandomEnvoyKey(random) : config.envoy_key;
  }

  EnvoyConfig config;
  Clock& clock;
  Random& random;
  Transport& transport;
  EnvoyHost& host;
  std::string envoy_key;

  Socket socket = Socket::kNone;
  bool init_on_socket = false;
  bool running = false;  // Start() called and not shut down
  bool started = false;  // an Init arrived at least once
  bool shutting_down = false;
  bool shut_down = false;
  std::optional<latest::ProtocolMetadata> metadata;

  // Reconnect loop (§3.7).
  uint32_t attempt = 0;
  MonoTime connect_started;
  TimerId reconnect_timer{};
  TimerId lost_timer{};
  TimerId sweep_timer{};
  TimerId ack_timer{};

  std::map<ActorKey, Actor> actors;
  // processed[(actor, generation)] = highest command index seen (§4.4); survives actor
  // removal so that a replayed start cannot resurrect a stopped instance.
  std::map<ActorKey, int64_t> processed;

  uint32_t next_kv_id = 0;
  uint64_t next_kv_seq = 0;
  std::map<uint32_t, PendingKv> kv;

  std::map<RouteKey, std::string> routes;
  std::deque<latest::ToRivetTunnelMessage> buffered_tunnel;

  // Serverless starts waiting for the first Init (§4.9).
  std::vector<latest::ToEnvoyCommands> queued_starts;

  uint64_t malformed_frames = 0;
  uint64_t unroutable_tunnel = 0;
  uint64_t duplicate_commands = 0;

  // ---- Output ----

  Result<Bytes> Encode(const latest::ToRivet& message) const {
    Bytes out;
    auto encoded = protocol::envoy::EncodeToRivet(message, config.protocol_version, out);
    if (!encoded.has_value()) return protocol::ToError(encoded.error());
    return out;
  }

  // Encodes and writes `message` on the open socket. False (with the reason in `error` if
  // given) when there is no socket or the negotiated version cannot carry the message.
  bool Send(const latest::ToRivet& message, Error* error = nullptr) {
    if (socket != Socket::kOpen) {
      if (error != nullptr) *error = Error("envoy", "not_connected", "no open envoy socket");
      return false;
    }
    auto bytes = Encode(message);
    if (!bytes.has_value()) {
      KEEL_LOG(kWarn, kLog, "dropping a message the connection's version cannot carry",
               {{"error", bytes.error().ToString()}});
      if (error != nullptr) *error = bytes.error();
      return false;
    }
    transport.Send(std::move(*bytes));
    return true;
  }

  // ---- Connection loop ----

  void Connect() {
    if (!running || shutting_down) return;
    connect_started = clock.MonotonicNow();
    socket = Socket::kConnecting;
    init_on_socket = false;
    transport.Connect(ConnectUrl(), Subprotocols());
  }

  std::string ConnectUrl() const {
    engine::gateway::EnvoyConnectParams params;
    params.protocol_version = config.protocol_version;
    params.namespace_name = config.namespace_name;
    params.envoy_key = envoy_key;
    params.version = config.version;
    params.pool_name = config.pool_name;
    return engine::gateway::BuildEnvoyConnectUrl(config.endpoint, params);
  }

  std::vector<std::string> Subprotocols() const {
    std::vector<std::string> out{"rivet"};
    if (!config.token.empty()) out.push_back("rivet_token." + config.token);
    return out;
  }

  Duration BackoffDelay() {
    // min(initial * 2^attempt, max), without overflowing for large attempts.
    const double initial = static_cast<double>(config.backoff_initial.count());
    const double max = static_cast<double>(config.backoff_max.count());
    const double base = std::min(initial * std::pow(2.0, std::min<uint32_t>(attempt, 62)), max);
    const double jitter =
        config.backoff_jitter > 0 ? random.NextDouble() * config.backoff_jitter : 0;
    return std::chrono::milliseconds(static_cast<int64_t>(std::floor(base * (1.0 + jitter))));
  }

  void ScheduleReconnect() {
    const Duration delay = BackoffDelay();
    ++attempt;
    reconnect_timer = clock.ScheduleAfter(delay, [this] {
      reconnect_timer = TimerId{};
      Connect();
    });
  }

  void CancelTimer(TimerId& id) {
    if (id != TimerId{}) clock.Cancel(id);
    id = TimerId{};
  }

  void StartLostTimer() {
    if (lost_timer != TimerId{}) return;  // a running timer is not restarted (§3.5)
    const Duration threshold =
        metadata.has_value() ? Duration(std::chrono::milliseconds(metadata->envoy_lost_threshold))
                             : Duration(config.default_lost_threshold);
    lost_timer = clock.ScheduleAfter(threshold, [this] {
      lost_timer = TimerId{};
      OnLost();
    });
  }

  void ScheduleSweep() {
    sweep_timer = clock.ScheduleAfter(config.request_sweep_interval, [this] {
      sweep_timer = TimerId{};
      SweepKv();
      if (!shut_down) ScheduleSweep();
    });
  }

  void ScheduleAckCommands() {
    ack_timer = clock.ScheduleAfter(config.ack_commands_interval, [this] {
      ack_timer = TimerId{};
      AckCommands();
      if (!shut_down) ScheduleAckCommands();
    });
  }

  // ---- Lost timer and shutdown ----

  void OnLost() {
    KEEL_LOG(kWarn, kLog, "envoy lost: stopping every hosted actor",
             {{"envoy_key", envoy_key}, {"actors", std::to_string(actors.size())}});
    FailAllKv(Error("envoy", "lost", "envoy connection lost"));
    std::vector<ActorKey> keys;
    for (const auto& [key, actor] : actors) keys.push_back(key);
    for (const auto& key : keys) {
      if (actors.count(key) == 0) continue;  // removed by an earlier host callback
      host.OnStopActor(key.first, key.second, latest::StopActorReason::kLost);
    }
    ClearActors(Error("envoy", "lost", "envoy connection lost"));
    MaybeFinishShutdown();
  }

  void FailAllKv(const Error& error) {
    auto pending = std::move(kv);
    kv.clear();
    for (auto& [id, request] : pending) {
      if (request.done) request.done(error);
    }
  }

  void ClearActors(const Error& error) {
    auto gone = std::move(actors);
    actors.clear();
    routes.clear();
    for (auto& [key, actor] : gone) {
      for (auto& [index, done] : actor.alarm_acks) {
        if (done) done(error);
      }
    }
  }

  void MaybeFinishShutdown() {
    if (shutting_down && !shut_down && actors.empty()) Finish();
  }

  // The end of the client (§3.9 step 4): after shutdown or eviction.
  void Finish() {
    if (shut_down) return;
    shut_down = true;
    running = false;
    CancelTimer(reconnect_timer);
    CancelTimer(lost_timer);
    CancelTimer(sweep_timer);
    CancelTimer(ack_timer);
    if (socket != Socket::kNone) transport.Close(1000, "envoy.shutdown");
    socket = Socket::kNone;
    init_on_socket = false;
    FailAllKv(ShutdownError());
    ClearActors(ShutdownError());
    buffered_tunnel.clear();
    queued_starts.clear();
    host.OnShutdown();
  }

  // ---- Incoming ----

  void HandleInit(const latest::ToEnvoyInit& init) {
    metadata = init.metadata;
    const bool first = !started;
    started = true;
    init_on_socket = true;
    CancelTimer(lost_timer);

    // Every unacknowledged event of every hosted actor, in one ToRivetEvents (§4.7).
    latest::ToRivetEvents events;
    for (const auto& [key, actor] : actors) {
      for (const auto& [index, event] : actor.history) events.value.push_back(event);
    }
    if (!events.value.empty()) Send(latest::ToRivet{std::move(events)});

    // Requests created without a socket, in creation order (§3.10).
    std::vector<uint32_t> unsent;
    for (const auto& [id, request] : kv) {
      if (!request.sent) unsent.push_back(id);
    }
    std::sort(unsent.begin(), unsent.end(),
              [this](uint32_t a, uint32_t b) { return kv.at(a).seq < kv.at(b).seq; });
    for (uint32_t id : unsent) SendPendingKv(id);

    while (!buffered_tunnel.empty() && socket == Socket::kOpen) {
      latest::ToRivetTunnelMessage message = std::move(buffered_tunnel.front());
      buffered_tunnel.pop_front();
      Send(latest::ToRivet{std::move(message)});
    }

    host.OnConnected(*metadata);

    if (first) {
      auto queued = std::move(queued_starts);
      queued_starts.clear();
      for (auto& commands : queued) HandleCommands(commands);
    }
  }

  void HandleCommands(const latest::ToEnvoyCommands& commands) {
    for (const auto& wrapper : commands.value) {
      if (shut_down) return;
      const auto& cp = wrapper.checkpoint;
      ActorKey key{cp.actor_id, cp.generation};
      auto seen = processed.find(key);
      if (seen != processed.end() && cp.index <= seen->second) {
        ++duplicate_commands;
        continue;  // a replay (§4.4)
      }
      processed[key] = cp.index;

      if (const auto* start = wrapper.inner.get_if<latest::CommandStartActor>()) {
        auto [it, inserted] = actors.try_emplace(key);
        it->second.last_command_index = cp.index;
        if (!inserted) continue;  // the instance already runs; a second start means nothing
        StartActor out;
        out.actor_id = cp.actor_id;
        out.generation = cp.generation;
        out.command_index = cp.index;
        out.config = start->config;
        out.hibernating_requests = start->hibernating_requests;
        out.preloaded_kv = start->preloaded_kv;
        host.OnStartActor(std::move(out));
      } else if (const auto* stop = wrapper.inner.get_if<latest::CommandStopActor>()) {
        auto it = actors.find(key);
        if (it == actors.end()) {
          // Nothing to stop; the engine declares the actor lost eventually (§4.4).
          KEEL_LOG(kDebug, kLog, "stop for an actor this envoy does not host",
                   {{"actor_id", cp.actor_id}, {"generation", std::to_string(cp.generation)}});
          continue;
        }
        it->second.last_command_index = cp.index;
        if (it->second.stop_received) continue;  // a stop is already in progress
        it->second.stop_received = true;
        host.OnStopActor(cp.actor_id, cp.generation, stop->reason);
      }
    }
  }

  void HandleAckEvents(const latest::ToEnvoyAckEvents& ack) {
    std::vector<AckCallback> acked;
    for (const auto& cp : ack.last_event_checkpoints) {
      auto it = actors.find({cp.actor_id, cp.generation});
      if (it == actors.end()) continue;
      Actor& actor = it->second;
      actor.history.erase(actor.history.begin(), actor.history.upper_bound(cp.index));
      auto end = actor.alarm_acks.upper_bound(cp.index);
      for (auto a = actor.alarm_acks.begin(); a != end; ++a) acked.push_back(std::move(a->second));
      actor.alarm_acks.erase(actor.alarm_acks.begin(), end);
    }
    for (auto& done : acked) {
      if (done) done(OkStatus());
    }
  }

  void HandleKvResponse(latest::ToEnvoyKvResponse& response) {
    auto it = kv.find(response.request_id);
    if (it == kv.end()) return;  // timed out already, or not ours
    KvCallback done = std::move(it->second.done);
    kv.erase(it);
    if (done) done(std::move(response.data));
  }

  void HandleTunnel(const latest::ToEnvoyTunnelMessage& message) {
    const RouteKey key{message.message_id.gateway_id, message.message_id.request_id};
    const auto& kind = message.message_kind;
    std::string actor_id;
    if (const auto* start = kind.get_if<latest::ToEnvoyRequestStart>()) {
      actor_id = start->actor_id;
    } else if (const auto* open = kind.get_if<latest::ToEnvoyWebSocketOpen>()) {
      actor_id = open->actor_id;
    }

    if (!actor_id.empty()) {
      if (!HostsActorId(actor_id)) {
        RefuseUnknownActor(message);
        return;
      }
      routes[key] = actor_id;
    } else {
      auto route = routes.find(key);
      if (route == routes.end()) {
        ++unroutable_tunnel;
        KEEL_LOG(kDebug, kLog, "dropping tunnel message without a route");
        return;
      }
      actor_id = route->second;
      if (kind.is<latest::ToEnvoyRequestAbort>() || kind.is<latest::ToEnvoyWebSocketClose>()) {
        routes.erase(route);
      }
    }
    host.OnTunnelMessage(actor_id, message);
  }

  // A request start or WebSocket open for an actor id with no live instance: answered here
  // as the Rust envoy does (§6.3, §6.4), the host never sees it.
  void RefuseUnknownActor(const latest::ToEnvoyTunnelMessage& message) {
    ++unroutable_tunnel;
    latest::ToRivetTunnelMessage reply;
    reply.message_id = message.message_id;
    if (message.message_kind.is<latest::ToEnvoyRequestStart>()) {
      static constexpr std::string_view kBody = "Actor not found";
      latest::ToRivetResponseStart start;
      start.status = 503;
      start.headers = {{"x-rivet-error", "envoy.actor_not_found"},
                       {"content-length", std::to_string(kBody.size())}};
      start.body = Bytes(kBody.begin(), kBody.end());
      start.stream = false;
      reply.message_id.message_index = 0;
      reply.message_kind = std::move(start);
    } else {
      latest::ToRivetWebSocketClose close;
      close.code = 1011;
      close.reason = "Actor not found";
      close.hibernate = false;
      reply.message_kind = std::move(close);
    }
    Send(latest::ToRivet{std::move(reply)});
  }

  bool HostsActorId(const std::string& actor_id) const {
    auto it = actors.lower_bound({actor_id, 0});
    return it != actors.end() && it->first.first == actor_id;
  }

  // ---- Periodic work ----

  void SweepKv() {
    const MonoTime now = clock.MonotonicNow();
    std::vector<KvCallback> expired;
    for (auto it = kv.begin(); it != kv.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second.done));
        it = kv.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& done : expired) {
      if (done) done(Error("envoy", "kv_timeout", "KV request timed out"));
    }
  }

  // Keel deviation from Rivet (envoy-protocol.md §3.10 keeps sent KV requests pending until
  // the 30 s sweep, although their answer is lost with the socket): a KV request written to
  // a connection that closed fails at once with envoy.kv_indeterminate — it may or may not
  // have been applied — so the actor fails the outputs waiting on it and writes again now,
  // instead of stalling for 30 s after an engine restart. Unsent requests stay queued.
  void FailSentKv() {
    std::vector<KvCallback> failed;
    for (auto it = kv.begin(); it != kv.end();) {
      if (it->second.sent) {
        failed.push_back(std::move(it->second.done));
        it = kv.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& done : failed) {
      if (done) {
        done(Error("envoy", "kv_indeterminate",
                   "the connection closed after the KV request was sent; it may or may not have been applied"));
      }
    }
  }

  void AckCommands() {
    latest::ToRivetAckCommands ack;
    for (const auto& [key, actor] : actors) {
      if (actor.last_command_index < 0) continue;
      ack.last_command_checkpoints.push_back(
          latest::ActorCheckpoint{key.first, key.second, actor.last_command_index});
    }
    if (ack.last_command_checkpoints.empty()) return;
    std::vector<ActorKey> listed;
    for (const auto& cp : ack.last_command_checkpoints)
      listed.emplace_back(cp.actor_id, cp.generation);
    // Dedup state goes only when the ack reached a live socket (§4.3).
    if (!Send(latest::ToRivet{std::move(ack)})) return;
    for (const auto& key : listed) processed.erase(key);
  }

  // ---- Requests ----

  uint32_t NextKvId() {
    // Wraps around and skips ids still pending (§3.10 RECOMMENDATION).
    while (true) {
      const uint32_t id = next_kv_id++;
      if (kv.count(id) == 0) return id;
    }
  }

  void SendPendingKv(uint32_t id) {
    auto it = kv.find(id);
    if (it == kv.end() || socket != Socket::kOpen) return;
    latest::ToRivetKvRequest request;
    request.actor_id = it->second.actor_id;
    request.request_id = id;
    request.data = it->second.data;
    Error error;
    if (!Send(latest::ToRivet{std::move(request)}, &error)) {
      if (socket != Socket::kOpen) return;  // stays unsent
      KvCallback done = std::move(it->second.done);
      kv.erase(it);
      if (done) done(std::move(error));
      return;
    }
    it->second.sent = true;
    it->second.deadline = clock.MonotonicNow() + config.request_timeout;
  }

  // Appends an event to the actor's history and sends it when a socket exists (§4.7).
  void EmitEvent(const std::string& actor_id, uint32_t generation, latest::Event event,
                 AckCallback on_acked = {}) {
    if (shut_down) {
      if (on_acked) on_acked(ShutdownError());
      return;
    }
    auto it = actors.find({actor_id, generation});
    if (it == actors.end()) {
      KEEL_LOG(kDebug, kLog, "dropping an event for an actor this envoy does not host",
               {{"actor_id", actor_id}, {"generation", std::to_string(generation)}});
      if (on_acked) {
        on_acked(Error("envoy", "actor_not_found", "no such actor instance on this envoy"));
      }
      return;
    }
    Actor& actor = it->second;
    const int64_t index = actor.next_event_index++;
    latest::EventWrapper wrapper;
    wrapper.checkpoint = latest::ActorCheckpoint{actor_id, generation, index};
    wrapper.inner = std::move(event);
    actor.history.emplace(index, wrapper);
    if (on_acked) actor.alarm_acks.emplace(index, std::move(on_acked));
    if (socket == Socket::kOpen) {
      latest::ToRivetEvents events;
      events.value.push_back(std::move(wrapper));
      Send(latest::ToRivet{std::move(events)});
    }
  }
};

EnvoyClient::EnvoyClient(EnvoyConfig config, Clock& clock, Random& random, Transport& transport,
                         EnvoyHost& host)
    : s_(std::make_unique<State>(std::move(config), clock, random, transport, host)) {}

EnvoyClient::~EnvoyClient() {
  // Timers capture the state; the clock may outlive us.
  s_->CancelTimer(s_->reconnect_timer);
  s_->CancelTimer(s_->lost_timer);
  s_->CancelTimer(s_->sweep_timer);
  s_->CancelTimer(s_->ack_timer);
}

void EnvoyClient::Start() {
  if (s_->running || s_->shut_down) return;
  s_->running = true;
  s_->attempt = 0;
  s_->ScheduleSweep();
  s_->ScheduleAckCommands();
  s_->Connect();
}

void EnvoyClient::Shutdown(bool immediate) {
  State& s = *s_;
  if (s.shut_down) return;
  s.CancelTimer(s.reconnect_timer);
  if (immediate || !s.running) {
    s.shutting_down = true;
    s.Finish();
    return;
  }
  if (s.shutting_down) return;
  s.shutting_down = true;
  s.Send(latest::ToRivet{latest::ToRivetStopping{}});
  s.MaybeFinishShutdown();
}

void EnvoyClient::OnOpen() {
  State& s = *s_;
  if (s.socket != State::Socket::kConnecting) return;  // stale or after shutdown
  s.socket = State::Socket::kOpen;
  // The first frame on every connection (§3.3).
  latest::ToRivetMetadata metadata;
  metadata.prepopulate_actor_names.emplace();
  for (const auto& [name, json] : s.config.actor_names) {
    metadata.prepopulate_actor_names->emplace_back(name, latest::ActorName{json});
  }
  metadata.metadata = s.config.metadata_json;
  s.Send(latest::ToRivet{std::move(metadata)});
  // A graceful shutdown began while this socket was still connecting.
  if (s.shutting_down) s.Send(latest::ToRivet{latest::ToRivetStopping{}});
}

void EnvoyClient::OnFrame(ByteView frame) {
  State& s = *s_;
  if (s.socket != State::Socket::kOpen) return;
  auto decoded = protocol::envoy::DecodeToEnvoy(frame, s.config.protocol_version);
  if (!decoded.has_value()) {
    ++s.malformed_frames;
    KEEL_LOG(kDebug, kLog, "ignoring a frame that does not decode",
             {{"error", decoded.error().ToString()}});
    return;
  }
  latest::ToEnvoy& message = *decoded;
  if (const auto* init = message.get_if<latest::ToEnvoyInit>()) {
    s.HandleInit(*init);
  } else if (const auto* commands = message.get_if<latest::ToEnvoyCommands>()) {
    s.HandleCommands(*commands);
  } else if (const auto* ack = message.get_if<latest::ToEnvoyAckEvents>()) {
    s.HandleAckEvents(*ack);
  } else if (auto* kv = message.get_if<latest::ToEnvoyKvResponse>()) {
    s.HandleKvResponse(*kv);
  } else if (const auto* tunnel = message.get_if<latest::ToEnvoyTunnelMessage>()) {
    s.HandleTunnel(*tunnel);
  } else if (const auto* ping = message.get_if<latest::ToEnvoyPing>()) {
    s.Send(latest::ToRivet{latest::ToRivetPong{ping->ts}});
  } else {
    s.host.OnOtherMessage(message);
  }
}

void EnvoyClient::OnClosed(uint16_t code, const std::string& reason) {
  State& s = *s_;
  if (s.socket == State::Socket::kNone) return;  // stale, or we already finished
  const bool was_open = s.socket == State::Socket::kOpen;
  s.socket = State::Socket::kNone;
  s.init_on_socket = false;
  const auto parsed = ParseCloseReason(reason);
  const bool evicted = parsed.has_value() && parsed->first == "ws" && parsed->second == "eviction";
  if (LogEnabled(LogLevel::kDebug)) {
    Log(LogLevel::kDebug, kLog, "envoy connection ended",
        {{"code", std::to_string(code)}, {"reason", reason}});
  }
  if (was_open) s.host.OnDisconnected();
  if (s.shut_down) return;  // a host callback shut us down
  if (evicted) {
    // Another process owns the key now: never reconnect (§3.8).
    s.shutting_down = true;
    s.Finish();
    return;
  }
  s.FailSentKv();
  if (s.shut_down) return;
  s.StartLostTimer();
  if (s.shutting_down || !s.running) return;
  if (s.clock.MonotonicNow() - s.connect_started >= s.config.stable_after) s.attempt = 0;
  s.ScheduleReconnect();
}

void EnvoyClient::ActorRunning(const std::string& actor_id, uint32_t generation) {
  s_->EmitEvent(actor_id, generation,
                latest::EventActorStateUpdate{latest::ActorState{latest::ActorStateRunning{}}});
}

void EnvoyClient::ActorStopped(const std::string& actor_id, uint32_t generation,
                               std::optional<Error> error) {
  State& s = *s_;
  latest::ActorStateStopped stopped;
  if (error.has_value()) {
    stopped.code = latest::StopCode::kError;
    stopped.message = error->ToString();
  } else {
    stopped.code = latest::StopCode::kOk;
  }
  s.EmitEvent(actor_id, generation, latest::EventActorStateUpdate{latest::ActorState{stopped}});
  auto it = s.actors.find({actor_id, generation});
  if (it == s.actors.end() || !it->second.stop_received) return;
  // An engine-initiated stop ends the instance (§4.6 step 4); its history goes with it.
  auto acks = std::move(it->second.alarm_acks);
  s.actors.erase(it);
  if (!s.HostsActorId(actor_id)) {
    for (auto r = s.routes.begin(); r != s.routes.end();) {
      r = r->second == actor_id ? s.routes.erase(r) : std::next(r);
    }
  }
  for (auto& [index, done] : acks) {
    if (done)
      done(Error("envoy", "actor_stopped", "actor stopped before the alarm was acknowledged"));
  }
  s.MaybeFinishShutdown();
}

void EnvoyClient::RequestSleep(const std::string& actor_id, uint32_t generation) {
  s_->EmitEvent(actor_id, generation,
                latest::EventActorIntent{latest::ActorIntent{latest::ActorIntentSleep{}}});
}

void EnvoyClient::RequestStop(const std::string& actor_id, uint32_t generation) {
  s_->EmitEvent(actor_id, generation,
                latest::EventActorIntent{latest::ActorIntent{latest::ActorIntentStop{}}});
}

void EnvoyClient::SetAlarm(const std::string& actor_id, uint32_t generation,
                           std::optional<int64_t> alarm_ts, AckCallback on_acked) {
  s_->EmitEvent(actor_id, generation, latest::EventActorSetAlarm{alarm_ts}, std::move(on_acked));
}

void EnvoyClient::SendKv(const std::string& actor_id, latest::KvRequestData request,
                         KvCallback done) {
  State& s = *s_;
  if (s.shut_down) {
    if (done) done(ShutdownError());
    return;
  }
  const uint32_t id = s.NextKvId();
  State::PendingKv pending;
  pending.seq = s.next_kv_seq++;
  pending.actor_id = actor_id;
  pending.data = std::move(request);
  pending.done = std::move(done);
  pending.deadline = s.clock.MonotonicNow() + s.config.request_timeout;
  s.kv.emplace(id, std::move(pending));
  s.SendPendingKv(id);
}

void EnvoyClient::SendTunnel(latest::ToRivetTunnelMessage message, bool buffered) {
  State& s = *s_;
  if (s.shut_down) return;
  if (EndsRequest(message)) {
    s.routes.erase({message.message_id.gateway_id, message.message_id.request_id});
  }
  if (s.socket == State::Socket::kOpen) {
    s.Send(latest::ToRivet{std::move(message)});
  } else if (buffered) {
    s.buffered_tunnel.push_back(std::move(message));
  }
  // Direct traffic without a socket is dropped (§3.10).
}

void EnvoyClient::RegisterRequest(const std::string& actor_id, const latest::GatewayId& gateway_id,
                                  const latest::RequestId& request_id) {
  s_->routes[{gateway_id, request_id}] = actor_id;
}

Status EnvoyClient::InjectServerlessStart(ByteView body) {
  State& s = *s_;
  if (s.shut_down) return ShutdownError();
  auto invalid = [](std::string message) {
    return Error("serverless", "invalid_payload", std::move(message));
  };
  auto split = protocol::envoy::SplitVersionPrefix(body);
  if (!split.has_value()) return invalid(split.error().message());
  const auto [version, payload] = *split;
  if (version != kServerlessVersion) {
    return invalid("unsupported version prefix " + std::to_string(version) + " (expected 4)");
  }
  auto decoded = protocol::envoy::DecodeToEnvoy(payload, 4);
  if (!decoded.has_value()) decoded = protocol::envoy::DecodeToEnvoy(payload, 3);
  if (!decoded.has_value()) return invalid("undecodable payload: " + decoded.error().ToString());
  auto* commands = decoded->get_if<latest::ToEnvoyCommands>();
  if (commands == nullptr) return invalid("payload is not a ToEnvoyCommands");
  if (commands->value.size() != 1 || !commands->value[0].inner.is<latest::CommandStartActor>()) {
    return invalid("payload must carry exactly one CommandStartActor");
  }
  if (!s.started) {
    s.queued_starts.push_back(std::move(*commands));
  } else {
    s.HandleCommands(*commands);
  }
  return OkStatus();
}

Status EnvoyClient::SendMessage(const latest::ToRivet& message) {
  State& s = *s_;
  if (s.shut_down) return ShutdownError();
  Error error;
  if (!s.Send(message, &error)) return error;
  return OkStatus();
}

bool EnvoyClient::connected() const {
  return s_->socket == State::Socket::kOpen && s_->init_on_socket;
}
bool EnvoyClient::started() const { return s_->started; }
bool EnvoyClient::shut_down() const { return s_->shut_down; }
const std::string& EnvoyClient::envoy_key() const { return s_->envoy_key; }
uint16_t EnvoyClient::protocol_version() const { return s_->config.protocol_version; }
const std::optional<latest::ProtocolMetadata>& EnvoyClient::protocol_metadata() const {
  return s_->metadata;
}
size_t EnvoyClient::pending_kv_requests() const { return s_->kv.size(); }
size_t EnvoyClient::hosted_actors() const { return s_->actors.size(); }
uint64_t EnvoyClient::malformed_frames() const { return s_->malformed_frames; }
uint64_t EnvoyClient::unroutable_tunnel_messages() const { return s_->unroutable_tunnel; }
uint64_t EnvoyClient::duplicate_commands() const { return s_->duplicate_commands; }
std::string EnvoyClient::ConnectUrl() const { return s_->ConnectUrl(); }
std::vector<std::string> EnvoyClient::Subprotocols() const { return s_->Subprotocols(); }

}  // namespace keel::envoy
