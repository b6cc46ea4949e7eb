#include "base/native/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

extern char** environ;

namespace keel {
namespace {

using Clock = std::chrono::steady_clock;

Error ProcessError(std::string code, std::string message) {
  return Error("process", std::move(code), std::move(message));
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

}  // namespace

Result<std::unique_ptr<Subprocess>> Subprocess::Start(Options options) {
  // The environment: ours, with the overrides replacing same-named entries.
  std::map<std::string, std::string> overrides(options.env.begin(), options.env.end());
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string_view::npos && overrides.count(std::string(entry.substr(0, eq))) != 0) continue;
    env.emplace_back(entry);
  }
  for (const auto& [k, v] : overrides) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::vector<std::string> args;
  args.push_back(options.path);
  for (auto& a : options.args) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2] = {-1, -1};
  const bool capture = options.capture_stdout || options.capture_stderr;
  if (capture && ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return ProcessError("spawn_failed", std::string("pipe: ") + std::strerror(errno));
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.capture_stdout) posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  if (options.capture_stderr) posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Children start with default signal dispositions and an empty mask, whatever ours are.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  if (options.new_session) flags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&attr, flags);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, options.path.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (capture) ::close(pipe_fds[1]);
  if (rc != 0) {
    if (capture) ::close(pipe_fds[0]);
    return ProcessError("spawn_failed", options.path + ": " + std::strerror(rc));
  }
  std::unique_ptr<Subprocess> p(new Subprocess());
  p->pid_ = pid;
  p->out_fd_ = capture ? pipe_fds[0] : -1;
  p->echo_ = options.echo;
  p->echo_prefix_ = std::move(options.echo_prefix);
  return p;
}

Subprocess::~Subprocess() {
  if (!reaped_ && pid_ > 0) Stop(std::chrono::seconds(5));
  if (out_fd_ >= 0) ::close(out_fd_);
}

bool Subprocess::ReapNonBlocking() {
  if (reaped_) return true;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
  }
  return reaped_;
}

bool Subprocess::running() { return !ReapNonBlocking(); }

std::optional<std::string> Subprocess::ExitDescription() {
  if (!ReapNonBlocking()) return std::nullopt;
  return Describe(status_);
}

std::optional<int> Subprocess::exit_code() {
  if (!ReapNonBlocking()) return std::nullopt;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return status_;
}

void Subprocess::Remember(std::string line) {
  if (echo_) std::fprintf(stderr, "%s%s\n", echo_prefix_.c_str(), line.c_str());
  seen_.push_back(std::move(line));
  while (seen_.size() > 200) seen_.pop_front();
}

bool Subprocess::FillBuffer(std::chrono::milliseconds timeout) {
  if (out_fd_ < 0) return false;
  pollfd pfd{out_fd_, POLLIN, 0};
  const int n = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (n <= 0) return false;
  char chunk[4096];
  const ssize_t got = ::read(out_fd_, chunk, sizeof chunk);
  if (got <= 0) {
    ::close(out_fd_);
    out_fd_ = -1;
    return false;
  }
  buffer_.append(chunk, static_cast<size_t>(got));
  return true;
}

Result<std::string> Subprocess::ReadLine(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      Remember(line);
      return line;
    }
    if (out_fd_ < 0) {
      if (!buffer_.empty()) {
        std::string line = std::move(buffer_);
        buffer_.clear();
        Remember(line);
        return line;
      }
      return ProcessError("exited", "the process ended" +
                                        (ExitDescription() ? " (" + *ExitDescription() + ")" : std::string()));
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return ProcessError("timeout", "no output line in time");
    FillBuffer(std::min(left, std::chrono::milliseconds(100)));
  }
}

Result<std::string> Subprocess::WaitForLine(std::string_view needle, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto line = ReadLine(std::max(left, std::chrono::milliseconds(0)));
    if (!line.has_value()) return line;
    if (line->find(needle) != std::string::npos) return line;
  }
}

void Subprocess::Drain() {
  while (FillBuffer(std::chrono::milliseconds(0))) {
  }
  std::string::size_type nl;
  while ((nl = buffer_.find('\n')) != std::string::npos) {
    Remember(buffer_.substr(0, nl));
    buffer_.erase(0, nl + 1);
  }
}

bool Subprocess::Signal(int signal) {
  if (ReapNonBlocking()) return false;
  return ::kill(pid_, signal) == 0;
}

bool Subprocess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!ReapNonBlocking()) {
    if (Clock::now() >= deadline) return false;
    // Keep the child's output flowing so it never blocks on a full pipe while exiting.
    if (out_fd_ >= 0) {
      Drain();
      FillBuffer(std::chrono::milliseconds(5));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return true;
}

bool Subprocess::Stop(std::chrono::milliseconds grace) {
  if (ReapNonBlocking()) return true;
  Signal(SIGTERM);
  if (Wait(grace)) return true;
  Kill();
  return false;
}

void Subprocess::Kill() {
  if (ReapNonBlocking()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  if (::waitpid(pid_, &status, 0) == pid_) {
    reaped_ = true;
    status_ = status;
  }
}

}  // namespace keel
