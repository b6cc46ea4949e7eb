// Typed mapping between C++ types and Value: what the actor API uses to turn action
// arguments, results and state into application values and back without boilerplate.
//
//   struct Item { std::string name; int count = 1; std::optional<std::string> note; };
//   Value v = keel::ToValue(Item{"a", 2});         // {"name": "a", "count": 2, "note": null}
//   Result<Item> item = keel::FromValue<Item>(v);
//
// Built in: Value; bool; every integral type (range-checked: out of range is an error,
// never a wrap; floats with an integral value are accepted); float/double (integers
// accepted); std::string; keel::Bytes (a byte string; an array of 0..255 is accepted
// too); std::optional (null/undefined <-> nullopt); std::vector, std::array (exact
// length); std::map / std::unordered_map with std::string keys (maps); std::pair and
// std::tuple (arrays of exact length); enums (their underlying integer); string_view,
// const char* and string literals (encode only); and structs:
//
//  * Aggregates (plain structs with public members, no base classes, no C arrays or
//    bit-fields, up to 24 fields) map to maps keyed by their member names, found by
//    reflection: the field count by probing aggregate initialisation, the names from
//    __PRETTY_FUNCTION__ of a function template instantiated with a pointer to each
//    member of an `extern` object that is never defined (nor odr-used at run time).
//  * Any class may instead declare its mapping (this wins over reflection, and is the
//    only way for non-aggregates):
//      static constexpr auto keel_fields =
//          std::make_tuple(keel::Field("count", &Counter::count), ...);
//    Such a class must be default-constructible.
//
// Decoding a struct starts from a value-initialised T, so a field missing from the map
// (or undefined) keeps its default member value: state schemas can grow. Unknown keys
// are ignored. Errors: `value.type_mismatch` whose message names the path, e.g.
// "at .items[2].count: expected integer, got text".
//
// Customisation: specialise keel::ValueCodec<T> with
//   static Value Encode(const T&);  static Result<T> Decode(const Value&);
// (keel::TypeMismatch builds the conventional error; nested errors get their path
// prefixed by the containers that called FromValue on the parts).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "value/value.h"

namespace keel {

template <class T, class = void>
struct ValueCodec;

template <class T>
Value ToValue(const T& value) {
  return ValueCodec<std::remove_cv_t<T>>::Encode(value);
}

template <class T>
Result<T> FromValue(const Value& value) {
  return ValueCodec<std::remove_cv_t<T>>::Decode(value);
}

// `value.type_mismatch`: "expected <expected>, got <kind of got>".
Error TypeMismatch(std::string_view expected, const Value& got);
// Prefixes a nested error's message with a path segment (".name" or "[3]"):
// "expected x" -> "at .name: expected x"; "at [3]: expected x" -> "at .name[3]: ...".
Error AtPath(const Error& error, std::string_view segment);
// ".key" for identifier-like keys, otherwise ["key"].
std::string KeySegment(std::string_view key);
inline std::string IndexSegment(size_t i) { return "[" + std::to_string(i) + "]"; }

// A named member for a class's `keel_fields` tuple.
template <class C, class M>
struct Field {
  constexpr Field(std::string_view field_name, M C::*field_member)
      : name(field_name), member(field_member) {}
  std::string_view name;
  M C::*member;
};

namespace typed_internal {

template <class T>
inline constexpr bool kDependentFalse = false;

// ---- aggregate reflection ----

// Converts to any member type, for probing how many initialisers T accepts.
struct AnyInit {
  template <class U>
  operator U&() const&&;  // NOLINT: declared only, used in unevaluated probes
};

template <class T, class... Probes>
constexpr size_t CountFields() {
  if constexpr (sizeof...(Probes) > 64) {
    return sizeof...(Probes);
  } else if constexpr (requires { T{std::declval<Probes>()..., AnyInit{}}; }) {
    return CountFields<T, Probes..., AnyInit>();
  } else {
    return sizeof...(Probes);
  }
}

inline constexpr size_t kMaxReflectedFields = 24;

template <class T>
inline constexpr size_t kFieldCount = CountFields<T>();

// Calls f with references to the N members of obj (a structured binding per count).
template <size_t N, class T, class F>
constexpr auto VisitMembers(T& obj, F&& f) {
  if constexpr (N == 0) {
    (void)obj;
    return f();
  } else if constexpr (N == 1) {
    auto& [m0] = obj;
    return f(m0);
  } else if constexpr (N == 2) {
    auto& [m0, m1] = obj;
    return f(m0, m1);
  } else if constexpr (N == 3) {
    auto& [m0, m1, m2] = obj;
    return f(m0, m1, m2);
  } else if constexpr (N == 4) {
    auto& [m0, m1, m2, m3] = obj;
    return f(m0, m1, m2, m3);
  } else if constexpr (N == 5) {
    auto& [m0, m1, m2, m3, m4] = obj;
    return f(m0, m1, m2, m3, m4);
  } else if constexpr (N == 6) {
    auto& [m0, m1, m2, m3, m4, m5] = obj;
    return f(m0, m1, m2, m3, m4, m5);
  } else if constexpr (N == 7) {
    auto& [m0, m1, m2, m3, m4, m5, m6] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6);
  } else if constexpr (N == 8) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7);
  } else if constexpr (N == 9) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8);
  } else if constexpr (N == 10) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9);
  } else if constexpr (N == 11) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10);
  } else if constexpr (N == 12) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11);
  } else if constexpr (N == 13) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12);
  } else if constexpr (N == 14) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13);
  } else if constexpr (N == 15) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14);
  } else if constexpr (N == 16) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15);
  } else if constexpr (N == 17) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16);
  } else if constexpr (N == 18) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17);
  } else if constexpr (N == 19) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18] =
        obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18);
  } else if constexpr (N == 20) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
           m19] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
             m19);
  } else if constexpr (N == 21) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
           m20] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
             m19, m20);
  } else if constexpr (N == 22) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
           m20, m21] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
             m19, m20, m21);
  } else if constexpr (N == 23) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
           m20, m21, m22] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
             m19, m20, m21, m22);
  } else if constexpr (N == 24) {
    auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19,
           m20, m21, m22, m23] = obj;
    return f(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18,
             m19, m20, m21, m22, m23);
  } else {
    static_assert(N <= kMaxReflectedFields,
                  "aggregate has more than 24 fields: declare a keel_fields tuple or "
                  "specialise keel::ValueCodec");
    return f();
  }
}

