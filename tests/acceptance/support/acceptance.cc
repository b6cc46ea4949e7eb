// The acceptance harness: engine + fixture runtime processes and shared helpers.
#include "support/acceptance.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "base/native/subprocess.h"
#include "net/client.h"

#ifndef KEEL_ACCEPTANCE_ENGINE_BIN
#error "KEEL_ACCEPTANCE_ENGINE_BIN must be defined by CMake"
#endif
#ifndef KEEL_ACCEPTANCE_FIXTURES_BIN
#error "KEEL_ACCEPTANCE_FIXTURES_BIN must be defined by CMake"
#endif
#ifndef KEEL_ACCEPTANCE_JS_FIXTURES
#error "KEEL_ACCEPTANCE_JS_FIXTURES must be defined by CMake"
#endif
#ifndef KEEL_ACCEPTANCE_WASM_MODULE
#error "KEEL_ACCEPTANCE_WASM_MODULE must be defined by CMake"
#endif

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

std::string g_endpoint;

std::string LogLevel() {
  const char* level = std::getenv("KEEL_ACCEPTANCE_LOG");
  return level != nullptr && *level != '\0' ? level : "warn";
}

// The fixture runtime for this process's runtime kind: keel-acceptance-fixtures (native),
// or the JavaScript fixtures (tests/acceptance/js) on the wasm runtime in Node.
Result<std::unique_ptr<Subprocess>> StartFixtureRuntime(std::vector<std::pair<std::string, std::string>> env) {
  if (RuntimeKind() == "wasm") {
    return Subprocess::Start({.path = "/usr/bin/env",
                              .args = {"node", "--experimental-websocket", KEEL_ACCEPTANCE_JS_FIXTURES},
                              .env = std::move(env)});
  }
  return Subprocess::Start({.path = KEEL_ACCEPTANCE_FIXTURES_BIN, .env = std::move(env)});
}

bool EnvoyListed(const std::string& pool) {
  auto r = net::FetchSync(g_endpoint + "/envoys?namespace=default&name=" + pool,
                          net::HttpRequest{.method = "GET"}, 5s);
  if (!r.has_value() || r->status != 200) return false;
  json j = ParseBody(r->body);
  if (!j.is_object() || !j["envoys"].is_array()) return false;
  // A stopped envoy (stop_ts) stays listed for a while: only a connected one counts.
  for (const auto& e : j["envoys"]) {
    if (e.is_object() && !e.contains("stop_ts")) return true;
  }
  return false;
}

class StackEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string& cell = SqliteCell();
    ASSERT_TRUE(cell == "local" || cell == "remote")
        << "KEEL_ACCEPTANCE_SQLITE_BACKEND must be local or remote, got `" << cell << "`";
    ASSERT_TRUE(RuntimeKind() == "native" || RuntimeKind() == "wasm")
        << "KEEL_ACCEPTANCE_RUNTIME must be native or wasm, got `" << RuntimeKind() << "`";
    // wasm/local is not a cell: the wasm runtime has no SQLite of its own.
    ASSERT_FALSE(RuntimeKind() == "wasm" && cell == "local")
        << "the wasm runtime has only the remote SQLite backend (KEEL_ACCEPTANCE_SQLITE_BACKEND=remote)";
    if (RuntimeKind() == "wasm") {
      ASSERT_TRUE(std::filesystem::exists(KEEL_ACCEPTANCE_WASM_MODULE))
          << KEEL_ACCEPTANCE_WASM_MODULE << " is missing: build the wasm preset first "
          << "(cmake --preset wasm && cmake --build --preset wasm --target keel_wasm)";
    }
    char tmpl[] = "/tmp/keel-acceptance-XXXXXX";
    const char* dir = ::mkdtemp(tmpl);
    ASSERT_NE(dir, nullptr) << "mkdtemp failed";
    data_dir_ = dir;

    auto engine = Subprocess::Start({.path = KEEL_ACCEPTANCE_ENGINE_BIN,
                                     .args = {"--host", "127.0.0.1", "--port", "0", "--data-dir",
                                              data_dir_ + "/data", "--log-level", LogLevel()},
                                     .capture_stdout = true});
    ASSERT_TRUE(engine.has_value()) << engine.error().ToString();
    engine_ = std::move(*engine);
    auto line = engine_->WaitForLine("listening on ", 60s);
    ASSERT_TRUE(line.has_value()) << "keel-engine did not start: " << line.error().ToString();
    const std::string address = line->substr(line->find("listening on ") + 13);
    g_endpoint = "http://" + address;

    auto runtime = StartFixtureRuntime({{"KEEL_ENDPOINT", g_endpoint},
                                        {"KEEL_NAMESPACE", "default"},
                                        {"KEEL_POOL", "default"},
                                        {"KEEL_INSPECTOR_TOKEN", std::string(kInspectorToken)},
                                        {"KEEL_SQLITE_BACKEND", cell},
                                        {"KEEL_LOG_LEVEL", LogLevel()}});
    ASSERT_TRUE(runtime.has_value()) << runtime.error().ToString();
    runtime_ = std::move(*runtime);

    // The runtime's envoy is listed once it connected (actors.md §8.0).
    const bool listed = WaitFor([&] { return !runtime_->running() || EnvoyListed("default"); }, 60s);
    ASSERT_TRUE(runtime_->running()) << "the fixture runtime (" << RuntimeKind() << ") exited: "
                                     << runtime_->ExitDescription().value_or("?");
    ASSERT_TRUE(listed) << "the fixture runtime's envoy was not listed within 60 s";
  }

  void TearDown() override {
    // Runtime first: its actors stop and save while the engine still runs.
    if (runtime_) runtime_->Stop(10s);
    if (engine_) engine_->Stop(10s);
    runtime_.reset();
    engine_.reset();
    std::error_code ec;
    if (!data_dir_.empty()) std::filesystem::remove_all(data_dir_, ec);
  }

 private:
  std::string data_dir_;
  std::unique_ptr<Subprocess> engine_;
  std::unique_ptr<Subprocess> runtime_;
};

// Registered at static initialisation (this file is compiled into acceptance_test).
[[maybe_unused]] ::testing::Environment* const g_environment =
    ::testing::AddGlobalTestEnvironment(new StackEnvironment);

std::mutex g_clients_mu;
std::map<wire::Encoding, std::unique_ptr<client::Client>>& Clients() {
  static std::map<wire::Encoding, std::unique_ptr<client::Client>> clients;
  return clients;
}

}  // namespace

const std::string& Endpoint() { return g_endpoint; }

std::string UniqueKey(std::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return std::string(prefix) + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" +
         std::to_string(salt % 1000000);
}

client::Client& ClientFor(wire::Encoding encoding) {
  std::lock_guard<std::mutex> lock(g_clients_mu);
  auto& slot = Clients()[encoding];
  if (!slot) {
    client::ClientOptions options;
    options.endpoint = g_endpoint;
    options.namespace_name = "default";
    options.pool = "default";
    options.encoding = encoding;
    slot = std::make_unique<client::Client>(options);
  }
  return *slot;
}

net::HttpResponse HttpUrl(const std::string& method, const std::string& url, std::string body,
                          net::Headers headers) {
  net::HttpRequest req;
  req.method = method;
  req.headers = std::move(headers);
  req.body = std::move(body);
  auto res = net::FetchSync(url, std::move(req), 15s);
  if (!res.has_value()) {
    ADD_FAILURE() << method << " " << url << ": " << res.error().ToString();
    return net::HttpResponse{0, {}, ""};
  }
  return std::move(*res);
}

net::HttpResponse Http(const std::string& method, const std::string& path, std::string body,
                       net::Headers headers) {
  return HttpUrl(method, g_endpoint + path, std::move(body), std::move(headers));
}

json ParseBody(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  return j.is_discarded() ? json(body) : j;
}

json AsJson(const Value& v) { return ParseBody(ToJson(v)); }

