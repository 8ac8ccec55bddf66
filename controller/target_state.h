// The target state machine, the derived job state and retry backoff: pure
// logic with no I/O, tested directly (tests/unit/controller/target_state_test.cc).
//
//   pending ──start──▶ transferring ──published──▶ done
//      ▲                 │      ▲
//      │               error  start
//      │                 ▼      │
//      └──retry now── retry_wait ─┘
//   retry_wait ──rescheduled (retry now, agent back)──▶ retry_wait
//   any non-final ──operator──▶ cancelled
//   pending / transferring / retry_wait ──policy (max attempts, deadline)──▶ failed
//   failed ──operator retry──▶ retry_wait
//
// Done and cancelled are never left. A job is complete if and only if every
// one of its targets is done.
#ifndef PKGDIST_CONTROLLER_TARGET_STATE_H_
#define PKGDIST_CONTROLLER_TARGET_STATE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pkgdist {

enum class TargetState { kPending, kTransferring, kRetryWait, kDone, kFailed, kCancelled };
enum class JobState { kPending, kInProgress, kComplete, kFailed, kCancelled };
enum class JobKind { kDistribute, kRemove };

// Names as they appear in the API, the CLI and the database.
absl::string_view TargetStateName(TargetState s);
absl::string_view JobStateName(JobState s);
absl::string_view JobKindName(JobKind k);
absl::StatusOr<TargetState> ParseTargetState(absl::string_view s);
absl::StatusOr<JobState> ParseJobState(absl::string_view s);
absl::StatusOr<JobKind> ParseJobKind(absl::string_view s);

// Done, failed and cancelled: the engine never touches such a target again
// (an operator's retry may bring a failed one back).
bool IsFinal(TargetState s);

// OK if `from -> to` is an edge of the diagram above; FAILED_PRECONDITION
// naming both states otherwise.
absl::Status CheckTransition(TargetState from, TargetState to);

// complete iff every target is done (and there is at least one);
// otherwise, when every target is final: failed if any failed, else
// cancelled; otherwise pending if every target is pending, else in_progress.
// A job without targets is pending (never complete).
JobState DeriveJobState(std::span<const TargetState> targets);

struct BackoffPolicy {
  int64_t initial_ms = 1000;
  int64_t max_ms = 60'000;
  // Each delay is drawn uniformly from [d * (1 - jitter), d].
  double jitter = 0.2;
};

// Delay before the next attempt after `consecutive_failures` (>= 1) failures
// in a row: initial doubled per failure, capped at max, jittered down by
// `unit_random` in [0, 1).
int64_t BackoffDelayMs(const BackoffPolicy& p, uint32_t consecutive_failures, double unit_random);

// Optional per-job policy; 0 means off.
struct JobPolicy {
  uint32_t max_attempts = 0;
  int64_t deadline_ms = 0;  // absolute, ms since epoch
};

// Whether a target that just failed its attempt number `attempts` at
// `now_ms` must fail for good under `policy`; the reason if so (attempts
// >= max_attempts, or now_ms >= deadline_ms).
std::optional<std::string> PolicyFailure(const JobPolicy& policy, uint32_t attempts, int64_t now_ms);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_TARGET_STATE_H_
