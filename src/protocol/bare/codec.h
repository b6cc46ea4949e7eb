// Typed entry points over the generated BARE codecs. Generated types provide
// `Encode(Writer&, const T&)`, `Decode(Reader&, T&)` and `TypeName(const T*)` in their
// own namespace; these templates find them by argument-dependent lookup.
#pragma once

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "base/build_exact.h"
#include "base/bytes.h"
#include "base/result.h"
#include "protocol/bare/reader.h"
#include "protocol/bare/writer.h"

namespace keel::bare {

template <typename T>
void EncodeTo(const T& value, Bytes& out) {
  Writer w(out);
  Encode(w, value);
}

template <typename T>
Bytes EncodeValue(const T& value) {
  return BuildExact([&](Bytes& out) { EncodeTo(value, out); });
}

// Decodes exactly one T from `in`: trailing bytes are an error.
template <typename T>
Result<T> DecodeValue(ByteView in, const Limits& limits = Limits()) {
  Reader r(in, limits);
  // Default- (not value-) initialised: every generated member has an initializer, and
  // value-initialising a large variant would zero it first for nothing.
  T out;
  if (!Decode(r, out) || !r.ExpectEnd()) {
    return r.ToError(TypeName(static_cast<const T*>(nullptr)));
  }
  return Result<T>(std::move(out));
}

// Decodes exactly one T from `in` into an existing value, reusing its storage (byte
// buffers, the union alternative it already holds): the shape for a read loop that keeps
// one message object per connection. On error `out` is valid but unspecified.
template <typename T>
Status DecodeInto(ByteView in, T& out, const Limits& limits = Limits()) {
  Reader r(in, limits);
  if (!Decode(r, out) || !r.ExpectEnd()) {
    return r.ToError(TypeName(static_cast<const T*>(nullptr)));
  }
  return OkStatus();
}

// The 2-byte little-endian version prefix of versioned payloads (vbare's "embedded
// version"): the serverless start body, engine-internal messages, client-protocol BARE
// messages and every stored record.
inline void AppendVersionPrefix(uint16_t version, Bytes& out) {
  out.push_back(static_cast<uint8_t>(version & 0xff));
  out.push_back(static_cast<uint8_t>(version >> 8));
}

// Splits `framed` into (version, body). Errors: `protocol.decode_failed` when shorter
// than 2 bytes, `protocol.unsupported_version` ("invalid version: N") outside
// [oldest, latest].
Result<std::pair<uint16_t, ByteView>> SplitVersionPrefix(ByteView framed, uint16_t oldest,
                                                         uint16_t latest);

// A stored record: version prefix + value.
template <typename T>
Bytes EncodeVersioned(const T& value, uint16_t version) {
  return BuildExact([&](Bytes& out) {
    AppendVersionPrefix(version, out);
    EncodeTo(value, out);
  });
}

// Maps are decoded into insertion-ordered pair vectors; BARE forbids duplicate keys.
template <typename K, typename V>
bool HasDuplicateKeys(const std::vector<std::pair<K, V>>& map) {
  const size_t n = map.size();
  if (n < 2) return false;
  if (n <= 16) {
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = i + 1; j < n; ++j) {
        if (map[i].first == map[j].first) return true;
      }
    }
    return false;
  }
  std::vector<const K*> keys;
  keys.reserve(n);
  for (const auto& entry : map) keys.push_back(&entry.first);
  std::sort(keys.begin(), keys.end(), [](const K* a, const K* b) { return *a < *b; });
  for (size_t i = 1; i < n; ++i) {
    if (*keys[i - 1] == *keys[i]) return true;
  }
  return false;
}

}  // namespace keel::bare
