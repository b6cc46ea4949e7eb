#include "storage/actor_keys.h"

namespace keel::storage {

void AppendActorKey(ByteView actor, uint8_t tag, Bytes& out) {
  out.push_back(kActorSubspace);
  out.insert(out.end(), actor.begin(), actor.end());
  out.push_back(tag);
}

Bytes ActorKey(ByteView actor, uint8_t tag, size_t extra) {
  Bytes out;
  out.reserve(2 + actor.size() + extra);
  AppendActorKey(actor, tag, out);
  return out;
}

}  // namespace keel::storage
