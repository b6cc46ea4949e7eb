// BARE encoder primitives (envoy-protocol.md §1). A Writer appends to a caller-owned
// byte buffer; it never fails (encoding a well-typed value always succeeds). Integers
// are little-endian, lengths/tags are canonical ULEB128. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "base/bytes.h"

namespace keel::bare {

class Writer {
 public:
  // `out` must outlive the Writer; bytes are appended after its current contents.
  explicit Writer(Bytes& out) : out_(out) {}

  void Reserve(size_t extra) { out_.reserve(out_.size() + extra); }

  void U8(uint8_t v) { out_.push_back(v); }
  void Bool(bool v) { out_.push_back(v ? 1 : 0); }
  void U16(uint16_t v) { Fixed(v); }
  void U32(uint32_t v) { Fixed(v); }
  void U64(uint64_t v) { Fixed(v); }
  void I8(int8_t v) { U8(static_cast<uint8_t>(v)); }
  void I16(int16_t v) { Fixed(static_cast<uint16_t>(v)); }
  void I32(int32_t v) { Fixed(static_cast<uint32_t>(v)); }
  void I64(int64_t v) { Fixed(static_cast<uint64_t>(v)); }
  void F32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    Fixed(bits);
  }
  void F64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    Fixed(bits);
  }

  // ULEB128, minimal length.
  void Uint(uint64_t v) {
    if (v < 0x80) {  // fast path: every tag and enum value, most lengths
      out_.push_back(static_cast<uint8_t>(v));
      return;
    }
    uint8_t buf[10];
    size_t n = 0;
    while (v >= 0x80) {
      buf[n++] = static_cast<uint8_t>(v) | 0x80;
      v >>= 7;
    }
    buf[n++] = static_cast<uint8_t>(v);
    Raw(buf, n);
  }
  // Zig-zag, then ULEB128.
  void Int(int64_t v) {
    Uint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }

  void Str(std::string_view s) {
    Uint(s.size());
    Raw(s.data(), s.size());
  }
  void Data(ByteView d) {
    Uint(d.size());
    Raw(d.data(), d.size());
  }
  // data[N]: exactly N bytes, no length.
  void FixedData(const uint8_t* p, size_t n) { Raw(p, n); }

  // insert() copies straight into spare capacity; resize() + memcpy would first
  // zero-fill the new bytes, a second pass over every payload.
  void Raw(const void* p, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), bytes, bytes + n);
  }

  Bytes& buffer() { return out_; }

 private:
  template <typename U>
  void Fixed(U v) {
    uint8_t buf[sizeof(U)];
    for (size_t i = 0; i < sizeof(U); ++i) buf[i] = static_cast<uint8_t>(v >> (8 * i));
    Raw(buf, sizeof(U));
  }

  Bytes& out_;
};

}  // namespace keel::bare
