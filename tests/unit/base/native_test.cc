#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/log.h"
#include "base/native/spdlog_backend.h"
#include "base/native/system_clock.h"

namespace keel {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;

TEST(SystemClock, MonotonicNowNeverDecreases) {
  SystemClock uut;
  MonoTime previous = uut.MonotonicNow();
  for (int i = 0; i < 1000; ++i) {
    MonoTime now = uut.MonotonicNow();
    ASSERT_GE(now, previous);
    previous = now;
  }
}

TEST(SystemClock, SystemNowMsIsUnixEpochMilliseconds) {
  SystemClock uut;
  auto ms = [] {
    return std::chrono::duration_cast<milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  int64_t before = ms();
  int64_t value = uut.SystemNowMs();
  int64_t after = ms();
  EXPECT_LE(before, value);
  EXPECT_LE(value, after);
  int64_t typed = uut.SystemNow().time_since_epoch().count();
  EXPECT_LE(value, typed);
  EXPECT_LE(typed, ms());
}

TEST(SystemClock, RunDueFiresOnlyDueTimersInDeadlineOrder) {
  SystemClock uut;
  std::vector<std::string> fired;
  MonoTime now = uut.MonotonicNow();
  uut.Schedule(now + hours(1), [&] { fired.push_back("future"); });
  uut.Schedule(now - milliseconds(1), [&] { fired.push_back("b"); });
  uut.Schedule(now - milliseconds(2), [&] { fired.push_back("a"); });
  uut.Schedule(now - milliseconds(1), [&] { fired.push_back("c"); });
  EXPECT_TRUE(fired.empty());
  EXPECT_EQ(uut.RunDue(), 3u);
  EXPECT_EQ(fired, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(uut.PendingTimers(), 1u);
  EXPECT_EQ(uut.NextDeadline(), now + hours(1));
}

TEST(SystemClock, RunDueFiresTimersThatCallbacksScheduleAlreadyDue) {
  SystemClock uut;
  std::vector<std::string> fired;
  MonoTime past = uut.MonotonicNow() - milliseconds(5);
  uut.Schedule(past, [&] {
    fired.push_back("outer");
    uut.Schedule(past, [&] { fired.push_back("inner"); });
  });
  EXPECT_EQ(uut.RunDue(), 2u);
  EXPECT_EQ(fired, (std::vector<std::string>{"outer", "inner"}));
}

TEST(SystemClock, CancelledTimerNeverFires) {
  SystemClock uut;
  bool ran = false;
  TimerId id = uut.Schedule(uut.MonotonicNow() - milliseconds(1), [&] { ran = true; });
  EXPECT_TRUE(uut.Cancel(id));
  EXPECT_FALSE(uut.Cancel(id));
  EXPECT_EQ(uut.RunDue(), 0u);
  EXPECT_FALSE(ran);
}

// Restores the default sink and threshold after each test.
class SpdlogBackendTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetLogSink(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
};

TEST_F(SpdlogBackendTest, SinkWritesOneLineWithTimeLevelComponentAndMessage) {
  std::ostringstream out;
  std::unique_ptr<LogSink> uut = NewSpdlogSink(out);
  SetLogSink(uut.get());
  LogInfo("engine", "listening", {{"port", "6420"}});
  LogError("kv", "commit failed");
  SetLogSink(nullptr);

  std::istringstream lines(out.str());
  std::string first;
  std::string second;
  std::string extra;
  ASSERT_TRUE(std::getline(lines, first));
  ASSERT_TRUE(std::getline(lines, second));
  EXPECT_FALSE(std::getline(lines, extra));
  // "YYYY-MM-DDTHH:MM:SS.mmm [level] component: message"
  ASSERT_GE(first.size(), 24u);
  EXPECT_EQ(first[4], '-');
  EXPECT_EQ(first[10], 'T');
  EXPECT_EQ(first[19], '.');
  EXPECT_EQ(first.substr(23), " [info] engine: listening port=6420");
  EXPECT_EQ(second.substr(23), " [error] kv: commit failed");
}

TEST_F(SpdlogBackendTest, SinkMapsEveryLevelName) {
  std::ostringstream out;
  std::unique_ptr<LogSink> uut = NewSpdlogSink(out);
  for (LogLevel level : {LogLevel::kTrace, LogLevel::kDebug, LogLevel::kWarn}) {
    uut->Write(level, "c", "m");
  }
  std::string text = out.str();
  EXPECT_NE(text.find(" [trace] c: m\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" [debug] c: m\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" [warn] c: m\n"), std::string::npos) << text;
}

TEST_F(SpdlogBackendTest, InstalledSinkRoutesTheFacadeToStderr) {
  InstallSpdlogSink();
  ::testing::internal::CaptureStderr();
  LogWarn("runtime", "actor stalled", {{"actor", "a1"}});
  std::string err = ::testing::internal::GetCapturedStderr();
  // A timestamp first tells it apart from the default sink's "[warn] runtime: ..." line.
  ASSERT_GE(err.size(), 24u) << err;
  EXPECT_TRUE(err[0] >= '0' && err[0] <= '9') << err;
  EXPECT_EQ(err.substr(23), " [warn] runtime: actor stalled actor=a1\n");
}

}  // namespace
}  // namespace keel
