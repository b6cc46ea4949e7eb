// GroupSync: writes are acknowledged only after a sync that covers them, writes arriving
// during a sync share the next one, reads wait exactly for the writes pending before them,
// a failed sync is reported to everyone it covered, Stop drops what is still waiting, and
// Anticipate gets the syncing thread up before a write that is on its way, and the thread
// lingers after its syncs for the next write.
// Deterministic: posted tasks go to a queue the test runs by hand, and a store hook acts
// in the middle of a sync.
#include "storage/group_sync.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/native/cpu_affinity.h"
#include "storage/faulty_kv_store.h"
#include "storage/mem_kv_store.h"

namespace keel::storage {
namespace {

// A MemKvStore whose SyncWrites first runs a hook (to act "while the sync runs") and takes
// `sync_time` on a manual clock (`now`, which GroupSync::Options::now can read).
class HookedStore final : public MemKvStore {
 public:
  Status SyncWrites() override {
    ++syncs;
    now += sync_time;
    if (during_sync) {
      auto hook = std::move(during_sync);
      during_sync = nullptr;
      hook();
    }
    return MemKvStore::SyncWrites();
  }
  bool SkipsSyncs() const override { return skips; }
  bool skips = false;  // read by GroupSync when it is made
  std::function<void()> during_sync;
  int syncs = 0;
  std::chrono::nanoseconds now{0};
  std::chrono::nanoseconds sync_time{0};
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
  GroupSync gs(store, {.post = Post()});
  gs.AfterWrite(Record("w", store));
  EXPECT_TRUE(events_.empty()) << "acknowledged before any sync";
  EXPECT_EQ(RunTasks(), 1);
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1"}));
  EXPECT_EQ(gs.sync_count(), 1u);
  EXPECT_EQ(RunTasks(), 0) << "nothing left to sync";
}

TEST_F(GroupSyncTest, WritesWaitingTogetherShareOneSync) {
  HookedStore store;
  GroupSync gs(store, {.post = Post()});
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
  GroupSync gs(store, {.post = Post()});
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
  GroupSync gs(store, {.post = Post()});
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
  GroupSync gs(store, {.post = Post()});
  gs.AfterRead(Record("r", store));
  EXPECT_EQ(events_, (std::vector<std::string>{"r@0"}));
  EXPECT_TRUE(tasks_.empty()) << "a read alone needs no sync";
}

TEST_F(GroupSyncTest, AReadAfterAPendingWriteWaitsForThatWritesSync) {
  HookedStore store;
  GroupSync gs(store, {.post = Post()});
  gs.AfterWrite(Record("w", store));
  gs.AfterRead(Record("r", store));
  EXPECT_TRUE(events_.empty()) << "the read could show the unsynced write";
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1", "r@1"}));
  EXPECT_EQ(store.syncs, 1);
}

TEST_F(GroupSyncTest, AReadDuringASyncNeedsOnlyThatSync) {
  HookedStore store;
  GroupSync gs(store, {.post = Post()});
  gs.AfterWrite(Record("w", store));
  store.during_sync = [&] { gs.AfterRead(Record("r", store)); };
  RunTasks();
  EXPECT_EQ(events_, (std::vector<std::string>{"w@1", "r@1"}));
  EXPECT_EQ(store.syncs, 1) << "no second sync for a read";
}

TEST_F(GroupSyncTest, AReadBehindAWriteOfTheNextGroupWaitsForTheNextSync) {
  HookedStore store;
  GroupSync gs(store, {.post = Post()});
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
  GroupSync gs(store, {.post = Post()});
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
  GroupSync gs(store, {.post = Post()});
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
  auto gs = std::make_unique<GroupSync>(store, GroupSync::Options{.post = Post()});
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

// Inline syncs (Options::inline_below): the store's syncs take `sync_time` on its manual
// clock, so which syncs count as fast is decided by the test, not by the machine.
class GroupSyncInlineTest : public GroupSyncTest {
 protected:
  static constexpr std::chrono::microseconds kBelow{20};
  GroupSyncInlineTest() { fast_.sync_time = std::chrono::microseconds(5); }
  GroupSync::Options Inline(HookedStore& store) {
    return {.post = Post(), .inline_below = kBelow, .now = [&store] { return store.now; }};
  }
  // A write whose continuation records it; true when it was acknowledged before
  // AfterWrite returned (an inline sync).
  bool WriteAndSeeIfAckedAtOnce(GroupSync& gs, HookedStore& store, const std::string& name) {
    const size_t before = events_.size();
    gs.AfterWrite(Record(name, store));
    return events_.size() > before;
  }
  // Inline(store), with inline syncs deferred to `loop_` (the writer's event loop, which
  // the test runs by hand).
  GroupSync::Options Deferred(HookedStore& store) {
    GroupSync::Options options = Inline(store);
    options.defer = [this](std::function<void()> task) {
      loop_.push_back(std::move(task));
      return true;
    };
    return options;
  }
  // The first write ("first@1"): synced by the task, which measures the store's syncs.
  void MeasureFirstSync(GroupSync& gs, HookedStore& store) {
    gs.AfterWrite(Record("first", store));
    ASSERT_EQ(RunTasks(), 1);
  }

  std::deque<std::function<void()>> loop_;
  HookedStore fast_;
};

TEST_F(GroupSyncInlineTest, FastSyncsRunOnTheWritersThreadOnceOneWasMeasured) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Inline(store));
  // No sync measured yet: the first write goes to the sync task.
  EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, "a"));
  EXPECT_EQ(RunTasks(), 1);
  for (const char* name : {"b", "c", "d"}) {
    EXPECT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, name)) << name;
  }
  EXPECT_TRUE(tasks_.empty()) << "an inline sync posts nothing";
  EXPECT_EQ(events_, (std::vector<std::string>{"a@1", "b@2", "c@3", "d@4"}));
  EXPECT_EQ(gs.sync_count(), 4u);
  EXPECT_EQ(gs.inline_sync_count(), 3u);
}

