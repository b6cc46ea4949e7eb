#include "envoy/envoy_client.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <limits>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "base/build_exact.h"
#include "base/log.h"
#include "engine/gateway/envoy_connect.h"
#include "protocol/conversion.h"
#include "protocol/envoy/tunnel.h"

namespace keel::envoy {
namespace {

constexpr std::string_view kLog = "envoy_client";
constexpr uint16_t kServerlessVersion = 4;
// Checkpoints per ToRivetAckCommands (~45 bytes each): an ack of many actors stays far
// below the engine's message limit.
constexpr size_t kAckBatch = 1024;

using ActorKey = std::pair<std::string, uint32_t>;
using RouteKey = std::pair<latest::GatewayId, latest::RequestId>;

Error ShutdownError() { return Error("envoy", "shutdown", "envoy shutting down"); }

// What a connection close does to a request that was already written to it (§3.10, §8.8).
Error KvIndeterminate() {
  return Error("envoy", "kv_indeterminate",
               "the connection closed after the KV request was sent; it may or may not have "
               "been applied");
}
Error CommitIndeterminate() {
  return Error("sqlite", "indeterminate_commit",
               "SQLite commit may have completed, but the envoy disconnected before its answer");
}
Error RemoteIndeterminate(std::string_view operation) {
  return Error("sqlite", "remote_indeterminate_result",
               "Remote SQLite " + std::string(operation) +
                   " may have completed, but the envoy disconnected before returning a result.");
}

// What a request the connection's version cannot carry fails with: the conversion error
// itself, or for remote SQL the structured "unavailable" error carrying its text (§2.13).
Error AsIs(Error error) { return error; }
Error RemoteUnavailable(Error error) {
  return Error("sqlite", "remote_unavailable", "Remote SQLite is unavailable: " + error.message());
}

// Adapts a typed request callback to the pending tables' untyped one: hands it `data` of
// the `Response` frame that answered. Within a table the id alone picks the request, so a
// frame of another kind of the same table (an engine bug) fails the request.
template <typename Response, typename Data>
std::function<void(Result<latest::ToEnvoy>)> Unwrap(std::function<void(Result<Data>)> done) {
  return [done = std::move(done)](Result<latest::ToEnvoy> result) {
    if (!done) return;
    if (!result.has_value()) return done(std::move(result).error());
    auto* response = result->template get_if<Response>();
    if (response == nullptr) {
      return done(Error("envoy", "unexpected_response",
                        "the engine answered the request with a response of another kind"));
    }
    done(std::move(response->data));
  };
}

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

// A response start or chunk whose body is over `limit`, as a start and chunks each carrying
// at most `limit` bytes, in order, with consecutive message indexes. The stream ends where
// the original did: a start with stream=false becomes a stream whose last chunk finishes.
std::vector<latest::ToRivetTunnelMessage> SplitResponse(latest::ToRivetTunnelMessage message,
                                                        uint64_t limit) {
  Bytes body;
  bool finish = false;
  std::vector<latest::ToRivetTunnelMessage> pieces;
  if (auto* start = message.message_kind.get_if<latest::ToRivetResponseStart>()) {
    body = std::move(*start->body);
    finish = !start->stream;
    start->stream = true;
    start->body = Bytes(body.begin(), body.begin() + static_cast<ptrdiff_t>(limit));
    pieces.push_back(message);
  } else {
    auto& chunk = *message.message_kind.get_if<latest::ToRivetResponseChunk>();
    body = std::move(chunk.body);
    finish = chunk.finish;
    pieces.push_back(message);
    pieces.back().message_kind.get_if<latest::ToRivetResponseChunk>()->body =
        Bytes(body.begin(), body.begin() + static_cast<ptrdiff_t>(limit));
    pieces.back().message_kind.get_if<latest::ToRivetResponseChunk>()->finish = false;
  }
  for (uint64_t at = limit; at < body.size(); at += limit) {
    const uint64_t end = std::min<uint64_t>(at + limit, body.size());
    latest::ToRivetTunnelMessage piece;
    piece.message_id = message.message_id;
    piece.message_id.message_index =
        static_cast<uint16_t>(message.message_id.message_index + pieces.size());
    piece.message_kind =
        latest::ToRivetResponseChunk{Bytes(body.begin() + static_cast<ptrdiff_t>(at),
                                           body.begin() + static_cast<ptrdiff_t>(end)),
                                     finish && end == body.size()};
    pieces.push_back(std::move(piece));
  }
  return pieces;
}

// True when an outgoing tunnel message ends its request: no more traffic for it can
// arrive from the gateway that the actor would still care about (§6.3, §6.4).
bool EndsRequest(const latest::ToRivetTunnelMessage& message) {
  const auto& kind = message.message_kind;
  if (const auto* start = kind.get_if<latest::ToRivetResponseStart>()) return !start->stream;
  if (const auto* chunk = kind.get_if<latest::ToRivetResponseChunk>()) return chunk->finish;
  return kind.is<latest::ToRivetResponseAbort>() || kind.is<latest::ToRivetWebSocketClose>();
}

// The command dedup entries (§4.4) of actor generations this envoy does not host (stopped,
// asleep, or only ever stopped): one flat open-addressing table, the actor id inline, so an
// actor that went to sleep leaves no allocation of its own behind — only its slot in one
// array. Ids too long to inline go to `long_`. Linear probing, backward-shift deletion.
class DedupTable {
 public:
  std::optional<int64_t> Find(const std::string& id, uint32_t generation) const {
    if (id.size() > kInline) {
      auto it = long_.find({id, generation});
      return it == long_.end() ? std::nullopt : std::optional<int64_t>(it->second);
    }
    if (slots_.empty()) return std::nullopt;
    for (size_t i = Home(id, generation);; i = (i + 1) & Mask()) {
      const Slot& slot = slots_[i];
      if (!slot.used) return std::nullopt;
      if (Matches(slot, id, generation)) return slot.index;
    }
  }

