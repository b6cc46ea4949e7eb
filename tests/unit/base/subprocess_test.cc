// Subprocess against /bin/sh: output lines, exit codes, the SIGTERM-then-SIGKILL stop and a
// missing executable.
#include "base/native/subprocess.h"

#include <signal.h>

#include <gtest/gtest.h>

namespace keel {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Subprocess> Sh(std::string script, std::vector<std::pair<std::string, std::string>> env = {}) {
  auto p = Subprocess::Start({.path = "/bin/sh", .args = {"-c", std::move(script)}, .env = std::move(env),
                              .capture_stdout = true, .capture_stderr = true});
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return p.has_value() ? std::move(*p) : nullptr;
}

TEST(Subprocess, ReadsLinesFromStdoutAndStderrAndReportsTheExitCode) {
  auto p = Sh("echo one; echo two >&2; printf 'last'; exit 3");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->ReadLine(5s).value(), "one");
  EXPECT_EQ(p->ReadLine(5s).value(), "two");
  EXPECT_EQ(p->ReadLine(5s).value(), "last");  // no trailing newline
  auto end = p->ReadLine(5s);
  ASSERT_FALSE(end.has_value());
  EXPECT_TRUE(end.error().Is("process", "exited"));
  ASSERT_TRUE(p->Wait(5s));
  EXPECT_EQ(p->exit_code(), 3);
  EXPECT_EQ(p->ExitDescription(), "exited with status 3");
}

TEST(Subprocess, WaitForLineSkipsToTheMatchAndPassesTheEnvironment) {
  auto p = Sh("echo starting; echo \"listening on $KEEL_X\"", {{"KEEL_X", "127.0.0.1:9"}});
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->WaitForLine("listening on ", 5s).value(), "listening on 127.0.0.1:9");
  ASSERT_FALSE(p->lines_seen().empty());
  EXPECT_EQ(p->lines_seen().front(), "starting");
}

TEST(Subprocess, ReadLineTimesOutWhileTheChildIsSilent) {
  auto p = Sh("sleep 30");
  ASSERT_NE(p, nullptr);
  auto line = p->ReadLine(50ms);
  ASSERT_FALSE(line.has_value());
  EXPECT_TRUE(line.error().Is("process", "timeout"));
  EXPECT_TRUE(p->running());
  EXPECT_TRUE(p->Stop(5s));  // sh dies of SIGTERM
  EXPECT_FALSE(p->running());
  EXPECT_EQ(p->exit_code(), 128 + SIGTERM);
}

TEST(Subprocess, StopEscalatesToSigkillWhenTermIsIgnored) {
  auto p = Sh("trap '' TERM; echo ready; while :; do sleep 1; done");
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->WaitForLine("ready", 5s).has_value());
  EXPECT_FALSE(p->Stop(200ms));
  EXPECT_FALSE(p->running());
  EXPECT_EQ(p->ExitDescription(), "killed by signal 9");
  EXPECT_FALSE(p->Signal(SIGTERM));  // reaped: never signalled again
}

TEST(Subprocess, MissingExecutableIsASpawnError) {
  auto p = Subprocess::Start({.path = "/nonexistent/keel-binary"});
  ASSERT_FALSE(p.has_value());
  EXPECT_TRUE(p.error().Is("process", "spawn_failed")) << p.error().ToString();
}

}  // namespace
}  // namespace keel
