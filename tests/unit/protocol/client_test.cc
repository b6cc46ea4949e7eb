// The client protocol at the edge (actors.md §4.7–§4.8): a 2-byte little-endian version
// prefix, then the BARE message at that version; read at v1–v3, upgraded to v3, and
// written at any of them.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include <gtest/gtest.h>

#include "support/hex.h"
#include "base/bytes.h"
#include "protocol/client/versioned.h"
#include "protocol/conversion.h"

namespace keel::protocol::client {
namespace {

using ::keel::testing::Hex;

std::string Describe(const ConversionError& e) { return ToError(e).ToString(); }

latest::ToClient ClientOf(latest::ToClientBody body) { return latest::ToClient{std::move(body)}; }
latest::ToServer ServerOf(latest::ToServerBody body) { return latest::ToServer{std::move(body)}; }

// ---- Init across versions -------------------------------------------------------------------

TEST(ClientProtocol, AV1InitWithAConnectionTokenDecodesToAV3InitWithoutIt) {
  // v1, ToClient body tag 0 (Init): actorId "a1", connectionId "c1", connectionToken "tok".
  auto decoded = DecodeToClient(Hex("0100 00 026131 026331 03746f6b"));
  ASSERT_TRUE(decoded.ok()) << decoded.error().ToString();
  const auto* init = decoded->body.get_if<latest::Init>();
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init->actor_id, "a1");
  EXPECT_EQ(init->connection_id, "c1");
}

TEST(ClientProtocol, AV3InitEncodedForV1CarriesAnEmptyConnectionToken) {
  auto uut = ClientOf(latest::Init{"a1", "c1"});
  auto v1 = EncodeToClient(uut, 1);
  ASSERT_TRUE(v1.ok()) << Describe(v1.error());
  EXPECT_EQ(ToHex(*v1), ToHex(Hex("0100 00 026131 026331 00")));
  auto v2 = EncodeToClient(uut, 2);
  ASSERT_TRUE(v2.ok()) << Describe(v2.error());
  EXPECT_EQ(ToHex(*v2), ToHex(Hex("0200 00 026131 026331")));
  auto v3 = EncodeToClient(uut);
  ASSERT_TRUE(v3.ok()) << Describe(v3.error());
  EXPECT_EQ(ToHex(*v3), ToHex(Hex("0300 00 026131 026331")));
}

// ---- ToServer / ToClient at every version ---------------------------------------------------

TEST(ClientProtocol, ToServerMessagesEncodeAtEveryVersionAndDecodeBack) {
  const latest::ToServer messages[] = {
      ServerOf(latest::ActionRequest{300, "inc", Hex("a0")}),
      ServerOf(latest::ActionRequest{0, "", {}}),
      ServerOf(latest::SubscriptionRequest{"tick", true}),
      ServerOf(latest::SubscriptionRequest{"\xc3\xb1", false}),
  };
  for (uint16_t version = 1; version <= 3; ++version) {
    for (const auto& msg : messages) {
      SCOPED_TRACE("v" + std::to_string(version) + " tag " + std::to_string(msg.body.tag()));
      auto bytes = EncodeToServer(msg, version);
      ASSERT_TRUE(bytes.ok()) << Describe(bytes.error());
      ASSERT_GE(bytes->size(), 2u);
      EXPECT_EQ((*bytes)[0], version);
      EXPECT_EQ((*bytes)[1], 0);
      auto back = DecodeToServer(*bytes);
      ASSERT_TRUE(back.ok()) << back.error().ToString();
      EXPECT_TRUE(*back == msg);
    }
  }
}

TEST(ClientProtocol, AnActionRequestHasTheSameBodyBytesAtEveryVersion) {
  // Body tag 0, id uint 300 = ac 02, name "inc", args data a0.
  auto msg = ServerOf(latest::ActionRequest{300, "inc", Hex("a0")});
  for (uint16_t version = 1; version <= 3; ++version) {
    auto bytes = EncodeToServer(msg, version);
    ASSERT_TRUE(bytes.ok()) << Describe(bytes.error());
    Bytes want = {static_cast<uint8_t>(version), 0};
    Bytes body = Hex("00 ac02 03696e63 01a0");
    want.insert(want.end(), body.begin(), body.end());
    EXPECT_EQ(ToHex(*bytes), ToHex(want)) << "v" << version;
  }
}

TEST(ClientProtocol, ToClientMessagesEncodeAtEveryVersionAndDecodeBack) {
  latest::Error with_action{"actor", "not_found", "no such action", Hex("f6"), 300};
  latest::Error without_action{"", "", "", std::nullopt, std::nullopt};
  const latest::ToClient messages[] = {
      ClientOf(latest::Init{"actor-1", "conn-1"}),
      ClientOf(with_action),
      ClientOf(without_action),
      ClientOf(latest::ActionResponse{~uint64_t{0}, Hex("01020304")}),
      ClientOf(latest::Event{"tick", Hex("f5")}),
  };
  for (uint16_t version = 1; version <= 3; ++version) {
    for (const auto& msg : messages) {
      SCOPED_TRACE("v" + std::to_string(version) + " tag " + std::to_string(msg.body.tag()));
      auto bytes = EncodeToClient(msg, version);
      ASSERT_TRUE(bytes.ok()) << Describe(bytes.error());
      EXPECT_EQ((*bytes)[0], version);
      auto back = DecodeToClient(*bytes);
      ASSERT_TRUE(back.ok()) << back.error().ToString();
      EXPECT_TRUE(*back == msg);
    }
  }
}

TEST(ClientProtocol, HttpMessagesPresentInEveryVersionRoundTripAtEachVersion) {
  latest::HttpActionRequest req{Hex("a1")};
  latest::HttpActionResponse resp{Hex("a2")};
  latest::HttpResponseError err{"g", "c", "m", Hex("f6")};
  latest::HttpResolveResponse resolve{"actor-1"};
  for (uint16_t version = 1; version <= 3; ++version) {
    SCOPED_TRACE(version);
    auto a = EncodeHttpActionRequest(req, version);
    ASSERT_TRUE(a.ok());
    auto a_back = DecodeHttpActionRequest(*a);
    ASSERT_TRUE(a_back.ok()) << a_back.error().ToString();
    EXPECT_TRUE(*a_back == req);

    auto b = EncodeHttpActionResponse(resp, version);
    ASSERT_TRUE(b.ok());
    auto b_back = DecodeHttpActionResponse(*b);
    ASSERT_TRUE(b_back.ok()) << b_back.error().ToString();
    EXPECT_TRUE(*b_back == resp);

    auto c = EncodeHttpResponseError(err, version);
    ASSERT_TRUE(c.ok());
    auto c_back = DecodeHttpResponseError(*c);
    ASSERT_TRUE(c_back.ok()) << c_back.error().ToString();
    EXPECT_TRUE(*c_back == err);

    auto d = EncodeHttpResolveResponse(resolve, version);
    ASSERT_TRUE(d.ok());
    auto d_back = DecodeHttpResolveResponse(*d);
    ASSERT_TRUE(d_back.ok()) << d_back.error().ToString();
    EXPECT_TRUE(*d_back == resolve);
  }
}

// ---- Queue sends exist from v3 on -----------------------------------------------------------

TEST(ClientProtocol, HttpQueueSendRequestRoundTripsAtV3) {
  latest::HttpQueueSendRequest req{Hex("a1a2"), "q", true, std::nullopt};
  auto bytes = EncodeHttpQueueSendRequest(req);
  ASSERT_TRUE(bytes.ok()) << Describe(bytes.error());
  EXPECT_EQ(ToHex(*bytes), ToHex(Hex("0300 02a1a2 01 0171 01 01 00")));
  auto back = DecodeHttpQueueSendRequest(*bytes);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(*back == req);
}

TEST(ClientProtocol, HttpQueueSendRequestIsRefusedWhenDecodingV1OrV2) {
  // The v3 body bytes behind an older prefix: the message does not exist there.
  for (const char* hex : {"0100 02a1a2 01 0171 01 01 00", "0200 02a1a2 01 0171 01 01 00"}) {
    SCOPED_TRACE(hex);
    auto decoded = DecodeHttpQueueSendRequest(Hex(hex));
    ASSERT_FALSE(decoded.ok());
    EXPECT_TRUE(decoded.error().Is("protocol", "incompatible_message"))
        << decoded.error().ToString();
    EXPECT_EQ(decoded.error().message(), "HttpQueueSendRequest requires client protocol v3");
  }
}

TEST(ClientProtocol, HttpQueueSendRequestIsRefusedWhenEncodingForV1OrV2) {
  latest::HttpQueueSendRequest req{Hex("a1"), std::nullopt, std::nullopt, 5000};
  for (uint16_t version : {uint16_t{1}, uint16_t{2}}) {
    auto bytes = EncodeHttpQueueSendRequest(req, version);
    ASSERT_FALSE(bytes.ok());
    const ConversionError want = IncompatibleMessageError{
        "HttpQueueSendRequest requires client protocol v3, target is v" + std::to_string(version)};
    EXPECT_TRUE(bytes.error() == want) << Describe(bytes.error());
    EXPECT_TRUE(ToError(bytes.error()).Is("protocol", "incompatible_message"));
  }
}

TEST(ClientProtocol, HttpQueueSendResponseIsRefusedBelowV3) {
  latest::HttpQueueSendResponse resp{"completed", Hex("f6")};
  auto v3 = EncodeHttpQueueSendResponse(resp);
  ASSERT_TRUE(v3.ok());
  auto back = DecodeHttpQueueSendResponse(*v3);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(*back == resp);

  auto v2 = EncodeHttpQueueSendResponse(resp, 2);
  ASSERT_FALSE(v2.ok());
  EXPECT_TRUE(ToError(v2.error()).Is("protocol", "incompatible_message"));
  Bytes old = *v3;
  old[0] = 2;
  auto decoded = DecodeHttpQueueSendResponse(old);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "incompatible_message"));
}

