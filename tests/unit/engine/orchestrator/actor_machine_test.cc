// Stepped tests of the per-actor state machine: every row of actors.md §6.4–§6.8, the
// transition table in actor_machine.h and the Keel requirements. Effects are compared as
// their EffectToString form.
#include "engine/orchestrator/actor_machine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unit/engine/orchestrator/fake_context.h"

namespace keel::engine::orch {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::FakeContext;

using Strings = std::vector<std::string>;

class ActorMachineTest : public ::testing::Test {
 protected:
  Strings Do(const Input& input) {
    StepResult r = Step(wf_, input, ctx_);
    last_changed_ = r.changed;
    Strings out;
    for (const Effect& e : r.effects) {
      out.push_back(EffectToString(e));
    }
    return out;
  }
  // An event for the current generation from `key` with the next index.
  Strings Ev(decltype(in::Event::kind) kind, std::string key = "e1") {
    in::Event e;
    e.envoy_key = std::move(key);
    e.generation = wf_.generation;
    e.index = wf_.last_event_index + 1;
    e.kind = std::move(kind);
    return Do(e);
  }
  Strings EvAt(decltype(in::Event::kind) kind, uint32_t gen, int64_t index,
               std::string key = "e1") {
    in::Event e;
    e.envoy_key = std::move(key);
    e.generation = gen;
    e.index = index;
    e.kind = std::move(kind);
    return Do(e);
  }
  Strings Tick() { return Do(in::Tick{}); }
  Strings TickAtDeadline() {
    std::optional<int64_t> d = NextDeadline(wf_);
    EXPECT_TRUE(d.has_value());
    if (d) {
      ctx_.now = std::max(ctx_.now, *d);
    }
    return Tick();
  }

  // Drives the machine to a state on envoy e1 (serverful unless said otherwise).
  void ToStarting(std::string key = "e1") {
    ctx_.ScriptServerful(key);
    ctx_.connected.insert(key);
    Do(in::Create{});
    ASSERT_EQ(wf_.transition, Transition::kStarting);
  }
  void ToRunning(std::string key = "e1") {
    ToStarting(key);
    ctx_.last_ping[key] = ctx_.now;
    Ev(in::Running{}, key);
    ASSERT_EQ(wf_.transition, Transition::kRunning);
  }
  void ToSleepIntent() {
    ToRunning();
    Ev(in::IntentSleep{});
    ASSERT_EQ(wf_.transition, Transition::kSleepIntent);
  }
  void ToStopIntent() {
    ToRunning();
    Ev(in::IntentStop{});
    ASSERT_EQ(wf_.transition, Transition::kStopIntent);
  }
  void ToGoingAway() {
    ToRunning();
    Do(in::Reschedule{});
    ASSERT_EQ(wf_.transition, Transition::kGoingAway);
  }
  void ToDestroying() {
    ToRunning();
    Do(in::Destroy{});
    ASSERT_EQ(wf_.transition, Transition::kDestroying);
  }
  void ToSleeping() {
    ToSleepIntent();
    Ev(in::Stopped{});
    ASSERT_EQ(wf_.transition, Transition::kSleeping);
  }
  void ToReallocating() {
    ctx_.ScriptFailure();
    Do(in::Create{});
    ASSERT_EQ(wf_.transition, Transition::kReallocating);
  }
  void ToAllocating() {
    ctx_.ScriptServerless();
    Do(in::Create{});
    ASSERT_EQ(wf_.transition, Transition::kAllocating);
  }

  FakeContext ctx_;
  ActorWorkflow wf_;
  bool last_changed_ = false;
};

// ---- §6.4 allocation --------------------------------------------------------------

TEST_F(ActorMachineTest, CreateOnServerfulPoolStartsWithStartThreshold) {
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Create{}), ElementsAre("send e1 g1 #1 start"));
  EXPECT_TRUE(last_changed_);
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(wf_.generation, 1u);
  EXPECT_EQ(wf_.envoy_key, "e1");
  EXPECT_EQ(wf_.pool_kind, PoolKind::kServerful);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  EXPECT_TRUE(wf_.slot_held);
  EXPECT_EQ(wf_.last_command_index, 1);
}

TEST_F(ActorMachineTest, CreateOnServerlessPoolAllocatesWithAllocationThreshold) {
  ctx_.ScriptServerless();
  EXPECT_THAT(Do(in::Create{}), ElementsAre("serverless_start g1 #0"));
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  EXPECT_EQ(wf_.pool_kind, PoolKind::kServerless);
  EXPECT_EQ(wf_.envoy_key, "");
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
  EXPECT_EQ(wf_.last_command_index, 0);
}

TEST_F(ActorMachineTest, FailedAllocationEntersReallocatingWithError) {
  ctx_.ScriptFailure(Allocation::Failure::kNoEnvoys);
  EXPECT_THAT(Do(in::Create{}), ElementsAre("publish failed no_envoys"));
  EXPECT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_EQ(wf_.generation, 0u);
  EXPECT_FALSE(wf_.slot_held);
  EXPECT_EQ(wf_.pending_allocation_ts, ctx_.now);
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kNoEnvoys, ""}));
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
}

TEST_F(ActorMachineTest, SlotLimitIsRecordedAsConcurrentActorLimitReached) {
  ctx_.ScriptFailure(Allocation::Failure::kConcurrentActorLimitReached);
  EXPECT_THAT(Do(in::Create{}), ElementsAre("publish failed concurrent_actor_limit_reached"));
  EXPECT_EQ(ToError(*wf_.error).Id(), "actor.concurrent_actor_limit_reached");
}

