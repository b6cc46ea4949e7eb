// The orchestrator driver's cold-start and wake path (src/engine/core/orchestrator.cc):
//  * the creation of an actor and its first allocation (the stored start command) are ONE
//    synced commit, and a crash at that commit leaves either nothing or the whole started
//    actor, whose start command is replayed to its envoy;
//  * the waiters of an actor are answered when its Running event is stepped, before the
//    kRunning commit, and losing that commit (crash) is recovered by the replay;
//  * an actor stored in kCreated (written by an older engine between its two commits) is
//    allocated when the engine loads;
//  * a step is one unchecked batch (KvStore::WriteUnchecked: this engine is its store's only
//    writer), and a wake whose batch fails leaves the actor asleep and wakes on the next try.
// A whole engine in-process over a recording store wrapper (commits are counted and can be
// held or failed deterministically, no sleeps), one scripted fake envoy over loopback.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/common/id.h"
#include "engine/core/catalog.h"
#include "engine/core/engine.h"
#include "engine/core/keys.h"
#include "engine/core/orchestrator.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "protocol/engine/records.h"
#include "storage/mem_kv_store.h"
#include "support/fake_envoy.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
namespace v = ::keel::protocol::envoy::latest;
namespace orch = ::keel::engine::orch;
namespace eng = ::keel::engine;
namespace rec = ::keel::protocol::engine::latest;

bool HasPrefix(const Bytes& key, const Bytes& prefix) {
  return key.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), key.begin());
}

// What one commit wrote.
struct CommitLog {
  std::vector<Bytes> puts;
  std::vector<Bytes> deletes;
  bool sync = true;
  bool unchecked = false;  // a KvStore::WriteUnchecked batch, not a transaction
  bool Wrote(const Bytes& key) const {
    return std::find(puts.begin(), puts.end(), key) != puts.end();
  }
  bool WrotePrefix(const Bytes& prefix) const {
    for (const auto& k : puts) {
      if (HasPrefix(k, prefix)) return true;
    }
    return false;
  }
};

// A store over a base store the test keeps (so an engine "restart" reopens the same data):
// records every commit with writes and can hold one commit matching a predicate until the
// test releases it, then apply it or fail it without applying (a crash before the commit).
class RecordingStore final : public storage::KvStore {
 public:
  enum class Outcome { kApply, kFail };
  explicit RecordingStore(storage::KvStore& base) : base_(base) {}

  Result<std::optional<Bytes>> Get(ByteView key) override { return base_.Get(key); }
  using KvReader::Scan;
  Result<std::vector<storage::KeyValue>> Scan(const storage::KeyRange& range,
                                              const storage::ScanOptions& options) override {
    return base_.Scan(range, options);
  }
  Result<std::unique_ptr<storage::KvSnapshot>> NewSnapshot() override {
    return base_.NewSnapshot();
  }
  Result<std::unique_ptr<storage::KvTxn>> Begin() override;
  Status Close() override { return {}; }  // the base outlives engines
  Status SyncWrites() override { return base_.SyncWrites(); }
  // Held and failed like a transaction's commit.
  Status WriteUnchecked(std::span<const storage::KvWrite> writes,
                        const storage::CommitOptions& options) override {
    CommitLog log;
    log.sync = options.sync;
    log.unchecked = true;
    for (const storage::KvWrite& w : writes) {
      (w.value.has_value() ? log.puts : log.deletes).emplace_back(w.key.begin(), w.key.end());
    }
    if (OnCommit(log) == Outcome::kFail) {
      return Unexpected{Error{"storage", "io", "injected: the engine crashed before this commit"}};
    }
    Status s = base_.WriteUnchecked(writes, options);
    if (s.has_value()) Record(std::move(log));
    return s;
  }

