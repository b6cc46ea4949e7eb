// Values and results of Keel's SQL layer (envoy-protocol.md §8.1–§8.2), shared by the
// local-native backend, the remote backend and the engine's remote executor. No SQLite
// here: this header builds for wasm, where SQL only travels to the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"

namespace keel::sql {

// One bind parameter or column value, typed by SQLite storage class:
// Null, Integer (i64), Float (f64), Text (UTF-8, may contain NUL), Blob.
struct Null {
  friend bool operator==(const Null&, const Null&) = default;
};
struct Blob {
  Bytes bytes;
  friend bool operator==(const Blob&, const Blob&) = default;
};
using Value = std::variant<Null, int64_t, double, std::string, Blob>;

using Row = std::vector<Value>;
using Params = std::vector<Value>;

// Which connection served a statement (§8.3). The numbering is the wire's.
enum class Route : uint8_t { kRead = 0, kWrite = 1, kWriteFallback = 2 };
std::string_view RouteName(Route route);  // "read" | "write" | "writeFallback"

// exec: the columns and rows of the last statement that produced any (§8.1).
struct QueryResult {
  std::vector<std::string> columns;
  std::vector<Row> rows;
  friend bool operator==(const QueryResult&, const QueryResult&) = default;
};

// execute / execute_write.
struct ExecuteResult {
  std::vector<std::string> columns;
  std::vector<Row> rows;
  int64_t changes = 0;
  std::optional<int64_t> last_insert_row_id;
  Route route = Route::kWrite;
  friend bool operator==(const ExecuteResult&, const ExecuteResult&) = default;
};

// run: what a write changed.
struct RunResult {
  int64_t changes = 0;
  std::optional<int64_t> last_insert_row_id;
  friend bool operator==(const RunResult&, const RunResult&) = default;
};

// The size a parameter counts for the bind-bytes limit (§8.4 step 4): Null 0, Integer 8,
// Float 8, Text its UTF-8 byte length, Blob its length.
size_t BindBytes(const Value& value);
size_t BindBytes(const Params& params);

// Keel's remote SQL limits (envoy-protocol.md §8.4 KEEL DECISION). Server-side policy; the
// runtime checks the same numbers before sending so a request the engine would refuse
// fails without a round trip.
inline constexpr size_t kMaxSqlBytes = size_t{1} << 20;        // SQL text
inline constexpr size_t kMaxParams = 1024;                     // bind parameters
inline constexpr size_t kMaxBindBytes = size_t{1} << 20;       // total bind bytes

// The first limit `sql` / `params` exceed, as sqlite.sql_too_large, sqlite.too_many_params
// or sqlite.bind_too_large; nullopt within limits. One check for the runtime front (both
// backends) and the engine's remote executor, so a request is refused the same way anywhere.
std::optional<Error> CheckLimits(std::string_view sql, const std::optional<Params>& params);
// Only the parameter count (before converting a wire list).
std::optional<Error> CheckParamCount(size_t count);
// SQL text and text parameters must be well-formed UTF-8 (§8.2: the wire's `str`, which
// the engine's decoder refuses otherwise): sqlite.invalid_sql / sqlite.invalid_bind_parameter.
// The runtime front checks it for both backends, so a text the remote backend cannot
// send is refused the same way by the local one instead of being stored as raw bytes.
std::optional<Error> CheckUtf8(std::string_view sql, const std::optional<Params>& params);

}  // namespace keel::sql
