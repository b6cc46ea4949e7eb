#include "base/log.h"

#include <atomic>
#include <cstdio>

namespace keel {
namespace {

class StderrSink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    std::string line;
    line.reserve(component.size() + message.size() + 16);
    line += '[';
    line += LogLevelName(level);
    line += "] ";
    line += component;
    line += ": ";
    line += message;
    line += '\n';
    // One fwrite per line: stdio locks the stream per call, so lines never interleave.
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
};

// Leaked on purpose: static destructors elsewhere may still log during exit.
LogSink& DefaultSink() {
  static LogSink* const sink = new StderrSink();
  return *sink;
}

std::atomic<LogSink*> g_sink{nullptr};
std::atomic<LogLevel> g_level{LogLevel::kInfo};

bool NeedsQuotes(std::string_view value) {
  if (value.empty()) return true;
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7f) {
      return true;
    }
  }
  return false;
}

void AppendQuoted(std::string& out, std::string_view value) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out += '"';
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kDigits[u >> 4];
      out += kDigits[u & 0x0f];
    } else {
      out += c;
    }
  }
  out += '"';
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return "trace";
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kOff:
      return "off";
  }
  return "unknown";
}

void SetLogSink(LogSink* sink) { g_sink.store(sink, std::memory_order_release); }

void SetLogLevel(LogLevel level) { g_level.store(level, std::memory_order_relaxed); }

LogLevel GetLogLevel() { return g_level.load(std::memory_order_relaxed); }

bool LogEnabled(LogLevel level) {
  return level != LogLevel::kOff && level >= g_level.load(std::memory_order_relaxed);
}

std::string FormatLogMessage(std::string_view message, std::initializer_list<LogField> fields) {
  std::string out(message);
  for (const LogField& field : fields) {
    out += ' ';
    out += field.key;
    out += '=';
    if (NeedsQuotes(field.value)) {
      AppendQuoted(out, field.value);
    } else {
      out += field.value;
    }
  }
  return out;
}

void Log(LogLevel level, std::string_view component, std::string_view message,
         std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  LogSink* sink = g_sink.load(std::memory_order_acquire);
  if (sink == nullptr) sink = &DefaultSink();
  if (fields.size() == 0) {
    sink->Write(level, component, message);
  } else {
    sink->Write(level, component, FormatLogMessage(message, fields));
  }
}

}  // namespace keel
