#include "client/client.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/ascii.h"
#include "base/clock.h"
#include "engine/gateway/actor_key.h"
#include "engine/gateway/subprotocols.h"
#include "engine/gateway/url.h"
#include "net/client.h"
#include "net/io_runtime.h"

namespace keel::client {

namespace gw = keel::engine::gateway;
using json = nlohmann::json;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------
// ClientError

std::string ClientError::ToString() const { return Id() + ": " + message; }

ClientError ClientError::From(const Error& error) {
  return ClientError{error.group(), error.code(), error.message(), std::nullopt, 0};
}

ClientError ClientError::Make(std::string group, std::string code, std::string message) {
  return ClientError{std::move(group), std::move(code), std::move(message), std::nullopt, 0};
}

std::string_view ConnStatusName(ConnStatus status) {
  switch (status) {
    case ConnStatus::kIdle: return "idle";
    case ConnStatus::kConnecting: return "connecting";
    case ConnStatus::kConnected: return "connected";
    case ConnStatus::kDisconnected: return "disconnected";
  }
  return "unknown";
}

namespace {

ClientError Err(std::string code, std::string message) {
  return ClientError::Make("client", std::move(code), std::move(message));
}

// Transport failures of keel::net as client errors.
ClientError FromNet(const Error& e) {
  if (e.Is("net", "timeout")) return Err("timeout", e.message());
  if (e.Is("net", "invalid_argument")) return Err("invalid_argument", e.message());
  if (e.Is("net", "connect_failed")) return Err("connect_failed", e.message());
  return Err("connect_failed", e.ToString());
}

// Whether `text` contains `part`, ignoring ASCII case.
bool ContainsNoCase(std::string_view text, std::string_view part) {
  return std::search(text.begin(), text.end(), part.begin(), part.end(),
                     [](char a, char b) { return AsciiLower(a) == AsciiLower(b); }) != text.end();
}

// Errors that mean "the actor is not reachable at this id right now" (actors.md §4.2): a
// dynamic handle forgets its id and retries through the gateway's query form. An error
// saying the database was accessed after the actor stopped is not one, whatever its code
// (§4.2: the action ran into the stop, running it again is not the remedy).
bool IsSchedulingError(const ClientError& e) {
  if (ContainsNoCase(e.message, "database accessed after actor stopped")) return false;
  if (e.group == "actor") {
    static const char* const kCodes[] = {"not_found",   "starting",     "stopping",
                                         "destroying",  "not_configured", "dropped_reply",
                                         "destroyed_while_waiting_for_ready",
                                         "destroyed_during_creation"};
    for (const char* c : kCodes) {
      if (e.code == c) return true;
    }
  }
  return false;
}

bool IsDispatchOverload(const ClientError& e) {
  if (!e.Is("actor", "overloaded") || !e.metadata) return false;
  const Value* channel = e.metadata->Find("channel");
  return channel != nullptr && channel->is_text() && channel->as_text() == "dispatch_inbox";
}

std::string HeaderText(const net::Headers& headers, std::string_view name) {
  return std::string(net::FindHeader(headers, name));
}

// The structured error carried by a non-2xx response: an HttpResponseError in `encoding`,
// the request's (the actor answers in it, actors.md §4.4), or in JSON (the gateway's and
// the REST API's errors, §5.9, which say so in their content type). A body that is not in
// `encoding` is tried as JSON too (a proxy's JSON without its content type); anything else
// is client.bad_response with the status and the start of the body.
ClientError ErrorFromResponse(const net::HttpResponse& res, wire::Encoding encoding) {
  const std::string type = HeaderText(res.headers, "content-type");
  if (type.find("json") != std::string::npos) encoding = wire::Encoding::kJson;
  const ByteView body(reinterpret_cast<const uint8_t*>(res.body.data()), res.body.size());
  auto decoded = wire::DecodeHttpResponseError(body, encoding);
  if (!decoded.has_value() && encoding != wire::Encoding::kJson) {
    decoded = wire::DecodeHttpResponseError(body, wire::Encoding::kJson);
  }
  if (decoded.has_value() && !decoded->group.empty() && !decoded->code.empty()) {
    ClientError e{decoded->group, decoded->code, decoded->message, decoded->metadata, res.status};
    return e;
  }
  std::string message = "HTTP " + std::to_string(res.status);
  if (!res.body.empty()) {
    message += " with a body that is not an error in " + std::string(wire::EncodingName(encoding)) +
               ": " + res.body.substr(0, 200);
  }
  ClientError e = Err("bad_response", std::move(message));
  e.http_status = res.status;
  return e;
}

// "group.code" or "group.code#ray" close reasons as an error; nullopt otherwise.
std::optional<ClientError> ErrorFromCloseReason(const std::string& reason) {
  std::string_view r(reason);
  if (auto hash = r.find('#'); hash != std::string_view::npos) r = r.substr(0, hash);
  const auto dot = r.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= r.size()) return std::nullopt;
  for (char c : r) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) ||
          c == '_' || c == '.')) {
      return std::nullopt;
    }
  }
  return ClientError::Make(std::string(r.substr(0, dot)), std::string(r.substr(dot + 1)), reason);
}

// A WebSocket failed at the protocol level (RFC 6455 §7.4.1): one side broke the protocol
// and the other failed the connection with 1002 (protocol error), 1007 (a text message
// that is not UTF-8) or 1009 (a message over its size limit) — net::WsHandler::OnClose
// reports these codes for the failures Beast detects here, and the engine's close frame
// carries them for those it detects. client.protocol_error, with the code in its metadata;
// nullopt for any other close.
std::optional<ClientError> ErrorFromProtocolClose(uint16_t code, const std::string& reason) {
  std::string what;
  switch (code) {
    case 1002:
      what = "a WebSocket protocol error";
      break;
    case 1007:
      what = "invalid message data (a text message that is not UTF-8)";
      break;
    case 1009:
      what = "a message too big to take";
      break;
    default:
      return std::nullopt;
  }
  ClientError e =
      ClientError::Make("client", "protocol_error",
                        "the WebSocket failed with " + what + " (code " + std::to_string(code) +
                            (reason.empty() ? "" : ", " + reason) + ")");
  e.metadata = Value::Object({{"close_code", Value(int64_t{code})}});
  return e;
}

ByteView View(const std::string& s) { return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }
std::string ToString(const Bytes& b) { return std::string(b.begin(), b.end()); }

// Splits "a/b?x=1" into ("a/b", "x=1"), dropping a fragment and leading slashes.
std::pair<std::string, std::string> SplitUserPath(std::string_view path) {
  if (auto hash = path.find('#'); hash != std::string_view::npos) path = path.substr(0, hash);
  std::string_view query;
  if (auto q = path.find('?'); q != std::string_view::npos) {
    query = path.substr(q + 1);
    path = path.substr(0, q);
  }
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  return {std::string(path), std::string(query)};
}

ClientError OnIoThreadError() {
  return Err("invalid_argument", "blocking client call made on the client's I/O thread");
}
ClientError ClientGoneError() { return Err("closed", "the client was destroyed"); }

// `timeout` as a bound to wait with, or none for one too long to add to the clock's now
// (milliseconds::max(), the natural "no timeout", would overflow and expire at once).
std::optional<std::chrono::milliseconds> Bounded(std::chrono::milliseconds timeout) {
  constexpr std::chrono::milliseconds kForever = std::chrono::hours(24 * 365 * 100);
  if (timeout >= kForever) return std::nullopt;
  return timeout;
}

