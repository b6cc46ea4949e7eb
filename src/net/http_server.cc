// HttpServer implementation. One coroutine per connection on its own strand:
//
//   read request ──▶ handler(exchange) ──▶ wait for answer events ──▶ write ──▶ (keep-alive) ─┐
//        ▲                                                                                     │
//        └─────────────────────────────────────────────────────────────────────────────────────┘
//
// The exchange turns Respond/StartStream/WriteChunk/FinishStream/AcceptWebSocket into events
// appended (on the connection strand) to Conn::events; `signal` is a timer used as a
// strand-local condition variable that the coroutine waits on while no event is queued.
// Answers made synchronously inside the handler are dispatched inline, so the common path
// costs no extra hop. A complete, small answer made on another thread while the coroutine
// waits for it is written to the socket by that thread (Conn::TryRespondDirect): the client
// gets it without waiting for the strand to wake; the coroutine learns of it afterwards.
#include "net/http_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "base/log.h"
#include "net/internal/runtime_access.h"
#include "net/internal/ws_session.h"

namespace keel::net {

HttpExchange::~HttpExchange() = default;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using internal::Strand;
using internal::StreamAcceptor;
using internal::StreamProtocol;

namespace {

constexpr std::string_view kComponent = "net.http";
// How long, and how much, we keep reading after refusing a request so the client sees our
// answer instead of a connection reset.
constexpr auto kDrainTimeout = std::chrono::seconds(2);
constexpr size_t kDrainLimit = size_t{16} << 20;

// --- answer events, produced by the exchange, consumed by the connection coroutine ---
struct EvRespond {
  HttpResponse response;
};
struct EvStreamHead {
  int status;
  Headers headers;
};
struct EvChunk {
  std::string data;
};
struct EvStreamEnd {};
struct EvAbort {};
// The answer was written to the socket directly (Conn::TryRespondDirect); `rest` is what
// the socket did not take at once, for the coroutine to write.
struct EvWritten {
  std::string rest;
  bool failed = false;  // the socket refused it: the connection is over
};
struct EvUpgrade {
  std::string subprotocol;
  Headers headers;
  std::shared_ptr<WsHandler> handler;
  std::shared_ptr<internal::WsSession> session;
};
using Event = std::variant<EvRespond, EvStreamHead, EvChunk, EvStreamEnd, EvAbort, EvUpgrade, EvWritten>;

// Answers up to this size may be written directly by the answering thread.
constexpr size_t kDirectAnswerLimit = 64 * 1024;

std::string ToString(beast::string_view sv) { return std::string(sv.data(), sv.size()); }
std::string_view ToView(beast::string_view sv) { return std::string_view(sv.data(), sv.size()); }

bool IsHttpParseError(const beast::error_code& ec) {
  return ec.category() == beast::http::make_error_code(http::error::bad_method).category();
}

unsigned ValidStatus(int status) {
  return status >= 100 && status <= 999 ? static_cast<unsigned>(status) : 500u;
}

// Computed by the server, or unsafe to write.
bool SkippedResponseHeader(std::string_view name, std::string_view value) {
  if (!IsValidHeaderField(name, value)) {
    LogWarn(kComponent, "invalid response header dropped", {{"name", name}});
    return true;
  }
  return EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "transfer-encoding");
}

// `head`: the answer to a HEAD request, written without its body (RFC 9110 §9.3.2) but with
// the Content-Length the GET would get.
http::response<http::string_body> MakeResponse(HttpResponse&& response, unsigned version,
                                               bool keep_alive, bool head) {
  http::response<http::string_body> res{static_cast<http::status>(ValidStatus(response.status)), version};
  for (auto& [name, value] : response.headers) {
    if (!SkippedResponseHeader(name, value)) res.insert(name, value);
  }
  res.body() = std::move(response.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  // The serializer writes the body it holds, whatever Content-Length says.
  if (head) res.body().clear();
  return res;
}

// What is wrong with the handshake fields of a WebSocket upgrade request (one that
// websocket::is_upgrade accepts: HTTP/1.1 GET with Connection: upgrade and Upgrade:
// websocket), as the status and reason of its refusal; nullopt when nothing is. The
// checks are those websocket::stream::accept makes, so that a request passing them is
// never refused later in Beast's own plain-text words, after a handler has taken it.
struct HandshakeFault {
  int status;
  std::string_view reason;
};
std::optional<HandshakeFault> FindHandshakeFault(const http::request<http::string_body>& req) {
  if (req.find(http::field::host) == req.end()) return HandshakeFault{400, "missing Host header"};
  const auto key = req.find(http::field::sec_websocket_key);
  if (key == req.end() || key->value().empty()) {
    return HandshakeFault{400, "missing Sec-WebSocket-Key header"};
  }
  // Beast keeps the key in a 24-byte buffer: the base64 of the 16 bytes RFC 6455 asks for.
  if (key->value().size() > 24) return HandshakeFault{400, "invalid Sec-WebSocket-Key header"};
  const auto version = req.find(http::field::sec_websocket_version);
  if (version == req.end()) return HandshakeFault{400, "missing Sec-WebSocket-Version header"};
  if (version->value() != "13") {
    return HandshakeFault{426, "unsupported Sec-WebSocket-Version (only 13 is supported)"};
  }
  return std::nullopt;
}

// The server's own answer to a request it refuses: `render`'s headers and body, or the plain
// `reason`; always `status`, and always the connection's last answer.
http::response<http::string_body> MakeRefusal(
    const std::function<HttpResponse(const RefusedRequest&)>& render, RefusedRequest refused,
    bool head) {
  HttpResponse response{
      refused.status, {{"Content-Type", "text/plain"}}, std::string(refused.reason)};
  if (render) {
    try {
      response = render(refused);
    } catch (const std::exception& e) {
      LogError(kComponent, "refusal renderer threw", {{"what", e.what()}});
    } catch (...) {
      LogError(kComponent, "refusal renderer threw");
    }
    std::erase_if(response.headers,
                  [](const auto& h) { return EqualsIgnoreCase(h.first, "connection"); });
    response.status = refused.status;
  }
  if (refused.status == 426) {  // RFC 6455 §4.2.2: name the version the server speaks
    std::erase_if(response.headers,
                  [](const auto& h) { return EqualsIgnoreCase(h.first, "sec-websocket-version"); });
    response.headers.emplace_back("Sec-WebSocket-Version", "13");
  }
  return MakeResponse(std::move(response), 11, /*keep_alive=*/false, head);
}

// The bytes of a complete response, as http::write would send them.
std::string Serialized(http::response<http::string_body>& res) {
  std::string out;
  http::serializer<false, http::string_body> sr{res};
  beast::error_code ec;
  while (!ec && !sr.is_done()) {
    sr.next(ec, [&](beast::error_code&, const auto& buffers) {
      for (const auto b : beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(b.data()), b.size());
      }
      sr.consume(beast::buffer_bytes(buffers));
    });
  }
  return out;
}

}  // namespace

