#include "controller/cli/admin_client.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "shared/grpc_options.h"
#include "shared/status_macros.h"
#include "shared/tls.h"

namespace pkgdist::cli {

class RejectLog {
 public:
  void Record(const std::string& reason) {
    absl::MutexLock l(&mu_);
    reason_ = reason;
  }

  // Adds the recorded rejection reason, if any, to a failed call's status
  // that does not already carry it (gRPC may report a refused server
  // certificate as a bare UNAVAILABLE or DEADLINE_EXCEEDED).
  absl::Status Annotate(absl::Status s) const {
    if (s.ok()) return s;
    absl::MutexLock l(&mu_);
    if (reason_.empty() || absl::StrContains(s.message(), reason_)) return s;
    return absl::Status(s.code(), absl::StrCat(s.message(), " (controller certificate refused: ",
                                               reason_, ")"));
  }

 private:
  mutable absl::Mutex mu_;
  std::string reason_ ABSL_GUARDED_BY(mu_);
};

namespace {

absl::Status Annotate(const std::shared_ptr<RejectLog>& rejects, const grpc::Status& s) {
  absl::Status status = FromGrpc(s);
  return rejects ? rejects->Annotate(std::move(status)) : status;
}

}  // namespace

ImportUpload::ImportUpload(
    std::unique_ptr<grpc::ClientContext> ctx, std::shared_ptr<RejectLog> rejects,
    std::unique_ptr<v1::PackageInfo> response,
    std::unique_ptr<grpc::ClientWriterInterface<v1::ImportPackageRequest>> writer)
    : ctx_(std::move(ctx)),
      rejects_(std::move(rejects)),
      response_(std::move(response)),
      writer_(std::move(writer)) {}

ImportUpload::~ImportUpload() {
  if (!done_) Cancel();
}

bool ImportUpload::Write(const v1::ImportPackageRequest& req) { return writer_->Write(req); }

absl::StatusOr<v1::PackageInfo> ImportUpload::Finish() {
  done_ = true;
  writer_->WritesDone();
  grpc::Status s = writer_->Finish();
  if (!s.ok()) return Annotate(rejects_, s);
  return std::move(*response_);
}

void ImportUpload::Cancel() {
  done_ = true;
  ctx_->TryCancel();
  // Finish reaps the call; its status is CANCELLED, which we asked for.
  writer_->Finish().IgnoreError();
}

AdminClient::AdminClient(std::unique_ptr<v1::Admin::StubInterface> stub,
                         std::shared_ptr<RejectLog> rejects, absl::Duration unary_deadline)
    : stub_(std::move(stub)), rejects_(std::move(rejects)), unary_deadline_(unary_deadline) {}

AdminClient::~AdminClient() = default;

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(const Settings& settings) {
  ASSIGN_OR_RETURN(SpiffeId self, CheckTlsFiles(settings.tls));
  auto rejects = std::make_shared<RejectLog>();
  auto creds = MakeChannelCredentials(
      MakeCertificateProvider(settings.tls), settings.tls,
      SpiffeId{self.trust_domain, "controller", ""},
      [rejects](const std::string& reason) { rejects->Record(reason); });
  grpc::ChannelArguments args = AdminChannelArgs();
  // A follower (`events --follow`, `--wait`) waiting for a restarted
  // controller notices it within seconds, not gRPC's default two minutes.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  auto channel = grpc::CreateCustomChannel(settings.controller, creds, args);
  return std::make_unique<AdminClient>(v1::Admin::NewStub(channel), std::move(rejects));
}

template <typename Req, typename Resp>
absl::StatusOr<Resp> AdminClient::Unary(UnaryMethod<Req, Resp> method, const Req& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + unary_deadline_));
  Resp resp;
  grpc::Status s = (stub_.get()->*method)(&ctx, req, &resp);
  if (!s.ok()) return Annotate(rejects_, s);
  return resp;
}

