// Engine IDs (actor and namespace IDs), wire-compatible with Rivet's v1 IDs
// (docs envoy-protocol.md §2.2 "Note on Id").
//
// Binary form, 19 bytes: [0x01 version][16-byte UUID v4][2-byte big-endian datacenter label].
// Text form: the 19 bytes read as a little-endian 152-bit integer (byte 0 least
// significant), written as exactly 30 lowercase base36 digits ('0'-'9', 'a'-'z'),
// least-significant digit first. 36^4 is a multiple of 256, so the first four characters
// alone determine the version byte.
// Used by the orchestrator, gateway, KV/page paths and REST API. Thread-safety: value type.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/random.h"
#include "base/result.h"

namespace keel::engine {

class EngineId {
 public:
  static constexpr size_t kByteSize = 19;
  static constexpr size_t kTextSize = 30;
  static constexpr uint8_t kVersion = 1;

  // The nil ID: version 1, all-zero UUID, datacenter label 0 (text "1" then 29 '0').
  // A placeholder for default-constructed holders; Generate never returns it.
  EngineId();

  // A fresh ID: a random RFC 4122 version-4 UUID drawn from `random`, tagged with
  // `datacenter_label`.
  static EngineId Generate(Random& random, uint16_t datacenter_label);

  // An ID from its parts (tests, tools, migrations). `uuid` is used as given.
  static EngineId FromUuid(const std::array<uint8_t, 16>& uuid, uint16_t datacenter_label);

  // Parses the 30-character text form. Errors (all `id.invalid`, message says why):
  // wrong length, a character outside [0-9a-z], a value that does not fit in 152 bits,
  // a version byte other than 1.
  static Result<EngineId> Parse(std::string_view text);

  // Accepts exactly 19 bytes whose first byte is the version 1; else `id.invalid`.
  static Result<EngineId> FromBytes(ByteView bytes);

  // The 30-character text form; Parse(ToString()) == *this.
  std::string ToString() const;

  // The 19-byte binary form; valid while this object lives.
  ByteView bytes() const { return ByteView(bytes_.data(), bytes_.size()); }
  // The 16 UUID bytes (bytes 1..16).
  std::array<uint8_t, 16> uuid() const;
  uint16_t datacenter_label() const;

  // Orders by the binary form (byte 0 first). Equality is byte equality.
  friend bool operator==(const EngineId&, const EngineId&) = default;
  friend std::strong_ordering operator<=>(const EngineId&, const EngineId&) = default;

  // A well-mixed hash of the bytes, stable across platforms.
  size_t Hash() const;

 private:
  explicit EngineId(const std::array<uint8_t, kByteSize>& bytes) : bytes_(bytes) {}

  std::array<uint8_t, kByteSize> bytes_;
};

// For std::unordered_map<EngineId, ...> (std::hash is specialized too).
struct EngineIdHash {
  size_t operator()(const EngineId& id) const { return id.Hash(); }
};

}  // namespace keel::engine

template <>
struct std::hash<keel::engine::EngineId> {
  size_t operator()(const keel::engine::EngineId& id) const { return id.Hash(); }
};
