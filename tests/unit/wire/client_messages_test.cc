// Client protocol messages in json, cbor and bare: exact bytes for each encoding, round
// trips, cross-checks against the generated BARE codec, and malformed input.
#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "base/bytes.h"
#include "protocol/bare/codec.h"
#include "protocol/client/versioned.h"
#include "value/value.h"
#include "wire/client_messages.h"

namespace keel::wire {
namespace {

namespace v3 = protocol::client::v3;

std::string Text(const Bytes& b) { return std::string(b.begin(), b.end()); }

const Encoding kAll[] = {Encoding::kJson, Encoding::kCbor, Encoding::kBare};

TEST(WireTest, EncodingNames) {
  EXPECT_EQ(ParseEncoding("json"), Encoding::kJson);
  EXPECT_EQ(ParseEncoding("cbor"), Encoding::kCbor);
  EXPECT_EQ(ParseEncoding("bare"), Encoding::kBare);
  EXPECT_EQ(ParseEncoding("JSON"), std::nullopt);
  EXPECT_EQ(ParseEncoding(""), std::nullopt);
  for (Encoding e : kAll) EXPECT_EQ(ParseEncoding(EncodingName(e)), e);
  EXPECT_EQ(ContentType(Encoding::kJson), "application/json");
  EXPECT_EQ(ContentType(Encoding::kCbor), "application/octet-stream");
  EXPECT_EQ(ContentType(Encoding::kBare), "application/octet-stream");
  EXPECT_TRUE(UsesTextFrames(Encoding::kJson));
  EXPECT_FALSE(UsesTextFrames(Encoding::kCbor));
  EXPECT_FALSE(UsesTextFrames(Encoding::kBare));
}

TEST(WireTest, JsonToClientShapes) {
  EXPECT_EQ(Text(Encode(ToClient(Init{"a1", "c1"}), Encoding::kJson)),
            R"({"body":{"tag":"Init","val":{"actorId":"a1","connectionId":"c1"}}})");
  EXPECT_EQ(Text(Encode(ToClient(ActionResponse{7, Value::Object({{"n", 1}})}), Encoding::kJson)),
            R"({"body":{"tag":"ActionResponse","val":{"id":["$BigInt","7"],"output":{"n":1}}}})");
  EXPECT_EQ(Text(Encode(ToClient(Event{"tick", Value::ArrayOf({1, Bytes{1}})}), Encoding::kJson)),
            R"({"body":{"tag":"Event","val":{"name":"tick","args":[1,["$Uint8Array","AQ=="]]}}})");
  EXPECT_EQ(Text(Encode(ToClient(ErrorMsg{"actor", "x", "boom", std::nullopt, std::nullopt}),
                        Encoding::kJson)),
            R"({"body":{"tag":"Error","val":{"group":"actor","code":"x","message":"boom"}}})");
  EXPECT_EQ(Text(Encode(ToClient(ErrorMsg{"a", "b", "c", Value::Object({{"k", 1}}), 3}),
                        Encoding::kJson)),
            R"({"body":{"tag":"Error","val":{"group":"a","code":"b","message":"c",)"
            R"("metadata":{"k":1},"actionId":["$BigInt","3"]}}})");
}

TEST(WireTest, JsonToServerAcceptsPlainAndBigIntIds) {
  for (
      const char* text :
      {R"({"body":{"tag":"ActionRequest","val":{"id":5,"name":"inc","args":[1]}}})",
       R"({"body":{"tag":"ActionRequest","val":{"id":["$BigInt","5"],"name":"inc","args":[1],"x":0}}})",
       R"( { "body" : { "val" : { "args" : [ 1 ] , "name" : "inc" , "id" : 5 } , "tag" : "ActionRequest" } } )"}) {
    auto m = DecodeToServer(AsBytes(text), Encoding::kJson);
    ASSERT_TRUE(m.has_value()) << text << ": " << m.error().ToString();
    EXPECT_EQ(*m, ToServer(ActionRequest{5, "inc", Value::ArrayOf({1})}));
  }
  auto big = DecodeToServer(
      AsBytes(
          R"({"body":{"tag":"ActionRequest","val":{"id":["$BigInt","18446744073709551615"],"name":"a","args":[]}}})"),
      Encoding::kJson);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(std::get<ActionRequest>(*big).id, UINT64_MAX);
  auto sub = DecodeToServer(
      AsBytes(
          R"({"body":{"tag":"SubscriptionRequest","val":{"eventName":"tick","subscribe":true}}})"),
      Encoding::kJson);
  ASSERT_TRUE(sub.has_value());
  EXPECT_EQ(*sub, ToServer(SubscriptionRequest{"tick", true}));
}

TEST(WireTest, CborShapes) {
  // {"body": {"tag": "ActionResponse", "val": {"id": 7, "output": null}}}
  const Value expected = Value::Object(
      {{"body", Value::Object({{"tag", "ActionResponse"},
                               {"val", Value::Object({{"id", 7}, {"output", nullptr}})}})}});
  EXPECT_EQ(Encode(ToClient(ActionResponse{7, Value()}), Encoding::kCbor), EncodeCbor(expected));
  // An absent actionId is an explicit null; absent metadata is omitted.
  const Value error =
      Value::Object({{"body", Value::Object({{"tag", "Error"},
                                             {"val", Value::Object({{"group", "g"},
                                                                    {"code", "c"},
                                                                    {"message", "m"},
                                                                    {"actionId", nullptr}})}})}});
  EXPECT_EQ(Encode(ToClient(ErrorMsg{"g", "c", "m", std::nullopt, std::nullopt}), Encoding::kCbor),
            EncodeCbor(error));
  // Ids are unsigned integers: 2^64-1 is 1b ffffffffffffffff.
  const Bytes big =
      Encode(ToServer(ActionRequest{UINT64_MAX, "a", Value::ArrayOf({})}), Encoding::kCbor);
  EXPECT_NE(ToHex(big).find("6269641bffffffffffffffff"), std::string::npos) << ToHex(big);
}

TEST(WireTest, BareMatchesGeneratedCodec) {
  const Value args = Value::ArrayOf({1, "two", Value::Object({{"x", true}})});
  const Bytes ours = Encode(ToServer(ActionRequest{9, "go", args}), Encoding::kBare);
  v3::ToServer expected;
  expected.body = v3::ActionRequest{9, "go", EncodeCbor(args)};
  EXPECT_EQ(ours, bare::EncodeVersioned(expected, 3));
  // Version 3, little-endian; union tag 0; id 9 as a varint; "go"; then the CBOR bytes.
  EXPECT_EQ(ToHex(ours).substr(0, 16),
            "0300"
            "00"
            "09"
            "02676f"
            "0a");

  const Bytes err =
      Encode(ToClient(ErrorMsg{"g", "c", "m", Value(1), uint64_t{300}}), Encoding::kBare);
  EXPECT_EQ(ToHex(err),
            "0300"
            "01"
            "0167"
            "0163"
            "016d"
            "01"
            "0101"
            "01"
            "ac02");
  auto decoded = protocol::client::DecodeToClient(err);
  ASSERT_TRUE(decoded.has_value());
  const auto* e = decoded->body.get_if<v3::Error>();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->action_id, uint64_t{300});
  EXPECT_EQ(e->metadata, (Bytes{0x01}));

