// keel-engine end to end on loopback: a whole engine in-process (TestEngine: the Engine, its
// HTTP/WebSocket server, 2 I/O + 2 worker threads, MemKvStore) and a v4 envoy on its own
// I/O thread (TunnelEnvoy). Run from the release preset, next to net_bench (the raw net
// layer) for the ratios.
//
//  * BM_GatewayEcho: keel-alive HTTP GET /gateway/{id}/echo from plain blocking sockets
//    (one per benchmark thread); the envoy answers every RequestStart with a small
//    ResponseStart from its socket thread. items/s = requests/s; p50_us/p99_us = per-request
//    round-trip latency percentiles (averaged over threads).
//  * BM_EnvoyPongFrames / BM_EnvoyKvGetFrames: one envoy connection (a raw socket writing
//    pre-built WebSocket frames, a whole batch per send()) sends small frames: ToRivetPong,
//    or ToRivetKvRequest get of one key of its own actor. A pong batch ends with a KV
//    request whose answer proves the engine decoded and dispatched every frame before it
//    (frames on one connection are handled in order); KV batches wait for every answer.
//    items/s = frames/s.
//  * BM_SleepingActorMemory: N actors created with no envoy (allocation gives up at once and
//    they sleep, so the orchestrator evicts them); RSS growth of this process per actor,
//    after ReleaseFreeMemory (glibc's malloc_trim; under mimalloc, only this thread's
//    pages and empty segments). Storage is the in-memory MemKvStore, so the figure
//    includes the stored records; `stored_bytes_per_actor` is their raw key+value size.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/log.h"
#include "base/native/allocator.h"
#include "engine/core/catalog.h"
#include "engine/core/orchestrator.h"
#include "integration/gateway/tunnel_envoy.h"
#include "net/client.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

namespace latest = protocol::envoy::latest;
using std::chrono::milliseconds;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "engine_bench: %s\n", why.c_str());
  std::abort();
}

// Sends a REST request; dies unless it answers 200. Returns the body.
std::string Rest(const TestEngine& engine, const std::string& method, const std::string& target,
                 const std::string& body) {
  net::HttpRequest req;
  req.method = method;
  req.headers = {{"content-type", "application/json"}};
  req.body = body;
  auto r = net::FetchSync(engine.http_url() + target, req, milliseconds(10000));
  if (!r.has_value()) Die(method + " " + target + ": " + r.error().ToString());
  if (r->status != 200) Die(method + " " + target + ": " + std::to_string(r->status) + " " + r->body);
  return r->body;
}

// Creates an actor over REST; returns its id.
std::string CreateActor(const TestEngine& engine, const std::string& name, const std::string& key,
                        const std::string& pool = "default") {
  std::string body = Rest(engine, "POST", "/actors?namespace=default",
                          R"({"name":")" + name + R"(","key":")" + key +
                              R"(","runner_name_selector":")" + pool + R"("})");
  const std::string marker = R"("actor_id":")";
  size_t at = body.find(marker);
  if (at == std::string::npos) Die("no actor_id in " + body);
  at += marker.size();
  return body.substr(at, body.find('"', at) - at);
}

// A serverful pool (runner config) of its own.
void CreatePool(const TestEngine& engine, const std::string& pool) {
  Rest(engine, "PUT", "/runner-configs/" + pool + "?namespace=default",
       R"({"datacenters":{"default":{"normal":{}}}})");
}

// One engine, one echo envoy and one running actor for the whole program.
struct GatewayRig {
  GatewayRig() {
    SetLogLevel(LogLevel::kWarn);
    engine::EngineOptions options;
    options.seed = 42;
    engine = std::make_unique<TestEngine>(options);
    TunnelEnvoyPolicy policy;
    policy.record = false;
    envoy = TunnelEnvoy::Connect(engine->ws_url(), "bench-envoy", policy);
    if (!envoy.ok()) Die("envoy: " + envoy.error());
    actor = CreateActor(*engine, "bench", "b1");
    auto start = envoy->WaitCommand<latest::CommandStartActor>(milliseconds(10000), actor);
    if (!start.has_value()) Die("the actor never started");
    generation = start->checkpoint.generation;
    // Warm up: the first request waits for Running.
    net::HttpRequest req;
    req.method = "GET";
    auto r = net::FetchSync(engine->http_url() + "/gateway/" + actor + "/echo", req,
                            milliseconds(10000));
    if (!r.has_value() || r->status != 200) Die("warm-up request failed");
  }
  std::unique_ptr<TestEngine> engine;
  TunnelEnvoy envoy;
  std::string actor;
  uint32_t generation = 0;
};

