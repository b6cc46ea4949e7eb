// The actor runtime core (actors.md §1–§4): actor types, instances and their lifecycle,
// the actor's HTTP surface and client connections, persistence through the envoy's KV,
// schedule/alarms and the idle-sleep rules — sans-I/O.
//
// Runtime implements envoy::EnvoyHost: the envoy client hands it start/stop commands and
// tunnel traffic; it answers through the client (events, KV, tunnel messages). Time is the
// injected Clock. Everything runs on one logical executor (the native shell's strand or
// the JS event loop), which is also each actor's executor: one actor's code never runs
// concurrently with itself.
//
// Durable before the response (the output gate). Everything an action, hook or timer
// writes — the actor record (state + schedule), user KV puts/deletes — goes into the
// instance's write overlay; everything it sends out — action responses, events, HTTP
// responses — goes through the instance's gate. The gate releases an output only after
// every write made before it was committed by the engine (one KV put per flush, batching
// all writes since the last one). Reads see the overlay. A save is never later than the
// response it belongs to; work that changes state without answering (a `run` loop, a
// wait_until task) is saved on a deadline (ActorOptions::state_save_interval).
//
// User-facing API: runtime/actor.h (typed state, actions, hooks). This header is the
// type-erased core the typed layer compiles down to.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/bytes.h"
#include "base/clock.h"
#include "base/error.h"
#include "base/random.h"
#include "envoy/envoy_client.h"
#include "runtime/sql.h"
#include "runtime/task.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::runtime {

using std::chrono::milliseconds;

// ---- Errors ----

// What actor code throws to fail an action or hook with a structured error. `is_public`
// errors reach clients as they are; any other exception reaches them sanitised as
// `rivetkit.internal_error` "An internal error occurred" (actors.md §3.7).
class ActorError : public std::exception {
 public:
  ActorError(std::string group, std::string code, std::string message,
             std::optional<Value> metadata = std::nullopt, bool is_public = true)
      : group_(std::move(group)),
        code_(std::move(code)),
        message_(std::move(message)),
        metadata_(std::move(metadata)),
        public_(is_public) {}
  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& group() const { return group_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::optional<Value>& metadata() const { return metadata_; }
  bool is_public() const { return public_; }

 private:
  std::string group_, code_, message_;
  std::optional<Value> metadata_;
  bool public_;
};

// An unstructured error thrown by actor code written in a script language (the wasm
// runtime's JavaScript `new Error(…)`). what() is its one-line summary ("Error: boom"): that
// is all that leaves the runtime, as the stop reason of an actor whose start failed.
// detail() is the full text (the stack, with the host's file paths), for the runtime's log.
class ScriptError : public std::runtime_error {
 public:
  ScriptError(std::string summary, std::string detail)
      : std::runtime_error(std::move(summary)), detail_(std::move(detail)) {}
  const std::string& detail() const { return detail_; }

 private:
  std::string detail_;
};

// An error the actor author raises on purpose: group `user`, passed to clients verbatim.
inline ActorError UserError(std::string message, std::string code = "user_error",
                            std::optional<Value> metadata = std::nullopt) {
  return ActorError("user", std::move(code), std::move(message), std::move(metadata));
}

// A client-visible error: group/code/message/metadata, sanitised.
struct ClientError {
  std::string group, code, message;
  std::optional<Value> metadata;
};
// Maps any exception to what a client may see; internal errors are logged here.
ClientError ToClientError(std::exception_ptr error, std::string_view actor_id);
uint16_t HttpStatusFor(const ClientError& error);

// ---- Options (actors.md §1.2) ----

struct Request;

struct ActorOptions {
  milliseconds sleep_timeout{30000};
  bool no_sleep = false;
  milliseconds action_timeout{60000};
  milliseconds sleep_grace_period{15000};
  milliseconds create_state_timeout{5000};
  milliseconds on_create_timeout{5000};
  milliseconds on_migrate_timeout{30000};
  milliseconds create_vars_timeout{5000};
  milliseconds on_wake_timeout{30000};
  milliseconds on_before_actor_start_timeout{5000};
  milliseconds on_before_connect_timeout{5000};
  milliseconds create_conn_state_timeout{5000};
  milliseconds on_connect_timeout{5000};
  // State changed by work that has not answered yet (a `run` loop, a long action, a
  // wait_until task) is saved at the latest this long after that work started or was last
  // saved (actors.md §3.5 stateSaveInterval). What answers is saved before its answer.
  milliseconds state_save_interval{1000};
  size_t max_queue_size = 1000;
  size_t max_queue_message_size = 65536;
  // Raw WebSockets it returns true for survive the actor's sleep at the gateway like /connect
  // sockets (actors.md §3.6, Rivet's canHibernateWebSocket); unset: none do. Called with the
  // upgrade request before onBeforeConnect.
  std::function<bool(const Request&)> can_hibernate_websocket;
};

struct RuntimeOptions {
  size_t max_incoming_message_size = 65536;
  size_t max_outgoing_message_size = 1048576;
  // `/metadata` reports `deployed` when true, else `local`.
  bool production = false;
  std::string version = "0.1.0";
  // Test hooks (acceptance fixtures only): a raw text frame
  // {"__rivetkitTestHibernatableAckStateV1":true} on a hibernatable raw WebSocket is answered
  // by the runtime with its ack bookkeeping (actors.md §3.6) instead of reaching the actor.
  bool test_hooks = false;
  // Bearer token of the read-only inspector endpoints; unset → they answer 401.
  std::optional<std::string> inspector_token;
  // Which SQLite backend actors with a database use (runtime/sql.h).
  SqliteBackendChoice sqlite_backend = SqliteBackendChoice::kAuto;
  // The local-native backend, supplied by shells built with SQLite (none in wasm).
  LocalSqlFactory local_sqlite;
};

// ---- HTTP as the actor sees it ----

// Whether the end user of a raw HTTP request went away before its response (the gateway's
// ToEnvoyRequestAbort, envoy-protocol.md §6.3), with the callbacks waiting for it. Shared
// by every copy of the Request; set by the runtime for requests an on_request handler
// serves.
class RequestAbort {
 public:
  bool aborted() const { return aborted_; }
  // Calls `fn` when the request is aborted, at once if it already is; drops it when the
  // request settled.
  void Listen(std::function<void()> fn);
  // Marks the request aborted and calls the callbacks, in registration order, once each.
  // A callback that throws is logged; the others still run. No-op once settled.
  void Fire();
  // The response went out: no abort can come any more. Drops the callbacks (and what they
  // hold, such as a copy of the request itself).
  void Settle();

