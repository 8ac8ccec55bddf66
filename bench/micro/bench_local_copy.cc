// The agent's copy of chunks it already holds (PackageStore::CopyLocalChunks:
// find each chunk in the chunk store, read it, verify its sha256, write it
// into the new staging, flush every 64 MiB): 256 MiB of random content in 8
// files, published as package "a", then staged as package "b" of the same
// content, whose every chunk is local. Arg 0: content-defined chunks (the
// default, 32 KiB on average); 1: fixed 1 MiB chunks. Before each
// iteration the source files are dropped from the page cache (as after a
// reboot, or on an agent whose packages outgrew its memory). Setup, the
// cache drop and the staging's removal are not timed.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>

#include <benchmark/benchmark.h>

#include "absl/strings/str_cat.h"
#include "agent/package_store.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace {

constexpr int kFiles = 8;
constexpr size_t kFileBytes = size_t{32} << 20;

// The content under `dir`, and package "a" of it published in `store`.
bool PublishSource(pkgdist::PackageStore& store, const std::string& dir,
                   const pkgdist::Chunking& chunking) {
  std::mt19937_64 rng(1);
  std::string data(kFileBytes, '\0');
  for (int f = 0; f < kFiles; ++f) {
    for (size_t i = 0; i < data.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(&data[i], &v, 8);
    }
    if (!pkgdist::WriteFileAtomic(absl::StrCat(dir, "/f", f), data).ok()) return false;
  }
  auto m = pkgdist::BuildManifestFromPath(dir, "a", "1", {}, chunking);
  if (!m.ok()) return false;
  const std::string id = pkgdist::PackageId(*m);
  auto staging = store.OpenStaging(*m, id);
  if (!staging.ok()) return false;
  std::string content;
  uint32_t content_file = UINT32_MAX;
  for (int i = 0; i < m->chunks_size(); ++i) {
    const auto& c = m->chunks(i);
    if (c.file() != content_file) {
      auto read = pkgdist::ReadFileToString(absl::StrCat(dir, "/", m->files(c.file()).path()));
      if (!read.ok()) return false;
      content = *std::move(read);
      content_file = c.file();
    }
    if (!(*staging)->WriteChunk(i, absl::string_view(content).substr(c.offset(), c.length())).ok()) {
      return false;
    }
  }
  return (*staging)->Flush().ok() && store.Publish(**staging, id).ok();
}

// Writes `path` back and drops it from the page cache.
void DropFromCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  (void)::fdatasync(fd);
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void BM_CopyLocalChunks256MiB(benchmark::State& state) {
  const pkgdist::Chunking chunking = state.range(0) == 0 ? pkgdist::Chunking::ContentDefined()
                                                         : pkgdist::Chunking::Fixed(1 << 20);
  auto tmp = pkgdist::TempDir::Create("pkgdist-bench-local-copy");
  if (!tmp.ok()) return state.SkipWithError("cannot create a temporary directory");
  const std::string src = tmp->path() + "/src";
  auto store = pkgdist::PackageStore::Open(tmp->path() + "/agent-root");
  if (!pkgdist::MakeDirs(src).ok() || !store.ok() || !PublishSource(**store, src, chunking)) {
    return state.SkipWithError("cannot publish the source package");
  }
  auto m = pkgdist::BuildManifestFromPath(src, "b", "1", {}, chunking);
  if (!m.ok()) return state.SkipWithError("cannot build the manifest");
  const std::string id = pkgdist::PackageId(*m);
  for (auto _ : state) {
    state.PauseTiming();
    for (int f = 0; f < kFiles; ++f) {
      DropFromCache(absl::StrCat(tmp->path(), "/agent-root/packages/a/1/f", f));
    }
    state.ResumeTiming();
    auto staging = (*store)->OpenStaging(*m, id);
    if (!staging.ok()) return state.SkipWithError("OpenStaging");
    const std::vector<uint32_t> local = (*store)->LocalChunks(**staging);
    auto failed = (*store)->CopyLocalChunks(
        **staging, local, [&] { return (*staging)->Flush().status(); });
    if (!failed.ok() || !failed->empty() || local.size() != static_cast<size_t>(m->chunks_size())) {
      return state.SkipWithError("not every chunk was copied");
    }
    state.PauseTiming();
    staging->reset();
    (void)(*store)->DiscardStaging(id);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kFiles * kFileBytes));
  state.counters["chunks"] = m->chunks_size();
}
BENCHMARK(BM_CopyLocalChunks256MiB)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