TEST_F(ActorMachineTest, CreateTwiceIsIgnored) {
  ToStarting();
  EXPECT_THAT(Do(in::Create{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  EXPECT_EQ(wf_.generation, 1u);
}

TEST_F(ActorMachineTest, GenerationGrowsOnEverySuccessfulAllocationOnly) {
  ctx_.ScriptFailure();
  Do(in::Create{});
  EXPECT_EQ(wf_.generation, 0u);
  ctx_.ScriptServerful("e1");
  Do(in::PoolCapacityAvailable{});
  EXPECT_EQ(wf_.generation, 1u);
  ctx_.last_ping["e1"] = ctx_.now;
  Ev(in::Running{});
  Do(in::Reschedule{});
  ctx_.ScriptServerful("e2");
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.generation, 2u);
  EXPECT_EQ(wf_.envoy_key, "e2");
}

// ---- PR #4860: one allocation path --------------------------------------------------

TEST_F(ActorMachineTest, RewakeAfterSleepReallocatesServerfulIntoStarting) {
  ToSleepIntent();
  Do(in::Wake{});
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Ev(in::Stopped{}), ElementsAre("drop_commands e1 g1", "publish stopped",
                                             "send e2 g2 #1 start"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
}

TEST_F(ActorMachineTest, RewakeAfterSleepReallocatesServerlessIntoAllocating) {
  ToSleepIntent();
  Do(in::Wake{});
  ctx_.ScriptServerless();
  EXPECT_THAT(Ev(in::Stopped{}),
              ElementsAre("drop_commands e1 g1", "publish stopped", "serverless_start g2 #0"));
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
}

TEST_F(ActorMachineTest, GoingAwayReallocatesServerfulIntoStarting) {
  ToGoingAway();
  ctx_.ScriptServerful("e2");
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  // Still alive after the old 2 s threshold: the bug PR #4860 fixed.
  ctx_.now += 2001;
  EXPECT_THAT(Tick(), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kStarting);
}

TEST_F(ActorMachineTest, GoingAwayReallocatesServerlessIntoAllocating) {
  ToGoingAway();
  ctx_.ScriptServerless();
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
}

TEST_F(ActorMachineTest, AlarmDueSleepReallocatesServerfulIntoStarting) {
  ToSleepIntent();
  Ev(in::SetAlarm{ctx_.now + 10});
  ctx_.now += 100;
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Ev(in::Stopped{}),
              ElementsAre("drop_commands e1 g1", "publish stopped", "send e1 g2 #1 start"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  EXPECT_FALSE(wf_.alarm_ts.has_value());  // the passed alarm is consumed by the wake
}

TEST_F(ActorMachineTest, AlarmDueSleepReallocatesServerlessIntoAllocating) {
  ToSleepIntent();
  Ev(in::SetAlarm{ctx_.now});
  ctx_.ScriptServerless();
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
}

// ---- §6.5 signals ------------------------------------------------------------------

TEST_F(ActorMachineTest, AllocatedMovesAllocatingToStartingForItsGenerationOnly) {
  ToAllocating();
  EXPECT_THAT(Do(in::Allocated{7}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  ctx_.now += 500;
  EXPECT_THAT(Do(in::Allocated{1}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  EXPECT_THAT(Do(in::Allocated{1}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

// Keel: a serverless start that failed before its runtime's envoy took the actor
// (actors.md §6.10 step 3) is lost at once and backs off like a failed allocation.
TEST_F(ActorMachineTest, ServerlessStartFailedLosesTheAllocationIntoTheBackoff) {
  ToAllocating();
  EXPECT_THAT(Do(in::ServerlessStartFailed{7}), IsEmpty());
  EXPECT_FALSE(last_changed_) << "another generation's failure";
  const std::string pool_error = R"({"serverless_http_error":{"status_code":500,"body":""}})";
  EXPECT_THAT(Do(in::ServerlessStartFailed{1, pool_error}), ElementsAre("publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_EQ(ctx_.slots_released, 1);
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kRunnerPoolError, pool_error}))
      << "actors.md §6.6: the runner-pool error is the actor's recorded error";
  EXPECT_EQ(ToError(*wf_.error).code(), "runner_pool_error");
  EXPECT_TRUE(wf_.stale_hosts.empty());
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 2000);
  EXPECT_EQ(wf_.reschedule_ts, ctx_.now + 2000);
  // A wake while it backs off does not start it again at once.
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  // The retry starts generation 2; once Allocated (still no event), a failure loses it too.
  ctx_.ScriptServerless();
  EXPECT_THAT(TickAtDeadline(), ElementsAre("serverless_start g2 #0"));
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  Do(in::Allocated{2});
  ASSERT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_FALSE(wf_.error.has_value()) << "cleared by the allocation, as every error";
  EXPECT_THAT(Do(in::ServerlessStartFailed{2, "{}"}), ElementsAre("publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 4000) << "the backoff doubles";
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kRunnerPoolError, "{}"}));
}

TEST_F(ActorMachineTest, ServerlessStartFailedIsIgnoredOnceTheEnvoyTookTheActor) {
  ToAllocating();
  Do(in::Allocated{1});
  Ev(in::Running{}, "sl1");
  ASSERT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_THAT(Do(in::ServerlessStartFailed{1}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  EXPECT_EQ(wf_.transition, Transition::kRunning);
}

TEST_F(ActorMachineTest, ServerlessStartFailedHonoursADestroyOrSleepAskedWhileStarting) {
  ToAllocating();
  Do(in::Destroy{});
  Strings destroyed = Do(in::ServerlessStartFailed{1});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_THAT(destroyed, ::testing::Contains("publish destroy_complete"));

  wf_ = ActorWorkflow{};
  ToAllocating();
  Do(in::Sleep{});
  EXPECT_THAT(Do(in::ServerlessStartFailed{1}), ElementsAre("publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping) << "asked to sleep: no retry";
}

TEST_F(ActorMachineTest, RepeatedServerlessStartFailuresGiveUpToSleeping) {
  ToAllocating();
  int backoffs = 0;
  for (; backoffs < 20; ++backoffs) {
    Do(in::ServerlessStartFailed{wf_.generation});
    if (wf_.transition != Transition::kReallocating) break;
    ctx_.ScriptServerless();
    TickAtDeadline();
    ASSERT_EQ(wf_.transition, Transition::kAllocating);
  }
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  // 2, 4, … 256 s and one capped retry: as many retries as the backoff has steps.
  EXPECT_EQ(backoffs, ctx_.th.max_backoff_exponent + 1);
  EXPECT_FALSE(NextDeadline(wf_).has_value());
}

// An actor of a serverless pool backs off by the serverless_* thresholds (actors.md §6.12),
// a serverful one by the actor's own; a failed allocation names its pool's kind.
TEST_F(ActorMachineTest, ServerlessPoolsBackOffByTheirOwnThresholds) {
  ctx_.th.serverless_base_retry_ms = 500;
  ctx_.th.serverless_max_backoff_exponent = 1;
  ctx_.th.serverless_retry_reset_ms = 60000;
  ToAllocating();
  Do(in::ServerlessStartFailed{1});
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 500);
  ctx_.ScriptServerless();
  TickAtDeadline();
  Do(in::ServerlessStartFailed{2});
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 1000);
  ctx_.ScriptServerless();
  TickAtDeadline();
  Do(in::ServerlessStartFailed{3});
  EXPECT_EQ(wf_.transition, Transition::kSleeping)
      << "spent after serverless_max_backoff_exponent + 1 retries";

  // The pool at its concurrency limit: a serverless failure, the serverless backoff.
  wf_ = ActorWorkflow{};
  ctx_.ScriptFailure(Allocation::Failure::kConcurrentActorLimitReached);
  Do(in::Create{});
  ASSERT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 500);
  // No envoys: a serverful pool, the actor's backoff (base_retry_ms).
  wf_ = ActorWorkflow{};
  ctx_.ScriptFailure(Allocation::Failure::kNoEnvoys);
  Do(in::Create{});
  ASSERT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + ctx_.th.base_retry_ms);
}

// actors.md §6.10 step 4: at request_lifespan − drain_grace_period the instance the request
// started is moved (Stop{GOING_AWAY}) and reallocated after its stop; another generation's
// drain, or one for an instance already stopping, changes nothing.
TEST_F(ActorMachineTest, ServerlessDrainMovesTheInstanceItsRequestStarted) {
  ToAllocating();
  Do(in::Allocated{1});
  EXPECT_THAT(Do(in::ServerlessDrain{1}), IsEmpty()) << "no envoy took it yet";
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  Ev(in::Running{}, "sl1");
  ASSERT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_THAT(Do(in::ServerlessDrain{2}), IsEmpty());
  EXPECT_FALSE(last_changed_) << "another generation's request";
  EXPECT_THAT(Do(in::ServerlessDrain{1}), ElementsAre("send sl1 g1 #1 stop GOING_AWAY"));
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_FALSE(wf_.connectable);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + ctx_.th.stop_ms);
  // Its stop reallocates: a new serverless start, generation 2.
  ctx_.ScriptServerless();
  Strings stopped = Ev(in::Stopped{}, "sl1");
  EXPECT_THAT(stopped, ::testing::Contains("serverless_start g2 #0"));
  EXPECT_EQ(wf_.transition, Transition::kAllocating);
  EXPECT_EQ(wf_.generation, 2u);

  // An instance already asked to sleep keeps its course: it sleeps.
  wf_ = ActorWorkflow{};
  ToAllocating();
  Ev(in::Running{}, "sl1");
  Ev(in::IntentSleep{}, "sl1");
  ASSERT_EQ(wf_.transition, Transition::kSleepIntent);
  EXPECT_THAT(Do(in::ServerlessDrain{1}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
}

// A serverful instance is never drained (its envoy is not a request).
TEST_F(ActorMachineTest, ServerlessDrainIgnoresServerfulInstances) {
  ToRunning();
  EXPECT_THAT(Do(in::ServerlessDrain{1}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kRunning);
}

TEST_F(ActorMachineTest, WakeAllocatesASleepingActor) {
  ToSleeping();
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g2 #1 start"));
  EXPECT_FALSE(wf_.sleeping);
  EXPECT_EQ(wf_.sleep_ts, 0);
}

TEST_F(ActorMachineTest, WakeDuringSleepIntentSetsRewake) {
  ToSleepIntent();
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_TRUE(wf_.rewake_after_stop);
}

TEST_F(ActorMachineTest, WakeClearsAPassedAlarmAndIsOtherwiseANoOp) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 5});
  ctx_.now += 10;
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(wf_.alarm_ts.has_value());
  EXPECT_EQ(wf_.transition, Transition::kRunning);
  Ev(in::SetAlarm{ctx_.now + 5});
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_EQ(wf_.alarm_ts, ctx_.now + 5);
}

TEST_F(ActorMachineTest, WakeIsANoOpWhileStartingAllocatingOrReallocating) {
  ToStarting();
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  wf_ = {};
  ToAllocating();
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  wf_ = {};
  ToReallocating();
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

TEST_F(ActorMachineTest, SleepSignalStopsARunningActor) {
  ToRunning();
  EXPECT_THAT(Do(in::Sleep{}), ElementsAre("send e1 g1 #2 stop SLEEP_INTENT"));
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
  EXPECT_TRUE(wf_.sleeping);
  EXPECT_FALSE(wf_.connectable);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
}

TEST_F(ActorMachineTest, SleepSignalPutsAReallocatingActorToSleep) {
  ToReallocating();
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.pending_allocation_ts, 0);
  EXPECT_EQ(NextDeadline(wf_), std::nullopt);
}

TEST_F(ActorMachineTest, SleepSignalIsIgnoredWhereThereIsNothingToStop) {
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());  // kCreated
  EXPECT_FALSE(last_changed_);
  ToSleeping();
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  wf_ = {};
  ToSleepIntent();
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

// Keel: a sleep asked for while the actor starts is applied once it runs, not dropped.
TEST_F(ActorMachineTest, SleepWhileStartingSleepsOnceRunning) {
  ToStarting();
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());
  EXPECT_TRUE(last_changed_);
  EXPECT_TRUE(wf_.sleep_after_start);
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("publish ready", "send e1 g1 #2 stop SLEEP_INTENT"));
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
  EXPECT_FALSE(wf_.sleep_after_start);
  EXPECT_FALSE(wf_.connectable);
  EXPECT_NE(wf_.start_ts, 0);
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kSleeping);  // asleep, not destroyed
}

TEST_F(ActorMachineTest, SleepWhileAllocatingSleepsOnceRunning) {
  ToAllocating();
  Do(in::Sleep{});
  Do(in::Allocated{1});
  EXPECT_TRUE(wf_.sleep_after_start);
  EXPECT_THAT(Ev(in::Running{}, "sl1"),
              ElementsAre("publish ready", "send sl1 g1 #1 stop SLEEP_INTENT"));
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
}

TEST_F(ActorMachineTest, WakeAfterASleepWhileStartingKeepsTheActorRunning) {
  ToStarting();
  Do(in::Sleep{});
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(wf_.sleep_after_start);
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("publish ready"));
  EXPECT_EQ(wf_.transition, Transition::kRunning);
}

TEST_F(ActorMachineTest, DestroySupersedesASleepWhileStarting) {
  ToStarting();
  Do(in::Sleep{});
  Do(in::Destroy{});
  EXPECT_FALSE(wf_.sleep_after_start);
  EXPECT_THAT(Do(in::Sleep{}), IsEmpty());
  EXPECT_FALSE(last_changed_);  // a destroy is pending: the sleep is not remembered
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("send e1 g1 #2 stop DESTROY"));
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
}

TEST_F(ActorMachineTest, ASleepWhileStartingEndsWithTheInstance) {
  // Lost at the start threshold: the actor sleeps anyway, and the next instance starts
  // without the old request.
  ToStarting();
  Do(in::Sleep{});
  TickAtDeadline();
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_FALSE(wf_.sleep_after_start);
  ctx_.ScriptServerful("e2");  // e1 is excluded: it may still host the lost generation
  ctx_.connected.insert("e2");
  Do(in::Wake{});
  ASSERT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_THAT(Ev(in::Running{}, "e2"), ElementsAre("publish ready"));
  // Moved off a draining envoy while starting: the move wins, as over a sleep intent.
  wf_ = {};
  ToStarting();
  Do(in::Sleep{});
  Do(in::EnvoyStopping{"e1"});
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_FALSE(wf_.sleep_after_start);
}

TEST_F(ActorMachineTest, RescheduleMovesARunningActorAway) {
  ToRunning();
  EXPECT_THAT(Do(in::Reschedule{}), ElementsAre("send e1 g1 #2 stop GOING_AWAY"));
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  EXPECT_FALSE(wf_.connectable);
}

TEST_F(ActorMachineTest, RescheduleDuringAnIntentTurnsItIntoAMoveWithoutANewStop) {
  ToStopIntent();
  ctx_.now += 1000;
  EXPECT_THAT(Do(in::Reschedule{}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  ctx_.ScriptServerful("e2");
  Ev(in::Stopped{});  // reallocated, not destroyed
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  wf_ = {};
  ToSleepIntent();
  EXPECT_THAT(Do(in::EnvoyStopping{"e1"}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_FALSE(wf_.sleeping);
}

TEST_F(ActorMachineTest, RescheduleIsIgnoredWhileStartingOrIdle) {
  ToStarting();
  EXPECT_THAT(Do(in::Reschedule{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  wf_ = {};
  ToSleeping();
  EXPECT_THAT(Do(in::Reschedule{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  wf_ = {};
  ToAllocating();
  EXPECT_THAT(Do(in::Reschedule{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

TEST_F(ActorMachineTest, EnvoyStoppingMovesAStartingServerfulActor) {
  ToStarting();
  EXPECT_THAT(Do(in::EnvoyStopping{"e1"}), ElementsAre("send e1 g1 #2 stop GOING_AWAY"));
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
  EXPECT_THAT(Ev(in::Running{}), IsEmpty());  // too late: it is moving
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
}

TEST_F(ActorMachineTest, EnvoyStoppingMovesOnlyActorsOfThatEnvoy) {
  ToRunning();
  EXPECT_THAT(Do(in::EnvoyStopping{"other"}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_THAT(Do(in::EnvoyStopping{"e1"}), ElementsAre("send e1 g1 #2 stop GOING_AWAY"));
  EXPECT_EQ(wf_.transition, Transition::kGoingAway);
}

// ---- §6.5 events -------------------------------------------------------------------

TEST_F(ActorMachineTest, RunningEventMakesTheActorConnectable) {
  ToStarting();
  ctx_.now += 1234;
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("publish ready"));
  EXPECT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_TRUE(wf_.connectable);
  EXPECT_EQ(wf_.connectable_ts, ctx_.now);
  EXPECT_EQ(wf_.start_ts, ctx_.now);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 15000);
}

TEST_F(ActorMachineTest, RunningEventWhileAllocatingIsAccepted) {
  ToAllocating();
  EXPECT_THAT(Ev(in::Running{}, "sl1"), ElementsAre("publish ready"));
  EXPECT_EQ(wf_.envoy_key, "sl1");  // adopted from the first event
}

TEST_F(ActorMachineTest, IntentSleepStopsWithSleepIntent) {
  ToRunning();
  EXPECT_THAT(Ev(in::IntentSleep{}), ElementsAre("send e1 g1 #2 stop SLEEP_INTENT"));
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
  EXPECT_TRUE(wf_.sleeping);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
}

TEST_F(ActorMachineTest, IntentStopStopsWithStopIntent) {
  ToRunning();
  EXPECT_THAT(Ev(in::IntentStop{}), ElementsAre("send e1 g1 #2 stop STOP_INTENT"));
  EXPECT_EQ(wf_.transition, Transition::kStopIntent);
  EXPECT_FALSE(wf_.connectable);
  EXPECT_EQ(wf_.connectable_ts, 0);
}

TEST_F(ActorMachineTest, IntentsOutsideRunningAreIgnoredButConsumeTheIndex) {
  ToStarting();
  EXPECT_THAT(Ev(in::IntentSleep{}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(wf_.last_event_index, 0);
  EXPECT_THAT(Ev(in::IntentStop{}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("publish ready"));
  Ev(in::IntentSleep{});
  EXPECT_THAT(Ev(in::IntentStop{}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
}

TEST_F(ActorMachineTest, SetAlarmIsStoredAndAcknowledgedAtOnce) {
  ToRunning();
  EXPECT_THAT(Ev(in::SetAlarm{ctx_.now + 60000}), ElementsAre("ack e1 g1 #1"));
  EXPECT_EQ(wf_.alarm_ts, ctx_.now + 60000);
  EXPECT_EQ(wf_.last_acked_event_index, 1);
  EXPECT_THAT(Ev(in::SetAlarm{std::nullopt}), ElementsAre("ack e1 g1 #2"));
  EXPECT_FALSE(wf_.alarm_ts.has_value());
}

// ---- §4.1 command indices ----------------------------------------------------------

TEST_F(ActorMachineTest, ServerfulCommandIndicesStartAtOneAndResetPerAllocation) {
  ToRunning();
  EXPECT_THAT(Do(in::Reschedule{}), ElementsAre("send e1 g1 #2 stop GOING_AWAY"));
  ctx_.ScriptFailure();
  EXPECT_THAT(TickAtDeadline(), ElementsAre("send e1 g1 #3 stop LOST", "publish stopped",
                                            "publish failed no_envoys"));
  wf_ = {};
  ToSleepIntent();
  Do(in::Wake{});
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Ev(in::Stopped{}), ::testing::Contains("send e2 g2 #1 start"));
  ctx_.last_ping["e2"] = ctx_.now;
  Ev(in::Running{}, "e2");
  EXPECT_THAT(Do(in::Sleep{}), ElementsAre("send e2 g2 #2 stop SLEEP_INTENT"));
}

TEST_F(ActorMachineTest, ServerlessCommandIndicesStartAtZero) {
  ToAllocating();
  Do(in::Allocated{1});
  Ev(in::Running{}, "sl1");
  EXPECT_THAT(Do(in::Sleep{}), ElementsAre("send sl1 g1 #1 stop SLEEP_INTENT"));
  EXPECT_THAT(TickAtDeadline(), ElementsAre("send sl1 g1 #2 stop LOST", "publish stopped"));
}

// ---- §4.8 event dedup and acks -----------------------------------------------------

TEST_F(ActorMachineTest, EventsOfOtherInstancesStopThemAndOldIndicesAreIgnored) {
  ToRunning();
  // Instances the actor does not know are told to stop; the current one is untouched.
  EXPECT_THAT(EvAt(in::IntentSleep{}, 2, 5), ElementsAre("stop_stray e1 g2"));
  EXPECT_THAT(EvAt(in::IntentSleep{}, 0, 5), ElementsAre("stop_stray e1 g0"));
  EXPECT_THAT(EvAt(in::IntentSleep{}, 1, 5, "intruder"), ElementsAre("stop_stray intruder g1"));
  EXPECT_THAT(EvAt(in::Stopped{}, 2, 6), IsEmpty());      // an unknown instance that stopped
  EXPECT_THAT(EvAt(in::IntentSleep{}, 1, 0), IsEmpty());  // index 0 was Running
  EXPECT_FALSE(last_changed_);
  EXPECT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_THAT(EvAt(in::IntentSleep{}, 1, 3), ElementsAre("send e1 g1 #2 stop SLEEP_INTENT"));
  EXPECT_EQ(wf_.last_event_index, 3);
  EXPECT_THAT(EvAt(in::Stopped{}, 1, 3), IsEmpty());  // a resend
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
}

TEST_F(ActorMachineTest, EventsAreAcknowledgedAfter250) {
  ToRunning();  // index 0
  for (int64_t i = 1; i < 250; ++i) {
    ASSERT_THAT(EvAt(in::Running{}, 1, i), IsEmpty()) << i;  // ignored while running
  }
  EXPECT_EQ(wf_.last_acked_event_index, -1);
  EXPECT_THAT(EvAt(in::Running{}, 1, 250), ElementsAre("ack e1 g1 #250"));
  EXPECT_EQ(wf_.last_acked_event_index, 250);
  EXPECT_THAT(EvAt(in::Running{}, 1, 500), IsEmpty());
  EXPECT_THAT(EvAt(in::Running{}, 1, 501), ElementsAre("ack e1 g1 #501"));
}

TEST_F(ActorMachineTest, EventCheckpointsResetPerAllocation) {
  ToGoingAway();
  EvAt(in::SetAlarm{std::nullopt}, 1, 9);
  ctx_.ScriptServerful("e2");
  EvAt(in::Stopped{}, 1, 10);
  EXPECT_EQ(wf_.last_event_index, -1);
  EXPECT_EQ(wf_.last_acked_event_index, -1);
  EXPECT_THAT(EvAt(in::Running{}, 2, 0, "e2"), ElementsAre("publish ready"));
}

// ---- §6.6 stop handling ------------------------------------------------------------

TEST_F(ActorMachineTest, SleepIntentStoppedGoesToSleep) {
  ToSleepIntent();
  ctx_.now += 777;
  EXPECT_THAT(Ev(in::Stopped{}), ElementsAre("drop_commands e1 g1", "publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_TRUE(wf_.sleeping);
  EXPECT_EQ(wf_.sleep_ts, ctx_.now);
  EXPECT_EQ(wf_.envoy_key, "");
  EXPECT_FALSE(wf_.slot_held);
  EXPECT_EQ(ctx_.slots_released, 1);
  EXPECT_EQ(NextDeadline(wf_), std::nullopt);
  EXPECT_FALSE(wf_.error.has_value());
}

TEST_F(ActorMachineTest, StopIntentStoppedOkDestroys) {
  ToStopIntent();
  EXPECT_THAT(Ev(in::Stopped{}),
              ElementsAre("drop_commands e1 g1", "publish stopped", "delete_data",
                          "release_key", "publish destroy_complete"));
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_TRUE(wf_.destroyed);
  EXPECT_EQ(wf_.destroy_ts, ctx_.now);
}

TEST_F(ActorMachineTest, RunningStoppedOkDestroys) {
  ToRunning();
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
}

TEST_F(ActorMachineTest, StoppedWithErrorSleepsAndRecordsCrash) {
  ToRunning();
  EXPECT_THAT(Ev(in::Stopped{StopCode::kError, "boom"}),
              ElementsAre("drop_commands e1 g1", "publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kCrashed, "boom"}));
  EXPECT_EQ(ToError(*wf_.error).ToString(), "actor.crashed: boom");
}

TEST_F(ActorMachineTest, StartFailureSleepsAndRecordsCrash) {
  ToStarting();
  Ev(in::Stopped{StopCode::kError, "start failed"});
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.error->kind, ActorError::Kind::kCrashed);
}

TEST_F(ActorMachineTest, CrashIsNotOverwrittenByALaterGenericError) {
  ToRunning();
  Ev(in::Stopped{StopCode::kError, "boom"});
  ctx_.ScriptFailure();
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("publish failed no_envoys"));
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kCrashed, "boom"}));
  ctx_.ScriptFailure(Allocation::Failure::kConcurrentActorLimitReached);
  TickAtDeadline();
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kCrashed, "boom"}));
  // A new generation starts clean (Rivet clears the error on allocation).
  ctx_.ScriptServerful("e1");
  Do(in::PoolCapacityAvailable{});
  EXPECT_FALSE(wf_.error.has_value());
  TickAtDeadline();  // start threshold: lost
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kEnvoyNoResponse, "e1"}));
}

TEST_F(ActorMachineTest, ErrorIsClearedWhenTheActorBecomesConnectable) {
  ToStarting();
  wf_.error = ActorError{ActorError::Kind::kNoEnvoys, ""};
  Ev(in::Running{});
  EXPECT_FALSE(wf_.error.has_value());
}

TEST_F(ActorMachineTest, StartTsIsTheFirstStart) {
  ToRunning();
  int64_t first = wf_.start_ts;
  Do(in::Sleep{});
  Ev(in::Stopped{});
  ctx_.now += 5000;
  ctx_.ScriptServerful("e1");
  Do(in::Wake{});
  Ev(in::Running{});
  EXPECT_EQ(wf_.start_ts, first);
  EXPECT_EQ(wf_.connectable_ts, ctx_.now);
}

TEST_F(ActorMachineTest, ReallocatingIsMarkedSleepingWithTheNextAttempt) {
  ToReallocating();
  EXPECT_TRUE(wf_.sleeping);
  EXPECT_EQ(wf_.sleep_ts, ctx_.now);
  EXPECT_EQ(wf_.reschedule_ts, ctx_.now + 2000);
  TickAtDeadline();
  EXPECT_EQ(wf_.reschedule_ts, ctx_.now + 4000);
}

TEST_F(ActorMachineTest, ACrashReplacesAGenericError) {
  ToReallocating();
  ctx_.ScriptServerful("e1");
  ctx_.connected.insert("e1");
  Do(in::PoolCapacityAvailable{});
  Ev(in::Stopped{StopCode::kError, "bad"});
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kCrashed, "bad"}));
}

TEST_F(ActorMachineTest, StoppedIsHandledInEveryInstanceState) {
  ToAllocating();
  Ev(in::Stopped{StopCode::kError, "x"}, "sl1");
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_FALSE(wf_.slot_held);
}

// ---- §6.6 lost ---------------------------------------------------------------------

TEST_F(ActorMachineTest, StartingWithoutResponseIsLostAfterStartThreshold) {
  ToStarting();
  ctx_.now += 29999;
  EXPECT_THAT(Tick(), IsEmpty());
  ctx_.now += 1;
  EXPECT_THAT(Tick(), ElementsAre("send e1 g1 #2 stop LOST", "publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kEnvoyNoResponse, "e1"}));
  EXPECT_EQ(ToError(*wf_.error).Id(), "actor.envoy_no_response");
}

TEST_F(ActorMachineTest, AllocatingWithoutAllocatedIsLostAfterAllocationThreshold) {
  ToAllocating();
  ctx_.now += 2000;
  // No envoy known: no LOST stop and, as in Rivet, no envoy error.
  EXPECT_THAT(Tick(), ElementsAre("publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_FALSE(wf_.error.has_value());
}

TEST_F(ActorMachineTest, IntentStatesAreLostAfterStopThreshold) {
  ToSleepIntent();
  EXPECT_THAT(TickAtDeadline(), ElementsAre("send e1 g1 #3 stop LOST", "publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);

  wf_ = {};
  ToStopIntent();
  TickAtDeadline();
  EXPECT_EQ(wf_.transition, Transition::kSleeping);  // lost → Sleep, not destroy
  EXPECT_EQ(wf_.error->kind, ActorError::Kind::kEnvoyNoResponse);

  wf_ = {};
  ToGoingAway();
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(TickAtDeadline(), ElementsAre("send e1 g1 #3 stop LOST", "publish stopped",
                                            "send e2 g2 #1 start"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
}

TEST_F(ActorMachineTest, DestroyingWithoutResponseFinishesTheDestroy) {
  ToDestroying();
  EXPECT_THAT(TickAtDeadline(),
              ElementsAre("send e1 g1 #3 stop LOST", "publish stopped", "delete_data",
                          "release_key", "publish destroy_complete"));
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_FALSE(wf_.error.has_value());
}

TEST_F(ActorMachineTest, RunningLivenessKeepsAPingingEnvoy) {
  ToRunning();
  ctx_.now += 15000;
  ctx_.last_ping["e1"] = ctx_.now - 3000;
  EXPECT_THAT(Tick(), IsEmpty());
  EXPECT_TRUE(last_changed_);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 15000);
}

TEST_F(ActorMachineTest, RunningLivenessLosesAnEnvoyThatStoppedPinging) {
  ToRunning();
  ctx_.now += 15000;
  ctx_.last_ping["e1"] = ctx_.now - 15001;
  EXPECT_THAT(Tick(), ElementsAre("send e1 g1 #2 stop LOST", "publish stopped"));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.error, (ActorError{ActorError::Kind::kEnvoyConnectionLost, "e1"}));
}

TEST_F(ActorMachineTest, RunningLivenessLosesAnUnknownEnvoy) {
  ToRunning();
  ctx_.last_ping.clear();
  TickAtDeadline();
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
}

TEST_F(ActorMachineTest, EnvoyDisconnectedBringsTheLivenessCheckForward) {
  ToRunning();
  ctx_.now += 10000;
  ctx_.connected.erase("e1");
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}), IsEmpty());
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 5000);  // the earlier of the two
  EXPECT_TRUE(wf_.envoy_disconnected);
  EXPECT_THAT(Do(in::EnvoyDisconnected{"other"}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

// ---- §6.7 backoff ------------------------------------------------------------------

TEST_F(ActorMachineTest, BackoffDoublesFromTwoSecondsCappedAtExponentEight) {
  ctx_.th.retry_duration_ms = int64_t{1} << 40;
  ToReallocating();
  std::vector<int64_t> delays;
  int64_t last = ctx_.now;
  for (int i = 0; i < 11; ++i) {
    delays.push_back(*NextDeadline(wf_) - last);
    ctx_.now = *NextDeadline(wf_);
    last = ctx_.now;
    Tick();
    ASSERT_EQ(wf_.transition, Transition::kReallocating);
  }
  EXPECT_THAT(delays, ElementsAre(2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000,
                                  512000, 512000, 512000));
}

// The largest settings the config allows (base 30 days, exponent 62) overflowed the shift
// (UBSan); the delay saturates at 30 days instead.
TEST_F(ActorMachineTest, BackoffSaturatesAtThirtyDaysForTheLargestSettings) {
  constexpr int64_t kThirtyDays = int64_t{30} * 24 * 60 * 60 * 1000;
  ctx_.th.retry_duration_ms = int64_t{1} << 50;
  ctx_.th.retry_reset_ms = int64_t{1} << 50;
  ctx_.th.max_backoff_exponent = 62;
  for (int64_t base : {int64_t{2000}, kThirtyDays}) {
    ctx_.th.base_retry_ms = base;
    wf_ = {};
    ToReallocating();
    int64_t last = ctx_.now;
    for (int i = 0; i < 70; ++i) {
      const int64_t delay = *NextDeadline(wf_) - last;
      EXPECT_GT(delay, 0) << i;
      EXPECT_LE(delay, kThirtyDays) << i;
      ctx_.now = *NextDeadline(wf_);
      last = ctx_.now;
      Tick();
      ASSERT_EQ(wf_.transition, Transition::kReallocating);
    }
    EXPECT_EQ(*NextDeadline(wf_) - last, kThirtyDays);
  }
}

TEST_F(ActorMachineTest, BackoffGivesUpToSleepingAfterRetryDuration) {
  int64_t t0 = ctx_.now;
  ToReallocating();
  std::vector<int64_t> retries;
  while (wf_.transition == Transition::kReallocating) {
    ctx_.now = *NextDeadline(wf_);
    retries.push_back(ctx_.now - t0);
    Tick();
  }
  EXPECT_THAT(retries, ElementsAre(2000, 6000, 14000, 30000, 62000, 126000, 254000, 300000));
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.error->kind, ActorError::Kind::kNoEnvoys);
  EXPECT_EQ(wf_.pending_allocation_ts, 0);
  EXPECT_EQ(ctx_.excludes.size(), 9u);
  // A later Wake tries again.
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g1 #1 start"));
}

TEST_F(ActorMachineTest, BackoffAttemptsResetAfterTenMinutes) {
  ToReallocating();                               // delay 2 s
  for (int i = 0; i < 3; ++i) TickAtDeadline();   // 4, 8, 16 s
  ctx_.ScriptServerful("e1");
  ctx_.connected.insert("e1");
  TickAtDeadline();  // success
  ASSERT_EQ(wf_.transition, Transition::kStarting);
  Ev(in::Stopped{StopCode::kError, "x"});  // crash → sleep
  // Within 10 minutes of the last retry the exponent keeps growing.
  ctx_.now += 60000;
  ctx_.ScriptFailure();
  Do(in::Wake{});
  EXPECT_EQ(*NextDeadline(wf_) - ctx_.now, 32000);
  Do(in::Sleep{});
  // After 10 minutes it starts over.
  ctx_.now += 600001;
  ctx_.ScriptFailure();
  Do(in::Wake{});
  EXPECT_EQ(*NextDeadline(wf_) - ctx_.now, 2000);
}

TEST_F(ActorMachineTest, PoolCapacityAvailableRetriesReallocatingAtOnce) {
  ToReallocating();
  ctx_.now += 10;
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::PoolCapacityAvailable{}), ElementsAre("send e1 g1 #1 start"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(wf_.pending_allocation_ts, 0);
  // Elsewhere it is a no-op.
  EXPECT_THAT(Do(in::PoolCapacityAvailable{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

TEST_F(ActorMachineTest, FailedRetryBeforeDeadlineKeepsTheEpisode) {
  ToReallocating();
  int64_t since = wf_.realloc_since_ts;
  ctx_.now += 100;
  EXPECT_THAT(Do(in::PoolCapacityAvailable{}), ElementsAre("publish failed no_envoys"));
  EXPECT_EQ(wf_.realloc_since_ts, since);
  EXPECT_EQ(wf_.pending_allocation_ts, since);
  EXPECT_EQ(*NextDeadline(wf_), ctx_.now + 4000);
}

// ---- §6.8 alarms -------------------------------------------------------------------

TEST_F(ActorMachineTest, AlarmWakesASleepingActor) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 60000});
  Do(in::Sleep{});
  Ev(in::Stopped{});
  ASSERT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 60000);
  ctx_.now += 59999;
  EXPECT_THAT(Tick(), IsEmpty());
  EXPECT_FALSE(last_changed_);
  ctx_.now += 1;
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Tick(), ElementsAre("send e1 g2 #1 start"));
  EXPECT_FALSE(wf_.alarm_ts.has_value());
}

TEST_F(ActorMachineTest, AlarmDueWithNoCapacityBacksOff) {
  ToSleeping();
  wf_.alarm_ts = ctx_.now + 5;
  ctx_.now += 5;
  EXPECT_THAT(Tick(), ElementsAre("publish failed no_envoys"));
  EXPECT_EQ(wf_.transition, Transition::kReallocating);
  EXPECT_FALSE(wf_.alarm_ts.has_value());
}

TEST_F(ActorMachineTest, SleepingKeepsNoInstanceFields) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 1000});
  Do(in::Sleep{});
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.envoy_key, "");
  EXPECT_EQ(wf_.deadline_ts, 0);
  EXPECT_FALSE(wf_.destroy_after_start || wf_.rewake_after_stop || wf_.slot_held ||
               wf_.connectable || wf_.envoy_disconnected);
  Bytes b = EncodeWorkflow(wf_);
  EXPECT_LE(b.size(), 48u);
}

// ---- §6.9 destroy ------------------------------------------------------------------

TEST_F(ActorMachineTest, DestroyARunningActorStopsItFirst) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 1000});
  EXPECT_THAT(Do(in::Destroy{}),
              ElementsAre("publish destroy_started", "send e1 g1 #2 stop DESTROY"));
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
  EXPECT_FALSE(wf_.connectable);
  EXPECT_THAT(Do(in::Destroy{}), IsEmpty());
  EXPECT_THAT(Ev(in::Stopped{}),
              ElementsAre("drop_commands e1 g1", "publish stopped", "delete_data",
                          "release_key", "publish destroy_complete"));
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_FALSE(wf_.alarm_ts.has_value());
  EXPECT_EQ(ctx_.slots_released, 1);
}

TEST_F(ActorMachineTest, DestroyingIgnoresAStopErrorForTheRecord) {
  ToDestroying();
  Ev(in::Stopped{StopCode::kError, "x"});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_FALSE(wf_.error.has_value());
}

TEST_F(ActorMachineTest, DestroyFromEachIntentState) {
  ToSleepIntent();
  EXPECT_THAT(Do(in::Destroy{}), ElementsAre("publish destroy_started"));  // stop is out
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
  EXPECT_FALSE(wf_.sleeping);
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 30000);
  wf_ = {};
  ToStopIntent();
  Do(in::Destroy{});
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
  wf_ = {};
  ToGoingAway();
  Do(in::Destroy{});
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
  ctx_.ScriptServerful("e2");
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);  // not reallocated
}

TEST_F(ActorMachineTest, DestroyWhileStartingWaitsForRunning) {
  ToStarting();
  EXPECT_THAT(Do(in::Destroy{}), ElementsAre("publish destroy_started"));
  EXPECT_TRUE(wf_.destroy_after_start);
  EXPECT_THAT(Do(in::Destroy{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
  EXPECT_THAT(Ev(in::Running{}), ElementsAre("send e1 g1 #2 stop DESTROY"));
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
  EXPECT_FALSE(wf_.connectable);
  Ev(in::Stopped{});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
}

TEST_F(ActorMachineTest, DestroyWhileAllocatingWaitsThroughAllocated) {
  ToAllocating();
  EXPECT_THAT(Do(in::Destroy{}), ElementsAre("publish destroy_started"));
  Do(in::Allocated{1});
  EXPECT_TRUE(wf_.destroy_after_start);
  EXPECT_THAT(Ev(in::Running{}, "sl1"), ElementsAre("send sl1 g1 #1 stop DESTROY"));
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
}

TEST_F(ActorMachineTest, DestroyWhileStartingThatIsLostFinishesTheDestroy) {
  ToStarting();
  Do(in::Destroy{});
  EXPECT_THAT(TickAtDeadline(),
              ElementsAre("send e1 g1 #2 stop LOST", "publish stopped", "delete_data",
                          "release_key", "publish destroy_complete"));
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
}

TEST_F(ActorMachineTest, DestroyWhileStartingThatCrashesFinishesTheDestroy) {
  ToStarting();
  Do(in::Destroy{});
  Ev(in::Stopped{StopCode::kError, "x"});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
}

TEST_F(ActorMachineTest, DestroyASleepingOrReallocatingActorAtOnce) {
  ToSleeping();
  wf_.alarm_ts = ctx_.now + 100;
  EXPECT_THAT(Do(in::Destroy{}),
              ElementsAre("publish destroy_started", "delete_data", "release_key",
                          "publish destroy_complete"));
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_FALSE(wf_.alarm_ts.has_value());
  EXPECT_EQ(NextDeadline(wf_), std::nullopt);
  wf_ = {};
  ToReallocating();
  Do(in::Destroy{});
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
  EXPECT_EQ(wf_.pending_allocation_ts, 0);
  wf_ = {};
  Do(in::Destroy{});  // before the first allocation
  EXPECT_EQ(wf_.transition, Transition::kDestroyed);
}

TEST_F(ActorMachineTest, DestroyedIgnoresEverything) {
  ToSleeping();
  Do(in::Destroy{});
  ActorWorkflow before = wf_;
  std::vector<Input> inputs = {in::Create{}, in::Wake{}, in::Sleep{}, in::Reschedule{},
                               in::Destroy{}, in::Allocated{1}, in::EnvoyStopping{"e1"},
                               in::EnvoyDisconnected{"e1"}, in::PoolCapacityAvailable{},
                               in::Tick{}};
  ctx_.ScriptServerful("e1");
  for (const Input& i : inputs) {
    EXPECT_THAT(Do(i), IsEmpty());
    EXPECT_FALSE(last_changed_);
  }
  EXPECT_THAT(EvAt(in::Running{}, 1, 99), IsEmpty());
  EXPECT_EQ(wf_, before);
}

// ---- Keel requirement 1: fast recovery ---------------------------------------------

TEST_F(ActorMachineTest, WakeWithDisconnectedEnvoyReallocatesAtOnce) {
  ToRunning();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g1 #2 stop LOST", "publish stopped",
                                          "send e2 g2 #1 start"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(wf_.generation, 2u);
  EXPECT_THAT(ctx_.excludes.back(), ElementsAre("e1"));
  EXPECT_FALSE(wf_.error.has_value());  // recorded, then cleared by the new allocation
  EXPECT_EQ(ctx_.slots_released, 1);
}

TEST_F(ActorMachineTest, WakeWithConnectedEnvoyDoesNothing) {
  ToRunning();
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_FALSE(last_changed_);
}

TEST_F(ActorMachineTest, WakeWhileStartingOnADisconnectedEnvoyReallocates) {
  ToStarting();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g1 #2 stop LOST", "publish stopped",
                                          "send e2 g2 #1 start"));
}

TEST_F(ActorMachineTest, WakeDuringSleepIntentOnADisconnectedEnvoyReallocates) {
  ToSleepIntent();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g1 #3 stop LOST", "publish stopped",
                                          "send e2 g2 #1 start"));
}

TEST_F(ActorMachineTest, DisconnectWithPendingRewakeReallocatesAtOnce) {
  ToSleepIntent();
  Do(in::Wake{});
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}),
              ElementsAre("send e1 g1 #3 stop LOST", "publish stopped", "send e2 g2 #1 start"));
}

