#include "agent/transfer_session.h"

#include <deque>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/manifest.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using pkgdist::v1::TransferRequest;
using pkgdist::v1::TransferResponse;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint32_t kChunk = 4096;

// Requests queued by the test (or by `on_write`, to react like a
// controller); responses recorded. Acks come from the agent's flush thread,
// so both sides lock mu; `on_write` runs with mu held. With `wait_for_more`,
// Read waits (10 s at most) for a request instead of ending the stream.
class FakeStream : public TransferStream {
 public:
  bool Read(TransferRequest* request) override {
    absl::MutexLock l(&mu);
    auto has_requests = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !requests.empty(); };
    if (wait_for_more) mu.AwaitWithTimeout(absl::Condition(&has_requests), absl::Seconds(10));
    if (requests.empty()) return false;
    *request = std::move(requests.front());
    requests.pop_front();
    return true;
  }
  bool Write(const TransferResponse& response) override {
    absl::MutexLock l(&mu);
    responses.push_back(response);
    if (on_write) on_write(response);
    return true;
  }

  absl::Mutex mu;
  std::deque<TransferRequest> requests;
  std::vector<TransferResponse> responses;
  std::function<void(const TransferResponse&)> on_write;
  bool wait_for_more = false;
};

std::vector<uint32_t> Indices(const google::protobuf::RepeatedField<uint32_t>& f) {
  return std::vector<uint32_t>(f.begin(), f.end());
}

class TransferSessionTest : public ::testing::Test {
 protected:
  TransferSessionTest() : tmp_(testing::MakeTempDir()), src_(tmp_.path() + "/src") {
    testing::WriteFile(src_ + "/data.bin", testing::Pattern(4 * kChunk, 'd'));
    testing::WriteFile(src_ + "/etc/app.conf", "key = value\n");
    manifest_ = testing::ManifestOf(src_, "app", "1.0", kChunk);  // chunks 0-3 data, 4 conf
    PackageStoreOptions options;
    options.reserve_bytes = 0;
    options.free_bytes = [this](const std::string&) -> absl::StatusOr<uint64_t> {
      return free_bytes_;
    };
    store_ = std::move(PackageStore::Open(tmp_.path() + "/agent-root", options)).value();
  }

  TransferRequest Offer(uint64_t window = 1 << 20) {
    TransferRequest r;
    *r.mutable_offer()->mutable_manifest() = manifest_;
    r.mutable_offer()->set_package_id(PackageId(manifest_));
    r.mutable_offer()->set_window_bytes(window);
    return r;
  }
  TransferRequest Chunk(uint32_t index) {
    return ChunkWithData(index, testing::ChunkData(manifest_, src_, index));
  }
  TransferRequest ChunkWithData(uint32_t index, std::string data) {
    TransferRequest r;
    r.mutable_chunk()->set_index(index);
    r.mutable_chunk()->set_data(std::move(data));
    return r;
  }
  TransferRequest Commit() {
    TransferRequest r;
    r.mutable_commit();
    return r;
  }

  absl::Status Run(FakeStream& stream) {
    TransferSession session(*store_, TransferOptions{}, stream, [] {}, "test-peer");
    return session.Run();
  }

  // Acts as the controller: sends what is needed, commits once all is acked.
  void ReactLikeAController(FakeStream& stream) {
    stream.on_write = [this, &stream](const TransferResponse& r) {
      if (r.has_need()) {
        for (uint32_t i : r.need().indices()) {
          outstanding_.insert(i);
          stream.requests.push_back(Chunk(i));
        }
        if (outstanding_.empty()) stream.requests.push_back(Commit());
      }
      if (r.has_ack()) {
        acked_ += r.ack().indices_size();
        for (uint32_t i : r.ack().indices()) outstanding_.erase(i);
        if (outstanding_.empty()) stream.requests.push_back(Commit());
      }
    };
  }

  TempDir tmp_;
  std::string src_;
  pkgdist::v1::Manifest manifest_;
  uint64_t free_bytes_ = uint64_t{1} << 40;
  std::unique_ptr<PackageStore> store_;
  int acked_ = 0;
  std::set<uint32_t> outstanding_;
};

TEST_F(TransferSessionTest, TransfersAndPublishesAPackage) {
  // Offer, Need everything, chunks, Acks for all, Commit, Published; the tree is in place.
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(Offer());
  ASSERT_TRUE(Run(stream).ok());
  ASSERT_GE(stream.responses.size(), 3u);
  EXPECT_THAT(Indices(stream.responses.front().need().indices()), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_EQ(stream.responses.back().published().package_id(), PackageId(manifest_));
  EXPECT_EQ(acked_, 5);
  EXPECT_EQ(testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/etc/app.conf"),
            "key = value\n");
}

TEST_F(TransferSessionTest, AChunkBeforeTheOfferIsInvalid) {
  // The first message must be an Offer.
  FakeStream stream;
  stream.requests.push_back(Chunk(0));
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("chunk before offer"));
  EXPECT_THAT(stream.responses, IsEmpty());
}

