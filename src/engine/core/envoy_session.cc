#include "engine/core/envoy_session.h"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include "base/build_exact.h"
#include "base/log.h"
#include "base/output_batch.h"
#include "engine/core/engine.h"
#include "engine/core/gateway.h"
#include "engine/core/orchestrator.h"
#include "engine/gateway/errors.h"
#include "protocol/envoy/tunnel.h"

namespace keel::engine {
namespace {

constexpr std::string_view kLog = "envoy";

int64_t MonoMs(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             clock.MonotonicNow().time_since_epoch())
      .count();
}

}  // namespace

EnvoySession::EnvoySession(Engine& engine, gateway::EnvoyConnectParams params,
                           EngineId namespace_id, uint64_t session_id)
    : engine_(engine),
      params_(std::move(params)),
      namespace_id_(namespace_id),
      id_(session_id),
      remote_sql_(std::make_unique<RemoteSqlHost>(engine, *this)) {
  const int n = std::clamp(engine.options().storage_executors_per_connection, 1, 64);
  for (int i = 0; i < n; ++i) storage_executors_.push_back(engine.MakeWorkerStrand());
  storage_pending_ = std::make_unique<std::atomic<uint32_t>[]>(static_cast<size_t>(n));
  if (engine.store().IsRemote()) dispatch_ = engine.MakeWorkerStrand();
}

size_t EnvoySession::StorageSlotFor(const std::string& actor_id) const {
  return std::hash<std::string>{}(actor_id) % storage_executors_.size();
}

void EnvoySession::PostStorage(size_t slot, std::function<std::optional<latest::ToEnvoy>()> task) {
  storage_pending_[slot].fetch_add(1, std::memory_order_relaxed);
  storage_executors_[slot]->Post([self = shared_from_this(), slot, task = std::move(task)] {
    std::optional<latest::ToEnvoy> answer = task();
    // Release: an inline commit that then sees 0 also sees everything the task stored.
    self->storage_pending_[slot].fetch_sub(1, std::memory_order_release);
    if (answer.has_value()) self->Send(std::move(*answer));
  });
}

EnvoySession::~EnvoySession() = default;

void EnvoySession::EnableHeldOutputs() {
  release_executor_ = engine_.MakeWorkerStrand();
  // `this` outlives the hold (a member); callers hold a reference to the session.
  hold_ = std::make_unique<OutputHold>(
      [this](latest::ToRivetTunnelMessage&& msg) {
        engine_.gateway().OnTunnelMessage(*this, std::move(msg));
      },
      [this](const EngineId& actor, bool write_failed) {
        if (write_failed) {
          engine_.metrics_held_output_write_failed();
          KEEL_LOG(kWarn, kLog, "an actor lost a write: its generation's answers are withheld",
                   {{"actor", actor.ToString()}, {"envoy_key", params_.envoy_key}});
        }
        engine_.gateway().FailActorOn(
            *this, actor,
            Error{"actor", "storage_failed",
                  "the actor's writes could not be made durable; its answer was withheld"});
      });
}

void EnvoySession::Start(std::shared_ptr<net::WsConnection> conn) {
  {
    std::lock_guard lock(mu_);
    conn_ = std::move(conn);
  }
  last_pong_ms_.store(MonoMs(engine_.clock()), std::memory_order_relaxed);
  engine_.orchestrator().RegisterLive(shared_from_this());
  const EngineOptions& o = engine_.options();
  latest::ToEnvoyInit init;
  init.metadata.envoy_lost_threshold = o.envoy_lost_threshold_ms;
  init.metadata.actor_stop_threshold = o.actor_stop_threshold_ms;
  init.metadata.max_response_payload_size = o.max_response_payload;
  Send(latest::ToEnvoy{std::move(init)});
  engine_.metrics_envoy_connected(+1);
  KEEL_LOG(kInfo, kLog, "envoy connected",
           {{"namespace", params_.namespace_name},
            {"envoy_key", params_.envoy_key},
            {"pool", params_.pool_name},
            {"protocol_version", std::to_string(params_.protocol_version)},
            {"session", std::to_string(id_)}});
  engine_.orchestrator().OnEnvoyConnected(shared_from_this());
  SchedulePing();
}

