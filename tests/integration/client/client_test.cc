// keel::client against a real engine (TestEngine on loopback port 0) and a real runtime
// (RuntimeHost, in-process) hosting the counter example and a `probe` actor: resolution
// and its retries, stateless actions and errors in every encoding, queue sends, raw HTTP
// and WebSocket, persistent connections (events, status, setup errors, params callbacks,
// reconnection after the runtime dies), an engine whose gateway requires a token, and the
// failures of the client itself.
#include "client/client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket.hpp>

#include "counter/counter.h"
#include "net/http_server.h"
#include "net/io_runtime.h"
#include "runtime/actor.h"
#include "runtime/native/serve.h"
#include "support/gateway_http.h"
#include "support/test_engine.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using client::ActorConn;
using client::Client;
using client::ClientOptions;
using client::ConnStatus;

struct Probe {
  int64_t requests = 0;
  int64_t stopping_calls = 0;  // calls of `stoppingTwice`
};
using PCtx = Ctx<Probe>;

ActorDef<Probe> MakeProbe() {
  ActorDef<Probe> def("probe");
  def.queue("jobs");
  def.action("echo", [](PCtx&, Value v) { return v; });
  def.action("fail", [](PCtx&) -> int64_t {
    throw UserError("it failed on purpose", "detailed_error", Value::Object({{"reason", "test"}}));
  });
  // Answers with a scheduling error (in the request's encoding) twice, then with the number
  // of calls: a dynamic handle retries through it.
  def.action("stoppingTwice", [](PCtx& c) -> int64_t {
    if (++c.state().stopping_calls <= 2) {
      throw ActorError("actor", "stopping", "the probe is stopping");
    }
    return c.state().stopping_calls;
  });
  def.action("takeJob", [](PCtx& c) -> Task<Value> {
    auto m = co_await c.queue().try_next();
    if (!m) co_return Value(nullptr);
    co_return m->body;
  });
  def.on_before_connect([](PCtx&, const Value& params) {
    const Value* reject = params.is_map() ? params.Find("reject") : nullptr;
    if (reject != nullptr && reject->is_bool() && reject->as_bool()) {
      throw ActorError("connection", "custom_error", "rejected by the probe",
                       Value::Object({{"why", "asked to"}}));
    }
  });
  def.on_request([](PCtx& c, const Request& req) {
    c.state().requests += 1;
    const std::string* params = req.Header("x-rivet-conn-params");
    return Response::Text(200, req.method + " " + req.path + "?" + req.query +
                                   " body=" + std::string(req.body.begin(), req.body.end()) +
                                   " params=" + (params != nullptr ? *params : "-"));
  });
  def.on_websocket([](PCtx&, WebSocket<PCtx>& ws) {
    ws.send("welcome " + ws.request().path);
    ws.on_message([](PCtx&, WebSocket<PCtx>& self, std::string_view data, bool binary) {
      if (binary) {
        self.send_binary(Bytes(data.begin(), data.end()));
      } else {
        self.send("echo:" + std::string(data));
      }
    });
  });
  return def;
}

// Collects values pushed from connection callbacks (the client's I/O thread).
template <typename T>
class Inbox {
 public:
  void Push(T v) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(std::move(v));
    cv_.notify_all();
  }
  // Waits until at least `n` items arrived; returns a copy of all of them.
  std::vector<T> WaitFor(size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return items_.size() >= n; });
    return items_;
  }
  std::vector<T> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<T> items_;
};

// Holds the client's I/O thread inside a listener: the first BlockFirstCall() signals
// WaitEntered and waits for Release(). Shared with the listeners; the test keeps the guard
// from ReleaseOnExit() so that a failed assertion cannot leave the I/O thread blocked.
class ListenerGate {
 public:
  void BlockFirstCall() {
    if (first_.exchange(false)) {
      entered_.set_value();
      released_.wait();
    }
  }
  bool WaitEntered(std::chrono::milliseconds timeout) {
    return entered_future_.wait_for(timeout) == std::future_status::ready;
  }
  void Release() {
    std::call_once(release_once_, [this] { release_.set_value(); });
  }
  auto ReleaseOnExit() {
    auto release = [](ListenerGate* g) { g->Release(); };
    return std::unique_ptr<ListenerGate, decltype(release)>(this, release);
  }

 private:
  std::atomic<bool> first_{true};
  std::promise<void> entered_;
  std::future<void> entered_future_ = entered_.get_future();
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  std::once_flag release_once_;
};

// With a listener held in `gate`: runs `call` on another thread, looks (bounded) for the
// absence of its return while the listener runs, then releases the listener and waits for
// `call` to return; `returned` is set once it has.
void ExpectCallWaitsForTheHeldListener(ListenerGate& gate, const std::function<void()>& call,
                                       std::atomic<bool>& returned, const std::string& what) {
  auto running = std::async(std::launch::async, [&] {
    call();
    returned = true;
  });
  auto release_first = gate.ReleaseOnExit();  // destroyed before the future waits
  EXPECT_EQ(running.wait_for(200ms), std::future_status::timeout)
      << what << " returned while a listener was still running";
  gate.Release();
  ASSERT_EQ(running.wait_for(10s), std::future_status::ready) << what << " never returned";
}

// Each parameterised suite runs in the three encodings, named by the encoding.
const auto kAllEncodings =
    ::testing::Values(wire::Encoding::kJson, wire::Encoding::kCbor, wire::Encoding::kBare);
std::string EncodingTestName(const ::testing::TestParamInfo<wire::Encoding>& info) {
  return std::string(wire::EncodingName(info.param));
}

class ClientTest : public ::testing::TestWithParam<wire::Encoding> {
 protected:
  void SetUp() override {
    StartHost();
    ClientOptions o;
    o.endpoint = engine_.http_url();
    o.encoding = GetParam();
    o.retry_pause = 20ms;
    client_ = std::make_unique<Client>(o);
  }
  void TearDown() override {
    client_.reset();
    host_.reset();
  }
  void StartHost() {
    ServeSettings s;
    s.endpoint = engine_.http_url();
    host_ =
        std::make_unique<RuntimeHost>(s, std::vector<std::shared_ptr<const runtime::ActorType>>{
                                             examples::MakeCounter().type(), MakeProbe().type()});
    host_->Start();
    ASSERT_TRUE(WaitFor([&] { return host_->connected(); })) << "runtime never connected";
  }
  std::string Key(std::string_view base) const {
    return std::string(base) + "-" + std::string(wire::EncodingName(GetParam()));
  }

  TestEngine engine_;
  std::unique_ptr<RuntimeHost> host_;
  std::unique_ptr<Client> client_;
};

TEST_P(ClientTest, GetOrCreateCallsResolveAndAddressByIdOrKey) {
  auto h = client_->GetOrCreate("counter", {Key("tenant"), "room/1"});
  auto a = h.Call<int64_t>("increment", 5);
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  EXPECT_EQ(*a, 5);
  EXPECT_EQ(h.Call<int64_t>("increment", 1).value(), 6);
  auto id = h.Resolve();
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  EXPECT_FALSE(id->empty());
  EXPECT_EQ(client_->GetForId("counter", *id).Call<int64_t>("getCount").value(), 6);
  EXPECT_EQ(client_->Get("counter", {Key("tenant"), "room/1"}).Call<int64_t>("getCount").value(),
            6);
  // A different key is a different actor.
  EXPECT_EQ(client_->GetOrCreate("counter", {Key("tenant")}).Call<int64_t>("getCount").value(), 0);
  // The gateway URL of a dynamic handle is the query form; plain HTTP can use it.
  const std::string url = h.GatewayUrl();
  EXPECT_NE(url.find("rvt-method=getOrCreate"), std::string::npos) << url;
  EXPECT_NE(url.find("rvt-crash-policy=sleep"), std::string::npos) << url;
  const std::string base = engine_.http_url();
  ASSERT_EQ(url.rfind(base, 0), 0u) << url;
  const size_t q = url.find('?');
  ASSERT_NE(q, std::string::npos);
  const std::string target =
      url.substr(base.size(), q - base.size()) + "/action/getCount" + url.substr(q);
  auto r = Call(base, "POST", target, R"({"args":[]})", {{"content-type", "application/json"}});
  EXPECT_EQ(ParseJson(r.body), (nlohmann::json{{"output", 6}}));
}

