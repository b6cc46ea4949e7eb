// CBOR encoder and a strict, bounded decoder (RFC 8949). The decoder treats its input
// as hostile: every length is checked against the bytes that remain before anything is
// allocated, nesting is bounded by CborLimits::max_depth (recursion depth) and the total
// number of array/map entries by max_items, so no input can exhaust the stack or memory.
#include <cmath>
#include <cstring>
#include <string>

#include "base/build_exact.h"
#include "base/utf8.h"
#include "value/internal.h"
#include "value/value.h"

namespace keel {
namespace {

void AppendHead(uint8_t major, uint64_t arg, Bytes& out) {
  const uint8_t m = static_cast<uint8_t>(major << 5);
  if (arg < 24) {
    out.push_back(static_cast<uint8_t>(m | arg));
    return;
  }
  int n;
  if (arg <= 0xff) {
    out.push_back(m | 24);
    n = 1;
  } else if (arg <= 0xffff) {
    out.push_back(m | 25);
    n = 2;
  } else if (arg <= 0xffffffffULL) {
    out.push_back(m | 26);
    n = 4;
  } else {
    out.push_back(m | 27);
    n = 8;
  }
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<uint8_t>(arg >> (8 * i)));
}

double HalfToDouble(uint16_t half) {
  const int exp = (half >> 10) & 0x1f;
  const int mant = half & 0x3ff;
  double val;
  if (exp == 0) {
    val = std::ldexp(mant, -24);
  } else if (exp != 31) {
    val = std::ldexp(mant + 1024, exp - 25);
  } else {
    val = mant == 0 ? INFINITY : NAN;
  }
  return (half & 0x8000) ? -val : val;
}

class Decoder {
 public:
  Decoder(ByteView in, const CborLimits& limits) : in_(in), limits_(limits) {}

  Result<Value> DecodeAll() {
    Value v;
    if (!Item(v, 0)) return MakeError();
    if (pos_ != in_.size()) {
      Fail("trailing bytes");
      return MakeError();
    }
    return v;
  }

 private:
  static constexpr uint8_t kBreak = 0xff;

  bool Fail(const char* what) { return failure_.Record(what, pos_); }
  Error MakeError() const { return failure_.ToError("invalid_cbor"); }

  size_t Remaining() const { return in_.size() - pos_; }

  bool ReadUint(int n, uint64_t& out) {
    if (Remaining() < static_cast<size_t>(n)) return Fail("truncated input");
    out = 0;
    for (int i = 0; i < n; ++i) out = (out << 8) | in_[pos_++];
    return true;
  }

  // Reads a head's argument. `indefinite` is set for additional info 31 (the caller
  // decides whether the major type allows it).
  bool Argument(uint8_t info, uint64_t& arg, bool& indefinite) {
    indefinite = false;
    if (info < 24) {
      arg = info;
      return true;
    }
    switch (info) {
      case 24:
        return ReadUint(1, arg);
      case 25:
        return ReadUint(2, arg);
      case 26:
        return ReadUint(4, arg);
      case 27:
        return ReadUint(8, arg);
      case 31:
        indefinite = true;
        arg = 0;
        return true;
      default:
        return Fail("reserved additional information");
    }
  }

  bool CountItems(uint64_t n) {
    if (n > limits_.max_items - items_) return Fail("too many items");
    items_ += static_cast<size_t>(n);
    return true;
  }

