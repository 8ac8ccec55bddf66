#include "shared/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pkgdist {

absl::StatusOr<DirLock> DirLock::Acquire(const std::string& dir, const std::string& what) {
  std::string path = dir + "/.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return ErrnoStatus(errno, "open", path);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) return ErrnoStatus(err, "flock", path);
    char buf[32] = {};
    ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(absl::StripAsciiWhitespace(buf)) : "unknown";
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", dir, " is in use by another process (pid ", holder,
        "); two processes on one ", what, " would both act on the same state"));
  }
  std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return ErrnoStatus(errno, "write", path);
  }
  return DirLock(std::move(fd));
}

}  // namespace pkgdist
