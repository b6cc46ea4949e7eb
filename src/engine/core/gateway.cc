#include "engine/core/gateway.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include <boost/container/deque.hpp>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "engine/common/actor_limits.h"
#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "engine/core/envoy_session.h"
#include "engine/core/keys.h"
#include "engine/core/orchestrator.h"
#include "engine/core/pool_metadata.h"
#include "engine/gateway/actor_key.h"
#include "engine/gateway/errors.h"
#include "engine/gateway/subprotocols.h"
#include "net/client.h"
#include "protocol/envoy/headers.h"

namespace keel::engine {
namespace {

namespace latest = protocol::envoy::latest;
constexpr std::string_view kLog = "gateway";
constexpr size_t kMaxPendingMessages = 65535;
constexpr int64_t kKeepaliveMs = 45000;
// §5.6: a waiting request's first runner-pool error check, and the interval of the next.
constexpr int64_t kPoolCheckFirstMs = 1000;
constexpr int64_t kPoolCheckEveryMs = 2000;
// An SSE line of a serverless start longer than this is an invalid payload.
constexpr size_t kMaxSseLineBytes = 16 * 1024;

// Wrapping u16 order of message indices (§6.1): a <= b.
bool IndexAtMost(uint16_t a, uint16_t b) {
  return a == b || static_cast<uint16_t>(b - a) < 32767;
}

std::array<uint8_t, 4> RequestIdBytes(uint32_t id) {
  return {static_cast<uint8_t>(id >> 24), static_cast<uint8_t>(id >> 16),
          static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id)};
}

uint32_t RequestIdValue(const std::array<uint8_t, 4>& b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

net::Headers WithCors(net::Headers headers, net::Headers cors) {
  headers.insert(headers.end(), std::make_move_iterator(cors.begin()),
                 std::make_move_iterator(cors.end()));
  return headers;
}

// Whether a content-type names text/event-stream (parameters and case aside).
bool IsEventStream(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) {
    content_type.remove_suffix(1);
  }
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t')) {
    content_type.remove_prefix(1);
  }
  constexpr std::string_view kWanted = "text/event-stream";
  return content_type.size() == kWanted.size() &&
         std::equal(content_type.begin(), content_type.end(), kWanted.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == b;
         });
}

// What the callbacks of one serverless start's stream share (Gateway::DispatchServerlessStart).
struct ServerlessStream {
  std::mutex mu;
  bool refused = false;  // not 200 + text/event-stream: its body is read for the excerpt
  int status = 0;
  std::string body;       // refused: the body's start
  std::string line;       // accepted: the SSE line not complete yet
  bool stopping = false;  // the runtime sent `event: stopping`
  bool over = false;      // reported, cancelled or dropped: later callbacks do nothing
  uint64_t serial = 0;    // its timers' key (Gateway::serverless_timers_)
  // Until the stream is over: it refers to the callbacks, which hold this.
  net::CancelFn cancel;
};

// Checks the complete SSE lines of `st.line` (and drops them), setting `stopping`. An error
// message for an invalid payload: a line over kMaxSseLineBytes or a NUL byte. Fields other
// than `event` are ignored, unknown ones too, as the SSE format says (WHATWG HTML
// §9.2.6), so a runtime may send more than pings and `stopping`.
std::optional<std::string> ConsumeSseLines(ServerlessStream& st) {
  size_t start = 0;
  while (true) {
    const size_t nl = st.line.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view l(st.line.data() + start, nl - start);
    start = nl + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.size() > kMaxSseLineBytes) return "an SSE line is over 16 KiB";
    if (l.find('\0') != std::string_view::npos) return "an SSE line holds a NUL byte";
    if (l.empty() || l.front() == ':') continue;
    const size_t colon = l.find(':');
    const std::string_view field = l.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? "" : l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field == "event" && value == "stopping") st.stopping = true;
  }
  st.line.erase(0, start);
  if (st.line.size() > kMaxSseLineBytes) return "an SSE line is over 16 KiB";
  return std::nullopt;
}

// The subprotocol echoed to a user WebSocket: browsers refuse a handshake that does not
// echo one of theirs, so echo `rivet` when offered, else the first offered one.
std::string EchoSubprotocol(std::string_view header) {
  auto offered = gateway::SplitSubprotocols(header);
  for (auto p : offered) {
    if (p == "rivet") return "rivet";
  }
  return offered.empty() ? std::string() : std::string(offered.front());
}

}  // namespace

struct Gateway::InFlight {
  bool websocket = false;
  std::shared_ptr<net::HttpExchange> exchange;  // HTTP
  std::shared_ptr<net::WsConnection> user;      // WebSocket
  std::weak_ptr<EnvoySession> session;
  uint64_t session_id = 0;
  EngineId actor;
  uint16_t next_index = 0;  // gateway → envoy message index (§6.1)
  bool streaming = false;
  bool ws_open = false;
  net::Headers cors;
  // Response start / WebSocket open deadline (epoch ms, 0 = none), checked by the sweep:
  // one engine-wide timer instead of arming and cancelling one per request.
  int64_t deadline_ms = 0;
  // Hibernation (§6.5).
  bool can_hibernate = false;
  bool hibernating = false;  // no instance: the socket waits for a wake
  bool waking = false;       // a wake is in flight
  // Reattach is sending the unacknowledged messages again: a user message that arrives
  // meanwhile is only buffered (it is in `unacked`), and Reattach sends it after them, so
  // the envoy sees the indices in order (it closes on a skip, envoy-protocol.md §6.4).
  bool replaying = false;
  struct Pending {
    uint16_t index;
    latest::ToEnvoyWebSocketMessage message;
    int64_t sent_ms;
  };
  boost::container::deque<Pending> unacked;  // allocates nothing while empty
  size_t unacked_bytes = 0;
  TimerId keepalive{};
  // Set for an HTTP request sent to an instance still starting (early requests).
  std::optional<InFlightResend> resend;
  // A request that waited for its actor is in the table, its start not yet sent (Open):
  // a ClientGone meanwhile only marks it `gone`, and Open sends the abort after the start.
  bool opening = false;
  bool gone = false;
};

// The end user's side of a tunnelled WebSocket.
class Gateway::UserSocket final : public net::WsHandler {
 public:
  UserSocket(Gateway& gateway, uint32_t request_id) : gateway_(gateway), id_(request_id) {}
  void OnMessage(std::string data, bool binary) override {
    latest::ToEnvoyWebSocketMessage m;
    m.data = Bytes(data.begin(), data.end());
    m.binary = binary;
    gateway_.FromUser(id_, latest::ToEnvoyTunnelMessageKind{std::move(m)});
  }
  void OnClose(uint16_t code, std::string reason) override {
    gateway_.UserClosed(id_, code, std::move(reason));
  }

 private:
  Gateway& gateway_;
  const uint32_t id_;
};

