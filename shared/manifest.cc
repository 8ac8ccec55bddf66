#include "shared/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <filesystem>
#include <thread>
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "shared/file_util.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {

using pkgdist::v1::EntryType;
using pkgdist::v1::Manifest;

ManifestBuilder::ManifestBuilder(std::string name, std::string version, ManifestLimits limits,
                                 Chunking chunking)
    : limits_(limits),
      chunk_size_(std::clamp<uint32_t>(chunking.fixed_size, 1, kMaxChunkSize)) {
  if (chunking.content_defined) cdc_.emplace(chunking.params);
  manifest_.set_name(std::move(name));
  manifest_.set_version(std::move(version));
}

absl::Status ManifestBuilder::AddEntry(absl::string_view path, EntryType type, uint32_t mode) {
  if (in_file_) return absl::FailedPreconditionError("previous file not finished");
  RETURN_IF_ERROR(ValidateRelativePath(path, limits_.max_path_length));
  if (static_cast<uint64_t>(manifest_.files_size()) >= limits_.max_files) {
    return absl::InvalidArgumentError(
        absl::StrCat("package has more than ", limits_.max_files, " entries (max_files)"));
  }
  auto* f = manifest_.add_files();
  f->set_path(std::string(path));
  f->set_type(type);
  f->set_mode(mode & 0777);
  return absl::OkStatus();
}

absl::Status ManifestBuilder::AddDirectory(absl::string_view path, uint32_t mode) {
  return AddEntry(path, pkgdist::v1::ENTRY_TYPE_DIRECTORY, mode);
}

absl::Status ManifestBuilder::AddSymlink(absl::string_view path, absl::string_view target) {
  RETURN_IF_ERROR(ValidateLinkTarget(path, target));
  RETURN_IF_ERROR(AddEntry(path, pkgdist::v1::ENTRY_TYPE_SYMLINK, 0777));
  manifest_.mutable_files()->rbegin()->set_link_target(std::string(target));
  return absl::OkStatus();
}

absl::Status ManifestBuilder::BeginFile(absl::string_view path, uint32_t mode, uint64_t size) {
  if (manifest_.total_size() + size > limits_.max_total_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "package is larger than ", limits_.max_total_size, " bytes (max_total_size)"));
  }
  RETURN_IF_ERROR(AddEntry(path, pkgdist::v1::ENTRY_TYPE_FILE, mode));
  manifest_.mutable_files()->rbegin()->set_size(size);
  manifest_.set_total_size(manifest_.total_size() + size);
  in_file_ = true;
  file_remaining_ = size;
  file_offset_ = 0;
  chunk_fill_ = 0;
  return absl::OkStatus();
}

void ManifestBuilder::CloseChunk() {
  auto* c = manifest_.add_chunks();
  c->set_file(static_cast<uint32_t>(manifest_.files_size() - 1));
  c->set_offset(file_offset_ - chunk_fill_);
  c->set_length(chunk_fill_);
  c->set_sha256(DigestBytes(chunk_hash_.Finish()));
  file_hash_.Update(c->sha256());
  chunk_fill_ = 0;
}

absl::Status ManifestBuilder::Append(absl::string_view data) {
  if (!in_file_) return absl::FailedPreconditionError("data outside a file");
  if (data.size() > file_remaining_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file \"", manifest_.files().rbegin()->path(), "\": more data than its declared size"));
  }
  file_remaining_ -= data.size();
  if (cdc_.has_value() && data.size() >= kParallelAppendBytes) {
    AppendOnTwoCores(data);
    return absl::OkStatus();
  }
  while (!data.empty()) {
    size_t take;
    bool cut;
    if (cdc_.has_value()) {
      take = cdc_->Scan(reinterpret_cast<const uint8_t*>(data.data()),
                        std::min(data.size(), kScanSlice), &cut);
    } else {
      take = std::min<size_t>(data.size(), chunk_size_ - chunk_fill_);
      cut = chunk_fill_ + take == chunk_size_;
    }
    Hash(data.substr(0, take), cut);
    data.remove_prefix(take);
  }
  return absl::OkStatus();
}

