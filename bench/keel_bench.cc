// keel_bench: Keel measured the way a user reaches it — the real `keel-engine` and
// `keel-examples` binaries in separate processes, driven as a client over loopback through
// the engine's gateway (BENCHMARKS.md W1–W7), next to the floors of this machine measured
// in the same run. Prints ONE JSON object on stdout; progress goes to stderr.
//
//   keel_bench [--engine PATH] [--runtime PATH] [--sql-runtime PATH] [--js-runtime PATH]
//              [--quick] [--w4-large] [--envoy-transport unix|tcp|in-process]
//              [--client-poll-us N] [--w6-actors N] [--only w1,w1js,w2,...]
//              [--storage rocksdb|postgresql://...]
//
// The binaries default to keel-engine / keel-examples beside keel_bench (the build's bin
// dir). Each stack is a fresh engine (`--port 0`, RocksDB in a temp dir: every commit is
// synced) plus one runtime process (KEEL_ENDPOINT, pool `default`), ready once
// GET /envoys lists its envoy as connected. A native runtime reaches the engine over the
// engine's Unix socket (--unix-socket), as a runtime on the engine's host does;
// --envoy-transport tcp makes it use TCP loopback instead, and --envoy-transport in-process
// runs the engine inside the runtime's process (`--with-engine`: no socket between them;
// one process, so its CPU and RSS are reported as the engine's and the runtime's read 0).
// W4 and W7 keep two processes (Unix socket) under in-process: W7 kills each in turn, W4
// reports each one's memory. Clients always use TCP. The workloads
// drive the `counter` example actor
// (`increment(n)` returns the new count, durable before the answer):
//  * floors: a 32-byte binary WebSocket echo round trip (keel::net server on one thread) and
//    one synced RocksDB commit (16-byte key, 64-byte value) in the same temp dir, at the
//    start of the run; and the two as one sequence (echo, then synced commit) right before
//    each W1 WebSocket rep (`ws_rtt_then_synced_commit`, the median rep), so the disk's
//    drift during a run falls on W1 and on its floor alike;
//  * the sequential loops' clients are blocking sockets read and written on the calling
//    thread (HttpConn, and WsConn in ws_conn.h, also for the floor's echo): no client I/O
//    thread between the answer and the caller; with --client-poll-us N they poll for up to
//    N µs before blocking (recv.h), so an answer within that window wakes no thread;
//  * W1: 2000 sequential increment(1) on one actor, (a) POST /gateway/<id>/action/increment
//    over one keep-alive HTTP connection (json), (b) over one persistent
//    /gateway/<id>/connect WebSocket (rivet_encoding.bare); three reps of both, alternating,
//    and the rep with the median p50 reported (every rep's p50 in `reps_p50_us`);
//  * W1 (JS): with --js-runtime (examples/js/keel-js-examples: the JavaScript examples on the
//    wasm runtime in Node), the same two W1 loops on a fresh stack whose runtime is that
//    program, reported as w1_js_http / w1_js_ws with their ratio to the native runtime's;
//  * W2: 64 callers in closed loops on 64 distinct actors for 10 s (WebSocket, then HTTP
//    keep-alive), every answer checked against the caller's own count;
//  * W3: get-or-create with a fresh key through the gateway's query form plus the first
//    action, one keep-alive request each, 200 times;
//  * W4: RSS of engine and runtime before/after 1,000 (and with --w4-large 10,000) awake idle
//    actors on a fresh stack, then after they were put to sleep over REST;
//  * W5: SQLite via actions, once per backend (a fresh stack whose runtime is
//    keel-bench-runtime with KEEL_SQLITE_BACKEND=local, then =remote), on the `sqlbench`
//    actor (bench/actors/sqlbench.h): 2000 single-row insertOne over one /connect WebSocket
//    and 2000 over keep-alive HTTP, one insertMany(10000) (one transaction, one statement per
//    row), 2000 getById point selects over each transport; next to the same three operations
//    on a plain SQLite file through keel::sql (the execution layer's PRAGMAs), in-process;
//  * W6: 20 actors (--w6-actors: more for a steadier p50 when comparing builds), each put to
//    sleep over REST (polled until asleep), then the first action timed;
//  * W7: on a fresh stack, callers keep incrementing 4 actors (2 HTTP, 2 WebSocket); kill -9
//    the runtime and restart it, then kill -9 the engine and restart it on the same port and
//    data dir; every acknowledged count must survive (lost = 0).
// CPU per call: utime+stime of the engine and runtime processes (/proc/<pid>/stat, 10 ms
// ticks) over the measured loop divided by its calls. Every loop is bounded in count and
// time; --quick shrinks the counts for a smoke run (well under a minute in release).
// Context switches per call: voluntary + involuntary, summed over the threads of each
// process (/proc/<pid>/task/*/status). (W5's batch: CPU and switches per row.)
// Exit status 0 when the run completed (even if a performance target is missed), 1 when it
// could not (a process failed to start, a workload failed outright) or when W7 found an
// acknowledged write lost.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/native/subprocess.h"
#include "echo_server.h"
#include "http_conn.h"
#include "net/client.h"
#include "net/http.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "sqlite/database.h"
#include "storage/kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "value/value.h"
#include "wire/client_messages.h"
#include "ws_conn.h"

namespace keel::bench {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point g_start = Clock::now();
std::filesystem::path g_root;  // this run's temp dir (removed at exit)

// How a native runtime reaches the engine: a Unix socket beside the engine's TCP port (the
// engine's --unix-socket; what a runtime on the engine's host uses), TCP loopback, or no
// socket at all — the engine in the runtime's process (`--with-engine`).
enum class EnvoyTransport { kUnix, kTcp, kInProcess };

const char* TransportName(EnvoyTransport t) {
  switch (t) {
    case EnvoyTransport::kUnix:
      return "unix socket (native runtimes)";
    case EnvoyTransport::kTcp:
      return "tcp";
    case EnvoyTransport::kInProcess:
      return "in-process (the engine in the native runtime's process)";
  }
  return "?";
}

struct Config {
  std::string engine_bin, runtime_bin;
  std::string sql_runtime_bin;  // W5: hosts `sqlbench` (keel-bench-runtime)
  // W1 with JavaScript actors: the wasm runtime on Node (examples/js/keel-js-examples).
  std::string js_runtime_bin;
  bool quick = false;
  bool w4_large = false;
  bool keep = false;  // keep the temp dir (logs, data) for a look afterwards
  // How native runtimes reach the engine (EnvoyTransport). Clients always use TCP: the
  // public path.
  EnvoyTransport envoy_transport = EnvoyTransport::kUnix;
  std::set<std::string> only;  // empty = all
  // Counts (full / quick).
  int w1_calls = 2000, w1_warmup = 200;
  // W1's HTTP and WebSocket loops run this many times, alternating, and the rep with the
  // median p50 is reported, as the anchors report the median of their three reps: one
  // 2,000-call loop lasts about a second, and on a shared host a noisy second moves it 2-3x.
  int w1_reps = 3;
  int w2_callers = 64;
  seconds w2_duration{10};
  int w3_calls = 200;
  int w4_small = 1000, w4_large_count = 10000;
  int w5_inserts = 2000, w5_batch = 10000, w5_selects = 2000, w5_warmup = 20;
  // The 10,000-row call is timed this many times and its median reported, as the anchors
  // report the median of their reps: one call of ~0.5 s moves with the machine.
  int w5_batch_calls = 3;
  int w6_actors = 20;
  int w7_acks_before_kill = 200, w7_acks_after = 50;
  milliseconds w7_call_timeout{5000};
  seconds w7_recovery{90};
  bool w7_engine_kill = true;
  int floor_ws = 5000, floor_commit = 1000;
  // The engine's --storage: "rocksdb" (in each stack's temp dir), or the postgresql:// URL
  // of a database whose keel_kv table each stack starts without (psql drops it).
  std::string storage = "rocksdb";

  bool Runs(const std::string& w) const { return only.empty() || only.count(w) != 0; }
};
Config g_cfg;

void RemoveRoot() {
  if (g_root.empty()) return;
  if (g_cfg.keep) {
    std::fprintf(stderr, "keel_bench: kept %s\n", g_root.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(g_root, ec);
  g_root.clear();
}

void Progress(const std::string& line) {
  const double t = std::chrono::duration<double>(Clock::now() - g_start).count();
  std::fprintf(stderr, "[keel_bench %7.2fs] %s\n", t, line.c_str());
}

double MicrosSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}
double R1(double v) { return std::round(v * 10) / 10; }
double R2(double v) { return std::round(v * 100) / 100; }

json LoadAvg() {
  std::ifstream f("/proc/loadavg");
  double a = 0, b = 0, c = 0;
  f >> a >> b >> c;
  return json::array({a, b, c});
}

// ---- /proc readings ----------------------------------------------------------------

// utime + stime of `pid` in µs; 0 when unreadable.
double ProcCpuUs(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(s.substr(close + 2));
  std::vector<std::string> tok;
  std::string t;
  while (in >> t && tok.size() < 13) tok.push_back(t);
  if (tok.size() < 13) return 0;
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const double ticks = std::stod(tok[11]) + std::stod(tok[12]);
  return ticks * 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// VmRSS of `pid` in bytes; 0 when unreadable.
int64_t ProcRss(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

// Context switches (voluntary + involuntary) summed over the threads of `pid`; 0 when
// unreadable. Threads that exited since are not counted.
int64_t ProcCtxSwitches(pid_t pid) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(t.path() / "status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) total += std::stoll(line.substr(24));
      if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) total += std::stoll(line.substr(27));
    }
  }
  return total;
}

double SelfCpuUs() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// ---- samples -------------------------------------------------------------------------

struct Samples {
  std::vector<double> us;
  bool cut_short = false;

  void Add(const Samples& o) { us.insert(us.end(), o.us.begin(), o.us.end()); }
  double Pct(double p) const {
    if (us.empty()) return 0;
    std::vector<double> s = us;
    std::sort(s.begin(), s.end());
    return s[std::min(s.size() - 1, static_cast<size_t>(p * static_cast<double>(s.size())))];
  }
  double Mean() const {
    double sum = 0;
    for (double v : us) sum += v;
    return us.empty() ? 0 : sum / static_cast<double>(us.size());
  }
};

// The per-workload record: {workload, name, params, n, errors, p50_us, p99_us, ops_per_s,
// cpu_us_per_call:{engine, runtime}} plus extras.
struct CpuWindow {
  pid_t engine = 0, runtime = 0;
  double e0 = 0, r0 = 0, c0 = 0;
  int64_t es0 = 0, rs0 = 0;
  Clock::time_point t0;
  void Begin(pid_t e, pid_t r) {
    engine = e;
    runtime = r;
    es0 = e > 0 ? ProcCtxSwitches(e) : 0;
    rs0 = r > 0 ? ProcCtxSwitches(r) : 0;
    e0 = ProcCpuUs(e);
    r0 = ProcCpuUs(r);
    c0 = SelfCpuUs();
    t0 = Clock::now();
  }
  // cpu_us_per_call and cpu_pct fields for `calls` calls since Begin.
  void End(json& j, size_t calls) const {
    const double wall = MicrosSince(t0);
    const double e = ProcCpuUs(engine) - e0, r = ProcCpuUs(runtime) - r0, c = SelfCpuUs() - c0;
    const double n = std::max<double>(1, static_cast<double>(calls));
    j["cpu_us_per_call"] = {{"engine", R1(e / n)}, {"runtime", R1(r / n)}, {"client", R1(c / n)}};
    j["cpu_pct_of_one_core"] = {{"engine", R1(100 * e / wall)},
                                {"runtime", R1(100 * r / wall)},
                                {"client", R1(100 * c / wall)}};
    if (engine > 0 && runtime > 0) {
      j["ctx_switches_per_call"] = {
          {"engine", R1(static_cast<double>(ProcCtxSwitches(engine) - es0) / n)},
          {"runtime", R1(static_cast<double>(ProcCtxSwitches(runtime) - rs0) / n)}};
    }
  }
};

json Record(const std::string& workload, const std::string& name, json params, const Samples& s,
            int64_t errors, double wall_us) {
  json j;
  j["workload"] = workload;
  j["name"] = name;
  j["params"] = std::move(params);
  j["n"] = s.us.size();
  j["errors"] = errors;
  j["p50_us"] = R1(s.Pct(0.50));
  j["p90_us"] = R1(s.Pct(0.90));
  j["p99_us"] = R1(s.Pct(0.99));
  j["mean_us"] = R1(s.Mean());
  j["max_us"] = s.us.empty() ? 0 : R1(*std::max_element(s.us.begin(), s.us.end()));
  j["ops_per_s"] = wall_us > 0 ? R1(static_cast<double>(s.us.size()) * 1e6 / wall_us) : 0;
  if (s.cut_short) j["cut_short"] = true;
  return j;
}

void Report(const std::string& name, const json& j) {
  std::string line = name + ": n=" + std::to_string(j.value("n", 0)) +
                     " p50=" + std::to_string(j.value("p50_us", 0.0)) +
                     "us p99=" + std::to_string(j.value("p99_us", 0.0)) +
                     "us ops/s=" + std::to_string(j.value("ops_per_s", 0.0)) +
                     " errors=" + std::to_string(j.value("errors", 0));
  Progress(line);
}

// A workload that cannot go on.
struct Failure {
  std::string what;
};
[[noreturn]] void Fail(const std::string& what) { throw Failure{what}; }

// ---- HTTP ------------------------------------------------------------------------------

int64_t OutputOf(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("output") || !j["output"].is_number_integer()) {
    return -1;
  }
  return j["output"].get<int64_t>();
}