GatewayRig& Rig() {
  static GatewayRig* rig = new GatewayRig();  // lives until exit
  return *rig;
}

int ConnectRaw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Die("connect");
  return fd;
}

// Reads one HTTP/1.1 response with a Content-Length body; returns its status (0 on error).
int ReadResponse(int fd, std::string& buffer) {
  for (;;) {
    size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      size_t length = 0;
      // Header names are lower-case on Keel's server? Match case-insensitively anyway.
      for (size_t line = buffer.find("\r\n") + 2; line < end;) {
        size_t eol = buffer.find("\r\n", line);
        std::string_view h(buffer.data() + line, eol - line);
        if (h.size() > 15 && net::EqualsIgnoreCase(h.substr(0, 15), "content-length:")) {
          length = std::strtoul(std::string(h.substr(15)).c_str(), nullptr, 10);
        }
        line = eol + 2;
      }
      if (buffer.size() >= end + 4 + length) {
        int status = std::atoi(buffer.c_str() + 9);
        buffer.erase(0, end + 4 + length);
        return status;
      }
    }
    char chunk[8192];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return 0;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

void BM_GatewayEcho(benchmark::State& state) {
  GatewayRig& rig = Rig();
  int fd = ConnectRaw(rig.engine->port());
  const std::string request =
      "GET /gateway/" + rig.actor + "/echo HTTP/1.1\r\nHost: bench\r\n\r\n";
  std::string buffer;
  std::vector<double> latencies_us;
  latencies_us.reserve(1 << 20);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      state.SkipWithError("send failed");
      break;
    }
    const int status = ReadResponse(fd, buffer);
    if (status != 200) {
      state.SkipWithError(("bad answer " + std::to_string(status)).c_str());
      break;
    }
    latencies_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  ::close(fd);
  state.SetItemsProcessed(state.iterations());
  if (!latencies_us.empty()) {
    std::sort(latencies_us.begin(), latencies_us.end());
    auto pct = [&](double p) {
      return latencies_us[std::min(latencies_us.size() - 1,
                                   static_cast<size_t>(p * static_cast<double>(latencies_us.size())))];
    };
    state.counters["p50_us"] = benchmark::Counter(pct(0.50), benchmark::Counter::kAvgThreads);
    state.counters["p99_us"] = benchmark::Counter(pct(0.99), benchmark::Counter::kAvgThreads);
  }
}
BENCHMARK(BM_GatewayEcho)->Threads(1)->Threads(8)->UseRealTime()->MinTime(2.0);

// ---- envoy endpoint frames/s ----------------------------------------------------------

std::string Encode(const latest::ToRivet& msg) {
  Bytes out;
  if (!protocol::envoy::EncodeToRivet(msg, 4, out).has_value()) Die("encode");
  return std::string(out.begin(), out.end());
}

