// Building, identifying and validating package manifests.
//
// ManifestBuilder is fed entries in order (from a directory walk at the
// controller, or from an upload stream) and hashes file content as it
// arrives, so content is read and hashed once: a file's digest is the
// sha256 of its chunks' digests (a hash list), not a second pass over its
// bytes. Verifying every chunk therefore verifies every file. Chunks are
// cut where the content says (FastCDC, shared/fastcdc.h), so an edit changes
// only the chunks around it; Chunking::Fixed cuts at fixed offsets instead
// (what pkgdist did before, kept for comparison and for tests). The
// manifest format allows any sizes up to kMaxChunkSize, and agents accept
// any such manifest.
#ifndef PKGDIST_SHARED_MANIFEST_H_
#define PKGDIST_SHARED_MANIFEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/fastcdc.h"
#include "shared/sha256.h"

namespace pkgdist {

inline constexpr uint32_t kMaxChunkSize = 1 << 20;
inline constexpr uint32_t kDefaultChunkSize = 1 << 20;

// Bounds a manifest must stay within. Enforced at import and on every Offer.
struct ManifestLimits {
  uint64_t max_files = 1'000'000;
  uint64_t max_total_size = uint64_t{1} << 40;  // 1 TiB
  size_t max_path_length = 4096;
  // Refuse paths that differ only in letter case (for case-folding disks).
  bool refuse_case_collisions = false;
};

// How files are cut into chunks. Part of the package's identity: the same
// tree cut another way is another package id.
struct Chunking {
  // Content-defined: FastCDC with `params` (validated by the caller).
  static Chunking ContentDefined(ChunkingParams params = kDefaultChunking) {
    return Chunking{true, kDefaultChunkSize, params};
  }
  // Fixed offsets of `size` bytes (clamped to [1, kMaxChunkSize]).
  static Chunking Fixed(uint32_t size = kDefaultChunkSize) {
    return Chunking{false, size, kDefaultChunking};
  }
  bool content_defined;
  uint32_t fixed_size;     // when !content_defined
  ChunkingParams params;   // when content_defined
};

class ManifestBuilder {
 public:
  ManifestBuilder(std::string name, std::string version, ManifestLimits limits = {},
                  Chunking chunking = Chunking::ContentDefined());
  // Fixed chunks of `chunk_size` bytes.
  ManifestBuilder(std::string name, std::string version, ManifestLimits limits,
                  uint32_t chunk_size)
      : ManifestBuilder(std::move(name), std::move(version), limits,
                        Chunking::Fixed(chunk_size)) {}

  absl::Status AddDirectory(absl::string_view path, uint32_t mode);
  absl::Status AddSymlink(absl::string_view path, absl::string_view target);
  // Starts a regular file of `size` bytes; Append exactly that many bytes,
  // then EndFile.
  absl::Status BeginFile(absl::string_view path, uint32_t mode, uint64_t size);
  absl::Status Append(absl::string_view data);
  absl::Status EndFile();
  // Validates the whole manifest and returns it.
  absl::StatusOr<pkgdist::v1::Manifest> Finish();

  bool in_file() const { return in_file_; }

 private:
  // Content-defined chunking scans and hashes in slices of this size, so
  // that the hash reads what the chunker just read from the cache.
  static constexpr size_t kScanSlice = 64 << 10;
  // An Append of at least this much scans on this thread and hashes on a
  // second one (AppendOnTwoCores); below it the thread costs more than it
  // saves.
  static constexpr size_t kParallelAppendBytes = 1 << 20;

  absl::Status AddEntry(absl::string_view path, pkgdist::v1::EntryType type, uint32_t mode);
  // Adds `piece` to the chunk being hashed, closing it if `cut`.
  void Hash(absl::string_view piece, bool cut);
  void AppendOnTwoCores(absl::string_view data);
  void CloseChunk();

  pkgdist::v1::Manifest manifest_;
  ManifestLimits limits_;
  uint32_t chunk_size_;          // fixed chunking
  std::optional<FastCdc> cdc_;   // content-defined chunking
  bool in_file_ = false;
  uint64_t file_remaining_ = 0;
  uint64_t file_offset_ = 0;
  uint32_t chunk_fill_ = 0;
  Sha256 file_hash_;
  Sha256 chunk_hash_;
};

// Walks `root` (a regular file or a directory) and builds its manifest.
// Refuses devices, FIFOs, sockets and symlinks that leave the tree, naming
// the path.
absl::StatusOr<pkgdist::v1::Manifest> BuildManifestFromPath(
    const std::string& root, const std::string& name, const std::string& version,
    ManifestLimits limits = {}, Chunking chunking = Chunking::ContentDefined());
inline absl::StatusOr<pkgdist::v1::Manifest> BuildManifestFromPath(
    const std::string& root, const std::string& name, const std::string& version,
    ManifestLimits limits, uint32_t chunk_size) {
  return BuildManifestFromPath(root, name, version, limits, Chunking::Fixed(chunk_size));
}

// The package id: sha256 of the manifest's deterministic serialization.
std::string PackageId(const pkgdist::v1::Manifest& m);  // 32 raw bytes
std::string PackageIdHex(const pkgdist::v1::Manifest& m);

// Checks names, every path, duplicate and colliding entries, that every
// entry's parent is a directory entry, that chunks cover each regular file
// exactly and in order, that each file's digest is the digest of its
// chunks' digests, sizes, hash lengths and limits.
absl::Status ValidateManifest(const pkgdist::v1::Manifest& m, const ManifestLimits& limits = {});

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_MANIFEST_H_
