#include "agent/transfer_session.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/agent/fake_transfer_stream.h"
#include "shared/manifest.h"
#include "shared/manifest_delta.h"
#include "shared/signing.h"
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

using pkgdist::testing::FakeStream;

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
  // Offer of manifest_ in parts: the Offer holds name, version, total_size
  // and the first `files_per_part` files; then parts of `files_per_part`
  // files, then of `chunks_per_part` chunks. The Offer announces the parts
  // made plus `miscount`.
  std::vector<TransferRequest> OfferInParts(int files_per_part, int chunks_per_part,
                                            int miscount = 0) {
    std::vector<TransferRequest> out(1);
    auto* head = out[0].mutable_offer()->mutable_manifest();
    head->set_name(manifest_.name());
    head->set_version(manifest_.version());
    head->set_total_size(manifest_.total_size());
    out[0].mutable_offer()->set_package_id(PackageId(manifest_));
    out[0].mutable_offer()->set_window_bytes(1 << 20);
    int f = 0;
    for (; f < std::min(files_per_part, manifest_.files_size()); ++f) {
      *head->add_files() = manifest_.files(f);
    }
    while (f < manifest_.files_size()) {
      auto* part = out.emplace_back().mutable_manifest_part();
      for (int n = 0; n < files_per_part && f < manifest_.files_size(); ++n, ++f) {
        *part->add_files() = manifest_.files(f);
      }
    }
    for (int c = 0; c < manifest_.chunks_size();) {
      auto* part = out.emplace_back().mutable_manifest_part();
      for (int n = 0; n < chunks_per_part && c < manifest_.chunks_size(); ++n, ++c) {
        *part->add_chunks() = manifest_.chunks(c);
      }
    }
    out[0].mutable_offer()->set_manifest_parts(static_cast<uint32_t>(
        static_cast<int>(out.size()) - 1 + miscount));
    return out;
  }
  void Push(FakeStream& stream, const std::vector<TransferRequest>& requests) {
    for (const auto& r : requests) stream.requests.push_back(r);
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
    TransferSession session(*store_, options_, stream, [] {}, "test-peer");
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
  TransferOptions options_;
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

TEST_F(TransferSessionTest, ARunOfChunksInOneMessageIsVerifiedChunkByChunk) {
  // Chunks 0-3 (data.bin) in one message, then 4: all acknowledged and
  // published; a corrupted chunk inside a run is asked for again alone.
  FakeStream stream;
  stream.requests.push_back(Offer());
  std::string run;
  for (uint32_t i = 0; i < 4; ++i) run += testing::ChunkData(manifest_, src_, i);
  std::string bad = run;
  bad[2 * kChunk + 7] ^= 1;  // inside chunk 2
  TransferRequest corrupt = ChunkWithData(0, bad);
  corrupt.mutable_chunk()->set_count(4);
  stream.requests.push_back(corrupt);
  TransferRequest good = ChunkWithData(2, run.substr(2 * kChunk, kChunk));
  stream.requests.push_back(good);
  stream.requests.push_back(Chunk(4));
  stream.requests.push_back(Commit());
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  std::vector<std::vector<uint32_t>> needs;
  std::set<uint32_t> acked;
  for (const auto& r : stream.responses) {
    if (r.has_need()) needs.push_back(Indices(r.need().indices()));
    if (r.has_ack()) acked.insert(r.ack().indices().begin(), r.ack().indices().end());
  }
  EXPECT_THAT(needs, ElementsAre(ElementsAre(0, 1, 2, 3, 4), ElementsAre(2)));
  EXPECT_THAT(acked, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_TRUE(stream.responses.back().has_published());
}

TEST_F(TransferSessionTest, ARunThatCrossesAFileOrHasTheWrongLengthIsInvalid) {
  for (auto [first, count, extra, words] :
       {std::tuple<uint32_t, uint32_t, int, const char*>{3, 2, 0, "within one file"},
        {0, 2, 1, "manifest says"},
        {4, 2, 0, "out of range"}}) {
    FakeStream stream;
    stream.requests.push_back(Offer());
    std::string data;
    for (uint32_t i = first; i < std::min<uint32_t>(first + count, 5); ++i) {
      data += testing::ChunkData(manifest_, src_, i);
    }
    data += std::string(static_cast<size_t>(extra), 'x');
    TransferRequest r = ChunkWithData(first, data);
    r.mutable_chunk()->set_count(count);
    stream.requests.push_back(r);
    absl::Status s = Run(stream);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(words));
  }
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

TEST_F(TransferSessionTest, AnOfferInSeveralPartsPublishesLikeOneInOneMessage) {
  // Offer{first file} + parts of one file, then of two chunks: the same
  // Need, package id and tree as TransfersAndPublishesAPackage's Offer of
  // the whole manifest.
  FakeStream parts;
  ReactLikeAController(parts);
  std::vector<TransferRequest> offer = OfferInParts(1, 2);
  ASSERT_EQ(offer.size(), 6u);  // Offer, 2 parts of files, 3 of chunks
  Push(parts, offer);
  absl::Status s = Run(parts);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(Indices(parts.responses.front().need().indices()), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_FALSE(parts.responses.front().need().more());
  EXPECT_EQ(parts.responses.back().published().package_id(), PackageId(manifest_));
  EXPECT_EQ(**store_->PublishedId("app", "1.0"), PackageId(manifest_));
  EXPECT_EQ(testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/etc/app.conf"),
            "key = value\n");
}

TEST_F(TransferSessionTest, AManifestPartCountTooSmallLeavesAnInvalidManifest) {
  // The Offer announces one part fewer than the manifest has: the chunks of
  // the last part are missing, the manifest does not cover its files.
  FakeStream stream;
  Push(stream, OfferInParts(1, 2, -1));
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("invalid manifest"));
  EXPECT_THAT(stream.responses, IsEmpty());
}

TEST_F(TransferSessionTest, AManifestPartCountTooLargeWaitsForAPartThatDoesNotCome) {
  // One part more announced than sent: a chunk where the part belongs is
  // INVALID_ARGUMENT naming both; a stream that ends there is CANCELLED.
  FakeStream chunk;
  Push(chunk, OfferInParts(1, 2, +1));
  chunk.requests.push_back(Chunk(0));
  absl::Status s = Run(chunk);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("chunk before manifest part 6 of 6"));
  EXPECT_THAT(chunk.responses, IsEmpty());
  FakeStream ended;
  Push(ended, OfferInParts(1, 2, +1));
  s = Run(ended);
  EXPECT_TRUE(absl::IsCancelled(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("before manifest part 6 of 6"));
}

TEST_F(TransferSessionTest, AnythingButAPartBeforeTheLastPartIsInvalid) {
  // A chunk, a commit or a second offer among the parts ends the stream
  // with INVALID_ARGUMENT naming what came; nothing is answered.
  const std::vector<std::pair<TransferRequest, std::string>> intruders = {
      {Chunk(0), "chunk before manifest part 3 of 5"},
      {Commit(), "commit before manifest part 3 of 5"},
      {Offer(), "offer before manifest part 3 of 5"},
      {TransferRequest(), "empty message before manifest part 3 of 5"}};
  for (const auto& [intruder, message] : intruders) {
    FakeStream stream;
    std::vector<TransferRequest> offer = OfferInParts(1, 2);
    offer.insert(offer.begin() + 3, intruder);
    Push(stream, offer);
    absl::Status s = Run(stream);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(message));
    EXPECT_THAT(stream.responses, IsEmpty());
  }
}

TEST_F(TransferSessionTest, AManifestPartAfterTheNeedIsInvalid) {
  // The parts are all in once the agent answers: one more is a protocol error.
  FakeStream stream;
  std::vector<TransferRequest> offer = OfferInParts(1, 2);
  Push(stream, offer);
  stream.requests.push_back(offer.back());
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("manifest part after the need"));
  ASSERT_FALSE(stream.responses.empty());
  EXPECT_TRUE(stream.responses.front().has_need());
}

