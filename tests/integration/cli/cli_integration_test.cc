// The `keel` binary as a user runs it: `keel dev` as a child process (it starts the real
// keel-engine and keel-examples next to it), then `keel call`, `keel actors`, `keel watch`
// against it — outputs, --json documents, error lines and exit codes — and SIGTERM to
// `keel dev` (runtime stopped first, then the engine; exit 0) with the counter surviving a
// restart on the same data directory. Every wait is bounded.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "base/native/subprocess.h"
#include "net/http.h"
#include "support/gateway_http.h"
#include "support/postgres_cluster.h"
#include "support/temp_dir.h"
#include "value/value.h"

namespace keel {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

using ::keel::testing::PostgresCluster;
using ::keel::testing::TempDir;

struct KeelRun {
  int exit_code = -1;
  std::vector<std::string> out;  // stdout lines
  std::string err;               // all of stderr
  std::string stdout_text() const {
    std::string s;
    for (const auto& l : out) s += l + "\n";
    return s;
  }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `keel ARGS…` to completion (bounded), stdout and stderr apart.
KeelRun Keel(const std::vector<std::string>& args,
             std::vector<std::pair<std::string, std::string>> env = {},
             std::chrono::milliseconds timeout = 30s) {
  TempDir dir;
  const std::string err_file = dir.path() + "/stderr";
  Subprocess::Options o;
  o.path = "/bin/sh";
  o.args = {"-c", "f=$1; shift; exec \"$@\" 2>\"$f\"", "sh", err_file, KEEL_CLI_BIN};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.capture_stdout = true;
  o.env = std::move(env);
  KeelRun run;
  auto p = Subprocess::Start(o);
  if (!p.has_value()) {
    ADD_FAILURE() << p.error().ToString();
    return run;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = (*p)->ReadLine(200ms);
    if (line.has_value()) {
      run.out.push_back(*line);
    } else if (line.error().code() == "exited") {
      break;
    }
  }
  if (!(*p)->Wait(5s)) {
    ADD_FAILURE() << "keel did not finish within the timeout";
    (*p)->Kill();
  }
  run.exit_code = (*p)->exit_code().value_or(-1);
  run.err = ReadFile(err_file);
  return run;
}

std::string Describe(const KeelRun& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.stdout_text() + "stderr:\n" + r.err;
}

// `keel dev` running as a child of the test, with its endpoint.
struct Dev {
  std::unique_ptr<Subprocess> process;
  std::string endpoint;
  std::vector<std::string> lines;  // what it printed (stdout and stderr) up to the hints
};

std::string DevOutput(Subprocess& p) {
  p.Drain();
  std::string s;
  for (const auto& l : p.lines_seen()) s += l + "\n";
  return s;
}

// Starts `keel dev --port PORT --data-dir DIR` (port 0: any free one) and waits for its call
// hints.
Dev StartDev(const std::string& data_dir, std::vector<std::string> extra = {},
             const std::string& port = "0") {
  Subprocess::Options o;
  o.path = KEEL_CLI_BIN;
  o.args = {"dev", "--port", port, "--data-dir", data_dir, "--quiet"};
  o.args.insert(o.args.end(), extra.begin(), extra.end());
  o.capture_stdout = o.capture_stderr = true;
  Dev dev;
  auto p = Subprocess::Start(o);
  if (!p.has_value()) {
    ADD_FAILURE() << p.error().ToString();
    return dev;
  }
  dev.process = std::move(*p);
  auto listening = dev.process->WaitForLine("listening on ", 30s);
  if (!listening.has_value()) {
    ADD_FAILURE() << "no listening line: " << listening.error().ToString() << "\n" << DevOutput(*dev.process);
    return dev;
  }
  EXPECT_THAT(*listening, MatchesRegex("listening on 127\\.0\\.0\\.1:[0-9]+"));
  dev.endpoint = "http://" + listening->substr(std::string("listening on ").size());
  auto hint = dev.process->WaitForLine(" call counter/", 30s);
  if (!hint.has_value()) {
    ADD_FAILURE() << "no call hint: " << hint.error().ToString() << "\n" << DevOutput(*dev.process);
    dev.endpoint.clear();
    return dev;
  }
  EXPECT_THAT(DevOutput(*dev.process), HasSubstr("curl -s -XPOST '" + dev.endpoint + "/gateway/counter/action/increment?"));
  EXPECT_THAT(*hint, HasSubstr("--endpoint " + dev.endpoint));
  return dev;
}

// SIGTERM (or SIGINT, as a terminal's Ctrl-C) to `keel dev`; expects exit 0 with the
// runtime stopped before the engine.
void StopDev(Dev& dev, int signal = SIGTERM) {
  ASSERT_TRUE(dev.process->Signal(signal));
  ASSERT_TRUE(dev.process->Wait(45s)) << DevOutput(*dev.process);
  EXPECT_EQ(dev.process->exit_code(), 0) << DevOutput(*dev.process);
  const std::string out = DevOutput(*dev.process);
  const auto runtime_at = out.find("stopping the runtime");
  const auto engine_at = out.find("stopping keel-engine");
  ASSERT_NE(runtime_at, std::string::npos) << out;
  ASSERT_NE(engine_at, std::string::npos) << out;
  EXPECT_LT(runtime_at, engine_at) << out;
  EXPECT_THAT(out, HasSubstr("==> stopped")) << "a child had to be killed:\n" << out;
}

TEST(KeelCli, DevCallActorsWatchAndRestart) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev = StartDev(data.path() + "/data");
  ASSERT_FALSE(dev.endpoint.empty());
  const std::vector<std::string> ep = {"--endpoint", dev.endpoint};
  auto keel = [&](std::vector<std::string> args) {
    args.insert(args.end(), ep.begin(), ep.end());
    return Keel(args);
  };

