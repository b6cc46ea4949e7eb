// A keel-engine child process for the crash tests: started on a data directory (RocksDB),
// killed with SIGKILL, started again on the same directory — and, when clients or runtimes
// must find it again, on the same port. Its stdout's first line ("listening on HOST:PORT")
// gives the port. KEEL_TEST_ENGINE_LOG=info shows the engine's log when debugging.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace keel::testing {

class EngineProcess {
 public:
  // `port` 0: any free port; otherwise that one (a restart where the last one listened).
  explicit EngineProcess(const std::string& data_dir, int port = 0) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    const std::string port_arg = std::to_string(port);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      const char* level = getenv("KEEL_TEST_ENGINE_LOG");
      execl(KEEL_ENGINE_PATH, KEEL_ENGINE_PATH, "--port", port_arg.c_str(), "--data-dir",
            data_dir.c_str(), "--log-level", level != nullptr ? level : "warn",
            static_cast<char*>(nullptr));
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
  int port() const { return port_; }
  std::string http() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string ws() const { return "ws://127.0.0.1:" + std::to_string(port_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace keel::testing
