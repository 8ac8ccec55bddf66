#include "shared/fastcdc.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"
#include "shared/manifest.h"

namespace pkgdist {
namespace {

constexpr std::array<uint64_t, 256> MakeGearTable() {
  std::array<uint64_t, 256> table{};
  uint64_t state = kGearSeed;
  for (uint64_t& entry : table) {  // splitmix64
    state += 0x9e3779b97f4a7c15;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    entry = z ^ (z >> 31);
  }
  return table;
}

constexpr std::array<uint64_t, 256> kGear = MakeGearTable();

// `bits` one-bits spread evenly over bits 63..16, the first at bit 63.
constexpr uint64_t SpreadMask(int bits) {
  uint64_t mask = 0;
  for (int k = 0; k < bits; ++k) mask |= uint64_t{1} << (63 - k * 48 / bits);
  return mask;
}

constexpr int Log2(uint32_t power_of_two) {
  int n = 0;
  while ((uint32_t{1} << n) < power_of_two) ++n;
  return n;
}

constexpr bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

static_assert(kDefaultChunking.max_size <= kMaxChunkSize, "default chunks must fit a manifest");
static_assert(SpreadMask(16) == 0x9249249249240000, "SpreadMask changed: the format changed");

// Index of the first byte in [begin, end) after which (fp & mask) == 0, or
// `end`; *fp is the fingerprint after the last byte hashed.
inline size_t FindCut(const uint8_t* data, size_t begin, size_t end, uint64_t mask,
                      uint64_t* fp) {
  uint64_t h = *fp;
  size_t i = begin;
  for (; i < end; ++i) {
    h = (h << 1) + kGear[data[i]];
    if ((h & mask) == 0) break;
  }
  *fp = h;
  return i;
}

}  // namespace

absl::Status ValidateChunkingParams(const ChunkingParams& p) {
  auto bad = [&p](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("chunking params {min_size=", p.min_size,
                                                   ", avg_size=", p.avg_size, ", max_size=",
                                                   p.max_size, "}: ", what));
  };
  if (!IsPowerOfTwo(p.avg_size)) return bad("avg_size must be a power of two");
  if (p.min_size < 64) return bad("min_size must be at least 64");
  if (p.min_size >= p.avg_size) return bad("min_size must be less than avg_size");
  if (p.max_size <= p.avg_size) return bad("max_size must be greater than avg_size");
  if (p.max_size > kMaxChunkSize) {
    return bad(absl::StrCat("max_size must be at most ", kMaxChunkSize));
  }
  return absl::OkStatus();
}

const std::array<uint64_t, 256>& GearTable() { return kGear; }

FastCdc::FastCdc(ChunkingParams p)
    : p_(p), mask_s_(SpreadMask(Log2(p.avg_size) + 2)), mask_l_(SpreadMask(Log2(p.avg_size) - 2)) {
  assert(ValidateChunkingParams(p).ok());
}

size_t FastCdc::Scan(const uint8_t* data, size_t size, bool* cut) {
  // Index in `data` at which the current chunk reaches `len` bytes (clamped).
  const uint64_t base = chunk_len_;
  auto at = [base, size](uint32_t len) -> size_t {
    return len <= base ? 0 : static_cast<size_t>(std::min<uint64_t>(len - base, size));
  };
  const size_t hash_from = at(p_.min_size);
  const size_t small_end = at(p_.avg_size);
  const size_t max_end = at(p_.max_size);
  size_t i = FindCut(data, hash_from, small_end, mask_s_, &fp_);
  if (i == small_end) i = FindCut(data, small_end, max_end, mask_l_, &fp_);
  if (i < max_end) {
    ++i;  // the matching byte ends the chunk
  } else if (base + max_end < p_.max_size) {
    chunk_len_ += size;
    *cut = false;
    return size;
  }
  Reset();
  *cut = true;
  return i;
}

std::vector<uint64_t> ChunkBoundaries(absl::string_view data, ChunkingParams p) {
  std::vector<uint64_t> out;
  FastCdc cdc(p);
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  size_t off = 0;
  while (off < data.size()) {
    bool cut = false;
    off += cdc.Scan(bytes + off, data.size() - off, &cut);
    if (cut) out.push_back(off);
  }
  if (cdc.chunk_len() > 0) out.push_back(data.size());
  return out;
}

}  // namespace pkgdist
