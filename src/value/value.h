// Value: the dynamic application value of Keel actors — what state, action arguments and
// results, event arguments, queue bodies and connection params are, independent of how
// a client encodes them (actors.md §4.8). Internally every application value is CBOR;
// JSON clients see its JSON rendering with Rivet's compatibility escapes.
//
// The model is CBOR's: undefined, null, bool, integers (the full int64 and uint64
// ranges), floats (double), text (UTF-8), byte strings, arrays and maps whose keys may
// be any value (kept in insertion order; lookups by text key are linear, maps are small).
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace keel {

class Value {
 public:
  struct Undefined {
    friend bool operator==(Undefined, Undefined) { return true; }
  };
  struct Null {
    friend bool operator==(Null, Null) { return true; }
  };
  using Array = std::vector<Value>;
  using Map = std::vector<std::pair<Value, Value>>;
  enum class Kind { kUndefined, kNull, kBool, kInt, kUint, kFloat, kText, kBytes, kArray, kMap };

  Value() : v_(Null{}) {}
  static Value MakeUndefined() { return Value(Undefined{}); }
  Value(Undefined u) : v_(u) {}                       // NOLINT
  Value(Null n) : v_(n) {}                            // NOLINT
  Value(std::nullptr_t) : v_(Null{}) {}               // NOLINT
  Value(bool b) : v_(b) {}                            // NOLINT
  Value(int v) : v_(int64_t{v}) {}                    // NOLINT
  Value(long v) : v_(int64_t{v}) {}                   // NOLINT
  Value(long long v) : v_(int64_t{v}) {}              // NOLINT
  Value(unsigned v) : v_(int64_t{v}) {}               // NOLINT
  // uint64 values up to INT64_MAX are stored as kInt, larger ones as kUint, so equal
  // numbers always compare equal.
  Value(unsigned long v) { SetUnsigned(v); }          // NOLINT
  Value(unsigned long long v) { SetUnsigned(v); }     // NOLINT
  Value(double d) : v_(d) {}                          // NOLINT
  Value(float f) : v_(double{f}) {}                   // NOLINT
  Value(const char* s) : v_(std::string(s)) {}        // NOLINT
  Value(std::string s) : v_(std::move(s)) {}          // NOLINT
  Value(std::string_view s) : v_(std::string(s)) {}   // NOLINT
  Value(Bytes b) : v_(std::move(b)) {}                // NOLINT
  Value(Array a) : v_(std::move(a)) {}                // NOLINT
  Value(Map m) : v_(std::move(m)) {}                  // NOLINT

  static Value ArrayOf(std::initializer_list<Value> items) { return Value(Array(items)); }
  // A map with text keys, in the given order.
  static Value Object(std::initializer_list<std::pair<std::string_view, Value>> fields);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_null() const { return kind() == Kind::kNull; }
  bool is_bool() const { return kind() == Kind::kBool; }
  // kInt or kUint.
  bool is_integer() const { return kind() == Kind::kInt || kind() == Kind::kUint; }
  bool is_float() const { return kind() == Kind::kFloat; }
  // Integer or float.
  bool is_number() const { return is_integer() || is_float(); }
  bool is_text() const { return kind() == Kind::kText; }
  bool is_bytes() const { return kind() == Kind::kBytes; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_map() const { return kind() == Kind::kMap; }

  // Accessors. REQUIRES the matching kind (they abort otherwise); use the is_* checks or
  // the typed mapping (value/typed.h) for outside input.
  bool as_bool() const;
  int64_t as_int() const;      // kInt
  uint64_t as_uint() const;    // kUint, or a non-negative kInt
  double as_double() const;    // kFloat, or an integer converted
  const std::string& as_text() const;
  const Bytes& as_bytes() const;
  const Array& as_array() const;
  Array& as_array();
  const Map& as_map() const;
  Map& as_map();

  // Map lookup by text key; nullptr when absent or not a map.
  const Value* Find(std::string_view key) const;
  // Inserts or replaces a text-keyed entry (turns a null into an empty map first).
  Value& Set(std::string_view key, Value value);

  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }

 private:
  void SetUnsigned(unsigned long long v);
  std::variant<Undefined, Null, bool, int64_t, uint64_t, double, std::string, Bytes, Array, Map> v_;
};

// "undefined", "null", "bool", "integer" (kInt and kUint), "float", "text", "bytes",
// "array", "map": the names error messages use.
std::string_view KindName(Value::Kind kind);

// ---- CBOR (RFC 8949) ----
// Definite-length, shortest-form encoding (floats as 64-bit unless exactly representable
// in fewer bits is NOT attempted: always float64 — deterministic and simple). Undefined is
// simple value 23.
Bytes EncodeCbor(const Value& value);
void AppendCbor(const Value& value, Bytes& out);
struct CborLimits {
  size_t max_depth = 64;
  size_t max_items = size_t{1} << 20;  // total array/map entries
};
// Accepts definite and indefinite lengths, half/single/double floats, tags (the tag is
// dropped, except tags 2/3 bignums that fit in 64 bits become integers). Rejects trailing
// bytes. Errors: `value.invalid_cbor` with the offset in the message.
Result<Value> DecodeCbor(ByteView bytes, const CborLimits& limits = {});

// ---- JSON, with the client protocol's compatibility escapes (actors.md §4.8) ----
// Integers with |v| <= 2^53 are JSON numbers; larger ones ["$BigInt","<decimal>"]; bytes
// ["$Uint8Array","<base64>"]; undefined ["$Undefined"]; a two-element array whose first
// element is a text starting with '$' gets one more '$'. Non-finite floats become null.
// Maps with non-text keys render keys as their JSON text (arrays and maps nested inside
// such a key as "[object]", which keeps the output linear in the value's size).
std::string ToJson(const Value& value);
void AppendJson(const Value& value, std::string& out);
// Parses strict JSON (RFC 8259) and undoes the escapes ($BigInt, $ArrayBuffer,
// $Uint8Array, $Undefined, $$…). Numbers without fraction/exponent that fit int64/uint64
// become integers, others floats. Errors: `value.invalid_json` with the offset.
Result<Value> ParseJson(std::string_view text, size_t max_depth = 64);

}  // namespace keel