class ConnBase;

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(IoRuntime& rt, ServerOptions opts, Handler h)
      : ioc_keepalive(internal::SharedIoContextOf(rt)),
        runtime(rt),
        ioc(*ioc_keepalive),
        options(std::move(opts)),
        handler(std::move(h)),
        acceptor_strand(asio::make_strand(ioc)),
        acceptor(acceptor_strand) {}

  // Opens, binds and listens `acc` on `endpoint`.
  boost::system::error_code Listen(StreamAcceptor& acc, const StreamProtocol::endpoint& endpoint,
                                   const char** step);

  // Registers a live coroutine; false once the server is stopping.
  bool Enter(uint64_t* id, std::shared_ptr<ConnBase> conn);
  void Leave(uint64_t id);

  std::shared_ptr<asio::io_context> ioc_keepalive;  // first: released last
  IoRuntime& runtime;  // only dereferenced while the HttpServer (hence the runtime) lives
  asio::io_context& ioc;
  ServerOptions options;
  Handler handler;
  Strand acceptor_strand;
  StreamAcceptor acceptor;                       // TCP
  std::optional<StreamAcceptor> local_acceptor;  // options.unix_path
  uint16_t port = 0;

  mutable std::mutex mu;
  std::condition_variable idle_cv;
  bool stopping = false;
  int accept_running = 0;  // accept loops not yet finished
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, std::weak_ptr<ConnBase>> conns;
  std::atomic<uint64_t> direct_answers{0};
  std::atomic<uint64_t> forced_acks{0};
};

// What the server needs from a connection to shut it down.
class ConnBase {
 public:
  virtual ~ConnBase() = default;
  virtual void Abort() = 0;
};

bool HttpServer::State::Enter(uint64_t* id, std::shared_ptr<ConnBase> conn) {
  std::lock_guard lock(mu);
  if (stopping) return false;
  *id = next_id++;
  conns.emplace(*id, std::move(conn));
  return true;
}

void HttpServer::State::Leave(uint64_t id) {
  std::lock_guard lock(mu);
  conns.erase(id);
  if (conns.empty() && !accept_running) idle_cv.notify_all();
}

namespace {

class Conn final : public ConnBase,
                   public internal::ShutdownCloser,
                   public std::enable_shared_from_this<Conn> {
 public:
  Conn(std::shared_ptr<HttpServer::State> server, Strand strand, StreamProtocol::socket socket,
       std::string remote)
      : server_(std::move(server)),
        strand_(std::move(strand)),
        stream_(std::move(socket)),
        signal_(strand_),
        remote_(std::move(remote)) {
    internal::ShutdownRegistryOf(server_->ioc).Add(this);
  }
  ~Conn() { internal::ShutdownRegistryOf(server_->ioc).Remove(this); }

  // ShutdownCloser. After an upgrade the WebSocket session closes its own socket.
  void CloseOnShutdown() override {
    if (ws_) return;
    EndDirect();
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  // Strand-agnostic: queue an answer event.
  void Push(Event ev) {
    // A stopped runtime runs nothing any more; this also keeps exchanges destroyed while
    // the io_context tears down from posting into it.
    if (server_->ioc.stopped()) return;
    asio::dispatch(strand_, [self = shared_from_this(), ev = std::move(ev)]() mutable {
      self->events_.push_back(std::move(ev));
      self->signal_.cancel();
    });
  }

  // `exchange`: the serial of the exchange asking (exchanges_). A callback registered once
  // that exchange's answer is complete (OnPeerGone runs on any thread, the answer may be
  // written before this runs) is dropped: it must not outlive its exchange and fire for a
  // later request on the connection, or at its end.
  void SetPeerGone(uint64_t exchange, std::function<void()> fn) {
    asio::dispatch(strand_, [self = shared_from_this(), exchange, fn = std::move(fn)]() mutable {
      if (self->finished_ || exchange != self->exchanges_ || !self->awaiting_answer_) return;
      self->peer_gone_ = std::move(fn);
      self->ArmPeerWatch();
    });
  }
  uint64_t exchanges() const { return exchanges_; }

  // ConnBase
  void Abort() override {
    asio::dispatch(strand_, [self = shared_from_this()] {
      self->closing_ = true;
      if (self->ws_) {
        self->ws_->Abort();
      } else {
        self->EndDirect();
        beast::error_code ignored;
        self->stream_.socket().close(ignored);
      }
      self->signal_.cancel();
    });
  }

  asio::awaitable<void> Run();

  // Any thread: writes `response` to the socket at once when the coroutine waits for the
  // answer to its request and nothing else may write or close the socket meanwhile (the
  // caller then must not queue it). False: queue it (Push) as usual.
  bool TryRespondDirect(HttpResponse& response);

  const Strand& strand() const { return strand_; }
  const std::shared_ptr<asio::io_context>& shared_io_context() const {
    return server_->ioc_keepalive;
  }
  size_t max_ws_message() const { return server_->options.max_ws_message; }
  const std::string& remote() const { return remote_; }

 private:
  // Direct answers. `open` while Serve waits for the answer to a request of `version` (and
  // no other writer or closer may touch the socket without taking direct_mu_ and clearing
  // it first); `written` once a direct answer went out for that request.
  struct Direct {
    bool open = false;
    bool written = false;
    unsigned version = 11;
    bool keep_alive = false;
    bool head = false;  // a HEAD request: the answer goes without its body
  };
  void OpenDirect(unsigned version, bool keep_alive, bool head) {
    std::lock_guard lock(direct_mu_);
    direct_ = Direct{true, false, version, keep_alive, head};
  }
  // Returns whether a direct answer was written for the awaited request. Any direct write
  // in progress has finished when it returns.
  bool EndDirect() {
    std::lock_guard lock(direct_mu_);
    direct_.open = false;
    return direct_.written;
  }
  bool DirectWritten() {
    std::lock_guard lock(direct_mu_);
    return direct_.written;
  }

  // Waits (on the strand) until an event is queued or the connection is closing.
  asio::awaitable<bool> NextEvent(Event* out) {
    while (events_.empty() && !closing_) {
      signal_.expires_at(asio::steady_timer::time_point::max());
      co_await signal_.async_wait(as_tuple(use_awaitable));
    }
    if (closing_) co_return false;
    *out = std::move(events_.front());
    events_.pop_front();
    co_return true;
  }

  // Watches for the client going away while we wait for the answer (only when someone
  // asked via OnPeerGone). Waiting for readability does not consume pipelined bytes; a
  // readiness with nothing behind it (internal::PeekPeer) only re-arms the watch.
  void ArmPeerWatch() {
    if (watching_ || !awaiting_answer_ || !peer_gone_) return;
    watching_ = true;
    stream_.socket().async_wait(
        asio::socket_base::wait_read,
        asio::bind_executor(strand_, [self = shared_from_this(),
                                      generation = watch_generation_](beast::error_code ec) {
          if (generation != self->watch_generation_) return;  // a cancelled, stale watch
          self->watching_ = false;
          if (!self->awaiting_answer_ || self->DirectWritten()) return;
          const internal::PeerState peer =
              ec ? internal::PeerState::kGone
                 : internal::PeekPeer(self->stream_.socket().native_handle());
          switch (peer) {
            case internal::PeerState::kSending:  // a pipelined request: the peer is still there
              return;
            case internal::PeerState::kQuiet:  // a readiness left over from bytes already read
              self->ArmPeerWatch();
              return;
            case internal::PeerState::kGone:
              self->PeerGone();
              return;
          }
        }));
  }

  // The answer is complete: stop watching for the peer and forget the callback.
  void AnswerDone() {
    awaiting_answer_ = false;
    peer_gone_ = nullptr;
    if (watching_) {
      watching_ = false;
      ++watch_generation_;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);  // only the readiness wait is pending here
    }
  }

  void PeerGone() {
    closing_ = true;
    signal_.cancel();
    FirePeerGone();
  }

  void FirePeerGone() {
    if (!peer_gone_) return;
    auto fn = std::move(peer_gone_);
    peer_gone_ = nullptr;
    try {
      fn();
    } catch (...) {
      LogError(kComponent, "OnPeerGone callback threw");
    }
  }

  // Bounds the next I/O operation (read of a request, write of an answer piece).
  void ArmTimeout() {
    const auto timeout = server_->options.io_timeout;
    if (timeout.count() > 0) stream_.expires_after(timeout);
  }

  // Answers a request the server refuses itself (ServerOptions::refusal renders it), then
  // closes the connection.
  asio::awaitable<void> WriteError(int status, std::string_view reason,
                                   const http::request_parser<http::string_body>& parser,
                                   bool websocket_handshake = false);
  asio::awaitable<bool> Serve(http::request<http::string_body> req, bool keep_alive);

  std::shared_ptr<HttpServer::State> server_;
  Strand strand_;
  internal::Stream stream_;
  asio::steady_timer signal_;
  const std::string remote_;
  std::deque<Event> events_;
  std::function<void()> peer_gone_;
  std::shared_ptr<internal::WsSession> ws_;
  bool closing_ = false;
  bool awaiting_answer_ = false;
  bool watching_ = false;
  uint64_t watch_generation_ = 0;
  uint64_t exchanges_ = 0;  // exchanges begun on this connection (the current one's serial)
  bool finished_ = false;
  std::mutex direct_mu_;
  Direct direct_;
};

bool Conn::TryRespondDirect(HttpResponse& response) {
  if (response.body.size() > kDirectAnswerLimit || server_->ioc.stopped()) return false;
  std::unique_lock lock(direct_mu_);
  if (!direct_.open || direct_.written) return false;
  auto res = MakeResponse(std::move(response), direct_.version, direct_.keep_alive, direct_.head);
  const std::string bytes = Serialized(res);
  direct_.written = true;
  // Open means the socket is open and idle (the coroutine waits in Serve; closing it first
  // takes direct_mu_), so this thread may write on it without the strand.
  const int fd = stream_.socket().native_handle();
  size_t sent = 0;
  bool failed = false;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      failed = !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
      break;
    }
  }
  lock.unlock();
  server_->direct_answers.fetch_add(1, std::memory_order_relaxed);
  Push(EvWritten{failed ? std::string() : bytes.substr(sent), failed});
  return true;
}