void EnvoySession::OnMessage(std::string data, bool binary) {
  if (!binary || closed()) return;  // only binary frames carry protocol messages (§3.1)
  ByteView bytes(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  auto msg = protocol::envoy::DecodeToRivet(bytes, params_.protocol_version);
  if (!msg.has_value()) {
    engine_.metrics_malformed_frame();
    KEEL_LOG(kDebug, kLog, "ignoring a frame that does not decode",
             {{"envoy_key", params_.envoy_key}, {"error", msg.error().ToString()}});
    return;
  }
  if (dispatch_ == nullptr) {
    Dispatch(std::move(*msg));
    return;
  }
  {
    std::unique_lock lock(backlog_mu_);
    // Bounded: while the engine stops, its workers may drop what was posted.
    while (backlog_ >= kMaxDispatchBacklog && !engine_.shutting_down()) {
      backlog_cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    ++backlog_;
  }
  dispatch_->Post([self = shared_from_this(), msg = std::move(*msg)]() mutable {
    self->Dispatch(std::move(msg));
    std::lock_guard lock(self->backlog_mu_);
    --self->backlog_;
    self->backlog_cv_.notify_one();
  });
}

void EnvoySession::Dispatch(latest::ToRivet&& msg) {
  auto self = shared_from_this();
  std::visit(
      [&](auto&& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, latest::ToRivetMetadata>) {
          engine_.orchestrator().OnMetadata(self, std::move(m));
        } else if constexpr (std::is_same_v<T, latest::ToRivetEvents>) {
          remote_sql_->OnEvents(self, std::move(m.value));
        } else if constexpr (std::is_same_v<T, latest::ToRivetAckCommands>) {
          engine_.orchestrator().OnAckCommands(self, std::move(m.last_command_checkpoints));
        } else if constexpr (std::is_same_v<T, latest::ToRivetStopping>) {
          engine_.orchestrator().OnEnvoyStopping(self);
        } else if constexpr (std::is_same_v<T, latest::ToRivetPong>) {
          const int64_t now = engine_.clock().SystemNowMs();
          const int64_t rtt = now - m.ts;
          last_rtt_ms_.store(rtt < 0 || rtt > std::numeric_limits<uint32_t>::max()
                                 ? std::numeric_limits<uint32_t>::max()
                                 : static_cast<uint32_t>(rtt),
                             std::memory_order_relaxed);
          last_pong_ms_.store(MonoMs(engine_.clock()), std::memory_order_relaxed);
        } else if constexpr (std::is_same_v<T, latest::ToRivetKvRequest>) {
          HandleKv(std::move(m));
        } else if constexpr (std::is_same_v<T, latest::ToRivetTunnelMessage>) {
          HandleTunnel(std::move(m));
        } else if constexpr (std::is_same_v<T, latest::ToRivetSqliteGetPagesRequest>) {
          // The slot is taken before the lambda moves `m` (argument evaluation order is
          // unspecified): a get_pages must run on its actor's strand, behind its commits.
          const size_t slot = StorageSlotFor(m.data.actor_id);
          PostStorage(slot, [self, req = std::move(m)]() mutable {
            return self->HandleGetPages(std::move(req));
          });
        } else if constexpr (std::is_same_v<T, latest::ToRivetSqliteCommitRequest>) {
          const size_t slot = StorageSlotFor(m.data.actor_id);
          std::optional<WriteTicket> ticket;
          auto owner = CheckOwner(m.data.actor_id, "sqlite ");
          if (owner.has_value() && hold_ != nullptr) {
            // Held outputs: the actor's tunnel messages read after this commit wait for it,
            // as for a KV write (a runtime may send its answers without waiting for the
            // commit's; runtime/sql.h, HeldCommits).
            ticket.emplace(owner->first, hold_->BeginWrite(owner->first, owner->second));
          }
          if (owner.has_value() && InlineCommit(m, slot, *owner)) {
            if (auto answer = HandleCommit(std::move(m), ticket, std::move(*owner))) {
              Send(std::move(*answer));
            }
          } else {
            PostStorage(slot, [self, req = std::move(m), ticket]() mutable {
              return self->HandleCommit(std::move(req), ticket, std::nullopt);
            });
          }
        } else if constexpr (std::is_same_v<T, latest::ToRivetSqliteExecRequest> ||
                             std::is_same_v<T, latest::ToRivetSqliteExecuteRequest> ||
                             std::is_same_v<T, latest::ToRivetSqliteExecuteWriteRequest>) {
          remote_sql_->Submit(RemoteSqlRequest::From(std::move(m)));
        }
      },
      std::move(msg.value));
}

Result<std::pair<EngineId, uint32_t>> EnvoySession::CheckOwner(const std::string& actor_id,
                                                               std::string_view what) const {
  auto id = EngineId::Parse(actor_id);
  if (!id.has_value()) {
    return Unexpected{Error{"actor", "invalid_id",
                            "invalid " + std::string(what) + "actor id: " + id.error().message()}};
  }
  std::optional<uint32_t> generation = engine_.orchestrator().HostedGeneration(*this, *id);
  if (!generation.has_value()) {
    return Unexpected{Error{"actor", "not_owned",
                            "actor does not exist or is not hosted by this envoy connection"}};
  }
  return std::make_pair(*id, *generation);
}

Status EnvoySession::RecordGeneration(const EngineId& actor, uint32_t generation) {
  {
    std::lock_guard lock(recorded_mu_);
    auto it = recorded_.find(actor);
    if (it != recorded_.end() && it->second == generation) return OkStatus();
  }
  KEEL_RETURN_IF_ERROR(engine_.page_store().SetGeneration(actor.bytes(), generation));
  std::lock_guard lock(recorded_mu_);
  uint32_t& recorded = recorded_[actor];
  recorded = std::max(recorded, generation);
  return OkStatus();
}

void EnvoySession::PruneRecordedGenerations() {
  std::vector<std::pair<EngineId, uint32_t>> entries;
  {
    std::lock_guard lock(recorded_mu_);
    entries.assign(recorded_.begin(), recorded_.end());
  }
  for (const auto& [actor, generation] : entries) {
    if (engine_.orchestrator().HostedGeneration(*this, actor) == generation) continue;
    std::lock_guard lock(recorded_mu_);
    auto it = recorded_.find(actor);
    if (it != recorded_.end() && it->second == generation) recorded_.erase(it);
  }
}

// Runs on the connection's read path: the transaction commits without waiting for the disk
// (a memtable insert and a buffered WAL append), so the I/O thread never blocks on a disk's
// fsync (only on a sync faster than a thread wake-up: inline_sync_us) and the request costs
// no hand-off to a worker. The answer goes out once the write is
// durable — kv_sync() makes one WAL sync cover every write committed meanwhile, from every
// connection (group commit). A read's answer waits for the writes pending when it ran, so it
// never shows data a crash could take back. Requests of one connection run in arrival order.
void EnvoySession::HandleKv(latest::ToRivetKvRequest&& req) {
  latest::ToEnvoyKvResponse resp;
  resp.request_id = req.request_id;
  auto owner = CheckOwner(req.actor_id, "");
  if (!owner.has_value()) {
    resp.data = latest::KvErrorResponse{owner.error().ToString()};
    Send(latest::ToEnvoy{std::move(resp)});
    return;
  }
  const bool is_write = storage::ActorKv::IsWrite(req.data);
  // Held outputs: the actor's later tunnel messages wait for this write (taken before the
  // commit, so a message read after this request always finds it).
  const std::optional<uint64_t> ticket =
      hold_ != nullptr && is_write ? std::optional(hold_->BeginWrite(owner->first, owner->second))
                                   : std::nullopt;
  resp.data = engine_.actor_kv().Handle(owner->first.bytes(), req.data,
                                        engine_.clock().SystemNowMs());
  const bool wrote = is_write && !resp.data.is<latest::KvErrorResponse>();
  if (ticket.has_value() && !wrote) hold_->EndWrite(owner->first, *ticket, /*ok=*/false);
  std::optional<WriteTicket> held;
  if (ticket.has_value() && wrote) held.emplace(owner->first, *ticket);
  AnswerWhenDurable<latest::KvErrorResponse>(std::move(resp), wrote, std::move(held));
}

template <typename F>
void EnvoySession::ReleaseAfterSync(F&& release) {
  if (engine_.kv_sync().writes_waiting()) {
    QueueRelease(std::function<void()>(std::forward<F>(release)));
  } else {
    release();
  }
}

template <typename ErrorData, typename Response>
void EnvoySession::AnswerWhenDurable(Response resp, bool wrote, std::optional<WriteTicket> ticket,
                                     std::function<void()> then) {
  // A write's answer comes from the thread that syncs it, and the client's next request
  // soon after: the I/O thread keeps polling until then (net::IoRuntime::Expect).
  net::IoRuntime::Expectation expected;
  if (wrote) expected = engine_.io().Expect();
  auto send = [self = shared_from_this(), resp = std::move(resp), wrote, ticket = std::move(ticket),
               expected = std::move(expected)](Status synced) mutable {
    if (!synced.has_value()) {
      // The write (or one the read may show) is not known to be durable.
      resp.data = ErrorData{synced.error().ToString()};
    } else if (wrote && std::is_same_v<ErrorData, latest::KvErrorResponse>) {
      self->engine_.metrics_kv_write_synced();
    }
    if (!ticket.has_value()) {
      self->Send(latest::ToEnvoy{std::move(resp)});
      return;
    }
    // Held answers leave before the write's own answer: the runtime's reaction to it (a
    // stop, say) can then never overtake them. Forwarding them is gateway work: when other
    // writes already wait for the next sync, it runs on the connection's release executor
    // instead of delaying that sync (this runs on the syncing thread).
    auto release = [self, resp = std::move(resp), ticket = std::move(*ticket),
                    ok = synced.has_value()]() mutable {
      self->hold_->EndWrite(ticket.first, ticket.second, ok);
      self->Send(latest::ToEnvoy{std::move(resp)});
    };
    self->ReleaseAfterSync(std::move(release));
  };
  storage::GroupSync::Continuation answer;
  if (then) {
    answer = [send = std::move(send), then = std::move(then)](Status synced) mutable {
      send(std::move(synced));
      then();
    };
  } else {
    answer = std::move(send);
  }
  if (wrote) {
    engine_.kv_sync().AfterWrite(std::move(answer));
  } else {
    engine_.kv_sync().AfterRead(std::move(answer));
  }
}

void EnvoySession::HoldUntilDurable(const EngineId& actor, uint32_t generation,
                                    std::function<void(const Status&)> synced) {
  const uint64_t ticket = hold_->BeginWrite(actor, generation);
  engine_.kv_sync().AfterWrite(
      [self = shared_from_this(), actor, ticket, synced = std::move(synced),
       expected = engine_.io().Expect()](Status status) {
        auto release = [self, actor, ticket, ok = status.has_value()] {
          self->hold_->EndWrite(actor, ticket, ok);
        };
        self->ReleaseAfterSync(std::move(release));
        if (synced) synced(status);
      });
}

void EnvoySession::QueueRelease(std::function<void()> release) {
  {
    std::lock_guard lock(release_mu_);
    releases_.push_back(std::move(release));
    if (release_posted_) return;
    release_posted_ = true;
  }
  release_executor_->Post([self = shared_from_this()] { self->RunReleases(); });
}

void EnvoySession::RunReleases() {
  std::vector<std::function<void()>> batch;
  for (;;) {
    {
      std::lock_guard lock(release_mu_);
      batch.swap(releases_);
      if (batch.empty()) {
        release_posted_ = false;
        return;
      }
    }
    {
      OutputBatch writes;  // the runtime's KV answers of the batch leave in one write
      for (auto& release : batch) release();
    }
    batch.clear();
  }
}

namespace {

// A stale generation: the fencing for page requests (§7.3 is stateless; Keel checks
// expectedGeneration when the envoy sends it).
std::optional<Error> FenceError(std::optional<uint64_t> expected, uint32_t current) {
  if (!expected.has_value() || *expected == current) return std::nullopt;
  return Error{"sqlite", "remote_fence_mismatch",
               "generation " + std::to_string(*expected) + " is stale, the actor runs generation " +
                   std::to_string(current)};
}

}  // namespace

std::optional<latest::ToEnvoy> EnvoySession::HandleGetPages(
    latest::ToRivetSqliteGetPagesRequest&& req) {
  latest::ToEnvoySqliteGetPagesResponse resp;
  resp.request_id = req.request_id;
  auto owner = CheckOwner(req.data.actor_id, "sqlite ");
  if (!owner.has_value()) {
    resp.data = latest::SqliteErrorResponse{owner.error().ToString()};
  } else if (auto fence = FenceError(req.data.expected_generation, owner->second)) {
    resp.data = latest::SqliteErrorResponse{fence->ToString()};
  } else if (Status recorded = RecordGeneration(owner->first, owner->second);
             !recorded.has_value()) {
    resp.data = latest::SqliteErrorResponse{recorded.error().ToString()};
  } else {
    auto pages = engine_.page_store().GetPages(owner->first.bytes(), req.data.pgnos, owner->second);
    if (!pages.has_value()) {
      resp.data = latest::SqliteErrorResponse{pages.error().ToString()};
    } else {
      latest::SqliteGetPagesOk ok;
      ok.pages.reserve(pages->size());
      for (auto& page : *pages) {
        ok.pages.push_back(latest::SqliteFetchedPage{page.pgno, std::move(page.bytes)});
      }
      resp.data = std::move(ok);
    }
  }
  // The pages may include a commit made inline and not yet synced: they then leave once it
  // is durable. (The count is read after the pages: an inline commit counts itself before
  // it commits, so a read that saw its pages sees its count.)
  if (unsynced_inline_commits_.load(std::memory_order_acquire) == 0) {
    return latest::ToEnvoy{std::move(resp)};
  }
  AnswerWhenDurable<latest::SqliteErrorResponse>(std::move(resp), /*wrote=*/false, std::nullopt);
  return std::nullopt;
}

bool EnvoySession::InlineCommit(const latest::ToRivetSqliteCommitRequest& req, size_t slot,
                                const std::pair<EngineId, uint32_t>& owner) {
  const size_t limit = engine_.options().inline_page_commit_bytes;
  if (limit == 0) return false;
  size_t bytes = 0;
  for (const auto& page : req.data.dirty_pages) bytes += page.bytes.size();
  if (bytes > limit) return false;
  if (storage_pending_[slot].load(std::memory_order_acquire) != 0) return false;
  std::lock_guard lock(recorded_mu_);
  auto it = recorded_.find(owner.first);
  return it != recorded_.end() && it->second == owner.second;
}

std::optional<latest::ToEnvoy> EnvoySession::HandleCommit(
    latest::ToRivetSqliteCommitRequest&& req, std::optional<WriteTicket> ticket,
    std::optional<std::pair<EngineId, uint32_t>> inline_owner) {
  latest::ToEnvoySqliteCommitResponse resp;
  resp.request_id = req.request_id;
  const bool inline_path = inline_owner.has_value();
  Result<std::pair<EngineId, uint32_t>> owner =
      inline_path ? Result<std::pair<EngineId, uint32_t>>(std::move(*inline_owner))
                  : CheckOwner(req.data.actor_id, "sqlite ");
  if (!owner.has_value()) {
    resp.data = latest::SqliteErrorResponse{owner.error().ToString()};
  } else if (ticket.has_value() && hold_->poisoned(owner->first)) {
    // An earlier write of this generation failed after the runtime may have built on it:
    // this commit may have been computed from a database state that was never stored, so
    // applying it could leave the stored database inconsistent. The runtime ends the
    // generation when it sees that first failure.
    resp.data = latest::SqliteErrorResponse{
        Error{"actor", "storage_failed",
              "an earlier write of this actor generation failed; commit refused"}
            .ToString()};
  } else if (auto fence = FenceError(req.data.expected_generation, owner->second)) {
    resp.data = latest::SqliteErrorResponse{fence->ToString()};
  } else if (Status recorded =
                 inline_path ? OkStatus() : RecordGeneration(owner->first, owner->second);
             !recorded.has_value()) {
    resp.data = latest::SqliteErrorResponse{recorded.error().ToString()};
  } else {
    storage::CommitRequest commit;
    commit.dirty_pages.reserve(req.data.dirty_pages.size());
    for (auto& page : req.data.dirty_pages) {
      commit.dirty_pages.push_back(storage::DirtyPage{page.pgno, std::move(page.bytes)});
    }
    commit.db_size_pages = req.data.db_size_pages;
    commit.now_ms = req.data.now_ms;
    // The storage fence: a commit of this generation never lands after a newer one started.
    commit.expected_generation = owner->second;
    // Inline: a memtable insert and a buffered WAL append; AnswerWhenDurable below waits
    // for the group commit's sync (the I/O thread does not wait for a disk's sync).
    if (inline_path) {
      commit.sync = false;
      unsynced_inline_commits_.fetch_add(1, std::memory_order_acq_rel);
    }
    auto done = engine_.page_store().Commit(owner->first.bytes(), commit);
    if (!done.has_value()) {
      if (inline_path) unsynced_inline_commits_.fetch_sub(1, std::memory_order_acq_rel);
      resp.data = latest::SqliteErrorResponse{done.error().ToString()};
    } else {
      resp.data = latest::SqliteCommitOk{};
      engine_.metrics_page_commit(inline_path);
      if (inline_path) {
        // The commit counts as unsynced until its sync has run (then its answer leaves).
        AnswerWhenDurable<latest::SqliteErrorResponse>(
            std::move(resp), /*wrote=*/true, std::move(ticket), [self = shared_from_this()] {
              self->unsynced_inline_commits_.fetch_sub(1, std::memory_order_acq_rel);
            });
        return std::nullopt;
      }
    }
  }
  if (ticket.has_value()) {
    // Held answers leave before the commit's own answer (as in HandleKv).
    hold_->EndWrite(ticket->first, ticket->second, resp.data.is<latest::SqliteCommitOk>());
  }
  return latest::ToEnvoy{std::move(resp)};
}

void EnvoySession::HandleTunnel(latest::ToRivetTunnelMessage&& msg) {
  if (protocol::envoy::TunnelPayloadSize(msg) > engine_.options().max_response_payload) {
    CloseWith(Error{"ws", "invalid_packet", "payload too large"});
    return;
  }
  if (hold_ != nullptr && !hold_->Idle()) {
    if (std::optional<EngineId> actor = engine_.gateway().ActorOf(msg.message_id)) {
      hold_->OnMessage(*actor, std::move(msg), [this, &actor] {
        return engine_.orchestrator().HostedGeneration(*this, *actor);
      });
      return;
    }
  }
  engine_.gateway().OnTunnelMessage(*this, std::move(msg));
}

void EnvoySession::Send(const latest::ToEnvoy& msg) {
  Result<void, protocol::ConversionError> encoded;
  Bytes out = BuildExact([&](Bytes& buffer) {
    encoded = protocol::envoy::EncodeToEnvoy(msg, params_.protocol_version, buffer);
  });
  if (!encoded.has_value()) {
    KEEL_LOG(kWarn, kLog, "dropping a message the connection's version cannot carry",
             {{"envoy_key", params_.envoy_key}, {"error", protocol::ToString(encoded.error())}});
    return;
  }
  SendEncoded(std::move(out));
}

void EnvoySession::SendEncoded(Bytes out) {
  std::shared_ptr<net::WsConnection> conn;
  {
    std::lock_guard lock(mu_);
    conn = conn_;
  }
  if (conn == nullptr || closed()) return;
  conn->Send(std::string(out.begin(), out.end()), /*binary=*/true);
}

void EnvoySession::CloseWith(const Error& error) {
  std::shared_ptr<net::WsConnection> conn;
  {
    std::lock_guard lock(mu_);
    conn = conn_;
  }
  KEEL_LOG(kInfo, kLog, "closing envoy connection",
           {{"envoy_key", params_.envoy_key}, {"reason", error.ToString()}});
  if (conn != nullptr) {
    conn->Close(gateway::CloseCode(error), gateway::CloseReason(error, engine_.NewRayId()));
  }
}

void EnvoySession::OnClose(uint16_t code, std::string reason) {
  if (dispatch_ == nullptr) {
    Closed(code, std::move(reason));
    return;
  }
  // After the messages still waiting: the orchestrator must hear them before the close.
  dispatch_->Post([self = shared_from_this(), code, reason = std::move(reason)]() mutable {
    self->Closed(code, std::move(reason));
  });
}

void EnvoySession::Closed(uint16_t code, std::string reason) {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock(mu_);
    if (ping_timer_ != TimerId{}) engine_.clock().Cancel(ping_timer_);
    ping_timer_ = TimerId{};
  }
  engine_.metrics_envoy_connected(-1);
  KEEL_LOG(kInfo, kLog, "envoy disconnected",
           {{"envoy_key", params_.envoy_key},
            {"code", std::to_string(code)},
            {"reason", reason},
            {"session", std::to_string(id_)}});
  auto self = shared_from_this();
  engine_.gateway().OnEnvoyClosed(*this);
  // Held events (stops waiting for SQL) reach the orchestrator before the close does.
  remote_sql_->OnConnectionClosed(self);
  engine_.orchestrator().OnEnvoyClosed(self);
}

