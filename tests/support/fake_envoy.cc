#include "support/fake_envoy.h"

#include <sstream>

namespace keel::testing {
namespace {

namespace pe = ::keel::protocol::envoy;
using Ms = std::chrono::milliseconds;

std::string PercentEncodeValue(std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : v) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

Ms Left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? Ms(0) : left;
}

std::string StopReasonName(envoy_proto::StopActorReason r) {
  switch (r) {
    case envoy_proto::StopActorReason::kSleepIntent: return "SLEEP_INTENT";
    case envoy_proto::StopActorReason::kStopIntent: return "STOP_INTENT";
    case envoy_proto::StopActorReason::kDestroy: return "DESTROY";
    case envoy_proto::StopActorReason::kGoingAway: return "GOING_AWAY";
    case envoy_proto::StopActorReason::kLost: return "LOST";
  }
  return "?";
}

}  // namespace

Bytes ToBytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

std::string ToString(ByteView b) { return std::string(b.begin(), b.end()); }

std::string FakeEnvoy::BuildQuery(const FakeEnvoyOptions& o) {
  if (o.raw_query.has_value()) return *o.raw_query;
  return "protocol_version=" + std::to_string(o.protocol_version) +
         "&namespace=" + PercentEncodeValue(o.namespace_name) +
         "&envoy_key=" + PercentEncodeValue(o.envoy_key) + "&version=" + std::to_string(o.version) +
         "&pool_name=" + PercentEncodeValue(o.pool_name);
}

std::string FakeEnvoy::ConnectUrl(const FakeEnvoyOptions& o) {
  std::string base = o.ws_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/envoys/connect?" + BuildQuery(o);
}

Result<std::unique_ptr<FakeEnvoy>> FakeEnvoy::Connect(FakeEnvoyOptions options,
                                                      net::HttpResponse* failed_handshake) {
  std::unique_ptr<FakeEnvoy> fe(new FakeEnvoy(std::move(options)));
  net::WsConnectOptions ws;
  ws.url = ConnectUrl(fe->options_);
  ws.subprotocols.push_back("rivet");
  if (fe->options_.token.has_value()) ws.subprotocols.push_back("rivet_token." + *fe->options_.token);
  for (const auto& p : fe->options_.extra_subprotocols) ws.subprotocols.push_back(p);
  ws.headers = fe->options_.extra_headers;
  ws.max_message = fe->options_.max_message;
  ws.handshake_timeout = fe->options_.connect_timeout;
  auto client = net::BlockingWsClient::Connect(std::move(ws), fe->options_.connect_timeout,
                                               failed_handshake, &fe->handshake_);
  if (!client.has_value()) return Unexpected{client.error()};
  fe->client_ = std::move(*client);
  fe->pump_ = std::thread([raw = fe.get()] { raw->Pump(); });
  return fe;
}

Result<std::unique_ptr<FakeEnvoy>> FakeEnvoy::ConnectAndInit(FakeEnvoyOptions options,
                                                             std::chrono::milliseconds timeout) {
  auto fe = Connect(std::move(options));
  if (!fe.has_value()) return Unexpected{fe.error()};
  auto init = (*fe)->ExpectInit(timeout);
  if (!init.has_value()) return Unexpected{init.error()};
  return fe;
}

FakeEnvoy::~FakeEnvoy() {
  stopping_.store(true);
  if (client_ != nullptr) client_->Close();
  if (pump_.joinable()) pump_.join();
}