template <class T>
struct FakeHolder {
  T value;
};

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wundefined-var-template"
#endif
// Declared, never defined: only the addresses of its members are used, in constant
// expressions, so nothing references it at link time.
template <class T>
extern const FakeHolder<T> kFake;

template <class T>
constexpr auto MemberPointers() {
  return VisitMembers<kFieldCount<T>>(kFake<T>.value,
                                      [](const auto&... m) { return std::make_tuple(&m...); });
}
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

// A class wrapper so the pointer is a structural class-type template argument: clang 14
// does not accept a pointer to a subobject as a bare non-type template argument.
template <class P>
struct PointerBox {
  P pointer;
};

template <auto Box>
constexpr std::string_view SignatureOf() {
  return __PRETTY_FUNCTION__;
}

struct NameProbe {
  int keel_name_probe_field;
};

constexpr bool IsIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

template <class T, size_t I>
constexpr std::string_view RawSignature() {
  constexpr auto pointers = MemberPointers<T>();
  using P = std::remove_cvref_t<decltype(std::get<I>(pointers))>;
  return SignatureOf<PointerBox<P>{std::get<I>(pointers)}>();
}

// What the compiler prints after the member's name (e.g. ")}; std::string_view = ...]"
// for g++, "}]" for clang), learnt from a probe member of known name.
constexpr size_t SignatureSuffixLength() {
  constexpr std::string_view probe = RawSignature<NameProbe, 0>();
  constexpr std::string_view name = "keel_name_probe_field";
  return probe.size() - (probe.rfind(name) + name.size());
}

template <class T, size_t I>
constexpr std::string_view FieldName() {
  constexpr std::string_view signature = RawSignature<T, I>();
  constexpr size_t end = signature.size() - SignatureSuffixLength();
  size_t begin = end;
  while (begin > 0 && IsIdentChar(signature[begin - 1])) --begin;
  return signature.substr(begin, end - begin);
}

template <class T, size_t... I>
constexpr std::array<std::string_view, sizeof...(I)> FieldNamesImpl(std::index_sequence<I...>) {
  return {FieldName<T, I>()...};
}

template <class T>
inline constexpr auto kFieldNames = FieldNamesImpl<T>(std::make_index_sequence<kFieldCount<T>>());

template <class T>
concept HasKeelFields = requires {
  T::keel_fields;
};

