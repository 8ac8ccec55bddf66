#include "shared/chunk_wire.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using ::testing::HasSubstr;

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// `bytes` as a received message cut into slices at `cuts` (ascending).
grpc::ByteBuffer Received(const std::string& bytes, const std::vector<size_t>& cuts) {
  std::vector<grpc::Slice> slices;
  size_t from = 0;
  for (size_t cut : cuts) {
    slices.emplace_back(bytes.data() + from, cut - from);
    from = cut;
  }
  slices.emplace_back(bytes.data() + from, bytes.size() - from);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

TransferRequest ChunkRequest(uint32_t index, uint32_t count, const std::string& data) {
  TransferRequest r;
  r.mutable_chunk()->set_index(index);
  r.mutable_chunk()->set_count(count);
  r.mutable_chunk()->set_data(data);
  return r;
}

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + (i >> 8));
  return s;
}

TEST(ChunkWireTest, EncodesExactlyAsProtobufDoes) {
  for (uint32_t index : {0u, 1u, 127u, 128u, 300'000u, UINT32_MAX}) {
    for (uint32_t count : {0u, 2u, 200u}) {
      for (size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{70'000}}) {
        const std::string data = Bytes(size);
        grpc::Slice slice(data.data(), data.size());
        EXPECT_EQ(Flatten(EncodeChunkRequest(index, count, slice)),
                  ChunkRequest(index, count, data).SerializeAsString())
            << "index " << index << " count " << count << " size " << size;
      }
    }
  }
}

TEST(ChunkWireTest, TheDataIsReferencedNotCopied) {
  const std::string data = Bytes(1 << 20);
  grpc::Slice slice(data.data(), data.size());  // this one is a copy, ours from here on
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(EncodeChunkRequest(9, 3, slice).Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 3u);
  EXPECT_EQ(slices[1].begin(), slice.begin());
}

TEST(ChunkWireTest, ParsesTheCanonicalChunkOutOfTheSlices) {
  const std::string data = Bytes(5000);
  const std::string wire = ChunkRequest(41, 7, data).SerializeAsString();
  // Cut everywhere: inside the tag, the varints, the data and the trailer.
  for (size_t cut = 1; cut < wire.size(); cut += (cut < 16 || cut > wire.size() - 8) ? 1 : 997) {
    grpc::ByteBuffer buffer = Received(wire, {cut});
    ReceivedRequest got;
    ASSERT_TRUE(ParseTransferRequest(buffer, &got).ok()) << "cut at " << cut;
    ASSERT_TRUE(got.request.has_chunk());
    EXPECT_EQ(got.request.chunk().index(), 41u);
    EXPECT_EQ(got.request.chunk().count(), 7u);
    EXPECT_TRUE(got.request.chunk().data().empty()) << "the fast path copied the data";
    EXPECT_EQ(got.data.ToString(), data) << "cut at " << cut;
  }
}

TEST(ChunkWireTest, DefaultsLeftOutParse) {
  for (const TransferRequest& r : {ChunkRequest(0, 0, "abc"), ChunkRequest(5, 0, ""),
                                   ChunkRequest(0, 0, "")}) {
    std::string wire = r.SerializeAsString();
    grpc::ByteBuffer buffer = Received(wire, {});
    ReceivedRequest got;
    ASSERT_TRUE(ParseTransferRequest(buffer, &got).ok());
    EXPECT_EQ(got.request.chunk().index(), r.chunk().index());
    EXPECT_EQ(got.request.chunk().count(), 0u);
    EXPECT_EQ(got.data.ToString(), r.chunk().data());
  }
}

TEST(ChunkWireTest, OtherEncodingsGoThroughProtobuf) {
  const std::string data = Bytes(300);
  // Fields out of order, a field twice (the last wins), an unknown field.
  std::string reversed = "\x18\x07";  // count 7
  reversed += "\x12" + std::string(1, static_cast<char>(0xac)) + "\x02" + data;  // data, length 300
  reversed += "\x08\x29";  // index 41
  std::string wire = "\x12" + std::string(1, static_cast<char>((reversed.size() & 0x7f) | 0x80)) +
                     std::string(1, static_cast<char>(reversed.size() >> 7)) + reversed;
  std::string twice = ChunkRequest(1, 0, "x").SerializeAsString() +
                      ChunkRequest(2, 0, data).SerializeAsString();  // sub-messages merge
  std::string unknown = ChunkRequest(3, 0, data).SerializeAsString() + "\x78\x01";  // field 15
  for (const std::string& bytes : {wire, twice, unknown}) {
    TransferRequest want;
    ASSERT_TRUE(want.ParseFromString(bytes));
    grpc::ByteBuffer buffer = Received(bytes, {3});
    ReceivedRequest got;
    ASSERT_TRUE(ParseTransferRequest(buffer, &got).ok());
    EXPECT_EQ(got.request.chunk().index(), want.chunk().index());
    EXPECT_EQ(got.request.chunk().count(), want.chunk().count());
    EXPECT_EQ(got.data.ToString(), want.chunk().data());
  }
}

TEST(ChunkWireTest, OtherMessagesParseWhole) {
  TransferRequest offer;
  offer.mutable_offer()->set_package_id(std::string(32, 'p'));
  offer.mutable_offer()->mutable_manifest()->set_name("tools");
  TransferRequest commit;
  commit.mutable_commit();
  for (const TransferRequest& r : {offer, commit, TransferRequest()}) {
    std::string wire = r.SerializeAsString();
    grpc::ByteBuffer buffer = Received(wire, {});
    ReceivedRequest got;
    ASSERT_TRUE(ParseTransferRequest(buffer, &got).ok());
    EXPECT_EQ(got.request.SerializeAsString(), wire);
    EXPECT_TRUE(got.data.empty());
  }
}

TEST(ChunkWireTest, GarbageIsInvalidArgument) {
  const std::string data = Bytes(100);
  std::string truncated = ChunkRequest(4, 0, data).SerializeAsString();
  truncated.resize(truncated.size() - 1);
  for (const std::string& bytes : {std::string("\xff\xff\xff"), truncated,
                                   std::string("\x12\x05\x08")}) {
    grpc::ByteBuffer buffer = Received(bytes, {});
    ReceivedRequest got;
    absl::Status s = ParseTransferRequest(buffer, &got);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("does not parse"));
  }
}

TEST(PiecesTest, TakeFrontSplitsAcrossPieces) {
  Pieces p;
  p.Append("abc");
  p.Append("");
  p.Append("defgh");
  p.Append("i");
  EXPECT_EQ(p.size(), 9u);
  EXPECT_EQ(p.pieces().size(), 3u) << "an empty piece is not kept";
  Pieces a = p.TakeFront(2);
  EXPECT_EQ(a.ToString(), "ab");
  Pieces b = p.TakeFront(4);
  EXPECT_EQ(b.ToString(), "cdef");
  EXPECT_EQ(b.pieces().size(), 2u);
  EXPECT_EQ(p.ToString(), "ghi");
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.TakeFront(3).ToString(), "ghi");
  EXPECT_TRUE(p.empty());
  EXPECT_TRUE(p.TakeFront(0).empty());
}

}  // namespace
}  // namespace pkgdist
