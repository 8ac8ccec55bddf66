// The gRPC pkgdist.v1.Agent service: the edge where calls are authorized
// and absl::Status becomes grpc::Status. The protocol logic lives in
// TransferSession and PackageStore.
//
// Every RPC first checks that the peer's verified SPIFFE identity is the
// controller's (PERMISSION_DENIED otherwise), except FetchChunks, which
// serves the agents of the controller's trust domain that an Offer named
// (agent/peer_serving.h). Thread-safe: the synchronous
// gRPC server calls it from many threads.
#ifndef PKGDIST_AGENT_AGENT_SERVICE_H_
#define PKGDIST_AGENT_AGENT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "agent/package_store.h"
#include "agent/transfer_session.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/tls.h"

namespace pkgdist {

class AgentService final : public pkgdist::v1::Agent::Service {
 public:
  // `store` must outlive the service. Only `controller` may call it.
  AgentService(PackageStore& store, TransferOptions options, SpiffeId controller);

  grpc::Status Transfer(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pkgdist::v1::TransferResponse, pkgdist::v1::TransferRequest>*
          stream) override;
  grpc::Status Inventory(grpc::ServerContext* ctx, const pkgdist::v1::InventoryRequest* request,
                         pkgdist::v1::InventoryResponse* response) override;
  grpc::Status Remove(grpc::ServerContext* ctx, const pkgdist::v1::RemoveRequest* request,
                      pkgdist::v1::RemoveResponse* response) override;
  grpc::Status FetchChunks(grpc::ServerContext* ctx,
                           const pkgdist::v1::FetchChunksRequest* request,
                           grpc::ServerWriter<pkgdist::v1::FetchChunksResponse>* writer) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext& ctx) const;

  PackageStore& store_;
  const TransferOptions options_;
  const SpiffeId controller_;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_AGENT_SERVICE_H_