TEST_P(ClientTest, CreateGetAndTheirErrors) {
  auto created = client_->Create("counter", {Key("made")}, {.input = Value(7)});
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  EXPECT_EQ(created->Call<int64_t>("increment", 2).value(), 2);
  auto dup = client_->Create("counter", {Key("made")});
  ASSERT_FALSE(dup.has_value());
  EXPECT_TRUE(dup.error().Is("actor", "duplicate_key")) << dup.error().ToString();

  auto missing = client_->Get("counter", {Key("never-made")});
  auto id = missing.Resolve();
  ASSERT_FALSE(id.has_value());
  EXPECT_TRUE(id.error().Is("actor", "not_found")) << id.error().ToString();
  // An action through a get handle retries (24 attempts) and then reports the cause.
  auto call = missing.Call<int64_t>("getCount");
  ASSERT_FALSE(call.has_value());
  EXPECT_TRUE(call.error().Is("actor", "not_found")) << call.error().ToString();
  // Nothing was created on the way.
  auto listed = client_->ListActors("counter", client::ActorKey{Key("never-made")});
  ASSERT_TRUE(listed.has_value()) << listed.error().ToString();
  EXPECT_TRUE(listed->empty());
}

TEST_P(ClientTest, ActionErrorsKeepGroupCodeAndMetadata) {
  auto h = client_->GetOrCreate("probe", {Key("errors")});
  auto fail = h.Call<int64_t>("fail");
  ASSERT_FALSE(fail.has_value());
  EXPECT_TRUE(fail.error().Is("user", "detailed_error")) << fail.error().ToString();
  EXPECT_EQ(fail.error().message, "it failed on purpose");
  ASSERT_TRUE(fail.error().metadata.has_value());
  EXPECT_EQ(*fail.error().metadata, Value::Object({{"reason", "test"}}));
  auto unknown = h.Call("noSuchAction");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().group, "actor");
  EXPECT_EQ(unknown.error().http_status, 404);
  // Values of every kind round-trip through the encoding.
  Value v = Value::Object({{"n", int64_t{1} << 40},
                           {"f", 2.5},
                           {"s", "text"},
                           {"b", Bytes{1, 2, 3}},
                           {"a", Value::ArrayOf({true, nullptr})}});
  auto echo = h.Call("echo", v);
  ASSERT_TRUE(echo.has_value()) << echo.error().ToString();
  EXPECT_EQ(*echo, v);
  // The wrong result type is a client-side error, not a crash.
  auto typed = h.Call<int64_t>("echo", "not a number");
  ASSERT_FALSE(typed.has_value());
  EXPECT_TRUE(typed.error().Is("client", "bad_response"));
}

TEST_P(ClientTest, QueueSendStoresTheMessage) {
  auto h = client_->GetOrCreate("probe", {Key("queue")});
  auto sent = h.Send("jobs", Value::Object({{"task", "build"}}));
  ASSERT_TRUE(sent.has_value()) << sent.error().ToString();
  EXPECT_EQ(sent->status, "completed");
  EXPECT_EQ(h.Call("takeJob").value(), Value::Object({{"task", "build"}}));
  EXPECT_EQ(h.Call("takeJob").value(), Value(nullptr));
  // Waiting with no consumer times out.
  auto waited = h.Send("jobs", Value(1), {.wait = true, .timeout = 50ms});
  ASSERT_TRUE(waited.has_value()) << waited.error().ToString();
  EXPECT_EQ(waited->status, "timedOut");
}

TEST_P(ClientTest, RawHttpAndWebSocketReachTheActor) {
  auto h =
      client_->GetOrCreate("probe", {Key("raw")}, {{.params = Value::Object({{"who", "me"}})}});
  net::HttpRequest req;
  req.method = "POST";
  req.body = "payload";
  auto r = h.Fetch("/test/path?foo=bar", req);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"(POST /test/path?foo=bar body=payload params={"who":"me"})");
  auto root = h.Fetch("");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->body.substr(0, 6), "GET /?");

  auto ws = h.WebSocket("chat/room?x=1");
  ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
  auto welcome = (*ws)->Receive(5s);
  ASSERT_TRUE(welcome.has_value());
  ASSERT_TRUE(std::holds_alternative<net::BlockingWsClient::Message>(*welcome));
  EXPECT_EQ(std::get<net::BlockingWsClient::Message>(*welcome).data,
            "welcome /websocket/chat/room");
  ASSERT_TRUE((*ws)->Send("hi", false).ok());
  auto echo = (*ws)->Receive(5s);
  ASSERT_TRUE(echo.has_value());
  EXPECT_EQ(std::get<net::BlockingWsClient::Message>(*echo).data, "echo:hi");
}

// milliseconds::max() is the natural way to ask for no timeout: it waits, rather than
// overflowing the clock and timing out at once.
TEST_P(ClientTest, AConnectionTimeoutOfMillisecondsMaxWaitsWithoutLimit) {
  auto h = client_->GetOrCreate("counter", {Key("forever")});
  auto conn = h.Connect();
  const client::ClientStatus ready = conn->WaitReady(std::chrono::milliseconds::max());
  ASSERT_TRUE(ready.ok()) << ready.error().ToString();
  auto one = conn->Action("increment", Value::ArrayOf({1}), std::chrono::milliseconds::max());
  ASSERT_TRUE(one.has_value()) << one.error().ToString();
  EXPECT_EQ(one->as_int(), 1);
}

TEST_P(ClientTest, ConnectionCarriesActionsEventsAndStatus) {
  auto h = client_->GetOrCreate("counter", {Key("conn")});
  auto conn = h.Connect();
  EXPECT_FALSE(conn->is_connected());  // never synchronously after Connect
  Inbox<ConnStatus> statuses;
  Inbox<int> opens, closes;
  Inbox<int64_t> counts;
  conn->OnStatusChange([&](ConnStatus s) { statuses.Push(s); });
  conn->OnOpen([&] { opens.Push(1); });
  conn->OnClose([&] { closes.Push(1); });
  auto unsubscribe = conn->On("newCount", [&](const Value& args) {
    counts.Push(args.is_array() && !args.as_array().empty() ? args.as_array()[0].as_int() : -1);
  });
  ASSERT_TRUE(conn->WaitReady(10s).ok());
  EXPECT_TRUE(conn->is_connected());
  EXPECT_FALSE(conn->connection_id().empty());
  auto one = conn->Call<int64_t>("increment", 1);
  ASSERT_TRUE(one.has_value()) << one.error().ToString();
  EXPECT_EQ(*one, 1);
  // An event caused by another client reaches the subscriber too, in order.
  EXPECT_EQ(h.Call<int64_t>("increment", 1).value(), 2);
  EXPECT_EQ(counts.WaitFor(2), (std::vector<int64_t>{1, 2}));
  unsubscribe();
  EXPECT_EQ(conn->Call<int64_t>("increment", 1).value(), 3);
  EXPECT_EQ(conn->Call<int64_t>("getCount").value(), 3);  // after the answer to 3, no event
  EXPECT_EQ(counts.Snapshot().size(), 2u);
  // A connection learned the actor id for its handle.
  EXPECT_EQ(conn->actor_id(), h.Resolve().value());
  EXPECT_EQ(opens.Snapshot().size(), 1u);

  conn->Dispose();
  EXPECT_EQ(closes.WaitFor(1).size(), 1u);
  EXPECT_EQ(conn->status(), ConnStatus::kDisconnected);
  auto after = conn->Call("getCount");
  ASSERT_FALSE(after.has_value());
  EXPECT_TRUE(after.error().Is("client", "closed"));
  auto seen = statuses.WaitFor(2);
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front(), ConnStatus::kConnected);
  EXPECT_EQ(seen.back(), ConnStatus::kDisconnected);
  EXPECT_EQ(closes.Snapshot().size(), 1u);
}

// A connection disposed right before its Client goes: its read loop (and any notice still
// queued) own the connection's state, which owns the client's runtime. ~Client must free
// them; before IoRuntime::Shutdown they were leaked, cycle and all (seen as a leak of
// `keel watch` under ASan). The sentinel lives in a listener the connection's state keeps.
TEST_P(ClientTest, DestroyingTheClientRightAfterADisposeFreesTheConnection) {
  auto sentinel = std::make_shared<int>(0);
  for (int round = 0; round < 3; ++round) {
    {
      ClientOptions o;
      o.endpoint = engine_.http_url();
      o.encoding = GetParam();
      Client c(o);
      auto conn = c.GetOrCreate("counter", {Key("dispose-then-destroy")}).Connect();
      conn->OnStatusChange([sentinel](ConnStatus) {});
      conn->OnClose([sentinel] {});
      ASSERT_TRUE(conn->WaitReady(10s).ok());
      ASSERT_TRUE(conn->Call<int64_t>("increment", 1).has_value());
      conn->Dispose();  // the close handshake is still under way when the client goes
      conn.reset();
    }
    EXPECT_EQ(sentinel.use_count(), 1)
        << "round " << round << ": the connection's state was not freed";
  }
}