TEST_F(TransferSessionTest, AnOfferWhoseIdDoesNotMatchItsManifestIsRefused) {
  // The agent recomputes the package id; a mismatch is DATA_LOSS.
  FakeStream stream;
  TransferRequest offer = Offer();
  offer.mutable_offer()->set_package_id(std::string(32, 'x'));
  stream.requests.push_back(offer);
  EXPECT_TRUE(absl::IsDataLoss(Run(stream)));
}

TEST_F(TransferSessionTest, AManifestWithAPathLeavingThePackageIsRefused) {
  // Manifests are validated on every Offer: "../" paths never reach the disk.
  manifest_.mutable_files(0)->set_path("../escape");
  FakeStream stream;
  stream.requests.push_back(Offer());
  EXPECT_TRUE(absl::IsInvalidArgument(Run(stream)));
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() + "/escape"));
}

TEST_F(TransferSessionTest, AnAlreadyPublishedPackageAnswersPublishedAtOnce) {
  // A second Transfer of a published package is idempotent: Published, no Need.
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(Offer());
  ASSERT_TRUE(Run(first).ok());
  FakeStream second;
  second.requests.push_back(Offer());
  ASSERT_TRUE(Run(second).ok());
  ASSERT_EQ(second.responses.size(), 1u);
  EXPECT_EQ(second.responses[0].published().package_id(), PackageId(manifest_));
}

TEST_F(TransferSessionTest, OtherContentUnderAPublishedNameVersionIsAlreadyExists) {
  // name@version is immutable: different content under it is refused.
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(Offer());
  ASSERT_TRUE(Run(first).ok());
  testing::WriteFile(src_ + "/etc/app.conf", "key = other\n");
  manifest_ = testing::ManifestOf(src_, "app", "1.0", kChunk);
  FakeStream second;
  second.requests.push_back(Offer());
  EXPECT_TRUE(absl::IsAlreadyExists(Run(second)));
}

TEST_F(TransferSessionTest, ACorruptChunkIsRequestedAgainWithoutEndingTheStream) {
  // A hash mismatch answers Need{index}; the good copy that follows is acknowledged.
  FakeStream stream;
  stream.requests.push_back(Offer());
  for (uint32_t i = 0; i < 4; ++i) stream.requests.push_back(Chunk(i));
  std::string bad = testing::ChunkData(manifest_, src_, 4);
  bad[0] ^= 1;
  stream.requests.push_back(ChunkWithData(4, bad));
  stream.requests.push_back(Chunk(4));
  stream.requests.push_back(Commit());
  ASSERT_TRUE(Run(stream).ok());
  std::vector<uint32_t> acked;
  bool rerequested = false;
  for (const auto& r : stream.responses) {
    if (r.has_ack()) acked.insert(acked.end(), r.ack().indices().begin(), r.ack().indices().end());
    if (r.has_need() && Indices(r.need().indices()) == std::vector<uint32_t>{4}) {
      rerequested = true;
      EXPECT_THAT(acked, ElementsAre(0, 1, 2, 3));  // nothing of chunk 4 acked before
    }
  }
  EXPECT_TRUE(rerequested);
  EXPECT_THAT(acked, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_TRUE(stream.responses.back().has_published());
}

TEST_F(TransferSessionTest, ACommitBeforeEveryChunkIsAcknowledgedIsInvalid) {
  // Commit with chunks outstanding ends the stream with INVALID_ARGUMENT; nothing is published.
  FakeStream stream;
  stream.requests.push_back(Offer());
  stream.requests.push_back(Chunk(0));
  stream.requests.push_back(Commit());
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("commit before all chunks acknowledged"));
  EXPECT_FALSE(store_->PublishedId("app", "1.0")->has_value());
}

TEST_F(TransferSessionTest, AcksAreBatchedPerHalfWindowAndWhenAllChunksArrived) {
  // With a window of four chunks, acks come every two chunks, and for the last one at once.
  FakeStream stream;
  stream.requests.push_back(Offer(4 * kChunk));
  for (uint32_t i = 0; i < 5; ++i) stream.requests.push_back(Chunk(i));
  stream.requests.push_back(Commit());
  ASSERT_TRUE(Run(stream).ok());
  std::vector<std::vector<uint32_t>> acks;
  for (const auto& r : stream.responses) {
    if (r.has_ack()) acks.push_back(Indices(r.ack().indices()));
  }
  EXPECT_THAT(acks, ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3), ElementsAre(4)));
}