// A raw envoy: the WebSocket handshake and frames written by hand on a blocking socket, so
// one send() carries a whole batch of frames and the client costs next to nothing; the
// engine's side (frame parsing, decoding, dispatch) is what is measured.
class RawEnvoy {
 public:
  RawEnvoy(uint16_t port, const std::string& key, const std::string& pool) {
    fd_ = ConnectRaw(port);
    SendAll("GET /envoys/connect?protocol_version=4&namespace=default&envoy_key=" + key +
            "&version=1&pool_name=" + pool + " HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rivet\r\n\r\n");
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) Fill();
    if (in_.compare(0, 12, "HTTP/1.1 101") != 0) Die("envoy upgrade refused: " + in_);
    in_.erase(0, end + 4);
    auto init = Next();
    if (!init.is<latest::ToEnvoyInit>()) Die("first message is not Init");
  }
  ~RawEnvoy() { ::close(fd_); }

  // One masked (all-zero key) binary frame carrying `payload`.
  static std::string Frame(const std::string& payload) {
    std::string f;
    f.push_back(static_cast<char>(0x82));
    const size_t n = payload.size();
    if (n < 126) {
      f.push_back(static_cast<char>(0x80 | n));
    } else if (n < 65536) {
      f.push_back(static_cast<char>(0x80 | 126));
      f.push_back(static_cast<char>(n >> 8));
      f.push_back(static_cast<char>(n & 0xff));
    } else {
      f.push_back(static_cast<char>(0x80 | 127));
      for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    }
    f.append(4, '\0');
    f += payload;
    return f;
  }

  void SendAll(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) Die("raw envoy send failed");
      off += static_cast<size_t>(n);
    }
  }
  void Send(const latest::ToRivet& msg) { SendAll(Frame(Encode(msg))); }

  // The next protocol message; answers ToEnvoyPing and skips control frames.
  latest::ToEnvoy Next() {
    for (;;) {
      while (in_.size() < 2) Fill();
      const auto b0 = static_cast<uint8_t>(in_[0]);
      const auto b1 = static_cast<uint8_t>(in_[1]);
      size_t header = 2;
      uint64_t len = b1 & 0x7f;
      if (len == 126) {
        while (in_.size() < 4) Fill();
        len = (uint64_t{static_cast<uint8_t>(in_[2])} << 8) | static_cast<uint8_t>(in_[3]);
        header = 4;
      } else if (len == 127) {
        while (in_.size() < 10) Fill();
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<uint8_t>(in_[2 + i]);
        header = 10;
      }
      while (in_.size() < header + len) Fill();
      std::string payload = in_.substr(header, len);
      in_.erase(0, header + len);
      const int opcode = b0 & 0x0f;
      if (opcode == 0x8) Die("the engine closed the envoy connection");
      if (opcode != 0x2) continue;  // control frames (server pings are for idle sockets)
      ByteView bytes(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
      auto msg = protocol::envoy::DecodeToEnvoy(bytes, 4);
      if (!msg.has_value()) Die("undecodable frame from the engine");
      if (const auto* ping = msg->get_if<latest::ToEnvoyPing>()) {
        Send(latest::ToRivet{latest::ToRivetPong{ping->ts}});
        continue;
      }
      return std::move(*msg);
    }
  }

  // Reads until `count` KV responses arrived (answering whatever needs an answer).
  void WaitKv(int64_t count) {
    while (count > 0) {
      if (Next().is<latest::ToEnvoyKvResponse>()) --count;
    }
  }

  // Waits for a CommandStartActor and answers Running (event index 0).
  std::string AcceptStart() {
    for (;;) {
      auto msg = Next();
      const auto* cmds = msg.get_if<latest::ToEnvoyCommands>();
      if (cmds == nullptr) continue;
      for (const auto& w : cmds->value) {
        if (!w.inner.is<latest::CommandStartActor>()) continue;
        latest::EventWrapper e;
        e.checkpoint = w.checkpoint;
        e.checkpoint.index = 0;
        e.inner = latest::EventActorStateUpdate{latest::ActorStateRunning{}};
        Send(latest::ToRivet{latest::ToRivetEvents{{std::move(e)}}});
        return w.checkpoint.actor_id;
      }
    }
  }

 private:
  void Fill() {
    char chunk[65536];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) Die("raw envoy connection lost");
    in_.append(chunk, static_cast<size_t>(n));
  }

  int fd_ = -1;
  std::string in_;
};

std::string KvGetPayload(const std::string& actor, uint32_t request_id) {
  latest::ToRivetKvRequest kv;
  kv.actor_id = actor;
  kv.request_id = request_id;
  latest::KvGetRequest get;
  get.keys.push_back(Bytes{'k'});
  kv.data = get;
  return Encode(latest::ToRivet{std::move(kv)});
}