TEST_F(TransferSessionTest, ManifestPartsBeyondMaxFilesAreRefusedBeforeTheRestIsRead) {
  // With max_files 2, the part bringing the third entry is refused at once
  // (the parts after it stay unread), before any validation or staging.
  options_.limits.max_files = 2;
  FakeStream stream;
  Push(stream, OfferInParts(1, 2));
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("manifest part 2 of 5 brings it to 3 entries, more than max_files 2"));
  EXPECT_EQ(stream.requests.size(), 3u);
  EXPECT_THAT(stream.responses, IsEmpty());
  EXPECT_TRUE(std::filesystem::is_empty(tmp_.path() + "/agent-root/staging"));
}

TEST_F(TransferSessionTest, ManifestPartsWithMoreChunksThanBytesAreRefused) {
  // Every chunk holds a byte at least: a part bringing more chunks than
  // total_size is refused before it is appended.
  FakeStream stream;
  std::vector<TransferRequest> offer = OfferInParts(3, 5);
  ASSERT_EQ(offer.size(), 2u);
  auto* chunks = offer[1].mutable_manifest_part()->mutable_chunks();
  while (static_cast<uint64_t>(chunks->size()) <= manifest_.total_size()) *chunks->Add() = chunks->Get(0);
  Push(stream, offer);
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("more than its ", manifest_.total_size(), " bytes can have")));
}

