#include "engine/core/api.h"

#include <algorithm>
#include <charconv>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/ascii.h"
#include "base/log.h"
#include "base/utf8.h"
#include "engine/common/actor_limits.h"
#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "engine/core/keys.h"
#include "engine/core/orchestrator.h"
#include "engine/core/pool_metadata.h"
#include "engine/gateway/actor_key.h"
#include "engine/gateway/cors.h"
#include "engine/gateway/errors.h"
#include "engine/gateway/url.h"
#include "storage/actor_kv.h"

namespace keel::engine {
namespace {

using json = nlohmann::json;
constexpr std::string_view kLog = "api";
// GET /actors page size: `limit` defaults to 100 (actors.md §7); larger values are capped.
constexpr size_t kDefaultListLimit = 100;
constexpr size_t kMaxListLimit = 1000;
// The input limit is derived from the actor KV's value limit: keep the two together.
static_assert(kMaxActorKvValueBytes == storage::ActorKvLimits{}.max_value_size);

// A parsed request: path segments and decoded query parameters (repeatable).
struct ApiRequest {
  std::string method;
  std::vector<std::string> segments;
  std::vector<std::pair<std::string, std::string>> query;
  std::string body;

  std::optional<std::string> Query(std::string_view name) const {
    for (const auto& [k, v] : query) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
  // The values of a repeatable parameter plus the comma-separated ones of its list form
  // (e.g. `actor_id=a&actor_id=b` and `actor_ids=a,b`).
  std::vector<std::string> QueryList(std::string_view repeated, std::string_view listed) const {
    std::vector<std::string> out = QueryAll(repeated);
    if (auto list = Query(listed)) {
      size_t start = 0;
      while (start <= list->size()) {
        size_t comma = list->find(',', start);
        if (comma == std::string::npos) comma = list->size();
        if (comma > start) out.push_back(list->substr(start, comma - start));
        start = comma + 1;
      }
    }
    return out;
  }
  std::vector<std::string> QueryAll(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : query) {
      if (k == name) out.push_back(v);
    }
    return out;
  }
};

Error BadRequest(std::string message) {
  return Error{"api", "bad_request", std::move(message)};
}

// A boolean query parameter: exactly `true` or `false`; absent → `fallback`.
Result<bool> BoolQuery(const ApiRequest& req, std::string_view name, bool fallback) {
  std::optional<std::string> value = req.Query(name);
  if (!value.has_value()) return fallback;
  if (*value == "true") return true;
  if (*value == "false") return false;
  return Unexpected{BadRequest("'" + std::string(name) + "' must be true or false")};
}

// `limit`: a decimal integer of at least 1; absent → kDefaultListLimit; above
// kMaxListLimit → kMaxListLimit (the cursor continues the listing).
Result<size_t> LimitQuery(const ApiRequest& req) {
  std::optional<std::string> value = req.Query("limit");
  if (!value.has_value()) return kDefaultListLimit;
  uint64_t n = 0;
  const char* end = value->data() + value->size();
  auto [ptr, ec] = std::from_chars(value->data(), end, n);
  if (value->empty() || ec != std::errc() || ptr != end || n == 0) {
    return Unexpected{BadRequest("'limit' must be an integer of at least 1")};
  }
  return static_cast<size_t>(std::min<uint64_t>(n, kMaxListLimit));
}

// `cursor` of a listing ordered by a text key (namespaces, runner configs, envoys): the
// base64url of the last key of the previous page; absent → from the start.
Result<std::optional<std::string>> TextCursorQuery(const ApiRequest& req) {
  std::optional<std::string> value = req.Query("cursor");
  if (!value.has_value()) return std::optional<std::string>();
  auto raw = gateway::Base64UrlDecode(*value);
  if (!raw.has_value()) return Unexpected{BadRequest("invalid cursor")};
  return std::optional<std::string>(std::string(raw->begin(), raw->end()));
}

// The range of a listing read from the index under `prefix`: all of it, or from after the
// key the request's `cursor` names (the base64url of that key's part after `prefix`).
Result<storage::KeyRange> IndexRangeAfterCursor(const ApiRequest& req, const Bytes& prefix) {
  storage::KeyRange range = storage::KeyRange::Prefix(prefix);
  if (auto c = req.Query("cursor")) {
    auto raw = gateway::Base64UrlDecode(*c);
    if (!raw.has_value()) return Unexpected{BadRequest("invalid cursor")};
    Bytes after = prefix;
    after.insert(after.end(), raw->begin(), raw->end());
    range.begin = storage::KeyAfter(after);
  }
  return range;
}

// One page of a listing ordered by the text `key(item)`: the items after `after`, at most
// `limit` of them. `cursor` is set to the last key shown when more items follow (the next
// page's `cursor`), else null.
template <typename T, typename KeyFn>
std::vector<T> PageOf(std::vector<T> items, KeyFn key, const std::optional<std::string>& after,
                      size_t limit, json& cursor) {
  std::sort(items.begin(), items.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
  std::vector<T> out;
  cursor = nullptr;
  for (auto& item : items) {
    if (after.has_value() && !(key(item) > *after)) continue;
    if (out.size() == limit) {
      cursor = gateway::Base64UrlEncode(AsBytes(key(out.back())));
      break;
    }
    out.push_back(std::move(item));
  }
  return out;
}

std::string CrashPolicyName(rec::CrashPolicy p) {
  switch (p) {
    case rec::CrashPolicy::kSleep:
      return "sleep";
    case rec::CrashPolicy::kDestroy:
      return "destroy";
    default:
      return "restart";
  }
}

Result<rec::CrashPolicy> ParseCrashPolicy(const std::string& s) {
  if (s == "restart") return rec::CrashPolicy::kRestart;
  if (s == "sleep") return rec::CrashPolicy::kSleep;
  if (s == "destroy") return rec::CrashPolicy::kDestroy;
  return Unexpected{BadRequest("crash_policy must be restart, sleep or destroy")};
}

json ErrorObject(const orch::ActorError& e) {
  Error err = orch::ToError(e);
  json detail = json::object();
  switch (e.kind) {
    case orch::ActorError::Kind::kEnvoyNoResponse:
    case orch::ActorError::Kind::kEnvoyConnectionLost:
      detail["envoy_key"] = e.detail;
      break;
    case orch::ActorError::Kind::kCrashed:
      detail["message"] = e.detail;
      break;
    case orch::ActorError::Kind::kRunnerPoolError:
      // Stored as the pool's error JSON ({"<code>": {…}}): shown as it was given.
      detail = json::parse(e.detail, nullptr, /*allow_exceptions=*/false);
      if (detail.is_discarded()) detail = json{{"message", e.detail}};
      break;
    default:
      break;
  }
  json out = json::object();
  out[err.code()] = detail;
  return out;
}

json ActorJson(const ActorInfo& a, const EngineOptions& options) {
  const orch::ActorWorkflow& wf = a.workflow;
  json j;
  j["actor_id"] = a.id.ToString();
  j["name"] = a.record.name;
  j["key"] = a.record.key.has_value() ? json(*a.record.key) : json(nullptr);
  auto ns = EngineId::FromBytes(a.record.namespace_id);
  j["namespace_id"] = ns.has_value() ? ns->ToString() : "";
  j["datacenter"] = options.datacenter_name;
  j["runner_name_selector"] = a.record.pool_name;
  j["crash_policy"] = CrashPolicyName(a.record.crash_policy);
  j["create_ts"] = a.record.create_ts;
  auto ts = [&](const char* name, int64_t v) {
    if (v != 0) j[name] = v;
  };
  ts("start_ts", wf.start_ts);
  ts("pending_allocation_ts", wf.pending_allocation_ts);
  ts("connectable_ts", wf.connectable_ts);
  ts("sleep_ts", wf.sleep_ts);
  ts("reschedule_ts", wf.reschedule_ts);
  ts("destroy_ts", a.record.destroy_ts.value_or(wf.destroy_ts));
  if (wf.error.has_value()) j["error"] = ErrorObject(*wf.error);
  return j;
}

// actors.md §7 GET /envoys. `slots`: the envoy protocol carries no slot capacity (the
// runtime's totalSlots is deprecated and never sent), so it is the number of actor
// instances placed on the envoy. `stop_ts` and `metadata` are omitted when unset.
json EnvoyJson(const Orchestrator::EnvoyView& v, const EngineOptions& options) {
  json j{{"envoy_key", v.envoy_key},
         {"namespace_id", v.namespace_id.ToString()},
         {"datacenter", options.datacenter_name},
         {"pool_name", v.pool_name},
         {"version", v.version},
         {"slots", v.actors},
         {"create_ts", v.create_ts},
         {"last_ping_ts", v.last_ping_ts},
         {"last_connected_ts", v.last_connected_ts},
         {"last_rtt", v.last_rtt_ms}};
  if (v.stop_ts.has_value()) j["stop_ts"] = *v.stop_ts;
  if (v.metadata.has_value()) {
    json metadata = json::parse(*v.metadata, nullptr, false);
    j["metadata"] = metadata.is_object() ? metadata : json::object();
  }
  return j;
}

json NamespaceJson(const Namespace& ns) {
  return json{{"namespace_id", ns.id.ToString()},
              {"name", ns.name},
              {"display_name", ns.display_name},
              {"create_ts", ns.create_ts}};
}

json PoolJson(const Pool& pool, const EngineOptions& options) {
  json config;
  if (pool.serverless()) {
    const auto& s = *pool.config.serverless;
    json headers = json::object();
    for (const auto& [k, v] : s.headers) headers[k] = v;
    config["serverless"] = json{{"url", s.url},
                                {"headers", headers},
                                {"request_lifespan", s.request_lifespan_s},
                                {"max_concurrent_actors", s.max_concurrent_actors},
                                {"drain_grace_period", s.drain_grace_period_s},
                                {"slots_per_runner", s.slots_per_runner},
                                {"min_runners", s.min_runners},
                                {"max_runners", s.max_runners},
                                {"runners_margin", s.runners_margin},
                                {"metadata_poll_interval", s.metadata_poll_interval_ms}};
  } else {
    config["normal"] = json::object();
  }
  auto metadata = json::parse(pool.config.metadata, nullptr, false);
  config["metadata"] = metadata.is_discarded() ? json::object() : metadata;
  config["drain_on_version_upgrade"] = pool.config.drain_on_version_upgrade;
  if (pool.config.protocol_version.has_value()) {
    config["protocol_version"] = *pool.config.protocol_version;
  } else {
    config["protocol_version"] = nullptr;
  }
  config["runner_pool_error"] = nullptr;
  return json{{"datacenters", json{{options.datacenter_name, config}}}};
}

// Reads a JSON object body; unknown fields are rejected (actors.md §7).
Result<json> ParseBody(const std::string& body, std::initializer_list<std::string_view> allowed) {
  json j = json::parse(body.empty() ? std::string("{}") : body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Unexpected{BadRequest("the request body must be a JSON object")};
  }
  for (const auto& [key, _] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Unexpected{BadRequest("unknown field '" + key + "'")};
    }
  }
  return j;
}

template <typename T>
Result<T> Field(const json& j, const char* name) {
  if (!j.contains(name) || j[name].is_null()) {
    return Unexpected{BadRequest(std::string("missing field '") + name + "'")};
  }
  try {
    return j[name].get<T>();
  } catch (const std::exception&) {
    return Unexpected{BadRequest(std::string("field '") + name + "' has the wrong type")};
  }
}

template <typename T>
Result<std::optional<T>> OptionalField(const json& j, const char* name) {
  if (!j.contains(name) || j[name].is_null()) return std::optional<T>();
  KEEL_ASSIGN_OR_RETURN(T v, Field<T>(j, name));
  return std::optional<T>(std::move(v));
}

class Call {
 public:
  Call(Engine& engine, std::shared_ptr<net::HttpExchange> exchange)
      : engine_(engine), exchange_(std::move(exchange)) {}

