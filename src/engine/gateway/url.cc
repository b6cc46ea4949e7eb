#include "engine/gateway/url.h"

#include <algorithm>
#include <array>
#include <cstdint>

namespace keel::engine::gateway {
namespace {

constexpr char kUpperHex[] = "0123456789ABCDEF";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

Error InvalidBase64(std::string_view why) { return Error("base64", "invalid", std::string(why)); }

// Maps a character of the given alphabet to its 6-bit value, or -1.
int Base64Value(char c, bool url_safe) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (url_safe) {
    if (c == '-') return 62;
    if (c == '_') return 63;
  } else {
    if (c == '+') return 62;
    if (c == '/') return 63;
  }
  return -1;
}

// Decodes unpadded base64 in either alphabet. REQUIRES: `text` holds no padding.
Result<Bytes> DecodeUnpadded(std::string_view text, bool url_safe) {
  if (text.size() % 4 == 1) return InvalidBase64("length leaves a dangling character");
  Bytes out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = Base64Value(c, url_safe);
    if (v < 0) return InvalidBase64("character outside the alphabet");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xFF));
    }
  }
  // Leftover bits (2 or 4) must be zero for the encoding to be canonical.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return InvalidBase64("non-zero trailing bits");
  }
  return out;
}

std::string Encode(ByteView data, bool url_safe, bool pad) {
  const char* alphabet = url_safe
                             ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                             : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  size_t rest = data.size() - i;
  if (rest == 1) {
    uint32_t v = uint32_t{data[i]} << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (rest == 2) {
    uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += '=';
  }
  return out;
}

}  // namespace

Result<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      // The run up to the next escape, in one append.
      const size_t end = std::min(text.find('%', i), text.size());
      out.append(text.substr(i, end - i));
      i = end - 1;
      continue;
    }
    if (i + 2 >= text.size()) {
      return Error("url", "invalid_percent_encoding", "truncated percent escape");
    }
    int hi = HexValue(text[i + 1]);
    int lo = HexValue(text[i + 2]);
    if (hi < 0 || lo < 0) {
      return Error("url", "invalid_percent_encoding", "percent escape with a non-hex digit");
    }
    out += static_cast<char>((hi << 4) | lo);
    i += 2;
  }
  return out;
}

Result<std::string> FormDecode(std::string_view text) {
  std::string spaced(text);
  for (char& c : spaced) {
    if (c == '+') c = ' ';
  }
  return PercentDecode(spaced);
}

std::string PercentEncode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (IsUnreserved(c)) {
      out += ch;
    } else {
      out += '%';
      out += kUpperHex[c >> 4];
      out += kUpperHex[c & 15];
    }
  }
  return out;
}

TargetParts SplitTarget(std::string_view target) {
  size_t hash = target.find('#');
  if (hash != std::string_view::npos) target = target.substr(0, hash);
  size_t q = target.find('?');
  if (q == std::string_view::npos) return TargetParts{target, std::nullopt};
  return TargetParts{target.substr(0, q), target.substr(q + 1)};
}

std::string QueryParam::Raw() const {
  std::string out = raw_name;
  if (has_equals) {
    out += '=';
    out += raw_value;
  }
  return out;
}

std::vector<QueryParam> ParseQuery(std::string_view raw_query) {
  std::vector<QueryParam> params;
  size_t start = 0;
  while (start <= raw_query.size()) {
    size_t amp = raw_query.find('&', start);
    size_t end = amp == std::string_view::npos ? raw_query.size() : amp;
    std::string_view segment = raw_query.substr(start, end - start);
    if (!segment.empty()) {
      QueryParam p;
      size_t eq = segment.find('=');
      if (eq == std::string_view::npos) {
        p.raw_name = std::string(segment);
      } else {
        p.raw_name = std::string(segment.substr(0, eq));
        p.raw_value = std::string(segment.substr(eq + 1));
        p.has_equals = true;
      }
      if (auto name = FormDecode(p.raw_name); name.ok()) p.name = std::move(name).value();
      if (auto value = FormDecode(p.raw_value); value.ok()) p.value = std::move(value).value();
      params.push_back(std::move(p));
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return params;
}

std::string JoinRawQuery(std::span<const QueryParam> params) {
  std::string out;
  for (const QueryParam& p : params) {
    if (!out.empty()) out += '&';
    out += p.Raw();
  }
  return out;
}

Result<Bytes> Base64UrlDecode(std::string_view text) { return DecodeUnpadded(text, true); }

std::string Base64UrlEncode(ByteView data) { return Encode(data, true, false); }

Result<Bytes> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return InvalidBase64("length is not a multiple of 4");
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  return DecodeUnpadded(text.substr(0, text.size() - pad), false);
}

std::string Base64Encode(ByteView data) { return Encode(data, false, true); }

}  // namespace keel::engine::gateway