TEST_P(ClientTest, ConnectionSetupFailureReachesThePendingActionAndOnError) {
  auto h = client_->GetOrCreate("probe", {Key("reject")},
                                {{.params = Value::Object({{"reject", true}})}});
  // Shared with the listener, although Dispose (here or in conn's destructor) waits for a
  // running listener call and drops later ones (DisposeWaitsForARunningListener... below).
  auto errors = std::make_shared<Inbox<std::string>>();
  auto conn = h.Connect([errors](ActorConn& c) {
    c.OnError([errors](const client::ClientError& e) { errors->Push(e.Id()); });
  });
  auto r = conn->Call("echo", 1);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("connection", "custom_error")) << r.error().ToString();
  auto seen = errors->WaitFor(1);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "connection.custom_error");
  conn->Dispose();
}

// Once Dispose returns, no listener runs but Dispose's own notices: a listener call that is
// running when Dispose is called ends first, and the calls collected with it are dropped.
TEST_P(ClientTest, DisposeWaitsForARunningListenerAndDropsTheCallsAfterIt) {
  auto h = client_->GetOrCreate("probe", {Key("reject-dispose")},
                                {{.params = Value::Object({{"reject", true}})}});
  struct Shared {
    ListenerGate gate;
    std::atomic<bool> dispose_returned{false};
    std::atomic<int> calls_after_dispose{0};
  };
  auto st = std::make_shared<Shared>();
  auto conn = h.Connect([st](ActorConn& c) {
    c.OnError([st](const client::ClientError&) {  // blocks the I/O thread on its first call
      st->gate.BlockFirstCall();
      if (st->dispose_returned) st->calls_after_dispose++;
    });
    c.OnError([st](const client::ClientError&) {  // queued behind the first, same batch
      if (st->dispose_returned) st->calls_after_dispose++;
    });
  });
  auto release_on_exit = st->gate.ReleaseOnExit();
  ASSERT_TRUE(st->gate.WaitEntered(10s)) << "no connection error reached the listener";
  ASSERT_NO_FATAL_FAILURE(ExpectCallWaitsForTheHeldListener(
      st->gate, [&] { conn->Dispose(); }, st->dispose_returned, "Dispose"));
  // An action's completion still runs, on the I/O thread after the rest of the batch.
  auto after = std::make_shared<std::promise<client::ClientResult<Value>>>();
  conn->ActionAsync("echo", Value(1),
                    [after](client::ClientResult<Value> r) { after->set_value(std::move(r)); });
  auto closed = after->get_future();
  ASSERT_EQ(closed.wait_for(10s), std::future_status::ready) << "the completion never ran";
  auto r = closed.get();
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("client", "closed")) << r.error().ToString();
  EXPECT_EQ(st->calls_after_dispose.load(), 0) << "a listener ran after Dispose returned";
}

// Once an Unsubscribe returns, its listener is not called again: a listener call running when
// it is called ends first, and the listener's call queued behind it is dropped; the other
// listeners go on.
TEST_P(ClientTest, UnsubscribeWaitsForARunningListenerAndDropsItsQueuedCall) {
  auto h = client_->GetOrCreate("counter", {Key("unsubscribe")});
  struct Shared {
    ListenerGate gate;
    std::atomic<bool> unsubscribed{false};
    std::atomic<int> calls_after_unsubscribe{0};
    Inbox<int64_t> first_listener;
  };
  auto st = std::make_shared<Shared>();
  auto conn = h.Connect();
  conn->On("newCount", [st](const Value& args) {  // blocks the I/O thread on its first call
    st->gate.BlockFirstCall();
    st->first_listener.Push(args.as_array().at(0).as_int());
  });
  auto unsubscribe = conn->On("newCount", [st](const Value&) {  // same event, same batch
    if (st->unsubscribed) st->calls_after_unsubscribe++;
  });
  auto release_on_exit = st->gate.ReleaseOnExit();
  ASSERT_TRUE(conn->WaitReady(10s).ok());
  // Not a blocking call: its answer comes behind the event the first listener holds up.
  conn->ActionAsync("increment", Value(Value::Array{Value(1)}), [](client::ClientResult<Value>) {});
  ASSERT_TRUE(st->gate.WaitEntered(10s)) << "the event never reached the listener";
  ASSERT_NO_FATAL_FAILURE(
      ExpectCallWaitsForTheHeldListener(st->gate, unsubscribe, st->unsubscribed, "Unsubscribe"));
  // This answer is read after the event's batch has run.
  EXPECT_EQ(conn->Call<int64_t>("increment", 1).value(), 2);
  EXPECT_EQ(st->first_listener.WaitFor(2), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(st->calls_after_unsubscribe.load(), 0)
      << "a listener ran after its Unsubscribe returned";
  conn->Dispose();
}

TEST_P(ClientTest, ParamsCallbackIsAskedPerAttemptAndItsFailureIsReported) {
  std::atomic<int> calls{0};
  client::GetOrCreateOptions o;
  o.get_params = [&]() -> Result<Value> {
    if (calls.fetch_add(1) == 0) return Error("test", "not_yet", "first attempt fails");
    return Value::Object({{"who", "later"}});
  };
  auto h = client_->GetOrCreate("probe", {Key("params")}, o);
  auto errors = std::make_shared<Inbox<std::string>>();  // outlives late listener calls
  auto conn = h.Connect([errors](ActorConn& c) {
    c.OnError([errors](const client::ClientError& e) { errors->Push(e.Id()); });
  });
  auto first = conn->Call("echo", 1);
  ASSERT_FALSE(first.has_value());
  EXPECT_TRUE(first.error().Is("client", "get_params_failed")) << first.error().ToString();
  // The connection keeps trying; the next attempt's params work.
  ASSERT_TRUE(conn->WaitReady(10s).ok());
  EXPECT_EQ(conn->Call("echo", 2).value(), Value(2));
  EXPECT_GE(calls.load(), 2);
  EXPECT_EQ(errors->Snapshot(), (std::vector<std::string>{"client.get_params_failed"}));
}

TEST_P(ClientTest, ConnectionReconnectsWhenTheRuntimeDies) {
  auto h = client_->GetOrCreate("counter", {Key("survivor")});
  auto conn = h.Connect();
  Inbox<int64_t> counts;
  conn->On("newCount", [&](const Value& args) { counts.Push(args.as_array()[0].as_int()); });
  ASSERT_TRUE(conn->WaitReady(10s).ok());
  EXPECT_EQ(conn->Call<int64_t>("increment", 10).value(), 10);
  host_->Kill();
  StartHost();
  // Actions queue while the connection is down and go out once it is back; the
  // subscription is renewed, so events flow again.
  auto again = conn->Action("increment", Value::ArrayOf({1}), 30s);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(*again, Value(11));
  EXPECT_EQ(counts.WaitFor(2), (std::vector<int64_t>{10, 11}));
  conn->Dispose();
}

TEST_P(ClientTest, AHandleOutlivesItsActorBeingDestroyed) {
  auto h = client_->GetOrCreate("counter", {Key("phoenix")});
  EXPECT_EQ(h.Call<int64_t>("increment", 3).value(), 3);
  auto old_id = h.Resolve().value();
  ASSERT_TRUE(client_->DestroyActor(old_id).ok());
  auto listed = client_->ListActors("counter", client::ActorKey{Key("phoenix")});
  ASSERT_TRUE(listed.has_value());
  EXPECT_TRUE(listed->empty());
  // The cached id is gone; the handle re-resolves through the query form.
  EXPECT_EQ(h.Call<int64_t>("getCount").value(), 0);
  auto new_id = h.Resolve();
  ASSERT_TRUE(new_id.has_value());
  EXPECT_NE(*new_id, old_id);
  // An id handle does not retry.
  auto stale = client_->GetForId("counter", old_id).Call("getCount");
  ASSERT_FALSE(stale.has_value());
  EXPECT_TRUE(stale.error().Is("actor", "not_found")) << stale.error().ToString();
  auto destroy_again = client_->DestroyActor(old_id);
  EXPECT_FALSE(destroy_again.ok());
}

// The actor answers an HTTP action in the request's encoding, errors included (actors.md
// §4.4): a scheduling error in CBOR or BARE is recognised and retried like one in JSON.
TEST_P(ClientTest, SchedulingErrorsAreRecognisedInTheRequestEncoding) {
  auto h = client_->GetOrCreate("probe", {Key("stopping")});
  auto r = h.Call<int64_t>("stoppingTwice");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, 3);
  // An id handle does not retry: the error arrives with its group, code and message.
  auto id = client_->GetOrCreate("probe", {Key("stopping-by-id")}).Resolve();
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  auto once = client_->GetForId("probe", *id).Call<int64_t>("stoppingTwice");
  ASSERT_FALSE(once.has_value());
  EXPECT_TRUE(once.error().Is("actor", "stopping")) << once.error().ToString();
  EXPECT_EQ(once.error().message, "the probe is stopping");
  EXPECT_EQ(once.error().http_status, 500);
}

