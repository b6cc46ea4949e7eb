// Property tests over seeded random values of every top-level protocol type
// (STYLE.md §2.10.7): BARE encode/decode and JSON round trips, deterministic encoding,
// and envoy version conversions in both directions (envoy-protocol.md §2.12–§2.13).
// A failure names the seed and value index; Randomize(Random(seed)) replays it.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <variant>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/random.h"
#include "protocol/bare/codec.h"
#include "protocol/client/v1_json.h"
#include "protocol/client/v1_random.h"
#include "protocol/client/v2_json.h"
#include "protocol/client/v2_random.h"
#include "protocol/client/v3_json.h"
#include "protocol/client/v3_random.h"
#include "protocol/conversion.h"
#include "protocol/envoy/v1_json.h"
#include "protocol/envoy/v1_random.h"
#include "protocol/envoy/v1_v2.h"
#include "protocol/envoy/v2_json.h"
#include "protocol/envoy/v2_random.h"
#include "protocol/envoy/v2_v3.h"
#include "protocol/envoy/v3_json.h"
#include "protocol/envoy/v3_random.h"
#include "protocol/envoy/v3_v4.h"
#include "protocol/envoy/v4_json.h"
#include "protocol/envoy/v4_random.h"
#include "protocol/envoy/versioned.h"
#include "protocol/persist/v1_json.h"
#include "protocol/persist/v1_random.h"
#include "protocol/persist/v2_json.h"
#include "protocol/persist/v2_random.h"
#include "protocol/persist/v3_json.h"
#include "protocol/persist/v3_random.h"
#include "protocol/persist/v4_json.h"
#include "protocol/persist/v4_random.h"
#include "protocol/persist/versioned.h"

namespace keel::protocol {
namespace {

// Values per type. Random values nest up to 8 levels, so a few hundred cover every union
// member of every top-level type many times over.
constexpr int kValues = 200;

std::string Where(uint64_t seed, int i) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "seed 0x%llx value %d", static_cast<unsigned long long>(seed), i);
  return buf;
}

// A schema's by-name JSON entry points.
struct JsonApi {
  Result<std::string> (*decode_to_json)(std::string_view, ByteView, int);
  Result<Bytes> (*encode_from_json)(std::string_view, std::string_view);
};

template <typename T>
std::string Dump(const T& v) {
  return ToJson(v).dump();
}

// Encode is deterministic; decode(encode(v)) == v; FromJson(ToJson(v)) == v; and the
// by-name JSON API agrees with the typed one.
template <typename T>
void ExpectRoundTrips(uint64_t seed, JsonApi api) {
  const std::string_view name = TypeName(static_cast<const T*>(nullptr));
  SCOPED_TRACE(std::string(name));
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T value{};
    Randomize(rng, value);
    const Bytes bytes = bare::EncodeValue(value);
    ASSERT_EQ(bare::EncodeValue(value), bytes) << Where(seed, i);

    auto decoded = bare::DecodeValue<T>(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error().ToString() << " " << Where(seed, i) << " "
                              << Dump(value);
    ASSERT_TRUE(*decoded == value)
        << Where(seed, i) << "\nwant " << Dump(value) << "\ngot  " << Dump(*decoded);

    const auto json = ToJson(value);
    T from_json{};
    std::string err;
    ASSERT_TRUE(FromJson(json, from_json, &err))
        << err << " " << Where(seed, i) << " " << json.dump();
    ASSERT_TRUE(from_json == value) << Where(seed, i) << " " << json.dump();

    auto text = api.decode_to_json(name, bytes, -1);
    ASSERT_TRUE(text.ok()) << text.error().ToString() << " " << Where(seed, i);
    ASSERT_EQ(*text, json.dump()) << Where(seed, i);
    auto encoded = api.encode_from_json(name, *text);
    ASSERT_TRUE(encoded.ok()) << encoded.error().ToString() << " " << Where(seed, i);
    ASSERT_EQ(*encoded, bytes) << Where(seed, i);
  }
}

