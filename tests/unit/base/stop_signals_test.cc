// StopSignals in a forked child: the first SIGTERM ends Wait, a second one from outside ends
// the process at once with 130, and Interrupt — the process telling itself it cannot go on —
// stands in for the first signal but is never taken for the second.
#include "base/native/stop_signals.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

namespace keel {
namespace {

using namespace std::chrono_literals;

constexpr int kTimeoutMs = 10'000;

// A child process running `body` (which must end with _exit), and two pipes to talk to it.
class Child {
 public:
  explicit Child(const std::function<void(Child&)>& body) {
    if (::pipe(up_) != 0 || ::pipe(down_) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(up_[0]);
      ::close(down_[1]);
      body(*this);
      ::_exit(99);  // the body fell through
    }
    ::close(up_[1]);
    ::close(down_[0]);
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(up_[0]);
    ::close(down_[1]);
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // In the child.
  void Tell(char c) { (void)!::write(up_[1], &c, 1); }
  // In the child: blocks until the parent closes its end.
  void AwaitParentClose() {
    char c;
    while (::read(down_[0], &c, 1) > 0) {
    }
  }

  // In the parent: the next byte from the child, or nullopt at its end (or after the timeout).
  std::optional<char> Hear() {
    pollfd p{.fd = up_[0], .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, kTimeoutMs) != 1) return std::nullopt;
    char c;
    if (::read(up_[0], &c, 1) != 1) return std::nullopt;
    return c;
  }
  void CloseDown() {
    ::close(down_[1]);
    down_[1] = -1;
  }
  // In the parent: the child's wait status, or nullopt if it has not ended within the timeout.
  std::optional<int> WaitStatus() {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) return std::nullopt;
    pollfd p{.fd = pidfd, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, kTimeoutMs);
    ::close(pidfd);
    if (ready != 1) return std::nullopt;
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return std::nullopt;
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int up_[2] = {-1, -1};    // child → parent
  int down_[2] = {-1, -1};  // parent → child
};

// In the child: true once no SIGTERM is pending, i.e. a sigwaiting thread has taken it.
bool AwaitSigtermTaken() {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    sigset_t pending;
    sigpending(&pending);
    if (!sigismember(&pending, SIGTERM)) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
}

TEST(StopSignals, TheFirstSigtermEndsWaitAndASecondFromOutsideEndsTheProcess) {
  Child child([](Child& c) {
    StopSignals signals;
    c.Tell('r');
    if (signals.Wait() != SIGTERM || StopSignals::Interrupted()) ::_exit(3);
    c.Tell('w');
    c.AwaitParentClose();  // the orderly stop, taking its time
    ::_exit(0);
  });
  ASSERT_TRUE(child.started());
  ASSERT_EQ(child.Hear(), 'r');
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  ASSERT_EQ(child.Hear(), 'w');
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  const auto status = child.WaitStatus();
  ASSERT_TRUE(status.has_value()) << "a second SIGTERM did not end the process";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 130);
}

TEST(StopSignals, InterruptEndsWaitAsASigtermWouldAndSaysSo) {
  Child child([](Child&) {
    StopSignals signals;
    StopSignals::Interrupt();
    const int sig = signals.Wait();
    ::_exit(sig == SIGTERM && StopSignals::Interrupted() ? 0 : 3);
  });
  ASSERT_TRUE(child.started());
  const auto status = child.WaitStatus();
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

// A process told to stop by SIGTERM finds, while stopping, that it cannot go on (its storage
// was taken over) and calls Interrupt: its own signal must not cut the orderly stop short.
TEST(StopSignals, AnInterruptWhileStoppingIsNotASecondSignal) {
  Child child([](Child& c) {
    StopSignals signals;
    c.Tell('r');
    if (signals.Wait() != SIGTERM) ::_exit(3);
    StopSignals::Interrupt();
    if (!AwaitSigtermTaken()) ::_exit(4);
    c.Tell('i');
    c.AwaitParentClose();  // the rest of the orderly stop
    ::_exit(StopSignals::Interrupted() ? 0 : 5);
  });
  ASSERT_TRUE(child.started());
  ASSERT_EQ(child.Hear(), 'r');
  ASSERT_EQ(::kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.Hear(), 'i');
  child.CloseDown();
  const auto status = child.WaitStatus();
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0) << "the process's own Interrupt ended it as a second signal";
}

}  // namespace
}  // namespace keel