// Blocking and async actions from several threads at once on a connection that never opens
// (no such actor: every attempt ends in actor.not_found, a scheduling error, so queued
// actions wait): the blocking ones time out, each removing only its own action, and
// Dispose answers every async one, exactly once.
TEST_P(ClientTest, ActionsFromManyThreadsAreEachAnsweredOnce) {
  auto conn = client_->Get("counter", {Key("never-there")}).Connect();
  constexpr int kAsyncThreads = 2, kAsyncPerThread = 2000, kBlockingThreads = 2,
                kBlockingRounds = 2000;
  constexpr int kTotal = kAsyncThreads * kAsyncPerThread;
  // Shared with the callbacks, which run on the client's I/O thread.
  auto answers = std::make_shared<std::vector<std::atomic<int>>>(kTotal);
  std::atomic<bool> async_done{false};
  std::atomic<int> blocking_calls{0}, blocking_unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kAsyncThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAsyncPerThread; ++i) {
        conn->ActionAsync("getCount", Value(Value::Array{}),
                          [answers, slot = t * kAsyncPerThread + i](client::ClientResult<Value>) {
                            (*answers)[slot]++;
                          });
      }
    });
  }
  for (int t = 0; t < kBlockingThreads; ++t) {
    threads.emplace_back([&] {
      // Many rounds, and on for as long as the async threads queue. No wait: each call
      // queues its action and at once withdraws it, as any timeout ends.
      for (int i = 0; i < kBlockingRounds || !async_done; ++i) {
        auto r = conn->Action("getCount", Value(Value::Array{}), 0ms);
        blocking_calls++;
        if (r.has_value() || !r.error().Is("client", "timeout")) blocking_unexpected++;
      }
    });
  }
  for (int t = 0; t < kAsyncThreads; ++t) threads[t].join();
  async_done = true;
  for (size_t t = kAsyncThreads; t < threads.size(); ++t) threads[t].join();
  EXPECT_GE(blocking_calls.load(), kBlockingRounds * kBlockingThreads);
  EXPECT_EQ(blocking_unexpected.load(), 0) << "a blocking call ended other than by its timeout";
  conn->Dispose();
  auto answered = [&] {
    int n = 0;
    for (const auto& a : *answers) n += a.load() > 0 ? 1 : 0;
    return n;
  };
  EXPECT_TRUE(WaitFor([&] { return answered() == kTotal; }, 2s))
      << kTotal - answered() << " async actions were never answered";
  for (int i = 0; i < kTotal; ++i) {
    ASSERT_LE((*answers)[i].load(), 1) << "action " << i << " was answered twice";
  }
}

// A setup failure comes as an Error frame, then a close whose reason repeats its
// `group.code`: it is reported once per attempt, and the error kept for the next action
// is the structured one (message and metadata), not the close reason.
TEST_P(ClientTest, AFailedSetupIsReportedOncePerAttemptWithItsStructuredError) {
  auto h = client_->GetOrCreate("probe", {Key("reject-once")},
                                {{.params = Value::Object({{"reject", true}})}});
  auto seen = std::make_shared<Inbox<std::string>>();  // outlives late listener calls
  auto conn = h.Connect([seen](ActorConn& c) {
    c.OnError([seen](const client::ClientError& e) { seen->Push("error " + e.ToString()); });
    c.OnStatusChange(
        [seen](ConnStatus s) { seen->Push("status " + std::string(client::ConnStatusName(s))); });
  });
  const std::string kDisconnected = "status disconnected";
  ASSERT_TRUE(WaitFor([&] {
    auto events = seen->Snapshot();
    return std::find(events.begin(), events.end(), kDisconnected) != events.end();
  })) << "the first attempt never ended";
  auto events = seen->Snapshot();
  const std::vector<std::string> first_attempt(
      events.begin(), std::find(events.begin(), events.end(), kDisconnected));
  EXPECT_EQ(first_attempt,
            (std::vector<std::string>{"error connection.custom_error: rejected by the probe"}));
  // No action was waiting then: the next one fails at once with what the actor sent.
  auto r = conn->Action("echo", Value::ArrayOf({1}), 5s);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("connection", "custom_error")) << r.error().ToString();
  EXPECT_EQ(r.error().message, "rejected by the probe");
  ASSERT_TRUE(r.error().metadata.has_value());
  EXPECT_EQ(*r.error().metadata, Value::Object({{"why", "asked to"}}));
  conn->Dispose();
}

INSTANTIATE_TEST_SUITE_P(Encodings, ClientTest, kAllEncodings, EncodingTestName);

// An engine whose gateway requires a token (keel-engine --gateway-token): the client's
// token must reach every actor route — query form, by id, HTTP and WebSockets.
class GatewayTokenTest : public ::testing::TestWithParam<wire::Encoding> {
 protected:
  static constexpr const char* kToken = "s3cret-token";
  static engine::EngineOptions WithGatewayToken() {
    engine::EngineOptions o;
    o.gateway_token = kToken;
    return o;
  }
  void SetUp() override {
    ServeSettings s;
    s.endpoint = engine_.http_url();
    host_ =
        std::make_unique<RuntimeHost>(s, std::vector<std::shared_ptr<const runtime::ActorType>>{
                                             examples::MakeCounter().type(), MakeProbe().type()});
    host_->Start();
    ASSERT_TRUE(WaitFor([&] { return host_->connected(); })) << "runtime never connected";
  }
  void TearDown() override { host_.reset(); }
  std::unique_ptr<Client> MakeClient(std::string token) const {
    ClientOptions o;
    o.endpoint = engine_.http_url();
    o.encoding = GetParam();
    o.token = std::move(token);
    o.retry_pause = 20ms;
    return std::make_unique<Client>(o);
  }
  std::string Key(std::string_view base) const {
    return std::string(base) + "-" + std::string(wire::EncodingName(GetParam()));
  }

  TestEngine engine_{WithGatewayToken()};
  std::unique_ptr<RuntimeHost> host_;
};

TEST_P(GatewayTokenTest, TheTokenReachesEveryActorRoute) {
  auto client = MakeClient(kToken);
  auto h = client->GetOrCreate("counter", {Key("tok")});
  auto first = h.Call<int64_t>("increment", 2);  // the query form: rvt-token
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto id = h.Resolve();  // REST
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  auto by_id = h.Call<int64_t>("increment", 3);  // by id now
  ASSERT_TRUE(by_id.has_value()) << by_id.error().ToString();
  EXPECT_EQ(*by_id, 5);
  auto for_id = client->GetForId("counter", *id).Call<int64_t>("getCount");
  ASSERT_TRUE(for_id.has_value()) << for_id.error().ToString();
  EXPECT_EQ(*for_id, 5);
  auto created = client->Create("counter", {Key("tok-made")});
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  auto made = created->Call<int64_t>("increment", 1);
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  EXPECT_EQ(*made, 1);

  // Queue sends, raw HTTP and raw WebSockets, by key and by id.
  auto probe = client->GetOrCreate("probe", {Key("tok-probe")});
  auto probe_id = probe.Resolve();
  ASSERT_TRUE(probe_id.has_value()) << probe_id.error().ToString();
  auto sent = probe.Send("jobs", Value("job"));
  ASSERT_TRUE(sent.has_value()) << sent.error().ToString();
  EXPECT_EQ(sent->status, "completed");
  auto fetched = probe.Fetch("/hello");
  ASSERT_TRUE(fetched.has_value()) << fetched.error().ToString();
  EXPECT_EQ(fetched->status, 200) << fetched->body;
  for (auto handle : {probe, client->GetForId("probe", *probe_id)}) {
    auto ws = handle.WebSocket("room");
    ASSERT_TRUE(ws.has_value()) << ws.error().ToString();
    auto welcome = (*ws)->Receive(5s);
    ASSERT_TRUE(welcome.has_value());
    ASSERT_TRUE(std::holds_alternative<net::BlockingWsClient::Message>(*welcome))
        << "the raw WebSocket was closed";
    EXPECT_EQ(std::get<net::BlockingWsClient::Message>(*welcome).data, "welcome /websocket/room");
  }

  // A connection; then its handle, which learned the id from Init, calls by id over HTTP.
  auto conn_handle = client->GetOrCreate("counter", {Key("tok-conn")});
  auto conn = conn_handle.Connect();
  ASSERT_TRUE(conn->WaitReady(10s).ok());
  auto over_ws = conn->Call<int64_t>("increment", 1);
  ASSERT_TRUE(over_ws.has_value()) << over_ws.error().ToString();
  auto over_http = conn_handle.Call<int64_t>("getCount");
  ASSERT_TRUE(over_http.has_value()) << over_http.error().ToString();
  EXPECT_EQ(*over_http, 1);
  conn->Dispose();
}

