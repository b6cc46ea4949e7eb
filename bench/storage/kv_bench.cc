// KvStore commit throughput and point-read cost, RocksDbKvStore against the MemKvStore
// CPU baseline.
//
// Commit benchmarks: every iteration is one transaction run through RunTransaction:
// 1 Get + 2 Puts of 64-byte values. Each writer thread (Threads(n)) has its own 1024
// pre-populated keys, so writers never conflict (the `retries` counter, the extra
// attempts RunTransaction made, must stay 0). items/s is commits/s; with several threads
// it is the aggregate over all writers per wall-clock second (UseRealTime).
//   BM_RocksCommit/sync:1/threads:8 vs BM_RocksCommit/sync:1/threads:1 answers whether
//   concurrent synced commits share WAL syncs (RocksDB group commit). Issue target: >= 4x.
// Read benchmarks: Get of existing keys, cache-warm (every key read once first), either
// from the memtable (sst:0) or from SST files after a close and reopen (sst:1).
//
// Each benchmark run opens a fresh store in a new directory under the temp directory
// ($TMPDIR or /tmp, so put TMPDIR on the disk you want to measure) and removes it after.
// The machine's fsync latency dominates the synced figures, and on VMs it can itself
// depend on load, so the wall-clock ratio alone can mislead: to see how many commits share
// one WAL sync, count the syncs, e.g.
//   perf stat -e syscalls:sys_enter_fdatasync kv_bench --benchmark_filter=sync:1
// (RocksDB syncs the WAL with fdatasync; divide the commits by the count, less the few
// syncs of open and close). Keep runs short, e.g.
//   kv_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <stdlib.h>  // mkdtemp

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/result.h"
#include "storage/kv_store.h"
#include "storage/mem_kv_store.h"
#include "storage/rocksdb_kv_store.h"

namespace keel::storage {
namespace {

constexpr size_t kValueSize = 64;
constexpr int kKeysPerWriter = 1024;  // power of two (index masks)
constexpr int kMaxWriters = 8;
constexpr int kReadKeys = 16384;  // power of two
constexpr int kPopulateBatch = 256;

[[noreturn]] void Die(std::string_view what, const Error& error) {
  std::fprintf(stderr, "kv_bench: %.*s: %s: %s\n", static_cast<int>(what.size()), what.data(),
               error.Id().c_str(), error.message().c_str());
  std::abort();
}

template <typename T>
T Check(Result<T> result, std::string_view what) {
  if (!result.has_value()) Die(what, result.error());
  return std::move(result).value();
}
void Check(const Status& status, std::string_view what) {
  if (!status.has_value()) Die(what, status.error());
}

Bytes ToKey(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes WriterKey(int writer, int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "w%02d/k%05d", writer, i);
  return ToKey(buf);
}

Bytes ReadKey(int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "r/k%06d", i);
  return ToKey(buf);
}

Bytes Value(uint64_t seed) {
  Bytes value(kValueSize);
  for (size_t i = 0; i < kValueSize; ++i) value[i] = static_cast<uint8_t>(seed * 131 + i * 7);
  return value;
}

// Writes keys[0..n) with 64-byte values, kPopulateBatch keys per (unsynced) commit.
void Populate(KvStore& store, int n, Bytes (*key)(int)) {
  for (int begin = 0; begin < n; begin += kPopulateBatch) {
    Status s = RunTransaction(
        store,
        [&](KvTxn& txn) -> Status {
          for (int i = begin; i < n && i < begin + kPopulateBatch; ++i) {
            KEEL_RETURN_IF_ERROR(txn.Put(key(i), Value(static_cast<uint64_t>(i))));
          }
          return OkStatus();
        },
        kDefaultMaxAttempts, CommitOptions{.sync = false});
    Check(s, "populate");
  }
}

Bytes PopulateWriterKey(int i) { return WriterKey(i / kKeysPerWriter, i % kKeysPerWriter); }

// The store of the running benchmark: created by a Setup, destroyed by Teardown (Google
// Benchmark calls both on the main thread, around each run of the benchmark threads).
struct BenchStore {
  std::filesystem::path dir;  // empty for MemKvStore
  std::unique_ptr<KvStore> store;

  ~BenchStore() {
    if (store != nullptr) (void)store->Close();
    store.reset();
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
};
std::unique_ptr<BenchStore> g_bench;

KvStore& Store() { return *g_bench->store; }

std::filesystem::path MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-kv-bench-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("kv_bench: mkdtemp");
    std::abort();
  }
  return pattern;
}

std::unique_ptr<KvStore> OpenRocks(const std::filesystem::path& dir) {
  return Check(RocksDbKvStore::Open((dir / "db").string()), "open RocksDB");
}

void SetupMemCommit(const benchmark::State&) {
  g_bench = std::make_unique<BenchStore>();
  g_bench->store = std::make_unique<MemKvStore>();
  Populate(Store(), kMaxWriters * kKeysPerWriter, PopulateWriterKey);
}