 private:
  bool aborted_ = false;
  bool settled_ = false;
  std::vector<std::function<void()>> listeners_;
};

struct Request {
  std::string method;
  std::string path;   // path after routing, e.g. "/test/path" for /request/test/path
  std::string query;  // without '?', may be empty
  std::vector<std::pair<std::string, std::string>> headers;
  Bytes body;
  // Set by the runtime for a request an on_request handler serves (nullptr otherwise:
  // such a request is never aborted). Read it through aborted() / OnAbort().
  std::shared_ptr<RequestAbort> abort_state;

  // Case-insensitive header lookup; nullptr when absent.
  const std::string* Header(std::string_view name) const;
  // True once the client went away before the response: the handler is not cancelled, but
  // its response (whatever it returns or throws) is dropped. Always false for requests that
  // are not an on_request handler's.
  bool aborted() const { return abort_state != nullptr && abort_state->aborted(); }
  // Calls `fn` on the actor's executor when the request is aborted (at once if it already
  // is; never for a request that is not an on_request handler's, nor once the handler's
  // response went out). Any number may be registered.
  void OnAbort(std::function<void()> fn) const {
    if (abort_state != nullptr) abort_state->Listen(std::move(fn));
  }
};

struct Response {
  uint16_t status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  Bytes body;
  static Response Text(uint16_t status, std::string_view text);
  static Response Json(uint16_t status, std::string_view json);
};

class Instance;
class Runtime;

// ---- Raw WebSockets (actors.md §4.9) ----

// A raw WebSocket the actor accepted in onWebSocket. Outgoing messages pass the output
// gate like every other output. Handlers run on the actor's executor; one returning a Task
// counts as activity until it settles.
class RawSocket {
 public:
  // `index`: the gateway's message index (from 1, +1 per client message; Rivet's
  // event.rivetMessageIndex).
  using MessageFn = std::function<Task<void>(Bytes data, bool binary, uint16_t index)>;
  using CloseFn = std::function<Task<void>(uint16_t code, std::string reason)>;

  // Throws ActorError message.outgoing_too_long for a message over the envoy connection's
  // payload limit (maxResponsePayloadSize, 20 MiB by default): it cannot be split.
  void Send(Bytes data, bool binary);
  void Close(uint16_t code = 1000, std::string reason = "");
  // Messages that arrived before a handler was set are delivered when it is set.
  void OnMessage(MessageFn fn);
  void OnClose(CloseFn fn) { on_close_ = std::move(fn); }
  const Request& request() const { return request_; }
  bool closed() const { return closed_; }
  // A hibernatable socket (ActorOptions::can_hibernate_websocket): it survives the actor's
  // sleep, and every message is acknowledged to the gateway once handled, so the gateway
  // replays to the next instance exactly those it was not told were handled.
  bool hibernatable() const { return hibernatable_; }
  // True when this socket came back from hibernation: onWebSocket runs again on the new
  // instance to install its handlers (onBeforeConnect/onConnect do not).
  bool restored() const { return restored_; }

 private:
  friend class Instance;
  struct Pending {
    Bytes data;
    bool binary = false;
    uint16_t index = 0;
  };
  Instance* owner_ = nullptr;
  std::string conn_id_;
  Request request_;
  MessageFn on_message_;
  CloseFn on_close_;
  std::vector<Pending> pending_;
  bool closed_ = false;
  bool hibernatable_ = false;
  bool restored_ = false;
};

// ---- Connections (actors.md §2.9, §4.6) ----

class Conn {
 public:
  const std::string& id() const { return id_; }
  const Value& params() const { return params_; }
  // The connection's state. On a hibernatable connection this access marks it for the
  // next save point, so a change made by any action or hook, even one running for another
  // connection, is staged with that action's effects (not only at sleep).
  Value& state();
  // /connect sockets, and raw WebSockets the actor's can_hibernate_websocket accepted: they
  // survive the actor's sleep at the gateway (actors.md §3.6).
  bool is_hibernatable() const { return hibernatable_; }
  // True for the per-request connections of HTTP actions, queue sends and raw requests.
  bool transient() const { return transient_; }
  // Sends an Event to this connection only (no subscription check). Dropped (logged)
  // for transient connections and raw WebSockets (whose frames are the actor's own).
  void Send(std::string_view event, Value args);
  // Closes the connection from the server side.
  void Disconnect(std::string_view reason = "");

