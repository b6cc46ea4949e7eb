// Malformed input through the generated decoders (envoy-protocol.md §1.4): each strictness
// rule exercised on a real message with the exact DecodeFailure::Kind, plus a seeded
// mutation loop over random valid messages (run under ASan/UBSan): decoding never
// crashes, and whatever decodes re-encodes to the very same bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "support/hex.h"
#include "base/bytes.h"
#include "base/random.h"
#include "protocol/bare/codec.h"
#include "protocol/client/v3.h"
#include "protocol/client/v3_random.h"
#include "protocol/envoy/v1_random.h"
#include "protocol/envoy/v2_random.h"
#include "protocol/envoy/v3_random.h"
#include "protocol/envoy/v4.h"
#include "protocol/envoy/v4_random.h"
#include "protocol/envoy/versioned.h"
#include "protocol/persist/v4.h"
#include "protocol/persist/v4_random.h"

namespace keel::protocol {
namespace {

using bare::DecodeFailure;
using bare::Limits;
using Kind = DecodeFailure::Kind;
namespace v4 = envoy::v4;

using ::keel::testing::Hex;

std::string KindName(Kind k) { return std::string(bare::DecodeFailureKindName(k)); }

// Decodes one T strictly (whole input); returns "ok" or the failure as "kind@offset".
template <typename T>
std::string Outcome(ByteView in, const Limits& limits = Limits()) {
  T value{};
  bare::Reader r(in, limits);
  if (Decode(r, value) && r.ExpectEnd()) return "ok";
  return KindName(r.failure().kind) + "@" + std::to_string(r.failure().offset);
}

// ---- Unknown union tags and enum values ---------------------------------------------------

TEST(MalformedEnvoy, UnknownToRivetTagTwelveIsRejected) {
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("0c")), "unknown_tag@0");
  auto decoded = bare::DecodeValue<v4::ToRivet>(Hex("0c"));
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed"));
  EXPECT_EQ(decoded.error().message(),
            "ToRivet: unknown tag 12 for ToRivet (unknown_tag at byte 0)");
}

TEST(MalformedEnvoy, UnknownToRivetTag255IsRejectedAndALoneFfByteIsTruncated) {
  // 0xff has the continuation bit set: on its own it is an unfinished varint; 255 as a
  // canonical tag is `ff 01`.
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("ff 01")), "unknown_tag@0");
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("ff")), "truncated@1");
}

TEST(MalformedEnvoy, AV4OnlyToRivetTagIsUnknownAtV3) {
  // ToRivet tag 9 (remote SQL exec) does not exist in the v3 schema.
  auto decoded = envoy::DecodeToRivet(Hex("09"), 3);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed")) << decoded.error().ToString();
  EXPECT_NE(decoded.error().message().find("unknown_tag"), std::string::npos);
}

TEST(MalformedEnvoy, UnknownStopActorReasonIsRejected) {
  // ActorCommandKeyData tag 1 = CommandStopActor, then the reason enum (5 values).
  EXPECT_EQ(Outcome<v4::ActorCommandKeyData>(Hex("01 04")), "ok");
  EXPECT_EQ(Outcome<v4::ActorCommandKeyData>(Hex("01 05")), "unknown_tag@1");
  EXPECT_EQ(Outcome<v4::ActorCommandKeyData>(Hex("01 80 01")), "unknown_tag@1");
  // The same inside a ToEnvoyCommands list: tag 1, one command, checkpoint ("a", 1, 2),
  // Command tag 1, reason 5.
  Bytes commands = Hex("01 01 0161 01000000 0200000000000000 01 05");
  EXPECT_EQ(Outcome<v4::ToEnvoy>(commands), "unknown_tag@17");
}

TEST(MalformedEnvoy, InvalidBoolInsideAMessageIsRejected) {
  // ToRivetTunnelMessage (tag 6), MessageId (4+4+2 bytes), kind tag 3 = WebSocketOpen,
  // canHibernate = 2.
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("06 01020304 05060708 0900 03 01")), "ok");
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("06 01020304 05060708 0900 03 02")), "invalid_bool@12");
}

// ---- Duplicate map keys -----------------------------------------------------------------

v4::ToEnvoy RequestStartWithHeaders(std::vector<std::pair<std::string, std::string>> headers) {
  v4::ToEnvoyRequestStart start;
  start.actor_id = "a";
  start.method = "GET";
  start.path = "/";
  start.headers = std::move(headers);
  v4::ToEnvoyTunnelMessage msg;
  msg.message_id.gateway_id = {1, 2, 3, 4};
  msg.message_id.request_id = {5, 6, 7, 8};
  msg.message_id.message_index = 9;
  msg.message_kind = start;
  return v4::ToEnvoy{msg};
}

