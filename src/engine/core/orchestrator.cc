#include "engine/core/orchestrator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <limits>
#include <mutex>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "engine/core/envoy_session.h"
#include "engine/core/gateway.h"
#include "engine/core/keys.h"
#include "engine/core/preload.h"

namespace keel::engine {
namespace {

using protocol::engine::ReadRecord;
using protocol::engine::WriteRecord;

constexpr std::string_view kLog = "orchestrator";
// Commands are stored in the envoy protocol's embedded-version envelope, latest version.
constexpr uint16_t kCommandVersion = 4;
constexpr size_t kAlarmScanBatch = 256;
// How long the syncing thread waits up for a woken actor's start (GroupSync::Anticipate):
// well past the loop's work before that commit, bounded if it never comes.
constexpr std::chrono::microseconds kWakeSyncWindow{1000};

using EnvoyKey = std::pair<EngineId, std::string>;
// A view of an envoy key, to find one without copying its string.
using EnvoyKeyView = std::pair<const EngineId&, std::string_view>;

// Orders envoy keys and their views alike (transparent).
struct EnvoyKeyLess {
  using is_transparent = void;
  static EnvoyKeyView View(const EnvoyKey& k) { return {k.first, k.second}; }
  static EnvoyKeyView View(const EnvoyKeyView& k) { return k; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    const EnvoyKeyView x = View(a), y = View(b);
    if (auto c = x.first <=> y.first; c != 0) return c < 0;
    return x.second < y.second;
  }
};

Error NotFound() {
  return Error{"actor", "not_found", "The actor does not exist or was destroyed."};
}

// The longest a loop timer waits before it looks again: a deadline or alarm further out
// (an envoy may set an alarm in any year) is re-armed when the timer fires, so no delay
// needs more than this, and none overflows the clock's nanoseconds.
constexpr int64_t kMaxTimerDelayMs = 24 * 3600 * 1000;

// The delay, for a loop timer, until `at` (epoch ms) from `now`.
std::chrono::milliseconds TimerDelay(int64_t at, int64_t now) {
  if (at <= now) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(at - now > kMaxTimerDelayMs ? kMaxTimerDelayMs : at - now);
}

bool AtRest(orch::Transition t) {
  return t == orch::Transition::kSleeping || t == orch::Transition::kDestroyed;
}

// A waiter's failure, ending with the actor's last error when it has one (an actor name the
// runtime does not serve, a start that threw): that is what the caller needs to fix it.
Error WaitFailed(std::string code, std::string message, const orch::ActorWorkflow& wf) {
  if (wf.error.has_value()) message += " Last error: " + orch::ToError(*wf.error).ToString();
  return Error{"guard", std::move(code), std::move(message)};
}

Bytes ToBytes(ByteView v) { return Bytes(v.begin(), v.end()); }

// ActorEntry::timer_at when the actor has no deadline filed.
constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::min();
// The longest wait between two tries of a failed data deletion.
constexpr int64_t kMaxDeletionRetryMs = 5 * 60 * 1000;
// A deletion of more chunks than this is logged at info when it ends.
constexpr int kQuietDeletionChunks = 16;

// A JSON text that parses as an object, else "{}" (envoy-protocol.md §3.3).
std::string ObjectJsonOrEmpty(const std::string& text) {
  auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) return "{}";
  return text;
}

}  // namespace

struct Orchestrator::Impl {
  struct Waiter {
    uint64_t id = 0;
    std::function<void(Result<ActorTarget>)> done;
    TimerId timer{};
    int rewakes = 0;
    bool bypass = false;
    bool early = false;  // may be sent to an instance still starting (WhenReady's early_ok)
  };

  // One loaded actor. Every awake actor holds one for as long as it runs, so what only
  // matters while it starts or someone waits on it lives in `transient`, allocated on first
  // use and dropped by Settle(): the entry itself stays within 512 bytes (static_assert
  // below; W4, docs/benchmarks.md).
  struct ActorEntry {
    struct Transient {
      std::vector<Waiter> waiters;
      std::vector<std::function<void(Status)>> destroy_waiters;
      // Early requests: the generation whose start command this run sent to the session
      // `early_session` (an id), which takes requests early; 0 = none. Cleared once the
      // actor leaves kStarting.
      uint32_t early_generation = 0;
      uint64_t early_session = 0;
    };

    EngineId id;
    EngineId ns;
    // The newest generation whose Running event reached the loop in this run: a request
    // sent early to a generation that stops without one was never handled.
    uint32_t ran_generation = 0;
    // Set for the step of a Stopped event of a generation that never ran (no Running
    // event before it): the envoy handled none of the requests sent to it early. 0: not.
    uint32_t stopped_unstarted = 0;
    rec::ActorRecord record;
    orch::ActorWorkflow wf;
    // The deadline this actor is filed under in `deadlines` (kNoDeadline: none).
    int64_t timer_at = kNoDeadline;
    std::unique_ptr<Transient> transient;

    Transient& More() {
      if (transient == nullptr) transient = std::make_unique<Transient>();
      return *transient;
    }
    bool HasWaiters() const { return transient != nullptr && !transient->waiters.empty(); }
    bool HasDestroyWaiters() const {
      return transient != nullptr && !transient->destroy_waiters.empty();
    }
    std::vector<Waiter> TakeWaiters() {
      return transient == nullptr ? std::vector<Waiter>{} : std::exchange(transient->waiters, {});
    }
    std::vector<std::function<void(Status)>> TakeDestroyWaiters() {
      return transient == nullptr ? std::vector<std::function<void(Status)>>{}
                                  : std::exchange(transient->destroy_waiters, {});
    }
    uint32_t early_generation() const {
      return transient == nullptr ? 0 : transient->early_generation;
    }
    uint64_t early_session() const { return transient == nullptr ? 0 : transient->early_session; }
    // Forgets what no longer applies and frees the transient part when it holds nothing.
    void Settle() {
      if (transient == nullptr) return;
      if (wf.transition != orch::Transition::kStarting) {
        transient->early_generation = 0;
        transient->early_session = 0;
      }
      if (transient->waiters.empty() && transient->destroy_waiters.empty() &&
          transient->early_generation == 0) {
        transient.reset();
      }
    }
  };
  static_assert(sizeof(void*) != 8 || sizeof(ActorEntry) <= 512,
                "a loaded actor's entry grew over 512 bytes: keep rare fields in Transient");

  struct EnvoyEntry {
    EngineId ns;
    std::string key;
    std::string pool;
    uint32_t version = 0;
    uint16_t protocol_version = 0;
    std::shared_ptr<EnvoySession> session;  // null while disconnected
    int64_t last_ping_ms = 0;
    bool stopping = false;
    std::set<EngineId> hosted;
    // GET /envoys (Orchestrator::EnvoyView). 0 / nullopt until it connects here.
    int64_t create_ts = 0;
    int64_t last_connected_ts = 0;
    std::optional<int64_t> stop_ts;
    uint32_t last_rtt_ms = 0;  // of the ended connection, while `session` is null
    std::optional<std::string> metadata;
    // The connection whose ToRivetMetadata `metadata` holds (a session id; 0: none), so a
    // connection's metadata read before its registration is not replaced by the stored one.
    uint64_t metadata_session = 0;
    // `key`, shared by the routes of the actors it hosts (RouteKey), made on first use.
    std::shared_ptr<const std::string> route_key;
  };

  // Where an actor with an instance lives. A serverless instance learns its envoy key
  // from its first event; until then any live connection of its namespace and pool may
  // serve it (the envoy the serverless handler connected for this start). One per awake
  // actor, so the envoy key is shared with the envoy's other routes (null: none yet).
  struct Route {
    EngineId ns;
    std::shared_ptr<const std::string> envoy_key;
    std::string pool;
    uint32_t generation = 0;
    bool connectable = false;
  };

  // The machine's view of the world for one step of one actor.
  class StepContext final : public orch::Context {
   public:
    StepContext(Impl& impl, ActorEntry& entry) : impl_(impl), entry_(entry) {}
    int64_t NowMs() const override { return impl_.engine.clock().SystemNowMs(); }
    const orch::Thresholds& thresholds() const override {
      return impl_.engine.options().thresholds;
    }
    orch::Allocation Allocate(std::span<const std::string> exclude) override {
      orch::Allocation a = impl_.Allocate(entry_, exclude);
      if (std::holds_alternative<orch::Allocation::Serverless>(a.value)) ++serverless_taken_;
      return a;
    }
    void ReleaseSlot() override {
      if (impl_.ReleaseServerlessSlot(entry_)) ++serverless_released_;
    }
    bool EnvoyConnected(std::string_view key) const override {
      const EnvoyEntry* e = impl_.FindEnvoy(entry_.ns, key);
      return e != nullptr && e->session != nullptr && !e->session->closed();
    }
    uint64_t Run() const override { return impl_.engine.run(); }
    bool UncleanStart() const override { return impl_.engine.unclean_start(); }
    std::optional<int64_t> EnvoyLastPingMs(std::string_view key) const override {
      const EnvoyEntry* e = impl_.FindEnvoy(entry_.ns, key);
      if (e == nullptr || e->last_ping_ms == 0) return std::nullopt;
      return e->last_ping_ms;
    }
    // Undoes the in-memory slot accounting of a step whose commit failed.
    void Undo() {
      uint32_t& slots = impl_.serverless_slots[{entry_.ns, entry_.record.pool_name}];
      slots += serverless_released_;
      slots -= std::min<uint32_t>(slots, static_cast<uint32_t>(serverless_taken_));
    }

   private:
    Impl& impl_;
    ActorEntry& entry_;
    int serverless_taken_ = 0;
    uint32_t serverless_released_ = 0;
  };

  explicit Impl(Engine& e)
      : engine(e),
        loop(e.MakeWorkerStrand()),
        deletions(e.MakeWorkerStrand()),
        random(e.options().seed ^ 0x6f7263686573ull) {}

  ~Impl() { HaltDeletions(); }

  Engine& engine;
  std::unique_ptr<Executor> loop;
  // Destroyed actors' data deletions, one chunk per task (DeletionChunk): off the loop, so
  // a large actor's data holds up no step, and one at a time, so deletions take one worker.
  std::unique_ptr<Executor> deletions;
  struct DeletionGate {
    std::mutex mu;
    std::condition_variable cv;
    bool stopped = false;  // StopDataDeletions: no further chunk runs
    bool running = false;  // a chunk runs now
  } deletion_gate;
  Random random;  // loop only
  std::unordered_map<EngineId, std::unique_ptr<ActorEntry>> actors;
  // Actors whose early start's commit is not yet known durable (EarlyStartSession).
  std::unordered_set<EngineId> starts_syncing;
  std::map<EnvoyKey, EnvoyEntry, EnvoyKeyLess> envoys;
  std::map<std::pair<EngineId, std::string>, uint32_t> serverless_slots;
  // Preload plans by (namespace, actor name): read from the actor-name record on first use,
  // forgotten when an envoy's metadata rewrites the record (nullopt: the name has none).
  std::map<std::pair<EngineId, std::string>, std::optional<storage::PreloadPlan>> preload_plans;
  uint64_t next_waiter_id = 1;
  TimerId alarm_timer{};
  int64_t alarm_timer_at = 0;
  // Destroyed actors whose data deletion failed, with the tries so far; each has a retry
  // timer pending (ScheduleDeletionRetry).
  std::unordered_map<EngineId, int> deletion_attempts;
  // Destroyed actors whose data deletion is in flight, and who waits for none to be.
  std::unordered_set<EngineId> deleting;
  std::vector<std::function<void()>> deletions_settled;
  // The machines' deadlines (lost timeouts, liveness checks, retries), served by one
  // engine-wide timer for the earliest, so a loaded actor costs a set node rather than a
  // clock timer of its own (docs/benchmarks-history.md W4).
  std::set<std::pair<int64_t, EngineId>> deadlines;
  TimerId deadline_timer{};
  int64_t deadline_timer_at = 0;
  uint64_t deadline_timer_seq = 0;

  mutable std::mutex routes_mu;
  std::unordered_map<EngineId, Route> routes;                    // guarded by routes_mu
  std::map<EnvoyKey, std::shared_ptr<EnvoySession>, EnvoyKeyLess> live;  // guarded by routes_mu
  std::map<std::string, int64_t> loaded_by_state;                 // guarded by routes_mu

  // ---- helpers ---------------------------------------------------------------------

  void Post(std::function<void()> fn) { loop->Post(std::move(fn)); }

  int64_t Now() const { return engine.clock().SystemNowMs(); }

  EnvoyEntry* FindEnvoy(const EngineId& ns, std::string_view key) {
    auto it = envoys.find(EnvoyKeyView(ns, key));
    return it == envoys.end() ? nullptr : &it->second;
  }
  const EnvoyEntry* FindEnvoy(const EngineId& ns, std::string_view key) const {
    auto it = envoys.find(EnvoyKeyView(ns, key));
    return it == envoys.end() ? nullptr : &it->second;
  }