  void Set(const std::string& id, uint32_t generation, int64_t index) {
    if (id.size() > kInline) {
      long_[{id, generation}] = index;
      return;
    }
    if ((used_ + 1) * 4 > slots_.size() * 3) Grow();
    size_t i = Home(id, generation);
    while (slots_[i].used && !Matches(slots_[i], id, generation)) i = (i + 1) & Mask();
    Slot& slot = slots_[i];
    if (!slot.used) {
      slot.used = true;
      slot.generation = generation;
      slot.len = static_cast<uint8_t>(id.size());
      std::copy(id.begin(), id.end(), slot.id);
      ++used_;
    }
    slot.index = index;
  }

  void Erase(const std::string& id, uint32_t generation) {
    if (id.size() > kInline) {
      long_.erase({id, generation});
      return;
    }
    if (slots_.empty()) return;
    size_t i = Home(id, generation);
    while (true) {
      if (!slots_[i].used) return;
      if (Matches(slots_[i], id, generation)) break;
      i = (i + 1) & Mask();
    }
    // Backward shift: move later entries of the cluster that may live at `i` into it.
    for (size_t j = (i + 1) & Mask(); slots_[j].used; j = (j + 1) & Mask()) {
      const size_t home = Home(std::string_view(slots_[j].id, slots_[j].len), slots_[j].generation);
      // `j` may move to `i` when its home is not cyclically within (i, j].
      const bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (stays) continue;
      slots_[i] = slots_[j];
      i = j;
    }
    slots_[i].used = false;
    --used_;
  }

  size_t size() const { return used_ + long_.size(); }

  // Calls fn(id, generation, index) for every entry, in no particular order.
  template <typename F>
  void ForEach(F&& fn) const {
    for (const Slot& slot : slots_) {
      if (slot.used) fn(std::string_view(slot.id, slot.len), slot.generation, slot.index);
    }
    for (const auto& [key, index] : long_) fn(std::string_view(key.first), key.second, index);
  }

  // Forgets every entry and gives the memory back.
  void Clear() {
    std::vector<Slot>().swap(slots_);
    used_ = 0;
    long_.clear();
  }

 private:
  static constexpr size_t kInline = 34;  // engine actor ids are 30 characters
  struct Slot {
    int64_t index = 0;
    uint32_t generation = 0;
    uint8_t len = 0;
    bool used = false;
    char id[kInline];
  };

  size_t Mask() const { return slots_.size() - 1; }
  size_t Home(std::string_view id, uint32_t generation) const {
    const size_t h = std::hash<std::string_view>{}(id) ^ (generation * 0x9E3779B97F4A7C15ULL);
    return (h ^ (h >> 29)) & Mask();
  }
  static bool Matches(const Slot& slot, std::string_view id, uint32_t generation) {
    return slot.generation == generation && std::string_view(slot.id, slot.len) == id;
  }
  void Grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(16, old.size() * 2), Slot{});
    used_ = 0;
    for (const Slot& slot : old) {
      if (slot.used) Set(std::string(slot.id, slot.len), slot.generation, slot.index);
    }
  }

  std::vector<Slot> slots_;  // size 0 or a power of two
  size_t used_ = 0;
  std::map<ActorKey, int64_t> long_;
};

}  // namespace