TEST_F(TransferSessionTest, AnEmptyManifestPartIsInvalid) {
  // A part must carry something, so that the part count is bounded by the manifest.
  FakeStream stream;
  std::vector<TransferRequest> offer = OfferInParts(1, 2);
  offer.insert(offer.begin() + 1, TransferRequest());
  offer[1].mutable_manifest_part();
  offer[0].mutable_offer()->set_manifest_parts(6);
  Push(stream, offer);
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("manifest part 1 of 6 is empty"));
}

TEST_F(TransferSessionTest, AFirstNeedOverThePerMessageBoundIsSplitWithMore) {
  // Two indices per message: Need{0,1 more} Need{2,3 more} Need{4}; the
  // transfer completes as with one Need.
  options_.need_indices_per_message = 2;
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(Offer());
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  std::vector<std::vector<uint32_t>> needs;
  std::vector<bool> more;
  for (const auto& r : stream.responses) {
    if (!r.has_need()) continue;
    needs.push_back(Indices(r.need().indices()));
    more.push_back(r.need().more());
  }
  EXPECT_THAT(needs, ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3), ElementsAre(4)));
  EXPECT_THAT(more, ElementsAre(true, true, false));
  EXPECT_TRUE(stream.responses.back().has_published());
}

TEST_F(TransferSessionTest, ASplitFirstNeedCountsLocalChunksTowardsTheBound) {
  // The same content published under another name: all five chunks are
  // local, split two per message, and copied and acknowledged as before.
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(Offer());
  ASSERT_TRUE(Run(first).ok());
  manifest_.set_name("copy");
  options_.need_indices_per_message = 2;
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(Offer());
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  std::vector<std::vector<uint32_t>> local;
  std::vector<bool> more;
  std::set<uint32_t> acked;
  for (const auto& r : stream.responses) {
    if (r.has_ack()) acked.insert(r.ack().indices().begin(), r.ack().indices().end());
    if (!r.has_need()) continue;
    EXPECT_THAT(Indices(r.need().indices()), IsEmpty());
    local.push_back(Indices(r.need().local()));
    more.push_back(r.need().more());
  }
  EXPECT_THAT(local, ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3), ElementsAre(4)));
  EXPECT_THAT(more, ElementsAre(true, true, false));
  EXPECT_THAT(acked, ElementsAre(0, 1, 2, 3, 4));
  EXPECT_TRUE(stream.responses.back().has_published());
}