  std::shared_ptr<EnvoySession> LiveSession(const EngineId& ns, const std::string& key) {
    EnvoyEntry* e = FindEnvoy(ns, key);
    if (e == nullptr || e->session == nullptr || e->session->closed()) return nullptr;
    return e->session;
  }

  // actors.md §6.4: serverless takes a concurrency slot; serverful picks a random envoy
  // among the (up to allocation_candidate_sample_size, 100) highest-version envoys of the
  // pool that pinged recently.
  orch::Allocation Allocate(ActorEntry& entry, std::span<const std::string> exclude) {
    std::optional<Pool> pool = engine.catalog().FindPool(entry.ns, entry.record.pool_name);
    if (!pool.has_value()) return {orch::Allocation::Failure::kNoEnvoys};
    if (pool->serverless()) {
      uint32_t& used = serverless_slots[{entry.ns, entry.record.pool_name}];
      const uint32_t max = pool->config.serverless->max_concurrent_actors;
      if (max != 0 && used >= max) {
        return {orch::Allocation::Failure::kConcurrentActorLimitReached};
      }
      ++used;
      return {orch::Allocation::Serverless{}};
    }
    if (engine.shutting_down()) return {orch::Allocation::Failure::kNoEnvoys};
    const int64_t now = Now();
    std::vector<const EnvoyEntry*> candidates;
    for (const auto& [key, env] : envoys) {
      if (!(key.first == entry.ns) || env.pool != entry.record.pool_name) continue;
      if (env.session == nullptr || env.session->closed() || env.stopping) continue;
      if (now - env.last_ping_ms > engine.options().envoy_eligible_threshold_ms) continue;
      if (std::find(exclude.begin(), exclude.end(), env.key) != exclude.end()) continue;
      candidates.push_back(&env);
    }
    if (candidates.empty()) return {orch::Allocation::Failure::kNoEnvoys};
    std::sort(candidates.begin(), candidates.end(),
              [](const EnvoyEntry* a, const EnvoyEntry* b) { return a->version > b->version; });
    const uint32_t top = candidates.front()->version;
    size_t n = 0;
    const auto sample = static_cast<size_t>(
        std::max<int64_t>(1, engine.options().allocation_candidate_sample_size));
    while (n < candidates.size() && n < sample && candidates[n]->version == top) ++n;
    const EnvoyEntry* chosen = candidates[random.Uniform<size_t>(0, n - 1)];
    return {orch::Allocation::Serverful{chosen->key}};
  }

  bool ReleaseServerlessSlot(ActorEntry& entry) {
    std::optional<Pool> pool = engine.catalog().FindPool(entry.ns, entry.record.pool_name);
    if (!pool.has_value() || !pool->serverless()) return false;
    uint32_t& used = serverless_slots[{entry.ns, entry.record.pool_name}];
    if (used > 0) --used;
    return true;
  }

  // ---- loading ---------------------------------------------------------------------

  Result<std::unique_ptr<ActorEntry>> ReadEntry(const EngineId& id) {
    KEEL_ASSIGN_OR_RETURN(auto snapshot, engine.store().NewSnapshot());
    KEEL_ASSIGN_OR_RETURN(auto record_bytes, snapshot->Get(keys::ActorRecord(id.bytes())));
    if (!record_bytes.has_value()) return Unexpected{NotFound()};
    auto entry = std::make_unique<ActorEntry>();
    entry->id = id;
    KEEL_ASSIGN_OR_RETURN(entry->record, ReadRecord<rec::ActorRecord>(*record_bytes));
    KEEL_ASSIGN_OR_RETURN(entry->ns, EngineId::FromBytes(entry->record.namespace_id));
    KEEL_ASSIGN_OR_RETURN(auto wf_bytes, snapshot->Get(keys::ActorWorkflow(id.bytes())));
    if (wf_bytes.has_value()) {
      KEEL_ASSIGN_OR_RETURN(entry->wf, orch::DecodeWorkflow(*wf_bytes));
    }
    return entry;
  }

  // The loaded entry, reading it from storage when needed.
  Result<ActorEntry*> Entry(const EngineId& id) {
    auto it = actors.find(id);
    if (it != actors.end()) return it->second.get();
    KEEL_ASSIGN_OR_RETURN(auto entry, ReadEntry(id));
    ActorEntry* raw = entry.get();
    actors.emplace(id, std::move(entry));
    CountState(raw->wf.transition, +1);
    UpdateRoute(*raw);
    return raw;
  }

  void CountState(orch::Transition t, int delta) {
    std::lock_guard lock(routes_mu);
    loaded_by_state[std::string(orch::TransitionName(t))] += delta;
  }

  // ---- one step --------------------------------------------------------------------

  latest::CommandWrapper BuildCommand(const ActorEntry& e, const orch::fx::SendCommand& cmd,
                                      bool fresh) {
    latest::CommandWrapper w;
    w.checkpoint.actor_id = e.id.ToString();
    w.checkpoint.generation = cmd.generation;
    w.checkpoint.index = cmd.index;
    if (std::holds_alternative<orch::fx::StartCommand>(cmd.command)) {
      latest::CommandStartActor start;
      start.config.name = e.record.name;
      start.config.key = e.record.key;
      start.config.create_ts = e.record.create_ts;
      start.config.input = e.record.input;
      if (!fresh) start.hibernating_requests = HibernatingRequests(e.id);
      w.inner = std::move(start);
    } else {
      latest::CommandStopActor stop;
      stop.reason = std::get<orch::fx::StopCommand>(cmd.command).reason;
      w.inner = stop;
    }
    return w;
  }

  // The user WebSockets the gateway keeps open for this actor while it sleeps (keepalive
  // records 05 a 30 gw req written within the eligible threshold; envoy-protocol §6.5).
  std::vector<latest::HibernatingRequest> HibernatingRequests(const EngineId& id) {
    std::vector<latest::HibernatingRequest> out;
    Bytes prefix = keys::ActorHibernating(id.bytes());
    auto records = engine.store().ScanPrefix(prefix);
    if (!records.has_value()) return out;
    const int64_t now = Now();
    for (const auto& kv : *records) {
      ByteView rest = ByteView(kv.key).subspan(prefix.size());
      ByteView value(kv.value);
      uint64_t ts = 0;
      if (rest.size() != 8 || !keys::ReadU64(value, ts)) continue;
      if (now - static_cast<int64_t>(ts) >
          engine.options().hibernating_request_eligible_threshold_ms) {
        continue;
      }
      latest::HibernatingRequest r;
      std::copy(rest.begin(), rest.begin() + 4, r.gateway_id.begin());
      std::copy(rest.begin() + 4, rest.end(), r.request_id.begin());
      out.push_back(r);
    }
    return out;
  }

  static latest::ActorCommandKeyData ToKeyData(const latest::CommandWrapper& w) {
    if (const auto* start = std::get_if<latest::CommandStartActor>(&w.inner.value)) {
      return latest::ActorCommandKeyData{*start};
    }
    return latest::ActorCommandKeyData{std::get<latest::CommandStopActor>(w.inner.value)};
  }

  static std::optional<Bytes> AlarmKeyOf(const ActorEntry& e, const orch::ActorWorkflow& wf) {
    if (wf.transition != orch::Transition::kSleeping || !wf.alarm_ts.has_value()) {
      return std::nullopt;
    }
    return keys::Alarm(*wf.alarm_ts, e.id.bytes());
  }

  // One machine step between Step() and its commit: the new workflow, its effects, the
  // commands it sends (built before the commit, stored with it) and the storage writes.
  struct PreparedStep {
    orch::ActorWorkflow next;
    std::vector<orch::Effect> effects;
    // (index into `effects`, the command as sent and stored)
    std::vector<std::pair<size_t, latest::CommandWrapper>> commands;
    // Storage writes (computed once, re-applied on a conflict retry).
    Bytes wf_value;
    std::optional<Bytes> old_alarm;
    std::optional<Bytes> new_alarm;
    std::optional<Bytes> record_value;
    bool release_key = false;
    std::vector<std::pair<Bytes, Bytes>> command_puts;
    std::vector<Bytes> drop_prefixes;
    bool changed = false;  // the workflow differs: the step must be stored
    // The actor's live-set key (09) is stored: its stored workflow is not at rest. A step
    // writes the key only when that changes, so the memtable gets no re-put (or tombstone of
    // an absent key) per step: ~50 bytes of engine memory per start or wake (W4).
    bool was_live = false;
    // The destroy step (orch::fx::DeleteActorData): the actor stays in the live set until
    // its data deletion has deleted all its data, so an engine that dies before that
    // finishes it at its next start (docs/storage.md §3.8).
    bool deletes_data = false;
  };

  // Runs Step on a copy of the workflow. nullopt: nothing changed and nothing to do.
  // `fresh`: the actor is being created in this step (it has no hibernating requests).
  // A command that cannot be encoded fails the step (`prepared` error).
  std::optional<Result<PreparedStep>> PrepareStep(ActorEntry& e, const orch::Input& input,
                                                  StepContext& ctx, bool fresh = false) {
    PreparedStep p;
    p.next = e.wf;
    orch::StepResult result = orch::Step(p.next, input, ctx);
    if (!result.changed && result.effects.empty()) return std::nullopt;
    p.effects = std::move(result.effects);
    p.changed = result.changed;
    p.was_live = !fresh && !AtRest(e.wf.transition);
    const ByteView actor = e.id.bytes();
    const ByteView ns = e.ns.bytes();
    for (size_t i = 0; i < p.effects.size(); ++i) {
      const orch::Effect& effect = p.effects[i];
      if (const auto* cmd = std::get_if<orch::fx::SendCommand>(&effect)) {
        latest::CommandWrapper wrapper = BuildCommand(e, *cmd, fresh);
        auto value = protocol::envoy::EncodeActorCommandKeyDataFramed(ToKeyData(wrapper),
                                                                       kCommandVersion);
        if (!value.has_value()) {
          return Result<PreparedStep>(Unexpected{
              Error{"core", "internal_error", protocol::ToString(value.error())}});
        }
        p.command_puts.emplace_back(
            keys::EnvoyCommand(ns, cmd->envoy_key, actor, cmd->generation,
                               static_cast<uint64_t>(cmd->index)),
            std::move(*value));
        p.commands.emplace_back(i, std::move(wrapper));
      } else if (std::holds_alternative<orch::fx::DeleteActorData>(effect)) {
        p.deletes_data = true;
        rec::ActorRecord destroyed = e.record;
        destroyed.destroyed = true;
        destroyed.destroy_ts = p.next.destroy_ts != 0 ? p.next.destroy_ts : Now();
        p.record_value = WriteRecord(destroyed);
      } else if (std::holds_alternative<orch::fx::ReleaseKey>(effect)) {
        p.release_key = e.record.key.has_value();
      } else if (const auto* drop = std::get_if<orch::fx::DropPendingCommands>(&effect)) {
        p.drop_prefixes.push_back(
            keys::EnvoyCommandsOf(ns, drop->envoy_key, actor, drop->generation));
      }
    }
    p.old_alarm = AlarmKeyOf(e, e.wf);
    p.new_alarm = AlarmKeyOf(e, p.next);
    p.wf_value = orch::EncodeWorkflow(p.next);
    return Result<PreparedStep>(std::move(p));
  }

  // Hands over, in order, what a step stores besides its guard read (docs/storage.md
  // §3.4–§3.8): the workflow, the destroyed record, the live set, the alarm index, the
  // released key reservation — each to `write(key, value)`, a delete when `value` is
  // nullopt — then each dropped command prefix to `drop(prefix)`, then the new commands to
  // `write`. The values are views into `p`.
  template <typename Write, typename Drop>
  static Status ForEachStepWrite(const ActorEntry& e, const PreparedStep& p, Write&& write,
                                 Drop&& drop) {
    const ByteView actor = e.id.bytes();
    KEEL_RETURN_IF_ERROR(write(keys::ActorWorkflow(actor), ByteView(p.wf_value)));
    if (p.record_value.has_value()) {
      KEEL_RETURN_IF_ERROR(write(keys::ActorRecord(actor), ByteView(*p.record_value)));
    }
    // (kDestroyed is terminal: no step follows the destroy step, its data deletion deletes it.)
    const bool live = p.deletes_data || !AtRest(p.next.transition);
    if (live != p.was_live) {
      KEEL_RETURN_IF_ERROR(
          write(keys::Live(actor), live ? std::optional(ByteView()) : std::nullopt));
    }
    if (p.old_alarm != p.new_alarm) {
      if (p.old_alarm.has_value()) KEEL_RETURN_IF_ERROR(write(*p.old_alarm, std::nullopt));
      if (p.new_alarm.has_value()) KEEL_RETURN_IF_ERROR(write(*p.new_alarm, ByteView()));
    }
    if (p.release_key) {
      KEEL_RETURN_IF_ERROR(
          write(keys::ActorByKey(e.ns.bytes(), e.record.name, *e.record.key), std::nullopt));
    }
    for (const auto& prefix : p.drop_prefixes) KEEL_RETURN_IF_ERROR(drop(prefix));
    for (const auto& [key, value] : p.command_puts) {
      KEEL_RETURN_IF_ERROR(write(key, ByteView(value)));
    }
    return {};
  }

