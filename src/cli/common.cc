#include "cli/common.h"

#include <pthread.h>

#include <ctime>
#include <iostream>

namespace keel::cli {
namespace {

std::string& Invocation() {
  static std::string name = "keel";
  return name;
}

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

int Fail(int exit_code, std::string_view id, std::string_view message) {
  std::cout.flush();
  std::cerr << "keel: " << id << ": " << message << std::endl;
  return exit_code;
}

void Progress(std::string_view line) { std::cerr << line << std::endl; }

void SetInvocationName(std::string name) {
  if (!name.empty()) Invocation() = std::move(name);
}
const std::string& InvocationName() { return Invocation(); }

void BlockStopSignals() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int TakeStopSignal(std::chrono::milliseconds timeout) {
  sigset_t set = StopSignals();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;  // EAGAIN (none in time) or EINTR: callers poll again
}

CLI::Option* AddVerbatimArgs(CLI::App& app, const std::string& name, std::vector<std::string>& into,
                             const std::string& description) {
  // Up to "all" values (expected), taken one by one and all kept (TakeAll: no count check).
  return app.add_option(name, into, description)
      ->expected(CLI::detail::expected_max_vector_size, CLI::detail::expected_max_vector_size)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

}  // namespace keel::cli
