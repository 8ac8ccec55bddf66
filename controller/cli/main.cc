// pkgdistctl: the command-line client of the controller's Admin API.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <grpc/support/log.h>

#include "controller/cli/app.h"
#include "controller/cli/job_follow.h"
#include "shared/malloc_tuning.h"

namespace {

void DiscardGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  pkgdist::TuneMallocForLargeMessages();
  // Failures reach the user as one line each; gRPC's own log lines only
  // when asked for with GRPC_VERBOSITY.
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DiscardGrpcLog);
  pkgdist::cli::CliIo io{
      .out = std::cout,
      .err = std::cerr,
      .env = pkgdist::cli::ProcessEnv(),
      .out_is_terminal = ::isatty(STDOUT_FILENO) == 1,
      .err_is_terminal = ::isatty(STDERR_FILENO) == 1,
      .terminal_width = [] { return pkgdist::cli::TerminalWidth(STDOUT_FILENO); },
  };
  return pkgdist::cli::RunCli(argc, argv, io);
}