void FakeEnvoy::Pump() {
  auto push = [this](Inbound in) {
    {
      std::lock_guard lock(inbox_mu_);
      inbox_.push_back(std::move(in));
    }
    inbox_cv_.notify_all();
  };
  for (;;) {
    auto event = client_->Receive(Ms(50));
    if (!event.has_value()) {
      if (event.error().Is("net", "timeout") && !stopping_.load()) continue;
      if (!event.error().Is("net", "timeout")) push(event.error());
      return;
    }
    if (auto* c = std::get_if<net::BlockingWsClient::Closed>(&*event)) {
      push(Closed{c->code, c->reason});
      return;
    }
    auto& m = std::get<net::BlockingWsClient::Message>(*event);
    if (!m.binary) continue;  // the engine never sends text; ignore like the real envoy
    ByteView bytes(reinterpret_cast<const uint8_t*>(m.data.data()), m.data.size());
    auto decoded = pe::DecodeToEnvoy(bytes, options_.protocol_version);
    if (!decoded.has_value()) {
      push(Error{"fake_envoy", "decode", decoded.error().ToString()});
      continue;
    }
    if (const auto* ping = decoded->get_if<envoy_proto::ToEnvoyPing>()) {
      pings_seen_.fetch_add(1);
      if (auto_pong_.load()) (void)Send(envoy_proto::ToRivet{envoy_proto::ToRivetPong{ping->ts}});
    }
    push(Frame{std::move(m.data), std::move(*decoded)});
  }
}

Status FakeEnvoy::Send(const envoy_proto::ToRivet& msg) {
  Bytes out;
  auto encoded = pe::EncodeToRivet(msg, options_.protocol_version, out);
  if (!encoded.has_value()) {
    return Unexpected{Error{"fake_envoy", "encode", protocol::ToString(encoded.error())}};
  }
  return client_->Send(std::string(out.begin(), out.end()), /*binary=*/true);
}

Status FakeEnvoy::SendRaw(std::string bytes, bool binary) {
  return client_->Send(std::move(bytes), binary);
}

Result<FakeEnvoy::Frame> FakeEnvoy::ReadSocket(std::chrono::milliseconds timeout) {
  if (closed_.has_value()) {
    return Unexpected{Error{"net", "closed",
                            "connection closed: " + std::to_string(closed_->code) + " " +
                                closed_->reason}};
  }
  std::unique_lock lock(inbox_mu_);
  if (!inbox_cv_.wait_for(lock, timeout, [this] { return !inbox_.empty(); })) {
    return Unexpected{Error{"net", "timeout", "no message from the engine within the wait"}};
  }
  Inbound in = std::move(inbox_.front());
  inbox_.pop_front();
  lock.unlock();
  if (auto* c = std::get_if<Closed>(&in)) {
    closed_ = std::move(*c);
    return Unexpected{Error{"net", "closed",
                            "connection closed: " + std::to_string(closed_->code) + " " +
                                closed_->reason}};
  }
  if (auto* e = std::get_if<Error>(&in)) return Unexpected{std::move(*e)};
  return std::move(std::get<Frame>(in));
}

Result<FakeEnvoy::Frame> FakeEnvoy::ReceiveFrame(std::chrono::milliseconds timeout) {
  if (!backlog_.empty()) {
    Frame f = std::move(backlog_.front());
    backlog_.pop_front();
    return f;
  }
  return ReadSocket(timeout);
}

Result<envoy_proto::ToEnvoy> FakeEnvoy::Receive(std::chrono::milliseconds timeout) {
  auto f = ReceiveFrame(timeout);
  if (!f.has_value()) return Unexpected{f.error()};
  return std::move(f->msg);
}

Result<envoy_proto::ProtocolMetadata> FakeEnvoy::ExpectInit(std::chrono::milliseconds timeout) {
  auto msg = Receive(timeout);
  if (!msg.has_value()) return Unexpected{msg.error()};
  const auto* init = msg->get_if<envoy_proto::ToEnvoyInit>();
  if (init == nullptr) {
    return Unexpected{Error{"fake_envoy", "unexpected",
                            "expected ToEnvoyInit first, got " + Describe(*msg)}};
  }
  metadata_ = init->metadata;
  return init->metadata;
}

