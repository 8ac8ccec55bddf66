// pkgdist-multi-agent: hosts K agents in one process for the scale test
// (bench/scale.py). Each agent is the real AgentServer (TLS credentials,
// package store, Agent service, its own gRPC server), with its own name,
// root, certificate and port, exactly as pkgdist-agent builds one.
//
//   pkgdist-multi-agent --certs DIR --roots DIR --ports-file FILE NAME...
//
// Agent NAME presents DIR/NAME.pem and DIR/NAME.key, keeps its packages in
// ROOTS/NAME and listens on 127.0.0.1:0; once every agent listens,
// FILE is written atomically with one "NAME PORT" line per agent. Runs until
// SIGTERM or SIGINT.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/agent_server.h"
#include "agent/config.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/malloc_tuning.h"

namespace {

int Fail(absl::string_view message) {
  std::fprintf(stderr, "pkgdist-multi-agent: %.*s\n", static_cast<int>(message.size()),
               message.data());
  return 2;
}

struct Flags {
  std::string certs, roots, ports_file, log_level = "warn";
  std::vector<std::string> names;
};

bool Parse(int argc, char** argv, Flags& f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string* value = a == "--certs"        ? &f.certs
                         : a == "--roots"      ? &f.roots
                         : a == "--ports-file" ? &f.ports_file
                         : a == "--log-level"  ? &f.log_level
                                               : nullptr;
    if (value == nullptr) {
      f.names.push_back(a);
    } else if (i + 1 < argc) {
      *value = argv[++i];
    } else {
      return false;
    }
  }
  return !f.certs.empty() && !f.roots.empty() && !f.ports_file.empty() && !f.names.empty();
}

}  // namespace

int main(int argc, char** argv) {
  pkgdist::TuneMallocForLargeMessages();
  pkgdist::DisableMutexDeadlockDetection();
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Flags f;
  if (!Parse(argc, argv, f)) {
    return Fail("usage: pkgdist-multi-agent --certs DIR --roots DIR --ports-file FILE "
                "[--log-level L] NAME...");
  }
  pkgdist::InitLogging(f.log_level);

  std::vector<std::unique_ptr<pkgdist::AgentServer>> servers;
  std::string ports;
  for (const std::string& name : f.names) {
    pkgdist::AgentConfig config;
    config.name = name;
    config.listen = "127.0.0.1:0";
    config.root = absl::StrCat(f.roots, "/", name);
    config.tls.ca = absl::StrCat(f.certs, "/ca.pem");
    config.tls.cert = absl::StrCat(f.certs, "/", name, ".pem");
    config.tls.key = absl::StrCat(f.certs, "/", name, ".key");
    config.tls.refresh_seconds = 3600;
    config.reserve_bytes = 0;
    auto server = pkgdist::AgentServer::Start(config);
    if (!server.ok()) return Fail(absl::StrCat(name, ": ", server.status().message()));
    absl::StrAppend(&ports, name, " ", (*server)->port(), "\n");
    servers.push_back(*std::move(server));
  }
  absl::Status s = pkgdist::WriteFileAtomic(f.ports_file, ports);
  if (!s.ok()) return Fail(s.message());

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  for (auto& server : servers) server->Shutdown(absl::Seconds(2));
  return 0;
}