 private:
  friend class Instance;
  friend class Runtime;
  friend class RawSocket;
  Instance* owner_ = nullptr;
  std::string id_;
  Value params_;
  Value state_;
  bool transient_ = true;
  bool connected_ = false;  // onConnect ran (onDisconnect then runs at the end)
  bool closed_ = false;
  std::set<std::string, std::less<>> subscriptions_;
  // WebSocket route for persistent connections.
  wire::Encoding encoding_ = wire::Encoding::kJson;
  envoy::latest::GatewayId gateway_id_{};
  envoy::latest::RequestId request_id_{};
  uint16_t next_server_index_ = 0;
  std::shared_ptr<RawSocket> raw_;  // set for raw WebSockets
  // Hibernation: the last gateway → actor message index received, the indexes still being
  // processed (acks are cumulative, so only up to the oldest unfinished one), the last ack.
  bool hibernatable_ = false;
  uint16_t last_client_index_ = 0;
  std::set<uint16_t> processing_;
  uint16_t acked_index_ = 0;
  // The cumulative index written in the [2]+id record: every message up to it was
  // processed and its effects are staged with (or before) that record, so a restored
  // connection skips those when the gateway replays. Messages that staged nothing do not
  // advance it on their own (their index rides along with the next record written), so a
  // replay may run such an effect-free message again — never one whose effects are in KV.
  uint16_t durable_index_ = 0;
  std::string request_path_;
  std::vector<std::pair<std::string, std::string>> request_headers_;
  // params_ as CBOR, for the [2]+id record: encoded at its first write.
  Bytes params_cbor_;
  bool params_encoded_ = false;
  // What the last written [2]+id record said about state and subscriptions (CBOR state +
  // names), so a change is written when it happens and not only at sleep.
  Bytes persisted_digest_;
  bool touched_ = false;  // listed in Instance::Cold::touched_conns
};

// ---- Type-erased actor definition ----

// Holds typed state or vars for one instance.
class Slot {
 public:
  virtual ~Slot() = default;
  virtual void* get() = 0;
  virtual Value Save() const = 0;                 // state → Value
  virtual void Load(const Value& value) = 0;      // throws ActorError on mismatch
};

// What every hook, action and handler receives from the core; the typed Ctx wraps it.
// Hooks take it (and their other arguments) by value: a hook abandoned at its timeout keeps
// running, so it must own everything it refers to — the connection is shared, the request
// lives in the hook's own frame, and the instance outlives its tasks.
//
// Not an aggregate on purpose: g++ 12 destroys a braced aggregate temporary passed by value
// to a coroutine inside a co_await expression twice (`co_await f(Agg{...})`), which would
// drop a connection reference; a constructor avoids that code path.
struct Invocation {
  Invocation() = default;
  Invocation(Instance* i, std::shared_ptr<Conn> c, const Request* r)
      : instance(i), conn(std::move(c)), request(r) {}
  Instance* instance = nullptr;
  std::shared_ptr<Conn> conn;        // calling connection (actions over a connection)
  const Request* request = nullptr;  // connection hooks / raw requests
  bool is_run = false;               // the run handler (a queue wait there counts as idle)
  // Completable queue messages this invocation received and has not completed yet.
  std::vector<uint64_t> holding;
};

using HookFn = std::function<Task<void>(Invocation)>;
using InputHookFn = std::function<Task<void>(Invocation, Value input)>;
using ActionFn = std::function<Task<Value>(Invocation, Value args)>;
using ConnHookFn = std::function<Task<void>(Invocation)>;  // the conn is inv.conn
using ParamsHookFn = std::function<Task<void>(Invocation, Request, Value params)>;
using ConnStateFn = std::function<Task<Value>(Invocation, Request, Value params)>;
using RequestFn = std::function<Task<Response>(Invocation, Request)>;
using MigrateFn = std::function<Task<void>(Invocation, bool is_new)>;
using StateChangeFn = std::function<void(Invocation&)>;
using SubscribeCheckFn = std::function<Task<bool>(Invocation)>;

struct ActorType {
  std::string name;
  ActorOptions options;
  bool has_state = false;
  std::function<std::unique_ptr<Slot>()> make_state;  // default state
  std::function<std::unique_ptr<Slot>()> make_vars;   // default vars (always set)
  InputHookFn create_state;  // replaces the default state on first start
  InputHookFn on_create;
  MigrateFn on_migrate;
  // actors.md §2.5: the type declares a database; its provider's migration runs at every
  // start, in write mode, before `on_migrate` (may be empty).
  bool has_database = false;
  MigrateFn db_migrate;
  HookFn create_vars;
  HookFn on_wake;
  HookFn on_before_actor_start;
  HookFn run;
  HookFn on_sleep;
  HookFn on_destroy;
  ParamsHookFn on_before_connect;
  ConnStateFn create_conn_state;
  ConnHookFn on_connect;
  ConnHookFn on_disconnect;
  StateChangeFn on_state_change;
  RequestFn on_request;
  std::function<Task<void>(Invocation, std::shared_ptr<RawSocket>)> on_websocket;
  std::map<std::string, ActionFn, std::less<>> actions;
  std::map<std::string, SubscribeCheckFn, std::less<>> events;  // declared; check may be empty
  // Declared queues; `canPublish` may be empty. Client sends to other names are dropped.
  std::map<std::string, SubscribeCheckFn, std::less<>> queues;
  // JSON text published in ToRivetMetadata.prepopulateActorNames.
  std::string metadata_json = "{}";
};

// ---- Instances ----

enum class Phase { kLoading, kStarted, kGrace, kFinalizing, kStopped };

class Instance {
 public:
  Instance(Runtime& runtime, std::shared_ptr<const ActorType> type, envoy::StartActor start);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  // Identity.
  const std::string& actor_id() const { return actor_id_; }
  uint32_t generation() const { return generation_; }
  const std::string& name() const { return type_->name; }
  const std::vector<std::string>& key() const { return key_; }
  const ActorType& type() const { return *type_; }
  Phase phase() const { return phase_; }
  Runtime& runtime() { return runtime_; }

