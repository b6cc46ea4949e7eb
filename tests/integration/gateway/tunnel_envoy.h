// TunnelEnvoy: a minimal asynchronous envoy for gateway tests and the engine benchmark.
//
// It connects to an engine's /envoys/connect on its own one-thread IoRuntime, speaks
// protocol v4 with Keel's codec and reacts from the socket thread, per a policy that may
// change at any time:
//   * pings are always answered with a pong (never recorded);
//   * CommandStartActor → EventActorStateUpdate{Running} (answer_start);
//   * CommandStopActor  → EventActorStateUpdate{Stopped{OK}} (answer_stop);
//   * ToEnvoyRequestStart → ToRivetResponseStart echo (echo_http): status 200, the request
//     body as body, and headers x-echo-method, x-echo-path and x-echo-h-<name> for every
//     request header (names lower-cased);
//   * ToEnvoyWebSocketOpen → ToRivetWebSocketOpen (accept_ws).
// Everything else (and, when `record` is set, everything above too) is appended to a log
// that tests wait on: commands are split into one log entry per CommandWrapper.
// Event indices per (actor, generation) start at 0 (envoy-protocol.md §4.1).
// Thread-safety: every method may be called from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/client.h"
#include "net/http.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"

namespace keel::testing {

namespace envoy_latest = protocol::envoy::latest;

struct TunnelEnvoyPolicy {
  bool answer_start = true;
  bool answer_stop = true;
  bool echo_http = true;
  bool accept_ws = true;
  bool record = true;
};

// The connection's handler and the envoy's state; owned through TunnelEnvoy.
class TunnelEnvoyCore final : public net::WsHandler {
 public:
  explicit TunnelEnvoyCore(TunnelEnvoyPolicy policy) : policy_(policy) {}

  void SetPolicy(TunnelEnvoyPolicy policy) {
    std::lock_guard lock(mu_);
    policy_ = policy;
  }
  TunnelEnvoyPolicy policy() const {
    std::lock_guard lock(mu_);
    return policy_;
  }