  {
    SCOPED_TRACE("call");
    KeelRun r = keel({"call", "counter/k", "increment", "5"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "5\n");
    r = keel({"call", "counter/k", "increment", "1"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "6\n");
    r = keel({"call", "counter/k", "getCount", "--json", "--encoding", "json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "{\"output\":6}\n");
  }
  std::string id;
  {
    SCOPED_TRACE("actors list");
    KeelRun r = keel({"actors", "list", "counter", "--json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ASSERT_EQ(r.out.size(), 1u) << Describe(r);
    auto doc = ParseJson(r.out[0]);
    ASSERT_TRUE(doc.has_value()) << r.out[0];
    const Value* actors = doc->Find("actors");
    ASSERT_TRUE(actors != nullptr && actors->is_array()) << r.out[0];
    for (const Value& a : actors->as_array()) {
      const Value* key = a.Find("key");
      if (key != nullptr && key->is_text() && key->as_text() == "k") id = a.Find("actor_id")->as_text();
    }
    ASSERT_FALSE(id.empty()) << r.out[0];
    r = keel({"actors", "list", "counter"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_THAT(r.stdout_text(), HasSubstr("ACTOR ID"));
    EXPECT_THAT(r.stdout_text(), HasSubstr(id));
  }
  {
    SCOPED_TRACE("watch");
    Subprocess::Options o;
    o.path = KEEL_CLI_BIN;
    o.args = {"watch", "counter/w", "newCount", "--count", "1", "--endpoint", dev.endpoint};
    o.capture_stdout = o.capture_stderr = true;
    auto watch = Subprocess::Start(o);
    ASSERT_TRUE(watch.has_value());
    auto ready = (*watch)->WaitForLine("watching newCount", 30s);
    ASSERT_TRUE(ready.has_value()) << ready.error().ToString();
    // The subscription travels right after the connection opened; call until the event
    // arrives (bounded), the watcher then exits by itself.
    bool ended = false;
    for (int attempt = 0; attempt < 10 && !ended; ++attempt) {
      KeelRun r = keel({"call", "counter/w", "increment", "2"});
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      ended = (*watch)->Wait(2s);
    }
    ASSERT_TRUE(ended) << "keel watch --count 1 did not exit";
    EXPECT_EQ((*watch)->exit_code(), 0);
    (*watch)->Drain();
    std::vector<std::string> events;
    for (const auto& l : (*watch)->lines_seen()) {
      if (!l.empty() && l[0] == '[') events.push_back(l);
    }
    ASSERT_EQ(events.size(), 1u);
    EXPECT_THAT(events[0], MatchesRegex("\\[[0-9]+\\]"));
  }
  {
    SCOPED_TRACE("create and destroy");
    KeelRun r = keel({"actors", "create", "counter", "--key", "d,2"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ASSERT_EQ(r.out.size(), 1u);
    const std::string created = r.out[0];
    r = keel({"actors", "create", "counter", "--key", "d,2"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("keel: actor.duplicate_key: "));
    r = keel({"actors", "destroy", created});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "destroyed " + created + "\n");
    r = keel({"actors", "list", "counter", "--key", "d,2", "--json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "{\"actors\":[]}\n");
    r = keel({"actors", "destroy", created});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("keel: actor.not_found: "));
  }
  {
    SCOPED_TRACE("errors");
    KeelRun r = keel({"call", "counter/k", "noSuchAction"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, MatchesRegex("keel: (actor|user)\\.[a-z_]+: .*\n"));
    EXPECT_TRUE(r.out.empty());
    r = keel({"call", "counter/k", "increment", "not-a-number", "--json"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    ASSERT_EQ(r.out.size(), 1u) << Describe(r);
    EXPECT_THAT(r.out[0], StartsWith("{\"error\":{\"group\":"));
  }
  StopDev(dev);

  // The same data directory again: the counter kept its count.
  Dev again = StartDev(data.path() + "/data");
  ASSERT_FALSE(again.endpoint.empty());
  KeelRun r = Keel({"call", "counter/k", "getCount", "--endpoint", again.endpoint});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "6\n");
  StopDev(again);
}

// `keel dev --storage postgresql://…`: the engine keeps its data in that database (a
// throwaway server), so a second `keel dev` on it finds the counter where the first left it.
TEST(KeelCli, DevKeepsItsDataInAPostgresDatabase) {
  auto cluster = PostgresCluster::Start();
  ASSERT_TRUE(cluster.has_value()) << cluster.error().ToString();
  TempDir data;  // --data-dir: unused with PostgreSQL storage, and left empty
  const std::vector<std::string> storage = {"--storage", (*cluster)->uri()};
  for (const char* expected : {"5\n", "10\n"}) {
    Dev dev = StartDev(data.path() + "/data", storage);
    ASSERT_FALSE(dev.endpoint.empty());
    EXPECT_THAT(DevOutput(*dev.process),
                HasSubstr("(data in the PostgreSQL database of --storage)"));
    KeelRun r = Keel({"call", "counter/pg", "increment", "5", "--endpoint", dev.endpoint});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), expected) << Describe(r);
    StopDev(dev);
  }
  EXPECT_FALSE(std::filesystem::exists(data.path() + "/data")) << "RocksDB was used";

  // A mistyped URL is a usage error that does not repeat it (it may hold a password).
  KeelRun typo = Keel({"dev", "--storage", "postgress://keel:pw-93@db/keel"});
  EXPECT_EQ(typo.exit_code, 2) << Describe(typo);
  EXPECT_THAT(typo.err, Not(HasSubstr("pw-93"))) << Describe(typo);
}

TEST(KeelCli, DevWithAdminTokenAndEnvironment) {
  TempDir data;
  Dev dev = StartDev(data.path() + "/data", {"--storage", "memory", "--admin-token", "cli-test-token"});
  ASSERT_FALSE(dev.endpoint.empty());
  // The runtime got the token (it connected); the REST API wants it from clients too.
  KeelRun r = Keel({"actors", "list", "counter"}, {{"KEEL_ENDPOINT", dev.endpoint}, {"KEEL_TOKEN", ""}});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_THAT(r.err, MatchesRegex("keel: [a-z_]+\\.unauthorized: [^\n]*\n")) << Describe(r);
  r = Keel({"call", "counter/t", "increment", "-3"}, {{"KEEL_ENDPOINT", dev.endpoint}, {"KEEL_TOKEN", "cli-test-token"}});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "-3\n");
  r = Keel({"actors", "list", "counter/t"}, {{"KEEL_ENDPOINT", dev.endpoint}, {"KEEL_TOKEN", "cli-test-token"}});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_EQ(r.out.size(), 2u) << Describe(r);
  EXPECT_THAT(r.out[1], MatchesRegex("[0-9a-z]+ +t +running +[-0-9T:]+Z"));
  // A two-component key with --key (the option takes one value; the rest are positionals).
  r = Keel({"call", "counter", "--key", "p,q", "increment", "7"},
           {{"KEEL_ENDPOINT", dev.endpoint}, {"KEEL_TOKEN", "cli-test-token"}});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "7\n");
  r = Keel({"actors", "list", "counter", "--key", "p", "--key", "q", "--json"},
           {{"KEEL_ENDPOINT", dev.endpoint}, {"KEEL_TOKEN", "cli-test-token"}});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.stdout_text(), HasSubstr("\"key\":\"p/q\""));
  EXPECT_THAT(r.stdout_text(), Not(HasSubstr("\"key\":\"t\"")));
  StopDev(dev, SIGINT);
}

#ifdef KEEL_FIXTURES_BIN
// A call still running after 2 s says what it waits for: here the action of an actor that
// runs (the engine says so), not a runtime to start it.
TEST(KeelCli, ASlowCallSaysTheActorIsRunning) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev = StartDev(data.path() + "/data", {"--runtime", KEEL_FIXTURES_BIN});
  ASSERT_FALSE(dev.endpoint.empty());
  KeelRun r = Keel({"call", "concurrentActionActor/k", "runWithDelay", "\"late\"", "4500",
                    "--endpoint", dev.endpoint});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "\"late\"\n");
  EXPECT_THAT(r.err,
              HasSubstr("still waiting for runWithDelay on concurrentActionActor k (actor "));
  EXPECT_THAT(r.err, HasSubstr(" is running; --timeout 30 s per request)"));
  EXPECT_THAT(r.err, Not(HasSubstr("it starts once a runtime")));
  // A quick call says nothing.
  r = Keel({"call", "concurrentActionActor/k", "runWithDelay", "\"quick\"", "0", "--endpoint",
            dev.endpoint});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.err, "");
  StopDev(dev, SIGINT);
}
#endif

// A call on an actor that waits to start names the actor's own pool, not the --pool flag
// (which only places new actors): here pool `other` exists (a runner config) but no runtime
// of it is connected, so each call times out after saying so.
TEST(KeelCli, ASlowCallNamesThePoolTheActorWaitsFor) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev = StartDev(data.path() + "/data");
  ASSERT_FALSE(dev.endpoint.empty());
  auto put = keel::testing::Call(dev.endpoint, "PUT", "/runner-configs/other?namespace=default",
                                 R"({"datacenters":{"default":{"normal":{}}}})");
  ASSERT_EQ(put.status, 200) << put.body;

  KeelRun r = Keel({"call", "counter/away", "increment", "1", "--pool", "other", "--timeout", "5",
                    "--endpoint", dev.endpoint});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("waiting for counter away (actor "));
  EXPECT_THAT(r.err, HasSubstr("it starts once a runtime of pool `other` is connected; "
                               "--timeout 5 s per request)"));
  EXPECT_THAT(r.err, HasSubstr("keel: client.timeout: "));

  // Without --pool (so `default`, whose runtime is connected) the actor still waits for one
  // of pool `other`, and the line says so. (The line comes after 2 s; the 5 s timeout leaves
  // its own query to the engine time on a loaded machine.)
  r = Keel(
      {"call", "counter/away", "increment", "1", "--timeout", "5", "--endpoint", dev.endpoint});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("it starts once a runtime of pool `other` is connected"));
  EXPECT_THAT(r.err, Not(HasSubstr("pool `default`")));

  // The same actor name in the connected pool answers at once and says nothing.
  r = Keel({"call", "counter/here", "increment", "2", "--endpoint", dev.endpoint});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "2\n");
  EXPECT_EQ(r.err, "");
  StopDev(dev, SIGINT);
}

TEST(KeelCli, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"call"},
        {"call", "counter/k"},
        {"call", "/k", "increment"},
        {"call", "counter/k", "increment", "--key", "a"},
        {"actors"},
        {"actors", "bogus"},
        {"watch", "counter/k", "newCount", "--count", "0"},
        {"dev", "--storage", "disk"},
        {"--no-such-flag"},
        // JSON that is not a value (an escape that does not decode) is refused before any
        // request, not sent as text; plain text is still text (UnreachableEngineExitsThree).
        {"call", "counter/k", "increment", R"(["$BigInt","99999999999999999999999"])", "--endpoint",
         "http://127.0.0.1:1"},
        {"call", "counter/k", "increment", "--params", R"({"a":["$Uint8Array","%%"]})",
         "--endpoint", "http://127.0.0.1:1"},
        {"watch", "counter/k", "newCount", "--params", R"(["$Nope","x"])", "--endpoint",
         "http://127.0.0.1:1"},
        {"actors", "create", "counter/k", "--input", R"(["$BigInt","1x"])", "--endpoint",
         "http://127.0.0.1:1"}}) {
    KeelRun r = Keel(args);
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    EXPECT_THAT(r.err, MatchesRegex("keel: cli\\.usage: [^\n]*\n")) << Describe(r);
  }
  KeelRun r = Keel({"call", "counter/k", "increment", R"(["$BigInt","99999999999999999999999"])"});
  EXPECT_THAT(r.err, StartsWith("keel: cli.usage: argument 1 is JSON but not a value Keel can "
                                "send: $BigInt out of 64-bit range"))
      << Describe(r);
}

