#include "engine/orchestrator/actor_machine.h"

#include <algorithm>
#include <utility>

namespace keel::engine::orch {

namespace {

// Why an instance ended (actors.md §6.6).
struct StopCause {
  enum class Kind : uint8_t { kStopped, kLost };
  Kind kind = Kind::kStopped;
  StopCode code = StopCode::kOk;
  std::optional<std::string> message;
  ActorError::Kind lost_kind = ActorError::Kind::kEnvoyNoResponse;
  // Fast recovery: a wake is waiting, so "Sleep" becomes "Reallocate".
  bool wake_pending = false;
  // A serverless start failed (in::ServerlessStartFailed): "Sleep" becomes the backoff,
  // and its runner-pool error (JSON) is the actor's.
  bool start_failed = false;
  std::string pool_error;
};

bool IsGeneric(const ActorError& e) { return e.kind != ActorError::Kind::kCrashed; }

class Machine {
 public:
  Machine(ActorWorkflow& wf, Context& ctx)
      : wf_(wf), ctx_(ctx), th_(ctx.thresholds()), now_(ctx.NowMs()) {}

  std::vector<Effect> TakeEffects() { return std::move(effects_); }

  void Apply(const Input& input) {
    if (wf_.transition == Transition::kDestroyed) {
      return;  // invariant 10
    }
    std::visit([this](const auto& v) { On(v); }, input);
  }

 private:
  // ---- inputs ----

  void On(const in::Create&) {
    if (wf_.transition == Transition::kCreated) {
      Allocate();
    }
  }

  void On(const in::Wake&) {
    ClearPassedAlarm();
    switch (wf_.transition) {
      case Transition::kSleeping:
        Allocate();
        return;
      case Transition::kSleepIntent:
        wf_.rewake_after_stop = true;
        if (EnvoyGone()) {
          FastRecover();
        }
        return;
      // Keel: the actor is needed again, so a sleep asked for while it starts is void (as a
      // wake during a sleep intent reallocates after the stop).
      case Transition::kAllocating:
        wf_.sleep_after_start = false;
        return;
      case Transition::kStarting:
        wf_.sleep_after_start = false;
        [[fallthrough]];
      case Transition::kRunning:
      case Transition::kStopIntent:
      case Transition::kGoingAway:
        if (EnvoyGone()) {
          FastRecover();
        }
        return;
      default:
        return;
    }
  }

  void On(const in::Sleep&) {
    switch (wf_.transition) {
      case Transition::kRunning:
        EnterSleepIntent();
        return;
      case Transition::kReallocating:
        EnterSleeping();
        return;
      case Transition::kAllocating:
      case Transition::kStarting:
        // Keel: remembered and applied when the instance reports Running (Rivet drops it,
        // and the REST call would answer 200 for a sleep that never happens).
        if (!wf_.destroy_after_start) {
          wf_.sleep_after_start = true;
        }
        return;
      default:
        return;
    }
  }

  void On(const in::Reschedule&) { GoAway(/*starting_too=*/false); }

  void On(const in::EnvoyStopping& e) {
    if (!wf_.envoy_key.empty() && e.envoy_key == wf_.envoy_key) {
      GoAway(/*starting_too=*/true);
    }
  }

  void On(const in::EnvoyDisconnected& e) {
    if (!HasInstance(wf_.transition) || wf_.envoy_key.empty() || e.envoy_key != wf_.envoy_key ||
        wf_.transition == Transition::kDestroying) {
      return;
    }
    wf_.envoy_disconnected = true;
    bool needed = (wf_.transition == Transition::kSleepIntent && wf_.rewake_after_stop) ||
                  wf_.transition == Transition::kGoingAway || AlarmDue();
    if (needed && EnvoyGone()) {
      FastRecover();
      return;
    }
    if (wf_.transition == Transition::kRunning) {
      wf_.deadline_ts = std::min(wf_.deadline_ts, now_ + th_.envoy_lost_ms);
    }
  }

