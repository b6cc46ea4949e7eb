// Errors and context for converting protocol messages between schema versions.
//
// Two kinds of refusal exist and are kept apart on purpose (envoy-protocol.md §2.13):
//  * ProtocolCompatibilityError — the message uses a *feature* that the target version
//    does not have (remote SQL below v4, SQLite startup data below v2). Callers map it to
//    a structured "unavailable" error (e.g. `sqlite.remote_unavailable`).
//  * IncompatibleMessageError — not about a feature version: a message that exists in
//    both versions with shapes that cannot be converted (v2 legacy SQLite vs v3+
//    stateless SQLite). Rivet reports these as plain text errors; so do we.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <optional>
#include <variant>

#include "base/error.h"

namespace keel::protocol {

enum class ConvertDirection : uint8_t { kUpgrade, kDowngrade };

struct ProtocolCompatibilityError;
struct IncompatibleMessageError;

enum class CompatFeature : uint8_t {
  kSqliteStartupData,
  kSqlitePageIo,
  kSqlitePageRange,
  kRemoteSqliteExecution,
};

// Which top-level message family a compatibility error is about.
enum class MessageDirection : uint8_t { kToEnvoy, kToRivet };

struct ProtocolCompatibilityError {
  CompatFeature feature = CompatFeature::kRemoteSqliteExecution;
  MessageDirection direction = MessageDirection::kToRivet;
  uint16_t required_version = 0;
  uint16_t target_version = 0;

  // e.g. "remote sqlite requests require envoy-protocol v4 but target version is v3"
  std::string ToString() const;
  // `protocol.incompatible_version` with ToString() as message.
  Error ToError() const;
  friend bool operator==(const ProtocolCompatibilityError&,
                         const ProtocolCompatibilityError&) = default;
};

struct IncompatibleMessageError {
  std::string message;  // e.g. "legacy sqlite requests require envoy-protocol v2"
  // `protocol.incompatible_message` with `message`.
  Error ToError() const;
  friend bool operator==(const IncompatibleMessageError&,
                         const IncompatibleMessageError&) = default;
};

using ConversionError = std::variant<ProtocolCompatibilityError, IncompatibleMessageError>;

// State threaded through one conversion chain.
struct ConvertContext {
  explicit ConvertContext(uint16_t target) : target_version(target) {}

  // The version the caller asked for at the end of the whole chain (errors report this
  // one, not the intermediate step).
  uint16_t target_version = 0;
  // The first refusal; set by Fail().
  std::optional<ConversionError> error;

  // Records `e` (unless an earlier error is already recorded) and returns false.
  bool Fail(ConversionError e) {
    if (!error) error = std::move(e);
    return false;
  }
};

Error ToError(const ConversionError& e);
std::string ToString(const ConversionError& e);

}  // namespace keel::protocol
