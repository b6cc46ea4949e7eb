// Typed mapping: built-in types, reflected aggregates, keel_fields classes, custom codecs,
// error paths and range checks.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>

#include "value/typed.h"
#include "value/value.h"

namespace test_types {

enum class Color : uint8_t { kRed = 1, kBlue = 7 };

struct Entry {
  std::string name;
  int count = 1;
};

struct Inventory {
  std::vector<Entry> items;
  std::optional<std::string> owner;
  std::map<std::string, int64_t> totals;
  Color color = Color::kRed;
  bool open = true;
  double ratio = 0.5;
  keel::Bytes blob;
  std::pair<int, std::string> pair;
  std::tuple<bool, uint16_t> tuple;
  std::array<int, 2> fixed{};
  std::optional<Entry> featured;
  keel::Value extra;
};

// Non-aggregate with declared fields (private members; mapped by keel_fields).
class Counter {
 public:
  Counter() = default;
  explicit Counter(int64_t count, std::string label) : count_(count), label_(std::move(label)) {}
  int64_t count() const { return count_; }
  const std::string& label() const { return label_; }

 private:
  int64_t count_ = 0;
  std::string label_ = "none";

 public:
  static constexpr auto keel_fields = std::make_tuple(keel::Field("count", &Counter::count_),
                                                      keel::Field("label", &Counter::label_));
};

// An aggregate whose declared fields win over reflection.
struct Renamed {
  int a = 0;
  static constexpr auto keel_fields = std::make_tuple(keel::Field("alpha", &Renamed::a));
};

struct Wide {
  int f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16, f17, f18, f19, f20,
      f21, f22, f23;
};

struct Empty {};

// Direct aggregate members, a single-member struct around a std::array, a Value first.
struct Shape {
  keel::Value tag;
  Entry main;
  std::array<uint8_t, 2> pair{};
  std::vector<std::optional<Entry>> more;
};
struct Single {
  std::array<int, 2> a{};
};

// A custom codec: a point as "x,y".
struct Point {
  int x = 0, y = 0;
};

}  // namespace test_types

template <>
struct keel::ValueCodec<test_types::Point> {
  static Value Encode(const test_types::Point& p) {
    return Value(std::to_string(p.x) + "," + std::to_string(p.y));
  }
  static Result<test_types::Point> Decode(const Value& v) {
    if (!v.is_text()) return TypeMismatch("text \"x,y\"", v);
    const auto comma = v.as_text().find(',');
    if (comma == std::string::npos) return TypeMismatch("text \"x,y\"", v);
    return test_types::Point{std::stoi(v.as_text().substr(0, comma)),
                             std::stoi(v.as_text().substr(comma + 1))};
  }
};

namespace keel {
namespace {

using namespace test_types;

TEST(TypedTest, ReflectsFieldNames) {
  EXPECT_EQ(typed_internal::kFieldCount<Entry>, 2u);
  EXPECT_EQ(typed_internal::kFieldCount<Inventory>, 12u);
  EXPECT_EQ(typed_internal::kFieldCount<Wide>, 24u);
  static_assert(typed_internal::kFieldNames<Entry>[0] == "name");
  static_assert(typed_internal::kFieldNames<Entry>[1] == "count");
  static_assert(typed_internal::kFieldNames<Inventory>[11] == "extra");
  static_assert(typed_internal::kFieldNames<Wide>[23] == "f23");
  EXPECT_EQ(ToValue(Wide{}).as_map().size(), 24u);
  EXPECT_EQ(typed_internal::kFieldCount<Shape>, 4u);
  EXPECT_EQ(typed_internal::kFieldCount<Single>, 1u);
  const Shape shape{Value("t"), {"m", 2}, {3, 4}, {std::nullopt, Entry{"n", 5}}};
  EXPECT_EQ(ToJson(ToValue(shape)), R"({"tag":"t","main":{"name":"m","count":2},"pair":[3,4],)"
                                    R"("more":[null,{"name":"n","count":5}]})");
  auto back = FromValue<Shape>(ToValue(shape));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->main.name, "m");
  EXPECT_EQ(back->more[1]->count, 5);
  EXPECT_EQ(ToJson(ToValue(Single{{1, 2}})), R"({"a":[1,2]})");
  EXPECT_EQ(ToValue(Empty{}), Value(Value::Map{}));
  EXPECT_TRUE(FromValue<Empty>(Value(Value::Map{})).has_value());
}

TEST(TypedTest, EncodesNestedStructs) {
  Inventory inv;
  inv.items = {{"apple", 3}, {"pear", 0}};
  inv.owner = "ann";
  inv.totals = {{"fruit", 3}};
  inv.color = Color::kBlue;
  inv.blob = {1, 2};
  inv.pair = {4, "four"};
  inv.tuple = {true, 65535};
  inv.fixed = {7, 8};
  inv.extra = Value::ArrayOf({1, "x"});
  const Value v = ToValue(inv);
  EXPECT_EQ(ToJson(v),
            R"({"items":[{"name":"apple","count":3},{"name":"pear","count":0}],"owner":"ann",)"
            R"("totals":{"fruit":3},"color":7,"open":true,"ratio":0.5,)"
            R"("blob":["$Uint8Array","AQI="],"pair":[4,"four"],"tuple":[true,65535],)"
            R"("fixed":[7,8],"featured":null,"extra":[1,"x"]})");

  auto back = FromValue<Inventory>(v);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->items.size(), 2u);
  EXPECT_EQ(back->items[1].name, "pear");
  EXPECT_EQ(back->items[1].count, 0);
  EXPECT_EQ(back->owner, "ann");
  EXPECT_EQ(back->totals.at("fruit"), 3);
  EXPECT_EQ(back->color, Color::kBlue);
  EXPECT_EQ(back->blob, (Bytes{1, 2}));
  EXPECT_EQ(back->pair, (std::pair<int, std::string>{4, "four"}));
  EXPECT_EQ(back->tuple, (std::tuple<bool, uint16_t>{true, 65535}));
  EXPECT_EQ(back->fixed, (std::array<int, 2>{7, 8}));
  EXPECT_FALSE(back->featured.has_value());
  EXPECT_EQ(back->extra, inv.extra);
  // And through JSON text, as a JSON client would send it.
  auto via_json = FromValue<Inventory>(ParseJson(ToJson(v)).value());
  ASSERT_TRUE(via_json.has_value());
  EXPECT_EQ(ToValue(*via_json), v);
}

