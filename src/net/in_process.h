// In-process WebSockets: a client in this process reaches an HttpServer handler of this
// process without a socket — for a runtime hosted in the engine's own process, where each
// envoy frame would otherwise cross the kernel twice (docs/engine.md, "A runtime in the
// engine's process").
//
// ConnectInProcess behaves like ConnectWebSocket (net/client.h) with the server's handler
// as the far end: the handler gets an HttpExchange for the upgrade request and answers it
// with AcceptWebSocket (the connection opens) or Respond (net.handshake_failed with that
// answer). After that, each side's WsConnection::Send reaches the other side's
// WsHandler::OnMessage, and Close ends both sides with the closer's code and reason.
//
// Delivery: each side's handler gets its events one at a time, in send order, never
// re-entrantly. The thread that sends delivers at once when that handler is idle (a
// message costs no thread hand-off); while the handler is busy — on another thread, or
// further up the sender's own stack — the event waits in order and the busy thread
// delivers it when the current event returns. Handlers must therefore not block, as on
// an I/O thread. The client's handler receives nothing before `done` has returned.
// Thread-safety: as for ConnectWebSocket; the connections are thread-safe.
#pragma once

#include <functional>
#include <memory>

#include "base/result.h"
#include "net/client.h"
#include "net/http.h"
#include "net/http_server.h"
#include "net/io_runtime.h"

namespace keel::net {

// Opens a WebSocket to `server` (called with the upgrade request: GET of the URL's target,
// the options' headers, Sec-WebSocket-Protocol with the offered subprotocols, and
// remote_address "in-process"). `done` runs once, on a `runtime` thread, never inside this
// call: with the connection and the 101 answer (the handler's headers plus the chosen
// Sec-WebSocket-Protocol), or with net.handshake_failed and the handler's non-101 answer
// (an exchange dropped unanswered counts as 500), or net.invalid_argument for a bad URL.
// Options' max_message is enforced on both directions (a larger message closes with 1009).
// REQUIRES: `runtime` outlives the connection.
void ConnectInProcess(
    IoRuntime& runtime, HttpServer::Handler server, WsConnectOptions options,
    std::shared_ptr<WsHandler> handler,
    std::function<void(Result<std::shared_ptr<WsConnection>> conn, HttpResponse handshake)> done);

}  // namespace keel::net
