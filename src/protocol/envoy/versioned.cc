#include "protocol/envoy/versioned.h"

#include <optional>
#include <string>

#include "base/build_exact.h"
#include "protocol/envoy/v1.h"
#include "protocol/envoy/v1_v2.h"
#include "protocol/envoy/v2.h"
#include "protocol/envoy/v2_v3.h"
#include "protocol/envoy/v3.h"
#include "protocol/envoy/v3_v4.h"

namespace keel::protocol::envoy {
namespace {

Error UnsupportedVersion(uint16_t version) {
  return Error("protocol", "unsupported_version", "invalid version: " + std::to_string(version));
}

// One top-level type across the four schema versions. Converters are found by overload
// on the argument's (per-version) type.
// kV1ReadsAsV2: v1 ToRivet is a strict prefix of v2, and Rivet's engine reads v1 frames
// with the v2 schema so that a stray SQLite tag gets the "legacy sqlite" refusal rather
// than an unknown-tag decode error (envoy-protocol.md §2.13).
template <typename T1, typename T2, typename T3, typename T4, bool kV1ReadsAsV2 = false>
struct Chain {
  static Result<T4> Decode(ByteView in, uint16_t version, const bare::Limits& limits) {
    if (version == 4) return bare::DecodeValue<T4>(in, limits);
    ConvertContext ctx(kLatestVersion);
    T4 out{};
    switch (version) {
      case 3: {
        KEEL_ASSIGN_OR_RETURN(auto v3, bare::DecodeValue<T3>(in, limits));
        if (!v3_v4::Upgrade(v3, out, ctx)) return ToError(*ctx.error);
        return out;
      }
      case 2: {
        KEEL_ASSIGN_OR_RETURN(auto v2, bare::DecodeValue<T2>(in, limits));
        T3 v3{};
        if (!v2_v3::Upgrade(v2, v3, ctx) || !v3_v4::Upgrade(v3, out, ctx)) {
          return ToError(*ctx.error);
        }
        return out;
      }
      case 1: {
        if constexpr (kV1ReadsAsV2) return Decode(in, 2, limits);
        KEEL_ASSIGN_OR_RETURN(auto v1, bare::DecodeValue<T1>(in, limits));
        T2 v2{};
        T3 v3{};
        if (!v1_v2::Upgrade(v1, v2, ctx) || !v2_v3::Upgrade(v2, v3, ctx) ||
            !v3_v4::Upgrade(v3, out, ctx)) {
          return ToError(*ctx.error);
        }
        return out;
      }
      default:
        return UnsupportedVersion(version);
    }
  }

  static Result<void, ConversionError> Encode(const T4& msg, uint16_t version, Bytes& out) {
    if (version == 4) {
      bare::EncodeTo(msg, out);
      return {};
    }
    if (version < 1 || version > 4) {
      return Unexpected{ConversionError{
          IncompatibleMessageError{"invalid version: " + std::to_string(version)}}};
    }
    ConvertContext ctx(version);
    T3 v3{};
    if (!v3_v4::Downgrade(msg, v3, ctx)) return Unexpected{std::move(*ctx.error)};
    if (version == 3) {
      bare::EncodeTo(v3, out);
      return {};
    }
    T2 v2{};
    if (!v2_v3::Downgrade(v3, v2, ctx)) return Unexpected{std::move(*ctx.error)};
    if (version == 2) {
      bare::EncodeTo(v2, out);
      return {};
    }
    T1 v1{};
    if (!v1_v2::Downgrade(v2, v1, ctx)) return Unexpected{std::move(*ctx.error)};
    bare::EncodeTo(v1, out);
    return {};
  }

  static Result<Framed<T4>> DecodeFramed(ByteView framed) {
    KEEL_ASSIGN_OR_RETURN(auto split, SplitVersionPrefix(framed));
    KEEL_ASSIGN_OR_RETURN(auto value, Decode(split.second, split.first, {}));
    return Framed<T4>{split.first, std::move(value)};
  }

