#include "controller/metrics.h"

#include "shared/metrics.h"

namespace pkgdist {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildHistogram;

// A finished attempt: from a fraction of a second (a package the agent
// already has) to an hour (a large package over a slow link).
const prometheus::Histogram::BucketBoundaries& TransferBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
  return *b;
}

// One SQLite transaction with synchronous=FULL: a few fsyncs, 0.5 ms to 5 s.
const prometheus::Histogram::BucketBoundaries& CommitBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries(
      ExponentialBuckets(0.0005, 2, 14));  // 0.5 ms .. ~4 s
  return *b;
}

}  // namespace

ControllerMetrics::ControllerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  sent_bytes_ = &BuildCounter()
                     .Name("pkgdist_controller_sent_bytes_total")
                     .Help("Chunk bytes sent to agents, re-sends included")
                     .Register(r)
                     .Add({});
  resent_bytes_ = &BuildCounter()
                       .Name("pkgdist_controller_resent_bytes_total")
                       .Help("Chunk bytes sent to a target that had been sent that chunk before "
                             "(by this controller process): the cost of interruptions and "
                             "hash mismatches")
                       .Register(r)
                       .Add({});
  acked_bytes_ = &BuildCounter()
                      .Name("pkgdist_controller_acked_bytes_total")
                      .Help("Chunk bytes agents acknowledged as durable")
                      .Register(r)
                      .Add({});
  acked_chunks_ = &BuildCounter()
                       .Name("pkgdist_controller_acked_chunks_total")
                       .Help("Chunks agents acknowledged as durable")
                       .Register(r)
                       .Add({});
  auto& attempts = BuildCounter()
                       .Name("pkgdist_controller_attempts_total")
                       .Help("Attempts started, by job kind")
                       .Register(r);
  attempts_distribute_ = &attempts.Add({{"kind", "distribute"}});
  attempts_remove_ = &attempts.Add({{"kind", "remove"}});
  attempt_failures_ = &BuildCounter()
                           .Name("pkgdist_controller_attempt_failures_total")
                           .Help("Failed attempts recorded, by reason: the status code "
                                 "(unavailable, deadline_exceeded, data_loss, ...) or "
                                 "identity_mismatch")
                           .Register(r);
  // Every reason from the start, so that rate() sees the first failure.
  for (int c = 1; c <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++c) {
    attempt_failures_->Add({{"reason", StatusCodeLabel(static_cast<absl::StatusCode>(c))}});
  }
  attempt_failures_->Add({{"reason", kIdentityMismatchReason}});
  auto& transfers = BuildHistogram()
                        .Name("pkgdist_controller_transfer_duration_seconds")
                        .Help("Duration of finished distribution attempts, by outcome")
                        .Register(r);
  transfer_published_ = &transfers.Add({{"outcome", "published"}}, TransferBuckets());
  transfer_failed_ = &transfers.Add({{"outcome", "failed"}}, TransferBuckets());
  store_commit_ = &BuildHistogram()
                       .Name("pkgdist_controller_store_transaction_duration_seconds")
                       .Help("Duration of state store write transactions, BEGIN to COMMIT "
                             "(fsync included)")
                       .Register(r)
                       .Add({}, CommitBuckets());
  admin_calls_ = &BuildCounter()
                      .Name("pkgdist_controller_admin_calls_total")
                      .Help("Admin API calls ended, by method and status code")
                      .Register(r);
}

void ControllerMetrics::AttemptStarted(JobKind kind) {
  (kind == JobKind::kRemove ? attempts_remove_ : attempts_distribute_)->Increment();
}

void ControllerMetrics::AttemptFailed(const std::string& reason) {
  attempt_failures_->Add({{"reason", reason}}).Increment();
}

void ControllerMetrics::TransferEnded(bool published, absl::Duration took) {
  (published ? transfer_published_ : transfer_failed_)->Observe(absl::ToDoubleSeconds(took));
}

void ControllerMetrics::AdminMethodKnown(const std::string& method) {
  admin_calls_->Add({{"method", method}, {"code", "ok"}});
}

void ControllerMetrics::AdminCallEnded(const std::string& method, grpc::StatusCode code) {
  admin_calls_->Add({{"method", method}, {"code", StatusCodeLabel(static_cast<absl::StatusCode>(code))}})
      .Increment();
}

}  // namespace pkgdist