TEST(TypedTest, MissingFieldsKeepDefaultsAndUnknownAreIgnored) {
  auto entry = FromValue<Entry>(Value::Object({{"name", "x"}, {"unknown", 5}}));
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->name, "x");
  EXPECT_EQ(entry->count, 1);
  auto undefined = FromValue<Entry>(Value::Object({{"count", Value::MakeUndefined()}}));
  ASSERT_TRUE(undefined.has_value());
  EXPECT_EQ(undefined->count, 1);
  auto inv = FromValue<Inventory>(Value(Value::Map{}));
  ASSERT_TRUE(inv.has_value());
  EXPECT_TRUE(inv->open);
  EXPECT_EQ(inv->ratio, 0.5);
  EXPECT_EQ(inv->color, Color::kRed);
}

TEST(TypedTest, ErrorsNameThePath) {
  Value v = Value::Object(
      {{"items", Value::ArrayOf({Value::Object({{"name", "a"}}), Value::Object({{"name", "b"}}),
                                 Value::Object({{"count", "three"}})})}});
  auto inv = FromValue<Inventory>(v);
  ASSERT_FALSE(inv.has_value());
  EXPECT_TRUE(inv.error().Is("value", "type_mismatch"));
  EXPECT_EQ(inv.error().message(), "at .items[2].count: expected integer, got text");

  auto totals = FromValue<Inventory>(Value::Object({{"totals", Value::Object({{"a b", 1.5}})}}));
  ASSERT_FALSE(totals.has_value());
  EXPECT_EQ(totals.error().message(), "at .totals[\"a b\"]: expected integer, got float");

  EXPECT_EQ(FromValue<Entry>(Value(3)).error().message(), "expected map, got integer");
  using IntBool = std::tuple<int, bool>;
  EXPECT_EQ(FromValue<IntBool>(Value::ArrayOf({1})).error().message(),
            "expected array of 2, got array");
  EXPECT_EQ(FromValue<std::string>(Value(Bytes{})).error().message(), "expected text, got bytes");
  EXPECT_EQ(FromValue<Point>(Value(1)).error().message(), "expected text \"x,y\", got integer");
  using IntMap = std::map<std::string, int>;
  EXPECT_EQ(FromValue<IntMap>(Value(Value::Map{{Value(1), Value(1)}})).error().message(),
            "expected text key, got integer");
}

