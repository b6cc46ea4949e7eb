// actors.md §8.41 request-access: c.request() in onBeforeConnect and createConnState
// describes the HTTP request behind the connection (the /connect upgrade or the action's
// POST), recorded only when params carry trackRequest.
#include <gmock/gmock.h>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class RequestAccessTest : public EncodingTest {
 protected:
  client::ActorHandle Handle(const std::string& key, bool track) {
    client::GetOrCreateOptions opts;
    if (track) opts.params = Value::Object({{"trackRequest", true}});
    return client().GetOrCreate("requestAccessActor", {key}, opts);
  }
};

TEST_P(RequestAccessTest, ConnectionHooksSeeTheRequest) {
  auto conn = Handle(UniqueKey("ra-conn"), true).Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  json info = AsJson(KEEL_OK(conn->Call("getRequestInfo")));
  for (const char* hook : {"onBeforeConnectRequest", "createConnStateRequest"}) {
    const json& r = info[hook];
    EXPECT_EQ(r["hasRequest"], true) << hook << ": " << info;
    ASSERT_TRUE(r["requestUrl"].is_string()) << hook << ": " << info;
    EXPECT_THAT(r["requestUrl"].get<std::string>(), HasSubstr("/connect")) << hook;
    EXPECT_EQ(r["requestMethod"], "GET") << hook;
    EXPECT_TRUE(r["requestHeaders"].is_object()) << hook;
  }
  json conn_state = AsJson(KEEL_OK(conn->Call("getConnRequestInfo")));
  EXPECT_EQ(conn_state["trackRequest"], true) << conn_state;
  EXPECT_EQ(conn_state["requestInfo"]["hasRequest"], true) << conn_state;
  conn->Dispose();
}

TEST_P(RequestAccessTest, NothingRecordedWithoutTracking) {
  auto conn = Handle(UniqueKey("ra-none"), false).Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  json info = AsJson(KEEL_OK(conn->Call("getRequestInfo")));
  EXPECT_EQ(info["onBeforeConnectRequest"]["hasRequest"], false) << info;
  EXPECT_EQ(info["createConnStateRequest"]["hasRequest"], false) << info;
  EXPECT_TRUE(info["onBeforeConnectRequest"]["requestUrl"].is_null()) << info;
  conn->Dispose();
}

TEST_P(RequestAccessTest, HeadersAreAnObject) {
  auto conn = Handle(UniqueKey("ra-headers"), true).Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  json r = AsJson(KEEL_OK(conn->Call("getRequestInfo")))["onBeforeConnectRequest"];
  EXPECT_TRUE(r["requestHeaders"].is_object()) << r;
  EXPECT_FALSE(r["requestHeaders"].empty()) << r;
  EXPECT_FALSE(r["requestMethod"].get<std::string>().empty());
  EXPECT_FALSE(r["requestUrl"].get<std::string>().empty());
  conn->Dispose();
}

TEST_P(RequestAccessTest, StatelessActionSeesItsHttpRequest) {
  auto h = Handle(UniqueKey("ra-http"), true);
  json info = AsJson(KEEL_OK(h.Call("getRequestInfo")));
  const json& r = info["onBeforeConnectRequest"];
  EXPECT_EQ(r["hasRequest"], true) << info;
  EXPECT_EQ(r["requestMethod"], "POST") << info;
  EXPECT_THAT(r["requestUrl"].get<std::string>(), HasSubstr("/action/getRequestInfo"));
  EXPECT_EQ(r["requestHeaders"]["x-rivet-encoding"], std::string(wire::EncodingName(encoding()))) << info;
}

KEEL_ACCEPTANCE_ENCODINGS(RequestAccess, RequestAccessTest);

}  // namespace
}  // namespace keel::acceptance
