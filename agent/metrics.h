// The agent's metrics (README, "Metrics"), in the registry that
// --metrics-listen serves: what its transfers receive, reuse and reject,
// how long its flushes take to become durable, how many transfers run, and
// (at scrape time) the free space under its root. The transfer sessions
// and their Staging count into one AgentMetrics given to them through
// TransferOptions, or nullptr to count nothing.
//
// Thread-safe: counters and gauges are atomics; a histogram takes its own
// short lock per flush, never per chunk.
#ifndef PKGDIST_AGENT_METRICS_H_
#define PKGDIST_AGENT_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace pkgdist {

class AgentMetrics {
 public:
  AgentMetrics();
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A Chunk message of `bytes` arrived (whatever became of it).
  void ChunkReceived(uint64_t bytes) { received_bytes_->Increment(static_cast<double>(bytes)); }
  // Chunks of `bytes` were copied from published versions instead.
  void Reused(uint64_t bytes) { reused_bytes_->Increment(static_cast<double>(bytes)); }
  // Relays (docs/sites.md): chunk bytes this agent fetched from its site's
  // relay, and bytes it served to its site's other agents as their relay.
  void PeerReceived(uint64_t bytes) { peer_received_->Increment(static_cast<double>(bytes)); }
  void PeerServed(uint64_t bytes) { peer_served_->Increment(static_cast<double>(bytes)); }
  void HashMismatch() { hash_mismatches_->Increment(); }
  // A flush fsynced the files written since the last one in `took`.
  void DataSynced(absl::Duration took) { data_fsync_->Observe(absl::ToDoubleSeconds(took)); }
  // A flush appended its journal records and fsynced the journal in `took`.
  void JournalSynced(absl::Duration took) { journal_fsync_->Observe(absl::ToDoubleSeconds(took)); }
  void TransferStarted() { transfers_active_->Increment(); }
  // A Transfer call ended with `status` (OK: published, or already was).
  void TransferEnded(const absl::Status& status);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* reused_bytes_;
  prometheus::Counter* peer_received_;
  prometheus::Counter* peer_served_;
  prometheus::Counter* hash_mismatches_;
  prometheus::Histogram* data_fsync_;
  prometheus::Histogram* journal_fsync_;
  prometheus::Gauge* transfers_active_;
  prometheus::Family<prometheus::Counter>* transfers_;
};

// pkgdist_agent_free_bytes: the bytes available to the agent on the file
// system of `root` (statvfs), read at each scrape.
std::shared_ptr<prometheus::Collectable> MakeFreeBytesCollectable(std::string root);

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_METRICS_H_