Gateway::Gateway(Engine& engine) : engine_(engine) {
  Random random(engine.options().seed ^ 0x67617465ull);
  random.Fill(gateway_id_);
  const int64_t shortest = std::min(engine.options().response_start_timeout_ms,
                                    engine.options().ws_open_timeout_ms);
  sweep_interval_ms_ = std::clamp<int64_t>(shortest / 4, 10, 1000);
  ScheduleSweep();
}

Gateway::~Gateway() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  engine_.clock().Cancel(sweep_timer_);
  for (auto& [_, w] : waiting_) {
    if (w.pool_check != TimerId{}) engine_.clock().Cancel(w.pool_check);
  }
  for (auto& [_, timers] : serverless_timers_) {
    for (TimerId t : timers) engine_.clock().Cancel(t);
  }
}

void Gateway::ScheduleSweep() {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  sweep_timer_ = engine_.clock().ScheduleAfter(std::chrono::milliseconds(sweep_interval_ms_),
                                               [this] { Sweep(); });
}

void Gateway::Sweep() {
  std::vector<uint32_t> expired;
  {
    std::lock_guard lock(mu_);
    const int64_t now = engine_.clock().SystemNowMs();
    for (const auto& [id, entry] : in_flight_) {
      if (entry.deadline_ms != 0 && entry.deadline_ms <= now) expired.push_back(id);
    }
  }
  for (uint32_t id : expired) Expire(id);
  ScheduleSweep();
}

size_t Gateway::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_.size();
}

size_t Gateway::waiting() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

void Gateway::Fail(net::HttpExchange& exchange, const Error& raw, const net::Headers& cors,
                   std::string_view metadata_json) {
  // Internal failures, storage ones included (as on the REST API), are logged and shown as
  // core.internal_error (500 / close 1011), never as themselves (errors.md §1.4).
  Error error = raw;
  if (gateway::IsInternalError(raw) || raw.group() == "storage") {
    KEEL_LOG(kError, kLog, "internal error", {{"error", raw.ToString()}});
    error = Error{"core", "internal_error", "An internal error occurred."};
  }
  if (exchange.IsWebSocketUpgrade()) {
    // Accept, then close with the reason: a refused upgrade carries no readable reason.
    class Discard final : public net::WsHandler {
     public:
      void OnMessage(std::string, bool) override {}
      void OnClose(uint16_t, std::string) override {}
    };
    auto conn = exchange.AcceptWebSocket(
        EchoSubprotocol(net::FindHeader(exchange.request().headers, "sec-websocket-protocol")),
        std::make_shared<Discard>());
    if (conn != nullptr) {
      conn->Close(gateway::CloseCode(error), gateway::CloseReason(error, engine_.NewRayId()));
    }
    return;
  }
  net::HttpResponse response;
  response.status = gateway::HttpStatusFor(error);
  response.headers = WithCors({{"content-type", "application/json"}}, cors);
  response.body = gateway::ErrorJson(error, error == raw ? metadata_json : "{}");
  exchange.Respond(std::move(response));
}

void Gateway::Serve(std::shared_ptr<net::HttpExchange> exchange, gateway::Route route) {
  const auto& headers = exchange->request().headers;
  net::Headers cors = gateway::CorsResponseHeaders(headers);
  if (engine_.options().gateway_token.has_value()) {
    std::optional<std::string> token;
    std::visit(
        [&](const auto& r) {
          if constexpr (requires { r.token; }) token = r.token;
        },
        route);
    if (!token.has_value() || !ConstantTimeEquals(*token, *engine_.options().gateway_token)) {
      Fail(*exchange, Error{"api", "forbidden", "a valid gateway token is required"}, cors);
      return;
    }
  }
  if (engine_.shutting_down()) {
    Fail(*exchange, Error{"guard", "service_unavailable", "the engine is shutting down"}, cors);
    return;
  }
  Resolve(std::move(exchange), std::move(route), std::move(cors));
}

void Gateway::Resolve(std::shared_ptr<net::HttpExchange> exchange, gateway::Route route,
                      net::Headers cors) {
  if (auto* by_id = std::get_if<gateway::ActorByIdRoute>(&route)) {
    auto id = EngineId::Parse(by_id->actor_id);
    if (!id.has_value()) {
      Fail(*exchange, Error{"actor", "not_found", "The actor does not exist or was destroyed."},
           cors);
      return;
    }
    Reach(std::move(exchange), std::nullopt, *id, std::move(by_id->forwarded_path),
          by_id->bypass_connectable, std::move(cors));
    return;
  }
  if (auto* by_header = std::get_if<gateway::ActorByHeaderRoute>(&route)) {
    auto id = EngineId::Parse(by_header->actor_id);
    if (!id.has_value()) {
      Fail(*exchange, Error{"actor", "not_found", "The actor does not exist or was destroyed."},
           cors);
      return;
    }
    Reach(std::move(exchange), std::nullopt, *id, std::move(by_header->forwarded_path),
          by_header->bypass_connectable, std::move(cors));
    return;
  }
  auto& q = std::get<gateway::ActorByQueryRoute>(route);
  std::optional<Namespace> ns = engine_.catalog().FindNamespace(q.namespace_name);
  if (!ns.has_value()) {
    Fail(*exchange, Error{"namespace", "not_found", "The namespace does not exist."}, cors);
    return;
  }
  std::string key = gateway::SerializeActorKey(q.key);
  // REST's check of a key from outside (actors.md §4.1): `rvt-key` may be of any length, and
  // getOrCreate must not create an actor that POST /actors would refuse (a `get` of such a
  // key is refused the same way rather than looked up).
  if (Status valid = gateway::ValidateSerializedActorKey(key); !valid.has_value()) {
    Fail(*exchange, valid.error(), cors);
    return;
  }
  // The same for the name (actor.name_too_large, as REST create).
  if (Status valid = ValidateActorName(q.name); !valid.has_value()) {
    Fail(*exchange, valid.error(), cors);
    return;
  }
  // As REST create's `datacenter`: this engine is one datacenter, any other is refused.
  if (q.region.has_value() && *q.region != engine_.options().datacenter_name) {
    Fail(*exchange, Error{"api", "bad_request", "unknown datacenter '" + *q.region + "'"}, cors);
    return;
  }
  if (q.method == gateway::QueryMethod::kGet) {
    // Storage read: off the I/O thread.
    engine_.PostWork([this, exchange = std::move(exchange), ns = ns->id, name = q.name,
                      key = std::move(key), path = std::move(q.forwarded_path),
                      bypass = q.bypass_connectable, cors = std::move(cors)]() mutable {
      auto found = engine_.orchestrator().FindByKey(ns, name, key);
      if (!found.has_value()) {
        Fail(*exchange, found.error(), cors);
        return;
      }
      if (!found->has_value()) {
        Fail(*exchange, Error{"actor", "not_found", "The actor does not exist or was destroyed."},
             cors);
        return;
      }
      Reach(std::move(exchange), ns, **found, std::move(path), bypass, std::move(cors));
    });
    return;
  }
  // As for the key: no actor REST would refuse for its input (one its runtime could not keep).
  if (q.input.has_value()) {
    if (Status valid = ValidateActorInput(q.input->size()); !valid.has_value()) {
      Fail(*exchange, valid.error(), cors);
      return;
    }
  }
  CreateActorRequest create;
  create.namespace_id = ns->id;
  create.name = q.name;
  create.key = std::move(key);
  create.pool_name = q.pool_name.value_or(std::string(kDefaultPool));
  if (q.crash_policy.has_value()) {
    switch (*q.crash_policy) {
      case gateway::CrashPolicy::kRestart:
        create.crash_policy = rec::CrashPolicy::kRestart;
        break;
      case gateway::CrashPolicy::kSleep:
        create.crash_policy = rec::CrashPolicy::kSleep;
        break;
      case gateway::CrashPolicy::kDestroy:
        create.crash_policy = rec::CrashPolicy::kDestroy;
        break;
    }
  }
  create.input = std::move(q.input);
  create.get_or_create = true;
  // The client learns of a new actor only from its answer, which the connection holds
  // until the creation is durable: the request may ride right behind the start.
  create.answer_before_durable = true;
  engine_.orchestrator().Create(
      std::move(create),
      [this, exchange = std::move(exchange), ns = ns->id, path = std::move(q.forwarded_path),
       bypass = q.bypass_connectable,
       cors = std::move(cors)](Result<std::pair<ActorInfo, bool>> created) mutable {
        if (!created.has_value()) {
          Fail(*exchange, created.error(), cors);
          return;
        }
        Reach(std::move(exchange), ns, created->first.id, std::move(path), bypass,
              std::move(cors));
      });
}

