// Randomized property test: random input sequences (signals, events from current and old
// generations and from wrong envoys, ticks, connectivity changes, scripted allocation
// outcomes) never violate the invariants listed in actor_machine.h. Seeded, so a failure
// names its seed and is reproducible.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "engine/orchestrator/actor_machine.h"
#include "unit/engine/orchestrator/fake_context.h"

namespace keel::engine::orch {
namespace {

using testing::FakeContext;

const std::vector<std::string> kKeys = {"e0", "e1", "e2", "e3", "e4"};

// What the runs reached, so the generator is known to cover the machine.
struct Coverage {
  std::set<Transition> states;
  std::array<int, 11> visits{};  // steps ending in each state
  int fast_recoveries = 0;  // a LOST stop and a new start in one step
  int gave_up = 0;          // kReallocating -> kSleeping on a tick
  int stale_cleared = 0;    // a DropPendingCommands for an abandoned generation
};

// What the test knows independently of the machine.
struct Model {
  // Last command index sent per generation; absent before its start.
  std::map<uint32_t, int64_t> last_index;
  // (key, generation, until) abandoned without a Stopped, newest last, bounded like the
  // machine's list (kMaxStaleHosts).
  std::vector<StaleHost> maybe_hosting;
  // Every (key, generation) ever started, with the highest event index the test sent.
  std::map<uint32_t, std::string> started_on;
};

class Runner {
 public:
  Runner(uint64_t seed, Coverage& cov) : rng_(seed), cov_(cov) {
    ctx_.now = 1'000'000;
    ctx_.th.stale_host_exclusion_ms = 45000;
    for (const auto& k : kKeys) {
      if (Chance(0.7)) {
        ctx_.connected.insert(k);
      }
      ctx_.last_ping[k] = ctx_.now;
    }
  }

  void Run(int steps) {
    for (int i = 0; i < steps && !::testing::Test::HasFailure(); ++i) {
      Churn();
      if (wf_.transition == Transition::kDestroyed && Chance(0.2)) {
        wf_ = {};  // a new actor (the slot accounting carries over: all released)
        model_ = {};
      }
      Input in = wf_.transition == Transition::kCreated && Chance(0.8) ? Input{in::Create{}}
                                                                        : RandomInput();
      ActorWorkflow before = wf_;
      int taken_before = ctx_.slots_taken;
      size_t allocs_before = ctx_.excludes.size();
      StepResult r = Step(wf_, in, ctx_);
      Check(before, in, r, taken_before, allocs_before);
    }
  }

 private:
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  const std::string& AnyKey() { return kKeys[static_cast<size_t>(Uniform(0, 4))]; }

  // Time passes, envoys come and go, the allocator's next answer is scripted.
  void Churn() {
    int r = Uniform(0, 9);
    if (r < 3) {
      ctx_.now += Uniform(0, 3000);
    } else if (r < 5) {
      std::optional<int64_t> d = NextDeadline(wf_);
      if (d && *d > ctx_.now) {
        ctx_.now = *d;
      }
    } else if (r == 5) {
      ctx_.now += Uniform(10000, 400000);
    }
    if (Chance(0.1)) {
      const std::string& k = AnyKey();
      if (ctx_.connected.count(k)) {
        ctx_.connected.erase(k);
      } else {
        ctx_.connected.insert(k);
      }
    }
    for (const auto& k : kKeys) {
      if (ctx_.connected.count(k) && Chance(0.8)) {
        ctx_.last_ping[k] = ctx_.now;
      }
    }
    ctx_.script.clear();
    int a = Uniform(0, 9);
    if (a < 5) {
      ctx_.ScriptServerful(AnyKey());
    } else if (a < 7) {
      ctx_.ScriptServerless();
    } else if (a < 9) {
      ctx_.ScriptFailure(Allocation::Failure::kNoEnvoys);
    } else {
      ctx_.ScriptFailure(Allocation::Failure::kConcurrentActorLimitReached);
    }
  }

