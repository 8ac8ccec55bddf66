// The CLI's door to the controller: wraps the generated Admin stub so that
// every call returns absl::Status/StatusOr, unary calls carry a deadline,
// and failures caused by the controller's certificate say so.
//
// Thread-compatible: one command uses one client from one thread.
#ifndef PKGDIST_CONTROLLER_CLI_ADMIN_CLIENT_H_
#define PKGDIST_CONTROLLER_CLI_ADMIN_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/cli/settings.h"
#include "pkgdist/v1/controller.grpc.pb.h"

namespace pkgdist::cli {

// Why the controller's certificate was refused, if it was. Thread-safe
// (written from gRPC's handshake threads).
class RejectLog;

// A client-streaming package upload. Dropping it without Finish cancels
// the call, so the controller keeps nothing.
class ImportUpload {
 public:
  ImportUpload(std::unique_ptr<grpc::ClientContext> ctx, std::shared_ptr<RejectLog> rejects,
               std::unique_ptr<v1::PackageInfo> response,
               std::unique_ptr<grpc::ClientWriterInterface<v1::ImportPackageRequest>> writer);
  ~ImportUpload();
  ImportUpload(const ImportUpload&) = delete;
  ImportUpload& operator=(const ImportUpload&) = delete;

  // False once the stream is broken; Finish then says why.
  bool Write(const v1::ImportPackageRequest& req);
  // Half-closes the stream and returns the controller's answer.
  absl::StatusOr<v1::PackageInfo> Finish();
  // Abandons the upload; Finish must not be called afterwards.
  void Cancel();

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::shared_ptr<RejectLog> rejects_;
  std::unique_ptr<v1::PackageInfo> response_;
  std::unique_ptr<grpc::ClientWriterInterface<v1::ImportPackageRequest>> writer_;
  bool done_ = false;
};

class AdminClient {
 public:
  static constexpr absl::Duration kDefaultUnaryDeadline = absl::Seconds(30);

  // `rejects` may be null (no identity check to report on).
  AdminClient(std::unique_ptr<v1::Admin::StubInterface> stub,
              std::shared_ptr<RejectLog> rejects = nullptr,
              absl::Duration unary_deadline = kDefaultUnaryDeadline);
  ~AdminClient();
  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;

  // A client over mutual TLS as configured in `settings`: checks the TLS
  // files, and accepts only a server whose identity is the controller of
  // our own certificate's trust domain. Does not connect yet.
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(const Settings& settings);

  absl::StatusOr<v1::AgentInfo> AddAgent(const v1::AddAgentRequest& req);
  absl::StatusOr<v1::AgentInfo> SetAgentLabels(const v1::SetAgentLabelsRequest& req);
  // Every page; only names starting with `name_prefix`.
  absl::StatusOr<v1::ListAgentsResponse> ListAgents(const std::string& name_prefix = "");
  absl::StatusOr<v1::AgentDetail> GetAgent(const std::string& name);
  absl::StatusOr<v1::RemoveAgentResponse> RemoveAgent(const std::string& name);
  absl::StatusOr<v1::AgentInfo> SetAgentRate(const std::string& name, const std::string& rate);
  absl::StatusOr<v1::SiteInfo> SetSite(const v1::SetSiteRequest& req);
  absl::StatusOr<v1::ListSitesResponse> ListSites();
  absl::StatusOr<v1::SiteInfo> GetSite(const std::string& name);
  absl::StatusOr<v1::EgressInfo> SetEgress(const std::string& rate);
  absl::StatusOr<v1::EgressInfo> GetEgress();
  absl::StatusOr<v1::ListPackagesResponse> ListPackages();
  absl::StatusOr<v1::PackageInfo> GetPackage(const std::string& package);
  absl::Status DeletePackage(const std::string& package, bool force);
  absl::StatusOr<v1::PackageInfo> SignPackage(const std::string& package,
                                              const v1::PackageSignature& signature);
  absl::StatusOr<v1::JobStatus> Distribute(const v1::DistributeRequest& req);
  absl::StatusOr<v1::JobStatus> RemoveFromAgents(const v1::RemoveFromAgentsRequest& req);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& id);
  absl::StatusOr<v1::JobStatus> CancelJob(const std::string& id, const std::string& agent);
  absl::StatusOr<v1::JobStatus> RetryJob(const std::string& id, const std::string& agent);
  absl::Status DeleteJob(const std::string& id);
  // Every page of the audit trail that matches `req`'s filters.
  absl::StatusOr<v1::ListAuditResponse> ListAudit(const v1::ListAuditRequest& req);

  // Follows WatchEvents, handing every event to `on_event` until it returns
  // false (the call is then cancelled and OK returned) or the stream ends
  // or fails. With `wait_for_ready` the call waits for an unreachable
  // controller instead of failing.
  absl::Status WatchEvents(const v1::WatchEventsRequest& req, bool wait_for_ready,
                           const std::function<bool(const v1::Event&)>& on_event);

  // Follows WatchJob, handing every status to `on_update`, until the
  // stream ends (OK after a final state) or fails. `deadline` bounds the
  // whole call (absl::InfiniteFuture() for none); with `wait_for_ready`
  // the call waits for an unreachable controller instead of failing.
  absl::Status WatchJob(const std::string& id, absl::Time deadline, bool wait_for_ready,
                        const std::function<void(const v1::JobStatus&)>& on_update);

  // Starts an upload (no deadline: a large package takes what it takes).
  std::unique_ptr<ImportUpload> StartImport();
  // ImportLocalPackage: the controller reads `req.path()` on its own host
  // (no deadline either: it hashes the whole tree before answering).
  absl::StatusOr<v1::PackageInfo> ImportLocal(const v1::ImportLocalRequest& req);

 private:
  template <typename Req, typename Resp>
  using UnaryMethod = grpc::Status (v1::Admin::StubInterface::*)(grpc::ClientContext*,
                                                                  const Req&, Resp*);
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> Unary(UnaryMethod<Req, Resp> method, const Req& req);
  // Every page of a List call, merged into one response (its repeated
  // field appended page by page).
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> AllPages(UnaryMethod<Req, Resp> method, Req req);

  std::unique_ptr<v1::Admin::StubInterface> stub_;
  std::shared_ptr<RejectLog> rejects_;
  absl::Duration unary_deadline_;
};

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_ADMIN_CLIENT_H_
