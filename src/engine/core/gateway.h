// Gateway: carries end-user HTTP requests and WebSockets to actors as tunnel frames over
// the hosting envoy's connection (actors.md §5, envoy-protocol.md §6).
//
// Per request: resolve the actor (id, or name + key with get / getOrCreate), take the fast
// path when it is connectable on a live connection, else ask the orchestrator to wake it
// and wait (bounded); then register an in-flight entry keyed by a 4-byte request id under
// this gateway's random 4-byte gateway id and send RequestStart / WebSocketOpen. Replies
// from the envoy (ResponseStart / chunks / abort, WebSocket open / message / close) find
// their entry by request id; only the connection the request was sent to may answer it.
// Every failure is a structured error: JSON with the §5.9 status for HTTP, a close frame
// `group.code#ray` for WebSockets. CORS headers go on every actor-route response (§5.7).
// An end user who disconnects before an HTTP response finished (before its ResponseStart,
// or in the middle of a streamed one) gets the request aborted: the envoy receives
// ToEnvoyRequestAbort for it and the entry is dropped (§6.3's recommendation). Exactly one
// of the response finishing and the abort happens: both take the entry under the mutex.
// One who disconnects while the gateway still waits for the actor to be ready (woken from
// sleep, allocated, started) is dropped at the gateway instead: the request is never sent
// and what the gateway held for it (the exchange, path, headers, body) goes at once; the
// wake goes on (other requests may be waiting for it, and an actor nobody uses goes back
// to sleep as usual), and the orchestrator's waiter, which holds only the request id, ends
// when the actor is ready or the ready timeout passes, then finds nothing to send.
//
// Hibernation (§6.5): a WebSocket the actor opened with canHibernate keeps every user
// message (with its index) until the actor acknowledges it. When the actor closes with
// hibernate = true, or stops, or its envoy goes away, the user socket stays open; the
// gateway records a keepalive for (actor, gateway id, request id) — the orchestrator lists
// live ones in CommandStartActor.hibernatingRequests — and the next user message wakes the
// actor. On wake (or when the restored actor talks first) the socket re-attaches to the
// actor's envoy without a new open and every unacknowledged message is sent again with its
// original index. Limits: 65535 messages / 128 MiB buffered, oldest unacknowledged at most
// 30 s old (guard.websocket_pending_limit_reached / guard.websocket_ack_timeout).
//
// A request waiting for its actor is also failed with guard.actor_runner_failed (metadata:
// the actor id and the pool's runner-pool error) when the actor's pool has a runner-pool
// error, checked 1 s after the wait began and every 2 s after (§5.6), on the engine clock.
//
// Also here: the serverless start path (envoy-protocol.md §4.9, actors.md §6.10): POST
// <pool url>/start with the version-prefixed ToEnvoyCommands body, holding the SSE response
// for the request's life. A start that fails — connection error, an answer that is not 200
// with content-type text/event-stream, an SSE payload that does not parse, a stream that
// ends (without the runtime's `stopping` event) or breaks before the runtime's envoy took
// the actor — records a runner-pool error on the pool and makes the actor's allocation
// lost at once (Orchestrator::OnServerlessStartFailed). A refused answer's body is read for
// at most metadata_fetch_timeout_ms. An accepted stream lives for the pool's
// request_lifespan: at request_lifespan − drain_grace_period the actor it started is moved
// (Orchestrator::OnServerlessDrain: Stop{GOING_AWAY}, then a new start), and at
// request_lifespan the engine drops the request (§6.10 step 4); neither is a pool error.
// Thread-safety: every method may be called from any thread (one mutex for the in-flight
// table; sends happen outside it).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "engine/common/id.h"
#include "engine/gateway/routing.h"
#include "net/http_server.h"
#include "protocol/engine/records.h"
#include "protocol/envoy/versioned.h"

namespace keel::engine {

class Engine;
class EnvoySession;
struct ActorTarget;

class Gateway {
 public:
  explicit Gateway(Engine& engine);
  ~Gateway();

  // An actor route from gateway::ClassifyRequest (ById, ByQuery or ByHeader).
  void Serve(std::shared_ptr<net::HttpExchange> exchange, gateway::Route route);

