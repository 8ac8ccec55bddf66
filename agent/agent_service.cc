#include "agent/agent_service.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;

class GrpcTransferStream final : public TransferStream {
 public:
  explicit GrpcTransferStream(grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream)
      : stream_(stream) {}
  bool Read(TransferRequest* request) override { return stream_->Read(request); }
  bool Write(const TransferResponse& response) override { return stream_->Write(response); }

 private:
  grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream_;
};

// The job id the controller sent with the call (kJobIdMetadataKey), for
// log lines; bounded, since it goes into each of them.
std::string JobOf(const grpc::ServerContext& ctx) {
  constexpr size_t kMaxJobIdLength = 64;
  auto it = ctx.client_metadata().find(kJobIdMetadataKey);
  if (it == ctx.client_metadata().end()) return "";
  return std::string(it->second.data(), std::min(it->second.size(), kMaxJobIdLength));
}

}  // namespace

AgentService::AgentService(PackageStore& store, TransferOptions options, SpiffeId controller)
    : store_(store), options_(std::move(options)), controller_(std::move(controller)) {}

grpc::Status AgentService::Authorize(const grpc::ServerContext& ctx) const {
  return AuthorizePeer(ctx, controller_.trust_domain, controller_.kind, controller_.name);
}

grpc::Status AgentService::Transfer(
    grpc::ServerContext* ctx, grpc::ServerReaderWriter<TransferResponse, TransferRequest>* stream) {
  if (grpc::Status s = Authorize(*ctx); !s.ok()) return s;
  GrpcTransferStream adapter(stream);
  TransferSession session(store_, options_, adapter, [ctx] { ctx->TryCancel(); }, ctx->peer(),
                          JobOf(*ctx));
  session.set_cancelled([ctx] { return ctx->IsCancelled(); });
  absl::Status s = session.Run();
  if (!s.ok()) {
    LogWith(session.log_fields(), spdlog::level::warn, "transfer from {} failed: {}", ctx->peer(),
            s);
  }
  return ToGrpc(s);
}

grpc::Status AgentService::Inventory(grpc::ServerContext* ctx,
                                     const pkgdist::v1::InventoryRequest* /*request*/,
                                     pkgdist::v1::InventoryResponse* response) {
  if (grpc::Status s = Authorize(*ctx); !s.ok()) return s;
  auto inventory = store_.Inventory();
  if (!inventory.ok()) {
    spdlog::warn("inventory failed: {}", inventory.status());
    return ToGrpc(inventory.status());
  }
  *response = std::move(inventory).value();
  return grpc::Status::OK;
}

grpc::Status AgentService::Remove(grpc::ServerContext* ctx,
                                  const pkgdist::v1::RemoveRequest* request,
                                  pkgdist::v1::RemoveResponse* response) {
  if (grpc::Status s = Authorize(*ctx); !s.ok()) return s;
  for (const auto& [value, what] : {std::pair{&request->name(), "package name"},
                                    std::pair{&request->version(), "package version"}}) {
    if (absl::Status s = ValidateName(*value, what); !s.ok()) return ToGrpc(s);
  }
  ScopedLogFields fields({JobOf(*ctx), options_.agent_name,
                          absl::StrCat(request->name(), "@", request->version())});
  auto removed = store_.Remove(request->name(), request->version(), options_.lock_wait);
  if (!removed.ok()) {
    spdlog::warn("remove {}@{} failed: {}", request->name(), request->version(), removed.status());
    return ToGrpc(removed.status());
  }
  if (options_.serving != nullptr) options_.serving->Forget(request->name(), request->version());
  response->set_removed(*removed);
  return grpc::Status::OK;
}

grpc::Status AgentService::FetchChunks(
    grpc::ServerContext* ctx, const pkgdist::v1::FetchChunksRequest* request,
    grpc::ServerWriter<pkgdist::v1::FetchChunksResponse>* writer) {
  if (grpc::Status s = AuthorizePeer(*ctx, controller_.trust_domain, "agent"); !s.ok()) return s;
  auto peer = PeerIdentity(*ctx);
  if (!peer.ok()) return ToGrpc(peer.status());
  if (options_.serving == nullptr) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "this agent serves no peers");
  }
  absl::Status s = options_.serving->Serve(
      peer->name, *request,
      [this, writer](const pkgdist::v1::FetchChunksResponse& r) {
        if (!writer->Write(r)) return false;
        if (options_.metrics != nullptr) options_.metrics->PeerServed(r.chunk().data().size());
        return true;
      },
      [ctx] { return ctx->IsCancelled(); });
  if (!s.ok() && !absl::IsCancelled(s)) {
    spdlog::warn("serving chunks of {} to agent {}: {}", ToHex(request->package_id()), peer->name,
                 s);
  }
  return ToGrpc(s);
}

}  // namespace pkgdist
