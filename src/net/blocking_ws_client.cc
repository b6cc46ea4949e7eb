#include "net/blocking_ws_client.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

namespace keel::net {

namespace {
constexpr auto kCloseWait = std::chrono::seconds(2);
}  // namespace

// Events from the I/O thread, consumed by Receive.
struct BlockingWsClient::Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> events;
  bool closed = false;          // OnClose seen
  bool closed_returned = false; // Receive returned Closed
  bool close_requested = false;
  // Connect result.
  bool connect_done = false;
  std::optional<Result<std::shared_ptr<WsConnection>>> connect_result;
  HttpResponse handshake;
};

namespace {

class QueueHandler final : public WsHandler {
 public:
  explicit QueueHandler(std::shared_ptr<BlockingWsClient::Shared> shared)
      : shared_(std::move(shared)) {}

  // WsHandler
  void OnMessage(std::string data, bool binary) override {
    std::lock_guard lock(shared_->mu);
    shared_->events.emplace_back(BlockingWsClient::Message{std::move(data), binary});
    shared_->cv.notify_all();
  }
  void OnClose(uint16_t code, std::string reason) override {
    std::lock_guard lock(shared_->mu);
    shared_->events.emplace_back(BlockingWsClient::Closed{code, std::move(reason)});
    shared_->closed = true;
    shared_->cv.notify_all();
  }

 private:
  std::shared_ptr<BlockingWsClient::Shared> shared_;
};

}  // namespace

Result<std::unique_ptr<BlockingWsClient>> BlockingWsClient::Connect(
    WsConnectOptions options, std::chrono::milliseconds timeout, HttpResponse* failed_handshake,
    HttpResponse* handshake) {
  std::unique_ptr<BlockingWsClient> client(new BlockingWsClient());
  client->runtime_ = std::make_unique<IoRuntime>(1);
  client->shared_ = std::make_shared<Shared>();
  auto shared = client->shared_;
  if (options.handshake_timeout > timeout) options.handshake_timeout = timeout;
  ConnectWebSocket(*client->runtime_, std::move(options), std::make_shared<QueueHandler>(shared),
                   [shared](Result<std::shared_ptr<WsConnection>> conn, HttpResponse response) {
                     std::lock_guard lock(shared->mu);
                     shared->connect_result.emplace(std::move(conn));
                     shared->handshake = std::move(response);
                     shared->connect_done = true;
                     shared->cv.notify_all();
                   });
  std::unique_lock lock(shared->mu);
  if (!shared->cv.wait_for(lock, timeout + std::chrono::milliseconds(500),
                           [&] { return shared->connect_done; })) {
    return Error("net", "timeout", "WebSocket connect timed out");
  }
  if (!shared->connect_result->ok()) {
    Error error = shared->connect_result->error();
    if (failed_handshake != nullptr) *failed_handshake = std::move(shared->handshake);
    return error;
  }
  if (handshake != nullptr) *handshake = shared->handshake;
  client->conn_ = std::move(*shared->connect_result).value();
  shared->connect_result.reset();
  lock.unlock();
  return client;
}

BlockingWsClient::~BlockingWsClient() {
  if (conn_ && shared_) {
    conn_->Close(1000, "");
    std::unique_lock lock(shared_->mu);
    shared_->cv.wait_for(lock, kCloseWait, [&] { return shared_->closed; });
  }
  conn_.reset();
  runtime_.reset();  // stops the I/O thread; pending handlers are destroyed
}

Status BlockingWsClient::Send(std::string data, bool binary) {
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->closed || shared_->close_requested) {
      return Error("net", "closed", "WebSocket is closed");
    }
  }
  conn_->Send(std::move(data), binary);
  return OkStatus();
}

Result<BlockingWsClient::Event> BlockingWsClient::Receive(std::chrono::milliseconds timeout) {
  std::unique_lock lock(shared_->mu);
  if (!shared_->cv.wait_for(lock, timeout, [&] {
        return !shared_->events.empty() || shared_->closed_returned;
      })) {
    return Error("net", "timeout", "no WebSocket event within the timeout");
  }
  if (shared_->events.empty()) return Error("net", "closed", "WebSocket is closed");
  Event event = std::move(shared_->events.front());
  shared_->events.pop_front();
  if (std::holds_alternative<Closed>(event)) shared_->closed_returned = true;
  return event;
}

void BlockingWsClient::Close(uint16_t code, std::string reason) {
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->close_requested) return;
    shared_->close_requested = true;
  }
  conn_->Close(code, std::move(reason));
}

}  // namespace keel::net