// The answer a blocking call waits for: set once, by the operation it started or by ~Client
// (client.closed), whichever comes first; later sets are ignored.
template <typename T>
struct Waiter {
  std::atomic<bool> set{false};
  std::promise<ClientResult<T>> promise;
  void Set(ClientResult<T> r) {
    if (!set.exchange(true)) promise.set_value(std::move(r));
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Shared state

struct ClientShared {
  ClientOptions options;
  // ~Client ends every blocking call still waiting (client.closed) and disposes every
  // connection, so that a call in flight on another thread neither hangs nor waits for
  // work the stopped runtime will never do. Guarded by life_mu; a blocking call starts its
  // operation under it, so none starts on the runtime after ~Client stopped it.
  std::mutex life_mu;
  bool closed = false;
  uint64_t next_waiter = 0;
  std::map<uint64_t, std::function<void()>> waiters;  // each ends one blocking call
  std::vector<std::weak_ptr<ActorConn::Impl>> conns;

  // Starts an operation (`start` gets the completion; it must not block nor complete
  // synchronously) and blocks until it completes, the Client is destroyed (client.closed)
  // or `timeout` passes (nullopt then, the operation left running). Refused on the I/O
  // thread, which would deadlock.
  template <typename T>
  std::optional<ClientResult<T>> WaitFor(
      const std::function<void(std::function<void(ClientResult<T>)>)>& start,
      std::optional<std::chrono::milliseconds> timeout) {
    if (io->InRuntimeThread()) return ClientResult<T>(Unexpected(OnIoThreadError()));
    auto w = std::make_shared<Waiter<T>>();
    auto fut = w->promise.get_future();
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(life_mu);
      if (closed) return ClientResult<T>(Unexpected(ClientGoneError()));
      id = next_waiter++;
      waiters.emplace(id, [w] { w->Set(Unexpected(ClientGoneError())); });
      start([w](ClientResult<T> r) { w->Set(std::move(r)); });
    }
    bool ready = true;
    if (timeout) {
      ready = fut.wait_for(*timeout) == std::future_status::ready;
    } else {
      fut.wait();
    }
    {
      std::lock_guard<std::mutex> lock(life_mu);
      waiters.erase(id);
    }
    if (!ready) return std::nullopt;
    return fut.get();
  }
  template <typename T>
  ClientResult<T> Wait(const std::function<void(std::function<void(ClientResult<T>)>)>& start) {
    return *WaitFor<T>(start, std::nullopt);
  }

  std::string base;  // "http://host:port"
  std::string ws_base;  // "ws://host:port"
  std::optional<ClientError> endpoint_error;
  std::unique_ptr<net::IoRuntime> io;
  // Kept-alive connections to the engine (declared after `io`: destroyed before it).
  std::unique_ptr<net::HttpClient> http;

  net::Headers BaseHeaders() const {
    net::Headers h = options.headers;
    if (!options.token.empty()) h.emplace_back("authorization", "Bearer " + options.token);
    return h;
  }
  // For a request to an actor through the gateway, which reads its token from the URL or
  // from x-rivet-token, never from Authorization (actors.md §5.2): only the query form's
  // URL carries one (rvt-token), so without the header a request by id is api.forbidden.
  net::Headers GatewayHeaders() const {
    net::Headers h = BaseHeaders();
    if (!options.token.empty()) h.emplace_back("x-rivet-token", options.token);
    return h;
  }

  // One HTTP exchange on the client's runtime.
  void FetchAsync(std::string url, net::HttpRequest req, std::function<void(ClientResult<net::HttpResponse>)> done) {
    if (endpoint_error) {
      io->Post([done = std::move(done), e = *endpoint_error] { done(Unexpected(e)); });
      return;
    }
    http->Fetch(std::move(url), std::move(req),
                [done = std::move(done)](Result<net::HttpResponse> res) {
                  if (!res.has_value()) return done(Unexpected(FromNet(res.error())));
                  done(std::move(*res));
                },
                options.request_timeout);
  }

  ClientResult<net::HttpResponse> FetchBlocking(std::string url, net::HttpRequest req) {
    return Wait<net::HttpResponse>([&](std::function<void(ClientResult<net::HttpResponse>)> done) {
      FetchAsync(std::move(url), std::move(req), std::move(done));
    });
  }

  // REST call with a JSON body; the parsed JSON answer or the structured error.
  void RestAsync(std::string method, std::string path, std::optional<json> body,
                 std::function<void(ClientResult<json>)> done) {
    net::HttpRequest req;
    req.method = std::move(method);
    req.headers = BaseHeaders();
    if (body) {
      req.headers.emplace_back("content-type", "application/json");
      req.body = body->dump();
    }
    FetchAsync(base + path, std::move(req), [done = std::move(done)](ClientResult<net::HttpResponse> res) {
      if (!res.has_value()) return done(Unexpected(std::move(res.error())));
      if (res->status < 200 || res->status >= 300) return done(Unexpected(ErrorFromResponse(*res, wire::Encoding::kJson)));
      json j = json::parse(res->body, nullptr, false);
      if (j.is_discarded()) return done(Unexpected(Err("bad_response", "the engine answered with invalid JSON")));
      // Every REST answer is an object (actors.md §7); the callers index it by name.
      if (!j.is_object()) {
        return done(
            Unexpected(Err("bad_response", "the engine answered with JSON that is not an object: " +
                                               res->body.substr(0, 200))));
      }
      done(std::move(j));
    });
  }

  ClientResult<json> Rest(std::string method, std::string path, std::optional<json> body = std::nullopt) {
    return Wait<json>([&](std::function<void(ClientResult<json>)> done) {
      RestAsync(std::move(method), std::move(path), std::move(body), std::move(done));
    });
  }

  std::string NamespaceQuery() const { return "namespace=" + gw::PercentEncode(options.namespace_name); }
};

namespace {

ClientResult<ActorInfo> ParseActorInfo(const json& a) {
  if (!a.is_object() || !a.contains("actor_id") || !a["actor_id"].is_string()) {
    return Unexpected(Err("bad_response", "actor record without actor_id"));
  }
  // Fields of another type than expected are read as absent (json::value would throw).
  auto text = [&](const char* f) -> std::string {
    auto it = a.find(f);
    return it != a.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  ActorInfo info;
  info.actor_id = a["actor_id"].get<std::string>();
  info.name = text("name");
  if (a.contains("key") && a["key"].is_string()) {
    auto key = gw::ParseActorKey(a["key"].get<std::string>());
    if (key.has_value()) info.key = std::move(*key);
  }
  info.crash_policy = text("crash_policy");
  info.pool = text("runner_name_selector");
  auto ts = [&](const char* f) -> std::optional<int64_t> {
    if (a.contains(f) && a[f].is_number_integer()) return a[f].get<int64_t>();
    return std::nullopt;
  };
  info.create_ts = ts("create_ts").value_or(0);
  info.start_ts = ts("start_ts");
  info.connectable_ts = ts("connectable_ts");
  info.sleep_ts = ts("sleep_ts");
  info.destroy_ts = ts("destroy_ts");
  if (a.contains("error") && !a["error"].is_null()) {
    info.error = a["error"].is_string() ? a["error"].get<std::string>() : a["error"].dump();
  }
  info.json = a.dump();
  return info;
}

}  // namespace

enum class HandleKind { kGet, kGetOrCreate, kId };

struct HandleState {
  std::shared_ptr<ClientShared> client;
  HandleKind kind = HandleKind::kId;
  std::string name;
  ActorKey key;
  HandleOptions options;
  std::optional<Value> input;
  std::string region;

  std::mutex mu;
  std::string actor_id;  // cached; always set for kId