// A raw envoy (own key) hosting one running actor on the shared engine.
struct FrameRig {
  // Google Benchmark calls a benchmark function several times: every rig gets fresh keys.
  explicit FrameRig(const std::string& prefix) : FrameRig(prefix, NextId()) {}
  FrameRig(const std::string& prefix, int id)
      : name(prefix + "-" + std::to_string(id)),
        envoy((CreatePool(*Rig().engine, name), Rig().engine->port()), name, name) {
    // Its own pool: the actor can only be placed on this connection.
    std::string created = CreateActor(*Rig().engine, "frames", name, name);
    actor = envoy.AcceptStart();
    if (actor != created) Die("started another actor");
    // A KV round trip: the actor now runs on this connection.
    envoy.SendAll(RawEnvoy::Frame(KvGetPayload(actor, 0)));
    envoy.WaitKv(1);
  }
  static int NextId() {
    static std::atomic<int> next{0};
    return next.fetch_add(1);
  }
  std::string name;
  RawEnvoy envoy;
  std::string actor;
};

void BM_EnvoyPongFrames(benchmark::State& state) {
  FrameRig rig("frames-pong");
  const int64_t batch = state.range(0);
  const std::string pong = RawEnvoy::Frame(Encode(latest::ToRivet{latest::ToRivetPong{1}}));
  std::string frames_out;
  for (int64_t i = 0; i < batch; ++i) frames_out += pong;
  frames_out += RawEnvoy::Frame(KvGetPayload(rig.actor, 1));  // the barrier
  int64_t frames = 0;
  for (auto _ : state) {
    rig.envoy.SendAll(frames_out);
    rig.envoy.WaitKv(1);
    frames += batch + 1;
  }
  state.SetItemsProcessed(frames);
  state.counters["frame_bytes"] = static_cast<double>(pong.size());
}
BENCHMARK(BM_EnvoyPongFrames)->Arg(10000)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EnvoyKvGetFrames(benchmark::State& state) {
  FrameRig rig("frames-kv");
  const int64_t batch = state.range(0);
  const std::string get = RawEnvoy::Frame(KvGetPayload(rig.actor, 2));
  std::string frames_out;
  for (int64_t i = 0; i < batch; ++i) frames_out += get;
  int64_t frames = 0;
  for (auto _ : state) {
    rig.envoy.SendAll(frames_out);
    rig.envoy.WaitKv(batch);
    frames += batch;
  }
  state.SetItemsProcessed(frames);
  state.counters["frame_bytes"] = static_cast<double>(get.size());
}
BENCHMARK(BM_EnvoyKvGetFrames)->Arg(1000)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- synced KV puts from many actors on one connection ---------------------------------

