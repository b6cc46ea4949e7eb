// JSON printer and strict parser (RFC 8259) with the client protocol's compatibility
// escapes (actors.md §4.8). Our own code rather than a JSON library: keel::value also
// builds for wasm, where no third-party JSON is linked.
//
// Double formatting and parsing use <charconv> where the standard library has the
// floating-point overloads (libstdc++ 12); Emscripten's libc++ 13 lacks them, so there we
// fall back to the C library (which assumes the "C" numeric locale, as Keel never sets
// another).
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/utf8.h"
#include "value/internal.h"
#include "value/value.h"

namespace keel {
namespace {

constexpr int64_t kMaxSafeInteger = int64_t{1} << 53;

void AppendDouble(double d, std::string& out) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  char buf[64];
  size_t n = 0;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  n = static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, d).ptr - buf);
#else
  // Shortest %g precision that reads back exactly.
  for (int precision = 1; precision <= 17; ++precision) {
    n = static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.*g", precision, d));
    if (std::strtod(buf, nullptr) == d) break;
  }
#endif
  std::string_view s(buf, n);
  out += s;
  // Keep floats floats across a round trip: "1" would parse back as an integer.
  if (s.find_first_of(".eE") == std::string_view::npos) out += ".0";
}

void AppendString(std::string_view s, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// A two-element array [text starting with '$', x] collides with the escapes.
bool NeedsDollarEscape(const Value::Array& a) {
  return a.size() == 2 && a[0].is_text() && !a[0].as_text().empty() && a[0].as_text()[0] == '$';
}

class Parser {
 public:
  Parser(std::string_view text, size_t max_depth) : s_(text), max_depth_(max_depth) {}

  Result<Value> ParseAll() {
    Value v;
    SkipWs();
    if (!ParseValue(v, 0)) return MakeError();
    SkipWs();
    if (pos_ != s_.size()) {
      Fail("trailing characters");
      return MakeError();
    }
    return v;
  }

 private:
  bool Fail(const char* what) { return failure_.Record(what, pos_); }
  Error MakeError() const { return failure_.ToError("invalid_json"); }

  void SkipWs() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Literal(std::string_view word, Value v, Value& out) {
    if (s_.substr(pos_, word.size()) != word) return Fail("invalid literal");
    pos_ += word.size();
    out = std::move(v);
    return true;
  }

  bool ParseValue(Value& out, size_t depth) {
    if (pos_ >= s_.size()) return Fail("unexpected end of input");
    switch (s_[pos_]) {
      case '{':
        return ParseObject(out, depth);
      case '[':
        return ParseArray(out, depth);
      case '"': {
        std::string str;
        if (!ParseString(str)) return false;
        out = Value(std::move(str));
        return true;
      }
      case 't':
        return Literal("true", Value(true), out);
      case 'f':
        return Literal("false", Value(false), out);
      case 'n':
        return Literal("null", Value(nullptr), out);
      default:
        return ParseNumber(out);
    }
  }

  bool ParseArray(Value& out, size_t depth) {
    if (depth >= max_depth_) return Fail("nesting too deep");
    ++pos_;  // '['
    Value::Array items;
    SkipWs();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
    } else {
      for (;;) {
        SkipWs();
        items.emplace_back();
        if (!ParseValue(items.back(), depth + 1)) return false;
        SkipWs();
        if (pos_ >= s_.size()) return Fail("unterminated array");
        if (s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (s_[pos_] == ']') {
          ++pos_;
          break;
        }
        return Fail("expected ',' or ']'");
      }
    }
    return Unescape(std::move(items), out);
  }

  // Undoes the compatibility escapes on a just-parsed array.
  bool Unescape(Value::Array items, Value& out) {
    if (items.empty() || !items[0].is_text()) {
      out = Value(std::move(items));
      return true;
    }
    const std::string& tag = items[0].as_text();
    if (items.size() == 1 && tag == "$Undefined") {
      out = Value::MakeUndefined();
      return true;
    }
    if (!NeedsDollarEscape(items)) {
      out = Value(std::move(items));
      return true;
    }
    if (tag.size() >= 2 && tag[1] == '$') {
      items[0] = Value(tag.substr(1));
      out = Value(std::move(items));
      return true;
    }
    if (tag == "$Undefined") {
      out = Value::MakeUndefined();
      return true;
    }
    if (!items[1].is_text()) return Fail("escape payload is not a string");
    const std::string& payload = items[1].as_text();
    if (tag == "$BigInt") return ParseBigInt(payload, out);
    if (tag == "$Uint8Array" || tag == "$ArrayBuffer") {
      auto bytes = internal::DecodeBase64(payload);
      if (!bytes) return Fail("invalid base64 in escape");
      out = Value(std::move(*bytes));
      return true;
    }
    return Fail("unknown '$' escape");
  }

  bool ParseBigInt(std::string_view digits, Value& out) {
    const bool negative = !digits.empty() && digits[0] == '-';
    if (negative) digits.remove_prefix(1);
    if (digits.empty()) return Fail("invalid $BigInt");
    uint64_t n = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return Fail("invalid $BigInt");
      const auto d = static_cast<uint64_t>(c - '0');
      if (n > (UINT64_MAX - d) / 10) return Fail("$BigInt out of 64-bit range");
      n = n * 10 + d;
    }
    if (!negative) {
      out = Value(static_cast<unsigned long long>(n));
    } else if (n <= static_cast<uint64_t>(INT64_MAX) + 1) {
      out = Value(static_cast<long long>(0 - n));
    } else {
      return Fail("$BigInt out of 64-bit range");
    }
    return true;
  }

  bool ParseObject(Value& out, size_t depth) {
    if (depth >= max_depth_) return Fail("nesting too deep");
    ++pos_;  // '{'
    Value::Map entries;
    SkipWs();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      out = Value(std::move(entries));
      return true;
    }
    for (;;) {
      SkipWs();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected object key");
      std::string key;
      if (!ParseString(key)) return false;
      SkipWs();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("expected ':'");
      ++pos_;
      SkipWs();
      Value v;
      if (!ParseValue(v, depth + 1)) return false;
      entries.emplace_back(Value(std::move(key)), std::move(v));
      SkipWs();
      if (pos_ >= s_.size()) return Fail("unterminated object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        break;
      }
      return Fail("expected ',' or '}'");
    }
    out = Value(std::move(entries));
    return true;
  }

  bool Hex4(uint32_t& out) {
    if (s_.size() - pos_ < 4) return Fail("truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        --pos_;
        return Fail("invalid \\u escape");
      }
      out = (out << 4) | d;
    }
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  bool ParseString(std::string& out) {
    ++pos_;  // '"'
    for (;;) {
      // Copy the run of plain characters at once, validating its UTF-8.
      const size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] != '"' && s_[pos_] != '\\' &&
             static_cast<unsigned char>(s_[pos_]) >= 0x20) {
        ++pos_;
      }
      if (!IsValidUtf8(s_.substr(start, pos_ - start))) {
        pos_ = start;
        return Fail("invalid UTF-8 in string");
      }
      out.append(s_.data() + start, pos_ - start);
      if (pos_ >= s_.size()) return Fail("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c != '\\') return Fail("control character in string");
      ++pos_;
      if (pos_ >= s_.size()) return Fail("unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return Fail("unpaired low surrogate");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (s_.substr(pos_, 2) != "\\u") return Fail("unpaired high surrogate");
            pos_ += 2;
            if (!Hex4(low)) return false;
            if (low < 0xdc00 || low > 0xdfff) return Fail("unpaired high surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          --pos_;
          return Fail("invalid escape");
      }
    }
  }

  bool ParseNumber(Value& out) {
    const size_t start = pos_;
    bool negative = false;
    if (pos_ < s_.size() && s_[pos_] == '-') {
      negative = true;
      ++pos_;
    }
    auto digit = [&] { return pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (!digit()) return Fail(negative ? "invalid number" : "unexpected character");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit()) return Fail("leading zero in number");
    } else {
      while (digit()) ++pos_;
    }
    bool integral = true;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (!digit()) return Fail("invalid number");
      while (digit()) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digit()) return Fail("invalid number");
      while (digit()) ++pos_;
    }
    const std::string_view lexeme = s_.substr(start, pos_ - start);
    if (integral) {
      std::string_view digits = lexeme.substr(negative ? 1 : 0);
      uint64_t n = 0;
      bool fits = digits.size() <= 20;
      for (size_t i = 0; fits && i < digits.size(); ++i) {
        const auto d = static_cast<uint64_t>(digits[i] - '0');
        if (n > (UINT64_MAX - d) / 10) {
          fits = false;
        } else {
          n = n * 10 + d;
        }
      }
      if (fits && !negative) {
        out = Value(static_cast<unsigned long long>(n));
        return true;
      }
      if (fits && n <= static_cast<uint64_t>(INT64_MAX) + 1) {
        out = Value(static_cast<long long>(0 - n));
        return true;
      }
      // Too large for 64 bits: a float, as JavaScript would read it.
    }
    double d;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    const auto res = std::from_chars(lexeme.data(), lexeme.data() + lexeme.size(), d);
    if (res.ec == std::errc::result_out_of_range) {
      // from_chars reports overflow/underflow without a value; JavaScript gives ±Infinity
      // or ±0. Infinity has no JSON form and means the text is not a sane number.
      d = std::strtod(std::string(lexeme).c_str(), nullptr);
    }