struct EnvoyClient::State {
  // One hosted actor instance (§4.4–§4.7).
  struct Actor {
    int64_t last_command_index = 0;
    // Its command dedup entry (§4.4) while the envoy hosts it: processed[(actor, generation)]
    // lives here, and moves to `processed` when the entry goes.
    std::optional<int64_t> processed;
    bool stop_received = false;
    // The host reported Stopped without a stop command (its start failed, or it crashed):
    // the entry stays for its event history and command dedup until the engine's stop, but
    // the instance is gone — it neither counts as hosted nor holds up a graceful shutdown.
    bool stopped_reported = false;
    int64_t next_event_index = 0;
    // Unacknowledged events in index order, resent after every Init. Without their
    // checkpoint: the actor id is the entry's key.
    struct PendingEvent {
      int64_t index = 0;
      latest::Event event;
    };
    std::vector<PendingEvent> history;
    // SetAlarm acknowledgements waiting for ToEnvoyAckEvents, in event index order.
    std::vector<std::pair<int64_t, AckCallback>> alarm_acks;
  };

  // Completes a request: with the frame that answered it, or with why none will come.
  using ResponseCallback = std::function<void(Result<latest::ToEnvoy>)>;

  // An outstanding request in one of the three id spaces (§3.10).
  struct PendingRequest {
    uint64_t seq = 0;         // creation order across all tables: unsent ones go out in it
    latest::ToRivet message;  // request id already filled in
    bool sent = false;        // written to the current socket
    MonoTime deadline;        // request_timeout after creation or the last send
    // Set: a close after the send fails the request with this error (its answer died with
    // the socket, and running it again might apply it twice). Unset: the request is an
    // idempotent read and goes out again after the next Init.
    std::optional<Error> fail_on_close;
    ResponseCallback done;
  };

  // One request-id space (§3.10): its own u32 counter and its pending requests by id. A
  // response is matched by id within the table its variant belongs to.
  struct RequestTable {
    RequestTable(Error timeout_error, Error (*unsendable_error)(Error))
        : timeout(std::move(timeout_error)), unsendable(unsendable_error) {}
    uint32_t next_id = 0;
    std::map<uint32_t, PendingRequest> pending;
    Error timeout;               // what the sweep fails an expired request with
    Error (*unsendable)(Error);  // maps the error of a version that cannot carry a request
  };

  // A request taken out of its table, to be failed once the tables are consistent again
  // (callbacks may call back into the client).
  struct Failure {
    uint64_t seq = 0;
    ResponseCallback done;
    Error error;
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
  TimerId stopped_ack_timer{};

  std::map<ActorKey, Actor> actors;
  // processed[(actor, generation)] = highest command index seen (§4.4); survives actor
  // removal so that a replayed start cannot resurrect a stopped instance. The entries of
  // hosted actors are in Actor::processed; this table holds the others.
  DedupTable processed;

  // Forgets a hosted actor; its dedup entry stays (§4.4).
  std::map<ActorKey, Actor>::iterator EraseActor(std::map<ActorKey, Actor>::iterator it) {
    if (it->second.processed) Unhosted(it->first, *it->second.processed);
    return actors.erase(it);
  }
  // The dedup entry of (actor, generation), wherever it lives.
  std::optional<int64_t> Processed(const ActorKey& key) const {
    auto it = actors.find(key);
    if (it != actors.end()) return it->second.processed;
    return processed.Find(key.first, key.second);
  }
  // Records the dedup entry of a generation this envoy does not host; the engine hears of
  // it in the next ack of stopped generations (AckStoppedCommands).
  void Unhosted(const ActorKey& key, int64_t index) {
    processed.Set(key.first, key.second, index);
    ScheduleStoppedAck();
  }

  RequestTable kv{Error("envoy", "kv_timeout", "KV request timed out"), &AsIs};
  RequestTable pages{Error("envoy", "sqlite_timeout", "sqlite page request timed out"), &AsIs};
  RequestTable remote{Error("envoy", "sqlite_timeout", "remote sqlite request timed out"),
                      &RemoteUnavailable};
  uint64_t next_request_seq = 0;

  std::map<RouteKey, std::string> routes;
  std::deque<latest::ToRivetTunnelMessage> buffered_tunnel;
  // The open socket's held-outputs confirmation, and how many sockets were opened.
  bool holds_outputs = false;
  uint64_t socket_epoch = 0;

  // Serverless starts waiting for the first Init (§4.9).
  std::vector<latest::ToEnvoyCommands> queued_starts;

  uint64_t malformed_frames = 0;
  uint64_t unroutable_tunnel = 0;
  uint64_t duplicate_commands = 0;
  uint64_t released_dedup_entries = 0;
  uint64_t unmatched_responses = 0;
  uint64_t oversized_tunnel = 0;

  std::array<RequestTable*, 3> Tables() { return {&kv, &pages, &remote}; }

  // Socket open and Init received: requests go out at once.
  bool Connected() const { return socket == Socket::kOpen && init_on_socket; }

  // ---- Output ----

