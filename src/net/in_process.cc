#include "net/in_process.h"

#include <deque>
#include <mutex>
#include <string>
#include <utility>

#include "base/log.h"
#include "net/internal/close_frame.h"

namespace keel::net {

namespace {

constexpr std::string_view kComponent = "net.in_process";
const std::string kRemoteAddress = "in-process";

// One event for a handler: a message, or the close (always the last one).
struct Event {
  bool close = false;
  bool binary = false;
  uint16_t code = 0;
  std::string data;  // the message, or the close reason
};

// The events of ONE side's handler, delivered one at a time in push order and never
// re-entrantly: a push while nothing is being delivered delivers on the pushing thread;
// otherwise the thread already delivering takes it when its current event returns. The
// close is delivered last; the handler is released with it and later events are dropped.
class Inbox {
 public:
  explicit Inbox(bool paused) : paused_(paused) {}

  void SetHandler(std::shared_ptr<WsHandler> handler) {
    std::lock_guard lock(mu_);
    handler_ = std::move(handler);
  }

  void Push(Event event) {
    std::unique_lock lock(mu_);
    if (finished_) return;
    queue_.push_back(std::move(event));
    if (delivering_ || paused_) return;
    Drain(lock);
  }

  // Events pushed while paused wait until this call, which delivers them.
  void Resume() {
    std::unique_lock lock(mu_);
    paused_ = false;
    if (!delivering_ && !queue_.empty()) Drain(lock);
  }

 private:
  void Drain(std::unique_lock<std::mutex>& lock) {
    delivering_ = true;
    while (!queue_.empty()) {
      Event event = std::move(queue_.front());
      queue_.pop_front();
      std::shared_ptr<WsHandler> handler = event.close ? std::move(handler_) : handler_;
      if (event.close) {
        finished_ = true;
        queue_.clear();
      }
      lock.unlock();
      if (handler != nullptr) {
        if (event.close) {
          handler->OnClose(event.code, std::move(event.data));
        } else {
          handler->OnMessage(std::move(event.data), event.binary);
        }
      }
      handler.reset();  // may be the last reference: not under the lock
      lock.lock();
    }
    delivering_ = false;
  }

  std::mutex mu_;
  std::deque<Event> queue_;             // guarded by mu_
  std::shared_ptr<WsHandler> handler_;  // guarded by mu_
  bool delivering_ = false;             // guarded by mu_
  bool paused_;                         // guarded by mu_
  bool finished_ = false;               // guarded by mu_
};

// The two directions of one connection.
struct Pipe {
  explicit Pipe(size_t max_message) : max_message(max_message) {}

  const size_t max_message;
  // The client's handler hears nothing before its `done` returned.
  Inbox to_client{/*paused=*/true};
  Inbox to_server{/*paused=*/false};
  std::mutex mu;
  bool closed = false;  // guarded by mu

  void Send(bool from_client, std::string data, bool binary) {
    {
      std::lock_guard lock(mu);
      if (closed) return;
    }
    if (data.size() > max_message) {
      // What a socket peer does with an over-large message.
      End(1009, "message too big");
      return;
    }
    (from_client ? to_server : to_client).Push(Event{false, binary, 0, std::move(data)});
  }

  // Both handlers get OnClose(code, reason) after the messages already sent. First call
  // wins.
  void End(uint16_t code, std::string reason) {
    {
      std::lock_guard lock(mu);
      if (closed) return;
      closed = true;
    }
    to_server.Push(Event{true, false, code, reason});
    to_client.Push(Event{true, false, code, std::move(reason)});
  }
};

// One side's WsConnection. Dropping the last reference to a side that was not closed ends
// the connection like a socket that died (1006, no reason).
class PipeEnd final : public WsConnection {
 public:
  PipeEnd(std::shared_ptr<Pipe> pipe, bool client) : pipe_(std::move(pipe)), client_(client) {}
  ~PipeEnd() override { pipe_->End(1006, ""); }

  void Send(std::string data, bool binary) override {
    pipe_->Send(client_, std::move(data), binary);
  }
  void Close(uint16_t code, std::string reason) override {
    internal::MakeSendableClose(code, reason);
    pipe_->End(code, std::move(reason));
  }
  const std::string& remote_address() const override { return kRemoteAddress; }

 private:
  std::shared_ptr<Pipe> pipe_;
  const bool client_;
};

using DoneFn = std::function<void(Result<std::shared_ptr<WsConnection>>, HttpResponse)>;

// The upgrade request as the server's handler sees it. Its answer completes the client's
// connect: AcceptWebSocket opens the pipe, any other answer refuses the upgrade.
class UpgradeExchange final : public HttpExchange {
 public:
  UpgradeExchange(IoRuntime& runtime, HttpRequest request,
                  std::shared_ptr<WsHandler> client_handler, size_t max_message, DoneFn done)
      : runtime_(runtime),
        request_(std::move(request)),
        client_handler_(std::move(client_handler)),
        max_message_(max_message),
        done_(std::move(done)) {}

  ~UpgradeExchange() override {
    if (!answered_) Refuse(HttpResponse{500, {}, ""}, "the server dropped the upgrade unanswered");
  }

