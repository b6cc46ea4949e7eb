// actors.md §8.2 action-features: per-actor action timeouts, sync and async (coroutine)
// actions, rejected "promises" (a throwing coroutine), concurrency of actions on one actor,
// and the 64 KiB incoming / 1 MiB outgoing message limits of stateless HTTP actions.
#include <gmock/gmock.h>

#include <condition_variable>
#include <mutex>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using ::testing::HasSubstr;

class ActionFeaturesTest : public EncodingTest {};

TEST_P(ActionFeaturesTest, ShortTimeout) {
  auto h = client().GetOrCreate("shortTimeoutActor", {UniqueKey("af-short")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("quickAction")), "quick response");
  auto e = ErrorOf(h.Call("slowAction"));
  EXPECT_THAT(e.message, HasSubstr("Action timed out")) << e.ToString();
}

TEST_P(ActionFeaturesTest, DefaultTimeout) {
  auto h = client().GetOrCreate("defaultTimeoutActor", {UniqueKey("af-default")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("normalAction")), "normal response");
}

TEST_P(ActionFeaturesTest, SyncActionUnderShortTimeout) {
  auto h = client().GetOrCreate("syncTimeoutActor", {UniqueKey("af-sync-timeout")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("syncAction")), "sync response");
}

TEST_P(ActionFeaturesTest, PerActorTimeoutsAreIndependent) {
  auto short_h = client().GetOrCreate("shortTimeoutActor", {UniqueKey("af-indep-short")});
  auto long_h = client().GetOrCreate("longTimeoutActor", {UniqueKey("af-indep-long")});
  // The short actor's 50 ms timeout cuts its 100 ms action; the long actor's 200 ms one
  // lets the same 100 ms through.
  auto e = ErrorOf(short_h.Call("slowAction"));
  EXPECT_EQ(e.Id(), "actor.action_timed_out") << e.ToString();
  EXPECT_THAT(e.message, HasSubstr("Action timed out")) << e.ToString();
  EXPECT_EQ(KEEL_OK(long_h.Call<std::string>("delayedAction")), "delayed response");
}

TEST_P(ActionFeaturesTest, SyncActions) {
  auto h = client().GetOrCreate("syncActionActor", {UniqueKey("af-sync")});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 5)), 5);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 3)), 8);
  json info = AsJson(KEEL_OK(h.Call("getInfo")));
  EXPECT_EQ(info["currentValue"], 8);
  EXPECT_TRUE(info["timestamp"].is_number()) << info;
  Value reset = KEEL_OK(h.Call("reset"));
  EXPECT_TRUE(reset.is_null() || reset.is_undefined()) << AsJson(reset);
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("increment", 0)), 0);
}

TEST_P(ActionFeaturesTest, AsyncActions) {
  auto h = client().GetOrCreate("asyncActionActor", {UniqueKey("af-async")});
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("delayedIncrement", 5)), 5);
  json data = AsJson(KEEL_OK(h.Call("fetchData", "test-123")));
  EXPECT_EQ(data["id"], "test-123");
  EXPECT_TRUE(data["timestamp"].is_number()) << data;
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("asyncWithError", false)), "Success");
  auto e = ErrorOf(h.Call("asyncWithError", true));
  EXPECT_EQ(e.message, "Intentional error");
}

TEST_P(ActionFeaturesTest, PromiseActions) {
  auto h = client().GetOrCreate("promiseActor", {UniqueKey("af-promise")});
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("resolvedPromise")), "resolved value");
  EXPECT_EQ(KEEL_OK(h.Call<std::string>("delayedPromise")), "delayed value");
  auto e = ErrorOf(h.Call("rejectedPromise"));
  EXPECT_THAT(e.message, HasSubstr("promised rejection"));
  EXPECT_THAT(KEEL_OK(h.Call<std::vector<std::string>>("getResults")), ::testing::Contains("delayed"));
}

