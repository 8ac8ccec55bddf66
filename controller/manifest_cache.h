// Parsed manifests of the packages the engine is sending, bounded by bytes:
// least recently used first out. A manifest in use by a transfer stays alive
// through its shared_ptr even after the cache drops it, so the bound is on
// what the cache keeps, not on what running transfers hold.
//
// Thread-safe.
#ifndef PKGDIST_CONTROLLER_MANIFEST_CACHE_H_
#define PKGDIST_CONTROLLER_MANIFEST_CACHE_H_

#include <cstddef>
#include <list>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist {

class ManifestCache {
 public:
  explicit ManifestCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  ManifestCache(const ManifestCache&) = delete;
  ManifestCache& operator=(const ManifestCache&) = delete;

  // The manifest cached under `id`, or null; a hit becomes the most recent.
  std::shared_ptr<const pkgdist::v1::Manifest> Get(const std::string& id);
  // Caches `m` under `id` (replacing what was there), then drops the least
  // recently used entries until the total is within the bound. A manifest
  // larger than the bound is not kept.
  void Put(const std::string& id, std::shared_ptr<const pkgdist::v1::Manifest> m);
  // Bytes (serialized sizes) and entries kept now.
  size_t bytes();
  size_t size();

 private:
  struct Entry {
    std::string id;
    std::shared_ptr<const pkgdist::v1::Manifest> manifest;
    size_t bytes;
  };
  using List = std::list<Entry>;
  void Erase(List::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_bytes_;
  absl::Mutex mu_;
  List lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  absl::flat_hash_map<std::string, List::iterator> index_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_MANIFEST_CACHE_H_