TEST_F(ActorMachineTest, DisconnectWhileGoingAwayReallocatesAtOnce) {
  ToGoingAway();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}),
              ElementsAre("send e1 g1 #3 stop LOST", "publish stopped", "send e2 g2 #1 start"));
}

TEST_F(ActorMachineTest, DisconnectWithoutNeedWaitsForTheThreshold) {
  ToSleepIntent();
  ctx_.connected.erase("e1");
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kSleepIntent);
}

TEST_F(ActorMachineTest, DueAlarmWithDisconnectedEnvoyReallocates) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 3000});
  ctx_.connected.erase("e1");
  Do(in::EnvoyDisconnected{"e1"});
  EXPECT_EQ(NextDeadline(wf_), ctx_.now + 3000);  // alarm before the liveness check
  ctx_.now += 3000;
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Tick(), ElementsAre("send e1 g1 #2 stop LOST", "publish stopped",
                                  "send e2 g2 #1 start"));
  EXPECT_FALSE(wf_.alarm_ts.has_value());
}

TEST_F(ActorMachineTest, DisconnectWithAlarmAlreadyDueReallocatesAtOnce) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now});
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}),
              ElementsAre("send e1 g1 #2 stop LOST", "publish stopped", "send e2 g2 #1 start"));
}

TEST_F(ActorMachineTest, DueAlarmAfterReconnectIsLeftToTheRuntime) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 3000});
  ctx_.connected.erase("e1");
  Do(in::EnvoyDisconnected{"e1"});
  ctx_.connected.insert("e1");  // reconnected
  ctx_.now += 3000;
  EXPECT_THAT(Tick(), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kRunning);
  EXPECT_FALSE(wf_.envoy_disconnected);
  EXPECT_EQ(NextDeadline(wf_), wf_.deadline_ts);
}

