// BARE decoder primitives for untrusted input (envoy-protocol.md §1.4, strict mode).
//
// Every read is bounds-checked and returns false on failure; the first failure is kept
// (with the byte offset) and later reads keep failing, so generated decoders can chain
// reads and test once. Strictness: canonical varints only, bool/optional bytes must be
// 0 or 1, `str` must be valid UTF-8, container lengths are checked against the bytes
// left before anything is allocated, nesting depth is capped. The Reader never throws
// and never reads outside its view. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/error.h"

namespace keel::bare {

struct Limits {
  // Maximum nesting of structs/unions/lists/optionals/maps being decoded.
  uint32_t max_depth = 64;
  // Maximum element count of one list or map.
  uint64_t max_container_len = uint64_t{1} << 24;
  // Maximum length of one `str` or `data`.
  uint64_t max_bytes_len = uint64_t{1} << 30;
};

// Why decoding failed; `offset` is the byte position where the problem was found.
struct DecodeFailure {
  enum class Kind : uint8_t {
    kTruncated,
    kNonCanonicalVarint,
    kVarintOverflow,
    kInvalidBool,
    kInvalidUtf8,
    kUnknownTag,
    kTooLong,
    kTooDeep,
    kDuplicateMapKey,
    kTrailingBytes,
    kInvalidValue,
  };
  Kind kind = Kind::kTruncated;
  size_t offset = 0;
  std::string detail;
};

std::string_view DecodeFailureKindName(DecodeFailure::Kind kind);

class Reader {
 public:
  explicit Reader(ByteView in, const Limits& limits = Limits())
      : begin_(in.data()), p_(in.data()), end_(in.data() + in.size()), limits_(limits) {}

  bool ok() const { return !failed_; }
  size_t offset() const { return static_cast<size_t>(p_ - begin_); }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  const DecodeFailure& failure() const { return failure_; }
  const Limits& limits() const { return limits_; }

  bool U8(uint8_t& v) {
    if (!Need(1)) return false;
    v = *p_++;
    return true;
  }
  bool Bool(bool& v) {
    uint8_t b;
    if (!U8(b)) return false;
    if (b > 1) return Fail(DecodeFailure::Kind::kInvalidBool, offset() - 1, "bool byte above 1");
    v = b == 1;
    return true;
  }
  bool U16(uint16_t& v) { return Fixed(v); }
  bool U32(uint32_t& v) { return Fixed(v); }
  bool U64(uint64_t& v) { return Fixed(v); }
  bool I8(int8_t& v) {
    uint8_t u;
    if (!U8(u)) return false;
    v = static_cast<int8_t>(u);
    return true;
  }
  bool I16(int16_t& v) { return FixedSigned<uint16_t>(v); }
  bool I32(int32_t& v) { return FixedSigned<uint32_t>(v); }
  bool I64(int64_t& v) { return FixedSigned<uint64_t>(v); }
  bool F32(float& v) {
    uint32_t bits;
    if (!Fixed(bits)) return false;
    std::memcpy(&v, &bits, 4);
    return true;
  }
  bool F64(double& v) {
    uint64_t bits;
    if (!Fixed(bits)) return false;
    std::memcpy(&v, &bits, 8);
    return true;
  }

  // ULEB128; rejects non-canonical encodings and values above 2^64-1.
  bool Uint(uint64_t& v) {
    if (p_ < end_ && *p_ < 0x80) {  // fast path: one byte
      v = *p_++;
      return true;
    }
    return UintSlow(v);
  }
  bool Int(int64_t& v) {
    uint64_t u;
    if (!Uint(u)) return false;
    v = static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
    return true;
  }

  // A union tag or enum value: a varint that must fit in u32.
  bool Tag(uint32_t& v) {
    uint64_t u;
    size_t at = offset();
    if (!Uint(u)) return false;
    if (u > 0xffffffffu) return Fail(DecodeFailure::Kind::kUnknownTag, at, "tag above u32");
    v = static_cast<uint32_t>(u);
    return true;
  }

  // Length of a list or map whose elements take at least `min_element_size` bytes
  // each (0 for zero-sized elements): checked against the input left and the limits.
  bool Length(uint64_t& n, size_t min_element_size);

  bool Str(std::string& s) {
    std::string_view view;
    if (!StrView(view)) return false;
    s.assign(view.data(), view.size());
    return true;
  }
  // Borrowed view into the input (valid while the input is).
  bool StrView(std::string_view& s);
  bool Data(Bytes& d) {
    ByteView view;
    if (!DataView(view)) return false;
    d.assign(view.begin(), view.end());
    return true;
  }
  bool DataView(ByteView& d);
  bool FixedData(uint8_t* out, size_t n) {
    if (!Need(n)) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    return true;
  }

  // Optional presence byte (strict 0/1).
  bool Present(bool& present) {
    uint8_t b;
    if (!U8(b)) return false;
    if (b > 1) {
      return Fail(DecodeFailure::Kind::kInvalidBool, offset() - 1, "optional byte above 1");
    }
    present = b == 1;
    return true;
  }

  // Nesting guard: Enter() before decoding a nested container, Leave() after.
  bool Enter() {
    if (++depth_ > limits_.max_depth) {
      return Fail(DecodeFailure::Kind::kTooDeep, offset(), "nesting too deep");
    }
    return true;
  }
  void Leave() { --depth_; }

  // Fails unless every byte was consumed.
  bool ExpectEnd() {
    if (failed_) return false;
    if (p_ != end_) return Fail(DecodeFailure::Kind::kTrailingBytes, offset(), "trailing bytes");
    return true;
  }

  // Records the first failure and stops further reads. Out of line and cold, so the
  // small read functions above stay small enough to inline into the generated decoders.
  [[gnu::cold, gnu::noinline]] bool Fail(DecodeFailure::Kind kind, size_t at,
                                         std::string_view detail);
  bool FailUnknownTag(size_t at, uint32_t tag, std::string_view type_name);
  bool FailDuplicateKey(size_t at);

  // The failure as a `protocol.decode_failed` Error naming the type that was decoded.
  Error ToError(std::string_view type_name) const;

 private:
  bool Need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) {
      return Fail(DecodeFailure::Kind::kTruncated, offset(), "unexpected end of input");
    }
    return true;
  }
  template <typename U>
  bool Fixed(U& v) {
    if (!Need(sizeof(U))) return false;
    U out = 0;
    for (size_t i = 0; i < sizeof(U); ++i) out |= static_cast<U>(static_cast<U>(p_[i]) << (8 * i));
    p_ += sizeof(U);
    v = out;
    return true;
  }
  template <typename U, typename S>
  bool FixedSigned(S& v) {
    U u;
    if (!Fixed(u)) return false;
    v = static_cast<S>(u);
    return true;
  }
  bool UintSlow(uint64_t& v);

  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  Limits limits_;
  uint32_t depth_ = 0;
  bool failed_ = false;
  DecodeFailure failure_;
};

}  // namespace keel::bare