TEST_P(GatewayTokenTest, WithoutTheTokenActorRoutesAreForbidden) {
  auto client = MakeClient("");
  auto call = client->GetOrCreate("counter", {Key("no-tok")}).Call("getCount");
  ASSERT_FALSE(call.has_value());
  EXPECT_TRUE(call.error().Is("api", "forbidden")) << call.error().ToString();
  EXPECT_EQ(call.error().http_status, 403);
}

// The gateway refuses a /connect without the token by accepting the WebSocket and closing
// it with `api.forbidden#ray` before Init. Like a refused handshake, that fails the
// actions queued on the connection at once (not at their timeout), and every attempt
// after it too.
TEST_P(GatewayTokenTest, AConnectionRefusedByTheGatewayFailsItsQueuedActions) {
  auto client = MakeClient("");
  auto errors = std::make_shared<Inbox<std::string>>();  // outlives late listener calls
  auto queued = std::make_shared<std::promise<client::ClientResult<Value>>>();
  auto conn = client->GetOrCreate("counter", {Key("refused")}).Connect([&](ActorConn& c) {
    c.OnError([errors](const client::ClientError& e) { errors->Push(e.Id()); });
    // Queued before the first attempt starts.
    c.ActionAsync("getCount", Value(Value::Array{}),
                  [queued](client::ClientResult<Value> r) { queued->set_value(std::move(r)); });
  });
  auto answer = queued->get_future();
  ASSERT_EQ(answer.wait_for(5s), std::future_status::ready) << "the queued action was left waiting";
  auto r = answer.get();
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("api", "forbidden")) << r.error().ToString();
  auto seen = errors->WaitFor(1);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "api.forbidden");
  // A later action is refused as well, by the attempt it waits for or the one before it.
  auto later = conn->Action("getCount", Value(Value::Array{}), 5s);
  ASSERT_FALSE(later.has_value());
  EXPECT_TRUE(later.error().Is("api", "forbidden")) << later.error().ToString();
  EXPECT_NE(conn->status(), ConnStatus::kConnected);
  conn->Dispose();
}

INSTANTIATE_TEST_SUITE_P(Encodings, GatewayTokenTest, kAllEncodings, EncodingTestName);

TEST(ClientErrors, BadAndUnreachableEndpoints) {
  Client bad({.endpoint = "https://example.invalid"});
  auto r = bad.GetForId("counter", "x").Call("getCount");
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("client", "invalid_argument")) << r.error().ToString();
  // WebSockets report the same endpoint error.
  auto ws = bad.GetForId("counter", "x").WebSocket();
  ASSERT_FALSE(ws.has_value());
  EXPECT_EQ(ws.error().ToString(), r.error().ToString());
  auto conn = bad.GetForId("counter", "x").Connect();
  auto over_ws = conn->Action("getCount", Value(Value::Array{}), 5s);
  ASSERT_FALSE(over_ws.has_value());
  EXPECT_EQ(over_ws.error().ToString(), r.error().ToString());
  conn->Dispose();

  // A port nothing listens on: take a free one from a server that is gone by now.
  std::string url;
  {
    TestEngine engine;
    url = engine.http_url();
  }
  Client unreachable({.endpoint = url, .request_timeout = 2000ms});
  auto u = unreachable.ListActors("counter");
  ASSERT_FALSE(u.has_value());
  EXPECT_TRUE(u.error().Is("client", "connect_failed")) << u.error().ToString();
}

// A failed request whose body is not an error in the request's encoding (a proxy's text or
// JSON page, say): JSON is still read; anything else is client.bad_response saying so.
TEST(ClientErrors, AnErrorBodyNotInTheRequestEncodingIsReportedClearly) {
  net::IoRuntime io(1);
  auto server = net::HttpServer::Start(io, {}, [](std::shared_ptr<net::HttpExchange> ex) {
    net::HttpResponse res;
    if (ex->request().target.find("/action/json") != std::string::npos) {
      res.status = 503;  // JSON without a JSON content type
      res.headers = {{"content-type", "application/octet-stream"}};
      res.body = R"({"group":"guard","code":"service_unavailable","message":"try later"})";
    } else {
      res.status = 502;
      res.headers = {{"content-type", "text/plain"}};
      res.body = "Bad Gateway";
    }
    ex->Respond(std::move(res));
  });
  ASSERT_TRUE(server.has_value()) << server.error().ToString();
  Client c({.endpoint = "http://127.0.0.1:" + std::to_string((*server)->port())});
  auto json_error = c.GetForId("counter", "x").Call("json");
  ASSERT_FALSE(json_error.has_value());
  EXPECT_EQ(json_error.error().ToString(), "guard.service_unavailable: try later");
  EXPECT_EQ(json_error.error().http_status, 503);
  auto text = c.GetForId("counter", "x").Call("text");
  ASSERT_FALSE(text.has_value());
  EXPECT_EQ(text.error().ToString(),
            "client.bad_response: HTTP 502 with a body that is not an error in bare: Bad Gateway");
  EXPECT_EQ(text.error().http_status, 502);
}

// A scripted stand-in for the engine's gateway and REST API on loopback port 0: `answer`
// gives each request's response (or nullopt to hold the exchange unanswered until the
// server goes), and every request target is recorded. For the client's behaviour on
// answers a real engine does not give on demand.
class FakeEngine {
 public:
  using Answer = std::function<std::optional<net::HttpResponse>(const net::HttpRequest&)>;
  explicit FakeEngine(Answer answer) : answer_(std::move(answer)) {
    auto server = net::HttpServer::Start(io_, {}, [this](std::shared_ptr<net::HttpExchange> ex) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        targets_.push_back(ex->request().method + " " + ex->request().target);
      }
      auto res = answer_(ex->request());
      if (res) {
        ex->Respond(std::move(*res));
      } else {
        std::lock_guard<std::mutex> lock(mu_);
        held_.push_back(std::move(ex));
      }
    });
    EXPECT_TRUE(server.has_value()) << server.error().ToString();
    if (server.has_value()) server_ = std::move(*server);
  }
  ~FakeEngine() {
    server_.reset();
    held_.clear();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  std::vector<std::string> targets() {
    std::lock_guard<std::mutex> lock(mu_);
    return targets_;
  }
  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }

  // An error response: JSON (as the gateway and REST API answer) or, with `encoding`, an
  // HttpResponseError in it (as the actor answers).
  static net::HttpResponse Error(int status, std::string group, std::string code,
                                 std::string message, std::optional<Value> metadata = std::nullopt,
                                 std::optional<wire::Encoding> encoding = std::nullopt) {
    const wire::Encoding enc = encoding.value_or(wire::Encoding::kJson);
    Bytes body = wire::Encode(wire::HttpResponseError{std::move(group), std::move(code),
                                                      std::move(message), std::move(metadata)},
                              enc);
    net::HttpResponse res;
    res.status = status;
    res.headers = {{"content-type", std::string(wire::ContentType(enc))}};
    res.body.assign(body.begin(), body.end());
    return res;
  }
  static net::HttpResponse Json(int status, std::string body) {
    net::HttpResponse res;
    res.status = status;
    res.headers = {{"content-type", "application/json"}};
    res.body = std::move(body);
    return res;
  }

 private:
  net::IoRuntime io_{1};
  Answer answer_;
  std::mutex mu_;
  std::vector<std::string> targets_;
  std::vector<std::shared_ptr<net::HttpExchange>> held_;
  std::unique_ptr<net::HttpServer> server_;
};

size_t CountContaining(const std::vector<std::string>& targets, std::string_view part) {
  return static_cast<size_t>(
      std::count_if(targets.begin(), targets.end(),
                    [&](const std::string& t) { return t.find(part) != std::string::npos; }));
}

class ClientRetryTest : public ::testing::TestWithParam<wire::Encoding> {
 protected:
  std::unique_ptr<Client> MakeClient(const FakeEngine& engine) const {
    ClientOptions o;
    o.endpoint = engine.url();
    o.encoding = GetParam();
    o.retry_pause = 1ms;
    return std::make_unique<Client>(o);
  }
};

