// Manifest building: ManifestBuilder over a 64 MiB file held in memory
// (whole-file and per-chunk sha256, 1 MiB chunks), fed in 1 MiB appends.
#include <string>

#include <benchmark/benchmark.h>

#include "shared/manifest.h"

namespace {

void BM_ManifestBuilder64MiB(benchmark::State& state) {
  constexpr size_t kFileBytes = size_t{64} << 20;
  const size_t piece_bytes = static_cast<size_t>(state.range(0));
  const std::string piece(piece_bytes, 'm');
  for (auto _ : state) {
    pkgdist::ManifestBuilder b("bench", "1");
    if (!b.BeginFile("data.bin", 0644, kFileBytes).ok()) state.SkipWithError("BeginFile");
    for (size_t done = 0; done < kFileBytes; done += piece_bytes) {
      if (!b.Append(piece).ok()) state.SkipWithError("Append");
    }
    if (!b.EndFile().ok()) state.SkipWithError("EndFile");
    auto m = b.Finish();
    if (!m.ok()) state.SkipWithError("Finish");
    benchmark::DoNotOptimize(m);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kFileBytes);
}
BENCHMARK(BM_ManifestBuilder64MiB)->Arg(64 << 10)->Arg(1 << 20)->Unit(benchmark::kMillisecond);

}  // namespace