enum class ExState { kNew, kStreaming, kDone };

class Exchange final : public HttpExchange {
 public:
  // Made on the connection's strand, once its serial is counted (Conn::exchanges).
  Exchange(std::shared_ptr<Conn> conn, HttpRequest request, bool upgrade)
      : conn_(std::move(conn)),
        request_(std::move(request)),
        upgrade_(upgrade),
        serial_(conn_->exchanges()) {}

  ~Exchange() override {
    if (state_ == ExState::kNew) {
      conn_->Push(EvRespond{HttpResponse{500, {}, "unanswered request"}});
    } else if (state_ == ExState::kStreaming) {
      conn_->Push(EvAbort{});
    }
  }

  const HttpRequest& request() const override { return request_; }
  HttpRequest& mutable_request() override { return request_; }
  bool IsWebSocketUpgrade() const override { return upgrade_; }

  void Respond(HttpResponse response) override {
    if (!Transition(ExState::kNew, ExState::kDone, "Respond")) return;
    if (conn_->TryRespondDirect(response)) return;
    conn_->Push(EvRespond{std::move(response)});
  }

  void StartStream(int status, Headers headers) override {
    if (!Transition(ExState::kNew, ExState::kStreaming, "StartStream")) return;
    conn_->Push(EvStreamHead{status, std::move(headers)});
  }

