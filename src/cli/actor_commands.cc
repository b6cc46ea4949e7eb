#include "cli/actor_commands.h"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "client/client.h"
#include "net/http.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::cli {
namespace {

using namespace std::chrono_literals;
using client::ActorKey;
using client::ClientError;
using client::ClientResult;

// Flags every actor command takes.
struct ClientFlags {
  std::string endpoint = "http://127.0.0.1:6420";
  std::string token;
  std::string namespace_name = "default";
  std::string pool = "default";
  std::string encoding = "bare";
  int timeout_s = 30;
  bool json = false;
  CLI::Option* timeout_option = nullptr;  // count() > 0 when --timeout was given
};

// Why `endpoint` cannot be the engine's URL, in the user's terms ("" when it can be). The
// client only says "must be an http:// URL", also for an http:// URL whose port is out of
// range or that carries credentials; the text given is quoted as written.
std::string EndpointProblem(const std::string& endpoint) {
  const auto scheme_end = endpoint.find("://");
  std::string scheme = scheme_end == std::string::npos ? "" : endpoint.substr(0, scheme_end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme == "https") {
    return "https:// is not supported: keel speaks plain http:// to keel-engine";
  }
  // http+unix:// (the engine's Unix socket) is what the client accepts besides http://.
  if (scheme != "http" && scheme != "http+unix") {
    return "must be an http:// URL, like http://127.0.0.1:6420";
  }
  if (scheme == "http") {
    const std::string rest = endpoint.substr(scheme_end + 3);
    const std::string authority = rest.substr(0, rest.find_first_of("/?#"));
    if (authority.find('@') != std::string::npos) {
      return "credentials in the URL (user:password@) are not supported; give a token with "
             "--token";
    }
    std::string host = authority;
    std::string port;
    if (!authority.empty() && authority.front() == '[') {
      const auto close = authority.find(']');
      if (close != std::string::npos && close + 1 < authority.size() &&
          authority[close + 1] == ':') {
        port = authority.substr(close + 2);
        host = authority.substr(0, close + 1);
      }
    } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
      port = authority.substr(colon + 1);
      host = authority.substr(0, colon);
    }
    if (host.empty() || host == "[]") return "no host (expected http://HOST[:PORT])";
    if (port.find_first_not_of("0123456789") != std::string::npos) {
      return "port '" + port + "' is not a number";
    }
    if (!port.empty() && (port.size() > 5 || std::stoi(port) < 1 || std::stoi(port) > 65535)) {
      return "port " + port + " is out of range (1-65535)";
    }
  }
  std::string trimmed = endpoint;
  while (!trimmed.empty() && trimmed.back() == '/') trimmed.pop_back();
  auto url = net::ParseUrl(trimmed);
  if (!url.has_value()) return url.error().message();
  return "";
}

// Which of the optional flags a command takes: --pool only where actors are created, and
// --encoding only where the client protocol is spoken (REST requests are always JSON).
enum FlagSet : unsigned { kBaseFlags = 0, kPoolFlag = 1, kEncodingFlag = 2 };

void AddClientFlags(CLI::App* cmd, ClientFlags& f, unsigned extra) {
  cmd->add_option("--endpoint", f.endpoint, "keel-engine's URL (http:// only)")
      ->envname("KEEL_ENDPOINT")
      ->check(CLI::Validator(
          [](std::string& url) {
            const std::string problem = EndpointProblem(url);
            return problem.empty() ? problem : "'" + url + "': " + problem;
          },
          "URL"))
      ->capture_default_str();
  cmd->add_option("--token", f.token, "Bearer token for the engine")->envname("KEEL_TOKEN");
  cmd->add_option("--namespace", f.namespace_name, "Namespace")
      ->envname("KEEL_NAMESPACE")
      ->capture_default_str();
  if ((extra & kPoolFlag) != 0) {
    cmd->add_option("--pool", f.pool, "Pool new actors are placed in")
        ->envname("KEEL_POOL")
        ->capture_default_str();
  }
  if ((extra & kEncodingFlag) != 0) {
    cmd->add_option("--encoding", f.encoding, "Client protocol encoding: json, cbor or bare")
        ->check(CLI::IsMember({"json", "cbor", "bare"}))
        ->capture_default_str();
  }
  f.timeout_option =
      cmd->add_option("--timeout", f.timeout_s, "Seconds each request (and connecting) may take")
          ->check(CLI::Range(1, 86400))
          ->capture_default_str();
  cmd->add_flag("--json", f.json, "Machine-readable output: JSON documents on stdout");
}

