// File-system operations the agent needs beyond shared/file_util.h:
// removing trees whose directories may be read-only (published packages keep
// their manifest modes), durable renames, and free-space queries.
#ifndef PKGDIST_AGENT_DISK_UTIL_H_
#define PKGDIST_AGENT_DISK_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pkgdist {

// "a/b"; `b` is relative.
std::string JoinPath(absl::string_view a, absl::string_view b);

// True if `path` exists (lstat: a dangling symlink exists).
bool PathExists(const std::string& path);
// True if `path` is a directory (not following a final symlink).
bool IsDirectory(const std::string& path);

// rm -rf that first makes every directory in the tree writable and
// searchable by its owner, so trees with mode 0555 directories go too.
// A missing path is not an error.
absl::Status RemoveTree(const std::string& path);

// rename(2), then fsync of the destination's parent (and the source's, if
// it differs), so the rename survives a crash.
absl::Status RenameDurable(const std::string& from, const std::string& to);

// Bytes available to an unprivileged writer on the file system of `path`.
absl::StatusOr<uint64_t> FreeBytes(const std::string& path);

// Signature of FreeBytes, for injecting a fake in tests.
using FreeBytesFn = std::function<absl::StatusOr<uint64_t>(const std::string& path)>;

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_DISK_UTIL_H_
