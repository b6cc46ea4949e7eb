// The runtime end to end on loopback, in one process and one run, printed as one JSON object
// on stdout (progress on stderr). Run from the release preset:
//   runtime_bench > runtime.json
//
// Floors (what an action can never beat):
//  * floor_ws_rtt_us: a 32-byte binary WebSocket echo round trip against a keel::net
//    HttpServer (2 I/O threads) from a BlockingWsClient — the same client the workloads use.
//  * floor_synced_commit_us: one RocksDbKvStore transaction of one 16-byte key + 64-byte
//    value committed with sync (fsync of the WAL), in a temp directory; the unsynced commit
//    is reported next to it.
// Workloads, against TestEngine (engine + server in-process, RocksDB in a temp directory, so
// every actor write is a synced commit) and a RuntimeHost hosting examples::MakeCounter():
//  * w1_ws_action_us: `increment(1)` over one persistent gateway WebSocket
//    (/gateway/<id>/connect, rivet + rivet_encoding.bare), sequential. Each answer is
//    durable (the runtime's output gate waits for the engine's commit).
//  * w1_http_action_us: the same as POST /gateway/<id>/action/increment (json) on one
//    keep-alive TCP connection (a raw blocking socket: keel::net's Fetch opens a new
//    connection per request); w1_http_fetchsync_action_us is the same through
//    net::FetchSync, i.e. one new TCP connection (and a private I/O thread) per call.
//  * w3_cold_start_us: get-or-create + first action on a new key each time, through the
//    gateway's query form, one FetchSync per call.
//  * w6_wake_us: an actor put to sleep over REST (and seen asleep) takes its first action,
//    one FetchSync per call.
// Every count is bounded and the whole run stops new work after kTotalBudget; a phase cut
// short reports the samples it has (`n`).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>  // mkdtemp
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "counter/counter.h"
#include "echo_server.h"
#include "http_conn.h"
#include "net/blocking_ws_client.h"
#include "net/client.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "runtime/native/serve.h"
#include "storage/kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "support/test_engine.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::bench {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kTotalBudget = std::chrono::seconds(90);
const Clock::time_point g_start = Clock::now();
std::vector<std::filesystem::path> g_temp_dirs;

void RemoveTempDirs() {
  for (const auto& d : g_temp_dirs) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
  g_temp_dirs.clear();
}

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "runtime_bench: %s\n", why.c_str());
  RemoveTempDirs();
  std::_Exit(1);
}

void Progress(const std::string& line) {
  const double t = std::chrono::duration<double>(Clock::now() - g_start).count();
  std::fprintf(stderr, "[%6.2fs] %s\n", t, line.c_str());
}

bool OverBudget() { return Clock::now() - g_start > kTotalBudget; }