void ManifestBuilder::Hash(absl::string_view piece, bool cut) {
  chunk_hash_.Update(piece.data(), piece.size());
  chunk_fill_ += static_cast<uint32_t>(piece.size());
  file_offset_ += piece.size();
  if (cut && chunk_fill_ > 0) CloseChunk();
}

void ManifestBuilder::AppendOnTwoCores(absl::string_view data) {
  // This thread finds the cut points slice by slice; a second one hashes up
  // to them as they are found, in order. The hash, the slower of the two,
  // no longer waits for the scan. Each slice is still read twice while it
  // is in the cache, as in the one-thread loop.
  struct Piece {
    size_t end;  // offset in `data`
    bool cut;
  };
  struct Queue {
    absl::Mutex mu;
    std::deque<Piece> pieces ABSL_GUARDED_BY(mu);
    bool scanned ABSL_GUARDED_BY(mu) = false;
    bool Ready() const ABSL_SHARED_LOCKS_REQUIRED(mu) { return !pieces.empty() || scanned; }
  } q;
  std::thread hasher([&] {
    for (size_t at = 0;;) {
      Piece p;
      {
        absl::MutexLock l(&q.mu);
        q.mu.Await(absl::Condition(&q, &Queue::Ready));
        if (q.pieces.empty()) return;
        p = q.pieces.front();
        q.pieces.pop_front();
      }
      Hash(data.substr(at, p.end - at), p.cut);
      at = p.end;
    }
  });
  for (size_t at = 0; at < data.size();) {
    bool cut;
    at += cdc_->Scan(reinterpret_cast<const uint8_t*>(data.data() + at),
                     std::min(data.size() - at, kScanSlice), &cut);
    absl::MutexLock l(&q.mu);
    q.pieces.push_back(Piece{at, cut});
  }
  {
    absl::MutexLock l(&q.mu);
    q.scanned = true;
  }
  hasher.join();
}

absl::Status ManifestBuilder::EndFile() {
  if (!in_file_) return absl::FailedPreconditionError("no file started");
  if (file_remaining_ != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("file \"", manifest_.files().rbegin()->path(), "\": ", file_remaining_,
                     " bytes fewer than its declared size"));
  }
  if (chunk_fill_ > 0) CloseChunk();
  if (cdc_.has_value()) cdc_->Reset();
  manifest_.mutable_files()->rbegin()->set_sha256(DigestBytes(file_hash_.Finish()));
  in_file_ = false;
  return absl::OkStatus();
}

absl::StatusOr<Manifest> ManifestBuilder::Finish() {
  if (in_file_) return absl::FailedPreconditionError("last file not finished");
  RETURN_IF_ERROR(ValidateManifest(manifest_, limits_));
  return std::move(manifest_);
}

