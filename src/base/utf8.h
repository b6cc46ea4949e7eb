// UTF-8 well-formedness, the one implementation every decoder, validator and repairer of
// text uses (BARE and CBOR strings, JSON, URLs, SQLite text, error bodies).
//
// Well-formed means Unicode §3.9, Table 3-7 (the same set as RFC 3629): no overlong forms,
// no surrogates (U+D800–U+DFFF), nothing above U+10FFFF.
// Thread-safety: stateless functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace keel {

// U+FFFD REPLACEMENT CHARACTER, encoded.
inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";

// Length (1–4) of the well-formed sequence starting at text[i], or 0 when none starts
// there; then `*bad` (when given) is the length of the sequence's maximal subpart (≥ 1): the
// bytes one U+FFFD stands for under Unicode §3.9's "substitution of maximal subparts" (what
// WHATWG's decoder and Rust's from_utf8_lossy do). REQUIRES: i < text.size().
size_t Utf8SequenceLength(std::string_view text, size_t i, size_t* bad = nullptr);

// True when all of `text` is well-formed. Runs of ASCII are checked 8 bytes at a time.
bool IsValidUtf8(std::string_view text);

// `text` with each ill-formed sequence's maximal subpart replaced by U+FFFD; `text` itself
// (one copy) when it is well-formed.
std::string LossyUtf8(std::string_view text);

}  // namespace keel
