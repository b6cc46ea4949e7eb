#include "base/log.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace keel {
namespace {

// Records each Write as "level component: message".
class RecordingSink final : public LogSink {
 public:
  void Write(LogLevel level, std::string_view component, std::string_view message) override {
    lines.push_back(std::string(LogLevelName(level)) + " " + std::string(component) + ": " +
                    std::string(message));
  }
  std::vector<std::string> lines;
};

using Lines = std::vector<std::string>;

// Installs a recording sink at trace level and restores the process defaults afterwards.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSink(&sink_);
    SetLogLevel(LogLevel::kTrace);
  }
  void TearDown() override {
    SetLogSink(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }

  RecordingSink sink_;
};

TEST_F(LogTest, EveryLevelReachesTheSinkAtTraceThreshold) {
  LogTrace("c", "t");
  LogDebug("c", "d");
  LogInfo("c", "i");
  LogWarn("c", "w");
  LogError("c", "e");
  EXPECT_EQ(sink_.lines,
            (Lines{"trace c: t", "debug c: d", "info c: i", "warn c: w", "error c: e"}));
}

TEST_F(LogTest, MessagesBelowTheThresholdAreDropped) {
  SetLogLevel(LogLevel::kWarn);
  LogInfo("engine", "quiet");
  LogWarn("engine", "loud");
  LogError("engine", "louder");
  EXPECT_EQ(sink_.lines, (Lines{"warn engine: loud", "error engine: louder"}));
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kWarn));
  EXPECT_EQ(GetLogLevel(), LogLevel::kWarn);
}

TEST_F(LogTest, OffThresholdSilencesEverything) {
  SetLogLevel(LogLevel::kOff);
  LogError("engine", "x");
  EXPECT_TRUE(sink_.lines.empty());
}

TEST_F(LogTest, LoggingAtOffIsNeverDelivered) {
  Log(LogLevel::kOff, "engine", "x");
  EXPECT_TRUE(sink_.lines.empty());
}

TEST_F(LogTest, DefaultThresholdIsInfo) {
  TearDown();
  EXPECT_EQ(GetLogLevel(), LogLevel::kInfo);
}

TEST_F(LogTest, FieldsAreAppendedAsKeyValuePairs) {
  LogInfo("engine", "listening", {{"host", "127.0.0.1"}, {"port", "6420"}});
  EXPECT_EQ(sink_.lines, (Lines{"info engine: listening host=127.0.0.1 port=6420"}));
}

TEST_F(LogTest, FieldValuesThatWouldBeAmbiguousAreQuotedAndEscaped) {
  EXPECT_EQ(FormatLogMessage("m", {{"a", "two words"}}), "m a=\"two words\"");
  EXPECT_EQ(FormatLogMessage("m", {{"a", ""}}), "m a=\"\"");
  EXPECT_EQ(FormatLogMessage("m", {{"a", "x=y"}}), "m a=\"x=y\"");
  EXPECT_EQ(FormatLogMessage("m", {{"a", "say \"hi\""}}), "m a=\"say \\\"hi\\\"\"");
  EXPECT_EQ(FormatLogMessage("m", {{"a", "back\\slash"}}), "m a=\"back\\\\slash\"");
  EXPECT_EQ(FormatLogMessage("m", {{"a", "l1\nl2\t\x01"}}), "m a=\"l1\\nl2\\t\\x01\"");
  EXPECT_EQ(FormatLogMessage("m", {}), "m");
}

TEST_F(LogTest, MacroLogsWithAndWithoutFields) {
  KEEL_LOG(kInfo, "engine", "plain");
  KEEL_LOG(kWarn, "engine", "with fields", {{"actor", "a1"}, {"n", std::to_string(3)}});
  EXPECT_EQ(sink_.lines, (Lines{"info engine: plain", "warn engine: with fields actor=a1 n=3"}));
}

TEST_F(LogTest, MacroDoesNotEvaluateArgumentsBelowTheThreshold) {
  SetLogLevel(LogLevel::kInfo);
  int evaluations = 0;
  auto expensive = [&] {
    ++evaluations;
    return std::string("costly");
  };
  KEEL_LOG(kDebug, "engine", expensive());
  EXPECT_EQ(evaluations, 0);
  KEEL_LOG(kInfo, "engine", expensive());
  EXPECT_EQ(evaluations, 1);
  EXPECT_EQ(sink_.lines, (Lines{"info engine: costly"}));
}

TEST_F(LogTest, NullSinkRestoresTheStderrDefault) {
  SetLogSink(nullptr);
  ::testing::internal::CaptureStderr();
  LogWarn("kv", "slow commit", {{"ms", "12"}});
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "[warn] kv: slow commit ms=12\n");
  EXPECT_TRUE(sink_.lines.empty());
}

TEST(LogLevelName, NamesEveryLevel) {
  EXPECT_EQ(LogLevelName(LogLevel::kTrace), "trace");
  EXPECT_EQ(LogLevelName(LogLevel::kDebug), "debug");
  EXPECT_EQ(LogLevelName(LogLevel::kInfo), "info");
  EXPECT_EQ(LogLevelName(LogLevel::kWarn), "warn");
  EXPECT_EQ(LogLevelName(LogLevel::kError), "error");
  EXPECT_EQ(LogLevelName(LogLevel::kOff), "off");
}

}  // namespace
}  // namespace keel
