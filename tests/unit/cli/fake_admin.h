// An in-process Admin server for the CLI's tests: it records uploads and
// plays scripted WatchJob streams, reached through an in-process channel
// (no sockets, no TLS).
#ifndef PKGDIST_TESTS_UNIT_CLI_FAKE_ADMIN_H_
#define PKGDIST_TESTS_UNIT_CLI_FAKE_ADMIN_H_

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "controller/cli/admin_client.h"
#include "pkgdist/v1/controller.grpc.pb.h"

namespace pkgdist::cli::testing {

// What one WatchJob call does: send `statuses`, then end with `end`, or,
// if `hang`, wait until the test ends (so the client's deadline fires).
struct WatchScript {
  std::vector<pkgdist::v1::JobStatus> statuses;
  grpc::Status end = grpc::Status::OK;
  bool hang = false;
};

class FakeAdmin final : public pkgdist::v1::Admin::Service {
 public:
  // One received upload.
  struct Upload {
    std::vector<pkgdist::v1::ImportPackageRequest> requests;
    bool ended = false;  // ImportEnd was received
  };

  grpc::Status ImportPackage(grpc::ServerContext* ctx,
                             grpc::ServerReader<pkgdist::v1::ImportPackageRequest>* reader,
                             pkgdist::v1::PackageInfo* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const pkgdist::v1::GetJobRequest* req,
                        grpc::ServerWriter<pkgdist::v1::JobStatus>* writer) override;

  // Scripts for the next WatchJob calls, in order; a call with no script
  // left answers NOT_FOUND.
  void AddWatch(WatchScript script);
  // Waits until `n` uploads have been handled, and returns them all.
  std::vector<Upload> WaitForUploads(size_t n);
  // Releases hanging handlers.
  void Release() { release_.Notify(); }

 private:
  absl::Mutex mu_;
  std::deque<WatchScript> watches_ ABSL_GUARDED_BY(mu_);
  std::vector<Upload> uploads_ ABSL_GUARDED_BY(mu_);
  absl::Notification release_;
};

// Runs a FakeAdmin and an AdminClient connected to it.
class FakeAdminServer {
 public:
  FakeAdminServer();
  ~FakeAdminServer();

  FakeAdmin& admin() { return admin_; }
  AdminClient& client() { return *client_; }

 private:
  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AdminClient> client_;
};

}  // namespace pkgdist::cli::testing

#endif  // PKGDIST_TESTS_UNIT_CLI_FAKE_ADMIN_H_
