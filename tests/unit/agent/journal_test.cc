#include "agent/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class JournalTest : public ::testing::Test {
 protected:
  JournalTest() : dir_(testing::MakeTempDir()), path_(dir_.path() + "/journal") {
    for (int i = 0; i < 4; ++i) hashes_.push_back(Sha256Of(std::string(1, static_cast<char>('a' + i))));
  }

  std::unique_ptr<Journal> OpenJournal() {
    auto j = Journal::Open(path_, hashes_);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? std::move(j).value() : nullptr;
  }

  JournalEntry Entry(uint32_t index) { return JournalEntry{index, hashes_[index]}; }

  void AppendRaw(absl::string_view bytes) {
    std::string data = testing::ReadFile(path_);
    ASSERT_TRUE(WriteFileAtomic(path_, data + std::string(bytes)).ok());
  }

  off_t FileSize() {
    struct stat st;
    EXPECT_EQ(::stat(path_.c_str(), &st), 0);
    return st.st_size;
  }

  TempDir dir_;
  std::string path_;
  std::vector<Digest> hashes_;
};

TEST_F(JournalTest, ReplaysIntactRecordsAcrossReopens) {
  // Records appended in several batches are all replayed, deduplicated and ascending.
  {
    auto j = OpenJournal();
    EXPECT_THAT(j->replayed(), IsEmpty());
    ASSERT_TRUE(j->Append({Entry(2), Entry(0)}).ok());
  }
  {
    auto j = OpenJournal();
    EXPECT_THAT(j->replayed(), ElementsAre(0, 2));
    ASSERT_TRUE(j->Append({Entry(3), Entry(2)}).ok());
  }
  EXPECT_THAT(OpenJournal()->replayed(), ElementsAre(0, 2, 3));
}

TEST_F(JournalTest, DiscardsAndTruncatesATornTail) {
  // Half a record left by a crash is dropped, the file cut back, and appends continue cleanly.
  ASSERT_TRUE(OpenJournal()->Append({Entry(0), Entry(1)}).ok());
  AppendRaw(EncodeJournalRecord(Entry(2)).substr(0, 20));
  {
    auto j = OpenJournal();
    EXPECT_THAT(j->replayed(), ElementsAre(0, 1));
    EXPECT_EQ(FileSize(), static_cast<off_t>(2 * kJournalRecordSize));
    ASSERT_TRUE(j->Append({Entry(3)}).ok());
  }
  EXPECT_THAT(OpenJournal()->replayed(), ElementsAre(0, 1, 3));
}

TEST_F(JournalTest, StopsReplayAtACorruptRecord) {
  // A record failing its checksum ends replay; it and everything after it are discarded.
  ASSERT_TRUE(OpenJournal()->Append({Entry(0), Entry(1), Entry(2)}).ok());
  std::string data = testing::ReadFile(path_);
  data[kJournalRecordSize + 10] ^= 0x40;  // inside record 2's hash
  ASSERT_TRUE(WriteFileAtomic(path_, data).ok());
  EXPECT_THAT(OpenJournal()->replayed(), ElementsAre(0));
  EXPECT_EQ(FileSize(), static_cast<off_t>(kJournalRecordSize));
}

TEST_F(JournalTest, IgnoresRecordsWhoseHashOrIndexIsNotTheManifests) {
  // Well-formed records for another manifest's content are skipped, later good ones kept.
  JournalEntry wrong_hash{1, Sha256Of("other content")};
  JournalEntry out_of_range{9, hashes_[0]};
  ASSERT_TRUE(OpenJournal()->Append({wrong_hash, out_of_range, Entry(2)}).ok());
  EXPECT_THAT(OpenJournal()->replayed(), ElementsAre(2));
  EXPECT_EQ(FileSize(), static_cast<off_t>(3 * kJournalRecordSize));
}

TEST_F(JournalTest, ReadJournalLeavesTheFileUntouched) {
  // The read-only replay used by inventory sees valid records and never truncates.
  ASSERT_TRUE(OpenJournal()->Append({Entry(1)}).ok());
  AppendRaw("torn");
  auto read = ReadJournal(path_, hashes_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(1));
  EXPECT_EQ(FileSize(), static_cast<off_t>(kJournalRecordSize + 4));
  auto missing = ReadJournal(dir_.path() + "/absent", hashes_);
  ASSERT_TRUE(missing.ok());
  EXPECT_THAT(*missing, IsEmpty());
}

}  // namespace
}  // namespace pkgdist