TEST(MalformedEnvoy, ADuplicateHeaderKeyInARequestStartIsRejected) {
  // The encoder writes what it is given, so a hand-made duplicate reaches the decoder.
  Bytes bytes = bare::EncodeValue(RequestStartWithHeaders({{"x", "1"}, {"x", "2"}}));
  // tag 1 + MessageId 10 + kind tag 1 + "a" 2 + "GET" 4 + "/" 2 = map count at byte 20.
  EXPECT_EQ(Outcome<v4::ToEnvoy>(bytes), "duplicate_map_key@20");

  auto decoded = envoy::DecodeToEnvoy(bytes, 4);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed"));
  EXPECT_NE(decoded.error().message().find("duplicate_map_key"), std::string::npos);
}

TEST(MalformedEnvoy, ADuplicateKeyAmongManyHeadersIsRejected) {
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 0; i < 20; ++i) headers.emplace_back("h" + std::to_string(i), "v");
  EXPECT_EQ(Outcome<v4::ToEnvoy>(bare::EncodeValue(RequestStartWithHeaders(headers))), "ok");
  headers.emplace_back("h7", "again");
  EXPECT_EQ(Outcome<v4::ToEnvoy>(bare::EncodeValue(RequestStartWithHeaders(headers))),
            "duplicate_map_key@20");
}

TEST(MalformedEnvoy, SameValueUnderDifferentKeysIsNotADuplicate) {
  EXPECT_EQ(Outcome<v4::ToEnvoy>(
                bare::EncodeValue(RequestStartWithHeaders({{"a", "x"}, {"b", "x"}, {"", "x"}}))),
            "ok");
}

TEST(MalformedEnvoy, ADuplicateActorNameInToRivetMetadataIsRejected) {
  v4::ToRivetMetadata meta;
  meta.prepopulate_actor_names.emplace();
  meta.prepopulate_actor_names->push_back({"counter", v4::ActorName{"{}"}});
  meta.prepopulate_actor_names->push_back({"counter", v4::ActorName{"{\"x\":1}"}});
  // tag 0, optional present, then the map count at byte 2.
  EXPECT_EQ(Outcome<v4::ToRivet>(bare::EncodeValue(v4::ToRivet{meta})), "duplicate_map_key@2");
}

TEST(MalformedPersist, ADuplicateRequestHeaderInAConnIsRejected) {
  persist::v4::Conn conn;
  conn.id = "c";
  conn.request_headers = {{"k", "1"}, {"k", "1"}};
  Bytes bytes = bare::EncodeValue(conn);
  EXPECT_EQ(Outcome<persist::v4::Conn>(bytes).rfind("duplicate_map_key@", 0), 0u)
      << Outcome<persist::v4::Conn>(bytes);
}

// ---- Invalid UTF-8 ----------------------------------------------------------------------

TEST(MalformedEnvoy, InvalidUtf8InAnActorIdIsRejectedAtEveryVersion) {
  for (std::string bad : {"\xed\xa0\x80", "\xc0\x80", "act\x80", "\xf4\x90\x80\x80"}) {
    v4::ToRivetKvRequest kv;
    kv.actor_id = bad;
    kv.request_id = 1;
    kv.data = v4::KvDropRequest{};
    Bytes bytes = bare::EncodeValue(v4::ToRivet{kv});
    EXPECT_EQ(Outcome<v4::ToRivet>(bytes), "invalid_utf8@1");
    for (uint16_t version = 1; version <= 4; ++version) {
      SCOPED_TRACE(version);
      // ToRivetKvRequest is tag 5 with the same layout in every version.
      auto decoded = envoy::DecodeToRivet(bytes, version);
      ASSERT_FALSE(decoded.ok());
      EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed"));
      EXPECT_NE(decoded.error().message().find("invalid_utf8"), std::string::npos)
          << decoded.error().ToString();
    }
  }
}

// ---- Trailing bytes ---------------------------------------------------------------------

TEST(MalformedEnvoy, BytesAppendedToAValidMessageAreRejected) {
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("03")), "ok");
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("03 00")), "trailing_bytes@1");
  EXPECT_EQ(Outcome<v4::ToRivet>(Hex("04 0068e5cf8b010000 ff")), "trailing_bytes@9");
  auto decoded = envoy::DecodeToRivet(Hex("03 00"), 4);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed"));
}