client::ClientOptions ToOptions(const ClientFlags& f) {
  client::ClientOptions o;
  o.endpoint = f.endpoint;
  while (!o.endpoint.empty() && o.endpoint.back() == '/') o.endpoint.pop_back();
  o.token = f.token;
  o.namespace_name = f.namespace_name;
  o.pool = f.pool;
  o.encoding = wire::ParseEncoding(f.encoding).value_or(wire::Encoding::kBare);
  o.request_timeout = std::chrono::seconds(f.timeout_s);
  return o;
}

// The exit code for a client error: client-side transport failures are 3, bad arguments
// 2, everything the actor or the engine answered with 1.
int ExitCodeFor(const ClientError& e) {
  if (e.group != "client") return kExitError;
  if (e.code == "invalid_argument") return kExitUsage;
  if (e.code == "retries_exhausted" || e.code == "get_params_failed") return kExitError;
  return kExitTransport;  // connect_failed, timeout, connection_lost, bad_response, closed
}

// `text` on one line: every run of whitespace that holds a line break or a tab becomes one
// space, and the ends are trimmed. When `max` > 0, at most `max` bytes are kept (never
// splitting a UTF-8 sequence), followed by "…".
std::string OneLine(std::string_view text, size_t max = 0) {
  std::string out;
  bool gap = false;
  for (char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || (gap && c == ' ')) {
      gap = true;
      continue;
    }
    if (gap && !out.empty()) out += ' ';
    gap = false;
    out += c;
  }
  if (max > 0 && out.size() > max) {
    size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "…";
  }
  return out;
}

// True when `e` came as a WebSocket close reason only: the error's id (`group.code`, with
// `#ray` when the engine sent it), which the client also uses as the message.
bool OnlyCloseReason(const ClientError& e) {
  const std::string id = e.Id();
  const std::string_view m = e.message;
  return m.empty() || m == id || (m.starts_with(id) && m[id.size()] == '#');
}

// The message to print for `e`, always one line. A connection the engine or the actor closed
// with an error carries only the error's id: say what it means instead of repeating the id.
// A response that is not Keel's (a proxy's or another server's page) shows its status and
// the start of its body.
std::string MessageOf(const ClientError& e) {
  const std::string id = e.Id();
  const std::string_view m = e.message;
  if (OnlyCloseReason(e)) {
    std::string text;
    if (e.Is("actor", "destroyed")) {
      text = "the actor was destroyed";
    } else if (e.Is("actor", "stopped")) {
      text = "the actor stopped";
    } else if (e.Is("actor", "not_found")) {
      text = "the actor does not exist";
    } else if (e.group == "guard") {
      text = "the engine could not reach the actor";
    } else {
      text = "the connection was closed with this error";
    }
    if (m.size() > id.size() + 1) text += " (ray " + std::string(m.substr(id.size() + 1)) + ")";
    return text;
  }
  if (e.Is("client", "bad_response")) {
    // "HTTP <status>: <the body's first 200 bytes>" (the client's form).
    const auto colon = m.starts_with("HTTP ") ? m.find(": ") : std::string_view::npos;
    if (colon != std::string_view::npos) {
      return std::string(m.substr(0, colon)) + ": " + OneLine(m.substr(colon + 2), 120);
    }
  }
  return OneLine(m);
}

// Reports `e`: the one-line error on stderr, and with --json also an error document on
// stdout ({"error": {group, code, message, metadata?}}, the message as the client got it).
// `detail` (starting with "; ") is appended to the printed message.
int Report(const ClientError& e, const ClientFlags& f, const std::string& detail = "") {
  if (f.json) {
    Value err = Value::Object({{"group", e.group}, {"code", e.code}, {"message", e.message}});
    if (e.metadata) err.Set("metadata", *e.metadata);
    std::cout << ToJson(Value::Object({{"error", err}})) << std::endl;
  }
  return Fail(ExitCodeFor(e), e.Id(), MessageOf(e) + detail);
}

