// Routes the base/log.h facade to spdlog for native binaries. Lines look like
// "2024-05-01T12:00:00.123 [info] engine: listening port=6420". spdlog itself stays an
// implementation detail of this file's .cc.
// Thread-safety: the sinks made here are thread-safe (spdlog *_mt sinks).
#pragma once

#include <iosfwd>
#include <memory>

#include "base/log.h"

namespace keel {

// Installs a process-lifetime spdlog sink writing to stderr via SetLogSink. Idempotent:
// later calls reinstall the same sink.
void InstallSpdlogSink();

// A spdlog-backed sink writing lines to `out`, which must outlive the sink. For tests
// and tools that want log text somewhere other than stderr.
std::unique_ptr<LogSink> NewSpdlogSink(std::ostream& out);

}  // namespace keel