TEST(MalformedEnvoy, FramedPayloadsRejectTrailingBytesToo) {
  // §1.5 example 7: ToEnvoyConnClose framed at v4.
  auto ok = envoy::DecodeToEnvoyConnFramed(Hex("04 00 01"));
  ASSERT_TRUE(ok.ok()) << ok.error().ToString();
  auto bad = envoy::DecodeToEnvoyConnFramed(Hex("04 00 01 00"));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.error().Is("protocol", "decode_failed"));
}

// ---- Truncation -------------------------------------------------------------------------

struct Vector {
  const char* name;
  bool to_rivet;  // else ToEnvoy
  const char* hex;
};

// envoy-protocol.md §1.5 worked examples (v4).
const Vector kSpecVectors[] = {
    {"ToRivetPong", true, "04 0068e5cf8b010000"},
    {"ToRivetStopping", true, "03"},
    {"ToEnvoyPing", false, "05 0068e5cf8b010000"},
    {"ToEnvoyInit", false, "00 983a000000000000 3075000000000000 0000400100000000"},
    {"ToRivetSqliteExecuteRequest", true,
     "0a 02000000 07 64656661756c74 02 6131 0700000000000000 08 73656c656374203f 01 01 01 "
     "0100000000000000"},
    {"ToEnvoySqliteExecuteResponse", false,
     "09 02000000 00 01 01 76 01 01 02 3ff8000000000000 0000000000000000 00 00"},
    {"ToRivetEvents", true, "01 01 03 616374 01000000 0000000000000000 01 00"},
};

TEST(MalformedEnvoy, EveryStrictPrefixOfTheSpecVectorsIsTruncated) {
  for (const auto& vec : kSpecVectors) {
    SCOPED_TRACE(vec.name);
    Bytes full = Hex(vec.hex);
    auto outcome = [&](ByteView in) {
      return vec.to_rivet ? Outcome<v4::ToRivet>(in) : Outcome<v4::ToEnvoy>(in);
    };
    ASSERT_EQ(outcome(full), "ok");
    for (size_t n = 0; n < full.size(); ++n) {
      SCOPED_TRACE("prefix length " + std::to_string(n));
      std::string got = outcome(ByteView(full).first(n));
      EXPECT_EQ(got.rfind("truncated@", 0), 0u) << got;
    }
  }
}

template <typename T>
void ExpectEveryPrefixTruncated(uint64_t seed, int values) {
  Random rng(seed);
  for (int i = 0; i < values; ++i) {
    T value{};
    Randomize(rng, value);
    Bytes full = bare::EncodeValue(value);
    if (full.size() > 512) continue;  // keep the quadratic prefix scan cheap
    ASSERT_EQ(Outcome<T>(full), "ok") << "seed " << seed << " value " << i;
    for (size_t n = 0; n < full.size(); ++n) {
      std::string got = Outcome<T>(ByteView(full).first(n));
      ASSERT_EQ(got.rfind("truncated@", 0), 0u)
          << got << " at prefix " << n << "/" << full.size() << ", seed " << seed << " value " << i;
    }
  }
}

TEST(MalformedEnvoy, EveryStrictPrefixOfRandomValidMessagesIsTruncated) {
  ExpectEveryPrefixTruncated<v4::ToRivet>(0x7a11, 40);
  ExpectEveryPrefixTruncated<v4::ToEnvoy>(0x7a12, 40);
  ExpectEveryPrefixTruncated<v4::ActorCommandKeyData>(0x7a13, 20);
  ExpectEveryPrefixTruncated<persist::v4::Actor>(0x7a14, 20);
  ExpectEveryPrefixTruncated<client::v3::ToClient>(0x7a15, 20);
}

TEST(MalformedEnvoy, AHugeListCountInASmallMessageFailsWithoutAllocating) {
  // KvGetRequest keys: ToRivetKvRequest (tag 5), actorId "a", requestId, KvRequestData tag 0,
  // then a count of 2^40 with 3 bytes left. With the container limit lifted only the
  // remaining-input check stops a multi-terabyte reserve() (which ASan would abort on).
  Bytes bytes = Hex("05 0161 01000000 00 8080808080 20 000000");
  Limits unlimited;
  unlimited.max_container_len = ~uint64_t{0};
  EXPECT_EQ(Outcome<v4::ToRivet>(bytes, unlimited), "truncated@8");
  EXPECT_EQ(Outcome<v4::ToRivet>(bytes), "too_long@8");
}

// ---- Depth ------------------------------------------------------------------------------

