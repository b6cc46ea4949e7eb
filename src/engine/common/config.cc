#include "engine/common/config.h"

#include <arpa/inet.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/native/cpu_affinity.h"
#include "engine/common/actor_limits.h"

namespace keel::engine {
namespace {

using Json = nlohmann::json;
using Ms = std::chrono::milliseconds;

constexpr std::string_view kEnvPrefix = "KEEL_ENGINE_";
constexpr int kMaxThreads = 256;
constexpr int kMaxIoSpinUs = 100000;
constexpr int kMaxInlineSyncUs = 100000;
constexpr int kMaxSyncLingerUs = 100000;
constexpr int64_t kMaxInlinePageCommitBytes = int64_t{16} << 20;  // a commit's own cap
// Upper bound of every duration setting: 30 days. Far above any sensible timeout, and small
// enough that a deadline (now + duration, in nanoseconds) cannot overflow.
constexpr int64_t kMaxDurationMs = int64_t{30} * 24 * 60 * 60 * 1000;
// The lowest min_metadata_poll_interval_ms accepted.
constexpr std::chrono::milliseconds kMinMetadataPollFloor{100};

Error ConfigError(std::string_view code, std::string message) {
  return Error("config", std::string(code), std::move(message));
}
Error InvalidValue(std::string message) { return ConfigError("invalid_value", std::move(message)); }

// How a setting's value is written in JSON; every source is reduced to text first.
enum class JsonKind {
  kString,   // a JSON string
  kInteger,  // a JSON integer, converted to decimal text
  kTokenMap  // a JSON object {name: token} or array ["name=token", ...]
};

struct Field {
  std::string_view key;  // JSON key; env variable is KEEL_ENGINE_ + upper(key)
  JsonKind kind;
  std::function<Status(EngineConfig&, std::string_view)> set;
};

Result<int64_t> ParseInteger(std::string_view text, int64_t min, int64_t max) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != end) {
    return InvalidValue("expected a decimal integer, got '" + std::string(text) + "'");
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    return InvalidValue("must be between " + std::to_string(min) + " and " + std::to_string(max) +
                        ", got " + std::string(text));
  }
  return value;
}

Status CheckSyncThreadCpus(std::string_view text) {
  if (text == "auto" || text == "off") return OkStatus();
  auto cpus = ParseCpuList(text);
  if (!cpus.has_value()) {
    return InvalidValue("sync_thread_cpus: expected auto, off or a CPU list; " +
                        cpus.error().message());
  }
  return OkStatus();
}

Result<LogLevel> ParseLogLevel(std::string_view text) {
  for (LogLevel level : {LogLevel::kTrace, LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn,
                         LogLevel::kError, LogLevel::kOff}) {
    if (text == LogLevelName(level)) return level;
  }
  return InvalidValue("log level must be trace, debug, info, warn, error or off, got '" +
                      std::string(text) + "'");
}

Status CheckNamespaceName(std::string_view name) {
  if (IsValidNamespaceName(name)) return OkStatus();
  return InvalidValue("namespace name '" + std::string(name) + "' must be 1 to " +
                      std::to_string(kMaxNamespaceNameBytes) +
                      " characters of a-z, 0-9, '-' and '_' (the names a namespace can have)");
}

Status CheckToken(std::string_view what, std::string_view token) {
  if (token.empty()) return InvalidValue(std::string(what) + " must not be empty");
  if (!IsValidToken(token)) {
    return InvalidValue(std::string(what) +
                        " may only contain letters, digits and !#$%&'*+-.^_`|~ (it is sent as "
                        "a WebSocket subprotocol)");
  }
  return OkStatus();
}

// Parses one "NAME=TOKEN" entry into `out`; a name given twice is an error.
Status AddNamespaceToken(std::string_view entry, std::map<std::string, std::string>& out) {
  size_t eq = entry.find('=');
  if (eq == std::string_view::npos) {
    return InvalidValue("namespace token must be NAME=TOKEN, got '" + std::string(entry) + "'");
  }
  std::string_view name = entry.substr(0, eq);
  std::string_view token = entry.substr(eq + 1);
  KEEL_RETURN_IF_ERROR(CheckNamespaceName(name));
  KEEL_RETURN_IF_ERROR(CheckToken("token of namespace '" + std::string(name) + "'", token));
  if (!out.emplace(std::string(name), std::string(token)).second) {
    return InvalidValue("namespace '" + std::string(name) + "' has more than one token");
  }
  return OkStatus();
}