  // Adds the step to `txn` (ForEachStepWrite), after the guard read: a racing KV/page write
  // of this actor conflicts with a destroy.
  Status WriteStep(storage::KvTxn& txn, const ActorEntry& e, const PreparedStep& p) {
    KEEL_RETURN_IF_ERROR(txn.Get(keys::ActorRecord(e.id.bytes())));
    return ForEachStepWrite(
        e, p,
        [&txn](const Bytes& key, std::optional<ByteView> value) {
          return value.has_value() ? txn.Put(key, *value) : txn.Delete(key);
        },
        [&txn](const Bytes& prefix) { return txn.DeleteRange(storage::KeyRange::Prefix(prefix)); });
  }

  // Stores a step. On a store this engine alone writes (Engine::sole_writer), only the loop
  // writes the keys a step writes, so nothing can conflict with it: a step that drops no
  // command prefixes (dropping one reads the range) is committed as one unchecked batch
  // (KvStore::WriteUnchecked: no snapshot, guard read, tracked keys or validation, which
  // an actor's wake would otherwise pay on its critical path). A transaction that read one
  // of its keys meanwhile still conflicts with it, so the KV and page writers' guard on the
  // actor's record holds as before.
  Status CommitStep(const ActorEntry& e, const PreparedStep& p,
                    const storage::CommitOptions& options) {
    if (!engine.sole_writer() || !p.drop_prefixes.empty()) {
      return storage::RunTransaction(
          engine.store(), [&](storage::KvTxn& txn) -> Status { return WriteStep(txn, e, p); },
          storage::kDefaultMaxAttempts, options);
    }
    std::vector<std::pair<Bytes, std::optional<ByteView>>> owned;
    owned.reserve(6 + p.command_puts.size());
    Status listed = ForEachStepWrite(
        e, p,
        [&owned](Bytes key, std::optional<ByteView> value) -> Status {
          owned.emplace_back(std::move(key), value);
          return {};
        },
        [](const Bytes&) -> Status { return {}; });  // (none: checked above)
    if (!listed.has_value()) return listed;
    std::vector<storage::KvWrite> writes;
    writes.reserve(owned.size());
    for (const auto& [key, value] : owned) writes.push_back(storage::KvWrite{key, value});
    return engine.store().WriteUnchecked(writes, options);
  }

  // The one step whose answer may precede its commit: Running makes the actor
  // connectable, and the waiters get the instance at once, while the loop stores kRunning
  // (docs/storage.md §3.5 "Running before its commit"). Nothing the waiters do depends on
  // that commit: the instance (envoy, generation) was durably placed by the start step,
  // KV/page/SQL ownership already holds in kStarting, and losing the commit (crash or
  // store error) leaves the state of a Running event not yet received.
  void AnswerReadyEarly(ActorEntry& e, const PreparedStep& p) {
    if (!e.HasWaiters() || p.next.transition != orch::Transition::kRunning) return;
    if (ReadyNotices(p) == 0) return;
    AnswerWaiters(e, p);
  }

  // A step whose loss is harmless: the Running event made the instance connectable and the
  // step does nothing else (no command, no event ack, no other notice). Losing its commit
  // leaves the state of "Running not yet received" (above), so it is committed without
  // waiting for the WAL sync: the next synced commit (the actor's first KV write, any
  // later step) makes it durable, and an OS crash before that loses only it (docs/storage.md
  // §3.5 "Running before its commit").
  static bool LossIsHarmless(const ActorEntry& e, const PreparedStep& p) {
    // Serverful only: there the envoy (and so the Stop{LOST} address) was stored with the
    // start; a serverless instance learns its envoy from this very event.
    if (p.next.transition != orch::Transition::kRunning ||
        e.wf.transition != orch::Transition::kStarting || e.wf.envoy_key.empty() ||
        p.next.envoy_key != e.wf.envoy_key || !p.command_puts.empty() ||
        !p.drop_prefixes.empty() || p.record_value.has_value() || p.release_key ||
        p.old_alarm != p.new_alarm) {
      return false;
    }
    return ReadyNotices(p) == p.effects.size();  // no effect but the ready notice
  }

  // How many of the step's effects publish kReady (the actor became connectable).
  static size_t ReadyNotices(const PreparedStep& p) {
    return static_cast<size_t>(
        std::count_if(p.effects.begin(), p.effects.end(), [](const orch::Effect& effect) {
          const auto* pub = std::get_if<orch::fx::Publish>(&effect);
          return pub != nullptr && pub->notice == orch::fx::Notice::kReady;
        }));
  }

  // Early requests (docs/engine.md): the session an HTTP request for `e` may go to now,
  // although the instance is still starting — the one its start command went to in this
  // run, when that connection takes requests early and is still live — or null.
  std::shared_ptr<EnvoySession> EarlyTarget(const ActorEntry& e) {
    if (e.wf.transition != orch::Transition::kStarting || e.early_generation() == 0 ||
        e.early_generation() != e.wf.generation || e.wf.envoy_key.empty()) {
      return nullptr;
    }
    auto session = LiveSession(e.ns, e.wf.envoy_key);
    // (early_session took requests early when the start went out; that never changes.)
    if (session == nullptr || session->id() != e.early_session()) {
      return nullptr;
    }
    return session;
  }

  // Hands the waiters that take an early target (HTTP requests) the starting instance.
  void AnswerEarlyWaiters(ActorEntry& e) {
    if (!e.HasWaiters()) return;
    auto session = EarlyTarget(e);
    if (session == nullptr) return;
    std::vector<Waiter> keep;
    std::vector<Waiter> answer;
    for (auto& w : e.TakeWaiters()) (w.early ? answer : keep).push_back(std::move(w));
    e.More().waiters = std::move(keep);
    for (auto& w : answer) {
      engine.clock().Cancel(w.timer);
      w.done(ActorTarget{session, e.wf.generation, /*early=*/true});
    }
  }

  void AnswerWaiters(ActorEntry& e, const PreparedStep& p) {
    auto session = LiveSession(e.ns, p.next.envoy_key);
    if (session == nullptr) return;
    for (auto& w : e.TakeWaiters()) {
      engine.clock().Cancel(w.timer);
      w.done(ActorTarget{session, p.next.generation});
    }
  }

  void StepActor(ActorEntry& e, const orch::Input& input) {
    e.stopped_unstarted = 0;
    if (const auto* event = std::get_if<orch::in::Event>(&input); event != nullptr) {
      if (std::holds_alternative<orch::in::Running>(event->kind)) {
        // Whatever the machine makes of it (a sleep may be under way): the instance ran.
        e.ran_generation = std::max(e.ran_generation, event->generation);
      } else if (std::holds_alternative<orch::in::Stopped>(event->kind) &&
                 event->generation != e.ran_generation) {
        // Only the envoy's own Stopped event says the instance never ran: after a loss (no
        // event) it may have run and handled them, its Running event lost on the way.
        e.stopped_unstarted = event->generation;
      }
    }
    StepContext ctx(*this, e);
    auto prepared = PrepareStep(e, input, ctx);
    if (!prepared.has_value()) return;
    if (!prepared->has_value()) {
      ctx.Undo();
      KEEL_LOG(kError, kLog, "could not prepare an actor transition; the input is dropped",
               {{"actor", e.id.ToString()}, {"error", prepared->error().ToString()}});
      return;
    }
    PreparedStep& p = **prepared;
    if (!p.changed && std::all_of(p.effects.begin(), p.effects.end(), [](const orch::Effect& fx) {
          return std::holds_alternative<orch::fx::StopStray>(fx);
        })) {
      ApplyStep(e, p);  // nothing to store: a stray instance is only told to stop
      return;
    }
    AnswerReadyEarly(e, p);
    std::shared_ptr<EnvoySession> early = EarlyStartSession(e, p);
    storage::CommitOptions options;
    options.sync = early == nullptr && !LossIsHarmless(e, p);
    const MonoTime commit_start = engine.clock().MonotonicNow();
    Status stored = CommitStep(e, p, options);
    engine.ObserveCommit(engine.clock().MonotonicNow() - commit_start);
    if (!stored.has_value()) {
      ctx.Undo();
      KEEL_LOG(kError, kLog, "could not store an actor transition; the input is dropped",
               {{"actor", e.id.ToString()}, {"error", stored.error().ToString()}});
      return;
    }
    if (early != nullptr) HoldUntilStartIsDurable(e, *early, p.next.generation);
    ApplyStep(e, p);
  }

  // Early start (docs/engine.md): the session to send this step's start command to before
  // the step is durable, or null when the step must be synced first. Only a step whose one
  // command starts an instance on a connection that holds outputs qualifies: that
  // connection keeps the instance's answers until the sync (HoldUntilDurable), every write
  // the instance makes is ordered after the step in the WAL, and nothing else in the step
  // acts outside the engine. One such start per actor at a time, so at most one generation
  // an OS crash could take back was ever sent (the generation skip after an unclean
  // restart, Context::UncleanStart, relies on it).
  std::shared_ptr<EnvoySession> EarlyStartSession(const ActorEntry& e, const PreparedStep& p) {
    // After an unclean restart, the step that skips a generation (the actor's first
    // allocation in this run) is synced before it is sent: the generation it skipped to
    // must be stored, or a crash now could lose it too and the next run reuse it.
    const bool skipped = engine.unclean_start() && e.wf.alloc_run != engine.run();
    if (!engine.options().early_start || skipped || p.commands.size() != 1 ||
        p.next.transition != orch::Transition::kStarting || !p.drop_prefixes.empty() ||
        p.release_key || starts_syncing.contains(e.id)) {
      return nullptr;
    }
    if (!std::holds_alternative<latest::CommandStartActor>(p.commands[0].second.inner.value)) {
      return nullptr;
    }
    for (const orch::Effect& effect : p.effects) {
      if (!std::holds_alternative<orch::fx::SendCommand>(effect) &&
          !std::holds_alternative<orch::fx::Publish>(effect)) {
        return nullptr;
      }
    }
    auto session = LiveSession(e.ns, p.next.envoy_key);
    if (session == nullptr || !session->holds_outputs()) return nullptr;
    return session;
  }

  // `then` (optional) runs on the loop once the sync is over, with its status.
  void HoldUntilStartIsDurable(const ActorEntry& e, EnvoySession& session, uint32_t generation,
                               std::function<void(Status)> then = nullptr) {
    starts_syncing.insert(e.id);
    session.HoldUntilDurable(
        e.id, generation, [this, id = e.id, then = std::move(then)](const Status& synced) mutable {
          if (!synced.has_value()) {
            KEEL_LOG(kError, kLog,
                     "the WAL sync of an actor's start failed; its generation's answers are "
                     "withheld",
                     {{"actor", id.ToString()}, {"error", synced.error().ToString()}});
          }
          Post([this, id, then = std::move(then), synced]() mutable {
            starts_syncing.erase(id);
            if (then) then(synced);
          });
        });
  }

  // After the step's commit: the new workflow becomes the loop's, commands go out, effects
  // run, the deadline is re-armed, an actor at rest is evicted.
  void ApplyStep(ActorEntry& e, PreparedStep& p) {
    const orch::Transition before = e.wf.transition;
    const std::string old_key = e.wf.envoy_key;
    if (LogEnabled(LogLevel::kDebug)) {
      std::string fx;
      for (const auto& effect : p.effects) fx += orch::EffectToString(effect) + "; ";
      KEEL_LOG(kDebug, kLog, "step",
               {{"actor", e.id.ToString()},
                {"from", orch::TransitionName(before)},
                {"to", orch::TransitionName(p.next.transition)},
                {"generation", std::to_string(p.next.generation)},
                {"effects", fx}});
    }
    e.wf = std::move(p.next);
    if (before != e.wf.transition) {
      CountState(before, -1);
      CountState(e.wf.transition, +1);
    }
    UpdateHosting(e, old_key);
    UpdateRoute(e);
    for (auto& [index, wrapper] : p.commands) {
      const auto& cmd = std::get<orch::fx::SendCommand>(p.effects[index]);
      auto session = LiveSession(e.ns, cmd.envoy_key);
      if (session == nullptr) continue;
      auto* start = std::get_if<latest::CommandStartActor>(&wrapper.inner.value);
      if (start != nullptr) start->preloaded_kv = PreloadFor(e);
      const bool started = start != nullptr;
      session->Send(latest::ToEnvoy{latest::ToEnvoyCommands{{std::move(wrapper)}}});
      if (started && session->early_requests() && e.wf.transition == orch::Transition::kStarting) {
        e.More().early_generation = e.wf.generation;
        e.More().early_session = session->id();
      }
    }
    for (const auto& effect : p.effects) Execute(e, effect);
    // After the effects: a step that ends one instance and starts the next publishes the
    // stop first, and the gateway fails what was in flight to the old one only.
    AnswerEarlyWaiters(e);
    e.Settle();
    Rearm(e);
    MaybeEvict(e.id);
  }