TEST(MalformedEnvoy, ANestedMessageBeyondMaxDepthIsTooDeep) {
  // §1.5 example 6: ToRivet > ToRivetEvents list > EventWrapper > Event > state update >
  // ActorState: several levels deep.
  Bytes events = Hex("01 01 03 616374 01000000 0000000000000000 01 00");
  Limits shallow;
  shallow.max_depth = 2;
  EXPECT_EQ(Outcome<v4::ToRivet>(events, shallow).rfind("too_deep@", 0), 0u)
      << Outcome<v4::ToRivet>(events, shallow);
  auto decoded = envoy::DecodeToRivet(events, 4, shallow);
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(decoded.error().Is("protocol", "decode_failed"));
  EXPECT_NE(decoded.error().message().find("too_deep"), std::string::npos);
  EXPECT_TRUE(envoy::DecodeToRivet(events, 4).ok());
}

TEST(MalformedEnvoy, DepthLimitFailsExactlyBelowTheMessagesNestingDepth) {
  Bytes events = Hex("01 01 03 616374 01000000 0000000000000000 01 00");
  uint32_t needed = 0;
  for (uint32_t depth = 0; depth < 32; ++depth) {
    Limits limits;
    limits.max_depth = depth;
    std::string got = Outcome<v4::ToRivet>(events, limits);
    if (got == "ok") {
      needed = depth;
      break;
    }
    EXPECT_EQ(got.rfind("too_deep@", 0), 0u) << "max_depth " << depth << ": " << got;
  }
  EXPECT_GT(needed, 2u);
  // Every larger limit keeps working.
  Limits roomy;
  roomy.max_depth = needed + 5;
  EXPECT_EQ(Outcome<v4::ToRivet>(events, roomy), "ok");
}

// ---- Mutation loop ------------------------------------------------------------------------

// One to three random byte-level edits: bit flips, byte overwrites (random or boundary
// values), insertions, deletions, truncation and chunk duplication.
void Mutate(Random& rng, Bytes& b) {
  static constexpr uint8_t kInteresting[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xc0, 0xed};
  int edits = rng.Uniform(1, 3);
  for (int e = 0; e < edits; ++e) {
    const int op = rng.Uniform(0, 6);
    if (b.empty() && op != 3) {
      b.push_back(static_cast<uint8_t>(rng.NextU64()));
      continue;
    }
    const size_t at = b.empty() ? 0 : rng.Uniform<size_t>(0, b.size() - 1);
    switch (op) {
      case 0:
        b[at] ^= static_cast<uint8_t>(1u << rng.Uniform(0, 7));
        break;
      case 1:
        b[at] = static_cast<uint8_t>(rng.NextU64());
        break;
      case 2:
        b[at] = kInteresting[rng.Uniform<size_t>(0, std::size(kInteresting) - 1)];
        break;
      case 3:
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng.Uniform<size_t>(0, b.size())),
                 static_cast<uint8_t>(rng.NextU64()));
        break;
      case 4:
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at));
        break;
      case 5:
        b.resize(at);
        break;
      case 6: {
        size_t len = rng.Uniform<size_t>(1, std::min<size_t>(8, b.size() - at));
        Bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(at),
                    b.begin() + static_cast<std::ptrdiff_t>(at + len));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), chunk.begin(), chunk.end());
        break;
      }
    }
  }
}

struct MutationStats {
  int decoded = 0;
  int rejected = 0;
};

// `mutations` edits of random valid T values (a fresh value every 8 mutations). Strict
// decoding admits exactly one encoding per value, so whatever decodes must re-encode to
// the mutated bytes themselves, and decode again to the same value.
template <typename T>
void MutateTyped(uint64_t seed, int mutations, MutationStats& stats) {
  Random rng(seed);
  T original{};
  Bytes encoded;
  for (int i = 0; i < mutations; ++i) {
    if (i % 8 == 0) {
      Randomize(rng, original);
      encoded = bare::EncodeValue(original);
    }
    Bytes mutated = encoded;
    Mutate(rng, mutated);
    auto decoded = bare::DecodeValue<T>(mutated);
    if (!decoded.ok()) {
      ++stats.rejected;
      ASSERT_TRUE(decoded.error().Is("protocol", "decode_failed"))
          << decoded.error().ToString() << " seed " << seed << " mutation " << i;
      continue;
    }
    ++stats.decoded;
    Bytes reencoded = bare::EncodeValue(*decoded);
    ASSERT_EQ(ToHex(reencoded), ToHex(mutated)) << "seed " << seed << " mutation " << i;
    auto again = bare::DecodeValue<T>(reencoded);
    ASSERT_TRUE(again.ok()) << again.error().ToString() << " seed " << seed << " mutation " << i;
    ASSERT_TRUE(*again == *decoded) << "seed " << seed << " mutation " << i;
  }
}