// "a=t1,b=t2" (the env form; flags and JSON arrays are joined into it too).
Result<std::map<std::string, std::string>> ParseNamespaceTokens(std::string_view text) {
  std::map<std::string, std::string> out;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view entry = text.substr(0, comma);
    KEEL_RETURN_IF_ERROR(AddNamespaceToken(entry, out));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
    if (text.empty()) return InvalidValue("namespace token list ends with ','");
  }
  return out;
}

template <typename Get>
Field DurationField(std::string_view key, Get get) {
  return Field{key, JsonKind::kInteger,
               [key, get](EngineConfig& c, std::string_view text) -> Status {
                 auto ms = ParseInteger(text, 1, std::numeric_limits<int64_t>::max());
                 if (!ms.ok()) return ms.error();
                 if (*ms > kMaxDurationMs) {
                   return InvalidValue(std::string(key) + " must be at most " +
                                       std::to_string(kMaxDurationMs) + " ms (30 days), got " +
                                       std::string(text));
                 }
                 get(c) = Ms(*ms);
                 return OkStatus();
               }};
}

template <typename Get>
Field CountField(std::string_view key, Get get, int64_t min, int64_t max) {
  return Field{key, JsonKind::kInteger,
               [get, min, max](EngineConfig& c, std::string_view text) -> Status {
                 KEEL_ASSIGN_OR_RETURN(int64_t value, ParseInteger(text, min, max));
                 get(c) = value;
                 return OkStatus();
               }};
}

// A key of actors.md §6.12 for a mechanism keel-engine does not have: refused, whatever
// its value, rather than accepted and ignored.
Field UnsupportedField(std::string_view key, std::string_view why) {
  return Field{key, JsonKind::kInteger, [key, why](EngineConfig&, std::string_view) -> Status {
                 return InvalidValue(std::string(key) + " is not supported by keel-engine (" +
                                     std::string(why) + ")");
               }};
}