  void On(const in::PoolCapacityAvailable&) {
    if (wf_.transition == Transition::kReallocating) {
      RetryAllocation();
    }
  }

  void On(const in::Destroy&) {
    switch (wf_.transition) {
      case Transition::kCreated:
      case Transition::kSleeping:
      case Transition::kReallocating:
        Publish(fx::Notice::kDestroyStarted);
        FinishDestroy();
        return;
      case Transition::kAllocating:
      case Transition::kStarting:
        if (!wf_.destroy_after_start) {
          wf_.destroy_after_start = true;
          wf_.sleep_after_start = false;  // the destroy supersedes it
          Publish(fx::Notice::kDestroyStarted);
        }
        return;
      case Transition::kRunning:
        Publish(fx::Notice::kDestroyStarted);
        EnterDestroying(/*send_stop=*/true);
        return;
      case Transition::kSleepIntent:
      case Transition::kStopIntent:
      case Transition::kGoingAway:
        // The instance already has a stop; the envoy ignores a second one (as Rivet).
        Publish(fx::Notice::kDestroyStarted);
        EnterDestroying(/*send_stop=*/false);
        return;
      case Transition::kDestroying:
      case Transition::kDestroyed:
        return;
    }
  }

  void On(const in::Allocated& a) {
    if (wf_.transition == Transition::kAllocating && a.generation == wf_.generation) {
      wf_.transition = Transition::kStarting;
      wf_.deadline_ts = now_ + th_.start_ms;
    }
  }

  void On(const in::ServerlessStartFailed& f) {
    const bool untaken = wf_.transition == Transition::kAllocating ||
                         (wf_.transition == Transition::kStarting && wf_.envoy_key.empty());
    if (!untaken || f.generation != wf_.generation || wf_.pool_kind != PoolKind::kServerless) {
      return;
    }
    StopCause c;
    c.kind = StopCause::Kind::kLost;
    c.start_failed = true;
    c.pool_error = f.pool_error;
    HandleStop(c);
  }

  void On(const in::ServerlessDrain& d) {
    if (d.generation != wf_.generation || wf_.pool_kind != PoolKind::kServerless ||
        (wf_.transition != Transition::kRunning && wf_.transition != Transition::kStarting)) {
      return;
    }
    GoAway(/*starting_too=*/true);
  }

  void On(const in::Tick&) {
    switch (wf_.transition) {
      case Transition::kAllocating:
      case Transition::kStarting:
      case Transition::kSleepIntent:
      case Transition::kStopIntent:
      case Transition::kGoingAway:
      case Transition::kDestroying:
        if (now_ >= wf_.deadline_ts) {
          StopCause c;
          c.kind = StopCause::Kind::kLost;
          c.lost_kind = ActorError::Kind::kEnvoyNoResponse;
          HandleStop(c);
          return;
        }
        CheckAlarmWhileDisconnected();
        return;
      case Transition::kRunning:
        if (now_ >= wf_.deadline_ts) {
          std::optional<int64_t> ping = ctx_.EnvoyLastPingMs(wf_.envoy_key);
          if (!ping || now_ - *ping > th_.envoy_lost_ms) {
            StopCause c;
            c.kind = StopCause::Kind::kLost;
            c.lost_kind = ActorError::Kind::kEnvoyConnectionLost;
            HandleStop(c);
            return;
          }
          wf_.deadline_ts = now_ + th_.envoy_lost_ms;
        }
        CheckAlarmWhileDisconnected();
        return;
      case Transition::kReallocating:
        if (now_ >= wf_.deadline_ts) {
          RetryAllocation();
        }
        return;
      case Transition::kSleeping:
        if (wf_.alarm_ts && *wf_.alarm_ts <= now_) {
          ClearPassedAlarm();
          Allocate();
        }
        return;
      case Transition::kCreated:
      case Transition::kDestroyed:
        return;
    }
  }

