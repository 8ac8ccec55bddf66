#include "controller/state_store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <atomic>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/sqlite_util.h"
#include "controller/state_store_migrations.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

inline absl::Status StatusOf(const absl::Status& s) { return s; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

#define ASSERT_OK(expr)                         \
  do {                                          \
    const absl::Status status_ = StatusOf(expr); \
    ASSERT_TRUE(status_.ok()) << status_;       \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(PKGDIST_CONCAT_(statusor_, __LINE__), lhs, expr)
#define PKGDIST_CONCAT_INNER_(a, b) a##b
#define PKGDIST_CONCAT_(a, b) PKGDIST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN_IMPL_(so, lhs, expr) \
  auto so = (expr);                              \
  ASSERT_TRUE(so.ok()) << so.status();           \
  lhs = std::move(so).value()

constexpr char kPkgId[] = "1111111111111111111111111111111111111111111111111111111111111111";
constexpr char kOtherPkgId[] = "2222222222222222222222222222222222222222222222222222222222222222";
constexpr BackoffPolicy kNoJitter{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.0};

auto Tie(const TargetRow& t) {
  return std::make_tuple(t.job_id, t.agent, TargetStateName(t.state), t.attempts,
                         t.consecutive_failures, t.next_attempt_ms, t.last_error, t.bytes_acked,
                         t.bytes_total, t.bytes_sent, t.bytes_reused, t.bytes_from_peer,
                         t.updated_ms);
}

auto Tie(const JobRow& j) {
  return std::make_tuple(j.id, JobKindName(j.kind), j.package_id, j.package,
                         j.policy.max_attempts, j.policy.deadline_ms, j.created_ms);
}

// A raw connection to the database file, for looking under the store.
struct RawDb {
  explicit RawDb(const std::string& path) { sqlite3_open(path.c_str(), &db); }
  ~RawDb() { sqlite3_close_v2(db); }
  std::string Query(const char* sql) {
    std::string out;
    sqlite3_exec(
        db, sql,
        [](void* o, int n, char** v, char**) {
          for (int i = 0; i < n; ++i) {
            static_cast<std::string*>(o)->append(v[i] ? v[i] : "NULL").append(i + 1 < n ? "|" : "\n");
          }
          return 0;
        },
        &out, nullptr);
    return out;
  }
  sqlite3* db = nullptr;
};

JobFilter WithState(JobState s) {
  JobFilter f;
  f.state = s;
  return f;
}
JobFilter WithPackage(std::string p) {
  JobFilter f;
  f.package = std::move(p);
  return f;
}
JobFilter WithAgent(std::string a) {
  JobFilter f;
  f.agent = std::move(a);
  return f;
}

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("state_store_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    path_ = dir_->path() + "/state.db";
    Reopen();
  }

  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<StateStore>> s = StateStore::Open(path_, &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  // Registers `agents` (and the package app@1.0) and creates a job for them.
  std::string NewJob(const std::vector<std::string>& agents, JobPolicy policy = {}) {
    for (const auto& a : agents) EXPECT_TRUE(store_->AddAgent(a, a + ".example:7000").ok());
    PackageRow p{kPkgId, "app", "1.0", 300, 2, 3, 0};
    EXPECT_TRUE(store_->AddPackage(p, "manifest").ok());
    absl::StatusOr<JobRow> job =
        store_->CreateJob(JobKind::kDistribute, kPkgId, agents, policy, 300);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id : "";
  }

  TargetRow Target(const std::string& job, const std::string& agent) {
    absl::StatusOr<JobView> v = store_->GetJob(job);
    EXPECT_TRUE(v.ok()) << v.status();
    if (v.ok()) {
      for (const TargetRow& t : v->targets) {
        if (t.agent == agent) return t;
      }
    }
    ADD_FAILURE() << "no target " << agent << " in job " << job;
    return {};
  }

  JobState StateOf(const std::string& job) {
    absl::StatusOr<JobView> v = store_->GetJob(job);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? v->state : JobState::kPending;
  }

  // A new single-target job for `agent` whose target is in `state`.
  std::string JobWithTargetIn(TargetState state, const std::string& agent = "dp1") {
    JobPolicy policy;
    if (state == TargetState::kFailed) policy.max_attempts = 1;
    std::string job = NewJob({agent}, policy);
    if (state == TargetState::kPending) return job;
    if (state == TargetState::kCancelled) {
      EXPECT_TRUE(store_->Cancel(job, "", "operator").ok());
      return job;
    }
    EXPECT_TRUE(store_->StartAttempt(job, agent).ok());
    if (state == TargetState::kDone) {
      EXPECT_TRUE(store_->MarkDone(job, agent).ok());
    }
    if (state == TargetState::kRetryWait || state == TargetState::kFailed) {
      EXPECT_TRUE(store_->MarkFailedAttempt(job, agent, "boom", kNoJitter, 0.0).ok());
    }
    EXPECT_EQ(TargetStateName(Target(job, agent).state), TargetStateName(state));
    return job;
  }

  std::optional<TempDir> dir_;
  std::string path_;
  FakeClock clock_;
  std::unique_ptr<StateStore> store_;
};

// --- Schema, durability.

TEST_F(StateStoreTest, OpenCreatesTheSchemaAndRecordsItsVersion) {
  // A new database gets every table, WAL mode and the latest schema version.
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("PRAGMA user_version"),
            std::to_string(StateStoreMigrations().back().version) + "\n");
  EXPECT_EQ(raw.Query("PRAGMA journal_mode"), "wal\n");
  EXPECT_EQ(raw.Query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
            "agents\naudit\nevents\njobs\npackages\nsettings\nsites\nsqlite_sequence\ntargets\n");
}

TEST_F(StateStoreTest, ReopenKeepsEveryRow) {
  // Agents, packages, jobs and targets survive closing and reopening.
  std::string job = NewJob({"dp1", "dp2"}, JobPolicy{.max_attempts = 7, .deadline_ms = 0});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->RecordProgress(job, "dp1", 100, 150, true, 60, 25));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkDone(job, "dp2"));
  ASSERT_OK_AND_ASSIGN(JobView before, store_->GetJob(job));
  ASSERT_EQ(before.targets[0].bytes_reused, 60u);
  ASSERT_EQ(before.targets[0].bytes_from_peer, 25u);
  ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> agents_before, store_->ListAgents());

  Reopen();

  ASSERT_OK_AND_ASSIGN(JobView after, store_->GetJob(job));
  EXPECT_EQ(Tie(after.job), Tie(before.job));
  ASSERT_EQ(after.targets.size(), 2u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(Tie(after.targets[i]), Tie(before.targets[i]));
  EXPECT_EQ(after.state, JobState::kInProgress);
  ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> agents_after, store_->ListAgents());
  ASSERT_EQ(agents_after.size(), agents_before.size());
  EXPECT_EQ(agents_after[1].address, "dp2.example:7000");
  ASSERT_OK_AND_ASSIGN(std::string manifest, store_->GetManifestBytes(kPkgId));
  EXPECT_EQ(manifest, "manifest");
}

TEST_F(StateStoreTest, RefusesADatabaseFromANewerSchema) {
  // A database written by a newer controller is not opened.
  store_.reset();
  {
    RawDb raw(path_);
    raw.Query("PRAGMA user_version = 999");
  }
  absl::StatusOr<std::unique_ptr<StateStore>> s = StateStore::Open(path_, &clock_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("999"));
}

TEST_F(StateStoreTest, AVersionThreeDatabaseGetsBytesReusedAndKeepsItsRows) {
  // Migration 4 adds bytes_reused (0) to the targets and events of a
  // database of the previous schema, and keeps every row.
  store_.reset();
  ASSERT_EQ(unlink(path_.c_str()), 0);
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    ASSERT_OK(ApplyMigrations(raw, StateStoreMigrations().first(3)));
    ASSERT_OK(ExecSql(
        raw,
        "INSERT INTO agents VALUES('dp1', 'a:1', 1);"
        "INSERT INTO packages(id, name, version, size, files, chunks, created_ms, manifest) "
        "VALUES('p', 'app', '1.0', 300, 1, 1, 1, x'00');"
        "INSERT INTO jobs VALUES('j1', 'distribute', 'p', 'app@1.0', 0, 0, 1);"
        "INSERT INTO targets(job_id, agent, state, attempts, bytes_acked, bytes_total, "
        "bytes_sent, updated_ms) VALUES('j1', 'dp1', 'transferring', 1, 100, 300, 150, 2);"
        "INSERT INTO events(time_ms, kind, job_id, agent, state, has_target, attempts, "
        "bytes_total, bytes_sent) "
        "VALUES(2, 'target_changed', 'j1', 'dp1', 'transferring', 1, 1, 300, 150);"));
    sqlite3_close_v2(raw);
  }
  Reopen();
  TargetRow t = Target("j1", "dp1");
  EXPECT_EQ(t.state, TargetState::kTransferring);
  EXPECT_EQ(t.bytes_acked, 100u);
  EXPECT_EQ(t.bytes_sent, 150u);
  EXPECT_EQ(t.bytes_reused, 0u);
  ASSERT_OK_AND_ASSIGN(EventBatch events, store_->ReadEvents(0, 0));
  ASSERT_EQ(events.events.size(), 1u);
  ASSERT_TRUE(events.events[0].target.has_value());
  EXPECT_EQ(events.events[0].target->bytes_sent, 150u);
  EXPECT_EQ(events.events[0].target->bytes_reused, 0u);
  ASSERT_OK(store_->RecordProgress("j1", "dp1", 200, 50, true, 40));
  EXPECT_EQ(Target("j1", "dp1").bytes_reused, 40u);
}

