// keel::net on loopback: HTTP/1.1 keep-alive request/response round trips and WebSocket
// 32-byte echo round trips. The server runs on a 2-thread IoRuntime; HTTP clients are
// plain blocking sockets (one keep-alive connection per benchmark thread) so the numbers
// measure the server, not a client library. Run from the release preset.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <benchmark/benchmark.h>

#include "base/log.h"
#include "echo_server.h"
#include "net/blocking_ws_client.h"
#include "net/client.h"
#include "net/http_server.h"
#include "net/io_runtime.h"

namespace keel::net {
namespace {

// One server for the whole program. Modes by path: "/inline" answers inside the handler,
// "/hop" answers from a separate strand (the engine gateway's shape: the handler hands
// the exchange to an actor executor, which responds).
struct BenchServer {
  BenchServer() : runtime(2), actor(runtime.MakeStrand()) {
    SetLogLevel(LogLevel::kWarn);
    auto started = HttpServer::Start(runtime, ServerOptions{}, [this](std::shared_ptr<HttpExchange> ex) {
      if (ex->IsWebSocketUpgrade()) {
        bench::AcceptEcho(ex);
        return;
      }
      if (ex->request().target == "/hop") {
        actor->Post([ex] { ex->Respond(HttpResponse{200, {{"Content-Type", "text/plain"}}, "ok"}); });
        return;
      }
      ex->Respond(HttpResponse{200, {{"Content-Type", "text/plain"}}, "ok"});
    });
    if (!started.ok()) std::abort();
    server = std::move(started).value();
  }
  IoRuntime runtime;
  std::unique_ptr<Executor> actor;
  std::unique_ptr<HttpServer> server;
};

BenchServer& Server() {
  static BenchServer* server = new BenchServer();  // lives until exit
  return *server;
}

int ConnectRaw(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) std::abort();
  return fd;
}

// Reads one response whose body is "ok" (Content-Length: 2).
bool ReadOne(int fd, std::string& buffer) {
  for (;;) {
    size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos && buffer.size() >= end + 4 + 2) {
      buffer.erase(0, end + 4 + 2);
      return true;
    }
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

void HttpRoundTrips(benchmark::State& state, const std::string& path) {
  BenchServer& s = Server();
  int fd = ConnectRaw(s.server->port());
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n";
  std::string buffer;
  for (auto _ : state) {
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      state.SkipWithError("send failed");
      break;
    }
    if (!ReadOne(fd, buffer)) {
      state.SkipWithError("read failed");
      break;
    }
  }
  ::close(fd);
  state.SetItemsProcessed(state.iterations());
}

void BM_HttpKeepAliveRoundTrip(benchmark::State& state) { HttpRoundTrips(state, "/inline"); }
BENCHMARK(BM_HttpKeepAliveRoundTrip)->Threads(1)->Threads(4)->UseRealTime();

void BM_HttpKeepAliveRoundTripViaStrand(benchmark::State& state) {
  HttpRoundTrips(state, "/hop");
}
BENCHMARK(BM_HttpKeepAliveRoundTripViaStrand)->Threads(1)->Threads(4)->UseRealTime();

void BM_WsEcho32(benchmark::State& state) {
  BenchServer& s = Server();
  WsConnectOptions options;
  options.url = "ws://127.0.0.1:" + std::to_string(s.server->port()) + "/ws";
  auto client = BlockingWsClient::Connect(options, std::chrono::seconds(10));
  if (!client.ok()) {
    state.SkipWithError("connect failed");
    return;
  }
  const std::string payload(32, 'p');
  for (auto _ : state) {
    if (!(*client)->Send(payload, true).ok()) {
      state.SkipWithError("send failed");
      break;
    }
    auto ev = (*client)->Receive(std::chrono::seconds(10));
    if (!ev.ok()) {
      state.SkipWithError("receive failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_WsEcho32)->Threads(1)->Threads(4)->UseRealTime();

// Ping-pong driven entirely from the client's I/O thread (no blocking hand-offs): what
// the server side sustains for one connection.
class PingPongHandler final : public WsHandler {
 public:
  void OnMessage(std::string data, bool binary) override {
    if (--remaining_ <= 0) {
      std::lock_guard lock(mu_);
      done_ = true;
      cv_.notify_all();
      return;
    }
    if (auto conn = conn_.lock()) conn->Send(std::move(data), binary);
  }
  void OnClose(uint16_t, std::string) override {
    std::lock_guard lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void Start(std::shared_ptr<WsConnection> conn, int64_t count) {
    {
      std::lock_guard lock(mu_);
      done_ = false;
    }
    remaining_ = count;
    conn_ = conn;
    conn->Send(std::string(32, 'p'), true);
  }
  bool Wait() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; });
  }

 private:
  std::weak_ptr<WsConnection> conn_;
  std::atomic<int64_t> remaining_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

void BM_WsEcho32Async(benchmark::State& state) {
  BenchServer& s = Server();
  IoRuntime client_runtime(1);
  auto handler = std::make_shared<PingPongHandler>();
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<std::shared_ptr<WsConnection>>> result;
  WsConnectOptions options;
  options.url = "ws://127.0.0.1:" + std::to_string(s.server->port()) + "/ws";
  ConnectWebSocket(client_runtime, options, handler,
                   [&](Result<std::shared_ptr<WsConnection>> conn, HttpResponse) {
                     std::lock_guard lock(mu);
                     result.emplace(std::move(conn));
                     cv.notify_all();
                   });
  {
    std::unique_lock lock(mu);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return result.has_value(); });
  }
  if (!result || !result->ok()) {
    state.SkipWithError("connect failed");
    return;
  }
  std::shared_ptr<WsConnection> conn = **result;
  constexpr int64_t kBatch = 1000;
  int64_t total = 0;
  for (auto _ : state) {
    handler->Start(conn, kBatch);
    if (!handler->Wait()) {
      state.SkipWithError("echo stalled");
      break;
    }
    total += kBatch;
  }
  conn->Close(1000, "");
  conn.reset();
  state.SetItemsProcessed(total);
}
BENCHMARK(BM_WsEcho32Async)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace keel::net