  void On(const in::Event& ev) {
    if (!HasInstance(wf_.transition) || ev.generation != wf_.generation ||
        (!wf_.envoy_key.empty() && ev.envoy_key != wf_.envoy_key)) {
      OnOtherInstance(ev);  // only the assigned envoy reports for this generation
      return;
    }
    if (ev.index <= wf_.last_event_index) {
      return;  // resend
    }
    if (wf_.envoy_key.empty()) {
      wf_.envoy_key = ev.envoy_key;  // serverless: the envoy that took the start
    }
    wf_.last_event_index = ev.index;
    const std::string key = wf_.envoy_key;
    const uint32_t gen = wf_.generation;
    // Keel requirement 4: SetAlarm is acknowledged at once so the runtime can wait for
    // the alarm to be durable; otherwise in batches (§4.8).
    const bool ack = std::holds_alternative<in::SetAlarm>(ev.kind) ||
                     ev.index > wf_.last_acked_event_index + kAckBatch;
    std::visit([this](const auto& k) { OnEvent(k); }, ev.kind);
    // The ack concerns the generation that sent the event, even if the step moved on.
    if (ack) {
      Emit(fx::AckEvents{key, gen, ev.index});
      if (wf_.generation == gen) {
        wf_.last_acked_event_index = ev.index;
      }
    }
  }

  // An event of an instance that is not the actor's current one. A Stopped may clear a
  // stale host. Any other event from an instance the actor does not know at all — not the
  // current one, not a stale host (which has its stored Stop{LOST}) — comes from a start an
  // OS crash took back (docs/engine.md "Early start"), or is a late resend of an instance
  // that already stopped: either way it is told to stop (a stopped one ignores that).
  void OnOtherInstance(const in::Event& ev) {
    auto it = std::find_if(wf_.stale_hosts.begin(), wf_.stale_hosts.end(), [&](const StaleHost& s) {
      return s.envoy_key == ev.envoy_key && s.generation == ev.generation;
    });
    if (!std::holds_alternative<in::Stopped>(ev.kind)) {
      if (it == wf_.stale_hosts.end()) Emit(fx::StopStray{ev.envoy_key, ev.generation});
      return;
    }
    if (it != wf_.stale_hosts.end()) {
      wf_.stale_hosts.erase(it);
      Emit(fx::DropPendingCommands{ev.envoy_key, ev.generation});
    }
  }

  void OnEvent(const in::IntentSleep&) {
    if (wf_.transition == Transition::kRunning) {
      EnterSleepIntent();
    }
  }

  void OnEvent(const in::IntentStop&) {
    if (wf_.transition == Transition::kRunning) {
      SetNotConnectable();
      wf_.transition = Transition::kStopIntent;
      wf_.deadline_ts = now_ + th_.stop_ms;
      SendStop(StopReason::kStopIntent);
    }
  }

  void OnEvent(const in::Running&) {
    if (wf_.transition != Transition::kAllocating && wf_.transition != Transition::kStarting) {
      return;
    }
    if (wf_.destroy_after_start) {
      EnterDestroying(/*send_stop=*/true);
      return;
    }
    if (wf_.start_ts == 0) {
      wf_.start_ts = now_;  // first start only (Rivet's set_connectable)
    }
    wf_.transition = Transition::kRunning;
    wf_.connectable = true;
    wf_.connectable_ts = now_;
    wf_.error.reset();  // healthy again
    wf_.deadline_ts = now_ + th_.envoy_lost_ms;
    Publish(fx::Notice::kReady);
    if (wf_.sleep_after_start) {
      EnterSleepIntent();  // the sleep asked for while it started
    }
  }

  void OnEvent(const in::Stopped& s) {
    StopCause c;
    c.kind = StopCause::Kind::kStopped;
    c.code = s.code;
    c.message = s.message;
    HandleStop(c);
  }