// Manifest deltas: an Offer naming delta_bases carries only the manifest's
// head; the agent asks for it as a delta of a base it has published.
class DeltaTransferSessionTest : public TransferSessionTest {
 protected:
  // Publishes manifest_ as app@1.0, then makes manifest_ app@2.0 with the
  // config file changed (the data file's chunks stay the same).
  void PublishVersionOneAndEditTheConfig() {
    FakeStream first;
    ReactLikeAController(first);
    first.requests.push_back(Offer());
    ASSERT_TRUE(Run(first).ok());
    v1_ = manifest_;
    testing::WriteFile(src_ + "/etc/app.conf", "key = other value\n");
    manifest_ = testing::ManifestOf(src_, "app", "2.0", kChunk);
  }
  TransferRequest DeltaOffer(std::vector<std::string> bases) {
    TransferRequest r;
    auto* offer = r.mutable_offer();
    offer->mutable_manifest()->set_name(manifest_.name());
    offer->mutable_manifest()->set_version(manifest_.version());
    offer->mutable_manifest()->set_total_size(manifest_.total_size());
    offer->set_package_id(PackageId(manifest_));
    offer->set_window_bytes(1 << 20);
    for (auto& b : bases) offer->add_delta_bases(std::move(b));
    return r;
  }
  // Answers a ManifestRequest with the delta of manifest_ from `from` (the
  // base the agent named, unless the test says otherwise), in parts of
  // `part_bytes`; then acts like a controller.
  void AnswerManifestRequests(FakeStream& stream, size_t part_bytes,
                              std::optional<pkgdist::v1::Manifest> from = std::nullopt) {
    ReactLikeAController(stream);
    auto controller = stream.on_write;
    stream.on_write = [this, &stream, part_bytes, from, controller](const TransferResponse& r) {
      if (!r.has_manifest_request()) return controller(r);
      requested_.push_back(r.manifest_request().base());
      pkgdist::v1::Manifest base;
      if (from.has_value()) {
        base = *from;
      } else if (!r.manifest_request().base().empty()) {
        base = v1_;
      }
      for (auto& part : DiffManifest(base, manifest_, part_bytes)) {
        *stream.requests.emplace_back().mutable_manifest_part() = std::move(part);
      }
    };
  }
  pkgdist::v1::Manifest v1_;
  std::vector<std::string> requested_;  // the bases asked for
};

TEST_F(DeltaTransferSessionTest, AnAgentHoldingABaseAsksForTheDeltaAndPublishes) {
  // Bases: one the agent never had, then app@1.0. The agent names 1.0; the
  // delta in parts of 100 bytes rebuilds 2.0, whose data chunks are local.
  PublishVersionOneAndEditTheConfig();
  FakeStream stream;
  AnswerManifestRequests(stream, 100);
  stream.requests.push_back(DeltaOffer({std::string(32, 'z'), PackageId(v1_)}));
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(requested_, ElementsAre(PackageId(v1_)));
  ASSERT_TRUE(stream.responses[1].has_need());
  EXPECT_THAT(Indices(stream.responses[1].need().indices()), ElementsAre(4));
  EXPECT_THAT(Indices(stream.responses[1].need().local()), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(stream.responses.back().published().package_id(), PackageId(manifest_));
  EXPECT_EQ(testing::ReadFile(tmp_.path() + "/agent-root/packages/app/2.0/etc/app.conf"),
            "key = other value\n");
}

TEST_F(DeltaTransferSessionTest, AnAgentHoldingNoBaseAsksForTheWholeManifest) {
  FakeStream stream;
  AnswerManifestRequests(stream, 100);
  stream.requests.push_back(DeltaOffer({std::string(32, 'z')}));
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_THAT(requested_, ElementsAre(""));
  EXPECT_EQ(stream.responses.back().published().package_id(), PackageId(manifest_));
}

TEST_F(DeltaTransferSessionTest, ADeltaOfTheWrongBaseIsDataLossAndStagesNothing) {
  // The rebuilt manifest is checked against the Offer's id like any other:
  // a delta applied to another base than it was made from cannot publish.
  PublishVersionOneAndEditTheConfig();
  pkgdist::v1::Manifest wrong = v1_;  // chunks 1 and 2 swapped
  wrong.mutable_chunks()->SwapElements(1, 2);
  FakeStream stream;
  AnswerManifestRequests(stream, 1 << 20, wrong);
  stream.requests.push_back(DeltaOffer({PackageId(v1_)}));
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsDataLoss(s) || absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(stream.responses, ElementsAre(::testing::Property(
                                    &TransferResponse::has_manifest_request, true)));
  EXPECT_TRUE(std::filesystem::is_empty(tmp_.path() + "/agent-root/staging"));
}

TEST_F(DeltaTransferSessionTest, ADeltaOfferWithEntriesOrTooManyBasesIsInvalid) {
  {
    FakeStream stream;
    TransferRequest offer = DeltaOffer({PackageId(manifest_)});
    *offer.mutable_offer()->mutable_manifest()->add_files() = manifest_.files(0);
    stream.requests.push_back(offer);
    absl::Status s = Run(stream);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("must carry no files"));
  }
  {
    FakeStream stream;
    stream.requests.push_back(DeltaOffer(std::vector<std::string>(5, std::string(32, 'z'))));
    absl::Status s = Run(stream);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("5 delta bases, more than 4"));
  }
  {
    FakeStream stream;
    stream.requests.push_back(DeltaOffer({"short"}));
    EXPECT_THAT(std::string(Run(stream).message()), HasSubstr("must be 32 bytes"));
  }
}

