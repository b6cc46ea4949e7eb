#include "protocol/conversion.h"

namespace keel::protocol {

std::string ProtocolCompatibilityError::ToString() const {
  const bool to_rivet = direction == MessageDirection::kToRivet;
  std::string what;
  std::string verb = "require";
  switch (feature) {
    case CompatFeature::kSqliteStartupData:
      what = "sqlite startup data";
      verb = "requires";
      break;
    case CompatFeature::kSqlitePageIo:
      what = to_rivet ? "sqlite requests" : "sqlite responses";
      break;
    case CompatFeature::kSqlitePageRange:
      what = to_rivet ? "sqlite range requests" : "sqlite range responses";
      break;
    case CompatFeature::kRemoteSqliteExecution:
      what = to_rivet ? "remote sqlite requests" : "remote sqlite responses";
      break;
  }
  return what + " " + verb + " envoy-protocol v" + std::to_string(required_version) +
         " but target version is v" + std::to_string(target_version);
}

Error ProtocolCompatibilityError::ToError() const {
  return Error("protocol", "incompatible_version", ToString());
}

Error IncompatibleMessageError::ToError() const {
  return Error("protocol", "incompatible_message", message);
}

Error ToError(const ConversionError& e) {
  return std::visit([](const auto& x) { return x.ToError(); }, e);
}

std::string ToString(const ConversionError& e) {
  return std::visit(
      [](const auto& x) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(x)>, ProtocolCompatibilityError>) {
          return x.ToString();
        } else {
          return x.message;
        }
      },
      e);
}

}  // namespace keel::protocol