// ---- BARE and JSON round trips ------------------------------------------------------------

TEST(EnvoyRoundTrip, V1TopLevelValuesSurviveBareAndJson) {
  namespace ns = envoy::v1;
  const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
  ExpectRoundTrips<ns::ToRivet>(0x01000001, api);
  ExpectRoundTrips<ns::ToEnvoy>(0x01000002, api);
  ExpectRoundTrips<ns::ToEnvoyConn>(0x01000003, api);
  ExpectRoundTrips<ns::ToGateway>(0x01000004, api);
  ExpectRoundTrips<ns::ToOutbound>(0x01000005, api);
  ExpectRoundTrips<ns::ActorCommandKeyData>(0x01000006, api);
}

TEST(EnvoyRoundTrip, V2TopLevelValuesSurviveBareAndJson) {
  namespace ns = envoy::v2;
  const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
  ExpectRoundTrips<ns::ToRivet>(0x02000001, api);
  ExpectRoundTrips<ns::ToEnvoy>(0x02000002, api);
  ExpectRoundTrips<ns::ToEnvoyConn>(0x02000003, api);
  ExpectRoundTrips<ns::ToGateway>(0x02000004, api);
  ExpectRoundTrips<ns::ToOutbound>(0x02000005, api);
  ExpectRoundTrips<ns::ActorCommandKeyData>(0x02000006, api);
}

TEST(EnvoyRoundTrip, V3TopLevelValuesSurviveBareAndJson) {
  namespace ns = envoy::v3;
  const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
  ExpectRoundTrips<ns::ToRivet>(0x03000001, api);
  ExpectRoundTrips<ns::ToEnvoy>(0x03000002, api);
  ExpectRoundTrips<ns::ToEnvoyConn>(0x03000003, api);
  ExpectRoundTrips<ns::ToGateway>(0x03000004, api);
  ExpectRoundTrips<ns::ToOutbound>(0x03000005, api);
  ExpectRoundTrips<ns::ActorCommandKeyData>(0x03000006, api);
}

TEST(EnvoyRoundTrip, V4TopLevelValuesSurviveBareAndJson) {
  namespace ns = envoy::v4;
  const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
  ExpectRoundTrips<ns::ToRivet>(0x04000001, api);
  ExpectRoundTrips<ns::ToEnvoy>(0x04000002, api);
  ExpectRoundTrips<ns::ToEnvoyConn>(0x04000003, api);
  ExpectRoundTrips<ns::ToGateway>(0x04000004, api);
  ExpectRoundTrips<ns::ToOutbound>(0x04000005, api);
  ExpectRoundTrips<ns::ActorCommandKeyData>(0x04000006, api);
}

TEST(ClientRoundTrip, EveryVersionsToServerAndToClientSurviveBareAndJson) {
  {
    namespace ns = client::v1;
    const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
    ExpectRoundTrips<ns::ToServer>(0x11000001, api);
    ExpectRoundTrips<ns::ToClient>(0x11000002, api);
  }
  {
    namespace ns = client::v2;
    const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
    ExpectRoundTrips<ns::ToServer>(0x12000001, api);
    ExpectRoundTrips<ns::ToClient>(0x12000002, api);
  }
  {
    namespace ns = client::v3;
    const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
    ExpectRoundTrips<ns::ToServer>(0x13000001, api);
    ExpectRoundTrips<ns::ToClient>(0x13000002, api);
    ExpectRoundTrips<ns::HttpQueueSendRequest>(0x13000003, api);
    ExpectRoundTrips<ns::HttpResponseError>(0x13000004, api);
  }
}

TEST(PersistRoundTrip, V4RecordsSurviveBareAndJson) {
  namespace ns = persist::v4;
  const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
  ExpectRoundTrips<ns::Actor>(0x24000001, api);
  ExpectRoundTrips<ns::Conn>(0x24000002, api);
  ExpectRoundTrips<ns::QueueMessage>(0x24000003, api);
  ExpectRoundTrips<ns::QueueMetadata>(0x24000004, api);
}

