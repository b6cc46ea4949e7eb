#include "sqlite/types.h"

#include "base/utf8.h"

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

std::optional<Error> CheckParamCount(size_t count) {
  if (count <= kMaxParams) return std::nullopt;
  return Error{"sqlite", "too_many_params",
               "sqlite request had " + std::to_string(count) + " bind params, exceeding limit " +
                   std::to_string(kMaxParams)};
}

std::optional<Error> CheckLimits(std::string_view sql, const std::optional<Params>& params) {
  if (sql.size() > kMaxSqlBytes) {
    return Error{"sqlite", "sql_too_large",
                 "sqlite sql had " + std::to_string(sql.size()) + " bytes, exceeding limit " +
                     std::to_string(kMaxSqlBytes)};
  }
  if (!params.has_value()) return std::nullopt;
  if (auto e = CheckParamCount(params->size())) return e;
  const size_t bytes = BindBytes(*params);
  if (bytes > kMaxBindBytes) {
    return Error{"sqlite", "bind_too_large",
                 "sqlite bind params had " + std::to_string(bytes) + " bytes, exceeding limit " +
                     std::to_string(kMaxBindBytes)};
  }
  return std::nullopt;
}

std::optional<Error> CheckUtf8(std::string_view sql, const std::optional<Params>& params) {
  if (!IsValidUtf8(sql)) {
    return Error{"sqlite", "invalid_sql", "sql is not valid UTF-8"};
  }
  if (!params.has_value()) return std::nullopt;
  for (size_t i = 0; i < params->size(); ++i) {
    const auto* text = std::get_if<std::string>(&(*params)[i]);
    if (text != nullptr && !IsValidUtf8(*text)) {
      return Error{"sqlite", "invalid_bind_parameter",
                   "failed to bind sqlite parameter " + std::to_string(i + 1) +
                       ": text is not valid UTF-8 (bind bytes as a blob)"};
    }
  }
  return std::nullopt;
}

}  // namespace keel::sql