Result<FakeEnvoy::Closed> FakeEnvoy::WaitClosed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_.has_value()) {
    auto f = ReadSocket(Left(deadline));
    if (!f.has_value()) {
      if (closed_.has_value()) break;
      return Unexpected{f.error()};
    }
    if (!f->msg.is<envoy_proto::ToEnvoyPing>()) backlog_.push_back(std::move(*f));
  }
  return *closed_;
}

Status FakeEnvoy::Sync(std::chrono::milliseconds timeout) {
  // A well-formed id of nothing: the engine answers actor.invalid_id / not_owned.
  auto r = Kv("fake-envoy-sync", KvGet({"sync"}), timeout);
  if (!r.has_value()) return Unexpected{r.error()};
  return {};
}

Status FakeEnvoy::SendEvents(std::vector<envoy_proto::EventWrapper> events) {
  return Send(envoy_proto::ToRivet{envoy_proto::ToRivetEvents{std::move(events)}});
}

int64_t FakeEnvoy::NextEventIndex(const std::string& actor_id, uint32_t generation) const {
  auto it = next_event_index_.find({actor_id, generation});
  return it == next_event_index_.end() ? 0 : it->second;
}

Status FakeEnvoy::SendEvent(const std::string& actor_id, uint32_t generation,
                            envoy_proto::Event event) {
  int64_t& next = next_event_index_[{actor_id, generation}];
  envoy_proto::EventWrapper w;
  w.checkpoint = envoy_proto::ActorCheckpoint{actor_id, generation, next++};
  w.inner = std::move(event);
  return SendEvents({std::move(w)});
}

Status FakeEnvoy::SendRunning(const std::string& actor_id, uint32_t generation) {
  return SendEvent(actor_id, generation,
                   envoy_proto::EventActorStateUpdate{envoy_proto::ActorStateRunning{}});
}

Status FakeEnvoy::SendStopped(const std::string& actor_id, uint32_t generation,
                              envoy_proto::StopCode code, std::optional<std::string> message) {
  return SendEvent(actor_id, generation,
                   envoy_proto::EventActorStateUpdate{
                       envoy_proto::ActorStateStopped{code, std::move(message)}});
}

Status FakeEnvoy::SendIntentSleep(const std::string& actor_id, uint32_t generation) {
  return SendEvent(actor_id, generation,
                   envoy_proto::EventActorIntent{envoy_proto::ActorIntentSleep{}});
}

Status FakeEnvoy::SendIntentStop(const std::string& actor_id, uint32_t generation) {
  return SendEvent(actor_id, generation,
                   envoy_proto::EventActorIntent{envoy_proto::ActorIntentStop{}});
}

Status FakeEnvoy::SendSetAlarm(const std::string& actor_id, uint32_t generation,
                               std::optional<int64_t> alarm_ts) {
  return SendEvent(actor_id, generation, envoy_proto::EventActorSetAlarm{alarm_ts});
}

Status FakeEnvoy::AckCommands(std::vector<envoy_proto::ActorCheckpoint> checkpoints) {
  return Send(envoy_proto::ToRivet{envoy_proto::ToRivetAckCommands{std::move(checkpoints)}});
}

Result<envoy_proto::CommandWrapper> FakeEnvoy::WaitCommand(const std::string& actor_id,
                                                           std::chrono::milliseconds timeout) {
  auto has = [&](const envoy_proto::ToEnvoy& m) {
    const auto* cmds = m.get_if<envoy_proto::ToEnvoyCommands>();
    if (cmds == nullptr) return false;
    for (const auto& c : cmds->value) {
      if (actor_id.empty() || c.checkpoint.actor_id == actor_id) return true;
    }
    return false;
  };
  auto frame = WaitForFrame(has, timeout);
  if (!frame.has_value()) return Unexpected{frame.error()};
  for (auto& c : frame->msg.get_if<envoy_proto::ToEnvoyCommands>()->value) {
    if (actor_id.empty() || c.checkpoint.actor_id == actor_id) return std::move(c);
  }
  return Unexpected{Error{"fake_envoy", "unexpected", "unreachable"}};
}