TEST(PersistRoundTrip, OlderActorRecordsSurviveBareAndJson) {
  {
    namespace ns = persist::v1;
    ExpectRoundTrips<ns::PersistedActor>(0x21000001, {&ns::DecodeToJson, &ns::EncodeFromJson});
  }
  {
    namespace ns = persist::v2;
    ExpectRoundTrips<ns::PersistedActor>(0x22000001, {&ns::DecodeToJson, &ns::EncodeFromJson});
  }
  {
    namespace ns = persist::v3;
    const JsonApi api{&ns::DecodeToJson, &ns::EncodeFromJson};
    ExpectRoundTrips<ns::Actor>(0x23000001, api);
    ExpectRoundTrips<ns::Conn>(0x23000002, api);
  }
}

// v4 Write*/Read* (2-byte version prefix) round trips.
template <typename T, typename WriteFn, typename ReadFn>
void ExpectRecordRoundTrips(uint64_t seed, WriteFn write, ReadFn read) {
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T value{};
    Randomize(rng, value);
    Bytes record = write(value);
    ASSERT_GE(record.size(), 2u);
    ASSERT_EQ(record[0], 4);
    ASSERT_EQ(record[1], 0);
    auto back = read(ByteView(record));
    ASSERT_TRUE(back.ok()) << back.error().ToString() << " " << Where(seed, i);
    ASSERT_TRUE(*back == value) << Where(seed, i);
  }
}

TEST(PersistRoundTrip, V4RecordsSurviveWriteAndRead) {
  ExpectRecordRoundTrips<persist::v4::Actor>(0x24100001, persist::WriteActor, persist::ReadActor);
  ExpectRecordRoundTrips<persist::v4::Conn>(0x24100002, persist::WriteConn, persist::ReadConn);
  ExpectRecordRoundTrips<persist::v4::QueueMessage>(0x24100003, persist::WriteQueueMessage,
                                                    persist::ReadQueueMessage);
  ExpectRecordRoundTrips<persist::v4::QueueMetadata>(0x24100004, persist::WriteQueueMetadata,
                                                     persist::ReadQueueMetadata);
}

// ---- Envoy conversions --------------------------------------------------------------------

// Random v3 values upgrade to v4 with identical bytes (v4 only appends union members) and
// downgrade back unchanged.
template <typename T3, typename T4>
void ExpectV3UpgradeDowngradeIdentity(uint64_t seed) {
  SCOPED_TRACE(std::string(TypeName(static_cast<const T3*>(nullptr))));
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T3 v3{};
    Randomize(rng, v3);
    ConvertContext up(4);
    T4 v4{};
    ASSERT_TRUE(envoy::v3_v4::Upgrade(v3, v4, up)) << ToString(*up.error) << " " << Where(seed, i);
    ASSERT_EQ(bare::EncodeValue(v4), bare::EncodeValue(v3)) << Where(seed, i);
    ConvertContext down(3);
    T3 back{};
    ASSERT_TRUE(envoy::v3_v4::Downgrade(v4, back, down))
        << ToString(*down.error) << " " << Where(seed, i);
    ASSERT_TRUE(back == v3) << Where(seed, i);
  }
}

TEST(EnvoyConversion, RandomV3ValuesUpgradeToV4AndDowngradeBackUnchanged) {
  using namespace envoy;  // NOLINT: v3::/v4:: pairs below
  ExpectV3UpgradeDowngradeIdentity<v3::ToRivet, v4::ToRivet>(0x34000001);
  ExpectV3UpgradeDowngradeIdentity<v3::ToEnvoy, v4::ToEnvoy>(0x34000002);
  ExpectV3UpgradeDowngradeIdentity<v3::ToEnvoyConn, v4::ToEnvoyConn>(0x34000003);
  ExpectV3UpgradeDowngradeIdentity<v3::ToGateway, v4::ToGateway>(0x34000004);
  ExpectV3UpgradeDowngradeIdentity<v3::ToOutbound, v4::ToOutbound>(0x34000005);
  ExpectV3UpgradeDowngradeIdentity<v3::ActorCommandKeyData, v4::ActorCommandKeyData>(0x34000006);
}