void Gateway::Reach(std::shared_ptr<net::HttpExchange> exchange, std::optional<EngineId> ns,
                    EngineId actor, std::string path, bool bypass, net::Headers cors,
                    bool allow_early) {
  if (auto target = engine_.orchestrator().FastTarget(actor)) {
    if (!ns.has_value() || ns == target->session->namespace_id()) {
      Open(std::move(exchange), actor, std::move(target->session), std::move(path),
           std::move(cors));
      return;
    }
  }
  // An HTTP request may ride right behind the start command of a waking actor (the
  // envoy keeps it until the instance runs); a WebSocket waits for the instance to run.
  const bool websocket = exchange->IsWebSocketUpgrade();
  const bool early_ok = allow_early && engine_.options().early_requests && !websocket;
  // The wait may be long (a wake, an allocation): the request waits here, under the id it
  // will be sent with, and the orchestrator's waiter holds only that id. An HTTP client
  // that leaves meanwhile drops it (ClientGone); a WebSocket upgrade has no such watch (a
  // client gone before the upgrade gets its socket closed right after the open).
  const uint32_t request_id = next_request_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<net::HttpExchange> watched = websocket ? nullptr : exchange;
  {
    std::lock_guard lock(mu_);
    waiting_.emplace(request_id, Waiting{std::move(exchange), ns, actor, std::move(path), bypass,
                                         std::move(cors)});
  }
  // Registered before the wait starts: the server watches the connection from here on, so
  // a client that already left is seen at once too.
  if (watched != nullptr) {
    watched->OnPeerGone([this, request_id] { ClientGone(request_id); });
    watched.reset();
  }
  SchedulePoolCheck(request_id, kPoolCheckFirstMs);
  engine_.orchestrator().WhenReady(
      ns, actor, bypass,
      [this, request_id](Result<ActorTarget> target) { Ready(request_id, std::move(target)); },
      early_ok);
}

void Gateway::Ready(uint32_t request_id, Result<ActorTarget> target) {
  Waiting w;
  {
    std::lock_guard lock(mu_);
    auto it = waiting_.find(request_id);
    if (it == waiting_.end()) return;  // its client left while it waited: never sent
    w = std::move(it->second);
    it->second.pool_check = TimerId{};
    // Kept (emptied) while Open sends it, unless there is nothing to send: a ClientGone
    // meanwhile erases it, which Open sees.
    if (!target.has_value()) waiting_.erase(it);
  }
  if (w.pool_check != TimerId{}) engine_.clock().Cancel(w.pool_check);
  if (!target.has_value()) {
    Fail(*w.exchange, target.error(), w.cors);
    return;
  }
  std::optional<InFlightResend> resend;
  if (target->early) {
    resend = InFlightResend{target->generation, w.ns, w.path, w.bypass};
    engine_.metrics_early_request();
  }
  Open(std::move(w.exchange), w.actor, std::move(target->session), std::move(w.path),
       std::move(w.cors), std::move(resend), request_id);
}

void Gateway::SchedulePoolCheck(uint32_t request_id, int64_t delay_ms) {
  std::lock_guard lock(mu_);
  auto it = waiting_.find(request_id);
  // Gone, or taken by Ready (emptied): nothing to check any more.
  if (stopping_ || it == waiting_.end() || it->second.exchange == nullptr) return;
  it->second.pool_check = engine_.clock().ScheduleAfter(
      std::chrono::milliseconds(delay_ms), [this, request_id] { CheckPool(request_id); });
}

