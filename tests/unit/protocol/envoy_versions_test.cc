// Version negotiation at the edge: which messages cross which versions, the typed errors
// for those that cannot (envoy-protocol.md §2.13), the version-prefixed envelope (§1.6)
// and the worked byte examples of §1.5.
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "protocol/envoy/v1_v2.h"
#include "protocol/envoy/v2.h"
#include "protocol/envoy/versioned.h"

namespace keel::protocol::envoy {
namespace {

Bytes Hex(std::string_view hex) {
  auto b = FromHex(hex);
  EXPECT_TRUE(b.has_value()) << hex;
  return b.value_or(Bytes{});
}

// The first golden vector with `id` at `version`, as bytes.
Bytes GoldenBytes(int version, std::string_view id) {
  std::ifstream in(std::string(KEEL_SOURCE_DIR) + "/tests/golden/envoy/v" +
                   std::to_string(version) + "/vectors.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.at("id") == id) return Hex(j.at("hex").get<std::string>());
  }
  ADD_FAILURE() << "no vector " << id << " at v" << version;
  return {};
}

latest::ToRivet RemoteExecute() {
  latest::SqliteExecuteRequest req;
  req.namespace_id = "default";
  req.actor_id = "a1";
  req.generation = 7;
  req.sql = "select ?";
  req.params = std::vector<latest::SqliteBindParam>{latest::SqliteValueInteger{1}};
  return latest::ToRivetSqliteExecuteRequest{2, req};
}

ProtocolCompatibilityError ExpectCompat(const Result<void, ConversionError>& r) {
  EXPECT_FALSE(r.has_value());
  if (r.has_value()) return {};
  const auto* e = std::get_if<ProtocolCompatibilityError>(&r.error());
  EXPECT_NE(e, nullptr) << ToString(r.error());
  return e ? *e : ProtocolCompatibilityError{};
}

std::string ExpectPlain(const Result<void, ConversionError>& r) {
  EXPECT_FALSE(r.has_value());
  if (r.has_value()) return "";
  const auto* e = std::get_if<IncompatibleMessageError>(&r.error());
  EXPECT_NE(e, nullptr) << ToString(r.error());
  return e ? e->message : "";
}

TEST(EnvoyVersions, SpecWorkedExamplesEncodeByteForByte) {
  Bytes out;
  ASSERT_TRUE(EncodeToRivet(latest::ToRivetPong{1700000000000}, 4, out).has_value());
  EXPECT_EQ(ToHex(out), "040068e5cf8b010000");
  out.clear();
  ASSERT_TRUE(EncodeToEnvoy(latest::ToEnvoyPing{1700000000000}, 4, out).has_value());
  EXPECT_EQ(ToHex(out), "050068e5cf8b010000");
  out.clear();
  ASSERT_TRUE(EncodeToRivet(latest::ToRivetStopping{}, 4, out).has_value());
  EXPECT_EQ(ToHex(out), "03");
  out.clear();
  ASSERT_TRUE(
      EncodeToEnvoy(latest::ToEnvoyInit{latest::ProtocolMetadata{15000, 30000, 20971520}}, 4, out)
          .has_value());
  EXPECT_EQ(ToHex(out), "00" "983a000000000000" "3075000000000000" "0000400100000000");
  out.clear();
  ASSERT_TRUE(EncodeToRivet(RemoteExecute(), 4, out).has_value());
  EXPECT_EQ(ToHex(out),
            "0a0200000007"
            "64656661756c74"
            "02613107000000000000000873656c656374203f0101010100000000000000");
}

TEST(EnvoyVersions, RemoteSqlRequestsBelowV4FailWithATypedCompatibilityErrorNamingTheTarget) {
  for (uint16_t target : {3, 2, 1}) {
    SCOPED_TRACE(target);
    Bytes out = {0xaa};
    auto e = ExpectCompat(EncodeToRivet(RemoteExecute(), target, out));
    EXPECT_EQ(e.feature, CompatFeature::kRemoteSqliteExecution);
    EXPECT_EQ(e.direction, MessageDirection::kToRivet);
    EXPECT_EQ(e.required_version, 4);
    // The version the caller asked for, not an intermediate step (spec: INCONSISTENCY
    // resolved in favour of the requested version).
    EXPECT_EQ(e.target_version, target);
    EXPECT_EQ(e.ToString(), "remote sqlite requests require envoy-protocol v4 but target version is v" +
                                std::to_string(target));
    EXPECT_EQ(out, Bytes{0xaa}) << "a failed encode must leave the buffer as it was";
  }
  // Exec and ExecuteWrite too.
  Bytes out;
  latest::ToRivet exec = latest::ToRivetSqliteExecRequest{1, {"default", "a1", 1, "select 1"}};
  EXPECT_EQ(ExpectCompat(EncodeToRivet(exec, 3, out)).feature, CompatFeature::kRemoteSqliteExecution);
  latest::ToRivet write =
      latest::ToRivetSqliteExecuteWriteRequest{1, {"default", "a1", 1, "insert", std::nullopt}};
  EXPECT_EQ(ExpectCompat(EncodeToRivet(write, 3, out)).feature,
            CompatFeature::kRemoteSqliteExecution);
}

TEST(EnvoyVersions, RemoteSqlResponsesBelowV4FailWithToEnvoyDirection) {
  latest::SqliteExecuteResult result;
  result.columns = {"v"};
  latest::ToEnvoy msg = latest::ToEnvoySqliteExecuteResponse{2, latest::SqliteExecuteOk{result}};
  Bytes out;
  auto e = ExpectCompat(EncodeToEnvoy(msg, 3, out));
  EXPECT_EQ(e.direction, MessageDirection::kToEnvoy);
  EXPECT_EQ(e.ToString(),
            "remote sqlite responses require envoy-protocol v4 but target version is v3");
  EXPECT_EQ(e.ToError().Id(), "protocol.incompatible_version");
  EXPECT_TRUE(out.empty());
}

TEST(EnvoyVersions, StatelessSqliteMessagesCannotGoDownToV2AndSayWhyInPlainText) {
  latest::ToEnvoy resp =
      latest::ToEnvoySqliteGetPagesResponse{1, latest::SqliteGetPagesOk{{}}};
  latest::ToRivet req = latest::ToRivetSqliteCommitRequest{
      1, latest::SqliteCommitRequest{"a1", {}, 1, 0, std::nullopt, std::nullopt}};
  for (uint16_t target : {2, 1}) {
    Bytes out;
    EXPECT_EQ(ExpectPlain(EncodeToEnvoy(resp, target, out)),
              "stateless sqlite responses require envoy-protocol v3");
    EXPECT_EQ(ExpectPlain(EncodeToRivet(req, target, out)),
              "stateless sqlite requests require envoy-protocol v3");
  }
  // v3 carries them unchanged.
  Bytes v3;
  EXPECT_TRUE(EncodeToEnvoy(resp, 3, v3).has_value());
}

TEST(EnvoyVersions, LegacyV2SqliteMessagesAreRefusedWhenDecoded) {
  for (const char* id : {"ToRivet/ToRivetSqliteGetPagesRequest/v2-typical",
                         "ToRivet/ToRivetSqliteCommitRequest/v2-typical",
                         "ToRivet/ToRivetSqliteCommitStageBeginRequest/v2-typical"}) {
    SCOPED_TRACE(id);
    Bytes frame = GoldenBytes(2, id);
    if (frame.empty()) continue;
    auto r = DecodeToRivet(frame, 2);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().Id(), "protocol.incompatible_message");
    EXPECT_EQ(r.error().message(), "legacy sqlite requests require envoy-protocol v2");
  }
  // A v1 connection reads ToRivet with the v2 schema, so the refusal is the same.
  Bytes frame = GoldenBytes(2, "ToRivet/ToRivetSqliteGetPagesRequest/v2-typical");
  auto v1 = DecodeToRivet(frame, 1);
  ASSERT_FALSE(v1.has_value());
  EXPECT_EQ(v1.error().message(), "legacy sqlite requests require envoy-protocol v2");

