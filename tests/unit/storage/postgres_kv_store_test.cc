// PostgresKvStore: the KvStore contract (kv_store_contract.h) and what is PostgreSQL's own:
// the table survives the store, one store per table, durability across a server crash,
// lost connections, connection strings in errors, key size, concurrent commits, unchecked
// batches. Each process starts one throwaway cluster (support/postgres_cluster.h) on first
// use and each test opens its store on a table of its own.
#include "storage/postgres_kv_store.h"

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kv_store_contract.h"
#include "storage/group_sync.h"
#include "storage_test_util.h"
#include "support/postgres_admin.h"
#include "support/postgres_cluster.h"

namespace keel::storage {
namespace {

using keel::testing::AdminConnection;
using keel::testing::PostgresCluster;
using testing::B;
using testing::IsOk;
using testing::IsStorageError;
using testing::Keys;
using testing::S;

// The process's cluster, started on first use, stopped at exit. Null (with a failure
// reported) when it cannot start.
PostgresCluster* Cluster() {
  struct Shared {
    std::unique_ptr<PostgresCluster> cluster;
    std::string error;
  };
  static Shared shared = [] {
    Shared s;
    auto started = PostgresCluster::Start();
    if (started.has_value()) {
      s.cluster = std::move(started).value();
    } else {
      s.error = started.error().ToString();
    }
    return s;
  }();
  if (shared.cluster == nullptr) ADD_FAILURE() << "no PostgreSQL cluster: " << shared.error;
  return shared.cluster.get();
}

// A table name no other store of this process used.
std::string FreshTable() {
  static std::atomic<int> next{0};
  return "kv_" + std::to_string(next.fetch_add(1));
}

}  // namespace

// The contract's backend. Not in the anonymous namespace, and instantiated without a name
// generator: ctest's test discovery (gtest_discover_tests) names a typed test after its
// type's name and parses only numeric instance names, so the tests are
// "postgres.Contract.<Test><keel::storage::PostgresBackend>".
struct PostgresBackend {
  std::unique_ptr<KvStore> Open() {
    PostgresCluster* cluster = Cluster();
    if (cluster == nullptr) return nullptr;
    auto store = PostgresKvStore::Open(cluster->conninfo(), {.table = FreshTable()});
    if (!store.has_value()) {
      ADD_FAILURE() << store.error().ToString();
      return nullptr;
    }
    return std::move(store).value();
  }
};

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(Contract, KvStoreTest, ::testing::Types<PostgresBackend>);
}  // namespace contract

namespace {

class PostgresKvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = Cluster();
    ASSERT_NE(cluster_, nullptr);
    table_ = FreshTable();
    store_ = OpenStore();
    ASSERT_NE(store_, nullptr);
  }

  std::unique_ptr<PostgresKvStore> OpenStore(std::optional<std::string> table = std::nullopt) {
    auto store = PostgresKvStore::Open(cluster_->conninfo(), {.table = table.value_or(table_)});
    EXPECT_TRUE(IsOk(store));
    return store.has_value() ? std::move(store).value() : nullptr;
  }

  std::optional<std::string> Get(KvReader& reader, std::string_view key) {
    auto value = reader.Get(B(key));
    EXPECT_TRUE(IsOk(value));
    if (!value.has_value() || !value->has_value()) return std::nullopt;
    return S(**value);
  }

  PostgresCluster* cluster_ = nullptr;
  std::string table_;
  std::unique_ptr<PostgresKvStore> store_;
};

// ---- the table and its lock

TEST_F(PostgresKvStoreTest, DataSurvivesCloseAndReopen) {
  ASSERT_TRUE(IsOk(store_->Put(B("a"), B("1"))));
  ASSERT_TRUE(IsOk(store_->Put(B("b"), B("2"), {.sync = false})));
  ASSERT_TRUE(IsOk(store_->Close()));
  store_ = OpenStore();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Get(*store_, "a"), "1");
  EXPECT_EQ(Get(*store_, "b"), "2");
}