// ---- Bad prefixes and malformed bodies -------------------------------------------------------

TEST(ClientProtocol, VersionPrefixZeroIsUnsupported) {
  auto decoded = DecodeToServer(Hex("0000 01 04 7469636b 01"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "unsupported_version")) << decoded.error().ToString();
  EXPECT_EQ(decoded.error().message(), "invalid version: 0");
}

TEST(ClientProtocol, VersionPrefixFourIsUnsupported) {
  auto decoded = DecodeToClient(Hex("0400 00 026131 026331"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "unsupported_version")) << decoded.error().ToString();
  EXPECT_EQ(decoded.error().message(), "invalid version: 4");
}

TEST(ClientProtocol, TheVersionPrefixIsLittleEndian) {
  // `00 03` is version 768, not 3.
  auto decoded = DecodeToClient(Hex("0003 00 026131 026331"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "unsupported_version"));
  EXPECT_EQ(decoded.error().message(), "invalid version: 768");
}

TEST(ClientProtocol, EncodingForAnUnknownVersionIsRefused) {
  auto msg = ServerOf(latest::SubscriptionRequest{"tick", true});
  for (uint16_t version : {uint16_t{0}, uint16_t{4}}) {
    auto bytes = EncodeToServer(msg, version);
    ASSERT_FALSE(bytes.ok());
    const ConversionError want =
        IncompatibleMessageError{"invalid version: " + std::to_string(version)};
    EXPECT_TRUE(bytes.error() == want) << Describe(bytes.error());
  }
}