TEST_F(DeltaTransferSessionTest, ARequestedPartThatAddsNothingIsInvalid) {
  FakeStream stream;
  stream.requests.push_back(DeltaOffer({std::string(32, 'z')}));
  stream.requests.emplace_back().mutable_manifest_part()->set_more(true);
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("requested manifest part 1 is empty"));
}

// With a signature policy trusting one key ("owner"; "stranger" is not in
// the trusted directory). The policy's clock is `now_`.
class SignedTransferSessionTest : public TransferSessionTest {
 protected:
  SignedTransferSessionTest()
      : keys_(tmp_.path() + "/trusted"), secrets_(tmp_.path() + "/secrets") {
    EXPECT_TRUE(MakeDirs(keys_).ok());
    EXPECT_TRUE(MakeDirs(secrets_).ok());
    owner_ = NewKey("owner", keys_);
    stranger_ = NewKey("stranger", secrets_);
    SignaturePolicyOptions policy_options;
    policy_options.trusted_keys_dir = keys_;
    policy_options.now = [this] { return now_; };
    auto policy = SignaturePolicy::Open(store_->root(), policy_options);
    EXPECT_TRUE(policy.ok()) << policy.status();
    if (policy.ok()) policy_ = std::move(policy).value();
    options_.signatures = policy_.get();
  }

  std::optional<SigningKey> NewKey(const std::string& name, const std::string& public_dir) {
    const std::string private_path = secrets_ + "/" + name + ".key";
    auto pub = GenerateKeyPair(private_path, public_dir + "/" + name + ".pub");
    EXPECT_TRUE(pub.ok()) << pub.status();
    auto key = SigningKey::Load(private_path);
    EXPECT_TRUE(key.ok()) << key.status();
    if (!key.ok()) return std::nullopt;
    return std::move(key).value();
  }

  // An Offer of manifest_ signed by `key`.
  TransferRequest SignedOffer(const std::optional<SigningKey>& key, uint64_t sequence = 1) {
    TransferRequest r = Offer();
    if (!key.has_value()) return r;
    SignTerms terms;
    terms.sequence = sequence;
    terms.now = now_;
    terms.expires = now_ + absl::Hours(24);
    auto sig = SignPackage(*key, PackageId(manifest_), manifest_.name(), manifest_.version(),
                           terms);
    EXPECT_TRUE(sig.ok()) << sig.status();
    if (sig.ok()) *r.mutable_offer()->mutable_signature() = *sig;
    return r;
  }