namespace {

absl::Status AddFileContent(ManifestBuilder& b, const std::string& disk_path,
                            absl::string_view rel, const struct stat& st) {
  RETURN_IF_ERROR(b.BeginFile(rel, st.st_mode, static_cast<uint64_t>(st.st_size)));
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(disk_path, O_RDONLY));
  std::vector<char> buf(4 << 20);
  uint64_t left = static_cast<uint64_t>(st.st_size);
  while (left > 0) {
    ssize_t n = ::read(fd.get(), buf.data(), std::min<uint64_t>(buf.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read", disk_path);
    if (n == 0) return absl::DataLossError(absl::StrCat(disk_path, " shrank while being read"));
    RETURN_IF_ERROR(b.Append(absl::string_view(buf.data(), static_cast<size_t>(n))));
    left -= static_cast<uint64_t>(n);
  }
  return b.EndFile();
}

// Adds `disk_path` (whose package-relative path is `rel`) and, for a
// directory, everything below it in byte order of names.
absl::Status Walk(ManifestBuilder& b, const std::string& disk_path, const std::string& rel) {
  struct stat st;
  if (::lstat(disk_path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", disk_path);
  if (S_ISREG(st.st_mode)) return AddFileContent(b, disk_path, rel, st);
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(disk_path, ec);
    if (ec) return ErrnoStatus(ec.value(), "readlink", disk_path);
    return b.AddSymlink(rel, target.string());
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        disk_path, ": not a regular file, directory or symlink (devices, FIFOs and sockets "
                   "cannot be packaged)"));
  }
  if (!rel.empty()) RETURN_IF_ERROR(b.AddDirectory(rel, st.st_mode));
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(disk_path, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) return ErrnoStatus(ec.value(), "list", disk_path);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    RETURN_IF_ERROR(Walk(b, disk_path + "/" + n, rel.empty() ? n : rel + "/" + n));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Manifest> BuildManifestFromPath(const std::string& root, const std::string& name,
                                               const std::string& version, ManifestLimits limits,
                                               Chunking chunking) {
  RETURN_IF_ERROR(ValidateName(name, "package name"));
  RETURN_IF_ERROR(ValidateName(version, "package version"));
  ManifestBuilder b(name, version, limits, chunking);
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", root);
  if (S_ISDIR(st.st_mode)) {
    RETURN_IF_ERROR(Walk(b, root, ""));
  } else if (S_ISREG(st.st_mode)) {
    RETURN_IF_ERROR(AddFileContent(b, root, std::filesystem::path(root).filename().string(), st));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(root, ": not a regular file or directory"));
  }
  return b.Finish();
}

namespace {

// Hashes what is written to it: the package id without the serialized
// manifest in memory (5 MB for 4 GiB in content-defined chunks).
class HashingStream final : public google::protobuf::io::CopyingOutputStream {
 public:
  bool Write(const void* buffer, int size) override {
    hash_.Update(buffer, static_cast<size_t>(size));
    return true;
  }
  Digest Finish() { return hash_.Finish(); }

