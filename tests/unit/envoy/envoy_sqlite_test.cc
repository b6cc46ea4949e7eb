// The EnvoyClient's SQLite request paths: page I/O (get_pages, commit; envoy-protocol.md §7)
// and remote SQL (exec, execute, execute_write; §8), each in its own request-id space next
// to KV (§3.10), with the disconnect rules of §8.8 and Keel's page-I/O rules (a sent
// get_pages is resent, a sent commit fails indeterminate). Driven by hand through the
// fixture in envoy_client_fixture.h.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "unit/envoy/envoy_client_fixture.h"

namespace keel::envoy {
namespace {

using namespace ::keel::envoy::test;

template <typename T>
using Slot = std::optional<Result<T>>;

// A callback that stores its result in `slot` and fails the test if it runs twice.
template <typename T>
std::function<void(Result<T>)> Into(Slot<T>& slot) {
  return [&slot](Result<T> result) {
    EXPECT_FALSE(slot.has_value()) << "callback ran twice";
    slot = std::move(result);
  };
}

template <typename T>
void ExpectError(const Slot<T>& slot, const Error& expected) {
  ASSERT_TRUE(slot.has_value()) << "callback did not run; expected " << expected.ToString();
  ASSERT_FALSE(slot->has_value()) << "expected " << expected.ToString();
  EXPECT_EQ(slot->error().ToString(), expected.ToString());
}

v::SqliteGetPagesRequest GetPages(std::vector<uint32_t> pgnos) {
  v::SqliteGetPagesRequest request;
  request.actor_id = "a1";
  request.pgnos = std::move(pgnos);
  return request;
}

v::SqliteCommitRequest Commit(uint32_t pgno, uint8_t fill) {
  v::SqliteCommitRequest request;
  request.actor_id = "a1";
  request.dirty_pages.push_back(v::SqliteDirtyPage{pgno, Bytes(4096, fill)});
  request.db_size_pages = pgno;
  request.now_ms = 1700000000000;
  return request;
}

template <typename Request>
Request Sql(std::string sql) {
  Request request;
  request.namespace_id = "default";
  request.actor_id = "a1";
  request.generation = 1;
  request.sql = std::move(sql);
  return request;
}
const auto Exec = Sql<v::SqliteExecRequest>;
const auto Execute = Sql<v::SqliteExecuteRequest>;
const auto ExecuteWrite = Sql<v::SqliteExecuteWriteRequest>;

v::SqliteExecuteResult ExecuteResult(int64_t changes) {
  v::SqliteExecuteResult result;
  result.changes = changes;
  result.route = v::SqliteExecuteRoute::kWrite;
  return result;
}

// Short names of the request frames on the wire, in order, with their request ids
// ("get_pages#0"); other frames (metadata, events, pongs) are left out.
std::string RequestName(const v::ToRivet& m) {
  if (const auto* r = m.get_if<v::ToRivetKvRequest>()) return "kv#" + std::to_string(r->request_id);
  if (const auto* r = m.get_if<v::ToRivetSqliteGetPagesRequest>()) {
    return "get_pages#" + std::to_string(r->request_id);
  }
  if (const auto* r = m.get_if<v::ToRivetSqliteCommitRequest>()) {
    return "commit#" + std::to_string(r->request_id);
  }
  if (const auto* r = m.get_if<v::ToRivetSqliteExecRequest>()) {
    return "exec#" + std::to_string(r->request_id);
  }
  if (const auto* r = m.get_if<v::ToRivetSqliteExecuteRequest>()) {
    return "execute#" + std::to_string(r->request_id);
  }
  if (const auto* r = m.get_if<v::ToRivetSqliteExecuteWriteRequest>()) {
    return "execute_write#" + std::to_string(r->request_id);
  }
  return "";
}

Error RemoteIndeterminate(const std::string& operation) {
  return Error("sqlite", "remote_indeterminate_result",
               "Remote SQLite " + operation +
                   " may have completed, but the envoy disconnected before returning a result.");
}
const Error kCommitIndeterminate("sqlite", "indeterminate_commit",
                                 "SQLite commit may have completed, but the envoy disconnected "
                                 "before its answer");

class EnvoySqliteTest : public EnvoyClientTest {
 protected:
  std::vector<std::string> SentRequests() {
    std::vector<std::string> out;
    for (const auto& m : Sent()) {
      std::string name = RequestName(m);
      if (!name.empty()) out.push_back(std::move(name));
    }
    return out;
  }