// Prints a line on stderr when the operation it guards takes longer than `after` (an
// actor waiting for a runtime, an engine that does not answer); silent otherwise. The line
// is made only then (`line` may ask the engine what is going on) and printed unless the
// operation finished meanwhile.
class SlowNotice {
 public:
  explicit SlowNotice(std::string line, std::chrono::milliseconds after = 2s)
      : SlowNotice([line = std::move(line)] { return line; }, after) {}
  explicit SlowNotice(std::function<std::string()> line, std::chrono::milliseconds after = 2s)
      : thread_([this, line = std::move(line), after] {
          {
            std::unique_lock<std::mutex> lock(mu_);
            if (cv_.wait_for(lock, after, [this] { return done_; })) return;
          }
          std::string text = line();
          std::lock_guard<std::mutex> lock(mu_);
          if (!done_) Progress(text);
        }) {}
  ~SlowNotice() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  SlowNotice(const SlowNotice&) = delete;
  SlowNotice& operator=(const SlowNotice&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts after the members it uses
};

// `detail` (ending in "; ") says what the engine knows of an existing actor.
std::string WaitingFor(const std::string& what, const std::string& pool, const ClientFlags& f,
                       const std::string& detail = "") {
  return "waiting for " + what + " (" + detail + "it starts once a runtime of pool `" + pool +
         "` is connected; --timeout " + std::to_string(f.timeout_s) + " s per request)";
}
std::string WaitingFor(const std::string& what, const ClientFlags& f) {
  return WaitingFor(what, f.pool, f);
}

// A command-line value: JSON when it parses, else the text itself. Text that is JSON but
// does not decode as a value (a `$` escape that is not one, such as a $BigInt outside 64
// bits) is an error naming `what`: the user wrote a value, not text to send as it is.
std::optional<Value> ParseArgument(std::string_view what, const std::string& text,
                                   std::string& error) {
  auto parsed = ParseJson(text);
  if (parsed.has_value()) return std::move(*parsed);
  if (nlohmann::json::accept(text)) {
    error =
        std::string(what) + " is JSON but not a value Keel can send: " + parsed.error().message();
    return std::nullopt;
  }
  return Value(text);
}

struct Target {
  std::string name;
  ActorKey key;
};

// `NAME` or `NAME/KEY` (everything after the first '/' is one component), or NAME with
// `--key` components. Errors are usage errors.
std::optional<Target> ParseTarget(const std::string& text, const std::vector<std::string>& key_flag,
                                  bool key_given, std::string& error) {
  Target t;
  const auto slash = text.find('/');
  t.name = text.substr(0, slash);
  if (t.name.empty()) {
    error = "the actor name is empty in '" + text + "' (expected NAME or NAME/KEY)";
    return std::nullopt;
  }
  if (slash != std::string::npos) {
    if (key_given) {
      error = "give the key either as NAME/KEY or with --key, not both";
      return std::nullopt;
    }
    t.key = {text.substr(slash + 1)};
  } else if (key_given) {
    t.key = key_flag;
  }
  return t;
}

std::string KeyText(const ActorKey& key) {
  if (key.empty()) return "(empty key)";
  std::string out;
  for (size_t i = 0; i < key.size(); ++i) out += (i ? "," : "") + key[i];
  return out;
}

std::string FormatTime(int64_t ms) {
  const time_t secs = static_cast<time_t>(ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

std::string StateOf(const client::ActorInfo& a) {
  if (a.destroy_ts) return "destroyed";
  if (a.sleep_ts) return "sleeping";
  if (a.connectable_ts) return "running";
  if (a.error) return "error";
  return "starting";
}

// The serialised key as the engine sent it ("-" when the actor has none).
std::string RecordKey(const client::ActorInfo& a) {
  auto record = ParseJson(a.json);
  if (record.has_value()) {
    const Value* key = record->Find("key");
    if (key != nullptr && key->is_text()) return key->as_text();
  }
  return a.key ? KeyText(*a.key) : "-";
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
  std::cout.flush();
}

// ---- keel actors ----

struct ActorsOptions {
  ClientFlags flags;
  std::string target;
  std::vector<std::string> key;
  bool include_destroyed = false;
  std::string input;
  std::string id;
  CLI::Option* key_option = nullptr;
  CLI::Option* input_option = nullptr;
};

int RunList(ActorsOptions& o) {
  std::string error;
  auto target = ParseTarget(o.target, o.key, o.key_option->count() > 0, error);
  if (!target) return Fail(kExitUsage, "cli.usage", error);
  client::Client c(ToOptions(o.flags));
  const bool by_key = o.key_option->count() > 0 || o.target.find('/') != std::string::npos;
  auto actors = c.ListActors(target->name, by_key ? std::optional<ActorKey>(target->key) : std::nullopt,
                             o.include_destroyed);
  if (!actors.has_value()) return Report(actors.error(), o.flags);
  if (o.flags.json) {
    std::string out = "{\"actors\":[";
    for (size_t i = 0; i < actors->size(); ++i) out += (i ? "," : "") + (*actors)[i].json;
    std::cout << out << "]}" << std::endl;
    return kExitOk;
  }
  if (actors->empty()) {
    Progress("no " + target->name + " actors" + (by_key ? " with key " + KeyText(target->key) : ""));
    return kExitOk;
  }
  bool any_error = false;
  for (const auto& a : *actors) any_error = any_error || a.error.has_value();
  std::vector<std::vector<std::string>> rows{{"ACTOR ID", "KEY", "STATE", "CREATED"}};
  if (any_error) rows[0].push_back("ERROR");
  for (const auto& a : *actors) {
    rows.push_back({a.actor_id, RecordKey(a), StateOf(a), FormatTime(a.create_ts)});
    if (any_error) rows.back().push_back(a.error.value_or(""));
  }
  PrintTable(rows);
  return kExitOk;
}

int RunGet(ActorsOptions& o) {
  client::Client c(ToOptions(o.flags));
  auto actor = c.GetActor(o.id);
  if (!actor.has_value()) return Report(actor.error(), o.flags);
  if (o.flags.json) {
    std::cout << "{\"actor\":" << actor->json << "}" << std::endl;
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows{{"actor_id", actor->actor_id},
                                             {"name", actor->name},
                                             {"key", RecordKey(*actor)},
                                             {"state", StateOf(*actor)},
                                             {"pool", actor->pool},
                                             {"crash_policy", actor->crash_policy},
                                             {"created", FormatTime(actor->create_ts)}};
  if (actor->error) rows.push_back({"error", *actor->error});
  PrintTable(rows);
  return kExitOk;
}

int RunCreate(ActorsOptions& o) {
  std::string error;
  auto target = ParseTarget(o.target, o.key, o.key_option->count() > 0, error);
  if (!target) return Fail(kExitUsage, "cli.usage", error);
  client::Client c(ToOptions(o.flags));
  client::CreateOptions create;
  if (o.input_option->count() > 0) {
    create.input = ParseArgument("--input", o.input, error);
    if (!create.input) return Fail(kExitUsage, "cli.usage", error);
  }
  std::optional<ClientResult<client::ActorHandle>> handle_or;
  {
    SlowNotice notice(WaitingFor("the new actor", o.flags));
    handle_or = c.Create(target->name, target->key, std::move(create));
  }
  auto& handle = *handle_or;
  if (!handle.has_value()) return Report(handle.error(), o.flags);
  auto id = handle->Resolve();
  if (!id.has_value()) return Report(id.error(), o.flags);
  if (o.flags.json) {
    auto actor = c.GetActor(*id);
    if (!actor.has_value()) return Report(actor.error(), o.flags);
    std::cout << "{\"actor\":" << actor->json << "}" << std::endl;
  } else {
    std::cout << *id << std::endl;
  }
  return kExitOk;
}

int RunDestroy(ActorsOptions& o) {
  client::Client c(ToOptions(o.flags));
  std::optional<client::ClientStatus> done_or;
  {
    SlowNotice notice("waiting for the engine to stop and destroy " + o.id);
    done_or = c.DestroyActor(o.id);
  }
  auto& done = *done_or;
  if (!done.has_value()) return Report(done.error(), o.flags);
  if (o.flags.json) {
    std::cout << ToJson(Value::Object({{"actor_id", o.id}, {"destroyed", true}})) << std::endl;
  } else {
    std::cout << "destroyed " << o.id << std::endl;
  }
  return kExitOk;
}

// ---- keel call / keel watch ----

struct CallOptions {
  ClientFlags flags;
  std::string target;
  std::string action;  // or the event name for watch
  std::vector<std::string> args;
  std::vector<std::string> key;
  std::string params;
  bool no_create = false;
  int count = 0;  // watch: stop after this many events (0 = until Ctrl-C)
  CLI::Option* key_option = nullptr;
  CLI::Option* params_option = nullptr;
};

// The handle `o` names, or nullopt with `error` set when its --params is not a value.
std::optional<client::ActorHandle> MakeHandle(client::Client& c, const CallOptions& o,
                                              const Target& t, std::string& error) {
  client::GetOrCreateOptions h;
  if (o.params_option->count() > 0) {
    h.params = ParseArgument("--params", o.params, error);
    if (!h.params) return std::nullopt;
  }
  if (o.no_create) {
    client::HandleOptions get;
    get.params = h.params;
    return c.Get(t.name, t.key, std::move(get));
  }
  return c.GetOrCreate(t.name, t.key, std::move(h));
}

// What a slow request on an actor is waiting for: the request itself (`request` followed by
// the actor's name and key) when the actor runs, else the actor's start, by a runtime of the
// actor's own pool (--pool only places new actors). Asks the engine with a client of its
// own (the waiting one is busy).
std::string SlowRequestLine(const ClientFlags& flags, const Target& t, const std::string& request) {
  const std::string who = t.name + " " + KeyText(t.key);
  client::ClientOptions options = ToOptions(flags);
  options.request_timeout = 2s;
  client::Client probe(options);
  auto actors = probe.ListActors(t.name, t.key);
  if (!actors.has_value()) return WaitingFor(who, flags);
  for (const auto& a : *actors) {
    const std::string state = StateOf(a);
    if (state == "destroyed") continue;
    if (state == "running") {
      return "still waiting for " + request + " " + who + " (actor " + a.actor_id +
             " is running; --timeout " + std::to_string(flags.timeout_s) + " s per request)";
    }
    std::string detail = "actor " + a.actor_id + " is " + state;
    if (a.error) detail += ", last error " + *a.error;
    return WaitingFor(who, a.pool, flags, detail + "; ");
  }
  return WaitingFor(who, flags);
}

int RunCall(CallOptions& o) {
  std::string error;
  auto target = ParseTarget(o.target, o.key, o.key_option->count() > 0, error);
  if (!target) return Fail(kExitUsage, "cli.usage", error);
  Value::Array args;
  for (size_t i = 0; i < o.args.size(); ++i) {
    auto arg = ParseArgument("argument " + std::to_string(i + 1), o.args[i], error);
    if (!arg) return Fail(kExitUsage, "cli.usage", error);
    args.push_back(std::move(*arg));
  }
  client::Client c(ToOptions(o.flags));
  auto handle = MakeHandle(c, o, *target, error);
  if (!handle) return Fail(kExitUsage, "cli.usage", error);
  std::optional<ClientResult<Value>> out_or;
  {
    SlowNotice notice([&o, t = *target] { return SlowRequestLine(o.flags, t, o.action + " on"); });
    out_or = handle->Action(o.action, Value(std::move(args)));
  }
  auto& out = *out_or;
  if (!out.has_value()) return Report(out.error(), o.flags);
  if (o.flags.json) {
    std::cout << ToJson(Value::Object({{"output", *out}})) << std::endl;
  } else if (!out->is_undefined() && !out->is_null()) {
    // An action without a result answers null on the wire (JSON cannot tell the two
    // apart): the human form prints nothing for either; --json keeps {"output":null}.
    std::cout << ToJson(*out) << std::endl;
  }
  return kExitOk;
}

// What a watch connection's listeners (on the client's I/O thread) hand to the main thread.
// Each connection the watch opens is a new generation: the listeners of one it disposed
// (which may still announce its close) are ignored.
struct WatchState {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t gen = 0;
  std::deque<Value> events;
  std::optional<ClientError> error;  // the current connection's first error
  bool open = false;                 // the current connection opened
  bool lost = false;                 // ... and closed again
};

// A connection subscribed to `event`, as the state's new generation.
std::shared_ptr<client::ActorConn> OpenWatch(client::ActorHandle& handle, const std::string& event,
                                             const std::shared_ptr<WatchState>& state) {
  uint64_t gen = 0;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    gen = ++state->gen;
    state->error.reset();
    state->open = state->lost = false;
  }
  // The listeners are in place before the first attempt, so the subscription goes out with it.
  return handle.Connect([&](client::ActorConn& conn) {
    conn.On(event, [state, gen](const Value& args) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (gen != state->gen) return;
      state->events.push_back(args);
      state->cv.notify_one();
    });
    conn.OnError([state, gen](const ClientError& e) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (gen != state->gen || state->error) return;
      state->error = e;
      state->cv.notify_one();
    });
    conn.OnStatusChange([state, gen](client::ConnStatus s) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (gen != state->gen) return;
      if (s == client::ConnStatus::kConnected) {
        state->open = true;
      } else if (state->open) {
        state->lost = true;
      }
      state->cv.notify_one();
    });
  });
}

