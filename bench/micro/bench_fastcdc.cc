// Content-defined chunking (shared/fastcdc.h): the measurement behind
// kDefaultChunking (bench/chunking.md). Candidates are avg 16, 32, 64 KiB
// with min = avg/4 and max = avg*4; avg 0 is today's fixed 1 MiB chunks.
//
// Throughput, over 64 MiB of random bytes fed in 256 KiB pieces (how files
// are read at import): SHA-256 alone, FastCdc::Scan alone, and Scan + SHA-256
// of each chunk in one pass (what ManifestBuilder::Append will do).
//
// Dedup (BM_Dedup*, one iteration each): a random one-file package of 256 MiB
// or 1 GiB and an edited version. The counters give delta: the bytes of the
// new version's chunks whose sha256 is not among the old version's (what an
// agent holding the old version is sent); the chunk count; the manifest
// (sent whole in the Offer) at ~45 bytes per ChunkRef; sent = delta +
// manifest; all as % of the package.
//   OneByteInserted: one byte inserted at offset 1000.
//   Scattered1Pct:   100 regions of 1/10000 of the package (27 KB at 256 MiB,
//                    107 KB at 1 GiB, as bench/delta.sh's (b)) overwritten,
//                    one at a random place in each hundredth.
//   HalfShared:      the new version alternates segments of 128 KiB..4 MiB
//                    taken in order from the old one (skipping up to 512 KiB
//                    between them) and fresh bytes; fresh_pct is the floor.
//
// BM_ChunkMessagePath: the per-chunk CPU of the transfer path that does not
// depend on gRPC (message encode + decode + sha256 verify), per chunk size.
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "absl/container/flat_hash_set.h"
#include "pkgdist/v1/agent.pb.h"
#include "shared/fastcdc.h"
#include "shared/sha256.h"

namespace {

using pkgdist::ChunkingParams;

constexpr size_t kPiece = 256 << 10;
constexpr uint32_t kFixedChunk = 1 << 20;
constexpr double kChunkRefBytes = 45;

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

const std::string& ThroughputData() {
  static const std::string* data = new std::string(RandomBytes(size_t{64} << 20, 1));
  return *data;
}

ChunkingParams Candidate(int64_t avg_kib) {
  const uint32_t avg = static_cast<uint32_t>(avg_kib) << 10;
  return {avg / 4, avg, avg * 4};
}

void SetBytes(benchmark::State& state, size_t bytes) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_Sha256Alone(benchmark::State& state) {
  const std::string& data = ThroughputData();
  pkgdist::Sha256 h;
  for (auto _ : state) {
    for (size_t off = 0; off < data.size(); off += kPiece) h.Update(data.data() + off, kPiece);
    benchmark::DoNotOptimize(h.Finish());
  }
  SetBytes(state, data.size());
}
BENCHMARK(BM_Sha256Alone)->Unit(benchmark::kMillisecond);

void BM_FastCdcScan(benchmark::State& state) {
  const std::string& data = ThroughputData();
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  pkgdist::FastCdc cdc(Candidate(state.range(0)));
  uint64_t chunks = 0;
  for (auto _ : state) {
    cdc.Reset();
    for (size_t off = 0; off < data.size(); off += kPiece) {
      for (size_t done = 0; done < kPiece;) {
        bool cut = false;
        done += cdc.Scan(bytes + off + done, kPiece - done, &cut);
        chunks += cut;
      }
    }
  }
  SetBytes(state, data.size());
  state.counters["mean_chunk_kib"] =
      static_cast<double>(state.iterations() * data.size()) / (chunks + state.iterations()) / 1024;
}
BENCHMARK(BM_FastCdcScan)->Arg(16)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond);

// Scan + SHA-256 of every chunk in the same pass over each piece.
void BM_FastCdcScanSha256(benchmark::State& state) {
  const std::string& data = ThroughputData();
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  pkgdist::FastCdc cdc(Candidate(state.range(0)));
  pkgdist::Sha256 h;
  for (auto _ : state) {
    cdc.Reset();
    for (size_t off = 0; off < data.size(); off += kPiece) {
      for (size_t done = 0; done < kPiece;) {
        bool cut = false;
        const size_t n = cdc.Scan(bytes + off + done, kPiece - done, &cut);
        h.Update(bytes + off + done, n);
        done += n;
        if (cut) benchmark::DoNotOptimize(h.Finish());
      }
    }
    benchmark::DoNotOptimize(h.Finish());
  }
  SetBytes(state, data.size());
}
BENCHMARK(BM_FastCdcScanSha256)->Arg(16)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond);

// --- Dedup effectiveness.

// Chunk end offsets: FastCDC with the candidate, or fixed 1 MiB for avg 0.
std::vector<uint64_t> Cuts(const std::string& data, int64_t avg_kib) {
  if (avg_kib != 0) return pkgdist::ChunkBoundaries(data, Candidate(avg_kib));
  std::vector<uint64_t> out;
  for (uint64_t end = kFixedChunk; end < data.size() + kFixedChunk; end += kFixedChunk) {
    out.push_back(std::min<uint64_t>(end, data.size()));
  }
  return out;
}

struct Chunked {
  std::vector<uint64_t> cuts;
  std::vector<std::string> digests;
};

