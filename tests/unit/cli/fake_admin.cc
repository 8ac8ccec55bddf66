#include "tests/unit/cli/fake_admin.h"

#include <string>

#include "shared/grpc_options.h"

namespace pkgdist::cli::testing {

grpc::Status FakeAdmin::ImportPackage(grpc::ServerContext*,
                                      grpc::ServerReader<pkgdist::v1::ImportPackageRequest>* reader,
                                      pkgdist::v1::PackageInfo* resp) {
  Upload upload;
  pkgdist::v1::ImportPackageRequest req;
  while (reader->Read(&req)) {
    upload.ended = upload.ended || req.has_end();
    upload.requests.push_back(req);
  }
  uint32_t files = 0;
  for (const auto& r : upload.requests) {
    if (r.has_header()) {
      resp->set_name(r.header().name());
      resp->set_version(r.header().version());
    }
    if (r.has_entry() && r.entry().type() == pkgdist::v1::ENTRY_TYPE_FILE) ++files;
    if (r.has_data()) resp->set_size(resp->size() + r.data().data().size());
  }
  resp->set_files(files);
  resp->set_id("feed");
  const bool ended = upload.ended;
  {
    absl::MutexLock l(&mu_);
    uploads_.push_back(std::move(upload));
  }
  if (!ended) return grpc::Status(grpc::StatusCode::CANCELLED, "upload abandoned");
  return grpc::Status::OK;
}

grpc::Status FakeAdmin::WatchJob(grpc::ServerContext*, const pkgdist::v1::GetJobRequest*,
                                 grpc::ServerWriter<pkgdist::v1::JobStatus>* writer) {
  WatchScript script;
  {
    absl::MutexLock l(&mu_);
    if (watches_.empty()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    script = std::move(watches_.front());
    watches_.pop_front();
  }
  for (const auto& s : script.statuses) writer->Write(s);
  if (script.hang) release_.WaitForNotification();
  return script.end;
}

grpc::Status FakeAdmin::WatchEvents(grpc::ServerContext* ctx,
                                    const pkgdist::v1::WatchEventsRequest* req,
                                    grpc::ServerWriter<pkgdist::v1::Event>* writer) {
  EventScript script;
  {
    absl::MutexLock l(&mu_);
    event_requests_.push_back(*req);
    if (event_scripts_.empty()) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no script left");
    }
    script = std::move(event_scripts_.front());
    event_scripts_.pop_front();
  }
  for (const auto& e : script.events) writer->Write(e);
  if (script.hang) {
    // The sync API has no wake-up on cancellation: look every 10 ms.
    while (!ctx->IsCancelled() && !release_.WaitForNotificationWithTimeout(absl::Milliseconds(10))) {
    }
  }
  return script.end;
}

grpc::Status FakeAdmin::ListAudit(grpc::ServerContext*, const pkgdist::v1::ListAuditRequest* req,
                                  pkgdist::v1::ListAuditResponse* resp) {
  absl::MutexLock l(&mu_);
  audit_requests_.push_back(*req);
  size_t start = req->page_token().empty() ? 0 : std::stoul(req->page_token());
  for (size_t i = start; i < audit_.size() && i < start + 2; ++i) *resp->add_records() = audit_[i];
  if (start + 2 < audit_.size()) resp->set_next_page_token(std::to_string(start + 2));
  return grpc::Status::OK;
}

void FakeAdmin::AddEvents(EventScript script) {
  absl::MutexLock l(&mu_);
  event_scripts_.push_back(std::move(script));
}

std::vector<pkgdist::v1::WatchEventsRequest> FakeAdmin::event_requests() {
  absl::MutexLock l(&mu_);
  return event_requests_;
}

void FakeAdmin::SetAudit(std::vector<pkgdist::v1::AuditRecord> records) {
  absl::MutexLock l(&mu_);
  audit_ = std::move(records);
}

std::vector<pkgdist::v1::ListAuditRequest> FakeAdmin::audit_requests() {
  absl::MutexLock l(&mu_);
  return audit_requests_;
}

void FakeAdmin::AddWatch(WatchScript script) {
  absl::MutexLock l(&mu_);
  watches_.push_back(std::move(script));
}

std::vector<FakeAdmin::Upload> FakeAdmin::WaitForUploads(size_t n) {
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return uploads_.size() >= n; };
  absl::MutexLock l(&mu_, absl::Condition(&enough));
  return uploads_;
}

FakeAdminServer::FakeAdminServer() {
  grpc::ServerBuilder builder;
  builder.RegisterService(&admin_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  server_ = builder.BuildAndStart();
  client_ = std::make_unique<AdminClient>(
      pkgdist::v1::Admin::NewStub(server_->InProcessChannel(AdminChannelArgs())));
}

FakeAdminServer::~FakeAdminServer() {
  admin_.Release();
  server_->Shutdown();
}

}  // namespace pkgdist::cli::testing
