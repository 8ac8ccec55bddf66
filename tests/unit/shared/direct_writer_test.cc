#include "shared/direct_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "tests/unit/shared/file_size_limit.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr size_t kCapacity = 64 * 1024;

std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7 % 251);
  return s;
}

class DirectWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("direct-writer");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    path_ = dir_->path() + "/file";
    auto fd = OpenFile(path_, O_RDWR | O_CREAT | O_EXCL);
    ASSERT_TRUE(fd.ok()) << fd.status();
    fd_ = std::move(*fd);
  }

  std::string Content() {
    auto s = ReadFileToString(path_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : "";
  }

  std::optional<TempDir> dir_;
  std::string path_;
  UniqueFd fd_;
};

TEST_F(DirectWriterTest, WholeBlocksAndPartialPiecesLandAtTheirOffsetsOutOfOrder) {
  // Whole blocks are queued for O_DIRECT, partial ones written buffered;
  // after Drain the file holds every piece where it was put, whichever path
  // it took.
  std::string a = Pattern(kCapacity, 'a');        // whole blocks, direct
  std::string b = Pattern(3 * 4096, 'b');         // whole blocks, direct
  std::string tail = Pattern(1000, 't');          // partial: buffered
  std::string big = Pattern(2 * kCapacity, 'g');  // two buffers' worth, direct
  uint64_t b_at = kCapacity, tail_at = kCapacity + b.size(), big_at = 4 * kCapacity;
  DirectWriter w(kCapacity, /*buffers=*/2);
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), tail, tail_at).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), b, b_at).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), big, big_at).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), a, 0).ok());
  ASSERT_TRUE(w.Drain().ok());
  ASSERT_EQ(::fsync(fd_.get()), 0);

  std::string got = Content();
  ASSERT_EQ(got.size(), big_at + big.size());
  EXPECT_EQ(got.substr(0, a.size()), a);
  EXPECT_EQ(got.substr(b_at, b.size()), b);
  EXPECT_EQ(got.substr(tail_at, tail.size()), tail);
  EXPECT_EQ(got.substr(big_at, big.size()), big);
  EXPECT_EQ(got.substr(tail_at + tail.size(), big_at - tail_at - tail.size()),
            std::string(big_at - tail_at - tail.size(), '\0'));
}

TEST_F(DirectWriterTest, UnalignedPiecesInARowGoOutAsWholeBlocks) {
  // Content-defined chunks end anywhere: a run of them must still reach the
  // disk in whole blocks, past the page cache. Only the blocks where a run
  // is cut (here: a task, a jump to another offset, the end) are written
  // buffered, at most one block's worth at each cut.
  DirectWriter w(kCapacity, /*buffers=*/3);
  std::string expect = Pattern(10 * kCapacity + 1234, 'u');
  uint64_t at = 0, state = 42;
  int cuts = 0;
  while (at < expect.size()) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    size_t n = std::min<size_t>(1 + (state >> 33) % 20000, expect.size() - at);
    ASSERT_TRUE(w.WriteAt(path_, fd_.get(), absl::string_view(expect).substr(at, n), at).ok());
    at += n;
    if (at > 4 * kCapacity && cuts == 0) {
      w.Then([] { return absl::OkStatus(); });  // a flush: the run's tail must be on disk
      ++cuts;
    }
  }
  // A jump back: a piece at an earlier offset starts a new run.
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), absl::string_view(expect).substr(100, 5000), 100).ok());
  cuts += 2;  // the jump, and the end of the jump's own run
  ASSERT_TRUE(w.Drain().ok());
  EXPECT_EQ(Content(), expect);
  EXPECT_LE(w.buffered_bytes(), uint64_t{2 * 4096} * static_cast<uint64_t>(cuts + 1))
      << "unaligned pieces in a row were written through the page cache";
}