  decltype(in::Event::kind) RandomEventKind() {
    switch (Uniform(0, 5)) {
      case 0: return in::IntentSleep{};
      case 1: return in::IntentStop{};
      case 2: return in::Running{};
      case 3:
        if (Chance(0.3)) return in::Stopped{StopCode::kOk, std::nullopt};  // often destroys
        return in::Stopped{StopCode::kError, std::nullopt};
      case 4: return in::Stopped{StopCode::kError, "crash " + std::to_string(Uniform(0, 9))};
      default:
        if (Chance(0.3)) return in::SetAlarm{std::nullopt};
        return in::SetAlarm{ctx_.now + Uniform(-5000, 60000)};
    }
  }

  Input RandomInput() {
    switch (Uniform(0, 17)) {
      case 0: return in::Create{};
      case 1: return in::Wake{};
      case 2: return in::Sleep{};
      case 3: return in::Reschedule{};
      case 4: return Chance(0.1) ? Input{in::Destroy{}} : Input{in::Wake{}};
      case 5: return in::Allocated{Chance(0.8) ? wf_.generation : wf_.generation + 1};
      case 6: return in::EnvoyStopping{Chance(0.7) ? wf_.envoy_key : AnyKey()};
      case 7: return in::EnvoyDisconnected{Chance(0.7) ? wf_.envoy_key : AnyKey()};
      case 8:
        // Keel: a serverless start that failed before its envoy took the actor.
        if (Chance(0.3)) {
          return in::ServerlessStartFailed{Chance(0.8) ? wf_.generation : wf_.generation + 1};
        }
        // Keel: the request that started a generation reaches its drain time.
        if (Chance(0.2)) {
          return in::ServerlessDrain{Chance(0.8) ? wf_.generation : wf_.generation - 1};
        }
        return in::PoolCapacityAvailable{};
      case 9:
      case 10: return in::Tick{};
      case 11: {
        // An old generation reports its stop (replayed Stop{LOST}).
        if (!model_.maybe_hosting.empty() && Chance(0.7)) {
          int last = static_cast<int>(model_.maybe_hosting.size()) - 1;
          const StaleHost& s = model_.maybe_hosting[static_cast<size_t>(Uniform(0, last))];
          return in::Event{s.envoy_key, s.generation, Uniform(0, 20),
                           in::Stopped{StopCode::kOk, std::nullopt}};
        }
        return in::Event{AnyKey(), wf_.generation - static_cast<uint32_t>(Uniform(0, 2)),
                         Uniform(-1, 5), RandomEventKind()};
      }
      default: {
        // Mostly well-formed events of the current generation.
        std::string key = wf_.envoy_key.empty() || Chance(0.05) ? AnyKey() : wf_.envoy_key;
        int64_t index = wf_.last_event_index + Uniform(Chance(0.1) ? -2 : 1, 2);
        if (Chance(0.02)) {
          index += 300;
        }
        return in::Event{key, wf_.generation, index, RandomEventKind()};
      }
    }
  }

