// Hand-written actor-persist conversions (actors.md §3.5). v1 -> v2 widened timestamps
// from u64 to i64 and added hibernatable WebSocket records; conversions clamp at the
// boundary of the narrower type rather than wrapping.
#include <cstdint>
#include <limits>

#include "protocol/persist/v1_v2.h"
#include "protocol/persist/v3_v4.h"

namespace keel::protocol::persist {
namespace {

int64_t ClampToI64(uint64_t v) {
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(v);
}
uint64_t ClampToU64(int64_t v) { return v < 0 ? 0 : static_cast<uint64_t>(v); }

}  // namespace

namespace v1_v2 {

bool Upgrade(const v1::PersistedConnection& v, v2::PersistedConnection& out,
             ConvertContext& ctx) {
  out.id = v.id;
  out.token = v.token;
  out.parameters = v.parameters;
  out.state = v.state;
  out.subscriptions.clear();
  for (const auto& s : v.subscriptions) {
    if (!Upgrade(s, out.subscriptions.emplace_back(), ctx)) return false;
  }
  out.last_seen = ClampToI64(v.last_seen);
  out.hibernatable_request_id.reset();
  return true;
}

bool Downgrade(const v2::PersistedConnection& v, v1::PersistedConnection& out,
               ConvertContext& ctx) {
  out.id = v.id;
  out.token = v.token;
  out.parameters = v.parameters;
  out.state = v.state;
  out.subscriptions.clear();
  for (const auto& s : v.subscriptions) {
    if (!Downgrade(s, out.subscriptions.emplace_back(), ctx)) return false;
  }
  out.last_seen = ClampToU64(v.last_seen);
  return true;
}

bool Upgrade(const v1::PersistedScheduleEvent& v, v2::PersistedScheduleEvent& out,
             ConvertContext& ctx) {
  out.event_id = v.event_id;
  out.timestamp = ClampToI64(v.timestamp);
  return Upgrade(v.kind, out.kind, ctx);
}

bool Downgrade(const v2::PersistedScheduleEvent& v, v1::PersistedScheduleEvent& out,
               ConvertContext& ctx) {
  out.event_id = v.event_id;
  out.timestamp = ClampToU64(v.timestamp);
  return Downgrade(v.kind, out.kind, ctx);
}

bool Upgrade(const v1::PersistedActor& v, v2::PersistedActor& out, ConvertContext& ctx) {
  out.input = v.input;
  out.has_initialized = v.has_initialized;
  out.state = v.state;
  out.connections.clear();
  for (const auto& c : v.connections) {
    if (!Upgrade(c, out.connections.emplace_back(), ctx)) return false;
  }
  out.scheduled_events.clear();
  for (const auto& e : v.scheduled_events) {
    if (!Upgrade(e, out.scheduled_events.emplace_back(), ctx)) return false;
  }
  out.hibernatable_web_sockets.clear();
  return true;
}

bool Downgrade(const v2::PersistedActor& v, v1::PersistedActor& out, ConvertContext& ctx) {
  if (!v.hibernatable_web_sockets.empty()) {
    return ctx.Fail(
        IncompatibleMessageError{"hibernatable WebSocket records require actor-persist v2"});
  }
  out.input = v.input;
  out.has_initialized = v.has_initialized;
  out.state = v.state;
  out.connections.clear();
  for (const auto& c : v.connections) {
    if (!Downgrade(c, out.connections.emplace_back(), ctx)) return false;
  }
  out.scheduled_events.clear();
  for (const auto& e : v.scheduled_events) {
    if (!Downgrade(e, out.scheduled_events.emplace_back(), ctx)) return false;
  }
  return true;
}

ConversionError UnsupportedMember(ConvertDirection, std::string_view union_name,
                                  std::string_view member, const ConvertContext&) {
  return IncompatibleMessageError{std::string(union_name) + "." + std::string(member) +
                                  " has no equivalent in the other actor-persist version"};
}

bool DropField(ConvertDirection dir, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  // v2's optional PersistedConnection.hibernatableRequestId has no v1 slot; v1 had no
  // hibernation, so dropping it on the way down loses nothing v1 could use.
  if (dir == ConvertDirection::kDowngrade) return true;
  return ctx.Fail(IncompatibleMessageError{std::string(struct_name) + "." + std::string(field) +
                                           " cannot be represented"});
}

}  // namespace v1_v2

namespace v3_v4 {

ConversionError UnsupportedMember(ConvertDirection, std::string_view union_name,
                                  std::string_view member, const ConvertContext&) {
  return IncompatibleMessageError{std::string(union_name) + "." + std::string(member) +
                                  " has no equivalent in the other actor-persist version"};
}

bool DropField(ConvertDirection, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  return ctx.Fail(IncompatibleMessageError{std::string(struct_name) + "." + std::string(field) +
                                           " cannot be represented"});
}

}  // namespace v3_v4
}  // namespace keel::protocol::persist