  // After a close: runs timers until the client reconnects, then opens the socket and
  // delivers Init. Drops the metadata frame.
  void Reopen() {
    const size_t before = transport_.connects.size();
    while (transport_.connects.size() == before && clock_.NextDeadline().has_value()) {
      clock_.AdvanceTo(*clock_.NextDeadline());
    }
    ASSERT_EQ(transport_.connects.size(), before + 1);
    client_->OnOpen();
    transport_.sent.clear();
    Init();
  }
};

// ---- sending and matching -----------------------------------------------------------------

TEST_F(EnvoySqliteTest, RequestsGoOutAtOnceWithIdsFromTheirOwnCounter) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  Slot<v::SqliteCommitResponse> commit;
  Slot<v::SqliteExecResponse> exec;
  Slot<v::SqliteExecuteResponse> execute;
  Slot<v::SqliteExecuteWriteResponse> write;
  Slot<v::KvResponseData> kv;
  client_->SqliteGetPages(GetPages({1, 2}), Into(pages));
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));
  client_->SqliteCommit(Commit(3, 0xab), Into(commit));
  client_->SendKv("a1", KvGet("k"), Into(kv));
  client_->SqliteExecute(Execute("SELECT 2"), Into(execute));
  client_->SqliteExecuteWrite(ExecuteWrite("INSERT 3"), Into(write));
  // Page I/O, remote SQL and KV each count from 0 on their own.
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"get_pages#0", "exec#0", "commit#1", "kv#0",
                                                      "execute#1", "execute_write#2"}));
  // The payloads go out as given.
  ASSERT_EQ(SentOf<v::ToRivetSqliteGetPagesRequest>().size(), 1u);
  EXPECT_EQ(SentOf<v::ToRivetSqliteGetPagesRequest>()[0].data, GetPages({1, 2}));
  EXPECT_EQ(SentOf<v::ToRivetSqliteCommitRequest>()[0].data, Commit(3, 0xab));
  EXPECT_EQ(SentOf<v::ToRivetSqliteExecRequest>()[0].data, Exec("SELECT 1"));
  EXPECT_EQ(SentOf<v::ToRivetSqliteExecuteRequest>()[0].data, Execute("SELECT 2"));
  EXPECT_EQ(SentOf<v::ToRivetSqliteExecuteWriteRequest>()[0].data, ExecuteWrite("INSERT 3"));
  EXPECT_EQ(client_->pending_sqlite_requests(), 5u);
  EXPECT_EQ(client_->pending_kv_requests(), 1u);
  EXPECT_FALSE(pages || commit || exec || execute || write || kv);
}

