// The Admin gRPC service (controller.proto): validation, authorization and
// translation between the API and the state store, package store and
// engine. Every method first checks that the caller is an admin identity.
// Errors leave here as grpc::Status (the only place they are converted).
//
// The audit trail: every call of a mutating method leaves exactly one
// record (Audited), written by the store in the transaction of the change
// it made, or on its own when the call changed nothing (refused, invalid,
// failed); a refusal (PERMISSION_DENIED) of any method is recorded too.
// The audit and event methods are in admin_service_log.cc.
#ifndef PKGDIST_CONTROLLER_ADMIN_SERVICE_H_
#define PKGDIST_CONTROLLER_ADMIN_SERVICE_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
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
void TargetToProto(const TargetRow& t, pkgdist::v1::TargetStatus* out);
pkgdist::v1::Event EventToProto(const EventRow& e);
pkgdist::v1::AuditRecord AuditToProto(const AuditRow& r);
// `s` made one line without spaces and at most 256 bytes, for an audit
// record's key=value request.
std::string OneLineBounded(absl::string_view s);

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
  Status SetAgentLabels(Ctx* ctx, const v1::SetAgentLabelsRequest* req,
                        v1::AgentInfo* resp) override;
  Status ListAgents(Ctx* ctx, const v1::ListAgentsRequest* req,
                    v1::ListAgentsResponse* resp) override;
  Status GetAgent(Ctx* ctx, const v1::GetAgentRequest* req, v1::AgentDetail* resp) override;
  Status RemoveAgent(Ctx* ctx, const v1::RemoveAgentRequest* req,
                     v1::RemoveAgentResponse* resp) override;
  Status ImportPackage(Ctx* ctx, grpc::ServerReader<v1::ImportPackageRequest>* reader,
                       v1::PackageInfo* resp) override;
  Status ImportLocalPackage(Ctx* ctx, const v1::ImportLocalRequest* req,
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
  Status ListAudit(Ctx* ctx, const v1::ListAuditRequest* req,
                   v1::ListAuditResponse* resp) override;
  Status WatchEvents(Ctx* ctx, const v1::WatchEventsRequest* req,
                     grpc::ServerWriter<v1::Event>* writer) override;
  // Bandwidth policy: admin_service_sites.cc.
  Status SetSite(Ctx* ctx, const v1::SetSiteRequest* req, v1::SiteInfo* resp) override;
  Status ListSites(Ctx* ctx, const v1::ListSitesRequest* req,
                   v1::ListSitesResponse* resp) override;
  Status GetSite(Ctx* ctx, const v1::GetSiteRequest* req, v1::SiteInfo* resp) override;
  Status SetAgentRate(Ctx* ctx, const v1::SetAgentRateRequest* req, v1::AgentInfo* resp) override;
  Status SetEgress(Ctx* ctx, const v1::SetEgressRequest* req, v1::EgressInfo* resp) override;
  Status GetEgress(Ctx* ctx, const v1::GetEgressRequest* req, v1::EgressInfo* resp) override;

  // Ends every WatchEvents and WatchJob stream now (UNAVAILABLE, so that
  // clients reconnect), and any started later: call before the server's
  // Shutdown, which would otherwise wait for them until its deadline.
  void Shutdown();

 private:
  // OK for an admin identity; otherwise PERMISSION_DENIED, recorded in the
  // audit trail as a refused call of `method`.
  Status Authorize(Ctx* ctx, absl::string_view method);
  // Runs a mutating method: authorizes, runs `body` with the call's audit
  // entry (`request` may be completed by the body; pass the entry to the
  // store call that makes the change), and records the call with its
  // outcome unless the store already did. Exactly one record per call.
  Status Audited(Ctx* ctx, absl::string_view method, std::string request,
                 absl::FunctionRef<Status(AuditEntry& audit)> body);
  // Resolves "name@version" to a stored package.
  absl::StatusOr<PackageRow> ResolvePackage(const std::string& label, absl::string_view field);
  // A job's targets: `names`, every agent if `all`, and the agents
  // `selector` matches (if not empty), each once, by name.
  absl::StatusOr<std::vector<std::string>> ResolveAgents(
      const google::protobuf::RepeatedPtrField<std::string>& names, bool all,
      const std::string& selector);
  Status StartJob(JobKind kind, const std::string& package,
                  const google::protobuf::RepeatedPtrField<std::string>& agents, bool all,
                  const std::string& selector, const JobPolicy& policy, v1::JobStatus* resp,
                  AuditEntry& audit);
  // ImportPackage once authorized; completes audit.request as it reads.
  Status ReceivePackage(grpc::ServerReader<v1::ImportPackageRequest>* reader,
                        v1::PackageInfo* resp, AuditEntry& audit);
  // Either import's end: stores the staged `session` as `manifest`'s
  // package (or finds it already stored: same id, or ALREADY_EXISTS with
  // other content), with `signature` if it has one; completes audit.result.
  Status StorePackage(ImportSession& session, const v1::Manifest& manifest,
                      const v1::PackageSignature& signature, v1::PackageInfo* resp,
                      AuditEntry& audit);
  void FillAgentInfo(const AgentRow& row, v1::AgentInfo* out);
  // A site as the API shows it: `row`'s policy (null: none, the defaults),
  // its agents, and what the engine is doing there now.
  void FillSiteInfo(const std::string& name, const SiteRow* row, v1::SiteInfo* out);
  // JobToProto plus what only the running controller knows (store health).
  v1::JobStatus JobStatusOf(const JobView& job);

  const std::string trust_domain_;
  StateStore* store_;
  PackageStore* packages_;
  Engine* engine_;
  AgentPool* pool_;
  const Clock* clock_;
  const size_t max_response_bytes_;
  std::atomic<bool> stopping_{false};
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_ADMIN_SERVICE_H_
