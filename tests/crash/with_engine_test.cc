// `keel-examples --with-engine`: the engine and the example runtime in ONE process, the
// runtime's envoy connection in memory and its actors on the engine's event loop
// (runtime/native/with_engine.h). As a user runs it, through the public path (keel::client
// over loopback HTTP and WebSocket):
//  - it prints the engine's `listening on` line, lists its runtime as a connected envoy,
//    serves actions and events, and stops on SIGTERM with exit 0, the counter intact when
//    it starts again on the same data directory;
//  - kill -9 of the whole process in the middle of increments loses no acknowledged one
//    (the engine still answers only after the write is durable), over several rounds;
//  - bad engine flags after --with-engine are refused with the engine's structured error
//    and exit code 2, --help prints the engine's help.
// Every wait is bounded; the kill loop by rounds and time.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/native/subprocess.h"
#include "client/client.h"
#include "net/client.h"
#include "net/io_runtime.h"
#include "support/ipv6.h"
#include "support/temp_dir.h"
#include "value/value.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr int kRounds = 3;
constexpr auto kTimeBudget = 60s;

// keel-examples --with-engine on `data_dir`, on `port` (0: any free one).
struct Stack {
  std::unique_ptr<Subprocess> process;
  int port = 0;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }
  std::string Output() {
    process->Drain();
    std::string s;
    for (const auto& l : process->lines_seen()) s += l + "\n";
    return s;
  }
};

// `runtime_flags` go before --with-engine, `engine_flags` after it.
Stack Start(const std::string& data_dir, int port = 0, std::vector<std::string> runtime_flags = {},
            std::vector<std::string> engine_flags = {}) {
  Subprocess::Options o;
  o.path = KEEL_EXAMPLES_BIN;
  o.args = std::move(runtime_flags);
  o.args.insert(o.args.end(),
                {"--with-engine", "--port", std::to_string(port), "--data-dir", data_dir});
  o.args.insert(o.args.end(), engine_flags.begin(), engine_flags.end());
  o.env = {{"KEEL_LOG_LEVEL", "info"}};
  o.capture_stdout = o.capture_stderr = true;
  Stack s;
  auto p = Subprocess::Start(o);
  if (!p.has_value()) {
    ADD_FAILURE() << p.error().ToString();
    return s;
  }
  s.process = std::move(*p);
  auto line = s.process->WaitForLine("listening on ", 30s);
  if (!line.has_value()) {
    ADD_FAILURE() << "no listening line: " << line.error().ToString() << "\n" << s.Output();
    return s;
  }
  s.port = std::stoi(line->substr(line->rfind(':') + 1));
  return s;
}

std::unique_ptr<client::Client> ClientFor(const Stack& s) {
  client::ClientOptions options;
  options.endpoint = s.endpoint();
  options.request_timeout = 10s;
  return std::make_unique<client::Client>(options);
}

// GET `path` on the stack (bounded).
std::optional<net::HttpResponse> Get(const Stack& s, const std::string& path) {
  net::IoRuntime rt(1);
  std::promise<Result<net::HttpResponse>> p;
  net::Fetch(
      rt, s.endpoint() + path, net::HttpRequest{"GET", "", {}, "", ""},
      [&p](Result<net::HttpResponse> r) { p.set_value(std::move(r)); }, 5s);
  auto r = p.get_future().get();
  if (!r.has_value()) return std::nullopt;
  return *r;
}

// The actors on the engine's event loop (the default), or on a thread of their own.
class WithEngineLoop : public ::testing::TestWithParam<bool> {
 protected:
  std::vector<std::string> Flags() const {
    return GetParam() ? std::vector<std::string>{"--runtime-thread"} : std::vector<std::string>{};
  }
};

TEST_P(WithEngineLoop, ServesItsActorsInOneProcessAndStopsCleanly) {
  TempDir dir("keel-with-engine");
  Stack s = Start(dir.path(), 0, Flags());
  ASSERT_NE(s.port, 0);
  auto envoys = Get(s, "/envoys?namespace=default&name=default");
  ASSERT_TRUE(envoys.has_value());
  EXPECT_EQ(envoys->status, 200);
  // The in-process runtime is an envoy, connected: listed without stop_ts.
  EXPECT_THAT(envoys->body, HasSubstr("\"envoy_key\"")) << "the in-process runtime is an envoy";
  EXPECT_THAT(envoys->body, ::testing::Not(HasSubstr("\"stop_ts\""))) << envoys->body;
  {
    auto c = ClientFor(s);
    auto h = c->GetOrCreate("counter", {"one-process"});
    for (int64_t i = 1; i <= 5; ++i) {
      auto v = h.Call<int64_t>("increment", int64_t{1});
      ASSERT_TRUE(v.has_value()) << v.error().ToString() << "\n" << s.Output();
      EXPECT_EQ(*v, i);
    }
    // A connection's event, over the WebSocket path.
    std::promise<int64_t> got;
    std::atomic<bool> once{false};
    auto conn = h.Connect([&](client::ActorConn& c) {
      c.On("newCount", [&](const Value& args) {
        if (!args.is_array() || args.as_array().empty() || !args.as_array()[0].is_integer()) return;
        if (!once.exchange(true)) got.set_value(args.as_array()[0].as_int());
      });
    });
    auto v = conn->Call<int64_t>("increment", int64_t{10});
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    EXPECT_EQ(*v, 15);
    auto f = got.get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(f.get(), 15);
    conn->Dispose();
  }
  ASSERT_TRUE(s.process->Signal(SIGTERM));
  ASSERT_TRUE(s.process->Wait(45s)) << s.Output();
  EXPECT_EQ(s.process->exit_code(), 0) << s.Output();
  const std::string out = s.Output();
  EXPECT_THAT(out, HasSubstr("runtime: stopped")) << out;
  EXPECT_THAT(out, HasSubstr("engine: stopped")) << out;

  // Again on the same data directory: the count went to storage.
  Stack again = Start(dir.path(), 0, Flags());
  ASSERT_NE(again.port, 0);
  auto c = ClientFor(again);
  auto v = c->GetOrCreate("counter", {"one-process"}).Call<int64_t>("increment", int64_t{1});
  ASSERT_TRUE(v.has_value()) << v.error().ToString() << "\n" << again.Output();
  EXPECT_EQ(*v, 16);
  again.process->Stop(30s);
}