template <class T>
concept Reflectable =
    std::is_aggregate_v<T> && std::is_class_v<T> && !std::is_union_v<T> && !HasKeelFields<T>;

template <class I>
constexpr bool IntegerFits(int64_t v) {
  if constexpr (std::is_signed_v<I>) {
    return v >= static_cast<int64_t>(std::numeric_limits<I>::min()) &&
           v <= static_cast<int64_t>(std::numeric_limits<I>::max());
  } else {
    return v >= 0 && static_cast<uint64_t>(v) <= std::numeric_limits<I>::max();
  }
}

template <class I>
constexpr bool IntegerFits(uint64_t v) {
  return v <= static_cast<std::make_unsigned_t<I>>(std::numeric_limits<I>::max());
}

Error OutOfRange(const Value& got, int64_t min, uint64_t max);

// Decodes a struct member from `map` into `member` if present (undefined counts as
// absent).
template <class M>
Status DecodeMember(const Value& map, std::string_view name, M& member) {
  const Value* v = map.Find(name);
  if (v == nullptr || v->is_undefined()) return OkStatus();
  Result<M> decoded = FromValue<M>(*v);
  if (!decoded) return AtPath(decoded.error(), KeySegment(name));
  member = std::move(*decoded);
  return OkStatus();
}

}  // namespace typed_internal

// ---- built-in codecs ----

template <>
struct ValueCodec<Value> {
  static Value Encode(const Value& v) { return v; }
  static Result<Value> Decode(const Value& v) { return v; }
};

template <>
struct ValueCodec<bool> {
  static Value Encode(bool b) { return Value(b); }
  static Result<bool> Decode(const Value& v) {
    if (!v.is_bool()) return TypeMismatch("bool", v);
    return v.as_bool();
  }
};

template <class I>
struct ValueCodec<I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>>> {
  static Value Encode(I i) {
    if constexpr (std::is_signed_v<I>) {
      return Value(static_cast<long long>(i));
    } else {
      return Value(static_cast<unsigned long long>(i));
    }
  }
  static Result<I> Decode(const Value& v) {
    constexpr int64_t kMin = static_cast<int64_t>(std::numeric_limits<I>::min());
    constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<I>::max());
    switch (v.kind()) {
      case Value::Kind::kInt:
        if (!typed_internal::IntegerFits<I>(v.as_int())) {
          return typed_internal::OutOfRange(v, kMin, kMax);
        }
        return static_cast<I>(v.as_int());
      case Value::Kind::kUint:
        if (!typed_internal::IntegerFits<I>(v.as_uint())) {
          return typed_internal::OutOfRange(v, kMin, kMax);
        }
        return static_cast<I>(v.as_uint());
      case Value::Kind::kFloat: {
        // JavaScript has one number type: 3.0 from a client means 3.
        const double d = v.as_double();
        if (!(std::trunc(d) == d)) return TypeMismatch("integer", v);
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
          const auto i = static_cast<int64_t>(d);
          if (typed_internal::IntegerFits<I>(i)) return static_cast<I>(i);
        } else if (d >= 0 && d < 18446744073709551616.0) {
          const auto u = static_cast<uint64_t>(d);
          if (typed_internal::IntegerFits<I>(u)) return static_cast<I>(u);
        }
        return typed_internal::OutOfRange(v, kMin, kMax);
      }
      default:
        return TypeMismatch("integer", v);
    }
  }
};

template <class F>
struct ValueCodec<F, std::enable_if_t<std::is_floating_point_v<F>>> {
  static Value Encode(F f) { return Value(static_cast<double>(f)); }
  static Result<F> Decode(const Value& v) {
    if (!v.is_number()) return TypeMismatch("number", v);
    const double d = v.as_double();
    if constexpr (sizeof(F) < sizeof(double)) {
      if (std::isfinite(d) && std::fabs(d) > static_cast<double>(std::numeric_limits<F>::max())) {
        return Error("value", "type_mismatch", "number out of range for float");
      }
    }
    return static_cast<F>(d);
  }
};

template <class E>
struct ValueCodec<E, std::enable_if_t<std::is_enum_v<E>>> {
  using U = std::underlying_type_t<E>;
  static Value Encode(E e) { return ValueCodec<U>::Encode(static_cast<U>(e)); }
  static Result<E> Decode(const Value& v) {
    KEEL_ASSIGN_OR_RETURN(U u, ValueCodec<U>::Decode(v));
    return static_cast<E>(u);
  }
};