  void Ok(const json& body, int status = 200) {
    net::HttpResponse r;
    r.status = status;
    r.headers = Cors();
    r.headers.emplace_back("content-type", "application/json");
    // Stored text that is not UTF-8 (e.g. a pool name an older engine accepted) is shown
    // with U+FFFD rather than failing the whole answer.
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    exchange_->Respond(std::move(r));
  }

  // `metadata`: the error's metadata object (actors.md §5.9), `{}` unless given.
  void Fail(const Error& error, const json& metadata = json::object()) {
    net::HttpResponse r;
    r.status = gateway::HttpStatusFor(error);
    r.headers = Cors();
    r.headers.emplace_back("content-type", "application/json");
    Error shown = error;
    if (gateway::IsInternalError(error) || error.group() == "storage") {
      KEEL_LOG(kError, kLog, "internal error", {{"error", error.ToString()}});
      shown = Error{"core", "internal_error", "An internal error occurred."};
      r.status = 500;
    }
    r.body = gateway::ErrorJson(shown,
                                shown.code() == error.code() && shown.group() == error.group()
                                    ? metadata.dump(-1, ' ', false, json::error_handler_t::replace)
                                    : std::string("{}"));
    exchange_->Respond(std::move(r));
  }

  // The REST API mirrors the caller's origin and allows credentials (actors.md §7).
  net::Headers Cors() const { return gateway::CorsResponseHeaders(exchange_->request().headers); }

