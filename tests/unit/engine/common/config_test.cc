#include "engine/common/config.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/server/server.h"

namespace keel::engine {
namespace {

using std::chrono::milliseconds;

// An injected environment.
class FakeEnv {
 public:
  FakeEnv(std::initializer_list<std::pair<const std::string, std::string>> vars) : vars_(vars) {}
  GetEnvFn Fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars_.find(name);
      return it == vars_.end() ? nullptr : it->second.c_str();
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

// Runs LoadEngineConfig with "keel-engine" + args.
Result<EngineConfig> Load(std::vector<std::string> args, const FakeEnv& env = FakeEnv({})) {
  args.insert(args.begin(), "keel-engine");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  return LoadEngineConfig(static_cast<int>(args.size()), argv.data(), env.Fn());
}

// A config file in a fresh temporary directory, removed by the destructor.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "keel-config-XXXXXX").string();
    char* dir = mkdtemp(tmpl.data());
    EXPECT_NE(dir, nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/engine.json";
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::filesystem::remove_all(dir_); }
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

void ExpectError(const Result<EngineConfig>& result, std::string_view code,
                 std::string_view message_part) {
  ASSERT_FALSE(result.ok()) << "expected config." << code;
  EXPECT_TRUE(result.error().Is("config", code)) << result.error().ToString();
  EXPECT_NE(result.error().message().find(message_part), std::string::npos)
      << result.error().ToString();
}

TEST(EngineConfig, DefaultsMatchRivet) {
  auto uut = Load({});
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->host, "127.0.0.1");
  EXPECT_EQ(uut->port, 6420);
  EXPECT_EQ(uut->data_dir, "./keel-data");
  EXPECT_EQ(uut->storage, StorageKind::kRocksDb);
  EXPECT_FALSE(uut->admin_token.has_value());
  EXPECT_FALSE(uut->gateway_token.has_value());
  EXPECT_TRUE(uut->namespace_tokens.empty());
  EXPECT_EQ(uut->threads, 1);
  EXPECT_EQ(uut->io_spin_us, 100);
  EXPECT_EQ(uut->inline_sync_us, 20);
  EXPECT_EQ(uut->sync_linger_us, 300);
  EXPECT_EQ(uut->sync_thread_cpus, "auto");
  EXPECT_EQ(uut->inline_page_commit_bytes, 65536);
  EXPECT_EQ(uut->log_level, LogLevel::kInfo);
  const EngineThresholds& t = uut->thresholds;
  EXPECT_EQ(t.actor_allocation_threshold, milliseconds(2000));
  EXPECT_EQ(t.actor_start_threshold, milliseconds(30000));
  EXPECT_EQ(t.actor_stop_threshold, milliseconds(30000));
  EXPECT_EQ(t.actor_retry_duration_threshold, milliseconds(300000));
  EXPECT_EQ(t.base_retry_timeout, milliseconds(2000));
  EXPECT_EQ(t.retry_reset_duration, milliseconds(600000));
  EXPECT_EQ(t.reschedule_backoff_max_exponent, 8);
  EXPECT_EQ(t.actor_allocation_candidate_sample_size, 100);
  EXPECT_EQ(t.hibernating_request_eligible_threshold, milliseconds(90000));
  EXPECT_EQ(t.envoy_eligible_threshold, milliseconds(10000));
  EXPECT_EQ(t.envoy_lost_threshold, milliseconds(15000));
  EXPECT_EQ(t.envoy_ping_timeout, milliseconds(15000));
  EXPECT_EQ(t.envoy_ping_interval, milliseconds(3000));
  EXPECT_EQ(t.max_response_payload_bytes, 20971520);
  EXPECT_EQ(t.serverless_drain_grace_period, milliseconds(10000));
  EXPECT_EQ(t.serverless_base_retry_timeout, milliseconds(2000));
  EXPECT_EQ(t.serverless_retry_reset_duration, milliseconds(600000));
  EXPECT_EQ(t.serverless_backoff_max_exponent, 8);
  EXPECT_EQ(t.runner_pool_error_clear_successes, 3);
  EXPECT_EQ(t.metadata_poll_interval, milliseconds(10000));
  EXPECT_EQ(t.min_metadata_poll_interval, milliseconds(5000));
  EXPECT_EQ(t.preload_max_total_bytes, 1048576);
  EXPECT_EQ(t.gateway_actor_ready_timeout, milliseconds(10000));
  EXPECT_EQ(t.gateway_response_start_timeout, milliseconds(300000));
  EXPECT_EQ(t.gateway_ws_open_timeout, milliseconds(15000));
  EXPECT_EQ(t.gateway_tunnel_ping_timeout, milliseconds(30000));
  EXPECT_EQ(t.gateway_hws_ack_timeout, milliseconds(30000));
  EXPECT_EQ(t.gateway_hws_max_pending_bytes, 128 * 1024 * 1024);
  EXPECT_EQ(*uut, EngineConfig());
}

TEST(EngineConfig, EveryFlagIsApplied) {
  auto uut = Load({"--host",
                   "::1",
                   "--port",
                   "0",
                   "--data-dir",
                   "/var/keel",
                   "--storage",
                   "memory",
                   "--admin-token",
                   "adm",
                   "--namespace-token",
                   "default=t1",
                   "--namespace-token",
                   "other=t2",
                   "--gateway-token",
                   "gw",
                   "--threads",
                   "8",
                   "--io-spin-us",
                   "0",
                   "--inline-sync-us",
                   "0",
                   "--sync-linger-us",
                   "0",
                   "--sync-thread-cpus",
                   "0,2-3",
                   "--inline-page-commit-bytes",
                   "0",
                   "--log-level",
                   "debug"});
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->host, "::1");
  EXPECT_EQ(uut->port, 0);
  EXPECT_EQ(uut->data_dir, "/var/keel");
  EXPECT_EQ(uut->storage, StorageKind::kMemory);
  EXPECT_EQ(uut->admin_token, "adm");
  EXPECT_EQ(uut->gateway_token, "gw");
  EXPECT_EQ(uut->threads, 8);
  EXPECT_EQ(uut->io_spin_us, 0);
  EXPECT_EQ(uut->inline_sync_us, 0);
  EXPECT_EQ(uut->sync_linger_us, 0);
  EXPECT_EQ(uut->sync_thread_cpus, "0,2-3");
  EXPECT_EQ(uut->inline_page_commit_bytes, 0);
  EXPECT_EQ(uut->log_level, LogLevel::kDebug);
  std::map<std::string, std::string> expected{{"default", "t1"}, {"other", "t2"}};
  EXPECT_EQ(uut->namespace_tokens, expected);
}

TEST(EngineConfig, FlagsBeatEnvironmentBeatsFileBeatsDefaults) {
  TempFile file(R"({"port": 7000, "threads": 3, "log_level": "warn", "data_dir": "/f",
                    "io_spin_us": 250, "inline_page_commit_bytes": 8192,
                    "inline_sync_us": 40, "sync_linger_us": 150,
                    "sync_thread_cpus": "1"})");
  FakeEnv env({{"KEEL_ENGINE_PORT", "7001"},
               {"KEEL_ENGINE_THREADS", "4"},
               {"KEEL_ENGINE_IO_SPIN_US", "500"},
               {"KEEL_ENGINE_INLINE_SYNC_US", "60"},
               {"KEEL_ENGINE_SYNC_LINGER_US", "1000"},
               {"KEEL_ENGINE_SYNC_THREAD_CPUS", "off"},
               {"KEEL_ENGINE_INLINE_PAGE_COMMIT_BYTES", "16384"}});
  auto uut = Load({"--config", file.path(), "--port", "7002"}, env);
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->port, 7002);                  // flag
  EXPECT_EQ(uut->threads, 4);                  // env over file
  EXPECT_EQ(uut->io_spin_us, 500);             // env over file
  EXPECT_EQ(uut->inline_sync_us, 60);          // env over file
  EXPECT_EQ(uut->sync_linger_us, 1000);        // env over file
  EXPECT_EQ(uut->sync_thread_cpus, "off");     // env over file
  EXPECT_EQ(uut->inline_page_commit_bytes, 16384);  // env over file
  EXPECT_EQ(uut->log_level, LogLevel::kWarn);  // file over default
  EXPECT_EQ(uut->data_dir, "/f");              // file
  EXPECT_EQ(uut->host, "127.0.0.1");           // default
}

