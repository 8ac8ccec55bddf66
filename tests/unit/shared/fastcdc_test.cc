#include "shared/fastcdc.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/manifest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

constexpr char kFormatChanged[] =
    "FastCDC cut points changed: the gear table, the masks, the algorithm or kDefaultChunking "
    "is part of the package format; changing it re-chunks every package, so dedup against the "
    "chunks of existing packages (already on agents) would break";

constexpr ChunkingParams kSmall{256, 1024, 4096};

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix(&seed);
    for (size_t k = 0; k < 8 && i + k < n; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

std::string Repeat(absl::string_view pattern, size_t n) {
  std::string s;
  while (s.size() < n) s.append(pattern.data(), pattern.size());
  s.resize(n);
  return s;
}

// The boundaries found by Scan over `data` cut into pieces of the sizes that
// `next_piece` returns.
template <typename NextPiece>
std::vector<uint64_t> ScanInPieces(absl::string_view data, ChunkingParams p,
                                   NextPiece next_piece) {
  std::vector<uint64_t> out;
  FastCdc cdc(p);
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  size_t off = 0;
  while (off < data.size()) {
    const size_t end = std::min(data.size(), off + next_piece());
    while (off < end) {
      bool cut = false;
      const size_t n = cdc.Scan(bytes + off, end - off, &cut);
      off += n;
      if (cut) {
        out.push_back(off);
      } else {
        EXPECT_EQ(off, end) << "Scan without a cut must consume all of its input";
      }
    }
  }
  if (cdc.chunk_len() > 0) out.push_back(data.size());
  return out;
}

// --- Pinned format.

TEST(FastCdcFormatTest, GearTableIsPinned) {
  // The table is splitmix64 from kGearSeed; a few entries pin it.
  EXPECT_EQ(kGearSeed, 0x706b676469737431u) << kFormatChanged;
  EXPECT_EQ(GearTable()[0], 0xe91ed315b70b8d05u) << kFormatChanged;
  EXPECT_EQ(GearTable()[1], 0x7be44f845b4cae12u) << kFormatChanged;
  EXPECT_EQ(GearTable()[128], 0x827ab0facdc259eeu) << kFormatChanged;
  EXPECT_EQ(GearTable()[255], 0x8a02b06ceaa6665du) << kFormatChanged;
}

TEST(FastCdcFormatTest, DefaultsArePinned) {
  // kDefaultChunking is part of the format, like the table.
  EXPECT_EQ(kDefaultChunking.min_size, 8u << 10) << kFormatChanged;
  EXPECT_EQ(kDefaultChunking.avg_size, 32u << 10) << kFormatChanged;
  EXPECT_EQ(kDefaultChunking.max_size, 128u << 10) << kFormatChanged;
  EXPECT_TRUE(ValidateChunkingParams(kDefaultChunking).ok());
}

TEST(FastCdcFormatTest, DefaultBoundariesOfFourMiBArePinned) {
  // The exact cut points of 4 MiB of splitmix64 bytes with kDefaultChunking.
  const std::vector<uint64_t> expected = {
      46950, 88611, 153312, 191781, 228296, 275793, 324185, 366380, 402460, 456304, 491176, 533237,
      585536, 632686, 666096, 706776, 745618, 778880, 788283, 836638, 873412, 909218, 954736,
      996955, 1053862, 1086737, 1126880, 1176082, 1214281, 1252019, 1285844, 1341114, 1393815,
      1428666, 1468114, 1501214, 1534113, 1575824, 1587409, 1635669, 1673080, 1714528, 1758390,
      1808969, 1818306, 1857153, 1892760, 1925730, 1979187, 2014603, 2047417, 2094463, 2150064,
      2188268, 2224588, 2270200, 2303741, 2346189, 2399952, 2441067, 2475343, 2514334, 2525979,
      2567693, 2607197, 2649970, 2683830, 2704034, 2736811, 2785044, 2827656, 2865211, 2897343,
      2931740, 2975382, 3044815, 3083541, 3116483, 3132238, 3186571, 3239765, 3249374, 3308298,
      3354652, 3387700, 3424002, 3459017, 3497513, 3511694, 3523796, 3558526, 3591732, 3625213,
      3639874, 3679294, 3719917, 3756174, 3799093, 3819622, 3856074, 3889090, 3926410, 3961813,
      4002101, 4044689, 4069355, 4109781, 4146394, 4174392, 4194304,
  };
  EXPECT_EQ(ChunkBoundaries(RandomBytes(4 << 20, 0xfa57cdc), kDefaultChunking), expected)
      << kFormatChanged;
}

TEST(FastCdcFormatTest, SmallParamsBoundariesArePinned) {
  // The exact cut points of 64 KiB of splitmix64 bytes with {256, 1024, 4096}.
  const std::vector<uint64_t> expected = {
      1699, 2832, 4123, 5698, 7168, 7653, 9233, 10478, 11621, 12794, 14450, 15702, 16128, 17212,
      18251, 18549, 19616, 20820, 21866, 22942, 24155, 24905, 25233, 26578, 27655, 28743, 30280,
      31434, 33204, 34424, 35704, 36870, 37982, 39104, 40298, 41417, 42648, 43840, 45098, 47424,
      47991, 49122, 50433, 51669, 52836, 54410, 54800, 55942, 57839, 59167, 60209, 61786, 62924,
      64163, 65261, 65536,
  };
  EXPECT_EQ(ChunkBoundaries(RandomBytes(64 << 10, 0x5ca1ab1e), kSmall), expected)
      << kFormatChanged;
}

// --- Chunk sizes.

TEST(FastCdcTest, ChunkSizesStayWithinMinAndMax) {
  // Every chunk but the last is within [min, max]; the last is at most max.
  const std::vector<ChunkingParams> params = {
      {64, 128, 256}, kSmall, {4096, 16384, 65536}, kDefaultChunking, {1 << 18, 1 << 19, 1 << 20}};
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"random", RandomBytes(3 << 20, 1)},
      {"zeros", std::string(3 << 20, '\0')},
      {"0xff", std::string(3 << 20, '\xff')},
      {"abc", Repeat("abc", 3 << 20)},
      {"7-byte pattern", Repeat("pkgdist", 3 << 20)},
      {"short", RandomBytes(100, 2)}};
  for (const ChunkingParams& p : params) {
    for (const auto& [name, data] : inputs) {
      SCOPED_TRACE(testing::Message() << name << " with avg " << p.avg_size);
      const std::vector<uint64_t> cuts = ChunkBoundaries(data, p);
      ASSERT_FALSE(cuts.empty());
      EXPECT_EQ(cuts.back(), data.size());
      uint64_t start = 0;
      for (size_t i = 0; i < cuts.size(); ++i) {
        const uint64_t len = cuts[i] - start;
        EXPECT_LE(len, p.max_size);
        if (i + 1 < cuts.size()) {
          EXPECT_GE(len, p.min_size);
        }
        EXPECT_GT(len, 0u);
        start = cuts[i];
      }
    }
  }
}

