#include "base/result.h"

#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "base/error.h"

namespace keel {
namespace {

Error NotFound() { return Error("kv", "not_found", "no key"); }

Result<int> ParsePositive(int x) {
  if (x <= 0) return Error("arg", "invalid", "not positive");
  return x;
}

Status CheckPositive(int x) {
  KEEL_RETURN_IF_ERROR(ParsePositive(x));
  return OkStatus();
}

Result<int> DoubledViaReturnIfError(int x) {
  KEEL_RETURN_IF_ERROR(CheckPositive(x));
  return 2 * x;
}

Result<int> SumViaAssignOrReturn(int a, int b) {
  KEEL_ASSIGN_OR_RETURN(int pa, ParsePositive(a));
  KEEL_ASSIGN_OR_RETURN(auto pb, ParsePositive(b));
  return pa + pb;
}

Status StatusViaAssignOrReturn(int a, int* out) {
  KEEL_ASSIGN_OR_RETURN(*out, ParsePositive(a));
  return OkStatus();
}

Result<std::unique_ptr<int>> MakeBox(int x) { return std::make_unique<int>(x); }

Result<int> UnboxViaAssignOrReturn(int x) {
  KEEL_ASSIGN_OR_RETURN(std::unique_ptr<int> box, MakeBox(x));
  return *box;
}

TEST(Result, HoldsAValue) {
  Result<std::string> uut = std::string("hello");
  ASSERT_TRUE(uut.has_value());
  EXPECT_TRUE(uut.ok());
  EXPECT_TRUE(static_cast<bool>(uut));
  EXPECT_EQ(uut.value(), "hello");
  EXPECT_EQ(*uut, "hello");
  EXPECT_EQ(uut->size(), 5u);
}

TEST(Result, HoldsAnError) {
  Result<std::string> uut = NotFound();
  ASSERT_FALSE(uut.has_value());
  EXPECT_FALSE(static_cast<bool>(uut));
  EXPECT_EQ(uut.error(), NotFound());
}

TEST(Result, UnexpectedConvertsToAnyResult) {
  Result<int> a = Unexpected{NotFound()};
  Status b = Unexpected{NotFound()};
  EXPECT_EQ(a.error(), NotFound());
  EXPECT_EQ(b.error(), NotFound());
}

TEST(Result, ValueOrReturnsFallbackOnlyOnError) {
  Result<int> good = 7;
  Result<int> bad = NotFound();
  EXPECT_EQ(good.value_or(0), 7);
  EXPECT_EQ(bad.value_or(0), 0);
}

TEST(Result, MovesOutAMoveOnlyValue) {
  Result<std::unique_ptr<int>> uut = MakeBox(5);
  std::unique_ptr<int> box = std::move(uut).value();
  ASSERT_NE(box, nullptr);
  EXPECT_EQ(*box, 5);
}

TEST(Result, SupportsACustomErrorType) {
  Result<int, std::string> uut = std::string("boom");
  ASSERT_FALSE(uut.has_value());
  EXPECT_EQ(uut.error(), "boom");
}

TEST(Status, DefaultIsOk) {
  Status uut;
  EXPECT_TRUE(uut.ok());
  EXPECT_TRUE(OkStatus().ok());
}

TEST(Status, HoldsAnError) {
  Status uut = NotFound();
  ASSERT_FALSE(uut.ok());
  EXPECT_EQ(uut.error(), NotFound());
}

TEST(ResultMacros, ReturnIfErrorPassesThroughOnSuccess) {
  Result<int> uut = DoubledViaReturnIfError(4);
  ASSERT_TRUE(uut.ok());
  EXPECT_EQ(*uut, 8);
}

TEST(ResultMacros, ReturnIfErrorPropagatesTheErrorUnchanged) {
  Result<int> uut = DoubledViaReturnIfError(-1);
  ASSERT_FALSE(uut.ok());
  EXPECT_EQ(uut.error(), Error("arg", "invalid", "not positive"));
}

TEST(ResultMacros, ReturnIfErrorCopiesFromAnLvalueAndLeavesItIntact) {
  Status stored = NotFound();
  auto forward = [&]() -> Status {
    KEEL_RETURN_IF_ERROR(stored);
    return OkStatus();
  };
  Status returned = forward();
  ASSERT_FALSE(returned.ok());
  EXPECT_EQ(returned.error(), NotFound());
  ASSERT_FALSE(stored.ok());
  EXPECT_EQ(stored.error(), NotFound());
}

TEST(ResultMacros, AssignOrReturnBindsValues) {
  Result<int> uut = SumViaAssignOrReturn(2, 3);
  ASSERT_TRUE(uut.ok());
  EXPECT_EQ(*uut, 5);
}

TEST(ResultMacros, AssignOrReturnStopsAtTheFirstError) {
  Result<int> uut = SumViaAssignOrReturn(2, -3);
  ASSERT_FALSE(uut.ok());
  EXPECT_TRUE(uut.error().Is("arg", "invalid"));
}

TEST(ResultMacros, AssignOrReturnAssignsToAnExistingLvalue) {
  int out = 0;
  EXPECT_TRUE(StatusViaAssignOrReturn(9, &out).ok());
  EXPECT_EQ(out, 9);
  out = 0;
  Status failed = StatusViaAssignOrReturn(0, &out);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(failed.error().Is("arg", "invalid"));
  EXPECT_EQ(out, 0);
}

TEST(ResultMacros, AssignOrReturnMovesMoveOnlyValues) {
  Result<int> uut = UnboxViaAssignOrReturn(11);
  ASSERT_TRUE(uut.ok());
  EXPECT_EQ(*uut, 11);
}

// _IF_SUPPORTED: identical to EXPECT_DEATH natively; it lets this file compile for wasm,
// which has no death tests (no fork), where tests/wasm filters these cases out.
using ResultDeathTest = ::testing::Test;

TEST_F(ResultDeathTest, ValueOnAnErrorAborts) {
  Result<int> uut = NotFound();
  EXPECT_DEATH_IF_SUPPORTED((void)uut.value(), "bad Result access");
}

TEST_F(ResultDeathTest, ErrorOnAValueAborts) {
  Result<int> uut = 1;
  EXPECT_DEATH_IF_SUPPORTED((void)uut.error(), "bad Result access");
}

}  // namespace
}  // namespace keel