TEST(EngineConfig, UnixSocketFromFlagEnvironmentOrFileAndBoundedInLength) {
  auto none = Load({}, FakeEnv({}));
  ASSERT_TRUE(none.ok()) << none.error().ToString();
  EXPECT_EQ(none->unix_socket, "") << "off by default";
  auto flag = Load({"--unix-socket", "/run/keel/engine.sock"}, FakeEnv({}));
  ASSERT_TRUE(flag.ok()) << flag.error().ToString();
  EXPECT_EQ(flag->unix_socket, "/run/keel/engine.sock");
  EXPECT_NE(DescribeConfig(*flag).find("unix_socket=/run/keel/engine.sock"), std::string::npos);
  auto env = Load({}, FakeEnv({{"KEEL_ENGINE_UNIX_SOCKET", "/tmp/e.sock"}}));
  ASSERT_TRUE(env.ok()) << env.error().ToString();
  EXPECT_EQ(env->unix_socket, "/tmp/e.sock");
  TempFile file(R"({"unix_socket": "/tmp/f.sock"})");
  auto from_file = Load({"--config", file.path()}, FakeEnv({}));
  ASSERT_TRUE(from_file.ok()) << from_file.error().ToString();
  EXPECT_EQ(from_file->unix_socket, "/tmp/f.sock");
  // sockaddr_un holds 108 bytes with the terminating NUL.
  auto too_long = Load({"--unix-socket", "/" + std::string(107, 'x')}, FakeEnv({}));
  ASSERT_FALSE(too_long.ok());
  EXPECT_TRUE(too_long.error().Is("config", "invalid_value")) << too_long.error().ToString();
}

