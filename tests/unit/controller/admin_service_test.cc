// The admin API in one process over real mutual TLS: pagination and its
// bounds, filters, a job's target counters, job deletion and authorization.
#include "controller/admin_service.h"

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::HasSubstr;

class AdminServiceTest : public CoreTest {
 protected:
  void StartAdmin(size_t max_message_bytes = kMaxMessageBytes) {
    engine_ = std::make_unique<Engine>(TestOptions(), store_.get(), packages_.get(), pool_.get(),
                                       &clock_);
    admin_ = std::make_unique<AdminService>("pkgdist.dev", store_.get(), packages_.get(),
                                            engine_.get(), pool_.get(), &clock_,
                                            max_message_bytes);
    TlsFiles tls = Tls("controller");
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0",
                             MakeServerCredentials(MakeCertificateProvider(tls), tls), &port);
    builder.RegisterService(admin_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port != 0);
    address_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    CoreTest::TearDown();
  }
  std::unique_ptr<v1::Admin::Stub> Client(const std::string& who = "admin") {
    TlsFiles tls = Tls(who);
    auto creds = MakeChannelCredentials(MakeCertificateProvider(tls), tls,
                                        SpiffeId{"pkgdist.dev", "controller", ""});
    return v1::Admin::NewStub(grpc::CreateChannel(address_, creds));
  }
  void RegisterAgents(int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(store_->AddAgent(absl::StrFormat("node-%04d", i), "127.0.0.1:9").ok());
    }
  }

  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

TEST_F(AdminServiceTest, ListAgentsPagesThroughEveryAgentOnce) {
  // 25 agents in pages of 10: 10, 10, 5, in name order, each exactly once;
  // the last page has no next token.
  RegisterAgents(25);
  StartAdmin();
  auto client = Client();
  std::vector<std::string> names;
  std::vector<int> sizes;
  v1::ListAgentsRequest req;
  req.set_page_size(10);
  do {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse resp;
    ASSERT_TRUE(client->ListAgents(&ctx, req, &resp).ok());
    sizes.push_back(resp.agents_size());
    for (const auto& a : resp.agents()) names.push_back(a.name());
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  EXPECT_THAT(sizes, ::testing::ElementsAre(10, 10, 5));
  ASSERT_EQ(names.size(), 25u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), 25u);
}

