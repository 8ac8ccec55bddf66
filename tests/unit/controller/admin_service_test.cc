// The admin API in one process over real mutual TLS: pagination and its
// bounds, filters, a job's target counters, job deletion, bandwidth policy
// (sites, agents' own rates, egress) and authorization.
#include "controller/admin_service.h"

#include <sqlite3.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "controller/bandwidth_policy.h"
#include "controller/sqlite_util.h"
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
  // Every audit record, oldest first.
  std::vector<AuditRow> AuditRecords() {
    absl::StatusOr<std::vector<AuditRow>> rows = store_->ListAudit({});
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *std::move(rows) : std::vector<AuditRow>();
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

TEST_F(AdminServiceTest, GetJobReportsEachTargetsBytesAckedSentReusedAndFromPeer) {
  // A target's byte counters as stored reach the API unchanged.
  AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", 1000), {"dp1"});
  ASSERT_TRUE(store_->StartAttempt(job, "dp1").ok());
  ASSERT_TRUE(store_->RecordProgress(job, "dp1", 600, 450, true, 150, 70).ok());
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
  EXPECT_EQ(t.bytes_from_peer(), 70u);
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
  // A site is named in the API (site set NAME): its label takes a site
  // name, though the value would do for another key.
  for (const char* bad : {"-edge", "..", ""}) {
    grpc::Status refused = set({{"site", bad}}, {}).first;
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(refused.error_message(), HasSubstr(absl::StrCat("label site=", bad))) << bad;
  }
  EXPECT_TRUE(set({{"tier", "-edge"}}, {}).first.ok()) << "other keys keep the label rules";
  EXPECT_TRUE(set({}, {"tier"}).first.ok());
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

// --- Bandwidth policy: sites, agents' own rates, the egress limit.

v1::SetSiteRequest SiteRequest(const std::string& name) {
  v1::SetSiteRequest req;
  req.set_name(name);
  return req;
}

std::vector<std::string> Strings(const google::protobuf::RepeatedPtrField<std::string>& field) {
  return std::vector<std::string>(field.begin(), field.end());
}

TEST_F(AdminServiceTest, SetSiteRefusesABadRateWindowZoneOrNameAndChangesNothing) {
  // Each bad field is INVALID_ARGUMENT naming it; no policy is stored (or
  // the old one stays) and the refusal is the call's one audit record.
  StartAdmin();
  auto client = Client();
  struct Case {
    std::string what;
    v1::SetSiteRequest req;
    std::string message;
  };
  std::vector<Case> cases;
  auto with = [](const std::string& name, const std::function<void(v1::SetSiteRequest&)>& set) {
    v1::SetSiteRequest req = SiteRequest(name);
    set(req);
    return req;
  };
  auto for_site = [&](const std::string& site) {
    cases.clear();
    cases.push_back({"rate 0", with(site, [](auto& r) { r.set_rate("0"); }),
                     "a rate of 0 is ambiguous"});
    cases.push_back({"megabits", with(site, [](auto& r) { r.set_rate("10Mb/s"); }),
                     "rate \"10Mb/s\": unit \"Mb\": bits are not accepted"});
    cases.push_back({"bad window", with(site, [](auto& r) {
                       r.set_set_windows(true);
                       r.add_windows("mon-fri 08:00-18:00 paused");
                       r.add_windows("mon-fry 08:00-18:00 1MB");
                     }),
                     "window \"mon-fry 08:00-18:00 1MB\": unknown day \"fry\""});
    cases.push_back({"unknown zone", with(site, [](auto& r) { r.set_timezone("Mars/Olympus_Mons"); }),
                     "unknown time zone \"Mars/Olympus_Mons\""});
    cases.push_back({"zone path", with(site, [](auto& r) { r.set_timezone("../../etc/passwd"); }),
                     "invalid time zone name"});
  };
  auto check_all = [&](const std::function<void(const std::string& what)>& unchanged) {
    for (const Case& c : cases) {
      const size_t records = AuditRecords().size();
      grpc::ClientContext ctx;
      v1::SiteInfo info;
      grpc::Status s = client->SetSite(&ctx, c.req, &info);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.what;
      EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.what;
      unchanged(c.what);
      std::vector<AuditRow> after = AuditRecords();
      ASSERT_EQ(after.size(), records + 1) << c.what;
      EXPECT_EQ(after.back().method, "SetSite") << c.what;
      EXPECT_EQ(after.back().code, "INVALID_ARGUMENT") << c.what;
      EXPECT_THAT(after.back().message, HasSubstr(c.message)) << c.what;
    }
  };

  // A site without a policy gets none.
  for_site("fra");
  cases.push_back({"bad name", with("a/b", [](auto& r) { r.set_rate("1MB/s"); }),
                   "site name \"a/b\" may only hold"});
  cases.push_back({"empty name", with("", [](auto& r) { r.set_rate("1MB/s"); }),
                   "site name is empty"});
  check_all([&](const std::string& what) {
    EXPECT_EQ(store_->GetSite("fra").status().code(), absl::StatusCode::kNotFound) << what;
    EXPECT_EQ(store_->GetSite("a/b").status().code(), absl::StatusCode::kNotFound) << what;
  });
  absl::StatusOr<std::vector<SiteRow>> none = store_->ListSites();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());

  // A site with a policy keeps it, as it was.
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_rate("10MB/s");
    req.set_max_transfers(2);
    v1::SiteInfo info;
    ASSERT_TRUE(client->SetSite(&ctx, req, &info).ok());
  }
  absl::StatusOr<SiteRow> before = store_->GetSite("fra");
  ASSERT_TRUE(before.ok()) << before.status();
  for_site("fra");
  check_all([&](const std::string& what) {
    absl::StatusOr<SiteRow> now = store_->GetSite("fra");
    ASSERT_TRUE(now.ok()) << now.status();
    EXPECT_EQ(now->policy.rate, Rate::Limited(10'000'000)) << what;
    EXPECT_TRUE(now->policy.windows.empty()) << what;
    EXPECT_EQ(now->policy.timezone, "UTC") << what;
    EXPECT_EQ(now->policy.max_transfers, 2u) << what;
    EXPECT_EQ(now->updated_ms, before->updated_ms) << what;
  });
}