#define KEEL_DURATION(name) \
  DurationField(#name "_ms", [](EngineConfig& c) -> Ms& { return c.thresholds.name; })
#define KEEL_COUNT(name, min, max) \
  CountField(                      \
      #name, [](EngineConfig& c) -> int64_t& { return c.thresholds.name; }, min, max)

const std::vector<Field>& Fields() {
  static const auto* fields = new std::vector<Field>{
      {"host", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         c.host = std::string(v);
         return OkStatus();
       }},
      {"port", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(int64_t port, ParseInteger(v, 0, 65535));
         c.port = static_cast<uint16_t>(port);
         return OkStatus();
       }},
      {"unix_socket", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         if (v.size() >= 108) return InvalidValue("unix socket path must be under 108 bytes");
         c.unix_socket = std::string(v);
         return OkStatus();
       }},
      {"data_dir", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         if (v.empty()) return InvalidValue("data dir must not be empty");
         c.data_dir = std::string(v);
         return OkStatus();
       }},
      {"storage", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         if (v == "rocksdb") {
           c.storage = StorageKind::kRocksDb;
         } else if (v == "memory") {
           c.storage = StorageKind::kMemory;
         } else if (v.starts_with("postgres://") || v.starts_with("postgresql://")) {
           c.storage = StorageKind::kPostgres;
           c.postgres_url = std::string(v);
         } else {
           std::string message =
               "storage must be rocksdb, memory or the postgresql://... URL of a PostgreSQL "
               "database";
           // Echoed only when it cannot be a mistyped URL, which may hold a password.
           if (v.find_first_of(":@/=") == std::string_view::npos) {
             message += ", got '" + std::string(v) + "'";
           }
           return InvalidValue(std::move(message));
         }
         return OkStatus();
       }},
      {"admin_token", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_RETURN_IF_ERROR(CheckToken("admin token", v));
         c.admin_token = std::string(v);
         return OkStatus();
       }},
      {"namespace_tokens", JsonKind::kTokenMap,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(c.namespace_tokens, ParseNamespaceTokens(v));
         return OkStatus();
       }},
      {"gateway_token", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_RETURN_IF_ERROR(CheckToken("gateway token", v));
         c.gateway_token = std::string(v);
         return OkStatus();
       }},
      {"threads", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(int64_t threads, ParseInteger(v, 1, kMaxThreads));
         c.threads = static_cast<int>(threads);
         return OkStatus();
       }},
      {"io_spin_us", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(int64_t us, ParseInteger(v, 0, kMaxIoSpinUs));
         c.io_spin_us = static_cast<int>(us);
         return OkStatus();
       }},
      {"inline_sync_us", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(int64_t us, ParseInteger(v, 0, kMaxInlineSyncUs));
         c.inline_sync_us = static_cast<int>(us);
         return OkStatus();
       }},
      {"sync_linger_us", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(int64_t us, ParseInteger(v, 0, kMaxSyncLingerUs));
         c.sync_linger_us = static_cast<int>(us);
         return OkStatus();
       }},
      {"sync_thread_cpus", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_RETURN_IF_ERROR(CheckSyncThreadCpus(v));
         c.sync_thread_cpus = std::string(v);
         return OkStatus();
       }},
      {"storage_lock_wait_ms", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(c.storage_lock_wait_ms, ParseInteger(v, 0, 3'600'000));
         return OkStatus();
       }},
      {"inline_page_commit_bytes", JsonKind::kInteger,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(c.inline_page_commit_bytes,
                               ParseInteger(v, 0, kMaxInlinePageCommitBytes));
         return OkStatus();
       }},
      {"log_level", JsonKind::kString,
       [](EngineConfig& c, std::string_view v) -> Status {
         KEEL_ASSIGN_OR_RETURN(c.log_level, ParseLogLevel(v));
         return OkStatus();
       }},
      KEEL_DURATION(actor_allocation_threshold),
      KEEL_DURATION(actor_start_threshold),
      KEEL_DURATION(actor_stop_threshold),
      KEEL_DURATION(actor_retry_duration_threshold),
      KEEL_DURATION(base_retry_timeout),
      KEEL_DURATION(retry_reset_duration),
      KEEL_COUNT(reschedule_backoff_max_exponent, 0, 62),
      KEEL_COUNT(actor_allocation_candidate_sample_size, 1, 1000000),
      KEEL_DURATION(hibernating_request_eligible_threshold),
      KEEL_DURATION(envoy_eligible_threshold),
      KEEL_DURATION(envoy_lost_threshold),
      KEEL_DURATION(envoy_ping_timeout),
      KEEL_DURATION(envoy_ping_interval),
      KEEL_COUNT(max_response_payload_bytes, 1, std::numeric_limits<int64_t>::max()),
      KEEL_DURATION(serverless_drain_grace_period),
      KEEL_DURATION(serverless_base_retry_timeout),
      KEEL_DURATION(serverless_retry_reset_duration),
      KEEL_COUNT(serverless_backoff_max_exponent, 0, 62),
      KEEL_COUNT(runner_pool_error_clear_successes, 1, 1000000),
      KEEL_DURATION(metadata_poll_interval),
      KEEL_DURATION(min_metadata_poll_interval),
      KEEL_COUNT(preload_max_total_bytes, 0, std::numeric_limits<int64_t>::max()),
      KEEL_DURATION(gateway_actor_ready_timeout),
      KEEL_DURATION(gateway_response_start_timeout),
      KEEL_DURATION(gateway_ws_open_timeout),
      UnsupportedField("gateway_tunnel_ping_timeout_ms",
                       "the gateway runs in the engine's process: there is no tunnel to ping; "
                       "envoy_ping_timeout_ms bounds an envoy's silence"),
      KEEL_DURATION(gateway_hws_ack_timeout),
      KEEL_COUNT(gateway_hws_max_pending_bytes, 1, std::numeric_limits<int64_t>::max()),
  };
  return *fields;
}

