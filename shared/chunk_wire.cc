#include "shared/chunk_wire.h"

#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace pkgdist {
namespace {

// Protobuf's tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
constexpr uint8_t kRequestChunkTag = (2 << 3) | 2;  // TransferRequest.chunk
constexpr uint8_t kIndexTag = (1 << 3) | 0;         // Chunk.index
constexpr uint8_t kDataTag = (2 << 3) | 2;          // Chunk.data
constexpr uint8_t kCountTag = (3 << 3) | 0;         // Chunk.count

constexpr size_t kMaxVarint32 = 5;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

grpc::Slice SliceOf(const std::string& bytes) { return grpc::Slice(bytes.data(), bytes.size()); }

// Reads across the slices of a received message, front to back.
class SliceCursor {
 public:
  explicit SliceCursor(const std::vector<grpc::Slice>& slices) : slices_(slices) {
    for (const grpc::Slice& s : slices) left_ += s.size();
  }
  size_t left() const { return left_; }

  std::optional<uint8_t> Byte() {
    if (left_ == 0) return std::nullopt;
    Skip();
    const auto b = static_cast<uint8_t>(slices_[slice_].begin()[pos_]);
    ++pos_;
    --left_;
    return b;
  }
  // A varint of at most 5 bytes whose value fits 32 bits (anything else is
  // left to protobuf).
  std::optional<uint32_t> Varint32() {
    uint64_t v = 0;
    for (size_t i = 0; i < kMaxVarint32; ++i) {
      std::optional<uint8_t> b = Byte();
      if (!b) return std::nullopt;
      v |= uint64_t{*b & 0x7fu} << (7 * i);
      if ((*b & 0x80) == 0) {
        if (v > UINT32_MAX) return std::nullopt;
        return static_cast<uint32_t>(v);
      }
    }
    return std::nullopt;
  }
  // The next n bytes as views into the slices; false if fewer are left.
  bool Take(size_t n, Pieces* out) {
    if (n > left_) return false;
    left_ -= n;
    while (n > 0) {
      Skip();
      const grpc::Slice& s = slices_[slice_];
      const size_t k = std::min(n, s.size() - pos_);
      out->Append(absl::string_view(reinterpret_cast<const char*>(s.begin()) + pos_, k));
      pos_ += k;
      n -= k;
    }
    return true;
  }

 private:
  // Moves past finished (and empty) slices; only called with bytes left.
  void Skip() {
    while (pos_ == slices_[slice_].size()) {
      ++slice_;
      pos_ = 0;
    }
  }

  const std::vector<grpc::Slice>& slices_;
  size_t slice_ = 0;
  size_t pos_ = 0;
  size_t left_ = 0;
};

// The canonical encoding of TransferRequest{chunk}: the request's only field
// is the chunk, whose fields come at most once each, in field order. Fills
// index, count and data; false for anything else.
bool ParseCanonicalChunk(SliceCursor& in, uint32_t* index, uint32_t* count, Pieces* data) {
  if (in.Byte() != kRequestChunkTag) return false;
  std::optional<uint32_t> length = in.Varint32();
  if (!length || *length != in.left()) return false;
  *index = *count = 0;
  int last_field = 0;
  while (in.left() > 0) {
    const std::optional<uint8_t> tag = in.Byte();
    const int field = *tag >> 3;
    if (field <= last_field) return false;
    last_field = field;
    std::optional<uint32_t> v;
    if (*tag == kIndexTag) {
      if (!(v = in.Varint32())) return false;
      *index = *v;
    } else if (*tag == kDataTag) {
      if (!(v = in.Varint32()) || !in.Take(*v, data)) return false;
    } else if (*tag == kCountTag) {
      if (!(v = in.Varint32())) return false;
      *count = *v;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

Pieces Pieces::TakeFront(size_t n) {
  Pieces front;
  size_t i = 0;
  while (n > 0) {
    absl::string_view& p = pieces_[i];
    if (p.size() <= n) {
      front.Append(p);
      n -= p.size();
      size_ -= p.size();
      ++i;
    } else {
      front.Append(p.substr(0, n));
      p.remove_prefix(n);
      size_ -= n;
      n = 0;
    }
  }
  pieces_.erase(pieces_.begin(), pieces_.begin() + static_cast<std::ptrdiff_t>(i));
  return front;
}

std::string Pieces::ToString() const {
  std::string s;
  s.reserve(size_);
  for (absl::string_view p : pieces_) s.append(p.data(), p.size());
  return s;
}

grpc::ByteBuffer EncodeChunkRequest(uint32_t index, uint32_t count, const grpc::Slice& data) {
  // Proto3 leaves out fields that hold their default, as protobuf does.
  const size_t size = data.size();
  const size_t chunk_length = (index != 0 ? 1 + VarintSize(index) : 0) +
                              (size != 0 ? 1 + VarintSize(size) + size : 0) +
                              (count != 0 ? 1 + VarintSize(count) : 0);
  std::string head;
  head.push_back(static_cast<char>(kRequestChunkTag));
  PutVarint(chunk_length, &head);
  if (index != 0) {
    head.push_back(static_cast<char>(kIndexTag));
    PutVarint(index, &head);
  }
  if (size == 0) {
    if (count != 0) {
      head.push_back(static_cast<char>(kCountTag));
      PutVarint(count, &head);
    }
    grpc::Slice only = SliceOf(head);
    return grpc::ByteBuffer(&only, 1);
  }
  head.push_back(static_cast<char>(kDataTag));
  PutVarint(size, &head);
  if (count == 0) {
    grpc::Slice slices[] = {SliceOf(head), data};
    return grpc::ByteBuffer(slices, 2);
  }
  std::string tail;
  tail.push_back(static_cast<char>(kCountTag));
  PutVarint(count, &tail);
  grpc::Slice slices[] = {SliceOf(head), data, SliceOf(tail)};
  return grpc::ByteBuffer(slices, 3);
}

absl::Status ParseTransferRequest(grpc::ByteBuffer& buffer, ReceivedRequest* out) {
  out->request.Clear();
  out->data = Pieces();
  out->slices.clear();
  if (grpc::Status s = buffer.Dump(&out->slices); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("unreadable message: ", s.error_message()));
  }
  uint32_t index = 0;
  uint32_t count = 0;
  SliceCursor in(out->slices);
  if (ParseCanonicalChunk(in, &index, &count, &out->data)) {
    pkgdist::v1::Chunk* chunk = out->request.mutable_chunk();
    chunk->set_index(index);
    chunk->set_count(count);
    return absl::OkStatus();
  }
  out->data = Pieces();
  out->slices.clear();
  grpc::ProtoBufferReader reader(&buffer);
  if (!out->request.ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a TransferRequest of ", buffer.Length(), " bytes that does not parse"));
  }
  if (out->request.has_chunk()) out->data = Pieces(out->request.chunk().data());
  return absl::OkStatus();
}

}  // namespace pkgdist
