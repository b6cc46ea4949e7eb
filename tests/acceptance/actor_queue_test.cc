// actors.md §8.21 actor-queue: client sends and actor receives (by name, batches, any queue,
// timeouts, non-blocking), self-sends, abort on destroy, limits, send-and-wait with and
// without a consumer, completable messages (redelivery, previous-not-completed, double
// complete), and a run loop consuming 32 queues.
//
// Adapted / not applicable (C++ API differences, see fixtures/queue.cc):
//  * the actor sends to itself with c.queue().send (Rivet: c.client()…getForId(actorId).send);
//  * no per-call AbortSignal in the C++ receive API: Rivet's "pre-aborted signal", "signal
//    with actor destroyed" and "iter with aborted signal" checks have no counterpart; the
//    actor's own abort (destroy while waiting) is checked;
//  * no async iterator (`iter`): repeated next() calls are the C++ form, covered by the
//    receive checks;
//  * the C++ runtime has no actor-to-actor client, so `manyQueueChildActor` is created by the
//    test's client with input instead of by a parent actor's action or run loop.
#include <atomic>
#include <future>
#include <set>
#include <thread>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorQueueTest : public EncodingTest {
 protected:
  client::ActorHandle Actor(const std::string& key) { return client().GetOrCreate("queueActor", {key}); }
  static client::QueueSendOptions Wait(std::chrono::milliseconds timeout) {
    client::QueueSendOptions o;
    o.wait = true;
    o.timeout = timeout;
    return o;
  }
};

TEST_P(ActorQueueTest, SendThenReceive) {
  auto h = Actor(UniqueKey("q-greeting"));
  auto sent = KEEL_OK(h.Send("greeting", Value::Object({{"hello", "world"}})));
  EXPECT_EQ(sent.status, "completed");
  json got = AsJson(KEEL_OK(h.Call("receiveOne", "greeting", 1000)));
  EXPECT_EQ(got, json({{"name", "greeting"}, {"body", {{"hello", "world"}}}}));
}

TEST_P(ActorQueueTest, ActorSendsToItsOwnQueue) {
  auto h = Actor(UniqueKey("q-self"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("sendToSelf", Value::Object({{"value", 42}})))), json({{"value", 42}}));
}

TEST_P(ActorQueueTest, NextBatchByNamesFifo) {
  auto h = Actor(UniqueKey("q-batch-names"));
  KEEL_OK(h.Send("a", Value(1)));
  KEEL_OK(h.Send("c", Value(3)));
  KEEL_OK(h.Send("b", Value(2)));
  json got = AsJson(KEEL_OK(h.Call("receiveMany", Value::ArrayOf({"a", "b"}), 2, 1000)));
  EXPECT_EQ(got, json({{{"name", "a"}, {"body", 1}}, {{"name", "b"}, {"body", 2}}}));
  // c was not taken.
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveOne", "c", 100))), json({{"name", "c"}, {"body", 3}}));
}

TEST_P(ActorQueueTest, NextBatchWithOptionsObject) {
  auto h = Actor(UniqueKey("q-batch-opts"));
  KEEL_OK(h.Send("one", Value("first")));
  KEEL_OK(h.Send("two", Value("second")));
  json got = AsJson(KEEL_OK(h.Call("receiveMany", Value::ArrayOf({"one", "two"}), 5, 200)));
  EXPECT_EQ(got, json({{{"name", "one"}, {"body", "first"}}, {{"name", "two"}, {"body", "second"}}}));
}

TEST_P(ActorQueueTest, NextBatchAnyQueueFifo) {
  auto h = Actor(UniqueKey("q-batch-any"));
  KEEL_OK(h.Send("b", Value(1)));
  KEEL_OK(h.Send("a", Value(2)));
  KEEL_OK(h.Send("c", Value(3)));
  json got = AsJson(KEEL_OK(h.Call("receiveMany", Value(Value::Array{}), 3, 1000)));
  EXPECT_EQ(got, json({{{"name", "b"}, {"body", 1}}, {{"name", "a"}, {"body", 2}}, {{"name", "c"}, {"body", 3}}}));
}

TEST_P(ActorQueueTest, NextBatchTimesOutEmpty) {
  auto h = Actor(UniqueKey("q-batch-timeout"));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveMany", Value::ArrayOf({"timeout"}), 2, 50))), json::array());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_P(ActorQueueTest, TryNextBatchReturnsAtOnce) {
  auto h = Actor(UniqueKey("q-try"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("tryReceiveMany", Value::ArrayOf({"missing"}), 2))), json::array());
}

TEST_P(ActorQueueTest, DestroyWhileWaitingAborts) {
  auto h = Actor(UniqueKey("q-abort"));
  const std::string id = KEEL_OK(h.Resolve());
  auto r = client().GetForId("queueActor", id).Call("waitForAbortDestroy");
  KEEL_EXPECT_ERROR(r, "actor", "aborted");
}

TEST_P(ActorQueueTest, QueueFull) {
  auto h = client().GetOrCreate("queueLimitedActor", {UniqueKey("q-full")});
  KEEL_OK(h.Send("limited", Value(1)));
  auto full = h.Send("limited", Value(2));
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().Id(), "queue.full") << full.error().ToString();
  EXPECT_EQ(full.error().message.rfind("Queue is full. Limit is ", 0), 0u) << full.error().message;
}

