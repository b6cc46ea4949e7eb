// HttpServer: an HTTP/1.1 (keep-alive) + WebSocket server on an IoRuntime, for the
// engine's REST API, gateway and envoy endpoint.
//
// Every request is delivered to one handler as a shared HttpExchange. The handler runs on
// an I/O thread and must not block; it answers now or later, from any thread, through the
// exchange. A connection handles one exchange at a time (the next request is read only
// after the previous answer is written). WebSocket upgrades on any path reach the handler
// too; it decides between Respond (refuse) and AcceptWebSocket.
// HEAD: the handler answers a HEAD request as it would the GET; the server writes the head
// of that answer only (RFC 9110 §9.3.2), Content-Length stating the size of the body it
// left out. A streamed answer to HEAD gets its head, then the connection closes (the
// exchange's OnPeerGone fires) rather than wait for a stream nobody reads.
// Protocol errors never reach the handler: a body over max_request_body gets 413, a
// malformed request 400, oversized headers 431 (ServerOptions::refusal renders them), each
// with `Connection: close`; the server then stops sending and reads what the client still
// sends, for at most 2 s and 16 MiB, so the client reads the answer rather than a reset,
// and closes the connection.
// Thread-safety: HttpServer and HttpExchange methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"
#include "net/http.h"
#include "net/io_runtime.h"

namespace keel::net {

// One request and its answer. Exactly one of Respond, StartStream (then WriteChunk...,
// FinishStream) or AcceptWebSocket may be used; a second answer is logged and ignored.
// If the last reference drops while unanswered the client gets 500; if it drops in the
// middle of a stream the connection is aborted (the client sees a truncated body).
// Answers sent after the client disconnected are dropped silently. Exchanges and the
// WsConnections they return may outlive the HttpServer and even the IoRuntime (answers
// then do nothing).
class HttpExchange {
 public:
  virtual ~HttpExchange();

  virtual const HttpRequest& request() const = 0;
  // The same request, for moving fields out (e.g. the body) instead of copying them. Not
  // synchronized: only the code currently handling the exchange may touch it.
  virtual HttpRequest& mutable_request() = 0;
  // True for a WebSocket upgrade request (GET, Connection: upgrade, Upgrade: websocket).
  // AcceptWebSocket validates the key and version and answers 400 itself when they are bad.
  virtual bool IsWebSocketUpgrade() const = 0;

  virtual void Respond(HttpResponse response) = 0;

  // A chunked (Transfer-Encoding: chunked) response; also what text/event-stream uses.
  // Chunks go out in call order; an empty chunk is skipped (it would end the body).
  virtual void StartStream(int status, Headers headers) = 0;
  virtual void WriteChunk(std::string data) = 0;
  virtual void FinishStream() = 0;

  // Registers `fn`, called at most once, on an I/O thread, if the client disconnects (or
  // the server closes the connection) before the answer is complete. Meant for long
  // streams and slow answers. A later call replaces the earlier callback; a call that
  // reaches the connection once the answer is complete (it may be made from any thread) is
  // ignored, so `fn` never outlives its exchange.
  virtual void OnPeerGone(std::function<void()> fn) = 0;