  // From envoy sessions (their socket threads).
  void OnTunnelMessage(EnvoySession& session, protocol::envoy::latest::ToRivetTunnelMessage&& msg);
  void OnEnvoyClosed(EnvoySession& session);
  // The actor a tunnel message answers (its in-flight entry's), if the request is known.
  std::optional<EngineId> ActorOf(const protocol::envoy::latest::MessageId& id) const;
  // The actor's generation on `session` lost a write its answers may depend on (held
  // outputs, engine/core/output_hold.h): its HTTP requests there fail with `error`, its
  // WebSockets close with it, and hibernatable ones hibernate — their unacknowledged
  // messages go to the actor's next instance once this one is gone. A response stream that
  // already started is broken off (the client sees a truncated body, not a clean end).
  void FailActorOn(EnvoySession& session, const EngineId& actor, const Error& error);

  // From the orchestrator: the actor's instance stopped (§6.3, §6.4). Its HTTP requests in
  // flight fail with guard.service_unavailable; its WebSockets hibernate when they can,
  // else close with 1000 "actor.stopped". `never_ran`: the stopped generation when it
  // never ran (no Running event): HTTP requests sent early to it were not handled and go to
  // the actor's next instance instead (docs/engine.md "Early requests").
  void OnActorStopped(const EngineId& actor, std::optional<uint32_t> never_ran = std::nullopt);

  // Answers a request the gateway cannot serve: JSON with the §5.9 status and CORS
  // headers, or for a WebSocket upgrade an accepted socket closed with `group.code#ray`.
  // `metadata_json`: the JSON body's `metadata` (an object's text).
  void Fail(net::HttpExchange& exchange, const Error& error, const net::Headers& cors,
            std::string_view metadata_json = "{}");

  // From the orchestrator: start a serverless actor (§4.9).
  // `preloaded`: the KV the actor name's preload plan asks for (envoy-protocol §5.4).
  void DispatchServerlessStart(
      const EngineId& ns, const EngineId& actor, const protocol::engine::latest::ActorRecord& record,
      uint32_t generation, int64_t index,
      std::optional<protocol::envoy::latest::PreloadedKv> preloaded = std::nullopt);

  size_t in_flight() const;
  // HTTP requests and WebSocket upgrades waiting for their actor to be ready (not sent yet).
  size_t waiting() const;

 private:
  struct InFlight;
  // An HTTP request sent early (docs/engine.md "Early requests"): the generation it rode
  // with, and what sending it again needs if that one never runs.
  struct InFlightResend {
    uint32_t generation = 0;
    std::optional<EngineId> ns;
    std::string path;
    bool bypass = false;
  };
  // A request waiting for its actor to be ready (Orchestrator::WhenReady).
  struct Waiting {
    std::shared_ptr<net::HttpExchange> exchange;
    std::optional<EngineId> ns;
    EngineId actor;
    std::string path;
    bool bypass = false;
    net::Headers cors;
    TimerId pool_check{};  // the next runner-pool error check (§5.6)
  };
  class UserSocket;