  Engine& engine() { return engine_; }

 private:
  Engine& engine_;
  std::shared_ptr<net::HttpExchange> exchange_;
};

using CallPtr = std::shared_ptr<Call>;

Result<Namespace> RequireNamespace(Engine& engine, const ApiRequest& req) {
  std::optional<std::string> name = req.Query("namespace");
  if (!name.has_value()) return Unexpected{BadRequest("the 'namespace' query parameter is required")};
  std::optional<Namespace> ns = engine.catalog().FindNamespace(*name);
  if (!ns.has_value()) {
    return Unexpected{Error{"actor", "namespace_not_found", "The namespace does not exist."}};
  }
  return *ns;
}

void Respond(const CallPtr& call, const Result<json>& result) {
  if (result.has_value()) {
    call->Ok(*result);
  } else {
    call->Fail(result.error());
  }
}

// ---- handlers ----------------------------------------------------------------------------

// Ordered by name, paged by `limit` (default 100) and `cursor` (actors.md §7).
Result<json> ListNamespaces(Engine& engine, const ApiRequest& req) {
  KEEL_ASSIGN_OR_RETURN(const size_t limit, LimitQuery(req));
  KEEL_ASSIGN_OR_RETURN(const auto after, TextCursorQuery(req));
  std::vector<std::string> names = req.QueryAll("name");
  std::vector<std::string> ids = req.QueryAll("namespace_id");
  std::vector<Namespace> matching;
  for (auto& ns : engine.catalog().ListNamespaces()) {
    if (!names.empty() && std::find(names.begin(), names.end(), ns.name) == names.end()) continue;
    if (!ids.empty() && std::find(ids.begin(), ids.end(), ns.id.ToString()) == ids.end()) continue;
    matching.push_back(std::move(ns));
  }
  json cursor;
  json list = json::array();
  for (const auto& ns : PageOf(
           std::move(matching), [](const Namespace& n) { return n.name; }, after, limit, cursor)) {
    list.push_back(NamespaceJson(ns));
  }
  return json{{"namespaces", list}, {"pagination", json{{"cursor", cursor}}}};
}

Result<json> CreateNamespace(Engine& engine, const ApiRequest& req) {
  KEEL_ASSIGN_OR_RETURN(json body, ParseBody(req.body, {"name", "display_name"}));
  KEEL_ASSIGN_OR_RETURN(std::string name, Field<std::string>(body, "name"));
  KEEL_ASSIGN_OR_RETURN(auto display, OptionalField<std::string>(body, "display_name"));
  KEEL_ASSIGN_OR_RETURN(Namespace ns,
                        engine.catalog().CreateNamespace(name, display.value_or(name)));
  return json{{"namespace", NamespaceJson(ns)}};
}

Result<json> ListRunnerConfigs(Engine& engine, const ApiRequest& req) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  KEEL_ASSIGN_OR_RETURN(const size_t limit, LimitQuery(req));
  KEEL_ASSIGN_OR_RETURN(const auto after, TextCursorQuery(req));
  std::optional<std::string> variant = req.Query("variant");
  if (variant.has_value() && *variant != "normal" && *variant != "serverless") {
    return Unexpected{BadRequest("'variant' must be normal or serverless")};
  }
  std::vector<std::string> wanted = req.QueryList("runner_name", "runner_names");
  std::vector<Pool> matching;
  for (auto& pool : engine.catalog().ListPools(ns.id)) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), pool.name) == wanted.end()) {
      continue;
    }
    if (variant.has_value() && pool.serverless() != (*variant == "serverless")) continue;
    matching.push_back(std::move(pool));
  }
  json cursor;
  json out = json::object();
  for (const auto& pool : PageOf(
           std::move(matching), [](const Pool& p) { return p.name; }, after, limit, cursor)) {
    out[pool.name] = PoolJson(pool, engine.options());
    if (pool.serverless()) {
      // The runner-pool error of the pool's metadata polls (engine/core/pool_metadata.h).
      PoolMetadataView view = engine.pool_metadata().View(ns.id, pool.name);
      if (view.error.has_value()) {
        out[pool.name]["datacenters"][engine.options().datacenter_name]["runner_pool_error"] =
            json::parse(MetadataFailureJson(*view.error));
      }
    }
  }
  return json{{"runner_configs", out}, {"pagination", json{{"cursor", cursor}}}};
}

// Refuses members of the object `j` not in `allowed` (request bodies reject unknown fields,
// actors.md §7; a misspelt setting must not silently fall back to its default).
Status OnlyFields(const json& j, std::string_view what,
                  std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, _] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Unexpected{BadRequest("unknown field '" + key + "' in " + std::string(what))};
    }
  }
  return Status{};
}

