// EnvoyClient: the runtime's side of the envoy protocol (envoy-protocol.md §3–§6), as a
// sans-I/O state machine.
//
// It owns the protocol logic of one envoy — connect URL and subprotocol auth, the
// negotiated protocol version, ToRivetMetadata, ping/pong, the reconnect loop with its
// backoff, command dedup per (actor, generation), command acks, per-actor event history
// resent after every Init, KV request matching by request id with timeouts, tunnel
// routing by (gateway id, request id), graceful shutdown and the lost timer — and
// nothing else. It never touches a socket, a thread or real time:
//  * the socket is a Transport it asks to connect/send/close, and the transport reports
//    back through OnOpen / OnFrame / OnClosed;
//  * time is the injected Clock (a ManualClock in tests), whose timers drive pings-free
//    liveness, backoff, request timeouts and the periodic command ack;
//  * actors live in the EnvoyHost, which gets start/stop commands and tunnel traffic
//    and answers through this object (events, KV, tunnel messages).
//
// Every method and every callback runs on one logical executor (the native shell's
// strand, the JS event loop in wasm). Host callbacks are invoked synchronously from
// inside the input methods and may call back into the client (re-entrancy is allowed:
// outputs are queued in order).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/error.h"
#include "base/random.h"
#include "base/result.h"
#include "protocol/envoy/versioned.h"

namespace keel::envoy {

namespace latest = protocol::envoy::latest;

struct EnvoyConfig {
  // HTTP endpoint of the engine; http(s):// becomes ws(s):// (§3.1).
  std::string endpoint = "http://127.0.0.1:6420";
  // Sent as the `rivet_token.<token>` subprotocol when not empty.
  std::string token;
  std::string namespace_name = "default";
  std::string pool_name = "default";
  // Identity of this envoy process. Empty: the client generates a fresh random key, so
  // two processes never evict each other. Must match [0-9A-Za-z_-]{3,128}.
  std::string envoy_key;
  // Deployment version (drain-on-upgrade, §6.4).
  uint32_t version = 1;
  // Wire version spoken on the connection: 4 by default; 2 and 3 for compatibility.
  uint16_t protocol_version = 4;
  // ToRivetMetadata: actor type name -> JSON metadata text; optional envoy metadata JSON.
  std::vector<std::pair<std::string, std::string>> actor_names;
  std::optional<std::string> metadata_json;

  // Reconnect backoff (§3.7): min(initial * 2^attempt, max) * (1 + U[0, jitter)),
  // attempt reset when a connection lasted at least `stable_after`.
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{30000};
  double backoff_jitter = 0.25;
  std::chrono::milliseconds stable_after{60000};
  // Pending KV requests time out this long after creation or last send (§3.10); swept
  // every `request_sweep_interval`.
  std::chrono::milliseconds request_timeout{30000};
  std::chrono::milliseconds request_sweep_interval{15000};
  // Periodic ToRivetAckCommands (§4.3).
  std::chrono::milliseconds ack_commands_interval{300000};
  // Lost threshold used before the first Init (§3.4).
  std::chrono::milliseconds default_lost_threshold{10000};
};

// The socket, as the client sees it. Natively a keel::net WebSocket
// (envoy/native/native_transport.h); in wasm the host's WebSocket; in tests a fake that
// records frames.
class Transport {
 public:
  virtual ~Transport() = default;
  // Opens a WebSocket to `url`, offering `subprotocols` in order. The transport then
  // calls exactly one of EnvoyClient::OnOpen or EnvoyClient::OnClosed (a failed connect
  // is a close with code 1006), later — never synchronously inside Connect.
  virtual void Connect(const std::string& url, const std::vector<std::string>& subprotocols) = 0;
  // One binary frame on the open socket.
  virtual void Send(Bytes frame) = 0;
  // Closes the open socket; OnClosed follows.
  virtual void Close(uint16_t code, const std::string& reason) = 0;
};

// A start command as the host receives it.
struct StartActor {
  std::string actor_id;
  uint32_t generation = 0;
  int64_t command_index = 0;
  latest::ActorConfig config;
  std::vector<latest::HibernatingRequest> hibernating_requests;
  std::optional<latest::PreloadedKv> preloaded_kv;
};

// Where the actors live (the actor runtime core). All calls happen on the client's
// executor, synchronously inside an EnvoyClient input method.
class EnvoyHost {
 public:
  virtual ~EnvoyHost() = default;
  // A (deduplicated) start command. The host starts the actor and later calls
  // EnvoyClient::ActorRunning or EnvoyClient::ActorStopped (start failure).
  virtual void OnStartActor(StartActor start) = 0;
  // A stop command (or the lost timer: reason kLost) for a hosted actor. The host runs
  // its shutdown and calls EnvoyClient::ActorStopped when done.
  virtual void OnStopActor(const std::string& actor_id, uint32_t generation,
                           latest::StopActorReason reason) = 0;
  // Tunnel traffic for a hosted actor: ToEnvoyRequestStart / ToEnvoyWebSocketOpen carry
  // the actor id; the client routes later messages of the same (gateway id, request id)
  // to the same actor. Messages for requests the client cannot route are dropped.
  virtual void OnTunnelMessage(const std::string& actor_id,
                               const latest::ToEnvoyTunnelMessage& message) = 0;
  // The first ToEnvoyInit after start (the envoy is "started"), and every later one.
  virtual void OnConnected(const latest::ProtocolMetadata& /*metadata*/) {}
  // A decoded ToEnvoy the client does not handle itself (the SQLite page and remote SQL
  // responses): whoever sent the matching request through EnvoyClient::SendMessage
  // matches it.
  virtual void OnOtherMessage(const latest::ToEnvoy& /*message*/) {}
  // The socket went away (a reconnect is scheduled unless evicted or shutting down).
  virtual void OnDisconnected() {}
  // Shutdown finished (graceful or not) or the envoy was evicted: nothing more will be
  // delivered.
  virtual void OnShutdown() {}
};

using KvCallback = std::function<void(Result<latest::KvResponseData>)>;
using AckCallback = std::function<void(Status)>;

class EnvoyClient {
 public:
  // `clock`, `transport`, `host` and `random` must outlive the client.
  EnvoyClient(EnvoyConfig config, Clock& clock, Random& random, Transport& transport,
              EnvoyHost& host);
  ~EnvoyClient();
  EnvoyClient(const EnvoyClient&) = delete;
  EnvoyClient& operator=(const EnvoyClient&) = delete;

