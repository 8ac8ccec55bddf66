#include "controller/package_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("no random bytes for an upload directory (OpenSSL RAND_bytes failed)");
  }
  return ToHex(raw);
}

// `path` with "." and ".." collapsed and no trailing '/'.
std::string Lexical(const std::string& path) {
  std::string out = std::filesystem::path(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool Inside(const std::string& path, const std::string& root) {
  return root == "/" || path == root || absl::StartsWith(path, root + "/");
}

bool InsideAny(const std::string& path, const std::vector<std::string>& roots) {
  return std::any_of(roots.begin(), roots.end(),
                     [&](const std::string& r) { return Inside(path, r); });
}

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return ErrnoStatus(errno, "resolve", path);
  return std::string(buf);
}

// Opens `resolved` (a realpath) without following a symlink, and checks
// that what was opened is still that path: a directory swapped for a
// symlink since it was resolved is refused.
absl::StatusOr<UniqueFd> OpenResolved(const std::string& resolved, const ImportRoots& roots) {
  int fd = ::open(resolved.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", resolved);
  UniqueFd owned(fd);
  char buf[PATH_MAX];
  std::string proc = absl::StrCat("/proc/self/fd/", fd);
  ssize_t n = ::readlink(proc.c_str(), buf, sizeof buf - 1);
  if (n < 0) return ErrnoStatus(errno, "readlink", proc);
  std::string opened(buf, static_cast<size_t>(n));
  if (opened != resolved || !InsideAny(opened, roots.resolved)) {
    return absl::PermissionDeniedError(absl::StrCat(
        resolved, " changed while being opened (now ", opened, "); refused"));
  }
  return owned;
}

absl::Status NotPackageable(const std::string& display) {
  return absl::InvalidArgumentError(absl::StrCat(
      display, ": not a regular file, directory or symlink (devices, FIFOs and sockets cannot "
               "be packaged)"));
}

pkgdist::v1::ImportPackageRequest EntryMsg(const std::string& rel, pkgdist::v1::EntryType type,
                                           uint32_t mode) {
  pkgdist::v1::ImportPackageRequest m;
  auto* e = m.mutable_entry();
  e->set_path(rel);
  e->set_type(type);
  e->set_mode(mode & 0777);
  return m;
}

// Adds the regular file open as `fd` (package path `rel`).
absl::Status AddFile(ImportSession& s, int fd, const std::string& rel, const std::string& display) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", display);
  if (!S_ISREG(st.st_mode)) return NotPackageable(display);
  auto m = EntryMsg(rel, pkgdist::v1::ENTRY_TYPE_FILE, st.st_mode);
  m.mutable_entry()->set_size(static_cast<uint64_t>(st.st_size));
  return s.AddLocalFile(m.entry(), fd, display);
}

// Adds what is in the directory open as `dir` (package path `rel`, "" for
// the root), names in byte order, depth first: the order of pkgdistctl's
// walk (controller/cli/package_import.h). Everything is opened relative
// to its directory and without following symlinks.
absl::Status WalkLocal(ImportSession& s, int dir, const std::string& rel,
                       const std::string& display) {
  int listed = ::dup(dir);
  if (listed < 0) return ErrnoStatus(errno, "dup", display);
  DIR* d = ::fdopendir(listed);
  if (d == nullptr) {
    ::close(listed);
    return ErrnoStatus(errno, "list", display);
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* ent = ::readdir(d)) {
    std::string n = ent->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, "list", display);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string child = rel.empty() ? n : absl::StrCat(rel, "/", n);
    std::string child_display = absl::StrCat(display, "/", n);
    struct stat st;
    if (::fstatat(dir, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(errno, "stat", child_display);
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target(PATH_MAX, '\0');
      ssize_t len = ::readlinkat(dir, n.c_str(), target.data(), target.size());
      if (len < 0) return ErrnoStatus(errno, "readlink", child_display);
      target.resize(static_cast<size_t>(len));
      auto m = EntryMsg(child, pkgdist::v1::ENTRY_TYPE_SYMLINK, 0777);
      m.mutable_entry()->set_link_target(target);
      RETURN_IF_ERROR(s.Add(std::move(m)));
      continue;
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return NotPackageable(child_display);
    int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
    if (S_ISDIR(st.st_mode)) flags |= O_DIRECTORY;
    int fd = ::openat(dir, n.c_str(), flags);
    if (fd < 0) return ErrnoStatus(errno, "open", child_display);
    UniqueFd owned(fd);
    if (S_ISREG(st.st_mode)) {
      RETURN_IF_ERROR(AddFile(s, fd, child, child_display));
      continue;
    }
    RETURN_IF_ERROR(s.Add(EntryMsg(child, pkgdist::v1::ENTRY_TYPE_DIRECTORY, st.st_mode)));
    RETURN_IF_ERROR(WalkLocal(s, fd, child, child_display));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ImportRoots::List() const { return absl::StrJoin(configured, ", "); }

absl::StatusOr<ImportRoots> ResolveImportRoots(const std::vector<std::string>& dirs) {
  ImportRoots roots;
  for (const auto& d : dirs) {
    if (d.empty() || d[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("--import-root ", d, ": must be an absolute path"));
    }
    auto resolved = RealPath(d);
    struct stat st;
    if (!resolved.ok() || ::stat(resolved->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--import-root ", d, ": not an existing directory"));
    }
    roots.configured.push_back(Lexical(d));
    roots.resolved.push_back(*resolved);
  }
  return roots;
}

absl::StatusOr<std::string> ResolveImportPath(const std::string& path, const ImportRoots& roots) {
  if (roots.resolved.empty()) {
    return absl::FailedPreconditionError(
        "local import is off: the controller has no --import-root (start it with "
        "--import-root DIR to allow importing trees under DIR from its own disk)");
  }
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path \"", path, "\": must be absolute (a path on the controller's host)"));
  }
  auto denied = [&](absl::string_view why) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, " ", why, " every --import-root of the controller (", roots.List(), ")"));
  };
  std::string lexical = Lexical(path);
  if (!InsideAny(lexical, roots.configured) && !InsideAny(lexical, roots.resolved)) {
    return denied("is outside");
  }
  ASSIGN_OR_RETURN(std::string resolved, RealPath(path));
  if (!InsideAny(resolved, roots.resolved)) {
    return denied(absl::StrCat("resolves to ", resolved, " (through a symlink), outside"));
  }
  return resolved;
}