  void* state_ptr();  // throws actor.state_not_enabled
  void* vars_ptr() { return vars_->get(); }
  bool in_state_change() const { return in_state_change_; }

  // ---- KV (user keys live under prefix 0x04; actors.md §2.4) ----
  Task<std::optional<Bytes>> KvGet(Bytes key);
  // One KV request for the keys not already staged; results in `keys` order.
  Task<std::vector<std::optional<Bytes>>> KvGetMany(std::vector<Bytes> keys);
  // Buffered in the write overlay; durable before the next output leaves.
  void KvPut(Bytes key, Bytes value);
  void KvDelete(Bytes key);
  Task<std::vector<std::pair<Bytes, Bytes>>> KvListPrefix(Bytes prefix, bool reverse,
                                                         std::optional<uint64_t> limit);
  Task<std::vector<std::pair<Bytes, Bytes>>> KvListRange(Bytes start, Bytes end, bool reverse,
                                                        std::optional<uint64_t> limit);
  Task<void> KvDeleteRange(Bytes start, Bytes end);

  // ---- Events, connections ----
  void Broadcast(std::string_view event, Value args);
  const std::map<std::string, std::shared_ptr<Conn>, std::less<>>& conns() const { return conns_; }

  // ---- Schedule (actors.md §2.6) ----
  // Returns the event id.
  std::string ScheduleAt(int64_t epoch_ms, std::string action, Value args);

  // ---- Queue (actors.md §2.7): persisted under [5,1,1] (metadata) and [5,1,2]+id ----
  struct QueueMessage {
    uint64_t id = 0;
    std::string name;
    Value body;
    int64_t created_at = 0;
    bool in_flight = false;
  };
  struct QueueReceive {
    std::vector<std::string> names;  // empty: any
    std::optional<milliseconds> timeout;
    bool completable = false;
    size_t count = 1;
  };
  // Stores a message (durable before the next output). Errors: queue.full,
  // queue.message_too_large.
  // `completion`, when given, is resolved with the response when the message is completed
  // (registered before any waiting receiver can take the message).
  Task<uint64_t> QueueSend(std::string name, Value body,
                           std::optional<Completion<std::optional<Value>>> completion = std::nullopt);
  // The first matching messages in FIFO order, waiting up to `timeout` (forever when
  // unset) for at least one; empty on timeout. A completable receive leaves the message
  // stored (in flight) until QueueComplete; `inv` remembers it. Errors: actor.aborted when
  // the actor starts shutting down, queue.previous_message_not_completed.
  Task<std::vector<QueueMessage>> QueueReceiveMessages(Invocation& inv, QueueReceive options);
  // Errors: queue.already_completed.
  Task<void> QueueComplete(Invocation& inv, uint64_t id, std::optional<Value> response);
  // An invocation ended holding an uncompleted message: it goes back to the queue.
  void QueueRelease(Invocation& inv);
  size_t queue_size() const { return cold_ ? cold_->queue.size() : 0; }
  // What the instance keeps beyond its fixed members (tests; BENCHMARKS W4): the cold
  // parts (allocated at first use, kept for life) and the requests kept while it starts.
  bool has_cold_parts() const { return cold_ != nullptr; }
  bool has_early_requests() const { return early_requests_ != nullptr; }
  // Shutdown: waiting receives fail with actor.aborted, waiting HTTP sends time out.
  void AbortQueueWaiters();

  // ---- Lifecycle requests from actor code ----
  void RequestSleep();    // throws actor.starting / actor.stopping
  void RequestDestroy();
  void KeepAwake(Task<void> task);  // blocks idle sleep and grace finalisation
  void WaitUntil(Task<void> task);  // blocks grace finalisation only
  bool aborted() const { return aborted_; }
  // Persists now and waits for the engine's commit. With `max_wait`: persists at the latest
  // that long from now (sooner if a save is due sooner), then waits for the commit.
  Task<void> SaveState(std::optional<milliseconds> max_wait = std::nullopt);

  int64_t NowMs() const;

  // ---- SQLite (actors.md §2.5) ----
  // The instance's database, created at its first use (runtime/sql.h selection). Throws
  // actor.database_not_configured when the type declares none, sqlite.unavailable when no
  // backend can serve it, sqlite.closed once the instance has shut its database.
  SqlDatabase& Database();
  // Which backend Database() uses (or would use); nullopt when none can.
  std::optional<SqliteBackendKind> SelectedSqlBackend() const;

 private:
  friend class Runtime;
  friend class Conn;
  friend class RawSocket;