void Gateway::CheckPool(uint32_t request_id) {
  EngineId actor;
  {
    std::lock_guard lock(mu_);
    auto it = waiting_.find(request_id);
    if (stopping_ || it == waiting_.end() || it->second.exchange == nullptr) return;
    it->second.pool_check = TimerId{};
    actor = it->second.actor;
  }
  engine_.orchestrator().RunnerPoolError(
      actor, [this, request_id, actor](std::optional<MetadataFailure> error) {
        if (!error.has_value()) {
          SchedulePoolCheck(request_id, kPoolCheckEveryMs);
          return;
        }
        Waiting w;
        {
          std::lock_guard lock(mu_);
          auto it = waiting_.find(request_id);
          if (it == waiting_.end() || it->second.exchange == nullptr) return;
          w = std::move(it->second);
          waiting_.erase(it);
        }
        if (w.pool_check != TimerId{}) engine_.clock().Cancel(w.pool_check);
        // The orchestrator's waiter ends later (ready or timed out) and finds nothing here.
        nlohmann::json metadata{
            {"actor_id", actor.ToString()},
            {"runner_pool_error", nlohmann::json::parse(MetadataFailureJson(*error))}};
        Fail(*w.exchange,
             Error{"guard", "actor_runner_failed",
                   "The actor's runner pool is failing (metadata.runner_pool_error): " +
                       MetadataFailureJson(*error)},
             w.cors, metadata.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      });
}

void Gateway::SendAgain(InFlight entry, bool refused_not_started) {
  if (entry.gone) return;  // its client left while it was being sent: nobody to answer
  KEEL_LOG(kDebug, kLog, "sending a request again: the instance it rode with never started",
           {{"actor", entry.actor.ToString()},
            {"generation", std::to_string(entry.resend->generation)},
            {"why", refused_not_started ? "refused as not started" : "stopped before running"}});
  engine_.metrics_request_sent_again(refused_not_started);
  InFlightResend r = std::move(*entry.resend);
  Reach(std::move(entry.exchange), r.ns, entry.actor, std::move(r.path), r.bypass,
        std::move(entry.cors), /*allow_early=*/false);
}

void Gateway::Open(std::shared_ptr<net::HttpExchange> exchange, EngineId actor,
                   std::shared_ptr<EnvoySession> session, std::string path, net::Headers cors,
                   std::optional<InFlightResend> resend, std::optional<uint32_t> waited) {
  const uint32_t request_id =
      waited.value_or(next_request_.fetch_add(1, std::memory_order_relaxed));
  const net::HttpRequest& req = exchange->request();
  const bool websocket = exchange->IsWebSocketUpgrade();
  InFlight entry;
  entry.websocket = websocket;
  entry.session = session;
  entry.session_id = session->id();
  entry.actor = actor;
  entry.next_index = 1;  // the opening message below has index 0
  entry.cors = std::move(cors);
  entry.resend = std::move(resend);
  latest::ToEnvoyTunnelMessageKind first;
  if (websocket) {
    latest::ToEnvoyWebSocketOpen open;
    open.actor_id = actor.ToString();
    open.path = std::move(path);
    open.headers = protocol::envoy::MergeRepeatedHeaders(req.headers);
    first = std::move(open);
    entry.user = exchange->AcceptWebSocket(
        EchoSubprotocol(net::FindHeader(req.headers, "sec-websocket-protocol")),
        std::make_shared<UserSocket>(*this, request_id));
    if (entry.user == nullptr) {
      if (waited.has_value()) {
        std::lock_guard lock(mu_);
        waiting_.erase(request_id);
      }
      return;
    }
  } else {
    latest::ToEnvoyRequestStart start;
    start.actor_id = actor.ToString();
    start.method = req.method;
    start.path = std::move(path);
    start.headers = protocol::envoy::MergeRepeatedHeaders(req.headers);
    if (!req.body.empty()) start.body = Bytes(req.body.begin(), req.body.end());
    start.stream = false;
    first = std::move(start);
    entry.exchange = exchange;
  }
  const int64_t timeout_ms = websocket ? engine_.options().ws_open_timeout_ms
                                       : engine_.options().response_start_timeout_ms;
  entry.deadline_ms = engine_.clock().SystemNowMs() + timeout_ms;
  entry.opening = waited.has_value() && !websocket;
  {
    std::lock_guard lock(mu_);
    if (waited.has_value()) {
      // Its client left since Ready took it (ClientGone erased it): not sent. The entry
      // (and the exchange) go when this returns.
      if (waiting_.erase(request_id) == 0) return;
    }
    in_flight_.emplace(request_id, std::move(entry));
  }
  SendToEnvoy(*session, request_id, 0, std::move(first));
  if (!websocket && !waited.has_value()) {
    // Registered once the start went out, so an abort never overtakes it (the server only
    // watches the connection from here on, and sees a client that already left at once).
    // The callback holds only what fits std::function's inline buffer (no allocation per
    // request).
    exchange->OnPeerGone([this, request_id] { ClientGone(request_id); });
  } else if (!websocket) {
    // Its OnPeerGone was registered while it waited: a ClientGone since it went into the
    // table only marked it, and its abort follows the start now.
    std::optional<InFlight> aborted;
    {
      std::lock_guard lock(mu_);
      auto it = in_flight_.find(request_id);
      if (it != in_flight_.end()) {
        it->second.opening = false;
        if (it->second.gone) {
          aborted.emplace(std::move(it->second));
          in_flight_.erase(it);
        }
      }
    }
    if (aborted.has_value()) {
      SendToEnvoy(*session, request_id, aborted->next_index,
                  latest::ToEnvoyTunnelMessageKind{latest::ToEnvoyRequestAbort{}});
    }
  }
  if (session->closed()) OnEnvoyClosed(*session);  // closed while we registered
}

void Gateway::ClientGone(uint32_t request_id) {
  // Whoever removes the entry under mu_ owns the request's end: a response that finished
  // first (or a failure, a timeout, an actor stop) leaves nothing here, and once it is gone
  // from the table a ResponseStart or chunk for it is dropped as for an unknown id.
  std::optional<InFlight> entry;
  std::optional<Waiting> dropped;
  {
    std::lock_guard lock(mu_);
    if (auto w = waiting_.find(request_id); w != waiting_.end()) {
      // Not sent yet (its actor is not ready): dropped here, the actor never sees it. If
      // Ready already took it for Open, the entry's absence tells Open.
      dropped.emplace(std::move(w->second));
      waiting_.erase(w);
    } else {
      auto it = in_flight_.find(request_id);
      if (it == in_flight_.end() || it->second.websocket) return;
      if (it->second.opening) {  // Open is sending its start: it sends the abort after it
        it->second.gone = true;
        return;
      }
      entry.emplace(std::move(it->second));
      in_flight_.erase(it);
    }
  }
  if (dropped.has_value()) {
    if (dropped->pool_check != TimerId{}) engine_.clock().Cancel(dropped->pool_check);
    KEEL_LOG(kDebug, kLog, "the client left before its actor was ready: request dropped",
             {{"request", std::to_string(request_id)}});
    return;  // the exchange goes with it
  }
  if (auto session = entry->session.lock()) {
    SendToEnvoy(*session, request_id, entry->next_index,
                latest::ToEnvoyTunnelMessageKind{latest::ToEnvoyRequestAbort{}});
  }
  // The exchange goes with the entry: the client is gone, nothing is left to answer.
}

void Gateway::SendToEnvoy(EnvoySession& session, uint32_t request_id, uint16_t index,
                          latest::ToEnvoyTunnelMessageKind kind) {
  latest::ToEnvoyTunnelMessage msg;
  msg.message_id.gateway_id = gateway_id_;
  msg.message_id.request_id = RequestIdBytes(request_id);
  msg.message_id.message_index = index;
  msg.message_kind = std::move(kind);
  session.Send(latest::ToEnvoy{std::move(msg)});
}

std::optional<Gateway::InFlight> Gateway::Take(uint32_t request_id) {
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(request_id);
  if (it == in_flight_.end()) return std::nullopt;
  InFlight entry = std::move(it->second);
  in_flight_.erase(it);
  return entry;
}

void Gateway::FromUser(uint32_t request_id, latest::ToEnvoyTunnelMessageKind kind) {
  std::shared_ptr<EnvoySession> session;
  uint16_t index = 0;
  bool wake = false;
  std::optional<Error> overflow;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end()) return;
    InFlight& entry = it->second;
    index = entry.next_index++;
    // Kept until acknowledged when the socket can hibernate, and also before the actor's
    // open says whether it can: a user may talk right after the upgrade, and a message
    // sent then must be replayed too if the envoy goes away once the socket turned out to
    // be hibernatable (the open drops the buffer when it is not).
    if (entry.can_hibernate || !entry.ws_open) {
      if (const auto* m = std::get_if<latest::ToEnvoyWebSocketMessage>(&kind.value)) {
        const int64_t now = engine_.clock().SystemNowMs();
        if (entry.unacked.size() >= kMaxPendingMessages ||
            entry.unacked_bytes + m->data.size() > engine_.options().hws_max_pending_bytes) {
          overflow = Error{"guard", "websocket_pending_limit_reached",
                           "Reached limit on pending websocket messages, aborting connection."};
        } else if (!entry.unacked.empty() &&
                   now - entry.unacked.front().sent_ms > engine_.options().hws_ack_timeout_ms) {
          overflow = Error{"guard", "websocket_ack_timeout",
                           "the actor did not acknowledge websocket messages in time"};
        } else {
          entry.unacked.push_back(InFlight::Pending{index, *m, now});
          entry.unacked_bytes += m->data.size();
        }
      }
    }
    if (entry.hibernating) {
      // Buffered; the message goes out with the others once the actor is back.
      if (!entry.waking && !overflow.has_value()) {
        entry.waking = true;
        wake = true;
      }
    } else if (!entry.replaying) {
      session = entry.session.lock();
    }
  }
  if (overflow.has_value()) {
    FailSocket(request_id, *overflow);
    return;
  }
  if (wake) Rewake(request_id);
  if (session != nullptr) SendToEnvoy(*session, request_id, index, std::move(kind));
}

