// EnvoyClient: the runtime's side of the envoy protocol (envoy-protocol.md §3–§6), as a
// sans-I/O state machine.
//
// It owns the protocol logic of one envoy — connect URL and subprotocol auth, the
// negotiated protocol version, ToRivetMetadata, ping/pong, the reconnect loop with its
// backoff, command dedup per (actor, generation), command acks, per-actor event history
// resent after every Init, the KV, SQLite page I/O and remote SQL requests (three request-id
// spaces, each matched by id, with timeouts and per-kind disconnect rules), tunnel routing
// by (gateway id, request id), graceful shutdown and the lost timer — and nothing else.
// It never touches a socket, a thread or real time:
//  * the socket is a Transport it asks to connect/send/close, and the transport reports
//    back through OnOpen / OnFrame / OnClosed;
//  * time is the injected Clock (a ManualClock in tests), whose timers drive pings-free
//    liveness, backoff, request timeouts and the periodic command ack;
//  * actors live in the EnvoyHost, which gets start/stop commands and tunnel traffic
//    and answers through this object (events, KV, SQLite, tunnel messages).
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
  // Pending KV, SQLite page and remote SQL requests time out this long after creation or
  // last send (§3.10); swept every `request_sweep_interval`.
  std::chrono::milliseconds request_timeout{30000};
  std::chrono::milliseconds request_sweep_interval{15000};
  // Periodic ToRivetAckCommands of the hosted generations (§4.3).
  std::chrono::milliseconds ack_commands_interval{300000};
  // Generations this envoy no longer hosts (stopped, asleep) are acknowledged this long
  // after the first of them stopped (and never sooner than this after an Init), and their
  // dedup entries then forgotten: a sleeping actor costs the envoy nothing after that.
  std::chrono::milliseconds stopped_ack_delay{1000};
  // Lost threshold used before the first Init (§3.4).
  std::chrono::milliseconds default_lost_threshold{10000};
  // Largest frame the engine reads (its WebSocket message limit). A larger message is not
  // sent — a request fails with envoy.message_too_large — rather than closing the
  // connection, which would end every actor on it. 0: what keel-engine reads, the Init's
  // maxResponsePayloadSize + 1 MiB (above every request the protocol's own limits allow:
  // a commit's 16 MiB, a KV put's 128 × 128 KiB).
  size_t max_message = 0;
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
  // The socket went away (a reconnect is scheduled unless evicted or shutting down).
  virtual void OnDisconnected() {}
  // Shutdown finished (graceful or not) or the envoy was evicted: nothing more will be
  // delivered.
  virtual void OnShutdown() {}
};

