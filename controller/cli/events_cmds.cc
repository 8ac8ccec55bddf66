// pkgdistctl events: the controller's event stream.
#include <cstdint>
#include <memory>

#include "controller/cli/command.h"
#include "controller/cli/event_follow.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

int RunEvents(CommandEnv& env, const EventFollowOptions& options) {
  // The table's header goes out with the first event (or, for an empty
  // history, at the end), never before an error.
  bool header = env.output == OutputFormat::kJson;
  absl::Status s = FollowEvents(
      env.client, options,
      [&env, &header](const pkgdist::v1::Event& e) {
        if (!header) env.out << EventHeaderLine();
        header = true;
        if (env.output == OutputFormat::kJson) {
          env.out << JsonLine(EventToJson(e)) << "\n";
        } else {
          env.out << RenderEventLine(e);
        }
        env.out.flush();
      },
      env.err);
  if (!s.ok()) return ReportError(env, s);
  if (!header) env.out << EventHeaderLine() << std::flush;
  return kExitOk;
}

}  // namespace

void AddEventCommands(CLI::App& app, Action& selected) {
  auto o = std::make_shared<EventFollowOptions>();
  CLI::App* events = app.add_subcommand(
      "events",
      "Print the controller's events (job, target, agent and package changes), one line each "
      "(JSON lines with --output json): the stored history, then with --follow every new one");
  events->add_flag("--follow,-f", o->follow,
                   "Keep printing new events; reconnect from the last sequence if the stream "
                   "breaks (a controller restart)");
  CLI::Option* after = events->add_option(
      "--after", o->after, "Start after this sequence number (default: the oldest kept)");
  events->add_flag("--from-now", o->from_now, "Start after the newest event: only new ones")
      ->excludes(after);
  events->add_flag("--progress", o->include_progress,
                   "Also print the progress of transferring targets (about once a second; not "
                   "stored, not replayed)");
  OnRun(events, selected, [o](CommandEnv& env) { return RunEvents(env, *o); });
}

}  // namespace pkgdist::cli
