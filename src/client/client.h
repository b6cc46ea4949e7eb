// keel::client — the C++ client of Keel actors (actors.md §4): resolve actors by name and
// key, call actions over HTTP, send to queues, reach an actor's raw HTTP and WebSocket
// handlers, and hold persistent connections that receive events and reconnect on their
// own. Every exchange speaks the client protocol in json, cbor or bare (ClientOptions).
//
//   keel::client::Client client({.endpoint = "http://127.0.0.1:6420"});
//   auto counter = client.GetOrCreate("counter", {"room-1"});
//   auto n = counter.Call<int64_t>("increment", 5);           // stateless HTTP action
//   auto conn = counter.Connect();                              // persistent WebSocket
//   conn->On("newCount", [](const keel::Value& args) { ... });
//   auto m = conn->Call<int64_t>("increment", 1);
//
// Resolution and retries (§4.2): Get/GetOrCreate handles address the actor through the
// gateway's query form (resolved by the engine in the same request) until they learn the
// actor id (Resolve(), or a connection's Init), and directly by id after that. When a
// request fails with a scheduling error (the actor is missing, starting, stopping or was
// destroyed), the handle forgets the id, pauses ClientOptions::retry_pause and retries
// through the query form — up to 60 attempts for GetOrCreate handles and 24 for Get
// handles — so a handle outlives its actor being destroyed and recreated. GetForId handles
// never retry this way. Queue sends also retry `actor.overloaded` from the dispatch inbox.
// An error whose message says "database accessed after actor stopped" is never retried,
// whatever its code. When the attempts run out, the last scheduling error is returned.
//
// Errors are ClientError values: the actor's or the engine's `group.code` + message (+
// metadata), or `client.*` for failures on this side (see ClientError).
//
// HTTP requests reuse kept-alive connections to the engine (net::HttpClient); an action
// POST is never sent twice by the transport.
//
// Threading: a Client owns one I/O thread. Blocking calls may be made from any thread
// except that I/O thread (i.e. not from inside a connection callback: use the *Async
// forms there). Handles are cheap copyable values sharing the client; a handle or
// connection must not outlive its Client. Destroying a Client ends the blocking calls still
// waiting on other threads (client.closed) and disposes its connections. Connection
// callbacks run on the I/O thread, one at a time, never while the connection holds its lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "net/blocking_ws_client.h"
#include "net/http.h"
#include "value/typed.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::client {

using ActorKey = std::vector<std::string>;

// A failed client call. group/code/message/metadata are exactly what the actor or the
// engine reported; errors raised by the client itself are in group "client":
//   client.invalid_argument     bad endpoint, name or key
//   client.connect_failed       the engine could not be reached
//   client.timeout              the call's deadline passed
//   client.connection_lost      a WebSocket closed with the call in flight (it may or may
//                               not have run)
//   client.closed               the connection was disposed, or the Client destroyed
//   client.get_params_failed    the connection's params callback failed
//   client.bad_response         the engine answered with something that is not the protocol
//   client.protocol_error       a connection's WebSocket failed at the protocol level:
//                               closed with 1002 (protocol error), 1007 (a text message
//                               that is not UTF-8) or 1009 (a message over a size limit),
//                               whichever side detected it; metadata {"close_code": N}
struct ClientError {
  std::string group, code, message;
  std::optional<Value> metadata;
  int http_status = 0;  // the HTTP status when the error came in an HTTP response

  bool Is(std::string_view g, std::string_view c) const { return group == g && code == c; }
  std::string Id() const { return group + "." + code; }  // "group.code"
  std::string ToString() const;                          // "group.code: message"
  static ClientError From(const Error& error);
  static ClientError Make(std::string group, std::string code, std::string message);
};

template <typename T>
using ClientResult = Result<T, ClientError>;
using ClientStatus = Result<void, ClientError>;

struct ClientOptions {
  // The engine's gateway (http:// only: otherwise every call fails with
  // client.invalid_argument).
  std::string endpoint = "http://127.0.0.1:6420";
  // REST: `Authorization: Bearer`; the gateway: x-rivet-token (HTTP), rvt-token (query-form
  // URLs), rivet_token.* (WebSockets).
  std::string token;
  std::string namespace_name = "default";
  std::string pool = "default";  // pool that GetOrCreate/Create place new actors in
  wire::Encoding encoding = wire::Encoding::kBare;
  net::Headers headers;  // extra headers on every HTTP request
  std::chrono::milliseconds request_timeout{30000};  // per HTTP request
  std::chrono::milliseconds retry_pause{100};        // between scheduling-error retries
};

