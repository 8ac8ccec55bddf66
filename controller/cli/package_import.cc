#include "controller/cli/package_import.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "shared/file_util.h"
#include "shared/manifest.h"
#include "shared/status_macros.h"

namespace pkgdist::cli {
namespace {

using pkgdist::v1::ImportPackageRequest;

ImportItem MakeItem(const std::string& disk_path, const std::string& rel,
                    pkgdist::v1::EntryType type, uint32_t mode) {
  ImportItem item;
  item.disk_path = disk_path;
  item.entry.set_path(rel);
  item.entry.set_type(type);
  item.entry.set_mode(mode & 0777);
  return item;
}

// Appends `disk_path` (package path `rel`) and, for a directory, what is
// below it, names in byte order.
absl::Status Walk(const std::string& disk_path, const std::string& rel,
                  std::vector<ImportItem>& out) {
  struct stat st;
  if (::lstat(disk_path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", disk_path);
  if (S_ISREG(st.st_mode)) {
    out.push_back(MakeItem(disk_path, rel, pkgdist::v1::ENTRY_TYPE_FILE, st.st_mode));
    out.back().entry.set_size(static_cast<uint64_t>(st.st_size));
    return absl::OkStatus();
  }
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(disk_path, ec);
    if (ec) return ErrnoStatus(ec.value(), "readlink", disk_path);
    out.push_back(MakeItem(disk_path, rel, pkgdist::v1::ENTRY_TYPE_SYMLINK, 0777));
    out.back().entry.set_link_target(target.string());
    return absl::OkStatus();
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        disk_path, ": not a regular file, directory or symlink (devices, FIFOs and sockets "
                   "cannot be packaged)"));
  }
  if (!rel.empty()) {
    out.push_back(MakeItem(disk_path, rel, pkgdist::v1::ENTRY_TYPE_DIRECTORY, st.st_mode));
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(disk_path, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) return ErrnoStatus(ec.value(), "list", disk_path);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    RETURN_IF_ERROR(Walk(disk_path + "/" + n, rel.empty() ? n : rel + "/" + n, out));
  }
  return absl::OkStatus();
}

// Adds `entry` to the client's manifest, as the controller does with it.
absl::Status AddToManifest(ManifestBuilder& builder, const pkgdist::v1::ImportEntry& e) {
  switch (e.type()) {
    case pkgdist::v1::ENTRY_TYPE_DIRECTORY: return builder.AddDirectory(e.path(), e.mode());
    case pkgdist::v1::ENTRY_TYPE_SYMLINK: return builder.AddSymlink(e.path(), e.link_target());
    default: return builder.BeginFile(e.path(), e.mode(), e.size());
  }
}

// Sends the content of one regular file: exactly entry.size bytes.
absl::Status SendContent(ImportUpload& upload, const ImportItem& item, uint64_t& sent,
                         const ImportProgressFn& progress, ManifestBuilder* builder,
                         bool& stream_broken) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(item.disk_path, O_RDONLY));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  ImportPackageRequest req;
  std::string* buf = req.mutable_data()->mutable_data();
  uint64_t left = item.entry.size();
  while (left > 0) {
    buf->resize(static_cast<size_t>(std::min<uint64_t>(left, kImportPieceBytes)));
    size_t filled = 0;
    while (filled < buf->size()) {
      ssize_t n = ::read(fd.get(), buf->data() + filled, buf->size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(errno, "read", item.disk_path);
      if (n == 0) {
        return absl::DataLossError(absl::StrCat(item.disk_path, " shrank while being read"));
      }
      filled += static_cast<size_t>(n);
    }
    if (builder != nullptr) RETURN_IF_ERROR(builder->Append(*buf));
    if (!upload.Write(req)) {
      stream_broken = true;
      return absl::OkStatus();
    }
    left -= buf->size();
    sent += buf->size();
    if (progress) progress(sent);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<ImportItem>> CollectImportItems(const std::string& root) {
  std::vector<ImportItem> items;
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", root);
  if (S_ISDIR(st.st_mode)) {
    RETURN_IF_ERROR(Walk(root, "", items));
  } else if (S_ISREG(st.st_mode)) {
    std::string base = std::filesystem::path(root).filename().string();
    items.push_back(MakeItem(root, base, pkgdist::v1::ENTRY_TYPE_FILE, st.st_mode));
    items.back().entry.set_size(static_cast<uint64_t>(st.st_size));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        root, ": not a regular file or directory (devices, FIFOs and sockets cannot be "
              "packaged)"));
  }
  return items;
}

uint64_t TotalImportBytes(const std::vector<ImportItem>& items) {
  uint64_t total = 0;
  for (const auto& item : items) {
    if (item.entry.type() == pkgdist::v1::ENTRY_TYPE_FILE) total += item.entry.size();
  }
  return total;
}

absl::StatusOr<pkgdist::v1::PackageInfo> UploadPackage(AdminClient& client,
                                                       const std::string& name,
                                                       const std::string& version,
                                                       const std::vector<ImportItem>& items,
                                                       const ImportProgressFn& progress,
                                                       const SignManifestFn& sign) {
  std::unique_ptr<ImportUpload> upload = client.StartImport();
  std::unique_ptr<ManifestBuilder> builder;
  if (sign) builder = std::make_unique<ManifestBuilder>(name, version);
  auto fail = [&upload](absl::Status s) {
    upload->Cancel();
    return s;
  };
  ImportPackageRequest req;
  req.mutable_header()->set_name(name);
  req.mutable_header()->set_version(version);
  bool broken = !upload->Write(req);
  uint64_t sent = 0;
  for (size_t i = 0; i < items.size() && !broken; ++i) {
    if (builder != nullptr) {
      if (absl::Status s = AddToManifest(*builder, items[i].entry); !s.ok()) return fail(s);
    }
    *req.mutable_entry() = items[i].entry;
    if (!upload->Write(req)) {
      broken = true;
      break;
    }
    if (items[i].entry.type() != pkgdist::v1::ENTRY_TYPE_FILE) continue;
    absl::Status s = SendContent(*upload, items[i], sent, progress, builder.get(), broken);
    if (s.ok() && builder != nullptr && !broken) s = builder->EndFile();
    if (!s.ok()) return fail(s);
  }
  if (!broken) {
    req.mutable_end();
    if (builder != nullptr) {
      auto manifest = builder->Finish();
      if (!manifest.ok()) return fail(manifest.status());
      auto signature = sign(*manifest);
      if (!signature.ok()) return fail(signature.status());
      *req.mutable_end()->mutable_signature() = *std::move(signature);
    }
    // A failed write shows in Finish's status.
    upload->Write(req);
  }
  return upload->Finish();
}

}  // namespace pkgdist::cli