  // The KV the actor name's preload plan asks for, for a start command as it is first sent
  // or POSTed to a serverless pool (the stored copy, replayed after a reconnect, carries
  // none: by then the data may have moved on, and without preloaded KV the actor reads its
  // KV itself). Consistent: the actor has no running instance to write its KV. Durable, or
  // as good as: this runs after the step's commit; when that commit was synced it made
  // every earlier write durable, and after an early start the instance's answers wait for
  // the sync that does so (HoldUntilDurable).
  std::optional<latest::PreloadedKv> PreloadFor(const ActorEntry& e) {
    const int64_t budget = engine.options().preload_max_total_bytes;
    if (budget <= 0) return std::nullopt;
    const storage::PreloadPlan* plan = PreloadPlanFor(e.ns, e.record.name);
    if (plan == nullptr) return std::nullopt;
    auto preloaded = engine.actor_kv().Preload(e.id.bytes(), *plan, static_cast<uint64_t>(budget));
    if (!preloaded.has_value()) {
      KEEL_LOG(kWarn, kLog, "could not preload the actor's KV; it will read it itself",
               {{"actor", e.id.ToString()}, {"error", preloaded.error().ToString()}});
      return std::nullopt;
    }
    return std::move(*preloaded);
  }

  const storage::PreloadPlan* PreloadPlanFor(const EngineId& ns, const std::string& name) {
    auto key = std::make_pair(ns, name);
    auto it = preload_plans.find(key);
    if (it == preload_plans.end()) {
      std::optional<storage::PreloadPlan> plan;
      auto stored = engine.store().Get(keys::ActorName(ns.bytes(), name));
      if (stored.has_value() && stored->has_value()) {
        auto record = ReadRecord<rec::ActorNameRecord>(**stored);
        if (record.has_value()) plan = ParsePreloadPlan(record->metadata);
      } else if (!stored.has_value()) {
        return nullptr;  // a storage error: try again next time
      }
      it = preload_plans.emplace(std::move(key), std::move(plan)).first;
    }
    return it->second.has_value() ? &*it->second : nullptr;
  }

  void UpdateHosting(ActorEntry& e, const std::string& old_key) {
    const bool hosting = orch::HasInstance(e.wf.transition) && !e.wf.envoy_key.empty();
    if (!old_key.empty() && (!hosting || old_key != e.wf.envoy_key)) {
      if (EnvoyEntry* env = FindEnvoy(e.ns, old_key)) env->hosted.erase(e.id);
    }
    if (hosting) {
      EnvoyEntry& env = envoys[EnvoyKey(e.ns, e.wf.envoy_key)];
      if (env.key.empty()) {
        env.ns = e.ns;
        env.key = e.wf.envoy_key;
      }
      env.hosted.insert(e.id);
    }
  }

  // The envoy key `key` of namespace `ns` for a route: the envoy's shared copy when it is
  // known here, else one of its own; null for none.
  std::shared_ptr<const std::string> RouteKey(const EngineId& ns, const std::string& key) {
    if (key.empty()) return nullptr;
    EnvoyEntry* env = FindEnvoy(ns, key);
    if (env == nullptr) return std::make_shared<const std::string>(key);
    if (env->route_key == nullptr) env->route_key = std::make_shared<const std::string>(key);
    return env->route_key;
  }

  void UpdateRoute(const ActorEntry& e) {
    const bool routed = orch::HasInstance(e.wf.transition) &&
                        (!e.wf.envoy_key.empty() || e.wf.pool_kind == orch::PoolKind::kServerless);
    std::shared_ptr<const std::string> key = routed ? RouteKey(e.ns, e.wf.envoy_key) : nullptr;
    std::lock_guard lock(routes_mu);
    if (routed) {
      routes[e.id] =
          Route{e.ns, std::move(key), e.record.pool_name, e.wf.generation, e.wf.connectable};
    } else {
      routes.erase(e.id);
    }
  }

  void Execute(ActorEntry& e, const orch::Effect& effect) {
    std::visit(
        [&](const auto& fx) {
          using T = std::decay_t<decltype(fx)>;
          if constexpr (std::is_same_v<T, orch::fx::Publish>) {
            Publish(e, fx);
          } else if constexpr (std::is_same_v<T, orch::fx::AckEvents>) {
            if (auto session = LiveSession(e.ns, fx.envoy_key)) {
              latest::ToEnvoyAckEvents ack;
              ack.last_event_checkpoints.push_back(
                  latest::ActorCheckpoint{e.id.ToString(), fx.generation, fx.index});
              session->Send(latest::ToEnvoy{std::move(ack)});
            }
          } else if constexpr (std::is_same_v<T, orch::fx::StopStray>) {
            StopStray(e, fx);
          } else if constexpr (std::is_same_v<T, orch::fx::DeleteActorData>) {
            StartDeletion(e.id);
          } else if constexpr (std::is_same_v<T, orch::fx::DispatchServerlessStart>) {
            engine.gateway().DispatchServerlessStart(e.ns, e.id, e.record, fx.generation,
                                                     fx.index, PreloadFor(e));
          }
          // SendCommand, DropPendingCommands and ReleaseKey were done with the commit.
        },
        effect);
  }

  void StopStray(const ActorEntry& e, const orch::fx::StopStray& fx) {
    if (auto session = LiveSession(e.ns, fx.envoy_key)) {
      SendStrayStop(*session, e.id.ToString(), fx.generation);
    }
  }

  // Stop{LOST} for an instance no actor state knows (orch::fx::StopStray), not stored.
  static void SendStrayStop(EnvoySession& session, const std::string& actor_id,
                            uint32_t generation) {
    KEEL_LOG(kInfo, kLog, "stopping an instance the actor does not know",
             {{"actor", actor_id},
              {"generation", std::to_string(generation)},
              {"envoy_key", session.envoy_key()}});
    latest::CommandWrapper w;
    w.checkpoint = latest::ActorCheckpoint{actor_id, generation, orch::fx::kStrayStopIndex};
    latest::CommandStopActor stop;
    stop.reason = latest::StopActorReason::kLost;
    w.inner = stop;
    session.Send(latest::ToEnvoy{latest::ToEnvoyCommands{{std::move(w)}}});
  }

  // Destroy's data removal (docs/storage.md §3.8), after the destroyed record committed;
  // also started at startup for a destroyed actor still in the live set. It runs on the
  // deletions strand a chunk at a time: the KV, then the database, then the hibernating
  // requests and — only when the KV and the database were deleted — the live key. The
  // actor's destroy waiters are answered when it ends (FinishDeletion); a failed one is
  // tried again later (ScheduleDeletionRetry) and at the next engine start.
  void StartDeletion(const EngineId& id) {
    if (!deleting.insert(id).second) return;
    deletions->Post([this, run = DeletionRun{id}]() mutable { DeletionChunk(std::move(run)); });
  }

  // No further chunk runs; returns once the running one (if any) is done. Any thread.
  void HaltDeletions() {
    std::unique_lock lock(deletion_gate.mu);
    deletion_gate.stopped = true;
    deletion_gate.cv.wait(lock, [this] { return !deletion_gate.running; });
  }

  struct DeletionRun {
    EngineId id;
    enum class Phase { kKv, kDatabase, kRest } phase = Phase::kKv;
    std::string errors;  // of the phases so far, "; "-separated
    int chunks = 0;
  };

  // On the deletions strand: one chunk of `run`, then the next one queued behind the other
  // deletions' (or the end handed to the loop).
  void DeletionChunk(DeletionRun run) {
    {
      std::lock_guard lock(deletion_gate.mu);
      if (deletion_gate.stopped) return;  // the live key stays: the next start finishes it
      deletion_gate.running = true;
    }
    const ByteView actor = run.id.bytes();
    auto note = [&run](const Error& e) {
      run.errors += (run.errors.empty() ? "" : "; ") + e.ToString();
    };
    bool ended = false;
    ++run.chunks;
    switch (run.phase) {
      case DeletionRun::Phase::kKv:
      case DeletionRun::Phase::kDatabase: {
        const bool kv = run.phase == DeletionRun::Phase::kKv;
        Result<bool> done =
            kv ? engine.actor_kv().DropSome(actor) : engine.page_store().DeleteSome(actor);
        if (!done.has_value()) note(done.error());
        if (!done.has_value() || *done) {
          run.phase = kv ? DeletionRun::Phase::kDatabase : DeletionRun::Phase::kRest;
        }
        break;
      }
      case DeletionRun::Phase::kRest: {
        const bool data_deleted = run.errors.empty();
        Status rest = storage::RunTransaction(engine.store(), [&](storage::KvTxn& txn) -> Status {
          KEEL_RETURN_IF_ERROR(
              txn.DeleteRange(storage::KeyRange::Prefix(keys::ActorHibernating(actor))));
          return data_deleted ? txn.Delete(keys::Live(actor)) : Status{};
        });
        if (!rest.has_value()) note(rest.error());
        ended = true;
        break;
      }
    }
    {
      std::lock_guard lock(deletion_gate.mu);
      deletion_gate.running = false;
    }
    deletion_gate.cv.notify_all();
    if (ended) {
      Post([this, run = std::move(run)] { FinishDeletion(run); });
    } else {
      deletions->Post([this, run = std::move(run)]() mutable { DeletionChunk(std::move(run)); });
    }
  }

  void FinishDeletion(const DeletionRun& run) {
    const EngineId& id = run.id;
    deleting.erase(id);
    if (run.errors.empty()) {
      const bool retried = deletion_attempts.erase(id) != 0;
      const LogLevel level =
          retried || run.chunks > kQuietDeletionChunks ? LogLevel::kInfo : LogLevel::kDebug;
      if (LogEnabled(level)) {
        Log(level, kLog, "destroyed actor's data deleted",
            {{"actor", id.ToString()}, {"chunks", std::to_string(run.chunks)}});
      }
    } else {
      KEEL_LOG(kError, kLog, "destroy could not delete all actor data",
               {{"actor", id.ToString()}, {"error", run.errors}});
      ScheduleDeletionRetry(id);
    }
    // The destroy is complete (actors.md §6.9: its REST call waits for the deletion).
    if (auto it = actors.find(id); it != actors.end()) {
      for (auto& done : it->second->TakeDestroyWaiters()) done(Status{});
      it->second->Settle();
      MaybeEvict(id);
    }
    if (deleting.empty()) {
      auto settled = std::move(deletions_settled);
      deletions_settled.clear();
      for (auto& done : settled) done();
    }
  }

  // A failed deletion's next try (RetryDeletion), backing off from data_deletion_retry_ms
  // to kMaxDeletionRetryMs, while this engine runs.
  void ScheduleDeletionRetry(const EngineId& id) {
    const int64_t base = engine.options().data_deletion_retry_ms;
    if (base <= 0 || engine.shutting_down()) {
      deletion_attempts.erase(id);
      return;
    }
    int& attempts = deletion_attempts[id];
    int64_t delay = base;
    for (int i = 0; i < attempts && delay < kMaxDeletionRetryMs; ++i) delay *= 2;
    delay = std::min(delay, kMaxDeletionRetryMs);
    ++attempts;
    KEEL_LOG(kWarn, kLog, "actor data deletion retried later",
             {{"actor", id.ToString()},
              {"attempt", std::to_string(attempts)},
              {"in_ms", std::to_string(delay)}});
    engine.clock().ScheduleAfter(std::chrono::milliseconds(delay),
                                 [this, id] { Post([this, id] { RetryDeletion(id); }); });
  }

  void RetryDeletion(const EngineId& id) {
    if (!deletion_attempts.contains(id)) return;
    auto entry = Entry(id);
    if (!entry.has_value()) {
      KEEL_LOG(kError, kLog, "could not read a destroyed actor to delete its data",
               {{"actor", id.ToString()}, {"error", entry.error().ToString()}});
      ScheduleDeletionRetry(id);
      return;
    }
    if ((*entry)->wf.transition != orch::Transition::kDestroyed) {
      deletion_attempts.erase(id);
      return;
    }
    StartDeletion(id);
    MaybeEvict(id);
  }

  void Publish(ActorEntry& e, const orch::fx::Publish& p) {
    switch (p.notice) {
      case orch::fx::Notice::kReady: {
        auto session = LiveSession(e.ns, e.wf.envoy_key);
        if (session == nullptr) break;
        for (auto& w : e.TakeWaiters()) {
          engine.clock().Cancel(w.timer);
          w.done(ActorTarget{session, e.wf.generation});
        }
        break;
      }
      case orch::fx::Notice::kStopped: {
        // A generation that stopped without a Running event never handled a request sent
        // to it early: the gateway sends those again.
        engine.gateway().OnActorStopped(
            e.id, e.stopped_unstarted != 0 ? std::optional(e.stopped_unstarted) : std::nullopt);
        // Waiting requests re-wake the actor (actors.md §5.6), at most max_rewakes times.
        std::vector<Waiter> keep;
        for (auto& w : e.TakeWaiters()) {
          if (++w.rewakes > engine.options().max_rewakes) {
            engine.clock().Cancel(w.timer);
            w.done(Unexpected{WaitFailed(
                "service_unavailable", "the actor kept stopping while the request waited.", e.wf)});
          } else {
            keep.push_back(std::move(w));
          }
        }
        if (!keep.empty()) {
          e.More().waiters = std::move(keep);
          EngineId id = e.id;
          Post([this, id] {
            auto entry = Entry(id);
            if (entry.has_value()) StepActor(**entry, orch::in::Wake{});
          });
        }
        break;
      }
      case orch::fx::Notice::kFailed:
        // Keel keeps waiting: an envoy may connect within the ready timeout (fast
        // recovery); the timeout answer carries this error.
        break;
      case orch::fx::Notice::kDestroyStarted: {
        for (auto& w : e.TakeWaiters()) {
          engine.clock().Cancel(w.timer);
          w.done(Unexpected{Error{"actor", "destroyed_while_waiting_for_ready",
                                  "The actor was destroyed while waiting for it to be ready."}});
        }
        break;
      }
      case orch::fx::Notice::kDestroyComplete: {
        if (deleting.contains(e.id)) break;  // answered when the deletion ends
        for (auto& done : e.TakeDestroyWaiters()) done(Status{});
        break;
      }
    }
  }