TEST_F(ActorMachineTest, DestroyingIsNotFastRecovered) {
  ToDestroying();
  ctx_.connected.erase("e1");
  EXPECT_THAT(Do(in::Wake{}), IsEmpty());
  EXPECT_THAT(Do(in::EnvoyDisconnected{"e1"}), IsEmpty());
  EXPECT_EQ(wf_.transition, Transition::kDestroying);
}

// ---- Keel requirement 2: no new generation next to an old one -----------------------

TEST_F(ActorMachineTest, LostEnvoyIsExcludedUntilItsGenerationIsSeenStopped) {
  ToRunning();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  Do(in::Wake{});
  ASSERT_EQ(wf_.stale_hosts.size(), 1u);
  // The next allocation still excludes e1.
  ctx_.connected.insert("e2");
  ctx_.last_ping["e2"] = ctx_.now;
  Ev(in::Running{}, "e2");
  Do(in::Reschedule{});
  ctx_.ScriptServerful("e3");
  Ev(in::Stopped{}, "e2");
  EXPECT_THAT(ctx_.excludes.back(), ElementsAre("e1"));
  // The old generation reports its stop (the replayed Stop{LOST}): e1 is usable again.
  EXPECT_THAT(EvAt(in::Stopped{}, 1, 7, "e1"), ElementsAre("drop_commands e1 g1"));
  EXPECT_TRUE(wf_.stale_hosts.empty());
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  EXPECT_EQ(wf_.envoy_key, "e3");
}