  void OnEvent(const in::SetAlarm& a) { wf_.alarm_ts = a.alarm_ts; }

  // ---- helpers ----

  void Emit(Effect e) { effects_.push_back(std::move(e)); }

  void Publish(fx::Notice n, std::optional<ActorError> err = std::nullopt) {
    Emit(fx::Publish{n, std::move(err)});
  }

  void SendStop(StopReason reason) {
    if (wf_.envoy_key.empty()) {
      return;  // serverless instance that has not reported yet: nowhere to send it
    }
    wf_.last_command_index += 1;
    Emit(fx::SendCommand{wf_.envoy_key, wf_.generation, wf_.last_command_index,
                         fx::StopCommand{reason}});
  }

  bool AlarmDue() const { return wf_.alarm_ts && *wf_.alarm_ts <= now_; }

  void ClearPassedAlarm() {
    if (AlarmDue()) {
      wf_.alarm_ts.reset();
    }
  }

  // The instance's envoy is known and its connection is closed.
  bool EnvoyGone() const {
    return !wf_.envoy_key.empty() && !ctx_.EnvoyConnected(wf_.envoy_key);
  }

  void CheckAlarmWhileDisconnected() {
    if (!wf_.envoy_disconnected || !AlarmDue() || wf_.transition == Transition::kDestroying) {
      return;
    }
    if (EnvoyGone()) {
      FastRecover();
    } else {
      wf_.envoy_disconnected = false;  // reconnected: the runtime fires its own alarm
    }
  }

  // Keel requirement 1: lost at once, Stop{LOST} for the old generation, reallocate.
  void FastRecover() {
    ClearPassedAlarm();
    StopCause c;
    c.kind = StopCause::Kind::kLost;
    c.lost_kind = ActorError::Kind::kEnvoyConnectionLost;
    c.wake_pending = true;
    HandleStop(c);
  }

  void RecordError(ActorError e) {
    if (IsGeneric(e) && wf_.error && !IsGeneric(*wf_.error)) {
      return;  // invariant 9
    }
    wf_.error = std::move(e);
  }

  void SetNotConnectable() {
    wf_.connectable = false;
    wf_.connectable_ts = 0;
  }

  void EnterSleepIntent() {
    SetNotConnectable();
    wf_.transition = Transition::kSleepIntent;
    wf_.sleep_after_start = false;
    MarkSleeping();
    wf_.rewake_after_stop = false;
    wf_.deadline_ts = now_ + th_.stop_ms;
    SendStop(StopReason::kSleepIntent);
  }

  void MarkSleeping() {
    wf_.sleeping = true;
    wf_.sleep_ts = now_;
  }

  void EnterDestroying(bool send_stop) {
    SetNotConnectable();
    wf_.transition = Transition::kDestroying;
    wf_.sleeping = false;
    wf_.sleep_ts = 0;
    wf_.destroy_after_start = false;
    wf_.rewake_after_stop = false;
    wf_.deadline_ts = now_ + th_.stop_ms;
    if (send_stop) {
      SendStop(StopReason::kDestroy);
    }
  }

  // Reschedule / ToRivetStopping (§6.5, §3.9). As Rivet: Running gets Stop{GOING_AWAY};
  // the intent states already have a stop and only change their decision (-> reallocate).
  // Keel: a serverful kStarting instance on a draining envoy is moved too (starting_too).
  void GoAway(bool starting_too) {
    bool send_stop = false;
    switch (wf_.transition) {
      case Transition::kRunning:
        send_stop = true;
        break;
      case Transition::kSleepIntent:
      case Transition::kStopIntent:
        break;
      case Transition::kStarting:
        if (!starting_too || wf_.envoy_key.empty() || wf_.destroy_after_start) {
          return;
        }
        send_stop = true;
        break;
      default:
        return;
    }
    SetNotConnectable();
    wf_.transition = Transition::kGoingAway;
    wf_.sleeping = false;
    wf_.sleep_ts = 0;
    wf_.rewake_after_stop = false;
    wf_.sleep_after_start = false;  // a move overrides a sleep, as in kSleepIntent
    wf_.deadline_ts = now_ + th_.stop_ms;
    if (send_stop) {
      SendStop(StopReason::kGoingAway);
    }
  }