  Result<Bytes> Encode(const latest::ToRivet& message) const {
    Result<void, protocol::ConversionError> encoded;
    Bytes out = BuildExact([&](Bytes& buffer) {
      encoded = protocol::envoy::EncodeToRivet(message, config.protocol_version, buffer);
    });
    if (!encoded.has_value()) return protocol::ToError(encoded.error());
    if (const uint64_t limit = MaxMessage(); out.size() > limit) {
      return Error("envoy", "message_too_large",
                   "a message of " + std::to_string(out.size()) +
                       " bytes exceeds the envoy connection's limit of " + std::to_string(limit) +
                       " bytes");
    }
    return out;
  }

  uint64_t MaxTunnelPayload() const {
    return metadata.has_value() ? metadata->max_response_payload_size
                                : protocol::envoy::kDefaultMaxResponsePayloadSize;
  }
  uint64_t MaxMessage() const {
    if (config.max_message != 0) return config.max_message;
    const uint64_t payload = MaxTunnelPayload();
    constexpr uint64_t kFraming = uint64_t{1} << 20;
    return payload > std::numeric_limits<uint64_t>::max() - kFraming ? payload : payload + kFraming;
  }

  // Encodes and writes `message` on the open socket. False when there is no socket or the
  // connection cannot carry the message (its version lacks it, or it is too large).
  bool Send(const latest::ToRivet& message) {
    if (socket != Socket::kOpen) return false;
    auto bytes = Encode(message);
    if (!bytes.has_value()) {
      KEEL_LOG(kWarn, kLog, "dropping a message the connection cannot carry",
               {{"error", bytes.error().ToString()}});
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
      SweepRequests();
      if (!shut_down) ScheduleSweep();
    });
  }