#undef KEEL_DURATION
#undef KEEL_COUNT

const Field* FindField(std::string_view key) {
  for (const Field& field : Fields()) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

std::string EnvName(std::string_view key) {
  std::string out(kEnvPrefix);
  for (char c : key) out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// Reduces a JSON value to the text form `field.set` takes.
Result<std::string> JsonToText(const Field& field, const Json& value) {
  switch (field.kind) {
    case JsonKind::kString:
      if (!value.is_string()) return InvalidValue("expected a string");
      return value.get<std::string>();
    case JsonKind::kInteger:
      if (value.is_number_unsigned()) return std::to_string(value.get<uint64_t>());
      if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
      return InvalidValue("expected an integer");
    case JsonKind::kTokenMap: {
      std::string joined;
      auto append = [&joined](const std::string& entry) -> Status {
        // A ',' inside an entry would split it; no legal name or token has one.
        if (entry.find(',') != std::string::npos) {
          return InvalidValue("namespace token entry '" + entry + "' contains ','");
        }
        if (!joined.empty()) joined += ',';
        joined += entry;
        return OkStatus();
      };
      if (value.is_object()) {
        for (const auto& [name, token] : value.items()) {
          if (!token.is_string()) return InvalidValue("token of '" + name + "' must be a string");
          if (name.find('=') != std::string::npos) {
            return InvalidValue("namespace name '" + name + "' contains '='");
          }
          KEEL_RETURN_IF_ERROR(append(name + "=" + token.get<std::string>()));
        }
      } else if (value.is_array()) {
        for (const auto& entry : value) {
          if (!entry.is_string()) return InvalidValue("expected strings of the form NAME=TOKEN");
          KEEL_RETURN_IF_ERROR(append(entry.get<std::string>()));
        }
      } else {
        return InvalidValue("expected an object {name: token} or an array of NAME=TOKEN");
      }
      if (joined.empty()) return std::string();
      return joined;
    }
  }
  return InvalidValue("unsupported setting kind");
}

Status ApplyFile(const std::string& path, EngineConfig& config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ConfigError("file_unreadable",
                       "cannot read config file '" + path + "': " + std::strerror(errno));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return ConfigError("file_unreadable", "cannot read config file '" + path + "'");
  }
  Json root;
  try {
    root = Json::parse(buffer.str());
  } catch (const std::exception& e) {
    return ConfigError("invalid_json", "config file '" + path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_object()) {
    return ConfigError("invalid_json", "config file '" + path + "' must hold a JSON object");
  }
  for (const auto& [key, value] : root.items()) {
    const Field* field = FindField(key);
    if (field == nullptr) {
      return ConfigError("unknown_key", "config file '" + path + "': unknown key '" + key + "'");
    }
    std::string context = "config file '" + path + "', key '" + key + "'";
    auto text = JsonToText(*field, value);
    if (!text.ok()) return text.error().WithContext(context);
    if (field->kind == JsonKind::kTokenMap && text->empty()) {
      config.namespace_tokens.clear();
      continue;
    }
    Status set = field->set(config, *text);
    if (!set.ok()) return set.error().WithContext(context);
  }
  return OkStatus();
}

Status ApplyEnv(const GetEnvFn& getenv, EngineConfig& config) {
  for (const Field& field : Fields()) {
    std::string name = EnvName(field.key);
    const char* value = getenv ? getenv(name.c_str()) : nullptr;
    if (value == nullptr || *value == '\0') continue;
    Status set = field.set(config, value);
    if (!set.ok()) return set.error().WithContext(name);
  }
  return OkStatus();
}

// Flags as parsed from argv; unset flags stay nullopt / empty.
struct Flags {
  std::optional<std::string> config;
  std::vector<std::pair<std::string_view, std::string>> values;  // (field key, text)
};

Result<Flags> ParseFlags(int argc, char** argv) {
  CLI::App app{"keel-engine: the Keel actor engine (Rivet-compatible envoy, gateway and API)",
               "keel-engine"};
  struct FlagSpec {
    const char* flag;
    std::string_view key;
    const char* help;
  };
  static constexpr FlagSpec kSpecs[] = {
      {"--host", "host", "Address to listen on (default 127.0.0.1)"},
      {"--port", "port", "TCP port, 0 picks a free one (default 6420)"},
      {"--unix-socket", "unix_socket",
       "Also listen on this Unix socket path, for runtimes on this host (default: none)"},
      {"--data-dir", "data_dir", "Directory of the rocksdb storage (default ./keel-data)"},
      {"--storage", "storage",
       "Storage backend: rocksdb, memory, or postgresql://USER@HOST:PORT/DB (default rocksdb)"},
      {"--admin-token", "admin_token", "Admin token; required to bind a non-loopback host"},
      {"--gateway-token", "gateway_token", "Token the gateway requires from clients"},
      {"--threads", "threads", "I/O event-loop threads (default 1)"},
      {"--io-spin-us", "io_spin_us",
       "µs an I/O thread polls for the next event before it sleeps (default 100, 0 = never)"},
      {"--inline-sync-us", "inline_sync_us",
       "A KV write's WAL sync runs on the writing thread while syncs take less than this "
       "(µs; default 20, 0 = always on the sync thread)"},
      {"--sync-linger-us", "sync_linger_us",
       "µs the KV sync thread polls for the next write after its syncs before it sleeps "
       "(default 300, 0 = never)"},
      {"--sync-thread-cpus", "sync_thread_cpus",
       "Where the KV sync thread runs: auto (the CPUs that take the data disk's completions, "
       "when they are some of ours), off, or a CPU list like 1 or 0,2-3 (default auto)"},
      {"--inline-page-commit-bytes", "inline_page_commit_bytes",
       "Page commits up to this size are synced by the group commit (default 65536, 0 = never)"},
      {"--log-level", "log_level", "trace, debug, info, warn, error or off (default info)"},
  };
  std::vector<std::string> values(std::size(kSpecs));
  std::vector<CLI::Option*> options;
  for (size_t i = 0; i < std::size(kSpecs); ++i) {
    options.push_back(app.add_option(kSpecs[i].flag, values[i], kSpecs[i].help));
  }
  std::vector<std::string> namespace_tokens;
  CLI::Option* ns_option = app.add_option("--namespace-token", namespace_tokens,
                                          "NAME=TOKEN: token for a namespace (repeatable)")
                               ->allow_extra_args(false);
  std::string config_path;
  CLI::Option* config_option = app.add_option(
      "--config", config_path, "JSON config file (keys as KEEL_ENGINE_* variables, lowercase)");
  app.footer(
      "Precedence: defaults < --config file < KEEL_ENGINE_<KEY> environment < flags.\n"
      "Every config-file key (e.g. envoy_lost_threshold_ms) can also be set as\n"
      "KEEL_ENGINE_<KEY>; KEEL_ENGINE_NAMESPACE_TOKENS takes \"a=t1,b=t2\".");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return ConfigError("help_requested", app.help());
  } catch (const CLI::CallForAllHelp&) {
    return ConfigError("help_requested", app.help("", CLI::AppFormatMode::All));
  } catch (const CLI::ParseError& e) {
    return ConfigError("invalid_flag", e.what());
  } catch (const std::exception& e) {
    return ConfigError("invalid_flag", e.what());
  }
  Flags flags;
  for (size_t i = 0; i < std::size(kSpecs); ++i) {
    if (options[i]->count() > 0) flags.values.emplace_back(kSpecs[i].key, values[i]);
  }
  if (ns_option->count() > 0) {
    std::string joined;
    for (const std::string& entry : namespace_tokens) {
      if (entry.find(',') != std::string::npos) {
        return InvalidValue("--namespace-token: expected one NAME=TOKEN, got '" + entry + "'");
      }
      if (!joined.empty()) joined += ',';
      joined += entry;
    }
    flags.values.emplace_back("namespace_tokens", joined);
  }
  if (config_option->count() > 0) flags.config = config_path;
  return flags;
}

std::string FlagName(std::string_view key) {
  std::string out = "--";
  for (char c : key) out += c == '_' ? '-' : c;
  if (key == "namespace_tokens") out = "--namespace-token";
  return out;
}

bool IsTchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool IsHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == ':' ||
         c == '[' || c == ']' || c == '_' || c == '%';
}

}  // namespace

