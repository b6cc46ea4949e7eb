#include "runtime/native/serverless.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <thread>
#include <tuple>

#include "base/log.h"
#include "base/output_batch.h"
#include "envoy/envoy_client.h"
#include "envoy/native/native_transport.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "protocol/envoy/versioned.h"
#include "runtime/native/local_sql.h"
#include "runtime/native/serve.h"
#include "value/value.h"

namespace keel {

namespace {

constexpr const char* kLog = "serverless";
constexpr const char* kPing = "event: ping\ndata:\n\n";
constexpr const char* kStopping = "event: stopping\ndata:\n\n";

// A JSON string literal (value/value.h's printer: escapes, UTF-8 as is).
std::string JsonString(std::string_view s) { return ToJson(Value(s)); }

std::string NormalizeBase(std::string base) {
  if (base.empty() || base.front() != '/') base.insert(base.begin(), '/');
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base;  // "" for the root
}

net::Headers CorsHeaders() {
  return {{"access-control-allow-origin", "*"},
          {"access-control-allow-methods", "GET, POST, OPTIONS"},
          {"access-control-allow-headers", "*"},
          {"access-control-max-age", "86400"}};
}

net::HttpResponse JsonResponse(int status, std::string body) {
  net::HttpResponse r;
  r.status = status;
  r.headers = CorsHeaders();
  r.headers.emplace_back("content-type", "application/json");
  r.body = std::move(body);
  return r;
}

net::HttpResponse TextResponse(int status, std::string body) {
  net::HttpResponse r;
  r.status = status;
  r.headers = CorsHeaders();
  r.headers.emplace_back("content-type", "text/plain; charset=utf-8");
  r.body = std::move(body);
  return r;
}

// The (actor id, generation) a validated /start body starts (same decoding as
// EnvoyClient::InjectServerlessStart).
std::optional<std::pair<std::string, uint32_t>> StartedActor(ByteView body) {
  namespace latest = protocol::envoy::latest;
  auto split = protocol::envoy::SplitVersionPrefix(body);
  if (!split.has_value()) return std::nullopt;
  auto decoded = protocol::envoy::DecodeToEnvoy(split->second, 4);
  if (!decoded.has_value()) decoded = protocol::envoy::DecodeToEnvoy(split->second, 3);
  if (!decoded.has_value()) return std::nullopt;
  const auto* commands = decoded->get_if<latest::ToEnvoyCommands>();
  if (commands == nullptr || commands->value.size() != 1) return std::nullopt;
  const auto& cp = commands->value[0].checkpoint;
  return std::make_pair(cp.actor_id, cp.generation);
}

}  // namespace

std::string ServerlessHealthJson(const std::string& version) {
  return R"({"status":"ok","runtime":"rivetkit","version":)" + JsonString(version) + "}";
}

std::string ServerlessMetadataJson(
    const std::vector<std::pair<std::string, std::string>>& actor_names, const std::string& version,
    uint16_t protocol_version, uint32_t envoy_version) {
  std::string names;
  for (const auto& [name, metadata] : actor_names) {
    if (!names.empty()) names += ',';
    names += JsonString(name) + ":" + (metadata.empty() ? std::string("{}") : metadata);
  }
  return R"({"runtime":"rivetkit","version":)" + JsonString(version) +
         R"(,"envoyProtocolVersion":)" + std::to_string(protocol_version) + R"(,"actorNames":{)" +
         names + R"(},"envoy":{"kind":{"serverless":{}},"version":)" +
         std::to_string(envoy_version) + "}}";
}

std::string ServerlessErrorJson(const std::string& group, const std::string& code,
                                const std::string& message, const std::string& metadata_json) {
  std::string out = R"({"group":)" + JsonString(group) + R"(,"code":)" + JsonString(code) +
                    R"(,"message":)" + JsonString(message);
  if (!metadata_json.empty()) out += R"(,"metadata":)" + metadata_json;
  return out + "}";
}

struct ServerlessHost::Impl {
  // One envoy connection per (endpoint, namespace, pool), with its own Runtime.
  struct Envoy {
    std::unique_ptr<runtime::Runtime> core;
    std::unique_ptr<envoy::NativeTransport> transport;
    std::unique_ptr<envoy::EnvoyClient> client;
    bool down = false;  // shutdown finished (or evicted)
  };
  struct Stream {
    std::shared_ptr<net::HttpExchange> exchange;
    Envoy* envoy = nullptr;
    std::string actor_id;
    uint32_t generation = 0;
    TimerId timer{};
  };
  using Key = std::tuple<std::string, std::string, std::string>;

