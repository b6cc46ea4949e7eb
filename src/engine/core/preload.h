// The preload plan an envoy advertises for an actor name: which of the actor's KV keys the
// engine should read into the start command (envoy-protocol.md §5.4), so the actor starts
// without KV round trips. It is the "preload" member of the actor name's metadata JSON
// (ToRivetMetadata.prepopulateActorNames), Keel's format:
//
//   {"preload": {"keys": [[1], [6]],
//                "prefixes": [{"prefix": [2], "maxBytes": 65536, "partial": false}]}}
//
// Keys and prefixes are arrays of byte values. The engine reads the entries with
// storage::ActorKv::Preload under its global budget (preload_max_total_bytes).
#pragma once

#include <optional>
#include <string_view>

#include "storage/actor_kv.h"

namespace keel::engine {

// Limits on what one plan may list (a larger plan is malformed).
inline constexpr size_t kMaxPreloadKeys = 64;
inline constexpr size_t kMaxPreloadPrefixes = 16;

// The plan in `metadata_json`; nullopt when there is none or it is malformed (then the
// actor simply reads its KV itself). Never throws.
std::optional<storage::PreloadPlan> ParsePreloadPlan(std::string_view metadata_json);

}  // namespace keel::engine
