// The orchestrator's per-actor state machine (actors.md §6, envoy-protocol.md §3.5, §3.9,
// §4.1–§4.3, §4.8): a sans-I/O core. The engine driver owns one ActorWorkflow per actor,
// feeds it Inputs through Step() and executes the returned Effects *after* it has durably
// stored the new workflow; it calls Step(Tick) when now >= NextDeadline(). Everything the
// machine needs from the world (time, allocation, envoy liveness) comes through Context.
// Deterministic: the same workflow, input and context answers give the same result.
// Thread-safety: plain functions over caller-owned values; one actor is stepped by one
// strand at a time.
//
// STATE DIAGRAM
//
//   kCreated --Create--> [allocate] ----------------------------------+
//                           |  ok serverless        ok serverful     | failed
//                           v                           v             v
//                      kAllocating --Allocated{g}--> kStarting    kReallocating <-+
//                           |  \__________Running____/   |          | retry ok   | retry
//                           |                  Running   |          +->[allocate]| failed
//                           v                            v          | give up (300 s)
//                      (stop handling) <-- lost ---- kRunning       v
//                                                  /   |   \     kSleeping --Wake/alarm-->
//                                                                             [allocate]
//                                 IntentSleep/Sleep  IntentStop  Reschedule/EnvoyStopping
//                                          v           v           v
//                                    kSleepIntent  kStopIntent  kGoingAway
//                                          \           |           /
//                                           +-- Stopped / lost ---+----> (stop handling)
//
//   Destroy: Running/intents --> kDestroying --Stopped/lost--> [finish destroy] --> kDestroyed
//            Sleeping/Reallocating/Created --> [finish destroy] --> kDestroyed
//            Allocating/Starting --> destroy_after_start (Running => kDestroying)
//   Sleep:   Allocating/Starting --> sleep_after_start (Running => kSleepIntent)
//
// STOP HANDLING (actors.md §6.6), applied when the current instance stops (Stopped event),
// is lost (timer, liveness, fast recovery) — every path releases the slot and publishes
// Stopped — and when an allocation fails:
//
//   cause / state                                        decision
//   ---------------------------------------------------  ------------------------------
//   failed allocation                                    Backoff (kReallocating)
//   kDestroying, or destroy_after_start                  Destroy
//   kSleepIntent with rewake_after_stop                  Reallocate
//   kSleepIntent                                         Sleep
//   kGoingAway                                           Reallocate
//   other state, Stopped{OK}                             Destroy
//   other state, Stopped{ERROR, msg}                     Sleep, error crashed{msg}
//   other state, lost                                    Sleep, error envoy_no_response /
//                                                        envoy_connection_lost (when the
//                                                        envoy is known)
//   (Keel) a failed serverless start decided Sleep       Backoff (kReallocating), or
//   above, no sleep asked for while it started           Sleep once the backoff is spent
//   then: Sleep with the alarm due, or with a wake pending (fast recovery) -> Reallocate;
//         Reallocate = [allocate], which on failure enters kReallocating.
//   Stopped{ERROR, msg} records crashed{msg} whatever the decision (not when destroying).
//
// TRANSITION TABLE (from, input -> to; "—" = ignored, no effects)
//
//   from            input                        to / effects
//   --------------  ---------------------------  -------------------------------------------
//   kCreated        Create                       [allocate]
//   kCreated        Destroy                      [finish destroy] kDestroyed
//   any             [allocate] ok, serverful     kStarting, deadline now+start_ms,
//                                                SendCommand{key, g, 1, Start}
//   any             [allocate] ok, serverless    kAllocating, deadline now+allocation_ms,
//                                                DispatchServerlessStart{g, index 0}
//   any             [allocate] failed            kReallocating (backoff), Publish Failed
//   kAllocating     Allocated{g == generation}   kStarting, deadline now+start_ms
//   kAllocating/    ServerlessStartFailed{g ==   (Keel) lost -> stop handling, where Sleep
//    kStarting      generation}, no event of g   becomes Backoff (kReallocating), or
//                   yet                          kSleeping once the backoff is spent
//   kAllocating/    Event Running                kRunning, connectable, Publish Ready,
//    kStarting                                   liveness deadline now+envoy_lost_ms;
//                                                destroy_after_start: kDestroying +
//                                                Stop{DESTROY}; else sleep_after_start:
//                                                then kSleepIntent + Stop{SLEEP_INTENT}
//   kAllocating/    Tick, deadline reached       lost(envoy_no_response) -> stop handling
//    kStarting/intents/kDestroying
//   kStarting       EnvoyStopping{its key}       (Keel) kGoingAway + Stop{GOING_AWAY}
//                   (serverful)
//   kRunning/       ServerlessDrain{g ==         (Keel) kGoingAway + Stop{GOING_AWAY}
//    kStarting      generation}, envoy known
//   kRunning        Event IntentSleep, Sleep     kSleepIntent + Stop{SLEEP_INTENT}, sleeping
//   kRunning        Event IntentStop             kStopIntent + Stop{STOP_INTENT}
//   kRunning        Reschedule / EnvoyStopping   kGoingAway + Stop{GOING_AWAY}
//   kSleepIntent/   Reschedule / EnvoyStopping   kGoingAway, no new command (the stop is
//    kStopIntent                                 out; after it the actor is reallocated)
//   kRunning        Tick, liveness check due     envoy pinged within envoy_lost_ms: next
//                                                check; else lost(envoy_connection_lost)
//   kRunning        EnvoyDisconnected{key}       liveness check moved to now+envoy_lost_ms
//   instance state  Event Stopped{code, msg}     stop handling
//   instance state  Event SetAlarm{ts}           alarm_ts = ts, AckEvents now
//   kSleepIntent    Wake                         rewake_after_stop = true
//   kRunning        Destroy                      kDestroying + Stop{DESTROY}, DestroyStarted
//   intents,        Destroy                      kDestroying (stop already out),
//    kGoingAway                                  DestroyStarted
//   kAllocating/    Destroy                      destroy_after_start, DestroyStarted
//    kStarting
//   kSleeping/      Destroy                      DestroyStarted, [finish destroy]
//    kReallocating
//   kSleeping       Wake, Tick with alarm due    [allocate] (a passed alarm is cleared)
//   kReallocating   Tick at retry, PoolCapacity- [allocate]; failed and now >= since +
//                   Available                    retry_duration_ms: kSleeping
//   kReallocating   Sleep                        kSleeping
//   kAllocating/    Sleep                        (Keel) sleep_after_start, unless
//    kStarting                                   destroy_after_start
//   kAllocating/    Wake                         (Keel) sleep_after_start cleared
//    kStarting
//   instance state  Wake, or alarm due, with a   FAST RECOVERY: Stop{LOST} to the old
//    with envoy     disconnected envoy           (key, g), lost(envoy_connection_lost),
//    (not kDestroy.)                             the old key excluded, Reallocate at once
//   kSleepIntent+   EnvoyDisconnected{key}       FAST RECOVERY (a wake is pending / the
//    rewake, kGoingAway                          move reallocates anyway)
//   kDestroyed      anything                     —
//
// [finish destroy] = destroy_ts, destroyed, alarm cleared, DeleteActorData, ReleaseKey,
// Publish DestroyComplete, kDestroyed.
//
// BACKOFF (actors.md §6.7): a failed allocation enters kReallocating{since = now}; each
// retry waits base_retry_ms * 2^min(attempt, max_backoff_exponent) (2, 4, … 512 s), the
// attempt counter restarting when the previous retry is older than retry_reset_ms. The
// retry times are capped at since + retry_duration_ms; a failure at or after that gives up
// to kSleeping (2, 6, 14, 30, 62, 126, 254, 300 s with the defaults). No jitter. An actor
// of a serverless pool backs off by the serverless_* thresholds instead of base_retry_ms,
// retry_reset_ms and max_backoff_exponent (same defaults); retry_duration_ms applies to both.
//
// KEEL ADDITIONS
//  * Liveness: Context::EnvoyLastPingMs (not "connected"), so an envoy that reconnects
//    within envoy_lost_ms keeps its actors, as in Rivet.
//  * Fast recovery: an instance whose envoy is disconnected (Context::EnvoyConnected) and
//    that is needed — a Wake, a due alarm (checked at the alarm time once
//    EnvoyDisconnected was seen), a pending rewake, or a GoingAway move — is lost at once:
//    Stop{LOST} to the old (key, g) (stored, replayed if the envoy reconnects), the key
//    excluded, a new generation allocated in the same step.
//  * EnvoyStopping also moves a serverful kStarting instance (Rivet ignores it there).
//  * A Sleep while kAllocating/kStarting is remembered (sleep_after_start) and applied when
//    the instance reports Running: it becomes connectable (Ready is published, so waiters
//    are handed the instance, which answers them in its grace) and enters kSleepIntent in
//    the same step. Rivet ignores it, although REST answers 200. A later Wake voids it (the
//    actor is needed again; in kSleepIntent a Wake reallocates after the stop), a Destroy
//    supersedes it, a move (EnvoyStopping) drops it as it drops a sleep intent's decision.
//  * The Running event is accepted in kAllocating too (Rivet drops it), so a serverless
//    start that raced its Allocated signal is not lost.
//  * ServerlessStartFailed{g} (kAllocating, or kStarting before any event of g arrived, g
//    current): the instance is lost at once (stop handling, recording the runner-pool error
//    it set, kRunnerPoolError, as actors.md §6.6 lists it among an actor's errors).
//    Where stop handling would decide Sleep (and no sleep was asked for while it started)
//    the actor enters the backoff of a failed allocation (kReallocating) instead, so a
//    failing pool is retried at 2, 4, 8 … s rather than at once by waiting requests; once
//    the backoff is spent (retry_attempt past max_backoff_exponent, within
//    retry_reset_ms of the last retry) it goes to kSleeping. Destroy decisions apply as for
//    any lost instance.
//  * ServerlessDrain{g}: the request that started g reached request_lifespan −
//    drain_grace_period (actors.md §6.10 step 4). An instance of g that its envoy took
//    (kRunning, or kStarting with an envoy key) is moved as by EnvoyStopping: kGoingAway +
//    Stop{GOING_AWAY}, reallocated (a new request) after its stop. An instance already
//    stopping (intents, kGoingAway, kDestroying) keeps its course: a sleep stays a sleep.
//
// INVARIANTS (checked by the property test)
//  1. `generation` never decreases and grows by exactly one per successful allocation.
//  2. At most one live generation: the instance states (kAllocating … kDestroying) always
//     refer to `generation`; every command except the best-effort Stop{LOST} is addressed
//     to (envoy_key, generation) as stored after the step. Stop{LOST} only addresses a
//     generation the step has just abandoned.
//  3. Command indices per generation: serverful start 1, serverless start 0 (sent outside
//     the WebSocket); each further command is last_command_index + 1.
//  4. `slot_held` is true exactly in the instance states; every slot is released once.
//  5. kRunning, the intent states and kDestroying have a non-empty envoy_key; so does
//     kStarting after a serverful allocation. kSleeping, kReallocating, kDestroyed hold no
//     envoy key, no deadline and no destroy/rewake flags (a sleeping actor is small).
//     sleep_after_start is only set in kAllocating/kStarting, never with
//     destroy_after_start.
//  6. `connectable` is true exactly in kRunning; `sleeping` exactly in kSleepIntent,
//     kSleeping and kReallocating; `destroyed` exactly in kDestroyed.
//  7. Events are processed once: only for the current generation from the current envoy,
//     with index > last_event_index; afterwards last_event_index - last_acked_event_index
//     <= kAckBatch, and a SetAlarm leaves it at 0.
//  8. Every envoy that may still host an older generation of this actor (one abandoned as
//     lost whose Stopped was not seen, for stale_host_exclusion_ms, the newest
//     kMaxStaleHosts) is in `exclude` of every allocation, so a serverful allocator never
//     places the new generation beside an old one.
//  9. An error reported by the envoy (crashed) is never overwritten by a generic one
//     (no_envoys, concurrent_actor_limit_reached, envoy_no_response, envoy_connection_lost).
//     As in Rivet, the error is cleared when a new generation is allocated and when the
//     actor becomes connectable (it says why the actor is not healthy now).
// 10. kDestroyed is terminal: every input is ignored and no deadline exists.
// 11. Every state but kCreated, kDestroyed and kSleeping-without-alarm has a deadline.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/result.h"
#include "protocol/envoy/versioned.h"