TEST_F(AdminServiceTest, SetSiteReplacesAStoredPolicyThatDoesNotParse) {
  // A row edited by hand into nonsense is DATA_LOSS for GetSite, and the
  // next SetSite replaces it (from the defaults) rather than failing too.
  SiteRow fra{"fra", {}, 0};
  fra.policy.rate = Rate::Paused();
  ASSERT_TRUE(store_->PutSite(fra).ok());
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open((state_dir_->path() + "/state.db").c_str(), &raw), SQLITE_OK);
    DbHandle db(raw);
    ASSERT_TRUE(ExecSql(db.get(), "UPDATE sites SET rate = 'fast' WHERE name = 'fra'").ok());
  }
  StartAdmin();
  auto client = Client();
  grpc::ClientContext get_ctx;
  v1::GetSiteRequest get;
  get.set_name("fra");
  v1::SiteInfo info;
  EXPECT_EQ(client->GetSite(&get_ctx, get, &info).error_code(), grpc::StatusCode::DATA_LOSS);
  grpc::ClientContext set_ctx;
  v1::SetSiteRequest req;
  req.set_name("fra");
  req.set_max_transfers(3);
  grpc::Status s = client->SetSite(&set_ctx, req, &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.rate(), "unlimited");
  EXPECT_EQ(info.max_transfers(), 3u);
}