  std::string CachedId() {
    std::lock_guard<std::mutex> lock(mu);
    return actor_id;
  }
  void SetId(std::string id) {
    if (kind == HandleKind::kId) return;
    std::lock_guard<std::mutex> lock(mu);
    actor_id = std::move(id);
  }
  void ForgetId() {
    if (kind == HandleKind::kId) return;
    std::lock_guard<std::mutex> lock(mu);
    actor_id.clear();
  }
  int MaxAttempts() const {
    switch (kind) {
      case HandleKind::kGetOrCreate: return 60;
      case HandleKind::kGet: return 24;
      case HandleKind::kId: return 1;
    }
    return 1;
  }

  // The connection params for one request/attempt (nullopt: none).
  ClientResult<std::optional<Value>> Params() {
    if (options.get_params) {
      auto p = options.get_params();
      if (!p.has_value()) {
        return Unexpected(Err("get_params_failed", p.error().ToString()));
      }
      return std::optional<Value>(std::move(*p));
    }
    return options.params;
  }

  // The gateway URL of `rest` (a path starting with '/', or empty) plus the user's raw
  // query: direct by id when known, otherwise the query form. nullopt when the key cannot
  // be written in the query form (then the caller resolves over REST first).
  // By the cached actor id when there is one (and `by_id`), else by key (the gateway's query
  // form, which resolves — and for getOrCreate creates — the actor itself).
  std::optional<std::string> Url(const std::string& prefix, std::string_view rest, std::string_view user_query,
                                 bool by_id = true) {
    std::string id = by_id || kind == HandleKind::kId ? CachedId() : std::string();
    std::string url = prefix + "/gateway/";
    if (!id.empty()) {
      url += gw::PercentEncode(id);
      url += rest;
      if (!user_query.empty()) {
        url += '?';
        url += user_query;
      }
      return url;
    }
    auto key_text = gw::FormatGatewayKey(key);
    if (!key_text.has_value()) return std::nullopt;
    url += gw::PercentEncode(name);
    url += rest;
    url += '?';
    if (!user_query.empty()) {
      url += user_query;
      url += '&';
    }
    const auto& o = client->options;
    url += "rvt-namespace=" + gw::PercentEncode(o.namespace_name);
    url += kind == HandleKind::kGet ? "&rvt-method=get" : "&rvt-method=getOrCreate";
    if (!key.empty()) url += "&rvt-key=" + gw::PercentEncode(*key_text);
    if (kind == HandleKind::kGetOrCreate) {
      url += "&rvt-runner=" + gw::PercentEncode(o.pool);
      url += "&rvt-crash-policy=sleep";
      if (input) url += "&rvt-input=" + gw::Base64UrlEncode(EncodeCbor(*input));
      if (!region.empty()) url += "&rvt-region=" + gw::PercentEncode(region);
    }
    if (!o.token.empty()) url += "&rvt-token=" + gw::PercentEncode(o.token);
    return url;
  }