TEST_F(AdminServiceTest, ListAgentsFiltersByNamePrefix) {
  // Only names with the prefix, across pages.
  RegisterAgents(12);
  ASSERT_TRUE(store_->AddAgent("edge-1", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client();
  grpc::ClientContext ctx;
  v1::ListAgentsRequest req;
  req.set_name_prefix("node-001");
  v1::ListAgentsResponse resp;
  ASSERT_TRUE(client->ListAgents(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.agents_size(), 2);
  EXPECT_EQ(resp.agents(0).name(), "node-0010");
  EXPECT_EQ(resp.agents(1).name(), "node-0011");
  EXPECT_TRUE(resp.next_page_token().empty());
}

TEST_F(AdminServiceTest, NoListResponseExceedsTheMessageLimit) {
  // 3,000 agents with an 80 KiB message limit: every page fits, pages end
  // early with a token, and together they list every agent.
  RegisterAgents(3000);
  const size_t limit = 80 << 10;
  StartAdmin(limit);
  auto client = Client();
  v1::ListAgentsRequest req;
  req.set_page_size(1000);
  size_t total = 0, pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse resp;
    ASSERT_TRUE(client->ListAgents(&ctx, req, &resp).ok());
    EXPECT_LE(resp.ByteSizeLong(), limit);
    total += static_cast<size_t>(resp.agents_size());
    ++pages;
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  EXPECT_EQ(total, 3000u);
  EXPECT_GT(pages, 3u) << "pages should have ended early at the byte bound";
}

TEST_F(AdminServiceTest, ListJobsPagesNewestFirstWithAStateFilter) {
  // Seven jobs, three cancelled: pages of two list the cancelled ones,
  // newest first, and nothing else.
  AddAgent("dp1");
  std::string id = ImportPackage("app", "1.0", 1000);
  std::vector<std::string> cancelled;
  for (int i = 0; i < 7; ++i) {
    clock_.AdvanceMs(10);
    std::string job = Distribute(id, {"dp1"});
    if (i % 2 == 0 && cancelled.size() < 3) {
      ASSERT_TRUE(store_->Cancel(job, "", "test").ok());
      cancelled.insert(cancelled.begin(), job);
    }
  }
  StartAdmin();
  auto client = Client();
  v1::ListJobsRequest req;
  req.set_state("cancelled");
  req.set_page_size(2);
  std::vector<std::string> seen;
  do {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    ASSERT_TRUE(client->ListJobs(&ctx, req, &resp).ok());
    EXPECT_LE(resp.jobs_size(), 2);
    for (const auto& j : resp.jobs()) {
      EXPECT_EQ(j.state(), "cancelled");
      seen.push_back(j.id());
    }
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  EXPECT_EQ(seen, cancelled);
}

TEST_F(AdminServiceTest, AMadeUpPageTokenIsInvalidArgument) {
  // A token of another call, or garbage, is refused naming the field.
  RegisterAgents(3);
  StartAdmin();
  auto client = Client();
  grpc::ClientContext c1;
  v1::ListAgentsRequest req;
  req.set_page_size(1);
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(client->ListAgents(&c1, req, &agents).ok());
  ASSERT_FALSE(agents.next_page_token().empty());
  grpc::ClientContext c2;
  v1::ListJobsRequest jobs_req;
  jobs_req.set_page_token(agents.next_page_token());
  v1::ListJobsResponse jobs;
  grpc::Status s = client->ListJobs(&c2, jobs_req, &jobs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
  grpc::ClientContext c3;
  req.set_page_token("not a token");
  EXPECT_EQ(client->ListAgents(&c3, req, &agents).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminServiceTest, DeleteJobRefusesARunningJobAndDeletesAFinishedOne) {
  // FAILED_PRECONDITION while a target is unfinished; once cancelled the
  // job is gone (NOT_FOUND afterwards).
  AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", 1000), {"dp1"});
  StartAdmin();
  auto client = Client();
  v1::DeleteJobRequest req;
  req.set_id(job);
  v1::DeleteJobResponse resp;
  grpc::ClientContext c1;
  grpc::Status refused = client->DeleteJob(&c1, req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("dp1 (pending)"));
  ASSERT_TRUE(store_->Cancel(job, "", "test").ok());
  grpc::ClientContext c2;
  EXPECT_TRUE(client->DeleteJob(&c2, req, &resp).ok());
  grpc::ClientContext c3;
  v1::GetJobRequest get;
  get.set_id(job);
  v1::JobStatus status;
  EXPECT_EQ(client->GetJob(&c3, get, &status).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminServiceTest, GetJobReportsEachTargetsBytesAckedSentAndReused) {
  // A target's byte counters as stored reach the API unchanged.
  AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", 1000), {"dp1"});
  ASSERT_TRUE(store_->StartAttempt(job, "dp1").ok());
  ASSERT_TRUE(store_->RecordProgress(job, "dp1", 600, 450, true, 150).ok());
  StartAdmin();
  auto client = Client();
  grpc::ClientContext ctx;
  v1::GetJobRequest get;
  get.set_id(job);
  v1::JobStatus status;
  ASSERT_TRUE(client->GetJob(&ctx, get, &status).ok());
  ASSERT_EQ(status.targets_size(), 1);
  const v1::TargetStatus& t = status.targets(0);
  EXPECT_EQ(t.state(), "transferring");
  EXPECT_EQ(t.bytes_acked(), 600u);
  EXPECT_EQ(t.bytes_total(), 1000u);
  EXPECT_EQ(t.bytes_sent(), 450u);
  EXPECT_EQ(t.bytes_reused(), 150u);
}

TEST_F(AdminServiceTest, ADistributionBySelectorTargetsTheMatchingAgentsAndTheNamedOnes) {
  ASSERT_TRUE(store_->AddAgent("fra1", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("fra2", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("muc1", "127.0.0.1:9", nullptr, Labels{{"site", "muc"}}).ok());
  ASSERT_TRUE(store_->AddAgent("spare", "127.0.0.1:9").ok());
  ImportPackage("app", "1.0", 1000);
  StartAdmin();
  auto client = Client();
  auto distribute = [&](const std::string& selector, std::vector<std::string> names,
                        v1::JobStatus* status) {
    grpc::ClientContext ctx;
    v1::DistributeRequest req;
    req.set_package("app@1.0");
    req.set_selector(selector);
    for (auto& n : names) req.add_agents(n);
    return client->Distribute(&ctx, req, status);
  };
  v1::JobStatus status;
  ASSERT_TRUE(distribute("site=fra", {"spare", "fra1"}, &status).ok());
  std::vector<std::string> targets;
  for (const auto& t : status.targets()) targets.push_back(t.agent());
  EXPECT_THAT(targets, ::testing::ElementsAre("fra1", "fra2", "spare"));
  grpc::Status s = distribute("site=ber", {}, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("selector site=ber matches none of the 4 registered"));
  s = distribute("site in (fra", {}, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("expected"));
}

TEST_F(AdminServiceTest, SetAgentLabelsValidatesKeysAndValues) {
  AddAgent("dp1");
  StartAdmin();
  auto client = Client();
  auto set = [&](std::map<std::string, std::string> labels, std::vector<std::string> remove) {
    grpc::ClientContext ctx;
    v1::SetAgentLabelsRequest req;
    req.set_name("dp1");
    for (auto& [k, v] : labels) (*req.mutable_set())[k] = v;
    for (auto& k : remove) req.add_remove(k);
    v1::AgentInfo info;
    grpc::Status s = client->SetAgentLabels(&ctx, req, &info);
    return std::make_pair(s, info);
  };
  auto [ok, info] = set({{"site", "fra"}}, {});
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(info.labels().at("site"), "fra");
  EXPECT_THAT(set({{"si te", "x"}}, {}).first.error_message(), HasSubstr("si te"));
  EXPECT_THAT(set({{"site", "a/b"}}, {}).first.error_message(), HasSubstr("a/b"));
  EXPECT_THAT(set({{"site", "x"}}, {"site"}).first.error_message(),
              HasSubstr("label site is both set and removed"));
  auto row = store_->GetAgent("dp1");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->labels, (Labels{{"site", "fra"}}));
}

TEST_F(AdminServiceTest, ForceDeletingAPackageStopsItsRunningTransfers) {
  // The package's targets are cancelled and the transfer that was sending
  // it ends at once, instead of running on to a package that is gone.
  FakeAgent& dp1 = AddAgent("dp1", Behaviour::kHang);
  std::string job = Distribute(ImportPackage("app", "1.0", 3 << 20), {"dp1"});
  StartAdmin();
  engine_->Start();
  ASSERT_TRUE(dp1.WaitForTransfers(1));
  auto client = Client();
  grpc::ClientContext ctx;
  v1::DeletePackageRequest req;
  req.set_package("app@1.0");
  req.set_force(true);
  v1::DeletePackageResponse resp;
  ASSERT_TRUE(client->DeletePackage(&ctx, req, &resp).ok());
  EXPECT_TRUE(dp1.WaitForHangsEnded(1)) << "the running transfer was not cancelled";
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kCancelled);
  EXPECT_EQ(t.last_error, "package deleted");
}

TEST_F(AdminServiceTest, AnAgentIdentityIsNotAnAdmin) {
  // A valid certificate of the wrong kind gets PERMISSION_DENIED naming it.
  StartAdmin();
  auto client = Client("dp1");
  grpc::ClientContext ctx;
  v1::ListAgentsResponse resp;
  grpc::Status s = client->ListAgents(&ctx, v1::ListAgentsRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("spiffe://pkgdist.dev/agent/dp1"));
}

}  // namespace
}  // namespace pkgdist::testing
