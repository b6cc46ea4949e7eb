// Keys of the actor subspace (docs/storage.md §3.5): every actor-scoped record, the actor
// KV's and the SQLite page store's, lives under [kActorSubspace][binary actor id][tag].
// One definition, so the two stores cannot drift apart in where an actor's data starts.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/bytes.h"

namespace keel::storage {

inline constexpr uint8_t kActorSubspace = 0x05;

// Appends [kActorSubspace][actor][tag] to `out`.
void AppendActorKey(ByteView actor, uint8_t tag, Bytes& out);

// The same key on its own, with room reserved for `extra` bytes the caller appends.
Bytes ActorKey(ByteView actor, uint8_t tag, size_t extra = 0);

}  // namespace keel::storage