// A fresh engine on RocksDB (synced commits) in a temporary directory, one raw envoy
// hosting `actors` actors; each iteration sends `per_actor` one-key puts for every actor,
// interleaved, in one write, and waits for every answer. Arg: storage executors per
// connection (1 = every commit of the connection in series; 8 = the default, different
// actors' commits overlap and share WAL syncs).
void BM_SyncedKvPutsManyActors(benchmark::State& state) {
  SetLogLevel(LogLevel::kError);
  const int executors = static_cast<int>(state.range(0));
  constexpr int kActors = 16;
  constexpr int kPerActor = 8;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("keel-bench-kvputs-" + std::to_string(::getpid()) + "-" +
                    std::to_string(executors));
  std::filesystem::remove_all(dir);
  {
    engine::EngineOptions options;
    options.seed = 7;
    options.storage_executors_per_connection = executors;
    TestEngine engine(options, dir.string(), 2, 8);
    CreatePool(engine, "puts");
    RawEnvoy envoy(engine.port(), "puts-envoy", "puts");
    std::vector<std::string> actors;
    for (int i = 0; i < kActors; ++i) {
      std::string created = CreateActor(engine, "puts", "a" + std::to_string(i), "puts");
      actors.push_back(envoy.AcceptStart());
      if (actors.back() != created) Die("started another actor");
    }
    uint32_t request = 1;
    int64_t puts = 0;
    for (auto _ : state) {
      std::string out;
      for (int k = 0; k < kPerActor; ++k) {
        for (const auto& actor : actors) {
          latest::ToRivetKvRequest kv;
          kv.actor_id = actor;
          kv.request_id = request++;
          latest::KvPutRequest put;
          put.keys.push_back(Bytes{'c'});
          put.values.push_back(Bytes(8, static_cast<uint8_t>(k)));
          kv.data = put;
          out += RawEnvoy::Frame(Encode(latest::ToRivet{std::move(kv)}));
        }
      }
      envoy.SendAll(out);
      envoy.WaitKv(kActors * kPerActor);
      puts += kActors * kPerActor;
    }
    state.SetItemsProcessed(puts);
    state.counters["actors"] = kActors;
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SyncedKvPutsManyActors)->Arg(1)->Arg(8)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---- memory per sleeping actor ----------------------------------------------------------

size_t RssBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  if (std::fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

void BM_SleepingActorMemory(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    SetLogLevel(LogLevel::kError);
    engine::EngineOptions options;
    options.seed = 99;
    // No envoy: the first allocation fails and the retry gives up at once → sleeping.
    options.thresholds.retry_duration_ms = 0;
    options.thresholds.base_retry_ms = 1;
    TestEngine engine(options);
    auto ns = engine.engine().catalog().FindNamespace("default");
    if (!ns.has_value()) Die("no default namespace");
    engine::EngineId sample;  // the last actor created, checked to be asleep
    auto expect_sleeping = [&] {
      auto info = engine.engine().orchestrator().Read(sample);
      if (!info.has_value() || info->workflow.transition != engine::orch::Transition::kSleeping) {
        Die("the sample actor is not sleeping");
      }
    };
    // Warm-up actors so lazily-created structures exist before the baseline.
    auto create = [&](int from, int to) {
      std::mutex mu;
      std::condition_variable cv;
      int in_flight = 0;
      int failed = 0;
      for (int i = from; i < to; ++i) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return in_flight < 256; });
          ++in_flight;
        }
        engine::CreateActorRequest req;
        req.namespace_id = ns->id;
        req.name = "idle";
        req.key = "key-" + std::to_string(i);
        req.pool_name = "default";
        engine.engine().orchestrator().Create(
            std::move(req), [&](Result<std::pair<engine::ActorInfo, bool>> r) {
              std::lock_guard lock(mu);
              if (!r.has_value()) {
                ++failed;
              } else {
                sample = r->first.id;
              }
              --in_flight;
              cv.notify_all();
            });
      }
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight == 0; });
      if (failed != 0) Die(std::to_string(failed) + " creates failed");
    };
    auto loaded = [&] {
      int64_t total = 0;
      for (const auto& [name, count] : engine.engine().orchestrator().LoadedActorsByState()) {
        total += count;
      }
      return total;
    };
    auto wait_evicted = [&] {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (loaded() != 0) {
        if (std::chrono::steady_clock::now() > deadline) Die("actors never went to sleep");
        std::this_thread::sleep_for(milliseconds(20));
      }
    };
    auto stored_bytes = [&] {
      auto all = engine.engine().store().ScanPrefix(ByteView{});
      if (!all.has_value()) Die("scan failed");
      size_t total = 0;
      for (const auto& kv : *all) total += kv.key.size() + kv.value.size();
      return total;
    };
    create(0, 1000);
    wait_evicted();
    const size_t stored_before = stored_bytes();
    keel::ReleaseFreeMemory();
    const size_t before = RssBytes();
    create(1000, 1000 + n);
    wait_evicted();
    expect_sleeping();
    keel::ReleaseFreeMemory();
    const size_t after = RssBytes();
    const size_t stored_after = stored_bytes();
    state.counters["stored_bytes_per_actor"] =
        static_cast<double>(stored_after - stored_before) / static_cast<double>(n);
    state.counters["actors"] = n;
    state.counters["rss_growth_bytes"] = static_cast<double>(after - before);
    state.counters["bytes_per_actor"] =
        static_cast<double>(after > before ? after - before : 0) / static_cast<double>(n);
    state.counters["loaded_after"] = static_cast<double>(loaded());
  }
}
BENCHMARK(BM_SleepingActorMemory)->Arg(20000)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace keel::testing
