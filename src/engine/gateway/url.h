// URL helpers for the gateway: percent and form decoding, percent-encoding, request-target
// splitting, a raw query parser that keeps every parameter's original bytes (so parameters
// the gateway does not consume can be forwarded byte-for-byte), and base64 in the two
// alphabets the wire uses (base64url without padding for `rvt-input`, standard base64 with
// padding for REST input and KV values). Pure functions; thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace keel::engine::gateway {

// Decodes `%XX` escapes (hex digits in either case). Every '%' must start a complete
// escape; all other bytes, including '+', pass through unchanged. The result may hold any
// bytes (no UTF-8 check). Errors: url.invalid_percent_encoding.
Result<std::string> PercentDecode(std::string_view text);

// application/x-www-form-urlencoded decoding: '+' becomes a space, then PercentDecode.
// Errors: url.invalid_percent_encoding.
Result<std::string> FormDecode(std::string_view text);

// Encodes every byte outside the unreserved set `A-Z a-z 0-9 - _ . ~` as `%XX` with
// uppercase hex digits.
std::string PercentEncode(std::string_view text);

struct TargetParts {
  // Everything before the first '?'.
  std::string_view path;
  // Everything after the first '?', without it; nullopt when there is no '?' (so "p?" has
  // an empty, present query).
  std::optional<std::string_view> query;
};

// Splits an origin-form request target into path and raw query. A `#fragment` (never sent
// by conforming clients) is dropped first. The views point into `target`.
TargetParts SplitTarget(std::string_view target);

// One `name[=value]` segment of a raw query string.
struct QueryParam {
  // The bytes before the first '=' (the whole segment when there is no '=').
  std::string raw_name;
  // The bytes after the first '='; empty when there is no '='.
  std::string raw_value;
  bool has_equals = false;
  // Form-decoded name and value; nullopt when the raw bytes hold a bad percent escape.
  std::optional<std::string> name;
  std::optional<std::string> value;

  // The segment exactly as received.
  std::string Raw() const;
};

// Splits a raw query (without the leading '?') on '&' in order, skipping empty segments.
// Never fails: decoding problems are reported per parameter.
std::vector<QueryParam> ParseQuery(std::string_view raw_query);

// Joins the segments' original bytes with '&' (no leading '?').
std::string JoinRawQuery(std::span<const QueryParam> params);

// base64url (RFC 4648 §5) without padding: only `A-Z a-z 0-9 - _`, length % 4 != 1, and
// the unused low bits of the last character must be zero. Errors: base64.invalid.
Result<Bytes> Base64UrlDecode(std::string_view text);
std::string Base64UrlEncode(ByteView data);

// Standard base64 (RFC 4648 §4) with '=' padding. Decoding requires the canonical form:
// length a multiple of 4, padding only at the end, zero unused bits. Errors: base64.invalid.
Result<Bytes> Base64Decode(std::string_view text);
std::string Base64Encode(ByteView data);

}  // namespace keel::engine::gateway
