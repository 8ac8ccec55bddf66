// The engine against scripted fake agents over real mutual TLS, with a fake
// clock: retries and their backoff, the invariant that only an honest
// publication completes a target, detection of silent agents, and shutdown.
#include "controller/engine.h"

#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::HasSubstr;

constexpr size_t kSize = (3 << 20) + 12345;  // 4 chunks

bool IsDone(const TargetRow& t) { return t.state == TargetState::kDone; }
auto WaitingAfter(uint32_t attempts) {
  return [attempts](const TargetRow& t) {
    return t.state == TargetState::kRetryWait && t.attempts == attempts;
  };
}
auto Transferring(uint32_t attempts) {
  return [attempts](const TargetRow& t) {
    return t.state == TargetState::kTransferring && t.attempts == attempts;
  };
}

class EngineTest : public CoreTest {};

TEST_F(EngineTest, AnHonestAgentCompletesTheJob) {
  // Every chunk reaches the agent once; the job is complete after one attempt.
  FakeAgent& dp1 = AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  auto t = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(t.has_value()) << "dp1 never became done";
  EXPECT_EQ(t->attempts, 1u);
  EXPECT_EQ(t->bytes_acked, kSize);
  EXPECT_EQ(dp1.chunk_bytes_received(), kSize);
  EXPECT_EQ(JobStateOf(job), JobState::kComplete);
  // Its connection is closed once nothing runs on it.
  EXPECT_EQ(pool_->State("dp1"), pkgdist::v1::CONNECTION_STATE_IDLE);
}

TEST_F(EngineTest, FailsNTimesThenSucceedsWithTheBackoffSchedule) {
  // Two failures, then success: three attempts, each retry due exactly when
  // the backoff policy says (1 s then 2 s, jittered down by at most 20 %).
  FakeAgent& dp1 = AddAgent("dp1");
  dp1.Script({Behaviour::kUnavailable, Behaviour::kUnavailable});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  int64_t full_delay = 1000;
  for (uint32_t attempt = 1; attempt <= 2; ++attempt, full_delay *= 2) {
    auto t = WaitForTarget(job, "dp1", WaitingAfter(attempt));
    ASSERT_TRUE(t.has_value()) << "attempt " << attempt << " did not fail";
    EXPECT_THAT(t->last_error, HasSubstr("scripted failure"));
    int64_t delay = t->next_attempt_ms - t->updated_ms;
    EXPECT_GE(delay, full_delay * 8 / 10) << "attempt " << attempt;
    EXPECT_LE(delay, full_delay) << "attempt " << attempt;
    clock_.AdvanceMs(t->next_attempt_ms - clock_.NowMs());  // due now, not before
  }
  auto t = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(t.has_value()) << "dp1 never became done";
  EXPECT_EQ(t->attempts, 3u);
  EXPECT_EQ(dp1.transfers(), 3);
  EXPECT_EQ(JobStateOf(job), JobState::kComplete);
}

TEST_F(EngineTest, AnAgentThatNeverPublishesNeverCompletes) {
  // However often it is retried, a failing agent keeps its target waiting
  // and its job in progress; the healthy target alone does not complete it.
  AddAgent("dp1", Behaviour::kUnavailable);
  AddAgent("dp2");
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2"});
  StartEngine();
  ASSERT_TRUE(WaitForTarget(job, "dp2", IsDone).has_value());
  for (uint32_t attempt = 1; attempt <= 4; ++attempt) {
    auto t = WaitForTarget(job, "dp1", WaitingAfter(attempt));
    ASSERT_TRUE(t.has_value()) << "attempt " << attempt << " did not fail";
    EXPECT_EQ(JobStateOf(job), JobState::kInProgress);
    clock_.AdvanceMs(t->next_attempt_ms - clock_.NowMs());
  }
}

TEST_F(EngineTest, PublishedWithAWrongIdIsAFailedAttempt) {
  // An agent that claims another package id is not done; with
  // --max-attempts 2 the target ends failed and the job failed, never
  // complete.
  AddAgent("dp1", Behaviour::kWrongId);
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"}, JobPolicy{2, 0});
  StartEngine();
  auto first = WaitForTarget(job, "dp1", WaitingAfter(1));
  ASSERT_TRUE(first.has_value());
  EXPECT_THAT(first->last_error, HasSubstr("agent published another package id"));
  clock_.AdvanceMs(first->next_attempt_ms - clock_.NowMs());
  auto last = WaitForTarget(job, "dp1",
                            [](const TargetRow& t) { return t.state == TargetState::kFailed; });
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->attempts, 2u);
  EXPECT_EQ(JobStateOf(job), JobState::kFailed);
}

TEST_F(EngineTest, ADroppedStreamIsRetriedAndCompletes) {
  // The stream breaks after one chunk; the next attempt completes, and the
  // target counts every byte sent, re-sends included.
  FakeAgent& dp1 = AddAgent("dp1");
  dp1.Script({Behaviour::kDropMidWindow});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  auto waiting = WaitForTarget(job, "dp1", WaitingAfter(1));
  ASSERT_TRUE(waiting.has_value());
  EXPECT_THAT(waiting->last_error, HasSubstr("ABORTED"));
  clock_.AdvanceMs(waiting->next_attempt_ms - clock_.NowMs());
  auto t = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->attempts, 2u);
  EXPECT_GT(t->bytes_sent, kSize);
}

