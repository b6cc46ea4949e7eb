// The acceptance harness (actors.md §8.0): a gtest Environment that starts ONE real
// keel-engine (port 0, RocksDB in a fresh temp dir) and ONE keel-acceptance-fixtures runtime
// per test process, waits until the runtime's envoy is listed, and stops both at the end
// (runtime first). Tests reach them through keel::client and plain HTTP helpers.
//
//   class ActorStateTest : public keel::acceptance::EncodingTest {};
//   TEST_P(ActorStateTest, Persists) {
//     auto h = client().GetOrCreate("counter", {UniqueKey("persist")});
//     EXPECT_EQ(*h.Call<int64_t>("increment", 5), 5);
//   }
//   KEEL_ACCEPTANCE_ENCODINGS(ActorState, ActorStateTest);   // ActorState/ActorStateTest.Persists/bare
//
// Environment variables: KEEL_ACCEPTANCE_LOG (engine and runtime log level, default
// "warn"); KEEL_ACCEPTANCE_SQLITE_BACKEND (local|remote, default local): the SQLite cell —
// the runtime is started with KEEL_SQLITE_BACKEND=<it> (the ctest entries
// acceptance.<sqlite category>.<backend> set it); KEEL_ACCEPTANCE_RUNTIME (native|wasm,
// default native): which fixture runtime serves the actors (RuntimeKind()). Binaries come from CMake
// (KEEL_ACCEPTANCE_ENGINE_BIN, ..._FIXTURES_BIN).
// Thread-safety: the accessors may be called from any test thread once the Environment is
// set up; clients are shared per encoding.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/native/subprocess.h"
#include "client/client.h"
#include "net/http.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::acceptance {

using json = nlohmann::json;

// "http://127.0.0.1:<port>" of the engine under test.
const std::string& Endpoint();
// The inspector token the fixture runtime was started with.
inline constexpr std::string_view kInspectorToken = "token";

// A key component no other test (in any process) uses: "<prefix>-<pid>-<n>-<random>".
std::string UniqueKey(std::string_view prefix);

// A client for `encoding`, shared by the tests of this process.
client::Client& ClientFor(wire::Encoding encoding);

// One HTTP request against the engine (`path` starts with '/'); failures to connect are
// test failures with status 0.
net::HttpResponse Http(const std::string& method, const std::string& path, std::string body = "",
                       net::Headers headers = {});
// One HTTP request against a full URL.
net::HttpResponse HttpUrl(const std::string& method, const std::string& url, std::string body = "",
                          net::Headers headers = {});
// The body as JSON (a JSON string of the raw text when it is not JSON).
json ParseBody(const std::string& body);
// An application value as JSON (keel's JSON rendering with the §4.8 escapes).
json AsJson(const Value& v);
// A JSON document as an application value.
Value FromJson(const json& j);
// The header `name` (case-insensitive) or "".
std::string HeaderOf(const net::Headers& headers, std::string_view name);
// The query form of an action call through the gateway (raw HTTP, JSON encoding):
// /gateway/<name>/action/<action>?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=<key>
std::string QueryActionPath(std::string_view name, std::string_view action, std::string_view key);

void SleepMs(int ms);

// The next message on a raw WebSocket as JSON; a test failure and null when the socket
// closes or nothing arrives within `timeout`.
json NextWsJson(net::BlockingWsClient& ws, std::chrono::milliseconds timeout = std::chrono::seconds(5));

// Waits for `pred` (polling every 10 ms) at most `timeout`; returns its last value.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    SleepMs(10);
  }
  return pred();
}

// A test parameterised over the three encodings (json, cbor, bare).
class EncodingTest : public ::testing::TestWithParam<wire::Encoding> {
 protected:
  wire::Encoding encoding() const { return GetParam(); }
  client::Client& client() { return ClientFor(GetParam()); }
};

// A test run once (raw HTTP, gateway routing, REST); its client speaks bare.
class PlainTest : public ::testing::Test {
 protected:
  client::Client& client() { return ClientFor(wire::Encoding::kBare); }
};

// "json" / "cbor" / "bare" for test names.
std::string EncodingParamName(const ::testing::TestParamInfo<wire::Encoding>& info);

