#include "cli/actor_commands.h"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/common.h"
#include "client/client.h"
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
};

void AddClientFlags(CLI::App* cmd, ClientFlags& f) {
  cmd->add_option("--endpoint", f.endpoint, "keel-engine's URL (http:// only)")
      ->envname("KEEL_ENDPOINT")
      ->capture_default_str();
  cmd->add_option("--token", f.token, "Bearer token for the engine")->envname("KEEL_TOKEN");
  cmd->add_option("--namespace", f.namespace_name, "Namespace")
      ->envname("KEEL_NAMESPACE")
      ->capture_default_str();
  cmd->add_option("--pool", f.pool, "Pool new actors are placed in")
      ->envname("KEEL_POOL")
      ->capture_default_str();
  cmd->add_option("--encoding", f.encoding, "Client protocol encoding: json, cbor or bare")
      ->check(CLI::IsMember({"json", "cbor", "bare"}))
      ->capture_default_str();
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

// Reports `e`: the one-line error on stderr, and with --json also an error document on
// stdout ({"error": {group, code, message, metadata?}}).
int Report(const ClientError& e, const ClientFlags& f) {
  if (f.json) {
    Value err = Value::Object({{"group", e.group}, {"code", e.code}, {"message", e.message}});
    if (e.metadata) err.Set("metadata", *e.metadata);
    std::cout << ToJson(Value::Object({{"error", err}})) << std::endl;
  }
  return Fail(ExitCodeFor(e), e.Id(), e.message);
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

// A command-line value: JSON when it parses, else the text itself.
Value ParseArgument(const std::string& text) {
  auto parsed = ParseJson(text);
  if (parsed.has_value()) return std::move(*parsed);
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
  if (o.input_option->count() > 0) create.input = ParseArgument(o.input);
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

std::optional<client::ActorHandle> MakeHandle(client::Client& c, const CallOptions& o, const Target& t) {
  client::GetOrCreateOptions h;
  if (o.params_option->count() > 0) h.params = ParseArgument(o.params);
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
  for (const auto& a : o.args) args.push_back(ParseArgument(a));
  client::Client c(ToOptions(o.flags));
  auto handle = MakeHandle(c, o, *target);
  std::optional<ClientResult<Value>> out_or;
  {
    SlowNotice notice([&o, t = *target] { return SlowRequestLine(o.flags, t, o.action + " on"); });
    out_or = handle->Action(o.action, Value(std::move(args)));
  }
  auto& out = *out_or;
  if (!out.has_value()) return Report(out.error(), o.flags);
  if (o.flags.json) {
    std::cout << ToJson(Value::Object({{"output", *out}})) << std::endl;
  } else if (!out->is_undefined()) {  // an action without a result prints nothing
    std::cout << ToJson(*out) << std::endl;
  }
  return kExitOk;
}

// What the connection's callbacks (on the client's I/O thread) hand to the main thread.
struct WatchState {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Value> events;
  std::optional<ClientError> error;
  bool was_connected = false;  // touched only by the status callback (I/O thread)
};

int RunWatch(CallOptions& o) {
  std::string error;
  auto target = ParseTarget(o.target, o.key, o.key_option->count() > 0, error);
  if (!target) return Fail(kExitUsage, "cli.usage", error);
  // Ctrl-C/SIGTERM are taken below; block them before the client's thread starts.
  BlockStopSignals();
  auto state = std::make_shared<WatchState>();
  client::Client c(ToOptions(o.flags));
  auto handle = MakeHandle(c, o, *target);
  // Resolving first turns an unreachable engine or a missing actor into an error at once
  // (a connection would retry forever).
  auto id = handle->Resolve();
  if (!id.has_value()) return Report(id.error(), o.flags);
  auto conn = handle->Connect();
  conn->On(o.action, [state](const Value& args) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->events.push_back(args);
    state->cv.notify_one();
  });
  conn->OnError([state](const ClientError& e) {
    std::lock_guard<std::mutex> lock(state->mu);
    if (!state->error) state->error = e;
    state->cv.notify_one();
  });
  conn->OnStatusChange([state](client::ConnStatus s) {
    if (s == client::ConnStatus::kConnected) {
      if (state->was_connected) Progress("reconnected");
      state->was_connected = true;
    } else if (state->was_connected && s == client::ConnStatus::kConnecting) {
      Progress("connection lost, reconnecting");
    }
  });
  std::optional<client::ClientStatus> ready_or;
  {
    SlowNotice notice(
        [&o, t = *target] { return SlowRequestLine(o.flags, t, "the connection to"); });
    ready_or = conn->WaitReady(std::chrono::seconds(o.flags.timeout_s));
  }
  auto& ready = *ready_or;
  if (!ready.has_value()) {
    conn->Dispose();
    return Report(ready.error(), o.flags);
  }
  Progress("watching " + o.action + " on " + target->name + " " + KeyText(target->key) + " (actor " + *id +
           ")" + (o.count > 0 ? ", " + std::to_string(o.count) + " event(s)" : ", Ctrl-C stops"));
  int seen = 0;
  std::optional<ClientError> failed;
  while (o.count == 0 || seen < o.count) {
    std::deque<Value> batch;
    {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait_for(lock, 200ms, [&] { return !state->events.empty() || state->error; });
      batch.swap(state->events);
      failed = state->error;
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
    if (failed) break;
    if (TakeStopSignal(0ms) != 0) break;
  }
  conn->Dispose();
  if (failed && (o.count == 0 || seen < o.count)) return Report(*failed, o.flags);
  return kExitOk;
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
  AddClientFlags(list, lo->flags);
  list->callback([lo] {
    if (int rc = RunList(*lo); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto go = std::make_shared<ActorsOptions>();
  auto* get = actors->add_subcommand("get", "Show one actor by id");
  get->add_option("ID", go->id, "Actor id")->required();
  AddClientFlags(get, go->flags);
  get->callback([go] {
    if (int rc = RunGet(*go); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto co = std::make_shared<ActorsOptions>();
  auto* create = actors->add_subcommand("create", "Create an actor (fails with actor.duplicate_key if the key is taken)");
  create->add_option("NAME", co->target, "Actor name, or NAME/KEY")->required();
  co->key_option = create->add_option("--key", co->key, "Key components, comma-separated")->delimiter(',')->allow_extra_args(false);
  co->input_option = create->add_option("--input", co->input, "Input for createState/onCreate (JSON; else text)");
  AddClientFlags(create, co->flags);
  create->callback([co] {
    if (int rc = RunCreate(*co); rc != 0) throw CLI::RuntimeError(rc);
  });

  auto dopt = std::make_shared<ActorsOptions>();
  auto* destroy = actors->add_subcommand("destroy", "Destroy an actor by id (waits until it is gone)");
  destroy->add_option("ID", dopt->id, "Actor id")->required();
  AddClientFlags(destroy, dopt->flags);
  destroy->callback([dopt] {
    if (int rc = RunDestroy(*dopt); rc != 0) throw CLI::RuntimeError(rc);
  });

  // ---- call ----
  auto callo = std::make_shared<CallOptions>();
  auto* call = app.add_subcommand("call", "Call an action over HTTP and print its output as JSON");
  call->add_option("TARGET", callo->target, "NAME/KEY (everything after the first / is one key component) or NAME")
      ->required();
  call->add_option("ACTION", callo->action, "Action name")->required();
  call->add_option("ARGS", callo->args, "Arguments, each JSON (else taken as text); use -- before ones that look like flags");
  callo->key_option = call->add_option("--key", callo->key, "Key components, comma-separated (with a plain NAME)")
                          ->delimiter(',')->allow_extra_args(false);
  callo->params_option = call->add_option("--params", callo->params, "Connection params (JSON)");
  call->add_flag("--no-create", callo->no_create, "Do not create the actor when it does not exist");
  AddClientFlags(call, callo->flags);
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
  AddClientFlags(watch, wo->flags);
  watch->callback([wo] {
    if (int rc = RunWatch(*wo); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace keel::cli
