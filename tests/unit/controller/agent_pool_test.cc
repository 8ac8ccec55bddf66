// AgentPool over real mutual TLS: an agent whose certificate names another
// agent is refused, and the refusal reaches the target as its last error.
#include "controller/agent_pool.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::HasSubstr;

class AgentPoolTest : public CoreTest {};

TEST_F(AgentPoolTest, AnAgentWithAnotherAgentsCertificateIsRefusedAndNamed) {
  // dp1 is registered at the address of a server presenting dp2's
  // certificate: no chunk is sent, and the target says who answered.
  FakeAgent impostor;
  FakeAgentServer server(Tls("dp2"), &impostor);
  ASSERT_FALSE(server.address().empty());
  ASSERT_TRUE(store_->AddAgent("dp1", server.address()).ok());
  std::string job = Distribute(ImportPackage("app", "1.0", 1 << 20), {"dp1"});
  StartEngine();
  auto t = WaitForTarget(job, "dp1", [](const TargetRow& t) {
    return t.state == TargetState::kRetryWait && t.attempts >= 1;
  });
  ASSERT_TRUE(t.has_value()) << "the attempt did not fail";
  EXPECT_THAT(t->last_error, HasSubstr("identity mismatch"));
  EXPECT_THAT(t->last_error, HasSubstr("dp2"));
  EXPECT_EQ(impostor.transfers(), 0);
  EXPECT_EQ(impostor.chunk_bytes_received(), 0u);
  EXPECT_THAT(pool_->GetInfo("dp1").last_error, HasSubstr("identity mismatch"));
}

TEST_F(AgentPoolTest, ForgetDropsTheChannel) {
  // After Forget the agent's connection state is IDLE (no channel), and a
  // new Stub dials again.
  AddAgent("dp1");
  auto address = store_->GetAgent("dp1")->address;
  EXPECT_TRUE(pool_->Channel("dp1", address)->WaitForConnected(
      std::chrono::system_clock::now() + std::chrono::seconds(10)));
  EXPECT_EQ(pool_->State("dp1"), pkgdist::v1::CONNECTION_STATE_READY);
  pool_->Forget("dp1");
  EXPECT_EQ(pool_->State("dp1"), pkgdist::v1::CONNECTION_STATE_IDLE);
  EXPECT_NE(pool_->Stub("dp1", address), nullptr);
}

}  // namespace
}  // namespace pkgdist::testing
