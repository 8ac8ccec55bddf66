#include "agent/fd_cache.h"

#include <fcntl.h>

#include <cerrno>

#include "shared/status_macros.h"

namespace pkgdist {

absl::StatusOr<int> FdCache::Get(uint32_t key, bool for_write) {
  auto found = index_.find(key);
  if (found != index_.end()) {
    lru_.splice(lru_.begin(), lru_, found->second);
    lru_.front().dirty |= for_write;
    return lru_.front().fd.get();
  }
  if (lru_.size() >= capacity_) RETURN_IF_ERROR(Evict(std::prev(lru_.end())));
  std::string path = path_of_(key);
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_NOFOLLOW));
  lru_.push_front(Entry{key, std::move(path), std::move(fd), for_write});
  index_[key] = lru_.begin();
  return lru_.front().fd.get();
}

absl::Status FdCache::Evict(std::list<Entry>::iterator it) {
  if (it->dirty) RETURN_IF_ERROR(Fsync(it->fd.get(), it->path));
  index_.erase(it->key);
  lru_.erase(it);
  return absl::OkStatus();
}

absl::Status FdCache::SyncAll() {
  for (auto& e : lru_) {
    if (!e.dirty) continue;
    RETURN_IF_ERROR(Fsync(e.fd.get(), e.path));
    e.dirty = false;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<FdCache::Dirty>> FdCache::TakeDirty() {
  std::vector<Dirty> out;
  for (auto& e : lru_) {
    if (!e.dirty) continue;
    int fd = ::fcntl(e.fd.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus(errno, "dup descriptor of", e.path);
    out.push_back(Dirty{UniqueFd(fd), e.path});
  }
  for (auto& e : lru_) e.dirty = false;
  return out;
}

absl::Status FdCache::CloseAll() {
  RETURN_IF_ERROR(SyncAll());
  index_.clear();
  lru_.clear();
  return absl::OkStatus();
}

}  // namespace pkgdist