// actors.md §4.2: a scheduling error is retried through the query form up to 60 attempts in
// all for a getOrCreate handle, 24 for a get handle, and never for an id handle; then the
// last error is the answer, with its group, code, message and metadata.
TEST_P(ClientRetryTest, SchedulingErrorsAreRetriedPerTheHandleKindsBudget) {
  FakeEngine engine([](const net::HttpRequest&) -> std::optional<net::HttpResponse> {
    return FakeEngine::Error(404, "actor", "not_found",
                             "The actor does not exist or was destroyed.",
                             Value::Object({{"attempt", "any"}}));
  });
  auto client = MakeClient(engine);
  struct Case {
    const char* what;
    client::ActorHandle handle;
    size_t attempts;
  };
  for (Case c : {Case{"getOrCreate", client->GetOrCreate("counter", {"a"}), 60},
                 Case{"get", client->Get("counter", {"b"}), 24},
                 Case{"getForId", client->GetForId("counter", "some-id"), 1}}) {
    const size_t before = engine.targets().size();
    auto r = c.handle.Call("getCount");
    ASSERT_FALSE(r.has_value()) << c.what;
    EXPECT_TRUE(r.error().Is("actor", "not_found")) << c.what << ": " << r.error().ToString();
    EXPECT_EQ(r.error().message, "The actor does not exist or was destroyed.") << c.what;
    ASSERT_TRUE(r.error().metadata.has_value()) << c.what;
    EXPECT_EQ(*r.error().metadata, Value::Object({{"attempt", "any"}})) << c.what;
    EXPECT_EQ(engine.targets().size() - before, c.attempts) << c.what;
  }
  // Each retry of a dynamic handle goes through the query form.
  auto targets = engine.targets();
  EXPECT_EQ(CountContaining(targets, "rvt-method=getOrCreate"), 60u);
  EXPECT_EQ(CountContaining(targets, "rvt-method=get&"), 24u);
}

// actors.md §4.2: an error saying the database was accessed after the actor stopped is not a
// lifecycle error to retry, whatever its code: it is reported at once.
TEST_P(ClientRetryTest, ADatabaseAccessedAfterStopIsNotRetried) {
  const wire::Encoding enc = GetParam();
  FakeEngine engine([enc](const net::HttpRequest&) -> std::optional<net::HttpResponse> {
    return FakeEngine::Error(500, "actor", "stopping", "Database accessed after actor stopped",
                             std::nullopt, enc);
  });
  auto client = MakeClient(engine);
  auto r = client->GetOrCreate("counter", {"db"}).Call("getCount");
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("actor", "stopping")) << r.error().ToString();
  EXPECT_EQ(r.error().message, "Database accessed after actor stopped");
  EXPECT_EQ(engine.targets().size(), 1u) << "the error was retried";
}

// actors.md §4.2: a queue send retries `actor.overloaded` from the dispatch inbox (in the
// request's encoding, as the actor sends it); an action does not, nor does a queue send
// retry an overload of another channel.
TEST_P(ClientRetryTest, QueueSendsRetryADispatchInboxOverload) {
  const wire::Encoding enc = GetParam();
  auto overloads_left = std::make_shared<std::atomic<int>>(2);
  FakeEngine engine(
      [enc, overloads_left](const net::HttpRequest& req) -> std::optional<net::HttpResponse> {
        const Value dispatch =
            Value::Object({{"channel", "dispatch_inbox"}, {"operation", "dispatch_queue_send"}});
        if (req.target.find("/queue/other") != std::string::npos) {
          return FakeEngine::Error(500, "actor", "overloaded", "busy",
                                   Value::Object({{"channel", "lifecycle_inbox"}}), enc);
        }
        if (req.target.find("/action/") != std::string::npos || (*overloads_left)-- > 0) {
          return FakeEngine::Error(500, "actor", "overloaded", "busy", dispatch, enc);
        }
        Bytes body = wire::Encode(wire::HttpQueueSendResponse{"completed", std::nullopt}, enc);
        net::HttpResponse res;
        res.headers = {{"content-type", std::string(wire::ContentType(enc))}};
        res.body.assign(body.begin(), body.end());
        return res;
      });
  auto client = MakeClient(engine);
  auto h = client->GetOrCreate("probe", {"q"});
  auto sent = h.Send("jobs", Value(1));
  ASSERT_TRUE(sent.has_value()) << sent.error().ToString();
  EXPECT_EQ(sent->status, "completed");
  EXPECT_EQ(CountContaining(engine.targets(), "/queue/jobs"), 3u);
  auto action = h.Call("work");
  ASSERT_FALSE(action.has_value());
  EXPECT_TRUE(action.error().Is("actor", "overloaded")) << action.error().ToString();
  EXPECT_EQ(CountContaining(engine.targets(), "/action/work"), 1u);
  auto other = h.Send("other", Value(1));
  ASSERT_FALSE(other.has_value());
  EXPECT_TRUE(other.error().Is("actor", "overloaded")) << other.error().ToString();
  EXPECT_EQ(CountContaining(engine.targets(), "/queue/other"), 1u);
}

INSTANTIATE_TEST_SUITE_P(Encodings, ClientRetryTest, kAllEncodings, EncodingTestName);

// REST answers that are JSON but not the expected shape (a proxy's, or another server's):
// client.bad_response, never an exception on the client's I/O thread.
TEST(ClientErrors, AMalformedRestAnswerIsABadResponse) {
  FakeEngine engine([](const net::HttpRequest& req) -> std::optional<net::HttpResponse> {
    if (req.method == "GET" && req.target.rfind("/actors?", 0) == 0)
      return FakeEngine::Json(200, "[]");
    if (req.method == "PUT")
      return FakeEngine::Json(
          200,
          R"({"actor":{"actor_id":"a1","name":7,"crash_policy":[],"runner_name_selector":{}}})");
    if (req.method == "POST") return FakeEngine::Json(200, R"({"actor":[1,2]})");
    if (req.target.rfind("/actors/names", 0) == 0) return FakeEngine::Json(200, "\"names\"");
    return FakeEngine::Json(200, "42");
  });
  Client c({.endpoint = engine.url(), .retry_pause = 1ms});
  auto expect_bad = [](const auto& r, const char* what) {
    ASSERT_FALSE(r.has_value()) << what;
    EXPECT_TRUE(r.error().Is("client", "bad_response")) << what << ": " << r.error().ToString();
  };
  expect_bad(c.Get("counter", {"k"}).Resolve(), "Get.Resolve");
  // Fields of the wrong type are read as absent: the record is still usable.
  auto id = c.GetOrCreate("counter", {"k"}).Resolve();
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  EXPECT_EQ(*id, "a1");
  expect_bad(c.Create("counter", {"k"}), "Create");
  expect_bad(c.ListActors("counter"), "ListActors");
  expect_bad(c.GetActor("a1"), "GetActor");
  expect_bad(c.ListActorNames(), "ListActorNames");
}

// GET /actors/names is paged (limit, cursor): ListActorNames follows the cursor to the end
// and asks for the largest page, and a page without its names object is a bad response.
TEST(ClientErrors, ListActorNamesFollowsTheCursor) {
  FakeEngine engine([](const net::HttpRequest& req) -> std::optional<net::HttpResponse> {
    if (req.target.find("cursor=bad") != std::string::npos) return FakeEngine::Json(200, "{}");
    if (req.target.find("cursor=p2") != std::string::npos) {
      return FakeEngine::Json(200,
                              R"({"names":{"c":{"metadata":{}}},"pagination":{"cursor":null}})");
    }
    if (req.target.find("namespace=other") != std::string::npos) {
      return FakeEngine::Json(200, R"({"names":{"x":{}},"pagination":{"cursor":"bad"}})");
    }
    return FakeEngine::Json(
        200, R"({"names":{"a":{"metadata":{}},"b":{"metadata":{}}},"pagination":{"cursor":"p2"}})");
  });
  Client c({.endpoint = engine.url()});
  auto names = c.ListActorNames();
  ASSERT_TRUE(names.has_value()) << names.error().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c"}));
  const auto targets = engine.targets();
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_NE(targets[0].find("limit=1000"), std::string::npos) << targets[0];
  EXPECT_NE(targets[1].find("cursor=p2"), std::string::npos) << targets[1];
  Client other({.endpoint = engine.url(), .namespace_name = "other"});
  auto bad = other.ListActorNames();
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().Is("client", "bad_response")) << bad.error().ToString();
}