TEST_F(GroupSyncInlineTest, SlowSyncsAlwaysUseTheSyncTask) {
  HookedStore store;
  store.sync_time = std::chrono::microseconds(150);  // a disk's fsync
  GroupSync gs(store, Inline(store));
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, name)) << name;
    EXPECT_EQ(RunTasks(), 1);
  }
  EXPECT_EQ(gs.inline_sync_count(), 0u);
}

TEST_F(GroupSyncInlineTest, ZeroInlineBelowNeverSyncsInline) {
  HookedStore store;
  store.sync_time = std::chrono::nanoseconds(1);
  GroupSync gs(store, {.post = Post(), .now = [&store] { return store.now; }});
  for (const char* name : {"a", "b", "c"}) {
    EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, name)) << name;
    EXPECT_EQ(RunTasks(), 1);
  }
  EXPECT_EQ(gs.inline_sync_count(), 0u);
}

TEST_F(GroupSyncInlineTest, OneSlowSyncSendsWritesBackToTheSyncTaskUntilFastOnesRunAgain) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Inline(store));
  MeasureFirstSync(gs, store);
  ASSERT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, "fast"));
  store.sync_time = std::chrono::milliseconds(2);  // a hiccup, on the writer's thread
  ASSERT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, "slow"));
  store.sync_time = std::chrono::microseconds(5);
  // The estimate rose by half the gap at once and comes down an eighth at a time: the next
  // writes wait on the sync task until it is below 20 µs again, and then run inline.
  int on_task = 0;
  while (!WriteAndSeeIfAckedAtOnce(gs, store, "w")) {
    ASSERT_EQ(RunTasks(), 1);
    ASSERT_LT(++on_task, 100) << "never went back to inline syncs";
  }
  EXPECT_GE(on_task, 20) << "one fast sync must not undo a 2 ms one";
  EXPECT_EQ(gs.inline_sync_count(), 3u);
}

TEST_F(GroupSyncInlineTest, OverlappingWritesShareTheSyncTaskUntilWritesComeAloneAgain) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Inline(store));
  // Three writes wait together for each of the task's syncs: fast syncs, but shared.
  for (int round = 0; round < 3; ++round) {
    for (const char* name : {"a", "b", "c"}) {
      EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, name)) << round << name;
    }
    EXPECT_EQ(RunTasks(), 1);
  }
  EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, "alone")) << "right after overlapping ones";
  EXPECT_EQ(RunTasks(), 1);
  int on_task = 0;
  while (!WriteAndSeeIfAckedAtOnce(gs, store, "alone")) {
    ASSERT_EQ(RunTasks(), 1);
    ASSERT_LT(++on_task, 20) << "lone writes never went back to inline syncs";
  }
  EXPECT_EQ(gs.inline_sync_count(), 1u);
}