TEST_F(StateStoreTest, AVersionFourDatabaseGetsNoLabelsAndKeepsItsAgents) {
  // Migration 5 adds agents.labels (empty) and keeps every agent.
  store_.reset();
  ASSERT_EQ(unlink(path_.c_str()), 0);
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    ASSERT_OK(ApplyMigrations(raw, StateStoreMigrations().first(4)));
    ASSERT_OK(ExecSql(raw, "INSERT INTO agents VALUES('dp1', 'a:1', 1);"));
    sqlite3_close_v2(raw);
  }
  Reopen();
  ASSERT_OK_AND_ASSIGN(AgentRow a, store_->GetAgent("dp1"));
  EXPECT_EQ(a.address, "a:1");
  EXPECT_TRUE(a.labels.empty());
  ASSERT_OK(store_->SetAgentLabels("dp1", Labels{{"site", "fra"}}, {}).status());
  ASSERT_OK_AND_ASSIGN(a, store_->GetAgent("dp1"));
  EXPECT_EQ(a.labels, (Labels{{"site", "fra"}}));
}

TEST_F(StateStoreTest, RefusesAFileThatIsNotADatabase) {
  // Garbage at the path is reported, not overwritten.
  store_.reset();
  std::string bad = dir_->path() + "/garbage.db";
  ASSERT_OK(WriteFileAtomic(bad, std::string(8192, 'x')));
  absl::StatusOr<std::unique_ptr<StateStore>> s = StateStore::Open(bad, &clock_);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("garbage.db"));
}

TEST_F(StateStoreTest, RefusesATruncatedDatabase) {
  // A database cut short (a bad copy, a full disk during a restore) is
  // refused as damaged, never opened as if it were whole or empty.
  for (int i = 0; i < 2000; ++i) {
    ASSERT_OK(store_->AddAgent(absl::StrCat("agent-", i), "10.0.0.1:7000"));
  }
  store_.reset();  // the last connection checkpoints the WAL into the file
  off_t size = 0;
  {
    struct stat st;
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    size = st.st_size;
  }
  ASSERT_GT(size, 16 * 4096) << "the database should span many pages";
  ASSERT_EQ(::truncate(path_.c_str(), size / 2), 0);
  absl::StatusOr<std::unique_ptr<StateStore>> s = StateStore::Open(path_, &clock_);
  ASSERT_FALSE(s.ok()) << "a truncated database was opened";
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("damaged"));
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("restore it from a backup"));
  EXPECT_THAT(s.status().message(), HasSubstr(path_));
}

// --- Agents and packages.

TEST_F(StateStoreTest, AddAgentInsertsThenUpdatesTheAddress) {
  // Adding a known agent again changes its address and keeps added_ms.
  ASSERT_OK(store_->AddAgent("dp1", "10.0.0.1:7000"));
  int64_t added = clock_.NowMs();
  clock_.AdvanceMs(5000);
  ASSERT_OK(store_->AddAgent("dp1", "10.0.0.2:7000"));
  ASSERT_OK_AND_ASSIGN(AgentRow a, store_->GetAgent("dp1"));
  EXPECT_EQ(a.address, "10.0.0.2:7000");
  EXPECT_EQ(a.added_ms, added);
  EXPECT_EQ(store_->GetAgent("dp9").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->AddAgent("../etc", "h:1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AddAgent("dp2", "").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StateStoreTest, AddAgentWithLabelsReplacesThemAndWithoutKeepsThem) {
  ASSERT_OK(store_->AddAgent("dp1", "h:1", nullptr, Labels{{"site", "fra"}, {"tier", "edge"}}));
  ASSERT_OK(store_->AddAgent("dp1", "h:2"));  // a new address, the labels kept
  ASSERT_OK_AND_ASSIGN(AgentRow a, store_->GetAgent("dp1"));
  EXPECT_EQ(a.address, "h:2");
  EXPECT_EQ(a.labels, (Labels{{"site", "fra"}, {"tier", "edge"}}));
  ASSERT_OK(store_->AddAgent("dp1", "h:2", nullptr, Labels{{"site", "muc"}}));
  ASSERT_OK_AND_ASSIGN(a, store_->GetAgent("dp1"));
  EXPECT_EQ(a.labels, (Labels{{"site", "muc"}}));
  Reopen();
  ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> all, store_->ListAgents());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].labels, (Labels{{"site", "muc"}}));
}

TEST_F(StateStoreTest, SetAgentLabelsSetsAndRemovesKeysAndRecordsAnEvent) {
  ASSERT_OK(store_->AddAgent("dp1", "h:1", nullptr, Labels{{"site", "fra"}, {"rack", "r7"}}));
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  AuditEntry audit{"admin", "peer", "SetAgentLabels", "agent=dp1"};
  ASSERT_OK_AND_ASSIGN(AgentRow a, store_->SetAgentLabels("dp1", Labels{{"tier", "core"}, {"site", "muc"}},
                                                         {"rack", "absent"}, &audit));
  EXPECT_EQ(a.labels, (Labels{{"site", "muc"}, {"tier", "core"}}));
  EXPECT_EQ(audit.result, R"(labels "rack=r7,site=fra" -> "site=muc,tier=core")");
  ASSERT_OK_AND_ASSIGN(AgentRow stored, store_->GetAgent("dp1"));
  EXPECT_EQ(stored.labels, a.labels);
  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(after.events.size(), 1u);
  EXPECT_EQ(after.events[0].kind, EventKind::kAgentUpdated);
  EXPECT_EQ(after.events[0].detail, "labels site=muc,tier=core");
  EXPECT_EQ(store_->SetAgentLabels("dp9", {}, {}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, ListAgentsIsOrderedByName) {
  // Agents are listed by name whatever the order they were added in.
  ASSERT_OK(store_->AddAgent("dp3", "h:3"));
  ASSERT_OK(store_->AddAgent("dp1", "h:1"));
  ASSERT_OK(store_->AddAgent("dp2", "h:2"));
  ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> agents, store_->ListAgents());
  std::vector<std::string> names;
  for (const auto& a : agents) names.push_back(a.name);
  EXPECT_THAT(names, ElementsAre("dp1", "dp2", "dp3"));
}

TEST_F(StateStoreTest, PackagesAreFoundByNameVersionAndId) {
  // A package is stored with its manifest bytes (binary-safe) and found both ways.
  const std::string manifest("\0\x01\xff manifest", 12);
  PackageRow p{kPkgId, "app", "1.0", 1234, 5, 6, 0};
  ASSERT_OK(store_->AddPackage(p, manifest));
  ASSERT_OK_AND_ASSIGN(PackageRow by_name, store_->FindPackage("app", "1.0"));
  EXPECT_EQ(by_name.id, kPkgId);
  EXPECT_EQ(by_name.size, 1234u);
  EXPECT_EQ(by_name.files, 5u);
  EXPECT_EQ(by_name.chunks, 6u);
  EXPECT_EQ(by_name.created_ms, clock_.NowMs());
  ASSERT_OK_AND_ASSIGN(PackageRow by_id, store_->GetPackageById(kPkgId));
  EXPECT_EQ(by_id.name, "app");
  ASSERT_OK_AND_ASSIGN(std::string bytes, store_->GetManifestBytes(kPkgId));
  EXPECT_EQ(bytes, manifest);
  EXPECT_EQ(store_->FindPackage("app", "2.0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetPackageById(kOtherPkgId).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetManifestBytes(kOtherPkgId).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, AddPackageIsIdempotentButRefusesOtherContentUnderTheSameName) {
  // Same name@version and id: OK; same name@version, another id: ALREADY_EXISTS.
  PackageRow p{kPkgId, "app", "1.0", 1, 1, 1, 0};
  ASSERT_OK(store_->AddPackage(p, "m"));
  uint64_t v = store_->version();
  ASSERT_OK(store_->AddPackage(p, "m"));
  EXPECT_EQ(store_->version(), v);
  PackageRow other{kOtherPkgId, "app", "1.0", 2, 1, 1, 0};
  EXPECT_EQ(store_->AddPackage(other, "m2").code(), absl::StatusCode::kAlreadyExists);
  other.version = "1.1";
  ASSERT_OK(store_->AddPackage(other, "m2"));
  ASSERT_OK_AND_ASSIGN(std::vector<PackageRow> all, store_->ListPackages());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].version, "1.0");
  EXPECT_EQ(all[1].version, "1.1");
}

// --- Jobs.

TEST_F(StateStoreTest, CreateJobMakesOnePendingTargetPerAgent) {
  // Every target starts pending with the package's size; the job is pending.
  std::string job = NewJob({"dp2", "dp1"});
  EXPECT_THAT(job, ::testing::MatchesRegex("[0-9a-f]{16}"));
  ASSERT_OK_AND_ASSIGN(JobView v, store_->GetJob(job));
  EXPECT_EQ(v.job.kind, JobKind::kDistribute);
  EXPECT_EQ(v.job.package, "app@1.0");
  EXPECT_EQ(v.job.package_id, kPkgId);
  EXPECT_EQ(v.job.created_ms, clock_.NowMs());
  EXPECT_EQ(v.state, JobState::kPending);
  ASSERT_EQ(v.targets.size(), 2u);
  EXPECT_EQ(v.targets[0].agent, "dp1");  // ordered by agent
  for (const TargetRow& t : v.targets) {
    EXPECT_EQ(t.state, TargetState::kPending);
    EXPECT_EQ(t.bytes_total, 300u);
    EXPECT_EQ(t.attempts, 0u);
    EXPECT_EQ(t.next_attempt_ms, 0);
    EXPECT_EQ(t.updated_ms, clock_.NowMs());
  }
  EXPECT_EQ(store_->GetJob("0123456789abcdef").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, CreateJobRefusesBadInputAndCreatesNothing) {
  // Unknown agent or package, no agents, a duplicate agent: nothing is written.
  std::string first = NewJob({"dp1"});
  uint64_t v = store_->version();
  EXPECT_EQ(store_->CreateJob(JobKind::kDistribute, kPkgId, {"dp1", "ghost"}, {}, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CreateJob(JobKind::kDistribute, kOtherPkgId, {"dp1"}, {}, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->CreateJob(JobKind::kDistribute, kPkgId, {}, {}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->CreateJob(JobKind::kRemove, kPkgId, {"dp1", "dp1"}, {}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->version(), v);
  ASSERT_OK_AND_ASSIGN(std::vector<JobView> jobs, store_->ListJobs({}));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].job.id, first);
}

TEST_F(StateStoreTest, JobIdsAreDistinct) {
  // Many jobs get many different ids.
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.insert(NewJob({"dp1"}));
  EXPECT_EQ(ids.size(), 50u);
}

TEST_F(StateStoreTest, ListJobsFiltersByStatePackageAndAgentNewestFirst) {
  // Each filter narrows the list; the newest job comes first.
  std::string a = NewJob({"dp1", "dp2"});
  clock_.AdvanceMs(1000);
  std::string b = NewJob({"dp2"});
  ASSERT_OK(store_->StartAttempt(b, "dp2"));
  ASSERT_OK(store_->MarkDone(b, "dp2"));
  clock_.AdvanceMs(1000);
  ASSERT_OK(store_->AddPackage(PackageRow{kOtherPkgId, "tool", "2.0", 10, 1, 1, 0}, "m"));
  ASSERT_OK(store_->AddAgent("dp3", "h:3"));
  ASSERT_OK_AND_ASSIGN(JobRow c, store_->CreateJob(JobKind::kRemove, kOtherPkgId, {"dp3"}, {}, 0));
  ASSERT_OK(store_->Cancel(c.id, "", "changed my mind").status());

  auto ids = [&](const JobFilter& f) {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<JobView>> jobs = store_->ListJobs(f);
    EXPECT_TRUE(jobs.ok()) << jobs.status();
    if (jobs.ok()) {
      for (const auto& j : *jobs) out.push_back(j.job.id);
    }
    return out;
  };
  EXPECT_THAT(ids({}), ElementsAre(c.id, b, a));
  EXPECT_THAT(ids(WithState(JobState::kComplete)), ElementsAre(b));
  EXPECT_THAT(ids(WithState(JobState::kPending)), ElementsAre(a));
  EXPECT_THAT(ids(WithState(JobState::kCancelled)), ElementsAre(c.id));
  EXPECT_THAT(ids(WithState(JobState::kFailed)), IsEmpty());
  EXPECT_THAT(ids(WithPackage("app@1.0")), ElementsAre(b, a));
  EXPECT_THAT(ids(WithPackage("tool@2.0")), ElementsAre(c.id));
  EXPECT_THAT(ids(WithAgent("dp1")), ElementsAre(a));
  EXPECT_THAT(ids(WithAgent("dp2")), ElementsAre(b, a));
  JobFilter all_three = WithState(JobState::kComplete);
  all_three.package = "app@1.0";
  all_three.agent = "dp1";
  EXPECT_THAT(ids(all_three), IsEmpty());
  EXPECT_THAT(ids(WithPackage("' OR 1=1 --")), IsEmpty());
}

TEST_F(StateStoreTest, JobsCreatedInTheSameMillisecondKeepTheirOrder) {
  // Without the clock moving, creation order still decides "newest first".
  std::string a = NewJob({"dp1"});
  std::string b = NewJob({"dp1"});
  std::string c = NewJob({"dp1"});
  ASSERT_OK_AND_ASSIGN(std::vector<JobView> jobs, store_->ListJobs({}));
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].job.id, c);
  EXPECT_EQ(jobs[1].job.id, b);
  EXPECT_EQ(jobs[2].job.id, a);
}

// --- Transitions.

TEST_F(StateStoreTest, StartAttemptCountsAttempts) {
  // pending -> transferring, attempts 1; retry_wait -> transferring, attempts 2.
  std::string job = NewJob({"dp1"});
  clock_.AdvanceMs(10);
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kTransferring);
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.updated_ms, clock_.NowMs());
  EXPECT_EQ(StateOf(job), JobState::kInProgress);
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "reset", kNoJitter, 0.0));
  clock_.AdvanceMs(1000);
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kTransferring);
  EXPECT_EQ(t.attempts, 2u);
  EXPECT_EQ(t.next_attempt_ms, 0);
  EXPECT_EQ(t.last_error, "reset");  // kept for display until the next outcome
}

