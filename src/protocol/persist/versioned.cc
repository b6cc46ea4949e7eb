#include "protocol/persist/versioned.h"

#include <string>

#include "protocol/bare/codec.h"
#include "protocol/persist/v1.h"
#include "protocol/persist/v1_v2.h"
#include "protocol/persist/v2.h"
#include "protocol/persist/v3.h"
#include "protocol/persist/v3_v4.h"

namespace keel::protocol::persist {
namespace {

// The record's (version, body); errors name the record ("connection record: …").
Result<std::pair<uint16_t, ByteView>> Split(ByteView record, uint16_t oldest,
                                            std::string_view what) {
  auto split = bare::SplitVersionPrefix(record, oldest, kLatestVersion);
  if (!split.has_value()) return split.error().WithContext(std::string(what) + " record");
  return split;
}

// actor-persist v2 -> v3: the record was reshaped (renamed types, connections moved out).
v3::Actor UpgradeActorV2(const v2::PersistedActor& old) {
  v3::Actor out;
  out.input = old.input;
  out.has_initialized = old.has_initialized;
  out.state = old.state;
  for (const auto& e : old.scheduled_events) {
    const auto& generic = *std::get_if<0>(&e.kind.value);
    out.scheduled_events.push_back(v3::ScheduleEvent{e.event_id, e.timestamp, generic.action,
                                                     generic.args});
  }
  return out;
}

template <typename T>
Bytes Write(const T& value) {
  return bare::EncodeVersioned(value, kLatestVersion);
}

}  // namespace

Result<latest::Actor> ReadActor(ByteView record) {
  KEEL_ASSIGN_OR_RETURN(auto split, Split(record, 1, "actor"));
  if (split.first == 4) return bare::DecodeValue<v4::Actor>(split.second);
  ConvertContext ctx(kLatestVersion);
  v3::Actor v3{};
  if (split.first == 3) {
    KEEL_ASSIGN_OR_RETURN(v3, bare::DecodeValue<v3::Actor>(split.second));
  } else if (split.first == 2) {
    KEEL_ASSIGN_OR_RETURN(auto v2, bare::DecodeValue<v2::PersistedActor>(split.second));
    v3 = UpgradeActorV2(v2);
  } else {
    KEEL_ASSIGN_OR_RETURN(auto v1, bare::DecodeValue<v1::PersistedActor>(split.second));
    v2::PersistedActor v2{};
    if (!v1_v2::Upgrade(v1, v2, ctx)) return ToError(*ctx.error);
    v3 = UpgradeActorV2(v2);
  }
  v4::Actor out{};
  if (!v3_v4::Upgrade(v3, out, ctx)) return ToError(*ctx.error);
  return out;
}

Result<latest::Conn> ReadConn(ByteView record) {
  KEEL_ASSIGN_OR_RETURN(auto split, Split(record, 3, "connection"));
  if (split.first == 4) return bare::DecodeValue<v4::Conn>(split.second);
  KEEL_ASSIGN_OR_RETURN(auto v3, bare::DecodeValue<v3::Conn>(split.second));
  ConvertContext ctx(kLatestVersion);
  v4::Conn out{};
  if (!v3_v4::Upgrade(v3, out, ctx)) return ToError(*ctx.error);
  return out;
}

Result<latest::QueueMetadata> ReadQueueMetadata(ByteView record) {
  KEEL_ASSIGN_OR_RETURN(auto split, Split(record, 4, "queue metadata"));
  return bare::DecodeValue<v4::QueueMetadata>(split.second);
}

Result<latest::QueueMessage> ReadQueueMessage(ByteView record) {
  KEEL_ASSIGN_OR_RETURN(auto split, Split(record, 4, "queue message"));
  return bare::DecodeValue<v4::QueueMessage>(split.second);
}

Bytes WriteActor(const latest::Actor& actor) { return Write(actor); }
Bytes WriteConn(const latest::Conn& conn) { return Write(conn); }
Bytes WriteQueueMetadata(const latest::QueueMetadata& meta) { return Write(meta); }
Bytes WriteQueueMessage(const latest::QueueMessage& message) { return Write(message); }

}  // namespace keel::protocol::persist