// Options::defer: the writer's event loop (here a queue the test runs) syncs once the
// handlers ready with the write have run; the writes they made share that sync.
TEST_F(GroupSyncInlineTest, ADeferredSyncRunsOnTheWritersLoopAndCoversWritesMadeMeanwhile) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Deferred(store));
  MeasureFirstSync(gs, store);
  gs.AfterWrite(Record("a", store));
  gs.AfterWrite(Record("b", store));  // another handler of the same pass
  EXPECT_EQ(events_, (std::vector<std::string>{"first@1"})) << "acknowledged before its sync";
  EXPECT_TRUE(tasks_.empty()) << "the sync task was not needed";
  ASSERT_EQ(loop_.size(), 1u);
  loop_.front()();
  loop_.clear();
  EXPECT_EQ(events_, (std::vector<std::string>{"first@1", "a@2", "b@2"}));
  EXPECT_EQ(gs.inline_sync_count(), 1u);
}

TEST_F(GroupSyncInlineTest, ADeferredSyncDroppedUnrunGoesToTheSyncTaskOnce) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Deferred(store));
  MeasureFirstSync(gs, store);
  gs.AfterWrite(Record("a", store));
  loop_.clear();  // the loop stopped: its task is destroyed unrun
  EXPECT_EQ(tasks_.size(), 1u);
  EXPECT_EQ(RunTasks(), 1);
  EXPECT_EQ(events_, (std::vector<std::string>{"first@1", "a@2"}));
  EXPECT_EQ(gs.inline_sync_count(), 0u);
  gs.AfterWrite(Record("b", store));  // not stuck: the next write is taken as usual
  ASSERT_EQ(loop_.size(), 1u);
  loop_.front()();
  EXPECT_EQ(events_.back(), "b@3");
}

TEST_F(GroupSyncInlineTest, AWriterOnNoEventLoopLeavesItsSyncToTheSyncTask) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync::Options options = Inline(store);
  options.defer = [](std::function<void()>) { return false; };
  GroupSync gs(store, std::move(options));
  for (const char* name : {"a", "b"}) {
    EXPECT_FALSE(WriteAndSeeIfAckedAtOnce(gs, store, name)) << name;
    EXPECT_EQ(tasks_.size(), 1u) << "one sync task, not one per claimant";
    EXPECT_EQ(RunTasks(), 1);
  }
  EXPECT_EQ(events_, (std::vector<std::string>{"a@1", "b@2"}));
  EXPECT_EQ(gs.inline_sync_count(), 0u);
}

TEST_F(GroupSyncInlineTest, WritesCommittedDuringAnInlineSyncGoToTheSyncTask) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Inline(store));
  MeasureFirstSync(gs, store);
  // b commits (on another connection) while a's inline sync runs: a's writer makes that one
  // sync and returns; b's sync is the task's, not a's writer's to wait for.
  store.during_sync = [&] { gs.AfterWrite(Record("b", store)); };
  EXPECT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, "a"));
  EXPECT_EQ(events_, (std::vector<std::string>{"first@1", "a@2"}));
  EXPECT_TRUE(gs.writes_waiting());
  EXPECT_EQ(RunTasks(), 1);
  EXPECT_EQ(events_.back(), "b@3");
  EXPECT_EQ(gs.inline_sync_count(), 1u);
}

TEST_F(GroupSyncInlineTest, AReadDuringAnInlineSyncIsAnsweredAfterThatSync) {
  HookedStore& store = fast_;  // syncs take 5 µs
  GroupSync gs(store, Inline(store));
  MeasureFirstSync(gs, store);
  store.during_sync = [&] { gs.AfterRead(Record("r", store)); };
  gs.AfterWrite(Record("w", store));
  EXPECT_EQ(events_, (std::vector<std::string>{"first@1", "w@2", "r@2"}));
  EXPECT_TRUE(tasks_.empty());
}

