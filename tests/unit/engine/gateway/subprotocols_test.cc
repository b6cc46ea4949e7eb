#include "engine/gateway/subprotocols.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

TEST(SplitSubprotocols, SplitsOnCommasAndTrimsSpaces) {
  EXPECT_EQ(SplitSubprotocols("rivet, rivet_token.abc"),
            (std::vector<std::string_view>{"rivet", "rivet_token.abc"}));
  EXPECT_EQ(SplitSubprotocols("a,b ,  c\t,,"), (std::vector<std::string_view>{"a", "b", "c"}));
  EXPECT_TRUE(SplitSubprotocols("").empty());
  EXPECT_TRUE(SplitSubprotocols(" , ").empty());
}

TEST(JoinSubprotocols, UsesCommaSpaceAsClientsSend) {
  std::vector<std::string> protocols = {"rivet", "rivet_token.t"};
  EXPECT_EQ(JoinSubprotocols(protocols), "rivet, rivet_token.t");
}

TEST(ParseRivetSubprotocols, ExtractsEveryRivetEntry) {
  RivetSubprotocols p = ParseRivetSubprotocols(
      "rivet, rivet_target.actor, rivet_actor.abc%2Fdef, rivet_token.tok, "
      "rivet_bypass_connectable, rivet_encoding.cbor, rivet_conn_params.%7B%22a%22%3A1%7D, "
      "rivet_inspector_token.insp, rivet_test_ack_hook.h, other");
  EXPECT_TRUE(p.rivet);
  EXPECT_EQ(p.target, "actor");
  EXPECT_EQ(p.actor_id_raw, "abc%2Fdef");
  EXPECT_EQ(p.token, "tok");
  EXPECT_TRUE(p.bypass_connectable);
  EXPECT_EQ(p.encoding, "cbor");
  EXPECT_EQ(p.conn_params_raw, "%7B%22a%22%3A1%7D");
  EXPECT_EQ(p.inspector_token, "insp");
  EXPECT_EQ(p.test_ack_hook, "h");
}

TEST(ParseRivetSubprotocols, FirstOccurrenceWinsAndAbsentStaysEmpty) {
  RivetSubprotocols p = ParseRivetSubprotocols("rivet_token.first,rivet_token.second");
  EXPECT_EQ(p.token, "first");
  EXPECT_FALSE(p.rivet);
  EXPECT_FALSE(p.bypass_connectable);
  EXPECT_EQ(p.target, std::nullopt);
  EXPECT_EQ(p.actor_id_raw, std::nullopt);
}

TEST(ParseRivetSubprotocols, MatchesNamesExactly) {
  RivetSubprotocols p = ParseRivetSubprotocols("rivetx, rivet_bypass_connectable_no, rivet_target");
  EXPECT_FALSE(p.rivet);
  EXPECT_FALSE(p.bypass_connectable);
  EXPECT_EQ(p.target, std::nullopt);
  EXPECT_EQ(ParseRivetSubprotocols("rivet_token.").token, "");
}

}  // namespace
}  // namespace keel::engine::gateway