TEST_F(PostgresKvStoreTest, SecondStoreOnATableFailsUntilTheFirstCloses) {
  auto second = PostgresKvStore::Open(cluster_->conninfo(), {.table = table_});
  EXPECT_TRUE(IsStorageError(second, kFailedPrecondition));
  // Through the URI form of the same database too.
  EXPECT_TRUE(IsStorageError(PostgresKvStore::Open(cluster_->uri(), {.table = table_}),
                             kFailedPrecondition));
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("v"))));
  ASSERT_TRUE(IsOk(store_->Close()));
  auto third = PostgresKvStore::Open(cluster_->uri(), {.table = table_});
  ASSERT_TRUE(IsOk(third));
  EXPECT_EQ(Get(**third, "k"), "v");
}

// The sessions of a store are findable (and those of a dead engine endable) by name, and the
// refusal says how; a name in the URL wins.
TEST_F(PostgresKvStoreTest, SessionsAreNamedKeelAndTheRefusalSaysHowToFindThem) {
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  const std::string holders =
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keel' AND pid IN "
      "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)";
  EXPECT_EQ(admin.Query(holders), "1");
  auto second = PostgresKvStore::Open(cluster_->conninfo(), {.table = table_});
  ASSERT_TRUE(IsStorageError(second, kFailedPrecondition));
  EXPECT_NE(second.error().message().find("pg_stat_activity"), std::string::npos)
      << second.error().ToString();

  auto named = PostgresKvStore::Open(cluster_->conninfo() + " application_name=tenant-7",
                                     {.table = FreshTable()});
  ASSERT_TRUE(IsOk(named));
  EXPECT_EQ(admin.Query("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'tenant-7'"),
            "1");
}

TEST_F(PostgresKvStoreTest, StoresOnDifferentTablesAreIndependent) {
  auto other = OpenStore(FreshTable());
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("mine"))));
  ASSERT_TRUE(IsOk(other->Put(B("k"), B("other's"))));
  ASSERT_TRUE(IsOk(other->Put(B("only-other"), B("x"))));
  EXPECT_EQ(Get(*store_, "k"), "mine");
  EXPECT_EQ(Get(*other, "k"), "other's");
  EXPECT_EQ(Get(*store_, "only-other"), std::nullopt);
  // A txn on each, on the same key: no conflict across tables.
  auto t1 = store_->Begin();
  auto t2 = other->Begin();
  ASSERT_TRUE(IsOk(t1));
  ASSERT_TRUE(IsOk(t2));
  EXPECT_EQ(Get(**t1, "k"), "mine");
  EXPECT_EQ(Get(**t2, "k"), "other's");
  ASSERT_TRUE(IsOk((*t1)->Put(B("k"), B("mine 2"))));
  ASSERT_TRUE(IsOk((*t2)->Put(B("k"), B("other's 2"))));
  EXPECT_TRUE(IsOk((*t1)->Commit()));
  EXPECT_TRUE(IsOk((*t2)->Commit()));
  ASSERT_TRUE(IsOk(other->Close()));
  EXPECT_EQ(Get(*store_, "k"), "mine 2");
}

TEST_F(PostgresKvStoreTest, BadTableNamesAreInvalidArguments) {
  for (const std::string& name :
       std::vector<std::string>{"", "1abc", "a-b", "a\"b", "a b", std::string(64, 'a')}) {
    EXPECT_TRUE(IsStorageError(PostgresKvStore::Open(cluster_->conninfo(), {.table = name}),
                               kInvalidArgument))
        << name;
  }
}

// ---- durability

TEST_F(PostgresKvStoreTest, SyncedCommitSurvivesAServerCrash) {
  ASSERT_TRUE(IsOk(store_->Put(B("synced"), B("1"))));
  ASSERT_TRUE(IsOk(cluster_->CrashAndRestart()));
  store_.reset();  // its connections died with the server, its table lock too
  store_ = OpenStore();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Get(*store_, "synced"), "1");
}