  void Check(const ActorWorkflow& before, const Input& in, const StepResult& r,
             int taken_before, size_t allocs_before) {
    const int64_t now = ctx_.now;
    SCOPED_TRACE(::testing::Message() << "from " << TransitionName(before.transition) << " to "
                                      << TransitionName(wf_.transition) << " input#"
                                      << in.index() << " now " << now);
    // 10. Destroyed is terminal.
    if (before.transition == Transition::kDestroyed) {
      ASSERT_TRUE(r.effects.empty());
      ASSERT_EQ(wf_, before);
      return;
    }
    ASSERT_EQ(r.changed, !(wf_ == before));
    // 1. Generation: +1 per successful allocation.
    ASSERT_GE(wf_.generation, before.generation);
    ASSERT_EQ(wf_.generation - before.generation,
              static_cast<uint32_t>(ctx_.slots_taken - taken_before));
    ASSERT_LE(wf_.generation - before.generation, 1u);
    // 4. Slots.
    ASSERT_EQ(wf_.slot_held, HasInstance(wf_.transition));
    ASSERT_EQ(ctx_.slots_taken - ctx_.slots_released, wf_.slot_held ? 1 : 0);
    // 5, 6. Per-state fields.
    switch (wf_.transition) {
      case Transition::kRunning:
      case Transition::kSleepIntent:
      case Transition::kStopIntent:
      case Transition::kGoingAway:
      case Transition::kDestroying:
        ASSERT_FALSE(wf_.envoy_key.empty());
        break;
      case Transition::kStarting:
        if (wf_.pool_kind == PoolKind::kServerful) {
          ASSERT_FALSE(wf_.envoy_key.empty());
        }
        break;
      case Transition::kSleeping:
      case Transition::kReallocating:
      case Transition::kDestroyed:
        ASSERT_TRUE(wf_.envoy_key.empty());
        ASSERT_FALSE(wf_.destroy_after_start || wf_.rewake_after_stop ||
                     wf_.envoy_disconnected);
        if (wf_.transition != Transition::kReallocating) {
          ASSERT_EQ(wf_.deadline_ts, 0);
        }
        break;
      default:
        break;
    }
    if (wf_.sleep_after_start) {
      ASSERT_TRUE(wf_.transition == Transition::kAllocating ||
                  wf_.transition == Transition::kStarting);
      ASSERT_FALSE(wf_.destroy_after_start);
    }
    ASSERT_EQ(wf_.connectable, wf_.transition == Transition::kRunning);
    ASSERT_EQ(wf_.sleeping, wf_.transition == Transition::kSleeping ||
                                wf_.transition == Transition::kSleepIntent ||
                                wf_.transition == Transition::kReallocating);
    ASSERT_EQ(wf_.destroyed, wf_.transition == Transition::kDestroyed);
    // 11. Deadlines.
    bool needs_deadline = wf_.transition != Transition::kCreated &&
                          wf_.transition != Transition::kDestroyed &&
                          !(wf_.transition == Transition::kSleeping && !wf_.alarm_ts);
    ASSERT_EQ(NextDeadline(wf_).has_value(), needs_deadline);
    if (HasInstance(wf_.transition) || wf_.transition == Transition::kReallocating) {
      ASSERT_GT(wf_.deadline_ts, 0);
    }
    // 7. Ack batching.
    ASSERT_LE(wf_.last_acked_event_index, wf_.last_event_index);
    ASSERT_LE(wf_.last_event_index - wf_.last_acked_event_index, kAckBatch);
    if (const auto* ev = std::get_if<in::Event>(&in)) {
      if (std::holds_alternative<in::SetAlarm>(ev->kind) && wf_.generation == before.generation &&
          wf_.last_event_index == ev->index && before.last_event_index < ev->index) {
        ASSERT_EQ(wf_.last_acked_event_index, wf_.last_event_index);
      }
    }
    // 9. A crash is never overwritten by a generic error.
    // (A new allocation or a Running instance may clear it.)
    if (before.error && before.error->kind == ActorError::Kind::kCrashed && wf_.error &&
        wf_.error->kind != ActorError::Kind::kCrashed) {
      ASSERT_GT(wf_.generation, before.generation) << "crash overwritten";
    }
    // 8. Exclusion: the allocator was told about every envoy that may host an old instance.
    std::erase_if(model_.maybe_hosting, [&](const StaleHost& s) { return s.until_ts <= now; });
    if (ctx_.excludes.size() > allocs_before) {
      for (const StaleHost& s : model_.maybe_hosting) {
        for (size_t i = allocs_before; i < ctx_.excludes.size(); ++i) {
          const auto& ex = ctx_.excludes[i];
          ASSERT_NE(std::find(ex.begin(), ex.end(), s.envoy_key), ex.end())
              << s.envoy_key << " g" << s.generation << " not excluded";
        }
      }
    }
    // 2, 3. Commands.
    for (const Effect& e : r.effects) {
      if (const auto* c = std::get_if<fx::SendCommand>(&e)) {
        bool lost = std::holds_alternative<fx::StopCommand>(c->command) &&
                    std::get<fx::StopCommand>(c->command).reason == StopReason::kLost;
        bool start = std::holds_alternative<fx::StartCommand>(c->command);
        if (lost) {
          ASSERT_EQ(c->generation, before.generation);
          ASSERT_EQ(c->envoy_key, before.envoy_key);
          ASSERT_TRUE(HasInstance(before.transition));
          ASSERT_TRUE(wf_.generation != before.generation || !HasInstance(wf_.transition));
          model_.maybe_hosting.push_back(
              StaleHost{c->envoy_key, c->generation, now + ctx_.th.stale_host_exclusion_ms});
          if (model_.maybe_hosting.size() > kMaxStaleHosts) {
            model_.maybe_hosting.erase(model_.maybe_hosting.begin());
          }
        } else {
          ASSERT_EQ(c->generation, wf_.generation);
          ASSERT_EQ(c->envoy_key, wf_.envoy_key);
          ASSERT_TRUE(HasInstance(wf_.transition));
        }
        if (start) {
          ASSERT_EQ(c->index, 1);
          ASSERT_EQ(model_.last_index.count(c->generation), 0u);
          model_.started_on[c->generation] = c->envoy_key;
        } else {
          ASSERT_EQ(model_.last_index.count(c->generation), 1u) << "stop before start";
          ASSERT_EQ(c->index, model_.last_index[c->generation] + 1);
        }
        model_.last_index[c->generation] = c->index;
      } else if (const auto* d = std::get_if<fx::DispatchServerlessStart>(&e)) {
        ASSERT_EQ(d->index, 0);
        ASSERT_EQ(d->generation, wf_.generation);
        ASSERT_EQ(wf_.transition, Transition::kAllocating);
        ASSERT_EQ(model_.last_index.count(d->generation), 0u);
        model_.last_index[d->generation] = 0;
      } else if (const auto* a = std::get_if<fx::AckEvents>(&e)) {
        ASSERT_EQ(a->generation, before.generation);
      }
    }
    // A Stopped seen for an abandoned generation ends the model's suspicion too.
    if (const auto* ev = std::get_if<in::Event>(&in)) {
      if (std::holds_alternative<in::Stopped>(ev->kind)) {
        std::erase_if(model_.maybe_hosting, [&](const StaleHost& s) {
          return s.envoy_key == ev->envoy_key && s.generation == ev->generation;
        });
      }
    }
    if (HasInstance(wf_.transition)) {
      ASSERT_EQ(model_.last_index.count(wf_.generation), 1u);
      ASSERT_EQ(wf_.last_command_index, model_.last_index[wf_.generation]);
    }
    cov_.states.insert(wf_.transition);
    cov_.visits[static_cast<size_t>(wf_.transition)]++;
    bool lost_sent = false;
    bool started = false;
    for (const Effect& e : r.effects) {
      if (const auto* c = std::get_if<fx::SendCommand>(&e)) {
        lost_sent |= std::holds_alternative<fx::StopCommand>(c->command) &&
                     std::get<fx::StopCommand>(c->command).reason == StopReason::kLost;
        started |= std::holds_alternative<fx::StartCommand>(c->command);
      }
      if (const auto* d = std::get_if<fx::DropPendingCommands>(&e)) {
        cov_.stale_cleared += d->generation != before.generation ? 1 : 0;
      }
      started |= std::holds_alternative<fx::DispatchServerlessStart>(e);
    }
    cov_.fast_recoveries += lost_sent && started ? 1 : 0;
    cov_.gave_up += before.transition == Transition::kReallocating &&
                            wf_.transition == Transition::kSleeping &&
                            std::holds_alternative<in::Tick>(in)
                        ? 1
                        : 0;
    // The persisted form round-trips in every state.
    Result<ActorWorkflow> back = DecodeWorkflow(EncodeWorkflow(wf_));
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(*back, wf_);
  }