std::filesystem::path MakeTempDir(const std::string& tag) {
  std::string templ =
      (std::filesystem::temp_directory_path() / ("keel-runtime-bench-" + tag + "-XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) Die("mkdtemp failed");
  g_temp_dirs.emplace_back(templ);
  return templ;
}

double MicrosSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// Latency samples in µs; a phase stops at `max_samples` or when `phase_budget` (or the
// total budget) ran out.
struct Samples {
  std::vector<double> us;
  bool cut_short = false;

  double Pct(double p) const {
    std::vector<double> s = us;
    std::sort(s.begin(), s.end());
    return s[std::min(s.size() - 1, static_cast<size_t>(p * static_cast<double>(s.size())))];
  }
  json ToJson() const {
    json j;
    j["n"] = us.size();
    if (us.empty()) return j;
    double sum = 0;
    for (double v : us) sum += v;
    auto r = [](double v) { return std::round(v * 10) / 10; };
    j["p50"] = r(Pct(0.50));
    j["p90"] = r(Pct(0.90));
    j["p99"] = r(Pct(0.99));
    j["mean"] = r(sum / static_cast<double>(us.size()));
    j["min"] = r(*std::min_element(us.begin(), us.end()));
    j["max"] = r(*std::max_element(us.begin(), us.end()));
    if (cut_short) j["cut_short"] = true;
    return j;
  }
};

// Runs `warmup` untimed then up to `count` timed calls of `one` (returns false to fail).
template <typename Fn>
Samples Measure(const std::string& name, int warmup, int count, std::chrono::seconds phase_budget,
                Fn one) {
  const auto phase_end = Clock::now() + phase_budget;
  for (int i = 0; i < warmup; ++i) {
    if (!one()) Die(name + ": warm-up call failed");
    if (Clock::now() > phase_end || OverBudget()) break;
  }
  Samples s;
  s.us.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    if (Clock::now() > phase_end || OverBudget()) {
      s.cut_short = true;
      break;
    }
    const auto t0 = Clock::now();
    if (!one()) Die(name + ": call " + std::to_string(i) + " failed");
    s.us.push_back(MicrosSince(t0));
  }
  if (s.us.empty()) Die(name + ": no samples");
  Progress(name + ": n=" + std::to_string(s.us.size()) + " p50=" + std::to_string(s.Pct(0.5)) +
           "us");
  return s;
}

// ---- HTTP helpers --------------------------------------------------------------------

net::HttpResponse Fetch(const std::string& url, const std::string& method, std::string body = "",
                        net::Headers headers = {}) {
  net::HttpRequest req;
  req.method = method;
  req.headers = std::move(headers);
  if (!body.empty() && req.headers.empty()) req.headers = {{"content-type", "application/json"}};
  req.body = std::move(body);
  auto r = net::FetchSync(url, std::move(req), milliseconds(15000));
  if (!r.has_value()) Die(method + " " + url + ": " + r.error().ToString());
  return std::move(*r);
}

std::string CreateActor(const std::string& base, const std::string& key) {
  json body{{"name", "counter"}, {"key", key}, {"runner_name_selector", "default"}};
  auto r = Fetch(base + "/actors?namespace=default", "POST", body.dump());
  auto j = json::parse(r.body, nullptr, false);
  if (r.status != 200 || j.is_discarded() || !j.contains("actor")) Die("create actor: " + r.body);
  return j["actor"]["actor_id"].get<std::string>();
}

// The `output` of a json action response, or -1.
int64_t OutputOf(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("output") || !j["output"].is_number_integer()) return -1;
  return j["output"].get<int64_t>();
}

// ---- 1. loopback WebSocket floor ----------------------------------------------------

json FloorWsRtt() {
  Progress("floor_ws_rtt: echo server");
  net::IoRuntime runtime(2);
  auto server = StartEchoServer(runtime);
  if (!server.has_value()) Die("echo server: " + server.error().ToString());
  net::WsConnectOptions options;
  options.url = "ws://127.0.0.1:" + std::to_string((*server)->port()) + "/echo";
  auto client = net::BlockingWsClient::Connect(options, milliseconds(10000));
  if (!client.has_value()) Die("echo connect: " + client.error().ToString());
  const std::string payload(32, 'p');
  auto s = Measure("floor_ws_rtt", 500, 5000, std::chrono::seconds(6), [&] {
    if (!(*client)->Send(payload, true).ok()) return false;
    auto ev = (*client)->Receive(milliseconds(5000));
    return ev.ok() && std::holds_alternative<net::BlockingWsClient::Message>(*ev);
  });
  client->reset();
  (*server)->StopAccepting();
  runtime.Stop();
  json j = s.ToJson();
  j["payload_bytes"] = payload.size();
  return j;
}

// ---- 2. synced commit floor ---------------------------------------------------------

