// The shared bandwidth limits (controller/bandwidth.h), on a fake clock.
#include "controller/bandwidth.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "shared/clock.h"

namespace pkgdist {
namespace {

constexpr uint64_t kMB = 1'000'000;
constexpr uint64_t kMessage = 1 << 20;

// 2023-11-14 22:13:20 UTC, a Tuesday.
constexpr int64_t kStartMs = 1'700'000'000'000;

class BandwidthTest : public ::testing::Test {
 protected:
  // Offers one message per throttle every `step_ms` for `ms`; returns the
  // bytes each got through.
  std::vector<uint64_t> Run(const std::vector<std::shared_ptr<Throttle>>& throttles, int64_t ms,
                            int64_t step_ms = 5) {
    std::vector<uint64_t> sent(throttles.size(), 0);
    for (int64_t t = 0; t < ms; t += step_ms) {
      for (size_t i = 0; i < throttles.size(); ++i) {
        if (throttles[i]->Admit(kMessage)) sent[i] += kMessage;
      }
      clock_.AdvanceMs(step_ms);
      bandwidth_.Update();
    }
    return sent;
  }

  static SitePolicy Limited(uint64_t bps) {
    SitePolicy p;
    p.rate = Rate::Limited(bps);
    return p;
  }

  FakeClock clock_{kStartMs};
  Bandwidth bandwidth_{&clock_};
};

// Within one message and the 200 ms burst of `rate` over `seconds`.
void ExpectRate(uint64_t bytes, uint64_t rate, double seconds, const std::string& what) {
  const double expected = static_cast<double>(rate) * seconds;
  const double slack = static_cast<double>(rate) * 0.2 + 2.0 * kMessage;
  EXPECT_NEAR(static_cast<double>(bytes), expected, slack) << what;
}

TEST_F(BandwidthTest, ASiteLimitIsSharedByItsAgentsAndDoesNotTouchOtherSites) {
  // Two agents of fra share 10 MB/s; an agent of muc is not held by it.
  bandwidth_.SetSite("fra", Limited(10 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  bandwidth_.SetAgent("f2", Rate::Unlimited(), "fra");
  bandwidth_.SetAgent("m1", Rate::Unlimited(), "muc");
  auto sent = Run({bandwidth_.ThrottleFor("f1"), bandwidth_.ThrottleFor("f2"),
                   bandwidth_.ThrottleFor("m1")},
                  10'000);
  ExpectRate(sent[0] + sent[1], 10 * kMB, 10, "fra in all");
  EXPECT_NEAR(static_cast<double>(sent[0]), static_cast<double>(sent[1]), 4.0 * kMessage)
      << "the two agents of fra share alike";
  EXPECT_EQ(sent[2], uint64_t{2000} * kMessage) << "muc is unlimited: every offer passes";
  EXPECT_EQ(bandwidth_.SiteUsage("fra").bytes_sent, sent[0] + sent[1]);
  EXPECT_EQ(bandwidth_.SiteUsage("muc").bytes_sent, sent[2]);
  EXPECT_EQ(bandwidth_.EgressUsage().bytes_sent, sent[0] + sent[1] + sent[2]);
}

TEST_F(BandwidthTest, TheTightestOfEgressSiteAndAgentLimitsHolds) {
  bandwidth_.SetEgress(Rate::Limited(30 * kMB));
  bandwidth_.SetSite("fra", Limited(20 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Limited(5 * kMB), "fra");
  bandwidth_.SetAgent("f2", Rate::Unlimited(), "fra");
  bandwidth_.SetAgent("x1", Rate::Unlimited(), "");
  auto sent = Run({bandwidth_.ThrottleFor("f1"), bandwidth_.ThrottleFor("f2"),
                   bandwidth_.ThrottleFor("x1")},
                  10'000);
  // Max-min fair: f1 is held at 5 by its own limit; f2 and x1 share the
  // remaining 25 of the egress limit alike, which keeps fra under its 20.
  ExpectRate(sent[0], 5 * kMB, 10, "f1 by its own limit");
  ExpectRate(sent[0] + sent[1] + sent[2], 30 * kMB, 10, "everything by the egress limit");
  ExpectRate(sent[1], 12'500'000, 10, "f2, half of what the egress limit leaves");
  ExpectRate(sent[2], 12'500'000, 10, "x1, half of what the egress limit leaves");
  // With the egress limit lifted, the site limit binds fra.
  bandwidth_.SetEgress(Rate::Unlimited());
  sent = Run({bandwidth_.ThrottleFor("f1"), bandwidth_.ThrottleFor("f2")}, 10'000);
  ExpectRate(sent[0] + sent[1], 20 * kMB, 10, "fra by the site limit");
}

TEST_F(BandwidthTest, ATransferHeldByItsOwnLimitDoesNotHoldTheSitesTurn) {
  bandwidth_.SetSite("fra", Limited(20 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Limited(1 * kMB), "fra");
  bandwidth_.SetAgent("f2", Rate::Unlimited(), "fra");
  auto sent = Run({bandwidth_.ThrottleFor("f1"), bandwidth_.ThrottleFor("f2")}, 10'000);
  ExpectRate(sent[0], 1 * kMB, 10, "f1 by its own limit");
  ExpectRate(sent[1], 19 * kMB, 10, "f2 takes the rest of the site's budget");
}

TEST_F(BandwidthTest, AWaiterThatStopsAskingLosesItsTurn) {
  // f1 waits, then its call ends without a word: f2 goes 500 ms later.
  bandwidth_.SetSite("fra", Limited(10 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  bandwidth_.SetAgent("f2", Rate::Unlimited(), "fra");
  auto f1 = bandwidth_.ThrottleFor("f1");
  auto f2 = bandwidth_.ThrottleFor("f2");
  ASSERT_TRUE(f1->Admit(kMessage));
  EXPECT_FALSE(f1->Admit(kMessage)) << "in debt: f1 waits";
  clock_.AdvanceMs(200);  // the debt is paid; f1 asks no more
  EXPECT_FALSE(f2->Admit(kMessage)) << "f1 waited first";
  clock_.AdvanceMs(400);
  EXPECT_TRUE(f2->Admit(kMessage)) << "f1 has not asked for 600 ms: its turn is gone";
  // A throttle destroyed while waiting leaves no turn behind.
  ASSERT_TRUE(f2->Admit(kMessage)) << "what the 200 ms burst allows";
  ASSERT_FALSE(f1->Admit(kMessage)) << "in debt: f1 waits again";
  f1.reset();
  clock_.AdvanceMs(100);
  EXPECT_TRUE(f2->Admit(kMessage)) << "f1 is gone; f2 goes";
}

TEST_F(BandwidthTest, AChangeAppliesToAThrottleAlreadyHeld) {
  // A running transfer keeps its Throttle; the new rate holds at once.
  bandwidth_.SetSite("fra", Limited(10 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  auto throttle = bandwidth_.ThrottleFor("f1");
  ExpectRate(Run({throttle}, 5'000)[0], 10 * kMB, 5, "at 10 MB/s");
  bandwidth_.SetSite("fra", Limited(40 * kMB), absl::UTCTimeZone());
  ExpectRate(Run({throttle}, 5'000)[0], 40 * kMB, 5, "at 40 MB/s");
  bandwidth_.SetAgent("f1", Rate::Limited(2 * kMB), "fra");
  ExpectRate(Run({throttle}, 5'000)[0], 2 * kMB, 5, "the agent's new limit");
}

TEST_F(BandwidthTest, PausedAdmitsNothingAndADebtIsForgottenWhenTheLimitIsLifted) {
  bandwidth_.SetSite("fra", Limited(1 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  auto throttle = bandwidth_.ThrottleFor("f1");
  // Four messages in one go leave a debt of about 3 s at 1 MB/s.
  ASSERT_TRUE(throttle->Admit(4 * kMessage));
  EXPECT_FALSE(throttle->Admit(kMessage));
  SitePolicy paused;
  paused.rate = Rate::Paused();
  bandwidth_.SetSite("fra", paused, absl::UTCTimeZone());
  EXPECT_EQ(Run({throttle}, 10'000)[0], 0u) << "paused";
  EXPECT_TRUE(bandwidth_.SiteHolds("fra", 0)) << "no new transfer starts while paused";
  // Unlimited: the old debt must not hold anything back (it never refills).
  bandwidth_.SetSite("fra", SitePolicy{}, absl::UTCTimeZone());
  EXPECT_TRUE(throttle->Admit(kMessage));
  EXPECT_FALSE(bandwidth_.SiteHolds("fra", 0));
}

TEST_F(BandwidthTest, AWaitingTransferCannotBurstAboveTheLimit) {
  bandwidth_.SetAgent("f1", Rate::Limited(10 * kMB), "");
  auto throttle = bandwidth_.ThrottleFor("f1");
  clock_.AdvanceMs(60'000);  // a minute idle
  uint64_t burst = 0;
  while (throttle->Admit(kMessage)) burst += kMessage;
  EXPECT_LE(burst, 2 * kMB + kMessage) << "at most 200 ms of the rate, plus one message";
}

TEST_F(BandwidthTest, WindowsSetTheRateInForceAsTimePasses) {
  // 22:13:30-22:13:40 paused, 22:13:40-22:13:50 at 5 MB/s, unlimited otherwise.
  SitePolicy p;
  p.windows.push_back(*ParseWindow("daily 22:13:30-22:13:40 paused"));
  p.windows.push_back(*ParseWindow("daily 22:13:40-22:13:50 5MB/s"));
  bandwidth_.SetSite("fra", p, absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  auto throttle = bandwidth_.ThrottleFor("f1");
  EXPECT_TRUE(bandwidth_.SiteUsage("fra").rate_now.unlimited());
  EXPECT_EQ(bandwidth_.SiteUsage("fra").until, absl::FromUnixMillis(kStartMs + 10'000));
  EXPECT_EQ(Run({throttle}, 10'000)[0], uint64_t{2000} * kMessage) << "before the windows";
  EXPECT_TRUE(bandwidth_.SiteUsage("fra").rate_now.paused());
  EXPECT_TRUE(bandwidth_.SiteHolds("fra", 0));
  EXPECT_EQ(Run({throttle}, 10'000)[0], 0u) << "in the paused window";
  EXPECT_EQ(bandwidth_.SiteUsage("fra").rate_now, Rate::Limited(5 * kMB));
  ExpectRate(Run({throttle}, 10'000)[0], 5 * kMB, 10, "in the 5 MB/s window");
  EXPECT_TRUE(bandwidth_.SiteUsage("fra").rate_now.unlimited()) << "after the windows";
}

TEST_F(BandwidthTest, MaxTransfersHoldsNewTransfersOnceReached) {
  SitePolicy p;
  p.max_transfers = 2;
  bandwidth_.SetSite("fra", p, absl::UTCTimeZone());
  EXPECT_FALSE(bandwidth_.SiteHolds("fra", 1));
  EXPECT_TRUE(bandwidth_.SiteHolds("fra", 2));
  EXPECT_FALSE(bandwidth_.SiteHolds("muc", 100)) << "a site without a policy holds nothing";
}

TEST_F(BandwidthTest, UsageMeasuresTheRecentRate) {
  bandwidth_.SetSite("fra", Limited(8 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("f1", Rate::Unlimited(), "fra");
  Run({bandwidth_.ThrottleFor("f1")}, 10'000);
  const Bandwidth::Usage u = bandwidth_.SiteUsage("fra");
  EXPECT_NEAR(static_cast<double>(u.bytes_per_second), 8.0 * kMB, 0.1 * 8 * kMB);
  Run({}, 4'000);  // nothing offered for longer than the span
  EXPECT_EQ(bandwidth_.SiteUsage("fra").bytes_per_second, 0u);
}

TEST_F(BandwidthTest, AnAgentMovedToAnotherSiteCountsThereForItsNextTransfer) {
  bandwidth_.SetSite("fra", Limited(1 * kMB), absl::UTCTimeZone());
  bandwidth_.SetAgent("a1", Rate::Unlimited(), "fra");
  EXPECT_EQ(bandwidth_.SiteOf("a1"), "fra");
  bandwidth_.SetAgent("a1", Rate::Unlimited(), "muc");
  EXPECT_EQ(bandwidth_.SiteOf("a1"), "muc");
  EXPECT_EQ(Run({bandwidth_.ThrottleFor("a1")}, 1'000)[0], uint64_t{200} * kMessage);
  bandwidth_.ForgetAgent("a1");
  EXPECT_EQ(bandwidth_.SiteOf("a1"), "");
}

}  // namespace
}  // namespace pkgdist