  std::vector<CommitLog> commits() {
    std::lock_guard lock(mu_);
    return commits_;
  }
  size_t commit_count() {
    std::lock_guard lock(mu_);
    return commits_.size();
  }
  // The next commit whose log matches `pred` waits in Commit until Release(). (A commit
  // released before takes its outcome even when it resumes only after this call.)
  void HoldNext(std::function<bool(const CommitLog&)> pred) {
    std::lock_guard lock(mu_);
    hold_ = std::move(pred);
    held_ = false;
  }
  bool WaitHeld(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return held_; });
  }
  void Release(Outcome outcome) {
    std::lock_guard lock(mu_);
    released_ = outcome;
    cv_.notify_all();
  }

  // Called by a txn's Commit: the outcome (kApply unless a held commit is failed).
  Outcome OnCommit(const CommitLog& log) {
    std::unique_lock lock(mu_);
    if (hold_ && hold_(log)) {
      hold_ = nullptr;
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_.has_value(); });
      const Outcome outcome = *released_;
      released_.reset();
      return outcome;
    }
    return Outcome::kApply;
  }
  void Record(CommitLog log) {
    std::lock_guard lock(mu_);
    commits_.push_back(std::move(log));
  }

 private:
  storage::KvStore& base_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<CommitLog> commits_;
  std::function<bool(const CommitLog&)> hold_;
  bool held_ = false;
  std::optional<Outcome> released_;
};

class RecordingTxn final : public storage::KvTxn {
 public:
  RecordingTxn(RecordingStore& store, std::unique_ptr<storage::KvTxn> inner)
      : store_(store), inner_(std::move(inner)) {}
  Result<std::optional<Bytes>> Get(ByteView key) override { return inner_->Get(key); }
  using KvReader::Scan;
  Result<std::vector<storage::KeyValue>> Scan(const storage::KeyRange& range,
                                              const storage::ScanOptions& options) override {
    return inner_->Scan(range, options);
  }
  Status Put(ByteView key, ByteView value) override {
    log_.puts.emplace_back(key.begin(), key.end());
    return inner_->Put(key, value);
  }
  Status Delete(ByteView key) override {
    log_.deletes.emplace_back(key.begin(), key.end());
    return inner_->Delete(key);
  }
  Status DeleteRange(const storage::KeyRange& range) override {
    log_.deletes.push_back(range.begin);
    return inner_->DeleteRange(range);
  }
  Status Commit(const storage::CommitOptions& options) override {
    if (log_.puts.empty() && log_.deletes.empty()) return inner_->Commit(options);
    log_.sync = options.sync;
    if (store_.OnCommit(log_) == RecordingStore::Outcome::kFail) {
      inner_->Rollback();
      return Unexpected{Error{"storage", "io", "injected: the engine crashed before this commit"}};
    }
    Status s = inner_->Commit(options);
    if (s.has_value()) store_.Record(log_);
    return s;
  }
  void Rollback() override { inner_->Rollback(); }

 private:
  RecordingStore& store_;
  std::unique_ptr<storage::KvTxn> inner_;
  CommitLog log_;
};

Result<std::unique_ptr<storage::KvTxn>> RecordingStore::Begin() {
  auto inner = base_.Begin();
  if (!inner.has_value()) return Unexpected{inner.error()};
  return std::unique_ptr<storage::KvTxn>(new RecordingTxn(*this, std::move(*inner)));
}

class OrchestratorStartTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void TearDown() override { Stop(); }

  void Start() {
    workers_ = std::make_unique<net::IoRuntime>(2);
    io_ = std::make_unique<net::IoRuntime>(2);
    auto store = std::make_unique<RecordingStore>(base_);
    store_ = store.get();
    net::ServerOptions server_options;
    server_options.port = 0;
    auto server = net::HttpServer::Start(
        *io_, server_options, [this](std::shared_ptr<net::HttpExchange> exchange) {
          engine_->Handle(std::move(exchange));
        });
    ASSERT_TRUE(server.has_value()) << server.error().ToString();
    server_ = std::move(*server);
    eng::EngineOptions options;
    options.seed = 7;
    options.public_url = "http://127.0.0.1:" + std::to_string(server_->port());
    auto engine = eng::Engine::Open(options, std::move(store), *io_, *workers_);
    ASSERT_TRUE(engine.has_value()) << engine.error().ToString();
    engine_ = std::move(*engine);
  }
  void Stop() {
    if (engine_ == nullptr) return;
    envoy_.reset();
    server_->StopAccepting();
    io_->Stop();
    workers_->Stop();
    server_.reset();
    engine_.reset();
    io_.reset();
    workers_.reset();
  }
  // A process restart on the same data (an engine crash: nothing is flushed or drained).
  void Restart() {
    Stop();
    Start();
  }

  FakeEnvoy& ConnectEnvoy() {
    FakeEnvoyOptions o;
    o.ws_url = "ws://127.0.0.1:" + std::to_string(server_->port());
    o.envoy_key = "envoy-a";
    auto fe = FakeEnvoy::ConnectAndInit(o);
    EXPECT_TRUE(fe.has_value()) << fe.error().ToString();
    envoy_ = std::move(*fe);
    // The orchestrator has registered the envoy once a request round trip answered.
    EXPECT_TRUE(envoy_->Sync().has_value());
    return *envoy_;
  }

  eng::EngineId DefaultNamespace() {
    auto ns = engine_->catalog().FindNamespace("default");
    EXPECT_TRUE(ns.has_value());
    return ns->id;
  }

  Result<std::pair<eng::ActorInfo, bool>> GetOrCreate(const std::string& key) {
    eng::CreateActorRequest req;
    req.namespace_id = DefaultNamespace();
    req.name = "counter";
    req.key = key;
    req.pool_name = "default";
    req.get_or_create = true;
    std::promise<Result<std::pair<eng::ActorInfo, bool>>> p;
    auto f = p.get_future();
    engine_->orchestrator().Create(std::move(req), [&p](auto r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(5s), std::future_status::ready);
    return f.get();
  }

  std::future<Result<eng::ActorTarget>> WhenReady(const eng::EngineId& id) {
    auto p = std::make_shared<std::promise<Result<eng::ActorTarget>>>();
    auto f = p->get_future();
    engine_->orchestrator().WhenReady(std::nullopt, id, false,
                                      [p](Result<eng::ActorTarget> t) { p->set_value(std::move(t)); });
    return f;
  }

  orch::Transition StoredTransition(const eng::EngineId& id) {
    auto info = engine_->orchestrator().Read(id);
    EXPECT_TRUE(info.has_value());
    return info.has_value() ? info->workflow.transition : orch::Transition::kCreated;
  }

  // Waits until the stored workflow of `id` reaches `t` (through the loop: a WhenReady of
  // an actor already connectable answers on the loop after every earlier step).
  void ExpectStoredEventually(const eng::EngineId& id, orch::Transition t) {
    auto ready = WhenReady(id);
    ASSERT_EQ(ready.wait_for(5s), std::future_status::ready);
    EXPECT_EQ(StoredTransition(id), t);
  }

  // Sends Running for `generation` and returns once its step is stored (kRunning).
  void RunningStored(FakeEnvoy& fe, const eng::EngineId& id, uint32_t generation) {
    const Bytes wf_key = eng::keys::ActorWorkflow(id.bytes());
    store_->HoldNext([wf_key](const CommitLog& c) { return c.Wrote(wf_key); });
    ASSERT_TRUE(fe.SendRunning(id.ToString(), generation).has_value());
    ASSERT_TRUE(store_->WaitHeld(5s));
    store_->Release(RecordingStore::Outcome::kApply);
    ExpectStoredEventually(id, orch::Transition::kRunning);
  }

  storage::MemKvStore base_;
  RecordingStore* store_ = nullptr;
  std::unique_ptr<net::IoRuntime> workers_;
  std::unique_ptr<net::IoRuntime> io_;
  std::unique_ptr<net::HttpServer> server_;
  std::unique_ptr<eng::Engine> engine_;
  std::unique_ptr<FakeEnvoy> envoy_;
};