// Whether a watch connection that failed or closed with `e` is worth another attempt: the
// engine unreachable or restarting (the client's transport errors), the actor stopping or
// starting, and — once the watch was established — the gateway's errors while the engine or
// the runtime comes back. Not: the actor missing or destroyed, a refusal by the actor or the
// engine (user.*, auth.*, ...). Before the first connection opened, the gateway's answer ends
// the watch at once, as it ends a `keel call` (e.g. guard.service_unavailable for an actor
// name no runtime registered).
bool WorthRetrying(const ClientError& e, bool established) {
  auto any = [&](std::initializer_list<std::string_view> codes) {
    return std::find(codes.begin(), codes.end(), e.code) != codes.end();
  };
  if (e.group == "client") {
    return any({"connect_failed", "timeout", "connection_lost", "bad_response"});
  }
  if (e.group == "actor") return any({"stopped", "stopping", "starting", "dropped_reply"});
  if (e.group == "guard" && established) {
    return any({"service_unavailable", "actor_ready_timeout", "request_timeout", "upstream_error",
                "routing_error", "retry_attempts_exceeded", "rate_limit"});
  }
  return false;
}

// Pauses between connection attempts: 250 ms, doubling up to 5 s (an engine restarting on
// the same port is found again within 5 s of listening), back to 250 ms once connected.
constexpr std::chrono::milliseconds kFirstRetryPause = 250ms;
constexpr std::chrono::milliseconds kMaxRetryPause = 5s;