  bool Published(const std::string& version = "1.0") {
    auto id = store_->PublishedId("app", version);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() && id->has_value();
  }
  bool AnyPublishedResponse(const FakeStream& stream) const {
    for (const auto& r : stream.responses) {
      if (r.has_published()) return true;
    }
    return false;
  }
  std::string StagingDir() const { return store_->StagingDir(PackageIdHex(manifest_)); }
  std::string StagingRoot() const { return tmp_.path() + "/agent-root/staging"; }

  std::string keys_;
  std::string secrets_;
  std::optional<SigningKey> owner_;
  std::optional<SigningKey> stranger_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  std::unique_ptr<SignaturePolicy> policy_;
};

TEST_F(SignedTransferSessionTest, ACorrectlySignedPackageIsPublished) {
  // Signed by the trusted key: transferred, published, its sequence recorded.
  ASSERT_NE(policy_, nullptr);
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(SignedOffer(owner_, 3));
  absl::Status s = Run(stream);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(stream.responses.back().published().package_id(), PackageId(manifest_));
  EXPECT_TRUE(Published());
  EXPECT_EQ(testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/etc/app.conf"),
            "key = value\n");
  EXPECT_EQ(policy_->HighestSequence("app"), 3u);
}

TEST_F(SignedTransferSessionTest, AnUnsignedPackageIsRefusedBeforeAnythingIsStaged) {
  // FAILED_PRECONDITION at the Offer: no Need, no staging directory, nothing published.
  ASSERT_NE(policy_, nullptr);
  FakeStream stream;
  ReactLikeAController(stream);
  stream.requests.push_back(Offer());
  absl::Status s = Run(stream);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("unsigned"));
  EXPECT_THAT(stream.responses, IsEmpty());
  EXPECT_FALSE(std::filesystem::exists(StagingDir()));
  EXPECT_TRUE(std::filesystem::is_empty(StagingRoot()));
  EXPECT_FALSE(Published());
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() + "/agent-root/packages/app/1.0"));
}

TEST_F(SignedTransferSessionTest, ARefusedOfferDeletesStagingLeftByAnEarlierAttempt) {
  // Chunks received while signatures were not checked are not kept for a refused package.
  FakeStream first;
  options_.signatures = nullptr;
  first.requests.push_back(Offer());
  first.requests.push_back(Chunk(0));
  EXPECT_TRUE(absl::IsCancelled(Run(first)));
  ASSERT_TRUE(std::filesystem::exists(StagingDir()));
  options_.signatures = policy_.get();
  FakeStream second;
  second.requests.push_back(SignedOffer(stranger_));
  absl::Status s = Run(second);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not trust"));
  EXPECT_THAT(second.responses, IsEmpty());
  EXPECT_FALSE(std::filesystem::exists(StagingDir()));
  EXPECT_FALSE(Published());
}

TEST_F(SignedTransferSessionTest, AKeyRemovedBetweenOfferAndCommitFailsTheCommit) {
  // Revocation reaches a transfer under way: the Commit is refused, the
  // staging deleted and nothing published or recorded.
  ASSERT_NE(policy_, nullptr);
  FakeStream stream;
  ReactLikeAController(stream);
  bool removed = false;
  auto react = stream.on_write;
  stream.on_write = [&, react](const TransferResponse& r) {
    react(r);
    if (!removed && !stream.requests.empty() && stream.requests.back().has_commit()) {
      // Before the session can read the Commit (mu is held here).
      EXPECT_EQ(::unlink((keys_ + "/owner.pub").c_str()), 0);
      removed = true;
    }
  };
  stream.requests.push_back(SignedOffer(owner_));
  absl::Status s = Run(stream);
  ASSERT_TRUE(removed) << "the transfer never reached its Commit: " << s;
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not trust"));
  EXPECT_EQ(acked_, 5);
  EXPECT_FALSE(AnyPublishedResponse(stream));
  EXPECT_FALSE(Published());
  EXPECT_FALSE(std::filesystem::exists(tmp_.path() + "/agent-root/packages/app/1.0"));
  EXPECT_FALSE(std::filesystem::exists(StagingDir()));
  EXPECT_TRUE(std::filesystem::is_empty(StagingRoot()));
  EXPECT_EQ(policy_->HighestSequence("app"), 0u);
}