  // Resets everything that only lives while an instance exists (invariant 5).
  void ClearInstance() {
    wf_.envoy_key.clear();
    wf_.envoy_key.shrink_to_fit();
    wf_.deadline_ts = 0;
    wf_.destroy_after_start = false;
    wf_.sleep_after_start = false;
    wf_.rewake_after_stop = false;
    wf_.envoy_disconnected = false;
    SetNotConnectable();
  }

  void ReleaseSlot() {
    if (wf_.slot_held) {
      ctx_.ReleaseSlot();
      wf_.slot_held = false;
    }
  }

  void AddStaleHost(const std::string& key, uint32_t gen) {
    if (key.empty()) {
      return;
    }
    if (wf_.stale_hosts.size() >= kMaxStaleHosts) {
      wf_.stale_hosts.erase(wf_.stale_hosts.begin());
    }
    wf_.stale_hosts.push_back(StaleHost{key, gen, now_ + th_.stale_host_exclusion_ms});
  }

  void HandleStop(const StopCause& c) {
    // A failed allocation never gets here: Allocate() enters the backoff itself.
    enum class Decision { kSleep, kReallocate, kDestroy, kBackoff };
    Decision d;
    const Transition from = wf_.transition;
    const bool sleep_asked = wf_.sleep_after_start;
    const bool destroying = from == Transition::kDestroying || wf_.destroy_after_start;
    if (destroying) {
      d = Decision::kDestroy;
    } else if (from == Transition::kSleepIntent) {
      d = wf_.rewake_after_stop ? Decision::kReallocate : Decision::kSleep;
    } else if (from == Transition::kGoingAway) {
      d = Decision::kReallocate;
    } else if (c.kind == StopCause::Kind::kStopped) {
      d = c.code == StopCode::kOk ? Decision::kDestroy : Decision::kSleep;
    } else {
      d = Decision::kSleep;
    }

    {
      // End the instance.
      const std::string old_key = wf_.envoy_key;
      const uint32_t old_gen = wf_.generation;
      if (c.kind == StopCause::Kind::kLost) {
        SendStop(StopReason::kLost);  // best effort, "in case it did start"
        AddStaleHost(old_key, old_gen);
        if (!destroying && !old_key.empty()) {
          RecordError(ActorError{c.lost_kind, old_key});
        } else if (!destroying && c.start_failed) {
          RecordError(ActorError{ActorError::Kind::kRunnerPoolError, c.pool_error});
        }
      } else {
        if (c.code == StopCode::kError && !destroying) {
          RecordError(ActorError{ActorError::Kind::kCrashed, c.message.value_or("")});
        }
        if (!old_key.empty()) {
          Emit(fx::DropPendingCommands{old_key, old_gen});
        }
      }
      ReleaseSlot();
      ClearInstance();
      Publish(fx::Notice::kStopped);
    }

    if (c.start_failed && d == Decision::kSleep && !sleep_asked) {
      d = Decision::kBackoff;
    }
    if (d == Decision::kSleep && (AlarmDue() || c.wake_pending)) {
      ClearPassedAlarm();
      d = Decision::kReallocate;
    }
    switch (d) {
      case Decision::kBackoff:
        if (BackoffSpent()) {
          ClearPassedAlarm();
          EnterSleeping();  // a later Wake (or alarm) tries again
        } else {
          EnterBackoff();
        }
        return;
      case Decision::kSleep:
        EnterSleeping();
        return;
      case Decision::kReallocate:
        Allocate();
        return;
      case Decision::kDestroy:
        FinishDestroy();
        return;
    }
  }