 private:
  Sha256 hash_;
};

}  // namespace

std::string PackageId(const Manifest& m) {
  constexpr int kBlockBytes = 64 << 10;
  HashingStream sink;
  {
    google::protobuf::io::CopyingOutputStreamAdaptor out(&sink, kBlockBytes);
    {
      google::protobuf::io::CodedOutputStream coded(&out);
      coded.SetSerializationDeterministic(true);
      m.SerializeToCodedStream(&coded);
    }
    out.Flush();
  }
  return DigestBytes(sink.Finish());
}

std::string PackageIdHex(const Manifest& m) { return ToHex(PackageId(m)); }

absl::Status ValidateManifest(const Manifest& m, const ManifestLimits& limits) {
  RETURN_IF_ERROR(ValidateName(m.name(), "package name"));
  RETURN_IF_ERROR(ValidateName(m.version(), "package version"));
  if (static_cast<uint64_t>(m.files_size()) > limits.max_files) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest has ", m.files_size(), " entries, more than max_files ",
                     limits.max_files));
  }
  if (m.total_size() > limits.max_total_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "package size ", m.total_size(), " exceeds max_total_size ", limits.max_total_size));
  }
  absl::flat_hash_map<absl::string_view, EntryType> seen;
  absl::flat_hash_set<std::string> folded;
  uint64_t total = 0;
  for (const auto& f : m.files()) {
    RETURN_IF_ERROR(ValidateRelativePath(f.path(), limits.max_path_length));
    if (!seen.emplace(f.path(), f.type()).second) {
      return absl::InvalidArgumentError(absl::StrCat("path \"", f.path(), "\" appears twice"));
    }
    if (limits.refuse_case_collisions && !folded.insert(absl::AsciiStrToLower(f.path())).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("path \"", f.path(), "\" collides with another path differing in case"));
    }
    absl::string_view parent = ParentOf(f.path());
    if (!parent.empty()) {
      auto it = seen.find(parent);
      if (it == seen.end() || it->second != pkgdist::v1::ENTRY_TYPE_DIRECTORY) {
        return absl::InvalidArgumentError(absl::StrCat(
            "path \"", f.path(), "\": parent directory is not listed before it"));
      }
    }
    switch (f.type()) {
      case pkgdist::v1::ENTRY_TYPE_FILE:
        if (f.sha256().size() != 32) {
          return absl::InvalidArgumentError(absl::StrCat("file \"", f.path(), "\": bad sha256"));
        }
        total += f.size();
        break;
      case pkgdist::v1::ENTRY_TYPE_DIRECTORY:
        break;
      case pkgdist::v1::ENTRY_TYPE_SYMLINK:
        RETURN_IF_ERROR(ValidateLinkTarget(f.path(), f.link_target()));
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("path \"", f.path(), "\": unknown type"));
    }
    if (f.type() != pkgdist::v1::ENTRY_TYPE_FILE && (f.size() != 0 || !f.sha256().empty())) {
      return absl::InvalidArgumentError(
          absl::StrCat("path \"", f.path(), "\": only regular files have content"));
    }
  }
  // A link target is checked lexically, treating its components as
  // directories; a component that is itself a symlink would make that
  // check meaningless ("b -> ." then "a -> b/.." leaves the tree).
  for (const auto& f : m.files()) {
    if (f.type() != pkgdist::v1::ENTRY_TYPE_SYMLINK) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(f.link_target(), '/');
    std::string at(ParentOf(f.path()));
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      absl::string_view part = parts[i];
      if (part.empty() || part == ".") continue;
      if (part == "..") {
        at = std::string(ParentOf(at));
        continue;
      }
      at = at.empty() ? std::string(part) : absl::StrCat(at, "/", part);
      auto it = seen.find(at);
      if (it != seen.end() && it->second == pkgdist::v1::ENTRY_TYPE_SYMLINK) {
        return absl::InvalidArgumentError(absl::StrCat(
            "symlink \"", f.path(), "\" -> \"", f.link_target(), "\": passes through symlink \"",
            at, "\""));
      }
    }
  }
  if (total != m.total_size()) {
    return absl::InvalidArgumentError("total_size does not equal the sum of file sizes");
  }
  // Chunks: per file, in order, contiguous, covering the file exactly.
  std::vector<uint64_t> covered(static_cast<size_t>(m.files_size()), 0);
  int last_file = -1;
  for (int i = 0; i < m.chunks_size(); ++i) {
    const auto& c = m.chunks(i);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", i, ": ", why));
    };
    if (c.file() >= static_cast<uint32_t>(m.files_size())) return bad("file index out of range");
    const auto& f = m.files(static_cast<int>(c.file()));
    if (f.type() != pkgdist::v1::ENTRY_TYPE_FILE) return bad("refers to a non-file entry");
    if (static_cast<int>(c.file()) < last_file) return bad("chunks are not in file order");
    last_file = static_cast<int>(c.file());
    if (c.length() == 0 || c.length() > kMaxChunkSize) return bad("length out of range");
    if (c.sha256().size() != 32) return bad("bad sha256");
    if (c.offset() != covered[c.file()]) return bad("not contiguous with the previous chunk");
    covered[c.file()] += c.length();
    if (covered[c.file()] > f.size()) return bad("extends past the end of its file");
  }
  std::vector<Sha256> digests(static_cast<size_t>(m.files_size()));
  for (const auto& c : m.chunks()) digests[c.file()].Update(c.sha256());
  for (int i = 0; i < m.files_size(); ++i) {
    const auto& f = m.files(i);
    if (f.type() != pkgdist::v1::ENTRY_TYPE_FILE) continue;
    if (covered[static_cast<size_t>(i)] != f.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("file \"", f.path(), "\": chunks do not cover it"));
    }
    if (DigestBytes(digests[static_cast<size_t>(i)].Finish()) != f.sha256()) {
      return absl::InvalidArgumentError(
          absl::StrCat("file \"", f.path(), "\": sha256 is not the digest of its chunks"));
    }
  }
  return absl::OkStatus();
}

}  // namespace pkgdist