  // Startup / shutdown sequences.
  Task<void> StartSequence();
  Task<void> StopSequence(envoy::latest::StopActorReason reason);
  void OnStopCommand(envoy::latest::StopActorReason reason);

  // Hook runner with timeout: failure or timeout throws.
  Task<void> RunHook(const char* name, milliseconds timeout, Task<void> hook);

  // ---- Output gate ----
  struct Output {
    uint64_t needs_seq = 0;
    std::function<void()> send;
    std::function<void(const ClientError&)> fail;  // may be empty
    // Leaves on the envoy socket (the engine can hold it), as opposed to a local wake-up
    // that must see its writes durable (WaitDurable).
    bool wire = true;
  };
  // An output that fails with actor.state_too_large (oversized_record_), in order.
  void EnqueueRefusal(std::function<void(const ClientError&)> fail, bool wire);
  // Captures any state/schedule change, then sends now or after the pending flush.
  // `wire = false`: not sent on the socket (a local wake-up): waits for durability even
  // when the engine holds outputs.
  void Gate(std::function<void()> send, std::function<void(const ClientError&)> fail = {},
            bool wire = true);
  // The same for an output that needs only what was staged up to `needs` (<= staged_seq_)
  // to be durable; it still leaves after every earlier output.
  void GateAt(uint64_t needs, std::function<void()> send, std::function<void(const ClientError&)> fail);
  void EnqueueOutput(uint64_t needs, std::function<void()> send, std::function<void(const ClientError&)> fail,
                     bool wire = true);
  // Whether `o` may leave now: its writes are durable, or — when the engine holds outputs
  // (EnvoyClient::engine_holds_outputs) — written to the socket it will leave on.
  bool Releasable(const Output& o) const;
  // A write that went out under held outputs failed: the engine withheld (and will keep
  // withholding) this generation's answers, so the instance ends at once, writing nothing
  // more, and reports itself stopped with `actor.storage_failed`; the engine restarts the
  // actor from its durable state (docs/runtime.md, "Held outputs").
  void EndGeneration(const Error& cause);
  // A local-native commit sent without waiting was answered (HeldCommits::Done).
  void OnHeldCommitDone(const Status& outcome);
  // The database's commits in flight without a wait (sql.h), or null before the first SQL
  // call: an actor that never uses SQL pays nothing for them.
  HeldCommits* HeldSqlCommits() const { return db_ != nullptr ? db_->held_commits() : nullptr; }
  // The start of every stop: no sleep deadline, no schedule timer, queue waiters aborted.
  void StopTimersAndWaiters();
  // Serialises the actor record; if it changed, stages it in the overlay.
  void Checkpoint();
  void StageWrite(Bytes key, std::optional<Bytes> value);
  void MaybeFlush();
  void OnFlushDone(uint64_t seq, Status status, bool held);
  void ReleaseOutputs();
  void FailOutputs(const ClientError& error);
  bool AlarmSettled() const;
  std::optional<int64_t> DesiredAlarm() const;
  Task<void> WaitDurable();  // until everything staged so far is committed
  // Until everything staged so far is committed or, on a socket whose engine holds outputs,
  // written to it ahead of what the instance sends next (the engine holds that until the
  // writes are durable).
  Task<void> WaitWritten();
  Task<void> WaitBehindWrites(bool wire);  // the two above
  Task<envoy::latest::KvResponseData> Kv(envoy::latest::KvRequestData request);
  void SyncAlarm();

  // ---- Activity / sleep ----
  bool CanSleep() const;
  void ResetSleepTimer();
  // The runtime's shared sleep timer reached this instance's idle deadline.
  void OnSleepDeadline();
  void BeginActivity() { ++activity_; ResetSleepTimer(); }
  void EndActivity() { --activity_; ResetSleepTimer(); }
  void ArmScheduleTimer();
  void FireDueEvents();

  // ---- Throttled saves (actors.md §3.5) ----
  // Saves the state at the latest `within` from now (an earlier save deadline stays).
  void RequestSave(milliseconds within);
  // The runtime's shared save timer reached this instance's save deadline.
  void OnSaveDeadline();

  // Runs a detached task owned by this instance (counted for shutdown).
  // `failure_log`: the warning logged when the task throws.
  void SpawnOwned(Task<void> task, bool keeps_awake, bool blocks_shutdown,
                  const char* failure_log = "background task failed");

