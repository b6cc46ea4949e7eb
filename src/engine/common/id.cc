#include "engine/common/id.h"

#include <string>

#include "base/hash.h"

namespace keel::engine {
namespace {

constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";

Error InvalidId(std::string message) { return Error("id", "invalid", std::move(message)); }

// Value of each base36 digit by character, -1 for a character outside [0-9a-z]: one load
// per character of an id, which the engine parses on every KV and SQLite request.
constexpr std::array<int8_t, 256> kDigitValues = [] {
  std::array<int8_t, 256> values{};
  values.fill(-1);
  for (int i = 0; i < 36; ++i)
    values[static_cast<unsigned char>(kDigits[i])] = static_cast<int8_t>(i);
  return values;
}();

int DigitValue(char c) { return kDigitValues[static_cast<unsigned char>(c)]; }

// A 152-bit id as a little-endian array of 64-bit limbs.
using Limbs = std::array<uint64_t, 3>;

constexpr uint64_t kPow36_12 = 4738381338321616896ULL;  // 36^12
constexpr uint64_t kPow36_6 = 2176782336ULL;            // 36^6
static_assert(kPow36_6 * kPow36_6 == kPow36_12);

// value = value * mul + add (no carry leaves the top limb for any 30-digit id).
void MulAdd(Limbs& value, uint64_t mul, uint64_t add) {
  unsigned __int128 carry = add;
  for (uint64_t& limb : value) {
    unsigned __int128 v = static_cast<unsigned __int128>(limb) * mul + carry;
    limb = static_cast<uint64_t>(v);
    carry = v >> 64;
  }
}

// value /= divisor; returns the remainder.
uint64_t DivMod(Limbs& value, uint64_t divisor) {
  unsigned __int128 rem = 0;
  for (size_t i = value.size(); i-- > 0;) {
    unsigned __int128 cur = (rem << 64) | value[i];
    value[i] = static_cast<uint64_t>(cur / divisor);
    rem = cur % divisor;
  }
  return static_cast<uint64_t>(rem);
}

std::string Printable(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7f) return std::string("'") + c + "'";
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 0xf];
}

}  // namespace

EngineId::EngineId() : bytes_{} { bytes_[0] = kVersion; }

EngineId EngineId::Generate(Random& random, uint16_t datacenter_label) {
  std::array<uint8_t, 16> uuid;
  random.Fill(uuid);
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);  // version 4
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return FromUuid(uuid, datacenter_label);
}

EngineId EngineId::FromUuid(const std::array<uint8_t, 16>& uuid, uint16_t datacenter_label) {
  std::array<uint8_t, kByteSize> bytes{};
  bytes[0] = kVersion;
  for (size_t i = 0; i < uuid.size(); ++i) bytes[1 + i] = uuid[i];
  bytes[17] = static_cast<uint8_t>(datacenter_label >> 8);
  bytes[18] = static_cast<uint8_t>(datacenter_label & 0xff);
  return EngineId(bytes);
}

Result<EngineId> EngineId::Parse(std::string_view text) {
  if (text.size() != kTextSize) {
    return InvalidId("id must be " + std::to_string(kTextSize) + " characters, got " +
                     std::to_string(text.size()));
  }
  // value = Σ digit[i] * 36^i (the last character is the most significant digit). The
  // digits are gathered in 64-bit chunks of at most 12 (36^12 < 2^63), most significant
  // first — characters 29…18, 17…6 and 5…0 — and only the chunks are folded into three
  // 64-bit limbs: value = (high * 36^12 + middle) * 36^6 + low. 36^30 < 2^156, so nothing
  // carries out of the limbs, and the 152-bit bound is checked once at the end.
  uint64_t chunks[3] = {0, 0, 0};
  constexpr size_t kChunkEnd[3] = {18, 6, 0};  // each chunk's least significant character
  size_t i = kTextSize;
  for (size_t c = 0; c < 3; ++c) {
    while (i > kChunkEnd[c]) {
      --i;
      const int digit = DigitValue(text[i]);
      if (digit < 0) {
        return InvalidId("id has invalid character " + Printable(text[i]) + " at position " +
                         std::to_string(i) + " (expected lowercase base36)");
      }
      chunks[c] = chunks[c] * 36 + static_cast<uint64_t>(digit);
    }
  }
  Limbs value{chunks[0], 0, 0};
  MulAdd(value, kPow36_12, chunks[1]);
  MulAdd(value, kPow36_6, chunks[2]);
  if ((value[2] >> (kByteSize * 8 - 128)) != 0) {
    return InvalidId("id value does not fit in 19 bytes");
  }
  std::array<uint8_t, kByteSize> bytes;
  for (size_t i = 0; i < kByteSize; ++i) {
    bytes[i] = static_cast<uint8_t>(value[i / 8] >> (8 * (i % 8)));
  }
  if (bytes[0] != kVersion) {
    return InvalidId("unsupported id version " + std::to_string(bytes[0]) + " (expected " +
                     std::to_string(kVersion) + ")");
  }
  return EngineId(bytes);
}

Result<EngineId> EngineId::FromBytes(ByteView bytes) {
  if (bytes.size() != kByteSize) {
    return InvalidId("binary id must be " + std::to_string(kByteSize) + " bytes, got " +
                     std::to_string(bytes.size()));
  }
  if (bytes[0] != kVersion) {
    return InvalidId("unsupported id version " + std::to_string(bytes[0]) + " (expected " +
                     std::to_string(kVersion) + ")");
  }
  std::array<uint8_t, kByteSize> copy;
  for (size_t i = 0; i < kByteSize; ++i) copy[i] = bytes[i];
  return EngineId(copy);
}

std::string EngineId::ToString() const {
  // Least significant digit first. The value is divided by 36^12 (the largest power of
  // 36 below 2^63) twice; each remainder, and what is left, then gives its digits with
  // 64-bit divisions by the constant 36: 12 + 12 + 6 = 30 digits (36^30 > 2^152).
  Limbs value{};
  for (size_t i = 0; i < kByteSize; ++i) {
    value[i / 8] |= static_cast<uint64_t>(bytes_[i]) << (8 * (i % 8));
  }
  std::string out(kTextSize, '0');
  size_t d = 0;
  auto put_digits = [&](uint64_t chunk, size_t count) {
    for (size_t k = 0; k < count; ++k, ++d) {
      out[d] = kDigits[chunk % 36];
      chunk /= 36;
    }
  };
  put_digits(DivMod(value, kPow36_12), 12);
  put_digits(DivMod(value, kPow36_12), 12);
  put_digits(value[0], kTextSize - 24);  // < 36^6 once 36^24 has been divided out
  return out;
}

std::array<uint8_t, 16> EngineId::uuid() const {
  std::array<uint8_t, 16> out;
  for (size_t i = 0; i < out.size(); ++i) out[i] = bytes_[1 + i];
  return out;
}

uint16_t EngineId::datacenter_label() const {
  return static_cast<uint16_t>((bytes_[17] << 8) | bytes_[18]);
}

size_t EngineId::Hash() const { return static_cast<size_t>(HashBytes(bytes_)); }

}  // namespace keel::engine