bool IsRemoteSql(const envoy::v4::ToRivet& m) { return m.tag() >= 9 && m.tag() <= 11; }
bool IsRemoteSql(const envoy::v4::ToEnvoy& m) { return m.tag() >= 8 && m.tag() <= 10; }
bool IsStatelessSqlite(const envoy::v4::ToRivet& m) { return m.tag() == 7 || m.tag() == 8; }
bool IsStatelessSqlite(const envoy::v4::ToEnvoy& m) { return m.tag() == 6 || m.tag() == 7; }
MessageDirection DirectionOf(const envoy::v4::ToRivet*) { return MessageDirection::kToRivet; }
MessageDirection DirectionOf(const envoy::v4::ToEnvoy*) { return MessageDirection::kToEnvoy; }
std::string StatelessRefusal(const envoy::v4::ToRivet*) {
  return "stateless sqlite requests require envoy-protocol v3";
}
std::string StatelessRefusal(const envoy::v4::ToEnvoy*) {
  return "stateless sqlite responses require envoy-protocol v3";
}

std::string Describe(const ConversionError& e) {
  if (const auto* p = std::get_if<ProtocolCompatibilityError>(&e)) {
    return "ProtocolCompatibilityError{" + p->ToString() + "}";
  }
  return "IncompatibleMessageError{" + std::get<IncompatibleMessageError>(e).message + "}";
}

// Random v4 ToRivet/ToEnvoy values downgrade to v3 and back unchanged, except remote SQL
// messages, which fail with exactly ProtocolCompatibilityError{remote SQL, dir, 4, 3}.
template <typename T3, typename T4>
void ExpectV4DowngradeOrRemoteSqlRefusal(uint64_t seed) {
  SCOPED_TRACE(std::string(TypeName(static_cast<const T4*>(nullptr))));
  Random rng(seed);
  int refused = 0;
  int converted = 0;
  for (int i = 0; i < kValues; ++i) {
    T4 v4{};
    Randomize(rng, v4);
    ConvertContext down(3);
    T3 v3{};
    const bool ok = envoy::v3_v4::Downgrade(v4, v3, down);
    if (IsRemoteSql(v4)) {
      ++refused;
      ASSERT_FALSE(ok) << Where(seed, i);
      ASSERT_TRUE(down.error.has_value());
      const ConversionError want =
          ProtocolCompatibilityError{CompatFeature::kRemoteSqliteExecution, DirectionOf(&v4), 4, 3};
      ASSERT_TRUE(*down.error == want) << Describe(*down.error) << " " << Where(seed, i);
      continue;
    }
    ++converted;
    ASSERT_TRUE(ok) << Describe(*down.error) << " " << Where(seed, i);
    ConvertContext up(4);
    T4 back{};
    ASSERT_TRUE(envoy::v3_v4::Upgrade(v3, back, up))
        << Describe(*up.error) << " " << Where(seed, i);
    ASSERT_TRUE(back == v4) << Where(seed, i);
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(converted, 0);
}

TEST(EnvoyConversion, RandomV4ValuesDowngradeToV3UnlessTheyAreRemoteSql) {
  using namespace envoy;  // NOLINT
  ExpectV4DowngradeOrRemoteSqlRefusal<v3::ToRivet, v4::ToRivet>(0x43000001);
  ExpectV4DowngradeOrRemoteSqlRefusal<v3::ToEnvoy, v4::ToEnvoy>(0x43000002);
}

// The same rules through the versioned entry points, for every older target: success
// decodes back to the same value; refusals are exactly the §2.13 errors, naming the
// requested target, and leave the output buffer untouched.
template <typename T4, typename EncodeFn, typename DecodeFn>
void ExpectVersionedEncodeRules(uint64_t seed, EncodeFn encode, DecodeFn decode) {
  SCOPED_TRACE(std::string(TypeName(static_cast<const T4*>(nullptr))));
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T4 msg{};
    Randomize(rng, msg);
    for (uint16_t target = 1; target <= 3; ++target) {
      SCOPED_TRACE("target v" + std::to_string(target));
      Bytes out = {0xaa};
      auto r = encode(msg, target, out);
      if (IsRemoteSql(msg)) {
        ASSERT_FALSE(r.ok()) << Where(seed, i);
        const ConversionError want = ProtocolCompatibilityError{
            CompatFeature::kRemoteSqliteExecution, DirectionOf(&msg), 4, target};
        ASSERT_TRUE(r.error() == want) << Describe(r.error()) << " " << Where(seed, i);
        ASSERT_EQ(out, Bytes{0xaa});
      } else if (target < 3 && IsStatelessSqlite(msg)) {
        ASSERT_FALSE(r.ok()) << Where(seed, i);
        const ConversionError want = IncompatibleMessageError{StatelessRefusal(&msg)};
        ASSERT_TRUE(r.error() == want) << Describe(r.error()) << " " << Where(seed, i);
        ASSERT_EQ(out, Bytes{0xaa});
      } else {
        ASSERT_TRUE(r.ok()) << Describe(r.error()) << " " << Where(seed, i);
        ASSERT_EQ(out[0], 0xaa);
        auto back = decode(ByteView(out).subspan(1), target);
        ASSERT_TRUE(back.ok()) << back.error().ToString() << " " << Where(seed, i);
        ASSERT_TRUE(*back == msg) << Where(seed, i);
      }
    }
  }
}

