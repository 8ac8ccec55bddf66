// An exclusive lock on a directory for the life of a process: flock(2) on
// DIR/.lock, which holds the owner's pid for the message a second process
// gets. The kernel drops the lock when its holder exits, however it exits,
// so a crash never leaves a stale lock behind.
#ifndef PKGDIST_SHARED_DIR_LOCK_H_
#define PKGDIST_SHARED_DIR_LOCK_H_

#include <string>

#include "absl/status/statusor.h"
#include "shared/file_util.h"

namespace pkgdist {

class DirLock {
 public:
  // FAILED_PRECONDITION naming the holder's pid if another process (or
  // another DirLock in this one) holds `dir`; `what` names the directory's
  // role in the message ("state directory").
  static absl::StatusOr<DirLock> Acquire(const std::string& dir, const std::string& what);
  DirLock(DirLock&&) = default;
  DirLock& operator=(DirLock&&) = default;

 private:
  explicit DirLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_DIR_LOCK_H_