  void WriteChunk(std::string data) override {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    if (state_ != ExState::kStreaming) {
      LogWarn(kComponent, "WriteChunk outside a stream ignored");
      return;
    }
    conn_->Push(EvChunk{std::move(data)});  // under mu_: keeps chunk order across threads
  }

  void FinishStream() override {
    if (!Transition(ExState::kStreaming, ExState::kDone, "FinishStream")) return;
    conn_->Push(EvStreamEnd{});
  }

  void OnPeerGone(std::function<void()> fn) override { conn_->SetPeerGone(serial_, std::move(fn)); }

  std::shared_ptr<WsConnection> AcceptWebSocket(std::string subprotocol,
                                                std::shared_ptr<WsHandler> handler,
                                                Headers headers) override {
    if (!upgrade_) {
      if (Transition(ExState::kNew, ExState::kDone, "AcceptWebSocket")) {
        conn_->Push(EvRespond{HttpResponse{400, {}, "not a WebSocket upgrade request"}});
      }
      return nullptr;
    }
    if (!handler || !Transition(ExState::kNew, ExState::kDone, "AcceptWebSocket")) {
      return nullptr;
    }
    auto session = std::make_shared<internal::WsSession>(
        conn_->shared_io_context(), conn_->strand(), conn_->remote(), conn_->max_ws_message());
    conn_->Push(EvUpgrade{std::move(subprotocol), std::move(headers), std::move(handler),
                          session});
    return session;
  }

 private:
  bool Transition(ExState from, ExState to, const char* what) {
    std::lock_guard lock(mu_);
    if (state_ != from) {
      LogWarn(kComponent, "HttpExchange answer out of order ignored", {{"call", what}});
      return false;
    }
    state_ = to;
    return true;
  }

  std::shared_ptr<Conn> conn_;
  HttpRequest request_;
  const bool upgrade_;
  const uint64_t serial_;
  std::mutex mu_;
  ExState state_ = ExState::kNew;
};

asio::awaitable<void> Conn::WriteError(int status, std::string_view reason,
                                       const http::request_parser<http::string_body>& parser,
                                       bool websocket_handshake) {
  const auto& msg = parser.get();
  RefusedRequest refused{status, reason, {}, websocket_handshake};
  for (const auto& field : msg) {
    refused.headers.emplace_back(ToString(field.name_string()), ToString(field.value()));
  }
  auto res =
      MakeRefusal(server_->options.refusal, std::move(refused), msg.method() == http::verb::head);
  ArmTimeout();
  auto [ec, n] = co_await http::async_write(stream_, res, as_tuple(use_awaitable));
  if (ec) co_return;
  beast::error_code ignored;
  stream_.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  // Lingering close (RFC 9112 §9.6): read and discard what the client still sends (the rest
  // of a large body or header, or of a bad request), bounded in time and size, so it reads
  // our answer rather than a reset.
  stream_.expires_after(kDrainTimeout);
  std::vector<char> sink(64 * 1024);
  size_t drained = 0;
  while (drained < kDrainLimit) {
    auto [rec, got] = co_await stream_.async_read_some(asio::buffer(sink), as_tuple(use_awaitable));
    if (rec) break;
    drained += got;
  }
  stream_.expires_never();
}