  void ResolveAsync(std::function<void(ClientResult<std::string>)> done) {
    std::string id = CachedId();
    if (!id.empty()) {
      client->io->Post([done = std::move(done), id] { done(id); });
      return;
    }
    const std::string serialized = gw::SerializeActorKey(key);
    // The caller keeps this state alive until `done` ran.
    if (kind == HandleKind::kGet) {
      std::string path = "/actors?" + client->NamespaceQuery() + "&name=" + gw::PercentEncode(name) +
                         "&key=" + gw::PercentEncode(serialized);
      client->RestAsync("GET", std::move(path), std::nullopt,
                        [this, done = std::move(done)](ClientResult<json> r) {
                          if (!r.has_value()) return done(Unexpected(std::move(r.error())));
                          const json& actors = (*r)["actors"];
                          if (!actors.is_array() || actors.empty()) {
                            return done(Unexpected(ClientError::Make("actor", "not_found",
                                                                     "The actor does not exist or was destroyed.")));
                          }
                          auto info = ParseActorInfo(actors[0]);
                          if (!info.has_value()) return done(Unexpected(std::move(info.error())));
                          SetId(info->actor_id);
                          done(info->actor_id);
                        });
      return;
    }
    json body{{"name", name},
              {"key", serialized},
              {"runner_name_selector", client->options.pool},
              {"crash_policy", "sleep"}};
    if (input) body["input"] = gw::Base64Encode(EncodeCbor(*input));
    if (!region.empty()) body["datacenter"] = region;
    client->RestAsync("PUT", "/actors?" + client->NamespaceQuery(), std::move(body),
                      [this, done = std::move(done)](ClientResult<json> r) {
                        if (!r.has_value()) return done(Unexpected(std::move(r.error())));
                        auto info = ParseActorInfo((*r)["actor"]);
                        if (!info.has_value()) return done(Unexpected(std::move(info.error())));
                        SetId(info->actor_id);
                        done(info->actor_id);
                      });
  }
};

namespace {

// Sends `req` to the actor at `rest` (+ `user_query`), retrying scheduling errors per the
// handle's budget; `encoding` is the request's, the one the actor's errors come in. The
// final response is returned whatever its status; transport errors and exhausted retries
// are errors.
ClientResult<net::HttpResponse> ActorRequest(const std::shared_ptr<HandleState>& h,
                                             const std::string& rest, const std::string& user_query,
                                             net::HttpRequest req, wire::Encoding encoding,
                                             bool retry_overload = false) {
  ClientShared& c = *h->client;
  const int attempts = h->MaxAttempts();
  std::optional<ClientError> last;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(c.options.retry_pause);  // retry pause (§4.2)
    auto url = h->Url(c.base, rest, user_query);
    if (!url) {
      // A key the query form cannot carry: resolve over REST, then go direct.
      // `h` outlives the resolution only when the wait ends with it: keep it in the callback.
      auto id = c.Wait<std::string>([&](std::function<void(ClientResult<std::string>)> done) {
        h->ResolveAsync(
            [h, done = std::move(done)](ClientResult<std::string> r) { done(std::move(r)); });
      });
      if (!id.has_value()) {
        if (IsSchedulingError(id.error()) && attempt < attempts) {
          last = id.error();
          continue;
        }
        return Unexpected(std::move(id.error()));
      }
      url = h->Url(c.base, rest, user_query);
      if (!url) return Unexpected(Err("invalid_argument", "the actor key cannot be addressed"));
    }
    auto res = c.FetchBlocking(*url, req);
    if (!res.has_value()) return res;
    if (res->status >= 200 && res->status < 300) return res;
    ClientError e = ErrorFromResponse(*res, encoding);
    const bool retryable = IsSchedulingError(e) || (retry_overload && IsDispatchOverload(e));
    if (!retryable || h->kind == HandleKind::kId) return res;
    h->ForgetId();
    last = std::move(e);
  }
  // Out of attempts: the last scheduling error is the answer.
  return Unexpected(last ? std::move(*last) : Err("connect_failed", "no attempt was made"));
}

// Request headers for an actor call: the client's, the token, the encoding, the params.
ClientResult<net::Headers> ActorHeaders(const std::shared_ptr<HandleState>& h, bool with_encoding) {
  net::Headers headers = h->client->GatewayHeaders();
  if (with_encoding) {
    headers.emplace_back("x-rivet-encoding", std::string(wire::EncodingName(h->client->options.encoding)));
    headers.emplace_back("content-type", std::string(wire::ContentType(h->client->options.encoding)));
  }
  auto params = h->Params();
  if (!params.has_value()) return Unexpected(std::move(params.error()));
  if (*params) headers.emplace_back("x-rivet-conn-params", ToJson(**params));
  return headers;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// ActorHandle

const std::string& ActorHandle::name() const { return state_->name; }

ClientResult<std::string> ActorHandle::Resolve() {
  auto keep = state_;
  return state_->client->Wait<std::string>(
      [&](std::function<void(ClientResult<std::string>)> done) {
        keep->ResolveAsync(
            [keep, done = std::move(done)](ClientResult<std::string> r) { done(std::move(r)); });
      });
}

std::string ActorHandle::GatewayUrl() const {
  if (state_->kind == HandleKind::kId) {
    return state_->client->base + "/gateway/" + gw::PercentEncode(state_->CachedId());
  }
  // Always the query form for dynamic handles, even when an id is cached.
  HandleState copy;
  copy.client = state_->client;
  copy.kind = state_->kind;
  copy.name = state_->name;
  copy.key = state_->key;
  copy.input = state_->input;
  copy.region = state_->region;
  auto url = copy.Url(state_->client->base, "", "");
  return url.value_or(state_->client->base + "/gateway/" + gw::PercentEncode(state_->name));
}

ClientResult<Value> ActorHandle::Action(std::string_view action, Value args) {
  const wire::Encoding enc = state_->client->options.encoding;
  auto headers = ActorHeaders(state_, true);
  if (!headers.has_value()) return Unexpected(std::move(headers.error()));
  net::HttpRequest req;
  req.method = "POST";
  req.headers = std::move(*headers);
  req.body = ToString(wire::Encode(wire::HttpActionRequest{std::move(args)}, enc));
  auto res = ActorRequest(state_, "/action/" + gw::PercentEncode(action), "", std::move(req), enc);
  if (!res.has_value()) return Unexpected(std::move(res.error()));
  if (res->status != 200) return Unexpected(ErrorFromResponse(*res, enc));
  auto decoded = wire::DecodeHttpActionResponse(View(res->body), enc);
  if (!decoded.has_value()) return Unexpected(Err("bad_response", decoded.error().message()));
  return std::move(decoded->output);
}

ClientResult<QueueSendResult> ActorHandle::Send(std::string_view queue, Value body, QueueSendOptions options) {
  const wire::Encoding enc = state_->client->options.encoding;
  auto headers = ActorHeaders(state_, true);
  if (!headers.has_value()) return Unexpected(std::move(headers.error()));
  wire::HttpQueueSendRequest msg;
  msg.body = std::move(body);
  msg.name = std::string(queue);
  if (options.wait) msg.wait = true;
  if (options.timeout) msg.timeout = static_cast<uint64_t>(options.timeout->count());
  net::HttpRequest req;
  req.method = "POST";
  req.headers = std::move(*headers);
  req.body = ToString(wire::Encode(msg, enc));
  auto res = ActorRequest(state_, "/queue/" + gw::PercentEncode(queue), "", std::move(req), enc,
                          /*retry_overload=*/true);
  if (!res.has_value()) return Unexpected(std::move(res.error()));
  if (res->status != 200) return Unexpected(ErrorFromResponse(*res, enc));
  auto decoded = wire::DecodeHttpQueueSendResponse(View(res->body), enc);
  if (!decoded.has_value()) return Unexpected(Err("bad_response", decoded.error().message()));
  return QueueSendResult{std::move(decoded->status), std::move(decoded->response)};
}

ClientResult<net::HttpResponse> ActorHandle::Fetch(std::string_view path, net::HttpRequest request) {
  auto headers = ActorHeaders(state_, false);
  if (!headers.has_value()) return Unexpected(std::move(headers.error()));
  if (request.method.empty()) request.method = "GET";
  for (auto& h : *headers) request.headers.push_back(std::move(h));
  auto [p, q] = SplitUserPath(path);
  // No x-rivet-encoding: the runtime's own errors (no onRequest, ...) come in JSON (§4.4).
  return ActorRequest(state_, "/request/" + p, q, std::move(request), wire::Encoding::kJson);
}

ClientResult<std::unique_ptr<net::BlockingWsClient>> ActorHandle::WebSocket(std::string_view path,
                                                                            std::vector<std::string> protocols,
                                                                            std::chrono::milliseconds timeout) {
  ClientShared& c = *state_->client;
  if (c.endpoint_error) return Unexpected(*c.endpoint_error);  // as HTTP calls report it
  auto [p, q] = SplitUserPath(path);
  const int attempts = state_->MaxAttempts();
  std::optional<ClientError> last;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(c.options.retry_pause);  // retry pause (§4.2)
    auto params = state_->Params();
    if (!params.has_value()) return Unexpected(std::move(params.error()));
    // A key handle opens raw sockets by key: the gateway accepts an upgrade before it routes,
    // so a cached id whose actor was destroyed would yield a socket closed at once
    // (actor.not_found) rather than a handshake error to re-resolve on (actors.md §8.13).
    auto url = state_->Url(c.ws_base, "/websocket/" + p, q, /*by_id=*/false);
    if (!url) {
      auto id = Resolve();
      if (!id.has_value()) return Unexpected(std::move(id.error()));
      url = state_->Url(c.ws_base, "/websocket/" + p, q);
      if (!url) return Unexpected(Err("invalid_argument", "the actor key cannot be addressed"));
    }
    net::WsConnectOptions o;
    o.url = *url;
    o.subprotocols.emplace_back(gw::kSubprotocolRivet);
    if (*params) o.subprotocols.push_back(std::string(gw::kSubprotocolConnParamsPrefix) + gw::PercentEncode(ToJson(**params)));
    if (!c.options.token.empty()) o.subprotocols.push_back(std::string(gw::kSubprotocolTokenPrefix) + c.options.token);
    for (auto& proto : protocols) o.subprotocols.push_back(proto);
    o.headers = c.options.headers;
    net::HttpResponse failed;
    auto ws = net::BlockingWsClient::Connect(std::move(o), timeout, &failed);
    if (ws.has_value()) return std::move(*ws);
    if (!ws.error().Is("net", "handshake_failed")) return Unexpected(FromNet(ws.error()));
    ClientError e = ErrorFromResponse(failed, wire::Encoding::kJson);
    if (!IsSchedulingError(e) || state_->kind == HandleKind::kId) return Unexpected(std::move(e));
    state_->ForgetId();
    last = std::move(e);
  }
  return Unexpected(last ? std::move(*last) : Err("connect_failed", "no attempt was made"));
}

// ---------------------------------------------------------------------------------------
// ActorConn

struct ActorConn::Impl : std::enable_shared_from_this<ActorConn::Impl> {
  std::shared_ptr<HandleState> handle;
  std::shared_ptr<ClientShared> client;
  wire::Encoding encoding = wire::Encoding::kBare;

  struct Pending {
    std::string name;
    Value args;
    ActionCallback done;
    bool sent = false;
  };
  // A registered listener. `alive` (guarded by mu) turns false when it is unsubscribed; its
  // calls already collected check it as they start (Run).
  template <typename F>
  struct Listener {
    uint64_t id;
    F fn;
    std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  };
  struct EventListener : Listener<std::function<void(const Value&)>> {
    bool once = false;
  };
  template <typename F>
  struct Listeners {
    std::vector<Listener<F>> items;
  };

  mutable std::mutex mu;
  std::condition_variable cv;
  ConnStatus status = ConnStatus::kIdle;
  bool disposed = false;
  ClientError dispose_error;  // why, once disposed: client.closed
  bool open = false;  // Init received on the current socket
  uint64_t socket_gen = 0;
  std::shared_ptr<net::WsConnection> ws;
  std::string actor_id, connection_id;
  uint64_t next_action_id = 0;
  std::map<uint64_t, Pending> pending;
  std::map<std::string, std::vector<EventListener>> events;
  uint64_t next_listener_id = 1;
  Listeners<std::function<void(const ClientError&)>> on_error;
  Listeners<std::function<void()>> on_open, on_close;
  Listeners<std::function<void(ConnStatus)>> on_status;
  std::chrono::milliseconds backoff{250};
  std::optional<TimerId> reconnect_timer;
  // Why the last attempt failed, when no waiting action was told: the next action called
  // before the connection opens fails with it (the TypeScript client's behaviour).
  std::optional<ClientError> unreported;
  // The connection-level Error (a failed setup) received on the current socket: the close
  // that follows it repeats its `group.code` (actors.md §4.6) and is not a second failure.
  std::optional<ClientError> conn_error;
  // Listener calls running now (Run); Dispose and unsubscribing wait for them to end.
  int running_listeners = 0;