INSTANTIATE_TEST_SUITE_P(Loops, WithEngineLoop, ::testing::Bool(), [](const auto& info) {
  return info.param ? std::string("RuntimeThread") : std::string("EnginesEventLoop");
});

// On an IPv6 host the in-process runtime reaches the engine (at a bracketed URL) and serves
// its actors through it.
TEST(WithEngine, ServesOnAnIpv6Host) {
  if (!HasIpv6Loopback()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  TempDir dir("keel-with-engine");
  Stack s = Start(dir.path(), 0, {}, {"--host", "::1"});
  ASSERT_NE(s.port, 0) << s.Output();
  client::ClientOptions options;
  options.endpoint = "http://[::1]:" + std::to_string(s.port);
  options.request_timeout = 10s;
  client::Client c(options);
  auto v = c.GetOrCreate("counter", {"ipv6"}).Call<int64_t>("increment", int64_t{3});
  ASSERT_TRUE(v.has_value()) << v.error().ToString() << "\n" << s.Output();
  EXPECT_EQ(*v, 3);
  s.process->Stop(30s);
}

TEST(WithEngine, AcknowledgedIncrementsSurviveKill9OfTheProcess) {
  TempDir dir("keel-with-engine");
  const unsigned seed = static_cast<unsigned>(std::random_device{}());
  std::printf("seed %u (kill timings)\n", seed);
  std::mt19937 rng(seed);
  Stack s = Start(dir.path());
  ASSERT_NE(s.port, 0);
  const int port = s.port;
  int64_t acked = 0;  // the highest count an increment returned
  const auto started = Clock::now();
  int rounds = 0;
  for (; rounds < kRounds && Clock::now() - started < kTimeBudget; ++rounds) {
    auto c = ClientFor(s);
    auto h = c->GetOrCreate("counter", {"kill"});
    std::atomic<bool> stop{false};
    std::atomic<int64_t> last{acked};
    std::atomic<int> unanswered{0};
    std::thread writer([&] {
      while (!stop.load()) {
        auto v = h.Call<int64_t>("increment", int64_t{1});
        if (!v.has_value()) {
          unanswered.fetch_add(1);
          return;
        }
        last.store(*v);
      }
    });
    // The kill lands at a random moment of the increments (not a synchronisation wait).
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 500));
    s.process->Kill();
    stop.store(true);
    writer.join();
    ASSERT_GT(last.load(), acked) << "round " << rounds << ": no increment was acknowledged";
    acked = last.load();

    s = Start(dir.path(), port);
    ASSERT_EQ(s.port, port);
    auto c2 = ClientFor(s);
    auto now = c2->GetOrCreate("counter", {"kill"}).Call<int64_t>("increment", int64_t{0});
    ASSERT_TRUE(now.has_value()) << now.error().ToString() << "\n" << s.Output();
    EXPECT_GE(*now, acked) << "an acknowledged increment was lost in round " << rounds;
    EXPECT_LE(*now, acked + unanswered.load()) << "an increment was applied twice";
    std::printf("round %d: %lld acknowledged, %lld after the restart\n", rounds,
                static_cast<long long>(acked), static_cast<long long>(*now));
    acked = *now;
  }
  EXPECT_GE(rounds, 2) << "the time budget allowed fewer than two kills";
  s.process->Stop(30s);
}

TEST(WithEngine, BadEngineFlagsAreRefusedWithTheEnginesError) {
  Subprocess::Options o;
  o.path = KEEL_EXAMPLES_BIN;
  o.args = {"--with-engine", "--no-such-flag"};
  o.capture_stdout = o.capture_stderr = true;
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.has_value());
  ASSERT_TRUE((*p)->Wait(20s));
  EXPECT_EQ((*p)->exit_code(), 2);
  (*p)->Drain();
  std::string out;
  for (const auto& l : (*p)->lines_seen()) out += l + "\n";
  EXPECT_THAT(out, HasSubstr("--with-engine: config.invalid_flag: ")) << out;

  o.args = {"--with-engine", "--help"};
  auto help = Subprocess::Start(o);
  ASSERT_TRUE(help.has_value());
  ASSERT_TRUE((*help)->Wait(20s));
  EXPECT_EQ((*help)->exit_code(), 0);
  (*help)->Drain();
  out.clear();
  for (const auto& l : (*help)->lines_seen()) out += l + "\n";
  EXPECT_THAT(out, HasSubstr("--data-dir")) << out;
}

}  // namespace
}  // namespace keel::testing
