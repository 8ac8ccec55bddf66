// The read path of a transfer: chunk by chunk out of a stored package's
// tree (PackageStore::TreeOf), as the manifest cuts it.
#ifndef PKGDIST_CONTROLLER_CHUNK_READER_H_
#define PKGDIST_CONTROLLER_CHUNK_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/support/slice.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"

namespace pkgdist {

// Reads chunks of one stored package: one open file at a time, each run into
// a buffer of its own. Not thread-safe.
class ChunkReader {
 public:
  ChunkReader(std::string tree, std::shared_ptr<const pkgdist::v1::Manifest> manifest)
      : tree_(std::move(tree)), manifest_(std::move(manifest)) {}
  // The bytes of chunks index .. index + count - 1, which must be chunks of
  // one file (consecutive chunks of a file are adjacent), in a new buffer
  // (not zero-filled first) that the slice frees when its last reference
  // goes: gRPC sends it as it is (shared/chunk_wire.h).
  absl::StatusOr<grpc::Slice> ReadRun(uint32_t index, uint32_t count);

 private:
  std::string tree_;
  std::shared_ptr<const pkgdist::v1::Manifest> manifest_;
  int open_file_ = -1;
  UniqueFd fd_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_CHUNK_READER_H_
