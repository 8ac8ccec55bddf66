#include "agent/staging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/disk_util.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::FileEntry;
using pkgdist::v1::Manifest;

// Open descriptors kept per staging tree (files written or re-hashed).
constexpr size_t kOpenFiles = 64;

absl::Status Chmod(const std::string& path, mode_t mode) {
  if (::chmod(path.c_str(), mode) != 0) return ErrnoStatus(errno, "chmod", path);
  return absl::OkStatus();
}

// Applies `mode` to directory `path` and fsyncs it (its entries and its
// mode), through one descriptor opened while the directory is still ours.
absl::Status SetModeAndSyncDir(const std::string& path, mode_t mode) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  if (::fchmod(fd.get(), mode) != 0) return ErrnoStatus(errno, "chmod", path);
  return Fsync(fd.get(), path);
}

// Creates directory `path` (mode 0700) unless it is already one; anything
// else in its place is removed first.
absl::Status PrepareDirectory(const std::string& path, bool* created) {
  if (PathExists(path) && !IsDirectory(path)) RETURN_IF_ERROR(RemoveTree(path));
  if (::mkdir(path.c_str(), 0700) == 0) {
    *created = true;
    return absl::OkStatus();
  }
  if (errno != EEXIST) return ErrnoStatus(errno, "mkdir", path);
  // It may have been sealed read-only by an earlier Commit that did not
  // finish publishing.
  return Chmod(path, 0700);
}

// Writes manifest.pb unless an identical manifest is already there.
absl::Status WriteManifest(const std::string& path, const Manifest& m) {
  auto existing = ReadFileToString(path);
  if (existing.ok()) {
    Manifest old;
    if (old.ParseFromString(*existing) && PackageId(old) == PackageId(m)) {
      return absl::OkStatus();
    }
  }
  return WriteFileAtomic(path, m.SerializeAsString());
}

}  // namespace

Staging::Staging(std::string dir, Manifest manifest)
    : dir_(std::move(dir)),
      manifest_(std::move(manifest)),
      files_(kOpenFiles, [this](uint32_t file) { return EntryPath(static_cast<int>(file)); }) {
  hashes_.resize(static_cast<size_t>(manifest_.chunks_size()));
  for (int i = 0; i < manifest_.chunks_size(); ++i) {
    std::memcpy(hashes_[static_cast<size_t>(i)].data(), manifest_.chunks(i).sha256().data(), 32);
  }
  state_.assign(hashes_.size(), ChunkState::kMissing);
  missing_count_ = static_cast<uint32_t>(state_.size());
}

Staging::~Staging() = default;

absl::StatusOr<std::unique_ptr<Staging>> Staging::Open(std::string dir, Manifest manifest) {
  std::unique_ptr<Staging> s(new Staging(std::move(dir), std::move(manifest)));
  RETURN_IF_ERROR(MakeDirs(s->dir_));
  RETURN_IF_ERROR(WriteManifest(JoinPath(s->dir_, "manifest.pb"), s->manifest_));
  RETURN_IF_ERROR(s->PrepareTree());
  RETURN_IF_ERROR(s->LoadJournal());
  // One write buffer per MiB still to receive, up to the writer's count: a
  // large package's agent holds the same memory whatever the disk's speed,
  // a small one's no more than it needs.
  uint64_t buffers = (s->missing_bytes() + kMaxChunkSize - 1) / kMaxChunkSize;
  RETURN_IF_ERROR(s->direct_.Reserve(static_cast<int>(std::min<uint64_t>(buffers, DirectWriter::kDefaultBuffers))));
  return s;
}

std::string Staging::tree_dir() const { return JoinPath(dir_, "tree"); }

std::string Staging::EntryPath(int file_index) const {
  return JoinPath(tree_dir(), manifest_.files(file_index).path());
}

absl::Status Staging::PrepareFile(const std::string& path, uint64_t size, bool* created) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      RETURN_IF_ERROR(RemoveTree(path));
    } else if ((st.st_mode & 07777) != 0600) {
      RETURN_IF_ERROR(Chmod(path, 0600));
    }
  } else {
    *created = true;
  }
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600));
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (static_cast<uint64_t>(st.st_size) != size &&
      ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, "truncate", path);
  }
  return absl::OkStatus();
}

absl::Status Staging::PrepareTree() {
  bool created = false;
  RETURN_IF_ERROR(PrepareDirectory(tree_dir(), &created));
  for (int i = 0; i < manifest_.files_size(); ++i) {
    const FileEntry& f = manifest_.files(i);
    std::string path = EntryPath(i);
    switch (f.type()) {
      case pkgdist::v1::ENTRY_TYPE_DIRECTORY:
        RETURN_IF_ERROR(PrepareDirectory(path, &created));
        break;
      case pkgdist::v1::ENTRY_TYPE_FILE:
        RETURN_IF_ERROR(PrepareFile(path, f.size(), &created));
        break;
      default:  // Symlinks are made by Seal(); clear the place for them.
        RETURN_IF_ERROR(RemoveTree(path));
        break;
    }
  }
  if (!created) return absl::OkStatus();
  // New names must be durable before any chunk in them is journaled.
  for (int i = 0; i < manifest_.files_size(); ++i) {
    if (manifest_.files(i).type() == pkgdist::v1::ENTRY_TYPE_DIRECTORY) {
      RETURN_IF_ERROR(FsyncDir(EntryPath(i)));
    }
  }
  RETURN_IF_ERROR(FsyncDir(tree_dir()));
  return FsyncDir(dir_);
}