Result<rec::RunnerConfigRecord> ParseRunnerConfig(const json& dc, uint32_t default_drain_grace_s) {
  if (!dc.is_object()) return Unexpected{BadRequest("a runner config must be an object")};
  KEEL_RETURN_IF_ERROR(OnlyFields(
      dc, "a runner config", {"normal", "serverless", "metadata", "drain_on_version_upgrade"}));
  rec::RunnerConfigRecord config;
  config.metadata = dc.contains("metadata") && !dc["metadata"].is_null() ? dc["metadata"].dump()
                                                                          : "{}";
  KEEL_ASSIGN_OR_RETURN(auto drain, OptionalField<bool>(dc, "drain_on_version_upgrade"));
  config.drain_on_version_upgrade = drain.value_or(true);
  const bool serverless = dc.contains("serverless") && !dc["serverless"].is_null();
  const bool normal = dc.contains("normal") && !dc["normal"].is_null();
  if (serverless == normal) {
    return Unexpected{BadRequest("a runner config needs 'normal' or 'serverless'")};
  }
  if (normal) {
    if (!dc["normal"].is_object() || !dc["normal"].empty()) {
      return Unexpected{BadRequest("'normal' must be an empty object")};
    }
    return config;
  }
  const json& s = dc["serverless"];
  if (!s.is_object()) return Unexpected{BadRequest("'serverless' must be an object")};
  KEEL_RETURN_IF_ERROR(OnlyFields(s, "serverless",
                                  {"url", "headers", "request_lifespan", "max_concurrent_actors",
                                   "drain_grace_period", "slots_per_runner", "min_runners",
                                   "max_runners", "runners_margin", "metadata_poll_interval"}));
  rec::ServerlessPool pool;
  KEEL_ASSIGN_OR_RETURN(pool.url, Field<std::string>(s, "url"));
  if (s.contains("headers") && !s["headers"].is_null()) {
    if (!s["headers"].is_object()) {
      return Unexpected{BadRequest("serverless headers must be an object of strings")};
    }
    for (const auto& [k, v] : s["headers"].items()) {
      if (!v.is_string()) return Unexpected{BadRequest("serverless headers must be strings")};
      pool.headers.emplace_back(k, v.get<std::string>());
    }
  }
  // Counts are unsigned 32-bit integers: a negative, fractional, textual or larger value is
  // refused, not read as the default (or truncated).
  auto u32 = [&](const char* name, uint32_t fallback) -> Result<uint32_t> {
    if (!s.contains(name) || s[name].is_null()) return fallback;
    const json& v = s[name];
    if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX) {
      return Unexpected{
          BadRequest(std::string("field '") + name + "' must be an integer from 0 to 4294967295")};
    }
    return static_cast<uint32_t>(v.get<uint64_t>());
  };
  KEEL_ASSIGN_OR_RETURN(pool.request_lifespan_s, u32("request_lifespan", 300));
  // The engine drops each start request at its lifespan (actors.md §6.10 step 4): none
  // could host an actor.
  if (pool.request_lifespan_s == 0) {
    return Unexpected{BadRequest("field 'request_lifespan' must be at least 1 (seconds)")};
  }
  KEEL_ASSIGN_OR_RETURN(pool.max_runners, u32("max_runners", 100));
  KEEL_ASSIGN_OR_RETURN(pool.max_concurrent_actors, u32("max_concurrent_actors", pool.max_runners));
  KEEL_ASSIGN_OR_RETURN(pool.drain_grace_period_s,
                        u32("drain_grace_period", default_drain_grace_s));
  KEEL_ASSIGN_OR_RETURN(pool.slots_per_runner, u32("slots_per_runner", 1));
  KEEL_ASSIGN_OR_RETURN(pool.min_runners, u32("min_runners", 0));
  KEEL_ASSIGN_OR_RETURN(pool.runners_margin, u32("runners_margin", 0));
  KEEL_ASSIGN_OR_RETURN(pool.metadata_poll_interval_ms, u32("metadata_poll_interval", 10000));
  config.serverless = std::move(pool);
  return config;
}

Result<json> PutRunnerConfig(Engine& engine, const ApiRequest& req, const std::string& name) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  // Names are text (as actor names, which JSON and the gateway's query form keep UTF-8):
  // a name the API could not render in JSON is refused here.
  if (!IsValidUtf8(name)) {
    return Unexpected{Error{"runner_config", "invalid", "pool names must be valid UTF-8"}};
  }
  KEEL_ASSIGN_OR_RETURN(json body, ParseBody(req.body, {"datacenters"}));
  if (!body.contains("datacenters") || !body["datacenters"].is_object()) {
    return Unexpected{BadRequest("missing field 'datacenters'")};
  }
  const json& dcs = body["datacenters"];
  const std::string& dc_name = engine.options().datacenter_name;
  if (!dcs.contains(dc_name)) {
    // Datacenters omitted are deleted (§7); this engine is one datacenter.
    Status s = engine.catalog().DeletePool(ns.id, name);
    if (!s.has_value() && s.error().code() != "not_found") return Unexpected{s.error()};
    engine.pool_metadata().PoolChanged(ns.id, name);  // stops its polling
    return json{{"endpoint_config_changed", false}};
  }
  for (const auto& [dc, _] : dcs.items()) {
    if (dc != dc_name) {
      return Unexpected{BadRequest("unknown datacenter '" + dc + "'")};
    }
  }
  // A pool without its own drain grace gets the engine's (serverless_drain_grace_period),
  // in the field's whole seconds, rounded up.
  const int64_t grace_ms = std::max<int64_t>(engine.options().serverless_drain_grace_period_ms, 0);
  const auto default_grace_s =
      static_cast<uint32_t>(std::min<int64_t>((grace_ms + 999) / 1000, UINT32_MAX));
  KEEL_ASSIGN_OR_RETURN(auto config, ParseRunnerConfig(dcs[dc_name], default_grace_s));
  KEEL_ASSIGN_OR_RETURN(bool changed, engine.catalog().PutPool(ns.id, name, std::move(config)));
  // Starts, re-times or stops the pool's metadata polling; a new or changed serverless
  // endpoint is polled at once.
  engine.pool_metadata().PoolChanged(ns.id, name);
  return json{{"endpoint_config_changed", changed}};
}

Result<json> DeleteRunnerConfig(Engine& engine, const ApiRequest& req, const std::string& name) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  KEEL_RETURN_IF_ERROR(engine.catalog().DeletePool(ns.id, name));
  engine.pool_metadata().PoolChanged(ns.id, name);
  return json::object();
}

