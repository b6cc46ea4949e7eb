#include "engine/core/engine.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "base/log.h"
#include "base/native/cpu_affinity.h"
#include "engine/core/api.h"
#include "engine/core/catalog.h"
#include "engine/core/envoy_session.h"
#include "engine/core/gateway.h"
#include "engine/core/keys.h"
#include "engine/core/orchestrator.h"
#include "engine/core/pool_metadata.h"
#include "engine/core/remote_sql.h"
#include "engine/gateway/envoy_connect.h"
#include "engine/gateway/errors.h"
#include "engine/gateway/routing.h"
#include "engine/gateway/subprotocols.h"
#include "engine/gateway/url.h"

namespace keel::engine {
namespace {

constexpr std::string_view kLog = "engine";

}  // namespace

Engine::Engine(EngineOptions options, std::unique_ptr<storage::KvStore> store, net::IoRuntime& io,
               net::IoRuntime& workers)
    : options_(std::move(options)),
      io_(io),
      workers_(workers),
      clock_(io.clock()),
      store_(std::move(store)),
      sql_hosts_(std::make_shared<RemoteSqlRegistry>()) {
  if (options_.seed == 0) {
    options_.seed = static_cast<uint64_t>(clock_.SystemNowMs()) * 0x9e3779b97f4a7c15ull ^
                    static_cast<uint64_t>(clock_.MonotonicNow().time_since_epoch().count());
  }
  storage::ActorKvOptions kv_options;
  kv_options.engine_version = options_.engine_version;
  kv_options.check_actor_record = [](ByteView record) -> Status {
    auto decoded = protocol::engine::ReadRecord<rec::ActorRecord>(record);
    if (decoded.has_value() && decoded->destroyed) {
      return Unexpected{Error{"actor", "not_found", "actor does not exist"}};
    }
    return {};
  };
  // KV writes commit unsynced; EnvoySession acknowledges them through kv_sync_.
  kv_options.sync_writes = false;
  // The engine owns its store (RocksDB's LOCK file, or memory) and this is its one
  // ActorKv: a put commits without a transaction (actor_kv.h, "Sole writer"). Destroy
  // marks the record, then DropAll forgets the actor. (A store that several engines
  // share must not set it.)
  kv_options.sole_writer = sole_writer();
  kv_options.drop_chunk_keys = std::max<size_t>(1, options_.data_deletion_chunk_keys);
  actor_kv_ = std::make_unique<storage::ActorKv>(*store_, std::move(kv_options));
  kv_sync_ = std::make_unique<storage::GroupSync>(
      *store_, storage::GroupSync::Options{
                   .on_sync =
                       [this](bool inline_sync) {
                         kv_syncs_->Inc();
                         if (inline_sync) kv_inline_syncs_->Inc();
                       },
                   .inline_below = std::chrono::microseconds(options_.inline_sync_us),
                   .linger = std::chrono::microseconds(options_.sync_linger_us),
                   // A write on an I/O thread syncs after the handlers ready there have
                   // run: the writes they commit (other connections' requests read in the
                   // same pass) share its sync, and their answers leave together.
                   .defer =
                       [this](std::function<void()> task) {
                         if (!io_.InRuntimeThread()) return false;
                         io_.Post(std::move(task));
                         return true;
                       }});
  if (!options_.sync_thread_cpus.empty()) {
    const std::string cpus = FormatCpuList(options_.sync_thread_cpus);
    if (Status pinned = kv_sync_->PinThread(options_.sync_thread_cpus); pinned.has_value()) {
      KEEL_LOG(kInfo, kLog,
               std::string("the KV sync thread runs on ") +
                   (options_.sync_thread_cpus.size() == 1 ? "CPU " : "CPUs ") + cpus,
               {{"why", options_.sync_thread_why}});
    } else {
      KEEL_LOG(kWarn, kLog,
               "the KV sync thread could not be moved; it runs where the scheduler puts it",
               {{"cpus", cpus}, {"detail", pinned.error().message()}});
    }
  }
  page_store_ = std::make_unique<storage::PageStore>(
      *store_, storage::PageStoreOptions{
                   .delete_chunk_keys = std::max<size_t>(1, options_.data_deletion_chunk_keys)});
  catalog_ = std::make_unique<Catalog>(*store_, clock_, options_.datacenter_label, options_.seed);
  orchestrator_ = std::make_unique<Orchestrator>(*this);
  gateway_ = std::make_unique<Gateway>(*this);
  api_ = std::make_unique<RestApi>(*this);
  pool_metadata_ = std::make_unique<PoolMetadata>(*this);
  envoys_gauge_ = &metrics_.AddGauge("keel_envoy_connections", "Open envoy connections.");
  malformed_frames_ = &metrics_.AddCounter("keel_envoy_malformed_frames_total",
                                           "Envoy frames that did not decode.");
  requests_ = &metrics_.AddCounter("keel_http_requests_total", "HTTP requests received.");
  commit_seconds_ = &metrics_.AddHistogram(
      "keel_storage_commit_seconds", "Latency of the orchestrator's storage commits.",
      StorageLatencyBuckets());
  kv_syncs_ = &metrics_.AddCounter(
      "keel_kv_syncs_total", "WAL syncs made by the group commit of actor KV writes.");
  kv_inline_syncs_ = &metrics_.AddCounter(
      "keel_kv_inline_syncs_total",
      "Of keel_kv_syncs_total, those run on the committing thread (inline_sync_us).");
  kv_writes_synced_ = &metrics_.AddCounter(
      "keel_kv_writes_synced_total",
      "Actor KV writes acknowledged after a group-commit sync (÷ keel_kv_syncs_total: writes "
      "per fsync).");
  held_output_write_failures_ = &metrics_.AddCounter(
      "keel_held_output_write_failures_total",
      "Writes (KV writes, SQLite page commits) that failed on a connection with held outputs: "
      "each one's actor generation has its answers withheld from clients from then on.");
  constexpr std::string_view kPageCommits = "keel_sqlite_page_commits_total";
  constexpr std::string_view kPageCommitsHelp =
      "SQLite page commits stored, by path: made where the connection read them and made "
      "durable by the group commit's WAL sync (inline), or made with their own synced commit "
      "on a storage executor (worker).";
  page_commits_inline_ = &metrics_.AddCounter(kPageCommits, kPageCommitsHelp, {{"path", "inline"}});
  page_commits_worker_ = &metrics_.AddCounter(kPageCommits, kPageCommitsHelp, {{"path", "worker"}});
  early_requests_ = &metrics_.AddCounter(
      "keel_gateway_early_requests_total",
      "HTTP requests sent to an actor instance still starting (the envoy keeps them until it "
      "runs).");
  constexpr std::string_view kResent = "keel_gateway_requests_sent_again_total";
  constexpr std::string_view kResentHelp =
      "Early requests sent again to the actor's next instance because the one they rode with "
      "never ran them, by why: the envoy refused them as not started, or the instance "
      "stopped without running.";
  resent_not_started_ = &metrics_.AddCounter(kResent, kResentHelp, {{"reason", "not_started"}});
  resent_never_ran_ =
      &metrics_.AddCounter(kResent, kResentHelp, {{"reason", "stopped_before_running"}});
  remote_sql_metrics_.executors_created = &metrics_.AddCounter(
      "keel_remote_sql_executors_created_total",
      "Remote SQL executors opened (one per actor generation that ran SQL on a connection).");
  remote_sql_metrics_.executors_active =
      &metrics_.AddGauge("keel_remote_sql_executors_active", "Remote SQL executors open now.");
  constexpr std::string_view kRequests = "keel_remote_sql_requests_total";
  constexpr std::string_view kRequestsHelp = "Remote SQL requests by outcome.";
  remote_sql_metrics_.ok = &metrics_.AddCounter(kRequests, kRequestsHelp, {{"outcome", "ok"}});
  remote_sql_metrics_.failed =
      &metrics_.AddCounter(kRequests, kRequestsHelp, {{"outcome", "error"}});
  remote_sql_metrics_.rejected =
      &metrics_.AddCounter(kRequests, kRequestsHelp, {{"outcome", "rejected"}});
  remote_sql_metrics_.cancelled =
      &metrics_.AddCounter(kRequests, kRequestsHelp, {{"outcome", "cancelled"}});
}

Engine::~Engine() {
  pool_metadata_->Stop();  // no poll may reach the engine from here on
  // Before anything a sync's continuation may reach goes away.
  kv_sync_->Stop();
  sql_hosts_->StopAll();
  MarkClosed();
}

void Engine::MarkClosed() {
  // An engine whose Open failed leaves the marker as it found or wrote it.
  if (!opened_ || marked_closed_.exchange(true)) return;
  Status removed = store_->Delete(keys::EngineOpen());
  if (!removed.has_value() && removed.error().Is("storage", storage::kFailedPrecondition)) {
    // The store is another engine's now (a PostgreSQL table taken over): the marker is its.
    KEEL_LOG(kInfo, kLog, "the store is another engine's now: leaving its open marker to it",
             {{"error", removed.error().ToString()}});
  } else if (!removed.has_value()) {
    KEEL_LOG(
        kWarn, kLog,
        "could not mark the store as cleanly closed; the next start skips a generation per actor",
        {{"error", removed.error().ToString()}});
  }
}

Result<std::unique_ptr<Engine>> Engine::Open(EngineOptions options,
                                             std::unique_ptr<storage::KvStore> store,
                                             net::IoRuntime& io, net::IoRuntime& workers) {
  std::unique_ptr<Engine> engine(new Engine(std::move(options), std::move(store), io, workers));
  // The layout version guards against opening a data directory of another layout.
  KEEL_ASSIGN_OR_RETURN(auto layout, engine->store().Get(keys::LayoutVersion()));
  const Bytes kLayout{0, 0, 0, 1};
  if (!layout.has_value()) {
    KEEL_RETURN_IF_ERROR(engine->store().Put(keys::LayoutVersion(), kLayout));
  } else if (*layout != kLayout) {
    return Unexpected{Error{"storage", "failed_precondition",
                            "the data directory uses another storage layout version"}};
  }
  // The open marker (still present: the previous engine never closed the store), then this
  // run's number and the marker again, in one synced commit.
  KEEL_RETURN_IF_ERROR(storage::RunTransaction(engine->store(), [&](storage::KvTxn& txn) -> Status {
    KEEL_ASSIGN_OR_RETURN(auto open, txn.Get(keys::EngineOpen()));
    engine->unclean_start_ = open.has_value();
    KEEL_ASSIGN_OR_RETURN(auto last, txn.Get(keys::EngineRun()));
    uint64_t run = 0;
    if (last.has_value()) {
      ByteView in(*last);
      if (!keys::ReadU64(in, run)) run = 0;  // malformed: start over
    }
    engine->run_ = run + 1;
    Bytes value;
    keys::AppendU64(value, engine->run_);
    KEEL_RETURN_IF_ERROR(txn.Put(keys::EngineRun(), value));
    return txn.Put(keys::EngineOpen(), Bytes{});
  }));
  if (engine->unclean_start_) {
    KEEL_LOG(kWarn, kLog,
             "the previous engine did not close the store cleanly; each actor's next start "
             "skips one generation");
  }
  KEEL_RETURN_IF_ERROR(engine->catalog().Load());
  KEEL_RETURN_IF_ERROR(engine->orchestrator().Load());
  engine->pool_metadata().Start();
  engine->opened_ = true;
  return engine;
}

std::string Engine::NewRayId() {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t v = next_ray_.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ull ^
               options_.seed;
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[i] = kHex[v & 0xf];
    v >>= 4;
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

void Engine::metrics_envoy_connected(int delta) { envoys_gauge_->Add(delta); }

void Engine::metrics_malformed_frame() { malformed_frames_->Inc(); }

void Engine::ObserveCommit(Duration took) {
  commit_seconds_->Observe(std::chrono::duration<double>(took).count());
}

void Engine::Handle(std::shared_ptr<net::HttpExchange> exchange) {
  requests_->Inc();
  const net::HttpRequest& req = exchange->request();
  // An absolute-form target (RFC 9112 §3.2.2) names the same resource as its origin-form;
  // the usual origin-form one is used as it is, without a copy.
  std::string origin_form;
  std::string_view target = req.target;
  if (!target.empty() && target.front() != '/') {
    origin_form = gateway::OriginFormTarget(target);
    target = origin_form;
  }
  gateway::TargetParts parts = gateway::SplitTarget(target);
  // HEAD answers as GET; the server leaves out the body (net/http_server.h).
  if (parts.path == "/health" && (req.method == "GET" || req.method == "HEAD")) {
    HandleHealth(*exchange);
    return;
  }
  if (parts.path == "/metrics" && (req.method == "GET" || req.method == "HEAD")) {
    HandleMetrics(*exchange);
    return;
  }
  // Routed on the origin-form computed above (ClassifyRequest then uses it as it is).
  gateway::GatewayRequest greq{req.method, target, req.headers, exchange->IsWebSocketUpgrade()};
  auto route = gateway::ClassifyRequest(greq);
  if (!route.has_value()) {
    // JSON for HTTP; for a WebSocket upgrade an accepted socket closed with the reason.
    gateway_->Fail(*exchange, route.error(), gateway::CorsResponseHeaders(req.headers));
    return;
  }
  if (std::holds_alternative<gateway::EnvoyConnectRoute>(*route)) {
    HandleEnvoyConnect(std::move(exchange));
    return;
  }
  if (auto* preflight = std::get_if<gateway::CorsPreflightRoute>(&*route)) {
    exchange->Respond(net::HttpResponse{gateway::kPreflightStatus, preflight->headers, ""});
    return;
  }
  if (const auto* api = std::get_if<gateway::ApiRoute>(&*route)) {
    api_->Handle(std::move(exchange), api->target);
    return;
  }
  if (std::holds_alternative<gateway::HealthRoute>(*route)) {
    HandleHealth(*exchange);
    return;
  }
  gateway_->Serve(std::move(exchange), std::move(*route));
}

void Engine::HandleEnvoyConnect(std::shared_ptr<net::HttpExchange> exchange) {
  const net::HttpRequest& req = exchange->request();
  if (!exchange->IsWebSocketUpgrade()) {
    exchange->Respond(net::HttpResponse{200, {{"content-type", "text/plain"}}, "keel envoy endpoint"});
    return;
  }
  gateway::TargetParts parts = gateway::SplitTarget(req.target);
  auto params = gateway::ParseEnvoyConnectQuery(parts.query.value_or(""));
  // Token check before the upgrade (§3.1): the admin token, or the namespace's own token.
  const bool auth = options_.admin_token.has_value() || !options_.namespace_tokens.empty();
  if (auth) {
    auto protocols = gateway::ParseRivetSubprotocols(
        net::FindHeader(req.headers, "sec-websocket-protocol"));
    std::optional<std::string> token = protocols.token;
    if (!token.has_value()) {
      exchange->Respond(net::HttpResponse{
          401,
          {{"content-type", "application/json"}},
          gateway::ErrorJson(Error{"api", "unauthorized",
                                   "missing header: a rivet_token.* protocol is required"})});
      return;
    }
    bool ok = options_.admin_token.has_value() && ConstantTimeEquals(*token, *options_.admin_token);
    if (!ok && params.has_value()) {
      auto it = options_.namespace_tokens.find(params->namespace_name);
      ok = it != options_.namespace_tokens.end() && ConstantTimeEquals(*token, it->second);
    }
    if (!ok) {
      exchange->Respond(net::HttpResponse{
          403,
          {{"content-type", "application/json"}},
          gateway::ErrorJson(Error{"api", "forbidden", "the token is not valid for this namespace"})});
      return;
    }
  }
  // Validation failures after the upgrade end the connection with a close frame (§3.2);
  // the gateway's refusal accepts (echoing `rivet`) and closes with `group.code#ray`.
  auto refuse = [&](const Error& error) { gateway_->Fail(*exchange, error, {}); };
  if (shutting_down()) {
    refuse(Error{"ws", "going_away", "The engine is shutting down."});
    return;
  }
  if (!params.has_value()) {
    refuse(params.error());
    return;
  }
  std::optional<Namespace> ns = catalog_->FindNamespace(params->namespace_name);
  if (!ns.has_value()) {
    refuse(Error{"namespace", "not_found", "The namespace does not exist."});
    return;
  }
  if (!catalog_->FindPool(ns->id, params->pool_name).has_value()) {
    refuse(Error{"ws", "no_runner_config",
                 "Must create a runner config before connecting an envoy with pool name " +
                     params->pool_name});
    return;
  }
  auto session = std::make_shared<EnvoySession>(
      *this, std::move(*params), ns->id, next_session_id_.fetch_add(1, std::memory_order_relaxed));
  net::Headers headers;
  if (options_.hold_outputs &&
      net::FindHeader(exchange->request().headers, protocol::envoy::kHoldOutputsHeader) == "1") {
    session->EnableHeldOutputs();
    headers.emplace_back(std::string(protocol::envoy::kHoldOutputsHeader), "1");
  }
  if (options_.early_requests &&
      net::FindHeader(exchange->request().headers, protocol::envoy::kEarlyRequestsHeader) == "1") {
    session->EnableEarlyRequests();
    headers.emplace_back(std::string(protocol::envoy::kEarlyRequestsHeader), "1");
  }
  auto conn = exchange->AcceptWebSocket("rivet", session, std::move(headers));
  if (conn == nullptr) return;
  session->Start(std::move(conn));
}

void Engine::HandleHealth(net::HttpExchange& exchange) {
  net::HttpResponse r;
  r.headers = {{"content-type", "application/json"}};
  r.body = shutting_down() ? R"({"status":"shutting_down"})" : R"({"status":"ok"})";
  r.status = shutting_down() ? 503 : 200;
  exchange.Respond(std::move(r));
}

void Engine::HandleMetrics(net::HttpExchange& exchange) {
  for (const auto& [state, count] : orchestrator_->LoadedActorsByState()) {
    metrics_.AddGauge("keel_actors", "Actors loaded in the orchestrator, by state.",
                      {{"state", state}})
        .Set(static_cast<double>(count));
  }
  metrics_.AddGauge("keel_gateway_in_flight", "Tunnelled requests in flight.")
      .Set(static_cast<double>(gateway_->in_flight()));
  exchange.Respond(net::HttpResponse{
      200, {{"content-type", "text/plain; version=0.0.4"}}, metrics_.Render()});
}

void Engine::Shutdown(std::function<void()> done) {
  if (shutting_down_.exchange(true)) return;
  KEEL_LOG(kInfo, kLog, "shutting down: stopping actors with GOING_AWAY");
  pool_metadata_->Stop();
  // Last: no data deletion may run into the closed store.
  auto close_store = [this, done = std::move(done)] {
    orchestrator_->StopDataDeletions([this, done] {
      MarkClosed();
      Status flushed = store_->Close();
      if (!flushed.has_value()) {
        KEEL_LOG(kError, kLog, "storage close failed", {{"error", flushed.error().ToString()}});
      }
      done();
    });
  };
  orchestrator_->DrainAll(
      options_.actor_stop_threshold_ms, [this, close_store = std::move(close_store)] {
        // Close what is still connected; the runtimes reconnect (to the next engine).
        orchestrator_->CloseAllEnvoys(
            Error{"ws", "going_away", "The Keel engine is shutting down."}, close_store);
      });
}

}  // namespace keel::engine
