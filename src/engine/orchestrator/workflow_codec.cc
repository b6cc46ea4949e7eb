// The persisted form of ActorWorkflow (storage.md §3.5 key 02): u16 LE version, then the
// fields below with BARE primitives. Varints everywhere so a sleeping actor stays small.
//
// v1: transition:uint generation:uint flags:uint envoy_key:str deadline_ts:int
//     alarm_ts:optional<int> realloc_since_ts:int retry_attempt:uint last_retry_ts:int
//     last_command_index:int last_event_index:int last_acked_event_index:int
//     error:optional<{kind:uint detail:str}> stale_hosts:list<{envoy_key:str
//     generation:uint until_ts:int}> start_ts:int pending_allocation_ts:int
//     connectable_ts:int sleep_ts:int reschedule_ts:int destroy_ts:int
// v2: v1, then alloc_run:uint (v1 records decode with alloc_run 0).
// flags bits: 0 serverless, 1 destroy_after_start, 2 rewake_after_stop, 3 slot_held,
//     4 envoy_disconnected, 5 sleeping, 6 connectable, 7 destroyed, 8 sleep_after_start.
//     Bit 8 came later within v2: a record without it still decodes in older engines, one
//     with it (an actor asked to sleep while starting) is refused there as invalid flags.
// error kinds: 1..5, and 6 (runner_pool_error) later within v2, refused as an invalid error
//     kind by older engines in the same way.
#include <limits>

#include "engine/orchestrator/actor_machine.h"
#include "protocol/bare/codec.h"
#include "protocol/bare/reader.h"
#include "protocol/bare/writer.h"

namespace keel::engine::orch {

namespace {
constexpr uint16_t kWorkflowVersion = 2;
constexpr uint16_t kOldestWorkflowVersion = 1;
constexpr std::string_view kTypeName = "ActorWorkflow";
}  // namespace

Bytes EncodeWorkflow(const ActorWorkflow& wf) {
  Bytes out;
  bare::AppendVersionPrefix(kWorkflowVersion, out);
  bare::Writer w(out);
  w.Uint(static_cast<uint64_t>(wf.transition));
  w.Uint(wf.generation);
  uint64_t flags = 0;
  flags |= wf.pool_kind == PoolKind::kServerless ? 1u : 0u;
  flags |= wf.destroy_after_start ? 2u : 0u;
  flags |= wf.rewake_after_stop ? 4u : 0u;
  flags |= wf.slot_held ? 8u : 0u;
  flags |= wf.envoy_disconnected ? 16u : 0u;
  flags |= wf.sleeping ? 32u : 0u;
  flags |= wf.connectable ? 64u : 0u;
  flags |= wf.destroyed ? 128u : 0u;
  flags |= wf.sleep_after_start ? 256u : 0u;
  w.Uint(flags);
  w.Str(wf.envoy_key);
  w.Int(wf.deadline_ts);
  w.Bool(wf.alarm_ts.has_value());
  if (wf.alarm_ts) {
    w.Int(*wf.alarm_ts);
  }
  w.Int(wf.realloc_since_ts);
  w.Uint(wf.retry_attempt);
  w.Int(wf.last_retry_ts);
  w.Int(wf.last_command_index);
  w.Int(wf.last_event_index);
  w.Int(wf.last_acked_event_index);
  w.Bool(wf.error.has_value());
  if (wf.error) {
    w.Uint(static_cast<uint64_t>(wf.error->kind));
    w.Str(wf.error->detail);
  }
  w.Uint(wf.stale_hosts.size());
  for (const StaleHost& s : wf.stale_hosts) {
    w.Str(s.envoy_key);
    w.Uint(s.generation);
    w.Int(s.until_ts);
  }
  w.Int(wf.start_ts);
  w.Int(wf.pending_allocation_ts);
  w.Int(wf.connectable_ts);
  w.Int(wf.sleep_ts);
  w.Int(wf.reschedule_ts);
  w.Int(wf.destroy_ts);
  w.Uint(wf.alloc_run);
  return out;
}

Result<ActorWorkflow> DecodeWorkflow(ByteView bytes) {
  KEEL_ASSIGN_OR_RETURN(auto split,
                        bare::SplitVersionPrefix(bytes, kOldestWorkflowVersion, kWorkflowVersion));
  bare::Reader r(split.second);
  ActorWorkflow wf;
  auto invalid = [&](std::string_view what) -> Result<ActorWorkflow> {
    r.Fail(bare::DecodeFailure::Kind::kInvalidValue, r.offset(), what);
    return r.ToError(kTypeName);
  };
  uint64_t u = 0;
  if (!r.Uint(u)) return r.ToError(kTypeName);
  if (u > static_cast<uint64_t>(Transition::kDestroyed)) return invalid("transition");
  wf.transition = static_cast<Transition>(u);
  if (!r.Uint(u)) return r.ToError(kTypeName);
  if (u > std::numeric_limits<uint32_t>::max()) return invalid("generation");
  wf.generation = static_cast<uint32_t>(u);
  uint64_t flags = 0;
  if (!r.Uint(flags)) return r.ToError(kTypeName);
  if (flags > 511) return invalid("flags");
  wf.pool_kind = (flags & 1u) ? PoolKind::kServerless : PoolKind::kServerful;
  wf.destroy_after_start = flags & 2u;
  wf.rewake_after_stop = flags & 4u;
  wf.slot_held = flags & 8u;
  wf.envoy_disconnected = flags & 16u;
  wf.sleeping = flags & 32u;
  wf.connectable = flags & 64u;
  wf.destroyed = flags & 128u;
  wf.sleep_after_start = flags & 256u;
  r.Str(wf.envoy_key);
  r.Int(wf.deadline_ts);
  bool present = false;
  if (r.Present(present) && present) {
    int64_t ts = 0;
    r.Int(ts);
    wf.alarm_ts = ts;
  }
  r.Int(wf.realloc_since_ts);
  if (r.Uint(u) && u > std::numeric_limits<uint32_t>::max()) return invalid("retry_attempt");
  wf.retry_attempt = static_cast<uint32_t>(u);
  r.Int(wf.last_retry_ts);
  r.Int(wf.last_command_index);
  r.Int(wf.last_event_index);
  r.Int(wf.last_acked_event_index);
  if (r.Present(present) && present) {
    ActorError e;
    if (r.Uint(u) && (u < 1 || u > static_cast<uint64_t>(ActorError::Kind::kRunnerPoolError))) {
      return invalid("error kind");
    }
    e.kind = static_cast<ActorError::Kind>(u);
    r.Str(e.detail);
    wf.error = std::move(e);
  }
  if (r.Uint(u) && u > kMaxStaleHosts) return invalid("stale_hosts");
  if (!r.ok()) return r.ToError(kTypeName);
  for (uint64_t i = 0; i < u; ++i) {
    StaleHost s;
    uint64_t g = 0;
    r.Str(s.envoy_key);
    if (r.Uint(g) && g > std::numeric_limits<uint32_t>::max()) return invalid("generation");
    s.generation = static_cast<uint32_t>(g);
    r.Int(s.until_ts);
    wf.stale_hosts.push_back(std::move(s));
  }
  r.Int(wf.start_ts);
  r.Int(wf.pending_allocation_ts);
  r.Int(wf.connectable_ts);
  r.Int(wf.sleep_ts);
  r.Int(wf.reschedule_ts);
  r.Int(wf.destroy_ts);
  if (split.first >= 2) r.Uint(wf.alloc_run);
  if (!r.ExpectEnd()) return r.ToError(kTypeName);
  return wf;
}

}  // namespace keel::engine::orch