  // Completes the upgrade: the 101 response carries `Sec-WebSocket-Protocol: subprotocol`
  // when it is non-empty, plus `headers`. Returns the connection at once (sends queue
  // until the handshake is written); `handler` receives its events, and gets OnClose(1006)
  // if the handshake fails. Returns nullptr (and answers 400) when the request is not an
  // upgrade, nullptr without answering when the exchange was already answered.
  virtual std::shared_ptr<WsConnection> AcceptWebSocket(std::string subprotocol,
                                                        std::shared_ptr<WsHandler> handler,
                                                        Headers headers = {}) = 0;
};

// A request the server refuses itself, before any handler sees it.
struct RefusedRequest {
  // 400 (malformed request), 413 (body over max_request_body), 431 (request line and
  // header fields over max_header_bytes), or — for a WebSocket upgrade request whose
  // handshake fields are wrong (RFC 6455 §4.2.1) — 400, or 426 for a Sec-WebSocket-Version
  // other than 13 (the answer then always carries `Sec-WebSocket-Version: 13`).
  int status = 400;
  // What the default answer says: "malformed request", "request body too large",
  // "request header too large", or which handshake field is wrong.
  std::string_view reason;
  // The header fields parsed before the refusal (in arrival order, as in HttpRequest): all
  // of them for a 413; for a 431 and a 400 those before the limit or the fault.
  Headers headers;
  // A WebSocket upgrade refused for its handshake fields (no handler saw it).
  bool websocket_handshake = false;
};

struct ServerOptions {
  // Numeric IPv4/IPv6 address or "localhost". Default: loopback only.
  std::string host = "127.0.0.1";
  // 0 picks a free port (see HttpServer::port()).
  uint16_t port = 0;
  // Larger request bodies are answered 413 and the connection is closed.
  size_t max_request_body = size_t{64} << 20;
  // Larger incoming WebSocket messages close the connection with 1009. Set explicitly on
  // every connection (Beast's own default is much lower). Server-side WebSockets also get
  // a 30 s handshake limit and are pinged when idle; a peer silent for 300 s is dropped
  // (OnClose 1006).
  size_t max_ws_message = size_t{64} << 20;
  // Limit on the request line + header fields; larger gets 431.
  size_t max_header_bytes = size_t{64} << 10;
  // Bounds each wait for a request (keep-alive idle time included, so idle connections
  // close after it) and each write of an answer piece. Not applied while the handler is
  // working on an answer, nor to WebSockets. Zero disables it.
  std::chrono::milliseconds io_timeout{60000};
  // SO_SNDBUF of each accepted connection, when > 0 (the kernel then stops sizing it
  // itself): bounds the kernel memory a slow reader can hold per connection.
  size_t socket_send_buffer = 0;
  // When set, the server also listens on a Unix domain socket at this path (the same
  // handler serves both), for clients on this host: no TCP stack between them. The socket
  // is made owner-only (0600); a stale socket file left by a dead process is replaced, a
  // live one is an error. Removed when the server goes away.
  std::string unix_path;
  // Renders the answer to a RefusedRequest: its headers and body (Content-Length,
  // Transfer-Encoding and Connection are the server's; the status is always the refusal's).
  // Called on an I/O thread; must not block. Unset: text/plain `reason`.
  std::function<HttpResponse(const RefusedRequest&)> refusal;
};

class HttpServer {
 public:
  using Handler = std::function<void(std::shared_ptr<HttpExchange>)>;

  // Binds and listens before returning (port 0 picks a free port), then accepts on
  // `runtime`. `handler` is called on I/O threads, possibly concurrently for different
  // connections. Errors: net.invalid_argument (host, unix_path too long), net.bind_failed.
  // REQUIRES: `runtime` outlives the server.
  static Result<std::unique_ptr<HttpServer>> Start(IoRuntime& runtime, ServerOptions options,
                                                   Handler handler);

  // Closes the listener and every connection (WebSockets see OnClose(1006)), then waits
  // until no connection code runs any more, so the handler is never called after it
  // returns. REQUIRES: not called from a runtime thread of a running runtime (it would not
  // wait then), e.g. not from inside the handler.
  ~HttpServer();

  uint16_t port() const;
  const std::string& host() const;

  // Stops accepting new connections; existing ones continue. Idempotent.
  void StopAccepting();

  // Connections currently open (HTTP and WebSocket).
  size_t open_connections() const;

  // Answers written to the socket by the thread that made them (HttpExchange::Respond off
  // the connection's strand while the connection waited for it), not queued on the strand.
  uint64_t direct_answers() const;

  // Requests whose header arrived without the rest of its body, for which the server sent
  // the header's ACK at once (TCP_QUICKACK) rather than leave it to the reply: a client
  // with Nagle's algorithm on holds the body until that ACK arrives.
  uint64_t forced_acks() const;

  struct State;  // implementation detail

 private:
  explicit HttpServer(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace keel::net