  // Closes the connection (1000) and waits up to `timeout` for OnClose.
  void Close(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::shared_ptr<net::WsConnection> conn;
    {
      std::lock_guard lock(mu_);
      conn = conn_;
    }
    if (conn == nullptr) return;  // never connected, or already closed
    conn->Close(1000, "");
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return closed_; });
  }

  bool closed() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  uint16_t close_code() const {
    std::lock_guard lock(mu_);
    return close_code_;
  }

  void Send(const envoy_latest::ToRivet& msg) {
    Bytes out;
    auto encoded = protocol::envoy::EncodeToRivet(msg, 4, out);
    if (!encoded.has_value()) return;
    SendRaw(std::string(out.begin(), out.end()));
  }
  void SendRaw(std::string bytes) {
    std::shared_ptr<net::WsConnection> conn;
    {
      std::lock_guard lock(mu_);
      conn = conn_;
    }
    if (conn != nullptr) conn->Send(std::move(bytes), /*binary=*/true);
  }

  void SendTunnel(const envoy_latest::MessageId& id, uint16_t index,
                  envoy_latest::ToRivetTunnelMessageKind kind) {
    envoy_latest::ToRivetTunnelMessage msg;
    msg.message_id = id;
    msg.message_id.message_index = index;
    msg.message_kind = std::move(kind);
    Send(envoy_latest::ToRivet{std::move(msg)});
  }

  // The next event index for (actor, generation), starting at 0.
  int64_t NextEventIndex(const std::string& actor, uint32_t generation) {
    std::lock_guard lock(mu_);
    return event_index_[{actor, generation}]++;
  }

  void SendState(const std::string& actor, uint32_t generation,
                 envoy_latest::ActorState state) {
    envoy_latest::EventWrapper w;
    w.checkpoint.actor_id = actor;
    w.checkpoint.generation = generation;
    w.checkpoint.index = NextEventIndex(actor, generation);
    w.inner = envoy_latest::EventActorStateUpdate{std::move(state)};
    Send(envoy_latest::ToRivet{envoy_latest::ToRivetEvents{{std::move(w)}}});
  }
  void SendRunning(const std::string& actor, uint32_t generation) {
    SendState(actor, generation, envoy_latest::ActorStateRunning{});
  }
  void SendStopped(const std::string& actor, uint32_t generation) {
    SendState(actor, generation, envoy_latest::ActorStateStopped{});
  }

  // Waits for the first logged message matching `pred`, removes and returns it.
  std::optional<envoy_latest::ToEnvoy> WaitFor(
      const std::function<bool(const envoy_latest::ToEnvoy&)>& pred,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mu_);
    std::optional<envoy_latest::ToEnvoy> found;
    cv_.wait_for(lock, timeout, [&] {
      for (auto it = log_.begin(); it != log_.end(); ++it) {
        if (pred(*it)) {
          found = std::move(*it);
          log_.erase(it);
          return true;
        }
      }
      return false;
    });
    return found;
  }

  // The next command of kind T (CommandStartActor / CommandStopActor), as its wrapper.
  template <typename T>
  std::optional<envoy_latest::CommandWrapper> WaitCommand(
      std::chrono::milliseconds timeout = std::chrono::seconds(10),
      const std::string& actor = "") {
    auto msg = WaitFor(
        [&](const envoy_latest::ToEnvoy& m) {
          const auto* c = m.get_if<envoy_latest::ToEnvoyCommands>();
          return c != nullptr && c->value.size() == 1 && c->value[0].inner.is<T>() &&
                 (actor.empty() || c->value[0].checkpoint.actor_id == actor);
        },
        timeout);
    if (!msg.has_value()) return std::nullopt;
    return msg->template get_if<envoy_latest::ToEnvoyCommands>()->value[0];
  }

  // The next tunnel message whose kind is T.
  template <typename T>
  std::optional<envoy_latest::ToEnvoyTunnelMessage> WaitTunnel(
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto msg = WaitFor(
        [](const envoy_latest::ToEnvoy& m) {
          const auto* t = m.get_if<envoy_latest::ToEnvoyTunnelMessage>();
          return t != nullptr && t->message_kind.is<T>();
        },
        timeout);
    if (!msg.has_value()) return std::nullopt;
    return std::move(*msg->template get_if<envoy_latest::ToEnvoyTunnelMessage>());
  }

  // Logged tunnel messages of kind T right now (not removed).
  template <typename T>
  size_t CountTunnel() const {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(log_.begin(), log_.end(), [](const auto& m) {
      const auto* t = m.template get_if<envoy_latest::ToEnvoyTunnelMessage>();
      return t != nullptr && t->message_kind.template is<T>();
    }));
  }

  // Frames received (all kinds, pings included) and tunnel RequestStarts answered.
  uint64_t frames_received() const { return frames_.load(std::memory_order_relaxed); }
  uint64_t kv_responses() const { return kv_responses_.load(std::memory_order_relaxed); }

  // Called (socket thread) for every KV response; for the frame benchmark.
  void OnKvResponse(std::function<void(const envoy_latest::ToEnvoyKvResponse&)> fn) {
    std::lock_guard lock(mu_);
    on_kv_ = std::move(fn);
  }

  // net::WsHandler
  void OnMessage(std::string data, bool binary) override {
    if (!binary) return;
    frames_.fetch_add(1, std::memory_order_relaxed);
    ByteView bytes(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    auto decoded = protocol::envoy::DecodeToEnvoy(bytes, 4);
    if (!decoded.has_value()) return;
    envoy_latest::ToEnvoy& msg = *decoded;
    TunnelEnvoyPolicy policy = this->policy();
    if (const auto* ping = msg.get_if<envoy_latest::ToEnvoyPing>()) {
      Send(envoy_latest::ToRivet{envoy_latest::ToRivetPong{ping->ts}});
      return;
    }
    if (const auto* kv = msg.get_if<envoy_latest::ToEnvoyKvResponse>()) {
      kv_responses_.fetch_add(1, std::memory_order_relaxed);
      std::function<void(const envoy_latest::ToEnvoyKvResponse&)> fn;
      {
        std::lock_guard lock(mu_);
        fn = on_kv_;
      }
      if (fn) fn(*kv);
      if (!policy.record) return;
    }
    if (auto* commands = msg.get_if<envoy_latest::ToEnvoyCommands>()) {
      for (auto& w : commands->value) {
        if (w.inner.is<envoy_latest::CommandStartActor>() && policy.answer_start) {
          SendRunning(w.checkpoint.actor_id, w.checkpoint.generation);
        } else if (w.inner.is<envoy_latest::CommandStopActor>() && policy.answer_stop) {
          SendStopped(w.checkpoint.actor_id, w.checkpoint.generation);
        }
        Record(envoy_latest::ToEnvoy{envoy_latest::ToEnvoyCommands{{std::move(w)}}});
      }
      return;
    }
    if (const auto* tunnel = msg.get_if<envoy_latest::ToEnvoyTunnelMessage>()) {
      if (const auto* start = tunnel->message_kind.get_if<envoy_latest::ToEnvoyRequestStart>();
          start != nullptr && policy.echo_http) {
        envoy_latest::ToRivetResponseStart r;
        r.status = 200;
        r.headers.emplace_back("x-echo-method", start->method);
        r.headers.emplace_back("x-echo-path", start->path);
        for (const auto& [name, value] : start->headers) {
          std::string lower = name;
          std::transform(lower.begin(), lower.end(), lower.begin(),
                         [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
          r.headers.emplace_back("x-echo-h-" + lower, value);
        }
        r.body = start->body.value_or(Bytes{});
        SendTunnel(tunnel->message_id, 0, std::move(r));
        if (!policy.record) return;
      } else if (tunnel->message_kind.is<envoy_latest::ToEnvoyWebSocketOpen>() &&
                 policy.accept_ws) {
        SendTunnel(tunnel->message_id, 0, envoy_latest::ToRivetWebSocketOpen{false});
      }
    }
    if (policy.record || msg.is<envoy_latest::ToEnvoyInit>()) Record(std::move(msg));
  }

  void OnClose(uint16_t code, std::string) override {
    std::lock_guard lock(mu_);
    closed_ = true;
    close_code_ = code;
    conn_.reset();
    cv_.notify_all();
  }

  bool WaitInit(std::chrono::milliseconds timeout) {
    return WaitFor([](const envoy_latest::ToEnvoy& m) {
             return m.is<envoy_latest::ToEnvoyInit>();
           },
           timeout)
        .has_value();
  }

  void Record(envoy_latest::ToEnvoy msg) {
    std::lock_guard lock(mu_);
    log_.push_back(std::move(msg));
    cv_.notify_all();
  }

  void SetConnection(std::shared_ptr<net::WsConnection> conn) {
    std::lock_guard lock(mu_);
    conn_ = std::move(conn);
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<net::WsConnection> conn_;  // guarded by mu_
  TunnelEnvoyPolicy policy_;                 // guarded by mu_
  std::deque<envoy_latest::ToEnvoy> log_;    // guarded by mu_
  std::map<std::pair<std::string, uint32_t>, int64_t> event_index_;  // guarded by mu_
  std::function<void(const envoy_latest::ToEnvoyKvResponse&)> on_kv_;  // guarded by mu_
  bool closed_ = false;
  uint16_t close_code_ = 0;
  std::atomic<uint64_t> frames_{0};
  std::atomic<uint64_t> kv_responses_{0};
};

// Owns the envoy's runtime and its core; `->` reaches the core's methods. Movable.
class TunnelEnvoy {
 public:
  // Connects and waits for ToEnvoyInit; check ok() (error() says why not).
  static TunnelEnvoy Connect(const std::string& ws_base_url, const std::string& envoy_key,
                             TunnelEnvoyPolicy policy = {}, const std::string& pool = "default",
                             const std::string& ns = "default",
                             std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    TunnelEnvoy envoy;
    envoy.runtime_ = std::make_unique<net::IoRuntime>(1);
    envoy.core_ = std::make_shared<TunnelEnvoyCore>(policy);
    net::WsConnectOptions options;
    options.url = ws_base_url + "/envoys/connect?protocol_version=4&namespace=" + ns +
                  "&envoy_key=" + envoy_key + "&version=1&pool_name=" + pool;
    options.subprotocols = {"rivet"};
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      std::string failure;
    };
    auto wait = std::make_shared<Wait>();
    auto core = envoy.core_;
    net::ConnectWebSocket(
        *envoy.runtime_, options, core,
        [wait, core](Result<std::shared_ptr<net::WsConnection>> conn, net::HttpResponse) {
          std::lock_guard lock(wait->mu);
          if (conn.has_value()) {
            core->SetConnection(*conn);
          } else {
            wait->failure = conn.error().ToString();
          }
          wait->done = true;
          wait->cv.notify_all();
        });
    {
      std::unique_lock lock(wait->mu);
      if (!wait->cv.wait_for(lock, timeout, [&] { return wait->done; })) {
        wait->failure = "connect timed out";
      }
      envoy.error_ = wait->failure;
    }
    if (envoy.error_.empty() && !envoy.core_->WaitInit(timeout)) envoy.error_ = "no ToEnvoyInit";
    return envoy;
  }

  TunnelEnvoy() = default;
  TunnelEnvoy(TunnelEnvoy&&) = default;
  TunnelEnvoy& operator=(TunnelEnvoy&& other) {
    Reset();
    runtime_ = std::move(other.runtime_);
    core_ = std::move(other.core_);
    error_ = std::move(other.error_);
    return *this;
  }
  ~TunnelEnvoy() { Reset(); }

  bool ok() const { return core_ != nullptr && error_.empty(); }
  const std::string& error() const { return error_; }
  TunnelEnvoyCore* operator->() const { return core_.get(); }
  TunnelEnvoyCore& operator*() const { return *core_; }

 private:
  void Reset() {
    if (runtime_ == nullptr) return;
    if (core_ != nullptr) {
      core_->Close(std::chrono::milliseconds(2000));
      core_->SetConnection(nullptr);
    }
    runtime_->Stop();
    runtime_.reset();
    core_.reset();
  }

  std::unique_ptr<net::IoRuntime> runtime_;
  std::shared_ptr<TunnelEnvoyCore> core_;
  std::string error_;
};

}  // namespace keel::testing
