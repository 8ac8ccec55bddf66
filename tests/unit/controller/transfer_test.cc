// TransferCall on its own, against a fake agent over real mutual TLS.
#include "controller/transfer.h"

#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/grpc_options.h"
#include "shared/manifest.h"
#include "shared/manifest_delta.h"
#include "shared/sha256.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::HasSubstr;

class TransferCallTest : public CoreTest {
 protected:
  TransferParams Params(const std::string& id) { return TransferParamsFor(id, &read_pool_); }
  // Starts a transfer of `p` to dp1 and waits for its end; sums the progress.
  TransferResult RunTransfer(TransferParams p) {
    absl::Notification done;
    TransferResult result;
    auto call = TransferCall::Start(
        pool_->Channel("dp1", store_->GetAgent("dp1")->address), std::move(p), &clock_,
        [this](const TransferCall::Progress& progress) {
          acked_ = progress.bytes_acked;
          sent_ += progress.bytes_sent_delta;
          reused_ += progress.bytes_reused_delta;
        },
        [&](const TransferResult& r) {
          result = r;
          done.Notify();
        });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30))) << "the call never ended";
    return result;
  }
  // `p` with `dirs` directory entries after its files and `chunks` chunk
  // references (one byte each of file 0) after its chunks: a manifest no
  // agent would accept, but the controller sends it as it is.
  static void Inflate(TransferParams& p, int dirs, int chunks) {
    auto m = std::make_shared<pkgdist::v1::Manifest>(*p.manifest);
    for (int i = 0; i < dirs; ++i) {
      auto* d = m->add_files();
      d->set_path(absl::StrFormat("a-directory-with-a-long-name/%08d", i));
      d->set_type(pkgdist::v1::ENTRY_TYPE_DIRECTORY);
      d->set_mode(0755);
    }
    for (int i = 0; i < chunks; ++i) {
      auto* c = m->add_chunks();
      c->set_file(0);
      c->set_offset(static_cast<uint64_t>(i));
      c->set_length(1);
      c->set_sha256(std::string(32, static_cast<char>(i)));
    }
    p.package_id = PackageId(*m);
    p.manifest = std::move(m);
  }

  ReadPool read_pool_{1};
  // Protected by the call's progress lock (reports are serialized).
  uint64_t acked_ = 0, sent_ = 0, reused_ = 0;
};

TEST_F(TransferCallTest, AWriteDecidedOutsideAReactionKeepsTheCallUntilItIsDone) {
  // The agent ends the stream while a write the read pool chose is between
  // its decision and StartWrite. The call must not finish (OnDone) before
  // that write has completed: gRPC would otherwise get a write on a call it
  // has already finished.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kEndOnSignal);
  TransferParams p = Params(ImportPackage("app", "1.0", 2 << 20));
  absl::Notification in_gap, release, done;
  p.before_detached_write = [&] {
    if (in_gap.HasBeenNotified()) return;
    in_gap.Notify();
    release.WaitForNotification();
  };
  TransferResult result;
  auto call = TransferCall::Start(
      pool_->Channel("dp1", store_->GetAgent("dp1")->address), std::move(p), &clock_,
      [](const TransferCall::Progress&) {},
      [&](const TransferResult& r) {
        result = r;
        done.Notify();
      });
  ASSERT_TRUE(in_gap.WaitForNotificationWithTimeout(absl::Seconds(10)))
      << "no write was decided outside a reaction";
  dp1.EndHeldStreams();
  ASSERT_TRUE(dp1.WaitForTransfersEnded(1)) << "the agent did not end the stream";
  EXPECT_FALSE(done.WaitForNotificationWithTimeout(absl::Milliseconds(500)))
      << "the call finished while a write was about to start";
  release.Notify();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10))) << "the call never ended";
  EXPECT_FALSE(result.published);
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("scripted end"));
}

