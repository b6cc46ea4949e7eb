#include "sqlite/types.h"

namespace keel::sql {

std::string_view RouteName(Route route) {
  switch (route) {
    case Route::kRead:
      return "read";
    case Route::kWrite:
      return "write";
    case Route::kWriteFallback:
      return "writeFallback";
  }
  return "write";
}

size_t BindBytes(const Value& value) {
  struct Visitor {
    size_t operator()(const Null&) const { return 0; }
    size_t operator()(int64_t) const { return 8; }
    size_t operator()(double) const { return 8; }
    size_t operator()(const std::string& text) const { return text.size(); }
    size_t operator()(const Blob& blob) const { return blob.bytes.size(); }
  };
  return std::visit(Visitor{}, value);
}

size_t BindBytes(const Params& params) {
  size_t total = 0;
  for (const Value& v : params) total += BindBytes(v);
  return total;
}

}  // namespace keel::sql