TEST_F(StateStoreTest, UnknownJobOrAgentIsNotFound) {
  // Every transition names what it could not find.
  std::string job = NewJob({"dp1"});
  absl::Status s = store_->StartAttempt("ffffffffffffffff", "dp1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("ffffffffffffffff"));
  s = store_->MarkDone(job, "dp7");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("dp7"));
  EXPECT_EQ(store_->RecordProgress(job, "dp7", 1, 1, true).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->MarkFailedAttempt(job, "dp7", "e", kNoJitter, 0).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Cancel(job, "dp7", "r").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Cancel("ffffffffffffffff", "", "r").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RetryNow(job, "dp7").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RetryNow("ffffffffffffffff", "").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, RecordProgressUpdatesBytesAndResetsFailures) {
  // Acked bytes are set, sent and reused bytes accumulate, progress clears
  // the failure streak.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "e1", kNoJitter, 0.0));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "e2", kNoJitter, 0.0));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  EXPECT_EQ(Target(job, "dp1").consecutive_failures, 2u);
  ASSERT_OK(store_->RecordProgress(job, "dp1", 100, 120, false));
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 100u);
  EXPECT_EQ(t.bytes_sent, 120u);
  EXPECT_EQ(t.bytes_reused, 0u);
  EXPECT_EQ(t.consecutive_failures, 2u);
  ASSERT_OK(store_->RecordProgress(job, "dp1", 200, 80, true, 30));
  t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 200u);
  EXPECT_EQ(t.bytes_sent, 200u);
  EXPECT_EQ(t.bytes_reused, 30u);
  EXPECT_EQ(t.consecutive_failures, 0u);
}

TEST_F(StateStoreTest, MarkDoneCompletesTheTarget) {
  // done: every byte acknowledged, no error, and a one-target job is complete.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "link down", kNoJitter, 0.0));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->RecordProgress(job, "dp1", 10, 10, true));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kDone);
  EXPECT_EQ(t.bytes_acked, 300u);
  EXPECT_EQ(t.last_error, "");
  EXPECT_EQ(StateOf(job), JobState::kComplete);
}

TEST_F(StateStoreTest, MarkFailedAttemptSchedulesTheNextAttemptWithBackoff) {
  // retry_wait, error recorded, next attempt at now + jittered backoff.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  BackoffPolicy jittered{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.5};
  ASSERT_OK_AND_ASSIGN(TargetRow r,
                       store_->MarkFailedAttempt(job, "dp1", "connection refused", jittered, 0.5));
  EXPECT_EQ(r.state, TargetState::kRetryWait);
  EXPECT_EQ(r.last_error, "connection refused");
  EXPECT_EQ(r.consecutive_failures, 1u);
  EXPECT_EQ(r.next_attempt_ms, clock_.NowMs() + 750);
  EXPECT_EQ(Tie(Target(job, "dp1")), Tie(r));
  ASSERT_OK_AND_ASSIGN(std::optional<int64_t> wake, store_->NextWakeupMs());
  EXPECT_EQ(wake, clock_.NowMs() + 750);
}

TEST_F(StateStoreTest, MaxAttemptsPolicyFailsTheTargetWithTheReason) {
  // The third failed attempt of a max_attempts=3 job fails for good.
  std::string job = NewJob({"dp1"}, JobPolicy{.max_attempts = 3});
  for (int i = 1; i <= 3; ++i) {
    ASSERT_OK(store_->StartAttempt(job, "dp1"));
    ASSERT_OK_AND_ASSIGN(TargetRow r,
                         store_->MarkFailedAttempt(job, "dp1", "disk full", kNoJitter, 0.0));
    EXPECT_EQ(r.state, i < 3 ? TargetState::kRetryWait : TargetState::kFailed);
  }
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kFailed);
  EXPECT_THAT(t.last_error, HasSubstr("max_attempts 3"));
  EXPECT_THAT(t.last_error, HasSubstr(": disk full"));
  EXPECT_EQ(t.next_attempt_ms, 0);
  EXPECT_EQ(StateOf(job), JobState::kFailed);
}

TEST_F(StateStoreTest, DeadlinePolicyFailsAFailedAttemptAfterTheDeadline) {
  // A failed attempt after the job's deadline fails the target.
  std::string job = NewJob({"dp1"}, JobPolicy{.deadline_ms = clock_.NowMs() + 5000});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  clock_.AdvanceMs(5000);
  ASSERT_OK_AND_ASSIGN(TargetRow r, store_->MarkFailedAttempt(job, "dp1", "timeout", kNoJitter, 0));
  EXPECT_EQ(r.state, TargetState::kFailed);
  EXPECT_EQ(r.last_error, "deadline exceeded: timeout");
}

TEST_F(StateStoreTest, OneServerFailingForeverNeverCompletesTheJob) {
  // The classic failure in miniature: dp1 done, dp2 unreachable. The job
  // stays in progress, dp2's attempts rise and its delay grows to the cap.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  std::vector<int64_t> delays;
  for (uint32_t attempt = 1; attempt <= 10; ++attempt) {
    if (attempt > 1) {
      ASSERT_OK_AND_ASSIGN(std::optional<int64_t> wake, store_->NextWakeupMs());
      ASSERT_TRUE(wake.has_value());
      clock_.AdvanceMs(*wake - clock_.NowMs() - 1);
      ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> early, store_->RunnableTargets(10, {}));
      EXPECT_THAT(early, IsEmpty()) << "not due yet";
      clock_.AdvanceMs(1);
      ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> due, store_->RunnableTargets(10, {}));
      ASSERT_EQ(due.size(), 1u);
      EXPECT_EQ(due[0].agent, "dp2");
      ASSERT_OK(store_->StartAttempt(job, "dp2"));
    }
    ASSERT_OK_AND_ASSIGN(TargetRow r, store_->MarkFailedAttempt(job, "dp2", "no route to host",
                                                                kNoJitter, 0.0));
    EXPECT_EQ(r.state, TargetState::kRetryWait);
    EXPECT_EQ(r.attempts, attempt);
    delays.push_back(r.next_attempt_ms - clock_.NowMs());
    EXPECT_EQ(StateOf(job), JobState::kInProgress);
    ASSERT_OK_AND_ASSIGN(std::vector<JobView> complete,
                         store_->ListJobs(WithState(JobState::kComplete)));
    EXPECT_THAT(complete, IsEmpty());
  }
  EXPECT_THAT(delays, ElementsAre(1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000, 60000));
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kDone);
}