TEST(EnvoyConversion, RandomV4ValuesEncodeForOlderTargetsOrFailWithTheDocumentedError) {
  ExpectVersionedEncodeRules<envoy::v4::ToRivet>(
      0x43100001,
      [](const auto& m, uint16_t v, Bytes& out) { return envoy::EncodeToRivet(m, v, out); },
      [](ByteView b, uint16_t v) { return envoy::DecodeToRivet(b, v); });
  ExpectVersionedEncodeRules<envoy::v4::ToEnvoy>(
      0x43100002,
      [](const auto& m, uint16_t v, Bytes& out) { return envoy::EncodeToEnvoy(m, v, out); },
      [](ByteView b, uint16_t v) { return envoy::DecodeToEnvoy(b, v); });
}

// Engine-internal unions convert to every version without failure, framed or not.
template <typename T4, typename EncodeFramedFn, typename DecodeFramedFn>
void ExpectFramedAnyVersion(uint64_t seed, EncodeFramedFn encode, DecodeFramedFn decode) {
  SCOPED_TRACE(std::string(TypeName(static_cast<const T4*>(nullptr))));
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T4 msg{};
    Randomize(rng, msg);
    for (uint16_t target = 1; target <= 4; ++target) {
      auto framed = encode(msg, target);
      ASSERT_TRUE(framed.ok()) << Describe(framed.error()) << " v" << target << " "
                               << Where(seed, i);
      ASSERT_GE(framed->size(), 2u);
      ASSERT_EQ((*framed)[0], target);
      ASSERT_EQ((*framed)[1], 0);
      auto back = decode(ByteView(*framed));
      ASSERT_TRUE(back.ok()) << back.error().ToString() << " v" << target << " " << Where(seed, i);
      ASSERT_EQ(back->version, target);
      ASSERT_TRUE(back->value == msg) << "v" << target << " " << Where(seed, i);
    }
  }
}

