#include "base/error.h"

namespace keel {
namespace {

bool IsIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// Length of a run of identifier characters at the start of `s`.
size_t IdentLength(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && IsIdentChar(s[n])) ++n;
  return n;
}

}  // namespace

std::string Error::ToString() const {
  std::string out;
  out.reserve(group_.size() + code_.size() + message_.size() + 3);
  out += group_;
  out += '.';
  out += code_;
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

Error Error::FromString(std::string_view text) {
  size_t g = IdentLength(text);
  if (g == 0 || g >= text.size() || text[g] != '.') {
    return Error("unknown", "unstructured", std::string(text));
  }
  std::string_view rest = text.substr(g + 1);
  size_t c = IdentLength(rest);
  if (c == 0) return Error("unknown", "unstructured", std::string(text));
  std::string_view after = rest.substr(c);
  if (after.empty()) {
    return Error(std::string(text.substr(0, g)), std::string(rest.substr(0, c)), "");
  }
  if (after.size() < 2 || after[0] != ':' || after[1] != ' ') {
    return Error("unknown", "unstructured", std::string(text));
  }
  return Error(std::string(text.substr(0, g)), std::string(rest.substr(0, c)),
               std::string(after.substr(2)));
}

Error Error::WithContext(std::string_view context) const {
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Error(group_, code_, std::move(msg));
}

}  // namespace keel