std::string_view StorageKindName(StorageKind kind) {
  switch (kind) {
    case StorageKind::kRocksDb:
      return "rocksdb";
    case StorageKind::kMemory:
      return "memory";
    case StorageKind::kPostgres:
      return "postgres";
  }
  return "unknown";
}

bool IsHelpRequested(const Error& error) { return error.Is("config", "help_requested"); }

bool IsValidToken(std::string_view token) {
  if (token.empty()) return false;
  for (char c : token) {
    if (!IsTchar(c)) return false;
  }
  return true;
}

bool IsLoopbackHost(std::string_view host) {
  std::string lower;
  for (char c : host) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "localhost" || lower == "localhost.") return true;
  if (lower.size() >= 2 && lower.front() == '[' && lower.back() == ']') {
    lower = lower.substr(1, lower.size() - 2);
  }
  in_addr v4{};
  if (inet_pton(AF_INET, lower.c_str(), &v4) == 1) {
    return reinterpret_cast<const uint8_t*>(&v4.s_addr)[0] == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, lower.c_str(), &v6) == 1) {
    const uint8_t* b = v6.s6_addr;
    bool loopback = true;  // ::1
    for (int i = 0; i < 15; ++i) loopback = loopback && b[i] == 0;
    if (loopback && b[15] == 1) return true;
    bool mapped = true;  // ::ffff:127.x.y.z
    for (int i = 0; i < 10; ++i) mapped = mapped && b[i] == 0;
    return mapped && b[10] == 0xff && b[11] == 0xff && b[12] == 127;
  }
  return false;
}