TEST_F(EngineTest, ASilentAgentIsDetectedByTheProgressDeadline) {
  // An agent that answers nothing after the Offer ends its attempt once
  // detect-seconds pass on the clock.
  AddAgent("dp1", Behaviour::kHang);
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  ASSERT_TRUE(agents_["dp1"]->WaitForTransfers(1));
  ASSERT_TRUE(WaitForTarget(job, "dp1", Transferring(1)).has_value());
  clock_.AdvanceMs(TestOptions().detect_seconds * 1000 + 1);
  auto t = WaitForTarget(job, "dp1", WaitingAfter(1));
  ASSERT_TRUE(t.has_value()) << "the silent agent was not detected";
  EXPECT_THAT(t->last_error, HasSubstr("no answer from agent"));
}

TEST_F(EngineTest, StopIsNotAFailedAttempt) {
  // A job with --max-attempts 1, stopped mid-transfer: the target stays
  // transferring (not failed), is recovered at the next start without
  // counting the stop, and completes.
  FakeAgent& dp1 = AddAgent("dp1");
  dp1.Script({Behaviour::kHang});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"}, JobPolicy{1, 0});
  StartEngine();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  ASSERT_TRUE(WaitForTarget(job, "dp1", Transferring(1)).has_value());
  StopEngine();
  TargetRow stopped = Target(job, "dp1");
  EXPECT_EQ(stopped.state, TargetState::kTransferring);
  EXPECT_EQ(stopped.attempts, 1u);
  EXPECT_EQ(stopped.consecutive_failures, 0u);

  auto recovered = store_->RecoverInterrupted();
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 1);
  StartEngine();
  auto t = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(t.has_value()) << "the job did not complete after the restart";
  EXPECT_EQ(JobStateOf(job), JobState::kComplete);
}

TEST_F(EngineTest, StopCancelsTransfersAndRemovalsAndWaitsForThem) {
  // Hanging transfers and a hanging removal: Stop() cancels all of them and
  // returns only after each has ended; none is recorded as failed.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHang);
  FakeAgent& dp2 = AddAgent("dp2", Behaviour::kHang);
  FakeAgent& dp3 = AddAgent("dp3");
  dp3.HangRemovals(true);
  std::string id = ImportPackage("app", "1.0", kSize);
  std::string job = Distribute(id, {"dp1", "dp2"});
  auto removal = store_->CreateJob(JobKind::kRemove, id, {"dp3"}, JobPolicy{}, 0);
  ASSERT_TRUE(removal.ok()) << removal.status();
  StartEngine();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  ASSERT_TRUE(dp2.WaitForTransfers(1));
  ASSERT_TRUE(dp3.WaitForRemovals(1));
  absl::Notification stopped;
  std::thread stopper([&] {
    StopEngine();
    stopped.Notify();
  });
  bool in_time = stopped.WaitForNotificationWithTimeout(absl::Seconds(20));
  stopper.join();
  ASSERT_TRUE(in_time) << "Stop() did not return";
  EXPECT_TRUE(dp3.WaitForRemovalsCancelled(1)) << "the removal was not cancelled";
  for (const char* a : {"dp1", "dp2"}) {
    EXPECT_EQ(Target(job, a).state, TargetState::kTransferring) << a;
  }
  EXPECT_EQ(Target(removal->id, "dp3").state, TargetState::kTransferring);
}

TEST_F(EngineTest, CancelledTargetIsNotRecordedAsAFailure) {
  // An operator cancel while the attempt runs: the target ends cancelled,
  // and the attempt's end does not move it anywhere else.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHang);
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  ASSERT_TRUE(WaitForTarget(job, "dp1", Transferring(1)).has_value());
  ASSERT_TRUE(store_->Cancel(job, "", "cancelled by operator").ok());
  engine_->CancelActive(job, "", "cancelled by operator");
  // Once the attempt's end is recorded the engine holds nothing for dp1.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (engine_->ActiveCount() > 0 && absl::Now() < deadline) {
    store_->WaitForChange(store_->version(), absl::Milliseconds(50));
  }
  EXPECT_EQ(engine_->ActiveCount(), 0u);
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kCancelled);
  EXPECT_TRUE(engine_->store_health().error.empty());
}

