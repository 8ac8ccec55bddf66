// The gRPC pkgdist.v1.Agent service: the edge where calls are authorized
// and absl::Status becomes grpc::Status. The protocol logic lives in
// TransferSession and PackageStore.
//
// Every RPC first checks that the peer's verified SPIFFE identity is the
// controller's (PERMISSION_DENIED otherwise), except FetchChunks, which
// serves the agents of the controller's trust domain that an Offer named
// (agent/peer_serving.h). Thread-safe: the gRPC server calls it from many
// threads.
//
// Transfer is served through the callback API with raw ByteBuffers, so that
// chunks are written from the slices they arrived in (agent/transfer_reactor.h);
// each call's TransferSession runs on a thread of its own (SessionThreads).
// The other methods are synchronous.
#ifndef PKGDIST_AGENT_AGENT_SERVICE_H_
#define PKGDIST_AGENT_AGENT_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "agent/package_store.h"
#include "agent/session_threads.h"
#include "agent/transfer_reactor.h"
#include "agent/transfer_session.h"
#include "pkgdist/v1/agent.grpc.pb.h"
#include "shared/tls.h"

namespace pkgdist {

class AgentService final
    : public pkgdist::v1::Agent::WithRawCallbackMethod_Transfer<pkgdist::v1::Agent::Service> {
 public:
  // `store` must outlive the service. Only `controller` may call it.
  AgentService(PackageStore& store, TransferOptions options, SpiffeId controller);
  // Waits for every Transfer's session thread: destroy the service only
  // after the server serving it has shut down (which cancels their calls).
  ~AgentService() override;

  // Waits up to `timeout` for the session threads of every Transfer started
  // so far to end; false if some still run.
  bool WaitForTransfers(absl::Duration timeout) { return sessions_.Wait(timeout); }
  // Transfers whose session thread still runs.
  size_t running_transfers() { return sessions_.running(); }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Transfer(
      grpc::CallbackServerContext* ctx) override;
  grpc::Status Inventory(grpc::ServerContext* ctx, const pkgdist::v1::InventoryRequest* request,
                         pkgdist::v1::InventoryResponse* response) override;
  grpc::Status Remove(grpc::ServerContext* ctx, const pkgdist::v1::RemoveRequest* request,
                      pkgdist::v1::RemoveResponse* response) override;
  grpc::Status FetchChunks(grpc::ServerContext* ctx,
                           const pkgdist::v1::FetchChunksRequest* request,
                           grpc::ServerWriter<pkgdist::v1::FetchChunksResponse>* writer) override;

 private:
  grpc::Status Authorize(const grpc::ServerContextBase& ctx) const;
  // One Transfer's session, on its own thread, with the call's stream.
  absl::Status RunSession(grpc::CallbackServerContext* ctx, TransferReactor& stream,
                          const std::string& peer, const std::string& job_id);

  PackageStore& store_;
  const TransferOptions options_;
  const SpiffeId controller_;
  // One per running Transfer; joined by WaitForTransfers and the destructor.
  SessionThreads sessions_;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_AGENT_SERVICE_H_