template <>
struct ValueCodec<std::string> {
  static Value Encode(const std::string& s) { return Value(s); }
  static Result<std::string> Decode(const Value& v) {
    if (!v.is_text()) return TypeMismatch("text", v);
    return v.as_text();
  }
};

// Non-owning strings encode (so ToValue("literal") works) but cannot be decoded into.
template <>
struct ValueCodec<std::string_view> {
  static Value Encode(std::string_view s) { return Value(s); }
  template <class U = void>
  static Result<std::string_view> Decode(const Value&) {
    static_assert(typed_internal::kDependentFalse<U>,
                  "cannot decode into a non-owning string: use std::string");
    return Error();
  }
};
template <>
struct ValueCodec<const char*> : ValueCodec<std::string_view> {};
template <size_t N>
struct ValueCodec<char[N]> : ValueCodec<std::string_view> {};

template <>
struct ValueCodec<Bytes> {
  static Value Encode(const Bytes& b) { return Value(b); }
  static Result<Bytes> Decode(const Value& v);
};

template <class T>
struct ValueCodec<std::optional<T>> {
  static Value Encode(const std::optional<T>& o) {
    return o.has_value() ? ToValue(*o) : Value(nullptr);
  }
  static Result<std::optional<T>> Decode(const Value& v) {
    if (v.is_null() || v.is_undefined()) return std::optional<T>();
    KEEL_ASSIGN_OR_RETURN(T t, FromValue<T>(v));
    return std::optional<T>(std::move(t));
  }
};

template <class T, class A>
struct ValueCodec<std::vector<T, A>> {
  static Value Encode(const std::vector<T, A>& items) {
    Value::Array out;
    out.reserve(items.size());
    for (const T& item : items) out.push_back(ToValue(item));
    return Value(std::move(out));
  }
  static Result<std::vector<T, A>> Decode(const Value& v) {
    if (!v.is_array()) return TypeMismatch("array", v);
    std::vector<T, A> out;
    out.reserve(v.as_array().size());
    for (size_t i = 0; i < v.as_array().size(); ++i) {
      Result<T> item = FromValue<T>(v.as_array()[i]);
      if (!item) return AtPath(item.error(), IndexSegment(i));
      out.push_back(std::move(*item));
    }
    return out;
  }
};

template <class T, size_t N>
struct ValueCodec<std::array<T, N>> {
  static Value Encode(const std::array<T, N>& items) {
    Value::Array out;
    out.reserve(N);
    for (const T& item : items) out.push_back(ToValue(item));
    return Value(std::move(out));
  }
  static Result<std::array<T, N>> Decode(const Value& v) {
    if (!v.is_array() || v.as_array().size() != N) {
      return TypeMismatch("array of " + std::to_string(N), v);
    }
    std::array<T, N> out{};
    for (size_t i = 0; i < N; ++i) {
      Result<T> item = FromValue<T>(v.as_array()[i]);
      if (!item) return AtPath(item.error(), IndexSegment(i));
      out[i] = std::move(*item);
    }
    return out;
  }
};

namespace typed_internal {

template <class M>
struct TextKeyedMapCodec {
  using T = typename M::mapped_type;
  static Value Encode(const M& m) {
    Value::Map out;
    out.reserve(m.size());
    for (const auto& [k, v] : m) out.emplace_back(Value(k), ToValue(v));
    return Value(std::move(out));
  }
  static Result<M> Decode(const Value& v) {
    if (!v.is_map()) return TypeMismatch("map", v);
    M out;
    for (const auto& [k, item] : v.as_map()) {
      if (!k.is_text()) return TypeMismatch("text key", k);
      Result<T> decoded = FromValue<T>(item);
      if (!decoded) return AtPath(decoded.error(), KeySegment(k.as_text()));
      out.insert_or_assign(k.as_text(), std::move(*decoded));
    }
    return out;
  }
};

template <class Tuple>
struct TupleCodec {
  static constexpr size_t N = std::tuple_size_v<Tuple>;
  static Value Encode(const Tuple& t) {
    return std::apply([](const auto&... e) { return Value(Value::Array{ToValue(e)...}); }, t);
  }
  static Result<Tuple> Decode(const Value& v) {
    if (!v.is_array() || v.as_array().size() != N) {
      return TypeMismatch("array of " + std::to_string(N), v);
    }
    Tuple out;
    Status status;
    DecodeElements(v.as_array(), out, status, std::make_index_sequence<N>());
    if (!status) return status.error();
    return out;
  }
  template <size_t... I>
  static void DecodeElements(const Value::Array& a, Tuple& out, Status& status,
                             std::index_sequence<I...>) {
    (DecodeElement<I>(a, out, status), ...);
  }
  template <size_t I>
  static void DecodeElement(const Value::Array& a, Tuple& out, Status& status) {
    if (!status) return;
    using E = std::tuple_element_t<I, Tuple>;
    Result<E> e = FromValue<E>(a[I]);
    if (!e) {
      status = AtPath(e.error(), IndexSegment(I));
      return;
    }
    std::get<I>(out) = std::move(*e);
  }
};

}  // namespace typed_internal