TEST_F(OrchestratorStartTest, CreateAndFirstStartAreOneCommit) {
  FakeEnvoy& fe = ConnectEnvoy();
  const size_t before = store_->commit_count();
  auto created = GetOrCreate("k1");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  EXPECT_TRUE(created->second);
  const eng::EngineId id = created->first.id;
  EXPECT_EQ(created->first.workflow.transition, orch::Transition::kStarting);
  EXPECT_EQ(created->first.workflow.generation, 1u);

  auto cmd = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(cmd.has_value()) << cmd.error().ToString();
  EXPECT_TRUE(cmd->inner.is<v::CommandStartActor>());
  EXPECT_EQ(cmd->checkpoint.generation, 1u);
  EXPECT_EQ(cmd->checkpoint.index, 1);

  // Exactly one commit between the request and the start command: the record, the key
  // reservation, the workflow, the live set and the command together.
  auto commits = store_->commits();
  ASSERT_EQ(commits.size() - before, 1u);
  const CommitLog& c = commits.back();
  EXPECT_TRUE(c.sync);
  const ByteView actor = id.bytes();
  EXPECT_TRUE(c.Wrote(eng::keys::ActorRecord(actor)));
  EXPECT_TRUE(c.Wrote(eng::keys::ActorWorkflow(actor)));
  EXPECT_TRUE(c.Wrote(eng::keys::Live(actor)));
  EXPECT_TRUE(c.Wrote(eng::keys::ActorByKey(DefaultNamespace().bytes(), "counter", "k1")));
  EXPECT_TRUE(c.WrotePrefix(
      eng::keys::EnvoyCommandsOf(DefaultNamespace().bytes(), "envoy-a", actor, 1)));

  // The second get-or-create finds it and commits nothing.
  auto again = GetOrCreate("k1");
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->second);
  EXPECT_EQ(again->first.id, id);
  EXPECT_EQ(store_->commit_count(), commits.size());
}

TEST_F(OrchestratorStartTest, CrashAtTheCreateCommitLeavesNothingAndTheKeyFree) {
  ConnectEnvoy();
  store_->HoldNext([](const CommitLog&) { return true; });
  std::promise<Result<std::pair<eng::ActorInfo, bool>>> p;
  auto f = p.get_future();
  eng::CreateActorRequest req;
  req.namespace_id = DefaultNamespace();
  req.name = "counter";
  req.key = "k2";
  req.pool_name = "default";
  req.get_or_create = true;
  engine_->orchestrator().Create(std::move(req), [&p](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(store_->WaitHeld(5s));
  store_->Release(RecordingStore::Outcome::kFail);
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(f.get().has_value());

  Restart();
  auto owner = engine_->orchestrator().FindByKey(DefaultNamespace(), "counter", "k2");
  ASSERT_TRUE(owner.has_value());
  EXPECT_FALSE(owner->has_value());
  auto live = base_.ScanPrefix(eng::keys::LivePrefix());
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty());

  // The key is free: a new get-or-create starts generation 1.
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k2");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  EXPECT_TRUE(created->second);
  auto cmd = fe.WaitCommand(created->first.id.ToString(), 5s);
  ASSERT_TRUE(cmd.has_value()) << cmd.error().ToString();
  EXPECT_EQ(cmd->checkpoint.generation, 1u);
}

TEST_F(OrchestratorStartTest, CrashAfterTheCreateCommitReplaysTheStartToTheEnvoy) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k3");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  const eng::EngineId id = created->first.id;
  auto cmd = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(cmd.has_value());

  // The engine dies right after the commit (the envoy never acknowledged the command).
  Restart();
  EXPECT_EQ(StoredTransition(id), orch::Transition::kStarting);
  FakeEnvoy& again = ConnectEnvoy();
  auto replayed = again.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(replayed.has_value()) << replayed.error().ToString();
  EXPECT_TRUE(replayed->inner.is<v::CommandStartActor>());
  EXPECT_EQ(replayed->checkpoint.generation, 1u);
  EXPECT_EQ(replayed->checkpoint.index, 1);
  auto ready = WhenReady(id);
  ASSERT_TRUE(again.SendRunning(id.ToString(), 1).has_value());
  ASSERT_EQ(ready.wait_for(5s), std::future_status::ready);
  auto target = ready.get();
  ASSERT_TRUE(target.has_value()) << target.error().ToString();
  EXPECT_EQ(target->generation, 1u);  // the same instance, no second generation
}