absl::StatusOr<bool> Staging::ChunkOnDiskMatches(uint32_t index, std::string& buf) {
  const auto& c = manifest_.chunks(static_cast<int>(index));
  ASSIGN_OR_RETURN(int fd, files_.Get(c.file(), /*for_write=*/false));
  buf.resize(c.length());
  absl::Status s = PreadFull(fd, buf.data(), buf.size(), c.offset(),
                             manifest_.files(static_cast<int>(c.file())).path());
  if (absl::IsDataLoss(s)) return false;  // file shorter than the chunk's end
  RETURN_IF_ERROR(s);
  return Sha256Of(buf) == hashes_[index];
}

absl::Status Staging::LoadJournal() {
  ASSIGN_OR_RETURN(journal_, Journal::Open(JoinPath(dir_, "journal"), hashes_));
  std::string buf;
  uint32_t damaged = 0;
  for (uint32_t index : journal_->replayed()) {
    ASSIGN_OR_RETURN(bool ok, ChunkOnDiskMatches(index, buf));
    if (!ok) {
      ++damaged;
      continue;
    }
    state_[index] = ChunkState::kDurable;
    ++durable_count_;
    --missing_count_;
  }
  if (damaged > 0) {
    spdlog::warn("staging {}: {} journaled chunks no longer match on disk; needed again", dir_,
                 damaged);
  }
  return absl::OkStatus();
}

bool Staging::IsDurable(uint32_t index) const {
  return index < state_.size() && state_[index] == ChunkState::kDurable;
}

bool Staging::IsReceived(uint32_t index) const {
  return index < state_.size() && state_[index] != ChunkState::kMissing;
}

std::vector<uint32_t> Staging::Missing() const {
  std::vector<uint32_t> out;
  out.reserve(missing_count_);
  for (uint32_t i = 0; i < state_.size(); ++i) {
    if (state_[i] == ChunkState::kMissing) out.push_back(i);
  }
  return out;
}

uint64_t Staging::missing_bytes() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < state_.size(); ++i) {
    if (state_[i] == ChunkState::kMissing) total += manifest_.chunks(static_cast<int>(i)).length();
  }
  return total;
}

absl::StatusOr<Staging::WriteResult> Staging::WriteChunk(uint32_t index, const Pieces& data) {
  RETURN_IF_ERROR(broken_);
  if (absl::Status s = direct_.status(); !s.ok()) {
    broken_ = s;  // a queued write or flush failed: stop at once
    return s;
  }
  if (index >= state_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk index ", index, " out of range (",
                                                   state_.size(), " chunks)"));
  }
  const auto& c = manifest_.chunks(static_cast<int>(index));
  if (data.size() != c.length()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": ", data.size(),
                                                   " bytes, manifest says ", c.length()));
  }
  if (state_[index] != ChunkState::kMissing) return WriteResult::kAlreadyReceived;
  if (Sha256Of(data.pieces()) != hashes_[index]) {
    return absl::DataLossError(absl::StrCat("chunk ", index, ": sha256 mismatch"));
  }
  // The switch waits for the previous file's queued writes and for every
  // started flush, so that an eviction from files_ (which fsyncs and closes
  // the evicted file) covers those writes and races no flush of that file.
  std::string path = EntryPath(static_cast<int>(c.file()));
  absl::Status s = direct_.SwitchTo(path);
  absl::StatusOr<int> fd = s.ok() ? files_.Get(c.file(), /*for_write=*/true) : s;
  if (fd.ok()) s = direct_.WriteAt(path, *fd, data.pieces(), c.offset());
  if (!s.ok() || !fd.ok()) {
    // A failed queued write may belong to an earlier chunk, and an evicted
    // file may have failed to sync: this session's writes are not trusted.
    broken_ = s.ok() ? fd.status() : s;
    return broken_;
  }
  state_[index] = ChunkState::kReceived;
  --missing_count_;
  unflushed_.push_back(index);
  unflushed_bytes_ += data.size();
  return WriteResult::kWritten;
}

