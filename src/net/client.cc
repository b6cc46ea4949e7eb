// HTTP and WebSocket clients. Each operation is one coroutine on its own strand; an inner
// coroutine does the I/O and returns a value, the outer one converts any exception into
// an error so the completion callback runs exactly once.
#include "net/client.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "base/log.h"
#include "net/internal/runtime_access.h"
#include "net/internal/ws_session.h"

namespace keel::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using internal::Strand;

namespace {

constexpr std::string_view kComponent = "net.client";
// Fetch reads whole bodies into memory; refuse absurd ones.
constexpr uint64_t kMaxFetchBody = uint64_t{1} << 30;

std::string ToString(beast::string_view sv) { return std::string(sv.data(), sv.size()); }

Error NetError(std::string code, std::string message) {
  return Error("net", std::move(code), std::move(message));
}

Error IoError(const beast::error_code& ec, std::string_view what) {
  if (ec == beast::error::timeout) return NetError("timeout", std::string(what) + ": timed out");
  return NetError("io", std::string(what) + ": " + ec.message());
}

std::string HostHeader(const Url& url) {
  const bool v6 = url.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + url.host + "]" : url.host;
  if (url.port != 80) host += ":" + std::to_string(url.port);
  return host;
}

HttpResponse ToHttpResponse(http::response<http::string_body>&& res) {
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  for (const auto& field : res) {
    out.headers.emplace_back(ToString(field.name_string()), ToString(field.value()));
  }
  out.body = std::move(res.body());
  return out;
}

template <typename Fields>
HttpResponse HeadOf(const http::response_header<Fields>& res) {
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  for (const auto& field : res) {
    out.headers.emplace_back(ToString(field.name_string()), ToString(field.value()));
  }
  return out;
}

std::string DescribeException(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

// Resolves and connects `stream` (whose timer must already be armed by the caller): to the
// URL's Unix socket, or over TCP.
asio::awaitable<Status> Connect(internal::Stream& stream, const Url& url) {
  if (!url.unix_path.empty()) {
    const internal::StreamProtocol::endpoint ep{
        asio::local::stream_protocol::endpoint(url.unix_path)};
    auto [cec] = co_await stream.async_connect(ep, as_tuple(use_awaitable));
    if (cec) {
      if (cec == beast::error::timeout) co_return NetError("timeout", "connect timed out");
      co_return NetError("connect_failed", "connect unix:" + url.unix_path + ": " + cec.message());
    }
    co_return OkStatus();
  }
  tcp::resolver resolver(stream.get_executor());
  auto [rec, results] =
      co_await resolver.async_resolve(url.host, std::to_string(url.port), as_tuple(use_awaitable));
  if (rec) co_return NetError("connect_failed", "resolve " + url.host + ": " + rec.message());
  std::vector<internal::StreamProtocol::endpoint> endpoints;
  for (const auto& entry : results) endpoints.emplace_back(entry.endpoint());
  auto [cec, ep] = co_await stream.async_connect(endpoints, as_tuple(use_awaitable));
  if (cec) {
    if (cec == beast::error::timeout) co_return NetError("timeout", "connect timed out");
    co_return NetError("connect_failed", "connect " + HostHeader(url) + ": " + cec.message());
  }
  beast::error_code ignored;
  stream.socket().set_option(tcp::no_delay(true), ignored);
  co_return OkStatus();
}

http::request<http::string_body> BuildRequest(const Url& url, HttpRequest&& request) {
  http::request<http::string_body> req;
  req.version(11);
  req.method_string(request.method.empty() ? std::string("GET") : request.method);
  req.target(url.target);
  if (!HasHeader(request.headers, "host")) req.set(http::field::host, HostHeader(url));
  for (auto& [name, value] : request.headers) {
    if (EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "transfer-encoding") ||
        !IsValidHeaderField(name, value)) {
      continue;
    }
    req.insert(name, value);
  }
  req.body() = std::move(request.body);
  req.prepare_payload();
  return req;
}

// ---------------------------------------------------------------- Fetch

asio::awaitable<Result<HttpResponse>> FetchInner(std::string url_text, HttpRequest request,
                                                 std::chrono::milliseconds timeout) {
  auto parsed = ParseUrl(url_text);
  if (!parsed.ok()) co_return std::move(parsed).error();
  Url url = std::move(parsed).value();
  if (url.scheme != "http") co_return NetError("invalid_argument", "not an http URL: " + url_text);
  internal::Stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);
  Status connected = co_await Connect(stream, url);
  if (!connected.ok()) co_return std::move(connected).error();
  auto req = BuildRequest(url, std::move(request));
  auto [wec, wn] = co_await http::async_write(stream, req, as_tuple(use_awaitable));
  if (wec) co_return IoError(wec, "write request");
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.skip(req.method() == http::verb::head);  // a HEAD answer has no body
  parser.body_limit(kMaxFetchBody);
  parser.header_limit(1u << 20);
  auto [ec, n] = co_await http::async_read(stream, buffer, parser, as_tuple(use_awaitable));
  if (ec) co_return IoError(ec, "read response");
  beast::error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_both, ignored);
  co_return ToHttpResponse(parser.release());
}