  ServerlessOptions options;
  std::string base;
  std::vector<std::shared_ptr<const runtime::ActorType>> types;
  std::vector<std::pair<std::string, std::string>> actor_names;

  net::IoRuntime io{1};
  // Each task's writes to the engine leave in one piece (OutputBatch), as in serve.cc.
  std::unique_ptr<Executor> strand = std::make_unique<OutputBatchExecutor>(io.MakeStrand());
  envoy::StrandClock clock{io.clock(), *strand};
  Random random{EntropySeed()};
  // Before the envoys: their actors' databases close before the SQL threads stop.
  std::unique_ptr<LocalSqlHost> sql = std::make_unique<LocalSqlHost>(*strand);
  std::unique_ptr<net::HttpServer> server;
  std::atomic<bool> stopped{false};

  // ---- strand only ----
  std::map<Key, std::unique_ptr<Envoy>> envoys;
  std::vector<std::unique_ptr<Envoy>> replaced;  // shut-down envoys kept until the end
  std::map<uint64_t, Stream> streams;
  uint64_t next_stream = 1;
  bool stopping = false;
  std::function<void()> on_all_down;
  ServerlessStats counters;

  // ---- any thread (I/O) ----
  void Handle(std::shared_ptr<net::HttpExchange> ex);
  void HandleStart(std::shared_ptr<net::HttpExchange> ex);