// An actor as the REST API describes it (actors.md §7).
struct ActorInfo {
  std::string actor_id, name;
  std::optional<ActorKey> key;
  std::string crash_policy, pool;
  int64_t create_ts = 0;
  std::optional<int64_t> start_ts, connectable_ts, sleep_ts, destroy_ts;
  std::optional<std::string> error;  // the engine's error text, when it has one
  std::string json;                  // the whole record as the engine sent it
};

// How a handle (and the connections it opens) authenticate to the actor: fixed params,
// or a callback asked again before every connection attempt (a failure is reported as
// client.get_params_failed). Params travel as JSON.
struct HandleOptions {
  std::optional<Value> params;
  std::function<Result<Value>()> get_params;
};
struct GetOrCreateOptions : HandleOptions {
  std::optional<Value> input;  // handed to createState/onCreate when this call creates it
  std::string region;          // preferred datacenter
};
struct CreateOptions : HandleOptions {
  std::optional<Value> input;
  std::string region;
};

struct QueueSendOptions {
  bool wait = false;  // wait for a consumer to complete the message
  std::optional<std::chrono::milliseconds> timeout;
};
struct QueueSendResult {
  std::string status;  // "completed" | "timedOut"
  std::optional<Value> response;
};

enum class ConnStatus { kIdle, kConnecting, kConnected, kDisconnected };
std::string_view ConnStatusName(ConnStatus status);

namespace internal {
// An action's result as R (client.bad_response when the value does not map to R).
template <typename R>
ClientResult<R> Typed(ClientResult<Value> out) {
  if (!out.has_value()) return Unexpected(std::move(out.error()));
  if constexpr (std::is_same_v<R, Value>) {
    return std::move(*out);
  } else {
    auto typed = FromValue<R>(*out);
    if (!typed.has_value()) return Unexpected(ClientError::Make("client", "bad_response", typed.error().message()));
    return std::move(*typed);
  }
}
}  // namespace internal

class ActorConn;
struct ClientShared;
struct HandleState;

// A reference to one actor (by id, or by name + key). Copies share the cached id.
class ActorHandle {
 public:
  const std::string& name() const;

  // The actor id: cached, else looked up (Get: GET /actors; GetOrCreate: PUT /actors).
  ClientResult<std::string> Resolve();
  // The URL a plain HTTP client can use for this actor: the direct form for GetForId
  // handles, the query form (rvt-namespace, rvt-method, ...) otherwise. No trailing '/'.
  std::string GatewayUrl() const;

  // A stateless action over HTTP; `args` is the argument array.
  ClientResult<Value> Action(std::string_view action, Value args);
  template <typename R = Value, typename... Args>
  ClientResult<R> Call(std::string_view action, Args&&... args) {
    return internal::Typed<R>(Action(action, Value(Value::Array{ToValue(std::forward<Args>(args))...})));
  }

  // POST /queue/<name>.
  ClientResult<QueueSendResult> Send(std::string_view queue, Value body, QueueSendOptions options = {});

  // A raw request to the actor's onRequest: `path` (with optional "?query") is appended
  // to /request/; request.target is ignored. A missing method means GET.
  ClientResult<net::HttpResponse> Fetch(std::string_view path, net::HttpRequest request = {});

  // A raw WebSocket to the actor's onWebSocket at /websocket/<path> (query kept).
  ClientResult<std::unique_ptr<net::BlockingWsClient>> WebSocket(
      std::string_view path = "", std::vector<std::string> protocols = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(15));

  // A persistent connection; it starts connecting at once (status kConnecting). `setup`,
  // when given, runs first (on this thread) so listeners registered there see everything
  // from the first attempt on.
  std::shared_ptr<ActorConn> Connect(const std::function<void(ActorConn&)>& setup = nullptr);

 private:
  friend class Client;
  friend class ActorConn;
  explicit ActorHandle(std::shared_ptr<HandleState> state) : state_(std::move(state)) {}
  std::shared_ptr<HandleState> state_;
};

