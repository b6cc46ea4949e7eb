#include "engine/core/catalog.h"

#include <utility>

#include "base/utf8.h"
#include "engine/common/actor_limits.h"
#include "engine/core/keys.h"

namespace keel::engine {
namespace {

using protocol::engine::ReadRecord;
using protocol::engine::WriteRecord;

rec::RunnerConfigRecord DefaultServerfulPool(int64_t now) {
  rec::RunnerConfigRecord config;
  config.metadata = "{}";
  config.drain_on_version_upgrade = true;
  config.create_ts = now;
  return config;
}

}  // namespace

Catalog::Catalog(storage::KvStore& store, Clock& clock, uint16_t datacenter_label,
                 uint64_t id_seed)
    : store_(store), clock_(clock), datacenter_label_(datacenter_label), random_(id_seed) {}

Status Catalog::Load() {
  KEEL_ASSIGN_OR_RETURN(auto namespaces, store_.ScanPrefix(keys::NamespacePrefix()));
  std::map<std::string, Namespace, std::less<>> by_name;
  std::map<EngineId, std::string> name_by_id;
  std::map<std::pair<EngineId, std::string>, Pool, std::less<>> pools;
  for (const auto& kv : namespaces) {
    KEEL_ASSIGN_OR_RETURN(auto record, ReadRecord<rec::NamespaceRecord>(kv.value));
    KEEL_ASSIGN_OR_RETURN(EngineId id, EngineId::FromBytes(record.id));
    Namespace ns{id, record.name, record.display_name, record.create_ts};
    KEEL_ASSIGN_OR_RETURN(auto pool_kvs, store_.ScanPrefix(keys::NamespacePools(id.bytes())));
    for (const auto& p : pool_kvs) {
      // 03 ns pool 01 → config; other tags (slots, status) are not cached here.
      ByteView rest = ByteView(p.key).subspan(1 + EngineId::kByteSize);
      std::string pool_name;
      if (!keys::ReadStr(rest, pool_name) || rest.size() != 1 || rest[0] != 0x01) continue;
      KEEL_ASSIGN_OR_RETURN(auto config, ReadRecord<rec::RunnerConfigRecord>(p.value));
      pools[{id, pool_name}] = Pool{id, pool_name, std::move(config)};
    }
    name_by_id[id] = ns.name;
    by_name[ns.name] = std::move(ns);
  }
  {
    std::lock_guard lock(mu_);
    by_name_ = std::move(by_name);
    name_by_id_ = std::move(name_by_id);
    pools_ = std::move(pools);
    if (!by_name_.empty()) return {};
  }
  KEEL_ASSIGN_OR_RETURN(Namespace ns,
                        CreateNamespace(std::string(kDefaultNamespace), "Default"));
  KEEL_ASSIGN_OR_RETURN(bool changed, PutPool(ns.id, std::string(kDefaultPool),
                                              DefaultServerfulPool(clock_.SystemNowMs())));
  (void)changed;
  return {};
}

Result<Namespace> Catalog::CreateNamespace(std::string name, std::string display_name) {
  if (!IsValidNamespaceName(name)) {
    return Unexpected{Error{"namespace", "invalid_name",
                            "namespace names are 1-64 characters of a-z, 0-9, '-' and '_'"}};
  }
  if (display_name.size() > kMaxNamespaceDisplayNameBytes) {
    return Unexpected{Error{"namespace", "invalid_display_name",
                            "namespace display names are at most " +
                                std::to_string(kMaxNamespaceDisplayNameBytes) + " bytes"}};
  }
  if (!IsValidUtf8(display_name)) {
    return Unexpected{
        Error{"namespace", "invalid_display_name", "namespace display names must be UTF-8"}};
  }
  Namespace ns;
  ns.name = std::move(name);
  ns.display_name = display_name.empty() ? ns.name : std::move(display_name);
  ns.create_ts = clock_.SystemNowMs();
  rec::NamespaceRecord record;
  record.name = ns.name;
  record.display_name = ns.display_name;
  record.create_ts = ns.create_ts;
  // The id must be new. Drawn at random it is, unless a run repeats an earlier run's seed
  // on the same store (EngineOptions::seed); then the next draw is tried.
  bool id_taken = true;
  while (id_taken) {
    {
      std::lock_guard lock(mu_);
      ns.id = EngineId::Generate(random_, datacenter_label_);
    }
    record.id = Bytes(ns.id.bytes().begin(), ns.id.bytes().end());
    Bytes value = WriteRecord(record);
    Status s = storage::RunTransaction(store_, [&](storage::KvTxn& txn) -> Status {
      KEEL_ASSIGN_OR_RETURN(auto existing, txn.Get(keys::NamespaceByName(ns.name)));
      if (existing.has_value()) {
        return Unexpected{Error{"namespace", "already_exists",
                                "a namespace named '" + ns.name + "' already exists"}};
      }
      KEEL_ASSIGN_OR_RETURN(auto taken, txn.Get(keys::NamespaceRecord(ns.id.bytes())));
      id_taken = taken.has_value();
      if (id_taken) return {};
      KEEL_RETURN_IF_ERROR(txn.Put(keys::NamespaceByName(ns.name), record.id));
      return txn.Put(keys::NamespaceRecord(ns.id.bytes()), value);
    });
    KEEL_RETURN_IF_ERROR(s);
  }
  std::lock_guard lock(mu_);
  name_by_id_[ns.id] = ns.name;
  by_name_[ns.name] = ns;
  return ns;
}

std::optional<Namespace> Catalog::FindNamespace(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

std::optional<Namespace> Catalog::FindNamespace(const EngineId& id) const {
  std::lock_guard lock(mu_);
  auto it = name_by_id_.find(id);
  if (it == name_by_id_.end()) return std::nullopt;
  return by_name_.find(it->second)->second;
}

std::vector<Namespace> Catalog::ListNamespaces() const {
  std::lock_guard lock(mu_);
  std::vector<Namespace> out;
  for (const auto& [_, ns] : by_name_) out.push_back(ns);
  return out;
}

Result<bool> Catalog::PutPool(const EngineId& ns, std::string name,
                              rec::RunnerConfigRecord config) {
  if (name.empty() || name.size() > 128) {
    return Unexpected{Error{"runner_config", "invalid", "pool names are 1-128 bytes"}};
  }
  if (config.serverless.has_value()) {
    const std::string& url = config.serverless->url;
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return Unexpected{Error{"runner_config", "invalid",
                              "a serverless pool needs an http:// or https:// url"}};
    }
  }
  std::optional<Pool> old = FindPool(ns, name);
  if (old.has_value()) {
    config.create_ts = old->config.create_ts;
    if (!config.protocol_version.has_value()) config.protocol_version = old->config.protocol_version;
  } else if (config.create_ts == 0) {
    config.create_ts = clock_.SystemNowMs();
  }
  KEEL_RETURN_IF_ERROR(store_.Put(keys::PoolConfig(ns.bytes(), name), WriteRecord(config)));
  // A serverless endpoint (url, headers) that is new or differs; a normal pool has none.
  bool changed = config.serverless.has_value() &&
                 (!old.has_value() || !old->serverless() ||
                  old->config.serverless->url != config.serverless->url ||
                  old->config.serverless->headers != config.serverless->headers);
  std::lock_guard lock(mu_);
  pools_[{ns, name}] = Pool{ns, name, std::move(config)};
  return changed;
}

Status Catalog::DeletePool(const EngineId& ns, std::string_view name) {
  if (!FindPool(ns, name).has_value()) {
    return Unexpected{Error{"runner_config", "not_found",
                            "no runner config named '" + std::string(name) + "'"}};
  }
  KEEL_RETURN_IF_ERROR(store_.Delete(keys::PoolConfig(ns.bytes(), name)));
  std::lock_guard lock(mu_);
  pools_.erase({ns, std::string(name)});
  return {};
}

std::optional<Pool> Catalog::FindPool(const EngineId& ns, std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = pools_.find(std::pair<EngineId, std::string>(ns, std::string(name)));
  if (it == pools_.end()) return std::nullopt;
  return it->second;
}

std::vector<Pool> Catalog::ListPools(const EngineId& ns) const {
  std::lock_guard lock(mu_);
  std::vector<Pool> out;
  for (const auto& [key, pool] : pools_) {
    if (key.first == ns) out.push_back(pool);
  }
  return out;
}

void Catalog::NotePoolProtocolVersion(const EngineId& ns, std::string_view name,
                                      uint16_t version) {
  std::optional<Pool> pool = FindPool(ns, name);
  if (!pool.has_value() || pool->config.protocol_version == version) return;
  pool->config.protocol_version = version;
  if (!store_.Put(keys::PoolConfig(ns.bytes(), name), WriteRecord(pool->config)).has_value()) {
    return;  // best effort: the next connection records it again
  }
  std::lock_guard lock(mu_);
  pools_[{ns, std::string(name)}] = std::move(*pool);
}

}  // namespace keel::engine