// Each (state, operation) pair: whether the operation may act on a target in
// that state. Illegal ones must be refused without touching the row.
enum class Op { kStart, kProgress, kDone, kFail };

std::string IllegalTransitionName(
    const ::testing::TestParamInfo<std::tuple<TargetState, Op>>& info) {
  static const char* kOps[] = {"Start", "Progress", "Done", "Fail"};
  return std::string(TargetStateName(std::get<0>(info.param))) + "_" +
         kOps[static_cast<int>(std::get<1>(info.param))];
}

class IllegalTransitionTest
    : public StateStoreTest,
      public ::testing::WithParamInterface<std::tuple<TargetState, Op>> {};

TEST_P(IllegalTransitionTest, IsRefusedWithoutChangingTheRow) {
  // An operation on a target in the wrong state is FAILED_PRECONDITION and leaves the row as it was.
  auto [state, op] = GetParam();
  std::string job = JobWithTargetIn(state);
  TargetRow before = Target(job, "dp1");
  uint64_t v = store_->version();
  clock_.AdvanceMs(1000);
  absl::Status s;
  switch (op) {
    case Op::kStart: s = store_->StartAttempt(job, "dp1"); break;
    case Op::kProgress: s = store_->RecordProgress(job, "dp1", 5, 5, true); break;
    case Op::kDone: s = store_->MarkDone(job, "dp1"); break;
    case Op::kFail: s = store_->MarkFailedAttempt(job, "dp1", "x", kNoJitter, 0).status(); break;
  }
  bool legal = op == Op::kStart
                   ? (state == TargetState::kPending || state == TargetState::kRetryWait)
                   : state == TargetState::kTransferring;
  if (legal) {
    EXPECT_TRUE(s.ok()) << s;
    return;
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(std::string(TargetStateName(state))));
  EXPECT_EQ(Tie(Target(job, "dp1")), Tie(before));
  EXPECT_EQ(store_->version(), v);
}

INSTANTIATE_TEST_SUITE_P(
    AllStatesAndOps, IllegalTransitionTest,
    ::testing::Combine(::testing::Values(TargetState::kPending, TargetState::kTransferring,
                                         TargetState::kRetryWait, TargetState::kDone,
                                         TargetState::kFailed, TargetState::kCancelled),
                       ::testing::Values(Op::kStart, Op::kProgress, Op::kDone, Op::kFail)),
    IllegalTransitionName);

TEST_F(StateStoreTest, JobEndedOnlyWhenEveryTargetIsFinalAndAgreesWithTheDerivedState) {
  // The watch's shortcut must end exactly when the derived job state does.
  std::string job = NewJob({"dp1", "dp2", "dp3"});
  auto ended = [&] {
    absl::StatusOr<bool> e = store_->JobEnded(job);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() && *e;
  };
  EXPECT_FALSE(ended());  // pending
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  EXPECT_FALSE(ended());  // one done, one pending, one pending
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp2", "link down", kNoJitter, 0.0));
  ASSERT_OK(store_->StartAttempt(job, "dp3"));
  ASSERT_OK(store_->MarkDone(job, "dp3"));
  EXPECT_FALSE(ended());  // dp2 waits to retry: the classic failure is not an end
  EXPECT_EQ(StateOf(job), JobState::kInProgress);
  ASSERT_OK_AND_ASSIGN(int n, store_->Cancel(job, "dp2", "operator"));
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(ended());
  EXPECT_EQ(StateOf(job), JobState::kCancelled);
  ASSERT_OK_AND_ASSIGN(bool unknown, store_->JobEnded("no-such-job"));
  EXPECT_FALSE(unknown);
}

TEST_F(StateStoreTest, CancelStopsOnlyUnfinishedTargets) {
  // Cancel of a whole job cancels pending/transferring/retry_wait, not done.
  std::string job = NewJob({"dp1", "dp2", "dp3", "dp4"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->StartAttempt(job, "dp3"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp3", "e", kNoJitter, 0));
  const std::string hostile = "'; DROP TABLE targets; --";
  ASSERT_OK_AND_ASSIGN(int n, store_->Cancel(job, "", hostile));
  EXPECT_EQ(n, 3);
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kDone);
  for (const char* a : {"dp2", "dp3", "dp4"}) {
    TargetRow t = Target(job, a);
    EXPECT_EQ(t.state, TargetState::kCancelled) << a;
    EXPECT_EQ(t.last_error, hostile) << a;
    EXPECT_EQ(t.next_attempt_ms, 0) << a;
  }
  EXPECT_EQ(StateOf(job), JobState::kCancelled);
  ASSERT_OK_AND_ASSIGN(int again, store_->Cancel(job, "", "again"));
  EXPECT_EQ(again, 0);
}

TEST_F(StateStoreTest, CancelOfOneAgentLeavesTheOthers) {
  // Cancelling one target does not touch its siblings.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK_AND_ASSIGN(int n, store_->Cancel(job, "dp2", "not needed"));
  EXPECT_EQ(n, 1);
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kPending);
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kCancelled);
  EXPECT_EQ(StateOf(job), JobState::kInProgress);
}

TEST_F(StateStoreTest, RetryNowRevivesFailedAndWaitingTargets) {
  // failed and retry_wait targets become due now with a fresh failure streak.
  std::string job = NewJob({"dp1", "dp2", "dp3"}, JobPolicy{.max_attempts = 2});
  for (const char* a : {"dp1", "dp2"}) {
    ASSERT_OK(store_->StartAttempt(job, a));
    ASSERT_OK(store_->MarkFailedAttempt(job, a, "e", kNoJitter, 0));
  }
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "e", kNoJitter, 0));
  ASSERT_EQ(Target(job, "dp1").state, TargetState::kFailed);
  ASSERT_EQ(Target(job, "dp2").state, TargetState::kRetryWait);
  clock_.AdvanceMs(10);
  ASSERT_OK_AND_ASSIGN(int n, store_->RetryNow(job, ""));
  EXPECT_EQ(n, 2);
  for (const char* a : {"dp1", "dp2"}) {
    TargetRow t = Target(job, a);
    EXPECT_EQ(t.state, TargetState::kRetryWait) << a;
    EXPECT_EQ(t.next_attempt_ms, clock_.NowMs()) << a;
    EXPECT_EQ(t.consecutive_failures, 0u) << a;
  }
  EXPECT_EQ(Target(job, "dp3").state, TargetState::kPending);
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> runnable, store_->RunnableTargets(10, {}));
  EXPECT_EQ(runnable.size(), 3u);
}

TEST_F(StateStoreTest, RetryNowOfOneAgentLeavesTheOthersWaiting) {
  // Only the named agent's target is made due.
  std::string job = NewJob({"dp1", "dp2"});
  for (const char* a : {"dp1", "dp2"}) {
    ASSERT_OK(store_->StartAttempt(job, a));
    ASSERT_OK(store_->MarkFailedAttempt(job, a, "e", kNoJitter, 0));
  }
  ASSERT_OK_AND_ASSIGN(int n, store_->RetryNow(job, "dp2"));
  EXPECT_EQ(n, 1);
  EXPECT_EQ(Target(job, "dp1").next_attempt_ms, clock_.NowMs() + 1000);
  EXPECT_EQ(Target(job, "dp2").next_attempt_ms, clock_.NowMs());
}

TEST_F(StateStoreTest, WakeAgentMakesOnlyThatAgentsTargetsDue) {
  // A channel coming back makes its waiting targets due now, and no others.
  std::string j1 = NewJob({"dp1", "dp2"});
  std::string j2 = NewJob({"dp1"});
  for (const auto& [job, agent] : std::vector<std::pair<std::string, std::string>>{
           {j1, "dp1"}, {j1, "dp2"}, {j2, "dp1"}}) {
    ASSERT_OK(store_->StartAttempt(job, agent));
    ASSERT_OK(store_->MarkFailedAttempt(job, agent, "e", kNoJitter, 0));
  }
  clock_.AdvanceMs(100);
  ASSERT_OK(store_->WakeAgent("dp1"));
  EXPECT_EQ(Target(j1, "dp1").next_attempt_ms, clock_.NowMs());
  EXPECT_EQ(Target(j2, "dp1").next_attempt_ms, clock_.NowMs());
  EXPECT_EQ(Target(j1, "dp2").next_attempt_ms, clock_.NowMs() + 900);
  uint64_t v = store_->version();
  ASSERT_OK(store_->WakeAgent("dp1"));  // nothing left to wake
  EXPECT_EQ(store_->version(), v);
}

TEST_F(StateStoreTest, FailExpiredFailsWaitingTargetsPastTheDeadline) {
  // pending and retry_wait targets of an expired job fail; a transfer in
  // flight and other jobs are left alone.
  std::string expiring = NewJob({"dp1", "dp2", "dp3"}, JobPolicy{.deadline_ms = clock_.NowMs() + 1000});
  std::string other = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(expiring, "dp2"));
  ASSERT_OK(store_->MarkFailedAttempt(expiring, "dp2", "refused", kNoJitter, 0));
  ASSERT_OK(store_->StartAttempt(expiring, "dp3"));
  clock_.AdvanceMs(999);
  ASSERT_OK_AND_ASSIGN(int none, store_->FailExpired());
  EXPECT_EQ(none, 0);
  clock_.AdvanceMs(1);
  ASSERT_OK_AND_ASSIGN(int n, store_->FailExpired());
  EXPECT_EQ(n, 2);
  EXPECT_EQ(Target(expiring, "dp1").state, TargetState::kFailed);
  EXPECT_EQ(Target(expiring, "dp1").last_error, "deadline exceeded");
  EXPECT_EQ(Target(expiring, "dp2").state, TargetState::kFailed);
  EXPECT_EQ(Target(expiring, "dp2").last_error, "deadline exceeded: refused");
  EXPECT_EQ(Target(expiring, "dp3").state, TargetState::kTransferring);
  EXPECT_EQ(Target(other, "dp1").state, TargetState::kPending);
}