using KvCallback = std::function<void(Result<latest::KvResponseData>)>;
using GetPagesCallback = std::function<void(Result<latest::SqliteGetPagesResponse>)>;
using CommitCallback = std::function<void(Result<latest::SqliteCommitResponse>)>;
using ExecCallback = std::function<void(Result<latest::SqliteExecResponse>)>;
using ExecuteCallback = std::function<void(Result<latest::SqliteExecuteResponse>)>;
using ExecuteWriteCallback = std::function<void(Result<latest::SqliteExecuteWriteResponse>)>;
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
  // `engine_holds_outputs`: the engine confirmed held outputs at the upgrade (the native
  // transport asks with the `x-keel-hold-outputs: 1` header; a host that cannot read
  // upgrade headers never claims it). See engine_holds_outputs().
  void OnOpen(bool engine_holds_outputs = false);
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

  // ---- Requests (§3.10) ----
  // Three request-id spaces — KV, SQLite page I/O, remote SQL — each with its own u32
  // counter and pending table; a response is matched by request id within the space its
  // variant belongs to, and one whose id matches nothing is dropped (unmatched_responses).
  // For every request `done` runs exactly once, on this executor:
  //  * with the engine's response; an error response (KvErrorResponse,
  //    SqliteErrorResponse) is a value — the caller maps its text;
  //  * or with an error. Common to all kinds: `envoy.shutdown` (Shutdown or eviction — an
  //    eviction is a close first, so the per-kind close rules below apply before it — or
  //    called after either), `envoy.lost` (the lost timer), a timeout request_timeout after
  //    creation or the last send (found by the sweep), `envoy.unexpected_response` (the
  //    engine answered the id with another response kind of the same space).
  // A request is written at once when connected() (socket open and Init received),
  // otherwise queued and written after the next Init, in creation order across all three
  // spaces. `done` may run synchronously inside the call: `envoy.shutdown`, and errors of a
  // request the connection's protocol version cannot carry.

  // KV for `actor_id`. Errors: as above, `envoy.kv_timeout`; `envoy.kv_indeterminate` when
  // the socket closes after the request was written (it may or may not have been applied;
  // never resent).
  void SendKv(const std::string& actor_id, latest::KvRequestData request, KvCallback done);

  // SQLite page I/O (§7) for the runtime's local-native backend. Errors: as above,
  // `envoy.sqlite_timeout` ("sqlite page request timed out"); at v2 the conversion error as
  // is (`protocol.incompatible_message`). When the socket closes after the request was
  // written: a get_pages is a read, so it stays pending and is written again after the next
  // Init; a commit fails at once with `sqlite.indeterminate_commit` (it may have been
  // applied; the VFS treats the database as dead).
  void SqliteGetPages(latest::SqliteGetPagesRequest request, GetPagesCallback done);
  void SqliteCommit(latest::SqliteCommitRequest request, CommitCallback done);

  // Remote SQL (§8, v4 only). Errors: as above, `envoy.sqlite_timeout` ("remote sqlite
  // request timed out"); `sqlite.remote_unavailable` (its message carries the conversion
  // error's text) when the connection's version is below 4 — at the call when connected,
  // else when the queued request is flushed after the next Init; and
  // `sqlite.remote_indeterminate_result` ("Remote SQLite <exec|execute|execute_write> may
  // have completed, ...") at once when the socket closes after the request was written.
  // Never retried (§8.8).
  void SqliteExec(latest::SqliteExecRequest request, ExecCallback done);
  void SqliteExecute(latest::SqliteExecuteRequest request, ExecuteCallback done);
  void SqliteExecuteWrite(latest::SqliteExecuteWriteRequest request, ExecuteWriteCallback done);

  // Tunnel traffic from an actor. `buffered` (open-acks, message acks, error closes of
  // an instance) survive a disconnect and are resent after the next Init; the rest are
  // dropped when there is no socket (§3.10). A response end (ToRivetResponseStart with
  // stream=false, the final chunk, an abort) or a WebSocket close forgets the route.
  // A response body over max_tunnel_payload() goes out streamed, in pieces under it; a
  // WebSocket message over it cannot be split and is dropped with an error logged (callers
  // check first: the engine closes the whole connection on one, §6.6).
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

  // ---- Introspection (tests, metrics) ----
  bool connected() const;          // socket open and Init received
  // connected(), on a socket where the engine holds the actors' tunnel messages until the
  // KV writes sent before them on the same socket are durable (engine/core/output_hold.h):
  // an output may then be sent once its writes were written to this socket, without
  // waiting for their answers. A write that then fails ends the actor generation.
  bool engine_holds_outputs() const;
  // Counts opened sockets: tells whether two sends went out on the same one.
  uint64_t socket_epoch() const;
  bool started() const;            // at least one Init received
  bool shut_down() const;
  const std::string& envoy_key() const;
  const EnvoyConfig& config() const;
  uint16_t protocol_version() const;
  const std::optional<latest::ProtocolMetadata>& protocol_metadata() const;
  // The largest body or WebSocket message one tunnel message may carry: the last Init's
  // maxResponsePayloadSize, else its default (20 MiB).
  uint64_t max_tunnel_payload() const;
  size_t pending_kv_requests() const;
  size_t pending_sqlite_requests() const;  // page I/O + remote SQL, for tests/metrics
  // Hosted (actor, generation) pairs: started and not yet reported Stopped.
  size_t hosted_actors() const;
  // Per-actor bookkeeping (tests, metrics): actor entries (hosted, or reported Stopped and
  // waiting for the engine's stop), tunnel routes, and the command dedup entries of actor
  // generations no longer hosted — those stay (§4.4) until their ack went out
  // (EnvoyConfig::stopped_ack_delay), in one flat table.
  size_t actor_entries() const;
  size_t route_entries() const;
  size_t dedup_entries() const;
  // Dedup entries of stopped generations forgotten after their ack went out, in all.
  uint64_t released_dedup_entries() const;
  // Frames that failed to decode; tunnel messages dropped because no route matched;
  // commands dropped as replays (§4.4); KV/SQLite responses dropped because no pending
  // request had their id (answered late, after a timeout or a close, or not ours).
  uint64_t malformed_frames() const;
  uint64_t unroutable_tunnel_messages() const;
  uint64_t duplicate_commands() const;
  uint64_t unmatched_responses() const;
  // WebSocket messages SendTunnel dropped for being over max_tunnel_payload().
  uint64_t oversized_tunnel_messages() const;
  // The connect URL for this config (§3.1).
  std::string ConnectUrl() const;
  std::vector<std::string> Subprotocols() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace keel::envoy