TEST(KeelCli, UnreachableEngineExitsThree) {
  // Port 1 on loopback: nothing listens there.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"call", "counter/k", "increment", "1"}, {"actors", "list", "counter"},
        {"watch", "counter/k", "newCount"}}) {
    auto with = args;
    with.insert(with.end(), {"--endpoint", "http://127.0.0.1:1", "--timeout", "5"});
    KeelRun r = Keel(with);
    EXPECT_EQ(r.exit_code, 3) << Describe(r);
    EXPECT_THAT(r.err, MatchesRegex("keel: client\\.[a-z_]+: [^\n]*\n")) << Describe(r);
  }
}

TEST(KeelCli, DevReportsADyingRuntime) {
  TempDir data;
  Subprocess::Options o;
  o.path = KEEL_CLI_BIN;
  o.args = {"dev", "--port", "0", "--storage", "memory", "--quiet", "--runtime", "/bin/false"};
  o.capture_stdout = o.capture_stderr = true;
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.has_value());
  ASSERT_TRUE((*p)->Wait(45s)) << DevOutput(**p);
  EXPECT_EQ((*p)->exit_code(), 4);
  const std::string out = DevOutput(**p);
  EXPECT_THAT(out, HasSubstr("keel: dev.runtime_exited: the runtime ended unexpectedly (exited with status 1)"));
  EXPECT_THAT(out, HasSubstr("stopping keel-engine"));

  KeelRun missing = Keel({"dev", "--engine", data.path() + "/no-such-engine"});
  EXPECT_EQ(missing.exit_code, 2) << Describe(missing);
  EXPECT_THAT(missing.err, StartsWith("keel: dev.engine_not_found: "));
}