TEST_F(SignedTransferSessionTest, ASignatureThatExpiresBeforeTheCommitFailsIt) {
  // Expiry is checked again at the Commit, with the clock of that moment.
  ASSERT_NE(policy_, nullptr);
  FakeStream stream;
  ReactLikeAController(stream);
  bool expired = false;
  auto react = stream.on_write;
  stream.on_write = [&, react](const TransferResponse& r) {
    react(r);
    if (!expired && !stream.requests.empty() && stream.requests.back().has_commit()) {
      now_ += absl::Hours(25);
      expired = true;
    }
  };
  stream.requests.push_back(SignedOffer(owner_));
  absl::Status s = Run(stream);
  ASSERT_TRUE(expired) << "the transfer never reached its Commit: " << s;
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("expired"));
  EXPECT_FALSE(Published());
  EXPECT_FALSE(std::filesystem::exists(StagingDir()));
}

TEST_F(SignedTransferSessionTest, AnAlreadyPublishedPackageReofferedWithAnUntrustedSignatureIsRefused) {
  // Published at once only with a trusted signature; the package itself stays.
  ASSERT_NE(policy_, nullptr);
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(SignedOffer(owner_));
  ASSERT_TRUE(Run(first).ok());
  ASSERT_TRUE(Published());

  FakeStream untrusted;
  untrusted.requests.push_back(SignedOffer(stranger_));
  absl::Status s = Run(untrusted);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not trust"));
  EXPECT_THAT(untrusted.responses, IsEmpty());

  FakeStream unsigned_offer;
  unsigned_offer.requests.push_back(Offer());
  s = Run(unsigned_offer);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(unsigned_offer.responses, IsEmpty());

  EXPECT_TRUE(Published());
  FakeStream trusted;
  trusted.requests.push_back(SignedOffer(owner_));
  ASSERT_TRUE(Run(trusted).ok());
  ASSERT_EQ(trusted.responses.size(), 1u);
  EXPECT_EQ(trusted.responses[0].published().package_id(), PackageId(manifest_));
}

TEST_F(SignedTransferSessionTest, AnOlderReleaseOfferedAfterANewerOneIsRefusedAsARollback) {
  // app@1.0 published with sequence 5; app@0.9 signed with 4 is refused at its Offer.
  ASSERT_NE(policy_, nullptr);
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(SignedOffer(owner_, 5));
  ASSERT_TRUE(Run(first).ok());
  manifest_ = testing::ManifestOf(src_, "app", "0.9", kChunk);
  FakeStream older;
  older.requests.push_back(SignedOffer(owner_, 4));
  absl::Status s = Run(older);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("rollback"));
  EXPECT_THAT(older.responses, IsEmpty());
  EXPECT_FALSE(Published("0.9"));
  EXPECT_FALSE(std::filesystem::exists(StagingDir()));
}

// A package of one empty file whose id is fixed by `version` alone: the
// versions below were searched for the first bytes of their ids.
pkgdist::v1::Manifest TinyManifest(const std::string& version) {
  pkgdist::v1::Manifest m;
  m.set_name("tiny");
  m.set_version(version);
  auto* f = m.add_files();
  f->set_path("f");
  f->set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  f->set_mode(0644);
  f->set_size(0);
  f->set_sha256(DigestBytes(Sha256Of("")));
  return m;
}

