// The engine's relays (docs/sites.md "Relays") against scripted fake agents
// over real mutual TLS, with a fake clock: per job and site one agent
// receives the package from the controller, and the site's other agents
// are pointed at it once it has answered its Offer, or sent to directly
// when it cannot serve them.
#include <initializer_list>
#include <string>
#include <vector>

#include "controller/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr size_t kSize = (3 << 20) + 12345;  // 4 chunks

bool IsDone(const TargetRow& t) { return t.state == TargetState::kDone; }

class EngineRelayTest : public CoreTest {
 protected:
  // Puts `agents` in site `site` (before StartEngine, which loads the sites).
  void PutInSite(const std::string& site, std::initializer_list<const char*> agents) {
    for (const char* a : agents) {
      ASSERT_TRUE(store_->SetAgentLabels(a, {{"site", site}}, {}).ok()) << a;
    }
  }
  std::string AddressOf(const std::string& agent) {
    auto row = store_->GetAgent(agent);
    EXPECT_TRUE(row.ok()) << row.status();
    return row.ok() ? row->address : "";
  }
  // The source named in `agent`'s `n`-th Offer ("" if none or no such Offer).
  std::string SourceOf(const std::string& agent, size_t n = 0) {
    auto offers = agents_[agent]->offers();
    if (n >= offers.size()) return "<no offer>";
    return offers[n].source().agent();
  }
  std::vector<std::string> ServePeersOf(const std::string& agent, size_t n = 0) {
    auto offers = agents_[agent]->offers();
    if (n >= offers.size()) return {"<no offer>"};
    return {offers[n].serve_peers().begin(), offers[n].serve_peers().end()};
  }
  // dp1 relays and is done; dp2 and dp3 hang fetching from it when the
  // engine stops. After the restart (with a new AgentPool if `fresh_pool`,
  // as a new controller process has; else the old one, whose channels to
  // dp2 and dp3 are still READY) they are pointed at dp1 again, which holds
  // the package (and its grant), rather than held and then sent the package
  // over the site's link.
  void RunRestart(FakeAgent& dp1, FakeAgent& dp2, FakeAgent& dp3, bool fresh_pool) {
    dp2.Script({Behaviour::kHang});
    dp3.Script({Behaviour::kHang});
    PutInSite("x", {"dp1", "dp2", "dp3"});
    std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
    StartEngine();
    ExpectAllDone(job, {"dp1"});
    ASSERT_TRUE(dp2.WaitForTransfers(1));
    ASSERT_TRUE(dp3.WaitForTransfers(1));
    StopEngine();
    ASSERT_TRUE(store_->RecoverInterrupted().ok());
    if (fresh_pool) {
      TlsFiles tls = Tls("controller");
      pool_ = std::make_unique<AgentPool>(AgentPool::Options{tls, "pkgdist.dev", 5, 1000},
                                          MakeCertificateProvider(tls), &clock_);
    }
    StartEngine();
    EXPECT_TRUE(dp2.WaitForTransfers(2, absl::Seconds(5)))
        << "dp2 was not restarted while its relay is done (held for the relay)";
    EXPECT_TRUE(dp3.WaitForTransfers(2, absl::Seconds(5)))
        << "dp3 was not restarted while its relay is done (held for the relay)";
    // Past any hold, whatever happened, the job completes.
    clock_.AdvanceMs(60'000);
    engine_->Kick();
    ExpectAllDone(job, {"dp2", "dp3"});
    // The last Offer: a hanging first attempt may end before it records one.
    EXPECT_EQ(SourceOf("dp2", dp2.offers().size() - 1), "dp1");
    EXPECT_EQ(SourceOf("dp3", dp3.offers().size() - 1), "dp1");
    EXPECT_EQ(dp1.transfers(), 1);
    EXPECT_EQ(dp2.chunk_bytes_received() + dp3.chunk_bytes_received(), 0u)
        << "the package crossed the site's link again";
  }
  void ExpectAllDone(const std::string& job, std::initializer_list<const char*> agents) {
    for (const char* a : agents) {
      EXPECT_TRUE(WaitForTarget(job, a, IsDone).has_value()) << a << " never became done";
    }
  }
};

TEST_F(EngineRelayTest, TheFirstAgentByNameRelaysAndItsPeersStartOnlyOnceItAnswered) {
  // Three agents of site x: dp1 gets the package from the controller, and
  // dp2 and dp3 are not started before dp1 has answered its Offer; then
  // they fetch every chunk from dp1 (their Offers name it, its address and
  // the detection bound), and the controller sends them nothing.
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  dp1.Script({Behaviour::kAnswerOnSignal});
  PutInSite("x", {"dp1", "dp2", "dp3"});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  EXPECT_FALSE(dp2.WaitForTransfers(1, absl::Milliseconds(500)))
      << "a peer started before its relay answered";
  EXPECT_FALSE(dp3.WaitForTransfers(1, absl::ZeroDuration()))
      << "a peer started before its relay answered";
  dp1.AnswerHeldOffers();
  ExpectAllDone(job, {"dp1", "dp2", "dp3"});
  EXPECT_EQ(SourceOf("dp1"), "");
  EXPECT_THAT(ServePeersOf("dp1"), ElementsAre("dp2", "dp3"));
  for (FakeAgent* peer : {&dp2, &dp3}) {
    auto offers = peer->offers();
    ASSERT_EQ(offers.size(), 1u);
    EXPECT_EQ(offers[0].source().agent(), "dp1");
    EXPECT_EQ(offers[0].source().address(), AddressOf("dp1"));
    EXPECT_EQ(offers[0].source_silence_ms(), TestOptions().detect_seconds * 1000u);
    EXPECT_EQ(peer->chunk_bytes_received(), 0u);
  }
  EXPECT_EQ(dp1.chunk_bytes_received(), kSize);
  TargetRow relay = Target(job, "dp1");
  EXPECT_EQ(relay.bytes_sent, kSize);
  EXPECT_EQ(relay.bytes_from_peer, 0u);
  for (const char* a : {"dp2", "dp3"}) {
    TargetRow t = Target(job, a);
    EXPECT_EQ(t.bytes_sent, 0u) << a;
    EXPECT_EQ(t.bytes_from_peer, kSize) << a;
    EXPECT_EQ(t.bytes_acked, kSize) << a;
  }
  EXPECT_EQ(JobStateOf(job), JobState::kComplete);
}

TEST_F(EngineRelayTest, AConfiguredRelayIsTheRelay) {
  // Site x names dp2 its relay: dp2 is sent the package first, dp1 and dp3
  // fetch it from dp2.
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  dp2.Script({Behaviour::kAnswerOnSignal});
  PutInSite("x", {"dp1", "dp2", "dp3"});
  SiteRow site{"x", {}, 0, "dp2"};
  ASSERT_TRUE(store_->PutSite(site).ok());
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ASSERT_TRUE(dp2.WaitForTransfers(1));
  EXPECT_FALSE(dp1.WaitForTransfers(1, absl::Milliseconds(500)))
      << "a peer started before the configured relay answered";
  EXPECT_FALSE(dp3.WaitForTransfers(1, absl::ZeroDuration()));
  dp2.AnswerHeldOffers();
  ExpectAllDone(job, {"dp1", "dp2", "dp3"});
  EXPECT_EQ(SourceOf("dp2"), "");
  EXPECT_THAT(ServePeersOf("dp2"), ElementsAre("dp1", "dp3"));
  EXPECT_EQ(SourceOf("dp1"), "dp2");
  EXPECT_EQ(SourceOf("dp3"), "dp2");
  EXPECT_EQ(dp2.chunk_bytes_received(), kSize);
  EXPECT_EQ(dp1.chunk_bytes_received(), 0u);
  EXPECT_EQ(dp3.chunk_bytes_received(), 0u);
}

TEST_F(EngineRelayTest, AfterAPeerReportsSourceFailedTheJobsLaterPeersGoDirect) {
  // dp2 cannot fetch from relay dp1 (source_failed) and gets everything
  // from the controller; dp3's first attempt (from dp1) hangs, and its
  // retry, after dp2's report, is sent directly.
  AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  dp2.FailSource(true);
  dp3.Script({Behaviour::kHang});
  PutInSite("x", {"dp1", "dp2", "dp3"});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ExpectAllDone(job, {"dp1", "dp2"});
  ASSERT_TRUE(dp3.WaitForOffers(1)) << "dp3's first attempt sent no Offer";
  EXPECT_EQ(SourceOf("dp2"), "dp1");
  EXPECT_EQ(SourceOf("dp3"), "dp1");
  TargetRow failed_over = Target(job, "dp2");
  EXPECT_EQ(failed_over.bytes_sent, kSize);
  EXPECT_EQ(failed_over.bytes_from_peer, 0u);
  EXPECT_EQ(dp2.chunk_bytes_received(), kSize);
  // dp3's hanging attempt ends by the detection bound; its retry is due
  // after the backoff.
  clock_.AdvanceMs(TestOptions().detect_seconds * 1000 + 1);
  auto t = WaitForTarget(job, "dp3", [](const TargetRow& r) {
    return r.attempts >= 2 || r.state == TargetState::kRetryWait;
  });
  ASSERT_TRUE(t.has_value()) << "dp3's silent attempt was not detected";
  if (t->state == TargetState::kRetryWait) clock_.AdvanceMs(t->next_attempt_ms - clock_.NowMs());
  ExpectAllDone(job, {"dp3"});
  ASSERT_EQ(dp3.offers().size(), 2u);
  EXPECT_EQ(SourceOf("dp3", 1), "") << "sent from the relay a peer could not fetch from";
  EXPECT_EQ(dp3.chunk_bytes_received(), kSize);
}

TEST_F(EngineRelayTest, ARelayWhoseAttemptFailedIsReplacedByTheNextAgent) {
  // dp1, the relay, fails every attempt: the next agent (dp2) relays
  // instead, dp3 fetches from it, so the package still crosses the site's
  // link once; dp1 retries on its own.
  AddAgent("dp1", Behaviour::kUnavailable);
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  PutInSite("x", {"dp1", "dp2", "dp3"});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ExpectAllDone(job, {"dp2", "dp3"});
  EXPECT_EQ(SourceOf("dp2"), "");
  EXPECT_EQ(SourceOf("dp3"), "dp2");
  EXPECT_EQ(dp2.chunk_bytes_received(), kSize);
  EXPECT_EQ(dp3.chunk_bytes_received(), 0u);
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kRetryWait);
  EXPECT_EQ(JobStateOf(job), JobState::kInProgress);
}

