#include "cli/dev_command.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/native/subprocess.h"
#include "cli/common.h"
#include "net/client.h"
#include "net/http.h"
#include "value/value.h"

namespace keel::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct DevOptions {
  std::string host = "127.0.0.1";
  int port = 6420;
  std::string data_dir = ".keel/data";
  std::string storage = "rocksdb";
  std::string engine;   // default: keel-engine next to this binary
  std::string runtime;  // default: keel-examples next to this binary
  std::string admin_token;
  std::string log_level;  // for both children when set
  // auto | local | remote: where the example actors' databases run (docs/sqlite.md).
  std::string sqlite_backend = "auto";
  // auto | unix | tcp: how the runtime reaches the engine. auto: the engine's Unix socket
  // for the default runtime (keel-examples), TCP for one given with --runtime (which may
  // not speak http+unix://, as the JavaScript runtime does not).
  std::string runtime_transport = "auto";
  bool quiet = false;
  int startup_timeout_s = 60;
  int stop_timeout_s = 30;
  std::vector<std::string> engine_args;  // after `--`
};

// The directory of the running `keel` binary ("" when unknown).
std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return exe.parent_path().string();
}

std::optional<std::string> FindBinary(const std::string& given, const char* name) {
  std::string path = given;
  if (path.empty()) {
    const std::string dir = SelfDir();
    if (dir.empty()) return std::nullopt;
    path = dir + "/" + name;
  }
  if (::access(path.c_str(), X_OK) != 0) return std::nullopt;
  return path;
}

// SIGINT, SIGTERM and SIGCHLD: blocked, then taken with sigtimedwait so that a child's end
// wakes the wait at once.
sigset_t DevSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  return set;
}