// POST /runner-configs/serverless-health-check `{url, headers?}`: one fetch of
// `{url}/metadata`, checked as a poll is. Answers 200 `{"success": {"version", …}}` or
// `{"failure": {"error": {"<code>": {…}}}}` (engine/core/pool_metadata.h).
void ServerlessHealthCheck(Engine& engine, const ApiRequest& req, const CallPtr& call) {
  auto run = [&]() -> Status {
    KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
    (void)ns;
    KEEL_ASSIGN_OR_RETURN(json body, ParseBody(req.body, {"url", "headers"}));
    KEEL_ASSIGN_OR_RETURN(std::string url, Field<std::string>(body, "url"));
    net::Headers headers;
    if (body.contains("headers") && !body["headers"].is_null()) {
      if (!body["headers"].is_object()) {
        return Unexpected{BadRequest("'headers' must be an object of strings")};
      }
      for (const auto& [k, v] : body["headers"].items()) {
        if (!v.is_string()) return Unexpected{BadRequest("'headers' must be an object of strings")};
        if (!net::IsValidHeaderField(k, v.get<std::string>())) {
          return Unexpected{BadRequest("header '" + k + "' is not a valid HTTP header")};
        }
        headers.emplace_back(k, v.get<std::string>());
      }
    }
    engine.pool_metadata().Check(std::move(url), std::move(headers), [call](MetadataResult r) {
      if (r.first.has_value()) {
        json success{{"version", r.first->version}};
        if (r.first->envoy_protocol_version.has_value()) {
          success["envoy_protocol_version"] = *r.first->envoy_protocol_version;
        }
        if (r.first->envoy_version.has_value()) success["envoy_version"] = *r.first->envoy_version;
        call->Ok(json{{"success", success}});
      } else {
        call->Ok(json{{"failure", json{{"error", json::parse(MetadataFailureJson(*r.second))}}}});
      }
    });
    return {};
  };
  Status s = run();
  if (!s.has_value()) call->Fail(s.error());
}

// POST /runner-configs/{pool}/refresh-metadata `{}`: polls the pool now and answers `{}`
// once the result is recorded (GET /runner-configs shows it).
void RefreshRunnerConfigMetadata(Engine& engine, const ApiRequest& req, const CallPtr& call,
                                 const std::string& name) {
  auto ns = RequireNamespace(engine, req);
  if (!ns.has_value()) {
    call->Fail(ns.error());
    return;
  }
  if (auto body = ParseBody(req.body, {}); !body.has_value()) {
    call->Fail(body.error());
    return;
  }
  engine.pool_metadata().Refresh(ns->id, name, [call](Status s) {
    if (!s.has_value()) {
      call->Fail(s.error());
    } else {
      call->Ok(json::object());
    }
  });
}

// A destroyed actor is not found by id (actors.md §6.9) unless `include_destroyed`.
Result<ActorInfo> ReadActor(Engine& engine, const Namespace& ns, const std::string& id_text,
                            bool include_destroyed = false) {
  auto id = EngineId::Parse(id_text);
  if (!id.has_value()) {
    return Unexpected{Error{"actor", "not_found", "The actor does not exist or was destroyed."}};
  }
  KEEL_ASSIGN_OR_RETURN(ActorInfo info, engine.orchestrator().Read(*id));
  auto actor_ns = EngineId::FromBytes(info.record.namespace_id);
  if (!actor_ns.has_value() || !(*actor_ns == ns.id) ||
      (info.record.destroyed && !include_destroyed)) {
    return Unexpected{Error{"actor", "not_found", "The actor does not exist or was destroyed."}};
  }
  return info;
}

Result<json> ListActors(Engine& engine, const ApiRequest& req) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  KEEL_ASSIGN_OR_RETURN(const bool include_destroyed,
                        BoolQuery(req, "include_destroyed", /*fallback=*/false));
  KEEL_ASSIGN_OR_RETURN(const size_t limit, LimitQuery(req));
  std::vector<std::string> id_texts = req.QueryList("actor_id", "actor_ids");
  json actors = json::array();
  json cursor = nullptr;
  if (!id_texts.empty()) {
    if (id_texts.size() > 32) return Unexpected{BadRequest("at most 32 actor ids")};
    // An id that does not parse is a bad request; one that names no actor (or one of
    // another namespace, or a destroyed one) is left out.
    for (const auto& text : id_texts) {
      auto id = EngineId::Parse(text);
      if (!id.has_value()) {
        return Unexpected{BadRequest("invalid actor id '" + text + "': " + id.error().message())};
      }
    }
    for (const auto& text : id_texts) {
      auto info = ReadActor(engine, ns, text, include_destroyed);
      if (!info.has_value()) {
        if (info.error().Is("actor", "not_found")) continue;
        return Unexpected{info.error()};
      }
      actors.push_back(ActorJson(*info, engine.options()));
    }
    return json{{"actors", actors}, {"pagination", json{{"cursor", cursor}}}};
  }
  std::optional<std::string> name = req.Query("name");
  if (!name.has_value()) {
    return Unexpected{BadRequest("'name' is required unless actor ids are given")};
  }
  KEEL_RETURN_IF_ERROR(ValidateActorName(*name));
  std::optional<std::string> key = req.Query("key");
  if (key.has_value()) {
    KEEL_RETURN_IF_ERROR(gateway::ValidateSerializedActorKey(*key));
    if (!include_destroyed) {
      // At most one live actor owns a key: the key index finds it.
      KEEL_ASSIGN_OR_RETURN(auto found, engine.orchestrator().FindByKey(ns.id, *name, *key));
      if (found.has_value()) {
        KEEL_ASSIGN_OR_RETURN(ActorInfo info, engine.orchestrator().Read(*found));
        if (!info.record.destroyed) actors.push_back(ActorJson(info, engine.options()));
      }
      return json{{"actors", actors}, {"pagination", json{{"cursor", cursor}}}};
    }
    // A destroyed actor released its key (the key index no longer names it), but the
    // by-name index keeps every actor: scan it and keep the key's actors, destroyed or not.
  }
  Bytes prefix = keys::ActorsByNamePrefix(ns.id.bytes(), *name);
  KEEL_ASSIGN_OR_RETURN(storage::KeyRange range, IndexRangeAfterCursor(req, prefix));
  // Oldest first (the index is ordered by create_ts); scan ahead in pages until `limit`
  // actors pass the filters, and on to the next one that does: only then is there a next
  // page (its cursor is the last actor shown), so a full last page has no cursor.
  Bytes last_shown;
  bool more = false;
  while (!more) {
    KEEL_ASSIGN_OR_RETURN(auto page, engine.store().Scan(range, storage::ScanOptions{.limit = 256}));
    if (page.empty()) break;
    for (const auto& kv : page) {
      range.begin = storage::KeyAfter(kv.key);
      ByteView rest = ByteView(kv.key).subspan(prefix.size());
      if (rest.size() < 8 + EngineId::kByteSize) continue;
      auto id = EngineId::FromBytes(rest.subspan(8));
      if (!id.has_value()) continue;
      auto info = engine.orchestrator().Read(*id);
      if (!info.has_value()) continue;
      if (info->record.destroyed && !include_destroyed) continue;
      if (key.has_value() && info->record.key != key) continue;
      if (actors.size() == limit) {
        more = true;
        break;
      }
      actors.push_back(ActorJson(*info, engine.options()));
      last_shown.assign(rest.begin(), rest.end());
    }
    if (page.size() < 256) break;
  }
  if (more) cursor = gateway::Base64UrlEncode(last_shown);
  return json{{"actors", actors}, {"pagination", json{{"cursor", cursor}}}};
}