TEST_F(OrchestratorStartTest, WaitersAreAnsweredBeforeTheRunningCommit) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k4");
  ASSERT_TRUE(created.has_value());
  const eng::EngineId id = created->first.id;
  ASSERT_TRUE(fe.WaitCommand(id.ToString(), 5s).has_value());
  auto ready = WhenReady(id);

  const Bytes wf_key = eng::keys::ActorWorkflow(id.bytes());
  store_->HoldNext([wf_key](const CommitLog& c) { return c.Wrote(wf_key); });
  ASSERT_TRUE(fe.SendRunning(id.ToString(), 1).has_value());
  ASSERT_TRUE(store_->WaitHeld(5s));
  // The Running commit is held, and the waiter already has the instance.
  ASSERT_EQ(ready.wait_for(5s), std::future_status::ready);
  auto target = ready.get();
  ASSERT_TRUE(target.has_value()) << target.error().ToString();
  EXPECT_EQ(target->generation, 1u);
  EXPECT_EQ(StoredTransition(id), orch::Transition::kStarting);

  store_->Release(RecordingStore::Outcome::kApply);
  ExpectStoredEventually(id, orch::Transition::kRunning);
  // Its loss is harmless, so it does not wait for the WAL sync.
  auto commits = store_->commits();
  auto last = std::find_if(commits.rbegin(), commits.rend(),
                           [&](const CommitLog& c) { return c.Wrote(wf_key); });
  ASSERT_NE(last, commits.rend());
  EXPECT_FALSE(last->sync);
  auto fast = engine_->orchestrator().FastTarget(id);
  ASSERT_TRUE(fast.has_value());
  EXPECT_EQ(fast->generation, 1u);
}

TEST_F(OrchestratorStartTest, CrashBeforeTheRunningCommitRecoversTheSameGeneration) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k5");
  ASSERT_TRUE(created.has_value());
  const eng::EngineId id = created->first.id;
  ASSERT_TRUE(fe.WaitCommand(id.ToString(), 5s).has_value());
  auto ready = WhenReady(id);

  const Bytes wf_key = eng::keys::ActorWorkflow(id.bytes());
  store_->HoldNext([wf_key](const CommitLog& c) { return c.Wrote(wf_key); });
  ASSERT_TRUE(fe.SendRunning(id.ToString(), 1).has_value());
  ASSERT_TRUE(store_->WaitHeld(5s));
  ASSERT_EQ(ready.wait_for(5s), std::future_status::ready);
  ASSERT_TRUE(ready.get().has_value());
  // The engine dies before kRunning is stored.
  store_->Release(RecordingStore::Outcome::kFail);
  Restart();

  EXPECT_EQ(StoredTransition(id), orch::Transition::kStarting);
  FakeEnvoy& again = ConnectEnvoy();
  // The stored start is replayed for the same generation; the envoy (still running it)
  // reports Running again, and the actor is connectable with no new generation.
  auto replayed = again.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(replayed.has_value()) << replayed.error().ToString();
  EXPECT_EQ(replayed->checkpoint.generation, 1u);
  auto ready_again = WhenReady(id);
  ASSERT_TRUE(again.SendRunning(id.ToString(), 1).has_value());
  ASSERT_EQ(ready_again.wait_for(5s), std::future_status::ready);
  auto target = ready_again.get();
  ASSERT_TRUE(target.has_value()) << target.error().ToString();
  EXPECT_EQ(target->generation, 1u);
  ExpectStoredEventually(id, orch::Transition::kRunning);  // stored after the answer
}