// Caps this process's address space at its current size plus `extra` while
// alive. DropStaging once passed the raw id where the hex one belongs: for
// an id starting with NUL or "..\0" RemoveTree recursed without bound
// (every level listed ROOT/staging or ROOT again) and took all the
// machine's memory. Under the cap a regression crashes this test binary
// within a second instead.
class AddressSpaceCap {
 public:
  explicit AddressSpaceCap(uint64_t extra) {
    ok_ = ::getrlimit(RLIMIT_AS, &old_) == 0;
    uint64_t pages = 0;
    std::ifstream("/proc/self/statm") >> pages;
    ok_ = ok_ && pages > 0;
    if (!ok_) return;
    rlimit capped = old_;
    capped.rlim_cur = std::min<rlim_t>(old_.rlim_max, pages * ::getpagesize() + extra);
    ok_ = ::setrlimit(RLIMIT_AS, &capped) == 0;
  }
  ~AddressSpaceCap() {
    if (ok_) ::setrlimit(RLIMIT_AS, &old_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  bool ok_ = false;
};

constexpr uint64_t kCapBytes = uint64_t{1} << 30;

TEST_F(SignedTransferSessionTest, ARefusedOfferWhoseIdStartsWithNulKeepsTheStagingDirectory) {
  // The raw id's NUL must not make the refused staging ROOT/staging itself.
  ASSERT_NE(policy_, nullptr);
  manifest_ = TinyManifest("1.0-395");
  ASSERT_EQ(PackageId(manifest_)[0], '\0') << "the search for this version is out of date";
  ASSERT_TRUE(std::filesystem::is_directory(StagingRoot()));
  FakeStream refused;
  refused.requests.push_back(Offer());
  absl::Status s;
  {
    AddressSpaceCap cap(kCapBytes);
    ASSERT_TRUE(cap.ok());
    s = Run(refused);
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(std::filesystem::is_directory(StagingRoot()))
      << "refusing tiny@1.0-395 removed " << StagingRoot();
}

TEST_F(SignedTransferSessionTest, ARefusedOfferNeverTouchesAnotherPackagesStaging) {
  // Another package's partial transfer survives the refusal of an id starting with NUL.
  options_.signatures = nullptr;
  FakeStream partial;
  partial.requests.push_back(Offer());
  partial.requests.push_back(Chunk(0));
  EXPECT_TRUE(absl::IsCancelled(Run(partial)));
  const std::string app_staging = StagingDir();
  ASSERT_TRUE(std::filesystem::exists(app_staging));

  options_.signatures = policy_.get();
  manifest_ = TinyManifest("1.0-395");
  ASSERT_EQ(PackageId(manifest_)[0], '\0') << "the search for this version is out of date";
  FakeStream refused;
  refused.requests.push_back(Offer());
  absl::Status s;
  {
    AddressSpaceCap cap(kCapBytes);
    ASSERT_TRUE(cap.ok());
    s = Run(refused);
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(std::filesystem::exists(app_staging))
      << "refusing tiny@1.0-395 deleted the staging of app@1.0";
}

TEST_F(SignedTransferSessionTest, ARefusedOfferNeverTouchesTheAgentRoot) {
  // An id starting "..\0" (2^24 tries for a controller) must not name ROOT:
  // published packages and the sequence record survive its refusal.
  ASSERT_NE(policy_, nullptr);
  FakeStream first;
  ReactLikeAController(first);
  first.requests.push_back(SignedOffer(owner_, 5));
  ASSERT_TRUE(Run(first).ok());
  manifest_ = TinyManifest("1.0-25156107");
  ASSERT_EQ(PackageId(manifest_).substr(0, 3), std::string("..\0", 3))
      << "the search for this version is out of date";
  const mode_t root_mode = testing::ModeOf(tmp_.path() + "/agent-root");
  FakeStream refused;
  refused.requests.push_back(Offer());
  absl::Status s;
  {
    AddressSpaceCap cap(kCapBytes);
    ASSERT_TRUE(cap.ok());
    s = Run(refused);
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Published()) << "refusing tiny@1.0-25156107 unpublished app@1.0";
  EXPECT_EQ(testing::ReadFile(tmp_.path() + "/agent-root/packages/app/1.0/etc/app.conf"),
            "key = value\n");
  EXPECT_TRUE(std::filesystem::exists(tmp_.path() + "/agent-root/signed-sequences"));
  EXPECT_EQ(testing::ModeOf(tmp_.path() + "/agent-root"), root_mode);
}

}  // namespace
}  // namespace pkgdist
