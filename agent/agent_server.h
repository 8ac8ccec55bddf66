// A running agent: TLS credentials, package store, Agent service and the
// gRPC server that hosts it, built from an AgentConfig.
#ifndef PKGDIST_AGENT_AGENT_SERVER_H_
#define PKGDIST_AGENT_AGENT_SERVER_H_

#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/agent_service.h"
#include "agent/config.h"
#include "agent/package_store.h"

namespace pkgdist {

class AgentServer {
 public:
  // Checks the TLS files, opens the package root, binds and starts serving.
  // UNAVAILABLE if the address cannot be bound; other errors mean unusable
  // flags or files.
  static absl::StatusOr<std::unique_ptr<AgentServer>> Start(const AgentConfig& config);
  ~AgentServer();
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  int port() const { return port_; }

  // Stops accepting calls, lets running calls finish for up to `grace`,
  // then cancels them, and waits for the server to stop.
  void Shutdown(absl::Duration grace);

 private:
  AgentServer() = default;

  std::unique_ptr<PackageStore> store_;
  std::unique_ptr<SignaturePolicy> signatures_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_AGENT_SERVER_H_