// Writes the answer to `req`; returns whether the connection may serve another request.
asio::awaitable<bool> Conn::Serve(http::request<http::string_body> req, bool keep_alive) {
  Event ev;  // awaiting_answer_ and the direct answer were opened before the handler ran
  ArmPeerWatch();
  bool got = co_await NextEvent(&ev);
  // From here the strand owns the socket again (a direct write in progress has finished).
  const bool direct = EndDirect();
  if (direct && got && !std::holds_alternative<EvWritten>(ev)) {
    // Only the exchange answers, once: nothing else may follow a direct answer.
    LogError(kComponent, "event after a direct answer");
    co_return false;
  }
  if (!got) {
    // Closing (e.g. the server stops) before the direct answer's event was taken: the
    // answer went out, so the peer did not leave before it.
    if (direct) AnswerDone();
    co_return false;
  }

  if (auto* w = std::get_if<EvWritten>(&ev)) {
    AnswerDone();
    if (w->failed) co_return false;
    if (!w->rest.empty()) {
      ArmTimeout();
      auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(w->rest), as_tuple(use_awaitable));
      if (ec) co_return false;
    }
    co_return keep_alive;
  }

  const bool head_request = req.method() == http::verb::head;
  if (auto* r = std::get_if<EvRespond>(&ev)) {
    AnswerDone();
    auto res = MakeResponse(std::move(r->response), req.version(), keep_alive, head_request);
    ArmTimeout();
    auto [ec, n] = co_await http::async_write(stream_, res, as_tuple(use_awaitable));
    co_return !ec && keep_alive;
  }

  if (auto* head = std::get_if<EvStreamHead>(&ev)) {
    http::response<http::empty_body> res{static_cast<http::status>(ValidStatus(head->status)),
                                         req.version()};
    for (auto& [name, value] : head->headers) {
      if (!SkippedResponseHeader(name, value)) res.insert(name, value);
    }
    // HEAD: the head only; then the connection ends, with the stream nobody reads.
    res.keep_alive(keep_alive && !head_request);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    ArmTimeout();
    auto [ec, n] = co_await http::async_write_header(stream_, sr, as_tuple(use_awaitable));
    if (ec || head_request) {
      FirePeerGone();
      co_return false;
    }
    for (;;) {
      if (!co_await NextEvent(&ev)) {
        FirePeerGone();
        co_return false;
      }
      if (auto* chunk = std::get_if<EvChunk>(&ev)) {
        ArmTimeout();
        auto [wec, wn] = co_await asio::async_write(
            stream_, http::make_chunk(asio::buffer(chunk->data)), as_tuple(use_awaitable));
        if (wec) {
          FirePeerGone();
          co_return false;
        }
        continue;
      }
      if (std::holds_alternative<EvStreamEnd>(ev)) {
        AnswerDone();
        ArmTimeout();
        auto [wec, wn] =
            co_await asio::async_write(stream_, http::make_chunk_last(), as_tuple(use_awaitable));
        co_return !wec && keep_alive;
      }
      // EvAbort (exchange dropped mid-stream) or anything unexpected: cut the connection.
      co_return false;
    }
  }

  if (auto* up = std::get_if<EvUpgrade>(&ev)) {
    AnswerDone();
    ws_ = up->session;
    stream_.expires_never();  // the WebSocket layer runs its own timeouts
    co_await ws_->RunServer(std::move(stream_), std::move(req), std::move(up->subprotocol),
                            std::move(up->headers), std::move(up->handler));
    co_return false;
  }
  co_return false;  // EvAbort
}