TEST_F(AdminServiceTest, SetSiteKeepsTheFieldsTheRequestDoesNotSet) {
  // A request changes only what it sets: max_transfers alone keeps the
  // rate, windows and zone; the reply and the store agree, in canonical text.
  if (!LoadZone("Europe/Berlin").ok()) GTEST_SKIP() << "no tzdata for Europe/Berlin";
  StartAdmin();
  auto client = Client();
  v1::SiteInfo info;
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_rate("20 MB/s");
    req.set_set_windows(true);
    req.add_windows("MON-FRI 08:00-18:00 paused");
    req.set_timezone("Europe/Berlin");
    grpc::Status s = client->SetSite(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(info.name(), "fra");
  EXPECT_EQ(info.rate(), "20MB/s");
  EXPECT_THAT(Strings(info.windows()), ::testing::ElementsAre("mon-fri 08:00-18:00 paused"));
  EXPECT_EQ(info.timezone(), "Europe/Berlin");
  EXPECT_EQ(info.max_transfers(), 0u);
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_max_transfers(4);
    grpc::Status s = client->SetSite(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(info.rate(), "20MB/s");
  EXPECT_THAT(Strings(info.windows()), ::testing::ElementsAre("mon-fri 08:00-18:00 paused"));
  EXPECT_EQ(info.timezone(), "Europe/Berlin");
  EXPECT_EQ(info.max_transfers(), 4u);
  absl::StatusOr<SiteRow> row = store_->GetSite("fra");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->policy.rate, Rate::Limited(20'000'000));
  ASSERT_EQ(row->policy.windows.size(), 1u);
  EXPECT_EQ(FormatWindow(row->policy.windows[0]), "mon-fri 08:00-18:00 paused");
  EXPECT_EQ(row->policy.timezone, "Europe/Berlin");
  EXPECT_EQ(row->policy.max_transfers, 4u);
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_rate("paused");
    grpc::Status s = client->SetSite(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(info.rate(), "paused");
  EXPECT_EQ(info.windows_size(), 1);
  EXPECT_EQ(info.max_transfers(), 4u);
}

TEST_F(AdminServiceTest, SetSiteRelayMustBeARegisteredAgentOfTheSiteAndAutoClearsIt) {
  // A relay is a registered agent labelled site=NAME: a bad name is
  // INVALID_ARGUMENT, an unknown agent NOT_FOUND, an agent of another site
  // or of none FAILED_PRECONDITION, and each refusal keeps the relay. It is
  // stored, audited and shown by SetSite, GetSite and ListSites; "auto"
  // and "" clear it, and a request without relay keeps it.
  ASSERT_TRUE(store_->AddAgent("fra1", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("muc1", "127.0.0.1:9", nullptr, Labels{{"site", "muc"}}).ok());
  ASSERT_TRUE(store_->AddAgent("spare", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client();
  auto set_relay = [&](const std::string& relay, v1::SiteInfo* info) {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_relay(relay);
    return client->SetSite(&ctx, req, info);
  };
  auto stored_relay = [&]() -> std::string {
    absl::StatusOr<SiteRow> row = store_->GetSite("fra");
    return row.ok() ? row->relay : std::string(row.status().message());
  };

  v1::SiteInfo info;
  grpc::Status s = set_relay("fra1", &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.relay(), "fra1");
  EXPECT_EQ(stored_relay(), "fra1");
  std::vector<AuditRow> records = AuditRecords();
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back().request, "site=fra relay=fra1");
  EXPECT_THAT(records.back().message, HasSubstr("-> rate unlimited"));
  EXPECT_THAT(records.back().message, HasSubstr("relay=fra1"));
  absl::StatusOr<EventBatch> events = store_->ReadEvents(0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->events.empty());
  EXPECT_EQ(events->events.back().kind, EventKind::kLimitsChanged);
  EXPECT_THAT(events->events.back().detail, HasSubstr("site fra: "));
  EXPECT_THAT(events->events.back().detail, HasSubstr("relay=fra1"));

  struct Case {
    std::string relay;
    grpc::StatusCode code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"a/b", grpc::StatusCode::INVALID_ARGUMENT, "relay \"a/b\" may only hold"},
           {"dp9", grpc::StatusCode::NOT_FOUND, "agent dp9 is not registered"},
           {"muc1", grpc::StatusCode::FAILED_PRECONDITION, "agent muc1 is in site muc, not fra"},
           {"spare", grpc::StatusCode::FAILED_PRECONDITION, "agent spare has no site label"},
       }) {
    const size_t before = AuditRecords().size();
    s = set_relay(c.relay, &info);
    EXPECT_EQ(s.error_code(), c.code) << c.relay;
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.relay;
    EXPECT_EQ(stored_relay(), "fra1") << c.relay;
    records = AuditRecords();
    ASSERT_EQ(records.size(), before + 1) << c.relay;
    EXPECT_EQ(records.back().request, "site=fra relay=" + c.relay);
    EXPECT_THAT(records.back().message, HasSubstr(c.message)) << c.relay;
  }

  {
    // Another field alone keeps the relay; GetSite and ListSites show it.
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_max_transfers(2);
    ASSERT_TRUE(client->SetSite(&ctx, req, &info).ok());
    EXPECT_EQ(info.relay(), "fra1");
    grpc::ClientContext get_ctx;
    v1::GetSiteRequest get;
    get.set_name("fra");
    ASSERT_TRUE(client->GetSite(&get_ctx, get, &info).ok());
    EXPECT_EQ(info.relay(), "fra1");
    grpc::ClientContext list_ctx;
    v1::ListSitesResponse list;
    ASSERT_TRUE(client->ListSites(&list_ctx, v1::ListSitesRequest(), &list).ok());
    std::map<std::string, std::string> relays;
    for (const v1::SiteInfo& site : list.sites()) relays[site.name()] = site.relay();
    EXPECT_EQ(relays, (std::map<std::string, std::string>{{"fra", "fra1"}, {"muc", ""}}));
  }

  for (const char* clear : {"auto", ""}) {
    ASSERT_TRUE(set_relay("fra1", &info).ok()) << clear;
    s = set_relay(clear, &info);
    ASSERT_TRUE(s.ok()) << clear << ": " << s.error_message();
    EXPECT_EQ(info.relay(), "") << clear;
    EXPECT_EQ(stored_relay(), "") << clear;
    EXPECT_THAT(AuditRecords().back().message, ::testing::EndsWith("max_transfers 2")) << clear;
  }

  // "none": no relay at all, kept as such (no agent needs to exist).
  s = set_relay("none", &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.relay(), "none");
  EXPECT_EQ(stored_relay(), "none");
}

TEST_F(AdminServiceTest, SetWindowsWithoutWindowsClearsThemAndWindowsAloneAreRefused) {
  // set_windows with an empty list removes the windows and keeps the rate;
  // windows without set_windows are INVALID_ARGUMENT and change nothing.
  StartAdmin();
  auto client = Client();
  v1::SiteInfo info;
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_rate("1GiB/s");
    req.set_set_windows(true);
    req.add_windows("daily 08:00-18:00 10MB/s");
    req.add_windows("sat,sun 00:00-24:00 paused");
    ASSERT_TRUE(client->SetSite(&ctx, req, &info).ok());
  }
  EXPECT_EQ(info.windows_size(), 2);
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.add_windows("daily 00:00-24:00 paused");
    grpc::Status s = client->SetSite(&ctx, req, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("windows given without set_windows"));
  }
  absl::StatusOr<SiteRow> row = store_->GetSite("fra");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->policy.windows.size(), 2u);
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_set_windows(true);
    grpc::Status s = client->SetSite(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(info.windows_size(), 0);
  EXPECT_EQ(info.rate(), "1GiB/s");
  EXPECT_EQ(info.rate_now(), "1GiB/s");
  EXPECT_EQ(info.rate_now_until(), "") << "no window, no change due";
  row = store_->GetSite("fra");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_TRUE(row->policy.windows.empty());
  EXPECT_EQ(row->policy.rate, Rate::Limited(uint64_t{1} << 30));
}

