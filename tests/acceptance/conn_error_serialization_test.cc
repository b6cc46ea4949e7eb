// actors.md §8.32 conn-error-serialization: a structured error thrown by createConnState
// reaches the connection's first action with its group and code; coded user errors keep
// message, code and metadata over a connection.
#include "support/acceptance.h"
#include "support/expect.h"

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

}  // namespace
}  // namespace keel::acceptance
