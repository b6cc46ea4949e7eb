// Test double for orch::Context: a settable clock, a scripted allocator, envoy
// connectivity and pings, and a record of slot releases and exclude lists.
#pragma once

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/orchestrator/actor_machine.h"

namespace keel::engine::orch::testing {

class FakeContext : public Context {
 public:
  int64_t now = 1'000'000;
  Thresholds th;
  // Scripted allocations, consumed in order; when empty, `fallback` answers.
  std::deque<Allocation> script;
  Allocation fallback{Allocation::Failure::kNoEnvoys};
  std::set<std::string, std::less<>> connected;
  std::map<std::string, int64_t, std::less<>> last_ping;
  std::vector<std::vector<std::string>> excludes;  // one entry per Allocate call
  uint64_t run = 0;
  bool unclean = false;  // the previous run did not close the store
  int slots_taken = 0;
  int slots_released = 0;

  int64_t NowMs() const override { return now; }
  const Thresholds& thresholds() const override { return th; }
  Allocation Allocate(std::span<const std::string> exclude) override {
    excludes.emplace_back(exclude.begin(), exclude.end());
    Allocation a = fallback;
    if (!script.empty()) {
      a = script.front();
      script.pop_front();
    }
    if (const auto* sf = std::get_if<Allocation::Serverful>(&a.value)) {
      // A real allocator never returns an excluded key (invariant 8 relies on it).
      if (std::find(exclude.begin(), exclude.end(), sf->envoy_key) != exclude.end()) {
        a = Allocation{Allocation::Failure::kNoEnvoys};
      }
    }
    if (!std::holds_alternative<Allocation::Failure>(a.value)) {
      ++slots_taken;
    }
    return a;
  }
  void ReleaseSlot() override { ++slots_released; }
  uint64_t Run() const override { return run; }
  bool UncleanStart() const override { return unclean; }
  bool EnvoyConnected(std::string_view key) const override {
    return connected.find(key) != connected.end();
  }
  std::optional<int64_t> EnvoyLastPingMs(std::string_view key) const override {
    auto it = last_ping.find(key);
    if (it == last_ping.end()) {
      return std::nullopt;
    }
    return it->second;
  }

  void ScriptServerful(std::string key) {
    script.push_back(Allocation{Allocation::Serverful{std::move(key)}});
  }
  void ScriptServerless() { script.push_back(Allocation{Allocation::Serverless{}}); }
  void ScriptFailure(Allocation::Failure f = Allocation::Failure::kNoEnvoys) {
    script.push_back(Allocation{f});
  }
};

}  // namespace keel::engine::orch::testing
