// Where the KV sync thread runs (EngineConfig::sync_thread_cpus): PlaceSyncThread's
// decisions — off, storage with no local syncs, a CPU list kept to the CPUs this process may
// use, auto following a (fake) sysfs to the disk's interrupt CPU, auto with nothing to
// follow — each with the log line an operator reads; and a running engine whose sync thread
// ("keel-kv-sync" in /proc/self/task) is found on the CPUs it was given.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.h"
#include "base/native/cpu_affinity.h"
#include "engine/server/server.h"

namespace keel::engine {
namespace {

namespace fs = std::filesystem;

class RecordingSink : public LogSink {
 public:
  void Write(LogLevel level, std::string_view, std::string_view message) override {
    std::lock_guard lock(mu_);
    lines_.emplace_back(level, std::string(message));
  }
  bool Saw(LogLevel level, std::string_view part) {
    std::lock_guard lock(mu_);
    for (const auto& [l, m] : lines_) {
      if (l == level && m.find(part) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<LogLevel, std::string>> lines_;
};

// Installs a RecordingSink for one scope.
class LogCapture {
 public:
  LogCapture() {
    SetLogSink(&sink_);
    SetLogLevel(LogLevel::kInfo);
  }
  ~LogCapture() { SetLogSink(nullptr); }
  RecordingSink& sink() { return sink_; }

 private:
  RecordingSink sink_;
};

// A directory for the test under the working directory (the build tree: a disk, not tmpfs,
// on the machines the suite runs on), removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string dir = (fs::current_path() / "keel-sync-thread-XXXXXX").string();
    if (mkdtemp(dir.data()) != nullptr) path_ = dir;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

EngineConfig RocksDbConfig(const fs::path& data_dir, std::string sync_thread_cpus) {
  EngineConfig config;
  config.port = 0;
  config.io_spin_us = 0;
  config.data_dir = data_dir.string();
  config.sync_thread_cpus = std::move(sync_thread_cpus);
  return config;
}

TEST(SyncThreadPlacement, OffAndStorageWithoutLocalSyncsLeaveTheThreadAlone) {
  LogCapture capture;
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  EXPECT_TRUE(PlaceSyncThread(RocksDbConfig(dir.path(), "off"), true).cpus.empty());
  // Memory storage: auto says nothing, a list is pointed out as ignored.
  EngineConfig memory = RocksDbConfig(dir.path(), "auto");
  memory.storage = StorageKind::kMemory;
  EXPECT_TRUE(PlaceSyncThread(memory, false).cpus.empty());
  EXPECT_FALSE(capture.sink().Saw(LogLevel::kWarn, "sync_thread_cpus"));
  memory.sync_thread_cpus = "0";
  EXPECT_TRUE(PlaceSyncThread(memory, false).cpus.empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kWarn, "sync_thread_cpus is ignored"));
}

TEST(SyncThreadPlacement, AListIsKeptToTheCpusThisProcessMayUse) {
  LogCapture capture;
  TempDir dir;
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  SyncThreadPlacement placed =
      PlaceSyncThread(RocksDbConfig(dir.path(), "0-" + std::to_string(kMaxCpus - 1)), true);
  EXPECT_EQ(placed.cpus, allowed);
  EXPECT_NE(placed.why.find("sync_thread_cpus="), std::string::npos) << placed.why;
  placed = PlaceSyncThread(RocksDbConfig(dir.path(), std::to_string(allowed.back())), true);
  EXPECT_EQ(placed.cpus, (std::vector<int>{allowed.back()}));
  if (allowed.back() != kMaxCpus - 1) {
    placed = PlaceSyncThread(RocksDbConfig(dir.path(), std::to_string(kMaxCpus - 1)), true);
    EXPECT_TRUE(placed.cpus.empty());
    EXPECT_TRUE(capture.sink().Saw(LogLevel::kWarn, "none of sync_thread_cpus"));
  }
}

// auto over a fake sysfs/procfs in which the data directory's own device number is a
// single-queue virtio disk whose queue interrupt goes to the last allowed CPU.
TEST(SyncThreadPlacement, AutoFollowsTheDataDirectorysDiskToItsInterruptCpu) {
  const std::vector<int> allowed = AllowedCpus();
  if (allowed.size() < 2) GTEST_SKIP() << "one CPU: there is nothing to choose";
  LogCapture capture;
  TempDir dir;
  TempDir fake;
  ASSERT_FALSE(dir.path().empty());
  ASSERT_FALSE(fake.path().empty());
  struct stat st {};
  ASSERT_EQ(::stat(dir.path().c_str(), &st), 0);
  const SystemRoots roots{.sys = fake.path() / "sys", .proc = fake.path() / "proc"};
  const fs::path disk = roots.sys / "devices/pci0000:00/0000:00:02.0/virtio1/block/vdz";
  fs::create_directories(disk / "mq" / "0");
  fs::create_directories(roots.sys / "devices/pci0000:00/0000:00:02.0/msi_irqs");
  std::ofstream(roots.sys / "devices/pci0000:00/0000:00:02.0/msi_irqs/77") << "msix\n";
  fs::create_directories(roots.sys / "dev" / "block");
  fs::create_directory_symlink(
      disk, roots.sys / "dev" / "block" /
                (std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev))));
  fs::create_directories(roots.proc / "irq" / "77");
  std::ofstream(roots.proc / "interrupts") << " 77: 0 5000 PCI-MSIX-0000:00:02.0 1-edge x\n";
  std::ofstream(roots.proc / "irq" / "77" / "effective_affinity_list") << allowed.back() << "\n";

  const EngineConfig config = RocksDbConfig(dir.path(), "auto");
  SyncThreadPlacement placed = PlaceSyncThread(config, true, roots);
  EXPECT_EQ(placed.cpus, (std::vector<int>{allowed.back()}));
  EXPECT_NE(placed.why.find("completions of vdz (IRQ 77)"), std::string::npos) << placed.why;
  // A disk that takes no interrupts on them: not pinned, and the log says why.
  std::ofstream(roots.proc / "interrupts") << " 77: 0 0 PCI-MSIX-0000:00:02.0 1-edge x\n";
  placed = PlaceSyncThread(config, true, roots);
  EXPECT_TRUE(placed.cpus.empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "runs where the scheduler puts it"));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "no interrupts yet"));
  // Nothing there at all (another machine's tree): not pinned either.
  placed = PlaceSyncThread(config, true, SystemRoots{.sys = dir.path(), .proc = dir.path()});
  EXPECT_TRUE(placed.cpus.empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "not a block device"));
}

// The CPUs the sync thread ("keel-kv-sync") of this process may run on; nullopt if there
// is no such thread, or more than one.
std::optional<std::string> SyncThreadCpus() {
  std::optional<std::string> found;
  int threads = 0;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (!std::getline(comm, name) || name != "keel-kv-sync") continue;
    ++threads;
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      constexpr std::string_view kKey = "Cpus_allowed_list:";
      if (line.starts_with(kKey)) {
        std::istringstream value(line.substr(kKey.size()));
        std::string list;
        value >> list;
        found = list;
      }
    }
  }
  if (threads != 1) return std::nullopt;
  return found;
}

TEST(SyncThreadPlacement, ARunningEnginesSyncThreadRunsOnTheCpusItWasGiven) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (const std::string& setting : {std::to_string(allowed.back()), std::string("off")}) {
    LogCapture capture;
    auto server = EngineServer::Start(RocksDbConfig(dir.path(), setting));
    ASSERT_TRUE(server.has_value()) << server.error().ToString();
    const bool pins = setting != "off" && !(*server)->engine().store().SkipsSyncs();
    const std::optional<std::string> cpus = SyncThreadCpus();
    ASSERT_TRUE(cpus.has_value()) << "one keel-kv-sync thread";
    EXPECT_EQ(*cpus, FormatCpuList(pins ? std::vector<int>{allowed.back()} : allowed)) << setting;
    EXPECT_EQ(capture.sink().Saw(LogLevel::kInfo, "the KV sync thread runs on CPU " +
                                                      std::to_string(allowed.back())),
              pins)
        << setting;
    server->reset();
    EXPECT_FALSE(SyncThreadCpus().has_value()) << "the thread ends with the engine";
  }
}

}  // namespace
}  // namespace keel::engine