  // Calls collected under mu and made after it is released, on the I/O thread. A
  // listener's call is dropped when, as it would start, its listener was unsubscribed or
  // the connection disposed (except Dispose's own notices); an action's completion (no
  // `alive`) always runs, exactly once.
  struct Call {
    std::function<void()> fn;
    std::shared_ptr<bool> alive;  // the listener's; null for a completion
    bool dispose_notice = false;
  };
  using Deferred = std::vector<Call>;
  void Run(Deferred& d) {
    for (auto& call : d) {
      if (!call.alive) {
        call.fn();
        continue;
      }
      std::unique_lock<std::mutex> lock(mu);
      if (!*call.alive || (disposed && !call.dispose_notice)) continue;
      ++running_listeners;
      lock.unlock();
      call.fn();
      lock.lock();
      if (--running_listeners == 0) cv.notify_all();
    }
    d.clear();
  }
  static void Complete(Deferred& out, std::function<void()> fn) {
    out.push_back(Call{std::move(fn), nullptr});
  }
  template <typename F, typename... Args>
  static void Notify(Deferred& out, const Listener<F>& l, Args... args) {
    out.push_back(Call{[fn = l.fn, args...] { fn(args...); }, l.alive});
  }
  // Under mu (held by `lock`): waits until no listener call runs, unless called on the I/O
  // thread (from a listener or a completion: no other call runs then).
  void WaitForListenersLocked(std::unique_lock<std::mutex>& lock) {
    if (client->io->InRuntimeThread()) return;
    cv.wait(lock, [this] { return running_listeners == 0; });
  }

  // Under mu: changes the status and queues the listeners' notifications.
  void SetStatus(ConnStatus s, Deferred& out) {
    if (status == s) return;
    status = s;
    cv.notify_all();
    for (const auto& l : on_status.items) Notify(out, l, s);
  }

  void QueueError(const ClientError& e, Deferred& out) {
    for (const auto& l : on_error.items) Notify(out, l, e);
  }

  // Under mu: fails pending actions (only those already sent when `sent_only`); when
  // none was waiting and `remember`, the error is kept for the next action.
  void FailPending(const ClientError& e, bool sent_only, Deferred& out, bool remember = false) {
    bool told = false;
    for (auto it = pending.begin(); it != pending.end();) {
      if (sent_only && !it->second.sent) {
        ++it;
        continue;
      }
      auto done = std::move(it->second.done);
      Complete(out, [done, e] { done(Unexpected(e)); });
      it = pending.erase(it);
      told = true;
    }
    if (!told && remember) unreported = e;
  }

  void SendLocked(const wire::ToServer& msg) {
    if (!ws) return;
    Bytes bytes = wire::Encode(msg, encoding);
    ws->Send(std::string(bytes.begin(), bytes.end()), !wire::UsesTextFrames(encoding));
  }

  class Handler : public net::WsHandler {
   public:
    Handler(std::weak_ptr<Impl> impl, uint64_t gen) : impl_(std::move(impl)), gen_(gen) {}
    void OnMessage(std::string data, bool /*binary*/) override {
      if (auto impl = impl_.lock()) impl->OnMessage(gen_, std::move(data));
    }
    void OnClose(uint16_t code, std::string reason) override {
      if (auto impl = impl_.lock()) impl->OnSocketClose(gen_, code, std::move(reason));
    }

   private:
    std::weak_ptr<Impl> impl_;
    uint64_t gen_;
  };

  // Runs on the I/O thread: one connection attempt.
  void Attempt() {
    Deferred out;
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lock(mu);
      reconnect_timer.reset();
      if (disposed) return;
      gen = ++socket_gen;
      conn_error.reset();
      SetStatus(ConnStatus::kConnecting, out);
    }
    Run(out);
    // As HTTP calls report it (the WebSocket URL would only say its scheme is unsupported).
    if (client->endpoint_error) return Failed(gen, *client->endpoint_error, /*fail_queued=*/true);
    auto params = handle->Params();
    if (!params.has_value()) return Failed(gen, params.error(), /*fail_queued=*/true);
    auto url = handle->Url(client->ws_base, "/connect", "");
    if (!url) {
      auto self = shared_from_this();
      handle->ResolveAsync([self, gen](ClientResult<std::string> id) {
        if (!id.has_value()) return self->Failed(gen, id.error(), !IsSchedulingError(id.error()));
        self->Attempt2(gen);
      });
      return;
    }
    Open(gen, *url, std::move(*params));
  }
  void Attempt2(uint64_t gen) {
    auto params = handle->Params();
    if (!params.has_value()) return Failed(gen, params.error(), true);
    auto url = handle->Url(client->ws_base, "/connect", "");
    if (!url) return Failed(gen, Err("invalid_argument", "the actor key cannot be addressed"), true);
    Open(gen, *url, std::move(*params));
  }

  void Open(uint64_t gen, std::string url, std::optional<Value> params) {
    net::WsConnectOptions o;
    o.url = std::move(url);
    o.subprotocols.emplace_back(gw::kSubprotocolRivet);
    o.subprotocols.push_back(std::string(gw::kSubprotocolEncodingPrefix) + std::string(wire::EncodingName(encoding)));
    if (params) o.subprotocols.push_back(std::string(gw::kSubprotocolConnParamsPrefix) + gw::PercentEncode(ToJson(*params)));
    if (!client->options.token.empty()) {
      o.subprotocols.push_back(std::string(gw::kSubprotocolTokenPrefix) + client->options.token);
    }
    o.headers = client->options.headers;
    o.handshake_timeout = client->options.request_timeout;
    auto self = shared_from_this();
    net::ConnectWebSocket(*client->io, std::move(o), std::make_shared<Handler>(self, gen),
                          [self, gen](Result<std::shared_ptr<net::WsConnection>> conn, net::HttpResponse handshake) {
                            if (!conn.has_value()) {
                              ClientError e = conn.error().Is("net", "handshake_failed")
                                                  ? ErrorFromResponse(handshake, wire::Encoding::kJson)
                                                  : FromNet(conn.error());
                              if (IsSchedulingError(e)) self->handle->ForgetId();
                              return self->Failed(gen, e, !self->WaitsThrough(e));
                            }
                            std::lock_guard<std::mutex> lock(self->mu);
                            if (self->disposed || gen != self->socket_gen) {
                              (*conn)->Close(1000, "");
                              return;
                            }
                            self->ws = std::move(*conn);
                          });
  }

  // Whether the actions queued on this connection wait through an attempt that failed with
  // `e`: only a scheduling error of a dynamic handle (the next attempt re-resolves); any
  // other failure fails them.
  bool WaitsThrough(const ClientError& e) const {
    return IsSchedulingError(e) && handle->kind != HandleKind::kId;
  }

  // An attempt failed before the socket opened.
  void Failed(uint64_t gen, const ClientError& e, bool fail_queued) {
    Deferred out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (disposed || gen != socket_gen) return;
      AttemptFailedLocked(e, fail_queued, /*reported=*/false, out);
    }
    Run(out);
  }

