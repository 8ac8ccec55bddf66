#include "agent/metrics.h"

#include <utility>
#include <vector>

#include "agent/disk_util.h"
#include "shared/logging.h"
#include "shared/metrics.h"

namespace pkgdist {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// One fsync: 0.1 ms (nothing dirty, a fast SSD) to ~1.6 s (a busy disk).
const prometheus::Histogram::BucketBoundaries& FsyncBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries(
      ExponentialBuckets(0.0001, 2, 15));
  return *b;
}

}  // namespace

AgentMetrics::AgentMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  received_bytes_ = &BuildCounter()
                         .Name("pkgdist_agent_received_bytes_total")
                         .Help("Chunk bytes received from the controller (duplicates and chunks "
                               "that failed their hash included)")
                         .Register(r)
                         .Add({});
  reused_bytes_ = &BuildCounter()
                       .Name("pkgdist_agent_reused_bytes_total")
                       .Help("Chunk bytes copied from the agent's own chunk store (any package "
                             "it holds) instead of received")
                       .Register(r)
                       .Add({});
  peer_received_ = &BuildCounter()
                        .Name("pkgdist_agent_peer_received_bytes_total")
                        .Help("Chunk bytes received from the relay of the agent's site")
                        .Register(r)
                        .Add({});
  peer_served_ = &BuildCounter()
                      .Name("pkgdist_agent_peer_served_bytes_total")
                      .Help("Chunk bytes served to the other agents of the agent's site, as "
                            "their relay")
                      .Register(r)
                      .Add({});
  hash_mismatches_ = &BuildCounter()
                          .Name("pkgdist_agent_hash_mismatches_total")
                          .Help("Chunks received whose sha256 did not match the manifest")
                          .Register(r)
                          .Add({});
  data_fsync_ = &BuildHistogram()
                     .Name("pkgdist_agent_data_fsync_duration_seconds")
                     .Help("Duration of a flush's fsync of the files it wrote, before its "
                           "journal records")
                     .Register(r)
                     .Add({}, FsyncBuckets());
  journal_fsync_ = &BuildHistogram()
                        .Name("pkgdist_agent_journal_fsync_duration_seconds")
                        .Help("Duration of a flush's journal append and fsync, before its Ack")
                        .Register(r)
                        .Add({}, FsyncBuckets());
  transfers_active_ = &BuildGauge()
                           .Name("pkgdist_agent_transfers_active")
                           .Help("Transfer calls being served")
                           .Register(r)
                           .Add({});
  transfers_ = &BuildCounter()
                    .Name("pkgdist_agent_transfers_total")
                    .Help("Transfer calls ended, by status code (ok: the package is published)")
                    .Register(r);
  transfers_->Add({{"code", "ok"}});
}

void AgentMetrics::TransferEnded(const absl::Status& status) {
  transfers_active_->Decrement();
  transfers_->Add({{"code", StatusCodeLabel(status.code())}}).Increment();
}

std::shared_ptr<prometheus::Collectable> MakeFreeBytesCollectable(std::string root) {
  return std::make_shared<CallbackCollectable>([root = std::move(root)] {
    std::vector<prometheus::MetricFamily> out;
    absl::StatusOr<uint64_t> free = FreeBytes(root);
    if (!free.ok()) {
      spdlog::debug("metrics: free space of {}: {}", root, free.status());
      return out;
    }
    out.push_back(GaugeFamily("pkgdist_agent_free_bytes",
                              "Bytes available to the agent on the file system of its root", "",
                              {{"", static_cast<double>(*free)}}));
    return out;
  });
}

}  // namespace pkgdist