  Bytes resp = GoldenBytes(2, "ToEnvoy/ToEnvoySqliteGetPagesResponse/v2-ok");
  auto r = DecodeToEnvoy(resp, 2);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "legacy sqlite responses require envoy-protocol v2");
}

TEST(EnvoyVersions, StartupDataCannotGoDownToV1) {
  v2::CommandStartActor start;
  start.config.name = "counter";
  start.sqlite_startup_data = v2::SqliteStartupData{};
  v1::CommandStartActor v1;
  ConvertContext ctx(1);
  ASSERT_FALSE(v1_v2::Downgrade(start, v1, ctx));
  ASSERT_TRUE(ctx.error.has_value());
  const auto* e = std::get_if<ProtocolCompatibilityError>(&*ctx.error);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->ToString(), "sqlite startup data requires envoy-protocol v2 but target version is v1");

  // Without startup data the same command converts.
  start.sqlite_startup_data.reset();
  ConvertContext ok(1);
  EXPECT_TRUE(v1_v2::Downgrade(start, v1, ok));
  EXPECT_EQ(v1.config.name, "counter");
}

latest::ToEnvoy StartCommand() {
  latest::CommandStartActor start;
  start.config = latest::ActorConfig{"counter", "room-1", 1714425600123, std::nullopt};
  latest::CommandWrapper cmd{latest::ActorCheckpoint{"actor-1", 3, 0}, start};
  return latest::ToEnvoyCommands{{cmd}};
}

