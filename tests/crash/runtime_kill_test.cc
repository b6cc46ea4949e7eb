// A runtime process under SIGKILL: the real `example-counter` binary hosts four counter
// actors of an in-process keel-engine (TestEngine) while clients increment them without
// pause through the gateway. At a random moment the runtime is killed (kill -9) and a
// second one started at once; the engine notices the dead socket and reschedules every
// actor to the new runtime with a new generation. Repeated 50 times (bounded in time), the
// test checks that
//  - no acknowledged increment is lost: one client per actor sends increment(1) one after
//    another, so each acknowledged count must be above the previous one, and at the end
//    getCount() lies between the highest acknowledged count and the acknowledged plus the
//    unanswered increments (an unanswered one may or may not have been applied);
//  - each actor is hosted by the new runtime, under a higher generation, after the kill;
//  - the first increment after a kill succeeds soon: the distribution from the new
//    runtime's spawn (and from its connection) is printed, the goal is under 1 s, and only
//    a generous 5 s is asserted so that a busy CI machine cannot fail it.
// KEEL_TEST_SEED=<n> replays the kill timings of a run (the seed is printed);
// KEEL_TEST_RUNTIME_LOG=info and KEEL_TEST_ENGINE_LOG=info show the logs.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "engine/common/id.h"
#include "engine/core/orchestrator.h"
#include "net/client.h"
#include "support/test_engine.h"

extern char** environ;

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kActors = 4;
constexpr int kKills = 50;
constexpr int kMinKillsWhenTimeLimited = 20;
constexpr auto kTimeBudget = 150s;        // for the kill loop
constexpr auto kRecoveryBound = 5000ms;   // asserted; the goal is under 1 s
constexpr auto kRecoveryGiveUp = 15s;     // stop waiting (and fail) after this
constexpr auto kRequestTimeout = 3000ms;  // one increment
constexpr auto kConnectTimeout = 10s;     // a spawned runtime reaches the engine

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The engine's log, watched for its envoy sessions: "envoy connected ... envoy_key=K" and
// "envoy disconnected ... envoy_key=K" (engine/core/envoy_session.cc; a change of that
// wording shows here as "never connected"), stamped when logged. Other messages go to stderr
// at warn and above (everything with KEEL_TEST_ENGINE_LOG=info).
class SessionLog final : public LogSink {
 public:
  struct Event {
    Clock::time_point at;
    std::string envoy_key;
  };

  SessionLog() {
    const char* v = std::getenv("KEEL_TEST_ENGINE_LOG");
    verbose_ = v != nullptr && std::string_view(v) != "" && std::string_view(v) != "warn";
  }

  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    const auto now = Clock::now();
    if (message.starts_with("envoy connected") || message.starts_with("envoy disconnected")) {
      std::lock_guard lock(mu_);
      (message.starts_with("envoy connected") ? connects_ : disconnects_)
          .push_back(Event{now, Field(message, "envoy_key")});
      cv_.notify_all();
    }
    if (level >= LogLevel::kWarn || verbose_) {
      std::fprintf(stderr, "[engine %s] %.*s: %.*s\n", std::string(LogLevelName(level)).c_str(),
                   static_cast<int>(component.size()), component.data(),
                   static_cast<int>(message.size()), message.data());
    }
  }

  size_t connects() {
    std::lock_guard lock(mu_);
    return connects_.size();
  }
  // The `index`-th connection (0-based), waiting for it up to `timeout`.
  std::optional<Event> WaitConnect(size_t index, Clock::duration timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return connects_.size() > index; })) return std::nullopt;
    return connects_[index];
  }
  // When the engine noticed that `envoy_key` went away (the first time), if it did.
  std::optional<Clock::time_point> DisconnectedAt(const std::string& envoy_key) {
    std::lock_guard lock(mu_);
    for (const auto& e : disconnects_) {
      if (e.envoy_key == envoy_key) return e.at;
    }
    return std::nullopt;
  }

 private:
  static std::string Field(std::string_view message, std::string_view key) {
    const std::string needle = " " + std::string(key) + "=";
    auto at = message.find(needle);
    if (at == std::string_view::npos) return "";
    auto value = message.substr(at + needle.size());
    return std::string(value.substr(0, value.find(' ')));
  }

  bool verbose_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Event> connects_;
  std::vector<Event> disconnects_;
};

// Installs a sink for the test's lifetime; declared before the engine, so it is removed
// only after the engine's threads are gone.
class SinkGuard {
 public:
  explicit SinkGuard(LogSink* sink) { SetLogSink(sink); }
  ~SinkGuard() { SetLogSink(nullptr); }
  SinkGuard(const SinkGuard&) = delete;
  SinkGuard& operator=(const SinkGuard&) = delete;
};

