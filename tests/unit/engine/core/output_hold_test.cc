// OutputHold (engine/core/output_hold.h): per-actor holding of tunnel messages behind the
// KV writes read before them, FIFO release, and the poison rule for a failed write.
#include "engine/core/output_hold.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Message = OutputHold::Message;

EngineId Actor(uint8_t n) {
  Bytes bytes(19, 0);
  bytes[0] = 1;  // id version
  bytes[18] = n;
  return *EngineId::FromBytes(bytes);
}

// A message whose request id carries `n`, so tests can read the order back.
Message Msg(uint32_t n) {
  Message m;
  for (int i = 0; i < 4; ++i) m.message_id.request_id[i] = static_cast<uint8_t>(n >> (8 * i));
  m.message_kind = protocol::envoy::latest::ToRivetWebSocketMessage{Bytes{1}, true};
  return m;
}

uint32_t N(const Message& m) {
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= uint32_t{m.message_id.request_id[i]} << (8 * i);
  return n;
}

class OutputHoldTest : public ::testing::Test {
 protected:
  std::optional<uint32_t> Hosted() const { return hosted_; }
  void Send(const EngineId& actor, uint32_t n) {
    hold_.OnMessage(actor, Msg(n), [this] { return Hosted(); });
  }

  std::vector<uint32_t> forwarded_;
  std::vector<EngineId> poisoned_;
  size_t write_failures_ = 0;
  std::optional<uint32_t> hosted_ = 1;
  OutputHold hold_{[this](Message&& m) { forwarded_.push_back(N(m)); },
                   [this](const EngineId& a, bool write_failed) {
                     poisoned_.push_back(a);
                     if (write_failed) ++write_failures_;
                   }};
};

TEST_F(OutputHoldTest, WithNoWriteInFlightAMessageLeavesAtOnce) {
  EXPECT_TRUE(hold_.Idle());
  Send(Actor(1), 1);
  EXPECT_THAT(forwarded_, ElementsAre(1u));
  EXPECT_TRUE(hold_.Idle());
}

TEST_F(OutputHoldTest, AMessageWaitsForTheWritesReadBeforeItThenLeavesInOrder) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  EXPECT_FALSE(hold_.Idle());
  Send(Actor(1), 1);
  Send(Actor(1), 2);
  EXPECT_THAT(forwarded_, IsEmpty());
  EXPECT_EQ(hold_.held(), 2u);
  hold_.EndWrite(Actor(1), w, /*ok=*/true);
  EXPECT_THAT(forwarded_, ElementsAre(1u, 2u));
  EXPECT_TRUE(hold_.Idle()) << "nothing tracked once drained";
}

TEST_F(OutputHoldTest, OtherActorsDoNotWait) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(2), 7);
  EXPECT_THAT(forwarded_, ElementsAre(7u));
  hold_.EndWrite(Actor(1), w, true);
}

// An entry's node is reused for the next actor that writes (OutputHold::spare_): what the
// last actor left there must not carry over.
TEST_F(OutputHoldTest, AnEntryFreedByOneActorStartsEmptyForTheNext) {
  const uint64_t a = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(1), 1);
  hold_.EndWrite(Actor(1), a, /*ok=*/true);
  EXPECT_THAT(forwarded_, ElementsAre(1u));
  EXPECT_TRUE(hold_.Idle());

  const uint64_t b = hold_.BeginWrite(Actor(2), 1);
  EXPECT_FALSE(hold_.poisoned(Actor(2)));
  EXPECT_EQ(hold_.held(), 0u);
  Send(Actor(1), 2);  // actor 1 has nothing in flight any more
  Send(Actor(2), 3);
  EXPECT_THAT(forwarded_, ElementsAre(1u, 2u));
  hold_.EndWrite(Actor(2), b, /*ok=*/true);
  EXPECT_THAT(forwarded_, ElementsAre(1u, 2u, 3u));
  EXPECT_TRUE(hold_.Idle());

  // And again for the first actor, after a failure of the second's next write.
  const uint64_t c = hold_.BeginWrite(Actor(2), 1);
  hold_.EndWrite(Actor(2), c, /*ok=*/false);
  EXPECT_TRUE(hold_.poisoned(Actor(2)));
  const uint64_t d = hold_.BeginWrite(Actor(1), 1);
  EXPECT_FALSE(hold_.poisoned(Actor(1)));
  Send(Actor(1), 4);
  hold_.EndWrite(Actor(1), d, /*ok=*/true);
  EXPECT_THAT(forwarded_, ElementsAre(1u, 2u, 3u, 4u));
}

TEST_F(OutputHoldTest, AMessageNeedsOnlyTheWritesBeforeItButKeepsItsPlace) {
  const uint64_t w1 = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(1), 1);  // needs w1
  const uint64_t w2 = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(1), 2);  // needs w1 and w2
  hold_.EndWrite(Actor(1), w1, true);
  EXPECT_THAT(forwarded_, ElementsAre(1u));
  hold_.EndWrite(Actor(1), w2, true);
  EXPECT_THAT(forwarded_, ElementsAre(1u, 2u));
}

TEST_F(OutputHoldTest, WritesFinishingOutOfOrderReleaseNothingEarly) {
  const uint64_t w1 = hold_.BeginWrite(Actor(1), 1);
  const uint64_t w2 = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(1), 1);
  hold_.EndWrite(Actor(1), w2, true);
  EXPECT_THAT(forwarded_, IsEmpty()) << "w1, read before the message, is not durable yet";
  hold_.EndWrite(Actor(1), w1, true);
  EXPECT_THAT(forwarded_, ElementsAre(1u));
}

