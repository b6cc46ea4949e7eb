// GroupSync: writes are acknowledged only after a sync that covers them, writes arriving
// during a sync share the next one, reads wait exactly for the writes pending before them,
// a failed sync is reported to everyone it covered, and Stop drops what is still waiting.
// Deterministic: posted tasks go to a queue the test runs by hand, and a store hook acts
// in the middle of a sync.
#include "storage/group_sync.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <memory>
#include <string>
#include <vector>

#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"

namespace keel::storage {
namespace {

// A MemKvStore whose SyncWrites first runs a hook (to act "while the sync runs").
class HookedStore final : public MemKvStore {
 public:
  Status SyncWrites() override {
    ++syncs;
    if (during_sync) {
      auto hook = std::move(during_sync);
      during_sync = nullptr;
      hook();
    }
    return MemKvStore::SyncWrites();
  }
  std::function<void()> during_sync;
  int syncs = 0;
};

// Whether `key` is still in `store` after a simulated crash (which drops unsynced commits).
bool SurvivesCrash(FaultyKvStore& store, const std::string& key) {
  if (!store.SimulateCrash().has_value()) return false;
  auto kept = store.Get(AsBytes(key));
  return kept.has_value() && kept->has_value();
}

class GroupSyncTest : public ::testing::Test {
 protected:
  GroupSync::PostFn Post() {
    return [this](std::function<void()> task) { tasks_.push_back(std::move(task)); };
  }
  // Runs posted tasks until none is left; returns how many ran.
  int RunTasks() {
    int ran = 0;
    while (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      task();
      ++ran;
    }
    return ran;
  }
  // A continuation that records `name` and the sync count of `store` when it runs.
  GroupSync::Continuation Record(const std::string& name, const HookedStore& store) {
    return [this, name, &store](Status s) {
      events_.push_back(name + "@" + std::to_string(store.syncs) + (s.has_value() ? "" : "!"));
    };
  }

  std::deque<std::function<void()>> tasks_;
  std::vector<std::string> events_;
};

TEST_F(GroupSyncTest, ALoneWriteIsAcknowledgedAfterExactlyOneSync) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("w", store));
  EXPECT_TRUE(events_.empty()) << "acknowledged before any sync";
  EXPECT_EQ(RunTasks(), 1);
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1"}));
  EXPECT_EQ(gs.sync_count(), 1u);
  EXPECT_EQ(RunTasks(), 0) << "nothing left to sync";
}

TEST_F(GroupSyncTest, WritesWaitingTogetherShareOneSync) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("a", store));
  gs.AfterWrite(Record("b", store));
  gs.AfterWrite(Record("c", store));
  EXPECT_EQ(tasks_.size(), 1u) << "one sync task for the whole group";
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"a@1", "b@1", "c@1"}));
  EXPECT_EQ(store.syncs, 1);
}

TEST_F(GroupSyncTest, WritesArrivingDuringASyncWaitForTheNextOne) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("a", store));
  // b and c commit while a's sync runs: that sync may not cover them.
  store.during_sync = [&] {
    gs.AfterWrite(Record("b", store));
    gs.AfterWrite(Record("c", store));
  };
  EXPECT_EQ(RunTasks(), 1) << "the running sync loop picks the next group up itself";
  EXPECT_EQ(events_, (std::vector<std::string>{"a@1", "b@2", "c@2"}));
  EXPECT_EQ(gs.sync_count(), 2u);
}

TEST_F(GroupSyncTest, WritesWaitingTellsAContinuationThatTheNextSyncIsHeldUp) {
  HookedStore store;
  GroupSync gs(store, Post());
  std::vector<bool> seen;
  gs.AfterWrite([&](Status) { seen.push_back(gs.writes_waiting()); });
  store.during_sync = [&] { gs.AfterWrite([&](Status) { seen.push_back(gs.writes_waiting()); }); };
  EXPECT_TRUE(gs.writes_waiting()) << "the first write waits for its sync";
  RunTasks();
  // The first continuation ran while the second write waited for its sync; the second ran
  // with nothing behind it.
  EXPECT_EQ(seen, (std::vector<bool>{true, false}));
  EXPECT_FALSE(gs.writes_waiting());
}

TEST_F(GroupSyncTest, AReadWithNoWritePendingIsAnsweredAtOnce) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterRead(Record("r", store));
  EXPECT_EQ(events_, (std::vector<std::string>{"r@0"}));
  EXPECT_TRUE(tasks_.empty()) << "a read alone needs no sync";
}

TEST_F(GroupSyncTest, AReadAfterAPendingWriteWaitsForThatWritesSync) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("w", store));
  gs.AfterRead(Record("r", store));
  EXPECT_TRUE(events_.empty()) << "the read could show the unsynced write";
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1", "r@1"}));
  EXPECT_EQ(store.syncs, 1);
}

TEST_F(GroupSyncTest, AReadDuringASyncNeedsOnlyThatSync) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("w", store));
  store.during_sync = [&] { gs.AfterRead(Record("r", store)); };
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1", "r@1"}));
  EXPECT_EQ(store.syncs, 1) << "no second sync for a read";
}

TEST_F(GroupSyncTest, AReadBehindAWriteOfTheNextGroupWaitsForTheNextSync) {
  HookedStore store;
  GroupSync gs(store, Post());
  gs.AfterWrite(Record("a", store));
  store.during_sync = [&] {
    gs.AfterWrite(Record("b", store));
    gs.AfterRead(Record("r", store));  // may show b
  };
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"a@1", "b@2", "r@2"}));
}