TEST_F(EnvoySqliteTest, ResponsesAreMatchedByIdWithinTheirSpace) {
  Connect();
  // Id 0 is pending in all three spaces at once, id 1 in page I/O and remote SQL.
  Slot<v::SqliteGetPagesResponse> pages;
  Slot<v::SqliteCommitResponse> commit;
  Slot<v::SqliteExecResponse> exec;
  Slot<v::SqliteExecuteWriteResponse> write;
  Slot<v::KvResponseData> kv;
  client_->SqliteGetPages(GetPages({1}), Into(pages));          // pages #0
  client_->SqliteCommit(Commit(1, 7), Into(commit));            // pages #1
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));            // remote #0
  client_->SqliteExecuteWrite(ExecuteWrite("X"), Into(write));  // remote #1
  client_->SendKv("a1", KvGet("k"), Into(kv));                  // kv #0

  // Answered out of order; each reaches its own callback.
  Deliver(v::ToEnvoySqliteExecuteWriteResponse{
      1, v::SqliteExecuteWriteResponse{v::SqliteExecuteWriteOk{ExecuteResult(3)}}});
  ASSERT_TRUE(write.has_value() && write->has_value());
  ASSERT_TRUE((*write)->is<v::SqliteExecuteWriteOk>());
  EXPECT_EQ((*write)->get_if<v::SqliteExecuteWriteOk>()->result.changes, 3);

  Deliver(v::ToEnvoyKvResponse{0, v::KvResponseData{v::KvPutResponse{}}});
  ASSERT_TRUE(kv.has_value() && kv->has_value());
  EXPECT_FALSE(pages || commit || exec);

  // An engine error is a value: the runtime maps its text.
  Deliver(v::ToEnvoySqliteCommitResponse{1, v::SqliteCommitResponse{v::SqliteErrorResponse{
                                                "sqlite database branch is not writable"}}});
  ASSERT_TRUE(commit.has_value() && commit->has_value());
  ASSERT_TRUE((*commit)->is<v::SqliteErrorResponse>());
  EXPECT_EQ((*commit)->get_if<v::SqliteErrorResponse>()->message,
            "sqlite database branch is not writable");

  v::SqliteQueryResult rows;
  rows.columns = {"1"};
  rows.rows = {{v::SqliteColumnValue{v::SqliteValueInteger{1}}}};
  Deliver(v::ToEnvoySqliteExecResponse{0, v::SqliteExecResponse{v::SqliteExecOk{rows}}});
  ASSERT_TRUE(exec.has_value() && exec->has_value());
  ASSERT_TRUE((*exec)->is<v::SqliteExecOk>());
  EXPECT_EQ((*exec)->get_if<v::SqliteExecOk>()->result, rows);

  v::SqliteGetPagesOk ok;
  ok.pages = {v::SqliteFetchedPage{1, Bytes(4096, 0x11)}};
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{ok}});
  ASSERT_TRUE(pages.has_value() && pages->has_value());
  ASSERT_TRUE((*pages)->is<v::SqliteGetPagesOk>());
  EXPECT_EQ(*(*pages)->get_if<v::SqliteGetPagesOk>(), ok);

  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
  EXPECT_EQ(client_->pending_kv_requests(), 0u);
  EXPECT_EQ(client_->unmatched_responses(), 0u);
}

TEST_F(EnvoySqliteTest, ResponseWithAnUnknownIdIsDroppedAndCounted) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  client_->SqliteGetPages(GetPages({1}), Into(pages));  // pages #0
  // Id 0 of the remote SQL space is not pending, although id 0 of page I/O is.
  Deliver(v::ToEnvoySqliteExecResponse{0, v::SqliteExecResponse{v::SqliteExecOk{}}});
  Deliver(v::ToEnvoySqliteCommitResponse{42, v::SqliteCommitResponse{v::SqliteCommitOk{}}});
  Deliver(v::ToEnvoyKvResponse{7, v::KvResponseData{v::KvPutResponse{}}});
  EXPECT_EQ(client_->unmatched_responses(), 3u);
  EXPECT_FALSE(pages.has_value());
  EXPECT_EQ(client_->pending_sqlite_requests(), 1u);
  EXPECT_EQ(Sent().size(), 1u);  // the request only: nothing answers a stray response

  // A second answer to an answered request is late, hence unknown.
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{v::SqliteGetPagesOk{}}});
  ASSERT_TRUE(pages.has_value() && pages->has_value());
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{v::SqliteGetPagesOk{}}});
  EXPECT_EQ(client_->unmatched_responses(), 4u);
  EXPECT_EQ(client_->malformed_frames(), 0u);
}

TEST_F(EnvoySqliteTest, AnswerOfAnotherKindInTheSameSpaceFailsTheRequest) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  client_->SqliteGetPages(GetPages({1}), Into(pages));  // pages #0
  // An engine bug: a commit answer carrying the get_pages request's id.
  Deliver(v::ToEnvoySqliteCommitResponse{0, v::SqliteCommitResponse{v::SqliteCommitOk{}}});
  ASSERT_TRUE(pages.has_value());
  ASSERT_FALSE(pages->has_value());
  EXPECT_TRUE(pages->error().Is("envoy", "unexpected_response")) << pages->error().ToString();
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
}

// ---- queueing without a connection --------------------------------------------------------

