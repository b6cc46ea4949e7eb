// EnvoySession: the engine's side of one envoy WebSocket (envoy-protocol.md §3–§7).
//
// The server shell validates the URL and token, accepts the upgrade and hands the socket
// to a session. The session then owns the per-connection protocol:
//   * speaks the negotiated version (2–4) on the wire, latest types inside (§2.13);
//   * sends ToEnvoyInit first, then lets the orchestrator register the envoy and replay
//     its unacknowledged commands (§3.3);
//   * pings every ping_interval (+ jitter) and closes with ws.timed_out when no pong came
//     for ping_timeout (§3.5);
//   * answers KV and SQLite page requests from storage, in arrival order per actor, on its
//     own serial executors (never on the socket's thread, never on the orchestrator loop), and
//     only for actors this connection currently hosts (§5.1, §7; the ownership
//     rule); v4 remote SQL gets `sqlite.remote_unavailable` until remote SQL lands;
//   * forwards events, command acks, metadata and "stopping" to the orchestrator and
//     tunnel messages to the gateway, closing the connection with ws.invalid_packet when
//     a tunnel payload exceeds max_response_payload (§6.6);
//   * ignores frames that do not decode (§3.11) but counts them.
// Thread-safety: OnMessage/OnClose come from the socket (serialized); Send/CloseWith may
// be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/executor.h"
#include "engine/common/id.h"
#include "engine/gateway/envoy_connect.h"
#include "net/http_server.h"
#include "protocol/envoy/versioned.h"

namespace keel::engine {

namespace latest = protocol::envoy::latest;

class Engine;

class EnvoySession final : public net::WsHandler,
                           public std::enable_shared_from_this<EnvoySession> {
 public:
  EnvoySession(Engine& engine, gateway::EnvoyConnectParams params, EngineId namespace_id,
               uint64_t session_id);
  ~EnvoySession() override;

  // Starts the session on an accepted socket: Init, registration, pings.
  void Start(std::shared_ptr<net::WsConnection> conn);

  // net::WsHandler (socket thread).
  void OnMessage(std::string data, bool binary) override;
  void OnClose(uint16_t code, std::string reason) override;

  // Encodes `msg` at the connection's version and queues it. A message the version cannot
  // carry is logged and dropped (it was never meant for this peer).
  void Send(const latest::ToEnvoy& msg);
  // Ends the connection with `error` as the close reason (§3.6). Idempotent.
  void CloseWith(const Error& error);

  uint64_t id() const { return id_; }
  const gateway::EnvoyConnectParams& params() const { return params_; }
  const EngineId& namespace_id() const { return namespace_id_; }
  const std::string& envoy_key() const { return params_.envoy_key; }
  uint16_t protocol_version() const { return params_.protocol_version; }
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  int64_t last_pong_ms() const { return last_pong_ms_.load(std::memory_order_relaxed); }
  uint32_t last_rtt_ms() const { return last_rtt_ms_.load(std::memory_order_relaxed); }

 private:
  void Dispatch(latest::ToRivet&& msg);
  void HandleKv(latest::ToRivetKvRequest&& req);
  void HandleGetPages(latest::ToRivetSqliteGetPagesRequest&& req);
  void HandleCommit(latest::ToRivetSqliteCommitRequest&& req);
  void HandleTunnel(latest::ToRivetTunnelMessage&& msg);
  // Remote SQL (v4) is answered `sqlite.remote_unavailable` until it lands (issue 7).
  template <typename Response>
  void RefuseRemoteSql(uint32_t request_id);
  // The actor's binary id and current generation when this connection hosts it.
  // Errors: actor.invalid_id ("invalid [sqlite ]actor id: …", Rivet's texts), actor.not_owned.
  Result<std::pair<EngineId, uint32_t>> CheckOwner(const std::string& actor_id,
                                                   std::string_view what) const;
  void SchedulePing();
  void PingTick();

  Engine& engine_;
  const gateway::EnvoyConnectParams params_;
  const EngineId namespace_id_;
  const uint64_t id_;
  // KV and page requests run here, in arrival order per actor (an actor always maps to the
  // same executor), while different actors' synced commits overlap and share WAL syncs
  // (group commit) instead of queueing behind one another.
  Executor& StorageExecutorFor(const std::string& actor_id);
  std::vector<std::unique_ptr<Executor>> storage_executors_;

  std::mutex mu_;
  std::shared_ptr<net::WsConnection> conn_;  // guarded by mu_
  TimerId ping_timer_{};                     // guarded by mu_
  uint64_t pings_scheduled_ = 0;              // guarded by mu_

  std::atomic<bool> closed_{false};
  std::atomic<int64_t> last_pong_ms_{0};
  std::atomic<uint32_t> last_rtt_ms_{0};
};

}  // namespace keel::engine