TEST(EngineConfig, ConfigFileCanComeFromTheEnvironment) {
  TempFile file(R"({"port": 7100})");
  auto uut = Load({}, FakeEnv({{"KEEL_ENGINE_CONFIG", file.path()}}));
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->port, 7100);
}

TEST(EngineConfig, EveryThresholdHasAConfigKeyAndAnEnvVariable) {
  TempFile file(R"({"envoy_lost_threshold_ms": 20000, "actor_stop_threshold_ms": 40000,
                    "max_response_payload_bytes": 1024, "gateway_actor_ready_timeout_ms": 5})");
  FakeEnv env({{"KEEL_ENGINE_ENVOY_PING_INTERVAL_MS", "1000"},
               {"KEEL_ENGINE_GATEWAY_HWS_MAX_PENDING_BYTES", "99"},
               {"KEEL_ENGINE_ACTOR_STOP_THRESHOLD_MS", "41000"}});
  auto uut = Load({"--config", file.path()}, env);
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->thresholds.envoy_lost_threshold, milliseconds(20000));
  EXPECT_EQ(uut->thresholds.actor_stop_threshold, milliseconds(41000));
  EXPECT_EQ(uut->thresholds.max_response_payload_bytes, 1024);
  EXPECT_EQ(uut->thresholds.gateway_actor_ready_timeout, milliseconds(5));
  EXPECT_EQ(uut->thresholds.envoy_ping_interval, milliseconds(1000));
  EXPECT_EQ(uut->thresholds.gateway_hws_max_pending_bytes, 99);
}

TEST(EngineConfig, EmptyEnvironmentValueCountsAsUnset) {
  auto uut = Load({}, FakeEnv({{"KEEL_ENGINE_PORT", ""}, {"KEEL_ENGINE_ADMIN_TOKEN", ""}}));
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->port, 6420);
  EXPECT_FALSE(uut->admin_token.has_value());
}

TEST(EngineConfig, NamespaceTokensFromEachSource) {
  auto env = Load({}, FakeEnv({{"KEEL_ENGINE_NAMESPACE_TOKENS", "a=t1,b=t2"}}));
  ASSERT_TRUE(env.ok()) << env.error().ToString();
  EXPECT_EQ(env->namespace_tokens, (std::map<std::string, std::string>{{"a", "t1"}, {"b", "t2"}}));

  TempFile object(R"({"namespace_tokens": {"a": "t1"}})");
  auto from_object = Load({"--config", object.path()});
  ASSERT_TRUE(from_object.ok()) << from_object.error().ToString();
  EXPECT_EQ(from_object->namespace_tokens, (std::map<std::string, std::string>{{"a", "t1"}}));

  TempFile array(R"({"namespace_tokens": ["a=t1", "c=t3"]})");
  auto from_array = Load({"--config", array.path()});
  ASSERT_TRUE(from_array.ok()) << from_array.error().ToString();
  EXPECT_EQ(from_array->namespace_tokens,
            (std::map<std::string, std::string>{{"a", "t1"}, {"c", "t3"}}));
}