TEST_F(EngineTest, ARemovedAgentIsNoLongerWatched) {
  // A failing agent is watched for its return; once removed it is
  // forgotten, and the engine dials nobody.
  AddAgent("dp1", Behaviour::kUnavailable);
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  StartEngine();
  ASSERT_TRUE(WaitForTarget(job, "dp1", WaitingAfter(1)).has_value());
  // The engine starts watching right after the failure is durable, so the
  // target's state can be seen a moment before; no event marks it.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (engine_->AwaitedCount() == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(engine_->AwaitedCount(), 1u) << "the failing agent was not watched";
  ASSERT_TRUE(store_->RemoveAgent("dp1", "agent removed").ok());
  engine_->CancelActive("", "dp1", "agent removed");
  engine_->ForgetAgent("dp1");
  pool_->Forget("dp1");
  EXPECT_EQ(engine_->AwaitedCount(), 0u);
  clock_.AdvanceMs(120'000);  // any retry would be due by now
  engine_->Kick();
  EXPECT_FALSE(agents_["dp1"]->WaitForTransfers(2, absl::Milliseconds(300)))
      << "a removed agent was dialled again";
  EXPECT_EQ(engine_->AwaitedCount(), 0u);
  EXPECT_EQ(pool_->State("dp1"), pkgdist::v1::CONNECTION_STATE_IDLE);
}

TEST_F(EngineTest, FinishedJobsAreDeletedAfterTheRetention) {
  // With a one-hour retention a complete job stays for the hour after its
  // last change and is gone once the engine's next prune passes it; a
  // running job is kept however old.
  AddAgent("dp1");
  AddAgent("dp2", Behaviour::kUnavailable);
  std::string id = ImportPackage("app", "1.0", kSize);
  std::string done = Distribute(id, {"dp1"});
  std::string running = Distribute(id, {"dp2"});
  Engine::Options o = TestOptions();
  o.job_retention_ms = 3'600'000;
  StartEngine(o);
  ASSERT_TRUE(WaitForTarget(done, "dp1", IsDone).has_value());
  clock_.AdvanceMs(o.job_retention_ms + 61'000);  // past the retention and a prune interval
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (store_->GetJob(done).ok() && absl::Now() < deadline) {
    store_->WaitForChange(store_->version(), absl::Milliseconds(100));
  }
  EXPECT_EQ(store_->GetJob(done).status().code(), absl::StatusCode::kNotFound)
      << "the finished job was not pruned";
  EXPECT_TRUE(store_->GetJob(running).ok()) << "an unfinished job was pruned";
}

// Puts `agents` in site `site` (before StartEngine, which loads the limits).
void PutInSite(StateStore& store, const std::string& site, std::initializer_list<const char*> agents) {
  for (const char* a : agents) {
    ASSERT_TRUE(store.SetAgentLabels(a, {{"site", site}}, {}).ok()) << a;
  }
}

TEST_F(EngineTest, APausedSiteStartsNoTransferUntilItOpens) {
  // dp1 is in a paused site, dp3 in none: dp3 completes (the engine has
  // passed over dp1 many times by then) while dp1 waits pending, with no
  // attempt counted; once the site opens dp1 completes too.
  FakeAgent& dp1 = AddAgent("dp1");
  AddAgent("dp3");
  PutInSite(*store_, "fra", {"dp1"});
  SiteRow paused{"fra", {}, 0};
  paused.policy.rate = Rate::Paused();
  ASSERT_TRUE(store_->PutSite(paused).ok());
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp3"});
  StartEngine();
  ASSERT_TRUE(WaitForTarget(job, "dp3", IsDone).has_value());
  clock_.AdvanceMs(60'000);
  engine_->Kick();
  ASSERT_TRUE(WaitForTarget(job, "dp3", IsDone).has_value());
  TargetRow waiting = Target(job, "dp1");
  EXPECT_EQ(waiting.state, TargetState::kPending);
  EXPECT_EQ(waiting.attempts, 0u);
  EXPECT_FALSE(dp1.WaitForTransfers(1, absl::ZeroDuration())) << "a paused site was sent to";
  engine_->bandwidth().SetSite("fra", SitePolicy{}, absl::UTCTimeZone());
  engine_->Kick();
  auto t = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(t.has_value()) << "dp1 did not complete once its site opened";
  EXPECT_EQ(t->attempts, 1u);
}

TEST_F(EngineTest, ASiteAtItsMaxTransfersStartsNoMoreUntilItHasRoom) {
  // fra allows one transfer at a time: dp1's hangs, dp2 waits pending while
  // dp3 (no site) completes; with room for two, dp2 starts.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHang);
  FakeAgent& dp2 = AddAgent("dp2");
  AddAgent("dp3");
  PutInSite(*store_, "fra", {"dp1", "dp2"});
  SiteRow one{"fra", {}, 0};
  one.policy.max_transfers = 1;
  one.relay = kNoRelay;  // dp2 must wait for room, not for a relay
  ASSERT_TRUE(store_->PutSite(one).ok());
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  ASSERT_TRUE(WaitForTarget(job, "dp3", IsDone).has_value());
  EXPECT_EQ(engine_->ActiveTransfersAt("fra"), 1u);
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kPending);
  EXPECT_FALSE(dp2.WaitForTransfers(1, absl::ZeroDuration()));
  one.policy.max_transfers = 2;
  engine_->bandwidth().SetSite("fra", one.policy, absl::UTCTimeZone());
  engine_->Kick();
  ASSERT_TRUE(WaitForTarget(job, "dp2", IsDone).has_value()) << "dp2 never started";
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kTransferring);
}

}  // namespace
}  // namespace pkgdist::testing