template <class T, class C, class A>
struct ValueCodec<std::map<std::string, T, C, A>>
    : typed_internal::TextKeyedMapCodec<std::map<std::string, T, C, A>> {};

template <class T, class H, class E, class A>
struct ValueCodec<std::unordered_map<std::string, T, H, E, A>>
    : typed_internal::TextKeyedMapCodec<std::unordered_map<std::string, T, H, E, A>> {};

template <class A, class B>
struct ValueCodec<std::pair<A, B>> : typed_internal::TupleCodec<std::pair<A, B>> {};

template <class... Ts>
struct ValueCodec<std::tuple<Ts...>> : typed_internal::TupleCodec<std::tuple<Ts...>> {};

// The fallback: classes with `keel_fields`, reflectable aggregates, or a readable error.
template <class T, class>
struct ValueCodec {
  static Value Encode(const T& obj) {
    if constexpr (typed_internal::HasKeelFields<T>) {
      Value::Map out;
      std::apply(
          [&](const auto&... field) {
            (out.emplace_back(Value(field.name), ToValue(obj.*(field.member))), ...);
          },
          T::keel_fields);
      return Value(std::move(out));
    } else if constexpr (typed_internal::Reflectable<T>) {
      CheckReflectable();
      constexpr auto& names = typed_internal::kFieldNames<T>;
      Value::Map out;
      out.reserve(names.size());
      typed_internal::VisitMembers<typed_internal::kFieldCount<T>>(obj, [&](const auto&... m) {
        size_t i = 0;
        (out.emplace_back(Value(names[i++]), ToValue(m)), ...);
        return 0;
      });
      return Value(std::move(out));
    } else {
      static_assert(typed_internal::kDependentFalse<T>,
                    "this type cannot be mapped to a keel::Value: specialise "
                    "keel::ValueCodec<T> for it, give it a static constexpr keel_fields "
                    "tuple, or make it an aggregate struct (see value/typed.h)");
      return Value();
    }
  }

  static Result<T> Decode(const Value& v) {
    if constexpr (typed_internal::HasKeelFields<T>) {
      if (!v.is_map()) return TypeMismatch("map", v);
      T out{};
      Status status;
      std::apply(
          [&](const auto&... field) {
            ((status = status ? typed_internal::DecodeMember(v, field.name, out.*(field.member))
                              : status),
             ...);
          },
          T::keel_fields);
      if (!status) return status.error();
      return out;
    } else if constexpr (typed_internal::Reflectable<T>) {
      CheckReflectable();
      if (!v.is_map()) return TypeMismatch("map", v);
      constexpr auto& names = typed_internal::kFieldNames<T>;
      T out{};
      Status status;
      typed_internal::VisitMembers<typed_internal::kFieldCount<T>>(out, [&](auto&... m) {
        size_t i = 0;
        ((status = status ? typed_internal::DecodeMember(v, names[i], m) : status, ++i), ...);
        return 0;
      });
      if (!status) return status.error();
      return out;
    } else {
      static_assert(typed_internal::kDependentFalse<T>,
                    "this type cannot be mapped to a keel::Value: specialise "
                    "keel::ValueCodec<T> for it, give it a static constexpr keel_fields "
                    "tuple, or make it an aggregate struct (see value/typed.h)");
      return TypeMismatch("?", v);
    }
  }

 private:
  static constexpr void CheckReflectable() {
    static_assert(typed_internal::kFieldCount<T> <= typed_internal::kMaxReflectedFields,
                  "aggregate has more than 24 fields: declare a keel_fields tuple or "
                  "specialise keel::ValueCodec");
  }
};

}  // namespace keel
