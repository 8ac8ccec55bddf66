#include "controller/package_store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "absl/strings/str_cat.h"
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

}  // namespace

absl::StatusOr<std::unique_ptr<PackageStore>> PackageStore::Open(const std::string& state_dir,
                                                                 ManifestLimits limits) {
  RETURN_IF_ERROR(MakeDirs(state_dir + "/packages"));
  RETURN_IF_ERROR(RemoveAll(state_dir + "/uploads"));
  RETURN_IF_ERROR(MakeDirs(state_dir + "/uploads"));
  return std::unique_ptr<PackageStore>(new PackageStore(state_dir, limits));
}

absl::StatusOr<std::unique_ptr<ImportSession>> PackageStore::BeginImport() {
  ASSIGN_OR_RETURN(std::string name, RandomHex(8));
  std::string dir = absl::StrCat(root_, "/uploads/", name);
  RETURN_IF_ERROR(MakeDirs(dir));
  return std::unique_ptr<ImportSession>(new ImportSession(dir, limits_));
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