TEST(FastCdcTest, RandomDataAveragesNearAvgSize) {
  // Normalized chunking centres chunk sizes a little above avg_size.
  for (const ChunkingParams& p : {kSmall, kDefaultChunking}) {
    const std::string data = RandomBytes(size_t{p.avg_size} * 2000, 3);
    const double mean = static_cast<double>(data.size()) / ChunkBoundaries(data, p).size();
    EXPECT_GT(mean, 0.9 * p.avg_size);
    EXPECT_LT(mean, 1.4 * p.avg_size);
  }
}

TEST(FastCdcTest, EmptyInputHasNoChunks) {
  // No bytes, no boundaries; a zero-size Scan consumes nothing and does not cut.
  EXPECT_TRUE(ChunkBoundaries("", kSmall).empty());
  FastCdc cdc(kSmall);
  bool cut = true;
  EXPECT_EQ(cdc.Scan(nullptr, 0, &cut), 0u);
  EXPECT_FALSE(cut);
}

// --- Streaming.

TEST(FastCdcTest, SplitsDoNotChangeBoundaries) {
  // Random pieces (including runs of 1-byte pieces) give the whole-buffer boundaries,
  // for content-defined cuts (random bytes) and forced ones at max_size (zeros).
  for (const ChunkingParams& p : {kSmall, ChunkingParams{4096, 16384, 65536}, kDefaultChunking}) {
    for (const std::string& data : {RandomBytes(size_t{p.avg_size} * 40, p.avg_size),
                                    std::string(size_t{p.max_size} * 5 + 17, '\0')}) {
      SCOPED_TRACE(testing::Message() << "avg " << p.avg_size << ", " << data.size() << " bytes");
      const std::vector<uint64_t> whole = ChunkBoundaries(data, p);
      uint64_t rng = 7;
      EXPECT_EQ(ScanInPieces(data, p, [&] { return 1 + SplitMix(&rng) % (3 * p.max_size); }),
                whole);
      EXPECT_EQ(ScanInPieces(data, p, [&] { return 1 + SplitMix(&rng) % 100; }), whole);
      EXPECT_EQ(ScanInPieces(data, p, [&] {
                  const uint64_t r = SplitMix(&rng);
                  return r % 4 == 0 ? 1 + r % p.max_size : 1;
                }),
                whole);
    }
  }
  const std::string small = RandomBytes(64 << 10, 8);
  EXPECT_EQ(ScanInPieces(small, kSmall, [] { return 1; }), ChunkBoundaries(small, kSmall));
}