TEST_F(PostgresKvStoreTest, UnsyncedCommitIsLostInAServerCrashUnlessSynced) {
  // What makes the next assertion meaningful: without a WAL flush, the crash loses it.
  ASSERT_TRUE(IsOk(store_->Put(B("unsynced"), B("1"), {.sync = false})));
  ASSERT_TRUE(IsOk(cluster_->CrashAndRestart()));
  store_.reset();
  store_ = OpenStore();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Get(*store_, "unsynced"), std::nullopt);

  ASSERT_TRUE(IsOk(store_->Put(B("unsynced"), B("2"), {.sync = false})));
  ASSERT_TRUE(IsOk(store_->Put(B("later"), B("3"), {.sync = false})));
  ASSERT_TRUE(IsOk(store_->SyncWrites()));
  ASSERT_TRUE(IsOk(cluster_->CrashAndRestart()));
  store_.reset();
  store_ = OpenStore();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Get(*store_, "unsynced"), "2");
  EXPECT_EQ(Get(*store_, "later"), "3");
}

TEST_F(PostgresKvStoreTest, GroupSyncAcknowledgesAnUnsyncedCommitOnceDurable) {
  std::promise<Status> acknowledged;
  {
    GroupSync group(*store_);
    ASSERT_TRUE(IsOk(store_->Put(B("grouped"), B("1"), {.sync = false})));
    group.AfterWrite([&](Status status) { acknowledged.set_value(std::move(status)); });
    auto future = acknowledged.get_future();
    ASSERT_EQ(future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    ASSERT_TRUE(IsOk(future.get()));
  }
  ASSERT_TRUE(IsOk(cluster_->CrashAndRestart()));
  store_.reset();
  store_ = OpenStore();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Get(*store_, "grouped"), "1");
}

TEST_F(PostgresKvStoreTest, StoreKeepsTheTableAcrossAServerRestart) {
  ASSERT_TRUE(IsOk(store_->Put(B("a"), B("1"))));
  ASSERT_TRUE(IsOk(cluster_->Restart()));
  // Its pooled connections died: the store notices before using them, and takes the
  // table's lock again before its next commit.
  EXPECT_EQ(Get(*store_, "a"), "1");
  ASSERT_TRUE(IsOk(store_->Put(B("b"), B("2"))));
  EXPECT_TRUE(IsStorageError(PostgresKvStore::Open(cluster_->conninfo(), {.table = table_}),
                             kFailedPrecondition));
}

// ---- a table taken over (keel_owners epochs and the fence lock)

// The store that holds `table`'s lock, opened as `name` (its sessions' application_name),
// telling `lost` when the table stops being its own.
std::unique_ptr<PostgresKvStore> OpenNamed(const std::string& table, const std::string& name,
                                           std::function<void(const Error&)> on_lost = {}) {
  auto store = PostgresKvStore::Open(Cluster()->conninfo() + " application_name=" + name,
                                     {.table = table, .on_lost = std::move(on_lost)});
  EXPECT_TRUE(IsOk(store));
  return store.has_value() ? std::move(store).value() : nullptr;
}

// The session holding the table lock of the store named `name` (its other sessions hold
// no advisory lock between commits).
std::string LockSessionOf(const std::string& name) {
  return "application_name = '" + name +
         "' AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)";
}

// Counts on_lost calls and keeps the last error's text.
struct LostReports {
  std::mutex mu;
  int calls = 0;
  std::string message;
  std::function<void(const Error&)> Callback() {
    return [this](const Error& e) {
      std::lock_guard lock(mu);
      ++calls;
      message = e.ToString();
    };
  }
};