  static Result<Bytes, ConversionError> EncodeFramed(const T4& msg, uint16_t version) {
    std::optional<ConversionError> error;
    Bytes out = BuildExact([&](Bytes& buffer) {
      AppendVersionPrefix(version, buffer);
      auto encoded = Encode(msg, version, buffer);
      if (!encoded.has_value()) error = std::move(encoded.error());
    });
    if (error) return Unexpected{std::move(*error)};
    return out;
  }
};

template <typename T>
struct ChainOf;
#define KEEL_ENVOY_CHAIN_OF(T, V1_AS_V2)                                  \
  template <>                                                            \
  struct ChainOf<v4::T> {                                                \
    using type = Chain<v1::T, v2::T, v3::T, v4::T, V1_AS_V2>;            \
  };
KEEL_ENVOY_CHAIN_OF(ToRivet, true)
KEEL_ENVOY_CHAIN_OF(ToEnvoy, false)
KEEL_ENVOY_CHAIN_OF(ToEnvoyConn, false)
KEEL_ENVOY_CHAIN_OF(ToGateway, false)
KEEL_ENVOY_CHAIN_OF(ToOutbound, false)
KEEL_ENVOY_CHAIN_OF(ActorCommandKeyData, false)
#define KEEL_ENVOY_CHAIN(T) ChainOf<v4::T>::type

}  // namespace

bool IsSupportedVersion(uint16_t version) {
  return version >= kOldestVersion && version <= kLatestVersion;
}

void AppendVersionPrefix(uint16_t version, Bytes& out) { bare::AppendVersionPrefix(version, out); }

Result<std::pair<uint16_t, ByteView>> SplitVersionPrefix(ByteView framed) {
  return bare::SplitVersionPrefix(framed, kOldestVersion, kLatestVersion);
}

#define KEEL_ENVOY_TOP_LEVEL(T)                                                              \
  Result<latest::T> Decode##T(ByteView frame, uint16_t version, const bare::Limits& limits) { \
    return KEEL_ENVOY_CHAIN(T)::Decode(frame, version, limits);                              \
  }                                                                                          \
  Result<void, ConversionError> Encode##T(const latest::T& msg, uint16_t version, Bytes& out) { \
    size_t mark = out.size();                                                                \
    auto r = KEEL_ENVOY_CHAIN(T)::Encode(msg, version, out);                                 \
    if (!r.has_value()) out.resize(mark);                                                    \
    return r;                                                                                \
  }

KEEL_ENVOY_TOP_LEVEL(ToRivet)
KEEL_ENVOY_TOP_LEVEL(ToEnvoy)
KEEL_ENVOY_TOP_LEVEL(ToEnvoyConn)
KEEL_ENVOY_TOP_LEVEL(ToGateway)
KEEL_ENVOY_TOP_LEVEL(ToOutbound)
KEEL_ENVOY_TOP_LEVEL(ActorCommandKeyData)

#define KEEL_ENVOY_FRAMED(T)                                                                 \
  Result<Framed<latest::T>> Decode##T##Framed(ByteView framed) {                             \
    return KEEL_ENVOY_CHAIN(T)::DecodeFramed(framed);                                        \
  }                                                                                          \
  Result<Bytes, ConversionError> Encode##T##Framed(const latest::T& msg, uint16_t version) { \
    return KEEL_ENVOY_CHAIN(T)::EncodeFramed(msg, version);                                  \
  }

KEEL_ENVOY_FRAMED(ToEnvoy)
KEEL_ENVOY_FRAMED(ToEnvoyConn)
KEEL_ENVOY_FRAMED(ToGateway)
KEEL_ENVOY_FRAMED(ToOutbound)
KEEL_ENVOY_FRAMED(ActorCommandKeyData)

}  // namespace keel::protocol::envoy