  // A definite-length string chunk of `len` bytes appended to `out`.
  bool Chunk(uint64_t len, std::string& out) {
    if (len > Remaining()) return Fail("length exceeds input");
    out.append(reinterpret_cast<const char*>(in_.data() + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return true;
  }

  bool String(uint8_t major, uint64_t arg, bool indefinite, std::string& out) {
    if (!indefinite) return Chunk(arg, out);
    for (;;) {
      if (Remaining() == 0) return Fail("truncated input");
      const uint8_t b = in_[pos_];
      if (b == kBreak) {
        ++pos_;
        return true;
      }
      ++pos_;
      if ((b >> 5) != major) return Fail("bad chunk in indefinite-length string");
      uint64_t len;
      bool chunk_indefinite;
      if (!Argument(b & 0x1f, len, chunk_indefinite)) return false;
      if (chunk_indefinite) return Fail("nested indefinite-length string");
      // Text chunks must each be valid UTF-8 on their own (RFC 8949 §3.2.3).
      const size_t start = out.size();
      if (!Chunk(len, out)) return false;
      if (major == 3 && !IsValidUtf8(std::string_view(out).substr(start))) {
        return Fail("invalid UTF-8 in text");
      }
    }
  }

  bool Item(Value& out, size_t depth) {
    if (depth > limits_.max_depth) return Fail("nesting too deep");
    if (Remaining() == 0) return Fail("truncated input");
    const size_t head_pos = pos_;
    const uint8_t b = in_[pos_++];
    const uint8_t major = b >> 5;
    const uint8_t info = b & 0x1f;
    if (major == 7) return Simple(info, out);
    uint64_t arg;
    bool indefinite;
    if (!Argument(info, arg, indefinite)) return false;
    switch (major) {
      case 0:
        if (indefinite) return Fail("indefinite length on an integer");
        out = Value(static_cast<unsigned long long>(arg));
        return true;
      case 1:
        if (indefinite) return Fail("indefinite length on an integer");
        if (arg > static_cast<uint64_t>(INT64_MAX)) {
          pos_ = head_pos;
          return Fail("negative integer below INT64_MIN");
        }
        out = Value(static_cast<long long>(-1 - static_cast<int64_t>(arg)));
        return true;
      case 2: {
        std::string s;
        if (!String(2, arg, indefinite, s)) return false;
        out = Value(Bytes(s.begin(), s.end()));
        return true;
      }
      case 3: {
        std::string s;
        if (!String(3, arg, indefinite, s)) return false;
        if (!indefinite && !IsValidUtf8(s)) {
          pos_ = head_pos;
          return Fail("invalid UTF-8 in text");
        }
        out = Value(std::move(s));
        return true;
      }
      case 4:
        return ArrayItems(arg, indefinite, out, depth);
      case 5:
        return MapItems(arg, indefinite, out, depth);
      default:  // 6: tag
        if (indefinite) return Fail("indefinite length on a tag");
        if (!Item(out, depth + 1)) return false;
        if ((arg == 2 || arg == 3) && out.is_bytes()) BigNum(arg == 3, out);
        return true;
    }
  }

  // Tags 2/3 whose magnitude fits become plain integers; larger ones stay bytes.
  static void BigNum(bool negative, Value& out) {
    const Bytes& b = out.as_bytes();
    size_t i = 0;
    while (i < b.size() && b[i] == 0) ++i;
    if (b.size() - i > 8) return;
    uint64_t n = 0;
    for (; i < b.size(); ++i) n = (n << 8) | b[i];
    if (!negative) {
      out = Value(static_cast<unsigned long long>(n));
    } else if (n <= static_cast<uint64_t>(INT64_MAX)) {
      out = Value(static_cast<long long>(-1 - static_cast<int64_t>(n)));
    }
  }

  bool ArrayItems(uint64_t n, bool indefinite, Value& out, size_t depth) {
    Value::Array items;
    if (!indefinite) {
      // Every item takes at least one byte: a count above the remaining input is a lie
      // and must not size an allocation.
      if (n > Remaining()) return Fail("array length exceeds input");
      if (!CountItems(n)) return false;
      items.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) {
        items.emplace_back();
        if (!Item(items.back(), depth + 1)) return false;
      }
    } else {
      for (;;) {
        if (Remaining() == 0) return Fail("truncated input");
        if (in_[pos_] == kBreak) {
          ++pos_;
          break;
        }
        if (!CountItems(1)) return false;
        items.emplace_back();
        if (!Item(items.back(), depth + 1)) return false;
      }
    }
    out = Value(std::move(items));
    return true;
  }

  bool MapItems(uint64_t n, bool indefinite, Value& out, size_t depth) {
    Value::Map entries;
    if (!indefinite) {
      if (n > Remaining() / 2) return Fail("map length exceeds input");
      if (!CountItems(n)) return false;
      entries.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i) {
        entries.emplace_back();
        if (!Item(entries.back().first, depth + 1)) return false;
        if (!Item(entries.back().second, depth + 1)) return false;
      }
    } else {
      for (;;) {
        if (Remaining() == 0) return Fail("truncated input");
        if (in_[pos_] == kBreak) {
          ++pos_;
          break;
        }
        if (!CountItems(1)) return false;
        entries.emplace_back();
        if (!Item(entries.back().first, depth + 1)) return false;
        if (!Item(entries.back().second, depth + 1)) return false;
      }
    }
    out = Value(std::move(entries));
    return true;
  }