  // Under mu: an attempt ended with `e` before Init. The error listeners hear it, and when
  // `fail_queued` the queued actions fail with it (when none was waiting, the next action
  // called before the connection opens does); then a reconnect is scheduled. `reported`:
  // the listeners and the waiting actions heard `e` already (from the actor's Error frame).
  void AttemptFailedLocked(const ClientError& e, bool fail_queued, bool reported, Deferred& out) {
    if (!reported) QueueError(e, out);
    if (fail_queued) FailPending(e, false, out, /*remember=*/!reported);
    SetStatus(ConnStatus::kDisconnected, out);
    ScheduleReconnectLocked();
  }

  void ScheduleReconnectLocked() {
    if (disposed || reconnect_timer) return;
    const auto delay = backoff;
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 30s);
    std::weak_ptr<Impl> weak = shared_from_this();
    reconnect_timer = client->io->clock().ScheduleAfter(delay, [weak] {
      if (auto self = weak.lock()) self->Attempt();
    });
  }

  void OnMessage(uint64_t gen, std::string data) {
    auto msg = wire::DecodeToClient(View(data), encoding);
    Deferred out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (disposed || gen != socket_gen) return;
      if (!msg.has_value()) {
        // A frame that does not decode may have been an answer: the actions sent on this
        // socket could wait for it forever. The stream cannot be trusted past it, so it is
        // dropped (1002, protocol error) as a lost connection is, and a new one opened.
        ClientError e = Err("bad_response", "the actor sent a message that does not decode as " +
                                                std::string(wire::EncodingName(encoding)) + ": " +
                                                msg.error().message());
        if (ws) {
          ws->Close(1002, "client.bad_response");
          ws.reset();
        }
        ++socket_gen;  // this socket's own close is not news
        const bool was_open = std::exchange(open, false);
        QueueError(e, out);
        SocketLostLocked(e, was_open, /*remember=*/false, out);
      } else if (auto* init = std::get_if<wire::Init>(&*msg)) {
        actor_id = init->actor_id;
        connection_id = init->connection_id;
        handle->SetId(actor_id);
        open = true;
        unreported.reset();
        backoff = 250ms;
        for (const auto& [name, ls] : events) {
          if (!ls.empty()) SendLocked(wire::SubscriptionRequest{name, true});
        }
        for (auto& [id, p] : pending) {
          if (p.sent) continue;
          p.sent = true;
          SendLocked(wire::ActionRequest{id, p.name, p.args});
        }
        SetStatus(ConnStatus::kConnected, out);
        for (const auto& l : on_open.items) Notify(out, l);
      } else if (auto* resp = std::get_if<wire::ActionResponse>(&*msg)) {
        auto it = pending.find(resp->id);
        if (it != pending.end()) {
          auto done = std::move(it->second.done);
          pending.erase(it);
          Complete(out, [done, v = std::move(resp->output)]() mutable { done(std::move(v)); });
        }
      } else if (auto* err = std::get_if<wire::ErrorMsg>(&*msg)) {
        ClientError e{err->group, err->code, err->message, err->metadata, 0};
        if (err->action_id) {
          auto it = pending.find(*err->action_id);
          if (it != pending.end()) {
            auto done = std::move(it->second.done);
            pending.erase(it);
            Complete(out, [done, e] { done(Unexpected(e)); });
          }
        } else {
          // A connection-level error (setup failed): the actions waiting on this
          // connection get it, and so do the error listeners.
          QueueError(e, out);
          FailPending(e, false, out, /*remember=*/true);
          conn_error = std::move(e);
        }
      } else if (auto* ev = std::get_if<wire::Event>(&*msg)) {
        auto it = events.find(ev->name);
        if (it != events.end()) {
          auto args = std::make_shared<Value>(std::move(ev->args));
          bool removed_once = false;
          for (auto l = it->second.begin(); l != it->second.end();) {
            out.push_back(Call{[fn = l->fn, args] { fn(*args); }, l->alive});
            if (l->once) {
              l = it->second.erase(l);
              removed_once = true;
            } else {
              ++l;
            }
          }
          if (removed_once && it->second.empty()) {
            SendLocked(wire::SubscriptionRequest{ev->name, false});
            events.erase(it);
          }
        }
      }
    }
    Run(out);
  }

  // Closes for good (ActorConn::Dispose, or ~Client with client.closed): pending actions fail
  // with `why`. Returns the calls to make (completions and Dispose's own notices).
  Deferred Dispose(const ClientError& why) {
    Deferred out;
    std::unique_lock<std::mutex> lock(mu);
    if (disposed) return out;
    disposed = true;
    dispose_error = why;
    cv.notify_all();
    if (reconnect_timer) {
      client->io->clock().Cancel(*reconnect_timer);
      reconnect_timer.reset();
    }
    if (ws) {
      ws->Close(1000, "");
      ws.reset();
    }
    FailPending(why, false, out);
    if (open) {
      for (const auto& l : on_close.items) Notify(out, l);
    }
    open = false;
    SetStatus(ConnStatus::kDisconnected, out);
    // Dispose's own notices run although the connection is now disposed.
    for (Call& call : out) call.dispose_notice = true;
    // A listener call running now ends before Dispose returns; later ones are dropped (Run).
    WaitForListenersLocked(lock);
    return out;
  }

  void OnSocketClose(uint64_t gen, uint16_t code, std::string reason) {
    Deferred out;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (gen != socket_gen) return;
      ws.reset();
      const bool was_open = open;
      open = false;
      std::optional<ClientError> setup_error = std::move(conn_error);
      conn_error.reset();
      if (disposed) return;
      std::optional<ClientError> structured = ErrorFromCloseReason(reason);
      // After a failed setup's Error frame, the close repeats its `group.code`: the error is
      // the one already reported, with its message and metadata, not a second one.
      const bool reported = structured && setup_error && setup_error->Id() == structured->Id();
      if (reported) structured = std::move(setup_error);
      if (structured && IsSchedulingError(*structured)) handle->ForgetId();
      if (structured && !was_open) {
        // Refused before Init: the gateway refuses a WebSocket by accepting it and closing
        // with `group.code#ray` (actors.md §5.9). The attempt ends as a refused handshake
        // does (Open), queued actions included.
        AttemptFailedLocked(*structured, !WaitsThrough(*structured), reported, out);
      } else {
        // A drop (queued actions wait for the next attempt), or a close after Init: the
        // actions sent may or may not have run, so they fail. A protocol-level failure (a
        // frame one side could not take) is reported as such, like an undecodable message
        // (OnMessage): the error listeners hear it too.
        std::optional<ClientError> protocol =
            structured ? std::nullopt : ErrorFromProtocolClose(code, reason);
        ClientError e = structured ? *structured
                        : protocol ? *protocol
                                   : Err("connection_lost",
                                         "the connection closed (code " + std::to_string(code) +
                                             (reason.empty() ? "" : ", " + reason) + ")");
        if ((structured && !reported) || protocol) QueueError(e, out);
        SocketLostLocked(e, was_open, /*remember=*/structured && !reported, out);
      }
    }
    Run(out);
  }

  // Under mu, the socket gone (ws reset, open false): a drop (queued actions wait for the
  // next attempt), or a close after Init: the actions sent may or may not have run, so they
  // fail with `e` (kept for the next action when none was waiting and `remember`). OnClose
  // listeners hear of the end of a connection that `was_open`; then a reconnect is
  // scheduled.
  void SocketLostLocked(const ClientError& e, bool was_open, bool remember, Deferred& out) {
    FailPending(e, /*sent_only=*/true, out, remember);
    if (was_open) {
      for (const auto& l : on_close.items) Notify(out, l);
    }
    SetStatus(ConnStatus::kDisconnected, out);
    ScheduleReconnectLocked();
  }
};

ActorConn::~ActorConn() { Dispose(); }

ConnStatus ActorConn::status() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->status;
}
bool ActorConn::is_connected() const { return status() == ConnStatus::kConnected; }
std::string ActorConn::actor_id() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->actor_id;
}
std::string ActorConn::connection_id() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->connection_id;
}

