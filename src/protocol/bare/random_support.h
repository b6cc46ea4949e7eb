// Helpers used by the generated random-value functions (tests, fuzz seeds, benchmarks).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/random.h"

namespace keel::bare::random_support {

// Nesting beyond this depth gets empty lists and absent optionals, so values stay small.
inline constexpr int kMaxDepth = 8;

// Edge values show up often: 0, 1, 127/128 (varint boundary), all-ones, sign bits.
inline uint64_t RandomInt(Random& rng) {
  static constexpr uint64_t kEdges[] = {0,    1,           127,         128,
                                        300,  0xffff,      0xffffffff,  0x7fffffffffffffff,
                                        0x8000000000000000, ~uint64_t{0}};
  if (rng.Uniform<int>(0, 3) == 0) return kEdges[rng.Uniform<size_t>(0, std::size(kEdges) - 1)];
  return rng.NextU64() >> rng.Uniform<int>(0, 63);
}

// Valid UTF-8 including 2-, 3- and 4-byte sequences and NUL.
inline std::string RandomString(Random& rng) {
  static const char* kPieces[] = {"a", "Z", "0", " ", "\xc3\xb1", "\xe2\x82\xac",
                                  "\xf0\x9f\x92\xac", "" /* NUL, below */, "actor"};
  std::string out;
  int n = rng.Uniform<int>(0, 12);
  for (int i = 0; i < n; ++i) {
    size_t k = rng.Uniform<size_t>(0, std::size(kPieces) - 1);
    if (k == 7) {
      out.push_back('\0');
    } else {
      out += kPieces[k];
    }
  }
  return out;
}

inline Bytes RandomBytes(Random& rng) {
  Bytes out(rng.Uniform<size_t>(0, 40));
  rng.Fill(out);
  return out;
}

// Maps must not repeat keys: drop later duplicates.
template <typename K, typename V>
void DedupKeys(std::vector<std::pair<K, V>>& map) {
  std::vector<std::pair<K, V>> out;
  for (auto& entry : map) {
    bool seen = false;
    for (const auto& kept : out) seen = seen || kept.first == entry.first;
    if (!seen) out.push_back(std::move(entry));
  }
  map = std::move(out);
}

}  // namespace keel::bare::random_support