template <typename Req, typename Resp>
absl::StatusOr<Resp> AdminClient::AllPages(UnaryMethod<Req, Resp> method, Req req) {
  Resp all;
  for (;;) {
    absl::StatusOr<Resp> page = Unary(method, req);
    if (!page.ok()) return page.status();
    std::string next = page->next_page_token();
    page->clear_next_page_token();
    all.MergeFrom(*page);
    if (next.empty() || next == req.page_token()) return all;
    req.set_page_token(std::move(next));
  }
}

absl::StatusOr<v1::AgentInfo> AdminClient::AddAgent(const v1::AddAgentRequest& req) {
  return Unary(&v1::Admin::StubInterface::AddAgent, req);
}

absl::StatusOr<v1::AgentInfo> AdminClient::SetAgentLabels(const v1::SetAgentLabelsRequest& req) {
  return Unary(&v1::Admin::StubInterface::SetAgentLabels, req);
}

absl::StatusOr<v1::ListAgentsResponse> AdminClient::ListAgents(const std::string& name_prefix) {
  v1::ListAgentsRequest req;
  req.set_name_prefix(name_prefix);
  return AllPages(&v1::Admin::StubInterface::ListAgents, req);
}

absl::StatusOr<v1::AgentDetail> AdminClient::GetAgent(const std::string& name) {
  v1::GetAgentRequest req;
  req.set_name(name);
  return Unary(&v1::Admin::StubInterface::GetAgent, req);
}

absl::StatusOr<v1::RemoveAgentResponse> AdminClient::RemoveAgent(const std::string& name) {
  v1::RemoveAgentRequest req;
  req.set_name(name);
  return Unary(&v1::Admin::StubInterface::RemoveAgent, req);
}

absl::StatusOr<v1::AgentInfo> AdminClient::SetAgentRate(const std::string& name,
                                                         const std::string& rate) {
  v1::SetAgentRateRequest req;
  req.set_name(name);
  req.set_rate(rate);
  return Unary(&v1::Admin::StubInterface::SetAgentRate, req);
}

absl::StatusOr<v1::SiteInfo> AdminClient::SetSite(const v1::SetSiteRequest& req) {
  return Unary(&v1::Admin::StubInterface::SetSite, req);
}

absl::StatusOr<v1::ListSitesResponse> AdminClient::ListSites() {
  return Unary(&v1::Admin::StubInterface::ListSites, v1::ListSitesRequest());
}

absl::StatusOr<v1::SiteInfo> AdminClient::GetSite(const std::string& name) {
  v1::GetSiteRequest req;
  req.set_name(name);
  return Unary(&v1::Admin::StubInterface::GetSite, req);
}

absl::StatusOr<v1::EgressInfo> AdminClient::SetEgress(const std::string& rate) {
  v1::SetEgressRequest req;
  req.set_rate(rate);
  return Unary(&v1::Admin::StubInterface::SetEgress, req);
}

absl::StatusOr<v1::EgressInfo> AdminClient::GetEgress() {
  return Unary(&v1::Admin::StubInterface::GetEgress, v1::GetEgressRequest());
}

absl::StatusOr<v1::ListPackagesResponse> AdminClient::ListPackages() {
  return AllPages(&v1::Admin::StubInterface::ListPackages, v1::ListPackagesRequest());
}

absl::StatusOr<v1::PackageInfo> AdminClient::GetPackage(const std::string& package) {
  v1::GetPackageRequest req;
  req.set_package(package);
  return Unary(&v1::Admin::StubInterface::GetPackage, req);
}

absl::StatusOr<v1::PackageInfo> AdminClient::SignPackage(const std::string& package,
                                                         const v1::PackageSignature& signature) {
  v1::SignPackageRequest req;
  req.set_package(package);
  *req.mutable_signature() = signature;
  return Unary(&v1::Admin::StubInterface::SignPackage, req);
}

absl::Status AdminClient::DeletePackage(const std::string& package, bool force) {
  v1::DeletePackageRequest req;
  req.set_package(package);
  req.set_force(force);
  return Unary(&v1::Admin::StubInterface::DeletePackage, req).status();
}

