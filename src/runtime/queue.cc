// The actor's durable queue (actors.md §2.7): messages persisted under KV [5,1,2]+id with
// the metadata at [5,1,1], loaded lazily on first use, handed to waiting receivers in FIFO
// order; completable receives keep the message in flight until completed (or released
// when the receiving invocation ends without completing it).
#include <algorithm>

#include "base/log.h"
#include "protocol/persist/versioned.h"
#include "runtime/core.h"

namespace keel::runtime {

namespace latest = envoy::latest;

namespace {

const Bytes kQueueMetaKey{keys::kQueuePrefix, 1, 1};
const Bytes kQueueMessagePrefix{keys::kQueuePrefix, 1, 2};

Bytes MessageKey(uint64_t id) {
  Bytes key = kQueueMessagePrefix;
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<uint8_t>(id >> (8 * i)));
  return key;
}

std::optional<uint64_t> MessageIdOf(const Bytes& key) {
  if (key.size() != kQueueMessagePrefix.size() + 8 ||
      !std::equal(kQueueMessagePrefix.begin(), kQueueMessagePrefix.end(), key.begin())) {
    return std::nullopt;
  }
  uint64_t id = 0;
  for (size_t i = kQueueMessagePrefix.size(); i < key.size(); ++i) id = (id << 8) | key[i];
  return id;
}

bool Matches(const Instance::QueueMessage& m, const std::vector<std::string>& names) {
  return !m.in_flight &&
         (names.empty() || std::find(names.begin(), names.end(), m.name) != names.end());
}

protocol::persist::latest::QueueMessage ToRecord(const Instance::QueueMessage& m) {
  protocol::persist::latest::QueueMessage r;
  r.name = m.name;
  r.body = EncodeCbor(m.body);
  r.created_at = m.created_at;
  if (m.in_flight) r.in_flight = true;
  return r;
}

}  // namespace

Task<void> Instance::EnsureQueueLoaded() {
  if (cold().queue_loaded) co_return;
  if (cold().queue_loading) {
    Completion<bool> wait = *cold().queue_loading;
    co_await wait;
    co_return;
  }
  cold().queue_loading.emplace();
  Completion<bool> loading = *cold().queue_loading;
  latest::KvListRequest list;
  list.query = latest::KvListQuery{latest::KvListPrefixQuery{Bytes{keys::kQueuePrefix, 1}}};
  std::optional<ActorError> failure;
  try {
    latest::KvResponseData r = co_await Kv(latest::KvRequestData{std::move(list)});
    if (const auto* resp = r.get_if<latest::KvListResponse>()) {
      for (size_t i = 0; i < resp->keys.size() && i < resp->values.size(); ++i) {
        const Bytes& key = resp->keys[i];
        if (key == kQueueMetaKey) {
          if (auto meta = protocol::persist::ReadQueueMetadata(resp->values[i]); meta.ok()) {
            cold().queue_next_id = std::max(cold().queue_next_id, meta->next_id);
          }
          continue;
        }
        auto id = MessageIdOf(key);
        if (!id) continue;
        auto rec = protocol::persist::ReadQueueMessage(resp->values[i]);
        if (!rec.ok()) {
          LogWarn("runtime", "unreadable queue message skipped",
                  {{"actor", actor_id_}, {"id", std::to_string(*id)}});
          continue;
        }
        Value body;
        if (auto v = DecodeCbor(rec->body); v.ok()) body = std::move(*v);
        // In flight when the previous instance ended: delivered again.
        cold().queue[*id] = QueueMessage{*id, rec->name, std::move(body), rec->created_at, false};
        cold().queue_next_id = std::max(cold().queue_next_id, *id + 1);
      }
    }
  } catch (const ActorError& e) {
    failure = e;
  }
  if (!failure) cold().queue_loaded = true;
  cold().queue_loading.reset();
  loading.Resolve(true);
  if (failure) throw *failure;
}

void Instance::StageQueueMessage(const QueueMessage& m) {
  StageWrite(MessageKey(m.id), protocol::persist::WriteQueueMessage(ToRecord(m)));
}

void Instance::StageQueueMeta() {
  protocol::persist::latest::QueueMetadata meta;
  meta.next_id = cold().queue_next_id;
  meta.size = static_cast<uint32_t>(cold().queue.size());
  StageWrite(kQueueMetaKey, protocol::persist::WriteQueueMetadata(meta));
}

