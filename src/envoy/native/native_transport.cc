#include "envoy/native/native_transport.h"

#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "net/in_process.h"

namespace keel::envoy {

// Everything a connection callback may touch after the transport is gone.
struct NativeTransport::Shared {
  std::mutex mu;
  Executor* executor = nullptr;
  EnvoyClient* client = nullptr;  // nullptr: detached or destroyed
  // Bumped by every Connect; events of older connections are dropped.
  uint64_t generation = 0;
  std::shared_ptr<net::WsConnection> conn;
  // Close asked for while the connect was still in flight.
  std::optional<std::pair<uint16_t, std::string>> close_requested;

  // Runs `fn(client)` on the executor if connection `gen` is still the current one.
  template <typename Fn>
  static void PostIfCurrent(const std::shared_ptr<Shared>& shared, uint64_t gen, Fn fn) {
    Executor* executor = nullptr;
    {
      std::lock_guard lock(shared->mu);
      executor = shared->executor;
    }
    executor->Handoff([shared, gen, fn = std::move(fn)]() mutable {
      EnvoyClient* client = nullptr;
      {
        std::lock_guard lock(shared->mu);
        if (gen != shared->generation) return;
        client = shared->client;
      }
      // Called without the lock: the client calls back into Send/Close.
      if (client != nullptr) fn(*shared, *client);
    });
  }
};

namespace {

using protocol::envoy::kHoldOutputsHeader;

class Handler final : public net::WsHandler {
 public:
  Handler(std::shared_ptr<NativeTransport::Shared> shared, uint64_t gen)
      : shared_(std::move(shared)), gen_(gen) {}

  void OnMessage(std::string data, bool binary) override {
    if (!binary) return;  // only binary frames carry protocol messages (§3.1)
    NativeTransport::Shared::PostIfCurrent(
        shared_, gen_, [data = std::move(data)](NativeTransport::Shared&, EnvoyClient& client) {
          client.OnFrame(AsBytes(data));
        });
  }

  void OnClose(uint16_t code, std::string reason) override {
    const uint64_t gen = gen_;
    NativeTransport::Shared::PostIfCurrent(
        shared_, gen_,
        [code, gen, reason = std::move(reason)](NativeTransport::Shared& shared,
                                                EnvoyClient& client) {
          {
            std::lock_guard lock(shared.mu);
            if (shared.generation == gen) shared.conn.reset();
          }
          client.OnClosed(code, reason);
        });
  }