// A client-protocol connection to one actor: /gateway/<id>/connect, bare encoding.
class WsActor {
 public:
  // Errors: bench.ws_connect (the upgrade failed), bench.no_init.
  static Result<std::unique_ptr<WsActor>> Open(uint16_t port, const std::string& id,
                                               milliseconds timeout = milliseconds(15000)) {
    std::string why;
    auto ws = WsConn::Connect(port, "/gateway/" + id + "/connect", {"rivet", "rivet_encoding.bare"},
                              timeout, &why);
    if (ws == nullptr) return Unexpected{Error("bench", "ws_connect", why)};
    std::unique_ptr<WsActor> a(new WsActor);
    a->ws_ = std::move(ws);
    auto init = a->Next(timeout);
    if (!init || !std::holds_alternative<wire::Init>(*init)) {
      return Unexpected{Error("bench", "no_init", "no Init on the gateway WebSocket")};
    }
    return a;
  }

  // increment(n): the new count, or -1 on any failure (then the connection is unusable).
  int64_t Increment(int64_t n, milliseconds timeout = milliseconds(15000)) {
    return Call("increment", Value::ArrayOf({n}), timeout);
  }
  int64_t Call(const std::string& name, Value args, milliseconds timeout) {
    auto out = CallValue(name, std::move(args), timeout);
    if (!out || !out->is_integer()) return -1;
    return static_cast<int64_t>(out->as_uint());
  }
  // The action's output, or nullopt on any failure (then the connection is unusable).
  std::optional<Value> CallValue(const std::string& name, Value args, milliseconds timeout) {
    const uint64_t want = ++action_id_;
    Bytes b = wire::Encode(wire::ToServer{wire::ActionRequest{want, name, std::move(args)}},
                           wire::Encoding::kBare);
    if (!ws_->Send(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), true)) {
      return std::nullopt;
    }
    const auto deadline = Clock::now() + timeout;
    for (int i = 0; i < 1000; ++i) {  // events are skipped (none subscribed)
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto m = Next(left);
      if (!m) return std::nullopt;
      if (auto* r = std::get_if<wire::ActionResponse>(&*m)) {
        if (r->id != want) continue;
        return std::move(r->output);
      }
      if (auto* e = std::get_if<wire::ErrorMsg>(&*m)) {
        // An answer to an earlier call this caller gave up on (e.g. actor.action_result_lost
        // after a runtime crash) is not this call's.
        if (e->action_id && *e->action_id != want) continue;
        return std::nullopt;
      }
    }
    return std::nullopt;
  }

 private:
  WsActor() = default;
  std::optional<wire::ToClient> Next(milliseconds timeout) {
    auto msg = ws_->Receive(timeout);
    if (!msg) return std::nullopt;
    auto decoded =
        wire::DecodeToClient(Bytes(msg->data.begin(), msg->data.end()), wire::Encoding::kBare);
    if (!decoded.ok()) return std::nullopt;
    return std::move(*decoded);
  }

  std::unique_ptr<WsConn> ws_;
  uint64_t action_id_ = 0;
};

const std::string kIncrementBody = R"({"args":[1]})";

// ---- the process stack ------------------------------------------------------------------

// One keel-engine process (RocksDB in `dir`) and one keel-examples runtime process
// connected to it. Logs go to files in `dir`; their tails are printed on failure.
class Stack {
 public:
  // `runtime_bin` (default: --runtime) with `runtime_env` added to its environment.
  // `transport`: how the runtime reaches the engine (the JavaScript runtime's WebSocket
  // speaks TCP only; in-process needs a runtime built with keel::ServeWithEngine).
  explicit Stack(const std::string& tag, std::string runtime_bin = "",
                 std::vector<std::pair<std::string, std::string>> runtime_env = {},
                 EnvoyTransport transport = g_cfg.envoy_transport)
      : runtime_bin_(runtime_bin.empty() ? g_cfg.runtime_bin : std::move(runtime_bin)),
        runtime_env_(std::move(runtime_env)),
        transport_(transport) {
    dir_ = g_root / tag;
    std::filesystem::create_directories(dir_);
    if (g_cfg.storage != "rocksdb") DropPostgresTable();
  }
  ~Stack() { Stop(); }

  void Start() {
    if (transport_ == EnvoyTransport::kInProcess) {
      StartCombined();
      return;
    }
    StartEngine(0);
    StartRuntime();
  }

  // The runtime with the engine in its process (`--with-engine`): engine_ is that process.
  void StartCombined() {
    const auto t0 = Clock::now();
    std::vector<std::pair<std::string, std::string>> env = {
        {"KEEL_NAMESPACE", "default"}, {"KEEL_POOL", "default"}, {"KEEL_LOG_LEVEL", "warn"}};
    env.insert(env.end(), runtime_env_.begin(), runtime_env_.end());
    SpawnEngine({runtime_bin_, "--with-engine", "--port", "0", "--data-dir",
                 (dir_ / "data").string(), "--storage", g_cfg.storage},
                std::move(env));
    if (!WaitEnvoy({}, milliseconds(30000)))
      Fail("the runtime never connected" + Tail("engine.log"));
    engine_start_ms_ = runtime_start_ms_ = MicrosSince(t0) / 1000;
    Progress("runtime with its engine in process, pid " + std::to_string(engine_->pid()) +
             " on 127.0.0.1:" + std::to_string(port_) + " (" +
             std::to_string(static_cast<int>(engine_start_ms_)) + " ms)");
  }

  void StartEngine(uint16_t port) {
    const auto t0 = Clock::now();
    std::vector<std::string> command = {g_cfg.engine_bin,
                                        "--port",
                                        std::to_string(port),
                                        "--data-dir",
                                        (dir_ / "data").string(),
                                        "--storage",
                                        g_cfg.storage,
                                        "--log-level",
                                        "warn"};
    if (transport_ == EnvoyTransport::kUnix)
      command.insert(command.end(), {"--unix-socket", socket_path()});
    SpawnEngine(std::move(command), {});
    engine_start_ms_ = MicrosSince(t0) / 1000;
    Progress("engine pid " + std::to_string(engine_->pid()) + " on 127.0.0.1:" + std::to_string(port_) +
             " (" + std::to_string(static_cast<int>(engine_start_ms_)) + " ms)");
  }

  // Starts the runtime and waits until the engine lists a connected envoy whose key is not
  // in `dead_keys`.
  void StartRuntime(const std::set<std::string>& dead_keys = {}) {
    const auto log = (dir_ / "runtime.log").string();
    Subprocess::Options o;
    o.path = "/bin/sh";
    o.args = {"-c", "exec \"$0\" \"$@\" >>\"$KEEL_BENCH_LOG\" 2>&1", runtime_bin_};
    o.env = {{"KEEL_BENCH_LOG", log},
             {"KEEL_ENDPOINT", envoy_endpoint()},
             {"KEEL_NAMESPACE", "default"},
             {"KEEL_POOL", "default"},
             {"KEEL_LOG_LEVEL", "warn"}};
    o.env.insert(o.env.end(), runtime_env_.begin(), runtime_env_.end());
    const auto t0 = Clock::now();
    auto p = Subprocess::Start(o);
    if (!p.has_value()) Fail("runtime spawn: " + p.error().ToString());
    runtime_ = std::move(*p);
    if (!WaitEnvoy(dead_keys, milliseconds(30000))) Fail("the runtime never connected" + Tail("runtime.log"));
    runtime_start_ms_ = MicrosSince(t0) / 1000;
    Progress("runtime pid " + std::to_string(runtime_->pid()) + " connected (" +
             std::to_string(static_cast<int>(runtime_start_ms_)) + " ms)");
  }

  // Connected envoy keys of pool `default` (empty on error).
  std::set<std::string> ConnectedEnvoys() {
    HttpConn c(port_, milliseconds(3000));
    std::string body;
    std::set<std::string> keys;
    if (c.Get("/envoys?namespace=default&name=default", &body) != 200) return keys;
    auto j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.contains("envoys")) return keys;
    for (const auto& e : j["envoys"]) {
      if (!e.contains("stop_ts")) keys.insert(e.value("envoy_key", ""));  // not stopped
    }
    return keys;
  }

  bool WaitEnvoy(const std::set<std::string>& dead_keys, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      for (const auto& k : ConnectedEnvoys()) {
        if (dead_keys.count(k) == 0) return true;
      }
      if (runtime_ && !runtime_->running()) return false;
      std::this_thread::sleep_for(milliseconds(5));  // poll interval, bounded by the deadline
    }
    return false;
  }

  void KillRuntime() {
    if (runtime_) runtime_->Kill();
  }
  void KillEngine() {
    if (engine_) engine_->Kill();
  }
  void Stop() {
    if (runtime_) runtime_->Stop(milliseconds(10000));
    runtime_.reset();
    if (engine_) engine_->Stop(milliseconds(10000));
    engine_.reset();
  }

  std::string Tail(const std::string& file) const {
    std::ifstream f(dir_ / file);
    std::vector<std::string> lines;
    std::string l;
    while (std::getline(f, l)) {
      lines.push_back(l);
      if (lines.size() > 15) lines.erase(lines.begin());
    }
    std::string out = "\n--- tail of " + file + ":\n";
    for (const auto& x : lines) out += x + "\n";
    return out;
  }

  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string socket_path() const { return (dir_ / "engine.sock").string(); }
  // What the runtime is given as KEEL_ENDPOINT.
  std::string envoy_endpoint() const {
    return transport_ == EnvoyTransport::kUnix
               ? "http+unix://" + net::UnixUrlAuthority(socket_path())
               : base();
  }
  uint16_t port() const { return port_; }
  pid_t engine_pid() const { return engine_ ? engine_->pid() : 0; }
  pid_t runtime_pid() const { return runtime_ ? runtime_->pid() : 0; }
  double engine_start_ms() const { return engine_start_ms_; }
  double runtime_start_ms() const { return runtime_start_ms_; }
  void DrainEngine() {
    if (engine_) engine_->Drain();
  }

 private:
  // A stack on PostgreSQL starts on an empty keel_kv table, as one on RocksDB starts in an
  // empty directory (the engine creates the table).
  void DropPostgresTable() {
    Subprocess::Options o;
    o.path = "/usr/bin/psql";
    o.args = {"--quiet",         "--no-psqlrc", "-v",
              "ON_ERROR_STOP=1", "-c",          "DROP TABLE IF EXISTS keel_kv",
              g_cfg.storage};
    o.capture_stdout = true;
    o.capture_stderr = true;
    auto p = Subprocess::Start(o);
    if (!p.has_value()) Fail("psql: " + p.error().ToString());
    if (!(*p)->Wait(milliseconds(30000)) || (*p)->exit_code() != 0) {
      std::string out;
      (*p)->Drain();
      for (const std::string& line : (*p)->lines_seen()) out += "\n  " + line;
      Fail("psql could not drop keel_kv in the --storage database" + out);
    }
  }

  // Starts `command` — keel-engine, or a runtime carrying one (`--with-engine`) — as
  // engine_, its stderr appended to engine.log and `env` added to its environment, and
  // takes port_ from its `listening on` line.
  void SpawnEngine(std::vector<std::string> command,
                   std::vector<std::pair<std::string, std::string>> env) {
    Subprocess::Options o;
    o.path = "/bin/sh";
    // exec keeps the pid: /proc readings and signals reach the program itself.
    o.args = {"-c", "exec \"$0\" \"$@\" 2>>\"$KEEL_BENCH_LOG\""};
    o.args.insert(o.args.end(), command.begin(), command.end());
    o.env = {{"KEEL_BENCH_LOG", (dir_ / "engine.log").string()}};
    o.env.insert(o.env.end(), env.begin(), env.end());
    o.capture_stdout = true;
    auto p = Subprocess::Start(o);
    if (!p.has_value()) Fail("engine spawn: " + p.error().ToString());
    engine_ = std::move(*p);
    auto line = engine_->WaitForLine("listening on ", milliseconds(30000));
    if (!line.has_value())
      Fail("engine did not start: " + line.error().ToString() + Tail("engine.log"));
    const auto colon = line->rfind(':');
    port_ = static_cast<uint16_t>(std::stoi(line->substr(colon + 1)));
  }

  std::filesystem::path dir_;
  std::string runtime_bin_;
  std::vector<std::pair<std::string, std::string>> runtime_env_;
  EnvoyTransport transport_;
  std::unique_ptr<Subprocess> engine_, runtime_;
  uint16_t port_ = 0;
  double engine_start_ms_ = 0, runtime_start_ms_ = 0;
};

