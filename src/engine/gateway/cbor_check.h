// CBOR well-formedness check for gateway `rvt-input` (actors.md §5.3): the gateway refuses
// input that is not one CBOR data item before creating an actor with it, without decoding
// it into values. Pure; thread-safe.
#pragma once

#include <cstddef>

#include "base/bytes.h"
#include "base/result.h"

namespace keel::engine::gateway {

// Nesting deeper than this (arrays, maps, tags) is refused.
inline constexpr size_t kMaxCborDepth = 256;

// Checks that `data` starts with one well-formed CBOR data item (RFC 8949 §3): valid
// heads, definite lengths within the buffer, indefinite-length items closed by a break,
// indefinite strings made of definite chunks of the same major type, text strings that are
// valid UTF-8, no reserved additional-information values, two-byte simple values >= 32.
// Bytes after the item are ignored (the reference gateway reads one item and stops).
// Errors: cbor.invalid with a short reason.
Status CheckCborItem(ByteView data);

}  // namespace keel::engine::gateway