#else
    d = std::strtod(std::string(lexeme).c_str(), nullptr);
#endif
    out = Value(d);
    return true;
  }

  std::string_view s_;
  size_t max_depth_;
  size_t pos_ = 0;
  internal::FirstFailure failure_;
};

// `in_key`: rendering a non-text map key. A key's JSON text is escaped once more as a
// string, so keys nested in keys would double the escaping at every level: a few hundred
// bytes of CBOR could then render to gigabytes. Container keys inside a key therefore
// render as a placeholder (JSON has no form for them anyway), which bounds the output to
// a small multiple of the value's size.
void AppendJsonImpl(const Value& value, bool in_key, std::string& out) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      out += "[\"$Undefined\"]";
      return;
    case Value::Kind::kNull:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += value.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt: {
      const int64_t v = value.as_int();
      const bool safe = v >= -kMaxSafeInteger && v <= kMaxSafeInteger;
      if (!safe) out += "[\"$BigInt\",\"";
      out += std::to_string(v);
      if (!safe) out += "\"]";
      return;
    }
    case Value::Kind::kUint:  // always above INT64_MAX
      out += "[\"$BigInt\",\"";
      out += std::to_string(value.as_uint());
      out += "\"]";
      return;
    case Value::Kind::kFloat:
      AppendDouble(value.as_double(), out);
      return;
    case Value::Kind::kText:
      AppendString(value.as_text(), out);
      return;
    case Value::Kind::kBytes:
      out += "[\"$Uint8Array\",\"";
      internal::AppendBase64(value.as_bytes(), out);
      out += "\"]";
      return;
    case Value::Kind::kArray: {
      const Value::Array& a = value.as_array();
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i > 0) out += ',';
        if (i == 0 && NeedsDollarEscape(a)) {
          AppendString("$" + a[0].as_text(), out);
        } else {
          AppendJsonImpl(a[i], in_key, out);
        }
      }
      out += ']';
      return;
    }
    case Value::Kind::kMap: {
      out += '{';
      bool first = true;
      for (const auto& [k, v] : value.as_map()) {
        if (!first) out += ',';
        first = false;
        if (k.is_text()) {
          AppendString(k.as_text(), out);
        } else {
          std::string key;
          if (in_key && (k.is_array() || k.is_map())) {
            key = "[object]";
          } else {
            AppendJsonImpl(k, true, key);
          }
          AppendString(key, out);
        }
        out += ':';
        AppendJsonImpl(v, in_key, out);
      }
      out += '}';
      return;
    }
  }
}

}  // namespace

void AppendJson(const Value& value, std::string& out) { AppendJsonImpl(value, false, out); }

std::string ToJson(const Value& value) {
  std::string out;
  AppendJson(value, out);
  return out;
}

Result<Value> ParseJson(std::string_view text, size_t max_depth) {
  return Parser(text, max_depth).ParseAll();
}

}  // namespace keel
