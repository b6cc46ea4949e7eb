// A keel-engine child process for the crash tests: started on a data directory (RocksDB) or
// on other storage flags (`--storage postgresql://...`), killed with SIGKILL, started again
// on the same storage — and, when clients or runtimes must find it again, on the same port. Its
// stdout's first line ("listening on HOST:PORT") gives the port; WaitExit waits for one that
// is to stop by itself. KEEL_TEST_ENGINE_LOG=info shows
// the engine's log when debugging.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace keel::testing {

class EngineProcess {
 public:
  // `port` 0: any free port; otherwise that one (a restart where the last one listened).
  explicit EngineProcess(const std::string& data_dir, int port = 0)
      : EngineProcess(std::vector<std::string>{"--data-dir", data_dir}, port) {}
  // `storage_args`: the flags that say where the engine keeps its data.
  EngineProcess(const std::vector<std::string>& storage_args, int port) {
    const char* level = getenv("KEEL_TEST_ENGINE_LOG");
    std::vector<std::string> args = {KEEL_ENGINE_PATH, "--port", std::to_string(port),
                                     "--log-level", level != nullptr ? level : "warn"};
    args.insert(args.end(), storage_args.begin(), storage_args.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      execv(KEEL_ENGINE_PATH, argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    close(out[0]);
    auto colon = line.rfind(':');
    if (line.rfind("listening on ", 0) != 0 || colon == std::string::npos) {
      Kill();
      throw std::runtime_error("keel-engine did not start: '" + line + "'");
    }
    port_ = std::stoi(line.substr(colon + 1));
  }
  ~EngineProcess() { Kill(); }
  EngineProcess(const EngineProcess&) = delete;
  EngineProcess& operator=(const EngineProcess&) = delete;

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Waits (bounded) for the process to end by itself; its exit code, or -1 when it was
  // killed by a signal or still ran after `timeout` (then it is left running).
  int WaitExit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (done < 0 || std::chrono::steady_clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a poll, bounded
    }
    return -1;
  }
  int port() const { return port_; }
  std::string http() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string ws() const { return "ws://127.0.0.1:" + std::to_string(port_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace keel::testing