// The server dropped A's lock (its session ended) and B opened the table: A cannot take
// the lock back, and from then on none of A's writes lands — not even once B has gone.
TEST_F(PostgresKvStoreTest, AStoreWhoseTableWasTakenOverWritesNothingMore) {
  const std::string table = FreshTable();
  LostReports reports;
  auto a = OpenNamed(table, "store-a", reports.Callback());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(IsOk(a->Put(B("k"), B("a1"))));
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  ASSERT_EQ(admin.Terminate(LockSessionOf("store-a")), 1);
  auto b = OpenNamed(table, "store-b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(Get(*b, "k"), "a1");
  ASSERT_TRUE(IsOk(b->Put(B("k"), B("b1"))));

  EXPECT_TRUE(IsStorageError(a->Put(B("k"), B("a2")), kFailedPrecondition));
  auto txn = a->Begin();
  ASSERT_TRUE(IsOk(txn));
  ASSERT_TRUE(IsOk((*txn)->Put(B("other"), B("a3"))));
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kFailedPrecondition));
  const Bytes other = B("other"), a4 = B("a4");
  const KvWrite write{other, a4};
  EXPECT_TRUE(IsStorageError(a->WriteUnchecked({&write, 1}, {}), kFailedPrecondition));
  EXPECT_EQ(Get(*b, "k"), "b1");
  EXPECT_EQ(Get(*b, "other"), std::nullopt);

  ASSERT_TRUE(IsOk(b->Close()));
  EXPECT_TRUE(IsStorageError(a->Put(B("k"), B("a5")), kFailedPrecondition));
  {
    std::lock_guard lock(reports.mu);
    EXPECT_EQ(reports.calls, 1);
    EXPECT_NE(reports.message.find("storage.failed_precondition"), std::string::npos);
    EXPECT_NE(reports.message.find("no longer this store's"), std::string::npos) << reports.message;
  }
  // A holds no lock: the next store opens the table, and finds B's data only.
  auto c = OpenNamed(table, "store-c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(Get(*c, "k"), "b1");
}

// A's lock session ended, then B opened the table, wrote and closed, all before A's next
// commit: A could take the lock again, but what it holds in memory may be stale now, so
// it does not; it lets the lock go for the next store.
TEST_F(PostgresKvStoreTest, ALostLockIsNotTakenBackOnceAnotherStoreHadTheTable) {
  const std::string table = FreshTable();
  LostReports reports;
  auto a = OpenNamed(table, "store-a", reports.Callback());
  ASSERT_NE(a, nullptr);
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  ASSERT_EQ(admin.Terminate(LockSessionOf("store-a")), 1);
  {
    auto b = OpenNamed(table, "store-b");
    ASSERT_NE(b, nullptr);
    ASSERT_TRUE(IsOk(b->Put(B("k"), B("b1"))));
  }
  EXPECT_TRUE(IsStorageError(a->Put(B("k"), B("a1")), kFailedPrecondition));
  EXPECT_EQ(admin.Query("SELECT count(*) FROM pg_stat_activity WHERE " + LockSessionOf("store-a")),
            "0");
  auto c = OpenNamed(table, "store-c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(Get(*c, "k"), "b1");
  std::lock_guard lock(reports.mu);
  EXPECT_EQ(reports.calls, 1);
}

// A store whose lock still looks held to it (a partition: the server ended its session,
// no word reached it yet) while another store claimed the table: its commits check the
// owner epoch, so they apply nothing.
TEST_F(PostgresKvStoreTest, ACommitAfterAnotherStoreClaimedTheTableAppliesNothing) {
  const std::string table = FreshTable();
  LostReports reports;
  auto a = OpenNamed(table, "store-a", reports.Callback());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(IsOk(a->Put(B("k"), B("a1"))));
  auto txn = a->Begin();
  ASSERT_TRUE(IsOk(txn));
  EXPECT_EQ(Get(**txn, "k"), "a1");
  ASSERT_TRUE(IsOk((*txn)->Put(B("k"), B("a2"))));
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  // What a claim does, without the lock A's session still holds.
  ASSERT_EQ(admin.Query("UPDATE keel_owners SET epoch = epoch + 1 WHERE tbl = '" + table +
                        "' RETURNING 1"),
            "1");
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kFailedPrecondition));
  EXPECT_TRUE(IsStorageError(a->Put(B("k"), B("a3")), kFailedPrecondition));
  EXPECT_EQ(Get(*a, "k"), "a1");  // reads still work; nothing was written
  std::lock_guard lock(reports.mu);
  EXPECT_EQ(reports.calls, 1);
}