// --- Scheduling.

TEST_F(StateStoreTest, RunnableTargetsAreOldestJobFirstOnePerAgent) {
  // Oldest job first, then by agent; an agent appears once; busy agents are skipped.
  std::string a = NewJob({"dp2", "dp1"});
  clock_.AdvanceMs(1);
  std::string b = NewJob({"dp1", "dp3"});
  auto pairs = [&](size_t limit, const std::vector<std::string>& busy) {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<TargetRow>> r = store_->RunnableTargets(limit, busy);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      for (const auto& t : *r) out.push_back((t.job_id == a ? "a/" : "b/") + t.agent);
    }
    return out;
  };
  EXPECT_THAT(pairs(10, {}), ElementsAre("a/dp1", "a/dp2", "b/dp3"));
  EXPECT_THAT(pairs(2, {}), ElementsAre("a/dp1", "a/dp2"));
  EXPECT_THAT(pairs(0, {}), IsEmpty());
  EXPECT_THAT(pairs(10, {"dp1"}), ElementsAre("a/dp2", "b/dp3"));
  ASSERT_OK(store_->StartAttempt(a, "dp1"));  // no longer runnable
  EXPECT_THAT(pairs(10, {}), ElementsAre("a/dp2", "b/dp1", "b/dp3"));
}

TEST_F(StateStoreTest, RunnableTargetsSkipExpiredJobs) {
  // A job past its deadline starts nothing new.
  std::string job = NewJob({"dp1"}, JobPolicy{.deadline_ms = clock_.NowMs() + 10});
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> before, store_->RunnableTargets(10, {}));
  EXPECT_EQ(before.size(), 1u);
  clock_.AdvanceMs(10);
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> after, store_->RunnableTargets(10, {}));
  EXPECT_THAT(after, IsEmpty());
}

TEST_F(StateStoreTest, NextWakeupIsTheEarliestRetry) {
  // No waiting target: none; otherwise the earliest next_attempt_ms.
  ASSERT_OK_AND_ASSIGN(std::optional<int64_t> none, store_->NextWakeupMs());
  EXPECT_FALSE(none.has_value());
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "e", kNoJitter, 0));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "e", kNoJitter, 0));  // +2000
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkFailedAttempt(job, "dp2", "e", kNoJitter, 0));  // +1000
  ASSERT_OK_AND_ASSIGN(std::optional<int64_t> wake, store_->NextWakeupMs());
  EXPECT_EQ(wake, clock_.NowMs() + 1000);
}

TEST_F(StateStoreTest, RecoverInterruptedRequeuesTransfersAfterARestart) {
  // Transfers that died with the previous process become due at once.
  std::string job = NewJob({"dp1", "dp2", "dp3"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->RecordProgress(job, "dp1", 100, 100, true));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkDone(job, "dp2"));
  Reopen();  // the "crash"
  clock_.AdvanceMs(30'000);
  ASSERT_OK_AND_ASSIGN(int n, store_->RecoverInterrupted());
  EXPECT_EQ(n, 1);
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.state, TargetState::kRetryWait);
  EXPECT_EQ(t.next_attempt_ms, clock_.NowMs());
  EXPECT_EQ(t.attempts, 1u);
  EXPECT_EQ(t.bytes_acked, 100u);
  EXPECT_THAT(t.last_error, HasSubstr("interrupted"));
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kDone);
  EXPECT_EQ(Target(job, "dp3").state, TargetState::kPending);
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> runnable, store_->RunnableTargets(10, {}));
  EXPECT_EQ(runnable.size(), 2u);
  ASSERT_OK_AND_ASSIGN(int again, store_->RecoverInterrupted());
  EXPECT_EQ(again, 0);
}

// --- Removal.

TEST_F(StateStoreTest, RemoveAgentCancelsOnlyItsUnfinishedTargets) {
  // The agent's pending/waiting targets are cancelled (kept as history);
  // its done ones and other agents' targets are untouched.
  std::string j1 = NewJob({"dp1", "dp2"});
  std::string j2 = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(j1, "dp1"));
  ASSERT_OK(store_->MarkDone(j1, "dp1"));
  ASSERT_OK(store_->StartAttempt(j2, "dp1"));
  ASSERT_OK(store_->MarkFailedAttempt(j2, "dp1", "e", kNoJitter, 0));
  ASSERT_OK_AND_ASSIGN(int n, store_->RemoveAgent("dp1", "agent removed"));
  EXPECT_EQ(n, 1);
  EXPECT_EQ(Target(j1, "dp1").state, TargetState::kDone);
  EXPECT_EQ(Target(j2, "dp1").state, TargetState::kCancelled);
  EXPECT_EQ(Target(j2, "dp1").last_error, "agent removed");
  EXPECT_EQ(Target(j1, "dp2").state, TargetState::kPending);
  EXPECT_EQ(Target(j2, "dp2").state, TargetState::kPending);
  EXPECT_EQ(store_->GetAgent("dp1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RemoveAgent("dp1", "again").status().code(), absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> runnable, store_->RunnableTargets(10, {}));
  for (const auto& t : runnable) EXPECT_EQ(t.agent, "dp2");
}

TEST_F(StateStoreTest, DeletePackageIsRefusedWhileAJobNeedsIt) {
  // Unfinished targets keep the package; force cancels them and deletes it.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  absl::Status refused = store_->DeletePackage(kPkgId, false).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr(job));
  ASSERT_OK(store_->GetPackageById(kPkgId));
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kPending);

  // The jobs it cancelled are named, so that their running attempts stop.
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> cancelled, store_->DeletePackage(kPkgId, true));
  EXPECT_THAT(cancelled, ::testing::ElementsAre(job));
  EXPECT_EQ(store_->GetPackageById(kPkgId).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kCancelled);
  EXPECT_EQ(Target(job, "dp2").last_error, "package deleted");
  ASSERT_OK_AND_ASSIGN(JobView v, store_->GetJob(job));  // history stays
  EXPECT_EQ(v.job.package, "app@1.0");
  EXPECT_EQ(v.state, JobState::kCancelled);
  EXPECT_EQ(store_->DeletePackage(kPkgId, false).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, DeletePackageSucceedsOnceEveryTargetIsFinal) {
  // A package whose jobs are all finished is deleted without force.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  ASSERT_OK(store_->DeletePackage(kPkgId, false));
  EXPECT_EQ(Target(job, "dp1").state, TargetState::kDone);
}

// --- Change notification.

TEST_F(StateStoreTest, EveryChangeBumpsTheVersionAndReadsDoNot) {
  // Mutations that change rows bump version(); reads and no-ops do not.
  uint64_t v0 = store_->version();
  std::string job = NewJob({"dp1"});
  uint64_t v1 = store_->version();
  EXPECT_GT(v1, v0);
  ASSERT_OK(store_->GetJob(job));
  ASSERT_OK(store_->ListJobs({}));
  ASSERT_OK(store_->RunnableTargets(5, {}));
  ASSERT_OK_AND_ASSIGN(int n, store_->RetryNow(job, ""));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(store_->version(), v1);
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  EXPECT_GT(store_->version(), v1);
}

TEST_F(StateStoreTest, WaitForChangeWakesOnAChange) {
  // A waiter blocked with a long timeout returns once another thread commits.
  uint64_t seen = store_->version();
  uint64_t got = 0;
  std::thread waiter([&] { got = store_->WaitForChange(seen, absl::Hours(1)); });
  ASSERT_OK(store_->AddAgent("dp1", "h:1"));
  waiter.join();
  EXPECT_GT(got, seen);
}

TEST_F(StateStoreTest, WaitForChangeTimesOutWithoutAChange) {
  // With nothing committed, the wait ends at the timeout with the same version.
  uint64_t seen = store_->version();
  EXPECT_EQ(store_->WaitForChange(seen, absl::Milliseconds(20)), seen);
  EXPECT_EQ(store_->WaitForChange(seen, absl::ZeroDuration()), seen);
}

TEST_F(StateStoreTest, ConcurrentUpdatesAreAllApplied) {
  // Several threads recording progress at once lose no update.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      const std::string agent = i % 2 == 0 ? "dp1" : "dp2";
      for (int k = 0; k < 20; ++k) EXPECT_TRUE(store_->RecordProgress(job, agent, 0, 1, false).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Target(job, "dp1").bytes_sent, 40u);
  EXPECT_EQ(Target(job, "dp2").bytes_sent, 40u);
}

}  // namespace
}  // namespace pkgdist