absl::StatusOr<std::unique_ptr<PackageStore>> PackageStore::Open(const std::string& state_dir,
                                                                 ManifestLimits limits,
                                                                 Chunking chunking,
                                                                 ImportRoots import_roots) {
  RETURN_IF_ERROR(MakeDirs(state_dir + "/packages"));
  RETURN_IF_ERROR(RemoveAll(state_dir + "/uploads"));
  RETURN_IF_ERROR(MakeDirs(state_dir + "/uploads"));
  return std::unique_ptr<PackageStore>(
      new PackageStore(state_dir, limits, chunking, std::move(import_roots)));
}

absl::StatusOr<std::unique_ptr<ImportSession>> PackageStore::BeginImport() {
  ASSIGN_OR_RETURN(std::string name, RandomHex(8));
  std::string dir = absl::StrCat(root_, "/uploads/", name);
  RETURN_IF_ERROR(MakeDirs(dir));
  return std::unique_ptr<ImportSession>(new ImportSession(dir, limits_, chunking_));
}

absl::StatusOr<LocalImport> PackageStore::ImportLocal(const std::string& path,
                                                      const std::string& name,
                                                      const std::string& version) {
  ASSIGN_OR_RETURN(std::string resolved, ResolveImportPath(path, import_roots_));
  ASSIGN_OR_RETURN(UniqueFd root, OpenResolved(resolved, import_roots_));
  struct stat st;
  if (::fstat(root.get(), &st) != 0) return ErrnoStatus(errno, "stat", resolved);
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) return NotPackageable(path);
  ASSIGN_OR_RETURN(std::unique_ptr<ImportSession> session, BeginImport());
  pkgdist::v1::ImportPackageRequest header;
  header.mutable_header()->set_name(name);
  header.mutable_header()->set_version(version);
  RETURN_IF_ERROR(session->Add(std::move(header)));
  if (S_ISDIR(st.st_mode)) {
    RETURN_IF_ERROR(WalkLocal(*session, root.get(), "", resolved));
  } else {
    // Named as pkgdistctl names a single file: by the basename it was given.
    std::string base = std::filesystem::path(Lexical(path)).filename().string();
    RETURN_IF_ERROR(AddFile(*session, root.get(), base, resolved));
  }
  pkgdist::v1::ImportPackageRequest end;
  end.mutable_end();
  RETURN_IF_ERROR(session->Add(std::move(end)));
  ASSIGN_OR_RETURN(pkgdist::v1::Manifest manifest, session->Finish());
  return LocalImport{std::move(session), std::move(manifest), std::move(resolved)};
}

std::string PackageStore::TreeOf(const std::string& id_hex) const {
  return absl::StrCat(root_, "/packages/", id_hex, "/tree");
}

absl::Status PackageStore::Commit(ImportSession& s, const std::string& id_hex) {
  // Files were fsynced as they closed; make the names durable, then publish
  // the tree by one rename.
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(s.tree_, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) RETURN_IF_ERROR(FsyncDir(it->path().string()));
  }
  RETURN_IF_ERROR(FsyncDir(s.tree_));
  std::string dest_dir = absl::StrCat(root_, "/packages/", id_hex);
  if (std::filesystem::exists(TreeOf(id_hex), ec)) return absl::OkStatus();
  RETURN_IF_ERROR(MakeDirs(dest_dir));
  if (::rename(s.tree_.c_str(), TreeOf(id_hex).c_str()) != 0) {
    return ErrnoStatus(errno, "rename", s.tree_);
  }
  RETURN_IF_ERROR(FsyncDir(dest_dir));
  RETURN_IF_ERROR(FsyncDir(root_ + "/packages"));
  s.committed_ = false;  // The (now empty) upload dir is still removed.
  return absl::OkStatus();
}

absl::Status PackageStore::Delete(const std::string& id_hex) {
  return RemoveAll(absl::StrCat(root_, "/packages/", id_hex));
}

void PackageStore::RemoveOrphans(const absl::flat_hash_set<std::string>& known) {
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(root_ + "/packages", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::string id = it->path().filename().string();
    if (!known.contains(id)) {
      spdlog::info("removing content of unknown package {}", id);
      (void)RemoveAll(it->path().string());
    }
  }
}

}  // namespace pkgdist
