#include "controller/cli/job_follow.h"

#include <sstream>

#include <gtest/gtest.h>

#include "controller/cli/command.h"
#include "tests/unit/cli/fake_admin.h"
#include "tests/unit/cli/test_jobs.h"

namespace pkgdist::cli {
namespace {

using testing::FakeAdminServer;
using testing::Target;
using testing::TwoTargetJob;
using testing::WatchScript;

pkgdist::v1::JobStatus CompleteJob() {
  pkgdist::v1::JobStatus job = TwoTargetJob();
  job.set_state("complete");
  *job.mutable_targets(1) = Target("dp2", "done", 4, 3 << 20, 3 << 20);
  return job;
}

class JobFollowTest : public ::testing::Test {
 protected:
  CommandEnv Env(OutputFormat output) {
    return CommandEnv{server_.client(), output, out_, err_, false, [] { return size_t{100}; },
                      false};
  }

  FakeAdminServer server_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(JobFollowTest, FollowsUntilFinalState) {
  // Every status is handed over, and a final one ends the follow with OK.
  server_.admin().AddWatch({{TwoTargetJob(), CompleteJob()}});
  std::vector<std::string> states;
  FollowResult r = FollowJob(
      server_.client(), "j-1", absl::InfiniteFuture(),
      [&](const pkgdist::v1::JobStatus& job) { states.push_back(job.state()); }, err_);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(states, (std::vector<std::string>{"in_progress", "complete"}));
  EXPECT_EQ(r.last->state(), "complete");
}

TEST_F(JobFollowTest, ResumesAfterTheStreamBreaks) {
  // A broken stream after the first status is watched again, saying so on stderr.
  server_.admin().AddWatch(
      {{TwoTargetJob()}, grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller restarting")});
  server_.admin().AddWatch({{CompleteJob()}});
  FollowResult r = FollowJob(server_.client(), "j-1", absl::InfiniteFuture(),
                             [](const pkgdist::v1::JobStatus&) {}, err_);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.last->state(), "complete");
  EXPECT_NE(err_.str().find("controller restarting"), std::string::npos) << err_.str();
}

TEST_F(JobFollowTest, FailureBeforeAnyStatusIsReturned) {
  // An unknown job is reported at once, not retried.
  FollowResult r = FollowJob(server_.client(), "nope", absl::InfiniteFuture(),
                             [](const pkgdist::v1::JobStatus&) {}, err_);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
  EXPECT_FALSE(r.last);
}

TEST_F(JobFollowTest, WaitExitsZeroWhenComplete) {
  // --wait on a job that completes exits 0.
  server_.admin().AddWatch({{TwoTargetJob(), CompleteJob()}});
  CommandEnv env = Env(OutputFormat::kTable);
  EXPECT_EQ(WaitForJob(env, "j-1", std::nullopt), kExitOk);
  EXPECT_EQ(err_.str(), "");
}

TEST_F(JobFollowTest, WaitExitsThreeWhenFailedListingTargets) {
  // --wait on a job that fails exits 3 and lists what is not done.
  pkgdist::v1::JobStatus failed = TwoTargetJob();
  failed.set_state("failed");
  failed.mutable_targets(1)->set_state("failed");
  failed.mutable_targets(1)->clear_next_attempt_at();
  server_.admin().AddWatch({{TwoTargetJob(), failed}});
  CommandEnv env = Env(OutputFormat::kTable);
  EXPECT_EQ(WaitForJob(env, "j-1", std::nullopt), kExitJobNotComplete);
  EXPECT_EQ(err_.str(),
            "pkgdistctl: job j-1 ended failed:\n"
            "dp2: failed (attempt 3): connection refused\n");
}

TEST_F(JobFollowTest, WaitTimeoutExitsFourListingUnfinishedTargets) {
  // When --timeout passes first, exit 4 and name each target not done with its error.
  server_.admin().AddWatch({{TwoTargetJob()}, grpc::Status::OK, /*hang=*/true});
  CommandEnv env = Env(OutputFormat::kTable);
  EXPECT_EQ(WaitForJob(env, "j-1", absl::Milliseconds(200)), kExitTimeout);
  EXPECT_NE(err_.str().find("timed out after 200ms waiting for job j-1 (in_progress)"),
            std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("\ndp2: retry_wait (attempt 3): connection refused "
                            "(next attempt at 2026-01-02T03:04:35.000Z)\n"),
            std::string::npos)
      << err_.str();
  EXPECT_EQ(err_.str().find("dp1:"), std::string::npos) << err_.str();
}

TEST_F(JobFollowTest, WaitInJsonPrintsOnlyTheLastStatus) {
  // In json mode --wait prints one document: the final job status.
  server_.admin().AddWatch({{TwoTargetJob(), CompleteJob()}});
  CommandEnv env = Env(OutputFormat::kJson);
  EXPECT_EQ(WaitForJob(env, "j-1", std::nullopt), kExitOk);
  EXPECT_EQ(out_.str(), JsonLine(JobToJson(CompleteJob())) + "\n");
}

TEST_F(JobFollowTest, WatchInJsonPrintsOneLinePerUpdate) {
  // job watch --output json prints JSON lines, one per status.
  server_.admin().AddWatch({{TwoTargetJob(), CompleteJob()}});
  CommandEnv env = Env(OutputFormat::kJson);
  EXPECT_EQ(WatchJobToEnd(env, "j-1"), kExitOk);
  EXPECT_EQ(out_.str(), JsonLine(JobToJson(TwoTargetJob())) + "\n" +
                            JsonLine(JobToJson(CompleteJob())) + "\n");
}

TEST_F(JobFollowTest, WatchOfUnknownJobExitsOne) {
  // A watch that fails prints one error line and exits 1.
  CommandEnv env = Env(OutputFormat::kTable);
  EXPECT_EQ(WatchJobToEnd(env, "nope"), kExitCallFailed);
  EXPECT_EQ(err_.str(), "pkgdistctl: NOT_FOUND: no such job\n");
}

TEST(ChangeLinePrinterTest, PrintsOnlyWhatChanged) {
  // Targets print when first seen and on change; the job line when its state changes.
  std::ostringstream out;
  ChangeLinePrinter p(out);
  p.Print(TwoTargetJob());
  p.Print(TwoTargetJob());
  pkgdist::v1::JobStatus job = TwoTargetJob();
  job.mutable_targets(1)->set_state("transferring");
  job.mutable_targets(1)->set_attempts(4);
  job.mutable_targets(1)->clear_last_error();
  job.mutable_targets(1)->clear_next_attempt_at();
  p.Print(job);
  job.mutable_targets(1)->set_bytes_acked((1 << 20) + 100);  // still 33%
  p.Print(job);
  p.Print(CompleteJob());
  EXPECT_EQ(out.str(),
            "dp1: done 3.0 MiB/3.0 MiB 100% (attempt 1)\n"
            "dp2: retry_wait 1.0 MiB/3.0 MiB 33% (attempt 3): connection refused "
            "(next attempt at 2026-01-02T03:04:35.000Z)\n"
            "job j-1: in_progress (1/2 targets done)\n"
            "dp2: transferring 1.0 MiB/3.0 MiB 33% (attempt 4)\n"
            "dp2: done 3.0 MiB/3.0 MiB 100% (attempt 4)\n"
            "job j-1: complete (2/2 targets done)\n");
}

TEST(LiveJobPrinterTest, RedrawsInPlace) {
  // The second frame moves the cursor up over the first and clears it.
  std::ostringstream out;
  LiveJobPrinter p(out, [] { return size_t{100}; });
  p.Print(TwoTargetJob());
  std::string first = out.str();
  EXPECT_EQ(first.substr(0, 3), "\x1b[J");
  p.Print(CompleteJob());
  std::string second = out.str().substr(first.size());
  EXPECT_EQ(second.substr(0, 8), "\r\x1b[4A\x1b[J") << second;
}

}  // namespace
}  // namespace pkgdist::cli