namespace keel::engine::orch {

using StopReason = protocol::envoy::latest::StopActorReason;
using StopCode = protocol::envoy::latest::StopCode;

// Engine configuration (actors.md §6.12); defaults are Rivet's.
struct Thresholds {
  int64_t allocation_ms = 2000;       // actor_allocation_threshold
  int64_t start_ms = 30000;           // actor_start_threshold
  int64_t stop_ms = 30000;            // actor_stop_threshold
  int64_t retry_duration_ms = 300000; // actor_retry_duration_threshold
  int64_t base_retry_ms = 2000;       // base_retry_timeout
  int64_t retry_reset_ms = 600000;    // retry_reset_duration
  int max_backoff_exponent = 8;       // reschedule_backoff_max_exponent
  // The backoff of an actor of a serverless pool (its starts are HTTP requests to the
  // pool's endpoint, actors.md §6.10): serverless_base_retry_timeout,
  // serverless_retry_reset_duration, serverless_backoff_max_exponent.
  int64_t serverless_base_retry_ms = 2000;
  int64_t serverless_retry_reset_ms = 600000;
  int serverless_max_backoff_exponent = 8;
  int64_t envoy_lost_ms = 15000;      // envoy_lost_threshold
  // Keel: how long an envoy key stays excluded for this actor after a generation on it was
  // abandoned without a Stopped (lost). Default envoy_lost_ms + stop_ms: a disconnected
  // envoy kills its actors envoy_lost_ms after the disconnect, and a reconnected one gets
  // the stored Stop{LOST} replayed and stops the instance within the stop threshold.
  int64_t stale_host_exclusion_ms = 45000;
};

// Ack events once last processed > last acked + kAckBatch (envoy-protocol.md §4.8).
inline constexpr int64_t kAckBatch = 250;
// At most this many envoy keys are remembered as possibly hosting an older generation;
// the oldest entry is dropped beyond it (keeps a sleeping actor's state bounded).
inline constexpr size_t kMaxStaleHosts = 4;

enum class Transition : uint8_t {
  kCreated = 0,      // records written, first allocation not yet run
  kAllocating = 1,   // serverless: waiting for Allocated{generation}
  kStarting = 2,     // start sent; waiting for Running
  kRunning = 3,      // connectable
  kSleepIntent = 4,  // stop{SLEEP_INTENT} sent
  kStopIntent = 5,   // stop{STOP_INTENT} sent (actor destroys itself)
  kGoingAway = 6,    // stop{GOING_AWAY} sent; reallocates after the stop
  kSleeping = 7,     // no instance
  kReallocating = 8, // allocation failed; retrying with backoff
  kDestroying = 9,   // stop{DESTROY} sent
  kDestroyed = 10,   // terminal (the record stays for include_destroyed listings)
};
std::string_view TransitionName(Transition t);
// kAllocating … kGoingAway and kDestroying: a generation is (being) placed.
bool HasInstance(Transition t);

enum class PoolKind : uint8_t { kServerful = 0, kServerless = 1 };

// The actor's REST `error` (actors.md §6.6).
struct ActorError {
  enum class Kind : uint8_t {
    kNoEnvoys = 1,
    kConcurrentActorLimitReached = 2,
    kEnvoyNoResponse = 3,      // detail: envoy key
    kEnvoyConnectionLost = 4,  // detail: envoy key
    kCrashed = 5,              // detail: the envoy's message
    kRunnerPoolError = 6,      // detail: the pool's error as JSON ({"<code>": {…}})
  };
  Kind kind = Kind::kNoEnvoys;
  std::string detail;
  friend bool operator==(const ActorError&, const ActorError&) = default;
};
// group "actor", code "no_envoys" / "concurrent_actor_limit_reached" / "envoy_no_response"
// / "envoy_connection_lost" / "crashed" / "runner_pool_error", message = detail.
Error ToError(const ActorError& e);

// An envoy that may still host an abandoned generation of this actor (Keel requirement 2).
struct StaleHost {
  std::string envoy_key;
  uint32_t generation = 0;
  int64_t until_ts = 0;  // excluded until then (or until its Stopped is seen)
  friend bool operator==(const StaleHost&, const StaleHost&) = default;
};

// Everything durable about one actor's lifecycle: the workflow state (storage.md §3.5 key
// 02) plus the record fields the machine owns (flags and timestamps of the REST Actor).
// Timestamps are epoch ms; 0 = unset. Fields that only matter in some states are reset on
// leaving them (invariant 5) so the persisted form of a sleeping actor stays small.
struct ActorWorkflow {
  // The small fields come first, packed: every loaded actor holds one of these in the
  // engine's memory (W4; the order here is not the stored layout, workflow_codec.cc is).
  Transition transition = Transition::kCreated;
  PoolKind pool_kind = PoolKind::kServerful;  // of the current/last allocation
  bool destroy_after_start = false;  // kAllocating / kStarting
  bool sleep_after_start = false;    // kAllocating / kStarting (Keel)
  bool rewake_after_stop = false;    // kSleepIntent
  bool slot_held = false;            // invariant 4
  bool envoy_disconnected = false;   // EnvoyDisconnected seen for envoy_key (alarm check)
  // REST Actor flags (actors.md §7).
  bool sleeping = false;     // kSleepIntent, kSleeping, kReallocating
  bool connectable = false;  // kRunning
  bool destroyed = false;    // kDestroyed
  uint32_t generation = 0;
  uint32_t retry_attempt = 0;  // backoff (below)
  std::string envoy_key;       // current instance's envoy; serverless: set by its first event
  // kAllocating/kStarting/intents/kDestroying: lost timeout. kRunning: next liveness
  // check. kReallocating: next retry. Otherwise 0.
  int64_t deadline_ts = 0;
  std::optional<int64_t> alarm_ts;

