// Orchestrator: the driver of the per-actor state machines (engine/orchestrator/
// actor_machine.h). It owns the in-memory side of orchestration — loaded actors, connected
// envoys, the routing table the gateway reads — and runs on ONE serial executor (the
// "loop", on the worker pool) so machine steps, allocation and command publication never
// race. Storage is the truth: each step is one commit that stores the new workflow
// together with everything it implies (commands, alarm index, live set, key reservation,
// destroyed flag), and the step's effects run only after that commit (docs/storage.md
// §3.4–§3.8) — except that the requests waiting for an actor get it when its Running
// event is stepped, before that (unsynced) commit, and that an actor's creation and first
// allocation are one transaction (docs/storage.md §3.5, §3.6). A restart resumes from the
// live set (09) and the alarm index (07).
//
// Memory: an actor is loaded while it has an instance, a deadline other than an alarm,
// or waiters; a sleeping actor is evicted (its alarm lives in the 07 index, served by one
// engine-wide alarm timer), so idle actors cost no timers or buffers. The deadlines of
// loaded actors are one ordered set served by one engine-wide timer, not a timer each.
//
// Thread-safety: public methods may be called from any thread; they post to the loop.
// FastTarget/HostedGeneration read the routing table under a mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "base/random.h"
#include "base/result.h"
#include "engine/common/id.h"
#include "engine/core/pool_metadata.h"
#include "engine/orchestrator/actor_machine.h"
#include "protocol/engine/records.h"
#include "protocol/envoy/versioned.h"

namespace keel::engine {

namespace rec = protocol::engine::latest;
namespace latest = protocol::envoy::latest;

class Engine;
class EnvoySession;

struct ActorInfo {
  EngineId id;
  rec::ActorRecord record;
  orch::ActorWorkflow workflow;
};

struct CreateActorRequest {
  EngineId namespace_id;
  std::string name;
  std::optional<std::string> key;  // serialised (actors.md §4.1)
  std::string pool_name;
  rec::CrashPolicy crash_policy = rec::CrashPolicy::kRestart;
  std::optional<Bytes> input;
  bool get_or_create = false;
  // The caller tells no one of the new actor but through the actor's own answers: it may
  // hear back as soon as an early start has sent the start command, before the creation
  // is durable, since the connection holds the instance's answers until the sync (the
  // gateway's get-or-create route, whose request then rides right behind the start).
  bool answer_before_durable = false;
};

// Where the gateway sends an actor's tunnel traffic.
struct ActorTarget {
  std::shared_ptr<EnvoySession> session;
  uint32_t generation = 0;
  // The instance is still starting: its start command went to `session`, which takes
  // requests early (EnvoySession::early_requests), and the request rides right behind it.
  bool early = false;
};

class Orchestrator {
 public:
  explicit Orchestrator(Engine& engine);
  ~Orchestrator();

  // Startup: resumes live actors and the alarm timer. Blocking; before serving.
  Status Load();

  // ---- actors (REST, gateway) ----
  // Creates (or, with get_or_create, finds) an actor and starts it. `done(info, created)`.
  // Errors: actor.duplicate_key, actor.no_runner_config_configured, storage.*.
  void Create(CreateActorRequest request,
              std::function<void(Result<std::pair<ActorInfo, bool>>)> done);
  // Looks up by (namespace, name, key). nullopt when no live actor owns the key.
  Result<std::optional<EngineId>> FindByKey(const EngineId& ns, std::string_view name,
                                            std::string_view key);
  // Reads an actor (record + workflow) from storage. Errors: actor.not_found, storage.*.
  Result<ActorInfo> Read(const EngineId& actor);
  // Destroys; `done` runs once the data is gone (DestroyComplete). Errors: actor.not_found.
  void Destroy(const EngineId& ns, const EngineId& actor, std::function<void(Status)> done);
  // REST sleep / reschedule. Errors: actor.not_found.
  void Sleep(const EngineId& ns, const EngineId& actor, std::function<void(Status)> done);
  void Reschedule(const EngineId& ns, const EngineId& actor, std::function<void(Status)> done);

  // The serverless start of `generation` was accepted by the pool (Allocated, §6.10).
  void OnServerlessDispatched(const EngineId& actor, uint32_t generation);
  // The serverless start of `generation` failed (Gateway::DispatchServerlessStart, actors.md
  // §6.10 step 3). While the actor's current generation is `generation` and its runtime's
  // envoy has not taken it (no event of it arrived), `failure` becomes the runner-pool
  // error of the pool (ns, pool) and the actor is lost at once
  // (orch::in::ServerlessStartFailed: backoff, then a retry). `only_untaken` false: the
  // pool refused the start, its error is recorded whatever the actor's state. (A start the
  // envoy took is recorded as a success, from OnEvents.)
  void OnServerlessStartFailed(const EngineId& ns, const std::string& pool, const EngineId& actor,
                               uint32_t generation, MetadataFailure failure, bool only_untaken);
  // The stored metadata of these actor names changed (a serverless pool's metadata poll,
  // engine/core/pool_metadata.h): their cached preload plans are read again at their next
  // start. (An envoy's own metadata refreshes them as it stores it.)
  void ForgetPreloadPlans(const EngineId& ns, std::vector<std::string> names);
  // The serverless request that started `generation` reached request_lifespan −
  // drain_grace_period (§6.10 step 4): the instance is moved (orch::in::ServerlessDrain).
  void OnServerlessDrain(const EngineId& actor, uint32_t generation);
  // Gateway (actors.md §5.6 pool error check): `done` gets the runner-pool error of the
  // actor's pool when it has one, nullopt otherwise (or for an actor not loaded here). Runs
  // `done` on the orchestrator's strand.
  void RunnerPoolError(const EngineId& actor,
                       std::function<void(std::optional<MetadataFailure>)> done);

