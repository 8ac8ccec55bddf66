#include "shared/paths.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pkgdist {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-' || c == '+';
}

}  // namespace

absl::Status ValidateName(absl::string_view value, absl::string_view what) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (value.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is longer than ", kMaxNameLength, " characters"));
  }
  if (value == "." || value == ".." || value.front() == '-') {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", value, "\" is not allowed"));
  }
  for (char c : value) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " \"", value, "\" may only hold letters, digits, '.', '_', '+' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRelativePath(absl::string_view path, size_t max_length) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("path \"", path, "\": ", why));
  };
  if (path.empty()) return bad("empty path");
  if (path.size() > max_length) return bad(absl::StrCat("longer than ", max_length, " bytes"));
  if (path.find('\0') != absl::string_view::npos) return bad("contains a NUL byte");
  if (path.front() == '/') return bad("absolute paths are not allowed");
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty()) return bad("empty component (leading, trailing or double '/')");
    if (part == ".") return bad("'.' component is not allowed");
    if (part == "..") return bad("'..' component is not allowed");
    if (part.size() > kMaxComponentLength) {
      return bad(absl::StrCat("component longer than ", kMaxComponentLength, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLinkTarget(absl::string_view link_path, absl::string_view target) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("symlink \"", link_path, "\" -> \"", target, "\": ", why));
  };
  if (target.empty()) return bad("empty target");
  if (target.size() > kMaxPathLength) return bad("target too long");
  if (target.find('\0') != absl::string_view::npos) return bad("target contains a NUL byte");
  if (target.front() == '/') return bad("absolute target leaves the package");
  // Resolve lexically from the link's directory; the depth must never go
  // below the package root.
  std::vector<absl::string_view> stack;
  absl::string_view parent = ParentOf(link_path);
  if (!parent.empty()) {
    for (absl::string_view p : absl::StrSplit(parent, '/')) stack.push_back(p);
  }
  for (absl::string_view part : absl::StrSplit(target, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (stack.empty()) return bad("target leaves the package");
      stack.pop_back();
    } else {
      stack.push_back(part);
    }
  }
  return absl::OkStatus();
}

absl::string_view ParentOf(absl::string_view path) {
  size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? absl::string_view() : path.substr(0, slash);
}

}  // namespace pkgdist
