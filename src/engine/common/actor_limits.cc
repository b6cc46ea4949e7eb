#include "engine/common/actor_limits.h"

#include <string>

namespace keel::engine {

Status ValidateActorInput(size_t input_bytes) {
  if (input_bytes <= kMaxActorInputBytes) return OkStatus();
  return Error("actor", "input_too_large",
               "the input is " + std::to_string(input_bytes) + " bytes; the limit is " +
                   std::to_string(kMaxActorInputBytes) +
                   " (the actor keeps its input in its state record, one KV value of at most " +
                   std::to_string(kMaxActorKvValueBytes / 1024) + " KiB)");
}

}  // namespace keel::engine
