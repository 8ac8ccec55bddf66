// The controller's counters and histograms (README, "Metrics"), in the
// registry that --metrics-listen serves. The engine, its transfers, the
// state store's commit observer and the admin API interceptor
// (admin_call_metrics.h) count into one ControllerMetrics passed to them,
// or nullptr to count nothing. Gauges of what the state database holds are
// computed at scrape time instead (state_metrics.h).
//
// Thread-safe: every counter is an atomic; a histogram takes its own short
// lock per observation, and none is observed per chunk.
#ifndef PKGDIST_CONTROLLER_METRICS_H_
#define PKGDIST_CONTROLLER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/time/time.h"
#include "controller/target_state.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace pkgdist {

// The failure reason of an attempt whose error the agent's certificate
// explains (it names another agent); other failures are classed by code.
inline constexpr char kIdentityMismatchReason[] = "identity_mismatch";

class ControllerMetrics {
 public:
  ControllerMetrics();
  ControllerMetrics(const ControllerMetrics&) = delete;
  ControllerMetrics& operator=(const ControllerMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // One chunk of `bytes` sent; `again` if this target was sent that chunk
  // before (by an earlier attempt, or earlier in this one).
  void ChunkSent(uint64_t bytes, bool again) {
    sent_bytes_->Increment(static_cast<double>(bytes));
    if (again) resent_bytes_->Increment(static_cast<double>(bytes));
  }
  // An Ack acknowledged `chunks` chunks (of `bytes`) sent in this attempt.
  void ChunksAcked(uint64_t chunks, uint64_t bytes) {
    acked_chunks_->Increment(static_cast<double>(chunks));
    acked_bytes_->Increment(static_cast<double>(bytes));
  }
  void AttemptStarted(JobKind kind);
  // A recorded failed attempt; `reason` is StatusCodeLabel() of its code or
  // kIdentityMismatchReason.
  void AttemptFailed(const std::string& reason);
  // A distribution attempt ended after `took` (published or not). Attempts
  // that a stop of the controller cancelled are not observed.
  void TransferEnded(bool published, absl::Duration took);
  // A state store write transaction committed after `took`.
  void StoreCommitted(absl::Duration took) { store_commit_->Observe(absl::ToDoubleSeconds(took)); }
  // An admin call of `method` (its name in the service, e.g. "Distribute")
  // ended with `code`.
  void AdminCallEnded(const std::string& method, grpc::StatusCode code);
  // Makes `method`'s series with code "ok" exist at zero before its first
  // call (so that the family is served, and rate() sees the first call).
  void AdminMethodKnown(const std::string& method);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* sent_bytes_;
  prometheus::Counter* resent_bytes_;
  prometheus::Counter* acked_bytes_;
  prometheus::Counter* acked_chunks_;
  prometheus::Counter* attempts_distribute_;
  prometheus::Counter* attempts_remove_;
  prometheus::Family<prometheus::Counter>* attempt_failures_;
  prometheus::Histogram* transfer_published_;
  prometheus::Histogram* transfer_failed_;
  prometheus::Histogram* store_commit_;
  prometheus::Family<prometheus::Counter>* admin_calls_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_METRICS_H_
