// Random: the seeded, deterministic generator every Keel module draws from (IDs, jitter,
// simulation choices). xoshiro256** with its state expanded from a 64-bit seed by
// splitmix64, so a seed reproduces the same stream on every platform, native or wasm.
// Never reads OS entropy itself; shells pick the seed. Pass by reference: copying is
// deleted so a stream is never silently duplicated (moving transfers the stream; do not
// draw from a moved-from generator).
// Thread-safety: none; one generator per thread or strand.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>

namespace keel {

class Random {
 public:
  // UniformRandomBitGenerator, so it works with <random> distributions and std::shuffle.
  using result_type = uint64_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }

  explicit Random(uint64_t seed);
  Random(const Random&) = delete;
  Random& operator=(const Random&) = delete;
  Random(Random&&) = default;
  Random& operator=(Random&&) = default;

  // The seed this generator was constructed with (print it to reproduce a run).
  uint64_t seed() const { return seed_; }

  uint64_t NextU64();
  result_type operator()() { return NextU64(); }

  // Uniform in [lo, hi], both inclusive, without modulo bias.
  // REQUIRES: lo <= hi (aborts otherwise).
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  T Uniform(T lo, T hi);

  // Uniform in [0, 1) with 53 bits of precision.
  double NextDouble();

  // Overwrites every byte of `out`.
  void Fill(std::span<uint8_t> out);

  // A random (version 4, RFC 4122 variant) UUID in lowercase 8-4-4-4-12 form.
  std::string Uuid4();

 private:
  // Uniform in [0, range], both inclusive.
  uint64_t UniformU64(uint64_t range);
  [[noreturn]] static void BadRange();

  uint64_t seed_;
  std::array<uint64_t, 4> state_;
};

template <std::integral T>
  requires(!std::same_as<T, bool>)
T Random::Uniform(T lo, T hi) {
  if (hi < lo) BadRange();
  // Work in the unsigned type of the same width: unsigned wrap-around gives the exact
  // span and offset even for the full signed range.
  using U = std::make_unsigned_t<T>;
  U span = static_cast<U>(static_cast<U>(hi) - static_cast<U>(lo));
  U offset = static_cast<U>(UniformU64(span));
  return static_cast<T>(static_cast<U>(static_cast<U>(lo) + offset));
}

}  // namespace keel
