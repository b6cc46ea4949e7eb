// keel::net clients: HTTP requests (whole or streamed) and WebSocket connections over
// plain TCP (http:// and ws:// only), for the engine's serverless POSTs, the runtime
// transport, the CLI and tests.
//
// Every asynchronous call completes exactly once, on a runtime I/O thread, and never
// synchronously inside the call. One TCP connection per Fetch (no pooling yet).
// Thread-safety: all functions may be called from any thread; the returned cancel handles
// and WsConnections are thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "net/http.h"
#include "net/io_runtime.h"

namespace keel::net {

struct WsConnectOptions {
  std::string url;  // ws://host:port/path?query
  // Offered in Sec-WebSocket-Protocol, in order; the server's pick is in the handshake
  // response headers.
  std::vector<std::string> subprotocols;
  Headers headers;  // extra handshake request headers
  // Larger incoming messages close the connection with 1009.
  size_t max_message = size_t{64} << 20;
  // Bound on resolve + connect + handshake.
  std::chrono::milliseconds handshake_timeout{30000};
};

// Connects and performs the WebSocket handshake, then calls `done` once:
//  - success: the connection, and the handshake response (status 101 + headers, e.g.
//    Sec-WebSocket-Protocol). `handler` starts receiving events only after `done` returned.
//  - failure: net.invalid_argument (URL), net.connect_failed, net.timeout, net.io, or
//    net.handshake_failed when the server answered with a non-101 HTTP response, which is
//    then in the second argument (status, headers, body). `handler` is never called.
// REQUIRES: `runtime` outlives the connection.
void ConnectWebSocket(
    IoRuntime& runtime, WsConnectOptions options, std::shared_ptr<WsHandler> handler,
    std::function<void(Result<std::shared_ptr<WsConnection>> conn, HttpResponse handshake)> done);

// Sends `request` (method, headers, body; the target comes from `url`; Host and
// Content-Length are added) and reads the whole response. Errors: net.invalid_argument,
// net.connect_failed, net.io (reset, malformed or over-large response), net.timeout
// (`timeout` bounds the whole exchange).
void Fetch(IoRuntime& runtime, std::string url, HttpRequest request,
           std::function<void(Result<HttpResponse>)> done,
           std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));

// Cancels a FetchStream: on_end then gets net.cancelled (unless it already ran).
// Thread-safe, idempotent; the handle may be dropped without cancelling.
using CancelFn = std::function<void()>;

// Like Fetch but delivers the response as it arrives: `on_head` once with status and
// headers (empty body), then `on_data` for each piece of body as read (piece boundaries
// are not the server's chunk boundaries), then `on_end` once with OkStatus() at the end
// of the body or the error. When the request fails before a response head arrives,
// on_head gets the error and neither on_data nor on_end runs. No overall timeout
// (streams may be long); `connect_timeout` bounds reaching the head.
CancelFn FetchStream(IoRuntime& runtime, std::string url, HttpRequest request,
                     std::function<void(Result<HttpResponse> head)> on_head,
                     std::function<void(std::string chunk)> on_data,
                     std::function<void(Status end)> on_end,
                     std::chrono::milliseconds connect_timeout = std::chrono::milliseconds(30000));

// HttpClient: Fetch over kept-alive HTTP/1.1 connections. After a complete response that
// allows keep-alive, the connection goes back to an idle pool (per host:port, at most
// `max_idle_per_host`, each kept at most `idle_timeout` — below keel::net servers' 60 s
// idle limit) and the next request to that host reuses it instead of connecting again.
// Before reuse, a connection the server closed meanwhile is detected and dropped. When a
// reused connection fails anyway, the request is sent again on a new connection only if it
// cannot have been processed twice: the write failed, or the method is idempotent (GET,
// HEAD, PUT, DELETE, OPTIONS) and no byte of a response arrived. A POST whose reused
// connection broke after the request was written fails with net.io instead of risking a
// second execution.
// Errors and callbacks as Fetch. Thread-safety: all methods may be called from any thread.
// REQUIRES: `runtime` outlives the HttpClient.
class HttpClient {
 public:
  struct Options {
    size_t max_idle_per_host = 32;
    std::chrono::milliseconds idle_timeout{20000};
  };
  explicit HttpClient(IoRuntime& runtime, Options options);
  explicit HttpClient(IoRuntime& runtime) : HttpClient(runtime, Options{}) {}
  // Closes the idle connections; requests in flight finish normally.
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  void Fetch(std::string url, HttpRequest request, std::function<void(Result<HttpResponse>)> done,
             std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));

  // Idle connections now pooled, and connections opened so far (for tests and metrics).
  size_t idle_connections() const;
  uint64_t connections_opened() const;

  struct Pool;

 private:
  IoRuntime& runtime_;
  std::shared_ptr<Pool> pool_;
};

// Blocking Fetch on a private one-thread runtime. Errors as Fetch; net.timeout after
// `timeout`.
Result<HttpResponse> FetchSync(std::string url, HttpRequest request,
                               std::chrono::milliseconds timeout);

}  // namespace keel::net
