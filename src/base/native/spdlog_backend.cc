#include "base/native/spdlog_backend.h"

#include <ostream>
#include <string>
#include <utility>

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace keel {
namespace {

// Local time with milliseconds, then "[level] component: message" formatted by Write so
// level names match the facade's ("warn", not spdlog's "warning").
constexpr char kPattern[] = "%Y-%m-%dT%H:%M:%S.%e %v";

spdlog::level::level_enum ToSpdlog(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return spdlog::level::trace;
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
    case LogLevel::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

class SpdlogSink final : public LogSink {
 public:
  explicit SpdlogSink(spdlog::sink_ptr sink) : logger_("keel", std::move(sink)) {
    logger_.set_pattern(kPattern);
    // Filtering happens in the facade (SetLogLevel); let everything through here.
    logger_.set_level(spdlog::level::trace);
    logger_.flush_on(spdlog::level::trace);
  }

  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    logger_.log(ToSpdlog(level), "[{}] {}: {}", LogLevelName(level), component, message);
  }

 private:
  // Not registered in spdlog's global registry: this logger belongs to the sink.
  spdlog::logger logger_;
};

}  // namespace

void InstallSpdlogSink() {
  // Leaked on purpose: static destructors elsewhere may still log during exit.
  static LogSink* const sink = new SpdlogSink(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  SetLogSink(sink);
}

std::unique_ptr<LogSink> NewSpdlogSink(std::ostream& out) {
  return std::make_unique<SpdlogSink>(std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
}

}  // namespace keel