// The transport of stacks that need the engine and the runtime in separate processes.
EnvoyTransport TwoProcessTransport() {
  return g_cfg.envoy_transport == EnvoyTransport::kInProcess ? EnvoyTransport::kUnix
                                                             : g_cfg.envoy_transport;
}

// REST create of a `name` actor (default: the counter) with `key`; returns its id (Fail on
// error).
std::string CreateActor(HttpConn& c, const std::string& key, const std::string& name = "counter") {
  json body{{"name", name}, {"key", key}, {"runner_name_selector", "default"}};
  std::string out;
  int st = 0;
  for (int attempt = 0; attempt < 3 && st != 200; ++attempt) st = c.Post("/actors?namespace=default", body.dump(), &out);
  auto j = json::parse(out, nullptr, false);
  if (st != 200 || j.is_discarded() || !j.contains("actor")) {
    Fail("create actor: " + std::to_string(st) + " " + out);
  }
  return j["actor"]["actor_id"].get<std::string>();
}

// increment(1) over HTTP; the new count or -1.
int64_t HttpIncrement(HttpConn& c, const std::string& id) {
  std::string out;
  const int st = c.Post("/gateway/" + id + "/action/increment", kIncrementBody, &out);
  return st == 200 ? OutputOf(out) : -1;
}

// Creates an actor and takes its first action (so it runs).
std::string CreateStarted(HttpConn& c, const std::string& key) {
  const std::string id = CreateActor(c, key);
  if (HttpIncrement(c, id) != 1) Fail("first action on " + key + " failed");
  return id;
}

bool IsAsleep(HttpConn& c, const std::string& id) {
  std::string out;
  if (c.Get("/actors/" + id + "?namespace=default", &out) != 200) return false;
  auto j = json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("actor")) return false;
  const auto& a = j["actor"];
  // Absent fields are null (the API omits them).
  return a.contains("sleep_ts") && !a["sleep_ts"].is_null() &&
         (!a.contains("connectable_ts") || a["connectable_ts"].is_null());
}

bool RequestSleep(HttpConn& c, const std::string& id) {
  std::string out;
  return c.Post("/actors/" + id + "/sleep?namespace=default", "{}", &out) == 200;
}

// Runs fn(i) for i in [0, count) on `threads` threads.
void Parallel(int count, int threads, const std::function<void(int worker, int i)>& fn) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w) {
    pool.emplace_back([&, w] {
      for (int i = next++; i < count; i = next++) fn(w, i);
    });
  }
  for (auto& t : pool) t.join();
}

// ---- floors ------------------------------------------------------------------------------

// A WebSocket echo on loopback: a keel::net server on one event-loop thread (as keel-engine
// and the runtime have) and one client connection, warmed up.
class EchoFloor {
 public:
  EchoFloor() : runtime_(1) {
    auto server = StartEchoServer(runtime_);
    if (!server.has_value()) Fail("echo server: " + server.error().ToString());
    server_ = std::move(*server);
    std::string why;
    client_ = WsConn::Connect(server_->port(), "/echo", {}, milliseconds(10000), &why);
    if (client_ == nullptr) Fail("echo connect: " + why);
    for (int i = 0; i < 500; ++i) {
      if (!RoundTrip()) Fail("echo warm-up failed");
    }
  }
  ~EchoFloor() {
    client_.reset();
    server_->StopAccepting();
    runtime_.Stop();
  }

  // One 32-byte binary message there and back.
  bool RoundTrip() {
    if (!client_->Send(payload_, true)) return false;
    auto m = client_->Receive(milliseconds(5000));
    return m.has_value() && m->data.size() == payload_.size();
  }
  size_t payload_bytes() const { return payload_.size(); }

 private:
  net::IoRuntime runtime_;
  std::unique_ptr<net::HttpServer> server_;
  std::unique_ptr<WsConn> client_;
  const std::string payload_ = std::string(32, 'p');
};