void Gateway::FailSocket(uint32_t request_id, const Error& error) {
  std::optional<InFlight> entry = Take(request_id);
  if (!entry.has_value()) return;
  engine_.clock().Cancel(entry->keepalive);
  if (entry->hibernating) WriteKeepaliveFor(*entry, request_id, false);
  if (auto session = entry->session.lock(); session != nullptr && !entry->hibernating) {
    latest::ToEnvoyWebSocketClose close;
    close.code = 1011;
    close.reason = error.ToString().substr(0, 123);
    SendToEnvoy(*session, request_id, entry->next_index, latest::ToEnvoyTunnelMessageKind{close});
  }
  if (entry->user != nullptr) {
    entry->user->Close(gateway::CloseCode(error), gateway::CloseReason(error, engine_.NewRayId()));
  }
}

void Gateway::Hibernate(uint32_t request_id, bool write_now) {
  // Called with the entry already marked hibernating (under mu_ by the caller's update).
  if (write_now) {
    WriteKeepaliveNow(request_id);
  } else {
    WriteKeepalive(request_id, true);
  }
  TimerId timer = engine_.clock().ScheduleAfter(std::chrono::milliseconds(kKeepaliveMs),
                                                [this, request_id] { Hibernate(request_id); });
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(request_id);
  if (it == in_flight_.end() || !it->second.hibernating) {
    engine_.clock().Cancel(timer);
    return;
  }
  it->second.keepalive = timer;
}

// 05 ‹actor› 30 ‹gateway id› ‹request id› → the keepalive time (u64 BE ms); read by the
// orchestrator into CommandStartActor.hibernatingRequests.
Bytes Gateway::KeepaliveKey(const EngineId& actor, uint32_t request_id) const {
  Bytes key = keys::ActorHibernating(actor.bytes());
  key.insert(key.end(), gateway_id_.begin(), gateway_id_.end());
  auto rid = RequestIdBytes(request_id);
  key.insert(key.end(), rid.begin(), rid.end());
  return key;
}

void Gateway::StoreKeepalive(const Bytes& key, bool alive, int64_t now_ms) {
  Status s;
  if (alive) {
    Bytes value;
    keys::AppendU64(value, static_cast<uint64_t>(now_ms));
    s = engine_.store().Put(key, value);
  } else {
    s = engine_.store().Delete(key);
  }
  if (!s.has_value()) {
    KEEL_LOG(kWarn, kLog, "could not write a hibernation keepalive", {{"error", s.error().ToString()}});
  }
}

void Gateway::WriteKeepaliveNow(uint32_t request_id) {
  Bytes key;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end()) return;
    key = KeepaliveKey(it->second.actor, request_id);
  }
  StoreKeepalive(key, true, engine_.clock().SystemNowMs());
}

void Gateway::WriteKeepalive(uint32_t request_id, bool alive) {
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(request_id);
  if (it == in_flight_.end()) return;
  WriteKeepaliveFor(it->second, request_id, alive);
}

void Gateway::WriteKeepaliveFor(const InFlight& entry, uint32_t request_id, bool alive) {
  // Written off the I/O thread.
  engine_.PostWork([this, key = KeepaliveKey(entry.actor, request_id), alive, now = engine_.clock().SystemNowMs()] {
    StoreKeepalive(key, alive, now);
  });
}

// A socket that starts hibernating with client messages the actor never acknowledged (sent
// while it was going to sleep, or in flight when its runtime died) has a client waiting for
// answers: wake the actor now instead of waiting for the client's next message.
void Gateway::WakeIfMessagesWait(uint32_t request_id, std::weak_ptr<EnvoySession> from, int attempt) {
  EngineId actor;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end() || !it->second.hibernating || it->second.waking || it->second.unacked.empty()) {
      return;
    }
    actor = it->second.actor;
  }
  // A sleeping actor's socket hibernates while the actor still shuts down on `from`: wake
  // it once that instance is gone (checked every 20 ms, for at most 30 s; after that the
  // client's next message wakes it).
  if (auto session = from.lock();
      session != nullptr && engine_.orchestrator().HostedGeneration(*session, actor).has_value()) {
    if (attempt >= 1500) return;
    engine_.clock().ScheduleAfter(std::chrono::milliseconds(20), [this, request_id, from, attempt] {
      WakeIfMessagesWait(request_id, from, attempt + 1);
    });
    return;
  }
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end() || !it->second.hibernating || it->second.waking) return;
    it->second.waking = true;
  }
  Rewake(request_id);
}

void Gateway::Rewake(uint32_t request_id) {
  EngineId actor;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end()) return;
    actor = it->second.actor;
  }
  engine_.orchestrator().WhenReady(
      std::nullopt, actor, false, [this, request_id](Result<ActorTarget> target) {
        if (!target.has_value()) {
          FailSocket(request_id, target.error());
          return;
        }
        Reattach(request_id, std::move(target->session));
      });
}

void Gateway::Reattach(uint32_t request_id, std::shared_ptr<EnvoySession> session) {
  std::vector<InFlight::Pending> resend;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end()) return;
    InFlight& entry = it->second;
    if (!entry.hibernating && !entry.waking) return;  // already attached
    entry.session = session;
    entry.session_id = session->id();
    entry.hibernating = false;
    entry.waking = false;
    entry.replaying = true;
    engine_.clock().Cancel(entry.keepalive);
    entry.keepalive = TimerId{};
    resend.assign(entry.unacked.begin(), entry.unacked.end());
  }
  // No new WebSocketOpen: the actor restored the socket from hibernatingRequests. Sent
  // outside the lock, in rounds: what the user sent during a round goes out in the next one
  // (FromUser only buffers while `replaying`), until a round finds nothing newer.
  std::optional<uint16_t> last_sent;
  while (true) {
    for (auto& p : resend) {
      last_sent = p.index;
      SendToEnvoy(*session, request_id, p.index,
                  latest::ToEnvoyTunnelMessageKind{std::move(p.message)});
    }
    resend.clear();
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(request_id);
    if (it == in_flight_.end()) return;
    InFlight& entry = it->second;
    // Detached again meanwhile: it hibernates anew (its keepalive stays), nothing to do.
    if (entry.session_id != session->id()) return;
    for (const InFlight::Pending& p : entry.unacked) {
      if (!last_sent.has_value() || !IndexAtMost(p.index, *last_sent)) resend.push_back(p);
    }
    if (resend.empty()) {
      entry.replaying = false;
      break;
    }
  }
  WriteKeepalive(request_id, false);
}