  // Queue send: body CBOR, optional name/wait, timeout as a fixed u64.
  const Bytes q =
      Encode(HttpQueueSendRequest{Value("hi"), "jobs", true, uint64_t{1000}}, Encoding::kBare);
  EXPECT_EQ(ToHex(q),
            "0300"
            "03626869"
            "01046a6f6273"
            "0101"
            "01e803000000000000");
}

TEST(WireTest, BareReadsOlderVersions) {
  // A v1 Init carries a connection token that later versions dropped.
  Bytes v1 = {0x01, 0x00, 0x00};
  for (std::string_view s : {"actor", "conn", "token"}) {
    v1.push_back(static_cast<uint8_t>(s.size()));
    v1.insert(v1.end(), s.begin(), s.end());
  }
  auto m = DecodeToClient(v1, Encoding::kBare);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(*m, ToClient(Init{"actor", "conn"}));
  // Version 2 framing of an ActionRequest.
  Bytes v2 = Encode(ToServer(ActionRequest{1, "a", Value::ArrayOf({})}), Encoding::kBare);
  v2[0] = 2;
  EXPECT_TRUE(DecodeToServer(v2, Encoding::kBare).has_value());
  v2[0] = 4;
  EXPECT_FALSE(DecodeToServer(v2, Encoding::kBare).has_value());
}

TEST(WireTest, RoundTripsEveryMessageInEveryEncoding) {
  const Value rich = Value::Object({{"big", UINT64_MAX},
                                    {"neg", INT64_MIN},
                                    {"bytes", Bytes{0, 1, 255}},
                                    {"u", Value::MakeUndefined()},
                                    {"f", 0.25},
                                    {"esc", Value::ArrayOf({"$BigInt", "x"})}});
  const ToClient to_client[] = {
      Init{"actor-1", "conn-1"},
      ErrorMsg{"actor", "action_failed", "it broke", rich, uint64_t{42}},
      ErrorMsg{"conn", "setup", "no", std::nullopt, std::nullopt},
      ActionResponse{UINT64_MAX, rich},
      ActionResponse{0, Value::MakeUndefined()},
      Event{"ev", Value::ArrayOf({rich, 1})},
  };
  const ToServer to_server[] = {
      ActionRequest{1, "increment", Value::ArrayOf({5, rich})},
      SubscriptionRequest{"ev", true},
      SubscriptionRequest{"ev", false},
  };
  for (Encoding e : kAll) {
    SCOPED_TRACE(std::string(EncodingName(e)));
    for (const auto& m : to_client) {
      auto back = DecodeToClient(Encode(m, e), e);
      ASSERT_TRUE(back.has_value()) << back.error().ToString();
      EXPECT_EQ(*back, m);
    }
    for (const auto& m : to_server) {
      auto back = DecodeToServer(Encode(m, e), e);
      ASSERT_TRUE(back.has_value()) << back.error().ToString();
      EXPECT_EQ(*back, m);
    }
    const HttpActionRequest req{Value::ArrayOf({rich, "x"})};
    EXPECT_EQ(DecodeHttpActionRequest(Encode(req, e), e).value(), req);
    const HttpActionResponse res{rich};
    EXPECT_EQ(DecodeHttpActionResponse(Encode(res, e), e).value(), res);
    const HttpQueueSendRequest q1{rich, "jobs", true, uint64_t{5000}};
    EXPECT_EQ(DecodeHttpQueueSendRequest(Encode(q1, e), e).value(), q1);
    const HttpQueueSendRequest q2{Value(3), std::nullopt, std::nullopt, std::nullopt};
    EXPECT_EQ(DecodeHttpQueueSendRequest(Encode(q2, e), e).value(), q2);
    const HttpQueueSendResponse r1{"completed", rich};
    EXPECT_EQ(DecodeHttpQueueSendResponse(Encode(r1, e), e).value(), r1);
    const HttpQueueSendResponse r2{"timedOut", std::nullopt};
    EXPECT_EQ(DecodeHttpQueueSendResponse(Encode(r2, e), e).value(), r2);
    const HttpResponseError h1{"auth", "forbidden", "no", rich};
    EXPECT_EQ(DecodeHttpResponseError(Encode(h1, e), e).value(), h1);
    const HttpResponseError h2{"auth", "forbidden", "no", std::nullopt};
    EXPECT_EQ(DecodeHttpResponseError(Encode(h2, e), e).value(), h2);
  }
}

TEST(WireTest, HttpBodiesAsPlainObjects) {
  EXPECT_EQ(Text(Encode(HttpActionRequest{Value::ArrayOf({1, "a"})}, Encoding::kJson)),
            R"({"args":[1,"a"]})");
  EXPECT_EQ(Text(Encode(HttpActionResponse{Value(UINT64_MAX)}, Encoding::kJson)),
            R"({"output":["$BigInt","18446744073709551615"]})");
  EXPECT_EQ(Text(Encode(HttpResponseError{"g", "c", "m", std::nullopt}, Encoding::kJson)),
            R"({"group":"g","code":"c","message":"m"})");
  EXPECT_EQ(Text(Encode(HttpQueueSendRequest{Value(1), "q", true, uint64_t{10}}, Encoding::kJson)),
            R"({"body":1,"name":"q","wait":true,"timeout":10})");
  EXPECT_EQ(Text(Encode(HttpQueueSendResponse{"completed", std::nullopt}, Encoding::kJson)),
            R"({"status":"completed"})");
  EXPECT_EQ(Encode(HttpActionRequest{Value::ArrayOf({1})}, Encoding::kCbor),
            FromHex("a1646172677381"
                    "01")
                .value());
  // An action that returned undefined: JSON.stringify drops the property, so do we.
  EXPECT_EQ(Text(Encode(HttpActionResponse{Value::MakeUndefined()}, Encoding::kJson)), "{}");
  EXPECT_EQ(Text(Encode(ToClient(ActionResponse{1, Value::MakeUndefined()}), Encoding::kJson)),
            R"({"body":{"tag":"ActionResponse","val":{"id":["$BigInt","1"]}}})");
  EXPECT_EQ(DecodeHttpActionResponse(AsBytes("{}"), Encoding::kJson).value().output,
            Value::MakeUndefined());
  EXPECT_EQ(DecodeHttpQueueSendRequest(AsBytes(R"({"body":null,"name":null,"timeout":null})"),
                                       Encoding::kJson)
                .value(),
            (HttpQueueSendRequest{Value(), std::nullopt, std::nullopt, std::nullopt}));
}

void ExpectInvalidJson(std::string_view text, std::string_view fragment) {
  auto m = DecodeToServer(AsBytes(text), Encoding::kJson);
  ASSERT_FALSE(m.has_value()) << text;
  EXPECT_TRUE(m.error().Is("wire", "invalid_message")) << m.error().ToString();
  EXPECT_NE(m.error().message().find(fragment), std::string::npos) << m.error().ToString();
}

TEST(WireTest, RejectsMalformedMessages) {
  ExpectInvalidJson("", "malformed JSON");
  ExpectInvalidJson("{\"body\":", "malformed JSON");
  ExpectInvalidJson("[]", "message: expected an object, got array");
  ExpectInvalidJson("{}", "missing field 'body'");
  ExpectInvalidJson(R"({"body":1})", "body: expected an object");
  ExpectInvalidJson(R"({"body":{"val":{}}})", "body: missing field 'tag'");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest"}})", "missing field 'val'");
  ExpectInvalidJson(R"({"body":{"tag":"Nope","val":{}}})", "unknown ToServer message 'Nope'");
  ExpectInvalidJson(R"({"body":{"tag":"Init","val":{}}})", "unknown ToServer message 'Init'");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":[]}})",
                    "ActionRequest: expected an object, got array");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":1,"name":"a","args":{}}}})",
                    "ActionRequest.args: expected array, got map");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":1,"name":"a"}}})",
                    "ActionRequest: missing field 'args'");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":-1,"name":"a","args":[]}}})",
                    "ActionRequest.id: negative integer");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":1.5,"name":"a","args":[]}}})",
                    "ActionRequest.id: expected non-negative integer, got float");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":"1","name":"a","args":[]}}})",
                    "expected non-negative integer, got text");
  ExpectInvalidJson(R"({"body":{"tag":"ActionRequest","val":{"id":1,"name":2,"args":[]}}})",
                    "ActionRequest.name: expected text, got integer");
  ExpectInvalidJson(
      R"({"body":{"tag":"SubscriptionRequest","val":{"eventName":"e","subscribe":1}}})",
      "SubscriptionRequest.subscribe: expected bool, got integer");
  ExpectInvalidJson("{\"body\":\"\xff\"}", "invalid UTF-8");
  // Depth beyond the limits.
  std::string deep = R"({"body":{"tag":"ActionRequest","val":{"id":1,"name":"a","args":)";
  deep += std::string(100, '[') + std::string(100, ']') + "}}}";
  ExpectInvalidJson(deep, "nesting too deep");

  auto http = DecodeHttpActionRequest(AsBytes(R"({"args":5})"), Encoding::kJson);
  ASSERT_FALSE(http.has_value());
  EXPECT_EQ(http.error().ToString(),
            "wire.invalid_message: HttpActionRequest.args: expected array, got integer");
  EXPECT_FALSE(
      DecodeHttpResponseError(AsBytes(R"({"group":"g","code":"c"})"), Encoding::kJson).has_value());
  EXPECT_FALSE(DecodeHttpQueueSendRequest(AsBytes(R"({"body":1,"wait":"yes"})"), Encoding::kJson)
                   .has_value());

  // CBOR: not a map, truncated, trailing bytes.
  EXPECT_FALSE(DecodeToServer(FromHex("80").value(), Encoding::kCbor).has_value());
  Bytes good = Encode(ToServer(SubscriptionRequest{"e", true}), Encoding::kCbor);
  EXPECT_TRUE(DecodeToServer(good, Encoding::kCbor).has_value());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeToServer(ByteView(good.data(), n), Encoding::kCbor).has_value()) << n;
  }
  good.push_back(0);
  auto trailing = DecodeToServer(good, Encoding::kCbor);
  ASSERT_FALSE(trailing.has_value());
  EXPECT_NE(trailing.error().message().find("malformed CBOR: trailing bytes"), std::string::npos);

  // BARE: truncations, bad versions, args CBOR that is not an array or not CBOR.
  const Bytes bare = Encode(ToServer(ActionRequest{1, "a", Value::ArrayOf({1})}), Encoding::kBare);
  for (size_t n = 0; n < bare.size(); ++n) {
    auto r = DecodeToServer(ByteView(bare.data(), n), Encoding::kBare);
    ASSERT_FALSE(r.has_value()) << n;
    EXPECT_TRUE(r.error().Is("wire", "invalid_message"));
  }
  v3::ToServer not_array;
  not_array.body = v3::ActionRequest{1, "a", EncodeCbor(Value(1))};
  auto r = DecodeToServer(bare::EncodeVersioned(not_array, 3), Encoding::kBare);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "ActionRequest.args: expected array, got integer");
  not_array.body = v3::ActionRequest{1, "a", Bytes{0xff}};
  r = DecodeToServer(bare::EncodeVersioned(not_array, 3), Encoding::kBare);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "ActionRequest.args: unexpected break at offset 0");
}

TEST(WireTest, LimitsApplyToValues) {
  CborLimits limits;
  limits.max_items = 4;
  const HttpActionRequest req{Value::ArrayOf({1, 2, 3, 4, 5, 6})};
  for (Encoding e : {Encoding::kCbor, Encoding::kBare}) {
    auto r = DecodeHttpActionRequest(Encode(req, e), e, limits);
    ASSERT_FALSE(r.has_value()) << EncodingName(e);
    EXPECT_NE(r.error().message().find("too many items"), std::string::npos);
  }
}

}  // namespace
}  // namespace keel::wire