  // Files the machine's deadline in `deadlines`; sleeping actors use the alarm index.
  void Rearm(ActorEntry& e) {
    std::optional<int64_t> deadline;
    if (!AtRest(e.wf.transition)) deadline = orch::NextDeadline(e.wf);
    if (e.wf.transition == orch::Transition::kSleeping && e.wf.alarm_ts.has_value()) {
      ScheduleAlarmScan(*e.wf.alarm_ts);
    }
    const int64_t at = deadline.value_or(kNoDeadline);
    if (at == e.timer_at) return;
    Disarm(e);
    if (!deadline.has_value()) return;
    e.timer_at = at;
    deadlines.emplace(at, e.id);
    ScheduleDeadlineTimer();
  }

  void Disarm(ActorEntry& e) {
    if (e.timer_at == kNoDeadline) return;
    deadlines.erase(std::make_pair(e.timer_at, e.id));
    e.timer_at = kNoDeadline;
  }

  // Keeps the engine-wide timer at (or before) the earliest filed deadline.
  void ScheduleDeadlineTimer() {
    if (deadlines.empty()) return;  // a pending timer then finds nothing due
    const int64_t at = deadlines.begin()->first;
    if (deadline_timer != TimerId{} && deadline_timer_at <= at) return;
    if (deadline_timer != TimerId{}) engine.clock().Cancel(deadline_timer);
    deadline_timer_at = at;
    const uint64_t seq = ++deadline_timer_seq;
    deadline_timer = engine.clock().ScheduleAfter(
        TimerDelay(at, Now()), [this, seq] { Post([this, seq] { OnDeadlines(seq); }); });
  }

  // Steps every actor whose deadline has come (Tick), then re-arms for the next one.
  void OnDeadlines(uint64_t seq) {
    if (seq == deadline_timer_seq) {
      deadline_timer = TimerId{};
      deadline_timer_at = 0;
    }
    const int64_t now = Now();
    std::vector<EngineId> due;
    while (!deadlines.empty() && deadlines.begin()->first <= now) {
      const EngineId id = deadlines.begin()->second;
      deadlines.erase(deadlines.begin());
      auto it = actors.find(id);
      if (it != actors.end()) it->second->timer_at = kNoDeadline;
      due.push_back(id);
    }
    for (const auto& id : due) OnActorTimer(id);
    ScheduleDeadlineTimer();
  }

  void OnActorTimer(const EngineId& id) {
    auto it = actors.find(id);
    if (it == actors.end()) return;
    ActorEntry& e = *it->second;
    std::optional<int64_t> deadline = orch::NextDeadline(e.wf);
    if (deadline.has_value() && *deadline > Now()) {
      Rearm(e);
      return;
    }
    StepActor(e, orch::in::Tick{});
  }

  void MaybeEvict(const EngineId& id) {
    auto it = actors.find(id);
    if (it == actors.end()) return;
    ActorEntry& e = *it->second;
    if (!AtRest(e.wf.transition) || e.HasWaiters() || e.HasDestroyWaiters()) return;
    Disarm(e);
    CountState(e.wf.transition, -1);
    actors.erase(it);
  }

  // ---- alarms of sleeping actors (one engine-wide timer over the 07 index) ---------------

  void ScheduleAlarmScan(int64_t at) {
    if (alarm_timer != TimerId{} && alarm_timer_at <= at) return;
    if (alarm_timer != TimerId{}) engine.clock().Cancel(alarm_timer);
    KEEL_LOG(kDebug, kLog, "alarm scan scheduled", {{"at", std::to_string(at)}});
    alarm_timer_at = at;
    alarm_timer = engine.clock().ScheduleAfter(TimerDelay(at, Now()),
                                               [this] { Post([this] { ScanAlarms(); }); });
  }

  void ScanAlarms() {
    alarm_timer = TimerId{};
    alarm_timer_at = 0;
    const int64_t now = Now();
    Bytes end = keys::AlarmPrefix();
    keys::AppendTs(end, now + 1);
    auto due = engine.store().Scan(storage::KeyRange{keys::AlarmPrefix(), end},
                                   storage::ScanOptions{.limit = kAlarmScanBatch});
    if (!due.has_value()) {
      KEEL_LOG(kError, kLog, "alarm scan failed", {{"error", due.error().ToString()}});
      ScheduleAlarmScan(now + 1000);
      return;
    }
    KEEL_LOG(kDebug, kLog, "alarm scan", {{"due", std::to_string(due->size())}});
    for (const auto& kv : *due) {
      ByteView rest = ByteView(kv.key).subspan(1);
      int64_t ts = 0;
      if (!keys::ReadTs(rest, ts)) continue;
      auto id = EngineId::FromBytes(rest);
      if (!id.has_value()) continue;
      auto entry = Entry(*id);
      if (!entry.has_value()) continue;
      StepActor(**entry, orch::in::Tick{});
    }
    if (due->size() == kAlarmScanBatch) {
      ScheduleAlarmScan(now);
      return;
    }
    auto next = engine.store().ScanPrefix(keys::AlarmPrefix(), storage::ScanOptions{.limit = 1});
    KEEL_LOG(kDebug, kLog, "next alarm",
             {{"found", next.has_value() ? std::to_string(next->size()) : next.error().ToString()}});
    if (next.has_value() && !next->empty()) {
      ByteView rest = ByteView(next->front().key).subspan(1);
      int64_t ts = 0;
      // An entry that stays due (its actor could not leave Sleeping) is retried in a second.
      if (keys::ReadTs(rest, ts)) ScheduleAlarmScan(std::max(ts, now + 1000));
    }
  }

  // ---- envoys ----------------------------------------------------------------------

  void ReplayCommands(EnvoySession& session) {
    const ByteView ns = session.namespace_id().bytes();
    auto stored = engine.store().ScanPrefix(keys::EnvoyCommands(ns, session.envoy_key()));
    if (!stored.has_value()) {
      session.CloseWith(Error{"core", "internal_error", stored.error().ToString()});
      return;
    }
    const size_t prefix = keys::EnvoyCommands(ns, session.envoy_key()).size();
    latest::ToEnvoyCommands batch;
    for (const auto& kv : *stored) {
      ByteView rest = ByteView(kv.key).subspan(prefix);
      if (rest.size() != EngineId::kByteSize + 4 + 8) continue;
      auto id = EngineId::FromBytes(rest.subspan(0, EngineId::kByteSize));
      rest = rest.subspan(EngineId::kByteSize);
      uint32_t generation = 0;
      uint64_t index = 0;
      if (!id.has_value() || !keys::ReadU32(rest, generation) || !keys::ReadU64(rest, index)) {
        continue;
      }
      auto data = protocol::envoy::DecodeActorCommandKeyDataFramed(kv.value);
      if (!data.has_value()) {
        KEEL_LOG(kError, kLog, "skipping an unreadable stored command",
                 {{"actor", id->ToString()}, {"error", data.error().ToString()}});
        continue;
      }
      latest::CommandWrapper w;
      w.checkpoint = latest::ActorCheckpoint{id->ToString(), generation,
                                             static_cast<int64_t>(index)};
      if (auto* start = std::get_if<latest::CommandStartActor>(&data->value.value)) {
        w.inner = std::move(*start);
      } else {
        w.inner = std::get<latest::CommandStopActor>(data->value.value);
      }
      batch.value.push_back(std::move(w));
    }
    if (!batch.value.empty()) session.Send(latest::ToEnvoy{std::move(batch)});
  }

  // Writes the envoy's durable record for a new connection; `stored` gets what was written.
  Status StoreEnvoyRecord(EnvoySession& session, rec::EnvoyRecord& stored) {
    const auto& p = session.params();
    return storage::RunTransaction(engine.store(), [&](storage::KvTxn& txn) -> Status {
      Bytes key = keys::EnvoyRecord(session.namespace_id().bytes(), p.envoy_key);
      KEEL_ASSIGN_OR_RETURN(auto existing, txn.Get(key));
      rec::EnvoyRecord record;
      if (existing.has_value()) {
        KEEL_ASSIGN_OR_RETURN(record, ReadRecord<rec::EnvoyRecord>(*existing));
      } else {
        record.create_ts = Now();
      }
      record.pool_name = p.pool_name;
      record.version = p.version;
      record.protocol_version = p.protocol_version;
      record.last_connected_ts = Now();
      record.stop_ts.reset();
      stored = record;
      return txn.Put(key, WriteRecord(record));
    });
  }

  void RetryPendingAllocations(const EngineId& ns, const std::string& pool) {
    std::vector<EngineId> pending;
    for (const auto& [id, e] : actors) {
      if (e->ns == ns && e->record.pool_name == pool &&
          e->wf.transition == orch::Transition::kReallocating) {
        pending.push_back(id);
      }
    }
    for (const auto& id : pending) {
      auto it = actors.find(id);
      if (it != actors.end()) StepActor(*it->second, orch::in::PoolCapacityAvailable{});
    }
  }

  // actors.md §6.11 drain_on_version_upgrade: a newer envoy version in the pool drains
  // the older envoys — no new actors for them, and their actors move (GOING_AWAY).
  void DrainOlderVersions(const EnvoyEntry& newer) {
    std::optional<Pool> pool = engine.catalog().FindPool(newer.ns, newer.pool);
    if (!pool.has_value() || !pool->config.drain_on_version_upgrade) return;
    std::vector<std::string> older;
    for (auto& [key, env] : envoys) {
      if (!(env.ns == newer.ns) || env.pool != newer.pool || env.key == newer.key) continue;
      if (env.session == nullptr || env.stopping || env.version >= newer.version) continue;
      env.stopping = true;
      MarkStopped(env);
      older.push_back(env.key);
    }
    for (const auto& key : older) {
      KEEL_LOG(kInfo, kLog, "draining an older envoy version",
               {{"envoy_key", key}, {"newer", newer.key}});
      StepHosted(newer.ns, key, orch::in::EnvoyStopping{key});
    }
  }

  // The envoy is gone or going (GET /envoys stop_ts): the first such moment counts.
  void MarkStopped(EnvoyEntry& env) {
    if (!env.stop_ts.has_value()) env.stop_ts = Now();
  }

  // Forgets stopped envoys that nothing needs any more: disconnected, hosting no actor,
  // and stopped longer than stopped_envoy_retention_ms ago or beyond the max_stopped_envoys
  // most recently stopped (entries only known from hosting, never connected, go as soon as
  // they host nothing). The durable record of a forgotten envoy goes with it, so a pool
  // whose envoys come and go (every serverless start is a new envoy key) does not grow the
  // store; a reconnect later writes a new one. Call only where no EnvoyEntry reference is
  // held.
  void PruneStoppedEnvoys() {
    const int64_t now = Now();
    const EngineOptions& o = engine.options();
    std::vector<std::pair<int64_t, EnvoyKey>> stopped;
    std::vector<EnvoyKey> forgotten;  // with a durable record (they connected: a pool)
    for (auto it = envoys.begin(); it != envoys.end();) {
      const EnvoyEntry& env = it->second;
      if (env.session != nullptr || !env.hosted.empty()) {
        ++it;
        continue;
      }
      if (env.pool.empty() || !env.stop_ts.has_value() ||
          now - *env.stop_ts > o.stopped_envoy_retention_ms) {
        if (!env.pool.empty()) forgotten.push_back(it->first);
        it = envoys.erase(it);
        continue;
      }
      stopped.emplace_back(*env.stop_ts, it->first);
      ++it;
    }
    if (stopped.size() > o.max_stopped_envoys) {
      std::sort(stopped.begin(), stopped.end());
      for (size_t i = 0; i < stopped.size() - o.max_stopped_envoys; ++i) {
        envoys.erase(stopped[i].second);
        forgotten.push_back(std::move(stopped[i].second));
      }
    }
    if (forgotten.empty()) return;
    Status deleted = storage::RunTransaction(engine.store(), [&](storage::KvTxn& txn) -> Status {
      for (const auto& [ns, key] : forgotten) {
        KEEL_RETURN_IF_ERROR(txn.Delete(keys::EnvoyRecord(ns.bytes(), key)));
      }
      return {};
    });
    if (!deleted.has_value()) {
      // Kept: the next engine start loads them as stopped envoys and forgets them again.
      KEEL_LOG(kWarn, kLog, "could not delete the records of forgotten envoys",
               {{"envoys", std::to_string(forgotten.size())},
                {"error", deleted.error().ToString()}});
    }
  }

