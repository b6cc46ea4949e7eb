// Hand-written conversion policy between adjacent envoy-protocol versions
// (envoy-protocol.md §2.13). The generated converters (protocol/envoy/vA_vB.h) call these
// where the two schemas cannot express the same message.
#include <string>

#include "protocol/envoy/v1_v2.h"
#include "protocol/envoy/v2_v3.h"
#include "protocol/envoy/v3_v4.h"

namespace keel::protocol::envoy {
namespace {

bool IsToRivet(std::string_view name) { return name.rfind("ToRivet", 0) == 0; }

// Plain (non-feature) refusal, as Rivet words it.
ConversionError Plain(std::string text) { return IncompatibleMessageError{std::move(text)}; }

}  // namespace

// ---- v1 <-> v2: v2 adds the legacy SQLite messages and CommandStartActor.sqliteStartupData.
namespace v1_v2 {

ConversionError UnsupportedMember(ConvertDirection dir, std::string_view union_name,
                                  std::string_view member, const ConvertContext& ctx) {
  // Only a downgrade can meet a member v1 lacks: a v2 SQLite message. The v3 -> v2 step
  // refuses those first, so this is unreachable from latest, but stays well-defined.
  (void)dir;
  (void)member;
  (void)ctx;
  return Plain(IsToRivet(union_name) ? "sqlite requests require envoy-protocol v2"
                                     : "sqlite responses require envoy-protocol v2");
}

bool DropField(ConvertDirection dir, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  (void)dir;
  (void)struct_name;
  (void)field;
  // CommandStartActor.sqliteStartupData set, going down to v1: a feature refusal.
  return ctx.Fail(ProtocolCompatibilityError{CompatFeature::kSqliteStartupData,
                                             MessageDirection::kToEnvoy, 2, ctx.target_version});
}

}  // namespace v1_v2

// ---- v2 <-> v3: the stateful (v2) and stateless (v3+) SQLite protocols never convert.
namespace v2_v3 {

ConversionError UnsupportedMember(ConvertDirection dir, std::string_view union_name,
                                  std::string_view member, const ConvertContext& ctx) {
  (void)member;
  (void)ctx;
  const bool req = IsToRivet(union_name);
  if (dir == ConvertDirection::kUpgrade) {
    return Plain(req ? "legacy sqlite requests require envoy-protocol v2"
                     : "legacy sqlite responses require envoy-protocol v2");
  }
  return Plain(req ? "stateless sqlite requests require envoy-protocol v3"
                   : "stateless sqlite responses require envoy-protocol v3");
}

ConversionError RefuseType(ConvertDirection dir, std::string_view type,
                           const ConvertContext& ctx) {
  // Every refused type is a SQLite request or response (or part of one).
  const bool req = type.find("Request") != std::string_view::npos;
  return UnsupportedMember(dir, req ? "ToRivet" : "ToEnvoy", type, ctx);
}

bool DropField(ConvertDirection dir, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  (void)struct_name;
  (void)field;
  // v2 -> v3 drops CommandStartActor.sqliteStartupData (v3 has no startup data), as
  // Rivet does. Nothing else reaches here.
  if (dir == ConvertDirection::kUpgrade) return true;
  return ctx.Fail(Plain("unexpected field in downgrade to v2"));
}

}  // namespace v2_v3

// ---- v3 <-> v4: v4 appends remote SQL (exec / execute / execute_write).
namespace v3_v4 {

ConversionError UnsupportedMember(ConvertDirection dir, std::string_view union_name,
                                  std::string_view member, const ConvertContext& ctx) {
  (void)dir;
  (void)member;
  return ProtocolCompatibilityError{
      CompatFeature::kRemoteSqliteExecution,
      IsToRivet(union_name) ? MessageDirection::kToRivet : MessageDirection::kToEnvoy, 4,
      ctx.target_version};
}

bool DropField(ConvertDirection dir, std::string_view struct_name, std::string_view field,
               ConvertContext& ctx) {
  (void)dir;
  return ctx.Fail(Plain("no optional field differs between v3 and v4: " +
                        std::string(struct_name) + "." + std::string(field)));
}

}  // namespace v3_v4
}  // namespace keel::protocol::envoy
