// Records keel-engine keeps in its KvStore (schemas/engine/vN.bare, docs/storage.md):
// a 2-byte little-endian schema version, then the BARE value. Writers write the latest
// version; readers check it. Thread-safety: stateless functions.
#pragma once

#include <string>

#include "base/bytes.h"
#include "base/result.h"
#include "protocol/bare/codec.h"
#include "protocol/engine/v1.h"

namespace keel::protocol::engine {

namespace latest = v1;
inline constexpr uint16_t kLatestVersion = 1;

template <typename T>
Bytes WriteRecord(const T& record) {
  return bare::EncodeVersioned(record, kLatestVersion);
}

// Errors: `protocol.decode_failed`, `protocol.unsupported_version`.
template <typename T>
Result<T> ReadRecord(ByteView stored) {
  KEEL_ASSIGN_OR_RETURN(auto split, bare::SplitVersionPrefix(stored, 1, kLatestVersion));
  return bare::DecodeValue<T>(split.second);
}

}  // namespace keel::protocol::engine