  void StepHosted(const EngineId& ns, const std::string& key, const orch::Input& input) {
    EnvoyEntry* env = FindEnvoy(ns, key);
    if (env == nullptr) return;
    std::vector<EngineId> hosted(env->hosted.begin(), env->hosted.end());
    for (const auto& id : hosted) {
      auto entry = Entry(id);
      if (entry.has_value()) StepActor(**entry, input);
    }
  }
};

// ---- public surface ----------------------------------------------------------------------

Orchestrator::Orchestrator(Engine& engine) : impl_(std::make_unique<Impl>(engine)) {}

Orchestrator::~Orchestrator() = default;

Status Orchestrator::Load() {
  // Everything in Impl is confined to the loop, the resumption too: a timer armed here can
  // fire at once, and its work must not race with the rest of the resumption.
  std::promise<Status> done;
  impl_->Post([this, &done] { done.set_value(LoadOnLoop()); });
  return done.get_future().get();
}

Status Orchestrator::LoadOnLoop() {
  Impl& m = *impl_;
  KEEL_ASSIGN_OR_RETURN(auto live, m.engine.store().ScanPrefix(keys::LivePrefix()));
  std::vector<EngineId> created;
  std::vector<EngineId> destroyed;
  for (const auto& kv : live) {
    auto id = EngineId::FromBytes(ByteView(kv.key).subspan(1));
    if (!id.has_value()) continue;
    auto entry = m.Entry(*id);
    if (!entry.has_value()) {
      KEEL_LOG(kError, kLog, "could not resume an actor",
               {{"actor", id->ToString()}, {"error", entry.error().ToString()}});
      continue;
    }
    Impl::ActorEntry& e = **entry;
    if (e.wf.transition == orch::Transition::kDestroyed) {
      destroyed.push_back(*id);  // its data deletion did not finish: not a live actor
      continue;
    }
    if (e.wf.slot_held) {
      std::optional<Pool> pool = m.engine.catalog().FindPool(e.ns, e.record.pool_name);
      if (pool.has_value() && pool->serverless()) ++m.serverless_slots[{e.ns, e.record.pool_name}];
    }
    m.UpdateHosting(e, "");
    m.Rearm(e);
    if (e.wf.transition == orch::Transition::kCreated) created.push_back(*id);
  }
  // The startup sweep (docs/storage.md §3.8): an engine died during a destroy's data
  // deletion, or the deletion failed. It is finished in the background from now, while the
  // engine serves, and the entry evicted as after a destroy; a deletion that fails again
  // leaves the actor in the live set, to be retried while this engine runs and at the next
  // start.
  for (const auto& id : destroyed) {
    if (!m.actors.contains(id)) continue;
    m.StartDeletion(id);
    m.MaybeEvict(id);
  }
  // An actor stored before its first allocation (only written by engines before the
  // creation and the first allocation became one transaction) is allocated now; without
  // envoys yet it waits for capacity (kReallocating) like any failed allocation.
  for (const auto& id : created) {
    auto it = m.actors.find(id);
    if (it != m.actors.end()) m.StepActor(*it->second, orch::in::Create{});
  }
  // The envoys that connected to an earlier engine run (their durable records): listed as
  // stopped (GET /envoys) from now, when this engine found them disconnected, and forgotten
  // with their records like any stopped envoy (PruneStoppedEnvoys); one that reconnects
  // keeps its create_ts.
  KEEL_ASSIGN_OR_RETURN(auto envoy_records, m.engine.store().ScanPrefix(keys::EnvoysPrefix()));
  for (const auto& kv : envoy_records) {
    ByteView ns_bytes;
    std::string envoy_key;
    if (!keys::ParseEnvoyRecordKey(kv.key, ns_bytes, envoy_key)) continue;  // a command
    auto ns = EngineId::FromBytes(ns_bytes);
    auto record = ReadRecord<rec::EnvoyRecord>(kv.value);
    if (!ns.has_value() || !record.has_value()) {
      KEEL_LOG(kWarn, kLog, "skipping an unreadable envoy record", {{"envoy_key", envoy_key}});
      continue;
    }
    Impl::EnvoyEntry& env = m.envoys[EnvoyKey(*ns, envoy_key)];
    env.ns = *ns;
    env.key = envoy_key;
    env.pool = record->pool_name;
    env.version = record->version;
    env.protocol_version = record->protocol_version;
    env.create_ts = record->create_ts;
    env.last_connected_ts = record->last_connected_ts;
    env.metadata = record->metadata;
    env.stop_ts = m.Now();
  }
  m.PruneStoppedEnvoys();  // beyond max_stopped_envoys
  // The envoys hosting resumed actors get the lost threshold from now to reconnect, as if
  // they had pinged at the restart: a restart is not the envoy's fault (§3.5).
  for (auto& [key, env] : m.envoys) {
    if (env.last_ping_ms == 0) env.last_ping_ms = m.Now();
  }
  auto first_alarm =
      m.engine.store().ScanPrefix(keys::AlarmPrefix(), storage::ScanOptions{.limit = 1});
  KEEL_RETURN_IF_ERROR(first_alarm);
  if (!first_alarm->empty()) {
    ByteView rest = ByteView(first_alarm->front().key).subspan(1);
    int64_t ts = 0;
    if (keys::ReadTs(rest, ts)) m.ScheduleAlarmScan(ts);
  }
  KEEL_LOG(kInfo, kLog, "orchestrator resumed",
           {{"live_actors", std::to_string(live.size() - destroyed.size())},
            {"destroyed_actors_data_to_delete", std::to_string(destroyed.size())}});
  return {};
}

void Orchestrator::Create(CreateActorRequest request,
                          std::function<void(Result<std::pair<ActorInfo, bool>>)> done) {
  impl_->Post([this, request = std::move(request), done = std::move(done)]() mutable {
    Impl& m = *impl_;
    if (!m.engine.catalog().FindPool(request.namespace_id, request.pool_name).has_value()) {
      done(Unexpected{Error{"actor", "no_runner_config_configured",
                            "no runner config named '" + request.pool_name +
                                "' in this namespace"}});
      return;
    }
    const ByteView ns = request.namespace_id.bytes();
    if (request.key.has_value()) {
      auto existing = FindByKey(request.namespace_id, request.name, *request.key);
      if (!existing.has_value()) {
        done(Unexpected{existing.error()});
        return;
      }
      if (existing->has_value()) {
        if (!request.get_or_create) {
          // The id ends the message: the REST API's error metadata reads it from there.
          done(Unexpected{Error{"actor", "duplicate_key",
                                "an actor with this name and key already exists: " +
                                    (*existing)->ToString()}});
          return;
        }
        auto info = Read(**existing);
        if (!info.has_value()) {
          done(Unexpected{info.error()});
          return;
        }
        done(std::make_pair(std::move(*info), false));
        return;
      }
    }
    auto entry = std::make_unique<Impl::ActorEntry>();
    entry->id = EngineId::Generate(m.random, m.engine.options().datacenter_label);
    entry->ns = request.namespace_id;
    entry->wf.alloc_run = m.engine.run();  // no earlier run can have started it
    entry->record.namespace_id = ToBytes(ns);
    entry->record.name = request.name;
    entry->record.key = request.key;
    entry->record.pool_name = request.pool_name;
    entry->record.crash_policy = request.crash_policy;
    entry->record.input = std::move(request.input);
    entry->record.create_ts = m.Now();
    const ByteView actor = entry->id.bytes();
    Bytes record = WriteRecord(entry->record);
    // The creation and the first allocation are one transaction (docs/storage.md §3.6
    // "Create and first start"): the records, the key reservation and the workflow after
    // Step(Create) — kStarting with its start command stored, or kReallocating — commit
    // together, so the start command is sent after one synced commit instead of two, and
    // no crash can leave a created actor that was never allocated.
    Impl::StepContext ctx(m, *entry);
    auto prepared = m.PrepareStep(*entry, orch::in::Create{}, ctx, /*fresh=*/true);
    if (prepared.has_value() && !prepared->has_value()) {
      ctx.Undo();
      done(Unexpected{prepared->error()});
      return;
    }
    Impl::PreparedStep* step = prepared.has_value() ? &**prepared : nullptr;
    // Early start (docs/engine.md): the start leaves before the creation is durable; the
    // creator's answer waits for the sync.
    std::shared_ptr<EnvoySession> early =
        step != nullptr ? m.EarlyStartSession(*entry, *step) : nullptr;
    storage::CommitOptions options;
    options.sync = early == nullptr;
    bool duplicate = false;
    bool id_taken = false;
    Status stored = storage::RunTransaction(
        m.engine.store(),
        [&](storage::KvTxn& txn) -> Status {
          duplicate = false;
          id_taken = false;
          // The id must be new. Drawn at random it is, unless a run repeats an earlier
          // run's seed (EngineOptions::seed) on the same store, whose actors (destroyed
          // ones included: their records stay) then hold the ids this run draws.
          KEEL_ASSIGN_OR_RETURN(auto taken, txn.Get(keys::ActorRecord(actor)));
          if (taken.has_value()) {
            id_taken = true;
            return {};
          }
          if (request.key.has_value()) {
            Bytes index = keys::ActorByKey(ns, request.name, *request.key);
            KEEL_ASSIGN_OR_RETURN(auto owner, txn.Get(index));
            if (owner.has_value()) {
              duplicate = true;
              return {};
            }
            KEEL_RETURN_IF_ERROR(txn.Put(index, ToBytes(actor)));
          }
          KEEL_RETURN_IF_ERROR(txn.Put(keys::ActorRecord(actor), record));
          KEEL_RETURN_IF_ERROR(txn.Put(
              keys::ActorByName(ns, request.name, entry->record.create_ts, actor), Bytes{}));
          Bytes name_key = keys::ActorName(ns, request.name);
          KEEL_ASSIGN_OR_RETURN(auto name, txn.Get(name_key));
          if (!name.has_value()) {
            KEEL_RETURN_IF_ERROR(txn.Put(name_key, WriteRecord(rec::ActorNameRecord{"{}"})));
          }
          if (step != nullptr) return m.WriteStep(txn, *entry, *step);
          // Step(Create) always changes a kCreated workflow; kept for safety.
          KEEL_RETURN_IF_ERROR(
              txn.Put(keys::ActorWorkflow(actor), orch::EncodeWorkflow(entry->wf)));
          return txn.Put(keys::Live(actor), Bytes{});
        },
        storage::kDefaultMaxAttempts, options);
    if (!stored.has_value() || duplicate || id_taken) ctx.Undo();
    if (!stored.has_value()) {
      done(Unexpected{stored.error()});
      return;
    }
    if (duplicate || id_taken) {
      // Another engine node won the key between our lookup and the transaction, or the
      // id was an earlier run's: again, with a new id.
      if (id_taken) {
        KEEL_LOG(kWarn, kLog, "a new actor's id is taken: drawing another",
                 {{"actor", entry->id.ToString()}});
      }
      Create(std::move(request), std::move(done));
      return;
    }
    Impl::ActorEntry* e = entry.get();
    m.actors.emplace(e->id, std::move(entry));
    m.CountState(e->wf.transition, +1);
    KEEL_LOG(kInfo, kLog, "actor created",
             {{"actor", e->id.ToString()}, {"name", e->record.name}});
    const EngineId id = e->id;
    // After an early start the creator hears back once the creation is durable (the sync
    // runs while the runtime starts the instance); `info` is filled in below first. A
    // creator that reveals the actor only through its held answers hears back at once.
    const bool wait_for_sync = early != nullptr && !request.answer_before_durable;
    auto answer = std::make_shared<std::optional<ActorInfo>>();
    if (early != nullptr) {
      std::function<void(Status)> then;
      if (wait_for_sync) {
        then = [answer, done = std::move(done)](Status synced) mutable {
          if (!synced.has_value()) {
            done(Unexpected{synced.error()});
          } else {
            done(std::make_pair(std::move(**answer), true));
          }
        };
      }
      m.HoldUntilStartIsDurable(*e, *early, step->next.generation, std::move(then));
    }
    if (step != nullptr) m.ApplyStep(*e, *step);  // may evict the entry
    auto it = m.actors.find(id);
    auto info = it != m.actors.end()
                    ? ActorInfo{id, it->second->record, it->second->wf}
                    : ActorInfo{id, rec::ActorRecord{}, orch::ActorWorkflow{}};
    if (it == m.actors.end()) {
      // Evicted at once (at rest); read back what was stored.
      auto read = Read(id);
      if (read.has_value()) info = std::move(*read);
    }
    m.MaybeEvict(id);
    if (wait_for_sync) {
      *answer = std::move(info);
    } else {
      done(std::make_pair(std::move(info), true));
    }
  });
}

