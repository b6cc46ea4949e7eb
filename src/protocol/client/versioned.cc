#include "protocol/client/versioned.h"

#include <string>

#include "protocol/client/v1.h"
#include "protocol/client/v1_v2.h"
#include "protocol/client/v2.h"
#include "protocol/client/v2_v3.h"

namespace keel::protocol::client {
namespace {

Result<std::pair<uint16_t, ByteView>> Split(ByteView framed) {
  return bare::SplitVersionPrefix(framed, 1, kLatestVersion);
}

ConversionError BadTarget(uint16_t version) {
  return IncompatibleMessageError{"invalid version: " + std::to_string(version)};
}

// A message present in every client-protocol version.
template <typename T1, typename T2, typename T3>
struct Chain {
  static Result<T3> Decode(ByteView framed) {
    KEEL_ASSIGN_OR_RETURN(auto split, Split(framed));
    if (split.first == 3) return bare::DecodeValue<T3>(split.second);
    ConvertContext ctx(kLatestVersion);
    T3 out{};
    if (split.first == 2) {
      KEEL_ASSIGN_OR_RETURN(auto v2, bare::DecodeValue<T2>(split.second));
      if (!v2_v3::Upgrade(v2, out, ctx)) return ToError(*ctx.error);
      return out;
    }
    KEEL_ASSIGN_OR_RETURN(auto v1, bare::DecodeValue<T1>(split.second));
    T2 v2{};
    if (!v1_v2::Upgrade(v1, v2, ctx) || !v2_v3::Upgrade(v2, out, ctx)) {
      return ToError(*ctx.error);
    }
    return out;
  }

  static Result<Bytes, ConversionError> Encode(const T3& msg, uint16_t version) {
    if (version < 1 || version > kLatestVersion) return Unexpected{BadTarget(version)};
    if (version == 3) return bare::EncodeVersioned(msg, version);
    ConvertContext ctx(version);
    T2 v2{};
    if (!v2_v3::Downgrade(msg, v2, ctx)) return Unexpected{std::move(*ctx.error)};
    if (version == 2) return bare::EncodeVersioned(v2, version);
    T1 v1{};
    if (!v1_v2::Downgrade(v2, v1, ctx)) return Unexpected{std::move(*ctx.error)};
    return bare::EncodeVersioned(v1, version);
  }
};

// A message that exists from v3 on.
template <typename T3>
struct V3Only {
  static Result<T3> Decode(ByteView framed) {
    KEEL_ASSIGN_OR_RETURN(auto split, Split(framed));
    if (split.first != 3) {
      return Error("protocol", "incompatible_message",
                   std::string(TypeName(static_cast<const T3*>(nullptr))) +
                       " requires client protocol v3");
    }
    return bare::DecodeValue<T3>(split.second);
  }
  static Result<Bytes, ConversionError> Encode(const T3& msg, uint16_t version) {
    if (version != 3) {
      return Unexpected{ConversionError{IncompatibleMessageError{
          std::string(TypeName(static_cast<const T3*>(nullptr))) +
          " requires client protocol v3, target is v" + std::to_string(version)}}};
    }
    return bare::EncodeVersioned(msg, version);
  }
};

}  // namespace

#define KEEL_CLIENT_MESSAGE(T, CHAIN)                                                  \
  Result<latest::T> Decode##T(ByteView framed) { return CHAIN::Decode(framed); }       \
  Result<Bytes, ConversionError> Encode##T(const latest::T& msg, uint16_t version) {   \
    return CHAIN::Encode(msg, version);                                                \
  }
#define KEEL_CLIENT_ALL(T) Chain<v1::T, v2::T, v3::T>

KEEL_CLIENT_MESSAGE(ToServer, KEEL_CLIENT_ALL(ToServer))
KEEL_CLIENT_MESSAGE(ToClient, KEEL_CLIENT_ALL(ToClient))
KEEL_CLIENT_MESSAGE(HttpActionRequest, KEEL_CLIENT_ALL(HttpActionRequest))
KEEL_CLIENT_MESSAGE(HttpActionResponse, KEEL_CLIENT_ALL(HttpActionResponse))
KEEL_CLIENT_MESSAGE(HttpResponseError, KEEL_CLIENT_ALL(HttpResponseError))
KEEL_CLIENT_MESSAGE(HttpResolveResponse, KEEL_CLIENT_ALL(HttpResolveResponse))
KEEL_CLIENT_MESSAGE(HttpQueueSendRequest, V3Only<v3::HttpQueueSendRequest>)
KEEL_CLIENT_MESSAGE(HttpQueueSendResponse, V3Only<v3::HttpQueueSendResponse>)

}  // namespace keel::protocol::client
