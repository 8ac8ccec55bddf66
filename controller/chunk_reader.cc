#include "controller/chunk_reader.h"

#include <fcntl.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "shared/status_macros.h"

namespace pkgdist {

absl::StatusOr<grpc::Slice> ChunkReader::ReadRun(uint32_t index, uint32_t count) {
  const auto n = static_cast<uint32_t>(manifest_->chunks_size());
  if (count == 0 || index >= n || count > n - index) {
    return absl::OutOfRangeError(absl::StrCat("chunks ", index, "+", count, " out of range"));
  }
  const auto& c = manifest_->chunks(static_cast<int>(index));
  const auto& last = manifest_->chunks(static_cast<int>(index + count - 1));
  if (last.file() != c.file()) {
    return absl::InvalidArgumentError(absl::StrCat("chunks ", index, "+", count, " span files"));
  }
  const auto& f = manifest_->files(static_cast<int>(c.file()));
  std::string path = tree_ + "/" + f.path();
  if (open_file_ != static_cast<int>(c.file())) {
    fd_.Reset();
    open_file_ = -1;
    ASSIGN_OR_RETURN(fd_, OpenFile(path, O_RDONLY | O_NOFOLLOW));
    open_file_ = static_cast<int>(c.file());
  }
  const uint64_t length = last.offset() + last.length() - c.offset();
  // From the heap, not mmap (shared/malloc_tuning.h): a freed run's memory
  // serves the next one without page faults.
  void* buffer = std::malloc(length > 0 ? length : 1);
  if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory for a chunk run");
  grpc::Slice run(buffer, length, std::free);
  RETURN_IF_ERROR(PreadFull(fd_.get(), buffer, length, c.offset(), path));
  return run;
}

}  // namespace pkgdist