Result<std::optional<EngineId>> Orchestrator::FindByKey(const EngineId& ns, std::string_view name,
                                                        std::string_view key) {
  KEEL_ASSIGN_OR_RETURN(auto owner,
                        impl_->engine.store().Get(keys::ActorByKey(ns.bytes(), name, key)));
  if (!owner.has_value()) return std::optional<EngineId>();
  KEEL_ASSIGN_OR_RETURN(EngineId id, EngineId::FromBytes(*owner));
  return std::optional<EngineId>(id);
}

Result<ActorInfo> Orchestrator::Read(const EngineId& actor) {
  KEEL_ASSIGN_OR_RETURN(auto entry, impl_->ReadEntry(actor));
  return ActorInfo{entry->id, std::move(entry->record), std::move(entry->wf)};
}

namespace {

// Runs `fn(entry)` on the loop for an existing, non-destroyed actor of namespace `ns`.
template <typename Impl, typename Fn>
void WithActor(Impl& m, const EngineId& ns, const EngineId& actor,
               std::function<void(Status)> done, Fn fn) {
  m.Post([&m, ns, actor, done = std::move(done), fn = std::move(fn)]() mutable {
    auto entry = m.Entry(actor);
    if (!entry.has_value()) {
      done(Unexpected{entry.error()});
      return;
    }
    if (!((*entry)->ns == ns) || (*entry)->wf.destroyed) {
      m.MaybeEvict(actor);
      done(Unexpected{NotFound()});
      return;
    }
    fn(**entry, std::move(done));
  });
}

}  // namespace

void Orchestrator::StopDataDeletions(std::function<void()> done) {
  impl_->Post([&m = *impl_, done = std::move(done)] {
    m.HaltDeletions();
    // Their destroys are committed, so those waiting for them are answered; the rest of
    // their data is deleted at the next start.
    for (const EngineId& id : m.deleting) {
      auto it = m.actors.find(id);
      if (it == m.actors.end()) continue;
      for (auto& answer : it->second->TakeDestroyWaiters()) answer(Status{});
      it->second->Settle();
    }
    if (!m.deleting.empty()) {
      KEEL_LOG(kInfo, kLog,
               "destroyed actors' data deletions stopped: the next start finishes them",
               {{"actors", std::to_string(m.deleting.size())}});
    }
    done();
  });
}

void Orchestrator::WhenDataDeletionsSettle(std::function<void()> done) {
  impl_->Post([&m = *impl_, done = std::move(done)]() mutable {
    if (m.deleting.empty()) {
      done();
    } else {
      m.deletions_settled.push_back(std::move(done));
    }
  });
}

void Orchestrator::Destroy(const EngineId& ns, const EngineId& actor,
                           std::function<void(Status)> done) {
  Impl& m = *impl_;
  WithActor(m, ns, actor, std::move(done),
            [&m](Impl::ActorEntry& e, std::function<void(Status)> done) {
              e.More().destroy_waiters.push_back(std::move(done));
              const EngineId id = e.id;
              m.StepActor(e, orch::in::Destroy{});
              m.MaybeEvict(id);
            });
}

void Orchestrator::Sleep(const EngineId& ns, const EngineId& actor,
                         std::function<void(Status)> done) {
  Impl& m = *impl_;
  WithActor(m, ns, actor, std::move(done),
            [&m](Impl::ActorEntry& e, std::function<void(Status)> done) {
              const EngineId id = e.id;
              m.StepActor(e, orch::in::Sleep{});
              m.MaybeEvict(id);
              done(Status{});
            });
}

void Orchestrator::Reschedule(const EngineId& ns, const EngineId& actor,
                              std::function<void(Status)> done) {
  Impl& m = *impl_;
  WithActor(m, ns, actor, std::move(done),
            [&m](Impl::ActorEntry& e, std::function<void(Status)> done) {
              const EngineId id = e.id;
              m.StepActor(e, orch::in::Reschedule{});
              m.MaybeEvict(id);
              done(Status{});
            });
}

void Orchestrator::OnServerlessDispatched(const EngineId& actor, uint32_t generation) {
  impl_->Post([this, actor, generation] {
    auto it = impl_->actors.find(actor);
    if (it == impl_->actors.end()) return;
    impl_->StepActor(*it->second, orch::in::Allocated{generation});
  });
}

void Orchestrator::OnServerlessStartFailed(const EngineId& ns, const std::string& pool,
                                           const EngineId& actor, uint32_t generation,
                                           MetadataFailure failure, bool only_untaken) {
  impl_->Post([this, ns, pool, actor, generation, failure = std::move(failure),
               only_untaken]() mutable {
    Impl& m = *impl_;
    auto it = m.actors.find(actor);
    const orch::ActorWorkflow* wf = it == m.actors.end() ? nullptr : &it->second->wf;
    const bool untaken = wf != nullptr && wf->generation == generation &&
                         wf->pool_kind == orch::PoolKind::kServerless &&
                         (wf->transition == orch::Transition::kAllocating ||
                          (wf->transition == orch::Transition::kStarting && wf->envoy_key.empty()));
    if (!untaken && only_untaken) return;  // the envoy has it: its own events tell the rest
    // The actor's copy of the error (its record) is only needed when the step runs.
    std::string pool_error = untaken ? MetadataFailureJson(failure) : std::string();
    // Recorded before the step, so a request the step's Stopped wakes sees it.
    m.engine.pool_metadata().RecordStartFailure(ns, pool, std::move(failure));
    if (untaken) {
      m.StepActor(*it->second, orch::in::ServerlessStartFailed{generation, std::move(pool_error)});
    }
  });
}

void Orchestrator::ForgetPreloadPlans(const EngineId& ns, std::vector<std::string> names) {
  impl_->Post([this, ns, names = std::move(names)] {
    for (const std::string& name : names) impl_->preload_plans.erase(std::make_pair(ns, name));
  });
}

void Orchestrator::OnServerlessDrain(const EngineId& actor, uint32_t generation) {
  impl_->Post([this, actor, generation] {
    auto it = impl_->actors.find(actor);
    if (it == impl_->actors.end()) return;
    impl_->StepActor(*it->second, orch::in::ServerlessDrain{generation});
  });
}

void Orchestrator::RunnerPoolError(const EngineId& actor,
                                   std::function<void(std::optional<MetadataFailure>)> done) {
  impl_->Post([this, actor, done = std::move(done)] {
    Impl& m = *impl_;
    auto it = m.actors.find(actor);
    if (it == m.actors.end()) {
      done(std::nullopt);
      return;
    }
    done(m.engine.pool_metadata().View(it->second->ns, it->second->record.pool_name).error);
  });
}

std::optional<ActorTarget> Orchestrator::FastTarget(const EngineId& actor) const {
  Impl& m = *impl_;
  std::lock_guard lock(m.routes_mu);
  auto it = m.routes.find(actor);
  if (it == m.routes.end() || !it->second.connectable || it->second.envoy_key == nullptr) {
    return std::nullopt;
  }
  auto live = m.live.find(EnvoyKeyView(it->second.ns, *it->second.envoy_key));
  if (live == m.live.end() || live->second->closed()) return std::nullopt;
  return ActorTarget{live->second, it->second.generation};
}

void Orchestrator::WhenReady(const std::optional<EngineId>& ns, const EngineId& actor,
                             bool bypass_connectable, std::function<void(Result<ActorTarget>)> done,
                             bool early_ok) {
  impl_->Post([this, ns, actor, bypass_connectable, early_ok, done = std::move(done)]() mutable {
    Impl& m = *impl_;
    // An actor at rest (evicted ones are) is about to be woken, and its start's commit will
    // want a WAL sync within a few hundred µs: the syncing thread gets up meanwhile.
    if (auto loaded = m.actors.find(actor);
        loaded == m.actors.end() || AtRest(loaded->second->wf.transition)) {
      m.engine.kv_sync().Anticipate(kWakeSyncWindow);
    }
    auto entry = m.Entry(actor);
    if (!entry.has_value()) {
      done(Unexpected{entry.error()});
      return;
    }
    Impl::ActorEntry& e = **entry;
    if ((ns.has_value() && !(e.ns == *ns)) || e.wf.destroyed) {
      m.MaybeEvict(actor);
      done(Unexpected{NotFound()});
      return;
    }
    const bool placed = orch::HasInstance(e.wf.transition) && !e.wf.envoy_key.empty();
    if (placed && (e.wf.connectable || bypass_connectable)) {
      if (auto session = m.LiveSession(e.ns, e.wf.envoy_key)) {
        done(ActorTarget{session, e.wf.generation});
        return;
      }
    }
    if (early_ok) {
      // The request needs the actor: a sleep asked for while it starts is void, as when
      // the request waits (the Wake below).
      if (e.wf.sleep_after_start && m.EarlyTarget(e) != nullptr) {
        m.StepActor(e, orch::in::Wake{});
      }
      if (auto session = m.EarlyTarget(e)) {
        done(ActorTarget{session, e.wf.generation, /*early=*/true});
        return;
      }
    }
    const uint64_t waiter_id = m.next_waiter_id++;
    Impl::Waiter w;
    w.id = waiter_id;
    w.done = std::move(done);
    w.bypass = bypass_connectable;
    w.early = early_ok;
    w.timer = m.engine.clock().ScheduleAfter(
        std::chrono::milliseconds(m.engine.options().actor_ready_timeout_ms),
        [this, actor, waiter_id] {
          impl_->Post([this, actor, waiter_id] {
            Impl& m = *impl_;
            auto it = m.actors.find(actor);
            if (it == m.actors.end()) return;
            if (!it->second->HasWaiters()) return;
            auto& waiters = it->second->transient->waiters;
            for (auto w = waiters.begin(); w != waiters.end(); ++w) {
              if (w->id != waiter_id) continue;
              auto done = std::move(w->done);
              waiters.erase(w);
              it->second->Settle();
              done(Unexpected{WaitFailed("actor_ready_timeout",
                                         "Timed out waiting for actor to become ready.",
                                         it->second->wf)});
              m.MaybeEvict(actor);
              return;
            }
          });
        });
    e.More().waiters.push_back(std::move(w));
    m.StepActor(e, orch::in::Wake{});
  });
}

void Orchestrator::RegisterLive(const std::shared_ptr<EnvoySession>& session) {
  Impl& m = *impl_;
  std::lock_guard lock(m.routes_mu);
  m.live[EnvoyKey(session->namespace_id(), session->envoy_key())] = session;
}

void Orchestrator::OnEnvoyConnected(std::shared_ptr<EnvoySession> session) {
  impl_->Post([this, session = std::move(session)] {
    Impl& m = *impl_;
    if (session->closed()) return;
    const auto& p = session->params();
    EnvoyKey key(session->namespace_id(), p.envoy_key);
    Impl::EnvoyEntry& env = m.envoys[key];
    if (env.session != nullptr && env.session != session) {
      // §3.8: the newer connection evicts the older one; it must not reconnect.
      env.session->CloseWith(Error{"ws", "eviction",
                                   "The websocket has been evicted and should not attempt to "
                                   "reconnect."});
    }
    env.ns = session->namespace_id();
    env.key = p.envoy_key;
    env.pool = p.pool_name;
    env.version = p.version;
    env.protocol_version = p.protocol_version;
    env.session = session;
    env.stopping = false;
    env.stop_ts.reset();
    env.last_ping_ms = m.Now();
    // `live` already names this session (RegisterLive), or a newer one of the same key.
    rec::EnvoyRecord record;
    Status stored = m.StoreEnvoyRecord(*session, record);
    if (!stored.has_value()) {
      session->CloseWith(Error{"core", "internal_error", stored.error().ToString()});
      return;
    }
    env.create_ts = record.create_ts;
    env.last_connected_ts = record.last_connected_ts;
    if (env.metadata_session != session->id()) {
      // Until this connection's ToRivetMetadata arrives: what the envoy last sent.
      env.metadata = record.metadata;
      env.metadata_session = 0;
    }
    m.engine.catalog().NotePoolProtocolVersion(env.ns, env.pool, env.protocol_version);
    m.ReplayCommands(*session);
    m.DrainOlderVersions(env);
    m.RetryPendingAllocations(env.ns, env.pool);
  });
}

void Orchestrator::OnEnvoyClosed(std::shared_ptr<EnvoySession> session) {
  impl_->Post([this, session = std::move(session)] {
    Impl& m = *impl_;
    EnvoyKey key(session->namespace_id(), session->envoy_key());
    Impl::EnvoyEntry* env = m.FindEnvoy(key.first, key.second);
    if (env == nullptr || env->session != session) return;  // evicted or replaced
    env->session = nullptr;
    // §3.8: a connection that ends other than by eviction expires the envoy at once.
    env->last_rtt_ms = session->last_rtt_ms();
    m.MarkStopped(*env);
    {
      std::lock_guard lock(m.routes_mu);
      // A newer connection of the key may already be registered (RegisterLive).
      auto it = m.live.find(key);
      if (it != m.live.end() && it->second == session) m.live.erase(it);
    }
    m.StepHosted(key.first, key.second, orch::in::EnvoyDisconnected{key.second});
    m.PruneStoppedEnvoys();
  });
}