TEST_F(EngineRelayTest, AnAgentThatIsDownIsNotChosenAsRelay) {
  // docs/sites.md: the controller chooses "the first agent of the site in
  // the job, by name, whose channel is ready". dp1 is down when the job
  // starts: one of dp2 and dp3 relays for the other, so the package still
  // crosses the site's link once.
  AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  servers_.erase("dp1");  // nothing listens at dp1's address any more
  PutInSite("x", {"dp1", "dp2", "dp3"});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ExpectAllDone(job, {"dp2", "dp3"});
  EXPECT_EQ(dp2.chunk_bytes_received() + dp3.chunk_bytes_received(), kSize)
      << "relay of dp2: source " << SourceOf("dp2") << "; of dp3: " << SourceOf("dp3")
      << "; the package crossed the site's link "
      << (dp2.chunk_bytes_received() + dp3.chunk_bytes_received()) / kSize << " times";
}

// dp1 relays and is done; dp2 and dp3 hang fetching from it when the engine
// stops. After the restart (with a new AgentPool if `fresh_pool`, as a new
// controller process has; else the old one, whose channels to dp2 and dp3
// are still READY) they must be pointed at dp1 again, which holds the
// package (and its grant), not sent it over the site's link.
TEST_F(EngineRelayTest, AfterAControllerRestartPeersStillFetchFromTheRelayThatHoldsIt) {
  // A new controller process: every channel is cold.
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  RunRestart(dp1, dp2, dp3, /*fresh_pool=*/true);
}