Status ValidateEngineConfig(const EngineConfig& config) {
  if (config.host.empty()) return InvalidValue("host must not be empty");
  for (char c : config.host) {
    if (!IsHostChar(c)) {
      return InvalidValue("host '" + config.host + "' is not a host name or IP address");
    }
  }
  if (config.data_dir.empty()) return InvalidValue("data dir must not be empty");
  if (config.threads < 1 || config.threads > kMaxThreads) {
    return InvalidValue("threads must be between 1 and " + std::to_string(kMaxThreads));
  }
  if (config.io_spin_us < 0 || config.io_spin_us > kMaxIoSpinUs) {
    return InvalidValue("io_spin_us must be between 0 and " + std::to_string(kMaxIoSpinUs));
  }
  if (config.inline_sync_us < 0 || config.inline_sync_us > kMaxInlineSyncUs) {
    return InvalidValue("inline_sync_us must be between 0 and " + std::to_string(kMaxInlineSyncUs));
  }
  if (config.sync_linger_us < 0 || config.sync_linger_us > kMaxSyncLingerUs) {
    return InvalidValue("sync_linger_us must be between 0 and " + std::to_string(kMaxSyncLingerUs));
  }
  KEEL_RETURN_IF_ERROR(CheckSyncThreadCpus(config.sync_thread_cpus));
  if (config.inline_page_commit_bytes < 0 ||
      config.inline_page_commit_bytes > kMaxInlinePageCommitBytes) {
    return InvalidValue("inline_page_commit_bytes must be between 0 and " +
                        std::to_string(kMaxInlinePageCommitBytes));
  }
  if (config.admin_token) KEEL_RETURN_IF_ERROR(CheckToken("admin token", *config.admin_token));
  if (config.gateway_token) {
    KEEL_RETURN_IF_ERROR(CheckToken("gateway token", *config.gateway_token));
  }
  for (const auto& [name, token] : config.namespace_tokens) {
    KEEL_RETURN_IF_ERROR(CheckNamespaceName(name));
    KEEL_RETURN_IF_ERROR(CheckToken("token of namespace '" + name + "'", token));
  }
  // Values set programmatically bypass the loaders' range checks.
  const EngineThresholds& t = config.thresholds;
  for (Ms d : {t.actor_allocation_threshold,
               t.actor_start_threshold,
               t.actor_stop_threshold,
               t.actor_retry_duration_threshold,
               t.base_retry_timeout,
               t.retry_reset_duration,
               t.hibernating_request_eligible_threshold,
               t.envoy_eligible_threshold,
               t.envoy_lost_threshold,
               t.envoy_ping_timeout,
               t.envoy_ping_interval,
               t.serverless_drain_grace_period,
               t.serverless_base_retry_timeout,
               t.serverless_retry_reset_duration,
               t.metadata_poll_interval,
               t.min_metadata_poll_interval,
               t.gateway_actor_ready_timeout,
               t.gateway_response_start_timeout,
               t.gateway_ws_open_timeout,
               t.gateway_tunnel_ping_timeout,
               t.gateway_hws_ack_timeout}) {
    if (d.count() <= 0) return InvalidValue("every duration threshold must be positive");
    if (d.count() > kMaxDurationMs) {
      return InvalidValue("every duration threshold must be at most " +
                          std::to_string(kMaxDurationMs) + " ms (30 days)");
    }
  }
  // A key for a mechanism keel-engine does not have (refused by the loaders, see Fields()).
  const EngineThresholds defaults;
  if (t.gateway_tunnel_ping_timeout != defaults.gateway_tunnel_ping_timeout) {
    return InvalidValue("gateway_tunnel_ping_timeout_ms is not supported by keel-engine");
  }
  // Serverless metadata polling (actors.md §6.11): the floor keeps a pool from being polled
  // in a near-busy loop; the default interval may not undercut the floor.
  if (t.min_metadata_poll_interval < kMinMetadataPollFloor) {
    return InvalidValue("min_metadata_poll_interval_ms must be at least " +
                        std::to_string(kMinMetadataPollFloor.count()) + " ms");
  }
  if (t.metadata_poll_interval < t.min_metadata_poll_interval) {
    return InvalidValue("metadata_poll_interval_ms (" +
                        std::to_string(t.metadata_poll_interval.count()) +
                        ") must not be below min_metadata_poll_interval_ms (" +
                        std::to_string(t.min_metadata_poll_interval.count()) + ")");
  }
  if (t.envoy_ping_interval >= t.envoy_ping_timeout) {
    return InvalidValue("envoy_ping_interval_ms (" + std::to_string(t.envoy_ping_interval.count()) +
                        ") must be shorter than envoy_ping_timeout_ms (" +
                        std::to_string(t.envoy_ping_timeout.count()) + ")");
  }
  for (int64_t n : {t.actor_allocation_candidate_sample_size, t.runner_pool_error_clear_successes,
                    t.max_response_payload_bytes, t.gateway_hws_max_pending_bytes}) {
    if (n <= 0) return InvalidValue("every size and count threshold must be positive");
  }
  for (int64_t e : {t.reschedule_backoff_max_exponent, t.serverless_backoff_max_exponent}) {
    if (e < 0 || e > 62) return InvalidValue("backoff exponents must be between 0 and 62");
  }
  if (t.preload_max_total_bytes < 0) {
    return InvalidValue("preload_max_total_bytes must not be negative");
  }
  if (!config.admin_token && !IsLoopbackHost(config.host)) {
    return ConfigError("insecure_bind", "refusing to listen on non-loopback host '" + config.host +
                                            "' without an admin token: set --admin-token (or "
                                            "KEEL_ENGINE_ADMIN_TOKEN), or bind 127.0.0.1");
  }
  return OkStatus();
}

