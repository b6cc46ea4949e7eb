// keel::net plain types: HTTP messages, headers, URLs and the WebSocket connection/handler
// interfaces shared by the server (net/http_server.h) and the clients (net/client.h).
//
// No Boost type appears here or in any other public keel::net header: Beast/Asio are
// compiled only inside src/net/*.cc. Errors are keel::Error values in group "net":
//   net.invalid_argument   bad URL, host or option
//   net.bind_failed        the server could not bind/listen
//   net.connect_failed     resolve or TCP connect failed
//   net.handshake_failed   the WebSocket upgrade was refused (HTTP-level answer available)
//   net.io                 the connection failed mid-exchange (reset, malformed answer, ...)
//   net.timeout            a bounded wait expired
//   net.closed             the connection is closed
//   net.cancelled          the caller cancelled the operation
// Thread-safety: plain value types; WsConnection is thread-safe; see each interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/ascii.h"
#include "base/result.h"

namespace keel::net {

// Header fields in arrival order, names in their original case. Duplicates are kept.
using Headers = std::vector<std::pair<std::string, std::string>>;

// The value of the first header whose name equals `name` ASCII-case-insensitively; ""
// when there is none (use HasHeader to tell an empty value from an absent one).
std::string_view FindHeader(const Headers& headers, std::string_view name);
bool HasHeader(const Headers& headers, std::string_view name);
// ASCII case-insensitive equality (header names, tokens): base/ascii.h.
using ::keel::EqualsIgnoreCase;
// True when `name` is a non-empty RFC 9110 token and `value` has no CR, LF or NUL. The
// server and clients drop (and log) fields failing this instead of writing them, so
// untrusted values cannot inject header lines.
bool IsValidHeaderField(std::string_view name, std::string_view value);

struct HttpRequest {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // raw request target, "/path?query"
  Headers headers;
  std::string body;
  // Server side: the peer as "ip:port". Ignored by the clients.
  std::string remote_address;
};

struct HttpResponse {
  int status = 200;
  // Content-Length and Transfer-Encoding are computed by the server and ignored here.
  Headers headers;
  std::string body;
};

// A parsed "http://host[:port]/path?query" or "ws://..." URL.
struct Url {
  std::string scheme;  // lower case: "http" or "ws" (also for the +unix forms)
  std::string host;    // without brackets for IPv6 literals; "localhost" for a Unix socket
  uint16_t port = 0;   // defaulted to 80 when absent
  std::string target;  // "/path?query", "/" when absent
  // Set for http+unix:// and ws+unix://: the Unix domain socket to connect to, given
  // percent-encoded as the authority (ws+unix://%2Frun%2Fkeel.sock/envoys/connect).
  std::string unix_path;
};
// Accepts the http and ws schemes and their +unix forms (no TLS). Errors:
// net.invalid_argument.
Result<Url> ParseUrl(std::string_view url);
// The authority of a +unix URL for `path` (each byte outside [A-Za-z0-9._~-] as %XX).
std::string UnixUrlAuthority(std::string_view path);

// One WebSocket connection, server or client side. Thread-safe: every method may be
// called from any thread; the work happens on the connection's own strand.
class WsConnection {
 public:
  virtual ~WsConnection();
  // Queues one message. Messages go out in call order, one writer at a time. Dropped
  // silently once Close was called or the connection is closed.
  virtual void Send(std::string data, bool binary) = 0;
  // Sends a close frame with `code`/`reason` after every queued message was written;
  // the handler's OnClose follows when the peer answers (or the socket dies). Idempotent:
  // only the first call counts. Codes a peer may not receive (below 1000, 1004-1006, 1015,
  // 5000 and up) are sent as 1000; `reason` is cut to 123 bytes.
  virtual void Close(uint16_t code, std::string reason) = 0;
  // The peer as "ip:port".
  virtual const std::string& remote_address() const = 0;
};

// Receives the events of ONE WebSocket connection. Calls for one connection are
// serialized (never concurrent) and run on an I/O thread: they must not block.
class WsHandler {
 public:
  virtual ~WsHandler();
  // One complete message (fragments are reassembled). `binary` tells the frame opcode.
  virtual void OnMessage(std::string data, bool binary) = 0;
  // Called exactly once, last. `code`/`reason` come from the peer's close frame, or from
  // ours when we closed first; 1009 when a message exceeded the size limit; 1007 ("invalid
  // frame payload data": a text message that is not UTF-8) or 1002 ("protocol error") when
  // the peer broke the WebSocket protocol and this side failed the connection with that
  // code; 1006 and "" when the socket died without a close frame (including server
  // shutdown and a failed upgrade). The connection drops its reference to the handler
  // afterwards.
  virtual void OnClose(uint16_t code, std::string reason) = 0;
};

}  // namespace keel::net
