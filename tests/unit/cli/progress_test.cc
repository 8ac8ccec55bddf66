#include "controller/cli/progress.h"

#include <gtest/gtest.h>

#include "tests/unit/cli/test_jobs.h"

namespace pkgdist::cli {
namespace {

using testing::Target;
using testing::TwoTargetJob;

const absl::Time kT0 = absl::FromUnixSeconds(1'767'322'800);  // 2026-01-02T03:00:00Z

TEST(ProgressBarTest, FillsInProportion) {
  // The bar is filled in proportion, rounded down, full when done or empty.
  EXPECT_EQ(ProgressBar(0, 100, 10), "[..........]");
  EXPECT_EQ(ProgressBar(45, 100, 10), "[####......]");
  EXPECT_EQ(ProgressBar(99, 100, 10), "[#########.]");
  EXPECT_EQ(ProgressBar(100, 100, 10), "[##########]");
  EXPECT_EQ(ProgressBar(0, 0, 4), "[####]");
}

TEST(RateEstimatorTest, UnknownUntilTimePasses) {
  // One observation, or two at the same instant, give no rate.
  RateEstimator r;
  r.Observe(kT0, 0);
  EXPECT_FALSE(r.BytesPerSecond());
  r.Observe(kT0, 1000);
  EXPECT_FALSE(r.BytesPerSecond());
  EXPECT_FALSE(r.Eta(1000));
}

TEST(RateEstimatorTest, MeasuresSteadyRateAndEta) {
  // A steady 1 MiB/s reads as 1 MiB/s, and 10 MiB more takes 10 s.
  RateEstimator r;
  for (int i = 0; i <= 10; ++i) r.Observe(kT0 + absl::Seconds(i), uint64_t(i) << 20);
  ASSERT_TRUE(r.BytesPerSecond());
  EXPECT_NEAR(*r.BytesPerSecond(), 1 << 20, 1);
  EXPECT_EQ(r.Eta(10 << 20), absl::Seconds(10));
}

TEST(RateEstimatorTest, SmoothsChanges) {
  // After a jump from 1 to 3 MiB/s the estimate moves partway, not all the way.
  RateEstimator r;
  for (int i = 0; i <= 5; ++i) r.Observe(kT0 + absl::Seconds(i), uint64_t(i) << 20);
  r.Observe(kT0 + absl::Seconds(6), uint64_t(8) << 20);
  EXPECT_GT(*r.BytesPerSecond(), 1.2 * (1 << 20));
  EXPECT_LT(*r.BytesPerSecond(), 2.0 * (1 << 20));
}

TEST(RateEstimatorTest, RestartsWhenBytesGoDown) {
  // Fewer bytes than before (a restarted transfer) forget the old rate.
  RateEstimator r;
  r.Observe(kT0, 0);
  r.Observe(kT0 + absl::Seconds(1), 1000);
  ASSERT_TRUE(r.BytesPerSecond());
  r.Observe(kT0 + absl::Seconds(2), 10);
  EXPECT_FALSE(r.BytesPerSecond());
}

TEST(JobProgressViewTest, RendersOneBarPerTargetWithRetryDetails) {
  // Each target gets a bar line; a waiting one also its error and next attempt.
  JobProgressView view;
  view.Update(TwoTargetJob(), kT0 + absl::Seconds(245));
  std::vector<std::string> lines = view.Render(kT0 + absl::Seconds(245), 100);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "job j-1  distribute app@1.0  in_progress  1/2 targets done");
  EXPECT_EQ(lines[1], "dp1  done          [##############################] 100%  3.0 MiB/3.0 MiB  attempt 1");
  EXPECT_EQ(lines[2], "dp2  retry_wait    [##########....................]  33%  1.0 MiB/3.0 MiB  attempt 3");
  EXPECT_EQ(lines[3], "     last error: connection refused; next attempt in 30s");
}

TEST(JobProgressViewTest, ShowsRateAndEtaWhileTransferring) {
  // Between two updates a second apart, the rate and the ETA appear.
  pkgdist::v1::JobStatus job;
  job.set_id("j");
  job.set_state("in_progress");
  *job.add_targets() = Target("dp1", "transferring", 1, 1 << 20, 4 << 20);
  JobProgressView view;
  view.Update(job, kT0);
  job.mutable_targets(0)->set_bytes_acked(2 << 20);
  view.Update(job, kT0 + absl::Seconds(1));
  std::vector<std::string> lines = view.Render(kT0 + absl::Seconds(1), 100);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1],
            "dp1  transferring  [#############..............]  50%  2.0 MiB/4.0 MiB  1.0 MiB/s  "
            "ETA 2s  attempt 1");
}

TEST(JobProgressViewTest, BarsTakeTheRoomLeft) {
  // Bars grow up to 30 cells with the width, and shrink to no less than 10.
  JobProgressView view;
  view.Update(TwoTargetJob(), kT0);
  EXPECT_NE(view.Render(kT0, 200)[1].find("[" + std::string(30, '#') + "]"), std::string::npos);
  EXPECT_NE(view.Render(kT0, 74)[1].find("[" + std::string(20, '#') + "]"), std::string::npos);
  EXPECT_NE(view.Render(kT0, 40)[1].find("[" + std::string(10, '#')), std::string::npos);
}

TEST(JobProgressViewTest, LinesFitTheWidth) {
  // No line is wider than asked, so a terminal never wraps it.
  JobProgressView view;
  view.Update(TwoTargetJob(), kT0);
  for (const auto& l : view.Render(kT0, 30)) EXPECT_LE(l.size(), 30u) << l;
}

TEST(DescribeUnfinishedTargetTest, SaysStateAttemptErrorAndNextTry) {
  // The line --wait prints for a target that is not done.
  EXPECT_EQ(DescribeUnfinishedTarget(TwoTargetJob().targets(1)),
            "dp2: retry_wait (attempt 3): connection refused "
            "(next attempt at 2026-01-02T03:04:35.000Z)");
  EXPECT_EQ(DescribeUnfinishedTarget(Target("dp3", "pending", 0, 0, 10)), "dp3: pending");
  EXPECT_EQ(DescribeUnfinishedTarget(Target("dp4", "transferring", 1, 1 << 20, 3 << 20)),
            "dp4: transferring (attempt 1), 1.0 MiB/3.0 MiB acknowledged");
}

}  // namespace
}  // namespace pkgdist::cli