// A claim waits for the commits in flight (they hold the fence lock shared), so the new
// owner reads everything the last one wrote; commits after the claim find it made.
TEST_F(PostgresKvStoreTest, AClaimWaitsForCommitsInFlight) {
  const std::string table = FreshTable();
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  {
    auto first = OpenNamed(table, "store-a");  // creates the table and its owner row
    ASSERT_NE(first, nullptr);
  }
  // The table's fence lock, shared, as a commit takes it: keel's space ("KELF") in the high
  // half of its id, the table's oid in the low one.
  const std::string fence = "pg_advisory_xact_lock_shared((1262832710::int8 << 32) + '" + table +
                            "'::regclass::oid::int8)";
  ASSERT_EQ(admin.Query("BEGIN"), "");
  ASSERT_EQ(admin.Query("SELECT " + fence), "");  // a commit in flight
  auto opening = std::async(std::launch::async, [&] { return OpenNamed(table, "store-b"); });
  // Asked on a connection of its own: the one in a transaction sees a fixed pg_stat_activity.
  AdminConnection watcher(cluster_->conninfo());
  ASSERT_TRUE(watcher.ok());
  const std::string waiting =
      "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE "
      "a.application_name = 'store-b' AND l.locktype = 'advisory' AND NOT l.granted";
  bool waited = false;
  for (int i = 0; i < 1000 && !waited; ++i) {  // bounded: 10 s
    waited = watcher.Query(waiting) == "1";
    if (!waited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(waited) << "the claim did not wait for the fence";
  EXPECT_EQ(opening.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ASSERT_EQ(admin.Query("COMMIT"), "");
  auto b = opening.get();
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(IsOk(b->Put(B("k"), B("b1"))));
}

// ---- lost connections

TEST_F(PostgresKvStoreTest, CommitOnAKilledConnectionIsIoAndTheStoreRecovers) {
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("0"))));
  auto txn = store_->Begin();
  ASSERT_TRUE(IsOk(txn));
  EXPECT_EQ(Get(**txn, "k"), "0");
  ASSERT_TRUE(IsOk((*txn)->Put(B("k"), B("1"))));
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  // The txn's connection is the only one inside a transaction.
  ASSERT_EQ(admin.Terminate("state = 'idle in transaction'"), 1);
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kIo));
  EXPECT_EQ(Get(*store_, "k"), "0");

  auto reader = store_->Begin();
  ASSERT_TRUE(IsOk(reader));
  EXPECT_EQ(Get(**reader, "k"), "0");
  ASSERT_EQ(admin.Terminate("state = 'idle in transaction'"), 1);
  EXPECT_TRUE(IsStorageError((*reader)->Get(B("k")), kIo));
  (*reader)->Rollback();

  // Every connection of the store, its table lock's included.
  EXPECT_GE(admin.Terminate("true"), 1);
  EXPECT_TRUE(IsOk(store_->Put(B("k"), B("2"))));
  EXPECT_EQ(Get(*store_, "k"), "2");
  auto again = store_->Begin();
  ASSERT_TRUE(IsOk(again));
  ASSERT_TRUE(IsOk((*again)->Put(B("k"), B("3"))));
  EXPECT_TRUE(IsOk((*again)->Commit()));
  EXPECT_EQ(Get(*store_, "k"), "3");
  // The lock was taken again: the table is still this store's.
  EXPECT_TRUE(IsStorageError(PostgresKvStore::Open(cluster_->conninfo(), {.table = table_}),
                             kFailedPrecondition));
}

