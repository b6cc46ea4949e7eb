// actors.md §8.32 conn-error-serialization: a structured error thrown by createConnState
// reaches the connection's first action with its group and code; coded user errors keep
// message, code and metadata over a connection.
#include <chrono>
#include <string>

#include "net/blocking_ws_client.h"
#include "support/acceptance.h"
#include "support/expect.h"
#include "support/ws_expect.h"

namespace keel::acceptance {
namespace {

class ConnErrorSerializationTest : public EncodingTest {};

TEST_P(ConnErrorSerializationTest, CreateConnStateErrorReachesFirstAction) {
  client::GetOrCreateOptions opts;
  opts.params = Value::Object({{"shouldThrow", true}});
  auto conn = client().GetOrCreate("connErrorSerializationActor", {UniqueKey("ces-throw")}, opts).Connect();
  auto r = conn->Action("getValue", Value::ArrayOf({}), std::chrono::seconds(10));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().group, "connection") << r.error().ToString();
  EXPECT_EQ(r.error().code, "custom_error") << r.error().ToString();
  conn->Dispose();
}

TEST_P(ConnErrorSerializationTest, WithoutThrowWorks) {
  auto conn = client().GetOrCreate("connErrorSerializationActor", {UniqueKey("ces-ok")}).Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<int64_t>("getValue")), 0);
  conn->Dispose();
}

TEST_P(ConnErrorSerializationTest, CodedUserErrorOverConnection) {
  auto conn = client().GetOrCreate("connErrorSerializationActor", {UniqueKey("ces-detailed")}).Connect();
  auto r = conn->Call("throwDetailedError");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().group, "user");
  EXPECT_EQ(r.error().code, "detailed_error");
  EXPECT_EQ(r.error().message, "Detailed error message");
  ASSERT_TRUE(r.error().metadata.has_value());
  json m = AsJson(*r.error().metadata);
  EXPECT_EQ(m["reason"], "test") << m;
  EXPECT_TRUE(m["timestamp"].is_number()) << m;
  conn->Dispose();
}

KEEL_ACCEPTANCE_ENCODINGS(ConnErrorSerialization, ConnErrorSerializationTest);

// §4.6 on the wire, without the client: a connection whose setup throws gets the Error frame
// (no actionId) and then the close 1011 `<group>.<code>`, promptly, through the gateway —
// whether the gateway's getOrCreate creates the actor for this socket or finds it running.
class ConnErrorSerializationTest_RawWs : public PlainTest {
 protected:
  // Two sockets to a fresh key of `actor` with `params` (URL-encoded JSON): the first
  // creates the actor, the second finds it running.
  void ExpectErrorThenClose(const std::string& actor, const std::string& params,
                            const std::string& group, const std::string& code) {
    using namespace std::chrono_literals;
    const std::string path = "/gateway/" + actor +
                             "/connect?rvt-namespace=default&rvt-method=getOrCreate"
                             "&rvt-runner=default&rvt-key=" +
                             UniqueKey("ces-raw");
    for (const char* round : {"creates the actor", "actor running"}) {
      SCOPED_TRACE(std::string(actor) + ", " + round);
      net::WsConnectOptions options;
      options.url = "ws" + Endpoint().substr(4) + path;
      options.subprotocols = {"rivet", "rivet_encoding.json", "rivet_conn_params." + params};
      auto ws = net::BlockingWsClient::Connect(options, 5s);
      ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
      json error = NextWsJson(**ws, 5s);
      ASSERT_TRUE(error.is_object()) << error;
      EXPECT_EQ(error["body"]["tag"], "Error") << error;
      const json& val = error["body"]["val"];
      EXPECT_EQ(val["group"], group) << error;
      EXPECT_EQ(val["code"], code) << error;
      EXPECT_TRUE(!val.contains("actionId") || val["actionId"].is_null()) << error;
      EXPECT_TRUE(keel::testing::NextIsClose(**ws, 1011, group + "." + code, 2s))
          << "after the Error frame";
    }
  }
};

TEST_F(ConnErrorSerializationTest_RawWs, CreateConnStateErrorIsAnErrorFrameThenClose) {
  ExpectErrorThenClose("connErrorSerializationActor", "%7B%22shouldThrow%22%3Atrue%7D",
                       "connection", "custom_error");
}

TEST_F(ConnErrorSerializationTest_RawWs, OnBeforeConnectRejectionIsAnErrorFrameThenClose) {
  ExpectErrorThenClose("beforeConnectRejectActor", "%7B%22shouldReject%22%3Atrue%7D", "user",
                       "connection_rejected");
}

}  // namespace
}  // namespace keel::acceptance
