#include "controller/package_store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes));
  return ToHex(raw);
}

}  // namespace

ImportSession::ImportSession(std::string dir, ManifestLimits limits)
    : dir_(std::move(dir)), tree_(dir_ + "/tree"), limits_(limits) {}

ImportSession::~ImportSession() {
  file_.Reset();
  if (!committed_) (void)RemoveAll(dir_);
}

absl::Status ImportSession::CloseFile() {
  RETURN_IF_ERROR(Fsync(file_.get(), file_path_));
  file_.Reset();
  return builder_->EndFile();
}

absl::Status ImportSession::Add(const pkgdist::v1::ImportPackageRequest& msg) {
  using R = pkgdist::v1::ImportPackageRequest;
  if (ended_) return absl::InvalidArgumentError("message after end");
  if (builder_ == nullptr && msg.msg_case() != R::kHeader) {
    return absl::InvalidArgumentError("header: the first message must be the header");
  }
  if (builder_ != nullptr && builder_->in_file() && msg.msg_case() != R::kData) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: file ", file_path_, " got fewer bytes than its size"));
  }
  switch (msg.msg_case()) {
    case R::kHeader: {
      if (builder_ != nullptr) return absl::InvalidArgumentError("header: sent twice");
      RETURN_IF_ERROR(ValidateName(msg.header().name(), "header.name"));
      RETURN_IF_ERROR(ValidateName(msg.header().version(), "header.version"));
      builder_ = std::make_unique<ManifestBuilder>(msg.header().name(), msg.header().version(),
                                                   limits_);
      return MakeDirs(tree_);
    }
    case R::kEntry: {
      const auto& e = msg.entry();
      RETURN_IF_ERROR(ValidateRelativePath(e.path(), limits_.max_path_length));
      if (!paths_.insert(e.path()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("entry.path \"", e.path(), "\" appears twice"));
      }
      if (limits_.refuse_case_collisions &&
          !folded_paths_.insert(absl::AsciiStrToLower(e.path())).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "entry.path \"", e.path(), "\" collides with another path differing in case"));
      }
      std::string parent(ParentOf(e.path()));
      if (!parent.empty() && !dirs_.contains(parent)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "entry.path \"", e.path(), "\": its parent directory was not sent before it"));
      }
      std::string disk = tree_ + "/" + e.path();
      switch (e.type()) {
        case pkgdist::v1::ENTRY_TYPE_DIRECTORY:
          RETURN_IF_ERROR(builder_->AddDirectory(e.path(), e.mode()));
          if (::mkdir(disk.c_str(), 0755) != 0) return ErrnoStatus(errno, "mkdir", e.path());
          dirs_.insert(e.path());
          return absl::OkStatus();
        case pkgdist::v1::ENTRY_TYPE_SYMLINK:
          RETURN_IF_ERROR(builder_->AddSymlink(e.path(), e.link_target()));
          if (::symlink(e.link_target().c_str(), disk.c_str()) != 0) {
            return ErrnoStatus(errno, "symlink", e.path());
          }
          return absl::OkStatus();
        case pkgdist::v1::ENTRY_TYPE_FILE: {
          RETURN_IF_ERROR(builder_->BeginFile(e.path(), e.mode(), e.size()));
          int fd = ::open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
          if (fd < 0) return ErrnoStatus(errno, "create", e.path());
          file_ = UniqueFd(fd);
          file_path_ = e.path();
          file_written_ = 0;
          file_size_ = e.size();
          if (e.size() == 0) return CloseFile();
          return absl::OkStatus();
        }
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("entry.type of \"", e.path(), "\": must be file, directory or symlink"));
      }
    }
    case R::kData: {
      if (!builder_->in_file()) return absl::InvalidArgumentError("data: outside a file entry");
      const std::string& d = msg.data().data();
      RETURN_IF_ERROR(builder_->Append(d));
      RETURN_IF_ERROR(WriteAll(file_.get(), d.data(), d.size(), file_path_));
      file_written_ += d.size();
      if (file_written_ == file_size_) return CloseFile();
      return absl::OkStatus();
    }
    case R::kEnd:
      ended_ = true;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("empty message");
  }
}

absl::StatusOr<pkgdist::v1::Manifest> ImportSession::Finish() {
  if (!ended_) return absl::InvalidArgumentError("upload ended without its end message");
  if (builder_ == nullptr) return absl::InvalidArgumentError("header: missing");
  return builder_->Finish();
}

absl::StatusOr<std::unique_ptr<PackageStore>> PackageStore::Open(const std::string& state_dir,
                                                                 ManifestLimits limits) {
  RETURN_IF_ERROR(MakeDirs(state_dir + "/packages"));
  RETURN_IF_ERROR(RemoveAll(state_dir + "/uploads"));
  RETURN_IF_ERROR(MakeDirs(state_dir + "/uploads"));
  return std::unique_ptr<PackageStore>(new PackageStore(state_dir, limits));
}

absl::StatusOr<std::unique_ptr<ImportSession>> PackageStore::BeginImport() {
  std::string dir = absl::StrCat(root_, "/uploads/", RandomHex(8));
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

absl::Status ChunkReader::Read(uint32_t index, std::string* out) {
  if (index >= static_cast<uint32_t>(manifest_->chunks_size())) {
    return absl::OutOfRangeError(absl::StrCat("chunk ", index, " out of range"));
  }
  const auto& c = manifest_->chunks(static_cast<int>(index));
  const auto& f = manifest_->files(static_cast<int>(c.file()));
  std::string path = tree_ + "/" + f.path();
  if (open_file_ != static_cast<int>(c.file())) {
    fd_.Reset();
    open_file_ = -1;
    ASSIGN_OR_RETURN(fd_, OpenFile(path, O_RDONLY | O_NOFOLLOW));
    open_file_ = static_cast<int>(c.file());
  }
  // Same-size resizes (the common case) neither allocate nor zero-fill.
  out->resize(c.length());
  return PreadFull(fd_.get(), out->data(), c.length(), c.offset(), path);
}

}  // namespace pkgdist