// The example-counter processes this test started; every one still alive is SIGKILLed
// and reaped on destruction, also when an assertion ends the test early.
class Runtimes {
 public:
  explicit Runtimes(std::string endpoint) : endpoint_(std::move(endpoint)) {}
  ~Runtimes() {
    for (pid_t pid : pids_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  Runtimes(const Runtimes&) = delete;
  Runtimes& operator=(const Runtimes&) = delete;

  // Starts a runtime on the engine; stderr is shared with the test (its log at warn, or
  // KEEL_TEST_RUNTIME_LOG), no other descriptor of the test is inherited.
  pid_t Spawn() {
    const char* level = std::getenv("KEEL_TEST_RUNTIME_LOG");
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view v(*e);
      if (v.starts_with("KEEL_ENDPOINT=") || v.starts_with("KEEL_NAMESPACE=") ||
          v.starts_with("KEEL_POOL=") || v.starts_with("KEEL_LOG_LEVEL=") ||
          v.starts_with("KEEL_TOKEN=")) {
        continue;
      }
      env.emplace_back(v);
    }
    env.push_back("KEEL_ENDPOINT=" + endpoint_);
    env.push_back("KEEL_NAMESPACE=default");
    env.push_back("KEEL_POOL=default");
    env.push_back(std::string("KEEL_LOG_LEVEL=") + (level != nullptr && *level ? level : "warn"));
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string path = KEEL_EXAMPLE_COUNTER_BIN;
    char* argv[] = {path.data(), nullptr};

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return -1;
    pids_.push_back(pid);
    return pid;
  }

  // SIGKILLs and reaps `pid`. Returns "" when the kill is what ended it, else how the
  // process had ended by itself before (a crash of the runtime is a failure).
  std::string Kill(pid_t pid) {
    std::erase(pids_, pid);
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return Describe(status);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "" : Describe(status);
  }

  // Whether `pid` still runs, or how it ended (it is reaped then); for failure messages.
  std::string State(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) != pid) return "the process is still running";
    std::erase(pids_, pid);
    return Describe(status);
  }

 private:
  static std::string Describe(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    return "ended (status " + std::to_string(status) + ")";
  }

  std::string endpoint_;
  std::vector<pid_t> pids_;
};

struct Reply {
  int status = 0;  // 0: no HTTP response (connect failure, timeout, reset)
  json body;
  std::string text;  // the body, or the transport error
};

Reply Post(const std::string& url, const json& body, net::Headers headers) {
  net::HttpRequest req;
  req.method = "POST";
  req.headers = std::move(headers);
  req.body = body.dump();
  auto res = net::FetchSync(url, std::move(req), kRequestTimeout);
  if (!res.has_value()) return Reply{0, json(), res.error().ToString()};
  return Reply{res->status, json::parse(res->body, nullptr, false), res->body};
}

Reply Action(const std::string& base, const std::string& id, const std::string& name, json args) {
  return Post(base + "/gateway/" + id + "/action/" + name, json{{"args", std::move(args)}},
              {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
}

std::optional<int64_t> Output(const Reply& r) {
  if (r.status != 200 || !r.body.is_object() || !r.body.contains("output") ||
      !r.body["output"].is_number_integer()) {
    return std::nullopt;
  }
  return r.body["output"].get<int64_t>();
}

// One actor and what its client saw.
struct Tracked {
  std::string id;
  std::mutex mu;
  int64_t acked_max = 0;   // highest acknowledged count
  int64_t acked = 0;       // acknowledged increments
  int64_t unanswered = 0;  // increments without an answer (applied or not)
  int64_t lost = 0;        // acknowledged increments later missing from the count
  std::vector<std::string> lost_details;
  std::string last_error;
  // Recovery: the first success of an increment sent at or after `epoch`.
  Clock::time_point epoch{};
  std::optional<Clock::time_point> first_success;
  uint32_t generation = 0;  // of the last instance checked
};

// One client per actor: increment(1), one after another, with a small bounded backoff
// after a failure (while the actor is being rescheduled requests may fail).
class Clients {
 public:
  Clients(std::string base, std::vector<Tracked*> actors) : base_(std::move(base)) {
    for (Tracked* t : actors) threads_.emplace_back([this, t] { Run(*t); });
  }
  ~Clients() { Stop(); }
  Clients(const Clients&) = delete;
  Clients& operator=(const Clients&) = delete;

  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Run(Tracked& t) {
    auto backoff = 5ms;
    while (!stop_.load()) {
      const auto sent = Clock::now();
      Reply r = Action(base_, t.id, "increment", json::array({1}));
      const auto answered = Clock::now();
      std::optional<int64_t> count = Output(r);
      {
        std::lock_guard lock(t.mu);
        if (count.has_value()) {
          if (*count <= t.acked_max) {
            t.lost += t.acked_max + 1 - *count;
            t.lost_details.push_back("acknowledged " + std::to_string(t.acked_max) +
                                     ", then an increment returned " + std::to_string(*count));
          }
          t.acked_max = std::max(t.acked_max, *count);
          ++t.acked;
          if (sent >= t.epoch && !t.first_success.has_value()) t.first_success = answered;
        } else {
          ++t.unanswered;
          t.last_error = "HTTP " + std::to_string(r.status) + ": " + r.text.substr(0, 300);
        }
      }
      if (count.has_value()) {
        backoff = 5ms;
      } else {
        std::this_thread::sleep_for(backoff);  // bounded retry backoff, not a synchronisation
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 100ms);
      }
    }
  }

  std::string base_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Polls `pred` every 5 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(p * static_cast<double>(v.size()) + 0.999999);
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::string Distribution(const std::vector<double>& v) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50=%.0f p90=%.0f max=%.0f ms", Percentile(v, 0.5),
                Percentile(v, 0.9), v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()));
  return buf;
}