TEST(EngineConfig, AHigherSourceReplacesTheWholeNamespaceTokenList) {
  auto uut =
      Load({"--namespace-token", "c=t3"}, FakeEnv({{"KEEL_ENGINE_NAMESPACE_TOKENS", "a=t1,b=t2"}}));
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->namespace_tokens, (std::map<std::string, std::string>{{"c", "t3"}}));
}

TEST(EngineConfig, RejectsMalformedNamespaceTokens) {
  ExpectError(Load({"--namespace-token", "notoken"}), "invalid_value", "NAME=TOKEN");
  ExpectError(Load({"--namespace-token", "=tok"}), "invalid_value", "namespace name");
  ExpectError(Load({"--namespace-token", "a="}), "invalid_value", "must not be empty");
  ExpectError(Load({"--namespace-token", "a=t1", "--namespace-token", "a=t2"}), "invalid_value",
              "more than one token");
  ExpectError(Load({"--namespace-token", "a=t,b=u"}), "invalid_value", "one NAME=TOKEN");
  ExpectError(Load({"--namespace-token", "a b=t"}), "invalid_value", "namespace name");
  // Only names a namespace can have (POST /namespaces): lower case, at most 64 bytes.
  ExpectError(Load({"--namespace-token", "Default=t"}), "invalid_value", "namespace name");
  ExpectError(Load({"--namespace-token", "a.b=t"}), "invalid_value", "namespace name");
  ExpectError(Load({"--namespace-token", std::string(65, 'n') + "=t"}), "invalid_value",
              "namespace name");
  EXPECT_TRUE(Load({"--namespace-token", std::string(64, 'n') + "=t"}).ok());
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_NAMESPACE_TOKENS", "a=t1,"}})), "invalid_value",
              "KEEL_ENGINE_NAMESPACE_TOKENS");
}

TEST(EngineConfig, RejectsTokensThatAreNotSubprotocolTokens) {
  ExpectError(Load({"--admin-token", "has space"}), "invalid_value", "--admin-token: admin token");
  ExpectError(Load({"--admin-token", "a,b"}), "invalid_value", "admin token");
  ExpectError(Load({"--gateway-token", "x\"y"}), "invalid_value", "gateway token");
  ExpectError(Load({"--namespace-token", "a=t/1"}), "invalid_value", "token of namespace 'a'");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_ADMIN_TOKEN", "a=b"}})), "invalid_value",
              "KEEL_ENGINE_ADMIN_TOKEN");
  EXPECT_TRUE(Load({"--admin-token", "Abc-123_.~!#$%&'*+^`|"}).ok());
}

TEST(EngineConfig, IsValidTokenAcceptsExactlyTchar) {
  EXPECT_TRUE(IsValidToken("dev"));
  EXPECT_TRUE(IsValidToken("a.b-c_d~e"));
  EXPECT_FALSE(IsValidToken(""));
  for (char c : std::string(" ,;=/()<>@:\\\"[]?{}\t")) {
    EXPECT_FALSE(IsValidToken(std::string("ab") + c)) << c;
  }
  EXPECT_FALSE(IsValidToken(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidToken("caf\xc3\xa9"));
}

TEST(EngineConfig, RejectsPortsOutOfRange) {
  ExpectError(Load({"--port", "65536"}), "invalid_value", "--port: must be between 0 and 65535");
  ExpectError(Load({"--port", "-1"}), "invalid_value", "between 0 and 65535");
  ExpectError(Load({"--port", "12ab"}), "invalid_value", "expected a decimal integer");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_PORT", "99999999999999999999"}})), "invalid_value",
              "KEEL_ENGINE_PORT");
  auto max = Load({"--port", "65535"});
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->port, 65535);
}

