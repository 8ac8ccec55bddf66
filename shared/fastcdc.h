// Content-defined chunking (FastCDC, Xia et al., USENIX ATC 2016).
//
// Fixed-offset chunks make a one-byte insertion near the start of a file
// change every chunk after it, so an updated package is sent whole. FastCDC
// cuts where the content says (a Gear rolling hash over the last 64 bytes
// matches a mask), so an edit changes only the chunks around it and the
// chunks after it are the old chunks at shifted offsets: agents keep them.
//
// The algorithm as implemented here:
//  - Gear hash fp = (fp << 1) + kGear[byte], reset to 0 at each chunk start;
//    kGear is 256 splitmix64 outputs from the seed kGearSeed (GearTable()).
//  - Cut-point skipping: the first min_size bytes of a chunk are not hashed.
//  - Normalized chunking, level 2: while the chunk is at most avg_size bytes
//    long a cut needs (fp & mask_s) == 0, mask_s having log2(avg) + 2 bits;
//    after that (fp & mask_l) == 0, mask_l having log2(avg) - 2 bits. A mask
//    of n bits spreads them evenly over bits 63..16 of the word, the highest
//    at bit 63, so a cut depends on (up to) the last 64 bytes.
//  - A chunk ends right after the byte whose fingerprint matched, or at
//    max_size bytes; the last chunk of a file is whatever remains.
// The table, the masks, the rules above and kDefaultChunking are part of the
// package format: changing any of them changes every chunk of every package,
// so agents could no longer reuse chunks of packages they already hold.
#ifndef PKGDIST_SHARED_FASTCDC_H_
#define PKGDIST_SHARED_FASTCDC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pkgdist {

struct ChunkingParams {
  uint32_t min_size;
  uint32_t avg_size;
  uint32_t max_size;
};

// The defaults, chosen by the measurement in bench/chunking.md.
inline constexpr ChunkingParams kDefaultChunking{8 << 10, 32 << 10, 128 << 10};

// OK when avg_size is a power of two and 64 <= min < avg < max <= kMaxChunkSize
// (shared/manifest.h); otherwise InvalidArgument naming the field.
absl::Status ValidateChunkingParams(const ChunkingParams& p);

// The Gear table's generator: splitmix64 seeded with ASCII "pkgdist1".
inline constexpr uint64_t kGearSeed = 0x706b676469737431;
const std::array<uint64_t, 256>& GearTable();

// Finds the cut points of one stream of bytes fed in pieces of any size; the
// cut points do not depend on how the stream is split. Not thread-safe;
// copyable (a copy continues the same chunk).
class FastCdc {
 public:
  // `p` must pass ValidateChunkingParams (checked only in debug builds).
  explicit FastCdc(ChunkingParams p);

  // Scans `data` as the continuation of the current chunk. Returns how many
  // leading bytes of `data` belong to the current chunk; sets *cut when the
  // chunk ends right after them (then the next call starts a new chunk). If
  // *cut is false, all of data was consumed.
  size_t Scan(const uint8_t* data, size_t size, bool* cut);

  // Forgets the current chunk (a new file starts).
  void Reset() {
    chunk_len_ = 0;
    fp_ = 0;
  }

  // Bytes of the current chunk scanned so far.
  uint64_t chunk_len() const { return chunk_len_; }

 private:
  ChunkingParams p_;
  uint64_t mask_s_;
  uint64_t mask_l_;
  uint64_t chunk_len_ = 0;
  uint64_t fp_ = 0;
};

// All cut points of one buffer as chunk end offsets, ascending; the last is
// data.size() (none for empty data). For tests and tools.
std::vector<uint64_t> ChunkBoundaries(absl::string_view data, ChunkingParams p);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_FASTCDC_H_