TEST_F(GroupSyncTest, AFailedSyncIsReportedToEveryoneItCoveredAndTheWritesStayUnsynced) {
  auto base = std::make_unique<MemKvStore>();
  FaultyKvStore store(std::move(base));
  GroupSync gs(store, Post());
  ASSERT_TRUE(store.Put(AsBytes("k"), AsBytes("v"), CommitOptions{.sync = false}).has_value());
  std::vector<std::string> got;
  auto record = [&](const std::string& name) {
    return [&got, name](Status s) {
      got.push_back(name + (s.has_value() ? ":ok" : ":" + std::string(s.error().code())));
    };
  };
  store.FailNextSyncs(1);
  gs.AfterWrite(record("w"));
  gs.AfterRead(record("r"));
  RunTasks();
  EXPECT_EQ(got, (std::vector<std::string>{"w:io", "r:io"}));
  EXPECT_EQ(store.unsynced_commit_count(), 1u) << "a failed sync made nothing durable";

  // The next write's sync succeeds and covers the earlier commit too.
  ASSERT_TRUE(store.Put(AsBytes("k2"), AsBytes("v2"), CommitOptions{.sync = false}).has_value());
  gs.AfterWrite(record("w2"));
  RunTasks();
  EXPECT_EQ(got.back(), "w2:ok");
  EXPECT_EQ(store.unsynced_commit_count(), 0u);
  EXPECT_TRUE(SurvivesCrash(store, "k")) << "synced writes survive a crash";
}

TEST_F(GroupSyncTest, AnUnsyncedWriteIsLostInACrashUntilItsSyncRan) {
  FaultyKvStore store(std::make_unique<MemKvStore>());
  GroupSync gs(store, Post());
  ASSERT_TRUE(store.Put(AsBytes("k"), AsBytes("v"), CommitOptions{.sync = false}).has_value());
  bool acked = false;
  gs.AfterWrite([&](Status s) { acked = s.has_value(); });
  EXPECT_FALSE(acked);
  EXPECT_EQ(store.unsynced_commit_count(), 1u);
  RunTasks();
  EXPECT_TRUE(acked);
  EXPECT_EQ(store.sync_count(), 1u);
  EXPECT_TRUE(SurvivesCrash(store, "k")) << "an acknowledged write survives a crash";
}

TEST_F(GroupSyncTest, StopDropsWhatIsWaitingAndIgnoresLaterCalls) {
  HookedStore store;
  auto gs = std::make_unique<GroupSync>(store, Post());
  int ran = 0;
  gs->AfterWrite([&](Status) { ++ran; });
  gs->Stop();
  RunTasks();  // the posted sync task finds the GroupSync stopped
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(store.syncs, 0) << "a stopped GroupSync does not touch the store";
  gs->AfterWrite([&](Status) { ++ran; });
  gs->AfterRead([&](Status) { ++ran; });
  EXPECT_EQ(ran, 0);
  EXPECT_TRUE(tasks_.empty());
  gs.reset();  // destructor after Stop: no hang
}

// The engine's mode: GroupSync runs its syncs on a thread of its own. Writes that arrive
// while that thread is inside a sync share the next one, continuations run on that thread,
// and Stop joins it. The store hook holds the first sync until the test lets it go.
TEST(GroupSyncOwnThread, SyncsOnItsOwnThreadAndGroupsWritesThatArriveDuringASync) {
  HookedStore store;
  std::promise<void> in_sync;
  std::promise<void> release;
  store.during_sync = [&] {
    in_sync.set_value();
    release.get_future().wait();
  };
  auto gs = std::make_unique<GroupSync>(store);
  std::mutex mu;
  std::vector<std::pair<int, std::thread::id>> acks;  // (sync count seen, thread)
  std::promise<void> all_acked;
  auto ack = [&](Status s) {
    ASSERT_TRUE(s.has_value());
    std::lock_guard lock(mu);
    acks.emplace_back(store.syncs, std::this_thread::get_id());
    if (acks.size() == 3) all_acked.set_value();
  };
  gs->AfterWrite(ack);
  ASSERT_EQ(in_sync.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  gs->AfterWrite(ack);  // both arrive while the first sync runs
  gs->AfterWrite(ack);
  release.set_value();
  ASSERT_EQ(all_acked.get_future().wait_for(std::chrono::seconds(10)),
            std::future_status::ready);
  gs->Stop();  // joins the thread: store.syncs is stable from here
  EXPECT_EQ(store.syncs, 2) << "the two later writes share one sync";
  std::lock_guard lock(mu);
  ASSERT_EQ(acks.size(), 3u);
  EXPECT_EQ(acks[0].first, 1);
  EXPECT_EQ(acks[1].first, 2);
  EXPECT_EQ(acks[2].first, 2);
  for (const auto& a : acks) EXPECT_NE(a.second, std::this_thread::get_id());
  int dropped = 0;
  gs->AfterWrite([&](Status) { ++dropped; });  // after Stop: ignored
  gs.reset();
  EXPECT_EQ(dropped, 0);
}

TEST(MemKvStoreSync, SyncWritesFailsOnceClosed) {
  MemKvStore store;
  EXPECT_TRUE(store.SyncWrites().has_value());
  ASSERT_TRUE(store.Close().has_value());
  auto s = store.SyncWrites();
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), "closed");
}

}  // namespace
}  // namespace keel::storage
