// pkgdistctl's entry point: parses the command line, resolves the
// connection settings, connects and runs the chosen verb.
#ifndef PKGDIST_CONTROLLER_CLI_APP_H_
#define PKGDIST_CONTROLLER_CLI_APP_H_

#include <cstddef>
#include <functional>
#include <ostream>

#include "controller/cli/settings.h"

namespace pkgdist::cli {

// What the CLI reads and writes besides its arguments.
struct CliIo {
  std::ostream& out;
  std::ostream& err;
  EnvLookup env;
  bool out_is_terminal = false;
  bool err_is_terminal = false;
  std::function<size_t()> terminal_width;
};

// Runs pkgdistctl and returns its exit status (see command.h).
int RunCli(int argc, const char* const argv[], const CliIo& io);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_APP_H_