TEST(TypedTest, IntegersAreRangeChecked) {
  EXPECT_EQ(FromValue<uint8_t>(Value(255)).value(), 255);
  EXPECT_EQ(FromValue<uint8_t>(Value(256)).error().message(),
            "expected integer in [0, 255], got 256");
  EXPECT_FALSE(FromValue<uint8_t>(Value(-1)).has_value());
  EXPECT_EQ(FromValue<int8_t>(Value(-128)).value(), -128);
  EXPECT_FALSE(FromValue<int8_t>(Value(-129)).has_value());
  EXPECT_FALSE(FromValue<int32_t>(Value(int64_t{1} << 31)).has_value());
  EXPECT_EQ(FromValue<int64_t>(Value(INT64_MIN)).value(), INT64_MIN);
  EXPECT_FALSE(FromValue<int64_t>(Value(UINT64_MAX)).has_value());
  EXPECT_EQ(FromValue<uint64_t>(Value(UINT64_MAX)).value(), UINT64_MAX);
  EXPECT_FALSE(FromValue<uint64_t>(Value(-5)).has_value());
  EXPECT_FALSE(FromValue<uint32_t>(Value(UINT64_MAX)).has_value());
  // Integral floats are numbers too (JavaScript has one number type); others are not.
  EXPECT_EQ(FromValue<int>(Value(3.0)).value(), 3);
  EXPECT_FALSE(FromValue<int>(Value(3.5)).has_value());
  EXPECT_FALSE(FromValue<int>(Value(NAN)).has_value());
  EXPECT_FALSE(FromValue<int>(Value(1e19)).has_value());
  EXPECT_EQ(FromValue<uint64_t>(Value(1e19)).value(), 10000000000000000000ULL);
  EXPECT_FALSE(FromValue<uint8_t>(Value(256.0)).has_value());
  EXPECT_FALSE(FromValue<int>(Value(true)).has_value());
  EXPECT_FALSE(FromValue<Color>(Value(300)).has_value());
  // Floats take integers; float rejects what it cannot hold.
  EXPECT_EQ(FromValue<double>(Value(2)).value(), 2.0);
  EXPECT_EQ(FromValue<float>(Value(1.5)).value(), 1.5f);
  EXPECT_FALSE(FromValue<float>(Value(1e300)).has_value());
  EXPECT_FALSE(FromValue<double>(Value("1")).has_value());
}

TEST(TypedTest, ContainersAndOptionals) {
  EXPECT_EQ(ToValue(std::optional<int>()), Value(nullptr));
  EXPECT_EQ(FromValue<std::optional<int>>(Value::MakeUndefined()).value(), std::nullopt);
  EXPECT_EQ(FromValue<std::optional<int>>(Value(4)).value(), 4);
  EXPECT_FALSE(FromValue<std::optional<int>>(Value("4")).has_value());
  EXPECT_EQ(FromValue<Bytes>(Value::ArrayOf({0, 255})).value(), (Bytes{0, 255}));
  EXPECT_EQ(FromValue<Bytes>(Value::ArrayOf({0, 256})).error().message(),
            "at [1]: expected integer in [0, 255], got integer");
  std::unordered_map<std::string, std::vector<int>> um{{"a", {1, 2}}};
  EXPECT_EQ(ToValue(um), Value::Object({{"a", Value::ArrayOf({1, 2})}}));
  EXPECT_EQ(FromValue<decltype(um)>(ToValue(um)).value(), um);
  EXPECT_FALSE((FromValue<std::array<int, 3>>(Value::ArrayOf({1, 2})).has_value()));
  EXPECT_EQ(ToValue(Value("v")), Value("v"));
  EXPECT_EQ(ToValue("lit"), Value("lit"));
  EXPECT_EQ(ToValue(std::string_view("sv")), Value("sv"));
  const char* p = "ptr";
  EXPECT_EQ(ToValue(p), Value("ptr"));
  EXPECT_EQ(ToValue('a'), Value(97));
}

TEST(TypedTest, DeclaredFields) {
  const Value v = ToValue(Counter(5, "five"));
  EXPECT_EQ(v, Value::Object({{"count", 5}, {"label", "five"}}));
  auto back = FromValue<Counter>(Value::Object({{"count", 9}}));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->count(), 9);
  EXPECT_EQ(back->label(), "none");
  EXPECT_EQ(FromValue<Counter>(Value::Object({{"label", 1}})).error().message(),
            "at .label: expected text, got integer");
  EXPECT_EQ(ToValue(Renamed{3}), Value::Object({{"alpha", 3}}));
  EXPECT_EQ(FromValue<Renamed>(Value::Object({{"alpha", 4}, {"a", 5}}))->a, 4);
}

TEST(TypedTest, CustomCodecNestsWithPaths) {
  std::vector<Point> points{{1, 2}, {3, 4}};
  EXPECT_EQ(ToValue(points), Value::ArrayOf({"1,2", "3,4"}));
  EXPECT_EQ(FromValue<std::vector<Point>>(Value::ArrayOf({"1,2", "x"})).error().message(),
            "at [1]: expected text \"x,y\", got text");
}

}  // namespace
}  // namespace keel