TEST_F(EnvoySqliteTest, RequestsWithoutAConnectionAreSentAfterInitInCreationOrder) {
  Make();
  client_->Start();  // connecting: no socket yet
  client_->SqliteGetPages(GetPages({1}), [](auto) {});
  client_->SendKv("a1", KvGet("k"), [](auto) {});
  client_->SqliteExec(Exec("SELECT 1"), [](auto) {});
  client_->SqliteCommit(Commit(1, 1), [](auto) {});
  EXPECT_TRUE(transport_.sent.empty());
  client_->OnOpen();
  // Socket open but no Init yet: not connected, so a new request queues behind the others
  // instead of overtaking them.
  client_->SqliteExecuteWrite(ExecuteWrite("X"), [](auto) {});
  client_->SendKv("a1", KvGet("k2"), [](auto) {});
  EXPECT_TRUE(SentRequests().empty());
  EXPECT_EQ(client_->pending_sqlite_requests(), 4u);
  Init();
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"get_pages#0", "kv#0", "exec#0", "commit#1",
                                                      "execute_write#1", "kv#1"}));
  // Now connected: sent at once.
  transport_.sent.clear();
  client_->SqliteExecute(Execute("SELECT 2"), [](auto) {});
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"execute#2"}));
}

// ---- disconnects --------------------------------------------------------------------------

TEST_F(EnvoySqliteTest, SentRemoteSqlFailsIndeterminateAtTheCloseAndIsNeverResent) {
  Connect();
  Slot<v::SqliteExecResponse> exec;
  Slot<v::SqliteExecuteResponse> execute;
  Slot<v::SqliteExecuteWriteResponse> write;
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));                 // remote #0
  client_->SqliteExecute(Execute("SELECT 2"), Into(execute));        // remote #1
  client_->SqliteExecuteWrite(ExecuteWrite("INSERT"), Into(write));  // remote #2
  ASSERT_EQ(SentRequests().size(), 3u);
  client_->OnClosed(1006, "");
  // At the close notification, not at a timeout.
  ExpectError(exec, RemoteIndeterminate("exec"));
  ExpectError(execute, RemoteIndeterminate("execute"));
  ExpectError(write, RemoteIndeterminate("execute_write"));
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);

  // One created while there is no socket stays queued through the reconnect.
  Slot<v::SqliteExecResponse> queued;
  client_->SqliteExec(Exec("SELECT 3"), Into(queued));  // remote #3
  transport_.sent.clear();
  Reopen();
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"exec#3"}));
  // The dead socket's answer can no longer arrive; a stray one would be unknown.
  Deliver(v::ToEnvoySqliteExecResponse{0, v::SqliteExecResponse{v::SqliteExecOk{}}});
  EXPECT_EQ(client_->unmatched_responses(), 1u);
  Deliver(v::ToEnvoySqliteExecResponse{3, v::SqliteExecResponse{v::SqliteExecOk{}}});
  ASSERT_TRUE(queued.has_value() && queued->has_value());
}

TEST_F(EnvoySqliteTest, UnsentRemoteSqlSurvivesACloseBeforeInit) {
  Make();
  client_->Start();
  Slot<v::SqliteExecResponse> exec;
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));
  client_->OnOpen();
  client_->OnClosed(1006, "");  // closed before Init: the request was never written
  EXPECT_FALSE(exec.has_value());
  EXPECT_EQ(client_->pending_sqlite_requests(), 1u);
  Reopen();
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"exec#0"}));
}

TEST_F(EnvoySqliteTest, SentCommitFailsIndeterminateAtTheClose) {
  Connect();
  Slot<v::SqliteCommitResponse> commit;
  client_->SqliteCommit(Commit(1, 9), Into(commit));
  ASSERT_EQ(SentRequests(), (std::vector<std::string>{"commit#0"}));
  client_->OnClosed(1006, "");
  ExpectError(commit, kCommitIndeterminate);
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
  transport_.sent.clear();
  Reopen();
  EXPECT_TRUE(SentRequests().empty());
}