// Engine flags after `--` reach keel-engine as written: `[warn,x]` is one argument, which
// the engine refuses by quoting it, not the two (`warn`, `x`) CLI11's list syntax would
// have made of it.
TEST(KeelCli, DevPassesEngineArgumentsAsWritten) {
  TempDir data;
  KeelRun r =
      Keel({"dev", "--port", "0", "--storage", "memory", "--", "--log-level", "[warn,x]"}, {}, 45s);
  EXPECT_EQ(r.exit_code, 4) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("[warn,x]")) << Describe(r);
}

// The pids of `parent`'s children whose command line contains `needle`.
std::vector<pid_t> ChildrenNamed(pid_t parent, const std::string& needle) {
  std::vector<pid_t> out;
  std::istringstream children(ReadFile("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children"));
  pid_t pid = 0;
  while (children >> pid) {
    if (ReadFile("/proc/" + std::to_string(pid) + "/cmdline").find(needle) != std::string::npos) out.push_back(pid);
  }
  return out;
}

// The NUL-separated entries of /proc/PID/FILE (cmdline, environ).
std::vector<std::string> ProcEntries(pid_t pid, const std::string& file) {
  std::vector<std::string> out;
  std::istringstream in(ReadFile("/proc/" + std::to_string(pid) + "/" + file));
  for (std::string entry; std::getline(in, entry, '\0');) out.push_back(entry);
  return out;
}