// ---- early start (docs/engine.md): starts an OS crash took back -----------------------

TEST_F(ActorMachineTest, InstanceOfAnUnstoredStartIsToldToStopAndTheActorStaysAsleep) {
  ToSleeping();  // generation 1 stopped
  // Generation 2 was started just before an OS crash that lost its step: its envoy
  // reconnects and replays the instance's Running.
  EXPECT_THAT(EvAt(in::Running{}, 2, 0), ElementsAre("stop_stray e1 g2"));
  EXPECT_FALSE(last_changed_);
  EXPECT_EQ(wf_.transition, Transition::kSleeping);
  EXPECT_EQ(wf_.generation, 1u);
}

TEST_F(ActorMachineTest, StaleHostsGetNoStrayStopTheirStoredStopSuffices) {
  ToRunning();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e2");
  Do(in::Wake{});  // e1's generation 1 is lost: a stale host with a stored Stop{LOST}
  ASSERT_EQ(wf_.stale_hosts.size(), 1u);
  EXPECT_THAT(EvAt(in::IntentSleep{}, 1, 4, "e1"), IsEmpty());
  EXPECT_THAT(EvAt(in::Stopped{}, 1, 5, "e1"), ElementsAre("drop_commands e1 g1"));
  // Once it reported Stopped it is no longer a stale host: a late resend is a stray.
  EXPECT_THAT(EvAt(in::IntentSleep{}, 1, 4, "e1"), ElementsAre("stop_stray e1 g1"));
}