  // Gateway: the target when the actor is connectable on a live connection (any thread).
  std::optional<ActorTarget> FastTarget(const EngineId& actor) const;
  // Gateway: wakes the actor if needed and calls `done` once it is connectable, or with
  // actor.not_found, actor.destroyed_while_waiting_for_ready, guard.actor_ready_timeout,
  // guard.service_unavailable (re-woken max_rewakes times), or the actor's failure.
  // `ns`: the namespace the caller addressed (nullopt: any, the id alone identifies it).
  // `early_ok`: the caller can send to an instance that is still starting (an HTTP request:
  // docs/engine.md "Early requests"); `done` then runs as soon as the start command went
  // to a connection that takes requests early, with ActorTarget::early set.
  void WhenReady(const std::optional<EngineId>& ns, const EngineId& actor, bool bypass_connectable,
                 std::function<void(Result<ActorTarget>)> done, bool early_ok = false);

  // ---- envoy sessions ----
  // Makes `session` the live connection of its envoy key at once (any thread), before its
  // Init is sent, so the requests it sends right after Init find their actors.
  void RegisterLive(const std::shared_ptr<EnvoySession>& session);
  void OnEnvoyConnected(std::shared_ptr<EnvoySession> session);
  void OnEnvoyClosed(std::shared_ptr<EnvoySession> session);
  void OnEnvoyStopping(std::shared_ptr<EnvoySession> session);
  void OnEnvoyPing(std::shared_ptr<EnvoySession> session);
  void OnEvents(std::shared_ptr<EnvoySession> session, std::vector<latest::EventWrapper> events);
  void OnAckCommands(std::shared_ptr<EnvoySession> session,
                     std::vector<latest::ActorCheckpoint> checkpoints);
  void OnMetadata(std::shared_ptr<EnvoySession> session, latest::ToRivetMetadata metadata);
  // The generation `session` hosts of `actor`, when `session` is the live connection of the
  // envoy the actor is placed on (any thread).
  std::optional<uint32_t> HostedGeneration(const EnvoySession& session,
                                           const EngineId& actor) const;

  // ---- shutdown ----
  // Sends GOING_AWAY to every envoy's actors and calls `done` when none has an instance
  // any more or after `timeout_ms`.
  void DrainAll(int64_t timeout_ms, std::function<void()> done);
  // Closes every envoy connection with `reason` (ws.going_away on shutdown), then `done`.
  void CloseAllEnvoys(Error reason, std::function<void()> done);
  // Destroyed actors' data is deleted in the background, a chunk at a time (docs/storage.md
  // §3.8). This runs no further chunk and calls `done` once the one running (if any) is
  // done, so the store can close; the destroys waiting for a deletion are answered, and
  // what is left is deleted at the next start.
  void StopDataDeletions(std::function<void()> done);
  // Calls `done` (on the orchestrator's strand) once no data deletion is in flight: at
  // once when none is. A deletion that failed and waits to be retried is not in flight.
  void WhenDataDeletionsSettle(std::function<void()> done);

  // ---- introspection (REST /envoys, /metrics) ----
  // An envoy connected to this engine (actors.md §7 GET /envoys). Timestamps are epoch ms.
  struct EnvoyView {
    EngineId namespace_id;
    std::string envoy_key;
    std::string pool_name;
    uint32_t version = 0;
    int64_t create_ts = 0;          // its first connection (the durable envoy record's)
    int64_t last_connected_ts = 0;  // its latest connection
    // Set while it is gone or going: its connection ended (other than replaced by a newer
    // one of the same key), it sent ToRivetStopping, or it was drained (version upgrade,
    // engine shutdown). Cleared when it connects again.
    std::optional<int64_t> stop_ts;
    int64_t last_ping_ts = 0;
    uint32_t last_rtt_ms = 0;  // of its latest connection
    size_t actors = 0;         // actor instances placed on it
    // Its ToRivetMetadata `metadata` (a JSON object text); nullopt when it sent none.
    std::optional<std::string> metadata;
  };
  // Every envoy that connected to this engine, minus stopped ones past
  // EngineOptions::stopped_envoy_retention_ms or beyond max_stopped_envoys.
  void ListEnvoys(std::function<void(std::vector<EnvoyView>)> done);
  // Loaded actors by transition name (sleeping actors are not loaded; any thread).
  std::map<std::string, int64_t> LoadedActorsByState() const;

 private:
  Status LoadOnLoop();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::engine