TEST_F(EnvoySqliteTest, SentGetPagesIsResentAfterTheReconnectAndAnswered) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  client_->SqliteGetPages(GetPages({1, 5}), Into(pages));
  ASSERT_EQ(SentRequests(), (std::vector<std::string>{"get_pages#0"}));
  client_->OnClosed(1006, "");
  // A read: kept, not failed.
  EXPECT_FALSE(pages.has_value());
  EXPECT_EQ(client_->pending_sqlite_requests(), 1u);
  transport_.sent.clear();
  Reopen();
  auto resent = SentOf<v::ToRivetSqliteGetPagesRequest>();
  ASSERT_EQ(resent.size(), 1u);
  EXPECT_EQ(resent[0].request_id, 0u);
  EXPECT_EQ(resent[0].data, GetPages({1, 5}));
  v::SqliteGetPagesOk ok;
  ok.pages = {v::SqliteFetchedPage{1, Bytes(4096, 1)}, v::SqliteFetchedPage{5, std::nullopt}};
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{ok}});
  ASSERT_TRUE(pages.has_value() && pages->has_value());
  EXPECT_EQ(*(*pages)->get_if<v::SqliteGetPagesOk>(), ok);
  // Sent once on the new connection: a second close and reconnect resends it no more.
  transport_.sent.clear();
  client_->OnClosed(1006, "");
  Reopen();
  EXPECT_TRUE(SentRequests().empty());
}

TEST_F(EnvoySqliteTest, CallbacksRunAtTheCloseMayIssueNewRequests) {
  Connect();
  Slot<v::SqliteExecResponse> retried;
  client_->SqliteCommit(Commit(1, 1), [&](Result<v::SqliteCommitResponse> r) {
    ASSERT_FALSE(r.has_value());
    // Runs inside OnClosed; the new request is queued for the next connection.
    client_->SqliteExec(Exec("SELECT 1"), Into(retried));
  });
  client_->OnClosed(1006, "");
  EXPECT_EQ(client_->pending_sqlite_requests(), 1u);
  transport_.sent.clear();
  Reopen();
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"exec#0"}));
}

// ---- protocol versions --------------------------------------------------------------------

TEST_F(EnvoySqliteTest, V3RefusesRemoteSqlAsUnavailableAndCarriesPageIo) {
  EnvoyConfig c;
  c.protocol_version = 3;
  Make(c);
  client_->Start();
  // Queued without a socket: it fails when flushed after Init, not before.
  Slot<v::SqliteGetPagesResponse> queued_pages;
  Slot<v::SqliteExecuteResponse> queued_execute;
  client_->SqliteGetPages(GetPages({1}), Into(queued_pages));
  client_->SqliteExecute(Execute("SELECT 1"), Into(queued_execute));
  EXPECT_FALSE(queued_execute.has_value());
  client_->OnOpen();
  transport_.sent.clear();
  Init();
  const Error unavailable(
      "sqlite", "remote_unavailable",
      "Remote SQLite is unavailable: remote sqlite requests require envoy-protocol v4 but target "
      "version is v3");
  ExpectError(queued_execute, unavailable);
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"get_pages#0"}));
  transport_.sent.clear();

  // Connected: each remote kind fails at the call, nothing is written.
  Slot<v::SqliteExecResponse> exec;
  Slot<v::SqliteExecuteWriteResponse> write;
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));
  client_->SqliteExecuteWrite(ExecuteWrite("X"), Into(write));
  ExpectError(exec, unavailable);
  ExpectError(write, unavailable);
  EXPECT_TRUE(transport_.sent.empty());

  // Page I/O works at v3.
  Slot<v::SqliteCommitResponse> commit;
  client_->SqliteCommit(Commit(1, 2), Into(commit));
  EXPECT_EQ(SentRequests(), (std::vector<std::string>{"commit#1"}));
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{v::SqliteGetPagesOk{}}});
  Deliver(v::ToEnvoySqliteCommitResponse{1, v::SqliteCommitResponse{v::SqliteCommitOk{}}});
  ASSERT_TRUE(queued_pages.has_value() && queued_pages->has_value());
  ASSERT_TRUE(commit.has_value() && commit->has_value());
  EXPECT_TRUE((*commit)->is<v::SqliteCommitOk>());
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
  // The connection is unaffected.
  Deliver(v::ToEnvoyPing{9});
  EXPECT_EQ(SentOf<v::ToRivetPong>().size(), 1u);
}

// ---- timeouts, lost, shutdown -------------------------------------------------------------