TEST(FastCdcTest, ResetStartsANewChunk) {
  // After Reset in the middle of a chunk, the boundaries are those of a fresh buffer.
  const std::string a = RandomBytes(3000, 9), b = RandomBytes(50'000, 10);
  FastCdc cdc(kSmall);
  bool cut = true;
  ASSERT_EQ(cdc.Scan(reinterpret_cast<const uint8_t*>(a.data()), 200, &cut), 200u);
  ASSERT_FALSE(cut);
  cdc.Reset();
  std::vector<uint64_t> cuts;
  const auto* bytes = reinterpret_cast<const uint8_t*>(b.data());
  for (size_t off = 0; off < b.size();) {
    off += cdc.Scan(bytes + off, b.size() - off, &cut);
    if (cut) cuts.push_back(off);
  }
  if (cdc.chunk_len() > 0) cuts.push_back(b.size());
  EXPECT_EQ(cuts, ChunkBoundaries(b, kSmall));
}

// --- Edits.

struct EditOutcome {
  uint64_t changed_bytes;  // bytes of the new version's chunks that the old one lacks
  size_t changed_chunks;
};

// Checks that an edit replacing `del` bytes at `at` by `ins` bytes leaves the
// chunks before it, and after resynchronisation the chunks after it, as they were.
EditOutcome CheckEdit(const std::vector<uint64_t>& old_cuts, const std::vector<uint64_t>& new_cuts,
                      uint64_t at, uint64_t del, uint64_t ins) {
  // Chunks ending at or before the edit are unchanged.
  size_t prefix = 0;
  while (prefix < old_cuts.size() && old_cuts[prefix] <= at) ++prefix;
  EXPECT_GE(new_cuts.size(), prefix);
  for (size_t i = 0; i < prefix && i < new_cuts.size(); ++i) EXPECT_EQ(new_cuts[i], old_cuts[i]);
  // The first new boundary past the edit that is an old one, shifted, is followed only
  // by old ones, shifted.
  const int64_t shift = static_cast<int64_t>(ins) - static_cast<int64_t>(del);
  size_t j = prefix;
  auto old_at = old_cuts.end();
  for (; j < new_cuts.size(); ++j) {
    if (new_cuts[j] < at + ins) continue;
    old_at = std::lower_bound(old_cuts.begin(), old_cuts.end(), new_cuts[j] - shift);
    if (old_at != old_cuts.end() && *old_at + shift == new_cuts[j]) break;
  }
  EXPECT_LT(j, new_cuts.size()) << "never resynchronised";
  if (j == new_cuts.size()) return {};
  std::vector<uint64_t> tail(old_at, old_cuts.end());
  for (uint64_t& c : tail) c += shift;
  EXPECT_EQ(std::vector<uint64_t>(new_cuts.begin() + j, new_cuts.end()), tail);
  const uint64_t from = prefix == 0 ? 0 : new_cuts[prefix - 1];
  return {new_cuts[j] - from, j + 1 - prefix};
}

TEST(FastCdcTest, EditsChangeOnlyTheChunksAroundThem) {
  // Inserting, deleting or overwriting a few bytes changes about one chunk, at worst a few.
  for (const auto& [p, size] : {std::pair{kSmall, size_t{8} << 20},
                                std::pair{kDefaultChunking, size_t{2} << 20}}) {
    SCOPED_TRACE(testing::Message() << "avg " << p.avg_size);
    const std::string old = RandomBytes(size, 11);
    const std::vector<uint64_t> old_cuts = ChunkBoundaries(old, p);
    uint64_t rng = 12, changed_total = 0;
    constexpr int kEdits = 50;
    for (int iter = 0; iter < kEdits; ++iter) {
      const uint64_t at = SplitMix(&rng) % old.size();
      const uint64_t len = 1 + SplitMix(&rng) % 16;
      const int kind = iter % 3;  // insert, delete, overwrite
      const uint64_t del = kind == 0 ? 0 : std::min<uint64_t>(len, old.size() - at);
      const uint64_t ins = kind == 1 ? 0 : len;
      std::string edited = old;
      edited.replace(at, del, RandomBytes(ins, SplitMix(&rng)));
      SCOPED_TRACE(testing::Message() << "edit at " << at << " -" << del << " +" << ins);
      const EditOutcome out = CheckEdit(old_cuts, ChunkBoundaries(edited, p), at, del, ins);
      EXPECT_LE(out.changed_chunks, 12u);
      EXPECT_LE(out.changed_bytes, 4 * p.max_size + ins);
      changed_total += out.changed_bytes;
    }
    // One chunk (about 1.15 avg_size) in most cases.
    EXPECT_LE(changed_total / kEdits, 2 * p.avg_size);
  }
}

// --- Validation.

TEST(FastCdcTest, ValidateRejectsBadParamsNamingTheField) {
  // Each broken constraint is refused with the field in the message.
  struct Case {
    ChunkingParams p;
    const char* field;
  };
  const Case cases[] = {{{256, 1000, 4096}, "avg_size must be a power of two"},
                        {{256, 0, 4096}, "avg_size must be a power of two"},
                        {{32, 1024, 4096}, "min_size must be at least 64"},
                        {{1024, 1024, 4096}, "min_size must be less than avg_size"},
                        {{256, 1024, 1024}, "max_size must be greater than avg_size"},
                        {{1 << 18, 1 << 19, kMaxChunkSize + 1}, "max_size must be at most 1048576"}};
  for (const Case& c : cases) {
    const absl::Status s = ValidateChunkingParams(c.p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(c.field));
  }
  EXPECT_TRUE(ValidateChunkingParams({64, 128, 129}).ok());
  EXPECT_TRUE(ValidateChunkingParams({1 << 18, 1 << 19, kMaxChunkSize}).ok());
}

}  // namespace
}  // namespace pkgdist
