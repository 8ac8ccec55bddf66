// WatchJobToEnd and WaitForJob (declared in command.h).
#include <optional>

#include "absl/strings/str_cat.h"
#include "controller/cli/command.h"
#include "controller/cli/job_follow.h"
#include "controller/cli/progress.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

// How progress is shown while following a job.
JobUpdateFn MakeProgressPrinter(CommandEnv& env) {
  if (env.out_is_terminal) {
    auto live = std::make_shared<LiveJobPrinter>(env.out, env.terminal_width);
    return [live](const pkgdist::v1::JobStatus& job) { live->Print(job); };
  }
  auto lines = std::make_shared<ChangeLinePrinter>(env.out);
  return [lines](const pkgdist::v1::JobStatus& job) { lines->Print(job); };
}

void ListUnfinished(CommandEnv& env, const pkgdist::v1::JobStatus& job) {
  for (const auto& t : job.targets()) {
    if (t.state() != "done") env.err << DescribeUnfinishedTarget(t) << "\n";
  }
  env.err.flush();
}

}  // namespace

int WatchJobToEnd(CommandEnv& env, const std::string& id) {
  JobUpdateFn print;
  if (env.output == OutputFormat::kJson) {
    print = [&env](const pkgdist::v1::JobStatus& job) {
      env.out << JsonLine(JobToJson(job)) << std::endl;
    };
  } else {
    print = MakeProgressPrinter(env);
  }
  FollowResult r = FollowJob(env.client, id, absl::InfiniteFuture(), print, env.err);
  if (!r.status.ok()) return ReportError(env, r.status);
  return kExitOk;
}

int WaitForJob(CommandEnv& env, const std::string& id, std::optional<absl::Duration> timeout) {
  const bool json = env.output == OutputFormat::kJson;
  JobUpdateFn print = json ? [](const pkgdist::v1::JobStatus&) {} : MakeProgressPrinter(env);
  absl::Time deadline = timeout ? absl::Now() + *timeout : absl::InfiniteFuture();
  FollowResult r = FollowJob(env.client, id, deadline, print, env.err);
  if (json && r.last) env.out << JsonLine(JobToJson(*r.last)) << std::endl;
  if (r.timed_out) {
    env.err << "pkgdistctl: timed out after " << absl::FormatDuration(*timeout) << " waiting for job "
            << id << (r.last ? absl::StrCat(" (", r.last->state(), ")") : "")
            << "; it keeps going. Targets not done:\n";
    if (r.last) ListUnfinished(env, *r.last);
    return kExitTimeout;
  }
  if (!r.status.ok()) return ReportError(env, r.status);
  if (r.last->state() == "complete") {
    // Change lines have said so already; a live view's last frame may not.
    if (!json && env.out_is_terminal) env.out << "job " << id << " complete\n" << std::flush;
    return kExitOk;
  }
  env.err << "pkgdistctl: job " << id << " ended " << r.last->state() << ":\n";
  ListUnfinished(env, *r.last);
  return kExitJobNotComplete;
}

}  // namespace pkgdist::cli
