// Subprocess: one child process started by Keel's tools (the `keel dev` stack, tests,
// benchmarks), with its output readable line by line and a clean, bounded stop.
//
//   auto engine = Subprocess::Start({.path = engine_bin, .args = {"--port", "0"},
//                                    .capture_stderr = true});
//   auto line = engine->WaitForLine("listening on ", 10s);     // "listening on 127.0.0.1:..."
//   engine->Stop(5s);   // SIGTERM, then SIGKILL after 5 s; reaped
//
// Only the process this object started is ever signalled, by its pid, and only while it
// is not yet reaped (so a recycled pid is never hit). The destructor stops a child that
// still runs. Options::new_session puts the child in its own session so a terminal's
// Ctrl-C reaches only the parent, which then stops children in its own order.
// Thread-safety: one thread at a time per object (reads of pid() are safe from any).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace keel {

class Subprocess {
 public:
  struct Options {
    std::string path;                // executable (no PATH search)
    std::vector<std::string> args;   // argv[1..]
    // Added to (or replacing, by name) this process's environment.
    std::vector<std::pair<std::string, std::string>> env;
    bool capture_stdout = false;  // else inherited
    bool capture_stderr = false;  // else inherited
    // Captured lines are also copied to this process's stderr, each prefixed (e.g.
    // "[engine] "), when non-empty.
    std::string echo_prefix;
    bool echo = false;
    bool new_session = false;
  };

  // Errors: process.spawn_failed (missing executable, no permission, ...).
  static Result<std::unique_ptr<Subprocess>> Start(Options options);

  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();  // false once the child ended (then it is reaped)
  // How it ended: "exited with status N" / "killed by signal N"; nullopt while running.
  std::optional<std::string> ExitDescription();
  std::optional<int> exit_code();  // exit status, or 128+signal

  // The next captured line (stdout and stderr interleaved as they arrive, without the
  // newline). Errors: process.timeout; process.exited when the child ended and every line
  // was read.
  Result<std::string> ReadLine(std::chrono::milliseconds timeout);
  // Reads lines until one contains `needle`; returns that line. Lines read on the way
  // are kept in lines_seen() for error messages. Errors as ReadLine.
  Result<std::string> WaitForLine(std::string_view needle, std::chrono::milliseconds timeout);
  const std::deque<std::string>& lines_seen() const { return seen_; }
  // Reads whatever output is available now without blocking (keeps the pipes drained
  // for long-running children); lines go to lines_seen() (last 200 kept).
  void Drain();

  // Sends `signal` if the child still runs. Returns false when it had already ended.
  bool Signal(int signal);
  // Waits up to `timeout` for the child to end; true when it did (reaped).
  bool Wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait `grace`, then SIGKILL and reap. Returns true when SIGTERM sufficed.
  bool Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // SIGKILL and reap.
  void Kill();

 private:
  Subprocess() = default;
  bool ReapNonBlocking();
  bool FillBuffer(std::chrono::milliseconds timeout);  // false on timeout / EOF
  void Remember(std::string line);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  int out_fd_ = -1;  // read end of the captured output pipe
  bool echo_ = false;
  std::string echo_prefix_;
  std::string buffer_;
  std::deque<std::string> seen_;
};

}  // namespace keel
