// PostgresCluster: a throwaway PostgreSQL cluster for tests (docs: toolchain.md Appendix D).
//
//   auto cluster = PostgresCluster::Start();   // initdb + pg_ctl start, about 1 s
//   auto store = PostgresKvStore::Open((*cluster)->conninfo());
//
// The cluster lives in a fresh directory under the system temp dir and listens only on a
// unix socket there (no TCP port, so parallel test processes never collide). Server
// binaries come from `pg_config --bindir` (Debian keeps them off PATH), else
// /usr/lib/postgresql/15/bin. As root (CI), the directory belongs to `postgres` and the
// tools run through `runuser -u postgres --`: initdb refuses to run as root.
// fsync stays on (CrashAndRestart must lose exactly what was not flushed). The WAL writer
// sleeps 10 s and the background writer writes no pages, so a commit made with
// synchronous_commit = off stays in the server's memory until something flushes the WAL:
// a durability test then fails when the flush it relies on is missing.
// Clean-up: the destructor stops the server and removes the directory; should the test
// process die first (a crash, a ctest timeout's SIGKILL), a watchdog shell it started, in
// a session of its own, sees the end of its pipe and does the same.
// Thread-safety: one thread at a time; conninfo() and uri() from any.
#pragma once

#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/result.h"

extern char** environ;

namespace keel::testing {

class PostgresCluster {
 public:
  // Errors: group "test", code "postgres", with the end of the failing tool's log.
  static Result<std::unique_ptr<PostgresCluster>> Start() {
    std::unique_ptr<PostgresCluster> cluster(new PostgresCluster());
    KEEL_RETURN_IF_ERROR(cluster->Init());
    return cluster;
  }

  ~PostgresCluster() {
    if (running_) {
      if (!Stop("fast").has_value()) (void)Stop("immediate");
    }
    if (watchdog_fd_ >= 0) {
      // A line tells the watchdog to leave without touching anything.
      (void)!::write(watchdog_fd_, "\n", 1);
      ::close(watchdog_fd_);
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // libpq keyword form: "host=DIR port=5432 user=postgres dbname=postgres".
  std::string conninfo(std::string_view dbname = "postgres") const {
    return "host=" + dir_ + " port=5432 user=postgres dbname=" + std::string(dbname);
  }
  // URI form: "postgresql:///postgres?host=DIR&port=5432&user=postgres".
  std::string uri(std::string_view dbname = "postgres") const {
    return "postgresql:///" + std::string(dbname) + "?host=" + dir_ + "&port=5432&user=postgres";
  }
  const std::string& dir() const { return dir_; }

  // Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, WAL not
  // yet flushed is lost), then starts it again (it recovers from the WAL).
  Status CrashAndRestart() {
    KEEL_RETURN_IF_ERROR(Stop("immediate"));
    return StartServer();
  }
  // A clean stop (`-m fast`) and start.
  Status Restart() {
    KEEL_RETURN_IF_ERROR(Stop("fast"));
    return StartServer();
  }

 private:
  PostgresCluster() = default;

  static Error Failure(std::string message) {
    return Error("test", "postgres", std::move(message));
  }

  // The last `bytes` of a log file, for error messages.
  static std::string Tail(const std::string& path, size_t bytes = 2000) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream all;
    all << in.rdbuf();
    std::string text = all.str();
    if (text.size() > bytes) text = "..." + text.substr(text.size() - bytes);
    return text;
  }

  // Runs argv (no PATH search unless `search_path`) with stdin from /dev/null and stdout and
  // stderr appended to `log`; returns its exit status (-1: it could not run or died by a
  // signal).
  static int Run(const std::vector<std::string>& argv, const std::string& log,
                 bool search_path = false) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = -1;
    int rc = search_path ? posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ)
                         : posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // argv for a server tool: `bindir/tool args...`, through runuser as root.
  std::vector<std::string> Tool(const std::string& tool, std::vector<std::string> args) const {
    std::vector<std::string> argv;
    if (!runuser_.empty()) argv = {runuser_, "-u", "postgres", "--"};
    argv.push_back(bindir_ + "/" + tool);
    for (std::string& a : args) argv.push_back(std::move(a));
    return argv;
  }

  Status RunTool(const std::string& tool, std::vector<std::string> args, const std::string& log,
                 std::string_view what) const {
    int status = Run(Tool(tool, std::move(args)), log);
    if (status == 0) return OkStatus();
    return Failure(std::string(what) + " failed (status " + std::to_string(status) +
                   "): " + Tail(log));
  }