void Gateway::UserClosed(uint32_t request_id, uint16_t code, std::string reason) {
  std::optional<InFlight> entry = Take(request_id);
  if (!entry.has_value()) return;
  engine_.clock().Cancel(entry->keepalive);
  if (entry->hibernating || entry->waking) {
    // The actor learns at its next start: the request is no longer in hibernatingRequests.
    WriteKeepaliveFor(*entry, request_id, false);
    return;
  }
  if (auto session = entry->session.lock()) {
    latest::ToEnvoyWebSocketClose close;
    if (code != 1005 && code != 1006) close.code = code;
    if (!reason.empty()) close.reason = std::move(reason);
    SendToEnvoy(*session, request_id, entry->next_index, latest::ToEnvoyTunnelMessageKind{close});
  }
}

void Gateway::Expire(uint32_t request_id) {
  std::optional<InFlight> entry = Take(request_id);
  if (!entry.has_value()) return;
  if (entry->websocket) {
    if (!entry->ws_open && entry->user != nullptr) {
      Error e{"guard", "websocket_service_timeout", "the actor did not open the WebSocket in time"};
      entry->user->Close(gateway::CloseCode(e), gateway::CloseReason(e, engine_.NewRayId()));
    }
    return;
  }
  if (entry->streaming) {
    entry->exchange->FinishStream();
    return;
  }
  Fail(*entry->exchange,
       Error{"guard", "service_unavailable", "the actor did not start a response in time"},
       entry->cors);
}

void Gateway::OnTunnelMessage(EnvoySession& session, latest::ToRivetTunnelMessage&& msg) {
  if (msg.message_id.gateway_id != gateway_id_) return;  // not ours: dropped (§6.2)
  const uint32_t request_id = RequestIdValue(msg.message_id.request_id);
  std::unique_lock lock(mu_);
  auto it = in_flight_.find(request_id);
  if (it == in_flight_.end()) return;
  if (it->second.session_id != session.id()) {
    // Only the connection the request went to may answer — or, for a hibernated socket,
    // the connection now hosting its actor (the restored socket talks first).
    InFlight& e = it->second;
    if (!e.websocket || !e.can_hibernate || !(e.hibernating || e.waking) ||
        !engine_.orchestrator().HostedGeneration(session, e.actor).has_value()) {
      return;
    }
    lock.unlock();
    Reattach(request_id, session.shared_from_this());
    lock.lock();
    it = in_flight_.find(request_id);
    if (it == in_flight_.end() || it->second.session_id != session.id()) return;
  }
  InFlight& entry = it->second;
  auto& kind = msg.message_kind.value;

  if (auto* start = std::get_if<latest::ToRivetResponseStart>(&kind)) {
    if (entry.websocket || entry.streaming) return;
    if (entry.resend.has_value() && start->status == 503 &&
        net::FindHeader(start->headers, protocol::envoy::kNotStartedHeader) == "1") {
      // The instance it rode with ended before it started: the request was not handled.
      InFlight taken = std::move(entry);
      in_flight_.erase(it);
      lock.unlock();
      SendAgain(std::move(taken), /*refused_not_started=*/true);
      return;
    }
    if (start->status == 503) {
      // The envoy's mark for the gateway, not for the client.
      std::erase_if(start->headers,
                    [](const auto& h) { return h.first == protocol::envoy::kNotStartedHeader; });
    }
    auto exchange = entry.exchange;
    // Only a failure before the response starts answers with the CORS headers again.
    net::Headers headers = WithCors(std::move(start->headers), std::move(entry.cors));
    std::string body;
    if (start->body.has_value()) body.assign(start->body->begin(), start->body->end());
    if (start->stream) {
      entry.streaming = true;
      entry.deadline_ms = 0;
      lock.unlock();
      exchange->StartStream(start->status, std::move(headers));
      if (!body.empty()) exchange->WriteChunk(std::move(body));
      return;
    }
    in_flight_.erase(it);
    lock.unlock();
    exchange->Respond(net::HttpResponse{start->status, std::move(headers), std::move(body)});
    return;
  }
  if (auto* chunk = std::get_if<latest::ToRivetResponseChunk>(&kind)) {
    if (!entry.streaming) return;
    auto exchange = entry.exchange;
    if (chunk->finish) in_flight_.erase(it);
    lock.unlock();
    if (!chunk->body.empty()) exchange->WriteChunk(std::string(chunk->body.begin(), chunk->body.end()));
    if (chunk->finish) exchange->FinishStream();
    return;
  }
  if (std::holds_alternative<latest::ToRivetResponseAbort>(kind)) {
    if (entry.websocket) return;
    InFlight taken = std::move(entry);
    in_flight_.erase(it);
    lock.unlock();
    if (taken.streaming) {
      taken.exchange->FinishStream();
    } else {
      Fail(*taken.exchange, Error{"guard", "service_unavailable", "the actor aborted the response"},
           taken.cors);
    }
    return;
  }
  if (auto* open = std::get_if<latest::ToRivetWebSocketOpen>(&kind)) {
    if (!entry.websocket) return;
    entry.ws_open = true;
    entry.can_hibernate = entry.can_hibernate || open->can_hibernate;
    entry.deadline_ms = 0;
    if (!entry.can_hibernate) {
      entry.unacked.clear();  // kept only in case the socket could hibernate (FromUser)
      entry.unacked_bytes = 0;
    }
    return;
  }
  if (auto* m = std::get_if<latest::ToRivetWebSocketMessage>(&kind)) {
    if (!entry.websocket) return;
    auto user = entry.user;
    lock.unlock();
    user->Send(std::string(m->data.begin(), m->data.end()), m->binary);
    return;
  }
  if (auto* ack = std::get_if<latest::ToRivetWebSocketMessageAck>(&kind)) {
    while (!entry.unacked.empty() && IndexAtMost(entry.unacked.front().index, ack->index)) {
      entry.unacked_bytes -= entry.unacked.front().message.data.size();
      entry.unacked.pop_front();
    }
    return;
  }
  if (auto* close = std::get_if<latest::ToRivetWebSocketClose>(&kind)) {
    if (!entry.websocket) return;
    if (close->hibernate && entry.can_hibernate) {
      entry.hibernating = true;
      entry.session.reset();
      entry.session_id = 0;
      entry.deadline_ms = 0;
      lock.unlock();
      // The keepalive key is written before a wake can list the actor's hibernating
      // requests (WakeIfMessagesWait may start the next instance right away).
      Hibernate(request_id, /*write_now=*/true);
      WakeIfMessagesWait(request_id, session.weak_from_this());
      return;
    }
    InFlight taken = std::move(entry);
    in_flight_.erase(it);
    lock.unlock();
    // hibernate = true on a socket that cannot hibernate: closed like an actor stop.
    const uint16_t code = close->hibernate ? 1000 : close->code.value_or(1000);
    std::string reason = close->hibernate ? "actor.stopped" : close->reason.value_or("");
    taken.user->Close(code, std::move(reason));
    return;
  }
}