TEST(EnvoyVersions, StartCommandsGainOneAbsentStartupDataByteAtV2AndV1) {
  Bytes v4;
  Bytes v2;
  Bytes v1;
  ASSERT_TRUE(EncodeToEnvoy(StartCommand(), 4, v4).has_value());
  ASSERT_TRUE(EncodeToEnvoy(StartCommand(), 2, v2).has_value());
  ASSERT_TRUE(EncodeToEnvoy(StartCommand(), 1, v1).has_value());
  Bytes expected = v4;
  expected.push_back(0x00);
  EXPECT_EQ(v2, expected);
  EXPECT_EQ(v1, v4) << "v1's start command is byte-identical to v3/v4's";
  // And back up to the same latest value.
  auto up = DecodeToEnvoy(v2, 2);
  ASSERT_TRUE(up.has_value()) << up.error().ToString();
  EXPECT_EQ(*up, StartCommand());
}

TEST(EnvoyVersions, V4OnlyTagsAreUnknownWhenDecodingAnOlderVersion) {
  Bytes frame;
  ASSERT_TRUE(EncodeToRivet(RemoteExecute(), 4, frame).has_value());
  auto r = DecodeToRivet(frame, 3);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().Id(), "protocol.decode_failed");
  EXPECT_TRUE(DecodeToRivet(frame, 4).has_value());
  // Tag 10 means CommitStageRequest in v2: the same bytes are never read as remote SQL.
  EXPECT_FALSE(DecodeToRivet(frame, 2).has_value());
}

TEST(EnvoyVersions, FramedEnvelopeCarriesTheVersionAsTwoLittleEndianBytes) {
  auto framed = EncodeToEnvoyConnFramed(latest::ToEnvoyConnClose{}, 4);
  ASSERT_TRUE(framed.has_value());
  EXPECT_EQ(ToHex(*framed), "040001");

  // The serverless start body: version prefix + ToEnvoyCommands at that version.
  auto body = EncodeToEnvoyFramed(StartCommand(), 2);
  ASSERT_TRUE(body.has_value());
  EXPECT_EQ((*body)[0], 2);
  EXPECT_EQ((*body)[1], 0);
  auto back = DecodeToEnvoyFramed(*body);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->version, 2);
  EXPECT_EQ(back->value, StartCommand());
}

TEST(EnvoyVersions, FramedDecodeRejectsShortInputAndUnknownVersions) {
  EXPECT_EQ(DecodeToEnvoyFramed(Hex("04")).error().Id(), "protocol.decode_failed");
  EXPECT_EQ(DecodeToEnvoyFramed(Hex("")).error().Id(), "protocol.decode_failed");
  auto v5 = DecodeToEnvoyFramed(Hex("050005"));
  EXPECT_EQ(v5.error().Id(), "protocol.unsupported_version");
  EXPECT_EQ(v5.error().message(), "invalid version: 5");
  EXPECT_EQ(DecodeToEnvoyFramed(Hex("000005")).error().message(), "invalid version: 0");
  // A good prefix with a bad body is a decode failure, not a crash.
  EXPECT_EQ(DecodeToEnvoyFramed(Hex("0400ff")).error().Id(), "protocol.decode_failed");
}

TEST(EnvoyVersions, UnsupportedVersionsAreErrors) {
  EXPECT_FALSE(IsSupportedVersion(0));
  EXPECT_TRUE(IsSupportedVersion(1));
  EXPECT_TRUE(IsSupportedVersion(4));
  EXPECT_FALSE(IsSupportedVersion(5));
  EXPECT_EQ(DecodeToRivet(Hex("03"), 5).error().Id(), "protocol.unsupported_version");
  Bytes out;
  auto r = EncodeToRivet(latest::ToRivetStopping{}, 9, out);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace keel::protocol::envoy
