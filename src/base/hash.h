// HashBytes: a fast, well-mixed 64-bit hash of a byte string — FNV-1a over the bytes, then
// splitmix64's finaliser, so that nearby inputs land far apart. Not cryptographic; stable
// across platforms and runs (it names things outside the process, e.g. PostgreSQL advisory
// locks), so its output must never change.
#pragma once

#include <cstdint>

#include "base/bytes.h"

namespace keel {

// `seed` is mixed into the starting state: the same bytes hash apart under different seeds.
inline uint64_t HashBytes(ByteView bytes, uint64_t seed = 0) {
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace keel
