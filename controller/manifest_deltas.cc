#include "controller/manifest_deltas.h"

#include "absl/strings/str_cat.h"
#include "shared/grpc_options.h"
#include "shared/manifest_delta.h"
#include "shared/sha256.h"

namespace pkgdist {

absl::StatusOr<std::shared_ptr<const ManifestDeltas::Parts>> ManifestDeltas::Get(
    const std::string& base_id, const std::shared_ptr<const pkgdist::v1::Manifest>& target,
    const std::string& target_id) {
  std::shared_ptr<Entry> entry;
  {
    absl::MutexLock l(&mu_);
    const std::string key = base_id + target_id;
    auto [it, added] = entries_.try_emplace(key);
    if (added) {
      it->second = std::make_shared<Entry>();
      order_.push_back(key);
      if (order_.size() > max_entries_) {
        entries_.erase(order_.front());
        order_.pop_front();
      }
    }
    entry = it->second;
  }
  absl::MutexLock l(&entry->mu);
  if (!entry->done) {
    // A failed load is not kept: the next transfer tries again.
    auto base = load_(ToHex(base_id));
    if (!base.ok()) {
      return absl::Status(base.status().code(), absl::StrCat("the delta base ", ToHex(base_id),
                                                             ": ", base.status().message()));
    }
    entry->parts =
        std::make_shared<const Parts>(DiffManifest(**base, *target, kManifestPartBytes));
    entry->done = true;
    absl::MutexLock ml(&mu_);
    ++diffs_;
  }
  return entry->parts;
}

}  // namespace pkgdist