Chunked Chunk(const std::string& data, int64_t avg_kib) {
  Chunked c{Cuts(data, avg_kib), {}};
  uint64_t start = 0;
  for (uint64_t end : c.cuts) {
    c.digests.push_back(pkgdist::DigestBytes(
        pkgdist::Sha256Of(absl::string_view(data).substr(start, end - start))));
    start = end;
  }
  return c;
}

// Counters for `edited` against `old` (fresh = bytes of edited found nowhere in old).
void Report(benchmark::State& state, const std::string& old, const std::string& edited,
            uint64_t fresh) {
  const int64_t avg_kib = state.range(0);
  uint64_t delta = 0;
  size_t chunks = 0;
  for (auto _ : state) {
    const Chunked before = Chunk(old, avg_kib);
    const Chunked after = Chunk(edited, avg_kib);
    absl::flat_hash_set<std::string> held(before.digests.begin(), before.digests.end());
    uint64_t start = 0;
    for (size_t i = 0; i < after.cuts.size(); ++i) {
      if (held.insert(after.digests[i]).second) delta += after.cuts[i] - start;
      start = after.cuts[i];
    }
    chunks = after.cuts.size();
  }
  const double size = static_cast<double>(edited.size());
  state.counters["chunks"] = static_cast<double>(chunks);
  state.counters["delta_MB"] = delta / 1e6;
  state.counters["delta_pct"] = 100.0 * delta / size;
  state.counters["manifest_pct"] = 100.0 * chunks * kChunkRefBytes / size;
  state.counters["sent_pct"] = 100.0 * (delta + chunks * kChunkRefBytes) / size;
  state.counters["fresh_pct"] = 100.0 * fresh / size;
}

// The old version of a package of `mib` MiB, made once per size.
const std::string& OldPackage(int64_t mib) {
  static auto* packages = new std::map<int64_t, std::string>;
  auto [it, added] = packages->try_emplace(mib);
  if (added) it->second = RandomBytes(static_cast<size_t>(mib) << 20, 2);
  return it->second;
}

void BM_DedupOneByteInserted(benchmark::State& state) {
  const std::string& old = OldPackage(state.range(1));
  std::string edited = old;
  edited.insert(edited.begin() + 1000, '\x5a');
  Report(state, old, edited, 1);
}

void BM_DedupScattered1Pct(benchmark::State& state) {
  const std::string& old = OldPackage(state.range(1));
  std::string edited = old;
  uint64_t rng = 3;
  const size_t region = old.size() / 10000, stride = old.size() / 100;
  for (size_t k = 0; k < 100; ++k) {
    const size_t at = k * stride + SplitMix(&rng) % (stride - region);
    edited.replace(at, region, RandomBytes(region, SplitMix(&rng)));
  }
  Report(state, old, edited, 100 * region);
}

void BM_DedupHalfShared(benchmark::State& state) {
  const std::string& old = OldPackage(state.range(1));
  std::string edited;
  edited.reserve(old.size());
  uint64_t rng = 4, fresh = 0;
  size_t old_pos = 0;
  for (bool shared = true; edited.size() < old.size(); shared = !shared) {
    const size_t len = std::min<size_t>((128 << 10) + SplitMix(&rng) % (4 << 20),
                                        old.size() - edited.size());
    if (shared && old_pos + len <= old.size()) {
      edited.append(old, old_pos, len);
      old_pos += len + SplitMix(&rng) % (512 << 10);  // some old content is dropped
    } else {
      edited.append(RandomBytes(len, SplitMix(&rng)));
      fresh += len;
    }
  }
  Report(state, old, edited, fresh);
}

// Args: {avg KiB (0 = fixed 1 MiB), package MiB}.
void DedupArgs(benchmark::internal::Benchmark* b) {
  for (int64_t mib : {256, 1024}) {
    for (int64_t avg : {0, 16, 32, 64}) b->Args({avg, mib});
  }
  b->ArgNames({"avg_kib", "mib"})->Iterations(1)->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_DedupOneByteInserted)->Apply(DedupArgs);
BENCHMARK(BM_DedupScattered1Pct)->Apply(DedupArgs);
BENCHMARK(BM_DedupHalfShared)->Apply(DedupArgs);

// --- Per-chunk cost on the transfer path (a proxy: no gRPC, TLS or disk).

// Chunks of Arg KiB of 64 MiB, each put in a TransferRequest, serialized,
// parsed and its sha256 verified: the controller's and the agent's CPU per
// chunk that does not depend on gRPC.
void BM_ChunkMessagePath(benchmark::State& state) {
  const std::string& data = ThroughputData();
  const size_t chunk = static_cast<size_t>(state.range(0)) << 10;
  pkgdist::v1::TransferRequest req, parsed;
  std::string wire;
  for (auto _ : state) {
    for (size_t off = 0; off + chunk <= data.size(); off += chunk) {
      req.mutable_chunk()->set_index(static_cast<uint32_t>(off / chunk));
      req.mutable_chunk()->set_data(data.data() + off, chunk);
      wire.clear();
      if (!req.SerializeToString(&wire) || !parsed.ParseFromString(wire)) {
        state.SkipWithError("codec");
      }
      benchmark::DoNotOptimize(pkgdist::Sha256Of(parsed.chunk().data()));
    }
  }
  SetBytes(state, data.size());
}
BENCHMARK(BM_ChunkMessagePath)->Arg(16)->Arg(32)->Arg(64)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace
