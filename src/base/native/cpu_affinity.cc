#include "base/native/cpu_affinity.h"

#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <system_error>

namespace keel {
namespace {

namespace fs = std::filesystem;

Error InvalidCpuList(std::string_view text, std::string_view why) {
  return Error{"config", "invalid_value",
               "'" + std::string(text) + "' is not a CPU list (" + std::string(why) +
                   "; write e.g. 1, 0-3 or 0,2-3)"};
}

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// A whole decimal number in [0, limit), or -1.
int ParseNumberBelow(std::string_view s, int limit) {
  int n = -1;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || n < 0 || n >= limit) {
    return -1;
  }
  return n;
}
int ParseCpu(std::string_view s) { return ParseNumberBelow(s, kMaxCpus); }

// A small file's content (sysfs and procfs files are read whole); nullopt if unreadable.
std::optional<std::string> ReadSmallFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(out).str();
}

// Interrupts taken so far, by IRQ number, from /proc/interrupts: "  36:  0  1197  PCI-MSIX…".
std::map<int, uint64_t> InterruptCounts(const fs::path& proc_interrupts) {
  std::map<int, uint64_t> counts;
  std::ifstream in(proc_interrupts);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string label;
    if (!(fields >> label) || label.size() < 2 || label.back() != ':') continue;
    const int irq =
        ParseNumberBelow(std::string_view(label).substr(0, label.size() - 1), INT32_MAX);
    if (irq < 0) continue;  // NMI:, LOC:…
    uint64_t total = 0;
    std::string field;
    // One count per CPU, then the controller's name (the first field that is not a number).
    while (fields >> field) {
      uint64_t n = 0;
      auto [e, err] = std::from_chars(field.data(), field.data() + field.size(), n);
      if (err != std::errc{} || e != field.data() + field.size()) break;
      total += n;
    }
    counts[irq] = total;
  }
  return counts;
}

CompletionCpus NotPinned(CompletionCpus found, std::string reason) {
  found.cpus.clear();
  found.reason = std::move(reason);
  return found;
}

}  // namespace

Result<std::vector<int>> ParseCpuList(std::string_view text) {
  const std::string_view list = Trim(text);
  if (list.empty()) return InvalidCpuList(text, "it is empty");
  std::vector<int> cpus;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    const std::string_view item = list.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const size_t dash = item.find('-');
    const int first = ParseCpu(item.substr(0, dash));
    const int last = dash == std::string_view::npos ? first : ParseCpu(item.substr(dash + 1));
    if (first < 0 || last < 0) {
      return InvalidCpuList(text, "CPUs are numbers from 0 to " + std::to_string(kMaxCpus - 1));
    }
    if (last < first) return InvalidCpuList(text, "a range runs from low to high");
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

std::string FormatCpuList(std::span<const int> cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

Status PinThread(pthread_t thread, std::span<const int> cpus) {
  if (cpus.empty()) return Unexpected{Error{"system", "affinity", "no CPU to pin the thread to"}};
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) {
      return Unexpected{
          Error{"system", "affinity", "CPU " + std::to_string(cpu) + " is out of range"}};
    }
    CPU_SET(cpu, &set);
  }
  if (const int err = pthread_setaffinity_np(thread, sizeof(set), &set); err != 0) {
    return Unexpected{
        Error{"system", "affinity",
              "cannot run the thread on CPUs " + FormatCpuList(cpus) + ": " + std::strerror(err)}};
  }
  return OkStatus();
}

Status PinCurrentThread(std::span<const int> cpus) { return PinThread(pthread_self(), cpus); }

std::optional<std::vector<int>> IrqCpus(int irq, const SystemRoots& roots) {
  if (irq < 0) return std::nullopt;
  const fs::path irq_dir = roots.proc / "irq" / std::to_string(irq);
  auto affinity = ReadSmallFile(irq_dir / "effective_affinity_list");
  if (!affinity) affinity = ReadSmallFile(irq_dir / "smp_affinity_list");
  if (!affinity) return std::nullopt;
  auto cpus = ParseCpuList(*affinity);
  if (!cpus.has_value()) return std::nullopt;
  return std::move(*cpus);
}