TEST(EnvoyConversion, RandomInternalMessagesConvertToEveryVersionAndBack) {
  using namespace envoy;  // NOLINT
  ExpectFramedAnyVersion<v4::ToEnvoyConn>(0x44000001, EncodeToEnvoyConnFramed,
                                          DecodeToEnvoyConnFramed);
  ExpectFramedAnyVersion<v4::ToGateway>(0x44000002, EncodeToGatewayFramed, DecodeToGatewayFramed);
  ExpectFramedAnyVersion<v4::ToOutbound>(0x44000003, EncodeToOutboundFramed,
                                         DecodeToOutboundFramed);
  ExpectFramedAnyVersion<v4::ActorCommandKeyData>(0x44000004, EncodeActorCommandKeyDataFramed,
                                                  DecodeActorCommandKeyDataFramed);
}

// v1 values climb the generated converters to v4 and come back down to the same v1 value;
// through the versioned entry points the v1 bytes come back identical.
template <typename T1, typename T2, typename T3, typename T4, typename DecodeFn, typename EncodeFn>
void ExpectV1UpAndDownUnchanged(uint64_t seed, DecodeFn decode, EncodeFn encode) {
  SCOPED_TRACE(std::string(TypeName(static_cast<const T1*>(nullptr))));
  Random rng(seed);
  for (int i = 0; i < kValues; ++i) {
    T1 v1{};
    Randomize(rng, v1);

    ConvertContext up(4);
    T2 v2{};
    T3 v3{};
    T4 v4{};
    ASSERT_TRUE(envoy::v1_v2::Upgrade(v1, v2, up) && envoy::v2_v3::Upgrade(v2, v3, up) &&
                envoy::v3_v4::Upgrade(v3, v4, up))
        << Describe(*up.error) << " " << Where(seed, i);
    ConvertContext down(1);
    T3 d3{};
    T2 d2{};
    T1 d1{};
    ASSERT_TRUE(envoy::v3_v4::Downgrade(v4, d3, down) && envoy::v2_v3::Downgrade(d3, d2, down) &&
                envoy::v1_v2::Downgrade(d2, d1, down))
        << Describe(*down.error) << " " << Where(seed, i);
    ASSERT_TRUE(d1 == v1) << Where(seed, i);

    const Bytes bytes = bare::EncodeValue(v1);
    auto latest = decode(ByteView(bytes), 1);
    ASSERT_TRUE(latest.ok()) << latest.error().ToString() << " " << Where(seed, i);
    ASSERT_TRUE(*latest == v4) << Where(seed, i);
    Bytes out;
    auto written = encode(*latest, 1, out);
    ASSERT_TRUE(written.ok()) << Describe(written.error()) << " " << Where(seed, i);
    ASSERT_EQ(ToHex(out), ToHex(bytes)) << Where(seed, i);
  }
}

TEST(EnvoyConversion, RandomV1ValuesGoUpToV4AndBackDownToV1Unchanged) {
  using namespace envoy;  // NOLINT
  ExpectV1UpAndDownUnchanged<v1::ToEnvoy, v2::ToEnvoy, v3::ToEnvoy, v4::ToEnvoy>(
      0x14000001, [](ByteView b, uint16_t v) { return DecodeToEnvoy(b, v); },
      [](const auto& m, uint16_t v, Bytes& out) { return EncodeToEnvoy(m, v, out); });
  ExpectV1UpAndDownUnchanged<v1::ToRivet, v2::ToRivet, v3::ToRivet, v4::ToRivet>(
      0x14000002, [](ByteView b, uint16_t v) { return DecodeToRivet(b, v); },
      [](const auto& m, uint16_t v, Bytes& out) { return EncodeToRivet(m, v, out); });
  ExpectV1UpAndDownUnchanged<v1::ActorCommandKeyData, v2::ActorCommandKeyData,
                             v3::ActorCommandKeyData, v4::ActorCommandKeyData>(
      0x14000003, [](ByteView b, uint16_t v) { return DecodeActorCommandKeyData(b, v); },
      [](const auto& m, uint16_t v, Bytes& out) { return EncodeActorCommandKeyData(m, v, out); });
}

}  // namespace
}  // namespace keel::protocol