  void EnterSleeping() {
    ClearInstance();
    wf_.transition = Transition::kSleeping;
    MarkSleeping();
    wf_.pending_allocation_ts = 0;
    wf_.realloc_since_ts = 0;
    std::erase_if(wf_.stale_hosts, [&](const StaleHost& s) { return s.until_ts <= now_; });
  }

  void FinishDestroy() {
    ReleaseSlot();
    ClearInstance();
    wf_.transition = Transition::kDestroyed;
    wf_.destroyed = true;
    wf_.destroy_ts = now_;
    wf_.sleeping = false;
    wf_.alarm_ts.reset();
    wf_.pending_allocation_ts = 0;
    wf_.realloc_since_ts = 0;
    wf_.stale_hosts.clear();
    Emit(fx::DeleteActorData{});
    Emit(fx::ReleaseKey{});
    Publish(fx::Notice::kDestroyComplete);
  }

  // One allocation path for create, wake and reallocate (PR #4860): the transition and its
  // threshold are set by the allocation kind before the dispatch effect.
  // Returns false when the allocation failed (the caller decides what follows).
  bool TryAllocate() {
    std::erase_if(wf_.stale_hosts, [&](const StaleHost& s) { return s.until_ts <= now_; });
    std::vector<std::string> exclude;
    for (const StaleHost& s : wf_.stale_hosts) {
      if (std::find(exclude.begin(), exclude.end(), s.envoy_key) == exclude.end()) {
        exclude.push_back(s.envoy_key);
      }
    }
    Allocation a = ctx_.Allocate(exclude);
    if (const auto* f = std::get_if<Allocation::Failure>(&a.value)) {
      ActorError err{*f == Allocation::Failure::kNoEnvoys
                         ? ActorError::Kind::kNoEnvoys
                         : ActorError::Kind::kConcurrentActorLimitReached,
                     ""};
      // The failure names the pool's kind, which picks the backoff (see BACKOFF).
      wf_.pool_kind =
          *f == Allocation::Failure::kNoEnvoys ? PoolKind::kServerful : PoolKind::kServerless;
      RecordError(err);
      Publish(fx::Notice::kFailed, err);
      return false;
    }
    ClearInstance();
    // After an unclean restart, skip the generation the previous run may have sent.
    const bool skip = ctx_.UncleanStart() && wf_.alloc_run != ctx_.Run();
    wf_.generation += skip ? 2 : 1;
    wf_.alloc_run = ctx_.Run();
    wf_.slot_held = true;
    wf_.error.reset();  // Rivet clears the error when the actor is allocated
    wf_.last_command_index = 0;
    wf_.last_event_index = -1;
    wf_.last_acked_event_index = -1;
    wf_.sleeping = false;
    wf_.sleep_ts = 0;
    wf_.pending_allocation_ts = 0;
    wf_.realloc_since_ts = 0;
    if (const auto* sf = std::get_if<Allocation::Serverful>(&a.value)) {
      wf_.pool_kind = PoolKind::kServerful;
      wf_.envoy_key = sf->envoy_key;
      wf_.transition = Transition::kStarting;
      wf_.deadline_ts = now_ + th_.start_ms;
      wf_.last_command_index = 1;
      Emit(fx::SendCommand{wf_.envoy_key, wf_.generation, 1, fx::StartCommand{}});
    } else {
      wf_.pool_kind = PoolKind::kServerless;
      wf_.transition = Transition::kAllocating;
      wf_.deadline_ts = now_ + th_.allocation_ms;
      Emit(fx::DispatchServerlessStart{wf_.generation, 0});
    }
    return true;
  }

  void Allocate() {
    if (!TryAllocate()) {
      EnterBackoff();
    }
  }

