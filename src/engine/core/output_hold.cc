#include "engine/core/output_hold.h"

#include <utility>
#include <vector>

namespace keel::engine {

OutputHold::OutputHold(Forward forward, OnPoisoned on_poisoned)
    : forward_(std::move(forward)), on_poisoned_(std::move(on_poisoned)) {}

uint64_t OutputHold::BeginWrite(const EngineId& actor, uint32_t generation) {
  std::lock_guard lock(mu_);
  auto it = actors_.find(actor);
  if (it == actors_.end()) {
    if (spare_.empty()) {
      it = actors_.try_emplace(actor).first;
    } else {
      spare_.key() = actor;
      spare_.mapped() = Actor{};
      it = actors_.insert(std::move(spare_)).position;
    }
  }
  Actor& a = it->second;
  tracked_.store(actors_.size(), std::memory_order_release);
  if (a.poisoned.has_value() && *a.poisoned != generation) a.poisoned.reset();
  const uint64_t ticket = next_ticket_++;
  a.pending.insert(ticket);
  a.last_ticket = ticket;
  a.generation = generation;
  return ticket;
}

void OutputHold::EndWrite(const EngineId& actor, uint64_t ticket, bool ok) {
  std::unique_lock lock(mu_);
  auto it = actors_.find(actor);
  if (it == actors_.end()) return;
  Actor& a = it->second;
  a.pending.erase(ticket);
  if (!ok) {
    // Every held answer of this generation may depend on the lost write.
    a.poisoned = a.generation;
    dropped_.fetch_add(a.held.size(), std::memory_order_relaxed);
    a.held.clear();
    lock.unlock();
    on_poisoned_(actor, /*write_failed=*/true);
    return;
  }
  if (!a.draining) Drain(lock, actor);
  it = actors_.find(actor);
  if (it != actors_.end()) EraseIfIdle(it);
}

void OutputHold::OnMessage(const EngineId& actor, Message&& msg,
                           const std::function<std::optional<uint32_t>()>& generation) {
  std::unique_lock lock(mu_);
  auto it = actors_.find(actor);
  if (it == actors_.end()) {
    // Nothing in flight for this actor: nothing to wait for, nobody to overtake.
    lock.unlock();
    forward_(std::move(msg));
    return;
  }
  if (it->second.poisoned.has_value()) {
    const uint32_t poisoned = *it->second.poisoned;
    lock.unlock();
    const std::optional<uint32_t> hosted = generation();  // outside our lock
    lock.lock();
    it = actors_.find(actor);
    // Dropped unless the connection hosts a newer generation of the actor now.
    const bool newer = hosted.has_value() && *hosted != poisoned;
    if (it != actors_.end() && it->second.poisoned == poisoned && !newer) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      on_poisoned_(actor, /*write_failed=*/false);  // this message's request fails too
      return;
    }
    if (it == actors_.end()) {
      lock.unlock();
      forward_(std::move(msg));
      return;
    }
    if (it->second.poisoned == poisoned) it->second.poisoned.reset();  // a newer generation
  }
  Actor& a = it->second;
  a.held.emplace_back(a.last_ticket, std::move(msg));
  if (!a.draining) Drain(lock, actor);
  it = actors_.find(actor);
  if (it != actors_.end()) EraseIfIdle(it);
}

void OutputHold::Drain(std::unique_lock<std::mutex>& lock, const EngineId& actor) {
  // References into an unordered_map survive rehashing, and an entry being drained is
  // never erased (EraseIfIdle checks `draining`).
  Actor& a = actors_.find(actor)->second;
  a.draining = true;
  while (!a.held.empty() && !a.poisoned.has_value() &&
         (a.pending.empty() || *a.pending.begin() > a.held.front().first)) {
    Message msg = std::move(a.held.front().second);
    a.held.pop_front();
    lock.unlock();
    forward_(std::move(msg));
    lock.lock();
  }
  a.draining = false;
}

void OutputHold::EraseIfIdle(std::unordered_map<EngineId, Actor>::iterator it) {
  const Actor& a = it->second;
  if (!a.pending.empty() || !a.held.empty() || a.draining || a.poisoned.has_value()) return;
  spare_ = actors_.extract(it);
  tracked_.store(actors_.size(), std::memory_order_release);
}

void OutputHold::Prune(const std::function<std::optional<uint32_t>(const EngineId&)>& hosted) {
  std::vector<std::pair<EngineId, uint32_t>> poisoned;
  {
    std::lock_guard lock(mu_);
    for (const auto& [actor, a] : actors_) {
      if (a.poisoned.has_value()) poisoned.emplace_back(actor, *a.poisoned);
    }
  }
  for (const auto& [actor, generation] : poisoned) {
    if (hosted(actor) == generation) continue;
    std::lock_guard lock(mu_);
    auto it = actors_.find(actor);
    if (it == actors_.end() || it->second.poisoned != generation) continue;
    it->second.poisoned.reset();
    EraseIfIdle(it);
  }
}

size_t OutputHold::held() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [actor, a] : actors_) n += a.held.size();
  return n;
}

bool OutputHold::poisoned(const EngineId& actor) const {
  std::lock_guard lock(mu_);
  auto it = actors_.find(actor);
  return it != actors_.end() && it->second.poisoned.has_value();
}

}  // namespace keel::engine
