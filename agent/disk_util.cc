#include "agent/disk_util.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "shared/file_util.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

std::string ParentDir(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// Makes `dir` and every directory below it rwx for its owner.
absl::Status MakeTreeWritable(const std::string& dir) {
  if (::chmod(dir.c_str(), 0700) != 0) return ErrnoStatus(errno, "chmod", dir);
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      RETURN_IF_ERROR(MakeTreeWritable(it->path().string()));
    }
  }
  if (ec) return ErrnoStatus(ec.value(), "list", dir);
  return absl::OkStatus();
}

}  // namespace

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  return absl::StrCat(a, "/", b);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status RemoveTree(const std::string& path) {
  // The system would read such a path only up to the NUL: another,
  // shorter path, deleted (or walked for ever) instead of this one.
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("refusing to delete a path containing a NUL byte");
  }
  if (!PathExists(path)) return absl::OkStatus();
  if (IsDirectory(path)) RETURN_IF_ERROR(MakeTreeWritable(path));
  return RemoveAll(path);
}

absl::Status RenameDurable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename to ", to, ":"), from);
  }
  std::string to_parent = ParentDir(to);
  std::string from_parent = ParentDir(from);
  RETURN_IF_ERROR(FsyncDir(to_parent));
  if (from_parent != to_parent) RETURN_IF_ERROR(FsyncDir(from_parent));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return ErrnoStatus(errno, "statvfs", path);
  return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

}  // namespace pkgdist