// "; its last error: …" with the error the engine keeps for the actor (its record's `error`,
// e.g. {"crashed":{"message":"actor.not_registered: …"}}), "" when it has none. A connection
// the gateway closed carries only the error's id; an HTTP call would have got the whole
// message, this says as much. Asks with a client of its own, briefly.
std::string LastErrorDetail(const ClientFlags& flags, const std::string& actor_id) {
  client::ClientOptions options = ToOptions(flags);
  options.request_timeout = 2s;
  client::Client probe(options);
  auto actor = probe.GetActor(actor_id);
  if (!actor.has_value() || !actor->error) return "";
  std::string text = *actor->error;
  auto parsed = ParseJson(text);
  if (parsed.has_value() && parsed->is_map() && parsed->as_map().size() == 1) {
    const auto& [kind, body] = *parsed->as_map().begin();
    const Value* message = body.is_map() ? body.Find("message") : nullptr;
    if (kind.is_text() && message != nullptr && message->is_text()) {
      text = kind.as_text() + ": " + message->as_text();
    }
  }
  return "; its last error: " + OneLine(text, 300);
}

// The error a watch ends with when its connection did not open (again) within --timeout.
ClientError GaveUp(bool established, const ClientFlags& f, const std::optional<ClientError>& last) {
  std::string message =
      std::string(established ? "the connection was not restored" : "the connection did not open") +
      " within --timeout " + std::to_string(f.timeout_s) + " s";
  if (last) message += " (last attempt: " + last->Id() + ": " + MessageOf(*last) + ")";
  return ClientError::Make("client", "timeout", message);
}