TEST_F(GroupSyncInlineTest, AFailedInlineSyncIsReportedToItsWriter) {
  FaultyKvStore store(std::make_unique<MemKvStore>());
  std::chrono::nanoseconds now{0};
  GroupSync gs(store, {.post = Post(), .inline_below = kBelow, .now = [&now] {
                         now += std::chrono::microseconds(1);  // every sync takes 1 µs
                         return now;
                       }});
  std::vector<std::string> got;
  gs.AfterWrite([&](Status s) { got.push_back(s.has_value() ? "ok" : "failed"); });
  RunTasks();
  ASSERT_TRUE(store.Put(AsBytes("k"), AsBytes("v"), CommitOptions{.sync = false}).has_value());
  store.FailNextSyncs(1);
  gs.AfterWrite([&](Status s) { got.push_back(s.has_value() ? "ok" : "failed"); });
  EXPECT_EQ(got, (std::vector<std::string>{"ok", "failed"})) << "inline, and failed";
  EXPECT_EQ(store.unsynced_commit_count(), 1u);
  EXPECT_FALSE(SurvivesCrash(store, "k"));
}

// A store that skips its syncs (KvStore::SkipsSyncs, files on tmpfs): each write is
// acknowledged inside AfterWrite even with a sync task and a writer's loop to defer to,
// reads at once too, and the store is never asked to sync.
TEST_F(GroupSyncInlineTest, OnAStoreThatSkipsSyncsWritesAreAcknowledgedAtOnceWithoutASync) {
  HookedStore store;
  store.skips = true;
  GroupSync gs(store, Deferred(store));
  EXPECT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, "w1"));
  EXPECT_TRUE(WriteAndSeeIfAckedAtOnce(gs, store, "w2"));
  EXPECT_FALSE(gs.writes_waiting());
  gs.AfterRead(Record("r", store));
  EXPECT_EQ(events_, (std::vector<std::string>{"w1@0", "w2@0", "r@0"}));
  EXPECT_TRUE(tasks_.empty());
  EXPECT_TRUE(loop_.empty());
  EXPECT_EQ(store.syncs, 0);
  EXPECT_EQ(gs.sync_count(), 0u);
  gs.Stop();
  gs.AfterWrite(Record("late", store));
  EXPECT_EQ(events_.size(), 3u) << "a stopped GroupSync acknowledges nothing";
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

// With a fast store, the first sync is the thread's (nothing measured yet); a later lone
// write that finds the thread idle is synced and acknowledged on the writer's thread before
// AfterWrite returns. (A write that comes while the thread still finishes its loop joins
// the thread's next round instead, so the test writes until one finds it idle.)
TEST(GroupSyncOwnThread, AnInlineSyncAcknowledgesOnTheWritersThreadBeforeReturning) {
  HookedStore store;
  store.sync_time = std::chrono::microseconds(5);
  GroupSync gs(store, {.inline_below = std::chrono::microseconds(20),
                       .now = [&store] { return store.now; }});
  int on_thread = 0;
  bool inline_seen = false;
  for (int attempt = 0; attempt < 1000 && !inline_seen; ++attempt) {
    std::promise<std::thread::id> acked;
    auto ack = acked.get_future();
    gs.AfterWrite([&acked](Status s) {
      EXPECT_TRUE(s.has_value());
      acked.set_value(std::this_thread::get_id());
    });
    if (ack.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      EXPECT_EQ(ack.get(), std::this_thread::get_id());
      EXPECT_GE(attempt, 1) << "the first sync cannot be inline: none was measured";
      inline_seen = true;
    } else {
      ASSERT_EQ(ack.wait_for(std::chrono::seconds(10)), std::future_status::ready);
      EXPECT_NE(ack.get(), std::this_thread::get_id());
      ++on_thread;
    }
  }
  EXPECT_TRUE(inline_seen);
  EXPECT_EQ(gs.inline_sync_count(), 1u);
  gs.Stop();
  EXPECT_EQ(store.syncs, on_thread + 1);
}