  bool Simple(uint8_t info, Value& out) {
    uint64_t bits;
    switch (info) {
      case 20:
        out = Value(false);
        return true;
      case 21:
        out = Value(true);
        return true;
      case 22:
        out = Value(nullptr);
        return true;
      case 23:
        out = Value::MakeUndefined();
        return true;
      case 25:
        if (!ReadUint(2, bits)) return false;
        out = Value(HalfToDouble(static_cast<uint16_t>(bits)));
        return true;
      case 26: {
        if (!ReadUint(4, bits)) return false;
        const auto u32 = static_cast<uint32_t>(bits);
        float f;
        std::memcpy(&f, &u32, sizeof f);
        out = Value(f);
        return true;
      }
      case 27: {
        if (!ReadUint(8, bits)) return false;
        double d;
        std::memcpy(&d, &bits, sizeof d);
        out = Value(d);
        return true;
      }
      case 31:
        --pos_;
        return Fail("unexpected break");
      default:
        // Other simple values (0–19, 24 + byte) have no place in the value model.
        --pos_;
        return Fail("unsupported simple value");
    }
  }

  ByteView in_;
  const CborLimits& limits_;
  size_t pos_ = 0;
  size_t items_ = 0;
  internal::FirstFailure failure_;
};

}  // namespace

void AppendCbor(const Value& value, Bytes& out) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      out.push_back(0xf7);
      return;
    case Value::Kind::kNull:
      out.push_back(0xf6);
      return;
    case Value::Kind::kBool:
      out.push_back(value.as_bool() ? 0xf5 : 0xf4);
      return;
    case Value::Kind::kInt: {
      const int64_t v = value.as_int();
      if (v >= 0) {
        AppendHead(0, static_cast<uint64_t>(v), out);
      } else {
        // -1 - v without overflow: ~v is exactly that in two's complement.
        AppendHead(1, ~static_cast<uint64_t>(v), out);
      }
      return;
    }
    case Value::Kind::kUint:
      AppendHead(0, value.as_uint(), out);
      return;
    case Value::Kind::kFloat: {
      const double d = value.as_double();
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      out.push_back(0xfb);
      for (int i = 7; i >= 0; --i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
      return;
    }
    case Value::Kind::kText: {
      const std::string& s = value.as_text();
      AppendHead(3, s.size(), out);
      out.insert(out.end(), s.begin(), s.end());
      return;
    }
    case Value::Kind::kBytes: {
      const Bytes& b = value.as_bytes();
      AppendHead(2, b.size(), out);
      out.insert(out.end(), b.begin(), b.end());
      return;
    }
    case Value::Kind::kArray:
      AppendHead(4, value.as_array().size(), out);
      for (const Value& item : value.as_array()) AppendCbor(item, out);
      return;
    case Value::Kind::kMap:
      AppendHead(5, value.as_map().size(), out);
      for (const auto& [k, v] : value.as_map()) {
        AppendCbor(k, out);
        AppendCbor(v, out);
      }
      return;
  }
}

Bytes EncodeCbor(const Value& value) {
  return BuildExact([&](Bytes& out) { AppendCbor(value, out); });
}

Result<Value> DecodeCbor(ByteView bytes, const CborLimits& limits) {
  return Decoder(bytes, limits).DecodeAll();
}

}  // namespace keel