// The --unix-socket keel dev gave its engine ("" when none).
std::string EngineSocket(pid_t engine) {
  auto args = ProcEntries(engine, "cmdline");
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--unix-socket") return args[i + 1];
  }
  return "";
}

TEST(KeelCli, DevRuntimeReachesTheEngineOverAPrivateUnixSocket) {
  TempDir data;
  Dev dev = StartDev(data.path() + "/data", {"--storage", "memory"});
  ASSERT_FALSE(dev.endpoint.empty());
  auto engines = ChildrenNamed(dev.process->pid(), "keel-engine");
  auto runtimes = ChildrenNamed(dev.process->pid(), "keel-examples");
  ASSERT_EQ(engines.size(), 1u);
  ASSERT_EQ(runtimes.size(), 1u);
  const std::string socket = EngineSocket(engines[0]);
  ASSERT_FALSE(socket.empty()) << "keel dev gave the engine no --unix-socket";
  struct stat st {};
  ASSERT_EQ(::stat(socket.c_str(), &st), 0) << socket;
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  const std::string dir = std::filesystem::path(socket).parent_path().string();
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "the socket's directory is private";
  // The runtime was pointed at the socket, not at the TCP port: it can only have connected
  // through it — and it did, since its actors answer.
  auto env = ProcEntries(runtimes[0], "environ");
  EXPECT_THAT(env,
              ::testing::Contains("KEEL_ENDPOINT=http+unix://" + net::UnixUrlAuthority(socket)));
  KeelRun r = Keel({"call", "counter/over-unix", "increment", "7", "--endpoint", dev.endpoint});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.stdout_text(), "7\n");
  StopDev(dev);
  EXPECT_FALSE(std::filesystem::exists(dir)) << "keel dev removes its socket directory";

  // --runtime-transport tcp (what a runtime given with --runtime gets by default): no socket.
  Dev tcp = StartDev(data.path() + "/data", {"--storage", "memory", "--runtime-transport", "tcp"});
  ASSERT_FALSE(tcp.endpoint.empty());
  engines = ChildrenNamed(tcp.process->pid(), "keel-engine");
  runtimes = ChildrenNamed(tcp.process->pid(), "keel-examples");
  ASSERT_EQ(engines.size(), 1u);
  ASSERT_EQ(runtimes.size(), 1u);
  EXPECT_EQ(EngineSocket(engines[0]), "");
  EXPECT_THAT(ProcEntries(runtimes[0], "environ"),
              ::testing::Contains("KEEL_ENDPOINT=" + tcp.endpoint));
  StopDev(tcp);
}

TEST(KeelCli, DevStopsTheRuntimeWhenTheEngineDies) {
  TempDir data;
  Dev dev = StartDev(data.path() + "/data", {"--storage", "memory"});
  ASSERT_FALSE(dev.endpoint.empty());
  auto engines = ChildrenNamed(dev.process->pid(), "keel-engine");
  ASSERT_EQ(engines.size(), 1u);
  const std::string socket = EngineSocket(engines[0]);
  ASSERT_EQ(::kill(engines[0], SIGKILL), 0);  // keel dev's own child, by its pid
  ASSERT_TRUE(dev.process->Wait(45s)) << DevOutput(*dev.process);
  EXPECT_EQ(dev.process->exit_code(), 4);
  const std::string out = DevOutput(*dev.process);
  EXPECT_THAT(out, HasSubstr("keel: dev.engine_exited: keel-engine ended unexpectedly (killed by signal 9)"));
  EXPECT_THAT(out, HasSubstr("listening on "));  // its last output lines follow
  EXPECT_THAT(out, HasSubstr("==> stopping the runtime"));
  ASSERT_FALSE(socket.empty());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(socket).parent_path()))
      << "the killed engine's socket is cleaned up by keel dev";
}

// `keel watch ARGS…` as a child of the test (stdout and stderr captured together).
std::unique_ptr<Subprocess> StartWatch(const std::vector<std::string>& args) {
  Subprocess::Options o;
  o.path = KEEL_CLI_BIN;
  o.args = {"watch"};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.capture_stdout = o.capture_stderr = true;
  auto p = Subprocess::Start(o);
  if (!p.has_value()) {
    ADD_FAILURE() << p.error().ToString();
    return nullptr;
  }
  return std::move(*p);
}

// The lines of a watch's output that are events (JSON arrays).
std::vector<std::string> EventLines(Subprocess& watch) {
  watch.Drain();
  std::vector<std::string> events;
  for (const auto& l : watch.lines_seen()) {
    if (!l.empty() && l[0] == '[') events.push_back(l);
  }
  return events;
}