TEST(ClientProtocol, InputShorterThanTheVersionPrefixIsADecodeFailure) {
  for (const char* hex : {"", "03"}) {
    SCOPED_TRACE(hex);
    auto decoded = DecodeToServer(Hex(hex));
    ASSERT_FALSE(decoded.ok());
    EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed")) << decoded.error().ToString();
  }
}

TEST(ClientProtocol, APrefixWithNoBodyIsADecodeFailure) {
  auto decoded = DecodeToServer(Hex("0300"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed")) << decoded.error().ToString();
}

TEST(ClientProtocol, BodiesAreDecodedStrictlyAtEveryVersion) {
  for (uint16_t version = 1; version <= 3; ++version) {
    SCOPED_TRACE(version);
    Bytes prefix = {static_cast<uint8_t>(version), 0};
    auto with = [&](std::string_view body) {
      Bytes out = prefix;
      Bytes b = Hex(body);
      out.insert(out.end(), b.begin(), b.end());
      return out;
    };
    // Valid: SubscriptionRequest{"tick", true}.
    ASSERT_TRUE(DecodeToServer(with("01 04 7469636b 01")).ok());
    const char* bad[] = {
        "01 04 7469636b 01 00",  // trailing byte
        "01 04 7469636b 02",     // bool byte 2
        "02 04 7469636b 01",     // unknown ToServerBody tag
        "01 02 c080 01",         // overlong UTF-8 in eventName
        "00 8000 00 00",         // non-canonical action id
    };
    for (const char* body : bad) {
      SCOPED_TRACE(body);
      auto decoded = DecodeToServer(with(body));
      ASSERT_FALSE(decoded.ok());
      EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed")) << decoded.error().ToString();
    }
  }
}

}  // namespace
}  // namespace keel::protocol::client
