// FakeEnvoy: a scripted envoy for engine integration tests and benchmarks. It speaks the
// envoy protocol (envoy-protocol.md §3–§7) over a real WebSocket (net::BlockingWsClient)
// with Keel's own codec, at a chosen protocol version (2–4), and lets a test drive it one
// message at a time: send any ToRivet, receive ToEnvoy decoded at the connection's
// version, wait for a message of one type while stashing the others, make KV and SQLite
// page requests and wait for their answers, send raw (malformed) frames.
//
// A background thread reads the socket all the time, like a real envoy's connection task:
// it answers every ToEnvoyPing at once with ToRivetPong (when auto_pong is on), so an idle
// fake envoy is not timed out, and queues every frame for the test thread. Messages that a
// wait skips are not lost: they stay in a backlog that Receive/WaitFor read first, in
// arrival order. Pings are never returned by WaitFor<T> unless T is ToEnvoyPing.
//
// Errors (keel::Error):
//   net.timeout          nothing (matching) arrived within the wait
//   net.closed           the connection ended; closed() then has the code and reason
//   fake_envoy.decode    a frame did not decode at the connection's version
//   fake_envoy.encode    a message cannot be encoded at the connection's version
//   fake_envoy.unexpected a message other than the one the call requires (ExpectInit)
//   anything ConnectWebSocket returns (net.handshake_failed carries the HTTP answer)
//
// Thread-safety: one test thread drives an instance; Send/SendRaw/set_auto_pong may also be
// called from other threads.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "base/result.h"
#include "net/blocking_ws_client.h"
#include "net/http.h"
#include "protocol/envoy/versioned.h"

namespace keel::testing {

namespace envoy_proto = ::keel::protocol::envoy::latest;

struct FakeEnvoyOptions {
  // The engine's base URL, "ws://127.0.0.1:PORT" (TestEngine::ws_url()). "/envoys/connect"
  // and the query are appended.
  std::string ws_url;
  uint16_t protocol_version = 4;
  std::string namespace_name = "default";
  std::string pool_name = "default";
  std::string envoy_key = "fake-envoy";
  uint32_t version = 1;
  // Offered as `rivet_token.<token>` after `rivet`.
  std::optional<std::string> token;
  // Offered after `rivet` (and the token), e.g. to test routing subprotocols.
  std::vector<std::string> extra_subprotocols;
  // When set, the query string used verbatim (without '?') instead of the one built from
  // the fields above — for validation tests with missing or bad parameters.
  std::optional<std::string> raw_query;
  // Extra request headers on the upgrade (e.g. x-keel-hold-outputs: 1).
  net::Headers extra_headers;
  // Answer every ToEnvoyPing with ToRivetPong{same ts} as soon as it arrives.
  bool auto_pong = true;
  std::chrono::milliseconds connect_timeout{5000};
  // Largest incoming message the client accepts.
  size_t max_message = size_t{64} << 20;
};

class FakeEnvoy {
 public:
  struct Closed {
    uint16_t code = 0;
    std::string reason;
  };
  // One received frame: its raw bytes (as sent, no version prefix) and its decoding at the
  // connection's version.
  struct Frame {
    std::string raw;
    envoy_proto::ToEnvoy msg;
  };

  // The connect URL for `options` (ws_url + "/envoys/connect?" + query).
  static std::string ConnectUrl(const FakeEnvoyOptions& options);
  // The query in the envoy's order: protocol_version, namespace, envoy_key, version,
  // pool_name (§3.1), each value percent-encoded.
  static std::string BuildQuery(const FakeEnvoyOptions& options);