json FloorCommits(json& unsynced_out) {
  const auto dir = MakeTempDir("kv");
  Progress("floor_synced_commit: RocksDB in " + dir.string());
  json result;
  {
    auto opened = storage::RocksDbKvStore::Open(dir.string());
    if (!opened.has_value()) Die("rocksdb open: " + opened.error().ToString());
    auto& store = **opened;
    const Bytes value(64, 0x5a);
    uint64_t i = 0;
    auto commit = [&](bool sync) {
      auto txn = store.Begin();
      if (!txn.has_value()) return false;
      char key[17];
      std::snprintf(key, sizeof key, "k%015llu", static_cast<unsigned long long>(i++ % 1024));
      Bytes k(key, key + 16);
      if (!(*txn)->Put(k, value).ok()) return false;
      storage::CommitOptions options;
      options.sync = sync;
      return (*txn)->Commit(options).ok();
    };
    auto synced = Measure("floor_synced_commit", 50, 1000, std::chrono::seconds(8),
                          [&] { return commit(true); });
    auto unsynced = Measure("floor_unsynced_commit", 100, 2000, std::chrono::seconds(2),
                            [&] { return commit(false); });
    result = synced.ToJson();
    result["key_bytes"] = 16;
    result["value_bytes"] = 64;
    unsynced_out = unsynced.ToJson();
    (void)store.Close();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return result;
}

// ---- 3-6. the runtime through the engine --------------------------------------------

struct Rig {
  std::filesystem::path dir;
  std::unique_ptr<testing::TestEngine> engine;
  std::unique_ptr<RuntimeHost> host;
  std::string base;

  Rig() {
    dir = MakeTempDir("engine");
    Progress("engine on RocksDB in " + dir.string());
    engine::EngineOptions options;
    options.seed = 11;
    engine = std::make_unique<testing::TestEngine>(options, dir.string());
    base = engine->http_url();
    ServeSettings s;
    s.endpoint = base;
    s.log_level = "warn";
    host = std::make_unique<RuntimeHost>(
        s, std::vector<std::shared_ptr<const runtime::ActorType>>{examples::MakeCounter().type()});
    host->Start();
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!host->connected()) {
      if (Clock::now() > deadline) Die("the runtime never connected");
      std::this_thread::sleep_for(milliseconds(5));
    }
    Progress("runtime connected");
  }
  ~Rig() {
    host->Stop(milliseconds(10000));
    host.reset();
    engine.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

json WsAction(Rig& rig, const std::string& id, wire::Encoding encoding, int64_t& count) {
  net::WsConnectOptions opts;
  opts.url = rig.engine->ws_url() + "/gateway/" + id + "/connect";
  opts.subprotocols = {"rivet", "rivet_encoding." + std::string(wire::EncodingName(encoding))};
  auto ws = net::BlockingWsClient::Connect(opts, milliseconds(10000));
  if (!ws.has_value()) Die("gateway ws connect: " + ws.error().ToString());
  auto& client = **ws;
  auto next = [&]() -> std::optional<wire::ToClient> {
    auto m = client.Receive(milliseconds(10000));
    auto* msg = m.ok() ? std::get_if<net::BlockingWsClient::Message>(&*m) : nullptr;
    if (msg == nullptr) return std::nullopt;
    auto decoded = wire::DecodeToClient(Bytes(msg->data.begin(), msg->data.end()), encoding);
    if (!decoded.ok()) return std::nullopt;
    return std::move(*decoded);
  };
  auto init = next();
  if (!init || !std::holds_alternative<wire::Init>(*init)) Die("no Init on the gateway ws");
  uint64_t action_id = 0;
  const bool text = wire::UsesTextFrames(encoding);
  auto one = [&] {
    const uint64_t want = ++action_id;
    Bytes b = wire::Encode(wire::ToServer{wire::ActionRequest{want, "increment", Value::ArrayOf({1})}},
                           encoding);
    if (!client.Send(std::string(b.begin(), b.end()), !text).ok()) return false;
    for (;;) {
      auto m = next();
      if (!m) return false;
      if (const auto* r = std::get_if<wire::ActionResponse>(&*m)) {
        if (r->id != want) continue;
        if (!r->output.is_integer() || static_cast<int64_t>(r->output.as_uint()) != count + 1) {
          return false;
        }
        ++count;
        return true;
      }
      if (const auto* e = std::get_if<wire::ErrorMsg>(&*m)) {
        std::fprintf(stderr, "action error %s.%s: %s\n", e->group.c_str(), e->code.c_str(),
                     e->message.c_str());
        return false;
      }
      // Events (none subscribed) are skipped.
    }
  };
  const std::string name = "w1_ws_action/" + std::string(wire::EncodingName(encoding));
  auto s = Measure(name, 200, 2000, std::chrono::seconds(20), one);
  client.Close();
  json j = s.ToJson();
  j["encoding"] = wire::EncodingName(encoding);
  return j;
}

json HttpKeepAliveAction(Rig& rig, const std::string& id, int64_t& count) {
  HttpConn c(rig.engine->port(), std::chrono::seconds(10));
  const std::string target = "/gateway/" + id + "/action/increment";
  const std::string body = R"({"args":[1]})";
  std::string out;
  auto one = [&] {
    int status = c.Post(target, body, &out);
    if (status != 200 || OutputOf(out) != count + 1) {
      std::fprintf(stderr, "http action: %d %s\n", status, out.c_str());
      return false;
    }
    ++count;
    return true;
  };
  auto s = Measure("w1_http_action", 100, 1000, std::chrono::seconds(12), one);
  json j = s.ToJson();
  j["transport"] = "one keep-alive TCP connection (raw blocking socket), json";
  // Not expected: a server that closed the connection (the client reconnects on its next call).
  j["server_closed_connection"] = c.connects() - 1;
  return j;
}

json HttpFetchSyncAction(Rig& rig, const std::string& id, int64_t& count) {
  const std::string url = rig.base + "/gateway/" + id + "/action/increment";
  auto one = [&] {
    auto r = Fetch(url, "POST", R"({"args":[1]})",
                   {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
    if (r.status != 200 || OutputOf(r.body) != count + 1) {
      std::fprintf(stderr, "http action: %d %s\n", r.status, r.body.c_str());
      return false;
    }
    ++count;
    return true;
  };
  auto s = Measure("w1_http_fetchsync_action", 20, 300, std::chrono::seconds(5), one);
  json j = s.ToJson();
  j["transport"] =
      "net::FetchSync: a new TCP connection and a private one-thread IoRuntime per call";
  return j;
}

json ColdStart(Rig& rig) {
  int key = 0;
  auto one = [&] {
    const std::string url = rig.base +
                            "/gateway/counter/action/increment?rvt-namespace=default"
                            "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=cold-" +
                            std::to_string(key++);
    auto r = Fetch(url, "POST", R"({"args":[1]})",
                   {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
    if (r.status != 200 || OutputOf(r.body) != 1) {
      std::fprintf(stderr, "cold start: %d %s\n", r.status, r.body.c_str());
      return false;
    }
    return true;
  };
  auto s = Measure("w3_cold_start", 5, 200, std::chrono::seconds(20), one);
  json j = s.ToJson();
  j["transport"] = "net::FetchSync (new TCP connection per call)";
  return j;
}

json Wake(Rig& rig) {
  const std::string id = CreateActor(rig.base, "wake");
  const std::string action_url = rig.base + "/gateway/" + id + "/action/increment";
  const net::Headers headers = {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}};
  int64_t count = 0;
  auto action = [&] {
    auto r = Fetch(action_url, "POST", R"({"args":[1]})", headers);
    if (r.status != 200 || OutputOf(r.body) != count + 1) {
      Die("wake action: " + std::to_string(r.status) + " " + r.body);
    }
    ++count;
  };
  action();  // started
  Samples wake, to_sleep;
  const auto phase_end = Clock::now() + std::chrono::seconds(20);
  for (int cycle = 0; cycle < 30; ++cycle) {
    if (Clock::now() > phase_end || OverBudget()) {
      wake.cut_short = true;
      break;
    }
    const auto t_sleep = Clock::now();
    auto r = Fetch(rig.base + "/actors/" + id + "/sleep?namespace=default", "POST", "{}");
    if (r.status != 200) Die("sleep: " + std::to_string(r.status) + " " + r.body);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto g = Fetch(rig.base + "/actors/" + id + "?namespace=default", "GET");
      auto j = json::parse(g.body, nullptr, false);
      if (!j.is_discarded() && j.contains("actor") && !j["actor"]["sleep_ts"].is_null() &&
          j["actor"]["connectable_ts"].is_null()) {
        break;
      }
      if (Clock::now() > deadline) Die("the actor never fell asleep");
      std::this_thread::sleep_for(milliseconds(2));
    }
    to_sleep.us.push_back(MicrosSince(t_sleep));
    const auto t0 = Clock::now();
    action();
    wake.us.push_back(MicrosSince(t0));
  }
  if (wake.us.empty()) Die("w6: no samples");
  Progress("w6_wake: n=" + std::to_string(wake.us.size()) + " p50=" + std::to_string(wake.Pct(0.5)) +
           "us");
  json j = wake.ToJson();
  j["transport"] = "net::FetchSync (new TCP connection per call)";
  j["sleep_request_to_asleep_observed_us"] = to_sleep.ToJson();
  return j;
}

double Ratio(double a, double b) { return b > 0 ? std::round(a / b * 100) / 100 : 0; }

int Main() {
  SetLogLevel(LogLevel::kWarn);
  json out;
  out["bench"] = "runtime_bench";
  out["unit"] = "us";
  out["hardware_threads"] = std::thread::hardware_concurrency();
  out["temp_dir"] = std::filesystem::temp_directory_path().string();

  out["floor_ws_rtt_us"] = FloorWsRtt();
  json unsynced;
  out["floor_synced_commit_us"] = FloorCommits(unsynced);
  out["floor_unsynced_commit_us"] = unsynced;

  {
    Rig rig;
    const std::string id = CreateActor(rig.base, "w1");
    // The first action waits for the actor to start.
    auto first = Fetch(rig.base + "/gateway/" + id + "/action/increment", "POST", R"({"args":[1]})",
                       {{"content-type", "application/json"}, {"x-rivet-encoding", "json"}});
    if (first.status != 200 || OutputOf(first.body) != 1) Die("first action: " + first.body);
    int64_t count = 1;
    out["w1_ws_action_us"] = WsAction(rig, id, wire::Encoding::kBare, count);
    if (!OverBudget()) out["w1_ws_action_json_us"] = WsAction(rig, id, wire::Encoding::kJson, count);
    if (!OverBudget()) out["w1_http_action_us"] = HttpKeepAliveAction(rig, id, count);
    if (!OverBudget()) out["w1_http_fetchsync_action_us"] = HttpFetchSyncAction(rig, id, count);
    if (!OverBudget()) out["w3_cold_start_us"] = ColdStart(rig);
    if (!OverBudget()) out["w6_wake_us"] = Wake(rig);
    Progress("stopping the runtime and the engine");
  }

  const double ws = out["floor_ws_rtt_us"]["p50"].get<double>();
  const double commit = out["floor_synced_commit_us"]["p50"].get<double>();
  const double floor = ws + commit;
  json ratios;
  ratios["floor_p50_us"] = std::round(floor * 10) / 10;
  auto p50 = [&](const char* key) -> double {
    return out.contains(key) && out[key].contains("p50") ? out[key]["p50"].get<double>() : 0;
  };
  ratios["w1_ws_action_p50_over_floor"] = Ratio(p50("w1_ws_action_us"), floor);
  if (out.contains("w1_ws_action_json_us")) {
    ratios["w1_ws_action_json_p50_over_floor"] = Ratio(p50("w1_ws_action_json_us"), floor);
  }
  if (out.contains("w1_http_action_us")) {
    ratios["w1_http_action_p50_over_floor"] = Ratio(p50("w1_http_action_us"), floor);
  }
  if (out.contains("w1_http_fetchsync_action_us")) {
    ratios["w1_http_fetchsync_action_p50_over_floor"] =
        Ratio(p50("w1_http_fetchsync_action_us"), floor);
  }
  ratios["w1_ws_action_p50_minus_floor_us"] = std::round((p50("w1_ws_action_us") - floor) * 10) / 10;
  // A WebSocket action crosses loopback three times there and back (client -> engine, the
  // engine's tunnel to the runtime, the runtime's KV put to the engine and its answer, the
  // response back through the tunnel and to the client) around one synced commit.
  const double structural = 3 * ws + commit;
  ratios["structural_floor_3ws_plus_commit_p50_us"] = std::round(structural * 10) / 10;
  ratios["w1_ws_action_p50_over_structural_floor"] = Ratio(p50("w1_ws_action_us"), structural);
  if (out.contains("w3_cold_start_us")) {
    ratios["w3_cold_start_p50_over_w1_ws_p50"] =
        Ratio(p50("w3_cold_start_us"), p50("w1_ws_action_us"));
  }
  if (out.contains("w6_wake_us")) {
    ratios["w6_wake_p50_over_w1_ws_p50"] = Ratio(p50("w6_wake_us"), p50("w1_ws_action_us"));
  }
  out["ratios"] = ratios;
  out["notes"] = json::array(
      {"engine: TestEngine in-process (2 I/O + 2 worker threads) on RocksDB (synced commits) in a "
       "temp dir; runtime: RuntimeHost on its own thread, same process; all loopback",
       "w1 actions are sequential; every answer waits for the engine's synced commit of the "
       "actor state (output gate)",
       "floor = floor_ws_rtt_us.p50 + floor_synced_commit_us.p50",
       "w3 and w6 use net::FetchSync, which opens a new TCP connection per call (compare "
       "w1_http_fetchsync_action_us with w1_http_action_us for that overhead)"});
  out["total_seconds"] =
      std::round(std::chrono::duration<double>(Clock::now() - g_start).count() * 100) / 100;
  RemoveTempDirs();
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace keel::bench

int main() { return keel::bench::Main(); }