// The actions of the example runtime get each argument as the JSON value written, an
// action without a result prints nothing, the counter refuses to overflow, and watch says
// in words why it ended: an unregistered actor name at once, a destroyed actor readably.
TEST(KeelCli, CallArgumentsOutputsAndWatchEndings) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev = StartDev(data.path() + "/data", {"--storage", "memory"});
  ASSERT_FALSE(dev.endpoint.empty());
  auto keel = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--endpoint", dev.endpoint});
    return Keel(args);
  };
  {
    SCOPED_TRACE("an argument written as an array is one array argument");
    KeelRun r = keel({"call", "counter/k", "increment", "[5]"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("keel: actor.invalid_request: argument 1 of `increment`: "));
    r = keel({"call", "todos/t", "add", R"(["a","b"])"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("keel: actor.invalid_request: argument 1 of `add`: "));
    r = keel({"call", "todos/t", "count"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "0\n") << "nothing was added";
    r = keel({"call", "chat/r", "send", "[]"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, StartsWith("keel: actor.invalid_request: argument 1 of `send`: "));
    r = keel({"call", "counter/k", "increment", "5"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "5\n");
  }
  {
    SCOPED_TRACE("an action without a result");
    KeelRun r = keel({"call", "scheduler/v", "fire", "x", "1"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "");
    EXPECT_EQ(r.err, "");
    r = keel({"call", "scheduler/v", "fire", "x", "1", "--json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), "{\"output\":null}\n");
  }
  {
    SCOPED_TRACE("actors list shows ERROR only when an actor has one");
    KeelRun r = keel({"actors", "list", "counter"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ASSERT_FALSE(r.out.empty());
    EXPECT_THAT(r.out[0], MatchesRegex("ACTOR ID +KEY +STATE +CREATED")) << Describe(r);
  }
  {
    SCOPED_TRACE("watch on an actor name no runtime registered fails at once");
    // keel call says guard.service_unavailable (the actor kept stopping: not_registered) at
    // once; watch used to wait its whole --timeout for the connection.
    KeelRun r =
        Keel({"watch", "nosuch/k", "ev", "--timeout", "120", "--endpoint", dev.endpoint}, {}, 60s);
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err,
                MatchesRegex("keel: guard\\.service_unavailable: [^\n]*not_registered[^\n]*\n"))
        << Describe(r);
    r = keel({"actors", "list", "nosuch"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ASSERT_FALSE(r.out.empty());
    EXPECT_THAT(r.out[0], MatchesRegex("ACTOR ID +KEY +STATE +CREATED +ERROR")) << Describe(r);
  }
  {
    SCOPED_TRACE("watch on an actor that is destroyed");
    auto watch = StartWatch({"counter/gone", "newCount", "--endpoint", dev.endpoint});
    ASSERT_TRUE(watch != nullptr);
    auto ready = watch->WaitForLine("watching newCount", 30s);
    ASSERT_TRUE(ready.has_value()) << ready.error().ToString() << "\n" << DevOutput(*watch);
    const auto at = ready->find("(actor ");
    ASSERT_NE(at, std::string::npos) << *ready;
    const std::string id = ready->substr(at + 7, ready->find(')', at) - at - 7);
    KeelRun r = keel({"actors", "destroy", id});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ASSERT_TRUE(watch->Wait(30s)) << DevOutput(*watch);
    EXPECT_EQ(watch->exit_code(), 1) << DevOutput(*watch);
    EXPECT_THAT(DevOutput(*watch), HasSubstr("keel: actor.destroyed: the actor was destroyed\n"));
  }
  {
    // Last: before the fix, the overflow was undefined behaviour (UBSan stops the runtime).
    SCOPED_TRACE("the counter refuses to overflow");
    // (Integers past 2^53 print with the BigInt escape, which JSON readers keep exact.)
    const std::string max = R"(["$BigInt","9223372036854775807"])";
    KeelRun r = keel({"call", "counter/big", "increment", "9223372036854775807"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), max + "\n");
    r = keel({"call", "counter/big", "increment", "1"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_EQ(r.err, "keel: user.overflow: count would overflow\n");
    r = keel({"call", "counter/big", "getCount"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text(), max + "\n") << "the count is unchanged";
    r = keel({"call", "counter/small", "increment", "-9223372036854775807"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    r = keel({"call", "counter/small", "increment", "-2"});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_EQ(r.err, "keel: user.overflow: count would overflow\n");
  }
  StopDev(dev, SIGINT);
}

#ifdef KEEL_FIXTURES_BIN
// Each argument reaches the action as exactly the JSON value written (an action that returns
// its argument shows it), the escapes included.
TEST(KeelCli, EachCallArgumentIsOneJsonValue) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev =
      StartDev(data.path() + "/data", {"--storage", "memory", "--runtime", KEEL_FIXTURES_BIN});
  ASSERT_FALSE(dev.endpoint.empty());
  for (const auto& [arg, output] : std::vector<std::pair<std::string, std::string>>{
           {"[5]", "[5]"},
           {R"(["a","b"])", R"(["a","b"])"},
           {"[]", "[]"},
           // A BigInt is an int64 here: printed as a number when JSON holds it exactly.
           {R"(["$BigInt","9007199254740993"])", R"(["$BigInt","9007199254740993"])"},
           {R"(["$BigInt","5"])", "5"},
           {R"(["$Uint8Array","aGk="])", R"(["$Uint8Array","aGk="])"},
           {R"({"x":[1,2]})", R"({"x":[1,2]})"},
           {"[a,b]", R"("[a,b]")"},  // not JSON: the text itself
           {"-5", "-5"}}) {
    KeelRun r = Keel({"call", "statelessActor/k", "echo", arg, "--endpoint", dev.endpoint});
    ASSERT_EQ(r.exit_code, 0) << arg << "\n" << Describe(r);
    EXPECT_EQ(r.stdout_text(), output + "\n") << arg;
  }
  StopDev(dev, SIGINT);
}
#endif

// A watch survives its engine stopping and starting again on the same port (same data
// directory): it says it lost the connection, keeps trying, says it reconnected, and prints
// the events that come after.
TEST(KeelCli, WatchReconnectsAcrossAnEngineRestart) {
  TempDir data;
  ASSERT_FALSE(data.path().empty());
  Dev dev = StartDev(data.path() + "/data");
  ASSERT_FALSE(dev.endpoint.empty());
  const std::string port = dev.endpoint.substr(dev.endpoint.rfind(':') + 1);
  auto watch = StartWatch({"counter/r", "newCount", "--count", "1", "--endpoint", dev.endpoint});
  ASSERT_TRUE(watch != nullptr);
  auto ready = watch->WaitForLine("watching newCount", 30s);
  ASSERT_TRUE(ready.has_value()) << ready.error().ToString() << "\n" << DevOutput(*watch);

  StopDev(dev);
  auto lost = watch->WaitForLine("connection lost", 30s);
  ASSERT_TRUE(lost.has_value()) << DevOutput(*watch);
  Dev again = StartDev(data.path() + "/data", {}, port);
  ASSERT_EQ(again.endpoint, dev.endpoint);
  auto back = watch->WaitForLine("reconnected", 60s);
  ASSERT_TRUE(back.has_value()) << back.error().ToString() << "\n" << DevOutput(*watch);
  EXPECT_TRUE(watch->running()) << DevOutput(*watch);

  // The subscription travels with the new connection; call until the event arrives
  // (bounded), the watcher then exits by itself.
  bool ended = false;
  for (int attempt = 0; attempt < 10 && !ended; ++attempt) {
    KeelRun r = Keel({"call", "counter/r", "increment", "3", "--endpoint", again.endpoint});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    ended = watch->Wait(2s);
  }
  ASSERT_TRUE(ended) << "keel watch --count 1 did not exit\n" << DevOutput(*watch);
  EXPECT_EQ(watch->exit_code(), 0) << DevOutput(*watch);
  const auto events = EventLines(*watch);
  ASSERT_EQ(events.size(), 1u) << DevOutput(*watch);
  EXPECT_THAT(events[0], MatchesRegex("\\[[0-9]+\\]"));
  StopDev(again);
}

// A watch whose engine went away gives up after --timeout when the flag was given.
TEST(KeelCli, WatchGivesUpReconnectingAfterAGivenTimeout) {
  TempDir data;
  Dev dev = StartDev(data.path() + "/data", {"--storage", "memory"});
  ASSERT_FALSE(dev.endpoint.empty());
  auto watch = StartWatch({"counter/q", "newCount", "--timeout", "2", "--endpoint", dev.endpoint});
  ASSERT_TRUE(watch != nullptr);
  auto ready = watch->WaitForLine("watching newCount", 30s);
  ASSERT_TRUE(ready.has_value()) << ready.error().ToString() << "\n" << DevOutput(*watch);
  StopDev(dev);
  ASSERT_TRUE(watch->Wait(30s)) << DevOutput(*watch);
  EXPECT_EQ(watch->exit_code(), 3) << DevOutput(*watch);
  const std::string out = DevOutput(*watch);
  EXPECT_THAT(out, HasSubstr("connection lost"));
  EXPECT_THAT(out, HasSubstr("keel: client.timeout: the connection was not restored within "
                             "--timeout 2 s (last attempt: "));
}

// True while process `pid` exists and is not a zombie.
bool Alive(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// What the runtime started itself ends with it: a runtime script whose `sleep` keeps
// running when keel dev gives up on the runtime (dev.runtime_timeout) is stopped too.
TEST(KeelCli, DevEndsWhatTheRuntimeStarted) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string script = dir.path() + "/slow.sh";
  const std::string pid_file = dir.path() + "/sleep.pid";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\nsleep 100 &\necho $! > '" << pid_file << "'\nwait\n";
  }
  ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  Subprocess::Options o;
  o.path = KEEL_CLI_BIN;
  o.args = {"dev",     "--port",    "0",    "--storage",         "memory",
            "--quiet", "--runtime", script, "--startup-timeout", "5"};
  o.capture_stdout = o.capture_stderr = true;
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.has_value());
  ASSERT_TRUE((*p)->Wait(60s)) << DevOutput(**p);
  EXPECT_EQ((*p)->exit_code(), 4);
  const std::string out = DevOutput(**p);
  EXPECT_THAT(out, HasSubstr("keel: dev.runtime_timeout: "));
  EXPECT_THAT(out, HasSubstr("==> starting the runtime (" + script + ")"));
  EXPECT_THAT(out, Not(HasSubstr("counter, chat"))) << "only keel-examples hosts the examples";

  pid_t sleep_pid = 0;
  std::istringstream(ReadFile(pid_file)) >> sleep_pid;
  ASSERT_GT(sleep_pid, 0) << "the script did not start";
  // The group was signalled before keel dev exited; the sleep's end is the kernel's business
  // now, which takes a moment (bounded).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (Alive(sleep_pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  const bool survived = Alive(sleep_pid) &&
                        ReadFile("/proc/" + std::to_string(sleep_pid) + "/cmdline").find("sleep") !=
                            std::string::npos;
  EXPECT_FALSE(survived) << "the runtime's `sleep` outlived keel dev";
  if (survived) ::kill(sleep_pid, SIGKILL);  // the test's own grandchild, by its pid
}

// A loopback HTTP server that is not Keel: every request gets a 502 with a page of HTML.
class NotKeelServer {
 public:
  NotKeelServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~NotKeelServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  void Serve() {
    static const std::string kPage =
        "<!DOCTYPE html>\n<html>\n<head>\n  <title>502 Bad Gateway</title>\n</head>\n<body>\n"
        "  <h1>Bad Gateway</h1>\n  <p>The proxy server received an invalid response from an "
        "upstream server.</p>\n  <hr>\n  <address>Apache Server at 127.0.0.1</address>\n"
        "</body>\n</html>\n";
    while (!stop_) {
      pollfd listening{fd_, POLLIN, 0};
      if (::poll(&listening, 1, 100) <= 0) continue;
      const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      // The whole request (headers and a Content-Length body), then the page and close.
      std::string request;
      size_t need = std::string::npos;
      char buf[4096];
      while (!stop_ && (need == std::string::npos || request.size() < need)) {
        pollfd in{conn, POLLIN, 0};
        if (::poll(&in, 1, 2000) <= 0) break;
        const ssize_t got = ::read(conn, buf, sizeof buf);
        if (got <= 0) break;
        request.append(buf, static_cast<size_t>(got));
        const auto end = request.find("\r\n\r\n");
        if (need == std::string::npos && end != std::string::npos) {
          size_t body = 0;
          std::string lower = request.substr(0, end);
          std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
          if (auto at = lower.find("content-length:"); at != std::string::npos) {
            body = std::stoul(lower.substr(at + 15));
          }
          need = end + 4 + body;
        }
      }
      const std::string response =
          "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: " +
          std::to_string(kPage.size()) + "\r\nConnection: close\r\n\r\n" + kPage;
      (void)!::write(conn, response.data(), response.size());
      ::shutdown(conn, SHUT_WR);
      ::close(conn);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A server that is not keel-engine answers with a page of HTML: the error is still one line,
// with the status and the start of the page.
TEST(KeelCli, ANonKeelAnswerIsOneLine) {
  NotKeelServer server;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"call", "counter/k", "increment", "1"},
        {"actors", "list", "counter"}}) {
    auto with = args;
    with.insert(with.end(), {"--endpoint", server.endpoint(), "--timeout", "5"});
    KeelRun r = Keel(with);
    EXPECT_EQ(r.exit_code, 3) << Describe(r);
    EXPECT_THAT(r.err, MatchesRegex("keel: client\\.bad_response: HTTP 502[^\n]*: <!DOCTYPE html> "
                                    "<html> <head> <title>502 Bad Gateway</title>[^\n]*…\n"))
        << Describe(r);
    EXPECT_LT(r.err.size(), 300u) << Describe(r);
  }
}

// An --endpoint that cannot be used says why.
TEST(KeelCli, EndpointErrorsSayWhatIsWrong) {
  for (const auto& [endpoint, why] : std::vector<std::pair<std::string, std::string>>{
           {"http://127.0.0.1:99999", "port 99999 is out of range (1-65535)"},
           {"http://127.0.0.1:http", "port 'http' is not a number"},
           {"http://user:pw@127.0.0.1:6420",
            "credentials in the URL (user:password@) are not supported"},
           {"http://", "'http://': no host"},
           {"https://127.0.0.1:6420", "https:// is not supported"},
           {"127.0.0.1:6420", "must be an http:// URL"}}) {
    KeelRun r = Keel({"call", "counter/k", "increment", "1", "--endpoint", endpoint});
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    EXPECT_THAT(r.err, MatchesRegex("keel: cli\\.usage: [^\n]*\n")) << Describe(r);
    EXPECT_THAT(r.err, HasSubstr("'" + endpoint + "'")) << Describe(r);
    EXPECT_THAT(r.err, HasSubstr(why)) << Describe(r);
  }
}

// A command lists only the flags it uses: REST requests have no encoding, and only
// commands that may create an actor place it in a pool.
TEST(KeelCli, HelpListsOnlyTheFlagsACommandUses) {
  for (const auto& [command, pool, encoding] :
       std::vector<std::tuple<std::vector<std::string>, bool, bool>>{
           {{"actors", "get"}, false, false},
           {{"actors", "destroy"}, false, false},
           {{"actors", "list"}, false, false},
           {{"actors", "create"}, true, false},
           {{"call"}, true, true},
           {{"watch"}, true, true}}) {
    auto args = command;
    args.push_back("--help");
    KeelRun r = Keel(args);
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.stdout_text().find("--pool") != std::string::npos, pool) << Describe(r);
    EXPECT_EQ(r.stdout_text().find("--encoding") != std::string::npos, encoding) << Describe(r);
    EXPECT_THAT(r.stdout_text(), HasSubstr("--timeout"));
  }
}

}  // namespace
}  // namespace keel