void Orchestrator::OnEnvoyStopping(std::shared_ptr<EnvoySession> session) {
  impl_->Post([this, session = std::move(session)] {
    Impl& m = *impl_;
    Impl::EnvoyEntry* env = m.FindEnvoy(session->namespace_id(), session->envoy_key());
    if (env == nullptr || env->session != session) return;
    env->stopping = true;
    m.MarkStopped(*env);
    m.StepHosted(env->ns, env->key, orch::in::EnvoyStopping{env->key});
  });
}

void Orchestrator::OnEnvoyPing(std::shared_ptr<EnvoySession> session) {
  impl_->Post([this, session = std::move(session)] {
    Impl& m = *impl_;
    Impl::EnvoyEntry* env = m.FindEnvoy(session->namespace_id(), session->envoy_key());
    if (env == nullptr || env->session != session) return;
    env->last_ping_ms = m.Now();
  });
}

void Orchestrator::OnEvents(std::shared_ptr<EnvoySession> session,
                            std::vector<latest::EventWrapper> events) {
  impl_->Post([this, session = std::move(session), events = std::move(events)]() mutable {
    Impl& m = *impl_;
    Impl::EnvoyEntry* env = m.FindEnvoy(session->namespace_id(), session->envoy_key());
    if (env == nullptr || env->session != session) return;  // from an evicted connection
    for (auto& event : events) {
      auto id = EngineId::Parse(event.checkpoint.actor_id);
      if (!id.has_value()) {
        // §3.11: an unparsable actor id in an event ends the connection.
        session->CloseWith(Error{"core", "internal_error",
                                 "invalid actor id in event: " + id.error().message()});
        return;
      }
      auto entry = m.Entry(*id);
      if (!entry.has_value()) {
        // No such actor: an instance whose creation an OS crash took back after its early
        // start (docs/engine.md), or one of an actor gone for good. Other errors: skip it.
        const bool unknown =
            entry.error().group() == "actor" && entry.error().code() == "not_found";
        const auto* update = std::get_if<latest::EventActorStateUpdate>(&event.inner.value);
        const bool stopped = update != nullptr &&
                             std::holds_alternative<latest::ActorStateStopped>(update->state.value);
        if (unknown && !stopped) {
          Impl::SendStrayStop(*session, event.checkpoint.actor_id, event.checkpoint.generation);
        }
        continue;
      }
      Impl::ActorEntry& e = **entry;
      if (!(e.ns == session->namespace_id())) {
        m.MaybeEvict(*id);
        continue;  // an envoy never touches another namespace's actors
      }
      orch::in::Event in;
      in.envoy_key = session->envoy_key();
      in.generation = event.checkpoint.generation;
      in.index = event.checkpoint.index;
      std::visit(
          [&](auto& inner) {
            using T = std::decay_t<decltype(inner)>;
            if constexpr (std::is_same_v<T, latest::EventActorIntent>) {
              if (inner.intent.template is<latest::ActorIntentSleep>()) {
                in.kind = orch::in::IntentSleep{};
              } else {
                in.kind = orch::in::IntentStop{};
              }
            } else if constexpr (std::is_same_v<T, latest::EventActorStateUpdate>) {
              if (const auto* stopped =
                      std::get_if<latest::ActorStateStopped>(&inner.state.value)) {
                in.kind = orch::in::Stopped{stopped->code, stopped->message};
              } else {
                in.kind = orch::in::Running{};
              }
            } else {
              in.kind = orch::in::SetAlarm{inner.alarm_ts};
            }
          },
          event.inner.value);
      // The first event of a serverless generation: its runtime's envoy took the start, a
      // success towards clearing the pool's runner-pool error (recorded before the step
      // publishes Ready).
      if (e.wf.pool_kind == orch::PoolKind::kServerless && orch::HasInstance(e.wf.transition) &&
          e.wf.envoy_key.empty() && in.generation == e.wf.generation) {
        m.engine.pool_metadata().RecordStartSuccess(e.ns, e.record.pool_name);
      }
      const size_t stale_before = e.wf.stale_hosts.size();
      m.StepActor(e, in);
      // A Stopped for an abandoned generation lifts that envoy's exclusion: an actor
      // waiting for capacity retries now rather than at its next backoff tick (2-8 s).
      // After an engine restart the actors' own envoy reconnects and is the only one, and
      // it answers the replayed Stop{LOST} right after it connected.
      auto after = m.actors.find(*id);
      if (after != m.actors.end() &&
          after->second->wf.transition == orch::Transition::kReallocating &&
          after->second->wf.stale_hosts.size() < stale_before) {
        m.StepActor(*after->second, orch::in::PoolCapacityAvailable{});
      }
    }
  });
}

void Orchestrator::OnAckCommands(std::shared_ptr<EnvoySession> session,
                                 std::vector<latest::ActorCheckpoint> checkpoints) {
  impl_->Post([this, session = std::move(session), checkpoints = std::move(checkpoints)] {
    Impl& m = *impl_;
    const ByteView ns = session->namespace_id().bytes();
    for (const auto& cp : checkpoints) {
      if (!EngineId::Parse(cp.actor_id).has_value()) {
        // §3.11: an unparsable actor id in an ack ends the connection.
        session->CloseWith(Error{"core", "internal_error",
                                 "invalid actor id in command ack: " + cp.actor_id});
        return;
      }
    }
    Status s = storage::RunTransaction(m.engine.store(), [&](storage::KvTxn& txn) -> Status {
      for (const auto& cp : checkpoints) {
        auto id = EngineId::Parse(cp.actor_id);
        if (!id.has_value() || cp.index < 0) continue;
        Bytes prefix = keys::EnvoyCommandsOf(ns, session->envoy_key(), id->bytes(),
                                             cp.generation);
        Bytes begin = prefix;
        keys::AppendU64(begin, 0);
        std::optional<Bytes> end;
        if (static_cast<uint64_t>(cp.index) == std::numeric_limits<uint64_t>::max()) {
          end = storage::PrefixEnd(prefix);
        } else {
          Bytes e = prefix;
          keys::AppendU64(e, static_cast<uint64_t>(cp.index) + 1);
          end = std::move(e);
        }
        KEEL_RETURN_IF_ERROR(txn.DeleteRange(storage::KeyRange{std::move(begin), end}));
      }
      return {};
    });
    if (!s.has_value()) {
      KEEL_LOG(kError, kLog, "could not apply command acks", {{"error", s.error().ToString()}});
    }
  });
}

void Orchestrator::OnMetadata(std::shared_ptr<EnvoySession> session,
                              latest::ToRivetMetadata metadata) {
  impl_->Post([this, session = std::move(session), metadata = std::move(metadata)] {
    Impl& m = *impl_;
    const ByteView ns = session->namespace_id().bytes();
    Status s = storage::RunTransaction(m.engine.store(), [&](storage::KvTxn& txn) -> Status {
      if (metadata.prepopulate_actor_names.has_value()) {
        for (const auto& [name, actor_name] : *metadata.prepopulate_actor_names) {
          KEEL_RETURN_IF_ERROR(txn.Put(
              keys::ActorName(ns, name),
              WriteRecord(rec::ActorNameRecord{ObjectJsonOrEmpty(actor_name.metadata)})));
        }
      }
      Bytes key = keys::EnvoyRecord(ns, session->envoy_key());
      KEEL_ASSIGN_OR_RETURN(auto existing, txn.Get(key));
      if (existing.has_value()) {
        KEEL_ASSIGN_OR_RETURN(auto record, ReadRecord<rec::EnvoyRecord>(*existing));
        record.metadata = metadata.metadata.has_value()
                              ? std::optional<std::string>(ObjectJsonOrEmpty(*metadata.metadata))
                              : std::nullopt;
        KEEL_RETURN_IF_ERROR(txn.Put(key, WriteRecord(record)));
      }
      return {};
    });
    if (metadata.prepopulate_actor_names.has_value()) {
      for (const auto& [name, actor_name] : *metadata.prepopulate_actor_names) {
        m.preload_plans.erase(std::make_pair(session->namespace_id(), name));
      }
    }
    // GET /envoys shows the latest connection's metadata: this one's, unless a newer
    // connection of the key replaced it (ids grow). It may be read before the connection
    // registered (OnEnvoyConnected then keeps it).
    if (!session->closed()) {
      Impl::EnvoyEntry& env = m.envoys[EnvoyKey(session->namespace_id(), session->envoy_key())];
      if (env.key.empty()) {
        env.ns = session->namespace_id();
        env.key = session->envoy_key();
      }
      if (env.session == session || (env.session == nullptr ? env.metadata_session <= session->id()
                                                            : env.session->id() < session->id())) {
        env.metadata = metadata.metadata.has_value()
                           ? std::optional<std::string>(ObjectJsonOrEmpty(*metadata.metadata))
                           : std::nullopt;
        env.metadata_session = session->id();
      }
    }
    if (!s.has_value()) {
      // §3.11: a database error in metadata handling ends the connection.
      session->CloseWith(Error{"core", "internal_error", s.error().ToString()});
    }
  });
}

std::optional<uint32_t> Orchestrator::HostedGeneration(const EnvoySession& session,
                                                       const EngineId& actor) const {
  Impl& m = *impl_;
  std::lock_guard lock(m.routes_mu);
  auto it = m.routes.find(actor);
  if (it == m.routes.end()) return std::nullopt;
  const Impl::Route& r = it->second;
  if (!(r.ns == session.namespace_id())) return std::nullopt;
  if (r.envoy_key == nullptr) {
    // A serverless instance not yet bound to an envoy: its pool's live connections.
    if (session.params().pool_name != r.pool || session.closed()) return std::nullopt;
    return r.generation;
  }
  if (*r.envoy_key != session.envoy_key()) return std::nullopt;
  auto live = m.live.find(EnvoyKeyView(r.ns, *r.envoy_key));
  if (live == m.live.end() || live->second.get() != &session) return std::nullopt;
  return r.generation;
}

void Orchestrator::DrainAll(int64_t timeout_ms, std::function<void()> done) {
  impl_->Post([this, timeout_ms, done = std::move(done)]() mutable {
    Impl& m = *impl_;
    std::vector<EnvoyKey> keys_with_session;
    for (auto& [key, env] : m.envoys) {
      env.stopping = true;
      if (env.session != nullptr) {
        m.MarkStopped(env);
        keys_with_session.push_back(key);
      }
    }
    for (const auto& key : keys_with_session) {
      m.StepHosted(key.first, key.second, orch::in::EnvoyStopping{key.second});
    }
    const int64_t deadline = m.Now() + timeout_ms;
    auto poll = std::make_shared<std::function<void()>>();
    *poll = [this, deadline, done = std::move(done), poll]() mutable {
      Impl& m = *impl_;
      bool placed = false;
      for (const auto& [_, env] : m.envoys) {
        if (env.session != nullptr && !env.hosted.empty()) placed = true;
      }
      if (!placed || m.Now() >= deadline) {
        auto finish = std::move(done);
        *poll = nullptr;  // break the self-reference
        finish();
        return;
      }
      m.engine.clock().ScheduleAfter(std::chrono::milliseconds(50), [this, poll] {
        impl_->Post([poll] {
          if (*poll) (*poll)();
        });
      });
    };
    (*poll)();
  });
}

void Orchestrator::CloseAllEnvoys(Error reason, std::function<void()> done) {
  impl_->Post([this, reason = std::move(reason), done = std::move(done)] {
    for (auto& [key, env] : impl_->envoys) {
      if (env.session != nullptr) env.session->CloseWith(reason);
    }
    done();
  });
}

void Orchestrator::ListEnvoys(std::function<void(std::vector<EnvoyView>)> done) {
  impl_->Post([this, done = std::move(done)] {
    impl_->PruneStoppedEnvoys();
    std::vector<EnvoyView> out;
    for (const auto& [key, env] : impl_->envoys) {
      // Only known from hosting (resumed actors of an envoy not yet back): never connected
      // to this engine run.
      if (env.pool.empty() || env.last_connected_ts == 0) continue;
      EnvoyView v;
      v.namespace_id = env.ns;
      v.envoy_key = env.key;
      v.pool_name = env.pool;
      v.version = env.version;
      v.create_ts = env.create_ts;
      v.last_connected_ts = env.last_connected_ts;
      v.stop_ts = env.stop_ts;
      if (!v.stop_ts.has_value() && (env.session == nullptr || env.session->closed())) {
        v.stop_ts = impl_->Now();  // closed, its OnEnvoyClosed still queued
      }
      v.last_ping_ts = env.last_ping_ms;
      v.last_rtt_ms = env.session != nullptr ? env.session->last_rtt_ms() : env.last_rtt_ms;
      v.actors = env.hosted.size();
      v.metadata = env.metadata;
      out.push_back(std::move(v));
    }
    done(std::move(out));
  });
}

std::map<std::string, int64_t> Orchestrator::LoadedActorsByState() const {
  std::lock_guard lock(impl_->routes_mu);
  return impl_->loaded_by_state;
}

}  // namespace keel::engine