TEST_F(TransferCallTest, SendsEveryChunkOnceAndEndsPublished) {
  // An honest agent: the whole package crosses once, the call ends
  // published, and the last progress report says everything is acked.
  FakeAgent& dp1 = AddAgent("dp1");
  const size_t size = (5 << 20) + 7;
  TransferParams p = Params(ImportPackage("app", "1.0", size));
  const int chunks_in_package = p.manifest->chunks_size();
  absl::Notification done;
  TransferResult result;
  uint64_t acked = 0, sent = 0;
  auto call = TransferCall::Start(
      pool_->Channel("dp1", store_->GetAgent("dp1")->address), std::move(p), &clock_,
      [&](const TransferCall::Progress& progress) {
        acked = progress.bytes_acked;
        sent += progress.bytes_sent_delta;
      },
      [&](const TransferResult& r) {
        result = r;
        done.Notify();
      });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(acked, size);
  EXPECT_EQ(sent, size);
  EXPECT_EQ(dp1.chunk_bytes_received(), size);
  // Content-defined chunks (32 KiB on average) go out in runs of about
  // 1 MiB, not a message each.
  const auto chunks = static_cast<uint64_t>(chunks_in_package);
  EXPECT_GT(chunks, 100u);
  EXPECT_LE(dp1.chunk_messages_received(), size / (kMaxRunBytes / 2) + 2)
      << chunks << " chunks in " << dp1.chunk_messages_received() << " messages";
}

TEST_F(TransferCallTest, AManifestOfManyFilesGoesOutInPartsThenItsChunks) {
  // 50,000 directories make a manifest of about 2.5 MiB: an Offer and
  // ManifestParts, none much over kManifestPartBytes, which the agent
  // reassembles into the same package id; then the chunks it needs follow.
  FakeAgent& dp1 = AddAgent("dp1");
  const size_t size = (1 << 20) + 3;
  TransferParams p = Params(ImportPackage("app", "1.0", size));
  Inflate(p, 50'000, 0);
  ASSERT_GT(p.manifest->ByteSizeLong(), 2 * kManifestPartBytes);
  const std::string id = p.package_id;
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(dp1.last_manifest_id(), id);
  EXPECT_GE(dp1.last_manifest_parts(), 2);
  EXPECT_LE(dp1.largest_manifest_message(), kManifestPartBytes + 1024);
  EXPECT_EQ(dp1.chunk_bytes_received(), size);
  EXPECT_EQ(sent_, size);
}

TEST_F(TransferCallTest, AManifestOfManyChunksGoesOutInPartsFilesFirst) {
  // 30,000 directories and 30,000 chunk references: parts of files, one of
  // both, parts of chunks; reassembled in order they give the same id.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHaveAll);
  TransferParams p = Params(ImportPackage("app", "1.0", 64 << 10));
  Inflate(p, 30'000, 30'000);
  ASSERT_GT(p.manifest->ByteSizeLong(), 2 * kManifestPartBytes);
  const std::string id = p.package_id;
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(dp1.last_manifest_id(), id);
  EXPECT_GE(dp1.last_manifest_parts(), 2);
  EXPECT_LE(dp1.largest_manifest_message(), kManifestPartBytes + 1024);
}

TEST_F(TransferCallTest, AManifestWithinOnePartGoesOutInTheOffer) {
  // The usual package: no ManifestPart at all.
  FakeAgent& dp1 = AddAgent("dp1");
  TransferParams p = Params(ImportPackage("app", "1.0", 100 << 10));
  const std::string id = p.package_id;
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(dp1.last_manifest_id(), id);
  EXPECT_EQ(dp1.last_manifest_parts(), 0);
}

TEST_F(TransferCallTest, AnAgentHoldingTheBaseReceivesTheManifestAsADelta) {
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHaveAll);
  TransferParams v1 = Params(ImportPackage("app", "1.0", 4 << 20));
  TransferParams v2 = Params(ImportPackage("app", "2.0", (4 << 20) + 1));
  Inflate(v1, 3000, 0);
  Inflate(v2, 3000, 0);
  ASSERT_GT(v2.manifest->ByteSizeLong(), kMinDeltaManifestBytes);
  dp1.HoldBase(*v1.manifest);
  int loads = 0;
  ManifestDeltas deltas([&](const std::string& id) -> absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> {
    ++loads;
    EXPECT_EQ(id, ToHex(v1.package_id));
    return v1.manifest;
  });
  const std::string id = v2.package_id;
  const size_t whole = v2.manifest->ByteSizeLong();
  for (int round = 0; round < 2; ++round) {
    TransferParams p = v2;
    p.delta_bases = {std::string(32, 'z'), v1.package_id};
    p.deltas = &deltas;
    TransferResult result = RunTransfer(std::move(p));
    EXPECT_TRUE(result.published) << result.status;
    EXPECT_EQ(dp1.last_manifest_id(), id);
    EXPECT_EQ(dp1.last_manifest_base(), v1.package_id);
    // The changed file entry and the chunks after the new byte, not 3,000
    // directories again.
    EXPECT_LT(dp1.last_manifest_part_bytes() * 20, whole)
        << dp1.last_manifest_part_bytes() << " bytes of a " << whole << "-byte manifest";
  }
  EXPECT_EQ(loads, 1) << "the second transfer diffs again";
  EXPECT_EQ(deltas.diffs(), 1u);
}