  void Resolve(std::shared_ptr<net::HttpExchange> exchange, gateway::Route route,
               net::Headers cors);
  // `allow_early`: the request may ride behind a start command (early requests); false
  // when it is sent again because the instance it rode with never started.
  void Reach(std::shared_ptr<net::HttpExchange> exchange, std::optional<EngineId> ns,
             EngineId actor, std::string path, bool bypass, net::Headers cors,
             bool allow_early = true);
  // The actor of waiting request `request_id` is ready (or could not be made so).
  void Ready(uint32_t request_id, Result<ActorTarget> target);
  // §5.6 pool error check of a waiting request: `delay_ms` from now, then every 2 s while it
  // waits, the runner-pool error of its actor's pool (Orchestrator::RunnerPoolError) fails
  // it with guard.actor_runner_failed.
  void SchedulePoolCheck(uint32_t request_id, int64_t delay_ms);
  void CheckPool(uint32_t request_id);
  // `resend`: set for a request sent early (ActorTarget::early), to send it again.
  // `waited`: the id of the request's entry in waiting_ (its OnPeerGone is registered):
  // the request is sent under that id unless its client left meanwhile.
  void Open(std::shared_ptr<net::HttpExchange> exchange, EngineId actor,
            std::shared_ptr<EnvoySession> session, std::string path, net::Headers cors,
            std::optional<InFlightResend> resend = std::nullopt,
            std::optional<uint32_t> waited = std::nullopt);
  // Sends an early request whose instance never started to the actor's next one;
  // `refused_not_started`: the envoy refused it (else the instance stopped before running).
  void SendAgain(InFlight entry, bool refused_not_started);
  // Removes and returns an entry.
  std::optional<InFlight> Take(uint32_t request_id);
  void SendToEnvoy(EnvoySession& session, uint32_t request_id, uint16_t index,
                   protocol::envoy::latest::ToEnvoyTunnelMessageKind kind);
  // The end user of an HTTP request left before its response finished (before the
  // ResponseStart or mid-stream; HttpExchange::OnPeerGone, an I/O thread): tell the envoy
  // (ToEnvoyRequestAbort, §6.3) and forget the request. Before it was sent (it waits for
  // its actor to be ready): drop it, it is never sent.
  void ClientGone(uint32_t request_id);
  void FromUser(uint32_t request_id, protocol::envoy::latest::ToEnvoyTunnelMessageKind kind);
  void UserClosed(uint32_t request_id, uint16_t code, std::string reason);
  // Wakes the actor of a hibernating socket that holds unacknowledged client messages, once
  // the instance on `from` (the connection it is shutting down on, if any) is gone.
  void WakeIfMessagesWait(uint32_t request_id, std::weak_ptr<EnvoySession> from, int attempt = 0);
  void Expire(uint32_t request_id);
  // Takes the attached requests `match` selects off their instance: hibernatable
  // WebSockets hibernate, other WebSockets close with (ws_code, ws_reason), HTTP requests
  // fail with `http_error` (a started stream is just ended).
  // `from`: the connection the instance still runs on, if it does (hibernated sockets with
  // messages waiting wake the actor once it is gone from there). `abort_streams`: break off
  // started response streams instead of ending them.
  void Detach(const std::function<bool(const InFlight&)>& match, const Error& http_error,
              uint16_t ws_code, const std::string& ws_reason,
              std::weak_ptr<EnvoySession> from = {}, bool abort_streams = false);
  void ScheduleSweep();
  void Sweep();
  // A serverless start's timers (DispatchServerlessStart), under its stream's serial:
  // ArmServerlessTimer schedules `fn` after `delay_ms` (not once the gateway stops) and
  // keeps its id for EndServerlessTimers, which cancels the stream's timers (its end).
  void ArmServerlessTimer(uint64_t serial, int64_t delay_ms, std::function<void()> fn);
  void EndServerlessTimers(uint64_t serial);
  // Hibernation (§6.5): keep the user socket while the actor sleeps; wake on a message.
  // `write_now`: the keepalive key is written before returning (else on a worker).
  void Hibernate(uint32_t request_id, bool write_now = false);
  void WriteKeepaliveNow(uint32_t request_id);
  Bytes KeepaliveKey(const EngineId& actor, uint32_t request_id) const;
  void StoreKeepalive(const Bytes& key, bool alive, int64_t now_ms);
  void Rewake(uint32_t request_id);
  void Reattach(uint32_t request_id, std::shared_ptr<EnvoySession> session);
  void WriteKeepalive(uint32_t request_id, bool alive);
  void WriteKeepaliveFor(const InFlight& entry, uint32_t request_id, bool alive);
  void FailSocket(uint32_t request_id, const Error& error);

  Engine& engine_;
  std::array<uint8_t, 4> gateway_id_{};
  std::atomic<uint32_t> next_request_{1};
  mutable std::mutex mu_;
  std::unordered_map<uint32_t, InFlight> in_flight_;  // guarded by mu_
  // Requests waiting for their actor (by the request id they will be sent with). An entry
  // stays, emptied, while Open sends it: its removal then tells Open the client left.
  std::unordered_map<uint32_t, Waiting> waiting_;  // guarded by mu_
  int64_t sweep_interval_ms_ = 1000;
  TimerId sweep_timer_{};  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  // Timers of serverless starts still going (by stream serial): the refused answer's body
  // read, the drain and the drop at the request's lifespan (actors.md §6.10 step 4).
  std::unordered_map<uint64_t, std::vector<TimerId>> serverless_timers_;  // guarded by mu_
  uint64_t next_serverless_ = 0;                                          // guarded by mu_
};

}  // namespace keel::engine
