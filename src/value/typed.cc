#include "value/typed.h"

namespace keel {

Error TypeMismatch(std::string_view expected, const Value& got) {
  std::string message = "expected ";
  message += expected;
  message += ", got ";
  message += KindName(got.kind());
  return Error("value", "type_mismatch", std::move(message));
}

Error AtPath(const Error& error, std::string_view segment) {
  const std::string& m = error.message();
  // Already "at <path>: ...": the new segment goes in front of the path.
  if (m.size() > 3 && m.compare(0, 3, "at ") == 0 && (m[3] == '.' || m[3] == '[')) {
    return Error(error.group(), error.code(), "at " + std::string(segment) + m.substr(3));
  }
  return Error(error.group(), error.code(), "at " + std::string(segment) + ": " + m);
}

std::string KeySegment(std::string_view key) {
  bool identifier = !key.empty() && !(key[0] >= '0' && key[0] <= '9');
  for (char c : key) identifier = identifier && typed_internal::IsIdentChar(c);
  if (identifier) return "." + std::string(key);
  std::string out = "[\"";
  out += key;
  out += "\"]";
  return out;
}

namespace typed_internal {

Error OutOfRange(const Value& got, int64_t min, uint64_t max) {
  std::string shown;
  if (got.kind() == Value::Kind::kInt) {
    shown = std::to_string(got.as_int());
  } else if (got.kind() == Value::Kind::kUint) {
    shown = std::to_string(got.as_uint());
  } else {
    shown = ToJson(got);
  }
  return Error("value", "type_mismatch",
               "expected integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                   "], got " + shown);
}

}  // namespace typed_internal

Result<Bytes> ValueCodec<Bytes>::Decode(const Value& v) {
  if (v.is_bytes()) return v.as_bytes();
  // An array of octets, as a JSON client without the $Uint8Array escape would send.
  if (!v.is_array()) return TypeMismatch("bytes", v);
  Bytes out;
  out.reserve(v.as_array().size());
  for (size_t i = 0; i < v.as_array().size(); ++i) {
    const Value& item = v.as_array()[i];
    if (!item.is_integer() || item.kind() == Value::Kind::kUint || item.as_int() < 0 ||
        item.as_int() > 255) {
      return AtPath(TypeMismatch("integer in [0, 255]", item), IndexSegment(i));
    }
    out.push_back(static_cast<uint8_t>(item.as_int()));
  }
  return out;
}

}  // namespace keel
