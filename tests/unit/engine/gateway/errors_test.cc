#include "engine/gateway/errors.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine::gateway {
namespace {

TEST(HttpStatusFor, FollowsTheGatewayErrorTable) {
  struct Case {
    std::string group;
    std::string code;
    int status;
  };
  for (const Case& c : std::vector<Case>{
           {"api", "not_found", 404},
           {"api", "unauthorized", 401},
           {"api", "forbidden", 403},
           {"guard", "rate_limit", 429},
           {"guard", "upstream_error", 502},
           {"guard", "routing_error", 502},
           {"guard", "retry_attempts_exceeded", 502},
           {"guard", "invalid_response_body", 502},
           {"guard", "connection_error", 400},
           {"guard", "no_route_targets", 400},
           {"guard", "request_timeout", 504},
           {"actor", "not_found", 404},
           {"guard", "service_unavailable", 503},
           {"guard", "actor_ready_timeout", 503},
           {"guard", "no_route", 404},
           {"guard", "invalid_request_body", 413},
           {"guard", "missing_header", 400},
           {"guard", "query_invalid_params", 400},
           {"guard", "query_duplicate_param", 400},
           {"guard", "query_get_disallowed_params", 400},
           {"guard", "query_missing_pool", 400},
           {"guard", "actor_runner_failed", 400},
           {"actor", "duplicate_key", 400},
           {"actor", "destroyed_while_waiting_for_ready", 400},
           {"api", "bad_request", 400},
           {"unknown", "unstructured", 500},
           {"core", "internal_error", 500},
           {"internal", "anything", 500},
       }) {
    EXPECT_EQ(HttpStatusFor(Error(c.group, c.code, "m")), c.status) << c.group << "." << c.code;
  }
  EXPECT_EQ(HttpStatusFor(Error::FromString("no structure here")), 500);
}

TEST(ErrorJson, ProducesTheRestErrorShape) {
  EXPECT_EQ(ErrorJson(Error("actor", "not_found", "The actor does not exist or was destroyed.")),
            "{\"group\":\"actor\",\"code\":\"not_found\",\"message\":\"The actor does not exist "
            "or was destroyed.\",\"metadata\":{}}");
  EXPECT_EQ(ErrorJson(Error("guard", "x", ""), "{\"a\":1}"),
            "{\"group\":\"guard\",\"code\":\"x\",\"message\":\"\",\"metadata\":{\"a\":1}}");
  EXPECT_EQ(ErrorJson(Error("g", "c", "m"), "null"),
            "{\"group\":\"g\",\"code\":\"c\",\"message\":\"m\",\"metadata\":null}");
}

TEST(JsonQuote, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote(""), "\"\"");
  EXPECT_EQ(JsonQuote("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"");
  EXPECT_EQ(JsonQuote("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"");
  EXPECT_EQ(JsonQuote(std::string_view("\0\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\x7f\"");
  EXPECT_EQ(JsonQuote("\xC3\xA9\xF0\x9F\x98\x80"), "\"\xC3\xA9\xF0\x9F\x98\x80\"");
}

TEST(JsonQuote, ReplacesInvalidUtf8SoTheOutputStaysValid) {
  EXPECT_EQ(JsonQuote("a\xff"
                      "b"),
            "\"a\\ufffdb\"");
  EXPECT_EQ(JsonQuote("\xC3"), "\"\\ufffd\"");
  EXPECT_EQ(JsonQuote("\xED\xA0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  // A truncated sequence is one maximal subpart: one U+FFFD for all of its bytes.
  EXPECT_EQ(JsonQuote("a\xE2\x82"
                      "b"),
            "\"a\\ufffdb\"");
}

TEST(CloseReason, IsGroupDotCodeHashRay) {
  EXPECT_EQ(CloseReason(Error("ws", "eviction", "evicted"), "ray123"), "ws.eviction#ray123");
  EXPECT_EQ(CloseReason(Error("ws", "invalid_request", "x"), ""), "ws.invalid_request#");
}

TEST(CloseReason, ReportsInternalErrorsWithTheGenericCode) {
  EXPECT_EQ(CloseReason(Error::FromString("database exploded"), "r"), "core.internal_error#r");
}

TEST(CloseReason, TruncatesTo123Bytes) {
  std::string ray(200, 'r');
  std::string reason = CloseReason(Error("ws", "timed_out", ""), ray);
  EXPECT_EQ(reason.size(), kMaxCloseReasonBytes);
  EXPECT_EQ(reason, ("ws.timed_out#" + ray).substr(0, 123));
  std::string exact(123 - std::string("ws.timed_out#").size(), 'r');
  EXPECT_EQ(CloseReason(Error("ws", "timed_out", ""), exact).size(), 123u);
}

TEST(CloseReason, NeverSplitsAUtf8Character) {
  // "ws.x#" is 5 bytes; 59 two-byte characters end at 123, one more straddles the limit.
  std::string ray;
  for (int i = 0; i < 60; ++i) ray += "\xC3\xA9";
  std::string reason = CloseReason(Error("ws", "x", ""), "r" + ray);
  EXPECT_EQ(reason.size(), 122u);
  EXPECT_TRUE(reason.ends_with("\xC3\xA9"));
}

TEST(CloseCode, NormalOnlyForEvictionAndConnectionClosed) {
  EXPECT_EQ(CloseCode(Error("ws", "eviction", "")), 1000);
  EXPECT_EQ(CloseCode(Error("ws", "connection_closed", "")), 1000);
  for (std::string_view code :
       {"going_away", "timed_out", "invalid_request", "no_runner_config", "invalid_packet"}) {
    EXPECT_EQ(CloseCode(Error("ws", std::string(code), "")), 1011) << code;
  }
  EXPECT_EQ(CloseCode(Error("namespace", "not_found", "")), 1011);
  EXPECT_EQ(CloseCode(Error("other", "eviction", "")), 1011);
}

TEST(ParseCloseReason, SplitsAtFirstHashThenFirstDot) {
  struct Case {
    std::string_view reason;
    std::optional<ParsedCloseReason> parsed;
  };
  for (const Case& c : std::vector<Case>{
           {"ws.eviction#ray1", ParsedCloseReason{"ws", "eviction", "ray1"}},
           {"ws.eviction", ParsedCloseReason{"ws", "eviction", std::nullopt}},
           {"ws.closed", ParsedCloseReason{"ws", "closed", std::nullopt}},
           {"a.b.c#r#s", ParsedCloseReason{"a", "b.c", "r#s"}},
           {"ws.x#", ParsedCloseReason{"ws", "x", ""}},
           {"a.b#c.d", ParsedCloseReason{"a", "b", "c.d"}},
           {"", std::nullopt},
           {"noDot", std::nullopt},
           {"nodot#ray.x", std::nullopt},
           {".code", std::nullopt},
           {"group.", std::nullopt},
           {"group.#r", std::nullopt},
           {"#ray", std::nullopt},
       }) {
    EXPECT_EQ(ParseCloseReason(c.reason), c.parsed) << c.reason;
  }
}

TEST(ParseCloseReason, ReadsBackWhatCloseReasonWrites) {
  Error e("ws", "going_away", "bye");
  std::optional<ParsedCloseReason> parsed = ParseCloseReason(CloseReason(e, "0123"));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->group, "ws");
  EXPECT_EQ(parsed->code, "going_away");
  EXPECT_EQ(parsed->ray_id, "0123");
}

}  // namespace
}  // namespace keel::engine::gateway