  // The backoff parameters of this actor's pool kind (see BACKOFF).
  struct BackoffParams {
    int64_t base_ms;
    int64_t reset_ms;
    int max_exponent;
  };
  BackoffParams Backoff() const {
    if (wf_.pool_kind == PoolKind::kServerless) {
      return {th_.serverless_base_retry_ms, th_.serverless_retry_reset_ms,
              th_.serverless_max_backoff_exponent};
    }
    return {th_.base_retry_ms, th_.retry_reset_ms, th_.max_backoff_exponent};
  }

  int64_t NextRetryDelay() {
    const BackoffParams b = Backoff();
    if (wf_.last_retry_ts != 0 && now_ - wf_.last_retry_ts > b.reset_ms) {
      wf_.retry_attempt = 0;
    }
    int exp =
        std::min<int>(static_cast<int>(std::min<uint32_t>(wf_.retry_attempt, 62)), b.max_exponent);
    wf_.retry_attempt += 1;
    wf_.last_retry_ts = now_;
    // Saturates at 30 days (the configured durations' bound): a large base and exponent
    // (both up to the config's limits) would overflow the shift and the deadline after it.
    constexpr int64_t kMaxRetryDelayMs = int64_t{30} * 24 * 60 * 60 * 1000;
    int64_t delay = std::clamp<int64_t>(b.base_ms, 1, kMaxRetryDelayMs);
    for (int i = 0; i < exp && delay < kMaxRetryDelayMs; ++i) delay *= 2;
    return std::min(delay, kMaxRetryDelayMs);
  }

  void EnterBackoff() {
    ClearInstance();
    wf_.transition = Transition::kReallocating;
    MarkSleeping();  // as Rivet: not connectable, sleep_ts set while reallocating
    wf_.realloc_since_ts = now_;
    wf_.pending_allocation_ts = now_;
    ScheduleRetry();
  }

  // The retry delay has reached its cap and the last retry is recent (NextRetryDelay
  // would not restart the count): a failed serverless start gives up to kSleeping.
  bool BackoffSpent() const {
    const BackoffParams b = Backoff();
    return wf_.last_retry_ts != 0 && now_ - wf_.last_retry_ts <= b.reset_ms &&
           wf_.retry_attempt > static_cast<uint32_t>(std::max(b.max_exponent, 0));
  }

  void ScheduleRetry() {
    int64_t delay = NextRetryDelay();
    wf_.deadline_ts = std::min(now_ + delay, wf_.realloc_since_ts + th_.retry_duration_ms);
    wf_.reschedule_ts = wf_.deadline_ts;  // REST: the next reallocation attempt (as Rivet)
  }

  void RetryAllocation() {
    if (TryAllocate()) {
      return;
    }
    if (now_ - wf_.realloc_since_ts >= th_.retry_duration_ms) {
      ClearPassedAlarm();
      EnterSleeping();  // give up; a later Wake tries again
      return;
    }
    ScheduleRetry();
  }

