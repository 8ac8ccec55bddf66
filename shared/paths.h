// Validation of everything that names a place on disk: package names and
// versions, relative paths inside a package, and symlink targets. Both the
// controller (at import) and the agent (on every Offer) apply these, so a
// hostile manifest can never make an agent write outside its package.
#ifndef PKGDIST_SHARED_PATHS_H_
#define PKGDIST_SHARED_PATHS_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace pkgdist {

inline constexpr size_t kMaxPathLength = 4096;
inline constexpr size_t kMaxComponentLength = 255;
inline constexpr size_t kMaxNameLength = 128;

// A package name, a version or an agent name: 1..128 of [A-Za-z0-9._+-],
// not "." or "..", not starting with '-'. `what` names the field in errors.
absl::Status ValidateName(absl::string_view value, absl::string_view what);

// A path inside a package: relative, '/'-separated, normalised (no empty,
// "." or ".." components), no NUL, at most `max_length` bytes.
absl::Status ValidateRelativePath(absl::string_view path, size_t max_length = kMaxPathLength);

// The target of a symlink at `link_path`: relative, and resolving lexically
// to a place inside the package tree.
absl::Status ValidateLinkTarget(absl::string_view link_path, absl::string_view target);

// The directory part of a relative path ("" for a top-level entry).
absl::string_view ParentOf(absl::string_view path);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_PATHS_H_
