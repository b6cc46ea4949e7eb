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

// Runs `use(Bytes&)` on the calling thread's scratch buffer, empty and with the capacity
// earlier calls left it, and returns what `use` returns. Nested inside another use of the
// scratch, `use` gets a buffer of its own.
template <typename Use>
auto WithScratch(Use&& use) {
  Bytes* scratch = internal::AcquireScratch();
  if (scratch == nullptr) {
    Bytes own;
    return use(own);
  }
  struct Release {
    Bytes* scratch;
    ~Release() { internal::ReleaseScratch(scratch); }
  } release{scratch};
  return use(*scratch);
}

// The bytes that `fill(Bytes&)` appends to an empty buffer, returned in a buffer of
// exactly that size. `fill` writes into the per-thread scratch buffer (WithScratch), so an
// encoder that appends field by field costs one allocation instead of one per doubling
// (1, 2, 4, … bytes), and a result that is kept (a persisted record, a queued frame)
// carries no spare capacity.
template <typename Fill>
Bytes BuildExact(Fill&& fill) {
  return WithScratch([&fill](Bytes& buffer) {
    fill(buffer);
    return Bytes(buffer.begin(), buffer.end());
  });
}

}  // namespace keel
