#include "base/error.h"

#include <string>

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(Error, ToStringJoinsIdAndMessage) {
  Error uut("actor", "not_found", "no actor abc");
  EXPECT_EQ(uut.ToString(), "actor.not_found: no actor abc");
}

TEST(Error, ToStringOmitsSeparatorWhenMessageIsEmpty) {
  EXPECT_EQ(Error("actor", "not_found", "").ToString(), "actor.not_found");
}

TEST(Error, IdIsGroupDotCode) { EXPECT_EQ(Error("kv", "conflict", "x").Id(), "kv.conflict"); }

TEST(Error, IsMatchesOnlyTheSameGroupAndCode) {
  Error uut("kv", "conflict", "x");
  EXPECT_TRUE(uut.Is("kv", "conflict"));
  EXPECT_FALSE(uut.Is("kv", "other"));
  EXPECT_FALSE(uut.Is("other", "conflict"));
}

TEST(Error, FromStringParsesGroupCodeAndMessage) {
  Error uut = Error::FromString("guard.actor_ready_timeout: actor took too long");
  EXPECT_EQ(uut.group(), "guard");
  EXPECT_EQ(uut.code(), "actor_ready_timeout");
  EXPECT_EQ(uut.message(), "actor took too long");
}

TEST(Error, FromStringKeepsLaterColonsInTheMessage) {
  Error uut = Error::FromString("a.b: outer: inner");
  EXPECT_EQ(uut, Error("a", "b", "outer: inner"));
}

TEST(Error, FromStringAcceptsIdWithoutMessage) {
  EXPECT_EQ(Error::FromString("a-1.B_2"), Error("a-1", "B_2", ""));
}

TEST(Error, FromStringInvertsToString) {
  for (const Error& e : {Error("g", "c", "m"), Error("g", "c", ""), Error("g", "c", "a: b")}) {
    EXPECT_EQ(Error::FromString(e.ToString()), e) << e.ToString();
  }
}

TEST(Error, FromStringTreatsMalformedTextAsUnstructured) {
  for (std::string text :
       {"", "nodot", "group.", ".code: m", "group.: m", "group.code:m", "group.code message",
        "group code: m", "a.b.c: m", "a.b:", "gr oup.code: m", "группа.code: m"}) {
    Error uut = Error::FromString(text);
    EXPECT_TRUE(uut.Is("unknown", "unstructured")) << "text: " << text;
    EXPECT_EQ(uut.message(), text);
  }
}

TEST(Error, WithContextPrependsToMessageAndKeepsId) {
  Error uut = Error("kv", "io", "disk full").WithContext("writing actor state");
  EXPECT_EQ(uut, Error("kv", "io", "writing actor state: disk full"));
}

TEST(Error, EqualityComparesEveryField) {
  Error base("g", "c", "m");
  EXPECT_EQ(base, Error("g", "c", "m"));
  EXPECT_FALSE(base == Error("x", "c", "m"));
  EXPECT_FALSE(base == Error("g", "x", "m"));
  EXPECT_FALSE(base == Error("g", "c", "x"));
}

}  // namespace
}  // namespace keel
