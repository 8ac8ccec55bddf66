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
#include "agent/metrics.h"
#include "agent/package_store.h"
#include "shared/metrics.h"

namespace pkgdist {

class AgentServer {
 public:
  // Checks the TLS files, opens the package root, starts serving metrics
  // if --metrics-listen says so, binds and starts serving. UNAVAILABLE if
  // the address cannot be bound; other errors (a metrics address that
  // cannot be bound included) mean unusable flags or files.
  static absl::StatusOr<std::unique_ptr<AgentServer>> Start(const AgentConfig& config);
  ~AgentServer();
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  int port() const { return port_; }
  // The port metrics are served on; 0 without --metrics-listen.
  int metrics_port() const { return metrics_server_ != nullptr ? metrics_server_->port() : 0; }

  // Stops accepting calls, lets running calls finish for up to `grace`,
  // then cancels them, and waits for the server and every Transfer's
  // session thread to stop.
  void Shutdown(absl::Duration grace);

 private:
  AgentServer() = default;
  absl::Status StartMetrics(const AgentConfig& config);

  // First: transfers count into it until the server below has stopped.
  std::unique_ptr<AgentMetrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<PackageStore> store_;
  std::unique_ptr<SignaturePolicy> signatures_;
  // Relays (docs/sites.md): before service_, whose sessions use them.
  std::unique_ptr<PeerServing> serving_;
  std::unique_ptr<PeerFetcher> peers_;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool stopped_ = false;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_AGENT_SERVER_H_