TEST(MalformedMutation, MutatedMessagesNeverCrashAndDecodedOnesReencodeIdentically) {
  MutationStats stats;
  MutateTyped<v4::ToRivet>(0x6d757401, 3000, stats);
  MutateTyped<v4::ToEnvoy>(0x6d757402, 3000, stats);
  MutateTyped<v4::ToEnvoyConn>(0x6d757403, 1000, stats);
  MutateTyped<v4::ToGateway>(0x6d757404, 1000, stats);
  MutateTyped<v4::ToOutbound>(0x6d757405, 1000, stats);
  MutateTyped<v4::ActorCommandKeyData>(0x6d757406, 1000, stats);
  MutateTyped<client::v3::ToServer>(0x6d757407, 1000, stats);
  MutateTyped<client::v3::ToClient>(0x6d757408, 1000, stats);
  MutateTyped<persist::v4::Actor>(0x6d757409, 1000, stats);
  MutateTyped<persist::v4::Conn>(0x6d75740a, 1000, stats);
  MutateTyped<persist::v4::QueueMessage>(0x6d75740b, 1000, stats);
  // Both paths must have been exercised for the loop to mean anything.
  EXPECT_GT(stats.decoded, 500);
  EXPECT_GT(stats.rejected, 5000);
}

// Mutated frames of every protocol version through the versioned decoders (and so the
// upgrade converters). Whatever decodes must encode back at that version and decode to
// the same latest value.
template <typename T, typename DecodeFn, typename EncodeFn>
void MutateVersioned(uint64_t seed, uint16_t version, int mutations, DecodeFn decode,
                     EncodeFn encode, MutationStats& stats) {
  Random rng(seed);
  T original{};
  Bytes encoded;
  for (int i = 0; i < mutations; ++i) {
    if (i % 8 == 0) {
      Randomize(rng, original);
      encoded = bare::EncodeValue(original);
    }
    Bytes mutated = encoded;
    Mutate(rng, mutated);
    auto decoded = decode(ByteView(mutated), version);
    if (!decoded.ok()) {
      ++stats.rejected;
      // A v2 legacy SQLite message decodes but cannot be upgraded: incompatible_message.
      ASSERT_TRUE(decoded.error().Is("protocol", "decode_failed") ||
                  decoded.error().Is("protocol", "incompatible_message"))
          << decoded.error().ToString() << " seed " << seed << " mutation " << i;
      continue;
    }
    ++stats.decoded;
    Bytes out;
    auto written = encode(*decoded, version, out);
    ASSERT_TRUE(written.ok()) << ToString(written.error()) << " seed " << seed << " mutation " << i;
    auto again = decode(ByteView(out), version);
    ASSERT_TRUE(again.ok()) << again.error().ToString() << " seed " << seed << " mutation " << i;
    ASSERT_TRUE(*again == *decoded) << "seed " << seed << " mutation " << i;
  }
}

TEST(MalformedMutation, MutatedOlderVersionFramesNeverCrashTheUpgradePath) {
  MutationStats stats;
  auto dec_rivet = [](ByteView b, uint16_t v) { return envoy::DecodeToRivet(b, v); };
  auto enc_rivet = [](const v4::ToRivet& m, uint16_t v, Bytes& out) {
    return envoy::EncodeToRivet(m, v, out);
  };
  auto dec_envoy = [](ByteView b, uint16_t v) { return envoy::DecodeToEnvoy(b, v); };
  auto enc_envoy = [](const v4::ToEnvoy& m, uint16_t v, Bytes& out) {
    return envoy::EncodeToEnvoy(m, v, out);
  };
  MutateVersioned<envoy::v1::ToRivet>(0x76310001, 1, 750, dec_rivet, enc_rivet, stats);
  MutateVersioned<envoy::v2::ToRivet>(0x76320001, 2, 750, dec_rivet, enc_rivet, stats);
  MutateVersioned<envoy::v3::ToRivet>(0x76330001, 3, 750, dec_rivet, enc_rivet, stats);
  MutateVersioned<envoy::v1::ToEnvoy>(0x76310002, 1, 750, dec_envoy, enc_envoy, stats);
  MutateVersioned<envoy::v2::ToEnvoy>(0x76320002, 2, 750, dec_envoy, enc_envoy, stats);
  MutateVersioned<envoy::v3::ToEnvoy>(0x76330002, 3, 750, dec_envoy, enc_envoy, stats);
  EXPECT_GT(stats.decoded, 200);
  EXPECT_GT(stats.rejected, 2000);
}

}  // namespace
}  // namespace keel::protocol
