#include "controller/chunk_reader.h"

#include <fcntl.h>

#include "absl/strings/str_cat.h"
#include "shared/status_macros.h"

namespace pkgdist {

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