namespace pkgdist {
namespace {

TEST_F(StateStoreTest, ProgressBatchIsOneTransactionAndSkipsStaleTargets) {
  // Progress of every transfer lands together; a target that already left
  // `transferring` keeps its state and bytes.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkDone(job, "dp2"));
  uint64_t before = store_->version();
  ASSERT_OK_AND_ASSIGN(int applied, store_->RecordProgressBatch({
                                        {job, "dp1", 100, 150, 40, true},
                                        {job, "dp2", 10, 10, 10, true},
                                    }));
  EXPECT_EQ(applied, 1);
  EXPECT_EQ(store_->version(), before + 1);
  EXPECT_EQ(Target(job, "dp1").bytes_acked, 100u);
  EXPECT_EQ(Target(job, "dp1").bytes_sent, 150u);
  EXPECT_EQ(Target(job, "dp1").bytes_reused, 40u);
  EXPECT_EQ(Target(job, "dp2").state, TargetState::kDone);
  EXPECT_EQ(Target(job, "dp2").bytes_acked, 300u);
  EXPECT_EQ(Target(job, "dp2").bytes_sent, 0u);
  EXPECT_EQ(Target(job, "dp2").bytes_reused, 0u);
}

TEST_F(StateStoreTest, ReusedBytesAddUpOverBatchesAndAttemptsLikeSentBytes) {
  // bytes_reused is summed over progress reports and over attempts (a retry
  // keeps it, as it keeps bytes_sent); done sets bytes_acked, not it.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ProgressUpdate first{.job_id = job, .agent = "dp1", .bytes_acked = 80,
                       .bytes_sent_delta = 50, .bytes_reused_delta = 30, .made_progress = true};
  ASSERT_OK(store_->RecordProgressBatch({first}));
  ProgressUpdate second = first;
  second.bytes_acked = 200;
  second.bytes_sent_delta = 70;
  second.bytes_reused_delta = 50;
  ASSERT_OK(store_->RecordProgressBatch({second}));
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 200u);
  EXPECT_EQ(t.bytes_sent, 120u);
  EXPECT_EQ(t.bytes_reused, 80u);

  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "link down", kNoJitter, 0.0));
  ASSERT_OK(store_->RetryNow(job, ""));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  t = Target(job, "dp1");
  EXPECT_EQ(t.attempts, 2u);
  EXPECT_EQ(t.bytes_sent, 120u);
  EXPECT_EQ(t.bytes_reused, 80u);

  ProgressUpdate third{.job_id = job, .agent = "dp1", .bytes_acked = 250,
                       .bytes_sent_delta = 10, .bytes_reused_delta = 20, .made_progress = true};
  ASSERT_OK(store_->RecordProgressBatch({third}));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 300u);
  EXPECT_EQ(t.bytes_sent, 130u);
  EXPECT_EQ(t.bytes_reused, 100u);
}

TEST_F(StateStoreTest, FromPeerBytesAddUpOverProgressWritesAndAttemptsLikeReusedBytes) {
  // bytes_from_peer is summed over single and batched progress reports and
  // over attempts, apart from bytes_sent and bytes_reused; every read of
  // the target (job, events, progress rows) carries it.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->RecordProgress(job, "dp1", 60, 10, true, 20, 30));
  ProgressUpdate batch{.job_id = job, .agent = "dp1", .bytes_acked = 150,
                       .bytes_sent_delta = 5, .bytes_reused_delta = 15, .made_progress = true,
                       .bytes_from_peer_delta = 70};
  ASSERT_OK(store_->RecordProgressBatch({batch}));
  TargetRow t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 150u);
  EXPECT_EQ(t.bytes_sent, 15u);
  EXPECT_EQ(t.bytes_reused, 35u);
  EXPECT_EQ(t.bytes_from_peer, 100u);
  EXPECT_EQ(Target(job, "dp2").bytes_from_peer, 0u);
  ASSERT_OK_AND_ASSIGN(EventBatch progress, store_->ReadEvents(0, 0, /*progress=*/true));
  ASSERT_EQ(progress.progress.size(), 1u);
  EXPECT_EQ(progress.progress[0].target->bytes_from_peer, 100u);

  ASSERT_OK(store_->MarkFailedAttempt(job, "dp1", "link down", kNoJitter, 0.0));
  ASSERT_OK(store_->RetryNow(job, ""));
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  EXPECT_EQ(Target(job, "dp1").bytes_from_peer, 100u);
  ASSERT_OK(store_->RecordProgress(job, "dp1", 250, 0, true, 0, 50));
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  t = Target(job, "dp1");
  EXPECT_EQ(t.bytes_acked, 300u);
  EXPECT_EQ(t.bytes_sent, 15u);
  EXPECT_EQ(t.bytes_reused, 35u);
  EXPECT_EQ(t.bytes_from_peer, 150u);
  ASSERT_OK_AND_ASSIGN(EventBatch events, store_->ReadEvents(0, 0));
  ASSERT_FALSE(events.events.empty());
  const EventRow* done = nullptr;
  for (const EventRow& e : events.events) {
    if (e.kind == EventKind::kTargetChanged && e.state == "done") done = &e;
  }
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->target->bytes_from_peer, 150u);
  Reopen();
  EXPECT_EQ(Target(job, "dp1").bytes_from_peer, 150u);
}

TEST_F(StateStoreTest, DeleteJobRefusesAnUnfinishedJob) {
  // Only history can be deleted; a running job names what still runs.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  absl::Status refused = store_->DeleteJob(job);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("dp1 (transferring)"));
  EXPECT_THAT(refused.message(), HasSubstr("dp2 (pending)"));
  ASSERT_OK(store_->Cancel(job, "", "cancelled by operator"));
  ASSERT_OK(store_->DeleteJob(job));
  EXPECT_EQ(store_->GetJob(job).status().code(), absl::StatusCode::kNotFound);
  RawDb raw(path_);
  EXPECT_EQ(raw.Query("SELECT COUNT(*) FROM targets"), "0\n");
  EXPECT_EQ(store_->DeleteJob(job).code(), absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, PruneDeletesOnlyFinishedJobsOlderThanTheCutoff) {
  // Retention: finished and old goes; finished and recent, or unfinished
  // however old, stays.
  std::string old_done = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(old_done, "dp1"));
  ASSERT_OK(store_->MarkDone(old_done, "dp1"));
  std::string old_running = NewJob({"dp2"});
  int64_t cutoff = clock_.NowMs();
  clock_.AdvanceMs(1000);
  std::string new_done = NewJob({"dp3"});
  ASSERT_OK(store_->Cancel(new_done, "", "cancelled by operator"));
  ASSERT_OK_AND_ASSIGN(int n, store_->PruneFinishedJobs(cutoff));
  EXPECT_EQ(n, 1);
  EXPECT_EQ(store_->GetJob(old_done).status().code(), absl::StatusCode::kNotFound);
  ASSERT_OK(store_->GetJob(old_running));
  ASSERT_OK(store_->GetJob(new_done));
}

TEST_F(StateStoreTest, ReadsDoNotWaitForAWriteInProgress) {
  // A status read answers while a store write is stuck waiting for the
  // database (here: another connection holds the write lock), and sees the
  // write once it commits.
  std::string job = NewJob({"dp1"});
  RawDb raw(path_);
  ASSERT_EQ(sqlite3_exec(raw.db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<bool> writing{false}, written{false};
  std::thread writer([&] {
    writing = true;
    EXPECT_TRUE(store_->AddAgent("dp9", "dp9.example:7000").ok());  // waits for raw
    written = true;
  });
  while (!writing) std::this_thread::yield();
  ASSERT_OK_AND_ASSIGN(JobView v, store_->GetJob(job));
  EXPECT_EQ(v.targets.size(), 1u);
  EXPECT_FALSE(written) << "the read should not have waited for the write to finish";
  ASSERT_EQ(sqlite3_exec(raw.db, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  writer.join();
  ASSERT_OK(store_->GetAgent("dp9"));
}

}  // namespace
}  // namespace pkgdist

namespace pkgdist {
namespace {

// --- Sites, agents' own rates and the egress limit (state_store_sites.cc).

// A policy from window texts, each of which must parse.
SiteRow Site(const std::string& name, Rate rate, const std::vector<std::string>& windows = {},
             const std::string& timezone = "UTC", uint32_t max_transfers = 0) {
  SiteRow row;
  row.name = name;
  row.policy.rate = rate;
  for (const std::string& text : windows) {
    absl::StatusOr<Window> w = ParseWindow(text);
    EXPECT_TRUE(w.ok()) << w.status();
    if (w.ok()) row.policy.windows.push_back(*w);
  }
  row.policy.timezone = timezone;
  row.policy.max_transfers = max_transfers;
  return row;
}

AuditEntry SiteAudit(const std::string& method) {
  return AuditEntry{"spiffe://pkgdist.dev/admin/alice", "ipv4:127.0.0.1:1", method, "site=fra"};
}

std::vector<std::string> SiteNames(const std::vector<SiteRow>& rows) {
  std::vector<std::string> out;
  for (const SiteRow& r : rows) out.push_back(r.name);
  return out;
}

TEST_F(StateStoreTest, PutSiteThenGetSiteReturnsTheWholePolicy) {
  // Rate, windows in their order, time zone, max_transfers and the time of
  // the change come back as stored, also after reopening the store.
  clock_.AdvanceMs(1234);
  const int64_t put_ms = clock_.NowMs();
  SiteRow site = Site("fra", Rate::Limited(20'000'000),
                      {"mon-fri 08:00-18:00 paused", "sat,sun 00:00-24:00 5MiB/s"}, "Europe/Berlin", 3);
  AuditEntry audit = SiteAudit("SetSite");
  ASSERT_OK(store_->PutSite(site, &audit));
  EXPECT_TRUE(audit.recorded);
  EXPECT_EQ(audit.result,
            "no policy -> rate 20MB/s, windows [mon-fri 08:00-18:00 paused;"
            "sat,sun 00:00-24:00 5MiB/s], timezone Europe/Berlin, max_transfers 3");
  clock_.AdvanceMs(1000);
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_OK_AND_ASSIGN(SiteRow got, store_->GetSite("fra"));
    EXPECT_EQ(got.name, "fra");
    EXPECT_EQ(got.policy.rate, Rate::Limited(20'000'000));
    EXPECT_EQ(got.policy.windows, site.policy.windows);
    ASSERT_EQ(got.policy.windows.size(), 2u);
    EXPECT_EQ(FormatWindow(got.policy.windows[1]), "sat,sun 00:00-24:00 5MiB/s");
    EXPECT_EQ(got.policy.timezone, "Europe/Berlin");
    EXPECT_EQ(got.policy.max_transfers, 3u);
    EXPECT_EQ(got.updated_ms, put_ms);
    Reopen();
  }
}

TEST_F(StateStoreTest, PutSiteReplacesTheWholePolicy) {
  // A second PutSite is the new policy entire: windows, zone and
  // max_transfers it leaves at their defaults are reset, not kept.
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Limited(20'000'000), {"daily 08:00-18:00 paused"},
                                 "Europe/Berlin", 3)));
  clock_.AdvanceMs(5000);
  AuditEntry audit = SiteAudit("SetSite");
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Paused()), &audit));
  EXPECT_EQ(audit.result,
            "rate 20MB/s, windows [daily 08:00-18:00 paused], timezone Europe/Berlin, "
            "max_transfers 3 -> rate paused, windows [], timezone UTC, max_transfers 0");
  ASSERT_OK_AND_ASSIGN(SiteRow got, store_->GetSite("fra"));
  EXPECT_EQ(got.policy.rate, Rate::Paused());
  EXPECT_THAT(got.policy.windows, IsEmpty());
  EXPECT_EQ(got.policy.timezone, "UTC");
  EXPECT_EQ(got.policy.max_transfers, 0u);
  EXPECT_EQ(got.updated_ms, clock_.NowMs());
  ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> all, store_->ListSites());
  EXPECT_EQ(all.size(), 1u);
}

