#include "tests/unit/cli/fake_admin.h"

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