// A Client destroyed while other threads wait in its blocking calls (an HTTP action whose
// answer never comes, an action queued on a connection that never opens): those calls
// return client.closed at once (they neither hang nor wait out their timeout), and an
// async action queued on the connection is answered, once.
TEST(ClientErrors, DestroyingTheClientEndsTheCallsInFlight) {
  // Holds every request (the connection's upgrade included) unanswered.
  FakeEngine engine(
      [](const net::HttpRequest&) -> std::optional<net::HttpResponse> { return std::nullopt; });
  auto c = std::make_unique<Client>(ClientOptions{.endpoint = engine.url()});
  auto h = c->GetForId("counter", "some-id");
  auto call = std::async(std::launch::async, [h]() mutable { return h.Call("getCount"); });
  ASSERT_TRUE(WaitFor([&] { return engine.held() == 1; })) << "the request never arrived";
  auto conn = h.Connect();
  auto async_answers = std::make_shared<std::atomic<int>>(0);
  auto async_result = std::make_shared<std::promise<client::ClientResult<Value>>>();
  conn->ActionAsync("getCount", Value(Value::Array{}),
                    [async_answers, async_result](client::ClientResult<Value> r) {
                      if (++*async_answers == 1) async_result->set_value(std::move(r));
                    });
  auto over_ws = std::async(
      std::launch::async, [&conn] { return conn->Action("getCount", Value(Value::Array{}), 60s); });
  auto ready = std::async(std::launch::async, [&conn] { return conn->WaitReady(60s); });
  ASSERT_TRUE(WaitFor([&] { return engine.held() == 2; })) << "the connection never tried";
  c.reset();
  for (auto* f : {&over_ws}) {
    ASSERT_EQ(f->wait_for(10s), std::future_status::ready) << "the action in flight hung";
    auto r = f->get();
    ASSERT_FALSE(r.has_value());
    EXPECT_TRUE(r.error().Is("client", "closed")) << r.error().ToString();
  }
  ASSERT_EQ(ready.wait_for(10s), std::future_status::ready) << "WaitReady hung";
  auto ready_r = ready.get();
  ASSERT_FALSE(ready_r.has_value());
  EXPECT_TRUE(ready_r.error().Is("client", "closed")) << ready_r.error().ToString();
  auto async_r = async_result->get_future();
  ASSERT_EQ(async_r.wait_for(10s), std::future_status::ready)
      << "the async action was never answered";
  auto a = async_r.get();
  ASSERT_FALSE(a.has_value());
  EXPECT_TRUE(a.error().Is("client", "closed")) << a.error().ToString();
  EXPECT_EQ(conn->status(), ConnStatus::kDisconnected);
  conn.reset();
  EXPECT_EQ(async_answers->load(), 1);
  ASSERT_EQ(call.wait_for(10s), std::future_status::ready) << "the call in flight hung";
  auto r = call.get();
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is("client", "closed")) << r.error().ToString();
  // A call made afterwards (the handle outlived its client) fails the same way at once.
  auto late = h.Call("getCount");
  ASSERT_FALSE(late.has_value());
  EXPECT_TRUE(late.error().Is("client", "closed")) << late.error().ToString();
}

// A stand-in actor endpoint for the connection protocol (actors.md §4.6): each upgrade is
// accepted and sent an Init; each action request is answered with the number 42 — except
// on the first socket, where the answer is bytes that do not decode in any encoding, or
// what `garble` does instead.
class GarblingConnEndpoint {
 public:
  using Garble = std::function<void(net::WsConnection&)>;
  explicit GarblingConnEndpoint(wire::Encoding encoding, Garble garble = nullptr)
      : encoding_(encoding), garble_(std::move(garble)) {
    auto server = net::HttpServer::Start(io_, {}, [this](std::shared_ptr<net::HttpExchange> ex) {
      if (!ex->IsWebSocketUpgrade()) {
        ex->Respond(net::HttpResponse{404, {}, ""});
        return;
      }
      auto handler = std::make_shared<Socket>(this, ++sockets_);
      auto conn = ex->AcceptWebSocket("rivet", handler);
      if (!conn) return;
      handler->conn = conn;
      Send(*conn, wire::Init{"a1", "c" + std::to_string(handler->number)});
    });
    EXPECT_TRUE(server.has_value()) << server.error().ToString();
    if (server.has_value()) server_ = std::move(*server);
  }
  ~GarblingConnEndpoint() { server_.reset(); }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  int sockets() const { return sockets_.load(); }
  // "code reason" of each socket's close, in the order they closed.
  std::vector<std::string> closes() {
    std::lock_guard<std::mutex> lock(mu_);
    return closes_;
  }

 private:
  struct Socket : net::WsHandler {
    Socket(GarblingConnEndpoint* endpoint, int number) : endpoint(endpoint), number(number) {}
    void OnMessage(std::string data, bool) override {
      auto msg =
          wire::DecodeToServer(ByteView(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                               endpoint->encoding_);
      auto c = conn.lock();
      if (!msg.has_value() || !c) return;
      if (const auto* action = std::get_if<wire::ActionRequest>(&*msg)) {
        if (number == 1 && endpoint->garble_) {
          endpoint->garble_(*c);
        } else if (number == 1) {
          // JSON travels in text frames, which must be UTF-8: valid text, not JSON.
          const bool text = wire::UsesTextFrames(endpoint->encoding_);
          c->Send(text ? "{\"i\": [1, 2" : "\xff{\x01", !text);
        } else {
          endpoint->Send(*c, wire::ActionResponse{action->id, Value(int64_t{42})});
        }
      }
    }
    void OnClose(uint16_t code, std::string reason) override {
      std::lock_guard<std::mutex> lock(endpoint->mu_);
      endpoint->closes_.push_back(std::to_string(code) + " " + reason);
    }
    GarblingConnEndpoint* endpoint;
    const int number;
    std::weak_ptr<net::WsConnection> conn;
  };

  void Send(net::WsConnection& conn, const wire::ToClient& msg) const {
    Bytes bytes = wire::Encode(msg, encoding_);
    conn.Send(std::string(bytes.begin(), bytes.end()), !wire::UsesTextFrames(encoding_));
  }

