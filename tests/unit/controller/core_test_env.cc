#include "tests/unit/controller/core_test_env.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "pkgdist/v1/controller.pb.h"
#include "shared/manifest.h"

namespace pkgdist::testing {

std::optional<TempDir>* CoreTest::certs_ = nullptr;

void CoreTest::SetUpTestSuite() {
  auto dir = TempDir::Create("core_test_certs");
  ASSERT_TRUE(dir.ok()) << dir.status();
  certs_ = new std::optional<TempDir>(std::move(*dir));
  std::string cmd = absl::StrCat("bash '", PKGDIST_SOURCE_DIR, "/certs/gen-dev-certs.sh' '",
                                 (*certs_)->path(), "' dp1 dp2 dp3 dp4 >/dev/null");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "certificate generation failed: " << cmd;
}

void CoreTest::TearDownTestSuite() {
  delete certs_;
  certs_ = nullptr;
}

TlsFiles CoreTest::Tls(const std::string& stem) {
  TlsFiles t;
  const std::string& dir = (*certs_)->path();
  t.ca = dir + "/ca.pem";
  t.cert = absl::StrCat(dir, "/", stem, ".pem");
  t.key = absl::StrCat(dir, "/", stem, ".key");
  return t;
}

Engine::Options CoreTest::TestOptions() {
  Engine::Options o;
  o.detect_seconds = 5;
  o.backoff.initial_ms = 1000;
  o.backoff.max_ms = 8000;
  o.tick_ms = 10;
  o.progress_interval_ms = 0;
  return o;
}

void CoreTest::SetUp() {
  auto dir = TempDir::Create("core_test_state");
  ASSERT_TRUE(dir.ok()) << dir.status();
  state_dir_.emplace(std::move(*dir));
  auto store = StateStore::Open(state_dir_->path() + "/state.db", &clock_);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = std::move(*store);
  auto packages = PackageStore::Open(state_dir_->path(), ManifestLimits{});
  ASSERT_TRUE(packages.ok()) << packages.status();
  packages_ = std::move(*packages);
  TlsFiles tls = Tls("controller");
  pool_ = std::make_unique<AgentPool>(AgentPool::Options{tls, "pkgdist.dev", 5, 1000},
                                      MakeCertificateProvider(tls), &clock_);
}

void CoreTest::TearDown() {
  StopEngine();
  servers_.clear();
  pool_.reset();
  agents_.clear();
  packages_.reset();
  store_.reset();
  state_dir_.reset();
}

FakeAgent& CoreTest::AddAgent(const std::string& name, Behaviour default_behaviour) {
  auto& agent = agents_[name];
  agent = std::make_unique<FakeAgent>(default_behaviour);
  auto& server = servers_[name];
  server = std::make_unique<FakeAgentServer>(Tls(name), agent.get());
  EXPECT_FALSE(server->address().empty()) << "fake agent " << name << " did not start";
  EXPECT_TRUE(store_->AddAgent(name, server->address()).ok());
  return *agent;
}

TransferParams CoreTest::TransferParamsFor(const std::string& id, ReadPool* pool) {
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
  p.read_pool = pool;
  return p;
}

std::string CoreTest::ImportPackage(const std::string& name, const std::string& version,
                                    size_t size) {
  auto session = packages_->BeginImport();
  EXPECT_TRUE(session.ok()) << session.status();
  if (!session.ok()) return "";
  auto add = [&](const pkgdist::v1::ImportPackageRequest& m) {
    absl::Status s = (*session)->Add(m);
    EXPECT_TRUE(s.ok()) << s;
  };
  pkgdist::v1::ImportPackageRequest m;
  m.mutable_header()->set_name(name);
  m.mutable_header()->set_version(version);
  add(m);
  m.Clear();
  auto* e = m.mutable_entry();
  e->set_path("payload.bin");
  e->set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  e->set_mode(0644);
  e->set_size(size);
  add(m);
  std::string piece;
  for (size_t off = 0; off < size; off += piece.size()) {
    piece.resize(std::min<size_t>(256 << 10, size - off));
    for (size_t i = 0; i < piece.size(); ++i) piece[i] = static_cast<char>((off + i) * 131 % 251);
    m.Clear();
    m.mutable_data()->set_data(piece);
    add(m);
  }
  m.Clear();
  m.mutable_end();
  add(m);
  auto manifest = (*session)->Finish();
  EXPECT_TRUE(manifest.ok()) << manifest.status();
  if (!manifest.ok()) return "";
  std::string id = PackageIdHex(*manifest);
  EXPECT_TRUE(packages_->Commit(**session, id).ok());
  PackageRow row{id, name, version, manifest->total_size(),
                 static_cast<uint32_t>(manifest->files_size()),
                 static_cast<uint32_t>(manifest->chunks_size()), 0};
  EXPECT_TRUE(store_->AddPackage(row, manifest->SerializeAsString()).ok());
  return id;
}

std::string CoreTest::Distribute(const std::string& package_id,
                                 const std::vector<std::string>& agents, JobPolicy policy) {
  auto p = store_->GetPackageById(package_id);
  EXPECT_TRUE(p.ok()) << p.status();
  auto job = store_->CreateJob(JobKind::kDistribute, package_id, agents, policy,
                               p.ok() ? p->size : 0);
  EXPECT_TRUE(job.ok()) << job.status();
  if (engine_) engine_->Kick();
  return job.ok() ? job->id : "";
}

void CoreTest::StartEngine(Engine::Options options) {
  engine_ = std::make_unique<Engine>(options, store_.get(), packages_.get(), pool_.get(), &clock_);
  engine_->Start();
}

void CoreTest::StopEngine() {
  if (engine_ == nullptr) return;
  engine_->Stop();
  engine_.reset();
}

std::optional<TargetRow> CoreTest::WaitForTarget(
    const std::string& job, const std::string& agent,
    const std::function<bool(const TargetRow&)>& pred, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  uint64_t seen = store_->version();
  for (;;) {
    TargetRow t = Target(job, agent);
    if (pred(t)) return t;
    if (absl::Now() >= deadline) return std::nullopt;
    seen = store_->WaitForChange(seen, std::min(deadline - absl::Now(), absl::Milliseconds(200)));
  }
}

TargetRow CoreTest::Target(const std::string& job, const std::string& agent) {
  auto v = store_->GetJob(job);
  EXPECT_TRUE(v.ok()) << v.status();
  if (v.ok()) {
    for (const TargetRow& t : v->targets) {
      if (t.agent == agent) return t;
    }
  }
  ADD_FAILURE() << "no target " << agent << " in job " << job;
  return {};
}

JobState CoreTest::JobStateOf(const std::string& job) {
  auto v = store_->GetJob(job);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? v->state : JobState::kPending;
}

}  // namespace pkgdist::testing
