// The read path of a transfer: chunk by chunk out of a stored package's
// tree (PackageStore::TreeOf), as the manifest cuts it.
#ifndef PKGDIST_CONTROLLER_CHUNK_READER_H_
#define PKGDIST_CONTROLLER_CHUNK_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"

namespace pkgdist {

// Reads chunks of one stored package with bounded memory: one open file at a
// time, one buffer owned by the caller. Not thread-safe.
class ChunkReader {
 public:
  ChunkReader(std::string tree, std::shared_ptr<const pkgdist::v1::Manifest> manifest)
      : tree_(std::move(tree)), manifest_(std::move(manifest)) {}
  // Replaces *out with chunk `index`'s bytes.
  absl::Status Read(uint32_t index, std::string* out) { return ReadRun(index, 1, out); }
  // Replaces *out with the bytes of chunks index .. index + count - 1, which
  // must be chunks of one file (consecutive chunks of a file are adjacent).
  absl::Status ReadRun(uint32_t index, uint32_t count, std::string* out);

 private:
  std::string tree_;
  std::shared_ptr<const pkgdist::v1::Manifest> manifest_;
  int open_file_ = -1;
  UniqueFd fd_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_CHUNK_READER_H_
