#include "engine/core/pool_metadata.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/log.h"
#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "engine/core/keys.h"
#include "engine/core/orchestrator.h"
#include "net/client.h"
#include "protocol/engine/records.h"
#include "protocol/envoy/versioned.h"
#include "storage/kv_store.h"

namespace keel::engine {
namespace {

using json = nlohmann::json;
constexpr std::string_view kLog = "pool_metadata";

MetadataFailure Schema(std::string message) {
  MetadataFailure f;
  f.kind = MetadataFailure::Kind::kInvalidResponseSchema;
  f.message = std::move(message);
  return f;
}

// Actor names taken from one answer: at most this many, each 1..128 bytes (the engine's
// actor name limit).
constexpr size_t kMaxPolledActorNames = 1024;
constexpr size_t kMaxPolledActorNameBytes = 128;

std::string MetadataUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url + "/metadata";
}

}  // namespace

std::string BodyExcerpt(const std::string& body) {
  if (body.size() <= kBodyExcerptBytes) return body;
  size_t end = kBodyExcerptBytes;
  while (end > 0 && (static_cast<uint8_t>(body[end]) & 0xC0) == 0x80) --end;
  return body.substr(0, end);
}

MetadataResult CheckMetadataResponse(const Result<net::HttpResponse>& response,
                                     int64_t timeout_ms) {
  MetadataFailure f;
  if (!response.has_value()) {
    const Error& e = response.error();
    if (e.code() == "timeout") {
      f.kind = MetadataFailure::Kind::kRequestTimedOut;
      f.timeout_ms = timeout_ms;
      f.message = "no answer within " + std::to_string(timeout_ms) + " ms";
    } else if (e.code() == "invalid_argument") {
      f.kind = MetadataFailure::Kind::kInvalidRequest;
      f.message = e.message();
    } else {
      f.kind = MetadataFailure::Kind::kRequestFailed;
      f.message = e.message();
    }
    return {std::nullopt, std::move(f)};
  }
  const net::HttpResponse& r = *response;
  if (r.status < 200 || r.status > 299) {
    f.kind = MetadataFailure::Kind::kNonSuccessStatus;
    f.status_code = r.status;
    f.body = BodyExcerpt(r.body);
    f.message = "the runtime answered " + std::to_string(r.status);
    return {std::nullopt, std::move(f)};
  }
  json j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    f.kind = MetadataFailure::Kind::kInvalidResponseJson;
    f.body = BodyExcerpt(r.body);
    f.message = "the answer is not a JSON object";
    return {std::nullopt, std::move(f)};
  }
  if (!j.contains("runtime") || !j["runtime"].is_string()) {
    return {std::nullopt, Schema("the answer has no string 'runtime'")};
  }
  if (j["runtime"].get<std::string>() != "rivetkit") {
    return {std::nullopt,
            Schema("runtime is '" + j["runtime"].get<std::string>() + "', expected 'rivetkit'")};
  }
  if (!j.contains("version") || !j["version"].is_string() ||
      j["version"].get<std::string>().empty()) {
    return {std::nullopt, Schema("the answer has no non-empty string 'version'")};
  }
  RuntimeMetadata m;
  m.version = j["version"].get<std::string>();
  if (j.contains("envoyProtocolVersion") && !j["envoyProtocolVersion"].is_null()) {
    const json& v = j["envoyProtocolVersion"];
    if (!v.is_number_integer()) {
      return {std::nullopt, Schema("'envoyProtocolVersion' is not an integer")};
    }
    const int64_t version = v.get<int64_t>();
    if (version < protocol::envoy::kMinConnectVersion ||
        version > protocol::envoy::kLatestVersion) {
      f.kind = MetadataFailure::Kind::kUnsupportedProtocolVersion;
      f.protocol_version = version;
      f.message = "envoy protocol version " + std::to_string(version) +
                  " is outside the engine's range " +
                  std::to_string(protocol::envoy::kMinConnectVersion) + ".." +
                  std::to_string(protocol::envoy::kLatestVersion);
      return {std::nullopt, std::move(f)};
    }
    m.envoy_protocol_version = static_cast<uint16_t>(version);
  }
  if (j.contains("envoy") && j["envoy"].is_object() && j["envoy"].contains("version")) {
    const json& v = j["envoy"]["version"];
    if (v.is_number_unsigned() && v.get<uint64_t>() <= UINT32_MAX) {
      m.envoy_version = static_cast<uint32_t>(v.get<uint64_t>());
    }
  }
  if (j.contains("actorNames") && !j["actorNames"].is_null()) {
    if (!j["actorNames"].is_object()) {
      return {std::nullopt, Schema("'actorNames' is not an object")};
    }
    for (const auto& [name, value] : j["actorNames"].items()) {
      // Bounded: a name the REST API would refuse to create is not recorded either, and a
      // runtime cannot make the engine store an unbounded list.
      if (name.empty() || name.size() > kMaxPolledActorNameBytes) continue;
      if (m.actor_names.size() >= kMaxPolledActorNames) break;
      json metadata = value;
      if (metadata.is_object() && metadata.size() == 1 && metadata.contains("metadata")) {
        metadata = metadata["metadata"];
      }
      if (!metadata.is_object()) metadata = json::object();
      m.actor_names.emplace_back(name,
                                 metadata.dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }
  return {std::move(m), std::nullopt};
}

std::string MetadataFailureJson(const MetadataFailure& f) {
  json detail = json::object();
  std::string code;
  switch (f.kind) {
    case MetadataFailure::Kind::kInvalidRequest:
      code = "invalid_request";
      detail["message"] = f.message;
      break;
    case MetadataFailure::Kind::kRequestFailed:
      code = "request_failed";
      detail["message"] = f.message;
      break;
    case MetadataFailure::Kind::kRequestTimedOut:
      code = "request_timed_out";
      detail["timeout_ms"] = f.timeout_ms;
      break;
    case MetadataFailure::Kind::kNonSuccessStatus:
      code = "non_success_status";
      detail["status_code"] = f.status_code;
      detail["body"] = f.body;
      break;
    case MetadataFailure::Kind::kInvalidResponseJson:
      code = "invalid_response_json";
      detail["body"] = f.body;
      break;
    case MetadataFailure::Kind::kInvalidResponseSchema:
      code = "invalid_response_schema";
      detail["message"] = f.message;
      break;
    case MetadataFailure::Kind::kUnsupportedProtocolVersion:
      code = "unsupported_protocol_version";
      detail["version"] = f.protocol_version;
      detail["min"] = protocol::envoy::kMinConnectVersion;
      detail["max"] = protocol::envoy::kLatestVersion;
      break;
    case MetadataFailure::Kind::kServerlessHttpError:
      code = "serverless_http_error";
      detail["status_code"] = f.status_code;
      detail["body"] = f.body;
      break;
    case MetadataFailure::Kind::kServerlessStreamEndedEarly:
      code = "serverless_stream_ended_early";
      break;
    case MetadataFailure::Kind::kServerlessConnectionError:
      code = "serverless_connection_error";
      detail["message"] = f.message;
      break;
    case MetadataFailure::Kind::kServerlessInvalidSsePayload:
      code = "serverless_invalid_sse_payload";
      detail["message"] = f.message;
      break;
  }
  json out = json::object();
  out[code] = std::move(detail);
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- the poller -----------------------------------------------------------------------

struct PoolMetadata::Impl : std::enable_shared_from_this<Impl> {
  using Key = std::pair<EngineId, std::string>;
  using Done = std::function<void(Status)>;

  struct PoolState {
    std::string url;
    net::Headers headers;
    int64_t interval_ms = 0;
    uint64_t epoch = 0;  // changes with url/headers: older polls' results are dropped
    TimerId timer{};
    bool in_flight = false;
    bool again = false;         // poll again as soon as the one in flight is done
    std::vector<Done> waiting;  // answered when the poll in flight is recorded
    std::vector<Done> next;     // answered when the next poll is recorded
    std::optional<MetadataFailure> error;
    int64_t successes = 0;  // in a row, since the error was set
    std::optional<RuntimeMetadata> last;
  };

  explicit Impl(Engine& e) : engine(e) {}

  Engine& engine;
  // Shared by a callback while it uses the engine; exclusive in Stop().
  std::shared_mutex alive;
  mutable std::mutex mu;
  bool stopped = false;  // guarded by mu (written with `alive` held exclusively too)
  uint64_t next_epoch = 1;
  std::map<Key, PoolState, std::less<>> pools;

  int64_t IntervalFor(const Pool& pool) const {
    const EngineOptions& o = engine.options();
    int64_t interval = pool.config.serverless->metadata_poll_interval_ms;
    if (interval <= 0) interval = o.metadata_poll_interval_ms;
    return std::max(interval, o.min_metadata_poll_interval_ms);
  }

  // REQUIRES: mu held. Starts a poll of `key` now, or after the one in flight. Returns the
  // fetch to start once mu is released.
  std::function<void()> PollLocked(const Key& key, PoolState& st) {
    if (st.in_flight) {
      st.again = true;
      return {};
    }
    if (st.timer != TimerId{}) {
      engine.clock().Cancel(st.timer);
      st.timer = TimerId{};
    }
    st.in_flight = true;
    st.again = false;
    st.waiting = std::move(st.next);
    st.next.clear();
    net::HttpRequest request;
    request.method = "GET";
    request.headers = st.headers;
    request.headers.emplace_back("accept", "application/json");
    const int64_t timeout = engine.options().metadata_fetch_timeout_ms;
    // Runs with the engine alive (the caller holds `alive` or is the engine's own call).
    return [self = shared_from_this(), io = &engine.io(), key, epoch = st.epoch,
            url = MetadataUrl(st.url), request = std::move(request), timeout]() mutable {
      net::Fetch(
          *io, url, std::move(request),
          [self, key, epoch, timeout](Result<net::HttpResponse> response) {
            MetadataResult result = CheckMetadataResponse(response, timeout);
            std::shared_lock live(self->alive);
            {
              std::lock_guard lock(self->mu);
              if (self->stopped) return;
            }
            // Storing what was learnt touches storage: not on an I/O thread.
            self->engine.PostWork([self, key, epoch, result = std::move(result)]() mutable {
              self->Record(key, epoch, std::move(result));
            });
          },
          std::chrono::milliseconds(timeout));
    };
  }

  // REQUIRES: mu held, no poll in flight.
  void ScheduleLocked(const Key& key, PoolState& st) {
    if (st.timer != TimerId{}) engine.clock().Cancel(st.timer);
    auto self = shared_from_this();
    auto id = std::make_shared<TimerId>();
    st.timer = engine.clock().ScheduleAfter(
        std::chrono::milliseconds(st.interval_ms), [self, key, epoch = st.epoch, id] {
          std::shared_lock live(self->alive);
          std::function<void()> fetch;
          {
            std::lock_guard lock(self->mu);
            if (self->stopped) return;
            auto it = self->pools.find(key);
            if (it == self->pools.end() || it->second.epoch != epoch || it->second.timer != *id) {
              return;  // cancelled in the meantime
            }
            it->second.timer = TimerId{};
            fetch = self->PollLocked(key, it->second);
          }
          if (fetch) fetch();
        });
    *id = st.timer;
  }

  // On a worker: stores what a poll learnt and answers its waiters.
  void Record(const Key& key, uint64_t epoch, MetadataResult result) {
    std::shared_lock live(alive);
    {
      std::function<void()> fetch;
      {
        std::lock_guard lock(mu);
        if (stopped) return;
        auto it = pools.find(key);
        if (it == pools.end()) return;  // the pool went away; its waiters were answered
        if (it->second.epoch != epoch) {
          // The endpoint changed while this poll ran: its result says nothing of the new
          // one. The next poll (already asked for) answers this one's waiters too.
          PoolState& st = it->second;
          st.in_flight = false;
          for (auto& w : st.waiting) st.next.push_back(std::move(w));
          st.waiting.clear();
          fetch = PollLocked(key, st);
        }
      }
      if (fetch) {
        fetch();
        return;
      }
    }
    if (result.first.has_value()) Store(key, *result.first);
    std::vector<Done> answer;
    std::function<void()> fetch;
    {
      std::lock_guard lock(mu);
      if (stopped) return;
      auto it = pools.find(key);
      if (it == pools.end() || it->second.epoch != epoch) return;
      PoolState& st = it->second;
      if (result.second.has_value()) {
        NoteFailureLocked(key, st, std::move(*result.second), "serverless pool metadata check");
      } else {
        NoteSuccessLocked(key, st, "serverless pool metadata check");
        result.first->actor_names.clear();
        st.last = std::move(result.first);
      }
      st.in_flight = false;
      answer = std::move(st.waiting);
      st.waiting.clear();
      if (st.again) {
        fetch = PollLocked(key, st);
      } else {
        ScheduleLocked(key, st);
      }
    }
    if (fetch) fetch();
    for (auto& done : answer) done(OkStatus());
  }

  // REQUIRES: mu held. The pool's runner-pool error becomes `f` (the latest wins).
  void NoteFailureLocked(const Key& key, PoolState& st, MetadataFailure f, const char* what) {
    if (!st.error.has_value() || !(*st.error == f)) {
      KEEL_LOG(kWarn, kLog, std::string(what) + " failed",
               {{"pool", key.second}, {"url", st.url}, {"error", MetadataFailureJson(f)}});
    }
    st.error = std::move(f);
    st.successes = 0;
  }

  // REQUIRES: mu held. One more success in a row: enough of them clear the error.
  void NoteSuccessLocked(const Key& key, PoolState& st, const char* what) {
    if (st.error.has_value() &&
        ++st.successes >= engine.options().runner_pool_error_clear_successes) {
      KEEL_LOG(kInfo, kLog, std::string(what) + " recovered",
               {{"pool", key.second}, {"url", st.url}});
      st.error.reset();
      st.successes = 0;
    }
  }

  // Records the envoy protocol version on the pool and the actor names in the namespace.
  void Store(const Key& key, const RuntimeMetadata& m) {
    if (m.envoy_protocol_version.has_value()) {
      engine.catalog().NotePoolProtocolVersion(key.first, key.second, *m.envoy_protocol_version);
    }
    if (m.actor_names.empty()) return;
    namespace rec = protocol::engine::latest;
    const ByteView ns = key.first.bytes();
    std::vector<std::string> changed;
    Status s = storage::RunTransaction(engine.store(), [&](storage::KvTxn& txn) -> Status {
      changed.clear();  // a retried transaction starts over
      for (const auto& [name, metadata] : m.actor_names) {
        Bytes name_key = keys::ActorName(ns, name);
        KEEL_ASSIGN_OR_RETURN(auto existing, txn.Get(name_key));
        if (existing.has_value()) {
          auto record = protocol::engine::ReadRecord<rec::ActorNameRecord>(*existing);
          if (record.has_value() && record->metadata == metadata) continue;
        }
        KEEL_RETURN_IF_ERROR(
            txn.Put(name_key, protocol::engine::WriteRecord(rec::ActorNameRecord{metadata})));
        changed.push_back(name);
      }
      return {};
    });
    if (!s.has_value()) {
      KEEL_LOG(kWarn, kLog, "could not record a serverless pool's actor names",
               {{"pool", key.second}, {"error", s.error().ToString()}});
      return;
    }
    // A changed name's preload plan is read again at its next start (envoy-protocol §5.4).
    if (!changed.empty()) engine.orchestrator().ForgetPreloadPlans(key.first, std::move(changed));
  }
};

PoolMetadata::PoolMetadata(Engine& engine) : impl_(std::make_shared<Impl>(engine)) {}

PoolMetadata::~PoolMetadata() { Stop(); }

void PoolMetadata::Start() {
  for (const Namespace& ns : impl_->engine.catalog().ListNamespaces()) {
    for (const Pool& pool : impl_->engine.catalog().ListPools(ns.id)) {
      if (pool.serverless()) PoolChanged(ns.id, pool.name);
    }
  }
}

void PoolMetadata::Stop() {
  std::vector<Impl::Done> dropped;
  {
    std::unique_lock live(impl_->alive);
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    for (auto& [_, st] : impl_->pools) {
      if (st.timer != TimerId{}) impl_->engine.clock().Cancel(st.timer);
      for (auto& w : st.waiting) dropped.push_back(std::move(w));
      for (auto& w : st.next) dropped.push_back(std::move(w));
    }
    impl_->pools.clear();
  }
  // Destroyed unrun, outside the locks (they may hold REST calls).
  dropped.clear();
}

void PoolMetadata::PoolChanged(const EngineId& ns, const std::string& name) {
  Impl& m = *impl_;
  std::optional<Pool> pool = m.engine.catalog().FindPool(ns, name);
  std::vector<Impl::Done> gone;
  std::function<void()> fetch;
  {
    std::lock_guard lock(m.mu);
    if (m.stopped) return;
    Impl::Key key{ns, name};
    auto it = m.pools.find(key);
    if (!pool.has_value() || !pool->serverless()) {
      if (it == m.pools.end()) return;
      if (it->second.timer != TimerId{}) m.engine.clock().Cancel(it->second.timer);
      for (auto& w : it->second.waiting) gone.push_back(std::move(w));
      for (auto& w : it->second.next) gone.push_back(std::move(w));
      m.pools.erase(it);
    } else {
      const auto& s = *pool->config.serverless;
      const int64_t interval = m.IntervalFor(*pool);
      if (it == m.pools.end()) {
        Impl::PoolState st;
        st.url = s.url;
        st.headers = net::Headers(s.headers.begin(), s.headers.end());
        st.interval_ms = interval;
        st.epoch = m.next_epoch++;
        it = m.pools.emplace(key, std::move(st)).first;
        fetch = m.PollLocked(key, it->second);
      } else {
        Impl::PoolState& st = it->second;
        net::Headers headers(s.headers.begin(), s.headers.end());
        st.interval_ms = interval;
        if (st.url != s.url || st.headers != headers) {
          st.url = s.url;
          st.headers = std::move(headers);
          st.epoch = m.next_epoch++;
          st.error.reset();
          st.successes = 0;
          st.last.reset();
          fetch = m.PollLocked(key, st);
        } else if (!st.in_flight) {
          m.ScheduleLocked(key, st);  // the interval may have changed
        }
      }
    }
  }
  if (fetch) fetch();
  for (auto& done : gone) {
    done(Unexpected{
        Error{"runner_config", "not_found", "no serverless runner config named '" + name + "'"}});
  }
}

void PoolMetadata::Refresh(const EngineId& ns, const std::string& name,
                           std::function<void(Status)> done) {
  Impl& m = *impl_;
  std::optional<Pool> pool = m.engine.catalog().FindPool(ns, name);
  if (!pool.has_value() || !pool->serverless()) {
    done(Unexpected{
        Error{"runner_config", "not_found", "no serverless runner config named '" + name + "'"}});
    return;
  }
  bool known = false;
  {
    std::lock_guard lock(m.mu);
    known = m.pools.count(Impl::Key{ns, name}) > 0;
  }
  if (!known) PoolChanged(ns, name);  // e.g. a pool put while this call was on its way
  std::function<void()> fetch;
  bool queued = false;
  {
    std::lock_guard lock(m.mu);
    auto it = m.pools.find(Impl::Key{ns, name});
    if (!m.stopped && it != m.pools.end()) {
      it->second.next.push_back(std::move(done));
      queued = true;
      fetch = m.PollLocked(it->first, it->second);
    }
  }
  if (!queued) {
    done(Unexpected{Error{"core", "unavailable", "the engine is stopping"}});
    return;
  }
  if (fetch) fetch();
}

void PoolMetadata::Check(std::string url, net::Headers headers,
                         std::function<void(MetadataResult)> done) {
  const int64_t timeout = impl_->engine.options().metadata_fetch_timeout_ms;
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    MetadataFailure f;
    f.kind = MetadataFailure::Kind::kInvalidRequest;
    f.message = "the url must start with http:// or https://";
    done({std::nullopt, std::move(f)});
    return;
  }
  net::HttpRequest request;
  request.method = "GET";
  request.headers = std::move(headers);
  request.headers.emplace_back("accept", "application/json");
  net::Fetch(
      impl_->engine.io(), MetadataUrl(std::move(url)), std::move(request),
      [done = std::move(done), timeout](Result<net::HttpResponse> response) {
        done(CheckMetadataResponse(response, timeout));
      },
      std::chrono::milliseconds(timeout));
}

void PoolMetadata::RecordStartFailure(const EngineId& ns, const std::string& name,
                                      MetadataFailure failure) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->pools.find(Impl::Key{ns, name});
  if (impl_->stopped || it == impl_->pools.end()) return;
  impl_->NoteFailureLocked(it->first, it->second, std::move(failure), "serverless start");
}

void PoolMetadata::RecordStartSuccess(const EngineId& ns, const std::string& name) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->pools.find(Impl::Key{ns, name});
  if (impl_->stopped || it == impl_->pools.end()) return;
  impl_->NoteSuccessLocked(it->first, it->second, "serverless start");
}

PoolMetadataView PoolMetadata::View(const EngineId& ns, const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->pools.find(Impl::Key{ns, name});
  if (it == impl_->pools.end()) return {};
  return PoolMetadataView{it->second.error, it->second.last};
}

}  // namespace keel::engine
