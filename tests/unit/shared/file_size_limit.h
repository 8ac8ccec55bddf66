// Test helper: makes the kernel refuse writes past `bytes` (EFBIG) in this
// process while it lives, the way to fail a write or an fsync'd append
// without a full disk. SIGXFSZ is ignored meanwhile; both are restored.
#ifndef PKGDIST_TESTS_UNIT_SHARED_FILE_SIZE_LIMIT_H_
#define PKGDIST_TESTS_UNIT_SHARED_FILE_SIZE_LIMIT_H_

#include <sys/resource.h>

#include <csignal>
#include <cstdint>

namespace pkgdist::testing {

class FileSizeLimit {
 public:
  explicit FileSizeLimit(uint64_t bytes) : old_handler_(std::signal(SIGXFSZ, SIG_IGN)) {
    ok_ = ::getrlimit(RLIMIT_FSIZE, &old_) == 0;
    struct rlimit small = old_;
    small.rlim_cur = bytes;
    ok_ = ok_ && ::setrlimit(RLIMIT_FSIZE, &small) == 0;
  }
  ~FileSizeLimit() {
    if (ok_) ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

  // Whether the limit is in force (assert it before relying on it).
  bool ok() const { return ok_; }

 private:
  void (*old_handler_)(int);
  struct rlimit old_{};
  bool ok_ = false;
};

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_SHARED_FILE_SIZE_LIMIT_H_