TEST(EngineConfig, RejectsUnknownStorageThreadsAndLogLevel) {
  ExpectError(Load({"--storage", "sqlite"}), "invalid_value", "got 'sqlite'");
  ExpectError(Load({"--threads", "0"}), "invalid_value", "--threads");
  ExpectError(Load({"--threads", "257"}), "invalid_value", "--threads");
  ExpectError(Load({"--io-spin-us", "-1"}), "invalid_value", "--io-spin-us");
  ExpectError(Load({"--io-spin-us", "100001"}), "invalid_value", "--io-spin-us");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_IO_SPIN_US", "fast"}})), "invalid_value",
              "KEEL_ENGINE_IO_SPIN_US");
  ExpectError(Load({"--sync-linger-us", "-1"}), "invalid_value", "--sync-linger-us");
  ExpectError(Load({"--sync-linger-us", "100001"}), "invalid_value", "--sync-linger-us");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_SYNC_LINGER_US", "long"}})), "invalid_value",
              "KEEL_ENGINE_SYNC_LINGER_US");
  ExpectError(Load({"--sync-thread-cpus", "on"}), "invalid_value", "--sync-thread-cpus");
  ExpectError(Load({"--sync-thread-cpus", "3-1"}), "invalid_value", "low to high");
  ExpectError(Load({"--sync-thread-cpus", ""}), "invalid_value", "--sync-thread-cpus");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_SYNC_THREAD_CPUS", "1024"}})), "invalid_value",
              "KEEL_ENGINE_SYNC_THREAD_CPUS");
  ExpectError(Load({"--inline-page-commit-bytes", "-1"}), "invalid_value",
              "--inline-page-commit-bytes");
  ExpectError(Load({"--inline-page-commit-bytes", "16777217"}), "invalid_value",
              "--inline-page-commit-bytes");
  ExpectError(Load({"--log-level", "verbose"}), "invalid_value", "log level");
}

TEST(EngineConfig, RejectsNonPositiveDurationsAndAPingIntervalNotBelowTheTimeout) {
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_ENVOY_LOST_THRESHOLD_MS", "0"}})), "invalid_value",
              "KEEL_ENGINE_ENVOY_LOST_THRESHOLD_MS");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_ENVOY_PING_INTERVAL_MS", "15000"}})), "invalid_value",
              "must be shorter than envoy_ping_timeout_ms");
}

TEST(EngineConfig, DurationsAreBoundedByThirtyDaysInEverySource) {
  // 9223372036854775807 ms overflowed the ms → ns conversion of a deadline (UBSan).
  ExpectError(
      Load({}, FakeEnv({{"KEEL_ENGINE_GATEWAY_ACTOR_READY_TIMEOUT_MS", "9223372036854775807"}})),
      "invalid_value",
      "KEEL_ENGINE_GATEWAY_ACTOR_READY_TIMEOUT_MS: gateway_actor_ready_timeout_ms must be "
      "at most 2592000000 ms (30 days)");
  TempFile file(R"({"envoy_lost_threshold_ms": 2592000001})");
  ExpectError(Load({"--config", file.path()}), "invalid_value",
              "envoy_lost_threshold_ms must be at most 2592000000 ms (30 days)");
  auto max = Load({}, FakeEnv({{"KEEL_ENGINE_GATEWAY_HWS_ACK_TIMEOUT_MS", "2592000000"}}));
  ASSERT_TRUE(max.ok()) << max.error().ToString();
  EXPECT_EQ(max->thresholds.gateway_hws_ack_timeout, milliseconds(2592000000));
  EngineConfig config;
  config.thresholds.gateway_actor_ready_timeout = milliseconds(2592000001);
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
}