  ActorWorkflow& wf_;
  Context& ctx_;
  const Thresholds& th_;
  const int64_t now_;
  std::vector<Effect> effects_;
};

}  // namespace

std::string_view TransitionName(Transition t) {
  switch (t) {
    case Transition::kCreated: return "created";
    case Transition::kAllocating: return "allocating";
    case Transition::kStarting: return "starting";
    case Transition::kRunning: return "running";
    case Transition::kSleepIntent: return "sleep_intent";
    case Transition::kStopIntent: return "stop_intent";
    case Transition::kGoingAway: return "going_away";
    case Transition::kSleeping: return "sleeping";
    case Transition::kReallocating: return "reallocating";
    case Transition::kDestroying: return "destroying";
    case Transition::kDestroyed: return "destroyed";
  }
  return "unknown";
}

bool HasInstance(Transition t) {
  switch (t) {
    case Transition::kAllocating:
    case Transition::kStarting:
    case Transition::kRunning:
    case Transition::kSleepIntent:
    case Transition::kStopIntent:
    case Transition::kGoingAway:
    case Transition::kDestroying:
      return true;
    default:
      return false;
  }
}

Error ToError(const ActorError& e) {
  switch (e.kind) {
    case ActorError::Kind::kNoEnvoys: return Error("actor", "no_envoys", e.detail);
    case ActorError::Kind::kConcurrentActorLimitReached:
      return Error("actor", "concurrent_actor_limit_reached", e.detail);
    case ActorError::Kind::kEnvoyNoResponse:
      return Error("actor", "envoy_no_response", e.detail);
    case ActorError::Kind::kEnvoyConnectionLost:
      return Error("actor", "envoy_connection_lost", e.detail);
    case ActorError::Kind::kCrashed: return Error("actor", "crashed", e.detail);
    case ActorError::Kind::kRunnerPoolError:
      return Error("actor", "runner_pool_error", e.detail);
  }
  return Error("actor", "unknown", e.detail);
}

StepResult Step(ActorWorkflow& wf, const Input& input, Context& ctx) {
  ActorWorkflow before = wf;
  Machine m(wf, ctx);
  m.Apply(input);
  StepResult r;
  r.effects = m.TakeEffects();
  r.changed = !(before == wf);
  return r;
}

std::optional<int64_t> NextDeadline(const ActorWorkflow& wf) {
  switch (wf.transition) {
    case Transition::kAllocating:
    case Transition::kStarting:
    case Transition::kRunning:
    case Transition::kSleepIntent:
    case Transition::kStopIntent:
    case Transition::kGoingAway: {
      int64_t d = wf.deadline_ts;
      if (wf.envoy_disconnected && wf.alarm_ts) {
        d = std::min(d, *wf.alarm_ts);
      }
      return d;
    }
    case Transition::kDestroying:
    case Transition::kReallocating:
      return wf.deadline_ts;
    case Transition::kSleeping:
      return wf.alarm_ts;
    case Transition::kCreated:
    case Transition::kDestroyed:
      return std::nullopt;
  }
  return std::nullopt;
}

std::string EffectToString(const Effect& e) {
  struct V {
    std::string operator()(const fx::SendCommand& c) const {
      std::string s = "send " + c.envoy_key + " g" + std::to_string(c.generation) + " #" +
                      std::to_string(c.index) + " ";
      if (std::holds_alternative<fx::StartCommand>(c.command)) {
        return s + "start";
      }
      return s + "stop " +
             std::string(protocol::envoy::latest::EnumName(
                 std::get<fx::StopCommand>(c.command).reason));
    }
    std::string operator()(const fx::DispatchServerlessStart& d) const {
      return "serverless_start g" + std::to_string(d.generation) + " #" +
             std::to_string(d.index);
    }
    std::string operator()(const fx::Publish& p) const {
      switch (p.notice) {
        case fx::Notice::kReady: return "publish ready";
        case fx::Notice::kStopped: return "publish stopped";
        case fx::Notice::kFailed:
          return "publish failed " + (p.error ? ToError(*p.error).code() : std::string("?"));
        case fx::Notice::kDestroyStarted: return "publish destroy_started";
        case fx::Notice::kDestroyComplete: return "publish destroy_complete";
      }
      return "publish ?";
    }
    std::string operator()(const fx::AckEvents& a) const {
      return "ack " + a.envoy_key + " g" + std::to_string(a.generation) + " #" +
             std::to_string(a.index);
    }
    std::string operator()(const fx::DropPendingCommands& d) const {
      return "drop_commands " + d.envoy_key + " g" + std::to_string(d.generation);
    }
    std::string operator()(const fx::StopStray& s) const {
      return "stop_stray " + s.envoy_key + " g" + std::to_string(s.generation);
    }
    std::string operator()(const fx::DeleteActorData&) const { return "delete_data"; }
    std::string operator()(const fx::ReleaseKey&) const { return "release_key"; }
  };
  return std::visit(V{}, e);
}

}  // namespace keel::engine::orch
