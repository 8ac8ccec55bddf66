#include "controller/manifest_cache.h"

namespace pkgdist {

std::shared_ptr<const pkgdist::v1::Manifest> ManifestCache::Get(const std::string& id) {
  absl::MutexLock l(&mu_);
  auto it = index_.find(id);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->manifest;
}

void ManifestCache::Put(const std::string& id, std::shared_ptr<const pkgdist::v1::Manifest> m) {
  const size_t bytes = m->ByteSizeLong();
  absl::MutexLock l(&mu_);
  if (auto it = index_.find(id); it != index_.end()) Erase(it->second);
  if (bytes > max_bytes_) return;
  lru_.push_front(Entry{id, std::move(m), bytes});
  index_[id] = lru_.begin();
  bytes_ += bytes;
  while (bytes_ > max_bytes_) Erase(std::prev(lru_.end()));
}

void ManifestCache::Erase(List::iterator it) {
  bytes_ -= it->bytes;
  index_.erase(it->id);
  lru_.erase(it);
}

size_t ManifestCache::bytes() {
  absl::MutexLock l(&mu_);
  return bytes_;
}

size_t ManifestCache::size() {
  absl::MutexLock l(&mu_);
  return lru_.size();
}

}  // namespace pkgdist
