#include "agent/staging.h"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

}  // namespace
}  // namespace pkgdist
