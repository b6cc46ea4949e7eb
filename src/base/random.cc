#include "base/random.h"

#include <cstdio>
#include <cstdlib>

namespace keel {
namespace {

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Random::Random(uint64_t seed) : seed_(seed) {
  // splitmix64 output is a bijection of its (distinct) counter values, so at most one of
  // the four words is zero: the state is never all-zero, the one state xoshiro must avoid.
  uint64_t x = seed;
  for (uint64_t& word : state_) word = SplitMix64(x);
}

uint64_t Random::NextU64() {
  // xoshiro256** 1.0 (Blackman & Vigna, public domain reference algorithm).
  const uint64_t result = Rotl(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = Rotl(state_[3], 45);
  return result;
}

uint64_t Random::UniformU64(uint64_t range) {
  if (range == max()) return NextU64();
  const uint64_t n = range + 1;
  // Reject the lowest (2^64 mod n) values so that the remaining count is a multiple of n;
  // then `x % n` is exactly uniform. At most half the values are rejected.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t x = NextU64();
    if (x >= threshold) return x % n;
  }
}

double Random::NextDouble() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

void Random::Fill(std::span<uint8_t> out) {
  size_t i = 0;
  while (i < out.size()) {
    uint64_t word = NextU64();
    // Little-endian byte order, so the bytes are the same on every platform.
    for (int b = 0; b < 8 && i < out.size(); ++b, ++i) {
      out[i] = static_cast<uint8_t>(word >> (8 * b));
    }
  }
}

std::string Random::Uuid4() {
  static constexpr char kDigits[] = "0123456789abcdef";
  uint8_t bytes[16];
  Fill(bytes);
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // variant 10xx
  // Digits written in place; the dashes stay at 8, 13, 18 and 23.
  std::string out(36, '-');
  size_t pos = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) ++pos;
    out[pos++] = kDigits[bytes[i] >> 4];
    out[pos++] = kDigits[bytes[i] & 0x0f];
  }
  return out;
}

void Random::BadRange() {
  std::fprintf(stderr, "keel: Random::Uniform called with hi < lo\n");
  std::abort();
}

}  // namespace keel