void Gateway::OnActorStopped(const EngineId& actor, std::optional<uint32_t> never_ran) {
  if (never_ran.has_value()) {
    // Requests sent early to a generation that stopped before it ran were never handled
    // (the envoy keeps them until the instance runs): they go to the next instance.
    std::vector<InFlight> again;
    {
      std::lock_guard lock(mu_);
      for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        InFlight& e = it->second;
        if (e.actor == actor && e.resend.has_value() && e.resend->generation == *never_ran &&
            !e.streaming) {
          again.push_back(std::move(e));
          it = in_flight_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& entry : again) SendAgain(std::move(entry), /*refused_not_started=*/false);
  }
  Detach([&](const InFlight& e) { return e.actor == actor; },
         Error{"guard", "service_unavailable", "the actor stopped before it answered"}, 1000,
         "actor.stopped");
}

void Gateway::OnEnvoyClosed(EnvoySession& session) {
  const Error gone{"guard", "service_unavailable", "the actor's envoy disconnected"};
  Detach([&](const InFlight& e) { return e.session_id == session.id(); }, gone,
         gateway::CloseCode(gone), gateway::CloseReason(gone, engine_.NewRayId()));
}

std::optional<EngineId> Gateway::ActorOf(const latest::MessageId& id) const {
  if (id.gateway_id != gateway_id_) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(RequestIdValue(id.request_id));
  if (it == in_flight_.end()) return std::nullopt;
  return it->second.actor;
}

void Gateway::FailActorOn(EnvoySession& session, const EngineId& actor, const Error& error) {
  Detach([&](const InFlight& e) { return e.actor == actor && e.session_id == session.id(); },
         error, gateway::CloseCode(error), gateway::CloseReason(error, engine_.NewRayId()),
         session.weak_from_this(), /*abort_streams=*/true);
}

void Gateway::Detach(const std::function<bool(const InFlight&)>& match, const Error& http_error,
                     uint16_t ws_code, const std::string& ws_reason,
                     std::weak_ptr<EnvoySession> from, bool abort_streams) {
  std::vector<InFlight> failed;
  std::vector<uint32_t> hibernate;
  {
    std::lock_guard lock(mu_);
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      InFlight& e = it->second;
      // Only attached requests: hibernating or waking ones have no instance to lose.
      if (e.session_id == 0 || !match(e)) {
        ++it;
      } else if (e.websocket && e.can_hibernate) {
        // The user socket waits for the actor's next instance (§6.5).
        e.hibernating = true;
        e.session.reset();
        e.session_id = 0;
        hibernate.push_back(it->first);
        ++it;
      } else {
        failed.push_back(std::move(e));
        it = in_flight_.erase(it);
      }
    }
  }
  for (uint32_t id : hibernate) {
    // Written before returning: the caller tells the orchestrator next, which restarts the
    // lost actors and lists their hibernating requests from these keys.
    Hibernate(id, /*write_now=*/true);
    WakeIfMessagesWait(id, from);
  }
  for (auto& entry : failed) {
    if (entry.websocket) {
      entry.user->Close(ws_code, ws_reason);
    } else if (entry.streaming) {
      // Dropping the last reference mid-stream aborts the connection (net/http_server.h).
      if (!abort_streams) entry.exchange->FinishStream();
    } else {
      Fail(*entry.exchange, http_error, entry.cors);
    }
  }
}

