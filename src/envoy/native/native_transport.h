// NativeTransport: the EnvoyClient's socket in a native process — a keel::net WebSocket
// client (ws:// only) whose events are handed to the client on ONE executor.
//
// keel::net reports connection events on I/O threads; the EnvoyClient is single-threaded.
// So every OnOpen / OnFrame / OnClosed is posted onto the executor given at construction
// (the client's strand), and everything else that touches the client (its Clock timers,
// the host's calls) must run there too: use StrandClock for timers when the runtime has
// more than one thread. After a reconnect, late events of the previous connection are
// dropped (each Connect starts a new generation).
//
// Wiring (the two reference each other):
//   NativeTransport transport(runtime, *strand);
//   StrandClock clock(runtime.clock(), *strand);
//   EnvoyClient client(config, clock, random, transport, host);
//   transport.set_client(&client);
//   strand->Post([&] { client.Start(); });
//
// Thread-safety: Connect/Send/Close and set_client are meant for the executor (they are
// internally locked, so other threads are safe too). Destroy the transport on the executor
// or after the runtime stopped, and before the client it points to goes away — events
// still queued on the executor then find the transport gone and do nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "envoy/envoy_client.h"
#include "net/client.h"
#include "net/http_server.h"
#include "net/io_runtime.h"

namespace keel::envoy {

class NativeTransport final : public Transport {
 public:
  // `options` supplies everything but the URL and subprotocols (extra headers, limits,
  // handshake timeout). `hold_outputs`: ask the engine to hold the actors' answers until
  // their writes are durable (header `x-keel-hold-outputs: 1`); the client learns from
  // OnOpen whether the engine confirmed. `runtime` and `executor` must outlive the transport.
  NativeTransport(net::IoRuntime& runtime, Executor& executor, net::WsConnectOptions options = {},
                  bool hold_outputs = true);
  ~NativeTransport() override;
  NativeTransport(const NativeTransport&) = delete;
  NativeTransport& operator=(const NativeTransport&) = delete;

  // The client events go to; nullptr detaches (events are then dropped).
  void set_client(EnvoyClient* client);
  // Connect to `server`, an engine in this process (its HTTP handler), without a socket
  // (net::ConnectInProcess) instead of to the URL's host; the URL still gives the path and
  // query. Call before the first Connect.
  void set_in_process_server(net::HttpServer::Handler server) {
    in_process_server_ = std::move(server);
  }

  // Transport
  void Connect(const std::string& url, const std::vector<std::string>& subprotocols) override;
  void Send(Bytes frame) override;
  void Close(uint16_t code, const std::string& reason) override;

  struct Shared;  // state shared with in-flight callbacks (public for the .cc's helpers)

 private:
  net::IoRuntime& runtime_;
  net::WsConnectOptions options_;
  const bool hold_outputs_;
  net::HttpServer::Handler in_process_server_;
  std::shared_ptr<Shared> shared_;
};

// A Clock whose timer callbacks run on `executor` instead of the inner clock's threads, so
// a single-threaded core can use IoRuntime::clock() on a multi-threaded runtime.
// Schedule/Cancel must be called on the executor; Cancel is then exact (true exactly when
// the callback will not run).
class StrandClock final : public Clock {
 public:
  // `inner` and `executor` must outlive this clock.
  StrandClock(Clock& inner, Executor& executor);
  ~StrandClock() override;

  MonoTime MonotonicNow() const override { return inner_.MonotonicNow(); }
  int64_t SystemNowMs() const override { return inner_.SystemNowMs(); }
  TimerId Schedule(MonoTime deadline, std::function<void()> callback) override;
  bool Cancel(TimerId id) override;

 private:
  struct Timers;
  Clock& inner_;
  Executor& executor_;
  std::shared_ptr<Timers> timers_;
};

}  // namespace keel::envoy
