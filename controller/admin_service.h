// The Admin gRPC service (controller.proto): validation, authorization and
// translation between the API and the state store, package store and
// engine. Every method first checks that the caller is an admin identity.
// Errors leave here as grpc::Status (the only place they are converted).
#ifndef PKGDIST_CONTROLLER_ADMIN_SERVICE_H_
#define PKGDIST_CONTROLLER_ADMIN_SERVICE_H_

#include <string>
#include <vector>

#include "controller/agent_pool.h"
#include "controller/engine.h"
#include "controller/package_store.h"
#include "controller/state_store.h"
#include "pkgdist/v1/controller.grpc.pb.h"
#include "shared/clock.h"
#include "shared/grpc_options.h"

namespace pkgdist {

// Converts a stored job to its API form (state derived, times RFC 3339).
pkgdist::v1::JobStatus JobToProto(const JobView& job);

class AdminService final : public pkgdist::v1::Admin::Service {
 public:
  // `max_message_bytes`: the server's send limit; no List response exceeds
  // it (a page ends early instead).
  AdminService(std::string trust_domain, StateStore* store, PackageStore* packages,
               Engine* engine, AgentPool* pool, const Clock* clock,
               size_t max_message_bytes = kMaxMessageBytes)
      : trust_domain_(std::move(trust_domain)),
        store_(store),
        packages_(packages),
        engine_(engine),
        pool_(pool),
        clock_(clock),
        max_response_bytes_(max_message_bytes > (64 << 10) ? max_message_bytes - (64 << 10)
                                                           : max_message_bytes / 2) {}

  using Ctx = grpc::ServerContext;
  using Status = grpc::Status;

  Status AddAgent(Ctx* ctx, const v1::AddAgentRequest* req, v1::AgentInfo* resp) override;
  Status ListAgents(Ctx* ctx, const v1::ListAgentsRequest* req,
                    v1::ListAgentsResponse* resp) override;
  Status GetAgent(Ctx* ctx, const v1::GetAgentRequest* req, v1::AgentDetail* resp) override;
  Status RemoveAgent(Ctx* ctx, const v1::RemoveAgentRequest* req,
                     v1::RemoveAgentResponse* resp) override;
  Status ImportPackage(Ctx* ctx, grpc::ServerReader<v1::ImportPackageRequest>* reader,
                       v1::PackageInfo* resp) override;
  Status ListPackages(Ctx* ctx, const v1::ListPackagesRequest* req,
                      v1::ListPackagesResponse* resp) override;
  Status GetPackage(Ctx* ctx, const v1::GetPackageRequest* req, v1::PackageInfo* resp) override;
  Status SignPackage(Ctx* ctx, const v1::SignPackageRequest* req, v1::PackageInfo* resp) override;
  Status DeletePackage(Ctx* ctx, const v1::DeletePackageRequest* req,
                       v1::DeletePackageResponse* resp) override;
  Status Distribute(Ctx* ctx, const v1::DistributeRequest* req, v1::JobStatus* resp) override;
  Status RemoveFromAgents(Ctx* ctx, const v1::RemoveFromAgentsRequest* req,
                          v1::JobStatus* resp) override;
  Status ListJobs(Ctx* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) override;
  Status GetJob(Ctx* ctx, const v1::GetJobRequest* req, v1::JobStatus* resp) override;
  Status WatchJob(Ctx* ctx, const v1::GetJobRequest* req,
                  grpc::ServerWriter<v1::JobStatus>* writer) override;
  Status CancelJob(Ctx* ctx, const v1::CancelJobRequest* req, v1::JobStatus* resp) override;
  Status RetryJob(Ctx* ctx, const v1::RetryJobRequest* req, v1::JobStatus* resp) override;
  Status DeleteJob(Ctx* ctx, const v1::DeleteJobRequest* req,
                   v1::DeleteJobResponse* resp) override;

 private:
  Status Authorize(Ctx* ctx) const;
  // Resolves "name@version" to a stored package.
  absl::StatusOr<PackageRow> ResolvePackage(const std::string& label, absl::string_view field);
  absl::StatusOr<std::vector<std::string>> ResolveAgents(
      const google::protobuf::RepeatedPtrField<std::string>& names, bool all);
  Status StartJob(JobKind kind, const std::string& package,
                  const google::protobuf::RepeatedPtrField<std::string>& agents, bool all,
                  const JobPolicy& policy, v1::JobStatus* resp);
  void FillAgentInfo(const AgentRow& row, v1::AgentInfo* out);
  // JobToProto plus what only the running controller knows (store health).
  v1::JobStatus JobStatusOf(const JobView& job);

  const std::string trust_domain_;
  StateStore* store_;
  PackageStore* packages_;
  Engine* engine_;
  AgentPool* pool_;
  const Clock* clock_;
  const size_t max_response_bytes_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_ADMIN_SERVICE_H_