  // Generations no longer hosted are acknowledged apart from the periodic ack, and sooner
  // (§4.3 lists only hosted ones, so a Rivet envoy keeps their dedup entries — and the
  // engine their commands — for ever). The ack goes `stopped_ack_delay` after the first
  // entry it carries appeared, and never sooner than that after an Init: commands the
  // engine replays follow its Init, and must still meet their entries.
  void ScheduleStoppedAck() {
    if (stopped_ack_timer != TimerId{} || shut_down || processed.size() == 0) return;
    stopped_ack_timer = clock.ScheduleAfter(config.stopped_ack_delay, [this] {
      stopped_ack_timer = TimerId{};
      AckStoppedCommands();
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
    FailAllRequests(Error("envoy", "lost", "envoy connection lost"));
    std::vector<ActorKey> keys;
    for (const auto& [key, actor] : actors) keys.push_back(key);
    for (const auto& key : keys) {
      if (actors.count(key) == 0) continue;  // removed by an earlier host callback
      host.OnStopActor(key.first, key.second, latest::StopActorReason::kLost);
    }
    ClearActors(Error("envoy", "lost", "envoy connection lost"));
    MaybeFinishShutdown();
  }

  void ClearActors(const Error& error) {
    auto gone = std::move(actors);
    actors.clear();
    routes.clear();
    for (auto& [key, actor] : gone) {
      if (actor.processed) Unhosted(key, *actor.processed);
    }
    for (auto& [key, actor] : gone) {
      for (auto& [index, done] : actor.alarm_acks) {
        if (done) done(error);
      }
    }
  }

  void MaybeFinishShutdown() {
    if (shutting_down && !shut_down && HostedCount() == 0) Finish();
  }
  size_t HostedCount() const {
    size_t n = 0;
    for (const auto& [key, actor] : actors) n += actor.stopped_reported ? 0 : 1;
    return n;
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
    CancelTimer(stopped_ack_timer);
    if (socket != Socket::kNone) transport.Close(1000, "envoy.shutdown");
    socket = Socket::kNone;
    init_on_socket = false;
    FailAllRequests(ShutdownError());
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
      for (const auto& pending : actor.history) {
        latest::EventWrapper wrapper;
        wrapper.checkpoint = latest::ActorCheckpoint{key.first, key.second, pending.index};
        wrapper.inner = pending.event;
        events.value.push_back(std::move(wrapper));
      }
    }
    if (!events.value.empty()) Send(latest::ToRivet{std::move(events)});

    // Requests created without a socket, and page reads whose socket closed, in creation
    // order across the three tables (§3.10).
    std::vector<std::tuple<uint64_t, RequestTable*, uint32_t>> unsent;
    for (RequestTable* table : Tables()) {
      for (const auto& [id, request] : table->pending) {
        if (!request.sent) unsent.emplace_back(request.seq, table, id);
      }
    }
    std::sort(unsent.begin(), unsent.end());
    std::vector<Failure> unsendable;
    for (const auto& [seq, table, id] : unsent) SendPending(*table, id, unsendable);

    while (!buffered_tunnel.empty() && socket == Socket::kOpen) {
      latest::ToRivetTunnelMessage message = std::move(buffered_tunnel.front());
      buffered_tunnel.pop_front();
      Send(latest::ToRivet{std::move(message)});
    }
    // After the flush, so that a callback's new requests cannot overtake older ones.
    Fail(std::move(unsendable));

    host.OnConnected(*metadata);

    // A full delay from now, so that the replay behind this Init meets every entry.
    CancelTimer(stopped_ack_timer);
    ScheduleStoppedAck();

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
      const std::optional<int64_t> seen = Processed(key);
      if (seen.has_value() && cp.index <= *seen) {
        ++duplicate_commands;
        continue;  // a replay (§4.4)
      }
      if (auto hosted = actors.find(key); hosted != actors.end()) {
        hosted->second.processed = cp.index;
      } else if (!wrapper.inner.is<latest::CommandStartActor>()) {
        Unhosted(key, cp.index);
      }

      if (const auto* start = wrapper.inner.get_if<latest::CommandStartActor>()) {
        auto [it, inserted] = actors.try_emplace(key);
        it->second.last_command_index = cp.index;
        if (!inserted) continue;  // the instance already runs; a second start means nothing
        // The hosted actor's entry carries its dedup state from now on.
        it->second.processed = cp.index;
        processed.Erase(key.first, key.second);
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
        if (it->second.stopped_reported) {
          // The instance already ended and said so: answer the stop as the host would, with
          // Stopped, and forget it (§4.6 step 4) without asking the host again.
          latest::ActorStateStopped stopped;
          stopped.code = latest::StopCode::kOk;
          EmitEvent(cp.actor_id, cp.generation,
                    latest::EventActorStateUpdate{latest::ActorState{stopped}});
          if (auto gone = actors.find(key); gone != actors.end()) EraseActor(gone);
          if (!HostsActorId(cp.actor_id)) {
            for (auto r = routes.begin(); r != routes.end();) {
              r = r->second == cp.actor_id ? routes.erase(r) : std::next(r);
            }
          }
          MaybeFinishShutdown();
          continue;
        }
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
      auto acked_events = std::find_if(actor.history.begin(), actor.history.end(),
                                       [&](const auto& e) { return e.index > cp.index; });
      actor.history.erase(actor.history.begin(), acked_events);
      // An idle actor keeps no buffers.
      if (actor.history.empty()) actor.history.shrink_to_fit();
      auto end = std::find_if(actor.alarm_acks.begin(), actor.alarm_acks.end(),
                              [&](const auto& a) { return a.first > cp.index; });
      for (auto a = actor.alarm_acks.begin(); a != end; ++a) acked.push_back(std::move(a->second));
      actor.alarm_acks.erase(actor.alarm_acks.begin(), end);
      if (actor.alarm_acks.empty()) actor.alarm_acks.shrink_to_fit();
    }
    for (auto& done : acked) {
      if (done) done(OkStatus());
    }
  }

  // A response to request `id` of `table`; `response` is the whole frame.
  void HandleResponse(RequestTable& table, uint32_t id, latest::ToEnvoy&& response) {
    auto it = table.pending.find(id);
    if (it == table.pending.end()) {
      // Timed out or failed at a close already, or never ours.
      ++unmatched_responses;
      KEEL_LOG(kDebug, kLog, "dropping a response without a pending request",
               {{"request_id", std::to_string(id)}});
      return;
    }
    ResponseCallback done = std::move(it->second.done);
    table.pending.erase(it);
    if (done) done(std::move(response));
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
      // Not handled: an engine that sent it early (x-keel-early-requests) may send it again.
      start.headers = {{"x-rivet-error", "envoy.actor_not_found"},
                       {"content-length", std::to_string(kBody.size())},
                       {std::string(protocol::envoy::kNotStartedHeader), "1"}};
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

  // Removes every request for which `decide` returns an error, and returns them in
  // creation order. `decide` may also update a request it keeps.
  template <typename Decide>
  std::vector<Failure> TakeFailed(Decide decide) {
    std::vector<Failure> out;
    for (RequestTable* table : Tables()) {
      for (auto it = table->pending.begin(); it != table->pending.end();) {
        if (std::optional<Error> error = decide(*table, it->second)) {
          out.push_back(Failure{it->second.seq, std::move(it->second.done), std::move(*error)});
          it = table->pending.erase(it);
        } else {
          ++it;
        }
      }
    }
    std::sort(out.begin(), out.end(),
              [](const Failure& a, const Failure& b) { return a.seq < b.seq; });
    return out;
  }

  static void Fail(std::vector<Failure> failures) {
    for (Failure& failure : failures) {
      if (failure.done) failure.done(std::move(failure.error));
    }
  }

  void FailAllRequests(const Error& error) {
    Fail(TakeFailed([&](RequestTable&, PendingRequest&) { return std::optional<Error>(error); }));
  }

  void SweepRequests() {
    const MonoTime now = clock.MonotonicNow();
    Fail(TakeFailed([&](RequestTable& table, PendingRequest& request) {
      return request.deadline <= now ? std::optional<Error>(table.timeout) : std::nullopt;
    }));
  }

  // The socket closed: the answers to what was written to it are lost (§3.10, §8.8).
  //  * Remote SQL fails at once, indeterminate, and is never run again (Rivet does the same).
  //  * A commit fails at once, indeterminate: the VFS treats the database as dead (§7.5)
  //    instead of stalling until the 30 s sweep; resending could apply it on top of a state
  //    it was not computed for.
  //  * KV fails at once with envoy.kv_indeterminate — a Keel deviation from Rivet, which keeps
  //    sent KV requests until the sweep — so an actor whose write was in flight recovers
  //    right after the reconnect instead of ~30 s later.
  //  * get_pages is kept and resent after the next Init (Keel; Rivet waits for the sweep). A
  //    read changes nothing on the engine, so running it twice is harmless, and its answer
  //    on the new connection is as good as the lost one: this envoy is the database's only
  //    writer (§7.3), and a commit in flight at the close has just failed above, which
  //    kills the VFS that asked.
  // Unsent requests stay queued.
  void HandleConnectionLost() {
    Fail(TakeFailed([](RequestTable&, PendingRequest& request) -> std::optional<Error> {
      if (!request.sent) return std::nullopt;
      if (request.fail_on_close.has_value()) return request.fail_on_close;
      request.sent = false;  // resent after the next Init
      return std::nullopt;
    }));
  }

  void AckCommands() {
    std::vector<latest::ActorCheckpoint> all;
    for (const auto& [key, actor] : actors) {
      if (actor.last_command_index < 0) continue;
      all.push_back(latest::ActorCheckpoint{key.first, key.second, actor.last_command_index});
    }
    SendCommandAcks(all, [&](const latest::ActorCheckpoint& cp) {
      if (auto it = actors.find({cp.actor_id, cp.generation}); it != actors.end()) {
        it->second.processed.reset();
      }
      processed.Erase(cp.actor_id, cp.generation);
    });
  }

  // Sends the last command index of every generation in `processed` (those this envoy no
  // longer hosts), and forgets the entries that went out. Then the engine no longer holds
  // or replays their commands: keel-engine deleted them when it deallocated the generation,
  // a Rivet engine deletes them now. Without a socket nothing is sent; the next Init
  // schedules the ack again.
  void AckStoppedCommands() {
    if (socket != Socket::kOpen || !init_on_socket || processed.size() == 0) return;
    std::vector<latest::ActorCheckpoint> all;
    all.reserve(processed.size());
    processed.ForEach([&](std::string_view id, uint32_t generation, int64_t index) {
      all.push_back(latest::ActorCheckpoint{std::string(id), generation, index});
    });
    const size_t sent = SendCommandAcks(all, [&](const latest::ActorCheckpoint& cp) {
      processed.Erase(cp.actor_id, cp.generation);
    });
    if (sent == 0) return;
    released_dedup_entries += sent;
    if (processed.size() == 0) processed.Clear();
    KEEL_LOG(kDebug, kLog, "acknowledged the commands of generations no longer hosted",
             {{"generations", std::to_string(sent)}, {"kept", std::to_string(processed.size())}});
  }

  // Sends `all` in ToRivetAckCommands of at most kAckBatch checkpoints each, in order. Dedup
  // state goes only when its ack reached a live socket (§4.3): after each message handed to
  // the socket, forget(checkpoint) runs for its checkpoints. Stops at the first message
  // that cannot be sent; returns how many checkpoints went out.
  template <typename F>
  size_t SendCommandAcks(const std::vector<latest::ActorCheckpoint>& all, F&& forget) {
    size_t sent = 0;
    while (sent < all.size()) {
      const size_t end = std::min(all.size(), sent + kAckBatch);
      latest::ToRivetAckCommands ack;
      ack.last_command_checkpoints.assign(all.begin() + static_cast<ptrdiff_t>(sent),
                                          all.begin() + static_cast<ptrdiff_t>(end));
      if (!Send(latest::ToRivet{std::move(ack)})) break;
      for (size_t i = sent; i < end; ++i) forget(all[i]);
      sent = end;
    }
    return sent;
  }

  // ---- Requests ----

  // Forgets the route of a message that ends its request, then sends the message, or keeps
  // it for the next socket when `buffered` (SendTunnel).
  void Tunnel(latest::ToRivetTunnelMessage message, bool buffered) {
    if (EndsRequest(message)) {
      routes.erase({message.message_id.gateway_id, message.message_id.request_id});
    }
    if (socket == Socket::kOpen) {
      Send(latest::ToRivet{std::move(message)});
    } else if (buffered) {
      buffered_tunnel.push_back(std::move(message));
    }
    // Direct traffic without a socket is dropped (§3.10).
  }

  // Creates a request in `table` and sends it now when connected, else after the next Init.
  // Completes synchronously, inside this call, when the client has shut down or the
  // connection's version cannot carry the request.
  template <typename Message>
  void Submit(RequestTable& table, Message message, std::optional<Error> fail_on_close,
              ResponseCallback done) {
    if (shut_down) {
      if (done) done(ShutdownError());
      return;
    }
    const uint32_t id = NextId(table);
    message.request_id = id;
    PendingRequest request;
    request.seq = next_request_seq++;
    request.message = latest::ToRivet{std::move(message)};
    request.deadline = clock.MonotonicNow() + config.request_timeout;
    request.fail_on_close = std::move(fail_on_close);
    request.done = std::move(done);
    table.pending.emplace(id, std::move(request));
    std::vector<Failure> unsendable;
    SendPending(table, id, unsendable);
    Fail(std::move(unsendable));
  }

  static uint32_t NextId(RequestTable& table) {
    // Wraps around and skips ids still pending (§3.10 RECOMMENDATION).
    while (true) {
      const uint32_t id = table.next_id++;
      if (table.pending.count(id) == 0) return id;
    }
  }

  // Writes request `id` of `table` when connected. A request the connection's version
  // cannot carry is removed and appended to `unsendable`.
  void SendPending(RequestTable& table, uint32_t id, std::vector<Failure>& unsendable) {
    auto it = table.pending.find(id);
    if (it == table.pending.end() || !Connected()) return;
    PendingRequest& request = it->second;
    auto bytes = Encode(request.message);
    if (!bytes.has_value()) {
      unsendable.push_back(
          Failure{request.seq, std::move(request.done), table.unsendable(bytes.error())});
      table.pending.erase(it);
      return;
    }
    // Marked before the write: a transport that reports the close from inside Send finds it
    // sent.
    request.sent = true;
    request.deadline = clock.MonotonicNow() + config.request_timeout;
    transport.Send(std::move(*bytes));
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
    actor.history.push_back(Actor::PendingEvent{index, wrapper.inner});
    if (on_acked) actor.alarm_acks.emplace_back(index, std::move(on_acked));
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
  s_->CancelTimer(s_->stopped_ack_timer);
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

void EnvoyClient::OnOpen(bool engine_holds_outputs) {
  State& s = *s_;
  if (s.socket != State::Socket::kConnecting) return;  // stale or after shutdown
  s.socket = State::Socket::kOpen;
  s.holds_outputs = engine_holds_outputs;
  ++s.socket_epoch;
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
  } else if (const auto* tunnel = message.get_if<latest::ToEnvoyTunnelMessage>()) {
    s.HandleTunnel(*tunnel);
  } else if (const auto* ping = message.get_if<latest::ToEnvoyPing>()) {
    s.Send(latest::ToRivet{latest::ToRivetPong{ping->ts}});
  } else if (const auto* kv = message.get_if<latest::ToEnvoyKvResponse>()) {
    s.HandleResponse(s.kv, kv->request_id, std::move(message));
  } else if (const auto* r = message.get_if<latest::ToEnvoySqliteGetPagesResponse>()) {
    s.HandleResponse(s.pages, r->request_id, std::move(message));
  } else if (const auto* r = message.get_if<latest::ToEnvoySqliteCommitResponse>()) {
    s.HandleResponse(s.pages, r->request_id, std::move(message));
  } else if (const auto* r = message.get_if<latest::ToEnvoySqliteExecResponse>()) {
    s.HandleResponse(s.remote, r->request_id, std::move(message));
  } else if (const auto* r = message.get_if<latest::ToEnvoySqliteExecuteResponse>()) {
    s.HandleResponse(s.remote, r->request_id, std::move(message));
  } else if (const auto* r = message.get_if<latest::ToEnvoySqliteExecuteWriteResponse>()) {
    s.HandleResponse(s.remote, r->request_id, std::move(message));
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
  // Whatever ended the socket (eviction included, as in Rivet), the answers to what was
  // written on it are lost.
  s.HandleConnectionLost();
  if (s.shut_down) return;
  if (evicted) {
    // Another process owns the key now: never reconnect (§3.8).
    s.shutting_down = true;
    s.Finish();
    return;
  }
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
  if (it == s.actors.end()) return;
  if (!it->second.stop_received) {
    it->second.stopped_reported = true;
    s.MaybeFinishShutdown();
    return;
  }
  // An engine-initiated stop ends the instance (§4.6 step 4); its history goes with it.
  auto acks = std::move(it->second.alarm_acks);
  s.EraseActor(it);
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
  latest::ToRivetKvRequest message;
  message.actor_id = actor_id;
  message.data = std::move(request);
  s_->Submit(s_->kv, std::move(message), KvIndeterminate(),
             Unwrap<latest::ToEnvoyKvResponse>(std::move(done)));
}

void EnvoyClient::SqliteGetPages(latest::SqliteGetPagesRequest request, GetPagesCallback done) {
  s_->Submit(s_->pages, latest::ToRivetSqliteGetPagesRequest{0, std::move(request)},
             /*fail_on_close=*/std::nullopt,
             Unwrap<latest::ToEnvoySqliteGetPagesResponse>(std::move(done)));
}

void EnvoyClient::SqliteCommit(latest::SqliteCommitRequest request, CommitCallback done) {
  s_->Submit(s_->pages, latest::ToRivetSqliteCommitRequest{0, std::move(request)},
             CommitIndeterminate(), Unwrap<latest::ToEnvoySqliteCommitResponse>(std::move(done)));
}

void EnvoyClient::SqliteExec(latest::SqliteExecRequest request, ExecCallback done) {
  s_->Submit(s_->remote, latest::ToRivetSqliteExecRequest{0, std::move(request)},
             RemoteIndeterminate("exec"),
             Unwrap<latest::ToEnvoySqliteExecResponse>(std::move(done)));
}

void EnvoyClient::SqliteExecute(latest::SqliteExecuteRequest request, ExecuteCallback done) {
  s_->Submit(s_->remote, latest::ToRivetSqliteExecuteRequest{0, std::move(request)},
             RemoteIndeterminate("execute"),
             Unwrap<latest::ToEnvoySqliteExecuteResponse>(std::move(done)));
}

void EnvoyClient::SqliteExecuteWrite(latest::SqliteExecuteWriteRequest request,
                                     ExecuteWriteCallback done) {
  s_->Submit(s_->remote, latest::ToRivetSqliteExecuteWriteRequest{0, std::move(request)},
             RemoteIndeterminate("execute_write"),
             Unwrap<latest::ToEnvoySqliteExecuteWriteResponse>(std::move(done)));
}

void EnvoyClient::SendTunnel(latest::ToRivetTunnelMessage message, bool buffered) {
  State& s = *s_;
  if (s.shut_down) return;
  const uint64_t limit = std::max<uint64_t>(max_tunnel_payload(), 1);
  if (protocol::envoy::TunnelPayloadSize(message) <= limit) {
    s.Tunnel(std::move(message), buffered);
    return;
  }
  if (const auto* ws = message.message_kind.get_if<latest::ToRivetWebSocketMessage>()) {
    ++s.oversized_tunnel;
    KEEL_LOG(kError, kLog, "dropping a WebSocket message over the connection's payload limit",
             {{"bytes", std::to_string(ws->data.size())}, {"limit", std::to_string(limit)}});
    return;
  }
  for (auto& piece : SplitResponse(std::move(message), limit)) s.Tunnel(std::move(piece), buffered);
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

bool EnvoyClient::connected() const { return s_->Connected(); }
bool EnvoyClient::engine_holds_outputs() const { return s_->Connected() && s_->holds_outputs; }
uint64_t EnvoyClient::socket_epoch() const { return s_->socket_epoch; }
bool EnvoyClient::started() const { return s_->started; }
bool EnvoyClient::shut_down() const { return s_->shut_down; }
const std::string& EnvoyClient::envoy_key() const { return s_->envoy_key; }
const EnvoyConfig& EnvoyClient::config() const { return s_->config; }
uint16_t EnvoyClient::protocol_version() const { return s_->config.protocol_version; }
const std::optional<latest::ProtocolMetadata>& EnvoyClient::protocol_metadata() const {
  return s_->metadata;
}
uint64_t EnvoyClient::max_tunnel_payload() const { return s_->MaxTunnelPayload(); }
size_t EnvoyClient::pending_kv_requests() const { return s_->kv.pending.size(); }
size_t EnvoyClient::pending_sqlite_requests() const {
  return s_->pages.pending.size() + s_->remote.pending.size();
}
size_t EnvoyClient::hosted_actors() const { return s_->HostedCount(); }
size_t EnvoyClient::actor_entries() const { return s_->actors.size(); }
size_t EnvoyClient::route_entries() const { return s_->routes.size(); }
size_t EnvoyClient::dedup_entries() const { return s_->processed.size(); }
uint64_t EnvoyClient::released_dedup_entries() const { return s_->released_dedup_entries; }
uint64_t EnvoyClient::malformed_frames() const { return s_->malformed_frames; }
uint64_t EnvoyClient::unroutable_tunnel_messages() const { return s_->unroutable_tunnel; }
uint64_t EnvoyClient::duplicate_commands() const { return s_->duplicate_commands; }
uint64_t EnvoyClient::unmatched_responses() const { return s_->unmatched_responses; }
uint64_t EnvoyClient::oversized_tunnel_messages() const { return s_->oversized_tunnel; }
std::string EnvoyClient::ConnectUrl() const { return s_->ConnectUrl(); }
std::vector<std::string> EnvoyClient::Subprotocols() const { return s_->Subprotocols(); }

}  // namespace keel::envoy
