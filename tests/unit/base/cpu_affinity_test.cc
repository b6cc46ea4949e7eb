// CPU lists, thread pinning, and finding the CPUs a disk's completions arrive on: the
// sysfs/procfs reading runs over fake trees laid out as Linux lays them out (virtio-blk,
// NVMe partitions, multi-queue disks, device-mapper), so each way of deciding "do not pin"
// is exercised, not only the machine's own disk.
#include "base/native/cpu_affinity.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace keel {
namespace {

namespace fs = std::filesystem;

TEST(ParseCpuList, ReadsSinglesRangesAndMixesSortedAndDistinct) {
  EXPECT_EQ(ParseCpuList("1").value(), (std::vector<int>{1}));
  EXPECT_EQ(ParseCpuList("0-3").value(), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(ParseCpuList("5,0,2-3").value(), (std::vector<int>{0, 2, 3, 5}));
  EXPECT_EQ(ParseCpuList("1,1,0-1").value(), (std::vector<int>{0, 1}));
  EXPECT_EQ(ParseCpuList(" 0-1\n").value(), (std::vector<int>{0, 1}));  // as sysfs writes it
  EXPECT_EQ(ParseCpuList("1023").value(), (std::vector<int>{1023}));
}

TEST(ParseCpuList, RefusesWhatIsNotACpuList) {
  for (const char* bad : {"", " \n", "a", "1,", ",1", "1,,2", "-1", "1-", "3-1", "1024", "0x1",
                          "1 2", "1-2-3", "+1"}) {
    auto parsed = ParseCpuList(bad);
    ASSERT_FALSE(parsed.has_value()) << "'" << bad << "'";
    EXPECT_TRUE(parsed.error().Is("config", "invalid_value")) << parsed.error().ToString();
  }
}

TEST(FormatCpuList, WritesRangesThatParseBack) {
  EXPECT_EQ(FormatCpuList(std::vector<int>{}), "");
  EXPECT_EQ(FormatCpuList(std::vector<int>{1}), "1");
  EXPECT_EQ(FormatCpuList(std::vector<int>{0, 1, 2, 5}), "0-2,5");
  EXPECT_EQ(FormatCpuList(std::vector<int>{0, 2, 4, 5}), "0,2,4-5");
  const std::vector<int> cpus{3, 4, 7, 9, 10, 11};
  EXPECT_EQ(ParseCpuList(FormatCpuList(cpus)).value(), cpus);
}

TEST(PinCurrentThread, RestrictsOnlyTheCallingThreadAndRefusesCpusItMayNotUse) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  std::vector<int> inside;
  std::vector<int> after_bad;
  Status bad;
  std::thread pinned([&] {
    ASSERT_TRUE(PinCurrentThread(std::vector<int>{allowed.back()}).has_value());
    inside = AllowedCpus();
    // A CPU that does not exist (or that this process may not use) is refused, and the
    // thread keeps the affinity it had.
    bad = PinCurrentThread(std::vector<int>{kMaxCpus - 1});
    after_bad = AllowedCpus();
  });
  pinned.join();
  EXPECT_EQ(inside, (std::vector<int>{allowed.back()}));
  if (allowed.back() != kMaxCpus - 1) {
    ASSERT_FALSE(bad.has_value());
    EXPECT_TRUE(bad.error().Is("system", "affinity")) << bad.error().ToString();
    EXPECT_EQ(after_bad, inside);
  }
  EXPECT_EQ(AllowedCpus(), allowed);  // this thread was never touched
  EXPECT_FALSE(PinCurrentThread(std::vector<int>{}).has_value());
  EXPECT_FALSE(PinCurrentThread(std::vector<int>{-1}).has_value());
  EXPECT_EQ(AllowedCpus(), allowed);
}

// A fake /sys and /proc under a temporary directory.
class FakeSystem : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = (fs::temp_directory_path() / "keel-cpu-affinity-XXXXXX").string();
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    root_ = dir;
    roots_ = {.sys = root_ / "sys", .proc = root_ / "proc"};
    fs::create_directories(roots_.sys / "dev" / "block");
    fs::create_directories(roots_.proc / "irq");
  }
  void TearDown() override { fs::remove_all(root_); }

  static void Write(const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
  }
  // A disk at /sys/devices/<device_path>/block/<name>, numbered `number`, with `queues`
  // hardware queues, whose PCI function /sys/devices/<pci> has MSI interrupts `irqs`.
  fs::path AddDisk(const std::string& number, const std::string& pci, const std::string& below_pci,
                   const std::string& name, int queues, const std::vector<int>& irqs) {
    const fs::path disk = roots_.sys / "devices" / pci / below_pci / "block" / name;
    fs::create_directories(disk);
    for (int q = 0; q < queues; ++q) fs::create_directories(disk / "mq" / std::to_string(q));
    for (int irq : irqs)
      Write(roots_.sys / "devices" / pci / "msi_irqs" / std::to_string(irq), "msix\n");
    Link(number, disk);
    return disk;
  }
  // /sys/dev/block/<number> → `target`, relative as the kernel makes it.
  void Link(const std::string& number, const fs::path& target) {
    fs::create_directory_symlink(fs::relative(target, roots_.sys / "dev" / "block"),
                                 roots_.sys / "dev" / "block" / number);
  }
  void Interrupts(const std::string& table) { Write(roots_.proc / "interrupts", table); }
  void Affinity(int irq, const std::string& list) {
    Write(roots_.proc / "irq" / std::to_string(irq) / "effective_affinity_list", list);
  }
  // The machine this was measured on: virtio-blk vda, config IRQ 35, its one queue IRQ 36
  // delivered to CPU 1.
  void AddVirtioDisk() {
    AddDisk("254:0", "pci0000:00/0000:00:02.0", "virtio1", "vda", 1, {35, 36});
    Interrupts(kVirtioInterrupts);
    Affinity(35, "0\n");
    Affinity(36, "1\n");
  }
  static constexpr const char* kVirtioInterrupts =
      "           CPU0       CPU1       \n"
      " 26:          0          1  IO-APIC   4-edge      ttyS0\n"
      " 35:          0          1 PCI-MSIX-0000:00:02.0   0-edge      virtio1-config\n"
      " 36:          0   11979609 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n"
      " 38:          0      26403 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n"
      "NMI:          0          0   Non-maskable interrupts\n"
      "LOC:    8787848    8804866   Local timer interrupts\n"
      "ERR:          0\n";

  fs::path root_;
  SystemRoots roots_;
};

