// Message encode/decode: a TransferRequest carrying one 1 MiB chunk, through
// protobuf's SerializeToString / ParseFromString (what gRPC's default
// serializer does for every chunk, once on each side).
#include <string>

#include <benchmark/benchmark.h>

#include "pkgdist/v1/agent.pb.h"

namespace {

pkgdist::v1::TransferRequest ChunkRequest() {
  pkgdist::v1::TransferRequest req;
  req.mutable_chunk()->set_index(42);
  req.mutable_chunk()->set_data(std::string(1 << 20, 'c'));
  return req;
}

void BM_EncodeChunkRequest1MiB(benchmark::State& state) {
  const pkgdist::v1::TransferRequest req = ChunkRequest();
  std::string wire;
  for (auto _ : state) {
    wire.clear();
    if (!req.SerializeToString(&wire)) state.SkipWithError("serialize");
    benchmark::DoNotOptimize(wire.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * (1 << 20));
}
BENCHMARK(BM_EncodeChunkRequest1MiB);

void BM_DecodeChunkRequest1MiB(benchmark::State& state) {
  std::string wire;
  ChunkRequest().SerializeToString(&wire);
  pkgdist::v1::TransferRequest req;
  for (auto _ : state) {
    if (!req.ParseFromString(wire)) state.SkipWithError("parse");
    benchmark::DoNotOptimize(req.chunk().data().data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * (1 << 20));
}
BENCHMARK(BM_DecodeChunkRequest1MiB);

}  // namespace
