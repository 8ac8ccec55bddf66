// Chunk messages on the wire without copying their bytes (issue 18).
//
// A Chunk carries up to 1 MiB of package content. Through protobuf, each
// byte is copied once more on each side: the controller serializes the
// message into a new buffer, and the agent parses the data field into a new
// std::string. Here the controller's TransferRequest{chunk} is a ByteBuffer
// of three slices (a header of varints, the data itself as read from disk,
// a trailer), and the agent reads index, count and the data's pieces
// straight out of the received ByteBuffer's slices. Every other message,
// and any Chunk in another encoding, goes through protobuf as before: the
// fast path only ever accepts the canonical encoding, which protobuf parses
// to the same message (chunk_wire_test checks both directions, and the
// fuzz target that arbitrary bytes never parse differently).
#ifndef PKGDIST_SHARED_CHUNK_WIRE_H_
#define PKGDIST_SHARED_CHUNK_WIRE_H_

#include <cstdint>
#include <string>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pkgdist/v1/agent.pb.h"

namespace pkgdist {

// Bytes in pieces that someone else owns (received slices, a string): a
// view, cheap to copy. The pieces are never empty.
class Pieces {
 public:
  Pieces() = default;
  explicit Pieces(absl::string_view one) { Append(one); }

  void Append(absl::string_view piece) {
    if (piece.empty()) return;
    pieces_.push_back(piece);
    size_ += piece.size();
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const std::vector<absl::string_view>& pieces() const { return pieces_; }
  // Removes the first n bytes (n <= size()) and returns them as pieces.
  Pieces TakeFront(size_t n);
  // A copy of the bytes in one string (tests, logs, the rare slow path).
  std::string ToString() const;

 private:
  std::vector<absl::string_view> pieces_;
  size_t size_ = 0;
};

// TransferRequest{chunk{index, count, data}} in protobuf's own encoding,
// with `data` as its own slice (referenced, not copied).
grpc::ByteBuffer EncodeChunkRequest(uint32_t index, uint32_t count, const grpc::Slice& data);

// A received TransferRequest. For a chunk in the canonical encoding,
// `request.chunk()` has index and count and no data, and `data` views the
// bytes inside `slices`; for anything else, `request` is the whole parsed
// message and `data` views request.chunk().data() if it is a chunk. Either
// way `data` is the chunk's bytes, valid while this object lives unchanged.
struct ReceivedRequest {
  pkgdist::v1::TransferRequest request;
  Pieces data;
  std::vector<grpc::Slice> slices;  // what `data` points into
};

// Parses `buffer` into *out (replacing what it held). INVALID_ARGUMENT for
// bytes protobuf cannot parse either.
absl::Status ParseTransferRequest(grpc::ByteBuffer& buffer, ReceivedRequest* out);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_CHUNK_WIRE_H_
