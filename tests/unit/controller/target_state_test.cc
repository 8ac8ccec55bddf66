#include "controller/target_state.h"

#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;
using TS = TargetState;

constexpr TS kAllTargetStates[] = {TS::kPending, TS::kTransferring, TS::kRetryWait,
                                   TS::kDone,    TS::kFailed,       TS::kCancelled};

// The edges of the diagram in target_state.h, and nothing else.
const std::vector<std::pair<TS, TS>>& LegalEdges() {
  static const auto* edges = new std::vector<std::pair<TS, TS>>{
      {TS::kPending, TS::kTransferring},   {TS::kPending, TS::kFailed},
      {TS::kPending, TS::kCancelled},      {TS::kTransferring, TS::kDone},
      {TS::kTransferring, TS::kRetryWait}, {TS::kTransferring, TS::kFailed},
      {TS::kTransferring, TS::kCancelled}, {TS::kRetryWait, TS::kTransferring},
      {TS::kRetryWait, TS::kPending},      {TS::kRetryWait, TS::kRetryWait},
      {TS::kRetryWait, TS::kFailed},       {TS::kRetryWait, TS::kCancelled},
      {TS::kFailed, TS::kRetryWait},
  };
  return *edges;
}

bool IsLegal(TS from, TS to) {
  for (const auto& e : LegalEdges()) {
    if (e.first == from && e.second == to) return true;
  }
  return false;
}

class TransitionTest : public ::testing::TestWithParam<std::tuple<TS, TS>> {};

TEST_P(TransitionTest, AllowsExactlyTheEdgesOfTheDiagram) {
  // Each of the 36 (from, to) pairs is accepted iff it is an edge.
  auto [from, to] = GetParam();
  absl::Status s = CheckTransition(from, to);
  if (IsLegal(from, to)) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr(std::string(TargetStateName(from))));
    EXPECT_THAT(s.message(), HasSubstr(std::string(TargetStateName(to))));
  }
}

INSTANTIATE_TEST_SUITE_P(AllPairs, TransitionTest,
                         ::testing::Combine(::testing::ValuesIn(kAllTargetStates),
                                            ::testing::ValuesIn(kAllTargetStates)),
                         [](const auto& info) {
                           return std::string(TargetStateName(std::get<0>(info.param))) + "_to_" +
                                  std::string(TargetStateName(std::get<1>(info.param)));
                         });

TEST(TargetStateTest, DoneAndCancelledAreNeverLeft) {
  // No edge leaves done or cancelled; failed is left only by an operator retry.
  for (TS to : kAllTargetStates) {
    EXPECT_FALSE(CheckTransition(TS::kDone, to).ok()) << TargetStateName(to);
    EXPECT_FALSE(CheckTransition(TS::kCancelled, to).ok()) << TargetStateName(to);
    EXPECT_EQ(CheckTransition(TS::kFailed, to).ok(), to == TS::kRetryWait) << TargetStateName(to);
  }
}

TEST(TargetStateTest, FinalStatesAreDoneFailedAndCancelled) {
  // IsFinal holds for exactly the three outcomes.
  EXPECT_FALSE(IsFinal(TS::kPending));
  EXPECT_FALSE(IsFinal(TS::kTransferring));
  EXPECT_FALSE(IsFinal(TS::kRetryWait));
  EXPECT_TRUE(IsFinal(TS::kDone));
  EXPECT_TRUE(IsFinal(TS::kFailed));
  EXPECT_TRUE(IsFinal(TS::kCancelled));
}