asio::awaitable<void> Conn::Run() {
  beast::flat_buffer buffer;
  const ServerOptions& options = server_->options;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(options.max_request_body);
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<size_t>(options.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    ArmTimeout();  // covers keep-alive idle time plus reading the whole request
    const uint64_t armed_at = HandoffScope::Deliveries();
    auto [ec, n] = co_await http::async_read_header(stream_, buffer, parser, as_tuple(use_awaitable));
    if (!ec && !parser.is_done()) {
      // A client with Nagle on (Deno's fetch) may send the body only once the header is
      // ACKed, and no reply is coming to carry that ACK until the body is here. A body that
      // came with the header (most requests) needs no such ACK: the call, and quick-ACK
      // mode's separate ACK packet ahead of the reply, are skipped.
      const auto length = parser.content_length();
      if (!length || buffer.size() < *length) {
        internal::AckPromptly(stream_);
        server_->forced_acks.fetch_add(1, std::memory_order_relaxed);
      }
      if (EqualsIgnoreCase(ToView(parser.get()[http::field::expect]), "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, 11};
        auto [cec, cn] = co_await http::async_write(stream_, cont, as_tuple(use_awaitable));
        if (cec) break;
      }
      std::tie(ec, n) = co_await http::async_read(stream_, buffer, parser, as_tuple(use_awaitable));
    }
    if (ec) {
      if (closing_) break;
      if (ec == http::error::body_limit) {
        co_await WriteError(413, "request body too large", parser);
      } else if (ec == http::error::header_limit) {
        co_await WriteError(431, "request header too large", parser);
      } else if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
        // The client closed the connection, possibly mid-request.
      } else if (IsHttpParseError(ec)) {
        co_await WriteError(400, "malformed request", parser);
      } else {
        KEEL_LOG(kDebug, kComponent, "read failed", {{"peer", remote_}, {"error", ec.message()}});
      }
      break;
    }

    const bool upgrade = websocket::is_upgrade(parser.get());
    if (upgrade) {
      if (std::optional<HandshakeFault> fault = FindHandshakeFault(parser.get())) {
        co_await WriteError(fault->status, fault->reason, parser, /*websocket_handshake=*/true);
        break;
      }
    }
    http::request<http::string_body> req = parser.release();
    const bool keep_alive = req.keep_alive();
    HttpRequest request;
    request.method = ToString(req.method_string());
    request.target = ToString(req.target());
    request.headers.reserve(8);
    for (const auto& field : req) {
      request.headers.emplace_back(ToString(field.name_string()), ToString(field.value()));
    }
    request.body = std::move(req.body());
    request.remote_address = remote_;

    {
      ++exchanges_;
      auto exchange = std::make_shared<Exchange>(shared_from_this(), std::move(request), upgrade);
      // The answer may come while the handler runs (the work it hands off runs before the
      // scope ends): the socket is idle from here until Serve writes, so a small answer may
      // be written directly already.
      awaiting_answer_ = true;
      OpenDirect(req.version(), keep_alive, req.method() == http::verb::head);
      try {
        HandoffScope handoffs(armed_at);  // see io_runtime.h
        server_->handler(std::move(exchange));
      } catch (const std::exception& e) {
        LogError(kComponent, "HTTP handler threw", {{"what", e.what()}});
      } catch (...) {
        LogError(kComponent, "HTTP handler threw");
      }
    }
    if (!co_await Serve(std::move(req), keep_alive)) break;
  }
  finished_ = true;
  awaiting_answer_ = false;
  FirePeerGone();
  events_.clear();
  if (!ws_) {
    beast::error_code ignored;
    stream_.socket().shutdown(asio::socket_base::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }
}

// Unregisters the connection when its coroutine frame goes away, however that happens.
class LiveGuard {
 public:
  LiveGuard(std::shared_ptr<HttpServer::State> server, uint64_t id)
      : server_(std::move(server)), id_(id) {}
  LiveGuard(LiveGuard&& other) noexcept : server_(std::move(other.server_)), id_(other.id_) {}
  LiveGuard(const LiveGuard&) = delete;
  LiveGuard& operator=(const LiveGuard&) = delete;
  LiveGuard& operator=(LiveGuard&&) = delete;
  ~LiveGuard() {
    if (server_) server_->Leave(id_);
  }

 private:
  std::shared_ptr<HttpServer::State> server_;
  uint64_t id_;
};

asio::awaitable<void> RunConn(std::shared_ptr<Conn> conn, LiveGuard guard) {
  (void)guard;
  co_await conn->Run();
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<HttpServer::State> state,
                                 StreamAcceptor& acceptor) {
  for (;;) {
    Strand strand = asio::make_strand(state->ioc);
    StreamProtocol::socket socket(strand);
    auto [ec] = co_await acceptor.async_accept(socket, as_tuple(use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      // EMFILE and friends: log and keep accepting.
      LogWarn(kComponent, "accept failed", {{"error", ec.message()}});
      continue;
    }
    beast::error_code ep_ec;
    StreamProtocol::endpoint ep = socket.remote_endpoint(ep_ec);
    if (!internal::IsLocal(ep)) socket.set_option(tcp::no_delay(true), ep_ec);
    if (state->options.socket_send_buffer > 0) {
      beast::error_code buf_ec;  // best effort: the kernel's own sizing stays otherwise
      socket.set_option(asio::socket_base::send_buffer_size(static_cast<int>(state->options.socket_send_buffer)), buf_ec);
    }
    auto conn = std::make_shared<Conn>(state, strand, std::move(socket),
                                       ep_ec ? std::string("?") : internal::EndpointText(ep));
    uint64_t id = 0;
    if (!state->Enter(&id, conn)) break;  // stopping: the socket closes with `conn`
    asio::co_spawn(strand, RunConn(conn, LiveGuard{state, id}), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        LogError(kComponent, "connection failed", {{"what", ex.what()}});
      } catch (...) {
        LogError(kComponent, "connection failed");
      }
    });
  }
}

}  // namespace

HttpServer::HttpServer(std::shared_ptr<State> state) : state_(std::move(state)) {}