asio::awaitable<void> FetchOuter(std::string url, HttpRequest request,
                                 std::function<void(Result<HttpResponse>)> done,
                                 std::chrono::milliseconds timeout) {
  std::optional<Result<HttpResponse>> result;
  try {
    result.emplace(co_await FetchInner(std::move(url), std::move(request), timeout));
  } catch (...) {
    result.emplace(NetError("io", "fetch failed: " + DescribeException(std::current_exception())));
  }
  done(std::move(*result));
}

// ---------------------------------------------------------------- HttpClient (pooled)

bool IsIdempotent(http::verb method) {
  switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::options:
      return true;
    default:
      return false;
  }
}

// True when an idle connection still looks usable: the peer has not closed it and has not
// sent anything unsolicited. A non-blocking peek on a socket no operation is using.
bool IdleConnectionAlive(internal::Stream& stream) {
  if (!stream.socket().is_open()) return false;
  char c;
  const ssize_t n = ::recv(stream.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

struct HttpClient::Pool {
  struct Idle {
    std::unique_ptr<internal::Stream> stream;
    std::chrono::steady_clock::time_point since;
  };
  HttpClient::Options options;
  mutable std::mutex mu;
  bool closed = false;
  std::map<std::string, std::deque<Idle>> idle;  // by "host:port"
  std::atomic<uint64_t> opened{0};

  std::unique_ptr<internal::Stream> Take(const std::string& key) {
    std::lock_guard lock(mu);
    auto it = idle.find(key);
    if (it == idle.end()) return nullptr;
    const auto now = std::chrono::steady_clock::now();
    while (!it->second.empty()) {
      Idle entry = std::move(it->second.back());  // the most recently used one
      it->second.pop_back();
      if (now - entry.since < options.idle_timeout && IdleConnectionAlive(*entry.stream)) {
        return std::move(entry.stream);
      }
    }
    return nullptr;
  }

  void Put(const std::string& key, std::unique_ptr<internal::Stream> stream) {
    std::lock_guard lock(mu);
    if (closed) return;
    stream->expires_never();
    auto& list = idle[key];
    const auto now = std::chrono::steady_clock::now();
    while (!list.empty() && now - list.front().since >= options.idle_timeout) list.pop_front();
    if (list.size() >= options.max_idle_per_host) list.pop_front();
    list.push_back(Idle{std::move(stream), now});
  }
};

namespace {

asio::awaitable<Result<HttpResponse>> PooledFetchInner(std::shared_ptr<HttpClient::Pool> pool,
                                                       Url url, std::string key,
                                                       HttpRequest request,
                                                       std::unique_ptr<internal::Stream> stream,
                                                       std::chrono::milliseconds timeout) {
  auto req = BuildRequest(url, std::move(request));
  req.keep_alive(true);
  for (int attempt = 0;; ++attempt) {
    const bool reused = stream != nullptr;
    if (!reused) {
      stream = std::make_unique<internal::Stream>(co_await asio::this_coro::executor);
      stream->expires_after(timeout);
      Status connected = co_await Connect(*stream, url);
      if (!connected.ok()) co_return std::move(connected).error();
      pool->opened.fetch_add(1, std::memory_order_relaxed);
    }
    stream->expires_after(timeout);
    const bool may_retry = reused && attempt == 0;
    auto [wec, wn] = co_await http::async_write(*stream, req, as_tuple(use_awaitable));
    if (wec) {
      stream.reset();
      if (may_retry && wec != beast::error::timeout) continue;  // nothing was processed
      co_return IoError(wec, "write request");
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.skip(req.method() == http::verb::head);
    parser.body_limit(kMaxFetchBody);
    parser.header_limit(1u << 20);
    auto [ec, n] = co_await http::async_read(*stream, buffer, parser, as_tuple(use_awaitable));
    if (ec) {
      const bool nothing_read = !parser.got_some() && buffer.size() == 0;
      stream.reset();
      if (may_retry && nothing_read && IsIdempotent(req.method()) && ec != beast::error::timeout) continue;
      co_return IoError(ec, "read response");
    }
    const bool keep = parser.get().keep_alive() && !parser.need_eof();
    HttpResponse out = ToHttpResponse(parser.release());
    if (keep) {
      pool->Put(key, std::move(stream));
    } else {
      beast::error_code ignored;
      stream->socket().shutdown(asio::socket_base::shutdown_both, ignored);
    }
    co_return out;
  }
}

asio::awaitable<void> PooledFetchOuter(std::shared_ptr<HttpClient::Pool> pool, Url url,
                                       std::string key, HttpRequest request,
                                       std::unique_ptr<internal::Stream> stream,
                                       std::function<void(Result<HttpResponse>)> done,
                                       std::chrono::milliseconds timeout) {
  std::optional<Result<HttpResponse>> result;
  try {
    result.emplace(co_await PooledFetchInner(std::move(pool), std::move(url), std::move(key), std::move(request),
                                             std::move(stream), timeout));
  } catch (...) {
    result.emplace(NetError("io", "fetch failed: " + DescribeException(std::current_exception())));
  }
  done(std::move(*result));
}

// ---------------------------------------------------------------- FetchStream

struct StreamControl {
  StreamControl(std::shared_ptr<asio::io_context> c, Strand s)
      : ioc(std::move(c)), strand(std::move(s)) {}
  std::shared_ptr<asio::io_context> ioc;  // first: released last
  Strand strand;
  // Strand only.
  internal::Stream* stream = nullptr;
  bool cancelled = false;
};

struct StreamCallbacks {
  std::function<void(Result<HttpResponse>)> on_head;
  std::function<void(std::string)> on_data;
  std::function<void(Status)> on_end;
  bool head_sent = false;
};

asio::awaitable<void> FetchStreamInner(std::shared_ptr<StreamControl> ctl, std::string url_text,
                                       HttpRequest request, StreamCallbacks& cb,
                                       std::chrono::milliseconds connect_timeout) {
  auto fail = [&](Error error) {
    if (ctl->cancelled) error = NetError("cancelled", "stream cancelled");
    if (!cb.head_sent) {
      cb.head_sent = true;
      cb.on_head(std::move(error));
    } else {
      cb.on_end(std::move(error));
    }
  };
  auto url = ParseUrl(url_text);
  if (!url.ok()) co_return fail(url.error());
  if (url->scheme != "http") co_return fail(NetError("invalid_argument", "not an http URL"));
  if (ctl->cancelled) co_return fail(NetError("cancelled", "stream cancelled"));
  internal::Stream stream(co_await asio::this_coro::executor);
  ctl->stream = &stream;
  struct Reset {
    StreamControl* c;
    ~Reset() { c->stream = nullptr; }
  } reset{ctl.get()};
  stream.expires_after(connect_timeout);
  Status connected = co_await Connect(stream, *url);
  if (!connected.ok()) co_return fail(connected.error());
  auto req = BuildRequest(*url, std::move(request));
  auto [wec, wn] = co_await http::async_write(stream, req, as_tuple(use_awaitable));
  if (wec) co_return fail(IoError(wec, "write request"));
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.skip(req.method() == http::verb::head);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.header_limit(1u << 20);
  auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, as_tuple(use_awaitable));
  if (hec) co_return fail(IoError(hec, "read response head"));
  stream.expires_never();
  cb.head_sent = true;
  cb.on_head(HeadOf(parser.get().base()));
  static constexpr size_t kPiece = 16 * 1024;
  auto piece = std::make_unique<char[]>(kPiece);
  while (!parser.is_done()) {
    if (ctl->cancelled) co_return fail(NetError("cancelled", "stream cancelled"));
    parser.get().body().data = piece.get();
    parser.get().body().size = kPiece;
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, as_tuple(use_awaitable));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return fail(IoError(ec, "read response body"));
    const size_t got = kPiece - parser.get().body().size;
    if (got > 0) cb.on_data(std::string(piece.get(), got));
  }
  beast::error_code ignored;
  stream.socket().shutdown(asio::socket_base::shutdown_both, ignored);
  cb.on_end(OkStatus());
}

asio::awaitable<void> FetchStreamOuter(std::shared_ptr<StreamControl> ctl, std::string url,
                                       HttpRequest request, StreamCallbacks cb,
                                       std::chrono::milliseconds connect_timeout) {
  bool failed = false;
  std::string what;
  try {
    co_await FetchStreamInner(ctl, std::move(url), std::move(request), cb, connect_timeout);
  } catch (...) {
    failed = true;
    what = DescribeException(std::current_exception());
  }
  if (failed) {
    Error error = NetError("io", "stream failed: " + what);
    if (!cb.head_sent) {
      cb.on_head(std::move(error));
    } else {
      cb.on_end(std::move(error));
    }
  }
}

// ---------------------------------------------------------------- WebSocket

struct WsHandshake {
  std::optional<internal::WsStream> stream;
  std::string remote;
};

using WsDone =
    std::function<void(Result<std::shared_ptr<WsConnection>>, HttpResponse)>;

asio::awaitable<Result<WsHandshake>> ConnectWsInner(const WsConnectOptions& options,
                                                    HttpResponse& response) {
  auto parsed = ParseUrl(options.url);
  if (!parsed.ok()) co_return std::move(parsed).error();
  Url url = std::move(parsed).value();
  if (url.scheme != "ws") co_return NetError("invalid_argument", "not a ws URL: " + options.url);
  WsHandshake hs;
  hs.stream.emplace(co_await asio::this_coro::executor);
  internal::WsStream& ws = *hs.stream;
  internal::Stream& tcp_layer = ws.next_layer().tcp();
  tcp_layer.expires_after(options.handshake_timeout);
  Status connected = co_await Connect(tcp_layer, url);
  if (!connected.ok()) co_return std::move(connected).error();
  beast::error_code ep_ec;
  hs.remote = internal::EndpointText(tcp_layer.socket().remote_endpoint(ep_ec));
  tcp_layer.expires_never();
  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout = options.handshake_timeout;
  timeouts.idle_timeout = websocket::stream_base::none();
  timeouts.keep_alive_pings = false;
  ws.set_option(timeouts);
  ws.read_message_max(options.max_message);
  std::string protocols;
  for (const auto& p : options.subprotocols) {
    if (!protocols.empty()) protocols += ", ";
    protocols += p;
  }
  ws.set_option(websocket::stream_base::decorator(
      [protocols, headers = options.headers](websocket::request_type& req) {
        if (!protocols.empty()) req.set(http::field::sec_websocket_protocol, protocols);
        for (const auto& [name, value] : headers) {
          if (IsValidHeaderField(name, value)) req.insert(name, value);
        }
      }));
  websocket::response_type res;
  auto [ec] = co_await ws.async_handshake(res, HostHeader(url), url.target, as_tuple(use_awaitable));
  response = ToHttpResponse(std::move(res));
  if (ec) {
    if (ec == websocket::error::upgrade_declined) {
      co_return NetError("handshake_failed",
                         "WebSocket upgrade refused with HTTP " + std::to_string(response.status));
    }
    co_return IoError(ec, "WebSocket handshake");
  }
  co_return hs;
}

asio::awaitable<void> ConnectWsOuter(std::shared_ptr<asio::io_context> ioc, Strand strand,
                                     WsConnectOptions options,
                                     std::shared_ptr<WsHandler> handler, WsDone done) {
  HttpResponse response;
  std::optional<Result<WsHandshake>> result;
  try {
    result.emplace(co_await ConnectWsInner(options, response));
  } catch (...) {
    result.emplace(NetError("io", "connect failed: " + DescribeException(std::current_exception())));
  }
  if (!result->ok()) {
    done(std::move(*result).error(), std::move(response));
    co_return;
  }
  WsHandshake hs = std::move(*result).value();
  auto session =
      std::make_shared<internal::WsSession>(std::move(ioc), strand, std::move(hs.remote),
                                            options.max_message);
  done(std::shared_ptr<WsConnection>(session), std::move(response));
  try {
    co_await session->RunClient(std::move(*hs.stream), std::move(handler));
  } catch (...) {
    LogError(kComponent, "WebSocket session failed",
             {{"what", DescribeException(std::current_exception())}});
  }
}

void LogEscaped(std::exception_ptr e) {
  if (e) LogError(kComponent, "client coroutine failed", {{"what", DescribeException(e)}});
}

}  // namespace

void ConnectWebSocket(
    IoRuntime& runtime, WsConnectOptions options, std::shared_ptr<WsHandler> handler,
    std::function<void(Result<std::shared_ptr<WsConnection>> conn, HttpResponse handshake)> done) {
  Strand strand = asio::make_strand(internal::IoContextOf(runtime));
  asio::co_spawn(strand,
                 ConnectWsOuter(internal::SharedIoContextOf(runtime), strand, std::move(options),
                                std::move(handler), std::move(done)),
                 LogEscaped);
}

void Fetch(IoRuntime& runtime, std::string url, HttpRequest request,
           std::function<void(Result<HttpResponse>)> done, std::chrono::milliseconds timeout) {
  Strand strand = asio::make_strand(internal::IoContextOf(runtime));
  asio::co_spawn(strand, FetchOuter(std::move(url), std::move(request), std::move(done), timeout),
                 LogEscaped);
}

HttpClient::HttpClient(IoRuntime& runtime, Options options)
    : runtime_(runtime), pool_(std::make_shared<Pool>()) {
  pool_->options = options;
}

HttpClient::~HttpClient() {
  std::lock_guard lock(pool_->mu);
  pool_->closed = true;
  pool_->idle.clear();
}

void HttpClient::Fetch(std::string url_text, HttpRequest request, std::function<void(Result<HttpResponse>)> done,
                       std::chrono::milliseconds timeout) {
  auto parsed = ParseUrl(url_text);
  Error bad;
  if (!parsed.ok()) {
    bad = parsed.error();
  } else if (parsed->scheme != "http") {
    bad = NetError("invalid_argument", "not an http URL: " + url_text);
  }
  if (!bad.group().empty()) {
    asio::post(internal::IoContextOf(runtime_), [done = std::move(done), bad] { done(bad); });
    return;
  }
  Url url = std::move(parsed).value();
  std::string key =
      url.unix_path.empty() ? url.host + ":" + std::to_string(url.port) : "unix:" + url.unix_path;
  std::unique_ptr<internal::Stream> stream = pool_->Take(key);
  // A reused connection keeps running on its own strand (Beast streams are not
  // thread-safe); a new one gets a new strand.
  auto executor = stream ? stream->get_executor() : asio::make_strand(internal::IoContextOf(runtime_));
  asio::co_spawn(executor,
                 PooledFetchOuter(pool_, std::move(url), std::move(key), std::move(request), std::move(stream),
                                  std::move(done), timeout),
                 LogEscaped);
}

size_t HttpClient::idle_connections() const {
  std::lock_guard lock(pool_->mu);
  size_t n = 0;
  for (const auto& [k, list] : pool_->idle) n += list.size();
  return n;
}

uint64_t HttpClient::connections_opened() const { return pool_->opened.load(std::memory_order_relaxed); }

CancelFn FetchStream(IoRuntime& runtime, std::string url, HttpRequest request,
                     std::function<void(Result<HttpResponse> head)> on_head,
                     std::function<void(std::string chunk)> on_data,
                     std::function<void(Status end)> on_end,
                     std::chrono::milliseconds connect_timeout) {
  Strand strand = asio::make_strand(internal::IoContextOf(runtime));
  auto ctl = std::make_shared<StreamControl>(internal::SharedIoContextOf(runtime), strand);
  StreamCallbacks cb{std::move(on_head), std::move(on_data), std::move(on_end)};
  asio::co_spawn(strand,
                 FetchStreamOuter(ctl, std::move(url), std::move(request), std::move(cb),
                                  connect_timeout),
                 LogEscaped);
  return [ctl] {
    if (ctl->ioc->stopped()) return;
    asio::dispatch(ctl->strand, [ctl] {
      if (ctl->cancelled) return;
      ctl->cancelled = true;
      if (ctl->stream) ctl->stream->close();
    });
  };
}

Result<HttpResponse> FetchSync(std::string url, HttpRequest request,
                               std::chrono::milliseconds timeout) {
  struct Slot {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<HttpResponse>> result;
  };
  auto slot = std::make_shared<Slot>();
  IoRuntime runtime(1);
  Fetch(
      runtime, std::move(url), std::move(request),
      [slot](Result<HttpResponse> r) {
        std::lock_guard lock(slot->mu);
        slot->result.emplace(std::move(r));
        slot->cv.notify_all();
      },
      timeout);
  std::unique_lock lock(slot->mu);
  // Fetch enforces `timeout` itself; the margin only guards against a stuck runtime.
  if (!slot->cv.wait_for(lock, timeout + std::chrono::seconds(1),
                         [&] { return slot->result.has_value(); })) {
    return NetError("timeout", "fetch timed out");
  }
  return std::move(*slot->result);
}

}  // namespace keel::net