TEST_F(ActorMachineTest, FirstAllocationOfARunAfterAnUncleanEndSkipsAGeneration) {
  ToSleeping();  // generation 1, allocated in run 0
  EXPECT_EQ(wf_.alloc_run, 0u);
  ctx_.run = 1;
  ctx_.unclean = true;  // run 0 did not close the store: it may have sent generation 2
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g3 #1 start"));
  EXPECT_EQ(wf_.alloc_run, 1u);
  // Events of the skipped generation are strays.
  EXPECT_THAT(EvAt(in::Running{}, 2, 0), ElementsAre("stop_stray e1 g2"));
  EXPECT_EQ(wf_.transition, Transition::kStarting);
  // Later allocations of the same run do not skip.
  Ev(in::Running{});
  Ev(in::IntentSleep{});
  Ev(in::Stopped{});
  ASSERT_EQ(wf_.transition, Transition::kSleeping);
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g4 #1 start"));
  // Nor does the first allocation of a run after a clean end.
  Ev(in::Running{});
  Ev(in::IntentSleep{});
  Ev(in::Stopped{});
  ctx_.run = 2;
  ctx_.unclean = false;
  ctx_.ScriptServerful("e1");
  EXPECT_THAT(Do(in::Wake{}), ElementsAre("send e1 g5 #1 start"));
  EXPECT_EQ(wf_.alloc_run, 2u);
}