  // ---- Requests and connections ----
  void HandleHttp(const envoy::latest::MessageId& id, Request request);
  Task<void> HttpAction(envoy::latest::MessageId id, Request request, std::string action);
  Task<Value> InvokeAction(std::string name, Value args, std::shared_ptr<Conn> conn);
  std::shared_ptr<Conn> NewConn(bool transient);
  // onBeforeConnect → createConnState → (the connection is in conns) → `before_on_connect`
  // → onConnect. Throws the hook's error.
  Task<void> ConnectSetup(std::shared_ptr<Conn> conn, Request request,
                          std::function<void()> before_on_connect = {});
  Task<void> DisconnectConn(std::string conn_id);
  void HandleWsOpen(const envoy::latest::MessageId& id, Request request);
  // A non-transient connection for an upgraded socket: routed, recorded with its request's
  // path and headers, and the gateway told the socket is open (and whether it hibernates).
  std::shared_ptr<Conn> AcceptSocket(const envoy::latest::MessageId& id, const Request& request, Value params,
                                     bool hibernatable);
  // Makes `conn` a raw WebSocket (hibernatable when the connection is).
  std::shared_ptr<RawSocket> AttachRawSocket(Conn& conn, Request request, bool restored);
  void OpenRawSocket(const envoy::latest::MessageId& id, Request request, Value params);
  // Runs the raw socket's message handler; for a hibernatable socket the message is then
  // recorded as processed and acknowledged (`index` tracked in Conn::processing_).
  void DeliverRaw(std::shared_ptr<RawSocket> raw, Bytes data, bool binary, uint16_t index);
  // onWebSocket for a raw socket restored from hibernation (after onWake).
  void RunRestoredRawSocket(std::shared_ptr<Conn> conn);
  // An action replayed after it was processed gets actor.action_result_lost.
  void AnswerReplayedAction(Conn& conn, const Bytes& data);
  // RuntimeOptions::test_hooks: answers the ack-state probe frame; true when `data` was one.
  bool AnswerAckProbe(Conn& conn, const Bytes& data);
  void HandleWsMessage(const envoy::latest::MessageId& id, const Bytes& data, bool binary);
  // Client messages on restored connections that arrive while the instance is still
  // starting (the gateway replays as soon as the socket is re-opened): handled once it runs.
  struct EarlyWsMessage {
    envoy::latest::MessageId id;
    Bytes data;
    bool binary = false;
  };
 public:
  // Called when startup finished (phase kStarted).
  void DeliverEarlyMessages();
 private:
  void HandleWsClose(const envoy::latest::MessageId& id);
  Task<void> ConnAction(std::string conn_id, wire::ActionRequest req, std::optional<uint16_t> index);
  void SendToConn(Conn& conn, const wire::ToClient& msg);
  // Hibernatable connections.
  Bytes ConnRecord(Conn& conn) const;
  // Stages the connection's record when its state or subscriptions changed since the last
  // one (hibernatable, connected connections only): a crash of the runtime then restores
  // what the client was acknowledged, not the connect-time record.
  void StageConnIfChanged(Conn& conn);
  // Conn::state() on a hibernatable connection: listed for StageTouchedConns.
  void TouchConn(Conn& conn);
  // Stages the record of every connection whose state was accessed since the last call and
  // changed (Checkpoint).
  void StageTouchedConns();
  // Marks client message `index` as processed in the connection's record (see
  // Conn::durable_index_) and stages the record when anything in it changed.
  void StageConnProcessed(Conn& conn, std::optional<uint16_t> index);
  // After a client message was handled (and Checkpoint ran): stages a changed connection
  // record and — only when anything was staged since `staged_before`, by this message or
  // work interleaved with it — the message's processed index with it (see ConnAction).
  // Its answer then waits for staged_seq_: the effects and, with them, the index (an answer
  // that left before the index was durable would be applied again after a crash, when the
  // gateway replays what was not acknowledged).
  void StageMessageDone(Conn& conn, std::optional<uint16_t> index, uint64_t staged_before);
  static uint16_t ProcessedUpto(const Conn& conn, std::optional<uint16_t> finishing);
  // Raises Conn::durable_index_ to what has been processed (the caller stages the record).
  static void AdvanceDurableIndex(Conn& conn, std::optional<uint16_t> finishing);
  void FinishClientMessage(const std::string& conn_id, uint16_t index);
  Task<void> RestoreHibernatedConns(std::vector<std::string>& stale);
  void CloseConnSocket(Conn& conn, uint16_t code, std::string reason);
  void SendHttpResponse(const envoy::latest::MessageId& id, Response response);
  Response ErrorResponse(const ClientError& error, wire::Encoding encoding);
  // The encoding of an action or queue request's body (x-rivet-encoding; JSON when absent)
  // once the request passed what every such request must: an encoding it can be answered
  // in, and a body within max_incoming_message_size. nullopt: it did not, and was answered
  // with the error.
  std::optional<wire::Encoding> AcceptHttpBody(const envoy::latest::MessageId& id,
                                               const Request& request);

  // Closes the database (statements already issued finish first).
  Task<void> CloseDatabase();
  std::unique_ptr<SqlDatabase> db_;
  bool db_closed_ = false;

  Runtime& runtime_;
  std::shared_ptr<const ActorType> type_;
  std::string actor_id_;
  uint32_t generation_;
  std::vector<std::string> key_;
  // The start command: what StartSequence needs (preloaded KV, hibernating requests,
  // input); dropped once the instance runs. The input's CBOR alone stays: the actor record
  // carries it.
  std::unique_ptr<envoy::StartActor> start_;
  // HTTP requests (starts, chunks, aborts) that arrived while the instance was still
  // starting (an engine with early requests sends them right behind the start command):
  // handled in arrival order once it runs, refused as not started if it never does.
  // Allocated by the first one, freed when they are settled — not in Cold, which an
  // instance keeps for life (W4 counts every byte an awake idle actor keeps).
  std::unique_ptr<std::vector<envoy::latest::ToEnvoyTunnelMessage>> early_requests_;
  std::optional<Bytes> input_;
  Phase phase_ = Phase::kLoading;

  std::unique_ptr<Slot> state_;
  std::unique_ptr<Slot> vars_;
  bool in_state_change_ = false;
  Bytes persisted_record_;  // the [1] bytes last staged
  Bytes persisted_state_;   // the CBOR state inside it
  bool record_initialized_ = false;  // hasInitialized: checkpoints may write [1]
  // The size of a record Checkpoint refused to stage because the engine would refuse it
  // (over its 128 KiB value limit); 0 when the last one fitted. While set, every output
  // fails with actor.state_too_large instead of claiming a save that cannot happen.
  size_t oversized_record_ = 0;
  bool destroy_alarm_cleared_ = false;

