// The manifest deltas the engine's transfers send (shared/manifest_delta.h):
// each pair of base and target is diffed once, by the first transfer that
// asks for it, and its parts kept for the others, so that a thousand agents
// updating from one version cost one diff. Transfers hold the parts through
// their shared_ptr; the cache keeps the most recent `max_entries` pairs.
//
// Thread-safe. A transfer asking for a pair being diffed waits for that diff
// (on its read-pool thread) rather than diffing it again.
#ifndef PKGDIST_CONTROLLER_MANIFEST_DELTAS_H_
#define PKGDIST_CONTROLLER_MANIFEST_DELTAS_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "pkgdist/v1/agent.pb.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist {

class ManifestDeltas {
 public:
  using Parts = std::vector<pkgdist::v1::ManifestPart>;
  // The manifest of a package by its hex id (the engine's manifest cache).
  using LoadFn = std::function<absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>>(
      const std::string& id_hex)>;

  explicit ManifestDeltas(LoadFn load, size_t max_entries = 16)
      : load_(std::move(load)), max_entries_(max_entries) {}
  ManifestDeltas(const ManifestDeltas&) = delete;
  ManifestDeltas& operator=(const ManifestDeltas&) = delete;

  // The parts that send `target` (id `target_id`, 32 raw bytes) as a delta
  // of package `base_id` (32 raw bytes): DiffManifest's, kManifestPartBytes
  // each. An error if the base's manifest cannot be loaded (not kept: the
  // next call tries again).
  absl::StatusOr<std::shared_ptr<const Parts>> Get(
      const std::string& base_id, const std::shared_ptr<const pkgdist::v1::Manifest>& target,
      const std::string& target_id);

  // Diffs made so far (each pair once while it stays cached).
  uint64_t diffs() {
    absl::MutexLock l(&mu_);
    return diffs_;
  }

 private:
  struct Entry {
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    std::shared_ptr<const Parts> parts ABSL_GUARDED_BY(mu);
  };

  const LoadFn load_;
  const size_t max_entries_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // oldest first
  uint64_t diffs_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_MANIFEST_DELTAS_H_
