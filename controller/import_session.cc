#include "controller/import_session.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {

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

}  // namespace pkgdist