  static std::optional<std::string> FindRunuser() {
    for (const char* path : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
      if (::access(path, X_OK) == 0) return path;
    }
    return std::nullopt;
  }

  Status Init() {
    std::string pattern = (std::filesystem::temp_directory_path() / "keel-pg-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Failure("mkdtemp " + pattern + ": " + std::strerror(errno));
    }
    dir_ = pattern;

    // The server binaries: pg_config knows where the installed server lives.
    std::string bindir_log = dir_ + "/pg_config.out";
    if (Run({"pg_config", "--bindir"}, bindir_log, /*search_path=*/true) == 0) {
      std::string out = Tail(bindir_log);
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      if (::access((out + "/initdb").c_str(), X_OK) == 0) bindir_ = out;
    }
    if (bindir_.empty()) bindir_ = "/usr/lib/postgresql/15/bin";
    if (::access((bindir_ + "/initdb").c_str(), X_OK) != 0) {
      return Failure("no PostgreSQL server binaries (pg_config --bindir, " + bindir_ +
                     "); install postgresql-15");
    }

    if (::geteuid() == 0) {
      std::optional<std::string> runuser = FindRunuser();
      struct passwd* pw = ::getpwnam("postgres");
      if (!runuser || pw == nullptr) {
        return Failure("running as root needs runuser and a `postgres` user");
      }
      runuser_ = *runuser;
      if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return Failure("chown " + dir_ + ": " + std::strerror(errno));
      }
    }
    KEEL_RETURN_IF_ERROR(StartWatchdog());
    KEEL_RETURN_IF_ERROR(RunTool("initdb",
                                 {"-D", dir_ + "/data", "-A", "trust", "-U", "postgres",
                                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"},
                                 dir_ + "/initdb.log", "initdb"));
    return StartServer();
  }

  Status StartServer() {
    // The options go through a shell in pg_ctl: quoted.
    std::string options = "-c listen_addresses='' -k '" + dir_ +
                          "' -c wal_writer_delay=10s -c bgwriter_lru_maxpages=0";
    Status started = RunTool("pg_ctl",
                             {"-D", dir_ + "/data", "-l", dir_ + "/server.log", "-w", "-t", "60",
                              "-o", options, "start"},
                             dir_ + "/pg_ctl.log", "pg_ctl start");
    if (!started.has_value()) {
      return Failure(started.error().message() + "; server log: " + Tail(dir_ + "/server.log"));
    }
    running_ = true;
    return OkStatus();
  }

  Status Stop(const char* mode) {
    running_ = false;
    return RunTool("pg_ctl", {"-D", dir_ + "/data", "-m", mode, "-w", "-t", "60", "stop"},
                   dir_ + "/pg_ctl.log", std::string("pg_ctl stop -m ") + mode);
  }

  // A shell, in a session of its own and detached from this process (so a process-group
  // kill or ctest's kill of this process's children misses it), that waits on a pipe this
  // process holds. A line on the pipe: all is cleaned up, it exits. End of file (this
  // process died without cleaning up): it stops the server and removes the directory.
  Status StartWatchdog() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return Failure(std::string("pipe: ") + std::strerror(errno));
    static constexpr const char* kScript =
        "exec 3<&0\n"
        "( trap '' HUP INT TERM\n"
        "  if read -r _ <&3; then exit 0; fi\n"
        "  if [ -n \"$4\" ]; then \"$4\" -u postgres -- \"$1\" -D \"$2\" -m immediate -w stop\n"
        "  else \"$1\" -D \"$2\" -m immediate -w stop; fi\n"
        "  rm -rf \"$3\" ) >/dev/null 2>&1 3<&3 &\n";
    std::vector<std::string> argv = {
        "/bin/sh",           "-c",           kScript, "keel-pg-watchdog",
        bindir_ + "/pg_ctl", dir_ + "/data", dir_,    runuser_};
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(fds[0]);
    if (rc != 0) {
      ::close(fds[1]);
      return Failure(std::string("starting the watchdog shell: ") + std::strerror(rc));
    }
    // The outer shell exits at once, leaving the watchdog to init.
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    watchdog_fd_ = fds[1];
    return OkStatus();
  }

  std::string dir_;
  std::string bindir_;
  std::string runuser_;  // empty: not root, tools run as this user
  bool running_ = false;
  int watchdog_fd_ = -1;  // write end of the watchdog's pipe
};

}  // namespace keel::testing
