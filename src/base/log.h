// Logging facade for every Keel module, native and wasm. Code logs through Log/KEEL_LOG;
// the process installs one LogSink (stderr by default, spdlog natively, the JS console in
// wasm). Messages below the process-wide threshold are dropped before formatting.
// Thread-safety: SetLogSink/SetLogLevel and logging may race safely (atomics); a sink
// receives calls from every thread that logs and must be thread-safe itself.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace keel {

enum class LogLevel : uint8_t {
  kTrace,
  kDebug,
  kInfo,
  kWarn,
  kError,
  kOff,  // threshold only: SetLogLevel(kOff) silences everything; never logged at
};

// "trace", "debug", "info", "warn", "error", "off".
std::string_view LogLevelName(LogLevel level);

// A structured field, appended to the message as ` key=value`. Values that are empty or
// contain spaces, quotes, '=' or control characters are written quoted and escaped.
struct LogField {
  std::string_view key;
  std::string_view value;
};

class LogSink {
 public:
  virtual ~LogSink() = default;
  // `message` already carries any fields; it has no trailing newline.
  virtual void Write(LogLevel level, std::string_view component, std::string_view message) = 0;
};

// Installs `sink` for the whole process; nullptr restores the default sink, which writes
// "[level] component: message" lines to stderr. `sink` must stay alive until replaced,
// and until no thread can still be logging through it.
void SetLogSink(LogSink* sink);

// Messages below `level` are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
bool LogEnabled(LogLevel level);

// Sends one message to the installed sink if `level` passes the threshold.
void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields = {});

// `message` followed by ` key=value` for each field (the text sinks receive).
std::string FormatLogMessage(std::string_view message, std::initializer_list<LogField> fields);

inline void LogTrace(std::string_view component, std::string_view message,
                     std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kTrace, component, message, fields);
}
inline void LogDebug(std::string_view component, std::string_view message,
                     std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kDebug, component, message, fields);
}
inline void LogInfo(std::string_view component, std::string_view message,
                    std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, component, message, fields);
}
inline void LogWarn(std::string_view component, std::string_view message,
                    std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarn, component, message, fields);
}
inline void LogError(std::string_view component, std::string_view message,
                     std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, component, message, fields);
}

}  // namespace keel

// KEEL_LOG(kInfo, "engine", "listening", {{"port", port_text}});
// Like Log, but the message and field expressions are not evaluated when `level` is
// below the threshold, so building them may be costly.
#define KEEL_LOG(level, component, ...)                               \
  do {                                                                \
    if (::keel::LogEnabled(::keel::LogLevel::level)) {                \
      ::keel::Log(::keel::LogLevel::level, (component), __VA_ARGS__); \
    }                                                                 \
  } while (0)