TEST_P(ActorQueueTest, MessageTooLarge) {
  auto h = client().GetOrCreate("queueLimitedActor", {UniqueKey("q-too-large")});
  auto big = h.Send("limited", Value(std::string(200, 'x')));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().Id(), "queue.message_too_large") << big.error().ToString();
}

TEST_P(ActorQueueTest, WaitSendCompletedByConsumer) {
  auto h = Actor(UniqueKey("q-wait-complete"));
  auto sender = std::async(std::launch::async,
                           [&] { return h.Send("tasks", Value::Object({{"value", 123}}), Wait(5000ms)); });
  json received = AsJson(KEEL_OK(h.Call("receiveAndComplete", "tasks", 5000)));
  EXPECT_EQ(received["body"], json({{"value", 123}}));
  auto result = sender.get();
  ASSERT_TRUE(result.has_value()) << result.error().ToString();
  EXPECT_EQ(result->status, "completed");
  ASSERT_TRUE(result->response.has_value());
  EXPECT_EQ(AsJson(*result->response), json({{"echo", {{"value", 123}}}}));
}

TEST_P(ActorQueueTest, WaitSendWithoutConsumerTimesOut) {
  auto h = Actor(UniqueKey("q-wait-timeout"));
  auto r = KEEL_OK(h.Send("tasks", Value::Object({{"value", 1}}), Wait(50ms)));
  EXPECT_EQ(r.status, "timedOut");
  EXPECT_FALSE(r.response.has_value());
}

TEST_P(ActorQueueTest, ManyQueueChildProcessesEverything) {
  client::GetOrCreateOptions o;
  o.input = Value::Object({{"label", "child"}});
  auto child = client().GetOrCreate("manyQueueChildActor", {UniqueKey("q-child")}, o);
  auto conn = child.Connect();
  EXPECT_EQ(KEEL_OK(conn->Call<std::string>("ping")), "pong");
  // 128 concurrent sends over 32 queues.
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    senders.emplace_back([&, t] {
      for (int i = 0; i < 16; ++i) {
        const int n = t * 16 + i;
        auto r = child.Send("cmd." + std::to_string(n % 32), Value::Object({{"n", n}}));
        if (!r.has_value()) ++failures;
      }
    });
  }
  for (auto& s : senders) s.join();
  EXPECT_EQ(failures.load(), 0);
  json s;
  ASSERT_TRUE(WaitFor(
      [&] {
        s = AsJson(KEEL_OK(conn->Call("getState")));
        return s["processed"] == 128;
      },
      15s))
      << s.dump();
  EXPECT_EQ(s["started"], true);
  EXPECT_EQ(s["label"], "child");
  std::set<std::string> names;
  for (const auto& n : s["names"]) names.insert(n.get<std::string>());
  EXPECT_EQ(names.size(), 32u);
  auto waited = KEEL_OK(child.Send("cmd.0", Value::Object({{"n", 128}}), Wait(5000ms)));
  EXPECT_EQ(waited.status, "completed");
  ASSERT_TRUE(waited.response.has_value());
  EXPECT_EQ(AsJson(*waited.response), json({{"ok", true}, {"index", 128}}));
  conn->Dispose();
}

TEST_P(ActorQueueTest, UncompletedMessageIsRedelivered) {
  auto h = Actor(UniqueKey("q-redeliver"));
  KEEL_OK(h.Send("tasks", Value(789)));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveWithoutComplete", "tasks"))), json(789));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveWithoutComplete", "tasks"))), json(789)) << "redelivered";
}

TEST_P(ActorQueueTest, NextWhileHoldingUncompletedMessage) {
  auto h = Actor(UniqueKey("q-previous"));
  KEEL_OK(h.Send("tasks", Value(1)));
  KEEL_OK(h.Send("tasks", Value(2)));
  KEEL_EXPECT_ERROR(h.Call("receiveManualThenNext", "tasks"), "queue", "previous_message_not_completed");
}

TEST_P(ActorQueueTest, CompleteWithoutCompletionType) {
  auto h = Actor(UniqueKey("q-complete-no-type"));
  KEEL_OK(h.Send("one", Value("x")));
  EXPECT_TRUE(KEEL_OK(h.Call<bool>("receiveAndCompleteNoResponse", "one")));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("tryReceiveMany", Value::ArrayOf({"one"}), 1))), json::array())
      << "a completed message is gone";
}

TEST_P(ActorQueueTest, UncompletedNowaitMessageIsRedelivered) {
  auto h = Actor(UniqueKey("q-nowait"));
  KEEL_OK(h.Send("nowait", Value("keep")));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveWithoutComplete", "nowait"))), json("keep"));
  EXPECT_EQ(AsJson(KEEL_OK(h.Call("receiveOne", "nowait", 100))), json({{"name", "nowait"}, {"body", "keep"}}));
}

TEST_P(ActorQueueTest, CompleteTwice) {
  auto h = Actor(UniqueKey("q-twice"));
  KEEL_OK(h.Send("twice", Value(1)));
  KEEL_EXPECT_ERROR(h.Call("completeTwice", "twice"), "queue", "already_completed");
}

TEST_P(ActorQueueTest, WaitSendToQueueWithoutConsumerTimesOut) {
  auto h = Actor(UniqueKey("q-nowait-timeout"));
  auto r = KEEL_OK(h.Send("nowait", Value(1), Wait(50ms)));
  EXPECT_EQ(r.status, "timedOut");
}

KEEL_ACCEPTANCE_ENCODINGS(ActorQueue, ActorQueueTest);

}  // namespace
}  // namespace keel::acceptance
