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

Status ValidateActorName(std::string_view name) {
  if (name.size() <= kMaxActorNameBytes) return OkStatus();
  return Error("actor", "name_too_large",
               "the actor name is " + std::to_string(name.size()) + " bytes; the limit is " +
                   std::to_string(kMaxActorNameBytes));
}

bool IsValidNamespaceName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNamespaceNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace keel::engine