ClientStatus ActorConn::WaitReady(std::chrono::milliseconds timeout) {
  if (impl_->client->io->InRuntimeThread()) {
    return Unexpected(OnIoThreadError());
  }
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto ready = [&] {
    return impl_->disposed || (impl_->status == ConnStatus::kConnected && impl_->open);
  };
  bool ok = true;
  if (const auto bound = Bounded(timeout)) {
    ok = impl_->cv.wait_for(lock, *bound, ready);
  } else {
    impl_->cv.wait(lock, ready);
  }
  if (impl_->disposed) return Unexpected(impl_->dispose_error);
  if (!ok) return Unexpected(Err("timeout", "the connection did not open in time"));
  return {};
}

namespace {
// Sends (or queues) an action, as ActionAsync; returns the id it was given, or nullopt when
// it was answered at once (disposed, or the last attempt's error).
std::optional<uint64_t> QueueAction(ActorConn::Impl& m, std::string action, Value args,
                                    ActorConn::ActionCallback done) {
  std::unique_lock<std::mutex> lock(m.mu);
  if (m.disposed) {
    ClientError e = m.dispose_error;
    lock.unlock();
    if (m.client->io->stopped()) {
      done(Unexpected(std::move(e)));  // the Client is gone: no I/O thread to run it on
    } else {
      m.client->io->Post([done = std::move(done), e = std::move(e)] { done(Unexpected(e)); });
    }
    return std::nullopt;
  }
  if (!m.open && m.unreported) {
    ClientError e = std::move(*m.unreported);
    m.unreported.reset();
    lock.unlock();
    m.client->io->Post([done = std::move(done), e = std::move(e)] { done(Unexpected(e)); });
    return std::nullopt;
  }
  const uint64_t id = m.next_action_id++;
  ActorConn::Impl::Pending p{std::move(action), std::move(args), std::move(done), false};
  if (m.open && m.ws) {
    p.sent = true;
    m.SendLocked(wire::ActionRequest{id, p.name, p.args});
  }
  m.pending.emplace(id, std::move(p));
  return id;
}
}  // namespace

void ActorConn::ActionAsync(std::string action, Value args, ActionCallback done) {
  QueueAction(*impl_, std::move(action), std::move(args), std::move(done));
}

ClientResult<Value> ActorConn::Action(std::string_view action, Value args, std::chrono::milliseconds timeout) {
  std::optional<uint64_t> id;
  auto r = impl_->client->WaitFor<Value>(
      [&](std::function<void(ClientResult<Value>)> done) {
        id = QueueAction(*impl_, std::string(action), std::move(args), std::move(done));
      },
      Bounded(timeout));
  if (!r || !r->has_value()) {
    // Withdraws this call's own action, by the id it was given (another thread's action may
    // have been queued in between: that one still gets its answer).
    if (id) {
      std::lock_guard<std::mutex> lock(impl_->mu);
      impl_->pending.erase(*id);
    }
  }
  if (!r)
    return Unexpected(Err("timeout", "no answer to action '" + std::string(action) + "' in time"));
  return std::move(*r);
}

namespace {
template <typename L, typename F>
ActorConn::Unsubscribe AddListener(const std::shared_ptr<ActorConn::Impl>& impl, L ActorConn::Impl::*list, F fn) {
  std::lock_guard<std::mutex> lock(impl->mu);
  const uint64_t id = impl->next_listener_id++;
  auto& items = (impl.get()->*list).items;
  items.push_back({id, std::move(fn)});
  std::weak_ptr<ActorConn::Impl> weak = impl;
  return [weak, list, id, alive = items.back().alive] {
    if (auto m = weak.lock()) {
      std::unique_lock<std::mutex> lock(m->mu);
      *alive = false;
      std::erase_if((m.get()->*list).items, [id](const auto& e) { return e.id == id; });
      m->WaitForListenersLocked(lock);
    }
  };
}
}  // namespace

ActorConn::Unsubscribe ActorConn::OnError(std::function<void(const ClientError&)> listener) {
  return AddListener(impl_, &Impl::on_error, std::move(listener));
}
ActorConn::Unsubscribe ActorConn::OnOpen(std::function<void()> listener) {
  return AddListener(impl_, &Impl::on_open, std::move(listener));
}
ActorConn::Unsubscribe ActorConn::OnClose(std::function<void()> listener) {
  return AddListener(impl_, &Impl::on_close, std::move(listener));
}
ActorConn::Unsubscribe ActorConn::OnStatusChange(std::function<void(ConnStatus)> listener) {
  return AddListener(impl_, &Impl::on_status, std::move(listener));
}

namespace {
ActorConn::Unsubscribe AddEventListener(const std::shared_ptr<ActorConn::Impl>& impl, std::string event,
                                        std::function<void(const Value&)> fn, bool once) {
  std::lock_guard<std::mutex> lock(impl->mu);
  const uint64_t id = impl->next_listener_id++;
  auto& ls = impl->events[event];
  const bool first = ls.empty();
  ls.push_back({{id, std::move(fn)}, once});
  if (first && impl->open) impl->SendLocked(wire::SubscriptionRequest{event, true});
  std::weak_ptr<ActorConn::Impl> weak = impl;
  return [weak, event, id, alive = ls.back().alive] {
    auto m = weak.lock();
    if (!m) return;
    std::unique_lock<std::mutex> lock(m->mu);
    *alive = false;
    auto it = m->events.find(event);
    if (it != m->events.end()) {
      const size_t before = it->second.size();
      std::erase_if(it->second,
                    [id](const ActorConn::Impl::EventListener& e) { return e.id == id; });
      if (before != 0 && it->second.empty()) {
        if (m->open) m->SendLocked(wire::SubscriptionRequest{event, false});
        m->events.erase(it);
      }
    }
    m->WaitForListenersLocked(lock);
  };
}
}  // namespace

ActorConn::Unsubscribe ActorConn::On(std::string event, std::function<void(const Value& args)> listener) {
  return AddEventListener(impl_, std::move(event), std::move(listener), false);
}
ActorConn::Unsubscribe ActorConn::Once(std::string event, std::function<void(const Value& args)> listener) {
  return AddEventListener(impl_, std::move(event), std::move(listener), true);
}

void ActorConn::Dispose() {
  Impl::Deferred out = impl_->Dispose(Err("closed", "the connection was disposed"));
  // Its notices run on the I/O thread, as everywhere else.
  if (!out.empty()) {
    impl_->client->io->Post([impl = impl_, out = std::move(out)]() mutable { impl->Run(out); });
  }
}

std::shared_ptr<ActorConn> ActorHandle::Connect(const std::function<void(ActorConn&)>& setup) {
  auto impl = std::make_shared<ActorConn::Impl>();
  impl->handle = state_;
  impl->client = state_->client;
  impl->encoding = state_->client->options.encoding;
  impl->status = ConnStatus::kConnecting;
  std::weak_ptr<ActorConn::Impl> weak = impl;
  std::shared_ptr<ActorConn> conn(new ActorConn(std::move(impl)));
  if (setup) setup(*conn);
  ClientShared& c = *state_->client;
  std::lock_guard<std::mutex> lock(c.life_mu);
  if (c.closed) {
    // A connection from a handle that outlived its Client: closed from the start.
    (void)conn->impl_->Dispose(ClientGoneError());
    return conn;
  }
  std::erase_if(c.conns, [](const std::weak_ptr<ActorConn::Impl>& w) { return w.expired(); });
  c.conns.push_back(weak);
  c.io->Post([weak] {
    if (auto m = weak.lock()) m->Attempt();
  });
  return conn;
}

// ---------------------------------------------------------------------------------------
// Client

