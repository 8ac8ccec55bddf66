// libFuzzer target: TransferRequest parsing out of received slices
// (shared/chunk_wire.h), the agent's first look at a controller's bytes.
//
// Input byte 0 seeds where the rest, the message, is cut into slices (as
// gRPC hands a message over in pieces). Invariants: ParseTransferRequest
// accepts exactly what protobuf accepts, and gives the same message (the
// chunk's index, count and data, whether the fast path read them out of the
// slices or protobuf parsed them); a chunk encoded by EncodeChunkRequest
// parses back to itself, and the encoding is protobuf's own.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pkgdist/v1/agent.pb.h"
#include "shared/chunk_wire.h"
#include "tests/fuzz/fuzz_util.h"

namespace pkgdist::fuzz {
namespace {

using pkgdist::v1::TransferRequest;

grpc::ByteBuffer Cut(const std::string& bytes, uint8_t seed) {
  std::vector<grpc::Slice> slices;
  size_t from = 0;
  size_t step = 1 + seed % 13;
  while (bytes.size() - from > step) {
    slices.emplace_back(bytes.data() + from, step);
    from += step;
    step = 1 + (step * 7 + seed) % 29;
  }
  slices.emplace_back(bytes.data() + from, bytes.size() - from);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  Check(buffer.Dump(&slices).ok(), "Dump failed");
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

void CheckSame(const ReceivedRequest& got, const TransferRequest& want) {
  Check(got.request.msg_case() == want.msg_case(), "parsed to another kind of message");
  if (!want.has_chunk()) {
    Check(got.request.SerializeAsString() == want.SerializeAsString(),
          "a message other than a chunk parsed differently");
    return;
  }
  Check(got.request.chunk().index() == want.chunk().index(), "chunk index differs");
  Check(got.request.chunk().count() == want.chunk().count(), "chunk count differs");
  Check(got.data.ToString() == want.chunk().data(), "chunk data differs");
}

void CheckEncoding(const TransferRequest& want) {
  const pkgdist::v1::Chunk& c = want.chunk();
  grpc::Slice data(c.data().data(), c.data().size());
  grpc::ByteBuffer encoded = EncodeChunkRequest(c.index(), c.count(), data);
  TransferRequest canonical;
  canonical.mutable_chunk()->set_index(c.index());
  canonical.mutable_chunk()->set_count(c.count());
  canonical.mutable_chunk()->set_data(c.data());
  Check(Flatten(encoded) == canonical.SerializeAsString(), "EncodeChunkRequest is not protobuf's");
  ReceivedRequest back;
  Check(ParseTransferRequest(encoded, &back).ok(), "an encoded chunk does not parse");
  Check(back.request.chunk().data().empty(), "an encoded chunk missed the fast path");
  CheckSame(back, canonical);
}

}  // namespace
}  // namespace pkgdist::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pkgdist;
  using namespace pkgdist::fuzz;
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  grpc::ByteBuffer buffer = Cut(bytes, data[0]);
  ReceivedRequest got;
  const bool parsed = ParseTransferRequest(buffer, &got).ok();
  pkgdist::v1::TransferRequest want;
  Check(parsed == want.ParseFromString(bytes), "accepts what protobuf refuses, or refuses what it accepts");
  if (!parsed) return 0;
  CheckSame(got, want);
  if (want.has_chunk()) CheckEncoding(want);
  return 0;
}
