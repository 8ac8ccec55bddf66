// The agent's chunk write + journal path: Staging::WriteChunk (verify the
// chunk's sha256, pwrite) for 64 chunks of 1 MiB, with Flush (fsync the
// files, append + fsync the journal) every Arg chunks. Each iteration uses a
// fresh staging directory; creating and removing it is not timed.
#include <string>

#include <benchmark/benchmark.h>

#include "absl/strings/str_cat.h"
#include "agent/staging.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace {

constexpr uint32_t kChunks = 64;
constexpr uint32_t kChunkBytes = 1 << 20;

pkgdist::v1::Manifest MakeManifest(const std::string& chunk) {
  pkgdist::ManifestBuilder b("bench", "1");
  (void)b.BeginFile("data.bin", 0644, uint64_t{kChunks} * kChunkBytes);
  for (uint32_t i = 0; i < kChunks; ++i) (void)b.Append(chunk);
  (void)b.EndFile();
  return *b.Finish();
}

void BM_StagingWriteAndFlush64MiB(benchmark::State& state) {
  const uint32_t flush_every = static_cast<uint32_t>(state.range(0));
  const std::string chunk(kChunkBytes, 's');
  const pkgdist::v1::Manifest manifest = MakeManifest(chunk);
  auto tmp = pkgdist::TempDir::Create("pkgdist-bench-staging");
  if (!tmp.ok()) {
    state.SkipWithError("cannot create a temporary directory");
    return;
  }
  int round = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::string dir = absl::StrCat(tmp->path(), "/s", round++);
    auto staging = pkgdist::Staging::Open(dir, manifest);
    if (!staging.ok()) {
      state.SkipWithError(std::string(staging.status().message()).c_str());
      break;
    }
    state.ResumeTiming();
    for (uint32_t i = 0; i < kChunks; ++i) {
      if (!(*staging)->WriteChunk(i, chunk).ok()) state.SkipWithError("WriteChunk");
      if ((i + 1) % flush_every == 0 && !(*staging)->Flush().ok()) state.SkipWithError("Flush");
    }
    state.PauseTiming();
    staging->reset();
    (void)pkgdist::RemoveAll(dir);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kChunks * kChunkBytes);
}
BENCHMARK(BM_StagingWriteAndFlush64MiB)
    ->Arg(1)
    ->Arg(8)
    ->Arg(64)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
