#include "controller/cli/app.h"

#include <string>

#include "CLI/CLI.hpp"
#include "controller/cli/admin_client.h"
#include "controller/cli/command.h"
#include "controller/cli/signing.h"

namespace pkgdist::cli {
namespace {

constexpr const char* kFooter = R"(
Settings: every connection flag can also come from the environment
(PKGDIST_CONTROLLER, PKGDIST_CA, PKGDIST_CERT, PKGDIST_KEY, PKGDIST_OUTPUT)
or from a config file: --config FILE, else $PKGDIST_CONFIG, else
$XDG_CONFIG_HOME/pkgdist/pkgdistctl.toml (~/.config/pkgdist/pkgdistctl.toml),
with TOML string keys controller, ca, cert, key, output. Flags win over the
environment, the environment over the file.

Exit status:
  0  success
  1  the call failed: the controller's error or an unreachable controller
     (one line on stderr: "pkgdistctl: CODE: message")
  2  usage error
  3  the job waited for (--wait) ended failed or cancelled
  4  --wait --timeout expired (the job keeps going)
)";

}  // namespace

int RunCli(int argc, const char* const argv[], const CliIo& io) {
  CLI::App app("pkgdistctl: drive a pkgdist controller (agents, packages, distribution jobs, "
               "audit trail, events)",
               "pkgdistctl");
  app.footer(kFooter);
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("pkgdistctl: ") + e.what() + "\nRun with --help for more information.\n";
  });
  // Global options are accepted after the verb too.
  app.fallthrough();
  app.require_subcommand(1);

  ConnectionFlags flags;
  AddConnectionOptions(app, flags);

  Action selected;
  AddAgentCommands(app, selected);
  AddPackageCommands(app, selected);
  AddJobCommands(app, selected);
  AddAuditCommands(app, selected);
  AddEventCommands(app, selected);
  AddSiteCommands(app, selected);
  LocalAction local;
  AddKeyCommands(app, local);

  try {
    ParseCommandLine(app, argc, argv, io.env);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, io.out, io.err) == 0 ? kExitOk : kExitUsage;
  }

  if (local) return local(io.out, io.err);
  if (!selected) {  // Unreachable: every leaf verb sets an action.
    io.err << "pkgdistctl: no verb given\n";
    return kExitUsage;
  }
  auto settings = ResolveSettings(flags);
  if (!settings.ok()) {
    io.err << "pkgdistctl: " << settings.status().message() << std::endl;
    return kExitUsage;
  }
  auto client = AdminClient::Connect(*settings);
  if (!client.ok()) {
    io.err << "pkgdistctl: " << absl::StatusCodeToString(client.status().code()) << ": "
           << client.status().message() << std::endl;
    return kExitCallFailed;
  }
  CommandEnv env{**client, settings->output, io.out, io.err, io.out_is_terminal,
                 io.terminal_width, io.err_is_terminal};
  return selected(env);
}

}  // namespace pkgdist::cli
