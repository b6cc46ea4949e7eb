// Actor keys (actors.md §4.1): an ordered list of strings, in the serialised form used by
// REST `key` fields and engine storage, and in the gateway's comma-separated `rvt-key` form
// (§5.3). Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace keel::engine::gateway {

using ActorKey = std::vector<std::string>;

// The engine refuses serialised keys longer than this (actor.key_too_large).
inline constexpr size_t kMaxSerializedActorKeyBytes = 1024;

// Serialised form: [] -> "/"; otherwise the components joined with '/', where inside a
// component '\' is written "\\" and '/' is written "\/", and an empty component is written
// "\0". Injective: distinct keys give distinct strings.
std::string SerializeActorKey(const ActorKey& key);

// Inverse of SerializeActorKey, strict: only strings SerializeActorKey can produce are
// accepted, so ParseActorKey(s) succeeding implies SerializeActorKey(result) == s.
// Errors: actor.empty_key for "", actor.invalid_key for a dangling '\', an escape other
// than "\\", "\/" or a whole-component "\0", or an empty unescaped component ("a//b", "a/",
// "/a"). Does not enforce the length limit (see ValidateSerializedActorKey).
Result<ActorKey> ParseActorKey(std::string_view serialized);

// The engine's one check of a serialised key received from outside: REST create,
// get-or-create and the list filter (and meant for the gateway's getOrCreate, whose keys
// always parse but may be too long). In Rivet's order: actor.empty_key (""),
// actor.key_too_large (> kMaxSerializedActorKeyBytes bytes), then actor.invalid_key for a
// string ParseActorKey refuses (Keel's check: Rivet stores any string).
Status ValidateSerializedActorKey(std::string_view serialized);

// Gateway `rvt-key` form (value already form-decoded): "" -> []; otherwise split on every
// ',' ("a,,b" -> ["a", "", "b"]). Never fails.
ActorKey ParseGatewayKey(std::string_view decoded_value);

// Comma-joined `rvt-key` value (not yet percent-encoded). Errors: actor.invalid_key when a
// component contains ',' or the key is [""] (both unrepresentable in this form).
Result<std::string> FormatGatewayKey(const ActorKey& key);

}  // namespace keel::engine::gateway
