// SessionThreads (agent/session_threads.h): every thread started is joined,
// and a thread the system cannot give is an error, not a crash.
#include "agent/session_threads.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

constexpr absl::Duration kStep = absl::Seconds(10);

TEST(SessionThreadsTest, WaitJoinsEveryThreadOnceItHasReturned) {
  SessionThreads threads;
  absl::Notification release;
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(threads
                    .Start("test-session",
                           [&] {
                             release.WaitForNotificationWithTimeout(kStep);
                             ++ran;
                           })
                    .ok());
  }
  EXPECT_EQ(threads.running(), 3u);
  EXPECT_FALSE(threads.Wait(absl::Milliseconds(1))) << "Wait returned with threads running";
  release.Notify();
  EXPECT_TRUE(threads.Wait(kStep)) << "the threads did not return";
  EXPECT_EQ(threads.running(), 0u);
  EXPECT_EQ(ran.load(), 3);
}

TEST(SessionThreadsTest, NoThreadToGiveIsResourceExhaustedAndTheWorkIsDropped) {
  // A child process whose user may run no more processes (RLIMIT_NPROC 0;
  // root is exempt, so a root child becomes nobody first) asks for a thread.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << "fork failed";
  if (pid == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(10);
    struct rlimit none = {0, 0};
    if (::setrlimit(RLIMIT_NPROC, &none) != 0) ::_exit(11);
    SessionThreads threads;
    bool ran = false;
    absl::Status s = threads.Start("test-session", [&] { ran = true; });
    if (!absl::IsResourceExhausted(s)) ::_exit(12);
    if (!threads.Wait(absl::ZeroDuration()) || ran) ::_exit(13);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child did not exit (status " << status << ")";
  switch (WEXITSTATUS(status)) {
    case 0: break;
    case 10: FAIL() << "the child could not become nobody"; break;
    case 11: FAIL() << "the child could not lower RLIMIT_NPROC"; break;
    case 12: FAIL() << "Start did not return RESOURCE_EXHAUSTED without a thread to give"; break;
    case 13: FAIL() << "the dropped work ran, or Wait saw a thread running"; break;
    default: FAIL() << "the child exited " << WEXITSTATUS(status);
  }
}

}  // namespace
}  // namespace pkgdist