Result<envoy_proto::KvResponseData> FakeEnvoy::Kv(const std::string& actor_id,
                                                  envoy_proto::KvRequestData request,
                                                  std::chrono::milliseconds timeout) {
  auto id = SendKv(actor_id, std::move(request));
  if (!id.has_value()) return Unexpected{id.error()};
  return KvAnswer(*id, timeout);
}

Result<uint32_t> FakeEnvoy::SendKv(const std::string& actor_id,
                                   envoy_proto::KvRequestData request) {
  const uint32_t id = next_kv_request_++;
  envoy_proto::ToRivetKvRequest req;
  req.actor_id = actor_id;
  req.request_id = id;
  req.data = std::move(request);
  KEEL_RETURN_IF_ERROR(Send(envoy_proto::ToRivet{std::move(req)}));
  return id;
}

Result<envoy_proto::KvResponseData> FakeEnvoy::KvAnswer(uint32_t request_id,
                                                        std::chrono::milliseconds timeout) {
  auto frame = WaitForFrame(
      [request_id](const envoy_proto::ToEnvoy& m) {
        const auto* r = m.get_if<envoy_proto::ToEnvoyKvResponse>();
        return r != nullptr && r->request_id == request_id;
      },
      timeout);
  if (!frame.has_value()) return Unexpected{frame.error()};
  return std::move(frame->msg.get_if<envoy_proto::ToEnvoyKvResponse>()->data);
}

Result<envoy_proto::SqliteGetPagesResponse> FakeEnvoy::GetPages(
    envoy_proto::SqliteGetPagesRequest request, std::chrono::milliseconds timeout) {
  auto id = SendGetPages(std::move(request));
  if (!id.has_value()) return Unexpected{id.error()};
  return PagesAnswer(*id, timeout);
}

Result<uint32_t> FakeEnvoy::SendGetPages(envoy_proto::SqliteGetPagesRequest request) {
  const uint32_t id = next_sqlite_request_++;
  KEEL_RETURN_IF_ERROR(Send(envoy_proto::ToRivet{
      envoy_proto::ToRivetSqliteGetPagesRequest{id, std::move(request)}}));
  return id;
}

Result<envoy_proto::SqliteGetPagesResponse> FakeEnvoy::PagesAnswer(
    uint32_t id, std::chrono::milliseconds timeout) {
  auto frame = WaitForFrame(
      [id](const envoy_proto::ToEnvoy& m) {
        const auto* r = m.get_if<envoy_proto::ToEnvoySqliteGetPagesResponse>();
        return r != nullptr && r->request_id == id;
      },
      timeout);
  if (!frame.has_value()) return Unexpected{frame.error()};
  return std::move(frame->msg.get_if<envoy_proto::ToEnvoySqliteGetPagesResponse>()->data);
}

Result<envoy_proto::SqliteCommitResponse> FakeEnvoy::Commit(
    envoy_proto::SqliteCommitRequest request, std::chrono::milliseconds timeout) {
  auto id = SendCommit(std::move(request));
  if (!id.has_value()) return Unexpected{id.error()};
  return CommitAnswer(*id, timeout);
}

Result<uint32_t> FakeEnvoy::SendCommit(envoy_proto::SqliteCommitRequest request) {
  const uint32_t id = next_sqlite_request_++;
  KEEL_RETURN_IF_ERROR(Send(envoy_proto::ToRivet{
      envoy_proto::ToRivetSqliteCommitRequest{id, std::move(request)}}));
  return id;
}

Result<envoy_proto::SqliteCommitResponse> FakeEnvoy::CommitAnswer(
    uint32_t id, std::chrono::milliseconds timeout) {
  auto frame = WaitForFrame(
      [id](const envoy_proto::ToEnvoy& m) {
        const auto* r = m.get_if<envoy_proto::ToEnvoySqliteCommitResponse>();
        return r != nullptr && r->request_id == id;
      },
      timeout);
  if (!frame.has_value()) return Unexpected{frame.error()};
  return std::move(frame->msg.get_if<envoy_proto::ToEnvoySqliteCommitResponse>()->data);
}

