// BuildExact: encoders that append field by field, without paying for each doubling of
// the buffer. Thread-safety: each thread uses its own scratch buffer.
#pragma once

#include "base/bytes.h"

namespace keel {

namespace internal {
// The calling thread's scratch buffer for BuildExact (empty), or null while it is in use.
Bytes* AcquireScratch();
void ReleaseScratch(Bytes* scratch);
}  // namespace internal

// The bytes that `fill(Bytes&)` appends to an empty buffer, returned in a buffer of
// exactly that size. `fill` writes into a per-thread scratch buffer that keeps its
// capacity between calls, so an encoder that appends field by field costs one allocation
// instead of one per doubling (1, 2, 4, … bytes), and a result that is kept (a persisted
// record, a queued frame) carries no spare capacity. A BuildExact inside another's
// `fill` builds in a buffer of its own.
template <typename Fill>
Bytes BuildExact(Fill&& fill) {
  Bytes* scratch = internal::AcquireScratch();
  if (scratch == nullptr) {
    Bytes out;
    fill(out);
    return out;
  }
  struct Release {
    Bytes* scratch;
    ~Release() { internal::ReleaseScratch(scratch); }
  } release{scratch};
  fill(*scratch);
  return Bytes(scratch->begin(), scratch->end());
}

}  // namespace keel