TEST_F(PostgresKvStoreTest, ServerErrorsAreInternalWithTheServersMessage) {
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("v"))));
  AdminConnection admin(cluster_->conninfo());
  ASSERT_TRUE(admin.ok());
  ASSERT_EQ(admin.Query("DROP TABLE \"" + table_ + "\""), "");
  Status put = store_->Put(B("k"), B("w"));
  ASSERT_TRUE(IsStorageError(put, kInternal));
  EXPECT_NE(put.error().message().find("does not exist"), std::string::npos)
      << put.error().message();
  const Bytes key = B("k"), value = B("w");
  EXPECT_TRUE(IsStorageError(
      store_->WriteUnchecked(std::vector<KvWrite>{{key, ByteView(value)}}, {}), kInternal));
  // The connections that saw the failures are still usable once the table is back.
  ASSERT_EQ(admin.Query("CREATE TABLE \"" + table_ + "\" (k bytea PRIMARY KEY, v bytea NOT NULL)"),
            "");
  EXPECT_TRUE(IsOk(store_->Put(B("k"), B("x"))));
  EXPECT_EQ(Get(*store_, "k"), "x");
}

TEST_F(PostgresKvStoreTest, UnreachableServerFailsOpenWithIoNamingTheTargetNotThePassword) {
  std::string missing = cluster_->dir() + "/no-such-dir";
  auto keywords = PostgresKvStore::Open("host=" + missing +
                                        " port=5432 user=postgres password=hunter2 dbname=x");
  ASSERT_TRUE(IsStorageError(keywords, kIo));
  EXPECT_NE(keywords.error().message().find(missing), std::string::npos)
      << keywords.error().message();
  EXPECT_EQ(keywords.error().message().find("hunter2"), std::string::npos)
      << keywords.error().message();

  auto uri = PostgresKvStore::Open("postgresql://keel:hunter2@127.0.0.1:1/db?connect_timeout=5");
  ASSERT_TRUE(IsStorageError(uri, kIo));
  EXPECT_NE(uri.error().message().find("127.0.0.1"), std::string::npos) << uri.error().message();
  EXPECT_EQ(uri.error().message().find("hunter2"), std::string::npos) << uri.error().message();
}

TEST(PostgresKvStoreRedactedTest, HidesPasswordsInBothForms) {
  using P = PostgresKvStore;
  EXPECT_EQ(P::Redacted("postgresql://keel:s3cret@db.example:5432/app?sslmode=require"),
            "postgresql://keel:***@db.example:5432/app?sslmode=require");
  EXPECT_EQ(P::Redacted("postgres://keel@db/app?password=s3cret&application_name=x"),
            "postgres://keel@db/app?password=***&application_name=x");
  EXPECT_EQ(P::Redacted("postgresql://keel:p?w@db/app"), "postgresql://keel:***@db/app");
  EXPECT_EQ(P::Redacted("postgresql:///app?host=/run/pg"), "postgresql:///app?host=/run/pg");
  EXPECT_EQ(P::Redacted("host=db port=5432 password=s3cret dbname=app"),
            "host=db port=5432 password=*** dbname=app");
  EXPECT_EQ(P::Redacted("host = db password = 'it\\'s secret' user=keel"),
            "host=db password=*** user=keel");
  EXPECT_EQ(P::Redacted("dbname='postgresql://u:s3cret@db/app' user=keel"),
            "dbname='postgresql://u:***@db/app' user=keel");
  EXPECT_EQ(P::Redacted("password='unterminated"), "(an unparsable connection string)");
}

// ---- keys