TEST_F(EnvoySqliteTest, RequestsTimeOutThroughTheSweep) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  Slot<v::SqliteCommitResponse> commit;
  Slot<v::SqliteExecuteResponse> execute;
  client_->SqliteGetPages(GetPages({1}), Into(pages));
  client_->SqliteCommit(Commit(1, 1), Into(commit));
  client_->SqliteExecute(Execute("SELECT 1"), Into(execute));
  clock_.Advance(29s);
  EXPECT_FALSE(pages || commit || execute);
  clock_.Advance(16s);  // the sweep after the 30 s deadline
  const Error page_timeout("envoy", "sqlite_timeout", "sqlite page request timed out");
  ExpectError(pages, page_timeout);
  ExpectError(commit, page_timeout);
  ExpectError(execute, Error("envoy", "sqlite_timeout", "remote sqlite request timed out"));
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
  // A late answer is unknown.
  Deliver(v::ToEnvoySqliteGetPagesResponse{0, v::SqliteGetPagesResponse{v::SqliteGetPagesOk{}}});
  EXPECT_EQ(client_->unmatched_responses(), 1u);
}

TEST_F(EnvoySqliteTest, ResentGetPagesGetsAFreshTimeout) {
  EnvoyConfig c;
  c.request_sweep_interval = 1000ms;
  Make(c);
  Connect(/*lost_threshold_ms=*/3600 * 1000);
  Slot<v::SqliteGetPagesResponse> pages;
  client_->SqliteGetPages(GetPages({1}), Into(pages));
  clock_.Advance(20s);
  client_->OnClosed(1006, "");
  Reopen();  // resent at ~21 s: its deadline moves to ~51 s
  ASSERT_EQ(SentRequests(), (std::vector<std::string>{"get_pages#0"}));
  clock_.Advance(25s);  // 46 s after creation
  EXPECT_FALSE(pages.has_value());
  clock_.Advance(10s);
  ExpectError(pages, Error("envoy", "sqlite_timeout", "sqlite page request timed out"));
}

TEST_F(EnvoySqliteTest, LostTimerFailsPendingRequests) {
  Connect(/*lost_threshold_ms=*/5000);
  Slot<v::SqliteGetPagesResponse> pages;
  client_->SqliteGetPages(GetPages({1}), Into(pages));  // sent: kept across the close
  client_->OnClosed(1006, "");
  Slot<v::SqliteExecResponse> exec;
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));  // queued
  // Reconnect attempts fail; the lost timer fires 5 s after the close.
  clock_.Advance(4000ms);
  client_->OnClosed(1006, "connect failed");
  EXPECT_FALSE(pages || exec);
  clock_.Advance(1000ms);
  const Error lost("envoy", "lost", "envoy connection lost");
  ExpectError(pages, lost);
  ExpectError(exec, lost);
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
}

TEST_F(EnvoySqliteTest, ShutdownFailsPendingRequestsAndLaterCallsAtOnce) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  Slot<v::SqliteExecuteWriteResponse> write;
  client_->SqliteGetPages(GetPages({1}), Into(pages));
  client_->SqliteExecuteWrite(ExecuteWrite("X"), Into(write));
  client_->Shutdown(/*immediate=*/true);
  const Error shutdown("envoy", "shutdown", "envoy shutting down");
  ExpectError(pages, shutdown);
  ExpectError(write, shutdown);
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);

  Slot<v::SqliteCommitResponse> commit;
  Slot<v::SqliteExecResponse> exec;
  client_->SqliteCommit(Commit(1, 1), Into(commit));
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));
  ExpectError(commit, shutdown);
  ExpectError(exec, shutdown);
}

TEST_F(EnvoySqliteTest, EvictionIsACloseThenAShutdown) {
  Connect();
  Slot<v::SqliteGetPagesResponse> pages;
  Slot<v::SqliteCommitResponse> commit;
  Slot<v::SqliteExecResponse> exec;
  client_->SqliteGetPages(GetPages({1}), Into(pages));
  client_->SqliteCommit(Commit(1, 1), Into(commit));
  client_->SqliteExec(Exec("SELECT 1"), Into(exec));
  client_->OnClosed(1000, "ws.eviction#ray");
  EXPECT_TRUE(client_->shut_down());
  // What was written may have run: the close rules first; the read, kept by them, then
  // fails with the shutdown.
  ExpectError(commit, kCommitIndeterminate);
  ExpectError(exec, RemoteIndeterminate("exec"));
  ExpectError(pages, Error("envoy", "shutdown", "envoy shutting down"));
  EXPECT_EQ(client_->pending_sqlite_requests(), 0u);
}

}  // namespace
}  // namespace keel::envoy