  // Opens the WebSocket. Does not read anything (the Init is still to come). On
  // net.handshake_failed the HTTP answer goes to `*failed_handshake` when given.
  static Result<std::unique_ptr<FakeEnvoy>> Connect(FakeEnvoyOptions options,
                                                    net::HttpResponse* failed_handshake = nullptr);
  // Connect, then ExpectInit.
  static Result<std::unique_ptr<FakeEnvoy>> ConnectAndInit(
      FakeEnvoyOptions options, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  ~FakeEnvoy();
  FakeEnvoy(const FakeEnvoy&) = delete;
  FakeEnvoy& operator=(const FakeEnvoy&) = delete;

  const FakeEnvoyOptions& options() const { return options_; }
  uint16_t protocol_version() const { return options_.protocol_version; }
  const std::string& envoy_key() const { return options_.envoy_key; }
  // The 101 response (headers include Sec-WebSocket-Protocol).
  const net::HttpResponse& handshake() const { return handshake_; }
  // Set once the connection ended (Receive returned net.closed).
  const std::optional<Closed>& closed() const { return closed_; }
  // The ProtocolMetadata of the Init read by ExpectInit.
  const std::optional<envoy_proto::ProtocolMetadata>& metadata() const { return metadata_; }
  void set_auto_pong(bool on) { auto_pong_.store(on); }
  // Pings received so far (answered or not).
  int pings_seen() const { return pings_seen_.load(); }

  // ---- sending ----
  // Encodes at the connection's version and sends a binary frame.
  Status Send(const envoy_proto::ToRivet& msg);
  // Sends bytes as they are (binary or text frame).
  Status SendRaw(std::string bytes, bool binary = true);

  // ---- receiving ----
  // The next frame (backlog first), pings included (and answered when auto_pong).
  Result<Frame> ReceiveFrame(std::chrono::milliseconds timeout);
  // The next message (backlog first), pings included (and answered when auto_pong).
  Result<envoy_proto::ToEnvoy> Receive(std::chrono::milliseconds timeout);
  // The first message for which `match` is true, within `timeout` overall; other messages
  // go to the backlog, except pings, which are dropped (after the auto pong).
  template <typename Pred>
  Result<Frame> WaitForFrame(Pred match, std::chrono::milliseconds timeout);
  // The next message of type T (see WaitForFrame).
  template <typename T>
  Result<T> WaitFor(std::chrono::milliseconds timeout) {
    auto frame = WaitForFrame([](const envoy_proto::ToEnvoy& m) { return m.is<T>(); }, timeout);
    if (!frame.has_value()) return Unexpected{frame.error()};
    return std::get<T>(std::move(frame->msg.value));
  }
  // Reads the first message, which must be ToEnvoyInit; returns its metadata.
  Result<envoy_proto::ProtocolMetadata> ExpectInit(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads until the connection ends (skipping everything) and returns the close.
  Result<Closed> WaitClosed(std::chrono::milliseconds timeout);
  // Messages read but not yet returned (skipped by a wait), oldest first.
  const std::deque<Frame>& backlog() const { return backlog_; }
  // Drops the backlog.
  void ClearBacklog() { backlog_.clear(); }
  // A round trip through the engine's request path: sends a KV request for an actor id that
  // cannot exist and waits for its (error) answer. Everything the engine wrote to this
  // connection before that answer has then been read (into the backlog). (KV requests of
  // other actors run on other executors and are not ordered with it.)
  Status Sync(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // ---- events and commands ----
  // ToRivetEvents with the given events, as given (explicit indices).
  Status SendEvents(std::vector<envoy_proto::EventWrapper> events);
  // One event with the next index of (actor, generation) (0, 1, 2, …, per pair).
  Status SendEvent(const std::string& actor_id, uint32_t generation, envoy_proto::Event event);
  Status SendRunning(const std::string& actor_id, uint32_t generation);
  Status SendStopped(const std::string& actor_id, uint32_t generation,
                     envoy_proto::StopCode code = envoy_proto::StopCode::kOk,
                     std::optional<std::string> message = std::nullopt);
  Status SendIntentSleep(const std::string& actor_id, uint32_t generation);
  Status SendIntentStop(const std::string& actor_id, uint32_t generation);
  Status SendSetAlarm(const std::string& actor_id, uint32_t generation,
                      std::optional<int64_t> alarm_ts);
  // The index SendEvent will use next for (actor, generation).
  int64_t NextEventIndex(const std::string& actor_id, uint32_t generation) const;
  // ToRivetAckCommands.
  Status AckCommands(std::vector<envoy_proto::ActorCheckpoint> checkpoints);
  // Waits for a ToEnvoyCommands that contains a command for `actor_id` (any actor when
  // empty) and returns that command (the first such in the batch).
  Result<envoy_proto::CommandWrapper> WaitCommand(const std::string& actor_id,
                                                  std::chrono::milliseconds timeout);

  // ---- KV and SQLite pages (request ids assigned here; answers matched by id) ----
  Result<envoy_proto::KvResponseData> Kv(const std::string& actor_id,
                                         envoy_proto::KvRequestData request,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Kv in two steps, for a runtime that does not wait for the answer (held outputs):
  // sends the request and returns its id; KvAnswer waits for that id's answer.
  Result<uint32_t> SendKv(const std::string& actor_id, envoy_proto::KvRequestData request);
  Result<envoy_proto::KvResponseData> KvAnswer(uint32_t request_id,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(5));
  Result<envoy_proto::SqliteGetPagesResponse> GetPages(
      envoy_proto::SqliteGetPagesRequest request,
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // GetPages in two steps: SendGetPages returns the request id, PagesAnswer waits for it.
  Result<uint32_t> SendGetPages(envoy_proto::SqliteGetPagesRequest request);
  Result<envoy_proto::SqliteGetPagesResponse> PagesAnswer(
      uint32_t request_id, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  Result<envoy_proto::SqliteCommitResponse> Commit(
      envoy_proto::SqliteCommitRequest request,
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Commit in two steps (held commits): SendCommit returns the request id, CommitAnswer
  // waits for that id's answer.
  Result<uint32_t> SendCommit(envoy_proto::SqliteCommitRequest request);
  Result<envoy_proto::SqliteCommitResponse> CommitAnswer(
      uint32_t request_id, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Starts the close handshake (the engine then sees the envoy go away).
  void Close(uint16_t code = 1000, std::string reason = "envoy.shutdown");

 private:
  explicit FakeEnvoy(FakeEnvoyOptions options)
      : options_(std::move(options)), auto_pong_(options_.auto_pong) {}
  // The next frame the reader thread queued (not the backlog).
  Result<Frame> ReadSocket(std::chrono::milliseconds timeout);
  // The reader thread: socket → pongs + inbox.
  void Pump();

  // What the reader thread hands over: a frame, the close, or a frame that did not decode.
  using Inbound = std::variant<Frame, Closed, Error>;

  FakeEnvoyOptions options_;
  std::unique_ptr<net::BlockingWsClient> client_;
  std::atomic<bool> auto_pong_;
  std::atomic<int> pings_seen_{0};
  std::atomic<bool> stopping_{false};
  std::mutex inbox_mu_;
  std::condition_variable inbox_cv_;
  std::deque<Inbound> inbox_;  // guarded by inbox_mu_
  std::thread pump_;
  net::HttpResponse handshake_;
  std::deque<Frame> backlog_;
  std::optional<Closed> closed_;
  std::optional<envoy_proto::ProtocolMetadata> metadata_;
  std::map<std::pair<std::string, uint32_t>, int64_t> next_event_index_;
  uint32_t next_kv_request_ = 0;
  uint32_t next_sqlite_request_ = 0;
};

template <typename Pred>
Result<FakeEnvoy::Frame> FakeEnvoy::WaitForFrame(Pred match, std::chrono::milliseconds timeout) {
  for (auto it = backlog_.begin(); it != backlog_.end(); ++it) {
    if (match(it->msg)) {
      Frame f = std::move(*it);
      backlog_.erase(it);
      return f;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    auto frame = ReadSocket(left);
    if (!frame.has_value()) return Unexpected{frame.error()};
    if (match(frame->msg)) return frame;
    if (frame->msg.is<envoy_proto::ToEnvoyPing>()) continue;
    backlog_.push_back(std::move(*frame));
  }
}

// ---- small builders ----
envoy_proto::KvRequestData KvPut(std::vector<std::pair<std::string, std::string>> entries);
envoy_proto::KvRequestData KvGet(std::vector<std::string> keys);
envoy_proto::KvRequestData KvDelete(std::vector<std::string> keys);
envoy_proto::KvRequestData KvListAll();
envoy_proto::KvRequestData KvListPrefix(std::string prefix);
Bytes ToBytes(std::string_view s);
std::string ToString(ByteView b);
// A human-readable one-line description of a message ("ToEnvoyCommands[start a g1 #1]"),
// for failure messages.
std::string Describe(const envoy_proto::ToEnvoy& msg);
// The text of a KvErrorResponse / SqliteErrorResponse, or "" when the answer is not one.
std::string ErrorText(const envoy_proto::KvResponseData& r);
std::string ErrorText(const envoy_proto::SqliteGetPagesResponse& r);
std::string ErrorText(const envoy_proto::SqliteCommitResponse& r);

}  // namespace keel::testing
