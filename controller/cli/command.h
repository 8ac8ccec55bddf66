// What every verb of pkgdistctl shares: the environment it runs in, exit
// codes, argument validators and output helpers. Verbs live in
// agent_cmds.cc, package_cmds.cc, job_cmds.cc, audit_cmds.cc,
// events_cmds.cc and site_cmds.cc; each Add*Commands adds
// its verbs to the app, and the parsed verb stores its action in
// `selected`, which the caller runs once the connection is set up.
#ifndef PKGDIST_CONTROLLER_CLI_COMMAND_H_
#define PKGDIST_CONTROLLER_CLI_COMMAND_H_

#include <functional>
#include <optional>
#include <ostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "controller/cli/admin_client.h"
#include "controller/cli/json_format.h"
#include "controller/cli/settings.h"

namespace pkgdist::cli {

// Exit codes (also documented in `pkgdistctl --help`).
inline constexpr int kExitOk = 0;
inline constexpr int kExitCallFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitJobNotComplete = 3;
inline constexpr int kExitTimeout = 4;

struct CommandEnv {
  AdminClient& client;
  OutputFormat output;
  std::ostream& out;
  std::ostream& err;
  // Whether `out` is a terminal (live progress) and its width.
  bool out_is_terminal = false;
  std::function<size_t()> terminal_width;
  // Whether `err` is a terminal (upload progress).
  bool err_is_terminal = false;
};

using Action = std::function<int(CommandEnv&)>;
// A verb that needs no controller (`key generate`).
using LocalAction = std::function<int(std::ostream& out, std::ostream& err)>;

void AddAgentCommands(CLI::App& app, Action& selected);
void AddPackageCommands(CLI::App& app, Action& selected);
// `job ...` and `distribute`.
void AddJobCommands(CLI::App& app, Action& selected);
// `audit list`.
void AddAuditCommands(CLI::App& app, Action& selected);
// `events`.
void AddEventCommands(CLI::App& app, Action& selected);
// `site ...` and `egress ...`.
void AddSiteCommands(CLI::App& app, Action& selected);

// Makes `action` the one to run when `cmd` is the verb parsed.
void OnRun(CLI::App* cmd, Action& selected, Action action);

// Prints "pkgdistctl: <CODE>: <message>" on one line of env.err and
// returns kExitCallFailed.
int ReportError(CommandEnv& env, const absl::Status& s);

// Prints `json` as one line in json mode, `table` otherwise.
void Emit(CommandEnv& env, const Json& json, const std::string& table);

// `job watch`: prints every status of job `id` until it is final (a live
// view on a terminal, change lines otherwise, JSON lines in json mode).
// kExitOk once final, kExitCallFailed if the watch fails.
int WatchJobToEnd(CommandEnv& env, const std::string& id);

// `--wait`: follows job `id` until it is final or `timeout` (if set) has
// passed, showing progress in table mode; in json mode prints only the
// last status seen, at the end. Returns kExitOk if the job completed,
// kExitJobNotComplete if it failed or was cancelled, kExitTimeout on
// timeout (listing every target not done on env.err; the job keeps
// going), kExitCallFailed if the watch failed.
int WaitForJob(CommandEnv& env, const std::string& id, std::optional<absl::Duration> timeout);

// Validators for CLI11 options.
CLI::Validator PackageRefValidator();  // name@version
CLI::Validator NameValidator();        // a package name or version (shared/paths.h)
CLI::Validator DurationValidator();    // see duration.h

// The duration in `text`, which DurationValidator has accepted.
absl::Duration ParseValidatedDuration(const std::string& text);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_COMMAND_H_