TEST_F(StateStoreTest, AnUnchangedPutSiteWritesNoEventAndKeepsUpdatedMs) {
  // Storing the policy a site already has changes no row and logs no
  // event; the audit entry is still written, saying before and after.
  SiteRow site = Site("fra", Rate::Limited(10'000'000), {"mon-fri 08:00-18:00 paused"});
  ASSERT_OK(store_->PutSite(site));
  const int64_t put_ms = clock_.NowMs();
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  const uint64_t version = store_->version();
  clock_.AdvanceMs(1000);
  ASSERT_OK(store_->PutSite(site));
  EXPECT_EQ(store_->version(), version) << "a no-op PutSite changed a row";
  AuditEntry audit = SiteAudit("SetSite");
  ASSERT_OK(store_->PutSite(site, &audit));
  EXPECT_TRUE(audit.recorded);
  const std::string policy =
      "rate 10MB/s, windows [mon-fri 08:00-18:00 paused], timezone UTC, max_transfers 0";
  EXPECT_EQ(audit.result, policy + " -> " + policy);
  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  EXPECT_THAT(after.events, IsEmpty());
  ASSERT_OK_AND_ASSIGN(SiteRow got, store_->GetSite("fra"));
  EXPECT_EQ(got.updated_ms, put_ms);
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRow> records, store_->ListAudit({}));
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].method, "SetSite");
  EXPECT_EQ(records[0].code, "OK");
  EXPECT_EQ(records[0].message, policy + " -> " + policy);
}

TEST_F(StateStoreTest, AChangedSiteWritesOneLimitsChangedEventNamingTheSite) {
  // Each change of a policy is one limits_changed event whose detail names
  // the site and its new policy; no agent or job is set.
  EXPECT_EQ(EventKindName(EventKind::kLimitsChanged), "limits_changed");
  ASSERT_OK_AND_ASSIGN(EventKind parsed, ParseEventKind("limits_changed"));
  EXPECT_EQ(parsed, EventKind::kLimitsChanged);
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Limited(10'000'000))));
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Limited(10'000'000), {"daily 22:00-06:00 unlimited"},
                                 "UTC", 2)));
  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(after.events.size(), 2u);
  for (const EventRow& e : after.events) {
    EXPECT_EQ(e.kind, EventKind::kLimitsChanged);
    EXPECT_EQ(e.agent, "");
    EXPECT_EQ(e.job_id, "");
    EXPECT_FALSE(e.target.has_value());
  }
  EXPECT_EQ(after.events[0].detail,
            "site fra: rate 10MB/s, windows [], timezone UTC, max_transfers 0");
  EXPECT_EQ(after.events[1].detail,
            "site fra: rate 10MB/s, windows [daily 22:00-06:00 unlimited], timezone UTC, "
            "max_transfers 2");
  Reopen();  // stored, not only made
  ASSERT_OK_AND_ASSIGN(EventBatch stored, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(stored.events.size(), 2u);
  EXPECT_EQ(stored.events[1].kind, EventKind::kLimitsChanged);
  EXPECT_EQ(stored.events[1].detail, after.events[1].detail);
}

TEST_F(StateStoreTest, ASiteRelayIsStoredWithThePolicyAndNamedInItsText) {
  // The relay comes back from GetSite and ListSites, also after reopening;
  // setting or clearing it is a change (audit, event) that names it as
  // relay=NAME; "" is auto and named nowhere; a bad name is refused.
  AuditEntry audit = SiteAudit("SetSite");
  SiteRow site = Site("fra", Rate::Limited(10'000'000));
  site.relay = "fra1";
  ASSERT_OK(store_->PutSite(site, &audit));
  const std::string with_relay =
      "rate 10MB/s, windows [], timezone UTC, max_transfers 0, relay=fra1";
  EXPECT_EQ(audit.result, "no policy -> " + with_relay);
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_OK_AND_ASSIGN(SiteRow got, store_->GetSite("fra"));
    EXPECT_EQ(got.relay, "fra1");
    ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> all, store_->ListSites());
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].relay, "fra1");
    Reopen();
  }
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  ASSERT_FALSE(before.events.empty());
  EXPECT_EQ(before.events.back().detail, "site fra: " + with_relay);

  site.relay.clear();
  AuditEntry cleared = SiteAudit("SetSite");
  ASSERT_OK(store_->PutSite(site, &cleared));
  EXPECT_EQ(cleared.result,
            with_relay + " -> rate 10MB/s, windows [], timezone UTC, max_transfers 0");
  ASSERT_OK_AND_ASSIGN(SiteRow got, store_->GetSite("fra"));
  EXPECT_EQ(got.relay, "");
  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(after.events.size(), 1u);
  EXPECT_EQ(after.events[0].detail, "site fra: rate 10MB/s, windows [], timezone UTC, max_transfers 0");

  site.relay = "a/b";
  absl::Status bad = store_->PutSite(site);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("relay \"a/b\""));
  ASSERT_OK_AND_ASSIGN(got, store_->GetSite("fra"));
  EXPECT_EQ(got.relay, "");
}

TEST_F(StateStoreTest, ListSitesIsSortedByName) {
  // Sites come back by name whatever the order their policies were stored in.
  ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> none, store_->ListSites());
  EXPECT_THAT(none, IsEmpty());
  ASSERT_OK(store_->PutSite(Site("muc", Rate::Paused())));
  ASSERT_OK(store_->PutSite(Site("ber", Rate::Unlimited())));
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Limited(1000))));
  ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> all, store_->ListSites());
  EXPECT_THAT(SiteNames(all), ElementsAre("ber", "fra", "muc"));
  EXPECT_EQ(all[0].policy.rate, Rate::Unlimited());
  EXPECT_EQ(all[1].policy.rate, Rate::Limited(1000));
  EXPECT_EQ(all[2].policy.rate, Rate::Paused());
}

TEST_F(StateStoreTest, GetSiteOfASiteWithoutPolicyIsNotFoundAndABadNameIsRefused) {
  // NOT_FOUND names the site; PutSite refuses a name that is not one and
  // stores nothing.
  absl::Status missing = store_->GetSite("ber").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("ber"));
  ASSERT_OK(store_->AddAgent("dp1", "h:1", nullptr, Labels{{"site", "ber"}}));
  EXPECT_EQ(store_->GetSite("ber").status().code(), absl::StatusCode::kNotFound)
      << "a label alone is no policy";
  AuditEntry audit = SiteAudit("SetSite");
  absl::Status bad = store_->PutSite(Site("a/b", Rate::Paused()), &audit);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("a/b"));
  EXPECT_FALSE(audit.recorded);
  EXPECT_EQ(store_->PutSite(Site("", Rate::Paused())).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> all, store_->ListSites());
  EXPECT_THAT(all, IsEmpty());
}

TEST_F(StateStoreTest, ASiteRowEditedIntoNonsenseIsDataLossUntilReplaced) {
  // A stored rate or window that does not parse is reported naming the
  // site, never read as some other limit; PutSite replaces it.
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Paused())));
  {
    RawDb raw(path_);
    raw.Query("UPDATE sites SET rate = '10Mb/s' WHERE name = 'fra'");
  }
  absl::Status bad = store_->GetSite("fra").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss) << bad;
  EXPECT_THAT(bad.message(), HasSubstr("site fra"));
  EXPECT_EQ(store_->ListSites().status().code(), absl::StatusCode::kDataLoss);
  // The engine's load skips it and says why; the other sites still load.
  ASSERT_OK(store_->PutSite(Site("muc", Rate::Limited(1000))));
  std::vector<std::string> unreadable;
  ASSERT_OK_AND_ASSIGN(std::vector<SiteRow> readable, store_->ListSites(&unreadable));
  ASSERT_EQ(readable.size(), 1u);
  EXPECT_EQ(readable[0].name, "muc");
  ASSERT_EQ(unreadable.size(), 1u);
  EXPECT_THAT(unreadable[0], HasSubstr("site fra"));
  AuditEntry audit = SiteAudit("SetSite");
  ASSERT_OK(store_->PutSite(Site("fra", Rate::Limited(1000)), &audit));
  EXPECT_THAT(audit.result, HasSubstr("site fra in the state database"));
  ASSERT_OK_AND_ASSIGN(SiteRow repaired, store_->GetSite("fra"));
  EXPECT_EQ(repaired.policy.rate, Rate::Limited(1000));
  {
    RawDb raw(path_);
    raw.Query("UPDATE sites SET windows = 'mon-fry 08:00-18:00 paused' WHERE name = 'fra'");
  }
  EXPECT_EQ(store_->GetSite("fra").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(StateStoreTest, LabelledSitesListsEachSiteNamedByASiteLabelOnce) {
  // Every value of a `site` label, once and sorted; agents without one,
  // keys that merely contain "site", and policies without agents do not count.
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> none, store_->LabelledSites());
  EXPECT_THAT(none, IsEmpty());
  ASSERT_OK(store_->AddAgent("dp1", "h:1", nullptr, Labels{{"site", "muc"}}));
  ASSERT_OK(store_->AddAgent("dp2", "h:2", nullptr, Labels{{"site", "fra"}}));
  ASSERT_OK(store_->AddAgent("dp3", "h:3", nullptr, Labels{{"site", "fra"}, {"tier", "edge"}}));
  ASSERT_OK(store_->AddAgent("dp4", "h:4", nullptr, Labels{{"rack", "r1"}, {"site", "ams"}}));
  ASSERT_OK(store_->AddAgent("dp5", "h:5", nullptr, Labels{{"xsite", "a"}}));
  ASSERT_OK(store_->AddAgent("dp6", "h:6", nullptr, Labels{{"sitex", "b"}, {"tier", "core"}}));
  ASSERT_OK(store_->AddAgent("dp7", "h:7"));
  ASSERT_OK(store_->PutSite(Site("lon", Rate::Paused())));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> sites, store_->LabelledSites());
  EXPECT_THAT(sites, ElementsAre("ams", "fra", "muc"));
  ASSERT_OK(store_->SetAgentLabels("dp1", {}, {"site"}).status());
  ASSERT_OK_AND_ASSIGN(sites, store_->LabelledSites());
  EXPECT_THAT(sites, ElementsAre("ams", "fra"));
}