TEST_F(OrchestratorStartTest, ActorStoredBeforeItsFirstAllocationIsStartedAtLoad) {
  // The state an older engine left when it crashed between the creation commit and the
  // first allocation: record, kCreated workflow, live set, no command.
  const eng::EngineId ns = DefaultNamespace();
  Random random(99);
  const eng::EngineId id = eng::EngineId::Generate(random, 1);
  rec::ActorRecord record;
  record.namespace_id = Bytes(ns.bytes().begin(), ns.bytes().end());
  record.name = "counter";
  record.pool_name = "default";
  record.create_ts = 1;
  ASSERT_TRUE(base_.Put(eng::keys::ActorRecord(id.bytes()),
                        protocol::engine::WriteRecord(record)).has_value());
  ASSERT_TRUE(base_.Put(eng::keys::ActorWorkflow(id.bytes()),
                        orch::EncodeWorkflow(orch::ActorWorkflow{})).has_value());
  ASSERT_TRUE(base_.Put(eng::keys::Live(id.bytes()), Bytes{}).has_value());

  Restart();
  // No envoy yet: it waits for capacity, and the envoy's connect allocates it.
  EXPECT_EQ(StoredTransition(id), orch::Transition::kReallocating);
  FakeEnvoy& fe = ConnectEnvoy();
  auto cmd = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(cmd.has_value()) << cmd.error().ToString();
  EXPECT_TRUE(cmd->inner.is<v::CommandStartActor>());
  EXPECT_EQ(cmd->checkpoint.generation, 1u);
}

}  // namespace
// The live set (09) is written only by the steps that take an actor into it or out of it:
// the Running step and the sleep intent store their workflow without re-putting the live
// key (each re-put would be one more memtable entry per start), the step to kSleeping
// deletes it, and the wake's step puts it back.
TEST_F(OrchestratorStartTest, TheLiveSetIsWrittenOnlyWhenAnActorEntersOrLeavesIt) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k-live");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  const eng::EngineId id = created->first.id;
  const Bytes wf_key = eng::keys::ActorWorkflow(id.bytes());
  const Bytes live_key = eng::keys::Live(id.bytes());
  auto touches_live = [&](const CommitLog& c) {
    return c.Wrote(live_key) ||
           std::find(c.deletes.begin(), c.deletes.end(), live_key) != c.deletes.end();
  };
  ASSERT_TRUE(fe.WaitCommand(id.ToString(), 5s).has_value());
  size_t before = store_->commit_count();
  RunningStored(fe, id, 1);
  auto commits = store_->commits();
  ASSERT_GT(commits.size(), before);
  for (size_t i = before; i < commits.size(); ++i) {
    EXPECT_FALSE(touches_live(commits[i])) << "the Running step re-wrote the live key";
  }
  auto live = base_.Get(live_key);
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->has_value()) << "a running actor is in the live set";

  before = store_->commit_count();
  std::promise<Status> slept;
  engine_->orchestrator().Sleep(DefaultNamespace(), id, [&](Status s) { slept.set_value(s); });
  ASSERT_TRUE(fe.WaitCommand(id.ToString(), 5s).has_value());
  ASSERT_TRUE(slept.get_future().get().has_value());
  commits = store_->commits();
  for (size_t i = before; i < commits.size(); ++i) {
    if (commits[i].Wrote(wf_key)) {
      EXPECT_FALSE(touches_live(commits[i])) << "the sleep intent re-wrote the live key";
    }
  }
  // Stopped: the step to kSleeping takes it out of the set.
  store_->HoldNext([&](const CommitLog& c) {
    return std::find(c.deletes.begin(), c.deletes.end(), live_key) != c.deletes.end();
  });
  ASSERT_TRUE(fe.SendStopped(id.ToString(), 1).has_value());
  ASSERT_TRUE(store_->WaitHeld(5s));
  store_->Release(RecordingStore::Outcome::kApply);

  // Woken and running again, it is back in the set.
  auto ready = WhenReady(id);
  auto start = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(start.has_value()) << start.error().ToString();
  ASSERT_TRUE(start->inner.is<v::CommandStartActor>());
  RunningStored(fe, id, 2);
  live = base_.Get(live_key);
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->has_value());
}

