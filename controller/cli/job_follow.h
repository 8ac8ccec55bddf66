// Following a job as it runs: `job watch`, `job status --watch`, and
// `--wait` on distribute and remove-from.
#ifndef PKGDIST_CONTROLLER_CLI_JOB_FOLLOW_H_
#define PKGDIST_CONTROLLER_CLI_JOB_FOLLOW_H_

#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controller/cli/admin_client.h"
#include "controller/cli/progress.h"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

using JobUpdateFn = std::function<void(const pkgdist::v1::JobStatus&)>;

// complete, failed or cancelled: WatchJob ends after sending such a state.
bool IsFinalJobState(absl::string_view state);

struct FollowResult {
  // OK once a final state was seen; the error that stopped us otherwise.
  absl::Status status;
  // True if `deadline` passed first (status is then DEADLINE_EXCEEDED).
  bool timed_out = false;
  // The last status received, if any.
  std::optional<pkgdist::v1::JobStatus> last;
};

// Watches job `id` until it is final, handing each status to `on_update`.
// If the stream breaks after the first status (the controller restarted),
// says so on `err` and watches again, waiting for the controller to come
// back, until `deadline`. A failure before any status (unknown job,
// unreachable controller) is returned at once.
FollowResult FollowJob(AdminClient& client, const std::string& id, absl::Time deadline,
                       const JobUpdateFn& on_update, std::ostream& err);

// Redraws a JobProgressView in place on a terminal.
class LiveJobPrinter {
 public:
  // `width` gives the terminal's current width in columns.
  LiveJobPrinter(std::ostream& out, std::function<size_t()> width);
  void Print(const pkgdist::v1::JobStatus& job);

 private:
  std::ostream& out_;
  std::function<size_t()> width_;
  JobProgressView view_;
  size_t lines_drawn_ = 0;
};

// For logs: one line when the job's state changes, and one per target
// when its state, attempts or error change or its progress passes another
// tenth of the total.
class ChangeLinePrinter {
 public:
  explicit ChangeLinePrinter(std::ostream& out) : out_(out) {}
  void Print(const pkgdist::v1::JobStatus& job);

 private:
  std::ostream& out_;
  std::string job_state_;
  std::map<std::string, pkgdist::v1::TargetStatus> targets_;
};

// The terminal width of `fd`, or 100 if it is not a terminal.
size_t TerminalWidth(int fd);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_JOB_FOLLOW_H_
