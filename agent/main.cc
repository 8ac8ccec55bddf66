// pkgdist-agent: serves the Agent API on one distribution server.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/agent_server.h"
#include "agent/config.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/malloc_tuning.h"
#include "shared/tls.h"

namespace {

int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "pkgdist-agent: %.*s\n", static_cast<int>(message.size()), message.data());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  pkgdist::TuneMallocForLargeMessages(/*arenas=*/1);
  pkgdist::DisableMutexDeadlockDetection();
  // Block the stop signals before gRPC starts threads, so that they inherit
  // the mask and only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto parsed = pkgdist::ParseAgentFlags(argc, argv);
  if (!parsed.ok()) return Fail(2, parsed.status().message());
  if (!parsed->has_value()) return 0;
  pkgdist::AgentConfig config = **parsed;
  if (config.name.empty()) {
    // The name the certificate proves is the only one the controller accepts.
    auto self = pkgdist::CheckTlsFiles(config.tls);
    if (!self.ok()) return Fail(2, self.status().message());
    if (self->kind != "agent") {
      return Fail(2, absl::StrCat("no --name given, and ", config.tls.cert, " names ",
                                  self->ToString(), ", not an agent: set --name"));
    }
    config.name = self->name;
  }
  pkgdist::InitLogging(config.log_level, config.log_format);

  auto server = pkgdist::AgentServer::Start(config);
  if (!server.ok()) {
    return Fail(absl::IsUnavailable(server.status()) ? 1 : 2, server.status().message());
  }
  if (!config.port_file.empty()) {
    absl::Status s =
        pkgdist::WriteFileAtomic(config.port_file, absl::StrCat((*server)->port(), "\n"));
    if (!s.ok()) return Fail(2, s.message());
  }
  if (!config.metrics_port_file.empty()) {
    absl::Status s = pkgdist::WriteFileAtomic(config.metrics_port_file,
                                              absl::StrCat((*server)->metrics_port(), "\n"));
    if (!s.ok()) return Fail(2, s.message());
  }
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  spdlog::info("pkgdist-agent {} listening on {}:{}", config.name, host, (*server)->port());
  // systemd (Type=notify) counts the service as started from here; a no-op
  // without $NOTIFY_SOCKET.
  sd_notify(0, "READY=1");

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  spdlog::info("signal {} received, shutting down", signal_number);
  sd_notify(0, "STOPPING=1");
  (*server)->Shutdown(absl::Seconds(5));
  spdlog::info("pkgdist-agent {} stopped", config.name);
  return 0;
}