TEST_F(PostgresKvStoreTest, KeysOverTheLimitAreInvalidArguments) {
  const std::string longest(PostgresKvStore::kMaxKeyBytes, '\xab');
  const std::string too_long(PostgresKvStore::kMaxKeyBytes + 1, '\xab');
  ASSERT_TRUE(IsOk(store_->Put(B(longest), B("v"))));
  EXPECT_EQ(Get(*store_, longest), "v");
  EXPECT_TRUE(IsStorageError(store_->Put(B(too_long), B("v")), kInvalidArgument));
  EXPECT_TRUE(IsStorageError(store_->Delete(B(too_long)), kInvalidArgument));
  const Bytes key = B(too_long);
  EXPECT_TRUE(IsStorageError(store_->WriteUnchecked(std::vector<KvWrite>{{key, std::nullopt}}, {}),
                             kInvalidArgument));
  // Reading such a key, or scanning from just after the longest key, is fine.
  EXPECT_EQ(Get(*store_, too_long), std::nullopt);
  auto after = store_->Scan(KeyRange::From(KeyAfter(B(longest))));
  ASSERT_TRUE(IsOk(after));
  EXPECT_TRUE(after->empty());
}

// ---- conflicts specific to how PostgreSQL tracks versions (the row's xmin)

TEST_F(PostgresKvStoreTest, KeyDeletedAndReinsertedWithTheSameValueConflicts) {
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("v"))));
  auto txn = store_->Begin();
  ASSERT_TRUE(IsOk(txn));
  EXPECT_EQ(Get(**txn, "k"), "v");
  ASSERT_TRUE(IsOk((*txn)->Put(B("out"), B("1"))));
  ASSERT_TRUE(IsOk(store_->Delete(B("k"))));
  ASSERT_TRUE(IsOk(store_->Put(B("k"), B("v"))));
  EXPECT_TRUE(IsStorageError((*txn)->Commit(), kConflict));
  EXPECT_EQ(Get(*store_, "out"), std::nullopt);
}

TEST_F(PostgresKvStoreTest, BlindWritesConflictWithWritesAfterTheSnapshot) {
  ASSERT_TRUE(IsOk(store_->Put(B("present"), B("v"))));
  // Present at the snapshot, deleted after it.
  auto t1 = store_->Begin();
  ASSERT_TRUE(IsOk(t1));
  ASSERT_TRUE(IsOk((*t1)->Put(B("present"), B("t1"))));
  ASSERT_TRUE(IsOk(store_->Delete(B("present"))));
  EXPECT_TRUE(IsStorageError((*t1)->Commit(), kConflict));
  EXPECT_EQ(Get(*store_, "present"), std::nullopt);
  // Absent at the snapshot, inserted after it.
  auto t2 = store_->Begin();
  ASSERT_TRUE(IsOk(t2));
  ASSERT_TRUE(IsOk((*t2)->Delete(B("absent"))));
  ASSERT_TRUE(IsOk(store_->Put(B("absent"), B("new"))));
  EXPECT_TRUE(IsStorageError((*t2)->Commit(), kConflict));
  EXPECT_EQ(Get(*store_, "absent"), "new");
  // Unchanged since the snapshot: commits.
  auto t3 = store_->Begin();
  ASSERT_TRUE(IsOk(t3));
  ASSERT_TRUE(IsOk((*t3)->Put(B("absent"), B("t3"))));
  ASSERT_TRUE(IsOk((*t3)->Delete(B("never"))));
  EXPECT_TRUE(IsOk((*t3)->Commit()));
  EXPECT_EQ(Get(*store_, "absent"), "t3");
}

