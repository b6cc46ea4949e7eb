// Which CPUs a thread runs on, and which CPUs a disk interrupts when its I/O completes.
//
// Why it matters: a thread that waits for a device (an fsync) sleeps until the device's
// completion interrupt wakes it. When the interrupt arrives on another CPU than the one
// the thread sleeps on, the wake-up is a cross-CPU one: an inter-processor interrupt and,
// on a VM whose idle vCPUs halt, that vCPU's exit from halt — tens of µs on every fsync.
// A disk with one hardware queue (virtio-blk, many cloud volumes) sends every completion to
// the CPUs of that queue's interrupt; a thread kept there is woken where it sleeps. A disk
// with a queue per CPU (most NVMe drives) completes on the submitting CPU already, so
// nothing is gained by pinning there.
//
// FindCompletionCpus reads Linux's sysfs and procfs (roots injectable for tests):
//   /sys/dev/block/MAJ:MIN      the block device holding a file (a partition's parent is the
//                               disk), with mq/<n> per hardware queue;
//   <its device>/…/msi_irqs/N   the interrupts of the PCI function above it;
//   /proc/interrupts            how many each has taken (the busiest is the I/O queue's;
//                               the others are configuration and admin queues);
//   /proc/irq/N/effective_affinity_list   the CPUs it is delivered to.
// Thread-safety: every function may be called from any thread.
#pragma once

#include <pthread.h>

#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace keel {

// Parses a Linux CPU list ("1", "0-3", "0,2-3"; surrounding whitespace ignored) into
// sorted, distinct CPU numbers. Errors (config.invalid_value) on an empty list, bad syntax,
// a reversed range, or a CPU number at or above kMaxCpus.
inline constexpr int kMaxCpus = 1024;  // CPU_SETSIZE
Result<std::vector<int>> ParseCpuList(std::string_view text);
// The shortest list ParseCpuList reads back as `cpus` (sorted, distinct): {0,1,2,5} → "0-2,5".
std::string FormatCpuList(std::span<const int> cpus);

// The CPUs the calling thread may run on (its affinity mask), sorted. Empty if unknown.
std::vector<int> AllowedCpus();
// Restricts `thread` (a running thread of this process) to `cpus`. An error
// (system.affinity) says why not; the thread's affinity is then unchanged.
Status PinThread(pthread_t thread, std::span<const int> cpus);
Status PinCurrentThread(std::span<const int> cpus);

struct CompletionCpus {
  // Where a thread waiting for the device's completions should run: a non-empty subset of
  // the allowed CPUs, or empty when pinning would not help or cannot be worked out.
  std::vector<int> cpus;
  std::string device;  // the disk's name ("vda"), when found
  int irq = -1;        // the interrupt its completions arrive by, when found
  std::string reason;  // why `cpus` is empty (for a log line)
};

struct SystemRoots {
  std::filesystem::path sys = "/sys";
  std::filesystem::path proc = "/proc";
};

// The CPUs interrupt `irq` is delivered to now: /proc/irq/N/effective_affinity_list (where
// the kernel sends it), else smp_affinity_list (where it may go); nullopt if neither can be
// read. The answer changes while processes run: irqbalance moves interrupts every few
// seconds, and an operator may write smp_affinity.
std::optional<std::vector<int>> IrqCpus(int irq, const SystemRoots& roots = {});

// For the block device holding `path` (stat's st_dev). `allowed`: the CPUs the thread may
// use (AllowedCpus()).
CompletionCpus FindCompletionCpus(const std::filesystem::path& path, std::span<const int> allowed,
                                  const SystemRoots& roots = {});
// For the block device `major`:`minor`.
CompletionCpus FindCompletionCpusOfDevice(unsigned major, unsigned minor,
                                          std::span<const int> allowed,
                                          const SystemRoots& roots = {});

}  // namespace keel
