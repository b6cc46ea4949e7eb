// Hand-written conversions of the client protocol (actors.md §4.7): v1 `Init` carried a
// connection token that v2 dropped; v3 only added standalone queue-send types.
#include <limits>

#include "protocol/client/v1_v2.h"
#include "protocol/client/v2_v3.h"

namespace keel::protocol::client {

namespace v1_v2 {

bool Upgrade(const v1::Init& v, v2::Init& out, ConvertContext&) {
  out = v2::Init{v.actor_id, v.connection_id};
  return true;
}

bool Downgrade(const v2::Init& v, v1::Init& out, ConvertContext&) {
  // v1 clients received a token they only echoed back; Keel does not use it.
  out = v1::Init{v.actor_id, v.connection_id, std::string()};
  return true;
}

ConversionError UnsupportedMember(ConvertDirection, std::string_view union_name,
                                  std::string_view member, const ConvertContext&) {
  return IncompatibleMessageError{std::string(union_name) + "." + std::string(member) +
                                  " has no equivalent in client protocol v1"};
}

bool DropField(ConvertDirection, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  return ctx.Fail(IncompatibleMessageError{std::string(struct_name) + "." + std::string(field) +
                                           " cannot be represented"});
}

}  // namespace v1_v2

namespace v2_v3 {

ConversionError UnsupportedMember(ConvertDirection, std::string_view union_name,
                                  std::string_view member, const ConvertContext& ctx) {
  return IncompatibleMessageError{std::string(union_name) + "." + std::string(member) +
                                  " requires client protocol v3, target is v" +
                                  std::to_string(ctx.target_version)};
}

bool DropField(ConvertDirection, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  return ctx.Fail(IncompatibleMessageError{std::string(struct_name) + "." + std::string(field) +
                                           " cannot be represented"});
}

}  // namespace v2_v3
}  // namespace keel::protocol::client
