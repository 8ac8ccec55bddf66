#include "controller/cli/job_follow.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "controller/cli/display.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

constexpr absl::Duration kInitialReconnectDelay = absl::Milliseconds(250);
constexpr absl::Duration kMaxReconnectDelay = absl::Seconds(5);

int DoneCount(const pkgdist::v1::JobStatus& job) {
  return static_cast<int>(std::count_if(job.targets().begin(), job.targets().end(),
                                        [](const auto& t) { return t.state() == "done"; }));
}

bool TargetChanged(const pkgdist::v1::TargetStatus& before, const pkgdist::v1::TargetStatus& now) {
  return before.state() != now.state() || before.attempts() != now.attempts() ||
         before.last_error() != now.last_error() ||
         Percent(before.bytes_acked(), before.bytes_total()) / 10 !=
             Percent(now.bytes_acked(), now.bytes_total()) / 10;
}

std::string TargetChangeLine(const pkgdist::v1::TargetStatus& t) {
  std::string s = absl::StrCat(t.agent(), ": ", t.state());
  if (t.bytes_total() > 0) absl::StrAppend(&s, " ", ProgressCell(t.bytes_acked(), t.bytes_total()));
  if (t.attempts() > 0) absl::StrAppend(&s, " (attempt ", t.attempts(), ")");
  if (!t.last_error().empty() && t.state() != "done") absl::StrAppend(&s, ": ", t.last_error());
  if (!t.next_attempt_at().empty()) {
    absl::StrAppend(&s, " (next attempt at ", t.next_attempt_at(), ")");
  }
  return OneLine(s);
}

}  // namespace

bool IsFinalJobState(absl::string_view state) {
  return state == "complete" || state == "failed" || state == "cancelled";
}

FollowResult FollowJob(AdminClient& client, const std::string& id, absl::Time deadline,
                       const JobUpdateFn& on_update, std::ostream& err) {
  FollowResult result;
  absl::Duration delay = kInitialReconnectDelay;
  for (;;) {
    bool got_update = false;
    absl::Status s = client.WatchJob(id, deadline, /*wait_for_ready=*/result.last.has_value(),
                                     [&](const pkgdist::v1::JobStatus& job) {
                                       got_update = true;
                                       result.last = job;
                                       on_update(job);
                                     });
    if (result.last && IsFinalJobState(result.last->state())) {
      result.status = absl::OkStatus();
      return result;
    }
    if (deadline != absl::InfiniteFuture() &&
        (absl::IsDeadlineExceeded(s) || absl::Now() >= deadline)) {
      result.timed_out = true;
      result.status = absl::DeadlineExceededError(absl::StrCat("timed out watching job ", id));
      return result;
    }
    // Before the first status there is nothing to resume: report the error.
    if (!result.last || !(s.ok() || absl::IsUnavailable(s) || absl::IsCancelled(s))) {
      result.status = s.ok() ? absl::InternalError("the watch ended before the job was final") : s;
      return result;
    }
    if (got_update) delay = kInitialReconnectDelay;
    err << "pkgdistctl: watch of job " << id << " interrupted ("
        << OneLine(s.ok() ? "stream ended early" : s.ToString()) << "); watching again\n";
    absl::SleepFor(std::min(delay, deadline - absl::Now()));
    delay = std::min(delay * 2, kMaxReconnectDelay);
  }
}

LiveJobPrinter::LiveJobPrinter(std::ostream& out, std::function<size_t()> width)
    : out_(out), width_(std::move(width)) {}

void LiveJobPrinter::Print(const pkgdist::v1::JobStatus& job) {
  absl::Time now = absl::Now();
  view_.Update(job, now);
  // Stay one column short of the edge, so that no line wraps.
  std::vector<std::string> lines = view_.Render(now, std::max<size_t>(width_(), 21) - 1);
  std::string frame;
  if (lines_drawn_ > 0) absl::StrAppend(&frame, "\r\x1b[", lines_drawn_, "A");
  absl::StrAppend(&frame, "\x1b[J");
  for (const auto& l : lines) absl::StrAppend(&frame, l, "\n");
  out_ << frame << std::flush;
  lines_drawn_ = lines.size();
}

void ChangeLinePrinter::Print(const pkgdist::v1::JobStatus& job) {
  for (const auto& t : job.targets()) {
    auto it = targets_.find(t.agent());
    if (it == targets_.end() || TargetChanged(it->second, t)) {
      out_ << TargetChangeLine(t) << "\n";
    }
    targets_[t.agent()] = t;
  }
  if (job.state() != job_state_) {
    out_ << "job " << job.id() << ": " << job.state() << " (" << DoneCount(job) << "/"
         << job.targets_size() << " targets done)\n";
    job_state_ = job.state();
  }
  out_ << std::flush;
}

size_t TerminalWidth(int fd) {
  struct winsize ws {};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 100;
}

}  // namespace pkgdist::cli