boost::system::error_code HttpServer::State::Listen(StreamAcceptor& acc,
                                                    const StreamProtocol::endpoint& endpoint,
                                                    const char** step) {
  boost::system::error_code ec;
  *step = "open";
  acc.open(endpoint.protocol(), ec);
  if (ec) return ec;
  if (!internal::IsLocal(endpoint)) {
    *step = "reuse_address";
    acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (ec) return ec;
  }
  *step = "bind";
  acc.bind(endpoint, ec);
  if (ec) return ec;
  *step = "listen";
  acc.listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

namespace {

// Makes `path` free for a new Unix socket: a socket file nobody listens on any more (its
// server died) is removed; a live one, or any other kind of file, is left and refused.
Status FreeUnixPath(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return OkStatus();  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    return Error("net", "bind_failed", "unix:" + path + " exists and is not a socket");
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error("net", "bind_failed", "socket: " + std::string(std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  const int err = errno;
  ::close(fd);
  if (live) return Error("net", "bind_failed", "unix:" + path + " is in use by a running server");
  if (err != ECONNREFUSED && err != ENOENT) {
    return Error("net", "bind_failed", "unix:" + path + ": " + std::string(std::strerror(err)));
  }
  ::unlink(path.c_str());
  return OkStatus();
}

void StartAcceptLoop(const std::shared_ptr<HttpServer::State>& state, StreamAcceptor& acceptor) {
  ++state->accept_running;
  asio::co_spawn(state->acceptor_strand, AcceptLoop(state, acceptor), [state](std::exception_ptr) {
    std::lock_guard lock(state->mu);
    --state->accept_running;
    if (state->accept_running == 0 && state->conns.empty()) state->idle_cv.notify_all();
  });
}

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Start(IoRuntime& runtime, ServerOptions options,
                                                      Handler handler) {
  if (!handler) return Error("net", "invalid_argument", "HttpServer needs a handler");
  std::string host = options.host == "localhost" ? "127.0.0.1" : options.host;
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return Error("net", "invalid_argument", "not an IP address: " + options.host);
  if (options.unix_path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Error("net", "invalid_argument", "unix socket path too long: " + options.unix_path);
  }
  auto state = std::make_shared<State>(runtime, std::move(options), std::move(handler));
  tcp::endpoint endpoint(address, state->options.port);
  const char* step = "";
  ec = state->Listen(state->acceptor, StreamProtocol::endpoint(endpoint), &step);
  if (!ec) {
    step = "local_endpoint";
    state->port = internal::TcpEndpoint(state->acceptor.local_endpoint(ec)).port();
  }
  if (ec) {
    return Error("net", "bind_failed",
                 std::string(step) + " " + internal::EndpointText(endpoint) + ": " + ec.message());
  }
  const std::string& path = state->options.unix_path;
  if (!path.empty()) {
    Status freed = FreeUnixPath(path);
    if (!freed.ok()) return std::move(freed).error();
    state->local_acceptor.emplace(state->acceptor_strand);
    ec = state->Listen(*state->local_acceptor,
                       StreamProtocol::endpoint(asio::local::stream_protocol::endpoint(path)),
                       &step);
    if (!ec && ::chmod(path.c_str(), 0600) != 0) {
      step = "chmod";
      ec.assign(errno, boost::system::system_category());
    }
    if (ec) {
      if (std::string_view(step) != "open" && std::string_view(step) != "bind")
        ::unlink(path.c_str());
      return Error("net", "bind_failed", std::string(step) + " unix:" + path + ": " + ec.message());
    }
  }
  {
    std::lock_guard lock(state->mu);
    StartAcceptLoop(state, state->acceptor);
    if (state->local_acceptor) StartAcceptLoop(state, *state->local_acceptor);
  }
  KEEL_LOG(kInfo, kComponent, "listening",
           {{"address", internal::EndpointText(endpoint)}, {"port", std::to_string(state->port)}});
  if (!path.empty()) KEEL_LOG(kInfo, kComponent, "listening", {{"address", "unix:" + path}});
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

uint16_t HttpServer::port() const { return state_->port; }
const std::string& HttpServer::host() const { return state_->options.host; }

void HttpServer::StopAccepting() {
  asio::dispatch(state_->acceptor_strand, [state = state_] {
    boost::system::error_code ignored;
    state->acceptor.close(ignored);
    if (state->local_acceptor) state->local_acceptor->close(ignored);
  });
}

size_t HttpServer::open_connections() const {
  std::lock_guard lock(state_->mu);
  return state_->conns.size();
}

uint64_t HttpServer::direct_answers() const {
  return state_->direct_answers.load(std::memory_order_relaxed);
}

uint64_t HttpServer::forced_acks() const {
  return state_->forced_acks.load(std::memory_order_relaxed);
}

HttpServer::~HttpServer() {
  StopAccepting();
  // New clients now get ENOENT rather than a socket nobody accepts on.
  if (state_->local_acceptor) ::unlink(state_->options.unix_path.c_str());
  std::vector<std::shared_ptr<ConnBase>> live;
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
    for (auto& [id, weak] : state_->conns) {
      if (auto conn = weak.lock()) live.push_back(std::move(conn));
    }
  }
  for (auto& conn : live) conn->Abort();
  live.clear();
  if (state_->runtime.stopped() || state_->runtime.InRuntimeThread()) return;
  // Bounded slices so a concurrent IoRuntime::Stop() cannot leave us waiting forever.
  std::unique_lock lock(state_->mu);
  while (!state_->conns.empty() || state_->accept_running) {
    if (state_->runtime.stopped()) return;
    state_->idle_cv.wait_for(lock, std::chrono::milliseconds(50));
  }
}

}  // namespace keel::net