// Waits up to `timeout` for one of DevSignals; returns it, or 0.
int WaitSignal(std::chrono::milliseconds timeout) {
  sigset_t set = DevSignals();
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>((timeout.count() % 1000) * 1000000);
  const int sig = sigtimedwait(&set, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

bool IsStop(int sig) { return sig == SIGINT || sig == SIGTERM; }

// The last `n` captured lines of a child, indented, for error messages.
std::string Tail(Subprocess& p, size_t n = 20) {
  p.Drain();
  const auto& lines = p.lines_seen();
  std::string out;
  const size_t from = lines.size() > n ? lines.size() - n : 0;
  for (size_t i = from; i < lines.size(); ++i) out += "\n  | " + lines[i];
  if (out.empty()) out = "\n  (no output)";
  return out;
}

// The engine and the runtime each lead a process group of their own (Subprocess's
// new_session makes each a session leader, so its pid is also its group's id), and what they
// start themselves — a shell script's `sleep`, a runtime's helpers — is in that group: they
// are signalled as a group, so that nothing outlives `keel dev`. The group is signalled only
// while its leader is not reaped: until then the leader's pid, which is the group id, stays
// ours and cannot name another group. So the leader's end is noticed without reaping it
// (LeaderEnded), the rest of the group is dealt with, and then Subprocess reaps the leader.

// True when the child itself has ended (it may still be a zombie, not reaped).
bool LeaderEnded(const Subprocess& p) {
  siginfo_t info{};
  if (::waitid(P_PID, p.pid(), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;  // reaped
  return info.si_pid == p.pid();
}

// True when the child is reaped (its pid, the group id, may name another group by now).
bool Reaped(const Subprocess& p) {
  siginfo_t info{};
  return ::waitid(P_PID, p.pid(), &info, WEXITED | WNOHANG | WNOWAIT) != 0;
}

void SignalGroup(const Subprocess& p, int signal) {
  if (!Reaped(p)) ::kill(-p.pid(), signal);
}

// Whether processes other than the leader are in `p`'s group (the leader's group id is its
// pid), from /proc/<pid>/stat: "pid (comm) state ppid pgrp ...".
bool OthersInGroup(const Subprocess& p) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (name == std::to_string(p.pid())) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    std::string state;
    pid_t ppid = 0, pgrp = 0;
    if (fields >> state >> ppid >> pgrp && pgrp == p.pid() && state != "Z") return true;
  }
  return false;
}

// SIGKILL to the whole group, then reaps the leader.
void KillChild(Subprocess& p) {
  SignalGroup(p, SIGKILL);
  p.Kill();
}

// SIGTERM to the child's group, then waits up to `grace` (draining its output) for the child
// and the rest of its group to end; a stop signal meanwhile or the end of the grace period
// kills the group. Returns true when it all ended by itself. Also ends what a child that
// already ended left in its group.
bool StopChild(Subprocess& p, std::string_view what, std::chrono::milliseconds grace) {
  if (Reaped(p)) return true;
  SignalGroup(p, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    p.Drain();
    if (LeaderEnded(p) && !OthersInGroup(p)) {
      p.Wait(1s);  // a zombie: reaped at once
      return true;
    }
    if (IsStop(WaitSignal(100ms))) {
      Progress("keel: second signal: killing " + std::string(what));
      KillChild(p);
      return false;
    }
  }
  Progress("keel: " + std::string(what) + " did not stop within " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(grace).count()) +
           " s: killed");
  KillChild(p);
  return false;
}

// A child that ended on its own: one error line (plus its last output) and the exit code.
// What it left running in its group is stopped first (StopChild reaps it).
int ChildDied(Subprocess& p, std::string_view what, std::string_view code,
              std::chrono::milliseconds grace) {
  StopChild(p, what, grace);
  const auto how = p.ExitDescription().value_or("ended");
  return Fail(kExitDevStack, code,
              std::string(what) + " ended unexpectedly (" + how + "); its last output:" + Tail(p));
}

// A private directory (0700, under /tmp: a Unix socket path must stay short) for the
// engine's Unix socket, which the example runtime connects through instead of TCP: no
// TCP stack between the two processes on this host (docs/engine.md, "A Unix socket for
// runtimes on the engine's host"). Removed, with whatever the engine left in it, when dev
// ends. Empty path() when it cannot be made: the runtime then uses TCP.
class PrivateSocketDir {
 public:
  PrivateSocketDir() {
    char tmpl[] = "/tmp/keel-dev-XXXXXX";
    if (::mkdtemp(tmpl) != nullptr) dir_ = tmpl;
  }
  ~PrivateSocketDir() {
    if (dir_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  PrivateSocketDir(const PrivateSocketDir&) = delete;
  PrivateSocketDir& operator=(const PrivateSocketDir&) = delete;

  std::string path() const { return dir_.empty() ? "" : dir_ + "/engine.sock"; }

 private:
  std::string dir_;
};

// "HOST:PORT" (as printed by keel-engine) → the URL a local client reaches it at: the
// wildcard addresses become loopback, IPv6 literals get brackets.
std::string LocalEndpoint(const std::string& address) {
  const auto colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  const std::string port = colon == std::string::npos ? "6420" : address.substr(colon + 1);
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + port;
}

// Envoy keys of pool `default` (namespace `default`) that are connected (no stop_ts);
// nullopt when the engine did not answer with a listing.
std::optional<std::set<std::string>> LiveEnvoys(const std::string& endpoint, const std::string& token) {
  net::HttpRequest req;
  req.method = "GET";
  if (!token.empty()) req.headers.push_back({"authorization", "Bearer " + token});
  auto res = net::FetchSync(endpoint + "/envoys?namespace=default&name=default", std::move(req), 2s);
  if (!res.has_value() || res->status != 200) return std::nullopt;
  auto body = ParseJson(res->body);
  if (!body.has_value()) return std::nullopt;
  const Value* envoys = body->Find("envoys");
  if (envoys == nullptr || !envoys->is_array()) return std::nullopt;
  std::set<std::string> keys;
  for (const Value& e : envoys->as_array()) {
    const Value* key = e.Find("envoy_key");
    const Value* stop = e.Find("stop_ts");
    if (key == nullptr || !key->is_text()) continue;
    if (stop != nullptr && !stop->is_null()) continue;
    keys.insert(key->as_text());
  }
  return keys;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

void PrintHints(const std::string& endpoint, const DevOptions& o) {
  const std::string q =
      "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=room-1";
  const std::string auth = o.admin_token.empty() ? "" : " -H 'authorization: Bearer " + o.admin_token + "'";
  const std::string& keel = InvocationName();
  // The flags go after the command (they belong to it).
  std::string flags;
  if (endpoint != "http://127.0.0.1:6420") flags += " --endpoint " + endpoint;
  if (!o.admin_token.empty()) flags += " --token " + ShellQuote(o.admin_token);
  std::cout << "\nKeel is running: keel-engine at " << endpoint;
  if (o.storage == "memory") {
    std::cout << " (in-memory storage: nothing is kept)";
  } else if (o.storage != "rocksdb") {
    std::cout << " (data in the PostgreSQL database of --storage)";
  } else {
    std::cout << " (data in " << o.data_dir << ")";
  }
  std::cout << "\nwith the example actors counter, chat, scheduler and todos. Try:\n"
            << "  curl -s -XPOST '" << endpoint << "/gateway/counter/action/increment?" << q
            << "' -H 'content-type: application/json'" << auth << " -d '{\"args\":[5]}'\n"
            << "  " << keel << " call counter/room-1 increment 5" << flags << "\n"
            << "  " << keel << " watch counter/room-1 newCount" << flags << "\n"
            << "  " << keel << " actors list counter" << flags << "\n"
            << "  " << keel << " call todos/home add 'buy milk'" << flags
            << "   # SQLite, "
            << (!o.runtime.empty() ? "where the runtime puts it (`call todos/home backend`)"
                : o.sqlite_backend == "remote" ? "in the engine" : "local-native")
            << "\n"
            << "Ctrl-C stops the runtime (its actors stop and save), then the engine.\n"
            << std::endl;
}

int RunDev(const DevOptions& o) {
  // Before anything else (and before any thread): the stop signals and SIGCHLD are taken
  // synchronously below. Children start with an empty mask (Subprocess).
  sigset_t set = DevSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto engine_path = FindBinary(o.engine, "keel-engine");
  if (!engine_path) {
    return Fail(kExitUsage, "dev.engine_not_found",
                (o.engine.empty() ? "no keel-engine next to " + SelfDir() : o.engine + " is not executable") +
                    " (build the keel-engine target, or pass --engine PATH)");
  }
  auto runtime_path = FindBinary(o.runtime, "keel-examples");
  if (!runtime_path) {
    return Fail(kExitUsage, "dev.runtime_not_found",
                (o.runtime.empty() ? "no keel-examples next to " + SelfDir() : o.runtime + " is not executable") +
                    " (build the keel-examples target, or pass --runtime PATH)");
  }

  // ---- keel-engine ----
  // The socket the runtime connects through ("" = TCP): ours in a private directory, or
  // one the user gave the engine after `--`.
  const bool runtime_unix =
      o.runtime_transport == "unix" || (o.runtime_transport == "auto" && o.runtime.empty());
  std::optional<PrivateSocketDir> socket_dir;
  std::string socket_path;
  for (size_t i = 0; i + 1 < o.engine_args.size(); ++i) {
    if (o.engine_args[i] == "--unix-socket") socket_path = o.engine_args[i + 1];
  }
  const bool own_socket = runtime_unix && socket_path.empty();
  if (own_socket) socket_path = socket_dir.emplace().path();
  if (!runtime_unix) socket_path.clear();
  Subprocess::Options eo;
  eo.path = *engine_path;
  eo.args = {"--host", o.host, "--port", std::to_string(o.port), "--storage", o.storage};
  if (own_socket && !socket_path.empty())
    eo.args.insert(eo.args.end(), {"--unix-socket", socket_path});
  if (o.storage == "rocksdb") {
    eo.args.insert(eo.args.end(), {"--data-dir", o.data_dir});
  }
  if (!o.admin_token.empty()) eo.args.insert(eo.args.end(), {"--admin-token", o.admin_token});
  if (!o.log_level.empty()) eo.args.insert(eo.args.end(), {"--log-level", o.log_level});
  eo.args.insert(eo.args.end(), o.engine_args.begin(), o.engine_args.end());
  eo.capture_stdout = eo.capture_stderr = true;
  eo.echo = !o.quiet;
  eo.echo_prefix = "[engine] ";
  eo.new_session = true;
  Progress("==> starting keel-engine (" + *engine_path + ")");
  auto engine_or = Subprocess::Start(std::move(eo));
  if (!engine_or.has_value()) {
    return Fail(kExitDevStack, "dev.engine_failed", engine_or.error().ToString());
  }
  std::unique_ptr<Subprocess> engine = std::move(*engine_or);

  const auto startup = std::chrono::seconds(o.startup_timeout_s);
  std::string address;
  {
    const auto deadline = Clock::now() + startup;
    while (address.empty()) {
      if (IsStop(WaitSignal(0ms))) {
        StopChild(*engine, "keel-engine", std::chrono::seconds(o.stop_timeout_s));
        return kExitOk;
      }
      if (Clock::now() >= deadline) {
        KillChild(*engine);
        return Fail(kExitDevStack, "dev.engine_timeout",
                    "keel-engine printed no `listening on` line within " +
                        std::to_string(o.startup_timeout_s) + " s; its last output:" + Tail(*engine));
      }
      auto line = engine->ReadLine(200ms);
      if (line.has_value()) {
        constexpr std::string_view kNeedle = "listening on ";
        if (line->rfind(kNeedle, 0) == 0) address = line->substr(kNeedle.size());
      } else if (line.error().code() == "exited" || LeaderEnded(*engine)) {
        StopChild(*engine, "keel-engine", std::chrono::seconds(o.stop_timeout_s));
        return Fail(kExitDevStack, "dev.engine_failed",
                    "keel-engine " + engine->ExitDescription().value_or("ended") +
                        " before listening; its last output:" + Tail(*engine));
      }
    }
  }
  std::cout << "listening on " << address << std::endl;
  const std::string endpoint = LocalEndpoint(address);
  std::string token = o.admin_token;
  if (token.empty()) {
    // A token given through the passthrough arguments also goes to the runtime.
    for (size_t i = 0; i + 1 < o.engine_args.size(); ++i) {
      if (o.engine_args[i] == "--admin-token") token = o.engine_args[i + 1];
    }
  }

  // Envoys already listed (a previous run's, not yet noticed as gone) do not count.
  auto before = LiveEnvoys(endpoint, token).value_or(std::set<std::string>{});

  // ---- the runtime ----
  Subprocess::Options ro;
  ro.path = *runtime_path;
  // The runtime reaches the engine over its Unix socket; clients (and the hints) use TCP.
  const std::string runtime_endpoint =
      socket_path.empty() ? endpoint : "http+unix://" + net::UnixUrlAuthority(socket_path);
  ro.env = {{"KEEL_ENDPOINT", runtime_endpoint},
            {"KEEL_TOKEN", token},
            {"KEEL_NAMESPACE", "default"},
            {"KEEL_POOL", "default"},
            {"KEEL_SQLITE_BACKEND", o.sqlite_backend}};
  if (!o.log_level.empty()) ro.args = {"--log-level", o.log_level};
  ro.capture_stdout = ro.capture_stderr = true;
  ro.echo = !o.quiet;
  ro.echo_prefix = "[runtime] ";
  ro.new_session = true;
  // Only keel-examples is known to host the examples; another runtime hosts what it hosts.
  Progress(o.runtime.empty()
               ? "==> starting the example runtime (" + *runtime_path +
                     ": counter, chat, scheduler, todos; SQLite " + o.sqlite_backend + ")"
               : "==> starting the runtime (" + *runtime_path + ")");
  auto runtime_or = Subprocess::Start(std::move(ro));
  if (!runtime_or.has_value()) {
    StopChild(*engine, "keel-engine", std::chrono::seconds(o.stop_timeout_s));
    return Fail(kExitDevStack, "dev.runtime_failed", runtime_or.error().ToString());
  }
  std::unique_ptr<Subprocess> runtime = std::move(*runtime_or);

  // Stops both in order; `code` is returned.
  auto shutdown = [&](int code) {
    Progress("==> stopping the runtime (its actors stop and save)");
    const bool runtime_clean = StopChild(*runtime, "the runtime", std::chrono::seconds(o.stop_timeout_s));
    Progress("==> stopping keel-engine");
    const bool engine_clean = StopChild(*engine, "keel-engine", std::chrono::seconds(o.stop_timeout_s));
    if (code == kExitOk && runtime_clean && engine_clean) Progress("==> stopped");
    return code;
  };
  auto runtime_died = [&] {
    const int code = ChildDied(*runtime, "the runtime", "dev.runtime_exited",
                               std::chrono::seconds(o.stop_timeout_s));
    Progress("==> stopping keel-engine");
    StopChild(*engine, "keel-engine", std::chrono::seconds(o.stop_timeout_s));
    return code;
  };
  auto engine_died = [&] {
    const int code = ChildDied(*engine, "keel-engine", "dev.engine_exited",
                               std::chrono::seconds(o.stop_timeout_s));
    Progress("==> stopping the runtime");
    StopChild(*runtime, "the runtime", std::chrono::seconds(o.stop_timeout_s));
    return code;
  };

  {
    Progress("==> waiting for the runtime to connect");
    const auto start = Clock::now();
    auto next_note = start + 3s;
    while (true) {
      engine->Drain();
      runtime->Drain();
      if (LeaderEnded(*engine)) return engine_died();
      if (LeaderEnded(*runtime)) return runtime_died();
      auto live = LiveEnvoys(endpoint, token);
      bool connected = false;
      if (live) {
        for (const auto& key : *live) connected = connected || before.count(key) == 0;
      }
      if (connected) break;
      const auto now = Clock::now();
      if (now - start >= startup) {
        Fail(kExitDevStack, "dev.runtime_timeout",
             "the runtime did not connect within " + std::to_string(o.startup_timeout_s) +
                 " s; its last output:" + Tail(*runtime));
        return shutdown(kExitDevStack);
      }
      if (now >= next_note) {
        Progress("    still waiting (" +
                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - start).count()) + " s)");
        next_note = now + 3s;
      }
      if (IsStop(WaitSignal(200ms))) return shutdown(kExitOk);
    }
  }
  PrintHints(endpoint, o);

  // ---- foreground ----
  while (true) {
    const int sig = WaitSignal(250ms);
    engine->Drain();
    runtime->Drain();
    if (IsStop(sig)) return shutdown(kExitOk);
    if (LeaderEnded(*runtime)) return runtime_died();
    if (LeaderEnded(*engine)) return engine_died();
  }
}

}  // namespace

void AddDevCommand(CLI::App& app) {
  auto o = std::make_shared<DevOptions>();
  auto* dev = app.add_subcommand(
      "dev",
      "Run keel-engine (RocksDB in .keel/data) and a runtime hosting the example actors in the "
      "foreground; Ctrl-C stops the runtime, then the engine");
  dev->add_option("--host", o->host, "Address keel-engine listens on")->capture_default_str();
  dev->add_option("--port", o->port, "TCP port of keel-engine, 0 picks a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  dev->add_option("--data-dir", o->data_dir, "Directory of the engine's RocksDB data")
      ->envname("KEEL_DATA_DIR")
      ->capture_default_str();
  dev->add_option("--storage", o->storage,
                  "rocksdb (kept in --data-dir), memory (nothing kept), or the "
                  "postgresql://... URL of a PostgreSQL database")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            if (v == "rocksdb" || v == "memory" || v.starts_with("postgres://") ||
                v.starts_with("postgresql://")) {
              return "";
            }
            std::string message = "must be rocksdb, memory or a postgresql://... URL";
            // Repeated only when it cannot be a mistyped database URL, which may hold a
            // password.
            if (v.find_first_of(":@/=") == std::string::npos) message += ", got '" + v + "'";
            return message;
          },
          "STORAGE"))
      ->capture_default_str();
  dev->add_option("--admin-token", o->admin_token,
                  "Admin token for keel-engine (also given to the runtime)");
  dev->add_option("--log-level", o->log_level, "Log level of the engine and the runtime (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  dev->add_option("--sqlite-backend", o->sqlite_backend,
                  "Where actor databases run: auto (local-native), local, or remote (in the engine)")
      ->envname("KEEL_SQLITE_BACKEND")
      ->check(CLI::IsMember({"auto", "local", "remote"}))
      ->capture_default_str();
  dev->add_option("--runtime-transport", o->runtime_transport,
                  "How the runtime reaches the engine: auto (a Unix socket for the default "
                  "runtime, TCP for --runtime), unix, or tcp")
      ->check(CLI::IsMember({"auto", "unix", "tcp"}))
      ->capture_default_str();
  dev->add_option("--engine", o->engine, "keel-engine binary (default: next to keel)");
  dev->add_option("--runtime", o->runtime,
                  "Runtime binary hosting the actors (default: keel-examples next to keel)");
  dev->add_flag("-q,--quiet", o->quiet, "Do not copy the engine's and runtime's logs to stderr");
  dev->add_option("--startup-timeout", o->startup_timeout_s,
                  "Seconds to wait for the engine to listen and the runtime to connect")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  dev->add_option("--stop-timeout", o->stop_timeout_s,
                  "Seconds each process gets to stop gracefully before it is killed")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  AddVerbatimArgs(
      *dev, "ENGINE_ARGS", o->engine_args,
      "More keel-engine flags, after `--`, each passed as written (e.g. -- --threads 4)");
  dev->callback([o] {
    const int rc = RunDev(*o);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace keel::cli
