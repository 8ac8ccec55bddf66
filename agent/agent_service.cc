#include "agent/agent_service.h"

#include <algorithm>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "shared/grpc_options.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

// A Transfer refused before any session: ends at once with `status`, and
// frees itself when gRPC is done with it.
class RefusedTransfer final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedTransfer(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// The job id the controller sent with the call (kJobIdMetadataKey), for
// log lines; bounded, since it goes into each of them.
std::string JobOf(const grpc::ServerContextBase& ctx) {
  constexpr size_t kMaxJobIdLength = 64;
  auto it = ctx.client_metadata().find(kJobIdMetadataKey);
  if (it == ctx.client_metadata().end()) return "";
  return std::string(it->second.data(), std::min(it->second.size(), kMaxJobIdLength));
}

}  // namespace

AgentService::AgentService(PackageStore& store, TransferOptions options, SpiffeId controller)
    : store_(store), options_(std::move(options)), controller_(std::move(controller)) {}

AgentService::~AgentService() { (void)sessions_.Wait(absl::InfiniteDuration()); }

grpc::Status AgentService::Authorize(const grpc::ServerContextBase& ctx) const {
  return AuthorizePeer(ctx, controller_.trust_domain, controller_.kind, controller_.name);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AgentService::Transfer(
    grpc::CallbackServerContext* ctx) {
  if (grpc::Status s = Authorize(*ctx); !s.ok()) return new RefusedTransfer(s);
  // Owned by the session thread, which frees it once Serve has seen OnDone.
  auto* reactor = new TransferReactor();
  absl::Status started =
      sessions_.Start("pkgdist-xfer", [this, ctx, reactor, peer = ctx->peer(), job = JobOf(*ctx)] {
        std::unique_ptr<TransferReactor> owned(reactor);
        (void)owned->Serve([&] { return RunSession(ctx, *owned, peer, job); });
      });
  if (!started.ok()) {
    // gRPC has not seen the reactor yet; the controller retries later.
    delete reactor;
    spdlog::warn("transfer from {} refused: {}", ctx->peer(), started);
    return new RefusedTransfer(ToGrpc(started));
  }
  return reactor;
}

absl::Status AgentService::RunSession(grpc::CallbackServerContext* ctx, TransferReactor& stream,
                                      const std::string& peer, const std::string& job_id) {
  // ctx lives until the reactor's OnDone, which comes after Serve finishes
  // the call, after this session (and with it its cancel callback) is gone.
  TransferSession session(store_, options_, stream, [ctx] { ctx->TryCancel(); }, peer, job_id);
  session.set_cancelled([ctx] { return ctx->IsCancelled(); });
  absl::Status s = session.Run();
  if (!s.ok()) {
    LogWith(session.log_fields(), spdlog::level::warn, "transfer from {} failed: {}", peer, s);
  }
  return s;
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
