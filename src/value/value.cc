#include "value/value.h"

#include "value/internal.h"

#include <cstdio>
#include <cstdlib>

namespace keel {
namespace {

// The accessors' REQUIRES are programming errors (outside input goes through the is_*
// checks or value/typed.h), so they abort like Result's checked access.
[[noreturn]] void KindFailure(const char* wanted, Value::Kind got) {
  std::fprintf(stderr, "keel: Value accessor %s on kind %d\n", wanted, static_cast<int>(got));
  std::abort();
}

}  // namespace

Value Value::Object(std::initializer_list<std::pair<std::string_view, Value>> fields) {
  Map map;
  map.reserve(fields.size());
  for (const auto& [key, value] : fields) map.emplace_back(Value(key), value);
  return Value(std::move(map));
}

void Value::SetUnsigned(unsigned long long v) {
  if (v <= static_cast<unsigned long long>(INT64_MAX)) {
    v_ = static_cast<int64_t>(v);
  } else {
    v_ = static_cast<uint64_t>(v);
  }
}

bool Value::as_bool() const {
  if (!is_bool()) KindFailure("as_bool", kind());
  return std::get<bool>(v_);
}

int64_t Value::as_int() const {
  if (kind() != Kind::kInt) KindFailure("as_int", kind());
  return std::get<int64_t>(v_);
}

uint64_t Value::as_uint() const {
  if (kind() == Kind::kUint) return std::get<uint64_t>(v_);
  if (kind() == Kind::kInt && std::get<int64_t>(v_) >= 0) {
    return static_cast<uint64_t>(std::get<int64_t>(v_));
  }
  KindFailure("as_uint", kind());
}

double Value::as_double() const {
  switch (kind()) {
    case Kind::kFloat:
      return std::get<double>(v_);
    case Kind::kInt:
      return static_cast<double>(std::get<int64_t>(v_));
    case Kind::kUint:
      return static_cast<double>(std::get<uint64_t>(v_));
    default:
      KindFailure("as_double", kind());
  }
}

const std::string& Value::as_text() const {
  if (!is_text()) KindFailure("as_text", kind());
  return std::get<std::string>(v_);
}

const Bytes& Value::as_bytes() const {
  if (!is_bytes()) KindFailure("as_bytes", kind());
  return std::get<Bytes>(v_);
}

const Value::Array& Value::as_array() const {
  if (!is_array()) KindFailure("as_array", kind());
  return std::get<Array>(v_);
}

Value::Array& Value::as_array() {
  if (!is_array()) KindFailure("as_array", kind());
  return std::get<Array>(v_);
}

const Value::Map& Value::as_map() const {
  if (!is_map()) KindFailure("as_map", kind());
  return std::get<Map>(v_);
}

Value::Map& Value::as_map() {
  if (!is_map()) KindFailure("as_map", kind());
  return std::get<Map>(v_);
}

const Value* Value::Find(std::string_view key) const {
  if (!is_map()) return nullptr;
  for (const auto& [k, v] : std::get<Map>(v_)) {
    if (k.is_text() && k.as_text() == key) return &v;
  }
  return nullptr;
}

Value& Value::Set(std::string_view key, Value value) {
  if (is_null()) v_ = Map{};
  Map& map = as_map();
  for (auto& [k, v] : map) {
    if (k.is_text() && k.as_text() == key) {
      v = std::move(value);
      return v;
    }
  }
  map.emplace_back(Value(key), std::move(value));
  return map.back().second;
}

namespace internal {

static constexpr char kBase64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void AppendBase64(ByteView in, std::string& out) {
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t n = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += kBase64[(n >> 6) & 63];
    out += kBase64[n & 63];
  }
  if (in.size() - i == 1) {
    const uint32_t n = uint32_t{in[i]} << 16;
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += "==";
  } else if (in.size() - i == 2) {
    const uint32_t n = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8);
    out += kBase64[n >> 18];
    out += kBase64[(n >> 12) & 63];
    out += kBase64[(n >> 6) & 63];
    out += '=';
  }
}

std::optional<Bytes> DecodeBase64(std::string_view in) {
  // Padding is optional (Node's Buffer accepts both) but, when present, must complete
  // the last quantum; anything outside the alphabets is an error.
  size_t pad = 0;
  while (pad < 2 && !in.empty() && in.back() == '=') {
    in.remove_suffix(1);
    ++pad;
  }
  if (pad > 0 && (in.size() + pad) % 4 != 0) return std::nullopt;
  if (in.size() % 4 == 1) return std::nullopt;
  Bytes out;
  out.reserve(in.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    uint32_t d;
    if (c >= 'A' && c <= 'Z') {
      d = static_cast<uint32_t>(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      d = static_cast<uint32_t>(c - 'a' + 26);
    } else if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0' + 52);
    } else if (c == '+' || c == '-') {
      d = 62;
    } else if (c == '/' || c == '_') {
      d = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
      acc &= (1u << bits) - 1;
    }
  }
  return out;
}

}  // namespace internal

std::string_view KindName(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kUndefined:
      return "undefined";
    case Value::Kind::kNull:
      return "null";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
    case Value::Kind::kUint:
      return "integer";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kText:
      return "text";
    case Value::Kind::kBytes:
      return "bytes";
    case Value::Kind::kArray:
      return "array";
    case Value::Kind::kMap:
      return "map";
  }
  return "?";
}

}  // namespace keel