Result<json> ListActorNames(Engine& engine, const ApiRequest& req) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  KEEL_ASSIGN_OR_RETURN(const size_t limit, LimitQuery(req));
  Bytes prefix = keys::ActorNamesPrefix(ns.id.bytes());
  KEEL_ASSIGN_OR_RETURN(storage::KeyRange range, IndexRangeAfterCursor(req, prefix));
  // Every name ever used by a create is listed: read one page (and one entry to know
  // whether another page follows), in key order.
  KEEL_ASSIGN_OR_RETURN(auto kvs,
                        engine.store().Scan(range, storage::ScanOptions{.limit = limit + 1}));
  json cursor = nullptr;
  if (kvs.size() > limit) {
    kvs.resize(limit);
    cursor = gateway::Base64UrlEncode(ByteView(kvs.back().key).subspan(prefix.size()));
  }
  json names = json::object();
  for (const auto& kv : kvs) {
    ByteView rest = ByteView(kv.key).subspan(prefix.size());
    std::string name;
    if (!keys::ReadStr(rest, name)) continue;
    auto record = protocol::engine::ReadRecord<rec::ActorNameRecord>(kv.value);
    json metadata = record.has_value() ? json::parse(record->metadata, nullptr, false)
                                       : json::object();
    if (metadata.is_discarded()) metadata = json::object();
    names[name] = json{{"metadata", metadata}};
  }
  return json{{"names", names}, {"pagination", json{{"cursor", cursor}}}};
}

// GET /health/fanout: the health of every datacenter, asked of each. This engine is its
// only datacenter, so the answer is its own health (GET /health's `status`), with the
// datacenter's identity as GET /datacenters gives it.
json HealthFanout(Engine& engine) {
  const EngineOptions& o = engine.options();
  return json{
      {"datacenters", json::array({json{{"datacenter_label", o.datacenter_label},
                                        {"name", o.datacenter_name},
                                        {"url", o.public_url},
                                        {"status", engine.shutting_down() ? "shutting_down" : "ok"},
                                        {"runtime", "keel"},
                                        {"version", o.engine_version}}})}};
}

// GET /runners and GET /runners/names: the legacy runner protocol's listings. Keel's engine
// speaks only the envoy protocol (its runtimes are envoys: GET /envoys), so no runner ever
// connects and both lists are empty; the query is checked as for the other listings.
Result<json> ListRunners(Engine& engine, const ApiRequest& req, bool names) {
  KEEL_RETURN_IF_ERROR(RequireNamespace(engine, req));
  KEEL_RETURN_IF_ERROR(LimitQuery(req));
  KEEL_RETURN_IF_ERROR(TextCursorQuery(req));
  if (!names) KEEL_RETURN_IF_ERROR(BoolQuery(req, "include_stopped", /*fallback=*/false));
  return json{{names ? "names" : "runners", json::array()},
              {"pagination", json{{"cursor", nullptr}}}};
}

Result<CreateActorRequest> ParseCreate(Engine& engine, const ApiRequest& req, bool get_or_create) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  KEEL_ASSIGN_OR_RETURN(json body, ParseBody(req.body, {"datacenter", "name", "key", "input",
                                                        "runner_name_selector", "crash_policy"}));
  CreateActorRequest create;
  create.namespace_id = ns.id;
  create.get_or_create = get_or_create;
  KEEL_ASSIGN_OR_RETURN(create.name, Field<std::string>(body, "name"));
  if (create.name.empty()) return Unexpected{BadRequest("name must not be empty")};
  KEEL_RETURN_IF_ERROR(ValidateActorName(create.name));
  KEEL_ASSIGN_OR_RETURN(auto key, OptionalField<std::string>(body, "key"));
  if (get_or_create && !key.has_value()) {
    return Unexpected{Error{"actor", "empty_key", "get-or-create needs a key"}};
  }
  if (key.has_value()) {
    KEEL_RETURN_IF_ERROR(gateway::ValidateSerializedActorKey(*key));
    create.key = std::move(key);
  }
  KEEL_ASSIGN_OR_RETURN(auto dc, OptionalField<std::string>(body, "datacenter"));
  if (dc.has_value() && *dc != engine.options().datacenter_name) {
    return Unexpected{BadRequest("unknown datacenter '" + *dc + "'")};
  }
  KEEL_ASSIGN_OR_RETURN(auto input, OptionalField<std::string>(body, "input"));
  if (input.has_value()) {
    auto bytes = gateway::Base64Decode(*input);
    if (!bytes.has_value()) return Unexpected{BadRequest("input must be base64")};
    KEEL_RETURN_IF_ERROR(ValidateActorInput(bytes->size()));
    create.input = std::move(*bytes);
  }
  KEEL_ASSIGN_OR_RETURN(auto pool, OptionalField<std::string>(body, "runner_name_selector"));
  create.pool_name = pool.value_or(std::string(kDefaultPool));
  KEEL_ASSIGN_OR_RETURN(auto policy, OptionalField<std::string>(body, "crash_policy"));
  if (policy.has_value()) {
    KEEL_ASSIGN_OR_RETURN(create.crash_policy, ParseCrashPolicy(*policy));
  }
  return create;
}

