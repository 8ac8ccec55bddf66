#include "agent/transfer_locks.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

TEST(TransferLocksTest, DifferentPackagesDoNotContend) {
  // Locks are per key: holding one never delays another.
  TransferLocks locks;
  auto a = locks.Acquire("a", nullptr, absl::ZeroDuration());
  auto b = locks.Acquire("b", nullptr, absl::ZeroDuration());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(locks.IsHeld("a"));
  b->reset();
  EXPECT_FALSE(locks.IsHeld("b"));
}

TEST(TransferLocksTest, ANewClaimCancelsTheHolderAndTakesOverOnceItLetsGo) {
  // The holder's cancel function is called; the new claim succeeds when the holder releases.
  TransferLocks locks;
  absl::Notification cancelled;
  auto holder = locks.Acquire("pkg", [&] { cancelled.Notify(); }, absl::Seconds(10));
  ASSERT_TRUE(holder.ok());
  absl::Status claim_status = absl::UnknownError("not run");
  std::thread claimant([&] {
    auto lease = locks.Acquire("pkg", nullptr, absl::Seconds(60));
    claim_status = lease.status();
  });
  cancelled.WaitForNotification();
  holder->reset();
  claimant.join();
  EXPECT_TRUE(claim_status.ok()) << claim_status;
  EXPECT_FALSE(locks.IsHeld("pkg"));
}

TEST(TransferLocksTest, AHolderThatDoesNotLetGoMakesTheClaimUnavailable) {
  // The wait is bounded: a stuck holder yields UNAVAILABLE, and keeps its lock.
  TransferLocks locks;
  auto holder = locks.Acquire("pkg", [] {}, absl::ZeroDuration());
  ASSERT_TRUE(holder.ok());
  auto claim = locks.Acquire("pkg", nullptr, absl::Milliseconds(20));
  EXPECT_TRUE(absl::IsUnavailable(claim.status())) << claim.status();
  EXPECT_TRUE(locks.IsHeld("pkg"));
}

TEST(TransferLocksTest, AWaiterOvertakenByANewerClaimIsAborted) {
  // Newest wins: an older waiter gives up with ABORTED and the newest gets the lock.
  TransferLocks locks;
  std::atomic<int> cancels{0};
  absl::Notification first_waiting;
  auto holder = locks.Acquire("pkg", [&] {
    if (++cancels == 1) first_waiting.Notify();
  }, absl::ZeroDuration());
  ASSERT_TRUE(holder.ok());
  absl::Status older = absl::UnknownError("not run");
  std::thread first([&] { older = locks.Acquire("pkg", nullptr, absl::Seconds(60)).status(); });
  first_waiting.WaitForNotification();
  absl::Status newer = absl::UnknownError("not run");
  std::thread second([&] { newer = locks.Acquire("pkg", nullptr, absl::Seconds(60)).status(); });
  first.join();
  EXPECT_TRUE(absl::IsAborted(older)) << older;
  holder->reset();
  second.join();
  EXPECT_TRUE(newer.ok()) << newer;
}

}  // namespace
}  // namespace pkgdist