TEST_F(ActorMachineTest, AllocatorAnsweringAnExcludedEnvoyIsNeverUsed) {
  ToRunning();
  ctx_.connected.erase("e1");
  ctx_.ScriptServerful("e1");  // the fake refuses excluded keys
  Do(in::Wake{});
  EXPECT_EQ(wf_.transition, Transition::kReallocating);
}

TEST_F(ActorMachineTest, ExclusionExpires) {
  ToStarting();
  TickAtDeadline();  // lost → sleep, e1 stale
  ASSERT_EQ(wf_.stale_hosts.size(), 1u);
  ctx_.now += ctx_.th.stale_host_exclusion_ms;
  ctx_.ScriptServerful("e1");
  Do(in::Wake{});
  EXPECT_THAT(ctx_.excludes.back(), IsEmpty());
  EXPECT_EQ(wf_.envoy_key, "e1");
  EXPECT_TRUE(wf_.stale_hosts.empty());
}

TEST_F(ActorMachineTest, StaleHostsAreBounded) {
  ctx_.th.stale_host_exclusion_ms = int64_t{1} << 40;
  ToStarting("k0");
  for (int i = 1; i <= 6; ++i) {
    std::string key = "k" + std::to_string(i);
    ctx_.ScriptServerful(key);
    ctx_.connected.insert(key);
    ctx_.connected.erase("k" + std::to_string(i - 1));
    Do(in::Wake{});
    ASSERT_EQ(wf_.envoy_key, key);
  }
  EXPECT_EQ(wf_.stale_hosts.size(), kMaxStaleHosts);
  EXPECT_EQ(wf_.stale_hosts.front().envoy_key, "k2");
}