TEST_F(EngineRelayTest, AMemberHoldingThePackageIsPreferredToAMemberWhoseChannelIsReady) {
  // The same, but dp2's and dp3's channels are READY when the relays are
  // loaded again (as when other jobs use them) and dp1's is not (it was
  // disconnected once done): "first ready" must not win over "holds it".
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  RunRestart(dp1, dp2, dp3, /*fresh_pool=*/false);
}

TEST_F(EngineRelayTest, ASiteWithoutRelaysSendsEveryAgentDirectly) {
  // site set --relay none: nobody waits, serves or fetches; each agent
  // gets the package from the controller.
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  FakeAgent& dp3 = AddAgent("dp3");
  PutInSite("x", {"dp1", "dp2", "dp3"});
  SiteRow site{"x", {}, 0, kNoRelay};
  ASSERT_TRUE(store_->PutSite(site).ok());
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2", "dp3"});
  StartEngine();
  ExpectAllDone(job, {"dp1", "dp2", "dp3"});
  for (FakeAgent* a : {&dp1, &dp2, &dp3}) {
    auto offers = a->offers();
    ASSERT_EQ(offers.size(), 1u);
    EXPECT_FALSE(offers[0].has_source());
    EXPECT_THAT(offers[0].serve_peers(), IsEmpty());
    EXPECT_EQ(a->chunk_bytes_received(), kSize);
  }
}

TEST_F(EngineRelayTest, AnAgentAloneInItsSiteIsSentDirectly) {
  // A site of one member in the job has no relay to wait for and no peers
  // to serve.
  FakeAgent& dp1 = AddAgent("dp1");
  FakeAgent& dp2 = AddAgent("dp2");
  PutInSite("x", {"dp1"});
  PutInSite("y", {"dp2"});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1", "dp2"});
  StartEngine();
  ExpectAllDone(job, {"dp1", "dp2"});
  for (const char* a : {"dp1", "dp2"}) {
    EXPECT_EQ(SourceOf(a), "") << a;
    EXPECT_THAT(ServePeersOf(a), IsEmpty()) << a;
  }
  EXPECT_EQ(dp1.chunk_bytes_received(), kSize);
  EXPECT_EQ(dp2.chunk_bytes_received(), kSize);
}

}  // namespace
}  // namespace pkgdist::testing