TEST_F(DirectWriterTest, ManyQueuedWritesThroughFewBuffersAllArrive) {
  // More writes than buffers: WriteAt waits for a free buffer, never reuses
  // one still being written. Consecutive pieces are gathered into larger
  // writes (up to kMaxGather), with 2 buffers and with 8, then a gap.
  std::string expect;
  for (int buffers : {2, 8}) {
    DirectWriter w(kCapacity, buffers);
    for (int i = 0; i < 64; ++i) {
      std::string piece = Pattern(kCapacity, static_cast<char>(i + buffers));
      ASSERT_TRUE(w.WriteAt(path_, fd_.get(), piece, expect.size()).ok());
      expect += piece;
    }
    ASSERT_TRUE(w.Close().ok());
    EXPECT_EQ(Content(), expect) << buffers << " buffers";
  }
  DirectWriter w(kCapacity);
  std::string after_gap = Pattern(kCapacity, 'z');
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), after_gap, expect.size() + kCapacity).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), after_gap, expect.size() - kCapacity).ok());
  ASSERT_TRUE(w.Close().ok());
  expect.replace(expect.size() - kCapacity, kCapacity, after_gap);
  expect += std::string(kCapacity, '\0') + after_gap;
  EXPECT_EQ(Content(), expect);
}

TEST_F(DirectWriterTest, SwitchingFilesFinishesTheFirstFilesWrites) {
  // SwitchTo waits for the current file's writes, so the caller may then
  // fsync or close that file knowing they are in it.
  std::string other = dir_->path() + "/other";
  auto other_fd = OpenFile(other, O_RDWR | O_CREAT | O_EXCL);
  ASSERT_TRUE(other_fd.ok()) << other_fd.status();
  DirectWriter w(kCapacity);
  std::string piece = Pattern(kCapacity, 'x');
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), piece, 0).ok());
  ASSERT_TRUE(w.SwitchTo(other).ok());
  EXPECT_EQ(Content(), piece);
  ASSERT_TRUE(w.WriteAt(other, other_fd->get(), piece, kCapacity).ok());
  ASSERT_TRUE(w.Drain().ok());
  auto got = ReadFileToString(other);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->substr(kCapacity), piece);
}

TEST_F(DirectWriterTest, AFailedQueuedWriteIsReportedByDrainAndEveryLaterCall) {
  // A queued write fails after WriteAt returned; the error must not be lost.
  // RLIMIT_FSIZE makes the kernel refuse the write (EFBIG) without a full disk.
  DirectWriter w(kCapacity);
  std::string piece = Pattern(kCapacity, 'y');
  absl::Status queued, drained, later;
  {
    testing::FileSizeLimit limit(kCapacity);
    ASSERT_TRUE(limit.ok());
    queued = w.WriteAt(path_, fd_.get(), piece, 4 * kCapacity);
    drained = w.Drain();
    later = w.WriteAt(path_, fd_.get(), piece, 0);
  }
  EXPECT_TRUE(queued.ok()) << queued;
  ASSERT_FALSE(drained.ok());
  EXPECT_THAT(std::string(drained.message()), HasSubstr(path_));
  EXPECT_THAT(std::string(drained.message()), HasSubstr("File too large"));
  EXPECT_EQ(later, drained);
  EXPECT_EQ(w.Close(), drained);
}

TEST_F(DirectWriterTest, ATaskRunsAfterTheWritesQueuedBeforeItAndInOrder) {
  // Then() is how the agent fsyncs and journals a batch without waiting:
  // each task must see every write queued before it, and tasks run in order.
  DirectWriter w(kCapacity, /*buffers=*/2);
  std::vector<std::string> seen;
  std::vector<uint64_t> tickets;
  for (int i = 0; i < 3; ++i) {
    std::string piece = Pattern(kCapacity, static_cast<char>('a' + i));
    ASSERT_TRUE(w.WriteAt(path_, fd_.get(), piece, static_cast<uint64_t>(i) * kCapacity).ok());
    tickets.push_back(w.Then([this, &seen] {
      seen.push_back(Content());
      return absl::OkStatus();
    }));
  }
  EXPECT_THAT(tickets, ElementsAre(1, 2, 3));
  ASSERT_TRUE(w.Wait(3).ok());
  auto done = w.Done(3);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  ASSERT_EQ(seen.size(), 3u);
  // A task may also see writes queued after it (they go on beside it).
  std::string expected;
  for (size_t i = 0; i < 3; ++i) {
    expected += Pattern(kCapacity, static_cast<char>('a' + i));
    EXPECT_EQ(seen[i].substr(0, expected.size()), expected) << "task " << i;
  }
}

