#include "sqlite/wire.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "support/hex.h"

namespace keel::sql {
namespace {

using keel::testing::Hex;

std::array<uint8_t, 8> Array(const Bytes& bytes) {
  std::array<uint8_t, 8> out{};
  EXPECT_EQ(bytes.size(), 8u);
  for (size_t i = 0; i < out.size() && i < bytes.size(); ++i) out[i] = bytes[i];
  return out;
}

uint64_t Bits(double d) {
  uint64_t bits = 0;
  std::memcpy(&bits, &d, sizeof bits);
  return bits;
}

double FromBits(uint64_t bits) {
  double d = 0;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

TEST(SqlWire, FloatTravelsAsBigEndianBits) {
  wire::SqliteBindParam p = ToWireParam(Value(1.5));
  const auto* f = p.get_if<wire::SqliteValueFloat>();
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->value, Array(Hex("3F F8 00 00 00 00 00 00")));
  EXPECT_EQ(ToWireColumn(Value(2.25)),
            wire::SqliteColumnValue(wire::SqliteValueFloat{Array(Hex("40 02 00 00 00 00 00 00"))}));
  EXPECT_EQ(FromWireColumn(wire::SqliteValueFloat{Array(Hex("C0 00 00 00 00 00 00 00"))}),
            Value(-2.0));
}

TEST(SqlWire, NanPayloadAndNegativeZeroSurvive) {
  for (uint64_t bits : {uint64_t{0x7FF8000000000123}, uint64_t{0xFFF0000000000001},
                        uint64_t{0x8000000000000000}, uint64_t{0x0000000000000001}}) {
    const double d = FromBits(bits);
    Value back = FromWireParam(ToWireParam(Value(d)));
    ASSERT_TRUE(std::holds_alternative<double>(back));
    EXPECT_EQ(Bits(std::get<double>(back)), bits) << std::hex << bits;
    Value column = FromWireColumn(ToWireColumn(Value(d)));
    ASSERT_TRUE(std::holds_alternative<double>(column));
    EXPECT_EQ(Bits(std::get<double>(column)), bits) << std::hex << bits;
  }
  const wire::SqliteBindParam neg_zero_param = ToWireParam(Value(-0.0));
  const auto* neg_zero = neg_zero_param.get_if<wire::SqliteValueFloat>();
  ASSERT_NE(neg_zero, nullptr);
  EXPECT_EQ(neg_zero->value, Array(Hex("80 00 00 00 00 00 00 00")));
  EXPECT_TRUE(std::signbit(std::get<double>(FromWireParam(*neg_zero))));
}

TEST(SqlWire, EveryVariantMapsBothWays) {
  const std::string text_with_nul("a\0b", 3);
  const std::vector<std::pair<Value, wire::SqliteBindParam>> cases = {
      {Value(Null{}), wire::SqliteValueNull{}},
      {Value(int64_t{-7}), wire::SqliteValueInteger{-7}},
      {Value(int64_t{std::numeric_limits<int64_t>::max()}),
       wire::SqliteValueInteger{std::numeric_limits<int64_t>::max()}},
      {Value(0.5), wire::SqliteValueFloat{Array(Hex("3F E0 00 00 00 00 00 00"))}},
      {Value(std::string("héllo")), wire::SqliteValueText{"héllo"}},
      {Value(text_with_nul), wire::SqliteValueText{text_with_nul}},
      {Value(Blob{{1, 2, 0, 255}}), wire::SqliteValueBlob{Bytes{1, 2, 0, 255}}},
      {Value(Blob{}), wire::SqliteValueBlob{Bytes{}}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [value, param] = cases[i];
    EXPECT_EQ(ToWireParam(value), param) << i;
    EXPECT_EQ(FromWireParam(param), value) << i;
    wire::SqliteColumnValue column;
    column.value =
        std::visit([](const auto& v) { return wire::SqliteColumnValue::Variant(v); }, param.value);
    EXPECT_EQ(ToWireColumn(value), column) << i;
    EXPECT_EQ(FromWireColumn(column), value) << i;
    EXPECT_EQ(ToWireParam(value).tag(), static_cast<uint32_t>(value.index())) << i;
  }
}

TEST(SqlWire, ParamListsKeepAbsenceAndOrder) {
  EXPECT_FALSE(ToWireParams(std::nullopt).has_value());
  EXPECT_FALSE(FromWireParams(std::nullopt).has_value());
  auto empty = ToWireParams(Params{});
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
  // CR-2: Null / Integer(7) / Float(1.5) / Text / Blob.
  const Params params{Null{}, int64_t{7}, 1.5, std::string("t"), Blob{{9}}};
  auto w = ToWireParams(params);
  ASSERT_TRUE(w.has_value());
  ASSERT_EQ(w->size(), 5u);
  EXPECT_TRUE((*w)[0].is<wire::SqliteValueNull>());
  EXPECT_EQ((*w)[1], wire::SqliteBindParam(wire::SqliteValueInteger{7}));
  EXPECT_EQ((*w)[2],
            wire::SqliteBindParam(wire::SqliteValueFloat{Array(Hex("3F F8 00 00 00 00 00 00"))}));
  EXPECT_EQ(FromWireParams(w), std::optional<Params>(params));
}

TEST(SqlWire, ExecuteResultMapsEveryRoute) {
  const std::pair<Route, wire::SqliteExecuteRoute> routes[] = {
      {Route::kRead, wire::SqliteExecuteRoute::kRead},
      {Route::kWrite, wire::SqliteExecuteRoute::kWrite},
      {Route::kWriteFallback, wire::SqliteExecuteRoute::kWriteFallback},
  };
  for (const auto& [route, wire_route] : routes) {
    ExecuteResult r;
    r.route = route;
    EXPECT_EQ(ToWire(r).route, wire_route);
    wire::SqliteExecuteResult w;
    w.route = wire_route;
    EXPECT_EQ(FromWire(w).route, route);
  }
  EXPECT_EQ(RouteName(Route::kRead), "read");
  EXPECT_EQ(RouteName(Route::kWrite), "write");
  EXPECT_EQ(RouteName(Route::kWriteFallback), "writeFallback");
}

TEST(SqlWire, ExecuteResultRoundTripsExactly) {
  // CR-2: Integer(9), Float(2.25 as big-endian bits), changes 3, last rowid 11,
  // WRITE_FALLBACK.
  ExecuteResult r;
  r.columns = {"n", "f"};
  r.rows = {{int64_t{9}, 2.25}};
  r.changes = 3;
  r.last_insert_row_id = 11;
  r.route = Route::kWriteFallback;
  wire::SqliteExecuteResult w = ToWire(r);
  EXPECT_EQ(w.columns, r.columns);
  ASSERT_EQ(w.rows.size(), 1u);
  ASSERT_EQ(w.rows[0].size(), 2u);
  EXPECT_EQ(w.rows[0][0], wire::SqliteColumnValue(wire::SqliteValueInteger{9}));
  EXPECT_EQ(w.rows[0][1],
            wire::SqliteColumnValue(wire::SqliteValueFloat{Array(Hex("40 02 00 00 00 00 00 00"))}));
  EXPECT_EQ(w.changes, 3);
  EXPECT_EQ(w.last_insert_row_id, std::optional<int64_t>(11));
  EXPECT_EQ(w.route, wire::SqliteExecuteRoute::kWriteFallback);
  EXPECT_EQ(FromWire(w), r);

  ExecuteResult no_rowid;
  EXPECT_FALSE(ToWire(no_rowid).last_insert_row_id.has_value());
  EXPECT_EQ(FromWire(ToWire(no_rowid)), no_rowid);
}

TEST(SqlWire, QueryResultRoundTrips) {
  QueryResult q;
  q.columns = {"a", ""};
  q.rows = {{Null{}, std::string("x")}, {Blob{{}}, int64_t{-1}}};
  wire::SqliteQueryResult w = ToWire(q);
  EXPECT_EQ(w.columns, q.columns);
  ASSERT_EQ(w.rows.size(), 2u);
  EXPECT_TRUE(w.rows[1][0].is<wire::SqliteValueBlob>());
  EXPECT_EQ(FromWire(w), q);
  EXPECT_EQ(FromWire(ToWire(QueryResult{})), QueryResult{});
}

}  // namespace
}  // namespace keel::sql