  // ---- strand ----
  Envoy& EnsureEnvoy(const std::string& endpoint, const std::string& ns, const std::string& pool,
                     const std::string& token);
  void StartOnStrand(std::shared_ptr<net::HttpExchange> ex, std::string endpoint, std::string ns,
                     std::string pool, std::string token);
  void Tick(uint64_t id);
  bool ActorGone(const Stream& s) const;
  void EndStream(uint64_t id, bool stopping_event);
  void CheckAllDown();
};

void ServerlessHost::Impl::Handle(std::shared_ptr<net::HttpExchange> ex) {
  const net::HttpRequest& req = ex->request();
  std::string_view path = req.target;
  if (auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  if (req.method == "OPTIONS") {
    net::HttpResponse r;
    r.status = 204;
    r.headers = CorsHeaders();
    ex->Respond(std::move(r));
    return;
  }
  auto not_found = [&] { ex->Respond(TextResponse(404, "Not Found (RivetKit)")); };
  if (path.substr(0, base.size()) != base) return not_found();
  std::string_view rest = path.substr(base.size());
  if (!rest.empty() && rest.front() != '/') return not_found();
  const bool get = req.method == "GET";
  if ((rest.empty() || rest == "/") && get) {
    ex->Respond(
        TextResponse(200, "This is a RivetKit server.\n\nLearn more at https://rivetkit.org\n"));
  } else if (rest == "/health" && get) {
    ex->Respond(JsonResponse(200, ServerlessHealthJson(options.version)));
  } else if (rest == "/metadata" && get) {
    ex->Respond(
        JsonResponse(200, ServerlessMetadataJson(actor_names, options.version,
                                                 options.protocol_version, options.envoy_version)));
  } else if (rest == "/start" && (get || req.method == "POST")) {
    HandleStart(std::move(ex));
  } else {
    not_found();
  }
}

void ServerlessHost::Impl::HandleStart(std::shared_ptr<net::HttpExchange> ex) {
  const net::HttpRequest& req = ex->request();
  auto reject = [&](int status, const std::string& group, const std::string& code,
                    const std::string& message, const std::string& metadata = "") {
    strand->Post([this] { ++counters.starts_rejected; });
    LogWarn(kLog, "start rejected", {{"code", group + "." + code}, {"message", message}});
    ex->Respond(JsonResponse(status, ServerlessErrorJson(group, code, message, metadata)));
  };
  auto required = [&](std::string_view name, std::string_view legacy, std::string& out) -> bool {
    if (net::HasHeader(req.headers, name)) {
      out = std::string(net::FindHeader(req.headers, name));
    } else if (!legacy.empty() && net::HasHeader(req.headers, legacy)) {
      out = std::string(net::FindHeader(req.headers, legacy));
    }
    if (!out.empty()) return true;
    const std::string reason = std::string(name) + " header is required";
    reject(400, "request", "invalid", "Invalid request: " + reason,
           R"({"reason":)" + JsonString(reason) + "}");
    return false;
  };
  std::string endpoint, pool, ns;
  if (!required("x-rivet-endpoint", "", endpoint)) return;
  if (!required("x-rivet-pool-name", "x-rivet-runner-name", pool)) return;
  if (!required("x-rivet-namespace-name", "", ns)) return;
  std::string token(net::FindHeader(req.headers, "x-rivet-token"));
  auto trim = [](std::string_view u) {
    while (!u.empty() && u.back() == '/') u.remove_suffix(1);
    return u;
  };
  if (options.endpoint && trim(*options.endpoint) != trim(endpoint)) {
    return reject(400, "config", "endpoint_mismatch",
                  "x-rivet-endpoint `" + endpoint + "` does not match the configured endpoint `" +
                      *options.endpoint + "`");
  }
  if (options.namespace_name && *options.namespace_name != ns) {
    return reject(400, "config", "namespace_mismatch",
                  "x-rivet-namespace-name `" + ns + "` does not match the configured namespace `" +
                      *options.namespace_name + "`");
  }
  if (req.body.size() > options.max_start_payload) {
    return reject(413, "message", "incoming_too_long",
                  "start payload of " + std::to_string(req.body.size()) +
                      " bytes is larger than the maximum of " +
                      std::to_string(options.max_start_payload));
  }
  strand->Post([this, ex = std::move(ex), endpoint = std::move(endpoint), ns = std::move(ns),
                pool = std::move(pool), token = std::move(token)]() mutable {
    StartOnStrand(std::move(ex), std::move(endpoint), std::move(ns), std::move(pool),
                  std::move(token));
  });
}

ServerlessHost::Impl::Envoy& ServerlessHost::Impl::EnsureEnvoy(const std::string& endpoint,
                                                               const std::string& ns,
                                                               const std::string& pool,
                                                               const std::string& token) {
  Key key{endpoint, ns, pool};
  auto it = envoys.find(key);
  if (it != envoys.end() && !it->second->down && !it->second->client->shut_down()) {
    return *it->second;
  }
  if (it != envoys.end()) {
    replaced.push_back(std::move(it->second));
    envoys.erase(it);
  }
  auto e = std::make_unique<Envoy>();
  Envoy* raw = e.get();
  runtime::RuntimeOptions ro;
  ro.inspector_token = options.inspector_token;
  ro.version = options.version;
  ro.sqlite_backend = options.sqlite_backend;
  ro.local_sqlite = sql->Factory();
  e->core = std::make_unique<runtime::Runtime>(ro, clock, random);
  for (const auto& t : types) e->core->Register(t);
  envoy::EnvoyConfig cfg;
  cfg.endpoint = endpoint;
  cfg.token = token;
  cfg.namespace_name = ns;
  cfg.pool_name = pool;
  cfg.version = options.envoy_version;
  cfg.protocol_version = options.protocol_version;
  cfg.actor_names = actor_names;
  cfg.metadata_json =
      R"({"keel":{"version":)" + JsonString(options.version) + R"(,"serverless":true}})";
  e->transport = std::make_unique<envoy::NativeTransport>(io, *strand);
  e->client = std::make_unique<envoy::EnvoyClient>(cfg, clock, random, *e->transport, *e->core);
  e->transport->set_client(e->client.get());
  e->core->Attach(*e->client);
  e->core->SetShutdownCallback([this, raw] {
    raw->down = true;
    CheckAllDown();
  });
  LogInfo(kLog, "envoy connection",
          {{"endpoint", endpoint},
           {"namespace", ns},
           {"pool", pool},
           {"envoy_key", e->client->envoy_key()}});
  e->client->Start();
  ++counters.envoys;
  return *(envoys[key] = std::move(e));
}

void ServerlessHost::Impl::StartOnStrand(std::shared_ptr<net::HttpExchange> ex,
                                         std::string endpoint, std::string ns, std::string pool,
                                         std::string token) {
  auto error = [&](int status, const Error& e) {
    ++counters.starts_rejected;
    LogWarn(kLog, "start rejected", {{"error", e.ToString()}});
    ex->Respond(JsonResponse(status, ServerlessErrorJson(e.group(), e.code(), e.message())));
  };
  if (stopping) {
    return error(503, Error("serverless", "stopping", "the runtime is shutting down"));
  }
  Envoy& e = EnsureEnvoy(endpoint, ns, pool, token);
  const std::string& raw = ex->request().body;
  ByteView body(reinterpret_cast<const uint8_t*>(raw.data()), raw.size());
  Status injected = e.client->InjectServerlessStart(body);
  if (!injected.ok()) return error(400, injected.error());
  auto started = StartedActor(body);
  if (!started) {  // cannot happen after a successful injection
    return error(400, Error("serverless", "invalid_payload", "no start command"));
  }
  ++counters.starts_accepted;
  LogInfo(
      kLog, "start injected",
      {{"actor", started->first}, {"generation", std::to_string(started->second)}, {"pool", pool}});
  const uint64_t id = next_stream++;
  // Called on the I/O thread; the strand outlives every callback (the runtime stops
  // before the Impl is destroyed). Registered before the answer starts so a client gone
  // in between is seen too.
  ex->OnPeerGone([this, id] { strand->Post([this, id] { EndStream(id, false); }); });
  ex->StartStream(200, {{"content-type", "text/event-stream"},
                        {"cache-control", "no-cache"},
                        {"connection", "keep-alive"},
                        {"access-control-allow-origin", "*"}});
  ex->WriteChunk(kPing);
  Stream& s = streams[id];
  s.exchange = ex;
  s.envoy = &e;
  s.actor_id = std::move(started->first);
  s.generation = started->second;
  s.timer = clock.ScheduleAfter(options.ping_interval, [this, id] { Tick(id); });
}

bool ServerlessHost::Impl::ActorGone(const Stream& s) const {
  const envoy::EnvoyClient& client = *s.envoy->client;
  if (client.shut_down()) return true;
  if (!client.started()) return false;  // still queued until the first Init
  const runtime::Instance* inst = s.envoy->core->Find(s.actor_id);
  return inst == nullptr || inst->generation() != s.generation ||
         inst->phase() == runtime::Phase::kStopped;
}

void ServerlessHost::Impl::Tick(uint64_t id) {
  auto it = streams.find(id);
  if (it == streams.end()) return;
  it->second.timer = TimerId{};
  if (ActorGone(it->second)) return EndStream(id, true);
  it->second.exchange->WriteChunk(kPing);
  it->second.timer = clock.ScheduleAfter(options.ping_interval, [this, id] { Tick(id); });
}

void ServerlessHost::Impl::EndStream(uint64_t id, bool stopping_event) {
  auto it = streams.find(id);
  if (it == streams.end()) return;
  Stream s = std::move(it->second);
  streams.erase(it);
  if (s.timer != TimerId{}) clock.Cancel(s.timer);
  if (stopping_event) {
    ++counters.streams_stopping;
    s.exchange->WriteChunk(kStopping);
    s.exchange->FinishStream();
  } else {
    ++counters.streams_cancelled;
  }
  LogInfo(kLog, stopping_event ? "stream ended: actor stopped" : "stream ended: client gone",
          {{"actor", s.actor_id}, {"generation", std::to_string(s.generation)}});
}

void ServerlessHost::Impl::CheckAllDown() {
  if (!stopping || !on_all_down) return;
  for (const auto& [key, e] : envoys) {
    if (!e->down) return;
  }
  auto fn = std::move(on_all_down);
  on_all_down = nullptr;
  fn();
}

ServerlessHost::ServerlessHost(ServerlessOptions options,
                               std::vector<std::shared_ptr<const runtime::ActorType>> types)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = std::move(options);
  m.base = NormalizeBase(m.options.base_path);
  m.types = std::move(types);
  // The names come from a Runtime so they match what an envoy publishes.
  runtime::Runtime names(runtime::RuntimeOptions{}, m.clock, m.random);
  for (const auto& t : m.types) names.Register(t);
  m.actor_names = names.ActorNames();
}

ServerlessHost::~ServerlessHost() {
  Stop(impl_->options.stop_timeout);
  impl_->io.Stop();
}

Result<uint16_t> ServerlessHost::Start() {
  Impl& m = *impl_;
  if (m.server != nullptr || m.stopped) {
    return Error("serverless", "already_started", "ServerlessHost::Start called twice");
  }
  net::ServerOptions so;
  so.host = m.options.host;
  so.port = m.options.port;
  // Bodies a little above the limit still reach the handler, which answers the
  // structured 413; far larger ones get the server's own 413.
  so.max_request_body = m.options.max_start_payload * 2 + (size_t{64} << 10);
  // SSE streams are long; the server only bounds waits for requests and single writes.
  auto server = net::HttpServer::Start(
      m.io, so, [&m](std::shared_ptr<net::HttpExchange> ex) { m.Handle(std::move(ex)); });
  if (!server.has_value()) return server.error();
  m.server = std::move(*server);
  LogInfo(kLog, "serving",
          {{"host", m.options.host},
           {"port", std::to_string(m.server->port())},
           {"base_path", m.base}});
  return m.server->port();
}

uint16_t ServerlessHost::port() const {
  return impl_->server != nullptr ? impl_->server->port() : 0;
}

void ServerlessHost::RunSync(std::function<void()> fn) {
  if (impl_->io.stopped()) return;
  std::promise<void> done;
  impl_->strand->Post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

void ServerlessHost::Stop(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  if (m.stopped.exchange(true)) return;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (m.server != nullptr) m.server->StopAccepting();
  // 1. Every envoy stops gracefully: the engine hears ToRivetStopping and the actors stop
  //    (their streams end with `stopping` at the next tick).
  auto all_down = std::make_shared<std::promise<void>>();
  auto fut = all_down->get_future();
  RunSync([&m, all_down] {
    m.stopping = true;
    m.on_all_down = [all_down] { all_down->set_value(); };
    for (auto& [key, e] : m.envoys) {
      if (!e->client->shut_down()) e->client->Shutdown(false);
    }
    m.CheckAllDown();
  });
  if (!m.io.stopped()) fut.wait_until(deadline);
  // 2. The streams still open end with `stopping`.
  RunSync([&m] {
    std::vector<uint64_t> ids;
    for (const auto& [id, s] : m.streams) ids.push_back(id);
    for (uint64_t id : ids) m.EndStream(id, true);
  });
  // 3. Give those last writes a moment to leave (bounded): clients close their side once
  //    the stream ended.
  const auto flush_deadline =
      std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(1000));
  while (m.server != nullptr && !m.io.stopped() && m.server->open_connections() > 0 &&
         std::chrono::steady_clock::now() < flush_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // No handler runs after this; then the loop stops (pending timers are dropped).
  m.server.reset();
  m.io.Stop();
}

ServerlessStats ServerlessHost::stats() {
  ServerlessStats out;
  RunSync([&] {
    out = impl_->counters;
    out.open_streams = impl_->streams.size();
    out.connected_envoys = 0;
    for (const auto& [key, e] : impl_->envoys) {
      if (e->client->connected()) ++out.connected_envoys;
    }
  });
  return out;
}

}  // namespace keel
