// EnvoySession: the engine's side of one envoy WebSocket (envoy-protocol.md §3–§7).
//
// The server shell validates the URL and token, accepts the upgrade and hands the socket
// to a session. The session then owns the per-connection protocol:
//   * speaks the negotiated version (2–4) on the wire, latest types inside (§2.13);
//   * sends ToEnvoyInit first, then lets the orchestrator register the envoy and replay
//     its unacknowledged commands (§3.3);
//   * pings every ping_interval (+ jitter) and closes with ws.timed_out when no pong came
//     for ping_timeout (§3.5);
//   * answers KV and SQLite page requests from storage, in arrival order per actor, and
//     only for actors this connection currently hosts (§5.1, §7; the ownership
//     rule): KV requests and small page commits commit unsynced on the socket's thread and
//     are answered after the group commit's WAL sync (never before they are durable);
//     page reads and larger commits run on the connection's serial storage executors
//     (never on the orchestrator loop). Page requests are fenced by generation: the first one of an
//     (actor, generation) here records the generation in the page store (generations only move
//     forward), and every read and commit names it, so a stale generation's I/O fails with
//     sqlite.remote_fence_mismatch once a newer one was recorded;
//   * runs v4 remote SQL (exec / execute / execute_write) through its RemoteSqlHost
//     (remote_sql.h): validated on the socket thread, executed on the connection's own SQL
//     threads, one executor per actor generation;
//   * forwards events (through the RemoteSqlHost, which holds a batch that stops an actor
//     generation until that generation's SQL is done), command acks, metadata and
//     "stopping" to the orchestrator and tunnel messages to the gateway, closing the
//     connection with ws.invalid_packet when a tunnel payload exceeds max_response_payload
//     (§6.6);
//   * with held outputs (negotiated at the upgrade, output_hold.h), keeps each actor's tunnel
//     messages from the gateway until the KV writes the actor sent before them are durable,
//     so the runtime need not wait for the write's answer before sending its own;
//   * ignores frames that do not decode (§3.11) but counts them.
// Where the work runs: on the socket's I/O thread, except with a remote store
// (KvStore::IsRemote, PostgreSQL), where each message is handled on the connection's
// dispatch strand (a worker), in arrival order, and the close after the last of them: a KV
// request or small page commit then waits out its database round trips there, while the
// I/O thread serves every other connection.
// Thread-safety: OnMessage/OnClose come from the socket (serialized); Send/CloseWith may
// be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/executor.h"
#include "engine/common/id.h"
#include "engine/core/output_hold.h"
#include "engine/core/remote_sql.h"
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

  // Held outputs (output_hold.h): the envoy asked for them with the upgrade header
  // protocol::envoy::kHoldOutputsHeader and the engine confirmed them on the 101. Call
  // before Start.
  void EnableHeldOutputs();
  bool holds_outputs() const { return hold_ != nullptr; }
  // Early requests: the envoy asked for them with protocol::envoy::kEarlyRequestsHeader and
  // the engine confirmed them. Call before Start.
  void EnableEarlyRequests() { early_requests_ = true; }
  bool early_requests() const { return early_requests_; }
  const OutputHold* output_hold() const { return hold_.get(); }
  // Early start (docs/engine.md): the orchestrator has just committed, without a sync, the
  // step that starts `generation` of `actor` here, and is about to send its start command.
  // From now on the actor's tunnel messages are held until that commit is durable (one
  // group-commit sync); if the sync fails the generation is poisoned (its answers are
  // withheld, its requests fail with actor.storage_failed). `synced` runs after the sync
  // with its status, on the syncing thread. REQUIRES: holds_outputs().
  void HoldUntilDurable(const EngineId& actor, uint32_t generation,
                        std::function<void(const Status&)> synced);

  // Starts the session on an accepted socket: Init, registration, pings.
  void Start(std::shared_ptr<net::WsConnection> conn);

  // net::WsHandler (socket thread).
  void OnMessage(std::string data, bool binary) override;
  void OnClose(uint16_t code, std::string reason) override;

  // Encodes `msg` at the connection's version and queues it. A message the version cannot
  // carry is logged and dropped (it was never meant for this peer).
  void Send(const latest::ToEnvoy& msg);
  // Queues a frame already encoded at the connection's version.
  void SendEncoded(Bytes frame);
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

  // The actor's binary id and current generation when this connection hosts it.
  // Errors: actor.invalid_id ("invalid [sqlite ]actor id: …", Rivet's texts), actor.not_owned.
  Result<std::pair<EngineId, uint32_t>> CheckOwner(const std::string& actor_id,
                                                   std::string_view what) const;
  // Records `generation` as the owner of the actor's page store (PageStore::SetGeneration)
  // unless this connection already did. Blocking (a storage transaction): storage
  // executors and SQL threads only. Errors: sqlite.remote_fence_mismatch when a newer
  // generation is recorded, storage.*.
  Status RecordGeneration(const EngineId& actor, uint32_t generation);

  RemoteSqlHost& remote_sql() { return *remote_sql_; }

 private:
  void Dispatch(latest::ToRivet&& msg);
  // What OnClose does, after the messages before it were dispatched.
  void Closed(uint16_t code, std::string reason);
  void HandleKv(latest::ToRivetKvRequest&& req);
  // The page handlers return their answer (nullopt: it leaves later, by AnswerWhenDurable);
  // the caller sends it.
  std::optional<latest::ToEnvoy> HandleGetPages(latest::ToRivetSqliteGetPagesRequest&& req);
  // A held write's ticket (OutputHold::BeginWrite), with its actor.
  using WriteTicket = std::pair<EngineId, uint64_t>;
  // `ticket`: the commit's held-output ticket, taken at dispatch. `inline_owner`: set when
  // the commit runs on the read path (InlineCommit said so for this owner just now: owned,
  // generation recorded), commits unsynced and answers after the group commit's sync;
  // otherwise it runs on the actor's storage executor with a synced commit and checks the
  // owner there.
  std::optional<latest::ToEnvoy> HandleCommit(
      latest::ToRivetSqliteCommitRequest&& req, std::optional<WriteTicket> ticket,
      std::optional<std::pair<EngineId, uint32_t>> inline_owner);
  // Whether a page commit read now may run on the read path (see
  // EngineOptions::inline_page_commit_bytes): small enough, nothing of its storage slot
  // waiting or running (so it cannot overtake an earlier page request of its actor), and
  // the actor's generation already recorded (RecordGeneration would block on a sync).
  bool InlineCommit(const latest::ToRivetSqliteCommitRequest& req, size_t slot,
                    const std::pair<EngineId, uint32_t>& owner);
  // Sends `resp` once nothing it answers for can be lost: for a write (`wrote`) after the
  // group commit's WAL sync covering it, for a read after the syncs of the writes waiting
  // now (at once when none). A failed sync replaces its data with ErrorData{error text}.
  // `ticket` ends with the sync's outcome, just before the answer leaves. `then`
  // (optional) runs after the answer, in the same continuation: a second continuation
  // could fall to the next sync (the sync thread may take its batch in between), costing
  // a sync of its own and sending this answer through the release executor.
  template <typename ErrorData, typename Response>
  void AnswerWhenDurable(Response resp, bool wrote, std::optional<WriteTicket> ticket,
                         std::function<void()> then = nullptr);
  void HandleTunnel(latest::ToRivetTunnelMessage&& msg);
  // Forgets recorded generations of actors this connection no longer hosts at them.
  void PruneRecordedGenerations();
  void SchedulePing();
  void PingTick();

  Engine& engine_;
  const gateway::EnvoyConnectParams params_;
  const EngineId namespace_id_;
  const uint64_t id_;
  // Page requests (get_pages/commit) run here, in arrival order per actor (an actor always
  // maps to the same executor), while different actors' synced commits overlap and share WAL
  // syncs instead of queueing behind one another. KV requests run inline (HandleKv).
  size_t StorageSlotFor(const std::string& actor_id) const;
  // Runs `task` on the slot's executor, counted in storage_pending_ until it has run, then
  // sends the answer it returns. The slot is released before the answer leaves: a page
  // commit the runtime sends on seeing that answer finds the slot idle and may go inline.
  void PostStorage(size_t slot, std::function<std::optional<latest::ToEnvoy>()> task);
  std::vector<std::unique_ptr<Executor>> storage_executors_;
  // Per slot: page requests posted to its executor and not yet finished. Incremented on the
  // read path before posting, decremented by the executor once the request was handled.
  std::unique_ptr<std::atomic<uint32_t>[]> storage_pending_;
  // Inline page commits counted from just before they commit until their group sync has
  // run: while any is, page reads wait for the writes pending (HandleGetPages).
  std::atomic<uint32_t> unsynced_inline_commits_{0};

  std::mutex mu_;
  std::shared_ptr<net::WsConnection> conn_;  // guarded by mu_
  TimerId ping_timer_{};                     // guarded by mu_
  uint64_t pings_scheduled_ = 0;              // guarded by mu_

  std::atomic<bool> closed_{false};
  std::atomic<int64_t> last_pong_ms_{0};
  std::atomic<uint32_t> last_rtt_ms_{0};

  std::mutex recorded_mu_;
  // actor → the generation this connection recorded in its page store (RecordGeneration).
  std::unordered_map<EngineId, uint32_t> recorded_;  // guarded by recorded_mu_

  // Set before Start on connections with held outputs, then never changed.
  std::unique_ptr<OutputHold> hold_;
  bool early_requests_ = false;  // set before Start, read-only after
  // On the syncing thread, after a group-commit sync: runs `release` now, or hands it to
  // QueueRelease when other writes already wait for the next sync (so it does not delay it).
  // Only a queued release becomes a std::function (an allocation). Defined in the .cc, the
  // only place that calls it.
  template <typename F>
  void ReleaseAfterSync(F&& release);
  // Held outputs: write completions whose forwarding would delay a waiting sync run here,
  // a whole group per wake-up (QueueRelease).
  void QueueRelease(std::function<void()> release);
  void RunReleases();
  std::unique_ptr<Executor> release_executor_;
  std::mutex release_mu_;
  std::vector<std::function<void()>> releases_;  // guarded by release_mu_
  bool release_posted_ = false;                  // guarded by release_mu_

  // Set when the store is remote (see the file comment): messages and the close run here.
  std::unique_ptr<Executor> dispatch_;
  // Messages posted to dispatch_ and not yet handled. OnMessage waits while there are
  // kMaxDispatchBacklog (what a peer may queue is bounded; the socket's thread then waits,
  // as it would for every message without dispatch_).
  static constexpr size_t kMaxDispatchBacklog = 1024;
  std::mutex backlog_mu_;
  std::condition_variable backlog_cv_;
  size_t backlog_ = 0;  // guarded by backlog_mu_

  // Last member: destroyed (its SQL threads joined) while everything it uses still lives.
  std::unique_ptr<RemoteSqlHost> remote_sql_;
};

}  // namespace keel::engine
