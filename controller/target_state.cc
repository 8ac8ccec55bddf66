#include "controller/target_state.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace pkgdist {
namespace {

constexpr std::array<std::pair<TargetState, absl::string_view>, 6> kTargetStateNames = {{
    {TargetState::kPending, "pending"},
    {TargetState::kTransferring, "transferring"},
    {TargetState::kRetryWait, "retry_wait"},
    {TargetState::kDone, "done"},
    {TargetState::kFailed, "failed"},
    {TargetState::kCancelled, "cancelled"},
}};

constexpr std::array<std::pair<JobState, absl::string_view>, 5> kJobStateNames = {{
    {JobState::kPending, "pending"},
    {JobState::kInProgress, "in_progress"},
    {JobState::kComplete, "complete"},
    {JobState::kFailed, "failed"},
    {JobState::kCancelled, "cancelled"},
}};

constexpr std::array<std::pair<JobKind, absl::string_view>, 2> kJobKindNames = {{
    {JobKind::kDistribute, "distribute"},
    {JobKind::kRemove, "remove"},
}};

template <typename E, size_t N>
absl::string_view NameOf(const std::array<std::pair<E, absl::string_view>, N>& table, E value) {
  for (const auto& [e, name] : table) {
    if (e == value) return name;
  }
  return "unknown";
}

template <typename E, size_t N>
absl::StatusOr<E> Parse(const std::array<std::pair<E, absl::string_view>, N>& table,
                        absl::string_view s, absl::string_view what) {
  for (const auto& [e, name] : table) {
    if (name == s) return e;
  }
  std::string valid;
  for (const auto& entry : table) absl::StrAppend(&valid, valid.empty() ? "" : ", ", entry.second);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " \"", s, "\" (expected one of: ", valid, ")"));
}

// Every edge of the diagram in target_state.h.
constexpr std::array<std::pair<TargetState, TargetState>, 13> kEdges = {{
    {TargetState::kPending, TargetState::kTransferring},
    {TargetState::kPending, TargetState::kFailed},
    {TargetState::kPending, TargetState::kCancelled},
    {TargetState::kTransferring, TargetState::kDone},
    {TargetState::kTransferring, TargetState::kRetryWait},
    {TargetState::kTransferring, TargetState::kFailed},
    {TargetState::kTransferring, TargetState::kCancelled},
    {TargetState::kRetryWait, TargetState::kTransferring},
    {TargetState::kRetryWait, TargetState::kPending},
    {TargetState::kRetryWait, TargetState::kRetryWait},
    {TargetState::kRetryWait, TargetState::kFailed},
    {TargetState::kRetryWait, TargetState::kCancelled},
    {TargetState::kFailed, TargetState::kRetryWait},
}};

}  // namespace

absl::string_view TargetStateName(TargetState s) { return NameOf(kTargetStateNames, s); }
absl::string_view JobStateName(JobState s) { return NameOf(kJobStateNames, s); }
absl::string_view JobKindName(JobKind k) { return NameOf(kJobKindNames, k); }

absl::StatusOr<TargetState> ParseTargetState(absl::string_view s) {
  return Parse(kTargetStateNames, s, "target state");
}
absl::StatusOr<JobState> ParseJobState(absl::string_view s) {
  return Parse(kJobStateNames, s, "job state");
}
absl::StatusOr<JobKind> ParseJobKind(absl::string_view s) {
  return Parse(kJobKindNames, s, "job kind");
}

bool IsFinal(TargetState s) {
  return s == TargetState::kDone || s == TargetState::kFailed || s == TargetState::kCancelled;
}

absl::Status CheckTransition(TargetState from, TargetState to) {
  for (const auto& [f, t] : kEdges) {
    if (f == from && t == to) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "illegal target transition ", TargetStateName(from), " -> ", TargetStateName(to)));
}

JobState DeriveJobState(std::span<const TargetState> targets) {
  if (targets.empty()) return JobState::kPending;
  auto all = [&](auto pred) { return std::all_of(targets.begin(), targets.end(), pred); };
  auto any = [&](auto pred) { return std::any_of(targets.begin(), targets.end(), pred); };
  if (all([](TargetState s) { return s == TargetState::kDone; })) return JobState::kComplete;
  if (all(IsFinal)) {
    return any([](TargetState s) { return s == TargetState::kFailed; }) ? JobState::kFailed
                                                                       : JobState::kCancelled;
  }
  if (all([](TargetState s) { return s == TargetState::kPending; })) return JobState::kPending;
  return JobState::kInProgress;
}

int64_t BackoffDelayMs(const BackoffPolicy& p, uint32_t consecutive_failures, double unit_random) {
  const int64_t cap = std::max<int64_t>(p.max_ms, 0);
  int64_t d = std::clamp<int64_t>(p.initial_ms, 0, cap);
  // Doubling stops at the cap, so this never overflows.
  for (uint32_t i = 1; i < consecutive_failures && d < cap; ++i) d = d > cap / 2 ? cap : d * 2;
  const double jitter = std::clamp(p.jitter, 0.0, 1.0);
  const double u = std::clamp(unit_random, 0.0, 1.0);
  // Truncating the amount taken off keeps the result within [d*(1-jitter), d].
  return d - static_cast<int64_t>(static_cast<double>(d) * jitter * u);
}

std::optional<std::string> PolicyFailure(const JobPolicy& policy, uint32_t attempts,
                                         int64_t now_ms) {
  if (policy.max_attempts > 0 && attempts >= policy.max_attempts) {
    return absl::StrCat("gave up after ", attempts, " attempts (max_attempts ",
                        policy.max_attempts, ")");
  }
  if (policy.deadline_ms > 0 && now_ms >= policy.deadline_ms) return std::string("deadline exceeded");
  return std::nullopt;
}

}  // namespace pkgdist