TEST(RuntimeKill, ActorsSurviveKill9OfTheirRuntime) {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("KEEL_TEST_SEED"); s != nullptr && *s) seed = std::stoull(s);
  std::printf("runtime kill: seed %llu (KEEL_TEST_SEED=%llu replays the kill timings)\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::mt19937_64 rng(seed);

  SessionLog sessions;
  SinkGuard sink(&sessions);
  TestEngine engine;
  const std::string base = engine.http_url();
  Runtimes runtimes(base);

  // Runtime A, then the actors (scheduled to it by their first request).
  size_t seen = sessions.connects();
  pid_t current = runtimes.Spawn();
  ASSERT_GT(current, 0) << "cannot start " << KEEL_EXAMPLE_COUNTER_BIN;
  auto connected = sessions.WaitConnect(seen, kConnectTimeout);
  ASSERT_TRUE(connected.has_value())
      << "the first runtime never connected to the engine; " << runtimes.State(current);
  std::string current_key = connected->envoy_key;

  std::vector<std::unique_ptr<Tracked>> actors;
  for (int i = 0; i < kActors; ++i) {
    Reply r = Post(base + "/actors?namespace=default",
                   json{{"name", "counter"},
                        {"key", "kill-" + std::to_string(i)},
                        {"runner_name_selector", "default"}},
                   {{"content-type", "application/json"}});
    ASSERT_EQ(r.status, 200) << r.text;
    ASSERT_TRUE(r.body.is_object() && r.body.contains("actor")) << r.text;
    actors.push_back(std::make_unique<Tracked>());
    actors.back()->id = r.body["actor"]["actor_id"].get<std::string>();
  }
  std::vector<Tracked*> tracked;
  for (auto& a : actors) tracked.push_back(a.get());

  // The instance currently hosting each actor: its generation and envoy.
  auto instance = [&](const Tracked& t) -> std::pair<uint32_t, std::string> {
    auto id = engine::EngineId::Parse(t.id);
    if (!id.has_value()) return {0, "bad id"};
    auto info = engine.engine().orchestrator().Read(*id);
    if (!info.has_value()) return {0, info.error().ToString()};
    return {info->workflow.generation, info->workflow.envoy_key};
  };
  auto all_recovered = [&] {
    for (Tracked* t : tracked) {
      std::lock_guard lock(t->mu);
      if (!t->first_success.has_value()) return false;
    }
    return true;
  };
  auto recovery_report = [&] {
    std::string s;
    for (Tracked* t : tracked) {
      std::lock_guard lock(t->mu);
      s += "\n  actor " + t->id + ": " +
           (t->first_success.has_value() ? "recovered" : "last error " + t->last_error);
    }
    return s;
  };

  Clients clients(base, tracked);
  ASSERT_TRUE(WaitFor(all_recovered, kRecoveryGiveUp))
      << "the actors never answered on the first runtime" << recovery_report();
  for (Tracked* t : tracked) t->generation = instance(*t).first;

  std::vector<double> from_spawn, from_connect, noticed;
  int kills = 0;
  bool time_limited = false;
  const auto loop_start = Clock::now();
  while (kills < kKills) {
    if (Clock::now() - loop_start > kTimeBudget) {
      time_limited = true;
      break;
    }
    // Increments flow for a random 50-200 ms, then runtime A dies mid-work.
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 151));
    if (std::string ended = runtimes.Kill(current); !ended.empty()) {
      ADD_FAILURE() << "the runtime was no longer alive at kill " << kills + 1 << ": " << ended;
      break;
    }
    const auto killed_at = Clock::now();
    for (Tracked* t : tracked) {
      std::lock_guard lock(t->mu);
      t->epoch = killed_at;
      t->first_success.reset();
    }
    // Runtime B at once.
    seen = sessions.connects();
    const auto spawned_at = Clock::now();
    current = runtimes.Spawn();
    if (current <= 0) {
      ADD_FAILURE() << "cannot start " << KEEL_EXAMPLE_COUNTER_BIN;
      break;
    }
    connected = sessions.WaitConnect(seen, kConnectTimeout);
    if (!connected.has_value()) {
      ADD_FAILURE() << "the new runtime never connected after kill " << kills + 1 << "; "
                    << runtimes.State(current);
      break;
    }
    const std::string old_key = current_key;
    current_key = connected->envoy_key;
    EXPECT_NE(current_key, old_key) << "each runtime process has a fresh envoy key";
    if (!WaitFor(all_recovered, kRecoveryGiveUp)) {
      ADD_FAILURE() << "after kill " << kills + 1 << " an actor never answered again within "
                    << std::chrono::duration_cast<std::chrono::seconds>(kRecoveryGiveUp).count()
                    << " s" << recovery_report();
      break;
    }
    ++kills;
    for (Tracked* t : tracked) {
      Clock::time_point first;
      {
        std::lock_guard lock(t->mu);
        first = *t->first_success;
      }
      from_spawn.push_back(Ms(first - spawned_at));
      from_connect.push_back(std::max(0.0, Ms(first - connected->at)));
      EXPECT_LT(first - spawned_at, kRecoveryBound)
          << "kill " << kills << ", actor " << t->id << ": first increment after the kill took "
          << Ms(first - spawned_at) << " ms from the new runtime's spawn";
      // Rescheduled: hosted by runtime B under a new generation.
      auto [generation, envoy_key] = instance(*t);
      EXPECT_EQ(envoy_key, current_key) << "kill " << kills << ", actor " << t->id;
      EXPECT_GT(generation, t->generation) << "kill " << kills << ", actor " << t->id;
      t->generation = generation;
    }
    if (auto at = sessions.DisconnectedAt(old_key)) {
      noticed.push_back(std::max(0.0, Ms(*at - killed_at)));
    }
    if (::testing::Test::HasFailure()) break;
  }
  const double loop_seconds = Ms(Clock::now() - loop_start) / 1000.0;
  clients.Stop();

  // Every acknowledged increment is in the count; nothing is applied twice.
  int64_t lost = 0;
  const auto check_deadline = Clock::now() + kRecoveryGiveUp;
  for (Tracked* t : tracked) {
    std::optional<int64_t> count;
    Reply last;
    WaitFor(
        [&] {
          last = Action(base, t->id, "getCount", json::array());
          count = Output(last);
          return count.has_value();
        },
        std::max<Clock::duration>(check_deadline - Clock::now(), 0s));
    if (!count.has_value()) {
      ADD_FAILURE() << "getCount on " << t->id << ": HTTP " << last.status << " " << last.text;
      continue;
    }
    std::lock_guard lock(t->mu);
    lost += std::max(t->lost, *count < t->acked_max ? t->acked_max - *count : int64_t{0});
    EXPECT_EQ(t->lost, 0) << "actor " << t->id << ": " << t->lost_details.front();
    EXPECT_GE(*count, t->acked_max) << "actor " << t->id << " lost acknowledged increments";
    EXPECT_LE(*count, t->acked + t->unanswered)
        << "actor " << t->id << ": more increments applied than sent (" << t->acked
        << " acknowledged, " << t->unanswered << " unanswered)";
    std::printf("runtime kill: actor %s count=%lld acknowledged=%lld unanswered=%lld\n",
                t->id.c_str(), static_cast<long long>(*count), static_cast<long long>(t->acked),
                static_cast<long long>(t->unanswered));
  }

  // The CI log line: recovery is from the new runtime's spawn to the first successful
  // increment after the kill, per actor and kill.
  std::printf("runtime kill: %d kills%s, recovery %s, lost=%lld\n", kills,
              time_limited ? " (time budget reached)" : "", Distribution(from_spawn).c_str(),
              static_cast<long long>(lost));
  std::printf(
      "runtime kill: %.1f s; from the new runtime's connection %s; the engine noticed "
      "the kill %s\n",
      loop_seconds, Distribution(from_connect).c_str(), Distribution(noticed).c_str());
  std::fflush(stdout);
  EXPECT_EQ(lost, 0);
  if (time_limited) {
    EXPECT_GE(kills, kMinKillsWhenTimeLimited)
        << "the time budget ran out after only " << kills << " kills";
  } else if (!::testing::Test::HasFailure()) {
    EXPECT_EQ(kills, kKills);
  }
}

}  // namespace
}  // namespace keel::testing