// Anticipate (an actor's wake, whose start's sync is on the request's critical path): the
// thread gets up before the write comes and polls for it, ends that when the write comes
// or the window passes (a manual clock), and Stop ends it at once.
bool Eventually(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(GroupSyncOwnThread, AnAnticipatedWriteFindsTheThreadPollingAndIsSynced) {
  HookedStore store;
  std::atomic<int64_t> now_ns{0};
  GroupSync gs(store, {.now = [&] { return std::chrono::nanoseconds(now_ns.load()); }});
  gs.Anticipate(std::chrono::microseconds(1000));
  EXPECT_EQ(gs.anticipations(), 1u);
  ASSERT_TRUE(Eventually([&] { return gs.anticipating(); }));
  gs.Anticipate(std::chrono::microseconds(500));  // within the window already set
  EXPECT_EQ(gs.anticipations(), 1u);
  std::promise<Status> acked;
  gs.AfterWrite([&](Status s) { acked.set_value(s); });
  auto ack = acked.get_future();
  ASSERT_EQ(ack.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(ack.get().has_value());
  // The write came: the thread stops polling though the window (on the manual clock,
  // which never moves here) has not passed.
  EXPECT_TRUE(Eventually([&] { return !gs.anticipating(); }));
  gs.Stop();
  EXPECT_EQ(store.syncs, 1);
}

TEST(GroupSyncOwnThread, AnAnticipationNoWriteFollowsEndsWithItsWindow) {
  HookedStore store;
  std::atomic<int64_t> now_ns{0};
  GroupSync gs(store, {.now = [&] { return std::chrono::nanoseconds(now_ns.load()); }});
  gs.Anticipate(std::chrono::microseconds(1000));
  ASSERT_TRUE(Eventually([&] { return gs.anticipating(); }));
  now_ns = 1'000'001;  // just past the window
  EXPECT_TRUE(Eventually([&] { return !gs.anticipating(); }));
  EXPECT_EQ(store.syncs, 0) << "nothing was written, nothing is synced";
  // Asleep again, the thread still takes the next write.
  std::promise<void> acked;
  gs.AfterWrite([&](Status s) {
    EXPECT_TRUE(s.has_value());
    acked.set_value();
  });
  ASSERT_EQ(acked.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  gs.Stop();
  EXPECT_EQ(store.syncs, 1);
}

TEST(GroupSyncOwnThread, StopEndsAnAnticipationAtOnce) {
  HookedStore store;
  auto gs = std::make_unique<GroupSync>(store);
  gs->Anticipate(std::chrono::hours(1));
  ASSERT_TRUE(Eventually([&] { return gs->anticipating(); }));
  gs.reset();  // joins the thread: it must leave its polling for the stop
  EXPECT_EQ(store.syncs, 0);
}

TEST(GroupSyncOwnThread, AnticipateDoesNothingWhereNoThreadWouldSync) {
  HookedStore skipping;
  skipping.skips = true;  // tmpfs: nothing to sync
  GroupSync on_memory(skipping);
  on_memory.Anticipate(std::chrono::seconds(1));
  EXPECT_EQ(on_memory.anticipations(), 0u);
  HookedStore posted_store;
  std::deque<std::function<void()>> tasks;
  GroupSync posted(posted_store,
                   {.post = [&](std::function<void()> t) { tasks.push_back(std::move(t)); }});
  posted.Anticipate(std::chrono::seconds(1));
  EXPECT_EQ(posted.anticipations(), 0u);
  EXPECT_TRUE(tasks.empty());
}

// Options::linger (a client that waits for each answer writes again soon after its last
// sync): after its syncs the thread polls for the next write instead of sleeping, until the
// linger passes on the manual clock; a lingering thread is not an anticipation.
TEST(GroupSyncOwnThread, AfterItsSyncsTheThreadLingersForTheNextWriteUntilTheLingerPasses) {
  HookedStore store;
  std::atomic<int64_t> now_ns{0};
  GroupSync gs(store, {.linger = std::chrono::microseconds(300),
                       .now = [&] { return std::chrono::nanoseconds(now_ns.load()); }});
  auto write_and_wait = [&gs] {
    std::promise<Status> acked;
    gs.AfterWrite([&acked](Status s) { acked.set_value(s); });
    auto ack = acked.get_future();
    if (ack.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return false;
    return ack.get().has_value();
  };
  ASSERT_TRUE(write_and_wait());
  // The clock has not moved: only the linger keeps the thread polling.
  ASSERT_TRUE(Eventually([&] { return gs.anticipating(); }));
  EXPECT_EQ(gs.anticipations(), 0u);
  ASSERT_TRUE(write_and_wait()) << "a write that finds the thread lingering is synced";
  ASSERT_TRUE(Eventually([&] { return gs.lingers() == 2u && gs.anticipating(); }));
  now_ns = 300'001;  // just past the second linger
  EXPECT_TRUE(Eventually([&] { return !gs.anticipating(); }));
  ASSERT_TRUE(write_and_wait()) << "asleep again, the thread still takes the next write";
  gs.Stop();
  EXPECT_EQ(store.syncs, 3);
  EXPECT_EQ(gs.lingers(), 3u);
}

TEST(GroupSyncOwnThread, StopEndsALingerAtOnce) {
  HookedStore store;
  auto gs = std::make_unique<GroupSync>(store, GroupSync::Options{.linger = std::chrono::hours(1)});
  std::promise<void> acked;
  gs->AfterWrite([&acked](Status) { acked.set_value(); });
  ASSERT_EQ(acked.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_TRUE(Eventually([&] { return gs->anticipating(); }));
  gs.reset();  // joins the thread: it must leave its polling for the stop
  EXPECT_EQ(store.syncs, 1);
}

// While syncs run inline the thread takes no lone writes, so it does not linger for them:
// the first sync (none measured yet) is the thread's, the next lone write's is inline.
TEST(GroupSyncOwnThread, TheThreadDoesNotLingerWhileSyncsRunInline) {
  HookedStore store;
  store.sync_time = std::chrono::microseconds(5);
  GroupSync gs(store, {.inline_below = std::chrono::microseconds(20),
                       .linger = std::chrono::hours(1),
                       .now = [&store] { return store.now; }});
  bool inline_seen = false;
  for (int attempt = 0; attempt < 1000 && !inline_seen; ++attempt) {
    std::promise<void> acked;
    auto ack = acked.get_future();
    gs.AfterWrite([&acked](Status) { acked.set_value(); });
    inline_seen = ack.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    if (!inline_seen) {
      ASSERT_EQ(ack.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    }
  }
  ASSERT_TRUE(inline_seen);
  gs.Stop();  // joins the thread: whatever it decided after its round is counted
  EXPECT_EQ(gs.lingers(), 0u);
}

// PinThread moves the sync thread, and only it: its syncs then run on the CPU it was given.
// CPUs it cannot have are refused and leave it where it was, still syncing.
TEST(GroupSyncOwnThread, PinThreadRunsTheSyncsOnTheGivenCpusAndRefusesOnesItCannotHave) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  HookedStore store;
  std::vector<int> sync_thread_cpus;
  GroupSync gs(store);
  auto write_and_wait = [&] {
    std::promise<void> acked;
    store.during_sync = [&] { sync_thread_cpus = AllowedCpus(); };
    gs.AfterWrite([&acked](Status) { acked.set_value(); });
    return acked.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  };
  ASSERT_TRUE(write_and_wait());
  EXPECT_EQ(sync_thread_cpus, allowed);

  ASSERT_TRUE(gs.PinThread(std::vector<int>{allowed.back()}).has_value());
  ASSERT_TRUE(write_and_wait());
  EXPECT_EQ(sync_thread_cpus, (std::vector<int>{allowed.back()}));
  EXPECT_EQ(AllowedCpus(), allowed) << "the caller's thread is not moved";

  if (allowed.back() != kMaxCpus - 1) {
    auto refused = gs.PinThread(std::vector<int>{kMaxCpus - 1});
    ASSERT_FALSE(refused.has_value());
    EXPECT_TRUE(refused.error().Is("system", "affinity")) << refused.error().ToString();
    ASSERT_TRUE(write_and_wait());
    EXPECT_EQ(sync_thread_cpus, (std::vector<int>{allowed.back()}));
  }
  gs.Stop();
  auto stopped = gs.PinThread(allowed);
  ASSERT_FALSE(stopped.has_value());
  EXPECT_TRUE(stopped.error().Is("storage", "failed_precondition"));
}

TEST_F(GroupSyncTest, PinThreadIsRefusedWhereSyncsRunOnPostedTasks) {
  HookedStore store;
  GroupSync gs(store, {.post = Post()});
  auto refused = gs.PinThread(AllowedCpus());
  ASSERT_FALSE(refused.has_value());
  EXPECT_TRUE(refused.error().Is("storage", "failed_precondition")) << refused.error().ToString();
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