void Gateway::DispatchServerlessStart(const EngineId& ns, const EngineId& actor,
                                      const rec::ActorRecord& record, uint32_t generation,
                                      int64_t index, std::optional<latest::PreloadedKv> preloaded) {
  std::optional<Pool> pool = engine_.catalog().FindPool(ns, record.pool_name);
  std::optional<Namespace> namespace_record = engine_.catalog().FindNamespace(ns);
  if (!pool.has_value() || !pool->serverless() || !namespace_record.has_value()) return;
  const uint16_t version = pool->config.protocol_version.value_or(4);
  latest::CommandWrapper w;
  w.checkpoint = latest::ActorCheckpoint{actor.ToString(), generation, index};
  latest::CommandStartActor start;
  start.config.name = record.name;
  start.config.key = record.key;
  start.config.create_ts = record.create_ts;
  start.config.input = record.input;
  start.preloaded_kv = std::move(preloaded);
  w.inner = std::move(start);
  auto body = protocol::envoy::EncodeToEnvoyFramed(
      latest::ToEnvoy{latest::ToEnvoyCommands{{std::move(w)}}}, version);
  if (!body.has_value()) {
    KEEL_LOG(kError, kLog, "cannot encode a serverless start",
             {{"actor", actor.ToString()}, {"error", protocol::ToString(body.error())}});
    return;
  }
  net::HttpRequest request;
  request.method = "POST";
  request.headers = {{"x-rivet-endpoint", engine_.options().public_url},
                     {"x-rivet-pool-name", record.pool_name},
                     {"x-rivet-namespace-name", namespace_record->name},
                     {"content-type", "application/octet-stream"}};
  if (engine_.options().admin_token.has_value()) {
    request.headers.emplace_back("x-rivet-token", *engine_.options().admin_token);
  }
  for (const auto& h : pool->config.serverless->headers) request.headers.push_back(h);
  request.body.assign(body->begin(), body->end());
  std::string url = pool->config.serverless->url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  url += "/start";
  KEEL_LOG(kInfo, kLog, "serverless start",
           {{"actor", actor.ToString()}, {"url", url}, {"generation", std::to_string(generation)}});
  // The SSE stream is held open for the request's life; the actor's state machine learns
  // about the instance from its envoy's events. A failed start (actors.md §6.10 step 3) is
  // reported once: a refused start (connection error, not 200 + text/event-stream, whose
  // body's start is read for the error) or an invalid SSE payload is the pool's error
  // whatever the actor's state; a stream that breaks, or ends without `event: stopping`,
  // only before the runtime's envoy took the actor.
  auto st = std::make_shared<ServerlessStream>();
  {
    std::lock_guard lock(mu_);
    st->serial = ++next_serverless_;
  }
  const std::string pool_name = record.pool_name;
  // Its lifespan (§6.10 step 4): the drain at request_lifespan − drain_grace_period, the drop
  // at request_lifespan, both from the moment the stream was accepted.
  const int64_t lifespan_ms = int64_t{pool->config.serverless->request_lifespan_s} * 1000;
  const int64_t drain_ms = std::max<int64_t>(
      0, lifespan_ms - int64_t{pool->config.serverless->drain_grace_period_s} * 1000);
  auto report = [this, ns, pool_name, url, actor, generation](MetadataFailure f,
                                                              bool only_untaken) {
    if (engine_.shutting_down()) return;
    KEEL_LOG(kWarn, kLog, "serverless start failed",
             {{"actor", actor.ToString()}, {"url", url}, {"error", MetadataFailureJson(f)}});
    engine_.orchestrator().OnServerlessStartFailed(ns, pool_name, actor, generation, std::move(f),
                                                   only_untaken);
  };
  auto refused = [](const ServerlessStream& s) {
    MetadataFailure f;
    f.kind = MetadataFailure::Kind::kServerlessHttpError;
    f.status_code = s.status;
    f.body = BodyExcerpt(s.body);
    return f;
  };
  // Ends the stream from the engine's side (a timer, or a payload it refuses): `failure` is
  // reported, if any. False when the stream was already over.
  auto end_early = [this, st, report](std::optional<MetadataFailure> failure) {
    net::CancelFn cancel;
    {
      std::lock_guard lock(st->mu);
      if (st->over) return false;
      st->over = true;
      cancel = std::move(st->cancel);
      st->cancel = nullptr;
    }
    EndServerlessTimers(st->serial);
    if (failure.has_value()) report(std::move(*failure), /*only_untaken=*/false);
    if (cancel) cancel();  // on_end then finds it over
    return true;
  };
  net::CancelFn cancel = net::FetchStream(
      engine_.io(), url, std::move(request),
      [this, st, actor, generation, report, refused, end_early, url, lifespan_ms,
       drain_ms](Result<net::HttpResponse> head) {
        if (!head.has_value()) {
          {
            std::lock_guard lock(st->mu);
            st->over = true;
            st->cancel = nullptr;  // it refers to these callbacks: no cycle left behind
          }
          EndServerlessTimers(st->serial);
          MetadataFailure f;
          f.kind = MetadataFailure::Kind::kServerlessConnectionError;
          f.message = head.error().message();
          report(std::move(f), /*only_untaken=*/false);
          return;
        }
        if (head->status != 200 || !IsEventStream(net::FindHeader(head->headers, "content-type"))) {
          {
            std::lock_guard lock(st->mu);
            st->refused = true;
            st->status = head->status;
          }
          // Reported with its body's start (on_data / on_end), or with what arrived of it
          // when the body takes longer than a metadata fetch may.
          ArmServerlessTimer(st->serial, engine_.options().metadata_fetch_timeout_ms,
                             [st, refused, end_early] {
                               MetadataFailure f;
                               {
                                 std::lock_guard lock(st->mu);
                                 f = refused(*st);
                               }
                               end_early(std::move(f));
                             });
          return;
        }
        engine_.orchestrator().OnServerlessDispatched(actor, generation);
        ArmServerlessTimer(st->serial, drain_ms, [this, st, actor, generation, url] {
          {
            std::lock_guard lock(st->mu);
            if (st->over) return;
          }
          KEEL_LOG(kInfo, kLog, "serverless request draining: its lifespan ends soon",
                   {{"actor", actor.ToString()},
                    {"url", url},
                    {"generation", std::to_string(generation)}});
          engine_.orchestrator().OnServerlessDrain(actor, generation);
        });
        ArmServerlessTimer(st->serial, lifespan_ms, [end_early, actor, generation, url] {
          if (end_early(std::nullopt)) {
            KEEL_LOG(kInfo, kLog, "serverless request dropped at its lifespan",
                     {{"actor", actor.ToString()},
                      {"url", url},
                      {"generation", std::to_string(generation)}});
          }
        });
      },
      [this, st, refused, end_early, actor, generation, url](std::string chunk) {
        std::optional<MetadataFailure> failure;
        bool began_stopping = false;
        {
          std::lock_guard lock(st->mu);
          if (st->over) return;
          if (st->refused) {
            // One byte past the excerpt tells BodyExcerpt where a UTF-8 sequence ends.
            const size_t room =
                kBodyExcerptBytes + 1 - std::min(st->body.size(), kBodyExcerptBytes + 1);
            st->body.append(chunk, 0, room);
            if (st->body.size() > kBodyExcerptBytes) failure = refused(*st);
          } else {
            const bool was_stopping = st->stopping;
            st->line += chunk;
            if (auto invalid = ConsumeSseLines(*st)) {
              MetadataFailure f;
              f.kind = MetadataFailure::Kind::kServerlessInvalidSsePayload;
              f.message = std::move(*invalid);
              failure = std::move(f);
            }
            began_stopping = !was_stopping && st->stopping;
          }
        }
        if (began_stopping) {
          // The runtime behind the request is going away (its platform ends the request):
          // its actor is moved as at the lifespan's drain, not left to be lost with it.
          KEEL_LOG(kInfo, kLog, "serverless runtime stopping: moving the actor it hosts",
                   {{"actor", actor.ToString()},
                    {"url", url},
                    {"generation", std::to_string(generation)}});
          engine_.orchestrator().OnServerlessDrain(actor, generation);
        }
        if (failure.has_value()) end_early(std::move(failure));
      },
      [this, st, report, refused](Status end) {
        std::optional<MetadataFailure> failure;
        bool only_untaken = true;
        {
          std::lock_guard lock(st->mu);
          st->cancel = nullptr;
          if (st->over) return;
          st->over = true;
          if (st->refused) {
            failure = refused(*st);
            only_untaken = false;
          } else if (!end.has_value()) {
            MetadataFailure f;
            f.kind = MetadataFailure::Kind::kServerlessConnectionError;
            f.message = end.error().message();
            failure = std::move(f);
          } else if (!st->stopping) {
            MetadataFailure f;
            f.kind = MetadataFailure::Kind::kServerlessStreamEndedEarly;
            failure = std::move(f);
          }
        }
        EndServerlessTimers(st->serial);
        if (failure.has_value()) report(std::move(*failure), only_untaken);
      });
  std::lock_guard lock(st->mu);
  if (!st->over) st->cancel = std::move(cancel);
}

void Gateway::ArmServerlessTimer(uint64_t serial, int64_t delay_ms, std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  // Armed from the stream's own callbacks, which run one at a time: an entry erased by
  // EndServerlessTimers is never armed again (the stream is over by then).
  std::vector<TimerId>& timers = serverless_timers_[serial];
  timers.push_back(engine_.clock().ScheduleAfter(
      std::chrono::milliseconds(std::max<int64_t>(delay_ms, 0)), std::move(fn)));
}

void Gateway::EndServerlessTimers(uint64_t serial) {
  std::lock_guard lock(mu_);
  auto it = serverless_timers_.find(serial);
  if (it == serverless_timers_.end()) return;
  for (TimerId t : it->second) engine_.clock().Cancel(t);
  serverless_timers_.erase(it);
}

}  // namespace keel::engine