// A persistent connection to an actor (actors.md §4.6, §4.10): actions with ids, event
// subscriptions, connection state on the actor. On an unexpected close it reconnects
// forever (250 ms doubling to 30 s), re-resolving dynamic handles, re-subscribing and
// sending what was queued. Actions called while not connected are queued for the
// connection, but an attempt that fails before Init (refused, a failed setup, ...) fails
// them with its error, reported once to OnError; with none queued, the next action fails
// with it at once. A scheduling error of a dynamic handle (actor missing or stopping) is
// the exception: the actions wait, and the next attempt re-resolves.
class ActorConn : public std::enable_shared_from_this<ActorConn> {
 public:
  // Removes the listener it was returned with; once it returns, that listener is not called
  // again (a call running on the I/O thread ends first, so do not call it while holding a
  // lock a listener takes; from a listener it returns at once). Idempotent.
  using Unsubscribe = std::function<void()>;
  using ActionCallback = std::function<void(ClientResult<Value>)>;

  ~ActorConn();

  ConnStatus status() const;
  bool is_connected() const;
  std::string actor_id() const;       // from the last Init ("" before)
  std::string connection_id() const;  // from the last Init ("" before)

  // Waits until the connection is open (client.timeout otherwise; client.closed after
  // Dispose).
  ClientStatus WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Sends (or queues) an action; `done` runs once on the I/O thread.
  void ActionAsync(std::string action, Value args, ActionCallback done);
  // Blocks until the answer, or client.timeout after `timeout` (the action is withdrawn;
  // one already sent may still run). Any thread but the client's I/O thread.
  ClientResult<Value> Action(std::string_view action, Value args,
                             std::chrono::milliseconds timeout = std::chrono::seconds(60));
  template <typename R = Value, typename... Args>
  ClientResult<R> Call(std::string_view action, Args&&... args) {
    return internal::Typed<R>(Action(action, Value(Value::Array{ToValue(std::forward<Args>(args))...})));
  }

  // Event listeners get the event's argument array. The first listener of a name
  // subscribes on the actor; removing the last unsubscribes.
  Unsubscribe On(std::string event, std::function<void(const Value& args)> listener);
  Unsubscribe Once(std::string event, std::function<void(const Value& args)> listener);
  // Connection-level errors (setup failures, get_params failures, refused subscriptions).
  Unsubscribe OnError(std::function<void(const ClientError&)> listener);
  Unsubscribe OnOpen(std::function<void()> listener);
  // When an open connection closes (Dispose, or a drop before reconnecting).
  Unsubscribe OnClose(std::function<void()> listener);
  Unsubscribe OnStatusChange(std::function<void(ConnStatus)> listener);

  // Closes for good: pending actions fail with client.closed, OnClose listeners run once,
  // no reconnection. Idempotent. Once it returns, no listener runs except those notices
  // (OnClose, OnStatusChange to kDisconnected): a listener call already running ends
  // first, so Dispose must not be called while holding a lock such a listener takes.
  // Called from a listener, it returns at once and the calls queued behind that one are
  // dropped. Listeners run on the client's I/O thread, one at a time.
  void Dispose();

  struct Impl;

 private:
  friend class ActorHandle;
  explicit ActorConn(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  // Blocking calls still waiting on other threads return client.closed, connections are
  // disposed (their actions fail with client.closed, ActionAsync callbacks included, run on
  // this thread once the I/O thread is gone), then the I/O thread stops. Not from a
  // connection callback.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const;

  ActorHandle Get(std::string name, ActorKey key = {}, HandleOptions options = {});
  ActorHandle GetOrCreate(std::string name, ActorKey key = {}, GetOrCreateOptions options = {});
  // Creates now (POST /actors); actor.duplicate_key when the key is taken.
  ClientResult<ActorHandle> Create(std::string name, ActorKey key = {}, CreateOptions options = {});
  ActorHandle GetForId(std::string name, std::string actor_id, HandleOptions options = {});

  // REST: actors of `name` (optionally with `key`); destroyed ones only when asked.
  ClientResult<std::vector<ActorInfo>> ListActors(std::string_view name,
                                                  std::optional<ActorKey> key = std::nullopt,
                                                  bool include_destroyed = false);
  ClientResult<ActorInfo> GetActor(std::string_view actor_id);
  // Actor names the connected runtimes registered.
  ClientResult<std::vector<std::string>> ListActorNames();
  // Destroys the actor and waits for the engine to finish.
  ClientStatus DestroyActor(std::string_view actor_id);
  // Puts the actor to sleep (POST /actors/{id}/sleep).
  ClientStatus SleepActor(std::string_view actor_id);

 private:
  std::shared_ptr<ClientShared> shared_;
};

}  // namespace keel::client
