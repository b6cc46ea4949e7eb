// Catalog: the engine's namespaces and pools (runner configs), durable in the KvStore
// (docs/storage.md §3.2–§3.3) and cached whole in memory — there are few of them and every
// envoy connection, gateway request and REST call looks them up.
//
// Load() reads everything and, on first start, creates the namespace `default` with a
// serverful pool `default` (the "exists from first start"). Mutations commit first,
// then update the cache, so the cache never shows what storage does not have.
// Thread-safety: every method may be called from any thread (one mutex; storage calls run
// outside it for reads only).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/random.h"
#include "base/result.h"
#include "engine/common/id.h"
#include "protocol/engine/records.h"
#include "storage/kv_store.h"

namespace keel::engine {

namespace rec = protocol::engine::latest;

struct Namespace {
  EngineId id;
  std::string name;
  std::string display_name;
  int64_t create_ts = 0;
};

struct Pool {
  EngineId namespace_id;
  std::string name;
  rec::RunnerConfigRecord config;
  bool serverless() const { return config.serverless.has_value(); }
};

inline constexpr std::string_view kDefaultNamespace = "default";
inline constexpr std::string_view kDefaultPool = "default";
// The longest namespace display name (bytes of UTF-8) POST /namespaces accepts.
inline constexpr size_t kMaxNamespaceDisplayNameBytes = 255;

class Catalog {
 public:
  Catalog(storage::KvStore& store, Clock& clock, uint16_t datacenter_label, uint64_t id_seed);

  // Reads namespaces and pools; creates `default`/`default` when there is no namespace.
  Status Load();

  // Errors: namespace.invalid_name (empty, > 64 bytes, not [a-z0-9_-]),
  // namespace.invalid_display_name (> kMaxNamespaceDisplayNameBytes, not UTF-8; empty means
  // the name), namespace.already_exists.
  Result<Namespace> CreateNamespace(std::string name, std::string display_name);
  std::optional<Namespace> FindNamespace(std::string_view name) const;
  std::optional<Namespace> FindNamespace(const EngineId& id) const;
  std::vector<Namespace> ListNamespaces() const;

  // Creates or replaces a pool. Returns whether it now has a serverless endpoint (url and
  // headers) it did not have before: a new serverless pool, a normal one made serverless,
  // or a changed url or headers (PUT's `endpoint_config_changed`).
  // Errors: runner_config.invalid (bad name/url), storage.*.
  Result<bool> PutPool(const EngineId& ns, std::string name, rec::RunnerConfigRecord config);
  // Errors: runner_config.not_found.
  Status DeletePool(const EngineId& ns, std::string_view name);
  std::optional<Pool> FindPool(const EngineId& ns, std::string_view name) const;
  std::vector<Pool> ListPools(const EngineId& ns) const;
  // Records the protocol version the pool's envoys connect with (serverless start bodies).
  void NotePoolProtocolVersion(const EngineId& ns, std::string_view name, uint16_t version);

 private:
  storage::KvStore& store_;
  Clock& clock_;
  const uint16_t datacenter_label_;
  mutable std::mutex mu_;
  Random random_;  // guarded by mu_
  std::map<std::string, Namespace, std::less<>> by_name_;
  std::map<EngineId, std::string> name_by_id_;
  std::map<std::pair<EngineId, std::string>, Pool, std::less<>> pools_;
};

}  // namespace keel::engine