  // Schedule.
  struct ScheduledEvent {
    std::string id;
    int64_t ts;
    std::string action;
    Value args;
  };
  std::optional<int64_t> pushed_alarm_;   // value at KV [6]
  bool alarm_push_in_flight_ = false;

  // Write overlay + gate.
  std::map<Bytes, std::optional<Bytes>> overlay_;      // staged, not yet sent
  // Sent, not yet committed: every flush in flight, a later value over an earlier one.
  std::map<Bytes, std::optional<Bytes>> inflight_;
  uint64_t staged_seq_ = 0;    // bumps on every staged write
  uint64_t durable_seq_ = 0;   // every write up to here is committed
  // Held outputs: every write up to sent_seq_ was written to the socket of sent_epoch_,
  // where the engine holds what follows it until it is durable.
  uint64_t sent_seq_ = 0;
  uint64_t sent_epoch_ = 0;
  bool generation_ended_ = false;  // EndGeneration ran
  // A write the startup did not wait for failed while the instance was still loading: the
  // start fails when it ends (StartSequence).
  bool startup_write_failed_ = false;

  // Flushes in flight: one at a time, or up to kMaxHeldFlushes with held outputs (MaybeFlush).
  uint8_t flushing_ = 0;
  // Handling one inbound tunnel message (Runtime::OnTunnelMessage): flushes wait for its
  // end, so everything that message staged — an action's broadcast of its state, the
  // state, the connection's processed index — goes out as one write (one synced commit).
  bool in_turn_ = false;
  std::vector<Output> outputs_;

  // Activity.
  int activity_ = 0;         // in-flight requests, keepAwake, internal keep-awake
  int shutdown_blockers_ = 0;  // waitUntil + keepAwake + in-flight work
  bool run_active_ = false;
  bool sleep_requested_ = false;
  bool destroy_requested_ = false;
  bool aborted_ = false;
  bool stop_received_ = false;
  std::optional<envoy::latest::StopActorReason> pending_stop_;
  int owned_tasks_ = 0;
  // Idle-sleep deadline, while one is set: an entry of Runtime::sleep_deadlines_ (one clock
  // timer serves every instance).
  std::optional<MonoTime> sleep_deadline_;
  // Throttled-save deadline, while one is set: an entry of Runtime::save_deadlines_.
  std::optional<MonoTime> save_deadline_;

  // Queue.
  Task<void> EnsureQueueLoaded();
  void StageQueueMessage(const QueueMessage& m);
  void StageQueueMeta();
  void DispatchQueue();
  Task<void> HttpQueueSend(envoy::latest::MessageId id, Request request, std::string name);
  struct QueueWaiter {
    QueueReceive options;
    Completion<std::optional<std::vector<QueueMessage>>> done;  // nullopt: aborted
    TimerId timer{};
    bool from_run = false;
  };

  // Connections and requests.
  std::map<std::string, std::shared_ptr<Conn>, std::less<>> conns_;

  // What an idle actor without a queue, a schedule, WebSockets, streamed or raw (on_request)
  // requests does not need: allocated at first use (cold()), read through cold_ (nullptr:
  // all empty), kept until the instance goes. An awake idle actor then costs the runtime
  // only the members above (BENCHMARKS W4).
  struct Cold {
    // Schedule (sorted by time, then id).
    std::vector<ScheduledEvent> schedule;
    TimerId schedule_timer{};
    // Queue.
    bool queue_loaded = false;
    std::optional<Completion<bool>> queue_loading;
    std::map<uint64_t, QueueMessage> queue;
    uint64_t queue_next_id = 1;
    std::vector<std::shared_ptr<QueueWaiter>> queue_waiters;
    std::map<uint64_t, std::vector<Completion<std::optional<Value>>>> queue_completions;
    int run_waiting_on_queue = 0;
    // Gateway routes of this instance's WebSockets → connection id.
    std::map<std::pair<envoy::latest::GatewayId, envoy::latest::RequestId>, std::string> ws_conns;
    // Streamed HTTP requests still receiving their body.
    std::map<std::pair<envoy::latest::GatewayId, envoy::latest::RequestId>, Request> streaming;
    // Raw HTTP requests (on_request) whose response has not gone out: what their abort
    // marks (Request::aborted).
    std::map<std::pair<envoy::latest::GatewayId, envoy::latest::RequestId>,
             std::shared_ptr<RequestAbort>>
        raw_requests;
    std::vector<EarlyWsMessage> early_ws;
    std::vector<std::function<void()>> idle_waiters;  // grace: woken when blockers drop
    std::vector<Completion<bool>> save_waiters;       // SaveState(max_wait): its save ran
    std::vector<std::string> touched_conns;           // TouchConn, until StageTouchedConns
  };
  Cold& cold() {
    if (!cold_) cold_ = std::make_unique<Cold>();
    return *cold_;
  }
  std::unique_ptr<Cold> cold_;
};

// Deadlines of one kind (idle sleep, throttled saves) for many instances, served by one
// clock timer armed for the earliest: no timer per actor. Each instance keeps its own
// deadline in `slot`; when it is reached, the slot is cleared and `due` runs.
// Thread-safety: the runtime's thread only.
class InstanceDeadlines {
 public:
  using Slot = std::optional<MonoTime> Instance::*;
  using Due = void (Instance::*)();
  InstanceDeadlines(Clock& clock, Slot slot, Due due) : clock_(clock), slot_(slot), due_(due) {}
  ~InstanceDeadlines();
  InstanceDeadlines(const InstanceDeadlines&) = delete;
  InstanceDeadlines& operator=(const InstanceDeadlines&) = delete;