TEST_F(AdminServiceTest, SiteInfoShowsTheRateInForceAndUntilWhen) {
  // Outside its windows a site sends at its rate until the next window
  // starts (the fake clock is Tuesday 2023-11-14 22:13:20 UTC).
  StartAdmin();
  auto client = Client();
  grpc::ClientContext ctx;
  v1::SetSiteRequest req = SiteRequest("fra");
  req.set_rate("20MB/s");
  req.set_set_windows(true);
  req.add_windows("daily 08:00-18:00 paused");
  v1::SiteInfo info;
  ASSERT_TRUE(client->SetSite(&ctx, req, &info).ok());
  EXPECT_EQ(info.rate_now(), "20MB/s");
  EXPECT_EQ(info.rate_now_until(), FormatRfc3339(1'700'035'200'000));  // 2023-11-15T08:00Z
  EXPECT_EQ(info.active_transfers(), 0u);
  EXPECT_EQ(info.bytes_sent(), 0u);
}

TEST_F(AdminServiceTest, GetSiteOfALabelledSiteWithoutPolicyShowsTheDefaultsAndItsAgents) {
  // A site named only by agents' labels exists, with the default policy
  // and its agents by name; a site neither labelled nor set is NOT_FOUND.
  ASSERT_TRUE(store_->AddAgent("fra2", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("fra1", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("muc1", "127.0.0.1:9", nullptr, Labels{{"site", "muc"}}).ok());
  ASSERT_TRUE(store_->AddAgent("spare", "127.0.0.1:9", nullptr, Labels{{"xsite", "fra"}}).ok());
  StartAdmin();
  auto client = Client();
  grpc::ClientContext ctx;
  v1::GetSiteRequest req;
  req.set_name("fra");
  v1::SiteInfo info;
  grpc::Status s = client->GetSite(&ctx, req, &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.name(), "fra");
  EXPECT_EQ(info.rate(), "unlimited");
  EXPECT_EQ(info.windows_size(), 0);
  EXPECT_EQ(info.timezone(), "UTC");
  EXPECT_EQ(info.max_transfers(), 0u);
  EXPECT_EQ(info.rate_now(), "unlimited");
  EXPECT_EQ(info.rate_now_until(), "");
  EXPECT_THAT(Strings(info.agents()), ::testing::ElementsAre("fra1", "fra2"));
  EXPECT_EQ(store_->GetSite("fra").status().code(), absl::StatusCode::kNotFound)
      << "reading a site stores no policy";

  grpc::ClientContext c2;
  req.set_name("ber");
  s = client->GetSite(&c2, req, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("site ber"));
}

TEST_F(AdminServiceTest, ListSitesIsTheUnionOfLabelledAndPolicySitesByName) {
  // Every site with agents or a policy, once, by name, each with its
  // agents and its policy (or the defaults).
  ASSERT_TRUE(store_->AddAgent("fra1", "127.0.0.1:9", nullptr, Labels{{"site", "fra"}}).ok());
  ASSERT_TRUE(store_->AddAgent("muc1", "127.0.0.1:9", nullptr, Labels{{"site", "muc"}}).ok());
  ASSERT_TRUE(store_->AddAgent("muc2", "127.0.0.1:9", nullptr, Labels{{"site", "muc"}}).ok());
  ASSERT_TRUE(store_->AddAgent("spare", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client();
  for (const auto& [site, rate] : std::vector<std::pair<std::string, std::string>>{
           {"zrh", "5MB/s"}, {"fra", "paused"}, {"ams", "1MB/s"}}) {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest(site);
    req.set_rate(rate);
    v1::SiteInfo info;
    ASSERT_TRUE(client->SetSite(&ctx, req, &info).ok()) << site;
  }
  grpc::ClientContext ctx;
  v1::ListSitesResponse resp;
  grpc::Status s = client->ListSites(&ctx, v1::ListSitesRequest(), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<std::string> summary;
  for (const v1::SiteInfo& site : resp.sites()) {
    summary.push_back(absl::StrCat(site.name(), " ", site.rate(), " now ", site.rate_now(), " [",
                                   absl::StrJoin(site.agents(), ","), "]"));
  }
  EXPECT_THAT(summary, ::testing::ElementsAre("ams 1MB/s now 1MB/s []",
                                              "fra paused now paused [fra1]",
                                              "muc unlimited now unlimited [muc1,muc2]",
                                              "zrh 5MB/s now 5MB/s []"));
}

TEST_F(AdminServiceTest, SetAgentRateIsNotFoundForAnUnknownAgentAndShownInAgentInfo) {
  // An unknown agent is NOT_FOUND, a bad rate INVALID_ARGUMENT; a set rate
  // is in the reply and in every later AgentInfo, in canonical text.
  ASSERT_TRUE(store_->AddAgent("node", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client();
  auto set = [&](const std::string& name, const std::string& rate, v1::AgentInfo* info) {
    grpc::ClientContext ctx;
    v1::SetAgentRateRequest req;
    req.set_name(name);
    req.set_rate(rate);
    return client->SetAgentRate(&ctx, req, info);
  };
  v1::AgentInfo info;
  grpc::Status s = set("dp9", "5MB/s", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("dp9"));
  s = set("node", "fast", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("rate \"fast\""));
  s = set("node", "5000 kB/s", &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.name(), "node");
  EXPECT_EQ(info.rate(), "5MB/s");
  absl::StatusOr<AgentRow> row = store_->GetAgent("node");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->rate, Rate::Limited(5'000'000));

  grpc::ClientContext ctx;
  v1::ListAgentsResponse agents;
  ASSERT_TRUE(client->ListAgents(&ctx, v1::ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_EQ(agents.agents(0).rate(), "5MB/s");
  ASSERT_TRUE(store_->AddAgent("other", "127.0.0.1:9").ok());
  grpc::ClientContext c2;
  ASSERT_TRUE(client->ListAgents(&c2, v1::ListAgentsRequest(), &agents).ok());
  ASSERT_EQ(agents.agents_size(), 2);
  EXPECT_EQ(agents.agents(1).rate(), "unlimited");
}

TEST_F(AdminServiceTest, SetEgressSetsTheLimitThatGetEgressShows) {
  // No limit until one is set; a set one is stored and shown in canonical
  // text; a bad one is INVALID_ARGUMENT and leaves it.
  StartAdmin();
  auto client = Client();
  auto get = [&] {
    grpc::ClientContext ctx;
    v1::EgressInfo info;
    grpc::Status s = client->GetEgress(&ctx, v1::GetEgressRequest(), &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info.rate();
  };
  auto set = [&](const std::string& rate, v1::EgressInfo* info) {
    grpc::ClientContext ctx;
    v1::SetEgressRequest req;
    req.set_rate(rate);
    return client->SetEgress(&ctx, req, info);
  };
  EXPECT_EQ(get(), "unlimited");
  v1::EgressInfo info;
  grpc::Status s = set("1024 MiB/s", &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.rate(), "1GiB/s");
  EXPECT_EQ(get(), "1GiB/s");
  absl::StatusOr<Rate> stored = store_->GetEgressRate();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored, Rate::Limited(uint64_t{1} << 30));
  s = set("10Mb/s", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("bits are not accepted"));
  EXPECT_EQ(get(), "1GiB/s");
  stored = store_->GetEgressRate();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored, Rate::Limited(uint64_t{1} << 30));
}

TEST_F(AdminServiceTest, EachLimitChangeLeavesExactlyOneAuditRecord) {
  // Every SetSite, SetAgentRate and SetEgress, done or refused, is one
  // record saying what was asked and what happened; reads leave none.
  ASSERT_TRUE(store_->AddAgent("node", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client();
  struct Step {
    std::string what;
    std::function<grpc::Status()> call;
    std::string method, request, code, message;
  };
  auto set_site = [&](v1::SetSiteRequest req) {
    return [&client, req] {
      grpc::ClientContext ctx;
      v1::SiteInfo info;
      return client->SetSite(&ctx, req, &info);
    };
  };
  auto set_rate = [&](const std::string& name, const std::string& rate) {
    return [&client, name, rate] {
      grpc::ClientContext ctx;
      v1::SetAgentRateRequest req;
      req.set_name(name);
      req.set_rate(rate);
      v1::AgentInfo info;
      return client->SetAgentRate(&ctx, req, &info);
    };
  };
  auto set_egress = [&](const std::string& rate) {
    return [&client, rate] {
      grpc::ClientContext ctx;
      v1::SetEgressRequest req;
      req.set_rate(rate);
      v1::EgressInfo info;
      return client->SetEgress(&ctx, req, &info);
    };
  };
  v1::SetSiteRequest fra = SiteRequest("fra");
  fra.set_rate("10MB/s");
  fra.set_set_windows(true);
  fra.add_windows("mon-fri 08:00-18:00 paused");
  fra.set_max_transfers(2);
  v1::SetSiteRequest bad = SiteRequest("fra");
  bad.set_rate("0");
  const std::string policy =
      "rate 10MB/s, windows [mon-fri 08:00-18:00 paused], timezone UTC, max_transfers 2";
  std::vector<Step> steps = {
      {"new site", set_site(fra), "SetSite",
       "site=fra rate=10MB/s windows=[mon-fri_08:00-18:00_paused] max_transfers=2", "OK",
       "no policy -> " + policy},
      {"same site again", set_site(fra), "SetSite",
       "site=fra rate=10MB/s windows=[mon-fri_08:00-18:00_paused] max_transfers=2", "OK",
       policy + " -> " + policy},
      {"bad site", set_site(bad), "SetSite", "site=fra rate=0", "INVALID_ARGUMENT",
       "a rate of 0 is ambiguous"},
      {"agent rate", set_rate("node", "5MB/s"), "SetAgentRate", "agent=node rate=5MB/s", "OK",
       "rate unlimited -> 5MB/s"},
      {"unknown agent", set_rate("dp9", "5MB/s"), "SetAgentRate", "agent=dp9 rate=5MB/s",
       "NOT_FOUND", "dp9"},
      {"egress", set_egress("100MB/s"), "SetEgress", "rate=100MB/s", "OK",
       "egress unlimited -> 100MB/s"},
      {"bad egress", set_egress("fast"), "SetEgress", "rate=fast", "INVALID_ARGUMENT", "fast"},
  };
  for (const Step& step : steps) {
    const size_t before = AuditRecords().size();
    step.call();
    std::vector<AuditRow> after = AuditRecords();
    ASSERT_EQ(after.size(), before + 1) << step.what;
    const AuditRow& r = after.back();
    EXPECT_EQ(r.method, step.method) << step.what;
    EXPECT_EQ(r.request, step.request) << step.what;
    EXPECT_EQ(r.code, step.code) << step.what;
    EXPECT_THAT(r.message, HasSubstr(step.message)) << step.what;
    EXPECT_THAT(r.identity, HasSubstr("/admin/admin")) << step.what;
  }

  const size_t before_reads = AuditRecords().size();
  grpc::ClientContext c1, c2, c3;
  v1::ListSitesResponse sites;
  EXPECT_TRUE(client->ListSites(&c1, v1::ListSitesRequest(), &sites).ok());
  v1::GetSiteRequest get;
  get.set_name("fra");
  v1::SiteInfo site;
  EXPECT_TRUE(client->GetSite(&c2, get, &site).ok());
  v1::EgressInfo egress;
  EXPECT_TRUE(client->GetEgress(&c3, v1::GetEgressRequest(), &egress).ok());
  EXPECT_EQ(AuditRecords().size(), before_reads);
}

TEST_F(AdminServiceTest, AnAgentIdentityCannotReadOrChangeTheLimits) {
  // An agent's certificate gets PERMISSION_DENIED from every bandwidth
  // call, and the limits stay as they were.
  ASSERT_TRUE(store_->AddAgent("node", "127.0.0.1:9").ok());
  StartAdmin();
  auto client = Client("dp1");
  std::vector<std::pair<std::string, grpc::Status>> results;
  {
    grpc::ClientContext ctx;
    v1::SetSiteRequest req = SiteRequest("fra");
    req.set_rate("paused");
    v1::SiteInfo info;
    results.emplace_back("SetSite", client->SetSite(&ctx, req, &info));
  }
  {
    grpc::ClientContext ctx;
    v1::SetAgentRateRequest req;
    req.set_name("node");
    req.set_rate("paused");
    v1::AgentInfo info;
    results.emplace_back("SetAgentRate", client->SetAgentRate(&ctx, req, &info));
  }
  {
    grpc::ClientContext ctx;
    v1::SetEgressRequest req;
    req.set_rate("paused");
    v1::EgressInfo info;
    results.emplace_back("SetEgress", client->SetEgress(&ctx, req, &info));
  }
  {
    grpc::ClientContext ctx;
    v1::ListSitesResponse resp;
    results.emplace_back("ListSites", client->ListSites(&ctx, v1::ListSitesRequest(), &resp));
  }
  {
    grpc::ClientContext ctx;
    v1::GetSiteRequest req;
    req.set_name("fra");
    v1::SiteInfo info;
    results.emplace_back("GetSite", client->GetSite(&ctx, req, &info));
  }
  {
    grpc::ClientContext ctx;
    v1::EgressInfo info;
    results.emplace_back("GetEgress", client->GetEgress(&ctx, v1::GetEgressRequest(), &info));
  }
  for (const auto& [method, s] : results) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
    EXPECT_THAT(s.error_message(), HasSubstr("spiffe://pkgdist.dev/agent/dp1")) << method;
  }
  EXPECT_EQ(store_->GetSite("fra").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<AgentRow> node = store_->GetAgent("node");
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_EQ(node->rate, Rate::Unlimited());
  absl::StatusOr<Rate> egress = store_->GetEgressRate();
  ASSERT_TRUE(egress.ok()) << egress.status();
  EXPECT_EQ(*egress, Rate::Unlimited());
  std::vector<AuditRow> records = AuditRecords();
  ASSERT_EQ(records.size(), results.size()) << "each refusal is recorded once";
  for (const AuditRow& r : records) EXPECT_EQ(r.code, "PERMISSION_DENIED") << r.method;
}

}  // namespace
}  // namespace pkgdist::testing