  const HttpRequest& request() const override { return request_; }
  HttpRequest& mutable_request() override { return request_; }
  bool IsWebSocketUpgrade() const override { return true; }

  void Respond(HttpResponse response) override {
    if (!TakeAnswer()) return;
    Refuse(std::move(response), "");
  }
  void StartStream(int status, Headers headers) override {
    if (!TakeAnswer()) return;
    std::lock_guard lock(mu_);
    stream_ = HttpResponse{status, std::move(headers), ""};
  }
  void WriteChunk(std::string data) override {
    std::lock_guard lock(mu_);
    if (stream_.has_value()) stream_->body += data;
  }
  void FinishStream() override {
    std::optional<HttpResponse> response;
    {
      std::lock_guard lock(mu_);
      response = std::exchange(stream_, std::nullopt);
    }
    if (response.has_value()) Refuse(std::move(*response), "");
  }
  void OnPeerGone(std::function<void()>) override {}  // the client cannot leave before the answer

  std::shared_ptr<WsConnection> AcceptWebSocket(std::string subprotocol,
                                                std::shared_ptr<WsHandler> handler,
                                                Headers headers) override {
    if (!TakeAnswer()) return nullptr;
    auto pipe = std::make_shared<Pipe>(max_message_);
    pipe->to_server.SetHandler(std::move(handler));
    pipe->to_client.SetHandler(client_handler_);
    HttpResponse handshake{101, std::move(headers), ""};
    if (!subprotocol.empty()) handshake.headers.emplace_back("Sec-WebSocket-Protocol", subprotocol);
    auto client_end = std::make_shared<PipeEnd>(pipe, /*client=*/true);
    std::shared_ptr<WsConnection> server_end = std::make_shared<PipeEnd>(pipe, /*client=*/false);
    Complete([done = done_, pipe, client_end = std::move(client_end),
              handshake = std::move(handshake)]() mutable {
      done(std::shared_ptr<WsConnection>(std::move(client_end)), std::move(handshake));
      pipe->to_client.Resume();
    });
    return server_end;
  }

  // Called on a runtime thread right after the server's handler returned: an answer given
  // inside it completes the connect here, without another hand-off.
  void HandlerReturned() {
    std::function<void()> completion;
    {
      std::lock_guard lock(mu_);
      in_handler_ = false;
      completion = std::move(completion_);
    }
    if (completion) completion();
  }

 private:
  bool TakeAnswer() {
    std::lock_guard lock(mu_);
    if (answered_) {
      KEEL_LOG(kWarn, kComponent, "a second answer to an in-process upgrade was ignored");
      return false;
    }
    answered_ = true;
    return true;
  }

  void Refuse(HttpResponse response, const std::string& why) {
    std::string text =
        "the in-process server answered the upgrade with HTTP " + std::to_string(response.status);
    if (!why.empty()) text += " (" + why + ")";
    Complete([done = done_, text = std::move(text), response = std::move(response)]() mutable {
      done(Error{"net", "handshake_failed", text}, std::move(response));
    });
  }

  // Runs `completion` once the handler call has returned: then, on its thread, when the
  // answer came inside it; otherwise (an answer from elsewhere, later) on a runtime thread.
  void Complete(std::function<void()> completion) {
    {
      std::lock_guard lock(mu_);
      if (in_handler_) {
        completion_ = std::move(completion);
        return;
      }
    }
    runtime_.Post(std::move(completion));
  }

  IoRuntime& runtime_;
  HttpRequest request_;
  std::shared_ptr<WsHandler> client_handler_;
  const size_t max_message_;
  const DoneFn done_;
  std::mutex mu_;
  bool answered_ = false;               // guarded by mu_
  bool in_handler_ = true;              // guarded by mu_
  std::function<void()> completion_;    // guarded by mu_
  std::optional<HttpResponse> stream_;  // guarded by mu_
};

}  // namespace

void ConnectInProcess(IoRuntime& runtime, HttpServer::Handler server, WsConnectOptions options,
                      std::shared_ptr<WsHandler> handler, DoneFn done) {
  auto url = ParseUrl(options.url);
  if (!url.has_value()) {
    runtime.Post([done = std::move(done), error = url.error()] { done(error, HttpResponse{}); });
    return;
  }
  HttpRequest request;
  request.method = "GET";
  request.target = url->target;
  request.headers = std::move(options.headers);
  request.headers.emplace_back("Host", url->host);
  request.headers.emplace_back("Connection", "Upgrade");
  request.headers.emplace_back("Upgrade", "websocket");
  std::string protocols;
  for (const auto& p : options.subprotocols) protocols += (protocols.empty() ? "" : ", ") + p;
  if (!protocols.empty()) request.headers.emplace_back("Sec-WebSocket-Protocol", protocols);
  request.remote_address = kRemoteAddress;
  // Never inside this call: the handler runs on a runtime thread, like a socket's would.
  runtime.Post([&runtime, server = std::move(server), request = std::move(request),
                handler = std::move(handler), max = options.max_message,
                done = std::move(done)]() mutable {
    auto exchange = std::make_shared<UpgradeExchange>(runtime, std::move(request),
                                                      std::move(handler), max, std::move(done));
    server(exchange);
    exchange->HandlerReturned();
  });
}

}  // namespace keel::net