TEST_F(DirectWriterTest, WritesQueuedAfterATaskGoOnWhileItRuns) {
  // The agent's fsync + journal must not stop the next batch's writes. With
  // one buffer, WriteAt(c) returns only once b is written; the task holds
  // until then (bounded), so it fails if b waited for it.
  DirectWriter w(kCapacity, /*buffers=*/1);
  absl::Notification later_writes_done;
  std::string a = Pattern(kCapacity, 'a'), b = Pattern(kCapacity, 'b'), c = Pattern(kCapacity, 'c');
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), a, 0).ok());
  uint64_t ticket = w.Then([&later_writes_done] {
    if (later_writes_done.WaitForNotificationWithTimeout(absl::Seconds(10))) return absl::OkStatus();
    return absl::DeadlineExceededError("writes queued after the task waited for it");
  });
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), b, kCapacity).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), c, 2 * kCapacity).ok());
  later_writes_done.Notify();
  absl::Status s = w.Wait(ticket);
  EXPECT_TRUE(s.ok()) << s;
  ASSERT_TRUE(w.Drain().ok());
  EXPECT_EQ(Content(), a + b + c);
}

TEST_F(DirectWriterTest, SwitchingFilesWaitsForRunningTasks) {
  // The agent closes an evicted file after a switch; a flush task must not
  // still be syncing it, whichever path the writes took (a filesystem that
  // refuses O_DIRECT used to switch at once). The task stands for a slow
  // fsync: it holds 200 ms unless released, so it still runs at SwitchTo.
  std::string other = dir_->path() + "/other";
  ASSERT_TRUE(OpenFile(other, O_RDWR | O_CREAT | O_EXCL).ok());
  DirectWriter w(kCapacity);
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), Pattern(1000, 'p'), 0).ok());  // partial: buffered
  absl::Notification never;
  uint64_t ticket = w.Then([&never] {
    never.WaitForNotificationWithTimeout(absl::Milliseconds(200));
    return absl::OkStatus();
  });
  ASSERT_TRUE(w.SwitchTo(other).ok());
  auto done = w.Done(ticket);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done) << "SwitchTo returned while a task was still running";
}

TEST_F(DirectWriterTest, AFailedTaskIsTheWritersErrorAndLaterTasksAreSkipped) {
  // A failed fsync or journal write in a task must reach whoever waits for
  // any later task, and nothing after it may run as if it had succeeded.
  DirectWriter w(kCapacity);
  bool later_ran = false;
  uint64_t failing = w.Then([] { return absl::InternalError("fsync journal: Input/output error"); });
  uint64_t later = w.Then([&later_ran] {
    later_ran = true;
    return absl::OkStatus();
  });
  absl::Status waited = w.Wait(later);
  EXPECT_THAT(std::string(waited.message()), HasSubstr("Input/output error"));
  EXPECT_EQ(w.Wait(failing), waited);
  EXPECT_EQ(w.Done(later).status(), waited);
  EXPECT_EQ(w.Drain(), waited);
  EXPECT_FALSE(later_ran);
}

TEST_F(DirectWriterTest, AMissingFileIsAnErrorNamingIt) {
  DirectWriter w(kCapacity);
  std::string missing = dir_->path() + "/missing";
  absl::Status s = w.WriteAt(missing, fd_.get(), Pattern(4096, 'm'), 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr(missing));
}