Result<json> GetKvKey(Engine& engine, const ApiRequest& req, const std::string& actor,
                      const std::string& key) {
  KEEL_ASSIGN_OR_RETURN(Namespace ns, RequireNamespace(engine, req));
  // The key is standard base64 with padding (what the API answers values in); anything else
  // is refused rather than read as raw bytes, which would look up another key.
  auto key_bytes = gateway::Base64Decode(key);
  if (!key_bytes.has_value()) {
    return Unexpected{BadRequest("the KV key must be standard base64 with padding: " +
                                 key_bytes.error().message())};
  }
  KEEL_ASSIGN_OR_RETURN(ActorInfo info, ReadActor(engine, ns, actor));
  protocol::envoy::latest::KvGetRequest get;
  get.keys.push_back(std::move(*key_bytes));
  KEEL_ASSIGN_OR_RETURN(auto got, engine.actor_kv().Get(info.id.bytes(), get));
  if (got.keys.empty()) {
    return Unexpected{Error{"actor", "kv_key_not_found", "The KV key does not exist."}};
  }
  return json{{"value", gateway::Base64Encode(got.values[0])},
              {"update_ts", got.metadata[0].update_ts}};
}

// `actor.duplicate_key` carries the key and the id of the actor that owns it (actors.md
// §6.2: metadata `key`, existing actor id), so a caller need not parse the message.
json CreateErrorMetadata(const Error& error, const std::optional<std::string>& key) {
  json metadata = json::object();
  if (!error.Is("actor", "duplicate_key") || !key.has_value()) return metadata;
  metadata["key"] = *key;
  const std::string& message = error.message();
  size_t colon = message.rfind(": ");
  if (colon != std::string::npos) {
    std::string id = message.substr(colon + 2);
    if (EngineId::Parse(id).has_value()) metadata["existing_actor_id"] = id;
  }
  return metadata;
}

void Route(Engine& engine_, const CallPtr& call, ApiRequest& req);

}  // namespace

RestApi::RestApi(Engine& engine) : engine_(engine) {}

void RestApi::Handle(std::shared_ptr<net::HttpExchange> exchange, std::string_view target) {
  auto call = std::make_shared<Call>(engine_, exchange);
  const net::HttpRequest& http = exchange->request();
  if (http.method == "OPTIONS") {
    // CORS preflight: mirror the caller's origin, method and headers (actors.md §5.7).
    net::HttpResponse r;
    r.status = 204;
    r.headers = call->Cors();
    std::string_view method = net::FindHeader(http.headers, "access-control-request-method");
    std::string_view headers = net::FindHeader(http.headers, "access-control-request-headers");
    r.headers.emplace_back("access-control-allow-methods",
                           method.empty() ? "GET, POST, PUT, DELETE, OPTIONS, PATCH"
                                          : std::string(method));
    r.headers.emplace_back("access-control-allow-headers",
                           headers.empty() ? "*" : std::string(headers));
    r.headers.emplace_back("access-control-max-age", "86400");
    exchange->Respond(std::move(r));
    return;
  }
  if (engine_.options().admin_token.has_value()) {
    std::string_view auth = net::FindHeader(http.headers, "authorization");
    if (auth.empty()) {
      call->Fail(Error{"api", "unauthorized", "an admin token is required (Authorization: Bearer)"});
      return;
    }
    std::optional<std::string_view> token = BearerToken(auth);
    if (!token.has_value() || !ConstantTimeEquals(*token, *engine_.options().admin_token)) {
      call->Fail(Error{"api", "forbidden", "the token is not valid"});
      return;
    }
  }
  // Asterisk-form ("OPTIONS *" was answered above) and authority-form targets, and anything
  // that is not a target at all, name no resource here.
  if (target.empty() || target.front() != '/') {
    call->Fail(
        BadRequest("the request target must be a path starting with '/' or an absolute URL"));
    return;
  }
  ApiRequest req;
  req.method = http.method;
  req.body = http.body;
  gateway::TargetParts parts = gateway::SplitTarget(target);
  size_t start = 1;
  std::string_view path = parts.path;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) {
      auto seg = gateway::PercentDecode(path.substr(start, slash - start));
      if (!seg.has_value()) {
        call->Fail(BadRequest("bad percent-encoding in the path"));
        return;
      }
      req.segments.push_back(std::move(*seg));
    }
    start = slash + 1;
  }
  if (parts.query.has_value()) {
    for (auto& p : gateway::ParseQuery(*parts.query)) {
      if (!p.name.has_value() || !p.value.has_value()) {
        call->Fail(BadRequest("bad percent-encoding in the query"));
        return;
      }
      req.query.emplace_back(std::move(*p.name), std::move(*p.value));
    }
  }
  // Everything below may read or write storage: run it on the worker pool.
  engine_.PostWork([this, call, req = std::move(req)]() mutable {
    // A malformed body must never take the process down (a JSON value of an unexpected
    // type throws from nlohmann's accessors): answer 400 and keep serving.
    try {
      Route(engine_, call, req);
    } catch (const std::exception& e) {
      call->Fail(BadRequest(std::string("malformed request: ") + e.what()));
    }
  });
}