TEST_F(FakeSystem, ASingleQueueDiskIsFollowedToItsBusiestInterruptsCpu) {
  AddVirtioDisk();
  const CompletionCpus found = FindCompletionCpusOfDevice(254, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_EQ(found.cpus, (std::vector<int>{1}));
  EXPECT_EQ(found.device, "vda");
  EXPECT_EQ(found.irq, 36);  // not the configuration interrupt 35, which went to CPU 0
  EXPECT_EQ(found.reason, "");
}

TEST_F(FakeSystem, APartitionIsFollowedToItsDiskAndItsPciFunctionAboveTheController) {
  const fs::path disk = AddDisk("259:0", "pci0000:00/0000:00:1d.0/0000:3d:00.0", "nvme/nvme0",
                                "nvme0n1", 1, {120, 121});
  fs::create_directories(disk / "nvme0n1p2");
  Write(disk / "nvme0n1p2" / "partition", "2\n");
  Link("259:2", disk / "nvme0n1p2");
  Interrupts(
      " 120:  5  0  0  7  PCI-MSIX-0000:3d:00.0 0-edge nvme0q0\n"
      " 121:  0  0  900  12  PCI-MSIX-0000:3d:00.0 1-edge nvme0q1\n");
  Affinity(120, "0-3\n");
  Affinity(121, "2\n");
  const CompletionCpus found =
      FindCompletionCpusOfDevice(259, 2, std::vector<int>{0, 1, 2, 3}, roots_);
  EXPECT_EQ(found.cpus, (std::vector<int>{2}));
  EXPECT_EQ(found.device, "nvme0n1");
  EXPECT_EQ(found.irq, 121);
}

TEST_F(FakeSystem, WithoutAnEffectiveAffinityTheConfiguredOneServes) {
  AddVirtioDisk();
  fs::remove(roots_.proc / "irq" / "36" / "effective_affinity_list");
  Write(roots_.proc / "irq" / "36" / "smp_affinity_list", "0\n");
  EXPECT_EQ(FindCompletionCpusOfDevice(254, 0, std::vector<int>{0, 1}, roots_).cpus,
            (std::vector<int>{0}));
}

TEST_F(FakeSystem, AMultiQueueDiskIsNotPinnedTo) {
  AddDisk("259:0", "pci0000:00/0000:00:04.0", "nvme/nvme0", "nvme0n1", 2, {50, 51, 52});
  Interrupts(" 50: 1 0 x\n 51: 90 0 x\n 52: 0 80 x\n");
  Affinity(51, "0\n");
  Affinity(52, "1\n");
  const CompletionCpus found = FindCompletionCpusOfDevice(259, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("2 hardware queues"), std::string::npos) << found.reason;
}

TEST_F(FakeSystem, WhatIsNotOneFollowableDiskIsNotPinnedTo) {
  // tmpfs or overlay: device numbers with no block device behind them.
  CompletionCpus found = FindCompletionCpusOfDevice(0, 45, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("not a block device"), std::string::npos) << found.reason;

  // device-mapper over other disks.
  const fs::path dm = roots_.sys / "devices" / "virtual" / "block" / "dm-0";
  fs::create_directories(dm / "mq" / "0");
  fs::create_directories(dm / "slaves" / "vda");
  Link("253:0", dm);
  found = FindCompletionCpusOfDevice(253, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("other disks"), std::string::npos) << found.reason;

  // A disk without MSI interrupts anywhere above it (a loop device, a legacy controller).
  const fs::path loop = roots_.sys / "devices" / "virtual" / "block" / "loop0";
  fs::create_directories(loop / "mq" / "0");
  Link("7:0", loop);
  found = FindCompletionCpusOfDevice(7, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_EQ(found.device, "loop0");
  EXPECT_NE(found.reason.find("no MSI interrupts"), std::string::npos) << found.reason;
}

TEST_F(FakeSystem, ADiskWhoseInterruptsCannotBeReadOrCountedIsNotPinnedTo) {
  AddVirtioDisk();
  Interrupts(" 36: 0 0 PCI-MSIX-0000:00:02.0 1-edge virtio1-req.0\n");
  CompletionCpus found = FindCompletionCpusOfDevice(254, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("no interrupts yet"), std::string::npos) << found.reason;

  Interrupts(kVirtioInterrupts);
  Affinity(36, "garbage\n");
  found = FindCompletionCpusOfDevice(254, 0, std::vector<int>{0, 1}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_EQ(found.irq, 36);
  EXPECT_NE(found.reason.find("cannot read where IRQ 36"), std::string::npos) << found.reason;
}

TEST_F(FakeSystem, OnlyCpusTheThreadMayUseAreChosenAndAllOfThemIsNoChoice) {
  AddVirtioDisk();
  Affinity(36, "1-2\n");
  // Some of the targets allowed: those.
  EXPECT_EQ(FindCompletionCpusOfDevice(254, 0, std::vector<int>{0, 2, 3}, roots_).cpus,
            (std::vector<int>{2}));
  // None allowed (a container limited to CPU 0).
  CompletionCpus found = FindCompletionCpusOfDevice(254, 0, std::vector<int>{0}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("none of which"), std::string::npos) << found.reason;
  // Every allowed CPU is a target: pinning would change nothing.
  found = FindCompletionCpusOfDevice(254, 0, std::vector<int>{1, 2}, roots_);
  EXPECT_TRUE(found.cpus.empty());
  EXPECT_NE(found.reason.find("every CPU"), std::string::npos) << found.reason;
}

TEST_F(FakeSystem, IrqCpusReadsWhereAnInterruptGoesNow) {
  Affinity(36, "1\n");
  EXPECT_EQ(IrqCpus(36, roots_), (std::vector<int>{1}));
  Affinity(36, "0-1\n");  // moved since (irqbalance, an operator)
  EXPECT_EQ(IrqCpus(36, roots_), (std::vector<int>{0, 1}));
  // Only the configured affinity: that.
  fs::remove(roots_.proc / "irq" / "36" / "effective_affinity_list");
  Write(roots_.proc / "irq" / "36" / "smp_affinity_list", "0\n");
  EXPECT_EQ(IrqCpus(36, roots_), (std::vector<int>{0}));
  // Unreadable, unknown or nonsense: no answer.
  Write(roots_.proc / "irq" / "36" / "smp_affinity_list", "garbage\n");
  EXPECT_EQ(IrqCpus(36, roots_), std::nullopt);
  EXPECT_EQ(IrqCpus(99, roots_), std::nullopt);
  EXPECT_EQ(IrqCpus(-1, roots_), std::nullopt);
}

TEST(FindCompletionCpus, OnThisMachineAnswersWithAllowedCpusOrAReason) {
  const std::vector<int> allowed = AllowedCpus();
  for (const fs::path& path : {fs::path("/"), fs::temp_directory_path(), fs::path("/proc")}) {
    const CompletionCpus found = FindCompletionCpus(path, allowed);
    if (found.cpus.empty()) {
      EXPECT_FALSE(found.reason.empty()) << path;
    } else {
      EXPECT_TRUE(
          std::includes(allowed.begin(), allowed.end(), found.cpus.begin(), found.cpus.end()))
          << path;
      EXPECT_LT(found.cpus.size(), allowed.size()) << path;
    }
  }
  const CompletionCpus missing = FindCompletionCpus("/nonexistent/keel", allowed);
  EXPECT_TRUE(missing.cpus.empty());
  EXPECT_NE(missing.reason.find("cannot stat"), std::string::npos) << missing.reason;
}

}  // namespace
}  // namespace keel