// A key for a mechanism keel-engine does not have is refused, not accepted and ignored.
TEST(EngineConfig, KeysKeelDoesNotImplementAreRefusedFromEverySource) {
  for (const char* key : {"gateway_tunnel_ping_timeout_ms"}) {
    TempFile file(std::string(R"({")") + key + R"(": 5})");
    ExpectError(Load({"--config", file.path()}), "invalid_value",
                std::string(key) + " is not supported by keel-engine");
    std::string env = "KEEL_ENGINE_";
    for (const char* c = key; *c != '\0'; ++c) env += static_cast<char>(std::toupper(*c));
    ExpectError(Load({}, FakeEnv({{env, "5"}})), "invalid_value", env + ": " + key);
  }
  EngineConfig config;
  config.thresholds.gateway_tunnel_ping_timeout = milliseconds(5);
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  // The ones Keel has are taken.
  auto taken = Load({}, FakeEnv({{"KEEL_ENGINE_ACTOR_ALLOCATION_CANDIDATE_SAMPLE_SIZE", "3"},
                                 {"KEEL_ENGINE_HIBERNATING_REQUEST_ELIGIBLE_THRESHOLD_MS", "7"},
                                 {"KEEL_ENGINE_GATEWAY_HWS_ACK_TIMEOUT_MS", "8"}}));
  ASSERT_TRUE(taken.ok()) << taken.error().ToString();
  EXPECT_EQ(taken->thresholds.actor_allocation_candidate_sample_size, 3);
}

// Serverless drain and backoff (actors.md §6.10 step 4, §6.12): the four keys are taken from
// every source, checked, and reach the engine's options.
TEST(EngineConfig, ServerlessDrainAndBackoffKeysAreTakenAndChecked) {
  TempFile file(R"({"serverless_drain_grace_period_ms": 2500,
                    "serverless_base_retry_timeout_ms": 700,
                    "serverless_retry_reset_duration_ms": 9000,
                    "serverless_backoff_max_exponent": 3})");
  auto loaded = Load({"--config", file.path()});
  ASSERT_TRUE(loaded.ok()) << loaded.error().ToString();
  EXPECT_EQ(loaded->thresholds.serverless_drain_grace_period, milliseconds(2500));
  EXPECT_EQ(loaded->thresholds.serverless_base_retry_timeout, milliseconds(700));
  EXPECT_EQ(loaded->thresholds.serverless_retry_reset_duration, milliseconds(9000));
  EXPECT_EQ(loaded->thresholds.serverless_backoff_max_exponent, 3);
  EngineOptions o = ToEngineOptions(*loaded, 1234);
  EXPECT_EQ(o.serverless_drain_grace_period_ms, 2500);
  EXPECT_EQ(o.thresholds.serverless_base_retry_ms, 700);
  EXPECT_EQ(o.thresholds.serverless_retry_reset_ms, 9000);
  EXPECT_EQ(o.thresholds.serverless_max_backoff_exponent, 3);
  EXPECT_EQ(o.thresholds.base_retry_ms, 2000) << "the serverful backoff keeps its own";

  auto env = Load({}, FakeEnv({{"KEEL_ENGINE_SERVERLESS_BACKOFF_MAX_EXPONENT", "0"}}));
  ASSERT_TRUE(env.ok()) << env.error().ToString();
  EXPECT_EQ(env->thresholds.serverless_backoff_max_exponent, 0);
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_SERVERLESS_BACKOFF_MAX_EXPONENT", "63"}})),
              "invalid_value", "KEEL_ENGINE_SERVERLESS_BACKOFF_MAX_EXPONENT");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_SERVERLESS_DRAIN_GRACE_PERIOD_MS", "0"}})),
              "invalid_value", "KEEL_ENGINE_SERVERLESS_DRAIN_GRACE_PERIOD_MS");
  EngineConfig config;
  config.thresholds.serverless_base_retry_timeout = milliseconds(0);
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
}

// Serverless metadata polling (actors.md §6.11, §6.12): the three keys are taken from every
// source and checked: the interval not below its minimum, the minimum at least 100 ms, the
// success count positive.
TEST(EngineConfig, MetadataPollingKeysAreTakenAndChecked) {
  TempFile file(R"({"metadata_poll_interval_ms": 30000, "min_metadata_poll_interval_ms": 2000,
                    "runner_pool_error_clear_successes": 5})");
  auto loaded = Load({"--config", file.path()});
  ASSERT_TRUE(loaded.ok()) << loaded.error().ToString();
  EXPECT_EQ(loaded->thresholds.metadata_poll_interval, milliseconds(30000));
  EXPECT_EQ(loaded->thresholds.min_metadata_poll_interval, milliseconds(2000));
  EXPECT_EQ(loaded->thresholds.runner_pool_error_clear_successes, 5);
  auto env = Load({}, FakeEnv({{"KEEL_ENGINE_METADATA_POLL_INTERVAL_MS", "6000"},
                               {"KEEL_ENGINE_RUNNER_POOL_ERROR_CLEAR_SUCCESSES", "1"}}));
  ASSERT_TRUE(env.ok()) << env.error().ToString();
  EXPECT_EQ(env->thresholds.metadata_poll_interval, milliseconds(6000));
  EXPECT_EQ(env->thresholds.runner_pool_error_clear_successes, 1);

  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_METADATA_POLL_INTERVAL_MS", "4000"}})),
              "invalid_value", "must not be below min_metadata_poll_interval_ms (5000)");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_MIN_METADATA_POLL_INTERVAL_MS", "50"}})),
              "invalid_value", "min_metadata_poll_interval_ms must be at least 100 ms");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_RUNNER_POOL_ERROR_CLEAR_SUCCESSES", "0"}})),
              "invalid_value", "RUNNER_POOL_ERROR_CLEAR_SUCCESSES");
  ExpectError(Load({}, FakeEnv({{"KEEL_ENGINE_METADATA_POLL_INTERVAL_MS", "0"}})), "invalid_value",
              "METADATA_POLL_INTERVAL_MS");
  EngineConfig config;
  config.thresholds.runner_pool_error_clear_successes = 0;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig{};
  config.thresholds.min_metadata_poll_interval = milliseconds(20000);
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
}

