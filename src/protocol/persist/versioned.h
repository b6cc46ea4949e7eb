// Reading and writing the actor-persist records (actors.md §3.5): a 2-byte
// little-endian schema version, then the BARE record. Readers accept every version that
// ever held the record (v1–v4 for the actor record, v3–v4 for connection records, v4 for
// queue records) and return the latest (v4) types; writers always write v4.
//
// Upgrading v1/v2 actor records follows Rivet: connections and hibernatable WebSocket
// entries stored inside old actor records are not carried into v3+ (v3 moved connections
// to their own keys, and old entries cannot be resumed).
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>

#include "base/bytes.h"
#include "base/result.h"
#include "protocol/persist/v4.h"

namespace keel::protocol::persist {

namespace latest = v4;
inline constexpr uint16_t kLatestVersion = 4;

// Errors: `protocol.decode_failed`, `protocol.unsupported_version`.
Result<latest::Actor> ReadActor(ByteView record);
Result<latest::Conn> ReadConn(ByteView record);
Result<latest::QueueMetadata> ReadQueueMetadata(ByteView record);
Result<latest::QueueMessage> ReadQueueMessage(ByteView record);

Bytes WriteActor(const latest::Actor& actor);
Bytes WriteConn(const latest::Conn& conn);
Bytes WriteQueueMetadata(const latest::QueueMetadata& meta);
Bytes WriteQueueMessage(const latest::QueueMessage& message);

}  // namespace keel::protocol::persist