// ---- persisted form ----------------------------------------------------------------

TEST_F(ActorMachineTest, WorkflowRoundTripsThroughItsPersistedForm) {
  ToRunning();
  Ev(in::SetAlarm{ctx_.now + 5});
  wf_.error = ActorError{ActorError::Kind::kCrashed, "boom"};
  wf_.stale_hosts.push_back(StaleHost{"old", 0, 77});
  wf_.destroy_after_start = true;
  wf_.sleep_after_start = true;  // flag bit 8: the flags varint takes two bytes
  wf_.alloc_run = 300;  // a multi-byte varint
  Bytes b = EncodeWorkflow(wf_);
  Result<ActorWorkflow> back = DecodeWorkflow(b);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(*back, wf_);
  ActorWorkflow fresh;
  EXPECT_EQ(*DecodeWorkflow(EncodeWorkflow(fresh)), fresh);
  // Every error kind, the runner-pool error (the last added) too; none past it.
  wf_.error =
      ActorError{ActorError::Kind::kRunnerPoolError, R"({"serverless_stream_ended_early":{}})"};
  back = DecodeWorkflow(EncodeWorkflow(wf_));
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(*back, wf_);
  wf_.error->kind = static_cast<ActorError::Kind>(7);
  EXPECT_FALSE(DecodeWorkflow(EncodeWorkflow(wf_)).ok());
}

// Records written before alloc_run existed (version 1) still load, with alloc_run 0.
TEST_F(ActorMachineTest, VersionOneWorkflowsDecodeWithoutAnAllocationRun) {
  ToRunning();
  wf_.alloc_run = 5;  // one varint byte at the end of the v2 form
  Bytes v2 = EncodeWorkflow(wf_);
  ASSERT_EQ(v2.back(), 5);
  Bytes v1(v2.begin(), v2.end() - 1);
  ASSERT_EQ(v1[0], 2);  // u16 LE version prefix
  v1[0] = 1;
  Result<ActorWorkflow> back = DecodeWorkflow(v1);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  ActorWorkflow want = wf_;
  want.alloc_run = 0;
  EXPECT_EQ(*back, want);
  // A version-1 record with the v2 field is malformed; an unknown version is refused.
  Bytes long_v1 = v2;
  long_v1[0] = 1;
  EXPECT_FALSE(DecodeWorkflow(long_v1).ok());
  Bytes v3 = v2;
  v3[0] = 3;
  EXPECT_FALSE(DecodeWorkflow(v3).ok());
}

TEST_F(ActorMachineTest, CorruptPersistedFormIsAnError) {
  ToRunning();
  Bytes b = EncodeWorkflow(wf_);
  Bytes truncated(b.begin(), b.end() - 1);
  EXPECT_FALSE(DecodeWorkflow(truncated).ok());
  Bytes bad = b;
  bad[2] = 99;  // transition
  Result<ActorWorkflow> r = DecodeWorkflow(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().Id(), "protocol.decode_failed");
  Bytes trailing = b;
  trailing.push_back(0);
  EXPECT_FALSE(DecodeWorkflow(trailing).ok());
  Bytes version = b;
  version[0] = 9;
  EXPECT_FALSE(DecodeWorkflow(version).ok());
}

TEST(ActorMachineNames, TransitionNamesAreStable) {
  EXPECT_EQ(TransitionName(Transition::kSleepIntent), "sleep_intent");
  EXPECT_EQ(TransitionName(Transition::kReallocating), "reallocating");
  EXPECT_FALSE(HasInstance(Transition::kSleeping));
  EXPECT_TRUE(HasInstance(Transition::kDestroying));
}

}  // namespace
}  // namespace keel::engine::orch
