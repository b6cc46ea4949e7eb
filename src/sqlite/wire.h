// Conversions between the SQL layer's values/results and the v4 envoy wire types
// (envoy-protocol.md §2.5). Floats travel as the big-endian bytes of their IEEE-754 bits,
// so NaN payloads and the sign of zero survive. Builds for wasm.
#pragma once

#include <optional>
#include <vector>

#include "protocol/envoy/versioned.h"
#include "sqlite/types.h"

namespace keel::sql {

namespace wire = protocol::envoy::latest;

wire::SqliteBindParam ToWireParam(const Value& value);
Value FromWireParam(const wire::SqliteBindParam& param);
std::optional<std::vector<wire::SqliteBindParam>> ToWireParams(const std::optional<Params>& params);
std::optional<Params> FromWireParams(const std::optional<std::vector<wire::SqliteBindParam>>& params);

wire::SqliteColumnValue ToWireColumn(const Value& value);
Value FromWireColumn(const wire::SqliteColumnValue& column);

wire::SqliteQueryResult ToWire(const QueryResult& result);
QueryResult FromWire(const wire::SqliteQueryResult& result);
wire::SqliteExecuteResult ToWire(const ExecuteResult& result);
ExecuteResult FromWire(const wire::SqliteExecuteResult& result);

}  // namespace keel::sql
