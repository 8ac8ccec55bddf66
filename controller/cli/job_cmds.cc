// pkgdistctl distribute, and job list | status | watch | cancel | retry | delete.
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/cli/command.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

struct DistributeOptions {
  std::string package;
  std::vector<std::string> agents;
  bool all = false;
  std::vector<std::string> select;
  bool wait = false;
  std::string timeout;
  uint32_t max_attempts = 0;
  std::string deadline;
};

struct JobOptions {
  std::string id;
  std::string agent;
  bool watch = false;
  pkgdist::v1::ListJobsRequest filter;
};

int RunDistribute(CommandEnv& env, const DistributeOptions& o) {
  pkgdist::v1::DistributeRequest req;
  req.set_package(o.package);
  for (const auto& a : o.agents) req.add_agents(a);
  req.set_all_agents(o.all);
  req.set_selector(absl::StrJoin(o.select, ","));
  req.set_max_attempts(o.max_attempts);
  if (!o.deadline.empty()) {
    // Whole seconds, rounded up: a deadline never rounds to "none" (0).
    double secs = absl::ToDoubleSeconds(ParseValidatedDuration(o.deadline));
    req.set_deadline_seconds(std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(secs))));
  }
  auto job = env.client.Distribute(req);
  if (!job.ok()) return ReportError(env, job.status());
  if (!o.wait || env.output == OutputFormat::kTable) {
    Json j;
    j["id"] = job->id();
    Emit(env, j,
         absl::StrCat("job ", job->id(), " started: distribute ", job->package(), " to ",
                      job->targets_size(), " agent(s)\n"));
  }
  if (!o.wait) return kExitOk;
  std::optional<absl::Duration> timeout;
  if (!o.timeout.empty()) timeout = ParseValidatedDuration(o.timeout);
  return WaitForJob(env, job->id(), timeout);
}

int EmitJob(CommandEnv& env, const absl::StatusOr<pkgdist::v1::JobStatus>& job) {
  if (!job.ok()) return ReportError(env, job.status());
  Emit(env, JobToJson(*job), RenderJob(*job));
  return kExitOk;
}

int RunList(CommandEnv& env, const JobOptions& o) {
  auto jobs = env.client.ListJobs(o.filter);
  if (!jobs.ok()) return ReportError(env, jobs.status());
  Emit(env, JobListToJson(*jobs), RenderJobList(*jobs));
  return kExitOk;
}

int RunStatus(CommandEnv& env, const JobOptions& o) {
  if (o.watch) return WatchJobToEnd(env, o.id);
  return EmitJob(env, env.client.GetJob(o.id));
}

void AddDistribute(CLI::App& app, Action& selected) {
  auto o = std::make_shared<DistributeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "distribute", "Start a job that sends a package to agents (retried until done)");
  cmd->add_option("PACKAGE", o->package, "NAME@VERSION")->required()->check(PackageRefValidator());
  CLI::Option* to =
      cmd->add_option("--to", o->agents, "Target agents (A,B,...)")->delimiter(',');
  CLI::Option* all = cmd->add_flag("--all", o->all, "Send to every registered agent");
  to->excludes(all);
  cmd->add_option("--select", o->select,
                  "Also send to the agents whose labels match SELECTOR (site=fra, "
                  "'tier in (edge,core)', ...; docs/labels.md); repeated: all must match")
      ->excludes(all);
  CLI::Option* wait =
      cmd->add_flag("--wait", o->wait, "Wait until the job is final; exit 0 only if complete");
  cmd->add_option("--timeout", o->timeout,
                  "With --wait: give up waiting after DURATION (e.g. 30s, 5m, 1h), exit 4; "
                  "the job keeps going")
      ->check(DurationValidator())
      ->needs(wait);
  cmd->add_option("--max-attempts", o->max_attempts,
                  "Fail a target after N attempts (default: retry forever)")
      ->check(CLI::Range(1u, UINT32_MAX));
  cmd->add_option("--deadline", o->deadline,
                  "Fail targets not done DURATION from now (default: none)")
      ->check(DurationValidator());
  cmd->callback([&selected, o] {
    if (o->agents.empty() && !o->all && o->select.empty()) {
      throw CLI::RequiredError("--to A,B, --select SELECTOR or --all");
    }
    selected = [o](CommandEnv& env) { return RunDistribute(env, *o); };
  });
}

}  // namespace

void AddJobCommands(CLI::App& app, Action& selected) {
  AddDistribute(app, selected);

  CLI::App* job = app.add_subcommand("job", "List, follow, cancel and retry jobs");
  job->require_subcommand(1);
  auto o = std::make_shared<JobOptions>();

  CLI::App* list = job->add_subcommand("list", "List jobs, newest first");
  list->add_option_function<std::string>(
          "--state", [o](const std::string& v) { o->filter.set_state(v); },
          "Only jobs in this state")
      ->check(CLI::IsMember({"pending", "in_progress", "complete", "failed", "cancelled"}));
  list->add_option_function<std::string>(
          "--package", [o](const std::string& v) { o->filter.set_package(v); },
          "Only jobs of this NAME@VERSION")
      ->check(PackageRefValidator());
  list->add_option_function<std::string>(
      "--agent", [o](const std::string& v) { o->filter.set_agent(v); },
      "Only jobs targeting this agent");
  OnRun(list, selected, [o](CommandEnv& env) { return RunList(env, *o); });

  CLI::App* status = job->add_subcommand("status", "Show a job and its targets");
  status->add_option("JOB", o->id, "Job id")->required();
  status->add_flag("--watch", o->watch, "Follow the job until it is final (as job watch)");
  OnRun(status, selected, [o](CommandEnv& env) { return RunStatus(env, *o); });

  CLI::App* watch = job->add_subcommand(
      "watch", "Follow a job until it is final: live progress on a terminal, one line per "
               "change otherwise, JSON lines with --output json");
  watch->add_option("JOB", o->id, "Job id")->required();
  OnRun(watch, selected, [o](CommandEnv& env) { return WatchJobToEnd(env, o->id); });

  CLI::App* cancel = job->add_subcommand("cancel", "Cancel a job's unfinished targets");
  cancel->add_option("JOB", o->id, "Job id")->required();
  cancel->add_option("--agent", o->agent, "Only this agent's target");
  OnRun(cancel, selected,
        [o](CommandEnv& env) { return EmitJob(env, env.client.CancelJob(o->id, o->agent)); });

  CLI::App* retry = job->add_subcommand(
      "retry", "Retry a job's waiting or failed targets now, resetting their backoff");
  retry->add_option("JOB", o->id, "Job id")->required();
  retry->add_option("--agent", o->agent, "Only this agent's target");
  OnRun(retry, selected,
        [o](CommandEnv& env) { return EmitJob(env, env.client.RetryJob(o->id, o->agent)); });

  CLI::App* del = job->add_subcommand(
      "delete", "Delete a finished job from the controller's history (cancel it first if "
                "it is still running)");
  del->add_option("JOB", o->id, "Job id")->required();
  OnRun(del, selected, [o](CommandEnv& env) {
    if (absl::Status s = env.client.DeleteJob(o->id); !s.ok()) return ReportError(env, s);
    Json j;
    j["deleted"] = o->id;
    Emit(env, j, absl::StrCat("job ", o->id, " deleted\n"));
    return kExitOk;
  });
}

}  // namespace pkgdist::cli
