// actors.md §8.36 lifecycle-hooks: onBeforeConnect rejecting with a user error or a plain
// error (the connection's action rejects) or accepting; onStateChange writing vars does not
// re-trigger it; writing state inside it fails with actor.state_mutation_reentrant.
//
// C++ note: onStateChange runs once per action that changed the state (docs/runtime.md), so
// "three sets" are three setValue actions.
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class LifecycleHooksTest : public EncodingTest {
 protected:
  std::shared_ptr<client::ActorConn> Connect(const std::string& name, const std::string& key, Value params) {
    client::GetOrCreateOptions o;
    o.params = std::move(params);
    return client().GetOrCreate(name, {key}, o).Connect();
  }
};

TEST_P(LifecycleHooksTest, RejectingOnBeforeConnectRejectsTheAction) {
  auto conn = Connect("beforeConnectRejectActor", UniqueKey("hooks-reject"), Value::Object({{"shouldReject", true}}));
  auto r = conn->Action("ping", Value(Value::Array{}), 10s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().Id(), "user.connection_rejected") << r.error().ToString();
  EXPECT_EQ(r.error().message, "Connection rejected by policy");
  conn->Dispose();
}

TEST_P(LifecycleHooksTest, AcceptingOnBeforeConnect) {
  auto conn = Connect("beforeConnectRejectActor", UniqueKey("hooks-accept"), Value::Object({{"shouldReject", false}}));
  EXPECT_EQ(KEEL_OK(conn->Call<std::string>("ping")), "pong");
  conn->Dispose();
}

TEST_P(LifecycleHooksTest, PlainErrorInOnBeforeConnectRejectsTheAction) {
  auto conn = Connect("beforeConnectGenericErrorActor", UniqueKey("hooks-generic"), Value::Object({{"shouldFail", true}}));
  auto r = conn->Action("ping", Value(Value::Array{}), 10s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, "internal_error") << r.error().ToString();
  conn->Dispose();
}

TEST_P(LifecycleHooksTest, AcceptingWithoutGenericError) {
  auto conn =
      Connect("beforeConnectGenericErrorActor", UniqueKey("hooks-generic-ok"), Value::Object({{"shouldFail", false}}));
  EXPECT_EQ(KEEL_OK(conn->Call<std::string>("ping")), "pong");
  conn->Dispose();
}

TEST_P(LifecycleHooksTest, VarsWritesDoNotRetrigger) {
  auto h = client().GetOrCreate("stateChangeRecursionActor", {UniqueKey("hooks-recursion")});
  KEEL_OK(h.Call("setValue", 5));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getOnStateChangeCallCount")), 1);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getDerivedValue")), 10);
}

TEST_P(LifecycleHooksTest, ThreeSetsThreeCalls) {
  auto h = client().GetOrCreate("stateChangeRecursionActor", {UniqueKey("hooks-three")});
  for (int v = 1; v <= 3; ++v) KEEL_OK(h.Call("setValue", v));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getOnStateChangeCallCount")), 3);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 3);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getDerivedValue")), 6);
}

TEST_P(LifecycleHooksTest, ReadsDoNotTrigger) {
  auto h = client().GetOrCreate("stateChangeRecursionActor", {UniqueKey("hooks-reads")});
  KEEL_OK(h.Call<int64_t>("getValue"));
  KEEL_OK(h.Call<int64_t>("getDerivedValue"));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getOnStateChangeCallCount")), 0);
}

TEST_P(LifecycleHooksTest, StateWriteInsideOnStateChangeIsReentrant) {
  auto h = client().GetOrCreate("stateChangeReentrantMutationActor", {UniqueKey("hooks-reentrant")});
  KEEL_OK(h.Call("setValue", 5));
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getOnStateChangeCallCount")), 1);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getDerivedValue")), 0);
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("getLastError"))), json({{"group", "actor"}, {"code", "state_mutation_reentrant"}}));
}

KEEL_ACCEPTANCE_ENCODINGS(LifecycleHooks, LifecycleHooksTest);

}  // namespace
}  // namespace keel::acceptance
