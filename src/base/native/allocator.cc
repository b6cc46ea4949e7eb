#include "base/native/allocator.h"

#include <cstdlib>

#if KEEL_WITH_MIMALLOC
#include <mimalloc.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace keel {

std::string AllocatorName() {
#if KEEL_WITH_MIMALLOC
  // Linked is not enough: malloc must resolve to mimalloc's, ahead of glibc's.
  void* probe = std::malloc(16);
  const bool served = mi_is_in_heap_region(probe);
  std::free(probe);
  if (served) {
    const int v = mi_version();  // e.g. 209 for 2.0.9
    return "mimalloc " + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
           std::to_string(v % 10);
  }
#endif
#if defined(__GLIBC__)
  return "glibc malloc";
#else
  return "system malloc";
#endif
}

void ReleaseFreeMemory() {
#if KEEL_WITH_MIMALLOC
  mi_collect(true);
#endif
#if defined(__GLIBC__)
  // All of the heap under glibc; under mimalloc, whatever glibc's arenas still hold (next
  // to nothing, so the call is cheap).
  malloc_trim(0);
#endif
}

}  // namespace keel
