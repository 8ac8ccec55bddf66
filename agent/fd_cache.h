// A bounded cache of open file descriptors for the files of one staging
// tree, so that a package of a million small files never holds a million
// descriptors, while a large file is opened once.
//
// Files written through the cache are "dirty" until synced; a dirty file is
// fsynced before its descriptor is evicted, so data written through the
// cache is on disk once SyncAll() returns, whatever was evicted meanwhile.
// Not thread-safe.
#ifndef PKGDIST_AGENT_FD_CACHE_H_
#define PKGDIST_AGENT_FD_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shared/file_util.h"

namespace pkgdist {

class FdCache {
 public:
  // `path_of(key)` names the file for key; it is opened O_RDWR.
  FdCache(size_t capacity, std::function<std::string(uint32_t key)> path_of)
      : capacity_(capacity < 1 ? 1 : capacity), path_of_(std::move(path_of)) {}
  ~FdCache() = default;
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // Returns the descriptor of `key`'s file; `for_write` marks it dirty.
  // The descriptor stays valid until the next call on this cache.
  absl::StatusOr<int> Get(uint32_t key, bool for_write);
  // fsyncs every dirty file (they stay open).
  absl::Status SyncAll();

  // A dirty file's descriptor, duplicated, to fsync elsewhere.
  struct Dirty {
    UniqueFd fd;
    std::string path;
  };
  // Duplicates the descriptor of every dirty file and marks them clean: the
  // data written so far is on disk once the caller has fsynced every copy,
  // which may be on another thread and after this cache closed its own.
  absl::StatusOr<std::vector<Dirty>> TakeDirty();
  // fsyncs every dirty file and closes everything.
  absl::Status CloseAll();

 private:
  struct Entry {
    uint32_t key;
    std::string path;
    UniqueFd fd;
    bool dirty = false;
  };
  absl::Status Evict(std::list<Entry>::iterator it);

  size_t capacity_;
  std::function<std::string(uint32_t)> path_of_;
  std::list<Entry> lru_;  // most recently used first
  absl::flat_hash_map<uint32_t, std::list<Entry>::iterator> index_;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_FD_CACHE_H_
