// actors.md §8.23 actor-save-state: state saved with saveState survives a hard crash of the
// runtime. Rivet's native harness has no crash hook (its tests are no-ops there); here each
// test starts its own fixture runtime process (StartPrivateRuntime: keel-acceptance-fixtures,
// or js/main.mjs in wasm) in a private pool, drives
// `saveStateActor` in it, SIGKILLs that process while the action hangs after its save, starts
// a fresh runtime in the same pool and reads the value from the next instance. The shared
// runtime of the harness is not touched. Runs once (bare client).
#include <unistd.h>

#include <future>

#include "base/native/subprocess.h"
#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorSaveStateTest : public PlainTest {
 protected:
  void SetUp() override {
    pool_ = "crash-" + std::to_string(::getpid()) + "-" + UniqueKey("p");
    client::ClientOptions o;
    o.endpoint = Endpoint();
    o.pool = pool_;
    o.encoding = wire::Encoding::kBare;
    client_ = std::make_unique<client::Client>(o);
    // A `normal` runner config for the private pool in this engine's datacenter (§8.0).
    json dcs = ParseBody(Http("GET", "/datacenters").body);
    ASSERT_TRUE(dcs["datacenters"].is_array() && !dcs["datacenters"].empty()) << dcs.dump();
    const std::string dc = dcs["datacenters"][0]["name"].get<std::string>();
    auto put = Http("PUT", "/runner-configs/" + pool_ + "?namespace=default",
                    json{{"datacenters", {{dc, {{"normal", json::object()}}}}}}.dump(),
                    {{"content-type", "application/json"}});
    ASSERT_EQ(put.status, 200) << put.body;
    // Calls that hang until the crash: short deadline, and no retry (GetForId handles).
    o.request_timeout = 10s;
    hang_client_ = std::make_unique<client::Client>(o);
  }
  void TearDown() override {
    if (runtime_) runtime_->Stop(5s);
  }

  // Starts a fixture runtime of this process's kind (keel-acceptance-fixtures, or the
  // JavaScript fixtures on the wasm runtime) serving pool_ and waits until its envoy is listed.
  void StartRuntime() {
    runtime_ = StartPrivateRuntime(pool_, SqliteCell());
    ASSERT_NE(runtime_, nullptr) << "the crash-test runtime was not listed";
  }

  int64_t NoteCount(const std::string& actor_id, const std::string& entry) {
    // The observer in this pool runs in the same process as the watched actor.
    return client_->GetOrCreate("observer", {"observer-" + pool_}).Call<int64_t>("count", actor_id, entry).value_or(-1);
  }

  // Hard crash: SIGKILL, then a fresh runtime in the same pool.
  void CrashAndRestart() {
    runtime_->Kill();
    runtime_.reset();
    StartRuntime();
  }

  int64_t ValueAfterRestart(const std::string& id) {
    auto h = client_->GetForId("saveStateActor", id);
    int64_t value = -1;
    client::ClientError last;
    EXPECT_TRUE(WaitFor(
        [&] {
          auto r = h.Call<int64_t>("getValue");
          if (!r.has_value()) {
            last = r.error();
            return false;
          }
          value = *r;
          return true;
        },
        20s))
        << "the actor did not come back: " << last.ToString();
    return value;
  }

  std::string pool_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<client::Client> hang_client_;
  std::unique_ptr<Subprocess> runtime_;
};

TEST_F(ActorSaveStateTest, ImmediateSaveSurvivesHardCrash) {
  StartRuntime();
  auto h = client_->GetOrCreate("saveStateActor", {UniqueKey("save-immediate")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 0);
  auto hang = hang_client_->GetForId("saveStateActor", id);
  auto pending = std::async(std::launch::async, [hang]() mutable { return hang.Call("setValueImmediate", 41); });
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "saved") >= 1; }, 10s)) << "saveState did not complete";
  CrashAndRestart();
  EXPECT_EQ(ValueAfterRestart(id), 41);
  auto hung = pending.get();
  EXPECT_FALSE(hung.has_value()) << "the hanging action cannot have answered";
}

TEST_F(ActorSaveStateTest, DeferredSaveSurvivesHardCrash) {
  StartRuntime();
  auto h = client_->GetOrCreate("saveStateActor", {UniqueKey("save-deferred")});
  const std::string id = KEEL_OK(h.Resolve());
  EXPECT_EQ(KEEL_OK(h.Call<int64_t>("getValue")), 0);
  auto hang = hang_client_->GetForId("saveStateActor", id);
  auto pending = std::async(std::launch::async, [hang]() mutable { return hang.Call("setValueDeferred", 73, 100); });
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "set") >= 1; }, 10s));
  // Crash once the deferred save has completed. Waiting on the note, not on a fixed 150 ms:
  // under a loaded (sanitised) CI host the commit after the 100 ms delay can take longer.
  ASSERT_TRUE(WaitFor([&] { return NoteCount(id, "saved") >= 1; }, 10s))
      << "the deferred save did not complete";
  EXPECT_EQ(NoteCount(id, "saved"), 1) << "saved once";
  CrashAndRestart();
  EXPECT_EQ(ValueAfterRestart(id), 73);
  auto hung = pending.get();
  EXPECT_FALSE(hung.has_value());
}

}  // namespace
}  // namespace keel::acceptance
