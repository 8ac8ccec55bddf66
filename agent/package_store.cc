#include "agent/package_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::Manifest;

constexpr uint64_t kCopyFlushBytes = uint64_t{64} << 20;

// Local chunks are read from their source through a window of this size:
// consecutive chunks are mostly consecutive in their source too, and a file
// not in the page cache read 32 KiB at a time (a content-defined chunk)
// took 1.6x as long to copy as in 1 MiB reads (bench/analysis.md).
constexpr size_t kLocalReadWindow = size_t{1} << 20;

// One open source file of local chunks and the window of it last read.
class SourceWindow {
 public:
  // Opens `path` unless it is the file open now.
  absl::Status Open(const std::string& path) {
    if (path == path_ && fd_.get() >= 0) return absl::OkStatus();
    path_.clear();
    len_ = 0;
    ASSIGN_OR_RETURN(fd_, OpenFile(path, O_RDONLY | O_NOFOLLOW));
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) return ErrnoStatus(errno, "fstat", path);
    size_ = static_cast<uint64_t>(st.st_size);
    path_ = path;
    return absl::OkStatus();
  }
  // The `length` bytes at `offset`, from the window, or read with up to a
  // window's worth after them. Valid until the next call.
  absl::StatusOr<absl::string_view> Read(uint64_t offset, uint32_t length) {
    if (offset < off_ || offset + length > off_ + len_) {
      if (offset + length > size_) return absl::DataLossError(absl::StrCat(path_, " is too short"));
      len_ = static_cast<size_t>(std::max<uint64_t>(length, std::min<uint64_t>(kLocalReadWindow, size_ - offset)));
      buf_.resize(std::max(buf_.size(), len_));
      off_ = offset;
      if (absl::Status s = PreadFull(fd_.get(), buf_.data(), len_, offset, path_); !s.ok()) {
        len_ = 0;
        return s;
      }
    }
    return absl::string_view(buf_.data() + (offset - off_), length);
  }

 private:
  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string buf_;
  uint64_t off_ = 0;
  size_t len_ = 0;
};


// Names of the entries of `dir`; empty if it cannot be listed.
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The manifest at `path` if it parses and has id `package_id`.
std::optional<Manifest> LoadManifest(const std::string& path, const std::string& package_id) {
  auto data = ReadFileToString(path);
  Manifest m;
  if (!data.ok() || !m.ParseFromString(*data) || PackageId(m) != package_id) return std::nullopt;
  return m;
}

std::vector<Digest> ChunkHashes(const Manifest& m) {
  std::vector<Digest> out(static_cast<size_t>(m.chunks_size()));
  for (int i = 0; i < m.chunks_size(); ++i) {
    std::memcpy(out[static_cast<size_t>(i)].data(), m.chunks(i).sha256().data(), 32);
  }
  return out;
}

// The chunk index's source keys (agent/chunk_index.h).
std::string PublishedKey(const std::string& hex) { return "published:" + hex; }
std::string StagedKey(const std::string& hex) { return "staged:" + hex; }

