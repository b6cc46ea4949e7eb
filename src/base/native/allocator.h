// The process's allocator: glibc's malloc, or mimalloc where the build links it (the
// release preset sets KEEL_MIMALLOC; sanitizer builds keep their own allocator).
// Thread-safety: both functions may be called from any thread.
#pragma once

#include <string>

namespace keel {

// "mimalloc 2.0.9" when mimalloc serves this process's malloc, else "glibc malloc". It
// asks the allocator about a live block, so a link that failed to replace malloc reads
// as glibc (the engine logs it at start; CI's release smoke checks it).
std::string AllocatorName();

// Hands memory the allocator holds but nothing uses back to the kernel: the runtime calls
// it after actors sleep, so sleeping actors cost its process nothing. glibc trims every
// arena; mimalloc frees the calling thread's empty pages and the process's empty segments,
// so call it on the thread that freed the memory (the runtime's I/O thread does).
void ReleaseFreeMemory();

}  // namespace keel