  // Sets (nullopt: clears) `instance`'s deadline.
  void Set(Instance& instance, std::optional<MonoTime> deadline);
  // Drops `instance`'s entry without touching the timer (its destructor: the runtime may be
  // going away itself).
  void Forget(Instance& instance);
  size_t size() const { return deadlines_.size(); }

 private:
  void Arm();
  void OnTimer();

  Clock& clock_;
  Slot slot_;
  Due due_;
  std::set<std::pair<MonoTime, Instance*>> deadlines_;
  TimerId timer_{};
  MonoTime timer_at_{};
};

// ---- The runtime ----

class Runtime final : public envoy::EnvoyHost {
 public:
  Runtime(RuntimeOptions options, Clock& clock, Random& random);
  ~Runtime() override;

  void Register(std::shared_ptr<const ActorType> type);
  // Actor names + metadata for EnvoyConfig::actor_names. Each type's metadata JSON object
  // gets a "preload" member naming what StartSequence reads (keys [1] and [6], prefix [2];
  // envoy-protocol.md §5.4), unless it already has one or is not a JSON object.
  std::vector<std::pair<std::string, std::string>> ActorNames() const;
  // Must be called once before the client starts.
  void Attach(envoy::EnvoyClient& client) { client_ = &client; }
  // Runs once when the envoy client shut down (graceful stop finished, or evicted).
  void SetShutdownCallback(std::function<void()> fn) { on_shutdown_ = std::move(fn); }

  // EnvoyHost
  void OnStartActor(envoy::StartActor start) override;
  void OnStopActor(const std::string& actor_id, uint32_t generation,
                   envoy::latest::StopActorReason reason) override;
  void OnTunnelMessage(const std::string& actor_id,
                       const envoy::latest::ToEnvoyTunnelMessage& message) override;
  void OnShutdown() override;

  envoy::EnvoyClient& client() { return *client_; }
  Clock& clock() { return clock_; }
  Random& random() { return random_; }
  const RuntimeOptions& options() const { return options_; }
  size_t instance_count() const { return instances_.size(); }
  Instance* Find(std::string_view actor_id);
  // Hands a tunnel message to its started instance.
  static void DispatchTunnel(Instance& inst, const envoy::latest::ToEnvoyTunnelMessage& message);
  // DispatchTunnel as one turn of the instance: what it flushes goes out as one write.
  static void DispatchTurn(Instance& inst, const envoy::latest::ToEnvoyTunnelMessage& message);
  // The HTTP requests kept while `inst` started: handled now that it runs, or (`started`
  // false: it never will) refused with 503 and the not-started header, unhandled.
  void SettleEarlyRequests(Instance& inst, bool started);
  // Called by an instance once it reported Stopped; frees it when no task holds it.
  void Retire(Instance& instance);
  void MaybeFree(Instance& instance);
  // Instances waiting for their idle-sleep deadline, and for a throttled save (tests, metrics).
  size_t sleep_deadline_count() const { return sleep_deadlines_.size(); }
  size_t save_deadline_count() const { return save_deadlines_.size(); }
  // Stopped instances not freed yet (a task or a write still holds them), and how many
  // were freed so far (the native shell returns freed heap to the OS after a burst).
  size_t retired_count() const { return retired_.size(); }
  uint64_t freed_instances() const { return freed_instances_; }

 private:
  friend class Instance;

  RuntimeOptions options_;
  Clock& clock_;
  Random& random_;
  envoy::EnvoyClient* client_ = nullptr;
  std::map<std::string, std::shared_ptr<const ActorType>, std::less<>> types_;
  // Before the instances: an instance leaves its entries when it is destroyed.
  InstanceDeadlines sleep_deadlines_{clock_, &Instance::sleep_deadline_,
                                     &Instance::OnSleepDeadline};
  InstanceDeadlines save_deadlines_{clock_, &Instance::save_deadline_, &Instance::OnSaveDeadline};
  // Keyed by a view of the instance's own actor_id_ (it outlives its entry).
  std::map<std::string_view, std::unique_ptr<Instance>, std::less<>> instances_;
  std::vector<std::unique_ptr<Instance>> retired_;
  uint64_t freed_instances_ = 0;
  std::function<void()> on_shutdown_;
};

// KV key layout (actors.md §3.5).
namespace keys {
inline constexpr uint8_t kActorRecord = 1;
inline constexpr uint8_t kConnPrefix = 2;
inline constexpr uint8_t kInspectorToken = 3;
inline constexpr uint8_t kUserPrefix = 4;
inline constexpr uint8_t kQueuePrefix = 5;
inline constexpr uint8_t kAlarm = 6;
}  // namespace keys

// Budget of the hibernated-connection records ([2]) the engine may preload into a start
// command (actors.md §1.2 preloadMaxConnectionsBytes), advertised in the preload plan of
// Runtime::ActorNames.
inline constexpr uint32_t kPreloadMaxConnectionsBytes = 65536;

}  // namespace keel::runtime