TEST_F(StateStoreTest, EgressRateIsUnlimitedUntilSetAndSurvivesReopening) {
  // The default is no limit; a set rate is stored (one limits_changed
  // event per change, none for the same rate again) and read back after
  // reopening; the audit result says before and after.
  ASSERT_OK_AND_ASSIGN(Rate rate, store_->GetEgressRate());
  EXPECT_EQ(rate, Rate::Unlimited());
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  AuditEntry audit = SiteAudit("SetEgress");
  ASSERT_OK(store_->SetEgressRate(Rate::Limited(100'000'000), &audit));
  EXPECT_TRUE(audit.recorded);
  EXPECT_EQ(audit.result, "egress unlimited -> 100MB/s");
  ASSERT_OK_AND_ASSIGN(rate, store_->GetEgressRate());
  EXPECT_EQ(rate, Rate::Limited(100'000'000));
  Reopen();
  ASSERT_OK_AND_ASSIGN(rate, store_->GetEgressRate());
  EXPECT_EQ(rate, Rate::Limited(100'000'000));

  AuditEntry same = SiteAudit("SetEgress");
  ASSERT_OK(store_->SetEgressRate(Rate::Limited(100'000'000), &same));
  EXPECT_EQ(same.result, "egress 100MB/s -> 100MB/s");
  AuditEntry pause = SiteAudit("SetEgress");
  ASSERT_OK(store_->SetEgressRate(Rate::Paused(), &pause));
  EXPECT_EQ(pause.result, "egress 100MB/s -> paused");
  ASSERT_OK_AND_ASSIGN(rate, store_->GetEgressRate());
  EXPECT_EQ(rate, Rate::Paused());

  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(after.events.size(), 2u);
  EXPECT_EQ(after.events[0].kind, EventKind::kLimitsChanged);
  EXPECT_EQ(after.events[0].detail, "egress: rate 100MB/s");
  EXPECT_EQ(after.events[1].kind, EventKind::kLimitsChanged);
  EXPECT_EQ(after.events[1].detail, "egress: rate paused");
  ASSERT_OK_AND_ASSIGN(std::vector<AuditRow> records, store_->ListAudit({}));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[2].message, "egress 100MB/s -> paused");
}

TEST_F(StateStoreTest, SetAgentRateStoresTheAgentsOwnLimit) {
  // Unknown agents are NOT_FOUND (nothing recorded); a known one gets the
  // rate (shown by GetAgent and ListAgents, kept by AddAgent and
  // reopening) and an agent_updated event "rate ..." per change.
  AuditEntry missing = SiteAudit("SetAgentRate");
  absl::Status unknown = store_->SetAgentRate("dp9", Rate::Paused(), &missing).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.message(), HasSubstr("dp9"));
  EXPECT_FALSE(missing.recorded);

  ASSERT_OK(store_->AddAgent("dp1", "h:1"));
  ASSERT_OK_AND_ASSIGN(AgentRow fresh, store_->GetAgent("dp1"));
  EXPECT_EQ(fresh.rate, Rate::Unlimited());
  ASSERT_OK_AND_ASSIGN(EventBatch before, store_->ReadEvents(0, 0));
  AuditEntry audit = SiteAudit("SetAgentRate");
  ASSERT_OK_AND_ASSIGN(AgentRow row, store_->SetAgentRate("dp1", Rate::Limited(5'000'000), &audit));
  EXPECT_EQ(row.name, "dp1");
  EXPECT_EQ(row.rate, Rate::Limited(5'000'000));
  EXPECT_TRUE(audit.recorded);
  EXPECT_EQ(audit.result, "rate unlimited -> 5MB/s");
  ASSERT_OK_AND_ASSIGN(AgentRow stored, store_->GetAgent("dp1"));
  EXPECT_EQ(stored.rate, Rate::Limited(5'000'000));
  ASSERT_OK_AND_ASSIGN(EventBatch after, store_->ReadEvents(before.newest, 0));
  ASSERT_EQ(after.events.size(), 1u);
  EXPECT_EQ(after.events[0].kind, EventKind::kAgentUpdated);
  EXPECT_EQ(after.events[0].agent, "dp1");
  EXPECT_EQ(after.events[0].address, "h:1");
  EXPECT_EQ(after.events[0].detail, "rate 5MB/s");

  AuditEntry same = SiteAudit("SetAgentRate");
  ASSERT_OK(store_->SetAgentRate("dp1", Rate::Limited(5'000'000), &same));
  EXPECT_EQ(same.result, "rate 5MB/s -> 5MB/s");
  ASSERT_OK_AND_ASSIGN(EventBatch unchanged, store_->ReadEvents(after.newest, 0));
  EXPECT_THAT(unchanged.events, IsEmpty());

  ASSERT_OK(store_->AddAgent("dp1", "h:2", nullptr, Labels{{"site", "fra"}}));
  Reopen();
  ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> agents, store_->ListAgents());
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].address, "h:2");
  EXPECT_EQ(agents[0].rate, Rate::Limited(5'000'000));
  ASSERT_OK_AND_ASSIGN(AgentRow paused, store_->SetAgentRate("dp1", Rate::Paused()));
  EXPECT_EQ(paused.rate, Rate::Paused());
  EXPECT_EQ(paused.labels, (Labels{{"site", "fra"}}));
}

TEST_F(StateStoreTest, RunnableTargetsSkipWhatAdmitRefusesAndTryTheAgentsNextTarget) {
  // A target `admit` refuses is skipped without taking its agent: the
  // agent's target in a later job may still start. The callback sees each
  // target's job kind.
  std::string a = NewJob({"dp1", "dp2"});
  clock_.AdvanceMs(1);
  ASSERT_OK(store_->AddAgent("dp3", "dp3.example:7000"));
  ASSERT_OK_AND_ASSIGN(JobRow removal,
                       store_->CreateJob(JobKind::kRemove, kPkgId, {"dp1", "dp3"}, {}, 0));
  const std::string b = removal.id;
  std::vector<std::string> asked;
  auto name = [&](const TargetRow& t) { return (t.job_id == a ? "a/" : "b/") + t.agent; };
  StateStore::AdmitFn refuse_a_dp1 = [&](const TargetRow& t, JobKind kind) {
    asked.push_back(name(t) + " " + std::string(JobKindName(kind)));
    return !(t.job_id == a && t.agent == "dp1");
  };
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> admitted, store_->RunnableTargets(10, {}, refuse_a_dp1));
  std::vector<std::string> names;
  for (const TargetRow& t : admitted) names.push_back(name(t));
  EXPECT_THAT(names, ElementsAre("a/dp2", "b/dp1", "b/dp3"));
  EXPECT_THAT(asked, ElementsAre("a/dp1 distribute", "a/dp2 distribute", "b/dp1 remove",
                                 "b/dp3 remove"));

  // The limit counts admitted targets only.
  asked.clear();
  ASSERT_OK_AND_ASSIGN(admitted, store_->RunnableTargets(1, {}, refuse_a_dp1));
  ASSERT_EQ(admitted.size(), 1u);
  EXPECT_EQ(name(admitted[0]), "a/dp2");
}

TEST_F(StateStoreTest, AdmitIsAskedInOrderOnlyForAgentsStillFree) {
  // Busy agents and agents already given a target are not asked about, so
  // a callback that counts what it admits (at most one here) counts right.
  std::string a = NewJob({"dp1", "dp2"});
  clock_.AdvanceMs(1);
  std::string b = NewJob({"dp1", "dp3"});
  std::vector<std::string> asked;
  int admitted_count = 0;
  StateStore::AdmitFn one = [&](const TargetRow& t, JobKind) {
    asked.push_back((t.job_id == a ? "a/" : "b/") + t.agent);
    if (admitted_count >= 1) return false;
    ++admitted_count;
    return true;
  };
  ASSERT_OK_AND_ASSIGN(std::vector<TargetRow> admitted, store_->RunnableTargets(10, {"dp2"}, one));
  ASSERT_EQ(admitted.size(), 1u);
  EXPECT_EQ(admitted[0].job_id, a);
  EXPECT_EQ(admitted[0].agent, "dp1");
  EXPECT_THAT(asked, ElementsAre("a/dp1", "b/dp3"));
  // Without a callback everything runnable is returned, as before.
  ASSERT_OK_AND_ASSIGN(admitted, store_->RunnableTargets(10, {}));
  EXPECT_EQ(admitted.size(), 3u);
}

}  // namespace
}  // namespace pkgdist