CompletionCpus FindCompletionCpus(const fs::path& path, std::span<const int> allowed,
                                  const SystemRoots& roots) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return NotPinned({}, "cannot stat " + path.string() + ": " + std::strerror(err));
  }
  return FindCompletionCpusOfDevice(major(st.st_dev), minor(st.st_dev), allowed, roots);
}

CompletionCpus FindCompletionCpusOfDevice(unsigned major, unsigned minor,
                                          std::span<const int> allowed, const SystemRoots& roots) {
  CompletionCpus found;
  const std::string number = std::to_string(major) + ":" + std::to_string(minor);
  std::error_code ec;
  fs::path disk = fs::canonical(roots.sys / "dev" / "block" / number, ec);
  if (ec) return NotPinned(found, "device " + number + " is not a block device (tmpfs, overlay…)");
  if (fs::exists(disk / "partition", ec)) disk = disk.parent_path();
  found.device = disk.filename().string();
  if (!fs::is_empty(disk / "slaves", ec) && !ec) {
    return NotPinned(found, found.device + " is built on other disks (device-mapper, RAID)");
  }
  ec.clear();
  size_t queues = 0;
  for (const auto& entry : fs::directory_iterator(disk / "mq", ec)) {
    if (entry.is_directory()) ++queues;
  }
  if (ec || queues == 0) return NotPinned(found, found.device + " shows no hardware queues");
  if (queues > 1) {
    return NotPinned(found, found.device + " has " + std::to_string(queues) +
                                " hardware queues: completions come back to the CPU that "
                                "submitted");
  }
  // The PCI function the disk hangs off (virtio-blk: …/0000:00:02.0/virtio1/block/vda;
  // NVMe: …/0000:01:00.0/nvme/nvme0/nvme0n1) lists its interrupts in msi_irqs.
  const fs::path sys_root = fs::canonical(roots.sys, ec);
  std::vector<int> irqs;
  for (fs::path dir = disk.parent_path(); !ec && dir.has_relative_path() && dir != sys_root;
       dir = dir.parent_path()) {
    std::error_code dir_ec;
    for (const auto& entry : fs::directory_iterator(dir / "msi_irqs", dir_ec)) {
      const int irq = ParseNumberBelow(entry.path().filename().string(), INT32_MAX);
      if (irq >= 0) irqs.push_back(irq);
    }
    if (!irqs.empty()) break;
  }
  if (irqs.empty()) return NotPinned(found, found.device + " has no MSI interrupts to follow");
  const std::map<int, uint64_t> counts = InterruptCounts(roots.proc / "interrupts");
  uint64_t most = 0;
  for (int irq : irqs) {
    auto it = counts.find(irq);
    if (it != counts.end() && it->second > most) {
      most = it->second;
      found.irq = irq;
    }
  }
  if (found.irq < 0) return NotPinned(found, found.device + " has taken no interrupts yet");
  const std::optional<std::vector<int>> targets = IrqCpus(found.irq, roots);
  const std::string irq_name = "IRQ " + std::to_string(found.irq) + " of " + found.device;
  if (!targets.has_value()) return NotPinned(found, "cannot read where " + irq_name + " goes");
  std::vector<int> sorted_allowed(allowed.begin(), allowed.end());
  std::sort(sorted_allowed.begin(), sorted_allowed.end());
  std::vector<int> both;
  std::set_intersection(targets->begin(), targets->end(), sorted_allowed.begin(),
                        sorted_allowed.end(), std::back_inserter(both));
  if (both.empty()) {
    return NotPinned(found, irq_name + " goes to CPUs " + FormatCpuList(*targets) +
                                ", none of which this thread may use");
  }
  if (both == sorted_allowed) {
    return NotPinned(found, irq_name + " goes to every CPU this thread may use");
  }
  found.cpus = std::move(both);
  return found;
}

}  // namespace keel
