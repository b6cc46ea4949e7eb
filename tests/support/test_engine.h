// TestEngine: a whole keel-engine core in the test process — the Engine over a MemKvStore
// (or a RocksDB directory), its HTTP/WebSocket server on 127.0.0.1 port 0, and the I/O and
// worker runtimes — for integration tests and benchmarks. Restart() reopens the same
// storage (RocksDB) to test recovery. WithFaultyStore() puts a FaultyKvStore (over memory)
// under the engine, to inject storage faults and simulate OS crashes. Destruction stops
// everything it started.
#pragma once

#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <string>

#include "engine/core/engine.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"

namespace keel::testing {

class TestEngine {
 public:
  // `data_dir` empty → in-memory storage. `port` 0 → a free port.
  explicit TestEngine(engine::EngineOptions options = {}, std::string data_dir = "",
                      int io_threads = 2, int worker_threads = 2, uint16_t port = 0)
      : options_(std::move(options)), data_dir_(std::move(data_dir)) {
    workers_ = std::make_unique<net::IoRuntime>(worker_threads);
    io_ = std::make_unique<net::IoRuntime>(io_threads);
    Start(port);
  }

  ~TestEngine() { Stop(); }

  // An engine over FaultyKvStore(MemKvStore): faulty_store() reaches it.
  static std::unique_ptr<TestEngine> WithFaultyStore(engine::EngineOptions options = {}) {
    return std::unique_ptr<TestEngine>(new TestEngine(FaultyTag{}, std::move(options)));
  }
  // An engine over `store`, a test's own KvStore. Restart/RestartOnSamePort are not
  // available (the store is handed to the engine once).
  // `io_spin`: the I/O runtime's polling window (net::IoRuntime), as keel-engine's
  // --io-spin-us; none by default. `io_threads`: as keel-engine's --threads.
  static std::unique_ptr<TestEngine> WithStore(engine::EngineOptions options,
                                               std::unique_ptr<storage::KvStore> store,
                                               std::chrono::microseconds io_spin = {},
                                               int io_threads = 2) {
    return std::unique_ptr<TestEngine>(
        new TestEngine(std::move(options), std::move(store), io_spin, io_threads));
  }
  // Non-null only for WithFaultyStore. Valid while the engine runs (until Restart/Stop).
  storage::FaultyKvStore* faulty_store() { return faulty_; }

  // A fresh engine on the same storage directory (RocksDB only), like a process restart.
  void Restart() {
    Stop();
    workers_ = std::make_unique<net::IoRuntime>(2);
    io_ = std::make_unique<net::IoRuntime>(2);
    Start(0);
  }
  // Like Restart, listening on the same port again, so clients with a fixed endpoint can
  // reconnect (in-memory storage starts empty).
  void RestartOnSamePort() {
    const uint16_t port = this->port();
    Stop();
    workers_ = std::make_unique<net::IoRuntime>(2);
    io_ = std::make_unique<net::IoRuntime>(2);
    Start(port);
  }

  engine::Engine& engine() { return *engine_; }
  uint16_t port() const { return server_->port(); }
  std::string http_url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  std::string ws_url() const { return "ws://127.0.0.1:" + std::to_string(port()); }
  net::IoRuntime& io() { return *io_; }
  const engine::EngineOptions& options() const { return options_; }

 private:
  struct FaultyTag {};
  TestEngine(FaultyTag, engine::EngineOptions options)
      : options_(std::move(options)), faulty_wanted_(true) {
    workers_ = std::make_unique<net::IoRuntime>(2);
    io_ = std::make_unique<net::IoRuntime>(2);
    Start(0);
  }

  TestEngine(engine::EngineOptions options, std::unique_ptr<storage::KvStore> store,
             std::chrono::microseconds io_spin, int io_threads)
      : options_(std::move(options)), given_store_(std::move(store)) {
    workers_ = std::make_unique<net::IoRuntime>(2);
    io_ = std::make_unique<net::IoRuntime>(io_threads, io_spin);
    Start(0);
  }

  void Start(uint16_t port) {
    std::unique_ptr<storage::KvStore> store;
    if (given_store_ != nullptr) {
      store = std::move(given_store_);
    } else if (faulty_wanted_) {
      auto faulty = std::make_unique<storage::FaultyKvStore>(
          std::make_unique<storage::MemKvStore>());
      faulty_ = faulty.get();
      store = std::move(faulty);
    } else if (data_dir_.empty()) {
      store = std::make_unique<storage::MemKvStore>();
    } else {
      auto opened = storage::RocksDbKvStore::Open(data_dir_);
      if (!opened.has_value()) throw std::runtime_error(opened.error().ToString());
      store = std::move(*opened);
    }
    net::ServerOptions server_options;
    server_options.port = port;
    server_options.max_ws_message = options_.max_response_payload + (1 << 20);
    auto server = net::HttpServer::Start(
        *io_, server_options, [this](std::shared_ptr<net::HttpExchange> exchange) {
          engine_->Handle(std::move(exchange));
        });
    if (!server.has_value()) throw std::runtime_error(server.error().ToString());
    server_ = std::move(*server);
    engine::EngineOptions options = options_;
    options.public_url = http_url();
    auto engine = engine::Engine::Open(options, std::move(store), *io_, *workers_);
    if (!engine.has_value()) throw std::runtime_error(engine.error().ToString());
    engine_ = std::move(*engine);
  }

  void Stop() {
    if (engine_ == nullptr) return;
    server_->StopAccepting();
    io_->Stop();
    workers_->Stop();
    server_.reset();
    engine_.reset();
    faulty_ = nullptr;
    io_.reset();
    workers_.reset();
  }

  engine::EngineOptions options_;
  std::string data_dir_;
  bool faulty_wanted_ = false;
  storage::FaultyKvStore* faulty_ = nullptr;
  std::unique_ptr<storage::KvStore> given_store_;  // WithStore, until Start takes it
  std::unique_ptr<net::IoRuntime> workers_;
  std::unique_ptr<net::IoRuntime> io_;
  std::unique_ptr<net::HttpServer> server_;
  std::unique_ptr<engine::Engine> engine_;
};

}  // namespace keel::testing