TEST(EngineConfig, UnknownConfigKeyIsAnErrorNamingTheKey) {
  TempFile file(R"({"port": 1, "envoy_lost_treshold_ms": 5})");
  ExpectError(Load({"--config", file.path()}), "unknown_key", "'envoy_lost_treshold_ms'");
}

TEST(EngineConfig, ConfigFileValueOfTheWrongTypeIsAnError) {
  TempFile port(R"({"port": "6420"})");
  ExpectError(Load({"--config", port.path()}), "invalid_value", "key 'port': expected an integer");
  TempFile host(R"({"host": 1})");
  ExpectError(Load({"--config", host.path()}), "invalid_value", "key 'host': expected a string");
  TempFile fraction(R"({"threads": 2.5})");
  ExpectError(Load({"--config", fraction.path()}), "invalid_value", "expected an integer");
  TempFile tokens(R"({"namespace_tokens": "a=b"})");
  ExpectError(Load({"--config", tokens.path()}), "invalid_value", "expected an object");
}

TEST(EngineConfig, BrokenOrMissingConfigFileIsAnError) {
  TempFile broken(R"({"port": )");
  ExpectError(Load({"--config", broken.path()}), "invalid_json", "not valid JSON");
  TempFile array("[1, 2]");
  ExpectError(Load({"--config", array.path()}), "invalid_json", "JSON object");
  ExpectError(Load({"--config", "/nonexistent/keel/engine.json"}), "file_unreadable",
              "/nonexistent/keel/engine.json");
}

TEST(EngineConfig, HelpIsADistinguishableResult) {
  for (const char* flag : {"--help", "-h"}) {
    auto uut = Load({flag});
    ASSERT_FALSE(uut.ok());
    EXPECT_TRUE(IsHelpRequested(uut.error()));
    EXPECT_NE(uut.error().message().find("--namespace-token"), std::string::npos);
    EXPECT_NE(uut.error().message().find("KEEL_ENGINE_"), std::string::npos);
  }
  auto not_help = Load({"--port", "x"});
  ASSERT_FALSE(not_help.ok());
  EXPECT_FALSE(IsHelpRequested(not_help.error()));
}

TEST(EngineConfig, UnknownFlagsAndPositionalArgumentsAreErrors) {
  ExpectError(Load({"--prot", "1"}), "invalid_flag", "");
  ExpectError(Load({"serve"}), "invalid_flag", "");
  ExpectError(Load({"--port"}), "invalid_flag", "");
  // One NAME=TOKEN per occurrence; a second word is a stray argument.
  ExpectError(Load({"--namespace-token", "a=t1", "b=t2"}), "invalid_flag", "b=t2");
}

TEST(EngineConfig, FlagValuesMayUseTheEqualsForm) {
  auto uut = Load({"--namespace-token=a=t1", "--port=7001"});
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  EXPECT_EQ(uut->namespace_tokens, (std::map<std::string, std::string>{{"a", "t1"}}));
  EXPECT_EQ(uut->port, 7001);
}

TEST(EngineConfig, NonLoopbackHostNeedsAnAdminToken) {
  ExpectError(Load({"--host", "0.0.0.0"}), "insecure_bind", "'0.0.0.0' without an admin token");
  ExpectError(Load({"--host", "10.1.2.3"}), "insecure_bind", "admin token");
  ExpectError(Load({"--host", "::"}), "insecure_bind", "admin token");
  ExpectError(Load({"--host", "example.com"}), "insecure_bind", "admin token");
  ExpectError(Load({"--host", "0.0.0.0", "--gateway-token", "gw"}), "insecure_bind", "admin token");
  EXPECT_TRUE(Load({"--host", "0.0.0.0", "--admin-token", "secret"}).ok());
  EXPECT_TRUE(
      Load({}, FakeEnv({{"KEEL_ENGINE_HOST", "0.0.0.0"}, {"KEEL_ENGINE_ADMIN_TOKEN", "secret"}}))
          .ok());
  for (const char* host : {"localhost", "127.0.0.1", "127.9.8.7", "::1", "[::1]"}) {
    EXPECT_TRUE(Load({"--host", host}).ok()) << host;
  }
}