// `data` cut at `cuts` (offsets into it, ascending; those outside (0, size)
// are ignored), as views into it.
std::vector<absl::string_view> CutAt(absl::string_view data, const std::vector<size_t>& cuts) {
  std::vector<absl::string_view> out;
  size_t from = 0;
  for (size_t cut : cuts) {
    if (cut <= from || cut >= data.size()) continue;
    out.push_back(data.substr(from, cut - from));
    from = cut;
  }
  out.push_back(data.substr(from));
  return out;
}

TEST_F(DirectWriterTest, PiecesWriteWhatOneStringWrites) {
  // Chunks given in pieces (received slices) cut after one byte and around
  // block and buffer boundaries make the same file, with the same bytes
  // written buffered, as the same chunks given whole: each piece continues
  // the run, only the run's head and tail go through the page cache.
  const std::string whole_path = dir_->path() + "/whole";
  auto whole_fd = OpenFile(whole_path, O_RDWR | O_CREAT | O_EXCL);
  ASSERT_TRUE(whole_fd.ok()) << whole_fd.status();
  DirectWriter in_pieces(kCapacity, /*buffers=*/2);
  DirectWriter whole(kCapacity, /*buffers=*/2);
  const uint64_t start = 3 * 4096 + 17;
  const uint64_t run_start = 4 * 4096;  // the run's buffers are filled from here
  uint64_t at = start;
  size_t cut_pieces = 0;
  // Copies: each chunk's own string is gone before Drain, so a writer that
  // kept a piece would read freed memory (which ASan reports).
  std::vector<std::string> chunks;
  for (size_t length : {size_t{5000}, size_t{1}, size_t{4096}, kCapacity + 10,
                        2 * kCapacity - 3, size_t{777}}) {
    const std::string data = Pattern(length, static_cast<char>('a' + chunks.size()));
    const size_t block = 4096 - at % 4096;
    const size_t buffer = kCapacity - (at + kCapacity - run_start) % kCapacity;
    const std::vector<absl::string_view> pieces =
        CutAt(data, {1, block, block + 1, block + 4096, buffer, buffer + 1, length - 1});
    cut_pieces += pieces.size();
    ASSERT_TRUE(in_pieces.WriteAt(path_, fd_.get(), pieces, at).ok());
    ASSERT_TRUE(whole.WriteAt(whole_path, whole_fd->get(), data, at).ok());
    at += length;
    chunks.push_back(data);
  }
  ASSERT_GT(cut_pieces, 3 * chunks.size()) << "the chunks were not cut as meant";
  ASSERT_TRUE(in_pieces.Drain().ok());
  ASSERT_TRUE(whole.Drain().ok());
  std::string expect(start, '\0');
  for (const std::string& c : chunks) expect += c;
  EXPECT_TRUE(Content() == expect) << "the file written from pieces differs";
  auto whole_content = ReadFileToString(whole_path);
  ASSERT_TRUE(whole_content.ok()) << whole_content.status();
  EXPECT_TRUE(*whole_content == expect) << "the file written whole differs";
  EXPECT_EQ(in_pieces.buffered_bytes(), whole.buffered_bytes());
  EXPECT_LE(in_pieces.buffered_bytes(), uint64_t{2 * 4096})
      << "pieces of one run were written through the page cache";
}

TEST_F(DirectWriterTest, NoPiecesOrEmptyPiecesWriteNothing) {
  // An empty run touches neither the file nor the writer's state.
  DirectWriter w(kCapacity);
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), std::vector<absl::string_view>{}, 0).ok());
  ASSERT_TRUE(w.WriteAt(path_, fd_.get(), std::vector<absl::string_view>{"", ""}, 4096).ok());
  ASSERT_TRUE(w.Drain().ok());
  EXPECT_EQ(Content(), "");
  EXPECT_EQ(w.buffered_bytes(), 0u);
}

}  // namespace
}  // namespace pkgdist