  std::mt19937_64 rng_;
  Coverage& cov_;
  FakeContext ctx_;
  ActorWorkflow wf_;
  Model model_;
};

TEST(ActorMachineProperty, RandomInputsKeepTheInvariants) {
  Coverage cov;
  // 100 seeds x 400 steps: every state visited well over 50 times, in under 4 s under ASan.
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    Runner(seed, cov).Run(400);
    if (::testing::Test::HasFailure()) {
      return;
    }
  }
  EXPECT_EQ(cov.states.size(), 11u);
  EXPECT_GT(cov.fast_recoveries, 10);
  EXPECT_GT(cov.gave_up, 0);
  EXPECT_GT(cov.stale_cleared, 0);
  std::printf("coverage: %zu states, %d fast recoveries, %d give-ups, %d stale cleared\n",
              cov.states.size(), cov.fast_recoveries, cov.gave_up, cov.stale_cleared);
  for (size_t i = 0; i < cov.visits.size(); ++i) {
    std::printf("  %-13s %d\n", std::string(TransitionName(static_cast<Transition>(i))).c_str(),
                cov.visits[i]);
    EXPECT_GT(cov.visits[i], 50) << TransitionName(static_cast<Transition>(i));
  }
}

}  // namespace
}  // namespace keel::engine::orch