int RunWatch(CallOptions& o) {
  using Clock = std::chrono::steady_clock;
  std::string error;
  auto target = ParseTarget(o.target, o.key, o.key_option->count() > 0, error);
  if (!target) return Fail(kExitUsage, "cli.usage", error);
  // Ctrl-C/SIGTERM are taken below; block them before the client's thread starts.
  BlockStopSignals();
  auto state = std::make_shared<WatchState>();
  client::Client c(ToOptions(o.flags));
  auto handle = MakeHandle(c, o, *target, error);
  if (!handle) return Fail(kExitUsage, "cli.usage", error);
  // Resolving first turns an unreachable engine or a missing actor into an error at once
  // (connection attempts are retried).
  auto id = handle->Resolve();
  if (!id.has_value()) return Report(id.error(), o.flags);

  // The first connection must open within --timeout. A lost one is sought again until
  // Ctrl-C, or for --timeout seconds when the flag was given. The client's connection would
  // reconnect by itself too, but it reports every refused attempt as an error and backs off
  // up to 30 s; the watch makes its own attempts (a fresh connection each) instead.
  const auto timeout = std::chrono::seconds(o.flags.timeout_s);
  const bool bounded = o.flags.timeout_option->count() > 0;
  std::optional<SlowNotice> notice(std::in_place, [&o, t = *target] {
    return SlowRequestLine(o.flags, t, "the connection to");
  });
  bool established = false;         // a connection opened once
  auto since = Clock::now();        // when the current attempts began
  std::optional<ClientError> last;  // why the last attempt failed
  std::string announced;            // the failure last announced (one line per change)
  auto pause = kFirstRetryPause;
  int seen = 0;
  while (true) {
    auto conn = OpenWatch(*handle, o.action, state);
    // Ends the watch. Dispose first: once it returns no listener runs (they take state->mu,
    // which is not held here).
    auto end = [&](const std::optional<ClientError>& e) {
      conn->Dispose();
      notice.reset();
      if (!e) return kExitOk;
      const bool vague = e->group == "guard" && OnlyCloseReason(*e);
      return Report(*e, o.flags, vague ? LastErrorDetail(o.flags, *id) : "");
    };
    bool opened = false;
    std::optional<ClientError> failed;
    while (!failed) {
      std::deque<Value> batch;
      bool just_opened = false;
      {
        std::unique_lock<std::mutex> lock(state->mu);
        state->cv.wait_for(lock, 200ms, [&] {
          return !state->events.empty() || state->error || state->lost || (state->open && !opened);
        });
        batch.swap(state->events);
        just_opened = state->open && !opened;
        opened = opened || state->open;
        if (state->error) {
          failed = state->error;
        } else if (state->lost) {
          failed = ClientError::Make("client", "connection_lost", "the connection closed");
        }
      }
      if (just_opened) {
        if (!established) {
          notice.reset();
          Progress("watching " + o.action + " on " + target->name + " " + KeyText(target->key) +
                   " (actor " + *id + ")" +
                   (o.count > 0 ? ", " + std::to_string(o.count) + " event(s)" : ", Ctrl-C stops"));
        } else {
          Progress("reconnected");
        }
        established = true;
        last.reset();
        announced.clear();
        pause = kFirstRetryPause;
      }
      for (auto& args : batch) {
        if (o.count > 0 && seen >= o.count) break;
        if (o.flags.json) {
          std::cout << ToJson(Value::Object({{"event", o.action}, {"args", args}})) << std::endl;
        } else {
          std::cout << ToJson(args) << std::endl;
        }
        ++seen;
      }
      if (o.count > 0 && seen >= o.count) return end(std::nullopt);
      if (TakeStopSignal(0ms) != 0) return end(std::nullopt);
      if (failed && !WorthRetrying(*failed, established)) return end(failed);
      if (!opened && !failed && (!established || bounded) && Clock::now() >= since + timeout) {
        return end(GaveUp(established, o.flags, last));
      }
    }
    conn->Dispose();
    const std::string why = failed->Id() + ": " + MessageOf(*failed);
    if (opened) {
      // A drop: the attempts to get it back start now.
      since = Clock::now();
      Progress(failed->Is("client", "connection_lost")
                   ? "connection lost, reconnecting"
                   : "connection lost (" + why + "), reconnecting");
    } else if (failed->Id() != announced) {
      Progress(std::string(established ? "still reconnecting" : "still connecting") + " (" + why +
               "); retrying " +
               (bounded || !established
                    ? "until --timeout (" + std::to_string(o.flags.timeout_s) + " s)"
                    : "until Ctrl-C"));
      announced = failed->Id();
    }
    last = failed;
    // The pause before the next attempt; Ctrl-C ends it (and the watch) at once.
    auto wait = pause;
    if (!established || bounded) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(since + timeout - Clock::now());
      if (left <= 0ms) {
        notice.reset();
        return Report(GaveUp(established, o.flags, last), o.flags);
      }
      wait = std::min(wait, left);
    }
    if (TakeStopSignal(wait) != 0) return kExitOk;
    pause = std::min(pause * 2, kMaxRetryPause);
  }
}

}  // namespace