TEST_F(TransferCallTest, AnAgentHoldingNoBaseReceivesTheWholeManifestInParts) {
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHaveAll);
  TransferParams p = Params(ImportPackage("app", "2.0", 1 << 20));
  Inflate(p, 30'000, 0);
  const std::string id = p.package_id;
  ManifestDeltas deltas([](const std::string&) -> absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> {
    ADD_FAILURE() << "no delta was asked for";
    return absl::NotFoundError("no");
  });
  p.delta_bases = {std::string(32, 'z')};
  p.deltas = &deltas;
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(dp1.last_manifest_id(), id);
  EXPECT_EQ(dp1.last_manifest_base(), "");
  EXPECT_GE(dp1.last_manifest_parts(), 2);
  EXPECT_LE(dp1.largest_manifest_message(), kManifestPartBytes + 1024);
}

TEST_F(TransferCallTest, ADeltaThatCannotBeMadeSendsTheWholeManifest) {
  // The base's manifest cannot be loaded (deleted meanwhile): the agent
  // asked for a delta and gets the whole manifest, which it can apply to
  // any base (parts without runs), and the transfer publishes.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHaveAll);
  TransferParams v1 = Params(ImportPackage("app", "1.0", 1 << 20));
  TransferParams p = Params(ImportPackage("app", "2.0", (1 << 20) + 1));
  Inflate(p, 3000, 0);
  dp1.HoldBase(*v1.manifest);
  ManifestDeltas deltas([](const std::string&) -> absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> {
    return absl::NotFoundError("package deleted");
  });
  const std::string id = p.package_id;
  p.delta_bases = {v1.package_id};
  p.deltas = &deltas;
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(dp1.last_manifest_id(), id);
  EXPECT_EQ(dp1.last_manifest_base(), v1.package_id);
}

TEST_F(TransferCallTest, AFirstNeedSplitInSeveralMessagesCountsAsOne) {
  // Need messages of 7 indices with every third chunk local (all of those
  // in later messages): every needed chunk is sent once, every local one
  // counts as reused when the agent acknowledges it, and Commit waits for
  // them; a later message taken for a re-request would lose the local ones.
  FakeAgent& dp1 = AddAgent("dp1");
  dp1.SplitFirstNeed(7, 3);
  const size_t size = (5 << 20) + 7;
  TransferParams p = Params(ImportPackage("app", "1.0", size));
  ASSERT_GT(p.manifest->chunks_size(), 21);
  uint64_t local_bytes = 0;
  for (int i = 2; i < p.manifest->chunks_size(); i += 3) local_bytes += p.manifest->chunks(i).length();
  TransferResult result = RunTransfer(std::move(p));
  EXPECT_TRUE(result.published) << result.status;
  EXPECT_EQ(acked_, size);
  EXPECT_EQ(sent_, size - local_bytes);
  EXPECT_EQ(reused_, local_bytes);
  EXPECT_EQ(dp1.chunk_bytes_received(), size - local_bytes);
}

}  // namespace
}  // namespace pkgdist::testing
