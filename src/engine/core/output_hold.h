// OutputHold: the engine's half of the engine-held output gate (docs/engine.md, "Held
// outputs").
//
// Normally an actor's answer leaves the runtime only once the engine has acknowledged, as
// durable, every write the answer depends on: one more round trip per durable call. On a
// connection that negotiated held outputs, the runtime sends the answer right after the
// writes instead, and the engine keeps it from the client until those writes are durable.
// This object does the keeping for one envoy connection:
//
//   * every KV write of an actor that the connection reads gets a ticket (BeginWrite) before
//     it is committed, and reports its outcome once the covering sync ran (EndWrite);
//   * a tunnel message of an actor waits while any write of that actor read before it is
//     not yet durable, and messages of one actor leave in arrival order (FIFO), whichever
//     thread finishes a write; other actors' messages do not wait for it;
//   * a write that fails — rejected by storage, or its sync failed — poisons its actor
//     generation on this connection: what was held for that actor and everything that
//     actor generation sends afterwards is dropped (the runtime may have sent answers that
//     depend on the lost write, and cannot take them back), and `on_poisoned` runs so the
//     caller fails the actor's requests. The runtime ends such a generation itself when it
//     sees the failed write; a later generation of the actor starts clean.
//
// No I/O, no clocks: `forward` and `on_poisoned` are the caller's. They run without the
// lock held, on whichever thread made a message releasable.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>

#include <boost/container/deque.hpp>
#include <boost/container/flat_set.hpp>
#include <boost/container/small_vector.hpp>

#include "engine/common/id.h"
#include "protocol/envoy/versioned.h"

namespace keel::engine {

class OutputHold {
 public:
  using Message = protocol::envoy::latest::ToRivetTunnelMessage;
  using Forward = std::function<void(Message&&)>;
  // `actor`'s generation lost a write: runs when the write fails (`write_failed`; what was
  // held for it is dropped) and again for each later message of that generation dropped.
  using OnPoisoned = std::function<void(const EngineId& actor, bool write_failed)>;

  OutputHold(Forward forward, OnPoisoned on_poisoned);

  // Before committing a write of `actor` (at `generation`) read from the connection.
  // Returns the ticket EndWrite takes. A write of a newer generation clears an old poison.
  uint64_t BeginWrite(const EngineId& actor, uint32_t generation);
  // The outcome of the write `ticket`: durable (ok) or not (rejected, sync failed).
  void EndWrite(const EngineId& actor, uint64_t ticket, bool ok);

  // True when no actor has a write in flight, a held message or a poison: a tunnel message
  // may then be forwarded without finding its actor (the fast path).
  bool Idle() const { return tracked_.load(std::memory_order_acquire) == 0; }

  // A tunnel message of `actor`, read from the connection after every write whose
  // BeginWrite came before. `generation`: the actor generation the connection hosts now
  // (asked only when the actor is poisoned; nullopt = not hosted). Forwarded now, held, or
  // dropped (poisoned, unless a newer generation is hosted now).
  void OnMessage(const EngineId& actor, Message&& msg,
                 const std::function<std::optional<uint32_t>()>& generation);

  // Forgets poisons of generations the connection no longer hosts (`hosted` answers the
  // generation hosted now, nullopt = none). Periodic.
  void Prune(const std::function<std::optional<uint32_t>(const EngineId&)>& hosted);

  // Observability and tests.
  size_t held() const;
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  bool poisoned(const EngineId& actor) const;

 private:
  struct Actor {
    // Tickets of writes not yet durable: one or two mostly, kept without an allocation.
    boost::container::small_flat_set<uint64_t, 2> pending;
    uint64_t last_ticket = 0;    // newest ticket issued (a message needs all up to it)
    uint32_t generation = 0;     // of the newest write
    // (tickets needed, message), FIFO. Boost's deque allocates nothing while empty: most
    // entries live from a write's BeginWrite to its EndWrite and never hold a message.
    boost::container::deque<std::pair<uint64_t, Message>> held;
    bool draining = false;       // a thread is forwarding this actor's released messages
    std::optional<uint32_t> poisoned;  // generation whose write failed
  };

  // Forwards released messages of `actor` in order until the front one must wait; `lock`
  // is held on entry and exit (released around each forward).
  void Drain(std::unique_lock<std::mutex>& lock, const EngineId& actor);
  // Erases the entry when it tracks nothing. REQUIRES: mu_ held.
  void EraseIfIdle(std::unordered_map<EngineId, Actor>::iterator it);

  const Forward forward_;
  const OnPoisoned on_poisoned_;
  mutable std::mutex mu_;
  std::unordered_map<EngineId, Actor> actors_;  // guarded by mu_
  // The node of the entry erased last, reused by the next BeginWrite that finds none: an
  // entry lives from a write's BeginWrite to its EndWrite, so without it every write
  // allocated and freed one. Guarded by mu_.
  std::unordered_map<EngineId, Actor>::node_type spare_;
  uint64_t next_ticket_ = 1;                    // guarded by mu_
  std::atomic<size_t> tracked_{0};              // actors_.size(), readable without mu_
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace keel::engine