absl::Status UnlinkIfPresent(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus(errno, "unlink", path);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PackageStore>> PackageStore::Open(std::string root,
                                                                 PackageStoreOptions options) {
  std::unique_ptr<PackageStore> store(new PackageStore(std::move(root), std::move(options)));
  for (const char* sub : {"staging", "packages", "index", "manifests", "trash"}) {
    RETURN_IF_ERROR(MakeDirs(JoinPath(store->root_, sub)));
  }
  if (::access(store->root_.c_str(), W_OK) != 0) return ErrnoStatus(errno, "access", store->root_);
  RETURN_IF_ERROR(store->Recover());
  store->BuildIndex();
  return store;
}

void PackageStore::BuildIndex() {
  size_t published = 0, staged = 0;
  for (const std::string& entry : ListDir(JoinPath(root_, "index"))) {
    size_t at = entry.find('@');
    if (at == std::string::npos) continue;
    std::string name = entry.substr(0, at), version = entry.substr(at + 1);
    if (!ValidateName(name, "name").ok() || !ValidateName(version, "version").ok()) continue;
    auto id = PublishedId(name, version);
    if (!id.ok() || !id->has_value()) continue;
    // LoadManifest checks the manifest against its id: a damaged one is
    // left out (its chunks are then simply received again).
    std::optional<Manifest> m = LoadManifest(ManifestPath(**id), **id);
    if (!m.has_value()) {
      spdlog::warn("chunk store: manifest of {}@{} unreadable or not its id; not reused", name,
                   version);
      continue;
    }
    index_.Add(PublishedKey(ToHex(**id)), PackageDir(name, version), *m);
    ++published;
  }
  for (const auto& [hex, m] : ListStaging()) {
    index_.Add(StagedKey(hex), JoinPath(StagingDir(hex), "tree"), m);
    ++staged;
  }
  spdlog::info("chunk store: {} distinct chunks in {} published and {} staged packages",
               index_.chunk_count(), published, staged);
}

absl::Status PackageStore::Recover() {
  for (const std::string& name : ListDir(JoinPath(root_, "trash"))) {
    RETURN_IF_ERROR(RemoveTree(JoinPath(JoinPath(root_, "trash"), name)));
  }
  absl::flat_hash_map<std::string, bool> keep;
  for (const auto& [hex, m] : ListStaging()) {
    ASSIGN_OR_RETURN(auto published, PublishedId(m.name(), m.version()));
    keep[hex] = !(published.has_value() && ToHex(*published) == hex);
  }
  for (const std::string& hex : ListDir(JoinPath(root_, "staging"))) {
    if (keep[hex]) continue;
    // Published already (a crash came after the rename), or unusable.
    spdlog::info("removing leftover staging directory {}", hex);
    RETURN_IF_ERROR(RemoveTree(StagingDir(hex)));
  }
  return absl::OkStatus();
}

std::string PackageStore::PackageDir(const std::string& name, const std::string& version) const {
  return absl::StrCat(root_, "/packages/", name, "/", version);
}

std::string PackageStore::StagingDir(const std::string& package_id_hex) const {
  return absl::StrCat(root_, "/staging/", package_id_hex);
}

std::string PackageStore::IndexPath(const std::string& name, const std::string& version) const {
  return absl::StrCat(root_, "/index/", name, "@", version);
}

std::string PackageStore::ManifestPath(const std::string& package_id) const {
  return absl::StrCat(root_, "/manifests/", ToHex(package_id), ".pb");
}

absl::StatusOr<std::optional<std::string>> PackageStore::PublishedId(const std::string& name,
                                                                     const std::string& version) {
  absl::ReaderMutexLock l(&mu_);
  return PublishedIdLocked(name, version);
}

absl::StatusOr<std::optional<std::string>> PackageStore::PublishedIdLocked(
    const std::string& name, const std::string& version) {
  auto content = ReadFileToString(IndexPath(name, version));
  if (absl::IsNotFound(content.status())) return std::optional<std::string>();
  if (!content.ok()) return content.status();
  std::optional<std::string> id = FromHex(absl::StripAsciiWhitespace(*content));
  if (!id.has_value() || !IsDirectory(PackageDir(name, version))) return std::optional<std::string>();
  return id;
}

std::optional<Manifest> PackageStore::PublishedManifest(const std::string& package_id) {
  absl::ReaderMutexLock l(&mu_);
  std::optional<Manifest> m = LoadManifest(ManifestPath(package_id), package_id);
  if (!m.has_value()) return std::nullopt;
  auto id = PublishedIdLocked(m->name(), m->version());
  if (!id.ok() || *id != package_id) return std::nullopt;
  return m;
}

std::vector<std::pair<std::string, Manifest>> PackageStore::ListStaging() const {
  std::vector<std::pair<std::string, Manifest>> out;
  for (const std::string& hex : ListDir(JoinPath(root_, "staging"))) {
    std::optional<std::string> id = FromHex(hex);
    if (!id.has_value()) continue;
    std::optional<Manifest> m = LoadManifest(JoinPath(StagingDir(hex), "manifest.pb"), *id);
    if (m.has_value()) out.emplace_back(hex, std::move(*m));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Staging>> PackageStore::OpenStaging(Manifest manifest,
                                                                   const std::string& package_id) {
  const std::string hex = ToHex(package_id);
  ASSIGN_OR_RETURN(std::unique_ptr<Staging> staging, Staging::Open(StagingDir(hex), std::move(manifest)));
  index_.Add(StagedKey(hex), staging->tree_dir(), staging->manifest());
  return staging;
}

absl::Status PackageStore::DiscardStaging(const std::string& package_id) {
  const std::string hex = ToHex(package_id);
  index_.Remove(StagedKey(hex));
  return RemoveTree(StagingDir(hex));
}

std::vector<uint32_t> PackageStore::LocalChunks(const Staging& staging) const {
  const Manifest& m = staging.manifest();
  const std::string self = StagedKey(std::filesystem::path(staging.dir()).filename().string());
  std::vector<uint32_t> out;
  for (uint32_t index : staging.Missing()) {
    const auto& c = m.chunks(static_cast<int>(index));
    if (!index_.Find(c.sha256(), c.length(), self).empty()) out.push_back(index);
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> PackageStore::CopyLocalChunks(
    Staging& staging, const std::vector<uint32_t>& local,
    const std::function<absl::Status()>& flush) {
  const Manifest& m = staging.manifest();
  const std::string self = StagedKey(std::filesystem::path(staging.dir()).filename().string());
  std::vector<uint32_t> failed;
  SourceWindow source;
  uint64_t unflushed = 0;
  for (uint32_t index : local) {
    if (staging.IsReceived(index)) continue;  // the same chunk twice in this package
    const auto& c = m.chunks(static_cast<int>(index));
    bool copied = false;
    for (const ChunkIndex::Location& at : index_.Find(c.sha256(), c.length(), self)) {
      if (!source.Open(at.path).ok()) continue;  // removed meanwhile: try the next place
      auto bytes = source.Read(at.offset, c.length());
      if (!bytes.ok()) continue;
      auto written = staging.WriteChunk(index, *bytes);
      if (absl::IsDataLoss(written.status())) continue;  // this copy is damaged or unwritten
      RETURN_IF_ERROR(written.status());
      copied = true;
      break;
    }
    if (!copied) {
      failed.push_back(index);
      continue;
    }
    unflushed += c.length();
    if (unflushed >= kCopyFlushBytes) {
      RETURN_IF_ERROR(flush());
      unflushed = 0;
    }
  }
  RETURN_IF_ERROR(flush());
  return failed;
}

absl::Status PackageStore::CheckFreeSpace(uint64_t needed) const {
  ASSIGN_OR_RETURN(uint64_t free, options_.free_bytes(root_));
  if (needed + options_.reserve_bytes <= free) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "not enough disk space on ", root_, ": the package needs ", needed,
      " more bytes plus a reserve of ", options_.reserve_bytes, ", but only ", free,
      " bytes are free"));
}

absl::Status PackageStore::MoveToTrash(const std::string& path) {
  std::string trash = absl::StrCat(root_, "/trash/", absl::ToUnixNanos(absl::Now()), "-",
                                   ++trash_seq_);
  RETURN_IF_ERROR(RenameDurable(path, trash));
  return RemoveTree(trash);
}

absl::Status PackageStore::Publish(Staging& staging, const std::string& package_id) {
  RETURN_IF_ERROR(staging.Seal());
  const Manifest& m = staging.manifest();
  const std::string hex = ToHex(package_id);
  {
    absl::MutexLock l(&mu_);
    ASSIGN_OR_RETURN(auto current, PublishedIdLocked(m.name(), m.version()));
    if (current.has_value() && *current != package_id) {
      return absl::AlreadyExistsError(absl::StrCat(m.name(), "@", m.version(),
                                                   " is already published with id ",
                                                   ToHex(*current)));
    }
    if (!current.has_value()) {
      std::string dest = PackageDir(m.name(), m.version());
      RETURN_IF_ERROR(MakeDirs(JoinPath(JoinPath(root_, "packages"), m.name())));
      RETURN_IF_ERROR(FsyncDir(JoinPath(root_, "packages")));
      RETURN_IF_ERROR(WriteFileAtomic(ManifestPath(package_id), m.SerializeAsString()));
      RETURN_IF_ERROR(WriteFileAtomic(IndexPath(m.name(), m.version()), hex + "\n"));
      // Leftovers of an interrupted publish or remove; never a published tree.
      if (PathExists(dest)) RETURN_IF_ERROR(MoveToTrash(dest));
      RETURN_IF_ERROR(RenameDurable(staging.tree_dir(), dest));
      index_.Add(PublishedKey(hex), dest, m);
    }
  }
  index_.Remove(StagedKey(hex));
  spdlog::info("published {}@{} ({})", m.name(), m.version(), hex);
  RETURN_IF_ERROR(RemoveTree(staging.dir()));
  return FsyncDir(JoinPath(root_, "staging"));
}

uint64_t PackageStore::PublishedSize(const std::string& package_id, const std::string& dir) const {
  if (auto m = LoadManifest(ManifestPath(package_id), package_id)) return m->total_size();
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) total += it->file_size(ec);
  }
  return total;
}

absl::StatusOr<pkgdist::v1::InventoryResponse> PackageStore::Inventory() {
  pkgdist::v1::InventoryResponse resp;
  absl::flat_hash_map<std::string, bool> published_ids;
  {
    absl::ReaderMutexLock l(&mu_);
    for (const std::string& entry : ListDir(JoinPath(root_, "index"))) {
      size_t at = entry.find('@');
      if (at == std::string::npos) continue;
      std::string name = entry.substr(0, at), version = entry.substr(at + 1);
      if (!ValidateName(name, "name").ok() || !ValidateName(version, "version").ok()) continue;
      ASSIGN_OR_RETURN(auto id, PublishedIdLocked(name, version));
      if (!id.has_value()) continue;
      auto* p = resp.add_published();
      p->set_name(name);
      p->set_version(version);
      p->set_package_id(*id);
      p->set_size(PublishedSize(*id, PackageDir(name, version)));
      published_ids[*id] = true;
    }
  }
  for (const auto& [hex, m] : ListStaging()) {
    std::string id = *FromHex(hex);
    if (published_ids.contains(id)) continue;  // publish finishing right now
    std::vector<Digest> hashes = ChunkHashes(m);
    auto have = ReadJournal(JoinPath(StagingDir(hex), "journal"), hashes);
    if (!have.ok()) {
      spdlog::warn("inventory: skipping staging {}: {}", hex, have.status());
      continue;
    }
    uint64_t bytes_have = 0;
    for (uint32_t index : *have) bytes_have += m.chunks(static_cast<int>(index)).length();
    auto* p = resp.add_partial();
    p->set_name(m.name());
    p->set_version(m.version());
    p->set_package_id(id);
    p->set_bytes_total(m.total_size());
    p->set_bytes_have(bytes_have);
    p->set_chunks_total(static_cast<uint32_t>(m.chunks_size()));
    p->set_chunks_have(static_cast<uint32_t>(have->size()));
  }
  return resp;
}

absl::StatusOr<bool> PackageStore::Remove(const std::string& name, const std::string& version,
                                          absl::Duration lock_wait) {
  std::vector<std::string> staged;
  for (const auto& [hex, m] : ListStaging()) {
    if (m.name() == name && m.version() == version) staged.push_back(hex);
  }
  std::vector<std::unique_ptr<TransferLocks::Lease>> leases;
  for (const std::string& hex : staged) {
    ASSIGN_OR_RETURN(auto lease, locks_.Acquire(hex, nullptr, lock_wait));
    leases.push_back(std::move(lease));
  }
  absl::MutexLock l(&mu_);
  bool removed = false;
  std::string dir = PackageDir(name, version);
  if (PathExists(dir)) {
    RETURN_IF_ERROR(MoveToTrash(dir));
    removed = true;
  }
  std::string index = IndexPath(name, version);
  auto content = ReadFileToString(index);
  if (content.ok()) {
    if (auto id = FromHex(absl::StripAsciiWhitespace(*content))) {
      index_.Remove(PublishedKey(ToHex(*id)));
      RETURN_IF_ERROR(UnlinkIfPresent(ManifestPath(*id)));
    }
    RETURN_IF_ERROR(UnlinkIfPresent(index));
    RETURN_IF_ERROR(FsyncDir(JoinPath(root_, "index")));
  }
  std::string name_dir = JoinPath(JoinPath(root_, "packages"), name);
  if (IsDirectory(name_dir)) (void)::rmdir(name_dir.c_str());  // only if now empty
  for (const std::string& hex : staged) {
    index_.Remove(StagedKey(hex));
    RETURN_IF_ERROR(RemoveTree(StagingDir(hex)));
    removed = true;
  }
  if (removed) spdlog::info("removed {}@{}", name, version);
  return removed;
}

}  // namespace pkgdist
