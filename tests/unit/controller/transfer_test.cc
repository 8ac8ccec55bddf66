// TransferCall on its own, against a fake agent over real mutual TLS.
#include "controller/transfer.h"

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/manifest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::HasSubstr;

class TransferCallTest : public CoreTest {
 protected:
  TransferParams Params(const std::string& id) {
    auto bytes = store_->GetManifestBytes(id);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    auto m = std::make_shared<pkgdist::v1::Manifest>();
    EXPECT_TRUE(m->ParseFromString(*bytes));
    TransferParams p;
    p.job_id = "job";
    p.agent = "dp1";
    p.manifest = m;
    p.package_id = PackageId(*m);
    p.tree = packages_->TreeOf(id);
    p.detect_seconds = 5;
    p.read_pool = &read_pool_;
    return p;
  }
  ReadPool read_pool_{1};
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
      pool_->Stub("dp1", store_->GetAgent("dp1")->address).get(), std::move(p), &clock_,
      [](uint64_t, uint64_t, bool) {},
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
  absl::Notification done;
  TransferResult result;
  uint64_t acked = 0, sent = 0;
  auto call = TransferCall::Start(
      pool_->Stub("dp1", store_->GetAgent("dp1")->address).get(), std::move(p), &clock_,
      [&](uint64_t a, uint64_t s, bool) {
        acked = a;
        sent += s;
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
}

}  // namespace
}  // namespace pkgdist::testing
