// Small POSIX file helpers that report failures as absl::Status naming the
// path and the OS error. Every write helper that promises durability fsyncs
// the file and, where a name was created or replaced, its directory.
#ifndef PKGDIST_SHARED_FILE_UTIL_H_
#define PKGDIST_SHARED_FILE_UTIL_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pkgdist {

// Owns a file descriptor; closes it on destruction. Movable, not copyable.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) { Reset(); fd_ = o.Release(); }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { int f = fd_; fd_ = -1; return f; }
  void Reset();

 private:
  int fd_ = -1;
};

// An OS error as a Status: "<what> <path>: <strerror>". ENOSPC and EDQUOT map
// to RESOURCE_EXHAUSTED, ENOENT to NOT_FOUND, the rest to INTERNAL.
absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view path);

absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, int mode = 0644);
absl::Status PreadFull(int fd, void* buf, size_t len, uint64_t offset, absl::string_view path);
absl::Status PwriteFull(int fd, const void* buf, size_t len, uint64_t offset, absl::string_view path);
absl::Status WriteAll(int fd, const void* buf, size_t len, absl::string_view path);
absl::Status Fsync(int fd, absl::string_view path);
// Opens and fsyncs a directory so that names created in it are durable.
absl::Status FsyncDir(const std::string& dir);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Writes `path` durably and atomically: temp file, fsync, rename, fsync dir.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data);
// Whether names in `dir` are looked up without regard to letter case (as on
// vfat, exFAT, or ext4 with casefold): creates and removes a probe file.
absl::StatusOr<bool> FoldsCase(const std::string& dir);
// mkdir -p (directories it creates get 0755 less the umask).
absl::Status MakeDirs(const std::string& path);
// rm -rf; a missing path is not an error.
absl::Status RemoveAll(const std::string& path);

// A directory created under $TMPDIR (or /tmp) and removed with everything in
// it on destruction. For tests and tools.
class TempDir {
 public:
  static absl::StatusOr<TempDir> Create(absl::string_view prefix = "pkgdist");
  ~TempDir();
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_FILE_UTIL_H_