Result<EngineConfig> LoadEngineConfig(int argc, char** argv, const GetEnvFn& getenv) {
  KEEL_ASSIGN_OR_RETURN(Flags flags, ParseFlags(argc, argv));
  EngineConfig config;
  std::optional<std::string> file = flags.config;
  if (!file) {
    const char* env_file = getenv ? getenv("KEEL_ENGINE_CONFIG") : nullptr;
    if (env_file != nullptr && *env_file != '\0') file = std::string(env_file);
  }
  if (file) KEEL_RETURN_IF_ERROR(ApplyFile(*file, config));
  KEEL_RETURN_IF_ERROR(ApplyEnv(getenv, config));
  for (const auto& [key, text] : flags.values) {
    const Field* field = FindField(key);
    if (field == nullptr) return ConfigError("invalid_flag", "no setting for " + FlagName(key));
    Status set = field->set(config, text);
    if (!set.ok()) return set.error().WithContext(FlagName(key));
  }
  KEEL_RETURN_IF_ERROR(ValidateEngineConfig(config));
  return config;
}

std::string DescribeConfig(const EngineConfig& config) {
  std::string out = "host=" + config.host + " port=" + std::to_string(config.port) +
                    " storage=" + std::string(StorageKindName(config.storage));
  if (!config.unix_socket.empty()) out += " unix_socket=" + config.unix_socket;
  if (config.storage == StorageKind::kRocksDb) out += " data_dir=" + config.data_dir;
  if (config.storage == StorageKind::kPostgres) {
    out += " storage_lock_wait_ms=" + std::to_string(config.storage_lock_wait_ms);
  }
  out += " threads=" + std::to_string(config.threads) +
         " io_spin_us=" + std::to_string(config.io_spin_us) +
         " inline_sync_us=" + std::to_string(config.inline_sync_us) +
         " sync_linger_us=" + std::to_string(config.sync_linger_us) +
         " sync_thread_cpus=" + config.sync_thread_cpus +
         " inline_page_commit_bytes=" + std::to_string(config.inline_page_commit_bytes) +
         " log_level=" + std::string(LogLevelName(config.log_level));
  out += " admin_token=";
  out += config.admin_token ? "<redacted>" : "<none>";
  out += " gateway_token=";
  out += config.gateway_token ? "<redacted>" : "<none>";
  out += " namespace_tokens=[";
  bool first = true;
  for (const auto& [name, token] : config.namespace_tokens) {
    if (!first) out += ',';
    first = false;
    out += name;
  }
  out += ']';
  // Only thresholds that differ from their defaults, named by their config keys.
  const EngineThresholds defaults;
  const EngineThresholds& t = config.thresholds;
  auto ms = [&out](std::string_view key, Ms value, Ms def) {
    if (value != def) out += " " + std::string(key) + "_ms=" + std::to_string(value.count());
  };
  auto count = [&out](std::string_view key, int64_t value, int64_t def) {
    if (value != def) out += " " + std::string(key) + "=" + std::to_string(value);
  };
#define KEEL_MS(name) ms(#name, t.name, defaults.name)
#define KEEL_N(name) count(#name, t.name, defaults.name)
  KEEL_MS(actor_allocation_threshold);
  KEEL_MS(actor_start_threshold);
  KEEL_MS(actor_stop_threshold);
  KEEL_MS(actor_retry_duration_threshold);
  KEEL_MS(base_retry_timeout);
  KEEL_MS(retry_reset_duration);
  KEEL_N(reschedule_backoff_max_exponent);
  KEEL_N(actor_allocation_candidate_sample_size);
  KEEL_MS(hibernating_request_eligible_threshold);
  KEEL_MS(envoy_eligible_threshold);
  KEEL_MS(envoy_lost_threshold);
  KEEL_MS(envoy_ping_timeout);
  KEEL_MS(envoy_ping_interval);
  KEEL_N(max_response_payload_bytes);
  KEEL_MS(serverless_drain_grace_period);
  KEEL_MS(serverless_base_retry_timeout);
  KEEL_MS(serverless_retry_reset_duration);
  KEEL_N(serverless_backoff_max_exponent);
  KEEL_N(runner_pool_error_clear_successes);
  KEEL_MS(metadata_poll_interval);
  KEEL_MS(min_metadata_poll_interval);
  KEEL_N(preload_max_total_bytes);
  KEEL_MS(gateway_actor_ready_timeout);
  KEEL_MS(gateway_response_start_timeout);
  KEEL_MS(gateway_ws_open_timeout);
  KEEL_MS(gateway_tunnel_ping_timeout);
  KEEL_MS(gateway_hws_ack_timeout);
  KEEL_N(gateway_hws_max_pending_bytes);
#undef KEEL_MS
#undef KEEL_N
  return out;
}

}  // namespace keel::engine