Value FromJson(const json& j) {
  auto v = ParseJson(j.dump());
  return v.ok() ? std::move(*v) : Value(Value::Null{});
}

std::string HeaderOf(const net::Headers& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (k.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < k.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(k[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (same) return v;
  }
  return "";
}

std::string QueryActionPath(std::string_view name, std::string_view action, std::string_view key) {
  return "/gateway/" + std::string(name) + "/action/" + std::string(action) +
         "?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=" + std::string(key);
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

json NextWsJson(net::BlockingWsClient& ws, std::chrono::milliseconds timeout) {
  auto ev = ws.Receive(timeout);
  if (!ev.has_value()) {
    ADD_FAILURE() << "no message: " << ev.error().ToString();
    return nullptr;
  }
  if (auto* m = std::get_if<net::BlockingWsClient::Message>(&*ev)) return ParseBody(m->data);
  const auto& closed = std::get<net::BlockingWsClient::Closed>(*ev);
  ADD_FAILURE() << "closed (" << closed.code << " " << closed.reason << ") instead of a message";
  return nullptr;
}

std::string EncodingParamName(const ::testing::TestParamInfo<wire::Encoding>& info) {
  return std::string(wire::EncodingName(info.param));
}

const std::string& SqliteCell() {
  static const std::string cell = [] {
    const char* v = std::getenv("KEEL_ACCEPTANCE_SQLITE_BACKEND");
    if (v != nullptr && *v != '\0') return std::string(v);
    return std::string(RuntimeKind() == "wasm" ? "remote" : "local");
  }();
  return cell;
}

std::string SqliteCellParamName(const ::testing::TestParamInfo<wire::Encoding>& info) {
  const std::string runtime = RuntimeKind() == "wasm" ? "wasm_" : "";
  return runtime + SqliteCell() + "_" + std::string(wire::EncodingName(info.param));
}

const std::string& RuntimeKind() {
  static const std::string kind = [] {
    const char* v = std::getenv("KEEL_ACCEPTANCE_RUNTIME");
    return std::string(v != nullptr && *v != '\0' ? v : "native");
  }();
  return kind;
}

std::string CreatePrivatePool(std::string_view prefix) {
  const std::string pool = std::string(prefix) + "-" + UniqueKey("pool");
  json dcs = ParseBody(Http("GET", "/datacenters").body);
  if (!dcs.is_object() || !dcs["datacenters"].is_array() || dcs["datacenters"].empty()) {
    ADD_FAILURE() << "GET /datacenters: " << dcs.dump();
    return "";
  }
  const std::string dc = dcs["datacenters"][0]["name"].get<std::string>();
  auto put = Http("PUT", "/runner-configs/" + pool + "?namespace=default",
                  json{{"datacenters", {{dc, {{"normal", json::object()}}}}}}.dump(),
                  {{"content-type", "application/json"}});
  if (put.status != 200) {
    ADD_FAILURE() << "PUT /runner-configs/" << pool << ": " << put.status << " " << put.body;
    return "";
  }
  return pool;
}

std::unique_ptr<Subprocess> StartPrivateRuntime(const std::string& pool, const std::string& sqlite_backend) {
  auto r = StartFixtureRuntime({{"KEEL_ENDPOINT", g_endpoint},
                                {"KEEL_NAMESPACE", "default"},
                                {"KEEL_POOL", pool},
                                {"KEEL_SQLITE_BACKEND", sqlite_backend},
                                {"KEEL_LOG_LEVEL", LogLevel()}});
  if (!r.has_value()) {
    ADD_FAILURE() << "starting a private runtime: " << r.error().ToString();
    return nullptr;
  }
  std::unique_ptr<Subprocess> runtime = std::move(*r);
  if (!WaitFor([&] { return !runtime->running() || EnvoyListed(pool); }, 30s) || !runtime->running()) {
    ADD_FAILURE() << "the private runtime for pool " << pool << " did not come up: "
                  << runtime->ExitDescription().value_or("still running, envoy not listed");
    return nullptr;
  }
  return runtime;
}

}  // namespace keel::acceptance