absl::Status Staging::StartFlush(OnDurable on_durable) {
  RETURN_IF_ERROR(broken_);
  if (unflushed_.empty()) return absl::OkStatus();
  std::sort(unflushed_.begin(), unflushed_.end());
  std::vector<JournalEntry> entries;
  entries.reserve(unflushed_.size());
  for (uint32_t index : unflushed_) entries.push_back(JournalEntry{index, hashes_[index]});
  auto dirty = files_.TakeDirty();
  if (!dirty.ok()) {
    broken_ = dirty.status();
    return broken_;
  }
  // std::function needs a copyable task: the descriptors are shared.
  auto files = std::make_shared<std::vector<FdCache::Dirty>>(std::move(dirty).value());
  uint64_t ticket = direct_.Then([this, files, entries = std::move(entries),
                                  on_durable = std::move(on_durable),
                                  metrics = metrics_]() -> absl::Status {
    absl::Time start = absl::Now();
    for (const FdCache::Dirty& f : *files) RETURN_IF_ERROR(Fsync(f.fd.get(), f.path));
    absl::Time synced = absl::Now();
    RETURN_IF_ERROR(journal_->Append(entries));
    if (metrics != nullptr) {
      metrics->DataSynced(synced - start);
      metrics->JournalSynced(absl::Now() - synced);
    }
    if (on_durable) {
      std::vector<uint32_t> indices;
      indices.reserve(entries.size());
      for (const JournalEntry& e : entries) indices.push_back(e.index);
      on_durable(indices);
    }
    return absl::OkStatus();
  });
  flushing_.push_back(Flushing{ticket, std::exchange(unflushed_, {}), unflushed_bytes_});
  flushing_bytes_ += std::exchange(unflushed_bytes_, 0);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<uint32_t>>> Staging::Collect(Await await) {
  RETURN_IF_ERROR(broken_);
  absl::Status s;
  if (!flushing_.empty() && await != Await::kNone) {
    s = direct_.Wait(await == Await::kAll ? flushing_.back().ticket : flushing_.front().ticket);
  }
  std::vector<std::vector<uint32_t>> out;
  while (s.ok() && !flushing_.empty()) {
    absl::StatusOr<bool> done = direct_.Done(flushing_.front().ticket);
    if (!done.ok()) s = done.status();
    if (!s.ok() || !*done) break;
    std::vector<uint32_t>& indices = flushing_.front().indices;
    for (uint32_t index : indices) state_[index] = ChunkState::kDurable;
    durable_count_ += static_cast<uint32_t>(indices.size());
    flushing_bytes_ -= flushing_.front().bytes;
    out.push_back(std::move(indices));
    flushing_.pop_front();
  }
  if (!s.ok()) {
    // After a failed fsync the page cache may have dropped the data: never
    // trust this session's unjournaled writes again.
    broken_ = s;
    return s;
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> Staging::Flush() {
  RETURN_IF_ERROR(StartFlush());
  ASSIGN_OR_RETURN(auto batches, Collect(Await::kAll));
  std::vector<uint32_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status Staging::FinishFile(const FileEntry& f) {
  // Every chunk was verified against its digest before it became durable,
  // and the manifest's file digest is the digest of those chunk digests
  // (checked by ValidateManifest at the Offer): the content is verified
  // without reading it again. What is left: size, mode, durability.
  std::string path = JoinPath(tree_dir(), f.path());
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_NOFOLLOW));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (static_cast<uint64_t>(st.st_size) != f.size()) {
    return absl::DataLossError(absl::StrCat("file \"", f.path(), "\": ", st.st_size,
                                            " bytes on disk, manifest says ", f.size()));
  }
  if (::fchmod(fd.get(), static_cast<mode_t>(f.mode() & 0777)) != 0) {
    return ErrnoStatus(errno, "chmod", path);
  }
  return Fsync(fd.get(), path);
}

absl::Status Staging::Seal() {
  RETURN_IF_ERROR(broken_);
  if (durable_count_ != state_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_.size() - durable_count_, " of ", state_.size(), " chunks are not yet durable"));
  }
  RETURN_IF_ERROR(direct_.Close());
  RETURN_IF_ERROR(files_.CloseAll());
  for (const FileEntry& f : manifest_.files()) {
    if (f.type() == pkgdist::v1::ENTRY_TYPE_FILE) RETURN_IF_ERROR(FinishFile(f));
  }
  for (const FileEntry& f : manifest_.files()) {
    if (f.type() != pkgdist::v1::ENTRY_TYPE_SYMLINK) continue;
    std::string path = JoinPath(tree_dir(), f.path());
    RETURN_IF_ERROR(RemoveTree(path));
    if (::symlink(f.link_target().c_str(), path.c_str()) != 0) {
      return ErrnoStatus(errno, "symlink", path);
    }
  }
  // Parents are listed before children, so reverse order is deepest first:
  // a directory is fsynced and closed to writes after everything below it.
  for (int i = manifest_.files_size() - 1; i >= 0; --i) {
    const FileEntry& f = manifest_.files(i);
    if (f.type() != pkgdist::v1::ENTRY_TYPE_DIRECTORY) continue;
    RETURN_IF_ERROR(SetModeAndSyncDir(EntryPath(i), static_cast<mode_t>(f.mode() & 0777)));
  }
  return SetModeAndSyncDir(tree_dir(), 0755);
}

}  // namespace pkgdist
