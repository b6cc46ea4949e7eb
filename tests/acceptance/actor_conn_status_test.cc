// actors.md §8.6 actor-conn-status: connection status accessors and listeners (`counter`).
#include <atomic>
#include <memory>
#include <mutex>

#include "support/acceptance.h"
#include "support/expect.h"

namespace keel::acceptance {
namespace {

using namespace std::chrono_literals;

class ActorConnStatusTest : public EncodingTest {
 protected:
  std::shared_ptr<client::ActorConn> Connect(const std::string& key,
                                             const std::function<void(client::ActorConn&)>& setup = nullptr) {
    return client().GetOrCreate("counter", {key}).Connect(setup);
  }
};

TEST_P(ActorConnStatusTest, ConnectedAfterFirstAction) {
  auto conn = Connect(UniqueKey("status-first"));
  EXPECT_NE(conn->status(), client::ConnStatus::kConnected);
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  EXPECT_EQ(conn->status(), client::ConnStatus::kConnected);
  EXPECT_EQ(client::ConnStatusName(conn->status()), "connected");
  conn->Dispose();
}

TEST_P(ActorConnStatusTest, StatusChangeListenerSeesConnected) {
  // Shared with the listener: Dispose's kDisconnected reaches it on the I/O thread after
  // this test returned (listeners run there), so it must not capture the test's stack.
  struct Seen {
    std::mutex mu;
    std::vector<client::ConnStatus> statuses;
  };
  auto seen = std::make_shared<Seen>();
  auto conn = Connect(UniqueKey("status-listener"), [seen](client::ActorConn& c) {
    c.OnStatusChange([seen](client::ConnStatus s) {
      std::lock_guard<std::mutex> lock(seen->mu);
      seen->statuses.push_back(s);
    });
  });
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  EXPECT_TRUE(WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(seen->mu);
        return std::find(seen->statuses.begin(), seen->statuses.end(), client::ConnStatus::kConnected) !=
               seen->statuses.end();
      },
      5s));
  conn->Dispose();
}

TEST_P(ActorConnStatusTest, UnsubscribedStatusListenerIsQuiet) {
  std::atomic<int> after_unsubscribe{0};
  std::atomic<bool> unsubscribed{false};
  std::atomic<int> witness{0};
  client::ActorConn::Unsubscribe off;
  auto conn = Connect(UniqueKey("status-unsub"), [&](client::ActorConn& c) {
    off = c.OnStatusChange([&](client::ConnStatus) {
      if (unsubscribed.load()) ++after_unsubscribe;
    });
    c.OnStatusChange([&](client::ConnStatus s) {
      if (s == client::ConnStatus::kDisconnected) ++witness;
    });
  });
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  off();
  unsubscribed = true;
  conn->Dispose();
  ASSERT_TRUE(WaitFor([&] { return witness.load() >= 1; }, 5s)) << "dispose reports disconnected";
  EXPECT_EQ(after_unsubscribe.load(), 0);
}

TEST_P(ActorConnStatusTest, ConnectedAfterAnAction) {
  auto conn = Connect(UniqueKey("status-action"));
  KEEL_OK(conn->Call<int64_t>("increment", 1));
  KEEL_OK(conn->Call<int64_t>("getCount"));
  EXPECT_EQ(conn->status(), client::ConnStatus::kConnected);
  EXPECT_TRUE(conn->is_connected());
  conn->Dispose();
}

TEST_P(ActorConnStatusTest, OnOpenFires) {
  std::atomic<int> opens{0};
  auto conn = Connect(UniqueKey("status-open"), [&](client::ActorConn& c) { c.OnOpen([&] { ++opens; }); });
  EXPECT_TRUE(WaitFor([&] { return opens.load() == 1; }, 5s));
  conn->Dispose();
}

TEST_P(ActorConnStatusTest, OnCloseFiresOnDispose) {
  std::atomic<int> closes{0};
  auto conn = Connect(UniqueKey("status-close"), [&](client::ActorConn& c) { c.OnClose([&] { ++closes; }); });
  KEEL_STATUS_OK(conn->WaitReady());
  conn->Dispose();
  EXPECT_TRUE(WaitFor([&] { return closes.load() == 1; }, 5s));
  EXPECT_EQ(conn->status(), client::ConnStatus::kDisconnected);
}

KEEL_ACCEPTANCE_ENCODINGS(ActorConnStatus, ActorConnStatusTest);

}  // namespace
}  // namespace keel::acceptance