TEST(EngineConfig, IsLoopbackHostIsAPureStringCheck) {
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("LocalHost"));
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.255.255.254"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("0:0:0:0:0:0:0:1"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_TRUE(IsLoopbackHost("::ffff:127.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("::2"));
  EXPECT_FALSE(IsLoopbackHost("localhost.example.com"));
  EXPECT_FALSE(IsLoopbackHost("127.0.0.1.nip.io"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

TEST(EngineConfig, ValidateChecksProgrammaticConfigs) {
  EngineConfig config;
  EXPECT_TRUE(ValidateEngineConfig(config).ok());
  config.threads = 0;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.io_spin_us = -1;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.inline_sync_us = 100001;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config.inline_sync_us = -1;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.sync_linger_us = 100001;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config.sync_linger_us = -1;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.sync_thread_cpus = "1,";
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config.sync_thread_cpus = "Auto";
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.inline_page_commit_bytes = (int64_t{16} << 20) + 1;
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.admin_token = "bad token";
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.thresholds.actor_stop_threshold = milliseconds(-1);
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.host = "";
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
  config = EngineConfig();
  config.host = "bad host";
  EXPECT_TRUE(ValidateEngineConfig(config).error().Is("config", "invalid_value"));
}

TEST(EngineConfig, StorageTakesAPostgresUrlAndNeverEchoesOne) {
  auto uri = Load({"--storage", "postgresql://keel:pw1@db.internal:5432/keel"});
  ASSERT_TRUE(uri.ok()) << uri.error().ToString();
  EXPECT_EQ(uri->storage, StorageKind::kPostgres);
  EXPECT_EQ(uri->postgres_url, "postgresql://keel:pw1@db.internal:5432/keel");
  std::string text = DescribeConfig(*uri);
  EXPECT_NE(text.find("storage=postgres"), std::string::npos) << text;
  EXPECT_EQ(text.find("pw1"), std::string::npos) << text;
  EXPECT_EQ(text.find("data_dir"), std::string::npos) << text;

  auto short_scheme = Load({}, FakeEnv({{"KEEL_ENGINE_STORAGE", "postgres:///keel?host=/run"}}));
  ASSERT_TRUE(short_scheme.ok()) << short_scheme.error().ToString();
  EXPECT_EQ(short_scheme->storage, StorageKind::kPostgres);

  // A mistyped scheme may still carry a password: the error does not repeat the value.
  auto typo = Load({"--storage", "postgress://keel:pw2@db/keel"});
  ASSERT_FALSE(typo.ok());
  EXPECT_TRUE(typo.error().Is("config", "invalid_value")) << typo.error().ToString();
  EXPECT_EQ(typo.error().ToString().find("pw2"), std::string::npos) << typo.error().ToString();
}

TEST(EngineConfig, DescribeRedactsTokensAndListsOverrides) {
  auto uut =
      Load({"--admin-token", "s3cret", "--namespace-token", "default=nstok", "--port", "7000"},
           FakeEnv({{"KEEL_ENGINE_ENVOY_LOST_THRESHOLD_MS", "20000"}}));
  ASSERT_TRUE(uut.ok()) << uut.error().ToString();
  std::string text = DescribeConfig(*uut);
  EXPECT_EQ(text,
            "host=127.0.0.1 port=7000 storage=rocksdb data_dir=./keel-data threads=1 "
            "io_spin_us=100 inline_sync_us=20 sync_linger_us=300 sync_thread_cpus=auto "
            "inline_page_commit_bytes=65536 "
            "log_level=info "
            "admin_token=<redacted> "
            "gateway_token=<none> "
            "namespace_tokens=[default] envoy_lost_threshold_ms=20000");
  EXPECT_EQ(text.find("s3cret"), std::string::npos);
  EXPECT_EQ(text.find("nstok"), std::string::npos);
}

}  // namespace
}  // namespace keel::engine