TEST_F(OrchestratorStartTest, AWakeIsOneUncheckedBatchAndAFailedOneLeavesTheActorAsleep) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k6");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  const eng::EngineId id = created->first.id;
  const ByteView actor = id.bytes();
  const Bytes wf_key = eng::keys::ActorWorkflow(actor);
  const Bytes live_key = eng::keys::Live(actor);
  ASSERT_TRUE(fe.WaitCommand(id.ToString(), 5s).has_value());
  RunningStored(fe, id, 1);

  // Put it to sleep: the envoy is told to stop, reports Stopped, and the loop stores
  // kSleeping (the commit that takes the actor out of the live set).
  std::promise<Status> slept;
  engine_->orchestrator().Sleep(DefaultNamespace(), id, [&](Status s) { slept.set_value(s); });
  auto stop = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(stop.has_value()) << stop.error().ToString();
  ASSERT_TRUE(stop->inner.is<v::CommandStopActor>());
  ASSERT_TRUE(slept.get_future().get().has_value());
  store_->HoldNext([&](const CommitLog& c) {
    return std::find(c.deletes.begin(), c.deletes.end(), live_key) != c.deletes.end();
  });
  ASSERT_TRUE(fe.SendStopped(id.ToString(), 1).has_value());
  ASSERT_TRUE(store_->WaitHeld(5s));
  store_->Release(RecordingStore::Outcome::kApply);

  // The wake's step: one batch with the workflow, the live set and generation 2's start.
  CommitLog wake;
  store_->HoldNext([&](const CommitLog& c) {
    if (!c.Wrote(wf_key)) return false;
    wake = c;
    return true;
  });
  auto first = WhenReady(id);
  ASSERT_TRUE(store_->WaitHeld(5s));
  EXPECT_TRUE(wake.unchecked) << "a step is not a transaction on a store with one writer";
  EXPECT_TRUE(wake.sync) << "no early start: this envoy does not hold outputs";
  EXPECT_TRUE(wake.Wrote(live_key));
  EXPECT_TRUE(wake.WrotePrefix(
      eng::keys::EnvoyCommandsOf(DefaultNamespace().bytes(), "envoy-a", actor, 2)));
  // It fails (the disk, or a crash before it): nothing of it is stored, and no start leaves.
  store_->Release(RecordingStore::Outcome::kFail);
  EXPECT_EQ(StoredTransition(id), orch::Transition::kSleeping);

  // The next try wakes it: the envoy's next command is generation 2's start, the only one.
  const size_t before = store_->commit_count();
  auto second = WhenReady(id);
  auto start = fe.WaitCommand(id.ToString(), 5s);
  ASSERT_TRUE(start.has_value()) << start.error().ToString();
  ASSERT_TRUE(start->inner.is<v::CommandStartActor>());
  EXPECT_EQ(start->checkpoint.generation, 2u);
  auto commits = store_->commits();
  ASSERT_GT(commits.size(), before);
  EXPECT_TRUE(commits[before].unchecked);
  EXPECT_TRUE(commits[before].Wrote(wf_key));
  EXPECT_TRUE(commits[before].Wrote(live_key));
  RunningStored(fe, id, 2);
  // Both waiters get the instance, the one whose wake failed too.
  for (auto* ready : {&first, &second}) {
    ASSERT_EQ(ready->wait_for(5s), std::future_status::ready);
    auto target = ready->get();
    ASSERT_TRUE(target.has_value()) << target.error().ToString();
    EXPECT_EQ(target->generation, 2u);
  }
}

// A request waits through re-wakes of an actor whose every start fails (here: a name the
// runtime does not serve). After max_rewakes stops it gets guard.service_unavailable, and
// the message carries the stop's own error, which is what the caller has to fix.
TEST_F(OrchestratorStartTest, ARequestThatOutlastsItsRewakesGetsTheLastStopError) {
  FakeEnvoy& fe = ConnectEnvoy();
  auto created = GetOrCreate("k7");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  const eng::EngineId id = created->first.id;
  auto ready = WhenReady(id);
  const std::string reason = "actor.not_registered: actor name `counter` is not registered";
  const int starts = engine_->options().max_rewakes + 1;
  for (int i = 1; i <= starts; ++i) {
    auto start = fe.WaitCommand(id.ToString(), 5s);
    ASSERT_TRUE(start.has_value()) << "start " << i << ": " << start.error().ToString();
    ASSERT_TRUE(start->inner.is<v::CommandStartActor>());
    ASSERT_EQ(start->checkpoint.generation, static_cast<uint32_t>(i));
    EXPECT_NE(ready.wait_for(0s), std::future_status::ready) << "answered after " << i - 1;
    ASSERT_TRUE(fe.SendStopped(id.ToString(), i, v::StopCode::kError, reason).has_value());
  }
  ASSERT_EQ(ready.wait_for(5s), std::future_status::ready);
  auto target = ready.get();
  ASSERT_FALSE(target.has_value());
  EXPECT_TRUE(target.error().Is("guard", "service_unavailable")) << target.error().ToString();
  EXPECT_THAT(target.error().message(), ::testing::HasSubstr("kept stopping"));
  EXPECT_THAT(target.error().message(),
              ::testing::HasSubstr("Last error: actor.crashed: " + reason));
}

}  // namespace keel::testing
