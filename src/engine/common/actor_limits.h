// Limits on what an actor is created with, for every path that creates one, so none of them
// creates an actor its runtime could never run: REST POST/PUT /actors and the gateway's
// getOrCreate (`rvt-input`, `rvt-name`) check them. Key limits live with the key format
// (engine/gateway/actor_key.h).
// Thread-safety: constants and pure functions.
#pragma once

#include <cstddef>
#include <string_view>

#include "base/result.h"

namespace keel::engine {

// The largest value an actor's KV stores (envoy-protocol.md §5.1: 128 KiB); a runtime's
// write of a larger value fails with kv.value_too_large.
inline constexpr size_t kMaxActorKvValueBytes = size_t{128} << 10;

// The largest actor input (decoded bytes) a create accepts: 64 KiB. A runtime keeps the
// input inside the actor record, KV [1] (actors.md §3.5, `Actor.input`), for the actor's
// whole life, beside its state and scheduled events, and that record is one KV value. An
// input near the value limit leaves no room for the rest: every save of the record fails
// and the actor never starts again (actor.storage_failed on every call, across restarts).
// Half the value limit leaves the other half (~64 KiB) to state and schedule. Rivet's
// engine accepts 4 MiB (of base64 text), which a runtime cannot persist either.
inline constexpr size_t kMaxActorInputBytes = kMaxActorKvValueBytes / 2;

// Errors: actor.input_too_large when `input_bytes` > kMaxActorInputBytes.
Status ValidateActorInput(size_t input_bytes);

// The longest actor name (bytes of UTF-8) a create accepts: 128, as the envoy protocol's
// other identifiers (pool_name, envoy_key: envoy-protocol.md §3.2). The name is part of the
// engine's storage keys (by-name and key indexes, actor names) and of every start command.
inline constexpr size_t kMaxActorNameBytes = 128;

// Errors: actor.name_too_large when `name` is longer than kMaxActorNameBytes.
Status ValidateActorName(std::string_view name);

// A namespace name: 1-64 bytes of a-z, 0-9, '-' and '_'. POST /namespaces creates only
// such names, and keel-engine's `--namespace-token NAME=TOKEN` accepts only such names
// (a token for a name no namespace can have would never be used).
inline constexpr size_t kMaxNamespaceNameBytes = 64;
bool IsValidNamespaceName(std::string_view name);

}  // namespace keel::engine