absl::StatusOr<v1::JobStatus> AdminClient::Distribute(const v1::DistributeRequest& req) {
  return Unary(&v1::Admin::StubInterface::Distribute, req);
}

absl::StatusOr<v1::JobStatus> AdminClient::RemoveFromAgents(
    const v1::RemoveFromAgentsRequest& req) {
  return Unary(&v1::Admin::StubInterface::RemoveFromAgents, req);
}

absl::StatusOr<v1::ListJobsResponse> AdminClient::ListJobs(const v1::ListJobsRequest& req) {
  return AllPages(&v1::Admin::StubInterface::ListJobs, req);
}

absl::StatusOr<v1::JobStatus> AdminClient::GetJob(const std::string& id) {
  v1::GetJobRequest req;
  req.set_id(id);
  return Unary(&v1::Admin::StubInterface::GetJob, req);
}

absl::StatusOr<v1::JobStatus> AdminClient::CancelJob(const std::string& id,
                                                     const std::string& agent) {
  v1::CancelJobRequest req;
  req.set_id(id);
  req.set_agent(agent);
  return Unary(&v1::Admin::StubInterface::CancelJob, req);
}

absl::StatusOr<v1::JobStatus> AdminClient::RetryJob(const std::string& id,
                                                    const std::string& agent) {
  v1::RetryJobRequest req;
  req.set_id(id);
  req.set_agent(agent);
  return Unary(&v1::Admin::StubInterface::RetryJob, req);
}

absl::Status AdminClient::DeleteJob(const std::string& id) {
  v1::DeleteJobRequest req;
  req.set_id(id);
  return Unary(&v1::Admin::StubInterface::DeleteJob, req).status();
}

absl::Status AdminClient::WatchJob(const std::string& id, absl::Time deadline,
                                   bool wait_for_ready,
                                   const std::function<void(const v1::JobStatus&)>& on_update) {
  grpc::ClientContext ctx;
  if (deadline != absl::InfiniteFuture()) ctx.set_deadline(absl::ToChronoTime(deadline));
  ctx.set_wait_for_ready(wait_for_ready);
  v1::GetJobRequest req;
  req.set_id(id);
  auto reader = stub_->WatchJob(&ctx, req);
  v1::JobStatus status;
  while (reader->Read(&status)) on_update(status);
  return Annotate(rejects_, reader->Finish());
}

absl::StatusOr<v1::ListAuditResponse> AdminClient::ListAudit(const v1::ListAuditRequest& req) {
  return AllPages(&v1::Admin::StubInterface::ListAudit, req);
}

absl::Status AdminClient::WatchEvents(const v1::WatchEventsRequest& req, bool wait_for_ready,
                                      const std::function<bool(const v1::Event&)>& on_event) {
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(wait_for_ready);
  auto reader = stub_->WatchEvents(&ctx, req);
  v1::Event event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      ctx.TryCancel();
      while (reader->Read(&event)) {
      }  // what was already in flight
      break;
    }
  }
  grpc::Status s = reader->Finish();  // reaps the call (CANCELLED if we stopped it)
  if (stopped) return absl::OkStatus();
  return Annotate(rejects_, s);
}

std::unique_ptr<ImportUpload> AdminClient::StartImport() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  auto response = std::make_unique<v1::PackageInfo>();
  auto writer = stub_->ImportPackage(ctx.get(), response.get());
  return std::make_unique<ImportUpload>(std::move(ctx), rejects_, std::move(response),
                                        std::move(writer));
}

absl::StatusOr<v1::PackageInfo> AdminClient::ImportLocal(const v1::ImportLocalRequest& req) {
  grpc::ClientContext ctx;
  v1::PackageInfo resp;
  grpc::Status s = stub_->ImportLocalPackage(&ctx, req, &resp);
  if (!s.ok()) return Annotate(rejects_, s);
  return resp;
}

}  // namespace pkgdist::cli