// A slow action and, 25 ms later, a 0 ms action on the same actor overlap: actions are
// not serialised. Sent over one connection as two in-flight requests. Rivet's slow action
// takes 150 ms; 400 ms leaves room for an ASan build on a loaded 2-core CI machine.
TEST_P(ActionFeaturesTest, ActionsRunConcurrently) {
  auto h = client().GetOrCreate("concurrentActionActor", {UniqueKey("af-concurrent")});
  auto conn = h.Connect();
  ASSERT_TRUE(conn->WaitReady().has_value());
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::string> errors;
  auto finish = [&](client::ClientResult<Value> r) {
    std::lock_guard<std::mutex> lock(mu);
    if (!r.has_value()) errors.push_back(r.error().ToString());
    ++done;
    cv.notify_all();
  };
  conn->ActionAsync("runWithDelay", Value::ArrayOf({"slow", 400}), finish);
  SleepMs(25);
  conn->ActionAsync("runWithDelay", Value::ArrayOf({"fast", 0}), finish);
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done == 2; }));
  }
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(KEEL_OK(conn->Call<std::vector<std::string>>("getLog")),
            (std::vector<std::string>{"start:slow", "start:fast", "finish:fast", "finish:slow"}));
  conn->Dispose();
}

Value Items(int n) {
  Value::Array items;
  for (int i = 0; i < n; ++i) {
    items.emplace_back("Item " + std::to_string(i) + " with some additional text to increase size");
  }
  return Value::Object({{"items", Value(std::move(items))}});
}

TEST_P(ActionFeaturesTest, PayloadLimits) {
  auto h = client().GetOrCreate("largePayloadActor", {UniqueKey("af-payload")});
  // ~48 KB request: accepted.
  json summary = AsJson(KEEL_OK(h.Call("processLargeRequest", Items(800))));
  EXPECT_EQ(summary["itemCount"], 800);
  EXPECT_EQ(summary["firstItem"], "Item 0 with some additional text to increase size");
  EXPECT_EQ(summary["lastItem"], "Item 799 with some additional text to increase size");
  // ~90 KB request: over the 64 KiB incoming limit.
  auto too_big = ErrorOf(h.Call("processLargeRequest", Items(1500)));
  EXPECT_EQ(too_big.Id(), "message.incoming_too_long") << too_big.ToString();
  EXPECT_EQ(too_big.http_status, 400);
  // 800-item response: fine; ~1.2 MB response: over the 1 MiB outgoing limit.
  json items = AsJson(KEEL_OK(h.Call("getLargeResponse", 800)));
  EXPECT_EQ(items["items"].size(), 800u);
  auto too_long = ErrorOf(h.Call("getLargeResponse", 20000));
  EXPECT_EQ(too_long.Id(), "message.outgoing_too_long") << too_long.ToString();
  EXPECT_EQ(too_long.http_status, 400);
}

// The wire without the client (§4.4): JSON is the default encoding when x-rivet-encoding is
// absent, outputs come as {"output": ...}, errors as {group, code, message} with a JSON
// content type.
class ActionFeaturesTest_Wire : public PlainTest {};

TEST_F(ActionFeaturesTest_Wire, JsonIsTheDefaultEncoding) {
  const std::string key = UniqueKey("af-wire");
  auto ok = Http("POST", QueryActionPath("syncActionActor", "increment", key), R"({"args":[5]})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ParseBody(ok.body), json({{"output", 5}}));
  EXPECT_EQ(HeaderOf(ok.headers, "content-type").rfind("application/json", 0), 0u) << HeaderOf(ok.headers, "content-type");
  auto err = Http("POST", QueryActionPath("asyncActionActor", "asyncWithError", key), R"({"args":[true]})");
  EXPECT_EQ(HeaderOf(err.headers, "content-type").rfind("application/json", 0), 0u);
  json body = ParseBody(err.body);
  EXPECT_EQ(body["group"], "user") << err.body;
  EXPECT_EQ(body["code"], "user_error") << err.body;
  EXPECT_EQ(body["message"], "Intentional error") << err.body;
}

// §4.3: /action/{name} only takes POST.
TEST_F(ActionFeaturesTest_Wire, ActionRouteRejectsOtherMethods) {
  auto r = Http("GET", QueryActionPath("syncActionActor", "increment", UniqueKey("af-get")));
  EXPECT_EQ(r.status, 405) << r.body;
  json body = ParseBody(r.body);
  EXPECT_EQ(body["group"], "actor") << r.body;
  EXPECT_EQ(body["code"], "method_not_allowed") << r.body;
}

KEEL_ACCEPTANCE_ENCODINGS(ActionFeatures, ActionFeaturesTest);

}  // namespace
}  // namespace keel::acceptance