TEST(TargetStateTest, NamesRoundTripAndUnknownNamesAreRejected) {
  // Every name parses back to its value; anything else is INVALID_ARGUMENT.
  const std::vector<std::string> target_names = {"pending", "transferring", "retry_wait",
                                                 "done",    "failed",       "cancelled"};
  for (size_t i = 0; i < target_names.size(); ++i) {
    EXPECT_EQ(TargetStateName(kAllTargetStates[i]), target_names[i]);
    EXPECT_EQ(*ParseTargetState(target_names[i]), kAllTargetStates[i]);
  }
  const std::vector<std::pair<JobState, std::string>> jobs = {
      {JobState::kPending, "pending"},   {JobState::kInProgress, "in_progress"},
      {JobState::kComplete, "complete"}, {JobState::kFailed, "failed"},
      {JobState::kCancelled, "cancelled"}};
  for (const auto& [state, name] : jobs) {
    EXPECT_EQ(JobStateName(state), name);
    EXPECT_EQ(*ParseJobState(name), state);
  }
  EXPECT_EQ(JobKindName(JobKind::kDistribute), "distribute");
  EXPECT_EQ(JobKindName(JobKind::kRemove), "remove");
  EXPECT_EQ(*ParseJobKind("distribute"), JobKind::kDistribute);
  EXPECT_EQ(*ParseJobKind("remove"), JobKind::kRemove);

  EXPECT_EQ(ParseTargetState("Done").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseTargetState("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobState("running").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobKind("copy").status().code(), absl::StatusCode::kInvalidArgument);
}

struct DeriveCase {
  std::vector<TS> targets;
  JobState want;
};

class DeriveJobStateTest : public ::testing::TestWithParam<DeriveCase> {};

TEST_P(DeriveJobStateTest, FollowsTheTargets) {
  // The job state is a pure function of its targets' states.
  const DeriveCase& c = GetParam();
  EXPECT_EQ(JobStateName(DeriveJobState(c.targets)), JobStateName(c.want));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DeriveJobStateTest,
    ::testing::Values(
        DeriveCase{{TS::kDone}, JobState::kComplete},
        DeriveCase{{TS::kDone, TS::kDone, TS::kDone}, JobState::kComplete},
        // The classic failure: one server waits for a retry; never complete.
        DeriveCase{{TS::kDone, TS::kRetryWait}, JobState::kInProgress},
        DeriveCase{{TS::kDone, TS::kDone, TS::kRetryWait}, JobState::kInProgress},
        DeriveCase{{TS::kDone, TS::kTransferring}, JobState::kInProgress},
        DeriveCase{{TS::kDone, TS::kPending}, JobState::kInProgress},
        DeriveCase{{TS::kPending, TS::kTransferring}, JobState::kInProgress},
        DeriveCase{{TS::kFailed, TS::kRetryWait}, JobState::kInProgress},
        DeriveCase{{TS::kCancelled, TS::kPending}, JobState::kInProgress},
        DeriveCase{{TS::kPending}, JobState::kPending},
        DeriveCase{{TS::kPending, TS::kPending}, JobState::kPending},
        DeriveCase{{TS::kDone, TS::kCancelled}, JobState::kCancelled},
        DeriveCase{{TS::kCancelled}, JobState::kCancelled},
        DeriveCase{{TS::kDone, TS::kFailed}, JobState::kFailed},
        DeriveCase{{TS::kFailed}, JobState::kFailed},
        DeriveCase{{TS::kDone, TS::kFailed, TS::kCancelled}, JobState::kFailed},
        // No targets: nothing was delivered, so never complete.
        DeriveCase{{}, JobState::kPending}));

TEST(DeriveJobStateTest, CompleteOnlyWhenEveryTargetIsDone) {
  // Over every pair of target states, complete iff both are done.
  for (TS a : kAllTargetStates) {
    for (TS b : kAllTargetStates) {
      std::vector<TS> targets = {a, b};
      EXPECT_EQ(DeriveJobState(targets) == JobState::kComplete,
                a == TS::kDone && b == TS::kDone)
          << TargetStateName(a) << "," << TargetStateName(b);
    }
  }
}

TEST(BackoffTest, DoublesFromInitialUpToTheCap) {
  // Without jitter: 1s, 2s, 4s, ... then 60s for ever.
  BackoffPolicy p{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.0};
  EXPECT_EQ(BackoffDelayMs(p, 1, 0.5), 1000);
  EXPECT_EQ(BackoffDelayMs(p, 2, 0.5), 2000);
  EXPECT_EQ(BackoffDelayMs(p, 3, 0.5), 4000);
  EXPECT_EQ(BackoffDelayMs(p, 6, 0.5), 32'000);
  EXPECT_EQ(BackoffDelayMs(p, 7, 0.5), 60'000);
  EXPECT_EQ(BackoffDelayMs(p, 100, 0.5), 60'000);
  EXPECT_EQ(BackoffDelayMs(p, UINT32_MAX, 0.5), 60'000);
}

TEST(BackoffTest, ZeroFailuresCountsAsTheFirst) {
  // consecutive_failures 0 is out of contract; it yields the initial delay.
  BackoffPolicy p{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.0};
  EXPECT_EQ(BackoffDelayMs(p, 0, 0.0), 1000);
}

TEST(BackoffTest, JitterStaysWithinItsBounds) {
  // Each delay lies in [d * (1 - jitter), d], reaching both ends.
  BackoffPolicy p{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.2};
  for (uint32_t n : {1u, 3u, 10u}) {
    const int64_t d = BackoffDelayMs(BackoffPolicy{p.initial_ms, p.max_ms, 0.0}, n, 0.0);
    for (double u = 0.0; u < 1.0; u += 0.01) {
      int64_t got = BackoffDelayMs(p, n, u);
      EXPECT_GE(got, static_cast<int64_t>(static_cast<double>(d) * 0.8)) << n << " " << u;
      EXPECT_LE(got, d) << n << " " << u;
    }
    EXPECT_EQ(BackoffDelayMs(p, n, 0.0), d);
    EXPECT_NEAR(static_cast<double>(BackoffDelayMs(p, n, 0.999999)), static_cast<double>(d) * 0.8,
                1.0);
  }
}

TEST(BackoffTest, OutOfRangeInputsAreClamped) {
  // A random value outside [0, 1) or a jitter above 1 never yields a
  // negative delay or one above the cap.
  BackoffPolicy p{.initial_ms = 1000, .max_ms = 60'000, .jitter = 5.0};
  EXPECT_EQ(BackoffDelayMs(p, 1, -3.0), 1000);
  EXPECT_GE(BackoffDelayMs(p, 1, 7.0), 0);
  BackoffPolicy huge{.initial_ms = 1, .max_ms = INT64_MAX, .jitter = 0.0};
  EXPECT_EQ(BackoffDelayMs(huge, 200, 0.0), INT64_MAX);
  BackoffPolicy inverted{.initial_ms = 5000, .max_ms = 100, .jitter = 0.0};
  EXPECT_EQ(BackoffDelayMs(inverted, 1, 0.0), 100);
}

TEST(PolicyTest, OffByDefault) {
  // The default policy never fails a target, however many attempts or however late.
  JobPolicy off;
  EXPECT_FALSE(PolicyFailure(off, 1, 0).has_value());
  EXPECT_FALSE(PolicyFailure(off, 1'000'000, INT64_MAX).has_value());
}

TEST(PolicyTest, MaxAttemptsFailsAtTheLimit) {
  // With max_attempts 3, attempts 1 and 2 may retry, attempt 3 fails.
  JobPolicy p{.max_attempts = 3};
  EXPECT_FALSE(PolicyFailure(p, 1, 0).has_value());
  EXPECT_FALSE(PolicyFailure(p, 2, 0).has_value());
  std::optional<std::string> why = PolicyFailure(p, 3, 0);
  ASSERT_TRUE(why.has_value());
  EXPECT_THAT(*why, HasSubstr("3 attempts"));
  EXPECT_TRUE(PolicyFailure(p, 4, 0).has_value());
}

TEST(PolicyTest, DeadlineFailsAtAndAfterIt) {
  // A deadline fails the target once now reaches it.
  JobPolicy p{.deadline_ms = 10'000};
  EXPECT_FALSE(PolicyFailure(p, 50, 9'999).has_value());
  ASSERT_TRUE(PolicyFailure(p, 1, 10'000).has_value());
  EXPECT_EQ(*PolicyFailure(p, 1, 10'001), "deadline exceeded");
}

}  // namespace
}  // namespace pkgdist
