// Chunk hashing: shared/sha256.h over one 1 MiB chunk (the controller hashes
// each chunk at import, the agent each chunk it receives).
#include <string>

#include <benchmark/benchmark.h>

#include "shared/sha256.h"

namespace {

void BM_Sha256Of1MiBChunk(benchmark::State& state) {
  const std::string chunk(1 << 20, 'x');
  for (auto _ : state) {
    pkgdist::Digest d = pkgdist::Sha256Of(chunk);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * chunk.size());
}
BENCHMARK(BM_Sha256Of1MiBChunk);

// The incremental hasher fed in 64 KiB pieces (how files are read at import).
void BM_Sha256Incremental64KiBPieces(benchmark::State& state) {
  const std::string piece(64 << 10, 'y');
  pkgdist::Sha256 h;
  for (auto _ : state) {
    for (int i = 0; i < 16; ++i) h.Update(piece);
    benchmark::DoNotOptimize(h.Finish());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 16 * piece.size());
}
BENCHMARK(BM_Sha256Incremental64KiBPieces);

}  // namespace
