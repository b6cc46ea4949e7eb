// Where the KV sync thread runs (EngineConfig::sync_thread_cpus): PlaceSyncThread's
// decisions — off, storage with no local syncs, a CPU list kept to the CPUs this process may
// use, auto following a (fake) sysfs to the disk's interrupt CPU, auto with nothing to
// follow — each with the log line an operator reads; and a running engine whose sync thread
// ("keel-kv-sync" in /proc/self/task) is found on the CPUs it was given.

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
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
  bool Saw(LogLevel level, std::string_view part) { return Count(level, part) > 0; }
  int Count(LogLevel level, std::string_view part) {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& [l, m] : lines_) {
      if (l == level && m.find(part) != std::string::npos) ++n;
    }
    return n;
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
  EXPECT_EQ(placed.irq, 77);  // to be followed (SyncThreadFollower)
  EXPECT_EQ(placed.device, "vdz");
  // An interrupt that goes to every CPU: nothing to pin to now, but followed.
  std::ofstream(roots.proc / "irq" / "77" / "effective_affinity_list")
      << FormatCpuList(allowed) << "\n";
  placed = PlaceSyncThread(config, true, roots);
  EXPECT_TRUE(placed.cpus.empty());
  EXPECT_EQ(placed.irq, 77);
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "every CPU this thread may use"));
  // A disk that takes no interrupts on them: not pinned, and the log says why.
  std::ofstream(roots.proc / "interrupts") << " 77: 0 0 PCI-MSIX-0000:00:02.0 1-edge x\n";
  placed = PlaceSyncThread(config, true, roots);
  EXPECT_TRUE(placed.cpus.empty());
  EXPECT_EQ(placed.irq, -1);
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "runs where the scheduler puts it"));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "no interrupts yet"));
  // Nothing there at all (another machine's tree): not pinned either.
  placed = PlaceSyncThread(config, true, SystemRoots{.sys = dir.path(), .proc = dir.path()});
  EXPECT_TRUE(placed.cpus.empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "not a block device"));
}

// A fake /proc in which IRQ 77 of "vdz" is routed by the test, as irqbalance or an
// operator would.
class FollowedInterrupt {
 public:
  FollowedInterrupt() : roots_{.sys = dir_.path() / "sys", .proc = dir_.path() / "proc"} {
    fs::create_directories(file().parent_path());
  }
  const SystemRoots& roots() const { return roots_; }
  void RouteTo(const std::string& list) { std::ofstream(file()) << list << "\n"; }
  void Vanish() { fs::remove(file()); }
  static SyncThreadPlacement PinnedTo(std::vector<int> cpus) {
    return SyncThreadPlacement{.cpus = std::move(cpus), .why = "test", .irq = 77, .device = "vdz"};
  }

 private:
  fs::path file() const { return roots_.proc / "irq" / "77" / "effective_affinity_list"; }
  TempDir dir_;
  SystemRoots roots_;
};

// A SyncThreadFollower::PinFn that records each move and answers `answer`.
struct Moves {
  std::vector<std::vector<int>> seen;
  Status answer = OkStatus();
  SyncThreadFollower::PinFn Pin() {
    return [this](std::span<const int> cpus) {
      seen.emplace_back(cpus.begin(), cpus.end());
      return answer;
    };
  }
};

TEST(SyncThreadFollower, MovesTheThreadWhereTheInterruptNowGoesAndSaysWhy) {
  LogCapture capture;
  FollowedInterrupt irq;
  Moves moves;
  SyncThreadFollower follower(FollowedInterrupt::PinnedTo({1}), {0, 1, 2, 3}, moves.Pin(),
                              irq.roots());
  irq.RouteTo("1");
  EXPECT_FALSE(follower.Recheck()) << "where it already is";
  EXPECT_TRUE(moves.seen.empty());

  irq.RouteTo("2");
  EXPECT_TRUE(follower.Recheck());
  ASSERT_EQ(moves.seen.size(), 1u);
  EXPECT_EQ(moves.seen.back(), (std::vector<int>{2}));
  EXPECT_EQ(follower.cpus(), (std::vector<int>{2}));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "the KV sync thread moves to CPU 2"));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "IRQ 77 of vdz now goes to CPU 2"));

  // Delivered to some CPUs the process may not use: the ones it may.
  irq.RouteTo("2-3,9");
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(moves.seen.back(), (std::vector<int>{2, 3}));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "moves to CPUs 2-3"));
}

TEST(SyncThreadFollower, HandsTheThreadToTheSchedulerWhenPinningWouldNotHelp) {
  LogCapture capture;
  FollowedInterrupt irq;
  Moves moves;
  SyncThreadFollower follower(FollowedInterrupt::PinnedTo({1}), {0, 1}, moves.Pin(), irq.roots());
  // Every CPU the process may use: all of them, the scheduler's choice.
  irq.RouteTo("0-1");
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(moves.seen.back(), (std::vector<int>{0, 1}));
  EXPECT_TRUE(follower.cpus().empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "now runs where the scheduler puts it"));
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "every CPU this process may use"));
  // None of them: still the scheduler's, so nothing to do.
  irq.RouteTo("5");
  EXPECT_FALSE(follower.Recheck());
  EXPECT_EQ(moves.seen.size(), 1u);
  // Back to one of them: followed again.
  irq.RouteTo("0");
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(moves.seen.back(), (std::vector<int>{0}));

  // Pinned, and the interrupt moved to CPUs the process may not use.
  SyncThreadFollower moved_away(FollowedInterrupt::PinnedTo({1}), {0, 1}, moves.Pin(), irq.roots());
  irq.RouteTo("4-5");
  EXPECT_TRUE(moved_away.Recheck());
  EXPECT_EQ(moves.seen.back(), (std::vector<int>{0, 1}));
  EXPECT_TRUE(moved_away.cpus().empty());
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kInfo, "none of which this process may use"));
}

TEST(SyncThreadFollower, AnUnreadableAnswerChangesNothingAndAFailedMoveIsRetried) {
  LogCapture capture;
  FollowedInterrupt irq;
  Moves moves;
  moves.answer = Unexpected{Error{"system", "affinity", "not permitted"}};
  SyncThreadFollower follower(FollowedInterrupt::PinnedTo({1}), {0, 1}, moves.Pin(), irq.roots());
  EXPECT_FALSE(follower.Recheck()) << "no file yet";
  irq.RouteTo("garbage");
  EXPECT_FALSE(follower.Recheck());
  irq.Vanish();
  EXPECT_FALSE(follower.Recheck());
  EXPECT_TRUE(moves.seen.empty());
  EXPECT_EQ(follower.cpus(), (std::vector<int>{1}));

  irq.RouteTo("0");
  EXPECT_FALSE(follower.Recheck());
  EXPECT_FALSE(follower.Recheck());
  EXPECT_EQ(moves.seen.size(), 2u) << "tried at each recheck";
  EXPECT_EQ(follower.cpus(), (std::vector<int>{1})) << "still where it was";
  EXPECT_EQ(capture.sink().Count(LogLevel::kWarn, "could not follow its disk's interrupt"), 1)
      << "warned once per destination";
  EXPECT_TRUE(capture.sink().Saw(LogLevel::kWarn, "not permitted"));
  moves.answer = OkStatus();
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(follower.cpus(), (std::vector<int>{0}));

  // A placement with no interrupt follows nothing.
  SyncThreadFollower none(
      SyncThreadPlacement{}, {0, 1}, [&](std::span<const int>) { return OkStatus(); }, irq.roots());
  EXPECT_FALSE(none.Recheck());
}

// A real thread, moved by the follower with keel::PinThread.
TEST(SyncThreadFollower, ARealThreadEndsUpOnTheInterruptsCpu) {
  const std::vector<int> allowed = AllowedCpus();
  if (allowed.size() < 2) GTEST_SKIP() << "one CPU: there is nowhere to move";
  FollowedInterrupt irq;
  std::promise<void> release;
  std::thread thread([done = release.get_future()] { done.wait(); });
  SyncThreadFollower follower(
      FollowedInterrupt::PinnedTo({}), allowed,
      [&](std::span<const int> cpus) { return PinThread(thread.native_handle(), cpus); },
      irq.roots());
  auto cpus_of_thread = [&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (pthread_getaffinity_np(thread.native_handle(), sizeof(set), &set) != 0) return cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
    return cpus;
  };
  irq.RouteTo(std::to_string(allowed.front()));
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(cpus_of_thread(), (std::vector<int>{allowed.front()}));
  irq.RouteTo(FormatCpuList(allowed));
  EXPECT_TRUE(follower.Recheck());
  EXPECT_EQ(cpus_of_thread(), allowed);
  release.set_value();
  thread.join();
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
