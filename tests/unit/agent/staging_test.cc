#include "agent/staging.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/chunk_wire.h"
#include "shared/manifest.h"
#include "tests/unit/agent/agent_test_util.h"
#include "tests/unit/shared/file_size_limit.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint32_t kChunk = 4096;

// A package of two files: big.bin (3 chunks) and small.txt (1 chunk).
class StagingTest : public ::testing::Test {
 protected:
  StagingTest() : tmp_(testing::MakeTempDir()), src_(tmp_.path() + "/src") {
    testing::WriteFile(src_ + "/big.bin", testing::Pattern(2 * kChunk + 100, 'b'));
    testing::WriteFile(src_ + "/small.txt", "hello\n");
    manifest_ = testing::ManifestOf(src_, "app", "1.0", kChunk);
    dir_ = tmp_.path() + "/staging/" + PackageIdHex(manifest_);
  }

  std::unique_ptr<Staging> Open() {
    auto s = Staging::Open(dir_, manifest_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  std::string Data(uint32_t index) { return testing::ChunkData(manifest_, src_, index); }

  void WriteAll(Staging& s) {
    for (uint32_t i = 0; i < s.chunk_count(); ++i) ASSERT_TRUE(s.WriteChunk(i, Data(i)).ok());
  }

  TempDir tmp_;
  std::string src_;
  pkgdist::v1::Manifest manifest_;
  std::string dir_;
};

TEST_F(StagingTest, CreatesTheTreeWithFilesAtFinalSize) {
  // Opening lays out manifest.pb, journal and tree/ with sparse files of the final size, mode 0600.
  auto s = Open();
  EXPECT_EQ(s->chunk_count(), 4u);
  EXPECT_THAT(s->Missing(), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(s->missing_bytes(), 2 * kChunk + 100 + 6);
  EXPECT_TRUE(testing::ReadFile(dir_ + "/manifest.pb").size() > 0);
  EXPECT_EQ(testing::ReadFile(dir_ + "/tree/big.bin").size(), 2 * kChunk + 100);
  EXPECT_EQ(testing::ModeOf(dir_ + "/tree/big.bin"), 0600u);
}

TEST_F(StagingTest, ReopenResumesFromDurableChunksOnly) {
  // Flushed chunks survive a reopen; a chunk written but never flushed is needed again.
  {
    auto s = Open();
    ASSERT_TRUE(s->WriteChunk(2, Data(2)).ok());
    ASSERT_TRUE(s->WriteChunk(0, Data(0)).ok());
    EXPECT_EQ(s->unflushed_bytes(), kChunk + 100);
    auto flushed = s->Flush();
    ASSERT_TRUE(flushed.ok()) << flushed.status();
    EXPECT_THAT(*flushed, ElementsAre(0, 2));
    EXPECT_EQ(s->unflushed_bytes(), 0u);
    ASSERT_TRUE(s->WriteChunk(3, Data(3)).ok());
    EXPECT_TRUE(s->IsReceived(3));
    EXPECT_FALSE(s->IsDurable(3));
  }
  auto s = Open();
  EXPECT_THAT(s->Missing(), ElementsAre(1, 3));
  EXPECT_EQ(s->durable_count(), 2u);
}

TEST_F(StagingTest, AByteFlippedOnDiskWhileDownMakesOnlyThatChunkNeeded) {
  // Reopening re-hashes journaled chunks: only the damaged chunk is missing again.
  {
    auto s = Open();
    WriteAll(*s);
    ASSERT_TRUE(s->Flush().ok());
    EXPECT_THAT(s->Missing(), IsEmpty());
  }
  std::string path = dir_ + "/tree/big.bin";
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, kChunk + 7), 1);
  c ^= 0x01;
  ASSERT_EQ(::pwrite(fd, &c, 1, kChunk + 7), 1);
  ::close(fd);
  auto s = Open();
  EXPECT_THAT(s->Missing(), ElementsAre(1));
}

TEST_F(StagingTest, RejectsAnIndexOutOfRangeAndAWrongLength) {
  // Protocol violations are INVALID_ARGUMENT and change nothing.
  auto s = Open();
  EXPECT_TRUE(absl::IsInvalidArgument(s->WriteChunk(4, Data(0)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(s->WriteChunk(0, Data(0) + "x").status()));
  EXPECT_EQ(s->missing_count(), 4u);
}

TEST_F(StagingTest, AChunkWithTheWrongHashIsNeitherWrittenNorAcknowledged) {
  // Corrupt data is DATA_LOSS, stays missing and never reaches the journal.
  auto s = Open();
  std::string bad = Data(1);
  bad[0] ^= 0x20;
  EXPECT_TRUE(absl::IsDataLoss(s->WriteChunk(1, bad).status()));
  auto flushed = s->Flush();
  ASSERT_TRUE(flushed.ok());
  EXPECT_THAT(*flushed, IsEmpty());
  EXPECT_THAT(s->Missing(), ElementsAre(0, 1, 2, 3));
}

TEST_F(StagingTest, AChunkAlreadyReceivedIsNotWrittenAgain) {
  // A duplicate reports kAlreadyReceived and adds nothing to the next flush.
  auto s = Open();
  ASSERT_EQ(*s->WriteChunk(0, Data(0)), Staging::WriteResult::kWritten);
  ASSERT_TRUE(s->Flush().ok());
  EXPECT_EQ(*s->WriteChunk(0, Data(0)), Staging::WriteResult::kAlreadyReceived);
  EXPECT_EQ(s->unflushed_bytes(), 0u);
}

TEST_F(StagingTest, FlushesStartedInTurnAreCollectedInOrderAndSurviveAReopen) {
  // StartFlush returns before the disk is done; Collect hands each flush's
  // chunks back, oldest first, durable, and a reopened staging finds them.
  {
    auto s = Open();
    ASSERT_TRUE(s->WriteChunk(2, Data(2)).ok());
    ASSERT_TRUE(s->WriteChunk(0, Data(0)).ok());
    ASSERT_TRUE(s->StartFlush().ok());
    EXPECT_EQ(s->unflushed_bytes(), 0u);
    ASSERT_TRUE(s->WriteChunk(3, Data(3)).ok());
    ASSERT_TRUE(s->StartFlush().ok());
    ASSERT_TRUE(s->StartFlush().ok());  // nothing new: no third flush
    EXPECT_EQ(s->flushing_bytes(), kChunk + 100 + 6);  // chunks 0, 2 and 3
    auto flushed = s->Collect(Staging::Await::kAll);
    ASSERT_TRUE(flushed.ok()) << flushed.status();
    EXPECT_THAT(*flushed, ElementsAre(ElementsAre(0, 2), ElementsAre(3)));
    EXPECT_EQ(s->flushing_bytes(), 0u);
    EXPECT_EQ(s->durable_count(), 3u);
    EXPECT_TRUE(s->IsDurable(3));
    auto again = s->Collect(Staging::Await::kOldest);  // nothing running: returns at once
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_THAT(*again, IsEmpty());
  }
  auto reopened = Open();
  EXPECT_THAT(reopened->Missing(), ElementsAre(1));
}

TEST_F(StagingTest, AFailedJournalWriteFailsTheFlushAndTheStagingRefusesFurtherWrites) {
  // The journal append runs on the writer thread; its failure must reach
  // Collect, no chunk of that flush may count as durable, and a reopen must
  // need them again. RLIMIT_FSIZE at the journal's length makes the kernel
  // refuse the append (EFBIG) while the data write at offset 0 still fits.
  auto s = Open();
  ASSERT_TRUE(s->WriteChunk(0, Data(0)).ok());
  ASSERT_TRUE(s->Flush().ok());
  ASSERT_EQ(testing::ReadFile(dir_ + "/journal").size(), kJournalRecordSize);

  absl::Status wrote, started, later;
  absl::StatusOr<std::vector<std::vector<uint32_t>>> collected;
  {
    testing::FileSizeLimit limit(kJournalRecordSize);
    ASSERT_TRUE(limit.ok());
    wrote = s->WriteChunk(3, Data(3)).status();  // small.txt, offset 0
    started = s->StartFlush();
    collected = s->Collect(Staging::Await::kAll);
    later = s->WriteChunk(1, Data(1)).status();
  }

  EXPECT_TRUE(wrote.ok()) << wrote;
  EXPECT_TRUE(started.ok()) << started;
  ASSERT_FALSE(collected.ok());
  EXPECT_THAT(std::string(collected.status().message()), HasSubstr("File too large"));
  EXPECT_FALSE(s->IsDurable(3));
  EXPECT_EQ(later, collected.status());
  EXPECT_EQ(s->Flush().status(), collected.status());
  s.reset();
  auto reopened = Open();
  EXPECT_THAT(reopened->Missing(), ElementsAre(1, 2, 3));
}

TEST_F(StagingTest, SealIsRefusedBeforeEveryChunkIsDurable) {
  // Received but unflushed chunks do not count: Seal needs the journal to hold them all.
  auto s = Open();
  WriteAll(*s);
  EXPECT_TRUE(absl::IsFailedPrecondition(s->Seal()));
  ASSERT_TRUE(s->Flush().ok());
  EXPECT_TRUE(s->Seal().ok());
  EXPECT_EQ(testing::ReadFile(dir_ + "/tree/small.txt"), "hello\n");
}

TEST_F(StagingTest, SealDetectsAFileTruncatedAfterItsChunksWereJournaled) {
  // Content was verified chunk by chunk; Seal still refuses a file whose size changed.
  auto s = Open();
  WriteAll(*s);
  ASSERT_TRUE(s->Flush().ok());
  testing::WriteFile(dir_ + "/tree/small.txt", "hell", 0600);
  EXPECT_TRUE(absl::IsDataLoss(s->Seal()));
}

// `data` as pieces cut at `cuts` (offsets into it, ascending; those outside
// (0, size) are ignored).
Pieces CutAt(absl::string_view data, const std::vector<size_t>& cuts) {
  Pieces out;
  size_t from = 0;
  for (size_t cut : cuts) {
    if (cut <= from || cut >= data.size()) continue;
    out.Append(data.substr(from, cut - from));
    from = cut;
  }
  out.Append(data.substr(from));
  return out;
}

// A one-file package whose 6000-byte chunks straddle 4 KiB blocks.
class StagingPiecesTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kOddChunk = 6000;

  StagingPiecesTest() : tmp_(testing::MakeTempDir()), src_(tmp_.path() + "/src") {
    testing::WriteFile(src_ + "/data.bin", testing::Pattern(5 * kOddChunk + 3000, 'p'));
    manifest_ = testing::ManifestOf(src_, "odd", "1.0", kOddChunk);
  }

  std::unique_ptr<Staging> Open(const std::string& name) {
    auto s = Staging::Open(tmp_.path() + "/" + name + "/" + PackageIdHex(manifest_), manifest_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  std::string Data(uint32_t index) { return testing::ChunkData(manifest_, src_, index); }
  // Cuts of chunk `index`: after its first byte, at the first block
  // boundary of the file inside it and one byte past it, before its last.
  std::vector<size_t> OddCuts(uint32_t index) {
    const auto& c = manifest_.chunks(static_cast<int>(index));
    const size_t boundary = (c.offset() / 4096 + 1) * 4096 - c.offset();
    return {1, boundary, boundary + 1, c.length() - 1};
  }
  std::string Staged(Staging& s) { return testing::ReadFile(s.tree_dir() + "/data.bin"); }

  TempDir tmp_;
  std::string src_;
  pkgdist::v1::Manifest manifest_;
};

TEST_F(StagingPiecesTest, AChunkInPiecesWritesTheSameBytesAsInOneString) {
  // Chunks cut after 1 byte and around the 4 KiB block boundaries inside them
  // land on disk exactly as the same chunks given whole.
  ASSERT_EQ(manifest_.chunks_size(), 6);
  auto in_pieces = Open("pieces");
  auto whole = Open("whole");
  for (uint32_t i = 0; i < in_pieces->chunk_count(); ++i) {
    const std::string data = Data(i);
    const Pieces pieces = CutAt(data, OddCuts(i));
    ASSERT_GE(pieces.pieces().size(), 4u) << "chunk " << i << " was not cut as meant";
    auto written = in_pieces->WriteChunk(i, pieces);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(*written, Staging::WriteResult::kWritten);
    ASSERT_TRUE(whole->WriteChunk(i, data).ok());
  }
  ASSERT_TRUE(in_pieces->Flush().ok());
  ASSERT_TRUE(whole->Flush().ok());
  EXPECT_EQ(in_pieces->durable_count(), in_pieces->chunk_count());
  const std::string source = testing::ReadFile(src_ + "/data.bin");
  EXPECT_TRUE(Staged(*in_pieces) == source) << "the chunks written in pieces differ";
  EXPECT_TRUE(Staged(*whole) == source) << "the chunks written whole differ";
}

TEST_F(StagingPiecesTest, PiecesThatDoNotHashToTheChunkAreDataLoss) {
  // A byte flipped in the piece just past a block boundary fails the sha256
  // over the pieces: DATA_LOSS, nothing received; the right pieces then pass.
  auto s = Open("pieces");
  std::string bad = Data(1);
  const std::vector<size_t> cuts = OddCuts(1);
  bad[cuts[1]] ^= 0x01;
  auto written = s->WriteChunk(1, CutAt(bad, cuts));
  EXPECT_TRUE(absl::IsDataLoss(written.status())) << written.status();
  EXPECT_FALSE(s->IsReceived(1));
  const std::string good = Data(1);
  EXPECT_TRUE(s->WriteChunk(1, CutAt(good, cuts)).ok());
  EXPECT_TRUE(s->IsReceived(1));
}

TEST_F(StagingPiecesTest, PiecesOfTheWrongLengthAreInvalidArgument) {
  // The length is the pieces' total: one byte short is refused, unwritten.
  auto s = Open("pieces");
  const std::string data = Data(0);
  auto written = s->WriteChunk(0, CutAt(absl::string_view(data).substr(1), {1, 4095}));
  EXPECT_TRUE(absl::IsInvalidArgument(written.status())) << written.status();
  EXPECT_EQ(s->missing_count(), s->chunk_count());
}

}  // namespace
}  // namespace pkgdist
