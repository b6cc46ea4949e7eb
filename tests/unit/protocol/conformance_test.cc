// Conformance with Rivet's own envoy-protocol codec: every golden vector decodes to its
// JSON value and encodes back to its exact bytes, and lines that share an id across
// versions convert into each other (tests/golden/envoy/README.md).
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "protocol/envoy/v1_json.h"
#include "protocol/envoy/v2_json.h"
#include "protocol/envoy/v3_json.h"
#include "protocol/envoy/v4_json.h"
#include "protocol/envoy/versioned.h"

namespace keel::protocol::envoy {
namespace {

struct Vector {
  int version = 0;
  std::string type;
  nlohmann::json value;
  std::string hex;
  std::string id;
};

std::vector<Vector> LoadVectors(int version) {
  std::string path = std::string(KEEL_SOURCE_DIR) + "/tests/golden/envoy/v" +
                     std::to_string(version) + "/vectors.jsonl";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<Vector> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    out.push_back(Vector{j.at("version").get<int>(), j.at("type").get<std::string>(),
                         j.at("value"), j.at("hex").get<std::string>(),
                         j.at("id").get<std::string>()});
  }
  return out;
}

using DecodeFn = Result<std::string> (*)(std::string_view, ByteView, int);
using EncodeFn = Result<Bytes> (*)(std::string_view, std::string_view);

DecodeFn DecoderFor(int version) {
  switch (version) {
    case 1: return v1::DecodeToJson;
    case 2: return v2::DecodeToJson;
    case 3: return v3::DecodeToJson;
    default: return v4::DecodeToJson;
  }
}
EncodeFn EncoderFor(int version) {
  switch (version) {
    case 1: return v1::EncodeFromJson;
    case 2: return v2::EncodeFromJson;
    case 3: return v3::EncodeFromJson;
    default: return v4::EncodeFromJson;
  }
}

class Conformance : public ::testing::TestWithParam<int> {};

TEST_P(Conformance, EveryVectorDecodesToItsValueAndEncodesToItsBytes) {
  const int version = GetParam();
  const std::map<int, size_t> kExpectedCounts = {{1, 144}, {2, 177}, {3, 156}, {4, 206}};
  auto vectors = LoadVectors(version);
  ASSERT_EQ(vectors.size(), kExpectedCounts.at(version)) << "golden file changed size";
  size_t passed = 0;
  for (const auto& v : vectors) {
    SCOPED_TRACE(v.id);
    ASSERT_EQ(v.version, version);
    auto bytes = FromHex(v.hex);
    ASSERT_TRUE(bytes.has_value());
    auto decoded = DecoderFor(version)(v.type, *bytes, -1);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
    // Object key order is not significant: compare as unordered JSON.
    EXPECT_EQ(nlohmann::json::parse(*decoded), v.value);
    auto encoded = EncoderFor(version)(v.type, v.value.dump());
    ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
    EXPECT_EQ(ToHex(*encoded), v.hex);
    if (!::testing::Test::HasFailure()) ++passed;
  }
  EXPECT_EQ(passed, vectors.size());
}

INSTANTIATE_TEST_SUITE_P(Versions, Conformance, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return "v" + std::to_string(info.param); });

// Top-level messages go through the versioned entry points (the real upgrade/downgrade
// chain); nested types are checked through their per-version JSON registries.
Result<Bytes> ConvertTopLevel(const std::string& type, ByteView in, int from, int to) {
  auto encode = [&](auto&& decoded, auto encode_fn) -> Result<Bytes> {
    if (!decoded.has_value()) return decoded.error();
    Bytes out;
    auto r = encode_fn(*decoded, static_cast<uint16_t>(to), out);
    if (!r.has_value()) return ToError(r.error());
    return out;
  };
  const auto v = static_cast<uint16_t>(from);
  if (type == "ToRivet") return encode(DecodeToRivet(in, v), EncodeToRivet);
  if (type == "ToEnvoy") return encode(DecodeToEnvoy(in, v), EncodeToEnvoy);
  if (type == "ToEnvoyConn") return encode(DecodeToEnvoyConn(in, v), EncodeToEnvoyConn);
  if (type == "ToGateway") return encode(DecodeToGateway(in, v), EncodeToGateway);
  if (type == "ToOutbound") return encode(DecodeToOutbound(in, v), EncodeToOutbound);
  if (type == "ActorCommandKeyData") {
    return encode(DecodeActorCommandKeyData(in, v), EncodeActorCommandKeyData);
  }
  auto json = DecoderFor(from)(type, in, -1);
  if (!json.has_value()) return json.error();
  return EncoderFor(to)(type, *json);
}

TEST(Conformance, VectorsSharingAnIdConvertIntoEachOtherAcrossVersions) {
  std::map<std::string, std::map<int, Vector>> by_id;
  for (int version = 1; version <= 4; ++version) {
    for (auto& v : LoadVectors(version)) by_id[v.type + "|" + v.id][version] = v;
  }
  size_t pairs = 0;
  std::set<std::string> top_level_seen;
  for (const auto& [key, versions] : by_id) {
    for (const auto& [from, a] : versions) {
      for (const auto& [to, b] : versions) {
        if (from == to) continue;
        SCOPED_TRACE(a.id + " v" + std::to_string(from) + " -> v" + std::to_string(to));
        auto in = FromHex(a.hex);
        ASSERT_TRUE(in.has_value());
        auto out = ConvertTopLevel(a.type, *in, from, to);
        ASSERT_TRUE(out.has_value()) << out.error().ToString();
        EXPECT_EQ(ToHex(*out), b.hex);
        ++pairs;
        top_level_seen.insert(a.type);
      }
    }
  }
  // Every top-level type takes part, and there are many pairs (v1 ⊂ v3 ⊂ v4 share most ids).
  for (const char* t :
       {"ToRivet", "ToEnvoy", "ToEnvoyConn", "ToGateway", "ToOutbound", "ActorCommandKeyData"}) {
    EXPECT_TRUE(top_level_seen.count(t)) << t;
  }
  EXPECT_GT(pairs, 500u);
}

}  // namespace
}  // namespace keel::protocol::envoy