// A RocksDB store (the engine's defaults) in its own directory under the run's temp dir,
// removed when done; each commit writes one 64-byte value under one of 1,024 keys.
class CommitFloor {
 public:
  explicit CommitFloor(const std::string& name) : dir_(g_root / name) {
    std::filesystem::create_directories(dir_);
    auto opened = storage::RocksDbKvStore::Open(dir_.string());
    if (!opened.has_value()) Fail("rocksdb open: " + opened.error().ToString());
    store_ = std::move(*opened);
    for (int w = 0; w < 50; ++w) {
      if (!Commit(true)) Fail("commit warm-up failed");
    }
  }
  ~CommitFloor() {
    (void)store_->Close();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool Commit(bool sync) {
    auto txn = store_->Begin();
    if (!txn.has_value()) return false;
    char key[17];
    std::snprintf(key, sizeof key, "k%015llu", static_cast<unsigned long long>(i_++ % 1024));
    if (!(*txn)->Put(Bytes(key, key + 16), value_).ok()) return false;
    storage::CommitOptions options;
    options.sync = sync;
    return (*txn)->Commit(options).ok();
  }
  json Params() const {
    return {{"key_bytes", 16}, {"value_bytes", value_.size()}, {"dir", g_root.string()}};
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<storage::RocksDbKvStore> store_;
  const Bytes value_ = Bytes(64, 0x5a);
  uint64_t i_ = 0;
};

// Up to `count` samples of `one` within `budget`, stopping at the first failure.
template <typename F>
Samples TimeEach(int count, std::chrono::seconds budget, int64_t& errors,
                 std::chrono::microseconds gap, F&& one) {
  Samples s;
  const auto end = Clock::now() + budget;
  for (int n = 0; n < count && Clock::now() < end; ++n) {
    if (gap.count() > 0) std::this_thread::sleep_for(gap);
    const auto c0 = Clock::now();
    if (!one()) {
      ++errors;
      break;
    }
    s.us.push_back(MicrosSince(c0));
  }
  return s;
}

json FloorWsRtt() {
  Progress("floor: loopback WebSocket echo");
  EchoFloor echo;
  int64_t errors = 0;
  const auto t0 = Clock::now();
  Samples s = TimeEach(g_cfg.floor_ws, seconds(6), errors, std::chrono::microseconds(0),
                       [&] { return echo.RoundTrip(); });
  json j = Record("floor", "floor_ws_rtt", {{"payload_bytes", echo.payload_bytes()}}, s, errors,
                  MicrosSince(t0));
  Report("floor_ws_rtt", j);
  return j;
}

// One commit after another; with `gap`, each commit starts `gap` after the previous one
// ended (an action's commits are spaced by its round trips, and on ext4 a synced commit
// issued while the journal is still finishing the previous one waits for it).
json FloorCommit(bool sync, int count, std::chrono::microseconds gap = std::chrono::microseconds(0),
                 std::string name = "") {
  if (name.empty()) {
    name = !sync ? "floor_unsynced_commit"
           : gap.count() > 0 ? "floor_synced_commit_paced"
                             : "floor_synced_commit";
  }
  CommitFloor floor(name);
  int64_t errors = 0;
  const auto t0 = Clock::now();
  Samples s = TimeEach(count, seconds(8), errors, gap, [&] { return floor.Commit(sync); });
  json params = floor.Params();
  params["gap_us"] = gap.count();
  json j = Record("floor", name, std::move(params), s, errors, MicrosSince(t0));
  Report(name, j);
  return j;
}

// W1's floor as one measurement, taken right before each W1 WebSocket rep: a loopback
// WebSocket echo round trip and then one synced commit, on one thread, `calls` times. The
// commits are spaced by round trips as an action's are, and the disk's drift over a run (its
// synced commit read 165–251 µs between runs of one binary, docs/benchmarks-history.md) falls on
// the floor and on the W1 rep after it alike, where the floors measured at the start of the run
// are minutes away from W1.
class PairedFloor {
 public:
  PairedFloor() : commit_("floor_paired") {}

  json Rep() {
    int64_t errors = 0;
    const auto t0 = Clock::now();
    Samples s = TimeEach(g_cfg.w1_calls, seconds(30), errors, std::chrono::microseconds(0),
                         [&] { return echo_.RoundTrip() && commit_.Commit(true); });
    json params = commit_.Params();
    params["payload_bytes"] = echo_.payload_bytes();
    params["calls"] = g_cfg.w1_calls;
    json j = Record("floor", "floor_ws_rtt_then_synced_commit", std::move(params), s, errors,
                    MicrosSince(t0));
    Report("floor_ws_rtt_then_synced_commit", j);
    return j;
  }

 private:
  EchoFloor echo_;
  CommitFloor commit_;
};

// The median of several records of the same measurement, ranked by `key` (the middle one;
// of an even count the lower middle), with every record's `key` under `all_key`, their
// count under params[`count_key`], and the errors of all of them.
json MedianRecord(std::vector<json> records, const std::string& key, const std::string& all_key,
                  const std::string& count_key, const std::string& reported) {
  if (records.empty()) return json::object();
  std::vector<double> values;
  int64_t errors = 0;
  for (const json& r : records) {
    values.push_back(r.value(key, 0.0));
    errors += r.value("errors", int64_t{0});
  }
  std::sort(records.begin(), records.end(),
            [&](const json& a, const json& b) { return a.value(key, 0.0) < b.value(key, 0.0); });
  json m = records[(records.size() - 1) / 2];
  m["params"][count_key] = records.size();
  m["params"]["reported"] = reported;
  m[all_key] = values;
  m["errors"] = errors;
  return m;
}

// ---- W1 ----------------------------------------------------------------------------------

json W1Http(Stack& st, const std::string& id, int64_t& count, const std::string& name = "w1_http") {
  HttpConn c(st.port());
  for (int i = 0; i < g_cfg.w1_warmup; ++i) {
    if (HttpIncrement(c, id) != ++count) Fail("w1 http warm-up failed");
  }
  Samples s;
  int64_t errors = 0;
  CpuWindow cpu;
  cpu.Begin(st.engine_pid(), st.runtime_pid());
  const auto end = Clock::now() + seconds(30);
  for (int i = 0; i < g_cfg.w1_calls; ++i) {
    if (Clock::now() > end) {
      s.cut_short = true;
      break;
    }
    const auto t0 = Clock::now();
    const int64_t v = HttpIncrement(c, id);
    s.us.push_back(MicrosSince(t0));
    if (v != count + 1) {
      ++errors;
      if (v > 0) count = v;
    } else {
      ++count;
    }
  }
  json j = Record("W1", name,
                  {{"calls", g_cfg.w1_calls},
                   {"warmup", g_cfg.w1_warmup},
                   {"transport", "one keep-alive HTTP/1.1 connection, POST /gateway/<id>/action/increment, json"}},
                  s, errors, MicrosSince(cpu.t0));
  cpu.End(j, s.us.size());
  Report(name, j);
  return j;
}

json W1Ws(Stack& st, const std::string& id, int64_t& count, const std::string& name = "w1_ws") {
  auto a = WsActor::Open(st.port(), id);
  if (!a.has_value()) Fail("w1 ws connect: " + a.error().ToString());
  for (int i = 0; i < g_cfg.w1_warmup; ++i) {
    if ((*a)->Increment(1) != ++count) Fail("w1 ws warm-up failed");
  }
  Samples s;
  int64_t errors = 0;
  CpuWindow cpu;
  cpu.Begin(st.engine_pid(), st.runtime_pid());
  const auto end = Clock::now() + seconds(30);
  for (int i = 0; i < g_cfg.w1_calls; ++i) {
    if (Clock::now() > end) {
      s.cut_short = true;
      break;
    }
    const auto t0 = Clock::now();
    const int64_t v = (*a)->Increment(1);
    s.us.push_back(MicrosSince(t0));
    if (v != count + 1) {
      ++errors;
      if (v < 0) break;  // the connection is gone
      count = v;
    } else {
      ++count;
    }
  }
  json j = Record("W1", name,
                  {{"calls", g_cfg.w1_calls},
                   {"warmup", g_cfg.w1_warmup},
                   {"transport", "one WebSocket /gateway/<id>/connect, rivet_encoding.bare"}},
                  s, errors, MicrosSince(cpu.t0));
  cpu.End(j, s.us.size());
  Report(name, j);
  return j;
}

// W1's HTTP and WebSocket loops, g_cfg.w1_reps times alternating, into w[`prefix`_http] and
// w[`prefix`_ws]: for each the median rep (by p50), with every rep's p50. With `paired`, a
// PairedFloor rep runs right before each WebSocket rep, and their median goes to *paired.
void W1Reps(Stack& st, const std::string& id, int64_t& count, const std::string& prefix, json& w,
            json* paired = nullptr) {
  std::optional<PairedFloor> floor;
  if (paired != nullptr) {
    Progress("floor: a WebSocket echo round trip, then a synced commit (before each W1 WS rep)");
    floor.emplace();
  }
  std::vector<json> http, ws, floors;
  for (int rep = 0; rep < g_cfg.w1_reps; ++rep) {
    http.push_back(W1Http(st, id, count, prefix + "_http"));
    if (floor) floors.push_back(floor->Rep());
    ws.push_back(W1Ws(st, id, count, prefix + "_ws"));
  }
  auto median = [](std::vector<json> reps) {
    return MedianRecord(std::move(reps), "p50_us", "reps_p50_us", "reps",
                        "the median rep (by p50)");
  };
  w[prefix + "_http"] = median(std::move(http));
  w[prefix + "_ws"] = median(std::move(ws));
  if (paired != nullptr) *paired = median(std::move(floors));
}

// ---- W2 ----------------------------------------------------------------------------------

// W2's WebSocket callers, driven the way the anchors' Node clients drive theirs: one
// event-loop thread owns every connection, and each connection runs a closed loop — its next
// call goes out from the callback of the previous answer. (Blocking clients cost a caller
// thread and an I/O thread per connection and two wake-ups per call, CPU the engine and the
// runtime then lack on this two-core machine.)
class W2WsCaller final : public net::WsHandler, public std::enable_shared_from_this<W2WsCaller> {
 public:
  struct Shared {
    std::atomic<int> phase{0};  // 0 warm-up, 1 measure, 2 stop
    std::atomic<int> warmed{0};
    std::atomic<int> done{0};  // callers that stopped after the window (or broke)
  };

  W2WsCaller(Shared& shared, int64_t count) : shared_(shared), count_(count) {}

  // On the loop thread: the warm-up calls, then the measured ones once Begin() runs.
  void Start(std::shared_ptr<net::WsConnection> conn) {
    conn_ = std::move(conn);
    if (!got_init_) return;  // Init not here yet: OnMessage starts us
    Call();
  }
  void Begin() {  // on the loop thread, after the warm-up
    if (broken_) {
      Finish();
      return;
    }
    measuring_ = true;
    Call();
  }

  void OnMessage(std::string data, bool) override {
    auto decoded = wire::DecodeToClient(Bytes(data.begin(), data.end()), wire::Encoding::kBare);
    if (!decoded.ok()) return Break();
    if (std::holds_alternative<wire::Init>(*decoded)) {
      got_init_ = true;
      if (conn_) Call();
      return;
    }
    int64_t v = -1;
    if (auto* r = std::get_if<wire::ActionResponse>(&*decoded)) {
      if (r->id != action_id_) return;  // an answer to a call given up on
      if (r->output.is_integer()) v = static_cast<int64_t>(r->output.as_uint());
    } else if (auto* e = std::get_if<wire::ErrorMsg>(&*decoded)) {
      if (e->action_id && *e->action_id != action_id_) return;
    } else {
      return;  // events: none subscribed
    }
    const double us = MicrosSince(t0_);
    if (!measuring_) {  // warm-up
      if (v == count_ + 1) {
        ++count_;
      } else {
        ++errors_;
        if (v > 0) count_ = v;
      }
      if (v < 0) broken_ = true;
      if (++warm_calls_ < 20 && !broken_) return Call();
      return WarmDone();
    }
    if (shared_.phase.load(std::memory_order_acquire) != 1) {
      if (v > 0) count_ = v;  // answered after the window closed: not counted
      return Finish();
    }
    if (v == count_ + 1) {
      ++count_;
      samples_.us.push_back(us);
    } else {
      ++errors_;
      if (v > 0) count_ = v;
      if (v < 0) return Break();
    }
    Call();
  }
  void OnClose(uint16_t, std::string) override { Break(); }

  // Read after Shared::done counted this caller.
  const Samples& samples() const { return samples_; }
  void Close() {  // on the loop thread: drops the connection ↔ handler cycle
    if (conn_) conn_->Close(1000, "");
    conn_.reset();
  }
  int64_t errors() const { return errors_; }
  int64_t count() const { return count_; }

 private:
  void Call() {
    Bytes b = wire::Encode(wire::ToServer{wire::ActionRequest{++action_id_, "increment", Value::ArrayOf({1})}},
                           wire::Encoding::kBare);
    t0_ = Clock::now();
    conn_->Send(std::string(b.begin(), b.end()), true);
  }
  void Break() {
    if (broken_) return;
    broken_ = true;
    ++errors_;
    if (!measuring_) return WarmDone();
    Finish();
  }
  void WarmDone() {
    if (warm_done_) return;
    warm_done_ = true;
    shared_.warmed.fetch_add(1, std::memory_order_acq_rel);
  }
  void Finish() {
    if (finished_) return;
    finished_ = true;
    shared_.done.fetch_add(1, std::memory_order_acq_rel);
  }

  Shared& shared_;
  std::shared_ptr<net::WsConnection> conn_;
  int64_t count_;
  uint64_t action_id_ = 0;
  Clock::time_point t0_{};
  Samples samples_;
  int64_t errors_ = 0;
  int warm_calls_ = 0;
  bool got_init_ = false, measuring_ = false, broken_ = false, finished_ = false, warm_done_ = false;
};


// W2's record: the measured window, CPU per call of each process, and whether every
// caller's last count is what its actor holds.
json W2Finish(Stack& st, const std::vector<std::string>& ids, bool ws, const Samples& all, int64_t errs,
              double wall, CpuWindow& cpu, const json& load_before, const std::vector<int64_t>& counts) {
  const int n = static_cast<int>(ids.size());
  const std::string name = ws ? "w2_ws" : "w2_http";
  json j = Record("W2", name,
                  {{"callers", n},
                   {"actors", n},
                   {"seconds", g_cfg.w2_duration.count()},
                   {"warmup_rounds", 20},
                   {"transport", ws ? "one WebSocket /connect per caller, bare; all on one event-loop thread"
                                    : "one keep-alive HTTP connection per caller, json; a thread each"}},
                  all, errs, wall);
  cpu.End(j, all.us.size());
  int mismatched = 0;
  {
    HttpConn c(st.port());
    for (int i = 0; i < n; ++i) {
      std::string out;
      c.Post("/gateway/" + ids[static_cast<size_t>(i)] + "/action/getCount", R"({"args":[]})", &out);
      if (OutputOf(out) != counts[static_cast<size_t>(i)]) ++mismatched;
    }
  }
  j["counters_ok"] = mismatched == 0;
  j["loadavg_before"] = load_before;
  j["loadavg_after"] = LoadAvg();
  Report(name, j);
  return j;
}

json W2Ws(Stack& st, const std::vector<std::string>& ids, std::vector<int64_t> counts) {
  const int n = static_cast<int>(ids.size());
  net::IoRuntime loop(1);
  W2WsCaller::Shared shared;
  std::vector<std::shared_ptr<W2WsCaller>> callers;
  std::atomic<int> connected{0};
  std::mutex failure_mu;
  std::optional<std::string> failure;
  for (int i = 0; i < n; ++i) {
    auto caller = std::make_shared<W2WsCaller>(shared, counts[static_cast<size_t>(i)]);
    callers.push_back(caller);
    net::WsConnectOptions opts;
    opts.url = "ws://127.0.0.1:" + std::to_string(st.port()) + "/gateway/" + ids[static_cast<size_t>(i)] + "/connect";
    opts.subprotocols = {"rivet", "rivet_encoding.bare"};
    opts.handshake_timeout = seconds(15);
    net::ConnectWebSocket(loop, std::move(opts), caller,
                          [caller, &connected, &failure_mu, &failure](
                              Result<std::shared_ptr<net::WsConnection>> c, net::HttpResponse) {
                            if (c.has_value()) {
                              caller->Start(std::move(*c));
                            } else {
                              std::lock_guard lock(failure_mu);
                              failure = c.error().ToString();
                            }
                            connected.fetch_add(1, std::memory_order_acq_rel);
                          });
  }
  const auto warm_deadline = Clock::now() + seconds(60);
  while ((connected.load() < n || shared.warmed.load() < n) && Clock::now() < warm_deadline) {
    {
      std::lock_guard lock(failure_mu);
      if (failure) Fail("w2_ws connect: " + *failure);
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  if (shared.warmed.load() < n) Fail("w2_ws: the warm-up did not finish within 60 s");
  CpuWindow cpu;
  cpu.Begin(st.engine_pid(), st.runtime_pid());
  const json load_before = LoadAvg();
  shared.phase = 1;
  loop.Post([&callers] {
    for (auto& c : callers) c->Begin();
  });
  std::this_thread::sleep_for(g_cfg.w2_duration);
  shared.phase = 2;
  const double wall = MicrosSince(cpu.t0);
  // Each caller stops at its next answer (not counted).
  const auto stop_deadline = Clock::now() + seconds(30);
  while (shared.done.load() < n && Clock::now() < stop_deadline) std::this_thread::sleep_for(milliseconds(1));
  if (shared.done.load() < n) Fail("w2_ws: callers still waiting for an answer 30 s after the window");
  Samples all;
  int64_t errs = 0;
  for (int i = 0; i < n; ++i) {
    all.Add(callers[static_cast<size_t>(i)]->samples());
    errs += callers[static_cast<size_t>(i)]->errors();
    counts[static_cast<size_t>(i)] = callers[static_cast<size_t>(i)]->count();
  }
  std::atomic<bool> closed{false};
  loop.Post([&callers, &closed] {
    for (auto& c : callers) c->Close();
    closed = true;
  });
  while (!closed.load()) std::this_thread::sleep_for(milliseconds(1));
  return W2Finish(st, ids, true, all, errs, wall, cpu, load_before, counts);
}

json W2(Stack& st, const std::vector<std::string>& ids, bool ws) {
  const int n = static_cast<int>(ids.size());
  const std::string name = ws ? "w2_ws" : "w2_http";
  Progress(name + ": " + std::to_string(n) + " callers, connecting");
  std::vector<std::unique_ptr<HttpConn>> https(static_cast<size_t>(n));
  std::vector<int64_t> counts(static_cast<size_t>(n), 0);
  // Current counts (W2 runs twice on the same actors).
  {
    HttpConn c(st.port());
    for (int i = 0; i < n; ++i) {
      std::string out;
      if (c.Post("/gateway/" + ids[static_cast<size_t>(i)] + "/action/getCount", R"({"args":[]})", &out) != 200) {
        Fail(name + ": getCount failed: " + out);
      }
      counts[static_cast<size_t>(i)] = OutputOf(out);
    }
  }
  if (ws) return W2Ws(st, ids, counts);
  for (int i = 0; i < n; ++i) https[static_cast<size_t>(i)] = std::make_unique<HttpConn>(st.port());
  std::atomic<int> phase{0};  // 0 warm-up, 1 measure, 2 stop
  std::atomic<int> warmed{0};
  std::vector<Samples> samples(static_cast<size_t>(n));
  std::vector<int64_t> errors(static_cast<size_t>(n), 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const auto u = static_cast<size_t>(i);
      auto call = [&]() -> int64_t { return HttpIncrement(*https[u], ids[u]); };
      bool broken = false;
      for (int w = 0; w < 20 && !broken; ++w) {
        const int64_t v = call();
        if (v == counts[u] + 1) {
          ++counts[u];
        } else {
          ++errors[u];
          if (v > 0) counts[u] = v;
        }
      }
      ++warmed;
      while (phase.load() == 0) std::this_thread::sleep_for(milliseconds(1));
      while (!broken && phase.load() == 1) {
        const auto t0 = Clock::now();
        const int64_t v = call();
        const double us = MicrosSince(t0);
        if (phase.load() != 1) {
          if (v > 0) counts[u] = v;
          break;  // answered after the window closed: not counted
        }
        if (v == counts[u] + 1) {
          ++counts[u];
          samples[u].us.push_back(us);
        } else {
          ++errors[u];
          if (v > 0) counts[u] = v;
        }
      }
    });
  }
  const auto warm_deadline = Clock::now() + seconds(60);
  while (warmed.load() < n && Clock::now() < warm_deadline) std::this_thread::sleep_for(milliseconds(5));
  CpuWindow cpu;
  cpu.Begin(st.engine_pid(), st.runtime_pid());
  const json load_before = LoadAvg();
  phase = 1;
  std::this_thread::sleep_for(g_cfg.w2_duration);
  phase = 2;
  const double wall = MicrosSince(cpu.t0);
  for (auto& t : threads) t.join();
  Samples all;
  int64_t errs = 0;
  for (int i = 0; i < n; ++i) {
    all.Add(samples[static_cast<size_t>(i)]);
    errs += errors[static_cast<size_t>(i)];
  }
  return W2Finish(st, ids, false, all, errs, wall, cpu, load_before, counts);
}

// ---- W3 ----------------------------------------------------------------------------------

json W3(Stack& st) {
  HttpConn c(st.port());
  int key = 0;
  const std::string run = std::to_string(::getpid());
  auto one = [&]() {
    std::string out;
    const std::string target =
        "/gateway/counter/action/increment?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-key=cold-" + run + "-" + std::to_string(key++);
    const int status = c.Post(target, kIncrementBody, &out);
    return status == 200 && OutputOf(out) == 1;
  };
  for (int i = 0; i < 5; ++i) {
    if (!one()) Fail("w3 warm-up failed");
  }
  Samples s;
  int64_t errors = 0;
  CpuWindow cpu;
  cpu.Begin(st.engine_pid(), st.runtime_pid());
  const auto end = Clock::now() + seconds(30);
  for (int i = 0; i < g_cfg.w3_calls; ++i) {
    if (Clock::now() > end) {
      s.cut_short = true;
      break;
    }
    const auto t0 = Clock::now();
    const bool ok = one();
    s.us.push_back(MicrosSince(t0));
    if (!ok) ++errors;
  }
  json j = Record("W3", "w3_cold_start",
                  {{"calls", g_cfg.w3_calls},
                   {"transport", "one keep-alive HTTP connection; POST /gateway/counter/action/increment"
                                 "?rvt-method=getOrCreate&rvt-key=<fresh>"}},
                  s, errors, MicrosSince(cpu.t0));
  cpu.End(j, s.us.size());
  Report("w3_cold_start", j);
  return j;
}

// ---- W6 ----------------------------------------------------------------------------------

json W6(Stack& st) {
  HttpConn c(st.port());
  std::vector<std::string> ids;
  for (int i = 0; i < g_cfg.w6_actors; ++i) ids.push_back(CreateStarted(c, "wake-" + std::to_string(i)));
  Samples wake, to_sleep, awake_after_idle;
  int64_t errors = 0;
  double cpu_e = 0, cpu_r = 0;
  const auto phase_end = Clock::now() + seconds(60);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (Clock::now() > phase_end) {
      wake.cut_short = true;
      break;
    }
    const auto t_sleep = Clock::now();
    if (!RequestSleep(c, ids[i])) Fail("w6: sleep request failed");
    const auto deadline = Clock::now() + seconds(10);
    while (!IsAsleep(c, ids[i])) {
      if (Clock::now() > deadline) Fail("w6: the actor never fell asleep");
      std::this_thread::sleep_for(milliseconds(1));  // poll, bounded by the deadline
    }
    to_sleep.us.push_back(MicrosSince(t_sleep));
    std::this_thread::sleep_for(milliseconds(20));  // the runtime finished its stop work
    const double e0 = ProcCpuUs(st.engine_pid()), r0 = ProcCpuUs(st.runtime_pid());
    const auto t0 = Clock::now();
    const int64_t v = HttpIncrement(c, ids[i]);
    wake.us.push_back(MicrosSince(t0));
    cpu_e += ProcCpuUs(st.engine_pid()) - e0;
    cpu_r += ProcCpuUs(st.runtime_pid()) - r0;
    if (v != 2) ++errors;  // state survived the sleep: 1 + 1
    // The same idle gap before a call to the actor now awake: what any first call after
    // 20 ms of quiet costs on this machine (idle cores halt; a disk's first sync after a
    // pause is slower), so the wake's own share is the difference.
    std::this_thread::sleep_for(milliseconds(20));
    const auto t1 = Clock::now();
    const int64_t again = HttpIncrement(c, ids[i]);
    awake_after_idle.us.push_back(MicrosSince(t1));
    if (again != 3) ++errors;
  }
  json j = Record("W6", "w6_wake",
                  {{"actors", g_cfg.w6_actors},
                   {"sleep", "POST /actors/<id>/sleep, polled until sleep_ts set and connectable_ts null"},
                   {"transport", "one keep-alive HTTP connection, increment(1) (checks the state survived)"},
                   {"awake_after_idle", "20 ms later, increment(1) on the awake actor"}},
                  wake, errors, 0);
  j.erase("ops_per_s");
  const double n = std::max<double>(1, static_cast<double>(wake.us.size()));
  j["cpu_us_per_call"] = {{"engine", R1(cpu_e / n)}, {"runtime", R1(cpu_r / n)}};
  j["sleep_request_to_asleep_p50_us"] = R1(to_sleep.Pct(0.5));
  j["awake_after_idle_p50_us"] = R1(awake_after_idle.Pct(0.5));
  j["wake_minus_awake_after_idle_p50_us"] = R1(wake.Pct(0.5) - awake_after_idle.Pct(0.5));
  Report("w6_wake", j);
  return j;
}

// ---- W5 ----------------------------------------------------------------------------------

// `count` sequential calls, each timed. `call(i)`: 1 right answer, 0 wrong answer, -1 the
// transport failed (the loop stops). Bounded by `cap`.
template <typename F>
json TimedCalls(const std::string& name, json params, int count, seconds cap, pid_t engine,
                pid_t runtime, F call) {
  Samples s;
  int64_t errors = 0;
  CpuWindow cpu;
  cpu.Begin(engine, runtime);
  const auto end = Clock::now() + cap;
  for (int i = 0; i < count; ++i) {
    if (Clock::now() > end) {
      s.cut_short = true;
      break;
    }
    const auto t0 = Clock::now();
    const int r = call(i);
    s.us.push_back(MicrosSince(t0));
    if (r != 1) ++errors;
    if (r < 0) break;
  }
  json j = Record("W5", name, std::move(params), s, errors, MicrosSince(cpu.t0));
  cpu.End(j, s.us.size());
  Report(name, j);
  return j;
}

// POST /gateway/<id>/action/<action> {"args": args} (json); the output, or nullopt (the
// status and body in `error`).
std::optional<json> HttpAction(HttpConn& c, const std::string& id, const std::string& action,
                               const json& args, std::string* error = nullptr) {
  std::string out;
  const json body{{"args", args}};
  const int status = c.Post("/gateway/" + id + "/action/" + action, body.dump(), &out);
  auto j = json::parse(out, nullptr, false);
  if (status != 200 || j.is_discarded() || !j.is_object() || !j.contains("output")) {
    if (error != nullptr) *error = std::to_string(status) + " " + out.substr(0, 300);
    return std::nullopt;
  }
  return j["output"];
}

int64_t IntField(const Value& v, std::string_view key) {
  const Value* f = v.is_map() ? v.Find(key) : nullptr;
  return f != nullptr && f->is_integer() ? static_cast<int64_t>(f->as_uint()) : -1;
}

std::string RowName(const char* tag, int i) { return std::string(tag) + "-" + std::to_string(i); }

// Rivet's point-select order: 1 + (i * 7919) % rows.
int64_t SelectId(int i, int64_t rows) { return 1 + (static_cast<int64_t>(i) * 7919) % rows; }

json BatchRecord(const std::string& name, int64_t want, int64_t inserted, double us,
                 int64_t actor_us) {
  json b;
  b["workload"] = "W5";
  b["name"] = name;
  b["params"] = {{"rows", want},
                 {"shape", "BEGIN; one INSERT statement per row; COMMIT (one transaction)"}};
  b["rows"] = inserted;
  b["errors"] = inserted == want ? 0 : 1;
  b["us"] = R1(us);
  b["rows_per_s"] = us > 0 ? R1(static_cast<double>(inserted) * 1e6 / us) : 0;
  if (actor_us >= 0) {
    b["actor_us"] = actor_us;
    b["rows_per_s_inside_actor"] =
        actor_us > 0 ? R1(static_cast<double>(inserted) * 1e6 / static_cast<double>(actor_us)) : 0;
    b["statements"] = want + 2;
    b["actor_us_per_statement"] = R2(static_cast<double>(actor_us) / static_cast<double>(want + 2));
  }
  return b;
}

// The median of several BatchRecords of the same call (by rows/s).
json BatchMedian(std::vector<json> calls) {
  return MedianRecord(std::move(calls), "rows_per_s", "calls_rows_per_s", "calls",
                      "the median call (by rows/s)");
}

// W5 on one backend: a fresh engine + keel-bench-runtime with KEEL_SQLITE_BACKEND=`backend`.
json W5Backend(const std::string& backend) {
  Progress("w5: " + backend + " backend");
  std::vector<std::pair<std::string, std::string>> env = {{"KEEL_SQLITE_BACKEND", backend}};
  Stack st("w5-" + backend, g_cfg.sql_runtime_bin, std::move(env));
  st.Start();
  const pid_t ep = st.engine_pid(), rp = st.runtime_pid();
  HttpConn c(st.port());
  const std::string id = CreateActor(c, "w5-" + backend, "sqlbench");
  std::string err;
  {
    auto b = HttpAction(c, id, "backend", json::array(), &err);
    if (!b || !b->is_string() || b->get<std::string>() != backend) {
      Fail("w5: the sqlbench database is not on the " + backend + " backend: " + (b ? b->dump() : err) +
           st.Tail("runtime.log"));
    }
  }
  auto opened = WsActor::Open(st.port(), id);
  if (!opened.has_value()) Fail("w5 connect: " + opened.error().ToString());
  WsActor& ws = **opened;
  const milliseconds call_timeout(15000);
  int64_t rows = 0;  // rows in items = the largest id (ids are 1, 2, …: no deletes)

  // An insertOne answer: 1 when it is the next id, 0 when not (then follow it), -1 none.
  auto next_id = [&rows](int64_t got) {
    if (got == rows + 1) {
      ++rows;
      return 1;
    }
    if (got > rows) rows = got;
    return 0;
  };
  auto insert_ws = [&](const char* tag, int i) -> int {
    Value args = Value::ArrayOf({Value(RowName(tag, i)), Value(int64_t{i})});
    auto out = ws.CallValue("insertOne", std::move(args), call_timeout);
    if (!out) return -1;
    return next_id(out->is_integer() ? static_cast<int64_t>(out->as_uint()) : -1);
  };
  auto insert_http = [&](const char* tag, int i) -> int {
    auto out = HttpAction(c, id, "insertOne", json::array({RowName(tag, i), i}), &err);
    if (!out) return -1;
    return next_id(out->is_number_integer() ? out->get<int64_t>() : -1);
  };
  auto select_ws = [&](int64_t want) -> int {
    Value args = Value::ArrayOf({Value(want)});
    auto out = ws.CallValue("getById", std::move(args), call_timeout);
    if (!out) return -1;
    return IntField(*out, "id") == want ? 1 : 0;
  };
  auto select_http = [&](int64_t want) -> int {
    auto out = HttpAction(c, id, "getById", json::array({want}), &err);
    if (!out) return -1;
    return out->is_object() && out->value("id", int64_t{-1}) == want ? 1 : 0;
  };

  // Warm-up: the database opened, pages cached, both transports used.
  for (int i = 0; i < g_cfg.w5_warmup; ++i) {
    if (insert_ws("warm-ws", i) != 1 || insert_http("warm-http", i) != 1 || select_ws(1) != 1 ||
        select_http(rows) != 1) {
      Fail("w5 warm-up failed on the " + backend + " backend: " + err + st.Tail("runtime.log"));
    }
  }
  json j;
  j["backend"] = backend;
  j["runtime_start_ms"] = R1(st.runtime_start_ms());
  const seconds cap(60);
  j["insert_one_ws"] = TimedCalls(
      "w5_" + backend + "_insert_one_ws",
      {{"calls", g_cfg.w5_inserts}, {"transport", "one WebSocket /gateway/<id>/connect, bare"},
       {"action", "insertOne(name, qty) -> id"}},
      g_cfg.w5_inserts, cap, ep, rp, [&](int i) { return insert_ws("row-ws", i); });
  j["insert_one_http"] = TimedCalls(
      "w5_" + backend + "_insert_one_http",
      {{"calls", g_cfg.w5_inserts}, {"transport", "one keep-alive HTTP/1.1 connection, json"},
       {"action", "insertOne(name, qty) -> id"}},
      g_cfg.w5_inserts, cap, ep, rp, [&](int i) { return insert_http("row-http", i); });
  {
    CpuWindow cpu;
    cpu.Begin(ep, rp);
    std::vector<json> calls;
    int64_t inserted_all = 0;
    for (int call = 0; call < g_cfg.w5_batch_calls; ++call) {
      Value args = Value::ArrayOf({Value(int64_t{g_cfg.w5_batch}), Value("bulk")});
      const auto t0 = Clock::now();
      auto out = ws.CallValue("insertMany", std::move(args), milliseconds(300000));
      const double us = MicrosSince(t0);
      if (!out)
        Fail("w5: insertMany failed on the " + backend + " backend" + st.Tail("runtime.log"));
      const int64_t inserted = IntField(*out, "inserted");
      if (inserted > 0) {
        rows += inserted;
        inserted_all += inserted;
      }
      json b = BatchRecord("w5_" + backend + "_insert_many", g_cfg.w5_batch, inserted, us,
                           IntField(*out, "actor_us"));
      Progress("w5_" + backend + "_insert_many: " + std::to_string(inserted) + " rows in " +
               std::to_string(us / 1000) +
               " ms = " + std::to_string(b["rows_per_s"].get<double>()) + " rows/s");
      calls.push_back(std::move(b));
    }
    json b = BatchMedian(std::move(calls));
    b["params"]["transport"] = "one WebSocket /gateway/<id>/connect, bare";
    // CPU over all the calls, per row.
    cpu.End(b, static_cast<size_t>(std::max<int64_t>(1, inserted_all)));
    b["cpu_per"] = "row";
    j["insert_many"] = b;
  }
  const int64_t total = rows;
  j["point_select_ws"] = TimedCalls(
      "w5_" + backend + "_point_select_ws",
      {{"calls", g_cfg.w5_selects}, {"transport", "one WebSocket /gateway/<id>/connect, bare"},
       {"action", "getById(id) -> {id, name, qty}"}, {"ids", "1 + (i * 7919) % rows"}, {"rows", total}},
      g_cfg.w5_selects, cap, ep, rp, [&](int i) { return select_ws(SelectId(i, total)); });
  j["point_select_http"] = TimedCalls(
      "w5_" + backend + "_point_select_http",
      {{"calls", g_cfg.w5_selects}, {"transport", "one keep-alive HTTP/1.1 connection, json"},
       {"action", "getById(id) -> {id, name, qty}"}, {"ids", "1 + (i * 7919) % rows"}, {"rows", total}},
      g_cfg.w5_selects, cap, ep, rp, [&](int i) { return select_http(SelectId(i, total)); });
  auto count = HttpAction(c, id, "count", json::array(), &err);
  j["rows_after"] = rows;
  j["count_ok"] = count && count->is_number_integer() && count->get<int64_t>() == rows;
  int64_t errors = 0;
  for (const char* k : {"insert_one_ws", "insert_one_http", "insert_many", "point_select_ws", "point_select_http"}) {
    errors += j[k].value("errors", int64_t{0});
  }
  j["errors"] = errors;
  if (!j["count_ok"].get<bool>()) Progress("w5: " + backend + ": count() disagrees: " + (count ? count->dump() : err));
  st.Stop();
  return j;
}

// The floor: the same three operations on a plain SQLite file through keel::sql (the
// execution layer both backends run on), in this process, no actors. `wal_full`: WAL with
// synchronous=FULL (docs/benchmarks.md's "plain SQLite with equal durability") instead of
// the execution layer's own PRAGMAs (journal_mode DELETE, synchronous NORMAL, EXCLUSIVE
// locking; in rollback-journal mode every commit still syncs the journal and the file).
json FloorSqlite(bool wal_full) {
  const std::string name = wal_full ? "sqlite_file_wal_full" : "sqlite_file";
  Progress("floor: " + name);
  const auto dir = g_root / ("floor_" + name);
  std::filesystem::create_directories(dir);
  json j;
  {
    auto opened = sql::Database::Open("", (dir / "floor.db").string());
    if (!opened.ok()) Fail("floor sqlite open: " + opened.error().ToString());
    sql::Database& db = **opened;
    auto must = [](const Result<sql::QueryResult>& r, const std::string& what) {
      if (!r.ok()) Fail("floor sqlite " + what + ": " + r.error().ToString());
    };
    if (wal_full) must(db.Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"), "pragmas");
    json pragmas;
    for (const char* p : {"journal_mode", "synchronous", "locking_mode", "page_size"}) {
      auto r = db.Exec(std::string("PRAGMA ") + p);
      if (r.ok() && !r->rows.empty() && !r->rows[0].empty()) {
        const auto& cell = r->rows[0][0];
        if (const auto* t = std::get_if<std::string>(&cell)) pragmas[p] = *t;
        if (const auto* n = std::get_if<int64_t>(&cell)) pragmas[p] = *n;
      }
    }
    must(db.Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)"),
         "create table");
    int64_t rows = 0;
    const std::string insert_sql = "INSERT INTO items (name, qty) VALUES (?, ?)";
    const std::string select_sql = "SELECT id, name, qty FROM items WHERE id = ?";
    auto insert = [&](const char* tag, int i) -> int {
      sql::Params p{sql::Value(RowName(tag, i)), sql::Value(int64_t{i})};
      auto r = db.Run(insert_sql, p);
      if (!r.ok()) return -1;
      if (r->last_insert_row_id.value_or(-1) != rows + 1) return 0;
      ++rows;
      return 1;
    };
    auto select = [&](int64_t want) -> int {
      sql::Params p{sql::Value(want)};
      auto r = db.Query(select_sql, p);
      if (!r.ok()) return -1;
      return !r->rows.empty() && std::get_if<int64_t>(&r->rows[0][0]) != nullptr &&
                     std::get<int64_t>(r->rows[0][0]) == want
                 ? 1
                 : 0;
    };
    for (int i = 0; i < g_cfg.w5_warmup; ++i) {
      if (insert("warm", i) != 1 || select(1) != 1) Fail("floor sqlite warm-up failed");
    }
    const json common = {{"file", "plain file in the run's temp dir, default VFS, via keel::sql::Database"},
                         {"pragmas", pragmas}};
    const seconds cap(60);
    json params = common;
    params["calls"] = g_cfg.w5_inserts;
    j["insert_one"] = TimedCalls("floor_" + name + "_insert_one", params, g_cfg.w5_inserts, cap, 0, 0,
                                 [&](int i) { return insert("row", i); });
    {
      std::vector<json> calls;
      for (int call = 0; call < g_cfg.w5_batch_calls; ++call) {
        const double c0 = SelfCpuUs();
        const auto t0 = Clock::now();
        int64_t inserted = 0;
        bool ok = db.Exec("BEGIN").ok();
        for (int i = 0; ok && i < g_cfg.w5_batch; ++i) {
          ok = insert("bulk", i) == 1;
          if (ok) ++inserted;
        }
        ok = ok && db.Exec("COMMIT").ok();
        const double us = MicrosSince(t0);
        json b = BatchRecord("floor_" + name + "_insert_many", g_cfg.w5_batch, ok ? inserted : -1,
                             us, -1);
        b["params"]["pragmas"] = pragmas;
        b["cpu_us_per_row"] =
            R2((SelfCpuUs() - c0) / static_cast<double>(std::max<int64_t>(1, inserted)));
        Progress("floor_" + name + "_insert_many: " + std::to_string(inserted) + " rows in " +
                 std::to_string(us / 1000) +
                 " ms = " + std::to_string(b["rows_per_s"].get<double>()) + " rows/s");
        calls.push_back(std::move(b));
      }
      j["insert_many"] = BatchMedian(std::move(calls));
    }
    const int64_t total = rows;
    params = common;
    params["calls"] = g_cfg.w5_selects;
    params["ids"] = "1 + (i * 7919) % rows";
    params["rows"] = total;
    j["point_select"] = TimedCalls("floor_" + name + "_point_select", params, g_cfg.w5_selects, cap, 0, 0,
                                   [&](int i) { return select(SelectId(i, total)); });
    // In-process: the CPU is this process's (`client`), no engine or runtime.
    for (const char* k : {"insert_one", "point_select"}) {
      j[k]["cpu_us_per_call"] = {{"process", j[k]["cpu_us_per_call"]["client"]}};
      j[k].erase("cpu_pct_of_one_core");
    }
    j["pragmas"] = pragmas;
    db.Close();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return j;
}

// ---- W4 ----------------------------------------------------------------------------------

json W4() {
  // Two processes even under --envoy-transport in-process: each one's memory is reported.
  Stack st("w4", "", {}, TwoProcessTransport());
  st.Start();
  json j;
  j["workload"] = "W4";
  j["name"] = "w4_memory";
  j["params"] = {{"creation", "REST POST /actors + one increment each, 16 concurrent keep-alive clients"},
                 {"settle_ms", 1500},
                 {"actor_sleep_timeout_s", 30}};
  // A few warm-up actors so lazily created pools and caches are in the baseline.
  std::vector<std::string> ids;
  {
    HttpConn c(st.port());
    for (int i = 0; i < 5; ++i) CreateStarted(c, "w4-warm-" + std::to_string(i));
  }
  std::this_thread::sleep_for(milliseconds(1500));
  const int64_t e_base = ProcRss(st.engine_pid()), r_base = ProcRss(st.runtime_pid());
  j["baseline"] = {{"engine_rss", e_base}, {"runtime_rss", r_base}};
  std::vector<int> targets = {g_cfg.w4_small};
  if (g_cfg.w4_large) targets.push_back(g_cfg.w4_large_count);
  json points = json::array();
  std::mutex mu;
  int64_t errors = 0;
  for (int target : targets) {
    const int have = static_cast<int>(ids.size());
    const int want = target - have;
    const auto t0 = Clock::now();
    const auto deadline = t0 + seconds(120);
    const int threads = 16;
    std::vector<std::unique_ptr<HttpConn>> conns;
    for (int w = 0; w < threads; ++w) conns.push_back(std::make_unique<HttpConn>(st.port()));
    std::vector<std::string> made(static_cast<size_t>(want));
    Parallel(want, threads, [&](int w, int i) {
      if (Clock::now() > deadline) return;
      auto& c = *conns[static_cast<size_t>(w)];
      json body{{"name", "counter"},
                {"key", "idle-" + std::to_string(have + i)},
                {"runner_name_selector", "default"}};
      std::string out;
      const int s = c.Post("/actors?namespace=default", body.dump(), &out);
      auto r = json::parse(out, nullptr, false);
      if (s != 200 || r.is_discarded() || !r.contains("actor")) {
        std::lock_guard<std::mutex> l(mu);
        ++errors;
        return;
      }
      const std::string id = r["actor"]["actor_id"].get<std::string>();
      if (HttpIncrement(c, id) != 1) {
        std::lock_guard<std::mutex> l(mu);
        ++errors;
        return;
      }
      made[static_cast<size_t>(i)] = id;
    });
    const double create_s = MicrosSince(t0) / 1e6;
    for (auto& id : made) {
      if (!id.empty()) ids.push_back(id);
    }
    std::this_thread::sleep_for(milliseconds(1500));
    const int64_t e = ProcRss(st.engine_pid()), r = ProcRss(st.runtime_pid());
    // How many of the first actors are still awake (a 30 s idle sleep could have started).
    int sampled_asleep = 0;
    {
      HttpConn c(st.port());
      for (size_t i = 0; i < std::min<size_t>(20, ids.size()); ++i) sampled_asleep += IsAsleep(c, ids[i]) ? 1 : 0;
    }
    const double n = static_cast<double>(ids.size());
    json p = {{"target", target},
              {"actors_awake", ids.size()},
              {"create_seconds", R2(create_s)},
              {"creates_per_s", R1(static_cast<double>(made.size()) / std::max(create_s, 1e-6))},
              {"engine_rss", e},
              {"runtime_rss", r},
              {"engine_bytes_per_actor", std::llround(static_cast<double>(e - e_base) / n)},
              {"runtime_bytes_per_actor", std::llround(static_cast<double>(r - r_base) / n)},
              {"total_bytes_per_actor", std::llround(static_cast<double>(e - e_base + r - r_base) / n)},
              {"first_20_sampled_asleep", sampled_asleep}};
    Progress("w4: " + std::to_string(ids.size()) + " awake actors: engine +" +
             std::to_string(p["engine_bytes_per_actor"].get<int64_t>()) + " B/actor, runtime +" +
             std::to_string(p["runtime_bytes_per_actor"].get<int64_t>()) + " B/actor (created in " +
             std::to_string(create_s) + " s)");
    points.push_back(p);
  }
  j["awake"] = points;
  // Put them all to sleep.
  {
    const auto t0 = Clock::now();
    const auto deadline = t0 + seconds(120);
    std::atomic<int> failed{0}, not_asleep{0};
    std::vector<std::unique_ptr<HttpConn>> conns;
    for (int w = 0; w < 16; ++w) conns.push_back(std::make_unique<HttpConn>(st.port()));
    Parallel(static_cast<int>(ids.size()), 16, [&](int w, int i) {
      if (Clock::now() > deadline || !RequestSleep(*conns[static_cast<size_t>(w)], ids[static_cast<size_t>(i)])) ++failed;
    });
    Parallel(static_cast<int>(ids.size()), 16, [&](int w, int i) {
      auto& c = *conns[static_cast<size_t>(w)];
      while (!IsAsleep(c, ids[static_cast<size_t>(i)])) {
        if (Clock::now() > deadline) {
          ++not_asleep;
          return;
        }
        std::this_thread::sleep_for(milliseconds(5));  // poll, bounded by the deadline
      }
    });
    const double sleep_s = MicrosSince(t0) / 1e6;
    // The runtime forgets a slept generation's command dedup entry once it acknowledged its
    // commands to the engine, 1 s after it stopped (EnvoyConfig::stopped_ack_delay), and
    // gives freed memory back on its next 500 ms check.
    std::this_thread::sleep_for(milliseconds(2500));
    const int64_t e = ProcRss(st.engine_pid()), r = ProcRss(st.runtime_pid());
    const double n = static_cast<double>(ids.size());
    j["asleep"] = {{"actors", ids.size()},
                   {"sleep_requests_failed", failed.load()},
                   {"not_seen_asleep", not_asleep.load()},
                   {"sleep_all_seconds", R2(sleep_s)},
                   {"engine_rss", e},
                   {"runtime_rss", r},
                   {"engine_bytes_per_sleeping_actor", std::llround(static_cast<double>(e - e_base) / n)},
                   {"runtime_bytes_per_sleeping_actor", std::llround(static_cast<double>(r - r_base) / n)}};
    Progress("w4: asleep: engine +" + std::to_string(j["asleep"]["engine_bytes_per_sleeping_actor"].get<int64_t>()) +
             " B/actor, runtime +" + std::to_string(j["asleep"]["runtime_bytes_per_sleeping_actor"].get<int64_t>()) +
             " B/actor");
  }
  j["errors"] = errors;
  j["n"] = ids.size();
  // The headline figure: the last awake point.
  const auto& last = points.back();
  j["bytes_per_awake_actor"] = {{"engine", last["engine_bytes_per_actor"]},
                                {"runtime", last["runtime_bytes_per_actor"]},
                                {"total", last["total_bytes_per_actor"]}};
  j["note"] = "RSS deltas over the baseline; freed heap is not necessarily returned to the OS, so "
              "the asleep figures are an upper bound of what sleeping actors keep";
  st.Stop();
  return j;
}

// ---- W7 ----------------------------------------------------------------------------------

struct W7Caller {
  std::string id;
  bool ws = false;
  std::atomic<int64_t> last_acked{0};
  std::atomic<int64_t> acks{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> regressions{0};  // an answer not above an earlier acknowledged one
  std::atomic<int64_t> last_ok_us{0};   // since g_start
  std::atomic<uint16_t> port{0};
};

json W7() {
  // Two processes even under --envoy-transport in-process: the runtime and the engine are
  // killed in turn.
  Stack st("w7", "", {}, TwoProcessTransport());
  st.Start();
  const int actors = 4;
  std::vector<std::unique_ptr<W7Caller>> callers;
  {
    HttpConn c(st.port());
    for (int i = 0; i < actors; ++i) {
      auto k = std::make_unique<W7Caller>();
      k->id = CreateStarted(c, "durable-" + std::to_string(i));
      k->ws = i % 2 == 1;
      k->last_acked = 1;
      k->port = st.port();
      callers.push_back(std::move(k));
    }
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& k : callers) {
    threads.emplace_back([&stop, k = k.get()] {
      std::unique_ptr<WsActor> ws;
      const milliseconds timeout = g_cfg.w7_call_timeout;
      HttpConn http(k->port.load(), timeout);
      for (int iter = 0; iter < 10'000'000 && !stop.load(); ++iter) {
        int64_t v = -1;
        if (k->ws) {
          if (!ws) {
            auto a = WsActor::Open(k->port.load(), k->id, timeout);
            if (a.has_value()) ws = std::move(*a);
          }
          if (ws) {
            v = ws->Increment(1, timeout);
            if (v < 0) ws.reset();
          }
        } else {
          v = HttpIncrement(http, k->id);
          if (v < 0) http.Reset();
        }
        if (v < 0) {
          ++k->errors;
          std::this_thread::sleep_for(milliseconds(10));  // retry pacing while a process is down
          continue;
        }
        if (v <= k->last_acked.load()) ++k->regressions;
        k->last_acked = std::max(k->last_acked.load(), v);
        ++k->acks;
        k->last_ok_us = static_cast<int64_t>(MicrosSince(g_start));
      }
    });
  }
  auto acks_min = [&] {
    int64_t m = INT64_MAX;
    for (auto& k : callers) m = std::min(m, k->acks.load());
    return m;
  };
  // Waits until every caller has `more` acknowledgements after `since_us`; returns the
  // time until every caller had its first one (ms), or -1 on timeout.
  auto wait_progress = [&](int64_t more, double since_us, seconds timeout) -> double {
    std::vector<int64_t> base;
    for (auto& k : callers) base.push_back(k->acks.load());
    const auto deadline = Clock::now() + timeout;
    double first_all = -1;
    while (Clock::now() < deadline) {
      bool all_first = true, all_more = true;
      for (size_t i = 0; i < callers.size(); ++i) {
        const auto& k = callers[i];
        if (static_cast<double>(k->last_ok_us.load()) < since_us) all_first = false;
        if (k->acks.load() - base[i] < more) all_more = false;
      }
      if (all_first && first_all < 0) first_all = (MicrosSince(g_start) - since_us) / 1000;
      if (all_more && all_first) return first_all;
      std::this_thread::sleep_for(milliseconds(2));  // poll, bounded by the deadline
    }
    return -1;
  };
  json j;
  j["workload"] = "W7";
  j["name"] = "w7_durability";
  j["params"] = {{"actors", actors},
                 {"transports", "2 HTTP keep-alive, 2 WebSocket /connect (bare); callers retry on errors"},
                 {"acks_before_each_kill", g_cfg.w7_acks_before_kill},
                 {"acks_after_each_restart", g_cfg.w7_acks_after},
                 {"client_call_timeout_ms", g_cfg.w7_call_timeout.count()},
                 {"recovery_wait_s", g_cfg.w7_recovery.count()},
                 {"engine_kill", g_cfg.w7_engine_kill}};
  std::string failure;
  // 1. kill -9 the runtime mid-increments, restart it.
  if (wait_progress(g_cfg.w7_acks_before_kill, 0, seconds(30)) < 0) failure = "no progress before the runtime kill";
  json rk;
  if (failure.empty()) {
    const auto dead = st.ConnectedEnvoys();
    const double kill_us = MicrosSince(g_start);
    rk["acks_before_kill"] = acks_min();
    st.KillRuntime();
    Progress("w7: runtime killed (kill -9)");
    st.StartRuntime(dead);
    rk["runtime_restart_ms"] = R1(st.runtime_start_ms());
    const double first = wait_progress(g_cfg.w7_acks_after, kill_us, g_cfg.w7_recovery);
    if (first < 0) failure = "not every caller progressed within the recovery wait after the runtime restart";
    rk["kill_to_all_callers_answered_ms"] = R1(first);
    Progress("w7: all callers answered " + std::to_string(first) + " ms after the runtime kill");
  }
  j["runtime_kill"] = rk;
  // 2. kill -9 the engine mid-increments, restart it on the same port and data dir.
  json ek;
  if (!g_cfg.w7_engine_kill) ek["skipped"] = "--quick";
  if (failure.empty() && g_cfg.w7_engine_kill) {
    ek["acks_before_kill"] = acks_min();
    const uint16_t port = st.port();
    const double kill_us = MicrosSince(g_start);
    st.KillEngine();
    Progress("w7: engine killed (kill -9)");
    st.StartEngine(port);
    ek["engine_restart_ms"] = R1(st.engine_start_ms());
    if (st.port() != port) failure = "the engine came back on another port";
    if (failure.empty() && !st.WaitEnvoy({}, milliseconds(60000))) failure = "the runtime did not reconnect";
    ek["kill_to_envoy_reconnected_ms"] = R1((MicrosSince(g_start) - kill_us) / 1000);
    const double first = failure.empty() ? wait_progress(g_cfg.w7_acks_after, kill_us, g_cfg.w7_recovery) : -1;
    if (failure.empty() && first < 0) {
      failure = "not every caller progressed within the recovery wait after the engine restart";
    }
    ek["kill_to_all_callers_answered_ms"] = R1(first);
    Progress("w7: all callers answered " + std::to_string(first) + " ms after the engine kill");
  }
  j["engine_kill"] = ek;
  stop = true;
  for (auto& t : threads) t.join();
  // Compare every counter with its last acknowledged value.
  int64_t lost = 0, acked = 0, errors = 0, regressions = 0, unacked_applied = 0, unreadable = 0;
  json per = json::array();
  HttpConn c(st.port());
  for (auto& k : callers) {
    std::string out;
    int status = 0;
    for (int a = 0; a < 50 && status != 200; ++a) {
      status = c.Post("/gateway/" + k->id + "/action/getCount", R"({"args":[]})", &out);
      if (status != 200) std::this_thread::sleep_for(milliseconds(100));  // bounded retry
    }
    const int64_t final_value = status == 200 ? OutputOf(out) : -1;
    if (final_value < 0) ++unreadable;
    const int64_t la = k->last_acked.load();
    const int64_t l = final_value < 0 ? la : std::max<int64_t>(0, la - final_value);
    lost += l;
    acked += k->acks.load();
    errors += k->errors.load();
    regressions += k->regressions.load();
    if (final_value > la) unacked_applied += final_value - la;
    per.push_back({{"transport", k->ws ? "ws" : "http"},
                   {"acked_calls", k->acks.load() + 1},
                   {"last_acked_value", la},
                   {"value_after", final_value},
                   {"lost", l},
                   {"errors_while_down", k->errors.load()}});
  }
  j["per_actor"] = per;
  j["n"] = acked;
  j["errors"] = errors;
  j["acknowledged_writes_lost"] = lost + regressions;
  j["regressions"] = regressions;
  j["applied_but_unacknowledged"] = unacked_applied;
  j["counters_unreadable"] = unreadable;
  j["recovered"] = failure.empty();
  if (!failure.empty()) j["recovery_note"] = failure;
  Progress("w7: acknowledged writes lost: " + std::to_string(lost + regressions) +
           (failure.empty() ? "" : " (" + failure + ")"));
  st.Stop();
  return j;
}

// ---- main --------------------------------------------------------------------------------

double P50(const json& w) { return w.is_object() && w.contains("p50_us") ? w["p50_us"].get<double>() : 0; }
double Ratio(double a, double b) { return b > 0 ? R2(a / b) : 0; }

std::string ExeDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

int Usage() {
  std::fputs(
      "usage: keel_bench [--engine PATH] [--runtime PATH] [--sql-runtime PATH] [--js-runtime "
      "PATH]\n"
      "                  [--quick] [--w4-large] [--keep] [--envoy-transport unix|tcp|in-process]\n"
      "                  [--client-poll-us N] [--w6-actors N] [--only w1,w1js,w2,w3,w4,w5,w6,w7]\n"
      "                  [--storage rocksdb|postgresql://...]\n"
      "Starts keel-engine and keel-examples (W5: keel-bench-runtime), measures W1-W7 and the "
      "floors;\n"
      "one JSON on stdout.\n",
      stderr);
  return 2;
}

int Main(int argc, char** argv) {
  const std::string dir = ExeDir();
  g_cfg.engine_bin = dir + "/keel-engine";
  g_cfg.runtime_bin = dir + "/keel-examples";
  g_cfg.sql_runtime_bin = dir + "/keel-bench-runtime";
  std::optional<int> w6_actors;  // applied after --quick's defaults
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(Usage());
      return argv[++i];
    };
    if (a == "--engine") {
      g_cfg.engine_bin = value();
    } else if (a == "--runtime") {
      g_cfg.runtime_bin = value();
    } else if (a == "--sql-runtime") {
      g_cfg.sql_runtime_bin = value();
    } else if (a == "--js-runtime") {
      g_cfg.js_runtime_bin = value();
    } else if (a == "--envoy-transport") {
      const std::string t = value();
      if (t == "unix") {
        g_cfg.envoy_transport = EnvoyTransport::kUnix;
      } else if (t == "tcp") {
        g_cfg.envoy_transport = EnvoyTransport::kTcp;
      } else if (t == "in-process") {
        g_cfg.envoy_transport = EnvoyTransport::kInProcess;
      } else {
        return Usage();
      }
    } else if (a == "--storage") {
      g_cfg.storage = value();
      if (g_cfg.storage != "rocksdb" && g_cfg.storage.rfind("postgres://", 0) != 0 &&
          g_cfg.storage.rfind("postgresql://", 0) != 0) {
        return Usage();
      }
    } else if (a == "--client-poll-us") {
      const std::string v = value();
      char* end = nullptr;
      const long us = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || us < 0 || us > 100000) return Usage();
      bench::g_client_poll_us = us;
    } else if (a == "--w6-actors") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1000) return Usage();
      w6_actors = static_cast<int>(n);
    } else if (a == "--quick") {
      g_cfg.quick = true;
    } else if (a == "--keep") {
      g_cfg.keep = true;
    } else if (a == "--w4-large") {
      g_cfg.w4_large = true;
    } else if (a == "--only") {
      std::stringstream ss(value());
      std::string w;
      while (std::getline(ss, w, ',')) g_cfg.only.insert(w);
    } else {
      return Usage();
    }
  }
  if (g_cfg.quick) {
    g_cfg.w1_calls = 300;
    g_cfg.w1_warmup = 30;
    g_cfg.w1_reps = 1;
    g_cfg.w2_callers = 16;
    g_cfg.w2_duration = seconds(2);
    g_cfg.w3_calls = 30;
    g_cfg.w4_small = 100;
    g_cfg.w4_large_count = 500;
    g_cfg.w5_inserts = 200;
    g_cfg.w5_batch = 1000;
    g_cfg.w5_batch_calls = 1;
    g_cfg.w5_selects = 200;
    g_cfg.w5_warmup = 5;
    g_cfg.w6_actors = 5;
    g_cfg.w7_acks_before_kill = 20;
    g_cfg.w7_acks_after = 10;
    g_cfg.w7_call_timeout = milliseconds(2000);
    g_cfg.w7_recovery = seconds(20);
    g_cfg.w7_engine_kill = false;  // its recovery can take the runtime's 30 s KV timeout
    g_cfg.floor_ws = 1000;
    g_cfg.floor_commit = 200;
  }
  if (w6_actors.has_value()) g_cfg.w6_actors = *w6_actors;
  for (const auto* bin : {&g_cfg.engine_bin, &g_cfg.runtime_bin, &g_cfg.sql_runtime_bin}) {
    if (bin == &g_cfg.sql_runtime_bin && !g_cfg.Runs("w5")) continue;
    if (::access(bin->c_str(), X_OK) != 0) {
      std::fprintf(stderr,
                   "keel_bench: not executable: %s (build keel-engine, keel-examples and keel-bench-runtime, or "
                   "pass --engine/--runtime/--sql-runtime)\n",
                   bin->c_str());
      return 1;
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  SetLogLevel(LogLevel::kWarn);
  std::string templ = (std::filesystem::temp_directory_path() / "keel-bench-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    std::fprintf(stderr, "keel_bench: mkdtemp failed\n");
    return 1;
  }
  g_root = templ;

  json out;
  out["bench"] = "keel_bench";
  {
    const std::time_t now = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    out["date"] = buf;
  }
  out["quick"] = g_cfg.quick;
  out["envoy_transport"] = TransportName(g_cfg.envoy_transport);
  // The database URL is left out: it may hold a password.
  out["storage"] = g_cfg.storage == "rocksdb" ? "rocksdb" : "postgres";
  // µs the bench's clients (and the floor's) poll before blocking; 0: they block at once.
  out["client_poll_us"] = bench::g_client_poll_us.load();
  out["machine"] = {{"hardware_threads", std::thread::hardware_concurrency()},
                    {"loadavg_start", LoadAvg()},
                    {"temp_dir", g_root.string()}};
  out["binaries"] = {{"engine", g_cfg.engine_bin}, {"runtime", g_cfg.runtime_bin}, {"sql_runtime", g_cfg.sql_runtime_bin}};
  out["unit"] = "us";
  int rc = 0;
  json w;
  try {
    json floors;
    floors["ws_rtt"] = FloorWsRtt();
    floors["synced_commit"] = FloorCommit(true, g_cfg.floor_commit);
    floors["synced_commit_paced"] = FloorCommit(true, g_cfg.floor_commit, std::chrono::microseconds(500));
    floors["unsynced_commit"] = FloorCommit(false, g_cfg.floor_commit * 2);
    if (g_cfg.Runs("w6")) {
      // W6 waits 20 ms before each wake; a sync after such a pause can cost several
      // back-to-back ones (idle cores halt, the device settles).
      floors["synced_commit_after_idle"] =
          FloorCommit(true, g_cfg.quick ? 10 : 50, std::chrono::microseconds(20000),
                      "floor_synced_commit_after_idle");
    }
    out["floors"] = floors;

    if (g_cfg.Runs("w1") || g_cfg.Runs("w2") || g_cfg.Runs("w3") || g_cfg.Runs("w6")) {
      Stack st("main");
      st.Start();
      out["machine"]["engine_start_ms"] = R1(st.engine_start_ms());
      out["machine"]["runtime_start_ms"] = R1(st.runtime_start_ms());
      if (g_cfg.Runs("w1")) {
        HttpConn c(st.port());
        const std::string id = CreateStarted(c, "w1");
        int64_t count = 1;
        json paired;
        W1Reps(st, id, count, "w1", w, &paired);
        out["floors"]["ws_rtt_then_synced_commit"] = std::move(paired);
      }
      if (g_cfg.Runs("w2")) {
        std::vector<std::string> ids;
        HttpConn c(st.port());
        for (int i = 0; i < g_cfg.w2_callers; ++i) ids.push_back(CreateStarted(c, "w2-" + std::to_string(i)));
        w["w2_ws"] = W2(st, ids, true);
        w["w2_http"] = W2(st, ids, false);
      }
      if (g_cfg.Runs("w3")) w["w3_cold_start"] = W3(st);
      if (g_cfg.Runs("w6")) w["w6_wake"] = W6(st);
      out["machine"]["engine_rss_end_of_main_stack"] = ProcRss(st.engine_pid());
      out["machine"]["runtime_rss_end_of_main_stack"] = ProcRss(st.runtime_pid());
      st.Stop();
    }
    if (g_cfg.Runs("w1js") && !g_cfg.js_runtime_bin.empty()) {
      // The same W1 against the JavaScript example actors on the wasm runtime in Node.
      Stack st("w1js", g_cfg.js_runtime_bin, {}, EnvoyTransport::kTcp);
      st.Start();
      out["machine"]["js_runtime_start_ms"] = R1(st.runtime_start_ms());
      HttpConn c(st.port());
      const std::string id = CreateStarted(c, "w1js");
      int64_t count = 1;
      W1Reps(st, id, count, "w1_js", w);
      out["machine"]["js_runtime_rss"] = ProcRss(st.runtime_pid());
      st.Stop();
    }
    if (g_cfg.Runs("w5")) {
      // The plain-file floor right before the stacks (the disk's sync latency drifts).
      out["floors"]["sqlite_file"] = FloorSqlite(false);
      out["floors"]["sqlite_file_wal_full"] = FloorSqlite(true);
      json w5;
      w5["workload"] = "W5";
      w5["name"] = "w5_sqlite";
      w5["params"] = {{"inserts", g_cfg.w5_inserts},
                      {"batch_rows", g_cfg.w5_batch},
                      {"batch_calls", g_cfg.w5_batch_calls},
                      {"selects", g_cfg.w5_selects},
                      {"warmup_rounds", g_cfg.w5_warmup},
                      {"actor", "sqlbench: items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)"},
                      {"runtime", g_cfg.sql_runtime_bin},
                      {"stacks", "a fresh engine + runtime per backend (KEEL_SQLITE_BACKEND)"}};
      w["w5_sqlite"] = w5;
      w["w5_sqlite"]["local"] = W5Backend("local");
      w["w5_sqlite"]["remote"] = W5Backend("remote");
    }
    if (g_cfg.Runs("w4")) w["w4_memory"] = W4();
    if (g_cfg.Runs("w7")) w["w7_durability"] = W7();
    // The disk's sync latency drifts on a shared machine: measured again at the end.
    out["floors"]["synced_commit_end_of_run"] = FloorCommit(true, g_cfg.floor_commit);
  } catch (const Failure& f) {
    std::fprintf(stderr, "keel_bench: FAILED: %s\n", f.what.c_str());
    out["failure"] = f.what;
    rc = 1;
  }
  out["workloads"] = w;

  // Ratios against the floors.
  if (out.contains("floors")) {
    const double ws = P50(out["floors"]["ws_rtt"]);
    const double commit = P50(out["floors"]["synced_commit"]);
    const double floor = ws + commit;
    json r;
    r["floor_p50_us"] = R1(floor);
    if (w.contains("w1_ws")) {
      r["w1_ws_p50_over_floor"] = Ratio(P50(w["w1_ws"]), floor);
      r["w1_ws_p50_minus_floor_us"] = R1(P50(w["w1_ws"]) - floor);
    }
    // The same floor measured as one sequence right before each W1 WebSocket rep.
    const double paired = P50(out["floors"].value("ws_rtt_then_synced_commit", json::object()));
    if (paired > 0 && w.contains("w1_ws")) {
      r["paired_floor_p50_us"] = R1(paired);
      r["w1_ws_p50_minus_paired_floor_us"] = R1(P50(w["w1_ws"]) - paired);
    }
    if (w.contains("w1_http")) {
      r["w1_http_p50_over_floor"] = Ratio(P50(w["w1_http"]), floor);
      r["w1_http_p50_minus_floor_us"] = R1(P50(w["w1_http"]) - floor);
    }
    // Issue 8: W1 with JS actors on Node over WebSocket ≤ 2× the native runtime's.
    for (const char* t : {"ws", "http"}) {
      const std::string js = std::string("w1_js_") + t, native = std::string("w1_") + t;
      if (w.contains(js) && w.contains(native)) {
        r[js + "_p50_over_native"] = Ratio(P50(w[js]), P50(w[native]));
      }
    }
    if (w.contains("w2_ws") && commit > 0) {
      r["w2_ws_ops_over_single_writer_commit_rate"] =
          Ratio(w["w2_ws"]["ops_per_s"].get<double>(), 1e6 / commit);
    }
    if (w.contains("w3_cold_start")) r["w3_p50_over_floor"] = Ratio(P50(w["w3_cold_start"]), floor);
    // W5 against plain SQLite on a file (in-process, no actors): `sqlite_file` has the
    // execution layer's PRAGMAs, `sqlite_file_wal_full` is WAL + synchronous=FULL. Latency
    // ratios are Keel/floor (> 1: Keel slower), the batch's is Keel rows/s / floor rows/s.
    if (w.contains("w5_sqlite")) {
      json w5r;
      for (const char* fl : {"sqlite_file", "sqlite_file_wal_full"}) {
        if (!out["floors"].contains(fl)) continue;
        const json& f = out["floors"][fl];
        for (const char* be : {"local", "remote"}) {
          if (!w["w5_sqlite"].contains(be)) continue;
          const json& b = w["w5_sqlite"][be];
          json x;
          for (const std::string t : {"ws", "http"}) {
            for (const std::string op : {"insert_one", "point_select"}) {
              x[op + "_" + t + "_p50_over_floor"] = Ratio(P50(b[op + "_" + t]), P50(f[op]));
              x[op + "_" + t + "_p50_minus_floor_us"] = R1(P50(b[op + "_" + t]) - P50(f[op]));
            }
          }
          x["insert_many_rows_per_s_over_floor"] =
              Ratio(b["insert_many"].value("rows_per_s", 0.0), f["insert_many"].value("rows_per_s", 0.0));
          w5r[std::string(be) + "_vs_" + fl] = x;
        }
      }
      r["w5"] = w5r;
    }
    if (w.contains("w6_wake")) r["w6_p50_over_floor"] = Ratio(P50(w["w6_wake"]), floor);
    out["ratios"] = r;
    // The issue's absolute targets that need no peer (the peer ratios are bench.sh's).
    json t;
    if (w.contains("w1_ws")) t["w1_ws_p50_le_floor_plus_50us"] = P50(w["w1_ws"]) <= floor + 50;
    if (paired > 0 && w.contains("w1_ws")) {
      t["w1_ws_p50_le_paired_floor_plus_50us"] = P50(w["w1_ws"]) <= paired + 50;
    }
    if (w.contains("w1_js_ws") && w.contains("w1_ws")) {
      t["w1_js_ws_p50_le_2x_native"] = P50(w["w1_js_ws"]) <= 2 * P50(w["w1_ws"]);
    }
    if (w.contains("w3_cold_start")) t["w3_p50_le_2ms"] = P50(w["w3_cold_start"]) <= 2000;
    if (w.contains("w4_memory")) {
      t["w4_le_4KB_per_awake_actor"] = w["w4_memory"]["bytes_per_awake_actor"]["total"].get<double>() <= 4000;
    }
    if (w.contains("w6_wake")) t["w6_p50_le_2ms"] = P50(w["w6_wake"]) <= 2000;
    if (w.contains("w5_sqlite") && w["w5_sqlite"].contains("remote")) {
      t["w5_remote_insert_many_ge_20000_rows_per_s"] =
          w["w5_sqlite"]["remote"]["insert_many"].value("rows_per_s", 0.0) >= 20000;
    }
    if (w.contains("w7_durability")) {
      t["w7_zero_lost"] = w["w7_durability"]["acknowledged_writes_lost"].get<int64_t>() == 0 &&
                          w["w7_durability"]["counters_unreadable"].get<int64_t>() == 0;
    }
    out["targets"] = t;
  }
  // A lost acknowledged write is a correctness failure, not a slow figure.
  if (w.contains("w7_durability") && w["w7_durability"]["acknowledged_writes_lost"].get<int64_t>() > 0) {
    std::fprintf(stderr, "keel_bench: FAILED: W7 lost acknowledged writes\n");
    rc = 1;
  }
  out["machine"]["loadavg_end"] = LoadAvg();
  out["total_seconds"] = R2(MicrosSince(g_start) / 1e6);
  RemoveRoot();
  std::printf("%s\n", out.dump(2).c_str());
  std::fflush(stdout);
  return rc;
}

}  // namespace
}  // namespace keel::bench

int main(int argc, char** argv) { return keel::bench::Main(argc, argv); }