TEST_F(PostgresKvStoreTest, ScanFetchesMorePagesWhenBufferedDeletesHideRows) {
  std::vector<std::string> keys;
  for (int i = 0; i < 3000; ++i) {
    std::string k = "k";
    k += std::to_string(10000 + i);
    keys.push_back(k);
  }
  std::vector<KvWrite> writes;
  const Bytes value = B("v");
  std::vector<Bytes> key_bytes;
  key_bytes.reserve(keys.size());
  for (const std::string& k : keys) key_bytes.push_back(B(k));
  for (const Bytes& k : key_bytes) writes.push_back({k, ByteView(value)});
  ASSERT_TRUE(IsOk(store_->WriteUnchecked(writes, {})));

  auto txn = store_->Begin();
  ASSERT_TRUE(IsOk(txn));
  // Hide the first and last 1500 rows (more than one page's worth of buffered writes).
  for (int i = 0; i < 1500; ++i) ASSERT_TRUE(IsOk((*txn)->Delete(key_bytes[i])));
  for (int i = 1505; i < 3000; ++i) ASSERT_TRUE(IsOk((*txn)->Delete(key_bytes[i])));
  ASSERT_TRUE(IsOk((*txn)->Put(B("k11502x"), B("mine"))));
  auto forward = (*txn)->Scan(KeyRange::Prefix(B("k")), {.limit = 3});
  ASSERT_TRUE(IsOk(forward));
  EXPECT_EQ(Keys(*forward), (std::vector<std::string>{"k11500", "k11501", "k11502"}));
  auto backward = (*txn)->Scan(KeyRange::Prefix(B("k")), {.limit = 3, .reverse = true});
  ASSERT_TRUE(IsOk(backward));
  EXPECT_EQ(Keys(*backward), (std::vector<std::string>{"k11504", "k11503", "k11502x"}));
  auto all = (*txn)->Scan(KeyRange::Prefix(B("k")));
  ASSERT_TRUE(IsOk(all));
  EXPECT_EQ(all->size(), 6u);
  (*txn)->Rollback();
}

// ---- concurrency

TEST_F(PostgresKvStoreTest, ConcurrentIncrementsCountExactlyTheSuccessfulCommits) {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 25;
  std::atomic<int> committed{0};
  std::atomic<int> gave_up{0};
  std::atomic<int> other_errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        // Few attempts, so some increments give up: the count must still be exact.
        Status s = RunTransaction(*store_,
                                  [&](KvTxn& txn) -> Status {
                                    KEEL_ASSIGN_OR_RETURN(std::optional<Bytes> v,
                                                          txn.Get(AsBytes("counter")));
                                    int n = v.has_value() ? std::stoi(S(*v)) : 0;
                                    return txn.Put(AsBytes("counter"), B(std::to_string(n + 1)));
                                  },
                                  /*max_attempts=*/2, {.sync = false});
        if (s.has_value()) {
          committed.fetch_add(1);
        } else if (IsConflict(s.error())) {
          gave_up.fetch_add(1);
        } else {
          other_errors.fetch_add(1);
          ADD_FAILURE() << s.error().ToString();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_EQ(committed.load() + gave_up.load(), kThreads * kIncrements);
  EXPECT_GT(committed.load(), 0);
  EXPECT_EQ(Get(*store_, "counter"), std::to_string(committed.load()));
}

TEST_F(PostgresKvStoreTest, WriteUncheckedAppliesEachBatchAtomicallyInOrder) {
  // Each batch sets x and y to the same number (x first with a stale value that a later
  // write of x in the same batch overrides): a reader never sees them differ.
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> stale{0};
  std::thread reader([&] {
    while (!done.load()) {
      auto entries = store_->Scan(KeyRange::All());
      if (!entries.has_value() || entries->empty()) continue;
      if (entries->size() != 2 || (*entries)[0].value != (*entries)[1].value) torn.fetch_add(1);
      if (S((*entries)[0].value) == "stale") stale.fetch_add(1);
    }
  });
  for (int i = 0; i < 100; ++i) {
    const Bytes x = B("x"), y = B("y"), n = B(std::to_string(i)), old = B("stale");
    std::vector<KvWrite> batch = {{x, ByteView(old)}, {y, ByteView(n)}, {x, ByteView(n)}};
    ASSERT_TRUE(IsOk(store_->WriteUnchecked(batch, {.sync = false})));
  }
  done = true;
  reader.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(stale.load(), 0);
  EXPECT_EQ(Get(*store_, "x"), "99");
  EXPECT_EQ(Get(*store_, "y"), "99");
}

}  // namespace
}  // namespace keel::storage
