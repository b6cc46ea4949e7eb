#include "engine/common/id.h"

#include <string>

namespace keel::engine {
namespace {

constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";

Error InvalidId(std::string message) { return Error("id", "invalid", std::move(message)); }

// Value of one base36 digit, or -1 for a character outside [0-9a-z].
int DigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'z') return c - 'a' + 10;
  return -1;
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
  // value = Σ digit[i] * 36^i, accumulated from the most significant digit (the last
  // character) as value = value * 36 + digit over a little-endian byte array.
  std::array<uint8_t, kByteSize> bytes{};
  for (size_t i = kTextSize; i-- > 0;) {
    int digit = DigitValue(text[i]);
    if (digit < 0) {
      return InvalidId("id has invalid character " + Printable(text[i]) + " at position " +
                       std::to_string(i) + " (expected lowercase base36)");
    }
    uint32_t carry = static_cast<uint32_t>(digit);
    for (auto& byte : bytes) {
      uint32_t v = static_cast<uint32_t>(byte) * 36 + carry;
      byte = static_cast<uint8_t>(v & 0xff);
      carry = v >> 8;
    }
    if (carry != 0) return InvalidId("id value does not fit in 19 bytes");
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
  // Repeated division by 36 of the little-endian integer; each remainder is the next
  // digit, least significant first. 36^30 > 2^152, so 30 digits always suffice.
  std::array<uint8_t, kByteSize> value = bytes_;
  std::string out(kTextSize, '0');
  for (size_t d = 0; d < kTextSize; ++d) {
    uint32_t rem = 0;
    for (size_t i = kByteSize; i-- > 0;) {
      uint32_t cur = (rem << 8) | value[i];
      value[i] = static_cast<uint8_t>(cur / 36);
      rem = cur % 36;
    }
    out[d] = kDigits[rem];
  }
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

size_t EngineId::Hash() const {
  // FNV-1a over the bytes, then a splitmix64 finalizer for avalanche.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t b : bytes_) {
    h ^= b;
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return static_cast<size_t>(h);
}

}  // namespace keel::engine
