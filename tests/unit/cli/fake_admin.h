// An in-process Admin server for the CLI's tests: it records uploads and
// WatchEvents requests, plays scripted WatchJob and WatchEvents streams and
// serves a fixed audit trail, reached through an in-process channel (no
// sockets, no TLS).
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

// What one WatchEvents call does: send `events`, then end with `end`, or,
// if `hang`, wait until the client cancels (or the test ends).
struct EventScript {
  std::vector<pkgdist::v1::Event> events;
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
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const pkgdist::v1::WatchEventsRequest* req,
                           grpc::ServerWriter<pkgdist::v1::Event>* writer) override;
  // Serves the records set by SetAudit, two per page.
  grpc::Status ListAudit(grpc::ServerContext* ctx, const pkgdist::v1::ListAuditRequest* req,
                         pkgdist::v1::ListAuditResponse* resp) override;

  // Scripts for the next WatchJob calls, in order; a call with no script
  // left answers NOT_FOUND.
  void AddWatch(WatchScript script);
  // Scripts for the next WatchEvents calls, in order; a call with no
  // script left answers UNIMPLEMENTED.
  void AddEvents(EventScript script);
  // Every WatchEvents request received, in order.
  std::vector<pkgdist::v1::WatchEventsRequest> event_requests();
  void SetAudit(std::vector<pkgdist::v1::AuditRecord> records);
  // Every ListAudit request received, in order.
  std::vector<pkgdist::v1::ListAuditRequest> audit_requests();
  // Waits until `n` uploads have been handled, and returns them all.
  std::vector<Upload> WaitForUploads(size_t n);
  // Releases hanging handlers.
  void Release() { release_.Notify(); }

 private:
  absl::Mutex mu_;
  std::deque<WatchScript> watches_ ABSL_GUARDED_BY(mu_);
  std::vector<Upload> uploads_ ABSL_GUARDED_BY(mu_);
  std::deque<EventScript> event_scripts_ ABSL_GUARDED_BY(mu_);
  std::vector<pkgdist::v1::WatchEventsRequest> event_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<pkgdist::v1::AuditRecord> audit_ ABSL_GUARDED_BY(mu_);
  std::vector<pkgdist::v1::ListAuditRequest> audit_requests_ ABSL_GUARDED_BY(mu_);
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