TEST_F(OutputHoldTest, AFailedWriteDropsWhatWasHeldAndEverythingTheGenerationSendsLater) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  Send(Actor(1), 1);
  Send(Actor(2), 9);  // another actor is not affected
  hold_.EndWrite(Actor(1), w, /*ok=*/false);
  EXPECT_THAT(forwarded_, ElementsAre(9u));
  EXPECT_THAT(poisoned_, ElementsAre(Actor(1)));
  EXPECT_TRUE(hold_.poisoned(Actor(1)));
  Send(Actor(1), 2);  // sent before the runtime learnt of the failure, or after: dropped
  EXPECT_THAT(forwarded_, ElementsAre(9u));
  EXPECT_EQ(poisoned_.size(), 2u) << "each dropped message fails its request";
  EXPECT_EQ(hold_.dropped(), 2u);
  EXPECT_EQ(write_failures_, 1u) << "one failed write, one later message";
  // A later write of the same generation does not lift it.
  const uint64_t w2 = hold_.BeginWrite(Actor(1), 1);
  hold_.EndWrite(Actor(1), w2, true);
  Send(Actor(1), 3);
  EXPECT_THAT(forwarded_, ElementsAre(9u));
}

TEST_F(OutputHoldTest, ARejectedWriteWithNothingHeldStillPoisons) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  hold_.EndWrite(Actor(1), w, false);
  EXPECT_THAT(poisoned_, ElementsAre(Actor(1)));
  EXPECT_EQ(write_failures_, 1u);
  Send(Actor(1), 1);
  EXPECT_THAT(forwarded_, IsEmpty());
  EXPECT_EQ(poisoned_.size(), 2u);
  EXPECT_EQ(write_failures_, 1u);
}

TEST_F(OutputHoldTest, ANewerGenerationStartsClean) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  hold_.EndWrite(Actor(1), w, false);
  hosted_ = 2;  // the actor restarted on this connection
  Send(Actor(1), 1);
  EXPECT_THAT(forwarded_, ElementsAre(1u));
  EXPECT_FALSE(hold_.poisoned(Actor(1)));
  // A write of the newer generation lifts the poison as well.
  const uint64_t w2 = hold_.BeginWrite(Actor(3), 4);
  hold_.EndWrite(Actor(3), w2, false);
  const uint64_t w3 = hold_.BeginWrite(Actor(3), 5);
  EXPECT_FALSE(hold_.poisoned(Actor(3)));
  hold_.EndWrite(Actor(3), w3, true);
  EXPECT_TRUE(hold_.Idle());
}

TEST_F(OutputHoldTest, APoisonOfAnActorNoLongerHostedIsDroppedMeanwhile) {
  const uint64_t w = hold_.BeginWrite(Actor(1), 1);
  hold_.EndWrite(Actor(1), w, false);
  hosted_.reset();  // stopped: its late messages still do not reach a client
  Send(Actor(1), 1);
  EXPECT_THAT(forwarded_, IsEmpty());
  hold_.Prune([](const EngineId&) { return std::optional<uint32_t>(1); });
  EXPECT_TRUE(hold_.poisoned(Actor(1))) << "still hosted at the poisoned generation";
  hold_.Prune([](const EngineId&) { return std::optional<uint32_t>(); });
  EXPECT_FALSE(hold_.poisoned(Actor(1)));
  EXPECT_TRUE(hold_.Idle());
}

// The read path (writes begun, messages read) and the sync thread (writes ending) race; the
// messages of one actor must still leave exactly once each, in the order they were read.
TEST(OutputHoldThreads, MessagesLeaveInReadOrderWhicheverThreadReleasesThem) {
  constexpr uint32_t kCount = 5000;
  std::mutex mu;
  std::vector<uint32_t> out;
  OutputHold hold([&](Message&& m) {
    std::lock_guard lock(mu);
    out.push_back(N(m));
  }, [](const EngineId&, bool) { FAIL() << "nothing failed"; });

  std::mutex q_mu;
  std::condition_variable q_cv;
  std::deque<uint64_t> tickets;
  bool done = false;
  std::thread sync([&] {
    for (;;) {
      std::unique_lock lock(q_mu);
      q_cv.wait(lock, [&] { return done || !tickets.empty(); });
      if (tickets.empty()) return;
      const uint64_t t = tickets.front();
      tickets.pop_front();
      lock.unlock();
      hold.EndWrite(Actor(1), t, true);
    }
  });
  for (uint32_t i = 0; i < kCount; ++i) {
    if (i % 3 != 2) {  // most messages follow a write, some do not
      const uint64_t t = hold.BeginWrite(Actor(1), 1);
      std::lock_guard lock(q_mu);
      tickets.push_back(t);
      q_cv.notify_one();
    }
    hold.OnMessage(Actor(1), Msg(i), [] { return std::optional<uint32_t>(1); });
  }
  {
    std::lock_guard lock(q_mu);
    done = true;
    q_cv.notify_one();
  }
  sync.join();
  ASSERT_EQ(out.size(), kCount);
  for (uint32_t i = 0; i < kCount; ++i) ASSERT_EQ(out[i], i) << "at " << i;
  EXPECT_TRUE(hold.Idle());
}

}  // namespace
}  // namespace keel::engine