  const wire::Encoding encoding_;
  const Garble garble_;
  net::IoRuntime io_{1};
  std::atomic<int> sockets_{0};
  std::mutex mu_;
  std::vector<std::string> closes_;
  std::unique_ptr<net::HttpServer> server_;
};

// A message from the actor that does not decode may have been an action's answer: the
// action waiting for it fails at once with client.bad_response (it does not wait out its
// timeout), the error listeners hear it, the socket is closed as a protocol error
// (1002 client.bad_response), and the connection opens a new one that serves the next
// action.
TEST(ClientErrors, AnUndecodableMessageDropsTheConnectionWhichReconnects) {
  for (wire::Encoding encoding :
       {wire::Encoding::kJson, wire::Encoding::kCbor, wire::Encoding::kBare}) {
    SCOPED_TRACE(std::string(wire::EncodingName(encoding)));
    GarblingConnEndpoint endpoint(encoding);
    Client c({.endpoint = endpoint.url(), .encoding = encoding, .retry_pause = 1ms});
    auto errors = std::make_shared<std::vector<std::string>>();
    auto errors_mu = std::make_shared<std::mutex>();
    auto conn = c.GetForId("counter", "a1").Connect([&](ActorConn& conn) {
      conn.OnError([errors, errors_mu](const client::ClientError& e) {
        std::lock_guard<std::mutex> lock(*errors_mu);
        errors->push_back(std::string(e.group) + "." + e.code);
      });
    });
    auto first = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_FALSE(first.has_value());
    EXPECT_TRUE(first.error().Is("client", "bad_response")) << first.error().ToString();
    EXPECT_NE(first.error().message.find("does not decode"), std::string::npos)
        << first.error().ToString();
    ASSERT_TRUE(WaitFor([&] { return !endpoint.closes().empty(); })) << "the socket stayed open";
    EXPECT_EQ(endpoint.closes().front(), "1002 client.bad_response");
    {
      std::lock_guard<std::mutex> lock(*errors_mu);
      EXPECT_EQ(*errors, std::vector<std::string>{"client.bad_response"});
    }
    auto second = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_TRUE(second.has_value()) << second.error().ToString();
    EXPECT_EQ(*second, Value(int64_t{42}));
    EXPECT_EQ(endpoint.sockets(), 2);
    EXPECT_EQ(conn->connection_id(), "c2");
  }
}

// A text frame that is not UTF-8 from the engine: the client's WebSocket fails it with 1007
// (RFC 6455 §8.1), and the client says so — client.protocol_error with the close code, to
// the action that was waiting and the error listeners — not a lost connection (1006). The
// connection then opens a new socket that serves the next action, as after an undecodable
// message.
TEST(ClientErrors, InvalidUtf8FromTheEngineIsAProtocolErrorAndTheConnectionReconnects) {
  for (wire::Encoding encoding :
       {wire::Encoding::kJson, wire::Encoding::kCbor, wire::Encoding::kBare}) {
    SCOPED_TRACE(std::string(wire::EncodingName(encoding)));
    GarblingConnEndpoint endpoint(
        encoding, [](net::WsConnection& c) { c.Send("{\"i\": \"\xff\xfe\"}", /*binary=*/false); });
    Client c({.endpoint = endpoint.url(), .encoding = encoding, .retry_pause = 1ms});
    auto errors = std::make_shared<std::vector<std::string>>();
    auto errors_mu = std::make_shared<std::mutex>();
    auto conn = c.GetForId("counter", "a1").Connect([&](ActorConn& conn) {
      conn.OnError([errors, errors_mu](const client::ClientError& e) {
        std::lock_guard<std::mutex> lock(*errors_mu);
        errors->push_back(e.Id());
      });
    });
    auto first = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_FALSE(first.has_value());
    EXPECT_TRUE(first.error().Is("client", "protocol_error")) << first.error().ToString();
    ASSERT_TRUE(first.error().metadata.has_value());
    EXPECT_EQ(*first.error().metadata, Value::Object({{"close_code", int64_t{1007}}}));
    EXPECT_NE(first.error().message.find("code 1007"), std::string::npos)
        << first.error().ToString();
    ASSERT_TRUE(WaitFor([&] { return !endpoint.closes().empty(); })) << "the socket stayed open";
    EXPECT_EQ(endpoint.closes().front().substr(0, 4), "1007") << "the engine was not told why";
    {
      std::lock_guard<std::mutex> lock(*errors_mu);
      EXPECT_EQ(*errors, std::vector<std::string>{"client.protocol_error"});
    }
    auto second = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_TRUE(second.has_value()) << second.error().ToString();
    EXPECT_EQ(*second, Value(int64_t{42}));
    EXPECT_EQ(endpoint.sockets(), 2);
  }
}

// The engine failing the socket at the protocol level (its close frame says 1002 or 1009:
// it could not take what this side sent) is client.protocol_error too; any other close
// without a `group.code` reason stays client.connection_lost.
TEST(ClientErrors, TheEnginesProtocolCloseCodesAreProtocolErrors) {
  struct Case {
    uint16_t code;
    std::string error;
  };
  for (const Case& k : std::vector<Case>{{1002, "client.protocol_error"},
                                         {1009, "client.protocol_error"},
                                         {1011, "client.connection_lost"}}) {
    SCOPED_TRACE(std::to_string(k.code));
    GarblingConnEndpoint endpoint(wire::Encoding::kBare, [code = k.code](net::WsConnection& c) {
      c.Close(code, "from the stand-in");
    });
    Client c({.endpoint = endpoint.url(), .retry_pause = 1ms});
    auto errors = std::make_shared<std::vector<std::string>>();
    auto errors_mu = std::make_shared<std::mutex>();
    auto conn = c.GetForId("counter", "a1").Connect([&](ActorConn& conn) {
      conn.OnError([errors, errors_mu](const client::ClientError& e) {
        std::lock_guard<std::mutex> lock(*errors_mu);
        errors->push_back(e.Id());
      });
    });
    auto first = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_FALSE(first.has_value());
    EXPECT_EQ(first.error().Id(), k.error) << first.error().ToString();
    EXPECT_NE(first.error().message.find("code " + std::to_string(k.code) + ", from the stand-in"),
              std::string::npos)
        << first.error().ToString();
    if (k.error == "client.protocol_error") {
      ASSERT_TRUE(first.error().metadata.has_value());
      EXPECT_EQ(*first.error().metadata, Value::Object({{"close_code", int64_t{k.code}}}));
      std::lock_guard<std::mutex> lock(*errors_mu);
      EXPECT_EQ(*errors, std::vector<std::string>{"client.protocol_error"});
    } else {
      std::lock_guard<std::mutex> lock(*errors_mu);
      EXPECT_TRUE(errors->empty()) << "a plain lost connection went to the error listeners";
    }
    auto second = conn->Action("getCount", Value(Value::Array{}), 60s);
    ASSERT_TRUE(second.has_value()) << second.error().ToString();
    EXPECT_EQ(*second, Value(int64_t{42}));
  }
}

// A stand-in that speaks WebSocket through Beast itself, to send what Keel's own server
// never does: on its first socket, the answer to an action is a frame with a reserved
// opcode (RFC 6455 §5.2, a protocol violation); later sockets answer with 42. One
// connection at a time, on a thread of its own.
class RawFrameEndpoint {
 public:
  RawFrameEndpoint() {
    acceptor_.open(boost::asio::ip::tcp::v4());
    acceptor_.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Run(); });
  }
  ~RawFrameEndpoint() {
    stop_ = true;
    boost::asio::ip::tcp::socket wake(ioc_);  // unblocks the accept
    boost::system::error_code ignored;
    wake.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ignored);
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int sockets() const { return sockets_.load(); }
  // The close code the client sent on the first socket (0 until it did).
  int first_close() const { return first_close_.load(); }

 private:
  void Run() {
    for (int number = 1; !stop_; ++number) {
      boost::system::error_code ec;
      boost::asio::ip::tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stop_) return;
      Serve(std::move(socket), number);
    }
  }

  void Serve(boost::asio::ip::tcp::socket socket, int number) {
    namespace websocket = boost::beast::websocket;
    websocket::stream<boost::asio::ip::tcp::socket> ws(std::move(socket));
    ws.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(boost::beast::http::field::sec_websocket_protocol, "rivet");
    }));
    boost::beast::error_code ec;
    ws.accept(ec);
    if (ec) return;
    ++sockets_;
    ws.binary(true);
    auto send = [&](const wire::ToClient& msg) {
      Bytes bytes = wire::Encode(msg, wire::Encoding::kBare);
      ws.write(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    };
    send(wire::Init{"a1", "c" + std::to_string(number)});
    for (;;) {
      boost::beast::flat_buffer buffer;
      ws.read(buffer, ec);
      if (ec) {
        if (number == 1) first_close_ = static_cast<int>(ws.reason().code);
        return;  // the client closed, or failed the connection
      }
      const auto data = buffer.cdata();
      auto msg = wire::DecodeToServer(
          ByteView(static_cast<const uint8_t*>(data.data()), data.size()), wire::Encoding::kBare);
      const auto* action = msg.has_value() ? std::get_if<wire::ActionRequest>(&*msg) : nullptr;
      if (action == nullptr) continue;
      if (number == 1) {
        const uint8_t frame[] = {0x83, 0x00};  // FIN, opcode 3 (reserved), no payload
        boost::asio::write(ws.next_layer(), boost::asio::buffer(frame), ec);
        continue;  // the next read sees the client's close
      }
      send(wire::ActionResponse{action->id, Value(int64_t{42})});
    }
  }

  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_{ioc_};
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> sockets_{0};
  std::atomic<int> first_close_{0};
  std::thread thread_;
};

// A frame that breaks the WebSocket protocol from the engine: the client's WebSocket fails
// it with 1002, and the client reports client.protocol_error (not a lost connection), then
// reconnects.
TEST(ClientErrors, AProtocolViolationFromTheEngineIsAProtocolErrorAndTheConnectionReconnects) {
  RawFrameEndpoint endpoint;
  Client c({.endpoint = endpoint.url(), .retry_pause = 1ms});
  auto errors = std::make_shared<std::vector<std::string>>();
  auto errors_mu = std::make_shared<std::mutex>();
  auto conn = c.GetForId("counter", "a1").Connect([&](ActorConn& conn) {
    conn.OnError([errors, errors_mu](const client::ClientError& e) {
      std::lock_guard<std::mutex> lock(*errors_mu);
      errors->push_back(e.Id());
    });
  });
  auto first = conn->Action("getCount", Value(Value::Array{}), 60s);
  ASSERT_FALSE(first.has_value());
  EXPECT_TRUE(first.error().Is("client", "protocol_error")) << first.error().ToString();
  ASSERT_TRUE(first.error().metadata.has_value());
  EXPECT_EQ(*first.error().metadata, Value::Object({{"close_code", int64_t{1002}}}));
  {
    std::lock_guard<std::mutex> lock(*errors_mu);
    EXPECT_EQ(*errors, std::vector<std::string>{"client.protocol_error"});
  }
  auto second = conn->Action("getCount", Value(Value::Array{}), 60s);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_EQ(*second, Value(int64_t{42}));
  EXPECT_EQ(endpoint.sockets(), 2);
  EXPECT_EQ(endpoint.first_close(), 1002) << "the engine was not told why";
}

}  // namespace
}  // namespace keel::testing