void SetupRocksCommit(const benchmark::State&) {
  g_bench = std::make_unique<BenchStore>();
  g_bench->dir = MakeTempDir();
  g_bench->store = OpenRocks(g_bench->dir);
  Populate(Store(), kMaxWriters * kKeysPerWriter, PopulateWriterKey);
}

void WarmReads(KvStore& store) {
  for (int i = 0; i < kReadKeys; ++i) {
    if (!Check(store.Get(ReadKey(i)), "warm get").has_value()) {
      Die("warm get", StorageError(kInternal, "a populated key is missing"));
    }
  }
}

void SetupMemRead(const benchmark::State&) {
  g_bench = std::make_unique<BenchStore>();
  g_bench->store = std::make_unique<MemKvStore>();
  Populate(Store(), kReadKeys, ReadKey);
  WarmReads(Store());
}

// state.range(0): 0 reads from the memtable, 1 from SST files (close and reopen: RocksDB
// flushes the recovered WAL to L0 on open).
void SetupRocksRead(const benchmark::State& state) {
  g_bench = std::make_unique<BenchStore>();
  g_bench->dir = MakeTempDir();
  g_bench->store = OpenRocks(g_bench->dir);
  Populate(Store(), kReadKeys, ReadKey);
  if (state.range(0) != 0) {
    Check(g_bench->store->Close(), "close");
    g_bench->store = OpenRocks(g_bench->dir);
  }
  WarmReads(Store());
}

void TeardownStore(const benchmark::State&) { g_bench.reset(); }

// One writer thread: each iteration commits {Get(a), Put(a), Put(b)} on two of this
// thread's own keys (a != b), walking its key set.
void CommitLoop(benchmark::State& state, const CommitOptions& options) {
  KvStore& store = Store();
  const int writer = state.thread_index();
  std::vector<Bytes> keys;
  keys.reserve(kKeysPerWriter);
  for (int i = 0; i < kKeysPerWriter; ++i) keys.push_back(WriterKey(writer, i));
  Bytes value = Value(static_cast<uint64_t>(writer));
  uint64_t n = 0;
  int64_t attempts = 0;
  for (auto _ : state) {
    const Bytes& a = keys[(2 * n) & (kKeysPerWriter - 1)];
    const Bytes& b = keys[(2 * n + 1) & (kKeysPerWriter - 1)];
    std::memcpy(value.data(), &n, sizeof(n));  // every commit writes new bytes
    Status s = RunTransaction(
        store,
        [&](KvTxn& txn) -> Status {
          ++attempts;
          KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> old, txn.Get(a));
          benchmark::DoNotOptimize(old);
          KEEL_RETURN_IF_ERROR(txn.Put(a, value));
          return txn.Put(b, value);
        },
        kDefaultMaxAttempts, options);
    if (!s.has_value()) {
      state.SkipWithError(("commit: " + s.error().Id() + ": " + s.error().message()).c_str());
      break;
    }
    ++n;
  }
  state.SetItemsProcessed(static_cast<int64_t>(n));
  // Summed over threads: extra attempts RunTransaction needed (conflicts). Expected 0.
  state.counters["retries"] =
      benchmark::Counter(static_cast<double>(attempts) - static_cast<double>(n));
}

void BM_MemCommit(benchmark::State& state) { CommitLoop(state, CommitOptions{.sync = false}); }

// state.range(0): CommitOptions::sync.
void BM_RocksCommit(benchmark::State& state) {
  CommitLoop(state, CommitOptions{.sync = state.range(0) != 0});
}

void ReadLoop(benchmark::State& state) {
  KvStore& store = Store();
  std::vector<Bytes> keys;
  keys.reserve(kReadKeys);
  for (int i = 0; i < kReadKeys; ++i) keys.push_back(ReadKey(i));
  // Each thread walks the keys with a stride (odd, so every key is visited) from its own
  // start, so consecutive reads do not hit neighbouring keys.
  uint32_t i = static_cast<uint32_t>(state.thread_index()) * 4099;
  for (auto _ : state) {
    Result<std::optional<Bytes>> value = store.Get(keys[i & (kReadKeys - 1)]);
    if (!value.has_value() || !value->has_value()) {
      state.SkipWithError("get: missing key or error");
      break;
    }
    benchmark::DoNotOptimize(value);
    i += 7919;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_MemGet(benchmark::State& state) { ReadLoop(state); }
void BM_RocksGet(benchmark::State& state) { ReadLoop(state); }

BENCHMARK(BM_MemCommit)
    ->Setup(SetupMemCommit)
    ->Teardown(TeardownStore)
    ->Threads(1)
    ->Threads(8)
    ->UseRealTime();

BENCHMARK(BM_RocksCommit)
    ->Setup(SetupRocksCommit)
    ->Teardown(TeardownStore)
    ->ArgName("sync")
    ->Arg(0)
    ->Arg(1)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->UseRealTime();

BENCHMARK(BM_MemGet)->Setup(SetupMemRead)->Teardown(TeardownStore)->Threads(1)->UseRealTime();

BENCHMARK(BM_RocksGet)
    ->Setup(SetupRocksRead)
    ->Teardown(TeardownStore)
    ->ArgName("sst")
    ->Arg(0)
    ->Arg(1)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace keel::storage