// ---- SQLite matrix (actors.md §8.0: native/local and native/remote × 3 encodings) ----

// This process's SQLite cell: "local" or "remote" (KEEL_ACCEPTANCE_SQLITE_BACKEND, default
// "local" natively, "remote" in wasm). The harness's runtime runs with KEEL_SQLITE_BACKEND
// set to it.
const std::string& SqliteCell();
// This process's runtime: "native" (keel-acceptance-fixtures, the default) or "wasm" (the
// JavaScript fixtures of tests/acceptance/js on the wasm runtime in Node), from
// KEEL_ACCEPTANCE_RUNTIME; the ctest entries acceptance.<category>.wasm set it.
const std::string& RuntimeKind();
// "[wasm_]<backend>_<encoding>" for test names: ActorDb/ActorDbTest.Crud/remote_cbor,
// ActorDb/ActorDbTest.Crud/wasm_remote_cbor.
std::string SqliteCellParamName(const ::testing::TestParamInfo<wire::Encoding>& info);

// A test of a SQLite category, run in this process's cell for one encoding.
class SqliteCellTest : public EncodingTest {
 protected:
  const std::string& backend() const { return SqliteCell(); }
};

// ---- Private runtimes (hard crash, backend switch) ----

// Creates a `normal` runner config for a fresh pool name in this engine's datacenter and
// returns the name (a test failure and "" when the engine refuses).
std::string CreatePrivatePool(std::string_view prefix);
// Starts another keel-acceptance-fixtures process serving `pool` with
// KEEL_SQLITE_BACKEND=`sqlite_backend` and waits until its envoy is listed (at most 30 s);
// nullptr (and a test failure) when it does not come up.
std::unique_ptr<Subprocess> StartPrivateRuntime(const std::string& pool, const std::string& sqlite_backend);

}  // namespace keel::acceptance

// Instantiates a SqliteCellTest suite for json, cbor and bare as
// `Prefix/Suite.Case/<backend>_<encoding>` (backend = this process's cell).
#define KEEL_ACCEPTANCE_SQLITE_CELLS(Prefix, Suite)                                                \
  INSTANTIATE_TEST_SUITE_P(Prefix, Suite,                                                          \
                           ::testing::Values(::keel::wire::Encoding::kJson, ::keel::wire::Encoding::kCbor, \
                                             ::keel::wire::Encoding::kBare),                       \
                           ::keel::acceptance::SqliteCellParamName)
// The same for checks that do not depend on the encoding (private runtimes): bare only,
// `Prefix/Suite.Case/<backend>_bare`.
#define KEEL_ACCEPTANCE_SQLITE_CELL_ONCE(Prefix, Suite)                                            \
  INSTANTIATE_TEST_SUITE_P(Prefix, Suite, ::testing::Values(::keel::wire::Encoding::kBare),        \
                           ::keel::acceptance::SqliteCellParamName)

// Instantiates `Suite` for json, cbor and bare as `Prefix/Suite.Case/<encoding>`.
#define KEEL_ACCEPTANCE_ENCODINGS(Prefix, Suite)                                                   \
  INSTANTIATE_TEST_SUITE_P(Prefix, Suite,                                                          \
                           ::testing::Values(::keel::wire::Encoding::kJson, ::keel::wire::Encoding::kCbor, \
                                             ::keel::wire::Encoding::kBare),                       \
                           ::keel::acceptance::EncodingParamName)

// Unwraps a ClientResult in a test: fails the test (with the error) when it is an error.
#define KEEL_OK(expr)                                                                   \
  ([&]() {                                                                              \
    auto keel_ok_result = (expr);                                                       \
    if (!keel_ok_result.has_value()) {                                                  \
      ADD_FAILURE() << #expr << " failed: " << keel_ok_result.error().ToString();       \
      throw ::keel::acceptance::TestAbort();                                            \
    }                                                                                   \
    return std::move(*keel_ok_result);                                                  \
  }())

namespace keel::acceptance {
// Thrown by KEEL_OK to end a test after a recorded failure (gtest catches it).
struct TestAbort {};
}  // namespace keel::acceptance