Task<uint64_t> Instance::QueueSend(std::string name, Value body,
                                   std::optional<Completion<std::optional<Value>>> completion) {
  co_await EnsureQueueLoaded();
  const ActorOptions& o = type_->options;
  if (cold().queue.size() >= o.max_queue_size) {
    throw ActorError("queue", "full",
                     "Queue is full. Limit is " + std::to_string(o.max_queue_size) + " messages.");
  }
  QueueMessage m{cold().queue_next_id, std::move(name), std::move(body), NowMs(), false};
  const size_t size = protocol::persist::WriteQueueMessage(ToRecord(m)).size();
  if (size > o.max_queue_message_size) {
    throw ActorError("queue", "message_too_large",
                     "Queue message too large (" + std::to_string(size) + " bytes). Limit is " +
                         std::to_string(o.max_queue_message_size) + " bytes.");
  }
  ++cold().queue_next_id;
  const uint64_t id = m.id;
  StageQueueMessage(m);
  cold().queue.emplace(id, std::move(m));
  StageQueueMeta();
  // Before dispatching: a waiting receiver may take and complete the message right now.
  if (completion) cold().queue_completions[id].push_back(*completion);
  DispatchQueue();
  co_return id;
}

namespace {
// Takes up to `count` matching messages: removed (and deleted) unless completable, then
// marked in flight.
std::vector<Instance::QueueMessage> Take(std::map<uint64_t, Instance::QueueMessage>& queue,
                                         const Instance::QueueReceive& o,
                                         std::vector<uint64_t>& taken_ids) {
  std::vector<Instance::QueueMessage> out;
  for (auto& [id, m] : queue) {
    if (out.size() >= std::max<size_t>(o.count, 1)) break;
    if (!Matches(m, o.names)) continue;
    out.push_back(m);
    taken_ids.push_back(id);
  }
  return out;
}
}  // namespace

void Instance::DispatchQueue() {
  std::vector<std::pair<std::shared_ptr<QueueWaiter>, std::vector<QueueMessage>>> ready;
  // Senders waiting on a message that a non-completable receive took: it is consumed and
  // can never be completed, so they hear `completed` (with no response) now rather than
  // time out.
  std::vector<Completion<std::optional<Value>>> consumed;
  for (auto it = cold().queue_waiters.begin(); it != cold().queue_waiters.end();) {
    std::vector<uint64_t> ids;
    auto msgs = Take(cold().queue, (*it)->options, ids);
    if (msgs.empty()) {
      ++it;
      continue;
    }
    for (uint64_t id : ids) {
      if ((*it)->options.completable) {
        cold().queue[id].in_flight = true;
        StageQueueMessage(cold().queue[id]);
      } else {
        cold().queue.erase(id);
        StageWrite(MessageKey(id), std::nullopt);
        if (auto w = cold().queue_completions.find(id); w != cold().queue_completions.end()) {
          for (auto& c : w->second) consumed.push_back(std::move(c));
          cold().queue_completions.erase(w);
        }
      }
    }
    StageQueueMeta();
    if ((*it)->timer != TimerId{}) runtime_.clock().Cancel((*it)->timer);
    ready.emplace_back(*it, std::move(msgs));
    it = cold().queue_waiters.erase(it);
  }
  for (auto& [w, msgs] : ready) w->done.Resolve(std::move(msgs));
  for (auto& c : consumed) c.Resolve(Value(Value::Undefined{}));
}

Task<std::vector<Instance::QueueMessage>> Instance::QueueReceiveMessages(Invocation& inv,
                                                                         QueueReceive options) {
  if (!inv.holding.empty()) {
    throw ActorError("queue", "previous_message_not_completed",
                     "The previous queue message must be completed before receiving another.");
  }
  co_await EnsureQueueLoaded();
  if (aborted_) throw ActorError("actor", "aborted", "Actor is shutting down.");
  auto waiter = std::make_shared<QueueWaiter>();
  waiter->options = std::move(options);
  waiter->from_run = inv.is_run;
  cold().queue_waiters.push_back(waiter);
  DispatchQueue();
  std::optional<std::vector<QueueMessage>> got;
  if (waiter->done.ready()) {
    got = co_await waiter->done;
  } else if (waiter->options.timeout && waiter->options.timeout->count() <= 0) {
    cold().queue_waiters.erase(std::find(cold().queue_waiters.begin(), cold().queue_waiters.end(), waiter));
    got = std::vector<QueueMessage>{};
  } else {
    if (waiter->options.timeout) {
      std::weak_ptr<QueueWaiter> weak = waiter;
      waiter->timer = runtime_.clock().ScheduleAfter(*waiter->options.timeout, [this, weak] {
        auto w = weak.lock();
        if (!w) return;
        auto it = std::find(cold().queue_waiters.begin(), cold().queue_waiters.end(), w);
        if (it == cold().queue_waiters.end()) return;
        cold().queue_waiters.erase(it);
        w->done.Resolve(std::vector<QueueMessage>{});
      });
    }
    // A run handler blocked in a receive counts as idle (actors.md §3.3).
    if (waiter->from_run) {
      ++cold().run_waiting_on_queue;
      ResetSleepTimer();
    }
    got = co_await waiter->done;
    if (waiter->from_run) {
      --cold().run_waiting_on_queue;
      ResetSleepTimer();
    }
  }
  if (!got) throw ActorError("actor", "aborted", "Actor is shutting down.");
  if (waiter->options.completable) {
    for (const auto& m : *got) inv.holding.push_back(m.id);
  }
  co_return std::move(*got);
}