  // Backoff (actors.md §6.7). since_ts: start of the current kReallocating episode;
  // retry_attempt above.
  int64_t realloc_since_ts = 0;
  int64_t last_retry_ts = 0;

  // Checkpoints of the current generation (envoy-protocol.md §4.1, §4.8).
  int64_t last_command_index = 0;
  int64_t last_event_index = -1;
  int64_t last_acked_event_index = -1;

  std::optional<ActorError> error;
  std::vector<StaleHost> stale_hosts;

  // REST Actor fields (actors.md §7), set as Rivet's actor2 sets them.
  int64_t start_ts = 0;               // first time an instance reported Running
  int64_t pending_allocation_ts = 0;  // set while allocation is pending (kReallocating)
  int64_t connectable_ts = 0;         // set while connectable
  int64_t sleep_ts = 0;               // set in kSleepIntent, kSleeping, kReallocating
  int64_t reschedule_ts = 0;          // the next (or last) reallocation attempt
  int64_t destroy_ts = 0;
  // The engine run (Context::Run) that made the last allocation: after an unclean
  // restart, an actor not yet allocated in the current run skips a generation.
  uint64_t alloc_run = 0;

  friend bool operator==(const ActorWorkflow&, const ActorWorkflow&) = default;
};

// Compact persisted form (layout in workflow_codec.cc): u16 LE version, then varint
// fields. A sleeping actor without error or stale hosts encodes in about 40 bytes.
Bytes EncodeWorkflow(const ActorWorkflow& wf);
// Errors: `protocol.decode_failed`, `protocol.unsupported_version`.
Result<ActorWorkflow> DecodeWorkflow(ByteView bytes);

// ---- Inputs -------------------------------------------------------------------------

namespace in {
struct Create {};      // first allocation (actors.md §6.2 step 4)
struct Wake {};        // gateway request / API: the actor is needed
struct Sleep {};       // REST POST /actors/{id}/sleep
struct Reschedule {};  // REST POST /actors/{id}/reschedule
struct Destroy {};     // REST DELETE
struct Allocated {     // outbound service dispatched the serverless start
  uint32_t generation = 0;
};
struct EnvoyStopping {  // ToRivetStopping from that envoy (GOING_AWAY)
  std::string envoy_key;
};
struct EnvoyDisconnected {  // that envoy's connection closed
  std::string envoy_key;
};
struct PoolCapacityAvailable {};  // an envoy connected / a slot freed: retry allocation now
// Keel: the serverless start of `generation` failed before the runtime's envoy took the
// actor (the pool refused the POST, or its SSE stream broke or ended early; actors.md §6.10
// step 3). Lost at once rather than at the allocation/start threshold; see KEEL ADDITIONS.
struct ServerlessStartFailed {
  uint32_t generation = 0;
  std::string pool_error;  // the runner-pool error it set, as JSON: recorded on the actor
};
// The serverless request that started `generation` reached request_lifespan −
// drain_grace_period (actors.md §6.10 step 4): the instance it hosts is moved (GOING_AWAY)
// before the engine drops the request. See KEEL ADDITIONS.
struct ServerlessDrain {
  uint32_t generation = 0;
};
struct Tick {};                   // the driver saw now >= NextDeadline()

struct IntentSleep {};
struct IntentStop {};
struct Running {};
struct Stopped {
  StopCode code = StopCode::kOk;
  std::optional<std::string> message;
};
struct SetAlarm {
  std::optional<int64_t> alarm_ts;
};
// One event of ToRivetEvents, routed to this actor by checkpoint.actorId.
struct Event {
  std::string envoy_key;
  uint32_t generation = 0;
  int64_t index = 0;
  std::variant<IntentSleep, IntentStop, Running, Stopped, SetAlarm> kind;
};
}  // namespace in

using Input =
    std::variant<in::Create, in::Wake, in::Sleep, in::Reschedule, in::Destroy, in::Allocated,
                 in::EnvoyStopping, in::EnvoyDisconnected, in::PoolCapacityAvailable, in::Tick,
                 in::Event, in::ServerlessStartFailed, in::ServerlessDrain>;

// ---- Effects (executed by the driver after storing the workflow, in order) ----------

namespace fx {
struct StartCommand {};
struct StopCommand {
  StopReason reason = StopReason::kSleepIntent;
};
// Store under (envoy, actor, generation, index) and publish to the envoy (§4.2).
struct SendCommand {
  std::string envoy_key;
  uint32_t generation = 0;
  int64_t index = 0;
  std::variant<StartCommand, StopCommand> command;
  friend bool operator==(const SendCommand&, const SendCommand&) = default;
};
// Publish ToOutboundActorStart with checkpoint (generation, index 0) (§4.9).
struct DispatchServerlessStart {
  uint32_t generation = 0;
  int64_t index = 0;
  friend bool operator==(const DispatchServerlessStart&, const DispatchServerlessStart&) =
      default;
};
enum class Notice : uint8_t { kReady, kStopped, kFailed, kDestroyStarted, kDestroyComplete };
// Wakes gateway waiters / the REST delete call. `error` is set for kFailed.
struct Publish {
  Notice notice = Notice::kReady;
  std::optional<ActorError> error;
  friend bool operator==(const Publish&, const Publish&) = default;
};
// ToEnvoyAckEvents{(actor, generation, index)} to that envoy.
struct AckEvents {
  std::string envoy_key;
  uint32_t generation = 0;
  int64_t index = 0;
  friend bool operator==(const AckEvents&, const AckEvents&) = default;
};
// Delete the stored commands of a deallocated generation (§4.3 RECOMMENDATION).
struct DropPendingCommands {
  std::string envoy_key;
  uint32_t generation = 0;
  friend bool operator==(const DropPendingCommands&, const DropPendingCommands&) = default;
};
// Stop{LOST} to an instance the actor does not know (an early start an OS crash took back,
// docs/engine.md "Early start"): sent, never stored, at index kStrayStopIndex. Its next
// event, if the stop is lost, asks again.
struct StopStray {
  std::string envoy_key;
  uint32_t generation = 0;
  friend bool operator==(const StopStray&, const StopStray&) = default;
};
inline constexpr int64_t kStrayStopIndex = std::numeric_limits<int32_t>::max();
struct DeleteActorData {  // KV, SQLite, alarms, indexes (storage.md §3.8)
  friend bool operator==(const DeleteActorData&, const DeleteActorData&) = default;
};
struct ReleaseKey {  // the (namespace, name, key) reservation
  friend bool operator==(const ReleaseKey&, const ReleaseKey&) = default;
};
}  // namespace fx

using Effect =
    std::variant<fx::SendCommand, fx::DispatchServerlessStart, fx::Publish, fx::AckEvents,
                 fx::DropPendingCommands, fx::StopStray, fx::DeleteActorData, fx::ReleaseKey>;
// A short, stable text form ("send envoy-a g1 #1 start", "publish ready", …) for logs and
// tests.
std::string EffectToString(const Effect& e);

// ---- Context ------------------------------------------------------------------------

struct Allocation {
  struct Serverful {
    std::string envoy_key;
  };
  struct Serverless {};
  enum class Failure : uint8_t { kNoEnvoys, kConcurrentActorLimitReached };
  std::variant<Serverful, Serverless, Failure> value;
};

// What the machine asks the world. Calls happen inside Step, before the driver stores the
// workflow: the driver runs Step in the transaction that stores it (Allocate takes a slot
// in that same transaction).
class Context {
 public:
  virtual ~Context() = default;
  virtual int64_t NowMs() const = 0;
  virtual const Thresholds& thresholds() const = 0;
  // Allocates in the actor's pool (actors.md §6.4), never choosing an envoy in `exclude`.
  // Serverful and serverless both take a slot, given back with ReleaseSlot().
  virtual Allocation Allocate(std::span<const std::string> exclude) = 0;
  virtual void ReleaseSlot() = 0;
  // Whether the envoy currently has an open connection (fast recovery).
  virtual bool EnvoyConnected(std::string_view envoy_key) const = 0;
  // The envoy's last ping (heartbeat) time, if known. Running liveness (actors.md §6.6):
  // lost when absent or older than envoy_lost_ms. A ping rather than "connected" so that a
  // reconnect within the threshold keeps the actor, as in Rivet.
  virtual std::optional<int64_t> EnvoyLastPingMs(std::string_view envoy_key) const = 0;
  // The engine's run (a counter bumped each time an engine opens the store), and whether
  // the previous run ended without closing it. After such an unclean end, an early start
  // of that run may have been sent without being stored, so an actor's first allocation in
  // this run skips a generation (docs/engine.md "Early start"). Defaults: run 0, clean.
  virtual uint64_t Run() const { return 0; }
  virtual bool UncleanStart() const { return false; }
};

struct StepResult {
  std::vector<Effect> effects;
  bool changed = false;  // the workflow differs from before: store it
};

// Applies `input` to `wf` (never fails: unexpected inputs are ignored).
StepResult Step(ActorWorkflow& wf, const Input& input, Context& ctx);

// When the driver must call Step(Tick): lost timeout, liveness check, backoff retry, or the
// alarm (kSleeping; and while an instance's envoy is known disconnected). nullopt: none.
std::optional<int64_t> NextDeadline(const ActorWorkflow& wf);

}  // namespace keel::engine::orch
