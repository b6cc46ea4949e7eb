// The KvStore contract (kv_store_contract.h), run against the embedded backends.
// PostgreSQL runs the same suite in postgres_kv_store_test.cc.
#include <memory>
#include <utility>

#include <gtest/gtest.h>

#include "kv_store_contract.h"
#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"
#include "storage_test_util.h"

namespace keel::storage::contract {
namespace {

using testing::TempDir;

struct MemBackend {
  static constexpr const char* kName = "Mem";
  std::unique_ptr<KvStore> Open() { return std::make_unique<MemKvStore>(); }
};

struct RocksDbBackend {
  static constexpr const char* kName = "RocksDb";
  std::unique_ptr<KvStore> Open() {
    auto store = RocksDbKvStore::Open(dir.path() + "/db");
    if (!store.has_value()) {
      ADD_FAILURE() << store.error().ToString();
      return nullptr;
    }
    return std::move(store).value();
  }
  TempDir dir;
};

struct FaultyMemBackend {
  static constexpr const char* kName = "FaultyMem";
  std::unique_ptr<KvStore> Open() {
    return std::make_unique<FaultyKvStore>(std::make_unique<MemKvStore>());
  }
};

using Backends = ::testing::Types<MemBackend, RocksDbBackend, FaultyMemBackend>;
INSTANTIATE_TYPED_TEST_SUITE_P(Embedded, KvStoreTest, Backends, BackendNames);

}  // namespace
}  // namespace keel::storage::contract
