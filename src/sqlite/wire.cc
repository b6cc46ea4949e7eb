#include "sqlite/wire.h"

#include <cstring>

namespace keel::sql {
namespace {

std::array<uint8_t, 8> FloatBits(double d) {
  uint64_t bits = 0;  // memcpy: Emscripten 3.1.6's libc++ has no std::bit_cast
  std::memcpy(&bits, &d, sizeof bits);
  std::array<uint8_t, 8> out{};
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  return out;
}

double FloatFromBits(const std::array<uint8_t, 8>& in) {
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) bits = (bits << 8) | in[i];
  double d = 0;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

// Both wire unions have the same members in the same order (§2.5).
template <typename Wire>
Wire ToWireValue(const Value& value) {
  struct Visitor {
    Wire operator()(const Null&) const { return Wire{wire::SqliteValueNull{}}; }
    Wire operator()(int64_t v) const { return Wire{wire::SqliteValueInteger{v}}; }
    Wire operator()(double v) const { return Wire{wire::SqliteValueFloat{FloatBits(v)}}; }
    Wire operator()(const std::string& v) const { return Wire{wire::SqliteValueText{v}}; }
    Wire operator()(const Blob& v) const { return Wire{wire::SqliteValueBlob{v.bytes}}; }
  };
  return std::visit(Visitor{}, value);
}

template <typename Wire>
Value FromWireValue(const Wire& w) {
  struct Visitor {
    Value operator()(const wire::SqliteValueNull&) const { return Null{}; }
    Value operator()(const wire::SqliteValueInteger& v) const { return v.value; }
    Value operator()(const wire::SqliteValueFloat& v) const { return FloatFromBits(v.value); }
    Value operator()(const wire::SqliteValueText& v) const { return v.value; }
    Value operator()(const wire::SqliteValueBlob& v) const { return Blob{v.value}; }
  };
  return std::visit(Visitor{}, w.value);
}

std::vector<std::vector<wire::SqliteColumnValue>> ToWireRows(const std::vector<Row>& rows) {
  std::vector<std::vector<wire::SqliteColumnValue>> out;
  out.reserve(rows.size());
  for (const Row& row : rows) {
    auto& w = out.emplace_back();
    w.reserve(row.size());
    for (const Value& v : row) w.push_back(ToWireColumn(v));
  }
  return out;
}

std::vector<Row> FromWireRows(const std::vector<std::vector<wire::SqliteColumnValue>>& rows) {
  std::vector<Row> out;
  out.reserve(rows.size());
  for (const auto& row : rows) {
    Row& r = out.emplace_back();
    r.reserve(row.size());
    for (const auto& v : row) r.push_back(FromWireColumn(v));
  }
  return out;
}

}  // namespace

wire::SqliteBindParam ToWireParam(const Value& value) {
  return ToWireValue<wire::SqliteBindParam>(value);
}
Value FromWireParam(const wire::SqliteBindParam& param) { return FromWireValue(param); }

std::optional<std::vector<wire::SqliteBindParam>> ToWireParams(
    const std::optional<Params>& params) {
  if (!params.has_value()) return std::nullopt;
  std::vector<wire::SqliteBindParam> out;
  out.reserve(params->size());
  for (const Value& v : *params) out.push_back(ToWireParam(v));
  return out;
}

std::optional<Params> FromWireParams(
    const std::optional<std::vector<wire::SqliteBindParam>>& params) {
  if (!params.has_value()) return std::nullopt;
  Params out;
  out.reserve(params->size());
  for (const auto& p : *params) out.push_back(FromWireParam(p));
  return out;
}

wire::SqliteColumnValue ToWireColumn(const Value& value) {
  return ToWireValue<wire::SqliteColumnValue>(value);
}
Value FromWireColumn(const wire::SqliteColumnValue& column) { return FromWireValue(column); }

wire::SqliteQueryResult ToWire(const QueryResult& result) {
  return wire::SqliteQueryResult{result.columns, ToWireRows(result.rows)};
}

QueryResult FromWire(const wire::SqliteQueryResult& result) {
  return QueryResult{result.columns, FromWireRows(result.rows)};
}

wire::SqliteExecuteResult ToWire(const ExecuteResult& result) {
  wire::SqliteExecuteResult out;
  out.columns = result.columns;
  out.rows = ToWireRows(result.rows);
  out.changes = result.changes;
  out.last_insert_row_id = result.last_insert_row_id;
  out.route = static_cast<wire::SqliteExecuteRoute>(result.route);
  return out;
}

ExecuteResult FromWire(const wire::SqliteExecuteResult& result) {
  ExecuteResult out;
  out.columns = result.columns;
  out.rows = FromWireRows(result.rows);
  out.changes = result.changes;
  out.last_insert_row_id = result.last_insert_row_id;
  switch (result.route) {
    case wire::SqliteExecuteRoute::kRead:
      out.route = Route::kRead;
      break;
    case wire::SqliteExecuteRoute::kWrite:
      out.route = Route::kWrite;
      break;
    case wire::SqliteExecuteRoute::kWriteFallback:
      out.route = Route::kWriteFallback;
      break;
  }
  return out;
}

}  // namespace keel::sql