Client::Client(ClientOptions options) : shared_(std::make_shared<ClientShared>()) {
  shared_->options = std::move(options);
  std::string endpoint = shared_->options.endpoint;
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  auto url = net::ParseUrl(endpoint);
  if (!url.has_value() || url->scheme != "http") {
    shared_->endpoint_error = Err("invalid_argument", "endpoint must be an http:// URL: '" + endpoint + "'");
  }
  shared_->base = endpoint;
  shared_->ws_base = "ws" + (endpoint.size() > 4 ? endpoint.substr(4) : std::string());
  shared_->io = std::make_unique<net::IoRuntime>(1);
  shared_->http = std::make_unique<net::HttpClient>(*shared_->io);
}

// Handles and connections may still hold `shared_` (they must not be used any more): a
// connection's pending read loop or a posted notice owns its state, which owns `shared_`,
// which owns the runtime holding them. Shutdown destroys that pending work now, so all of
// it is freed with the last handle.
//
// Before that, every blocking call still waiting on another thread returns client.closed,
// and every connection is disposed (its actions fail with client.closed): so a call in
// flight neither hangs nor waits out its timeout for work the stopped runtime will not do.
// The disposed connections' completions and notices then run here, once the runtime's
// thread is gone, so that each ActionAsync callback still runs exactly once.
Client::~Client() {
  std::map<uint64_t, std::function<void()>> waiters;
  std::vector<std::weak_ptr<ActorConn::Impl>> conns;
  {
    std::lock_guard<std::mutex> lock(shared_->life_mu);
    shared_->closed = true;
    waiters.swap(shared_->waiters);
    conns.swap(shared_->conns);
  }
  std::vector<std::pair<std::shared_ptr<ActorConn::Impl>, ActorConn::Impl::Deferred>> disposed;
  for (auto& weak : conns) {
    if (auto impl = weak.lock()) {
      auto out = impl->Dispose(ClientGoneError());
      disposed.emplace_back(std::move(impl), std::move(out));
    }
  }
  for (auto& [id, end] : waiters) end();
  shared_->io->Shutdown();
  for (auto& [impl, out] : disposed) impl->Run(out);
}

const ClientOptions& Client::options() const { return shared_->options; }

ActorHandle Client::Get(std::string name, ActorKey key, HandleOptions options) {
  auto s = std::make_shared<HandleState>();
  s->client = shared_;
  s->kind = HandleKind::kGet;
  s->name = std::move(name);
  s->key = std::move(key);
  s->options = std::move(options);
  return ActorHandle(std::move(s));
}

ActorHandle Client::GetOrCreate(std::string name, ActorKey key, GetOrCreateOptions options) {
  auto s = std::make_shared<HandleState>();
  s->client = shared_;
  s->kind = HandleKind::kGetOrCreate;
  s->name = std::move(name);
  s->key = std::move(key);
  s->input = std::move(options.input);
  s->region = std::move(options.region);
  s->options = static_cast<HandleOptions&&>(std::move(options));
  return ActorHandle(std::move(s));
}

ActorHandle Client::GetForId(std::string name, std::string actor_id, HandleOptions options) {
  auto s = std::make_shared<HandleState>();
  s->client = shared_;
  s->kind = HandleKind::kId;
  s->name = std::move(name);
  s->actor_id = std::move(actor_id);
  s->options = std::move(options);
  return ActorHandle(std::move(s));
}

ClientResult<ActorHandle> Client::Create(std::string name, ActorKey key, CreateOptions options) {
  json body{{"name", name},
            {"key", gw::SerializeActorKey(key)},
            {"runner_name_selector", shared_->options.pool},
            {"crash_policy", "sleep"}};
  if (options.input) body["input"] = gw::Base64Encode(EncodeCbor(*options.input));
  if (!options.region.empty()) body["datacenter"] = options.region;
  auto r = shared_->Rest("POST", "/actors?" + shared_->NamespaceQuery(), std::move(body));
  if (!r.has_value()) return Unexpected(std::move(r.error()));
  auto info = ParseActorInfo((*r)["actor"]);
  if (!info.has_value()) return Unexpected(std::move(info.error()));
  return GetForId(std::move(name), info->actor_id, static_cast<HandleOptions&&>(std::move(options)));
}

namespace {

// The next page's cursor of a REST listing (its `pagination.cursor`), or "" on the last page.
std::string NextCursor(const json& answer) {
  const auto pagination = answer.find("pagination");
  if (pagination == answer.end() || !pagination->is_object()) return "";
  const auto cursor = pagination->find("cursor");
  return cursor != pagination->end() && cursor->is_string() ? cursor->get<std::string>() : "";
}

}  // namespace

ClientResult<std::vector<ActorInfo>> Client::ListActors(std::string_view name, std::optional<ActorKey> key,
                                                        bool include_destroyed) {
  std::vector<ActorInfo> out;
  std::string cursor;
  for (int page = 0; page < 1000; ++page) {  // bounded: 100 actors per page
    std::string path = "/actors?" + shared_->NamespaceQuery() + "&name=" + gw::PercentEncode(name);
    if (key) path += "&key=" + gw::PercentEncode(gw::SerializeActorKey(*key));
    if (include_destroyed) path += "&include_destroyed=true";
    if (!cursor.empty()) path += "&cursor=" + gw::PercentEncode(cursor);
    auto r = shared_->Rest("GET", std::move(path));
    if (!r.has_value()) return Unexpected(std::move(r.error()));
    const json& actors = (*r)["actors"];
    if (!actors.is_array()) return Unexpected(Err("bad_response", "no actors array"));
    for (const json& a : actors) {
      auto info = ParseActorInfo(a);
      if (!info.has_value()) return Unexpected(std::move(info.error()));
      out.push_back(std::move(*info));
    }
    cursor = NextCursor(*r);
    if (cursor.empty() || actors.empty()) break;
  }
  return out;
}

ClientResult<ActorInfo> Client::GetActor(std::string_view actor_id) {
  auto r = shared_->Rest("GET", "/actors/" + gw::PercentEncode(actor_id) + "?" + shared_->NamespaceQuery());
  if (!r.has_value()) return Unexpected(std::move(r.error()));
  return ParseActorInfo((*r)["actor"]);
}

ClientResult<std::vector<std::string>> Client::ListActorNames() {
  std::vector<std::string> names;
  std::string cursor;
  for (int page = 0; page < 1000; ++page) {  // bounded: up to 1000 names per page
    std::string path = "/actors/names?" + shared_->NamespaceQuery() + "&limit=1000";
    if (!cursor.empty()) path += "&cursor=" + gw::PercentEncode(cursor);
    auto r = shared_->Rest("GET", std::move(path));
    if (!r.has_value()) return Unexpected(std::move(r.error()));
    const json& page_names = (*r)["names"];
    if (!page_names.is_object()) return Unexpected(Err("bad_response", "no names object"));
    for (auto it = page_names.begin(); it != page_names.end(); ++it) names.push_back(it.key());
    cursor = NextCursor(*r);
    if (cursor.empty() || page_names.empty()) break;
  }
  return names;
}

ClientStatus Client::DestroyActor(std::string_view actor_id) {
  auto r = shared_->Rest("DELETE", "/actors/" + gw::PercentEncode(actor_id) + "?" + shared_->NamespaceQuery());
  if (!r.has_value()) return Unexpected(std::move(r.error()));
  return {};
}

ClientStatus Client::SleepActor(std::string_view actor_id) {
  auto r = shared_->Rest("POST", "/actors/" + gw::PercentEncode(actor_id) + "/sleep?" + shared_->NamespaceQuery(),
                         json::object());
  if (!r.has_value()) return Unexpected(std::move(r.error()));
  return {};
}

}  // namespace keel::client