Task<void> Instance::QueueComplete(Invocation& inv, uint64_t id, std::optional<Value> response) {
  co_await EnsureQueueLoaded();
  auto it = cold().queue.find(id);
  if (it == cold().queue.end() || !it->second.in_flight) {
    throw ActorError("queue", "already_completed", "Queue message was already completed.");
  }
  cold().queue.erase(it);
  StageWrite(MessageKey(id), std::nullopt);
  StageQueueMeta();
  inv.holding.erase(std::remove(inv.holding.begin(), inv.holding.end(), id), inv.holding.end());
  if (auto w = cold().queue_completions.find(id); w != cold().queue_completions.end()) {
    auto waiters = std::move(w->second);
    cold().queue_completions.erase(w);
    for (auto& c : waiters) c.Resolve(response.value_or(Value(Value::Undefined{})));
  }
}

void Instance::QueueRelease(Invocation& inv) {
  bool any = false;
  for (uint64_t id : inv.holding) {
    auto it = cold().queue.find(id);
    if (it == cold().queue.end() || !it->second.in_flight) continue;
    it->second.in_flight = false;
    StageQueueMessage(it->second);
    any = true;
  }
  inv.holding.clear();
  if (any) DispatchQueue();
}

void Instance::AbortQueueWaiters() {
  if (!cold_) return;  // no queue in use
  auto waiters = std::move(cold().queue_waiters);
  cold().queue_waiters.clear();
  for (auto& w : waiters) {
    if (w->timer != TimerId{}) runtime_.clock().Cancel(w->timer);
    w->done.Resolve(std::nullopt);
  }
  auto completions = std::move(cold().queue_completions);
  cold().queue_completions.clear();
  for (auto& [id, list] : completions) {
    for (auto& c : list) c.Resolve(std::nullopt);
  }
}

// POST /queue/{name} (actors.md §4.5).
Task<void> Instance::HttpQueueSend(latest::MessageId id, Request req, std::string name) {
  const std::optional<wire::Encoding> accepted = AcceptHttpBody(id, req);
  if (!accepted) co_return;
  const wire::Encoding enc = *accepted;
  auto fail = [this, id, enc](const ClientError& e) {
    SendHttpResponse(id, ErrorResponse(e, enc));
  };
  std::string conn_id;
  try {
    auto decoded = wire::DecodeHttpQueueSendRequest(req.body, enc);
    if (!decoded.ok()) throw ActorError("actor", "invalid_request", decoded.error().message());
    std::shared_ptr<Conn> conn = NewConn(/*transient=*/true);
    conn_id = conn->id();
    co_await ConnectSetup(conn, req);
    wire::HttpQueueSendResponse out{"completed", std::nullopt};
    auto declared = type_->queues.find(name);
    if (declared != type_->queues.end()) {
      if (declared->second) {
        bool allowed = co_await declared->second(Invocation{this, conn, nullptr});
        if (!allowed) throw ActorError("auth", "forbidden", "Forbidden");
      }
      const bool wait = decoded->wait.value_or(false);
      Completion<std::optional<Value>> done;
      // Named (not a temporary inside the co_await expression; see docs/runtime.md).
      std::optional<Completion<std::optional<Value>>> completion;
      if (wait) completion = done;
      co_await QueueSend(name, std::move(decoded->body), std::move(completion));
      if (wait) {
        const milliseconds timeout(decoded->timeout.value_or(type_->options.action_timeout.count()));
        TimerId timer = runtime_.clock().ScheduleAfter(timeout, [done] { done.Resolve(std::nullopt); });
        // Durable before the wait: the message is stored before anyone may complete it.
        co_await WaitDurable();
        std::optional<Value> response = co_await done;
        runtime_.clock().Cancel(timer);
        if (response) {
          out.response = response->is_undefined() ? std::nullopt : std::optional<Value>(*response);
        } else {
          out.status = "timedOut";
        }
      }
    }
    // Undeclared queues: accepted and dropped (actors.md §2.7).
    Response resp{200, {{"content-type", std::string(wire::ContentType(enc))}}, wire::Encode(out, enc)};
    Gate([this, id, resp = std::move(resp)]() mutable { SendHttpResponse(id, std::move(resp)); }, fail);
  } catch (...) {
    ClientError e = ToClientError(std::current_exception(), actor_id_);
    Gate([fail, e] { fail(e); }, fail);
  }
  if (!conn_id.empty()) co_await DisconnectConn(conn_id);
}

}  // namespace keel::runtime