namespace {

// Dispatches one parsed API request (on a worker).
void Route(Engine& engine_, const CallPtr& call, ApiRequest& req) {
    Engine& engine = engine_;
    const auto& s = req.segments;
    const std::string& m = req.method;
    auto is = [&](std::initializer_list<std::string_view> want) {
      if (s.size() != want.size()) return false;
      size_t i = 0;
      for (auto w : want) {
        if (w != "*" && s[i] != w) return false;
        ++i;
      }
      return true;
    };
    if (m == "GET" && is({"metadata"})) {
      call->Ok(json{{"runtime", "keel"},
                    {"version", engine.options().engine_version},
                    {"envoy_protocol_versions", json::array({2, 3, 4})}});
    } else if (m == "GET" && is({"health", "fanout"})) {
      call->Ok(HealthFanout(engine));
    } else if (m == "GET" && is({"datacenters"})) {
      call->Ok(json{{"datacenters", json::array({json{{"label", engine.options().datacenter_label},
                                                      {"name", engine.options().datacenter_name},
                                                      {"url", engine.options().public_url}}})},
                    {"pagination", json{{"cursor", nullptr}}}});
    } else if (m == "GET" && is({"namespaces"})) {
      Respond(call, ListNamespaces(engine, req));
    } else if (m == "POST" && is({"namespaces"})) {
      Respond(call, CreateNamespace(engine, req));
    } else if (m == "GET" && is({"runner-configs"})) {
      Respond(call, ListRunnerConfigs(engine, req));
    } else if (m == "PUT" && is({"runner-configs", "*"})) {
      Respond(call, PutRunnerConfig(engine, req, s[1]));
    } else if (m == "DELETE" && is({"runner-configs", "*"})) {
      Respond(call, DeleteRunnerConfig(engine, req, s[1]));
    } else if (m == "POST" && is({"runner-configs", "serverless-health-check"})) {
      ServerlessHealthCheck(engine, req, call);
    } else if (m == "POST" && is({"runner-configs", "*", "refresh-metadata"})) {
      RefreshRunnerConfigMetadata(engine, req, call, s[1]);
    } else if (m == "GET" && is({"actors"})) {
      Respond(call, ListActors(engine, req));
    } else if (m == "GET" && is({"actors", "names"})) {
      Respond(call, ListActorNames(engine, req));
    } else if ((m == "POST" || m == "PUT") && is({"actors"})) {
      const bool get_or_create = m == "PUT";
      auto create = ParseCreate(engine, req, get_or_create);
      if (!create.has_value()) {
        call->Fail(create.error());
        return;
      }
      std::optional<std::string> key = create->key;
      engine.orchestrator().Create(
          std::move(*create),
          [call, get_or_create, key, &engine](Result<std::pair<ActorInfo, bool>> created) {
            if (!created.has_value()) {
              call->Fail(created.error(), CreateErrorMetadata(created.error(), key));
              return;
            }
            json body{{"actor", ActorJson(created->first, engine.options())}};
            if (get_or_create) body["created"] = created->second;
            call->Ok(body);
          });
    } else if (m == "GET" && is({"actors", "*"})) {
      auto ns = RequireNamespace(engine, req);
      if (!ns.has_value()) {
        call->Fail(ns.error());
        return;
      }
      auto info = ReadActor(engine, *ns, s[1]);
      if (!info.has_value()) {
        call->Fail(info.error());
        return;
      }
      call->Ok(json{{"actor", ActorJson(*info, engine.options())}});
    } else if (m == "DELETE" && is({"actors", "*"})) {
      auto ns = RequireNamespace(engine, req);
      auto id = EngineId::Parse(s[1]);
      if (!ns.has_value() || !id.has_value()) {
        call->Fail(ns.has_value() ? Error{"actor", "not_found",
                                          "The actor does not exist or was destroyed."}
                                  : ns.error());
        return;
      }
      engine.orchestrator().Destroy(ns->id, *id, [call](Status s) {
        if (!s.has_value()) {
          call->Fail(s.error());
        } else {
          call->Ok(json::object());
        }
      });
    } else if (m == "POST" && (is({"actors", "*", "sleep"}) || is({"actors", "*", "reschedule"}))) {
      auto ns = RequireNamespace(engine, req);
      auto id = EngineId::Parse(s[1]);
      if (!ns.has_value() || !id.has_value()) {
        call->Fail(ns.has_value() ? Error{"actor", "not_found",
                                          "The actor does not exist or was destroyed."}
                                  : ns.error());
        return;
      }
      // The body is `{}` (actors.md §7): anything else is refused like any other body.
      if (auto body = ParseBody(req.body, {}); !body.has_value()) {
        call->Fail(body.error());
        return;
      }
      auto done = [call](Status st) {
        if (!st.has_value()) {
          call->Fail(st.error());
        } else {
          call->Ok(json::object());
        }
      };
      if (s[2] == "sleep") {
        engine.orchestrator().Sleep(ns->id, *id, std::move(done));
      } else {
        engine.orchestrator().Reschedule(ns->id, *id, std::move(done));
      }
    } else if (m == "GET" && s.size() == 5 && s[0] == "actors" && s[2] == "kv" && s[3] == "keys") {
      Respond(call, GetKvKey(engine, req, s[1], s[4]));
    } else if (m == "GET" && (is({"runners"}) || is({"runners", "names"}))) {
      Respond(call, ListRunners(engine, req, /*names=*/s.size() == 2));
    } else if (m == "GET" && is({"envoys"})) {
      auto ns = RequireNamespace(engine, req);
      if (!ns.has_value()) {
        call->Fail(ns.error());
        return;
      }
      auto limit = LimitQuery(req);
      auto after = TextCursorQuery(req);
      if (!limit.has_value() || !after.has_value()) {
        call->Fail(!limit.has_value() ? limit.error() : after.error());
        return;
      }
      std::optional<std::string> pool = req.Query("name");
      std::vector<std::string> keys_wanted = req.QueryAll("envoy_key");
      EngineId ns_id = ns->id;
      engine.orchestrator().ListEnvoys([call, ns_id, pool, keys_wanted, limit = *limit,
                                        after = *after,
                                        &engine](std::vector<Orchestrator::EnvoyView> views) {
        std::vector<Orchestrator::EnvoyView> matching;
        for (auto& v : views) {
          if (!(v.namespace_id == ns_id)) continue;
          if (pool.has_value() && v.pool_name != *pool) continue;
          if (!keys_wanted.empty() &&
              std::find(keys_wanted.begin(), keys_wanted.end(), v.envoy_key) == keys_wanted.end()) {
            continue;
          }
          matching.push_back(std::move(v));
        }
        json cursor;
        json list = json::array();
        for (const auto& v : PageOf(
                 std::move(matching), [](const Orchestrator::EnvoyView& e) { return e.envoy_key; },
                 after, limit, cursor)) {
          list.push_back(EnvoyJson(v, engine.options()));
        }
        call->Ok(json{{"envoys", list}, {"pagination", json{{"cursor", cursor}}}});
      });
    } else {
      call->Fail(Error{"api", "not_found", "no such API route: " + m + " /" +
                                               [&] {
                                                 std::string p;
                                                 for (const auto& seg : s) p += seg + "/";
                                                 if (!p.empty()) p.pop_back();
                                                 return p;
                                               }()});
    }
}

}  // namespace

}  // namespace keel::engine
