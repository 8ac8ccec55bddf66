// The admin API's audit trail and event stream in one process over real
// mutual TLS, with two admin identities (alice, bob) and an agent's
// certificate that is refused.
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/admin_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/sha256.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using EventReader = grpc::ClientReader<v1::Event>;

class AdminLogTest : public CoreTest {
 protected:
  static void SetUpTestSuite() {
    CoreTest::SetUpTestSuite();
    std::string ca = Tls("ca").ca;
    std::string dir = ca.substr(0, ca.rfind('/'));
    for (const char* who : {"alice", "bob"}) {
      std::string cmd = absl::StrCat("bash '", PKGDIST_SOURCE_DIR, "/certs/gen-dev-certs.sh' --admin ",
                                     who, " '", dir, "' >/dev/null");
      ASSERT_EQ(std::system(cmd.c_str()), 0) << "certificate generation failed: " << cmd;
    }
  }

  void StartAdmin() {
    engine_ = std::make_unique<Engine>(TestOptions(), store_.get(), packages_.get(), pool_.get(),
                                       &clock_);
    admin_ = std::make_unique<AdminService>("pkgdist.dev", store_.get(), packages_.get(),
                                            engine_.get(), pool_.get(), &clock_);
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
    if (admin_) admin_->Shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
    CoreTest::TearDown();
  }
  // Replaces the store with one keeping only `history` events.
  void ReopenStore(int64_t history) {
    store_.reset();
    auto s = StateStore::Open(state_dir_->path() + "/state.db", &clock_,
                              StoreOptions{.event_history = history});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  std::unique_ptr<v1::Admin::Stub> Client(const std::string& who) {
    TlsFiles tls = Tls(who);
    auto creds = MakeChannelCredentials(MakeCertificateProvider(tls), tls,
                                        SpiffeId{"pkgdist.dev", "controller", ""});
    return v1::Admin::NewStub(grpc::CreateChannel(address_, creds));
  }

  // Every audit record, paging with `page_size`; each page's size checked.
  std::vector<v1::AuditRecord> AuditRecords(v1::ListAuditRequest req, uint32_t page_size = 0) {
    auto client = Client("admin");
    req.set_page_size(page_size);
    std::vector<v1::AuditRecord> out;
    do {
      grpc::ClientContext ctx;
      v1::ListAuditResponse resp;
      grpc::Status s = client->ListAudit(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      if (page_size > 0) {
        EXPECT_LE(resp.records_size(), static_cast<int>(page_size));
      }
      out.insert(out.end(), resp.records().begin(), resp.records().end());
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    return out;
  }

  // "who method code" per record, with who the admin or agent name.
  static std::vector<std::string> Summaries(const std::vector<v1::AuditRecord>& records) {
    std::vector<std::string> out;
    for (const auto& r : records) {
      out.push_back(absl::StrCat(r.identity().substr(r.identity().rfind('/') + 1), " ",
                                 r.method(), " ", r.code()));
    }
    return out;
  }

  // Reads `reader` until `until` holds for an event (included) or the
  // stream ends.
  static std::vector<v1::Event> ReadUntil(EventReader& reader,
                                          const std::function<bool(const v1::Event&)>& until) {
    std::vector<v1::Event> out;
    v1::Event e;
    while (reader.Read(&e)) {
      out.push_back(e);
      if (until(e)) break;
    }
    return out;
  }
  static bool IsCaughtUp(const v1::Event& e) { return e.kind() == "caught_up"; }

  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// A client-streaming upload of one small file as name@version.
grpc::Status Upload(v1::Admin::Stub& client, const std::string& name, const std::string& version,
                    v1::PackageInfo* info) {
  grpc::ClientContext ctx;
  auto writer = client.ImportPackage(&ctx, info);
  v1::ImportPackageRequest m;
  m.mutable_header()->set_name(name);
  m.mutable_header()->set_version(version);
  writer->Write(m);
  m.Clear();
  m.mutable_entry()->set_path("a.txt");
  m.mutable_entry()->set_type(v1::ENTRY_TYPE_FILE);
  m.mutable_entry()->set_mode(0644);
  m.mutable_entry()->set_size(5);
  writer->Write(m);
  m.Clear();
  m.mutable_data()->set_data("hello");
  writer->Write(m);
  m.Clear();
  m.mutable_end();
  writer->Write(m);
  writer->WritesDone();
  return writer->Finish();
}

template <typename Req, typename Resp>
grpc::Status Call(grpc::Status (v1::Admin::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                  v1::Admin::Stub& client, const Req& req, Resp* resp = nullptr) {
  grpc::ClientContext ctx;
  Resp ignored;
  return (client.*method)(&ctx, req, resp != nullptr ? resp : &ignored);
}

TEST_F(AdminLogTest, EachMutatingCallLeavesExactlyOneRecordWithItsCaller) {
  // Ten mutating calls by two admins: ten records, in order, each naming
  // its caller, method, request and outcome; the reads leave none.
  StartAdmin();
  auto alice = Client("alice");
  auto bob = Client("bob");
  using A = v1::Admin::Stub;
  v1::AddAgentRequest add;
  add.set_name("dp1");
  add.set_address("127.0.0.1:9");
  ASSERT_TRUE(Call(&A::AddAgent, *alice, add).ok());
  v1::PackageInfo pkg;
  ASSERT_TRUE(Upload(*bob, "app", "1.0", &pkg).ok());
  v1::SignPackageRequest sign;
  sign.set_package("app@1.0");
  v1::SignatureBody body;
  body.set_package_id(*FromHex(pkg.id()));
  body.set_name("app");
  body.set_version("1.0");
  body.set_sequence(7);
  sign.mutable_signature()->set_body(body.SerializeAsString());
  sign.mutable_signature()->set_key_id("00112233aabbccdd");
  sign.mutable_signature()->set_signature(std::string(64, 'x'));
  ASSERT_TRUE(Call(&A::SignPackage, *alice, sign).ok());
  v1::DistributeRequest dist;
  dist.set_package("app@1.0");
  dist.add_agents("dp1");
  v1::JobStatus job;
  ASSERT_TRUE(Call(&A::Distribute, *bob, dist, &job).ok());
  v1::RemoveFromAgentsRequest rm;
  rm.set_package("app@1.0");
  rm.add_agents("dp1");
  ASSERT_TRUE(Call(&A::RemoveFromAgents, *alice, rm).ok());
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  ASSERT_TRUE(Call(&A::CancelJob, *bob, cancel).ok());
  v1::RetryJobRequest retry;
  retry.set_id(job.id());
  ASSERT_TRUE(Call(&A::RetryJob, *alice, retry).ok());
  v1::DeleteJobRequest del;
  del.set_id(job.id());
  ASSERT_TRUE(Call(&A::DeleteJob, *bob, del).ok());
  v1::DeletePackageRequest delpkg;
  delpkg.set_package("app@1.0");
  delpkg.set_force(true);
  ASSERT_TRUE(Call(&A::DeletePackage, *alice, delpkg).ok());
  v1::RemoveAgentRequest rmagent;
  rmagent.set_name("dp1");
  ASSERT_TRUE(Call(&A::RemoveAgent, *bob, rmagent).ok());
  ASSERT_TRUE(Call(&A::ListJobs, *alice, v1::ListJobsRequest()).ok());

  std::vector<v1::AuditRecord> records = AuditRecords({});
  EXPECT_THAT(Summaries(records),
              ElementsAre("alice AddAgent OK", "bob ImportPackage OK", "alice SignPackage OK",
                          "bob Distribute OK", "alice RemoveFromAgents OK", "bob CancelJob OK",
                          "alice RetryJob OK", "bob DeleteJob OK", "alice DeletePackage OK",
                          "bob RemoveAgent OK"));
  ASSERT_EQ(records.size(), 10u);
  EXPECT_EQ(records[0].identity(), "spiffe://pkgdist.dev/admin/alice");
  EXPECT_THAT(records[0].peer(), HasSubstr("127.0.0.1"));
  EXPECT_EQ(records[0].request(), "agent=dp1 address=127.0.0.1:9");
  EXPECT_EQ(records[1].request(), "package=app@1.0 entries=1 bytes=5");
  EXPECT_EQ(records[1].message(), absl::StrCat("id ", pkg.id(), " imported"));
  EXPECT_EQ(records[2].request(), "package=app@1.0 key=00112233aabbccdd sequence=7");
  EXPECT_EQ(records[3].request(), "package=app@1.0 agents=dp1");
  EXPECT_EQ(records[3].message(), absl::StrCat("job ", job.id(), " created with 1 target(s)"));
  EXPECT_EQ(records[5].request(), absl::StrCat("job=", job.id()));
  EXPECT_EQ(records[5].message(), "1 target(s) cancelled");
  EXPECT_EQ(records[8].request(), "package=app@1.0 force=true");
  for (size_t i = 1; i < records.size(); ++i) {
    EXPECT_GT(records[i].sequence(), records[i - 1].sequence());
  }
}

TEST_F(AdminLogTest, ARefusedCallIsRecordedWithTheIdentityItPresented) {
  // An agent's certificate is refused on a mutating and on a read call;
  // both refusals are recorded with the identity and what was asked.
  StartAdmin();
  auto agent = Client("dp1");
  v1::DistributeRequest dist;
  dist.set_package("app@1.0");
  dist.add_agents("dp2");
  EXPECT_EQ(Call(&v1::Admin::Stub::Distribute, *agent, dist).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Call(&v1::Admin::Stub::ListAgents, *agent, v1::ListAgentsRequest()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(store_->ListAgents().ok());
  std::vector<v1::AuditRecord> records = AuditRecords({});
  EXPECT_THAT(Summaries(records),
              ElementsAre("dp1 Distribute PERMISSION_DENIED", "dp1 ListAgents PERMISSION_DENIED"));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].identity(), "spiffe://pkgdist.dev/agent/dp1");
  EXPECT_EQ(records[0].request(), "package=app@1.0 agents=dp2");
  EXPECT_THAT(records[0].message(), HasSubstr("may not call this service"));
  v1::ListAuditRequest only_agent;
  only_agent.set_who("agent/dp1");
  EXPECT_EQ(AuditRecords(only_agent).size(), 2u);
}

TEST_F(AdminLogTest, AFailingCallIsRecordedWithItsCodeAndChangesNothing) {
  // Unknown package, bad address, unknown job: one record each with the
  // code and message the caller got, and no event.
  StartAdmin();
  auto alice = Client("alice");
  int64_t events_before = store_->newest_event();
  v1::DistributeRequest dist;
  dist.set_package("nope@1.0");
  dist.add_agents("dp1");
  EXPECT_EQ(Call(&v1::Admin::Stub::Distribute, *alice, dist).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::AddAgentRequest add;
  add.set_name("dp1");
  add.set_address("no-port");
  EXPECT_EQ(Call(&v1::Admin::Stub::AddAgent, *alice, add).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::CancelJobRequest cancel;
  cancel.set_id("feedfeedfeedfeed");
  EXPECT_EQ(Call(&v1::Admin::Stub::CancelJob, *alice, cancel).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::vector<v1::AuditRecord> records = AuditRecords({});
  EXPECT_THAT(Summaries(records),
              ElementsAre("alice Distribute NOT_FOUND", "alice AddAgent INVALID_ARGUMENT",
                          "alice CancelJob NOT_FOUND"));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].message(), "package nope@1.0 is not imported");
  EXPECT_EQ(records[2].request(), "job=feedfeedfeedfeed");
  EXPECT_EQ(store_->newest_event(), events_before);
}

TEST_F(AdminLogTest, ListAuditPagesOnceThroughEveryRecordAndFilters) {
  // Pages of two list all seven records exactly once, in order; who and
  // since filter; a bad time or token is INVALID_ARGUMENT naming the field.
  StartAdmin();
  auto alice = Client("alice");
  auto bob = Client("bob");
  for (int i = 0; i < 7; ++i) {
    v1::AddAgentRequest add;
    add.set_name(absl::StrCat("dp", i));
    add.set_address("127.0.0.1:9");
    ASSERT_TRUE(Call(&v1::Admin::Stub::AddAgent, i % 3 == 0 ? *bob : *alice, add).ok());
    clock_.AdvanceMs(1000);
  }
  std::vector<v1::AuditRecord> all = AuditRecords({}, 2);
  ASSERT_EQ(all.size(), 7u);
  std::set<uint64_t> seqs;
  for (const auto& r : all) seqs.insert(r.sequence());
  EXPECT_EQ(seqs.size(), 7u);
  v1::ListAuditRequest by_bob;
  by_bob.set_who("bob");
  EXPECT_EQ(AuditRecords(by_bob, 2).size(), 3u);
  v1::ListAuditRequest recent;
  recent.set_since(FormatRfc3339(clock_.NowMs() - 2000));
  EXPECT_THAT(Summaries(AuditRecords(recent)),
              ElementsAre("alice AddAgent OK", "bob AddAgent OK"));
  auto admin = Client("admin");
  v1::ListAuditRequest bad;
  bad.set_since("yesterday");
  grpc::ClientContext c1;
  v1::ListAuditResponse resp;
  grpc::Status s = admin->ListAudit(&c1, bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("since"));
  bad.Clear();
  bad.set_page_token("garbage");
  grpc::ClientContext c2;
  EXPECT_EQ(admin->ListAudit(&c2, bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AdminLogTest, AFollowerThatReconnectsSeesEveryChangeOnceInOrder) {
  // A follower leaves mid-job and comes back with its last sequence: the
  // two streams together hold every event once, without a gap, and the last
  // state of each target is what GetJob says.
  AddAgent("dp1");
  AddAgent("dp2").Script({Behaviour::kUnavailable});
  FakeAgent& dp3 = AddAgent("dp3", Behaviour::kHang);
  std::string pkg = ImportPackage("app", "1.0", (1 << 20) + 1000);
  StartAdmin();
  engine_->Start();
  auto alice = Client("alice");
  v1::WatchEventsRequest req;
  req.set_from_now(true);
  grpc::ClientContext ctx1;
  ctx1.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto first = alice->WatchEvents(&ctx1, req);
  std::vector<v1::Event> caught = ReadUntil(*first, IsCaughtUp);
  ASSERT_THAT(caught, ::testing::SizeIs(1));
  const uint64_t start = caught[0].sequence();
  std::string job = Distribute(pkg, {"dp1", "dp2", "dp3"});
  std::vector<v1::Event> events = ReadUntil(*first, [](const v1::Event& e) {
    return e.kind() == "target_changed" && e.agent() == "dp3" && e.state() == "transferring";
  });
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.back().agent(), "dp3") << "the first stream ended early";
  ctx1.TryCancel();
  first->Finish().IgnoreError();

  // Meanwhile: dp1 is done, dp2's retry (after its backoff: the clock
  // moves 2 s, less than the silent-agent bound) publishes, dp3 is
  // cancelled.
  ASSERT_TRUE(dp3.WaitForTransfers(1));
  auto done = [](const TargetRow& t) { return t.state == TargetState::kDone; };
  ASSERT_TRUE(WaitForTarget(job, "dp1", done));
  ASSERT_TRUE(WaitForTarget(job, "dp2", [](const TargetRow& t) {
    return t.state == TargetState::kRetryWait;
  })) << "dp2's first attempt did not fail";
  clock_.AdvanceMs(2000);
  engine_->Kick();
  ASSERT_TRUE(WaitForTarget(job, "dp2", done));
  v1::CancelJobRequest cancel;
  cancel.set_id(job);
  cancel.set_agent("dp3");
  ASSERT_TRUE(Call(&v1::Admin::Stub::CancelJob, *alice, cancel).ok());

  req.set_from_now(false);
  req.set_after_sequence(events.back().sequence());
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto second = alice->WatchEvents(&ctx2, req);
  std::vector<v1::Event> rest = ReadUntil(*second, [&](const v1::Event& e) {
    return e.kind() == "job_finished" && e.job_id() == job;
  });
  ctx2.TryCancel();
  second->Finish().IgnoreError();
  events.insert(events.end(), rest.begin(), rest.end());

  std::vector<uint64_t> seqs;
  std::map<std::string, v1::TargetStatus> last;
  for (const v1::Event& e : events) {
    if (e.kind() == "caught_up") continue;
    seqs.push_back(e.sequence());
    if (e.kind() == "target_changed" && e.job_id() == job) last[e.agent()] = e.target();
  }
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs.front(), start + 1);
  for (size_t i = 1; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i], seqs[i - 1] + 1) << "gap or duplicate at event " << i;
  }
  EXPECT_EQ(events.back().kind(), "job_finished");
  EXPECT_EQ(events.back().state(), "cancelled");
  grpc::ClientContext c;
  v1::GetJobRequest get;
  get.set_id(job);
  v1::JobStatus status;
  ASSERT_TRUE(alice->GetJob(&c, get, &status).ok());
  ASSERT_EQ(last.size(), 3u);
  for (const auto& t : status.targets()) {
    EXPECT_EQ(last[t.agent()].state(), t.state()) << t.agent();
    EXPECT_EQ(last[t.agent()].attempts(), t.attempts()) << t.agent();
    EXPECT_EQ(last[t.agent()].last_error(), t.last_error()) << t.agent();
  }
  bool saw_retry_wait = false;
  for (const v1::Event& e : events) {
    saw_retry_wait |= e.agent() == "dp2" && e.state() == "retry_wait" &&
                      !e.target().last_error().empty() && !e.target().next_attempt_at().empty();
  }
  EXPECT_TRUE(saw_retry_wait) << "dp2's failed attempt was not an event";
}

TEST_F(AdminLogTest, AFollowerTooFarBehindGetsOutOfRange) {
  // With a history of 5, a sequence older than the oldest kept, or newer
  // than the newest, is OUT_OF_RANGE saying what to do; one just inside
  // gets the rest in order.
  ReopenStore(5);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(store_->AddAgent("dp1", absl::StrCat("h:", i + 1)).ok());
  StartAdmin();
  auto alice = Client("alice");
  for (uint64_t after : {uint64_t{2}, uint64_t{100}}) {
    grpc::ClientContext ctx;
    v1::WatchEventsRequest req;
    req.set_after_sequence(after);
    auto reader = alice->WatchEvents(&ctx, req);
    std::vector<v1::Event> got = ReadUntil(*reader, IsCaughtUp);
    grpc::Status s = reader->Finish();
    EXPECT_THAT(got, IsEmpty());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << after;
    EXPECT_THAT(s.error_message(), HasSubstr("Re-read the state")) << after;
    if (after == 2) {
      EXPECT_THAT(s.error_message(), HasSubstr("the oldest kept is 8"));
    }
  }
  grpc::ClientContext ctx;
  v1::WatchEventsRequest req;
  req.set_after_sequence(7);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto reader = alice->WatchEvents(&ctx, req);
  std::vector<v1::Event> got = ReadUntil(*reader, IsCaughtUp);
  ctx.TryCancel();
  reader->Finish().IgnoreError();
  std::vector<uint64_t> seqs;
  for (const auto& e : got) seqs.push_back(e.sequence());
  EXPECT_THAT(seqs, ElementsAre(8, 9, 10, 11, 12, 12));
  EXPECT_EQ(got.back().kind(), "caught_up");
}

TEST_F(AdminLogTest, ProgressIsSentOnlyToFollowersThatAskForIt) {
  // include_progress adds target_progress with the bytes; without it the
  // next event after a progress write is the next change.
  AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", 1000), {"dp1"});
  StartAdmin();
  auto alice = Client("alice");
  grpc::ClientContext c1, c2;
  c1.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  c2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::WatchEventsRequest plain;
  plain.set_from_now(true);
  v1::WatchEventsRequest with = plain;
  with.set_include_progress(true);
  auto without_progress = alice->WatchEvents(&c1, plain);
  auto with_progress = alice->WatchEvents(&c2, with);
  ASSERT_THAT(ReadUntil(*without_progress, IsCaughtUp), ::testing::SizeIs(1));
  ASSERT_THAT(ReadUntil(*with_progress, IsCaughtUp), ::testing::SizeIs(1));
  ASSERT_TRUE(store_->StartAttempt(job, "dp1").ok());
  ASSERT_TRUE(store_->RecordProgress(job, "dp1", 600, 700, true, 250).ok());
  // (A first progress event may come before the write, with 0 bytes.)
  std::vector<v1::Event> got = ReadUntil(*with_progress, [](const v1::Event& e) {
    return e.kind() == "target_progress" && e.target().bytes_acked() == 600;
  });
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().target().bytes_acked(), 600u);
  EXPECT_EQ(got.back().target().bytes_sent(), 700u);
  EXPECT_EQ(got.back().target().bytes_reused(), 250u);
  EXPECT_EQ(got.back().job_id(), job);
  ASSERT_TRUE(store_->AddAgent("dp9", "127.0.0.1:9").ok());
  std::vector<v1::Event> plain_got = ReadUntil(*without_progress, [](const v1::Event& e) {
    return e.kind() == "agent_added";
  });
  std::vector<std::string> kinds;
  for (const auto& e : plain_got) kinds.push_back(e.kind());
  EXPECT_THAT(kinds, ElementsAre("target_changed", "agent_added"));
  c1.TryCancel();
  c2.TryCancel();
  without_progress->Finish().IgnoreError();
  with_progress->Finish().IgnoreError();
}

TEST_F(AdminLogTest, ShutdownEndsEveryStreamAtOnce) {
  // Shutdown() ends idle WatchEvents and WatchJob streams with UNAVAILABLE
  // without waiting for their next wake-up, so a server stop is prompt.
  AddAgent("dp1");
  std::string job = Distribute(ImportPackage("app", "1.0", 1000), {"dp1"});
  StartAdmin();
  auto alice = Client("alice");
  grpc::ClientContext c1, c2;
  c1.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  c2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto events = alice->WatchEvents(&c1, v1::WatchEventsRequest());
  ASSERT_FALSE(ReadUntil(*events, IsCaughtUp).empty());
  v1::GetJobRequest get;
  get.set_id(job);
  auto watch = alice->WatchJob(&c2, get);
  v1::JobStatus status;
  ASSERT_TRUE(watch->Read(&status));
  absl::Time began = absl::Now();
  admin_->Shutdown();
  v1::Event e;
  while (events->Read(&e)) {
  }
  grpc::Status s = events->Finish();
  while (watch->Read(&status)) {
  }
  grpc::Status w = watch->Finish();
  absl::Duration took = absl::Now() - began;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("reconnect with after_sequence"));
  EXPECT_EQ(w.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_LT(took, absl::Milliseconds(800)) << "the streams waited for their next wake-up";
}

}  // namespace
}  // namespace pkgdist::testing