void EnvoySession::SchedulePing() {
  const EngineOptions& o = engine_.options();
  std::weak_ptr<EnvoySession> weak = weak_from_this();
  std::lock_guard lock(mu_);
  if (closed()) return;
  // Jitter in [0, 128) ms, different for every ping (§3.5), without a shared generator.
  const uint64_t n = ++pings_scheduled_;
  const int64_t jitter =
      static_cast<int64_t>(((id_ * 0x9e3779b97f4a7c15ull) ^ (n * 0xbf58476d1ce4e5b9ull)) >> 57);
  ping_timer_ = engine_.clock().ScheduleAfter(
      std::chrono::milliseconds(o.ping_interval_ms + jitter), [weak] {
        if (auto self = weak.lock()) self->PingTick();
      });
}

void EnvoySession::PingTick() {
  if (closed()) return;
  const int64_t now = MonoMs(engine_.clock());
  if (now - last_pong_ms() > engine_.options().ping_timeout_ms) {
    CloseWith(Error{"ws", "timed_out", "Ping timed out."});
    return;
  }
  engine_.orchestrator().OnEnvoyPing(shared_from_this());
  remote_sql_->Sweep();
  PruneRecordedGenerations();
  if (hold_ != nullptr) {
    hold_->Prune([this](const EngineId& actor) {
      return engine_.orchestrator().HostedGeneration(*this, actor);
    });
  }
  Send(latest::ToEnvoy{latest::ToEnvoyPing{engine_.clock().SystemNowMs()}});
  SchedulePing();
}

}  // namespace keel::engine