void FakeEnvoy::Close(uint16_t code, std::string reason) { client_->Close(code, std::move(reason)); }

// ---- builders ----

envoy_proto::KvRequestData KvPut(std::vector<std::pair<std::string, std::string>> entries) {
  envoy_proto::KvPutRequest put;
  for (auto& [k, v] : entries) {
    put.keys.push_back(ToBytes(k));
    put.values.push_back(ToBytes(v));
  }
  return put;
}

envoy_proto::KvRequestData KvGet(std::vector<std::string> keys) {
  envoy_proto::KvGetRequest get;
  for (auto& k : keys) get.keys.push_back(ToBytes(k));
  return get;
}

envoy_proto::KvRequestData KvDelete(std::vector<std::string> keys) {
  envoy_proto::KvDeleteRequest del;
  for (auto& k : keys) del.keys.push_back(ToBytes(k));
  return del;
}

envoy_proto::KvRequestData KvListAll() {
  envoy_proto::KvListRequest list;
  list.query = envoy_proto::KvListAllQuery{};
  return list;
}

envoy_proto::KvRequestData KvListPrefix(std::string prefix) {
  envoy_proto::KvListRequest list;
  list.query = envoy_proto::KvListPrefixQuery{ToBytes(prefix)};
  return list;
}

std::string Describe(const envoy_proto::ToEnvoy& msg) {
  std::ostringstream out;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyInit>) {
          out << "ToEnvoyInit{lost=" << m.metadata.envoy_lost_threshold
              << " stop=" << m.metadata.actor_stop_threshold
              << " max_payload=" << m.metadata.max_response_payload_size << "}";
        } else if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyCommands>) {
          out << "ToEnvoyCommands[";
          for (size_t i = 0; i < m.value.size(); ++i) {
            const auto& c = m.value[i];
            if (i > 0) out << ", ";
            if (const auto* stop = c.inner.template get_if<envoy_proto::CommandStopActor>()) {
              out << "stop(" << StopReasonName(stop->reason) << ")";
            } else {
              out << "start";
            }
            out << " " << c.checkpoint.actor_id << " g" << c.checkpoint.generation << " #"
                << c.checkpoint.index;
          }
          out << "]";
        } else if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyAckEvents>) {
          out << "ToEnvoyAckEvents[";
          for (const auto& c : m.last_event_checkpoints) {
            out << c.actor_id << " g" << c.generation << " #" << c.index << " ";
          }
          out << "]";
        } else if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyKvResponse>) {
          out << "ToEnvoyKvResponse{id=" << m.request_id << " tag=" << m.data.tag() << "}";
        } else if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyPing>) {
          out << "ToEnvoyPing{" << m.ts << "}";
        } else if constexpr (std::is_same_v<T, envoy_proto::ToEnvoyTunnelMessage>) {
          out << "ToEnvoyTunnelMessage{kind=" << m.message_kind.tag() << "}";
        } else {
          out << "ToEnvoy tag " << msg.tag();
        }
      },
      msg.value);
  return out.str();
}

std::string ErrorText(const envoy_proto::KvResponseData& r) {
  const auto* e = r.get_if<envoy_proto::KvErrorResponse>();
  return e == nullptr ? "" : e->message;
}

std::string ErrorText(const envoy_proto::SqliteGetPagesResponse& r) {
  const auto* e = r.get_if<envoy_proto::SqliteErrorResponse>();
  return e == nullptr ? "" : e->message;
}

std::string ErrorText(const envoy_proto::SqliteCommitResponse& r) {
  const auto* e = r.get_if<envoy_proto::SqliteErrorResponse>();
  return e == nullptr ? "" : e->message;
}

}  // namespace keel::testing