  // Starts the connection loop (connects at once).
  void Start();
  // Graceful (§3.9): stop reconnecting, send ToRivetStopping, wait until every hosted
  // actor has stopped, then close (1000, envoy.shutdown), fail pending requests with
  // `envoy.shutdown` and call EnvoyHost::OnShutdown. `immediate` skips the wait.
  void Shutdown(bool immediate);

  // ---- Transport input ----
  void OnOpen();
  void OnFrame(ByteView frame);
  // Any end of the socket, including a failed connect (1006).
  void OnClosed(uint16_t code, const std::string& reason);

  // ---- Host output ----
  // EventActorStateUpdate{Running}.
  void ActorRunning(const std::string& actor_id, uint32_t generation);
  // EventActorStateUpdate{Stopped}; `error` set → code ERROR with its text. After a
  // stop command this removes the actor from the client's tables.
  void ActorStopped(const std::string& actor_id, uint32_t generation,
                    std::optional<Error> error = std::nullopt);
  // EventActorIntent{Sleep} / {Stop}.
  void RequestSleep(const std::string& actor_id, uint32_t generation);
  void RequestStop(const std::string& actor_id, uint32_t generation);
  // EventActorSetAlarm. `on_acked` runs once the engine acknowledged this event (the
  // alarm is durable: ToEnvoyAckEvents covering its index), or with an error if the
  // actor instance ends / the client shuts down first. The event itself is resent after
  // every reconnect until acknowledged.
  void SetAlarm(const std::string& actor_id, uint32_t generation, std::optional<int64_t> alarm_ts,
                AckCallback on_acked = {});

  // A KV request for `actor_id`; `done` runs exactly once: with the engine's response
  // (a KvErrorResponse is returned as a value — the caller maps it), or with an error:
  // `envoy.kv_timeout` (request_timeout), `envoy.shutdown`, `envoy.lost`. Sent at once
  // when connected, otherwise when the next Init arrives (§3.10).
  void SendKv(const std::string& actor_id, latest::KvRequestData request, KvCallback done);

  // Tunnel traffic from an actor. `buffered` (open-acks, message acks, error closes of
  // an instance) survive a disconnect and are resent after the next Init; the rest are
  // dropped when there is no socket (§3.10). A response end (ToRivetResponseStart with
  // stream=false, the final chunk, an abort) or a WebSocket close forgets the route.
  void SendTunnel(latest::ToRivetTunnelMessage message, bool buffered);
  // Routes tunnel traffic of a restored hibernatable WebSocket to `actor_id` (§6.5): the
  // host calls this while starting, before ActorRunning.
  void RegisterRequest(const std::string& actor_id, const latest::GatewayId& gateway_id,
                       const latest::RequestId& request_id);

  // Serverless (§4.9): injects the start command carried by a POST /start body, as if
  // it had arrived on the socket, once the client has received ToEnvoyInit (queued until
  // then). The body is the version-prefixed ToEnvoy; errors (returned, nothing
  // injected): `serverless.invalid_payload` (version prefix not 4, undecodable at 4 and
  // at 3, not a ToEnvoyCommands with exactly one CommandStartActor).
  // `envoy.shutdown` once the client has shut down.
  Status InjectServerlessStart(ByteView body);

  // Sends a message the client has no dedicated path for (SQLite page requests, remote
  // SQL) on the open socket, encoded at the negotiated version. Errors: the conversion
  // error when that version cannot carry it (e.g. `protocol.incompatible_version` for
  // remote SQL below v4), `envoy.not_connected` without an open socket, `envoy.shutdown`.
  Status SendMessage(const latest::ToRivet& message);

  // ---- Introspection (tests, metrics) ----
  bool connected() const;          // socket open and Init received
  bool started() const;            // at least one Init received
  bool shut_down() const;
  const std::string& envoy_key() const;
  uint16_t protocol_version() const;
  const std::optional<latest::ProtocolMetadata>& protocol_metadata() const;
  size_t pending_kv_requests() const;
  // Hosted (actor, generation) pairs.
  size_t hosted_actors() const;
  // Frames that failed to decode; tunnel messages dropped because no route matched;
  // commands dropped as replays (§4.4).
  uint64_t malformed_frames() const;
  uint64_t unroutable_tunnel_messages() const;
  uint64_t duplicate_commands() const;
  // The connect URL for this config (§3.1).
  std::string ConnectUrl() const;
  std::vector<std::string> Subprotocols() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace keel::envoy