TEST_F(TransferSessionTest, AcksGoOutWhileTheSessionWaitsForMoreData) {
  // A sender that stops with chunks unacknowledged (its window full, or
  // paced) sends nothing until an Ack: the flush thread must send it while
  // the session is blocked in Read. The rest follows only once 0 and 1 are
  // acknowledged; without such Acks the read times out and Run fails.
  FakeStream stream;
  stream.wait_for_more = true;
  stream.requests.push_back(Offer(2 * kChunk));
  stream.requests.push_back(Chunk(0));
  stream.requests.push_back(Chunk(1));
  std::set<uint32_t> acked;
  stream.on_write = [&](const TransferResponse& r) {
    if (!r.has_ack()) return;
    bool had_both = acked.count(0) && acked.count(1);
    acked.insert(r.ack().indices().begin(), r.ack().indices().end());
    if (!had_both && acked.count(0) && acked.count(1)) {
      for (uint32_t i = 2; i < 5; ++i) stream.requests.push_back(Chunk(i));
    }
    if (acked.size() == 5) stream.requests.push_back(Commit());
  };
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(acked, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_TRUE(stream.responses.back().has_published());
}

TEST_F(TransferSessionTest, AnInterruptedTransferResumesWithOnlyTheMissingChunks) {
  // Chunks received before a cut are kept; the next Offer needs only the rest.
  FakeStream first;
  first.requests.push_back(Offer());
  first.requests.push_back(Chunk(0));
  first.requests.push_back(Chunk(3));
  EXPECT_TRUE(absl::IsCancelled(Run(first)));
  FakeStream second;
  ReactLikeAController(second);
  second.requests.push_back(Offer());
  ASSERT_TRUE(Run(second).ok());
  EXPECT_THAT(Indices(second.responses.front().need().indices()), ElementsAre(1, 2, 4));
  EXPECT_TRUE(second.responses.back().has_published());
}

TEST_F(TransferSessionTest, ADuplicateOfADurableChunkIsAcknowledgedAgain) {
  // A chunk the controller re-sends (its ack was lost) is acked again, not rewritten.
  FakeStream stream;
  stream.requests.push_back(Offer(4 * kChunk));
  stream.requests.push_back(Chunk(0));
  stream.requests.push_back(Chunk(1));
  stream.requests.push_back(Chunk(0));
  ASSERT_TRUE(absl::IsCancelled(Run(stream)));
  std::vector<std::vector<uint32_t>> acks;
  for (const auto& r : stream.responses) {
    if (r.has_ack()) acks.push_back(Indices(r.ack().indices()));
  }
  EXPECT_THAT(acks, ElementsAre(ElementsAre(0, 1), ElementsAre(0)));
}

TEST_F(TransferSessionTest, APackageThatDoesNotFitIsResourceExhausted) {
  // The free-space check runs before any Need is sent.
  free_bytes_ = 100;
  FakeStream stream;
  stream.requests.push_back(Offer());
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(stream.responses, IsEmpty());
}

TEST_F(TransferSessionTest, AnOfferRefusedForSpaceBeforeAnyChunkLeavesNoStaging) {
  // A package refused up front must not leave an empty staging directory behind.
  free_bytes_ = 100;
  FakeStream stream;
  stream.requests.push_back(Offer());
  EXPECT_TRUE(absl::IsResourceExhausted(Run(stream)));
  EXPECT_TRUE(std::filesystem::is_empty(tmp_.path() + "/agent-root/staging"));
}

TEST_F(TransferSessionTest, AnOfferRefusedForSpaceKeepsChunksAlreadyReceived) {
  // Durable chunks of an earlier attempt survive a refusal and are not needed again.
  FakeStream first;
  first.requests.push_back(Offer());
  first.requests.push_back(Chunk(0));
  EXPECT_TRUE(absl::IsCancelled(Run(first)));
  free_bytes_ = 100;
  FakeStream refused;
  refused.requests.push_back(Offer());
  EXPECT_TRUE(absl::IsResourceExhausted(Run(refused)));
  free_bytes_ = uint64_t{1} << 40;
  FakeStream second;
  ReactLikeAController(second);
  second.requests.push_back(Offer());
  ASSERT_TRUE(Run(second).ok());
  EXPECT_THAT(Indices(second.responses.front().need().indices()), ElementsAre(1, 2, 3, 4));
}

TEST_F(TransferSessionTest, AnEmptyPackageNeedsNothingAndPublishes) {
  // A package of only directories and empty files has no chunks: Need{} then Commit.
  std::string empty = tmp_.path() + "/empty";
  testing::WriteFile(empty + "/dir/nothing", "");
  manifest_ = testing::ManifestOf(empty, "blank", "0");
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(Offer());
  ASSERT_TRUE(Run(stream).ok());
  EXPECT_THAT(Indices(stream.responses.front().need().indices()), IsEmpty());
  EXPECT_TRUE(std::filesystem::exists(tmp_.path() + "/agent-root/packages/blank/0/dir/nothing"));
}

}  // namespace
}  // namespace pkgdist
