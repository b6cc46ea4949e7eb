#include "protocol/bare/reader.h"

#include <string>

#include "base/utf8.h"
#include "protocol/bare/codec.h"

namespace keel::bare {

std::string_view DecodeFailureKindName(DecodeFailure::Kind kind) {
  switch (kind) {
    case DecodeFailure::Kind::kTruncated: return "truncated";
    case DecodeFailure::Kind::kNonCanonicalVarint: return "non_canonical_varint";
    case DecodeFailure::Kind::kVarintOverflow: return "varint_overflow";
    case DecodeFailure::Kind::kInvalidBool: return "invalid_bool";
    case DecodeFailure::Kind::kInvalidUtf8: return "invalid_utf8";
    case DecodeFailure::Kind::kUnknownTag: return "unknown_tag";
    case DecodeFailure::Kind::kTooLong: return "too_long";
    case DecodeFailure::Kind::kTooDeep: return "too_deep";
    case DecodeFailure::Kind::kDuplicateMapKey: return "duplicate_map_key";
    case DecodeFailure::Kind::kTrailingBytes: return "trailing_bytes";
    case DecodeFailure::Kind::kInvalidValue: return "invalid_value";
  }
  return "unknown";
}

bool Reader::UintSlow(uint64_t& v) {
  size_t start = offset();
  uint64_t out = 0;
  for (int i = 0; i < 10; ++i) {
    if (p_ >= end_) return Fail(DecodeFailure::Kind::kTruncated, offset(), "truncated varint");
    uint8_t b = *p_++;
    if (i == 9 && b > 1) {
      return Fail(DecodeFailure::Kind::kVarintOverflow, start, "varint above 2^64-1");
    }
    out |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      // A final zero byte after at least one byte means a shorter encoding existed.
      if (b == 0 && i > 0) {
        return Fail(DecodeFailure::Kind::kNonCanonicalVarint, start, "non-canonical varint");
      }
      v = out;
      return true;
    }
  }
  return Fail(DecodeFailure::Kind::kVarintOverflow, start, "varint longer than 10 bytes");
}

bool Reader::Length(uint64_t& n, size_t min_element_size) {
  size_t at = offset();
  if (!Uint(n)) return false;
  if (n > limits_.max_container_len) {
    return Fail(DecodeFailure::Kind::kTooLong, at, "container length above limit");
  }
  // Each element needs at least min_element_size bytes, so a count the remaining
  // input cannot hold is rejected before anything is allocated.
  if (min_element_size > 0 && n > remaining() / min_element_size) {
    return Fail(DecodeFailure::Kind::kTruncated, at, "container length exceeds input");
  }
  return true;
}

bool Reader::StrView(std::string_view& s) {
  size_t at = offset();
  uint64_t n;
  if (!Uint(n)) return false;
  if (n > limits_.max_bytes_len) return Fail(DecodeFailure::Kind::kTooLong, at, "str too long");
  if (n > remaining()) return Fail(DecodeFailure::Kind::kTruncated, at, "str exceeds input");
  std::string_view view(reinterpret_cast<const char*>(p_), static_cast<size_t>(n));
  if (!IsValidUtf8(view)) return Fail(DecodeFailure::Kind::kInvalidUtf8, at, "invalid UTF-8");
  p_ += n;
  s = view;
  return true;
}

bool Reader::DataView(ByteView& d) {
  size_t at = offset();
  uint64_t n;
  if (!Uint(n)) return false;
  if (n > limits_.max_bytes_len) return Fail(DecodeFailure::Kind::kTooLong, at, "data too long");
  if (n > remaining()) return Fail(DecodeFailure::Kind::kTruncated, at, "data exceeds input");
  d = ByteView(p_, static_cast<size_t>(n));
  p_ += n;
  return true;
}

bool Reader::Fail(DecodeFailure::Kind kind, size_t at, std::string_view detail) {
  if (!failed_) {
    failed_ = true;
    failure_.kind = kind;
    failure_.offset = at;
    failure_.detail.assign(detail.data(), detail.size());
    p_ = end_;  // stop further reads
  }
  return false;
}

bool Reader::FailUnknownTag(size_t at, uint32_t tag, std::string_view type_name) {
  std::string detail = "unknown tag ";
  detail += std::to_string(tag);
  detail += " for ";
  detail += type_name;
  return Fail(DecodeFailure::Kind::kUnknownTag, at, detail);
}

bool Reader::FailDuplicateKey(size_t at) {
  return Fail(DecodeFailure::Kind::kDuplicateMapKey, at, "duplicate map key");
}

Error Reader::ToError(std::string_view type_name) const {
  std::string msg;
  msg += type_name;
  msg += ": ";
  msg += failure_.detail;
  msg += " (";
  msg += DecodeFailureKindName(failure_.kind);
  msg += " at byte ";
  msg += std::to_string(failure_.offset);
  msg += ")";
  return Error("protocol", "decode_failed", std::move(msg));
}

Result<std::pair<uint16_t, ByteView>> SplitVersionPrefix(ByteView framed, uint16_t oldest,
                                                         uint16_t latest) {
  if (framed.size() < 2) {
    return Error("protocol", "decode_failed", "versioned payload shorter than 2 bytes");
  }
  uint16_t version = static_cast<uint16_t>(framed[0] | (framed[1] << 8));
  if (version < oldest || version > latest) {
    return Error("protocol", "unsupported_version", "invalid version: " + std::to_string(version));
  }
  return std::pair<uint16_t, ByteView>{version, framed.subspan(2)};
}

}  // namespace keel::bare