void AddActorCommands(CLI::App& app) {
  // ---- actors ----
  auto* actors = app.add_subcommand("actors", "List, inspect, create and destroy actors (REST API)");
  actors->require_subcommand(1);

  auto lo = std::make_shared<ActorsOptions>();
  auto* list = actors->add_subcommand("list", "List the actors of a name (a table; --json for the records)");
  list->add_option("NAME", lo->target, "Actor name, or NAME/KEY for one key")->required();
  lo->key_option = list->add_option("--key", lo->key, "Only this key (components comma-separated)")
                       ->delimiter(',')->allow_extra_args(false);
  list->add_flag("--include-destroyed", lo->include_destroyed, "Also list destroyed actors");
  AddClientFlags(list, lo->flags, kBaseFlags);
  list->callback([lo] {
    if (int rc = RunList(*lo); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto go = std::make_shared<ActorsOptions>();
  auto* get = actors->add_subcommand("get", "Show one actor by id");
  get->add_option("ID", go->id, "Actor id")->required();
  AddClientFlags(get, go->flags, kBaseFlags);
  get->callback([go] {
    if (int rc = RunGet(*go); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto co = std::make_shared<ActorsOptions>();
  auto* create = actors->add_subcommand("create", "Create an actor (fails with actor.duplicate_key if the key is taken)");
  create->add_option("NAME", co->target, "Actor name, or NAME/KEY")->required();
  co->key_option = create->add_option("--key", co->key, "Key components, comma-separated")->delimiter(',')->allow_extra_args(false);
  co->input_option = create->add_option("--input", co->input, "Input for createState/onCreate (JSON; else text)");
  AddClientFlags(create, co->flags, kPoolFlag);
  create->callback([co] {
    if (int rc = RunCreate(*co); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto dopt = std::make_shared<ActorsOptions>();
  auto* destroy = actors->add_subcommand("destroy", "Destroy an actor by id (waits until it is gone)");
  destroy->add_option("ID", dopt->id, "Actor id")->required();
  AddClientFlags(destroy, dopt->flags, kBaseFlags);
  destroy->callback([dopt] {
    if (int rc = RunDestroy(*dopt); rc != 0) throw CLI::RuntimeError(rc);
  });

  // ---- call ----
  auto callo = std::make_shared<CallOptions>();
  auto* call = app.add_subcommand("call", "Call an action over HTTP and print its output as JSON");
  call->add_option("TARGET", callo->target, "NAME/KEY (everything after the first / is one key component) or NAME")
      ->required();
  call->add_option("ACTION", callo->action, "Action name")->required();
  // Each argument is one JSON value as written: `'["a","b"]'` is one array.
  AddVerbatimArgs(*call, "ARGS", callo->args,
                  "Arguments, each one JSON value (else taken as text); use -- before ones that "
                  "look like flags");
  callo->key_option = call->add_option("--key", callo->key, "Key components, comma-separated (with a plain NAME)")
                          ->delimiter(',')->allow_extra_args(false);
  callo->params_option = call->add_option("--params", callo->params, "Connection params (JSON)");
  call->add_flag("--no-create", callo->no_create, "Do not create the actor when it does not exist");
  AddClientFlags(call, callo->flags, kPoolFlag | kEncodingFlag);
  call->callback([callo] {
    if (int rc = RunCall(*callo); rc != 0) throw CLI::RuntimeError(rc);
  });

  // ---- watch ----
  auto wo = std::make_shared<CallOptions>();
  auto* watch = app.add_subcommand("watch", "Print an actor's events (their args, one JSON line each) until Ctrl-C");
  watch->add_option("TARGET", wo->target, "NAME/KEY or NAME")->required();
  watch->add_option("EVENT", wo->action, "Event name")->required();
  watch->add_option("--count", wo->count, "Exit after this many events")->check(CLI::Range(1, 1 << 30));
  wo->key_option = watch->add_option("--key", wo->key, "Key components, comma-separated (with a plain NAME)")
                       ->delimiter(',')->allow_extra_args(false);
  wo->params_option = watch->add_option("--params", wo->params, "Connection params (JSON)");
  watch->add_flag("--no-create", wo->no_create, "Do not create the actor when it does not exist");
  AddClientFlags(watch, wo->flags, kPoolFlag | kEncodingFlag);
  wo->flags.timeout_option->description(
      "Seconds each request and the first connection may take; when given, also how long a "
      "lost connection is sought (else until Ctrl-C)");
  watch->callback([wo] {
    if (int rc = RunWatch(*wo); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace keel::cli