 private:
  std::shared_ptr<NativeTransport::Shared> shared_;
  uint64_t gen_;
};

}  // namespace

NativeTransport::NativeTransport(net::IoRuntime& runtime, Executor& executor,
                                 net::WsConnectOptions options, bool hold_outputs)
    : runtime_(runtime),
      options_(std::move(options)),
      hold_outputs_(hold_outputs),
      shared_(std::make_shared<Shared>()) {
  shared_->executor = &executor;
}

NativeTransport::~NativeTransport() {
  std::shared_ptr<net::WsConnection> conn;
  {
    std::lock_guard lock(shared_->mu);
    shared_->client = nullptr;
    ++shared_->generation;  // whatever is still in flight is stale now
    conn = std::move(shared_->conn);
  }
  if (conn != nullptr) conn->Close(1000, "envoy.shutdown");
}

void NativeTransport::set_client(EnvoyClient* client) {
  std::lock_guard lock(shared_->mu);
  shared_->client = client;
}

void NativeTransport::Connect(const std::string& url,
                              const std::vector<std::string>& subprotocols) {
  uint64_t gen = 0;
  std::shared_ptr<net::WsConnection> old;
  {
    std::lock_guard lock(shared_->mu);
    gen = ++shared_->generation;
    old = std::move(shared_->conn);
    shared_->close_requested.reset();
  }
  if (old != nullptr) old->Close(1000, "envoy.reconnect");

  net::WsConnectOptions options = options_;
  options.url = url;
  options.subprotocols = subprotocols;
  if (hold_outputs_) options.headers.emplace_back(std::string(kHoldOutputsHeader), "1");
  auto shared = shared_;
  auto done =
      [shared, gen](Result<std::shared_ptr<net::WsConnection>> conn, net::HttpResponse handshake) {
        if (!conn.has_value()) {
          std::string text = conn.error().ToString();
          if (handshake.status != 0 && handshake.status != 101) {
            text += " (HTTP " + std::to_string(handshake.status) + ")";
          }
          Shared::PostIfCurrent(
              shared, gen, [text](Shared&, EnvoyClient& client) { client.OnClosed(1006, text); });
          return;
        }
        std::optional<std::pair<uint16_t, std::string>> close;
        bool current = false;
        {
          std::lock_guard lock(shared->mu);
          current = gen == shared->generation && shared->client != nullptr;
          if (current) {
            shared->conn = *conn;
            close = std::move(shared->close_requested);
            shared->close_requested.reset();
          }
        }
        if (!current) {
          (*conn)->Close(1000, "envoy.stale_connection");
          return;
        }
        if (close.has_value()) {
          // The client gave up on this connection while it was connecting; the handler's
          // OnClose reports the end.
          (*conn)->Close(close->first, close->second);
          return;
        }
        // Held outputs only when the engine confirmed them on this very handshake.
        const bool held = net::FindHeader(handshake.headers, kHoldOutputsHeader) == "1";
        Shared::PostIfCurrent(shared, gen,
                              [held](Shared&, EnvoyClient& client) { client.OnOpen(held); });
      };
  auto handler = std::make_shared<Handler>(shared_, gen);
  if (in_process_server_ != nullptr) {
    net::ConnectInProcess(runtime_, in_process_server_, std::move(options), std::move(handler),
                          std::move(done));
  } else {
    net::ConnectWebSocket(runtime_, std::move(options), std::move(handler), std::move(done));
  }
}

void NativeTransport::Send(Bytes frame) {
  std::shared_ptr<net::WsConnection> conn;
  {
    std::lock_guard lock(shared_->mu);
    conn = shared_->conn;
  }
  if (conn != nullptr) conn->Send(std::string(AsString(frame)), /*binary=*/true);
}

void NativeTransport::Close(uint16_t code, const std::string& reason) {
  std::shared_ptr<net::WsConnection> conn;
  {
    std::lock_guard lock(shared_->mu);
    conn = shared_->conn;
    if (conn == nullptr) shared_->close_requested.emplace(code, reason);
  }
  if (conn != nullptr) conn->Close(code, reason);
}

// ---- StrandClock ----

struct StrandClock::Timers {
  uint64_t next_id = 1;
  struct Entry {
    TimerId inner{};
    std::function<void()> callback;
  };
  std::map<uint64_t, Entry> pending;
};

StrandClock::StrandClock(Clock& inner, Executor& executor)
    : inner_(inner), executor_(executor), timers_(std::make_shared<Timers>()) {}

StrandClock::~StrandClock() {
  for (auto& [id, entry] : timers_->pending) inner_.Cancel(entry.inner);
  timers_->pending.clear();
}

TimerId StrandClock::Schedule(MonoTime deadline, std::function<void()> callback) {
  const uint64_t id = timers_->next_id++;
  std::weak_ptr<Timers> weak = timers_;
  Executor* executor = &executor_;
  auto& entry = timers_->pending[id];
  entry.callback = std::move(callback);
  entry.inner = inner_.Schedule(deadline, [weak, executor, id] {
    executor->Post([weak, id] {
      auto timers = weak.lock();
      if (timers == nullptr) return;
      auto it = timers->pending.find(id);
      if (it == timers->pending.end()) return;  // cancelled after the inner timer fired
      auto callback = std::move(it->second.callback);
      timers->pending.erase(it);
      callback();
    });
  });
  return TimerId{id};
}

bool StrandClock::Cancel(TimerId id) {
  auto it = timers_->pending.find(static_cast<uint64_t>(id));
  if (it == timers_->pending.end()) return false;
  inner_.Cancel(it->second.inner);
  timers_->pending.erase(it);
  return true;
}

}  // namespace keel::envoy
