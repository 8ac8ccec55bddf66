// The state store's event log and audit trail: every change writes its
// events (and its audit record, when given one) in its own transaction,
// a failed change writes neither, sequence numbers never repeat or skip,
// and the history and the audit trail are bounded as configured.
#include <sqlite3.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/state_store.h"
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

#define ASSERT_OK(expr)                           \
  do {                                            \
    const absl::Status status_ = (expr);          \
    ASSERT_TRUE(status_.ok()) << status_;         \
  } while (0)

constexpr char kPkgId[] = "1111111111111111111111111111111111111111111111111111111111111111";
constexpr BackoffPolicy kNoJitter{.initial_ms = 1000, .max_ms = 60'000, .jitter = 0.0};
constexpr int64_t kDayMs = 86'400'000;

// "kind state" per event, e.g. "target_changed transferring".
std::vector<std::string> Describe(const std::vector<EventRow>& events) {
  std::vector<std::string> out;
  for (const EventRow& e : events) {
    std::string line(EventKindName(e.kind));
    if (!e.agent.empty()) absl::StrAppend(&line, " ", e.agent);
    if (!e.state.empty()) absl::StrAppend(&line, " ", e.state);
    out.push_back(std::move(line));
  }
  return out;
}

AuditEntry Entry(const std::string& who, const std::string& method) {
  return AuditEntry{absl::StrCat("spiffe://pkgdist.dev/", who), "ipv4:127.0.0.1:1", method,
                    "req=1"};
}

class StateStoreLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("state_store_log_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    path_ = dir_->path() + "/state.db";
    Reopen();
  }

  void Reopen(StoreOptions options = {}) {
    store_.reset();
    absl::StatusOr<std::unique_ptr<StateStore>> s = StateStore::Open(path_, &clock_, options);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  std::string NewJob(const std::vector<std::string>& agents, JobPolicy policy = {}) {
    for (const auto& a : agents) EXPECT_TRUE(store_->AddAgent(a, a + ".example:7000").ok());
    EXPECT_TRUE(store_->AddPackage(PackageRow{kPkgId, "app", "1.0", 300, 2, 3, 0}, "m").ok());
    absl::StatusOr<JobRow> job =
        store_->CreateJob(JobKind::kDistribute, kPkgId, agents, policy, 300);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id : "";
  }

  // The events after `after`, checked to be numbered without gaps.
  std::vector<EventRow> EventsAfter(int64_t after) {
    absl::StatusOr<EventBatch> b = store_->ReadEvents(after, 0);
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return {};
    for (size_t i = 1; i < b->events.size(); ++i) {
      EXPECT_EQ(b->events[i].seq, b->events[i - 1].seq + 1) << "a gap in the sequence";
    }
    return b->events;
  }

  std::vector<AuditRow> Audit(AuditFilter filter = {}, int64_t after = 0, size_t limit = 0) {
    absl::StatusOr<std::vector<AuditRow>> rows = store_->ListAudit(filter, after, limit);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : std::vector<AuditRow>{};
  }

  std::optional<TempDir> dir_;
  std::string path_;
  FakeClock clock_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StateStoreLogTest, EveryTransitionOfAJobWritesItsEvents) {
  // A job's creation, each target's attempts and its end, in commit order.
  std::string job = NewJob({"dp1", "dp2"});
  int64_t mark = store_->newest_event();
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_TRUE(store_->MarkFailedAttempt(job, "dp1", "boom", kNoJitter, 0.0).ok());
  ASSERT_OK(store_->StartAttempt(job, "dp2"));
  ASSERT_OK(store_->MarkDone(job, "dp2"));
  clock_.AdvanceMs(1000);
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->MarkDone(job, "dp1"));

  std::vector<EventRow> all = EventsAfter(0);
  EXPECT_THAT(Describe(all),
              ElementsAre("agent_added dp1", "agent_added dp2", "package_imported",
                          "job_created pending", "target_changed dp1 pending",
                          "target_changed dp2 pending", "target_changed dp1 transferring",
                          "target_changed dp1 retry_wait", "target_changed dp2 transferring",
                          "target_changed dp2 done", "target_changed dp1 transferring",
                          "target_changed dp1 done", "job_finished complete"));
  std::vector<EventRow> after = EventsAfter(mark);
  ASSERT_EQ(after.size(), 7u);
  const EventRow& failed = after[1];
  ASSERT_TRUE(failed.target.has_value());
  EXPECT_EQ(failed.job_id, job);
  EXPECT_EQ(failed.package, "app@1.0");
  EXPECT_EQ(failed.target->attempts, 1u);
  EXPECT_EQ(failed.target->last_error, "boom");
  EXPECT_EQ(failed.target->next_attempt_ms, failed.time_ms + 1000);
  EXPECT_EQ(after.back().job_id, job);
  EXPECT_EQ(store_->newest_event(), after.back().seq);
}

TEST_F(StateStoreLogTest, AFailedChangeWritesNoEvent) {
  // The change and its events commit or roll back together.
  std::string job = NewJob({"dp1"});
  int64_t before = store_->newest_event();
  EXPECT_EQ(store_->MarkDone(job, "dp1").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->CreateJob(JobKind::kDistribute, kPkgId, {"dp1", "nope"}, {}, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->RemoveAgent("nope", "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(EventsAfter(before), IsEmpty());
  EXPECT_EQ(store_->newest_event(), before);
}

TEST_F(StateStoreLogTest, ProgressIsNotStoredButReadWithTheEvents) {
  // Progress writes no event; ReadEvents with progress returns each
  // transferring target as of the same snapshot.
  std::string job = NewJob({"dp1", "dp2"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  int64_t before = store_->newest_event();
  ASSERT_TRUE(store_->RecordProgressBatch({{job, "dp1", 120, 150, 90, true}}).ok());
  EXPECT_EQ(store_->newest_event(), before);
  absl::StatusOr<EventBatch> b = store_->ReadEvents(before, 10, true);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(b->events, IsEmpty());
  ASSERT_EQ(b->progress.size(), 1u);
  EXPECT_EQ(b->progress[0].kind, EventKind::kTargetProgress);
  EXPECT_EQ(b->progress[0].seq, before);
  EXPECT_EQ(b->progress[0].agent, "dp1");
  EXPECT_EQ(b->progress[0].target->bytes_acked, 120u);
  EXPECT_EQ(b->progress[0].target->bytes_sent, 150u);
  EXPECT_EQ(b->progress[0].target->bytes_reused, 90u);
}

TEST_F(StateStoreLogTest, ATargetEventKeepsTheBytesSentAndReusedOfItsTarget) {
  // A target_changed event stores the row's byte counters as of the change.
  std::string job = NewJob({"dp1"});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_OK(store_->RecordProgress(job, "dp1", 200, 120, true, 80));
  int64_t before = store_->newest_event();
  ASSERT_OK(store_->MarkDone(job, "dp1"));
  std::vector<EventRow> after = EventsAfter(before);
  ASSERT_THAT(Describe(after), ElementsAre("target_changed dp1 done", "job_finished complete"));
  ASSERT_TRUE(after[0].target.has_value());
  EXPECT_EQ(after[0].target->bytes_acked, 300u);
  EXPECT_EQ(after[0].target->bytes_sent, 120u);
  EXPECT_EQ(after[0].target->bytes_reused, 80u);
  EXPECT_EQ(after[0].detail, "");
}

TEST_F(StateStoreLogTest, CancelRemoveDeleteRetryAndRecoveryWriteTheirEvents) {
  // Every other way a target or job changes leaves its event; a job that
  // is reopened by a retry finishes (and says so) again.
  std::string a = NewJob({"dp1", "dp2"}, JobPolicy{.max_attempts = 1});
  ASSERT_OK(store_->StartAttempt(a, "dp1"));
  ASSERT_TRUE(store_->MarkFailedAttempt(a, "dp1", "boom", kNoJitter, 0.0).ok());
  int64_t mark = store_->newest_event();
  ASSERT_TRUE(store_->RemoveAgent("dp2", "agent removed").ok());
  ASSERT_TRUE(store_->RetryNow(a, "").ok());
  ASSERT_OK(store_->StartAttempt(a, "dp1"));
  ASSERT_TRUE(store_->RecoverInterrupted().ok());
  ASSERT_TRUE(store_->Cancel(a, "", "cancelled by operator").ok());
  ASSERT_OK(store_->DeleteJob(a));
  ASSERT_TRUE(store_->DeletePackage(kPkgId, false).ok());
  EXPECT_THAT(Describe(EventsAfter(mark)),
              ElementsAre("target_changed dp2 cancelled", "agent_removed dp2",
                          "job_finished failed", "target_changed dp1 retry_wait",
                          "target_changed dp1 transferring", "target_changed dp1 retry_wait",
                          "target_changed dp1 cancelled", "job_finished cancelled",
                          "job_deleted", "package_deleted"));
}

TEST_F(StateStoreLogTest, DeadlinesAgentWakeUpsAndRetentionWriteTheirEvents) {
  // FailExpired, WakeAgent and PruneFinishedJobs are changes too.
  std::string job = NewJob({"dp1", "dp2"}, JobPolicy{.deadline_ms = clock_.NowMs() + 10'000});
  ASSERT_OK(store_->StartAttempt(job, "dp1"));
  ASSERT_TRUE(store_->MarkFailedAttempt(job, "dp1", "boom", kNoJitter, 0.0).ok());
  int64_t mark = store_->newest_event();
  ASSERT_OK(store_->WakeAgent("dp1"));
  clock_.AdvanceMs(10'000);
  ASSERT_TRUE(store_->FailExpired().ok());
  clock_.AdvanceMs(kDayMs);
  ASSERT_TRUE(store_->PruneFinishedJobs(clock_.NowMs()).ok());
  std::vector<EventRow> events = EventsAfter(mark);
  EXPECT_THAT(Describe(events),
              ElementsAre("target_changed dp1 retry_wait", "target_changed dp1 failed",
                          "target_changed dp2 failed", "job_finished failed", "job_deleted"));
  EXPECT_EQ(events.back().detail, "retention");
  EXPECT_EQ(events.back().package, "app@1.0");
}

TEST_F(StateStoreLogTest, AgentsAndPackagesWriteEventsOnlyWhenTheyChange) {
  // Registering the same address again and importing the same package
  // again change nothing and say nothing.
  ASSERT_OK(store_->AddAgent("dp1", "a:1"));
  ASSERT_OK(store_->AddAgent("dp1", "a:1"));
  ASSERT_OK(store_->AddAgent("dp1", "b:2"));
  PackageRow p{kPkgId, "app", "1.0", 300, 2, 3, 0};
  ASSERT_OK(store_->AddPackage(p, "m"));
  ASSERT_OK(store_->AddPackage(p, "m"));
  ASSERT_OK(store_->SetPackageSignature(kPkgId, "sig", "key K sequence 7"));
  std::vector<EventRow> events = EventsAfter(0);
  EXPECT_THAT(Describe(events), ElementsAre("agent_added dp1", "agent_updated dp1",
                                            "package_imported", "package_signed"));
  EXPECT_EQ(events[1].address, "b:2");
  EXPECT_EQ(events[3].package_id, kPkgId);
  EXPECT_EQ(events[3].detail, "key K sequence 7");
}

TEST_F(StateStoreLogTest, TheHistoryKeepsTheNewestEventsAndNeverReusesASequence) {
  // With a history of 5 only the newest 5 stay; numbering goes on across
  // a reopen, and a smaller history takes effect at open.
  Reopen(StoreOptions{.event_history = 5});
  for (int i = 0; i < 12; ++i) ASSERT_OK(store_->AddAgent("dp1", absl::StrCat("h:", i + 1)));
  absl::StatusOr<EventBatch> b = store_->ReadEvents(0, 0);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->oldest, 8);
  EXPECT_EQ(b->newest, 12);
  ASSERT_EQ(b->events.size(), 5u);
  EXPECT_EQ(b->events.front().seq, 8);
  Reopen(StoreOptions{.event_history = 2});
  EXPECT_EQ(store_->newest_event(), 12);
  ASSERT_OK(store_->AddAgent("dp1", "h:100"));
  std::vector<EventRow> kept = EventsAfter(0);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].seq, 12);
  EXPECT_EQ(kept[1].seq, 13);
}

TEST_F(StateStoreLogTest, AnAuditedChangeWritesItsRecordInTheSameTransaction) {
  // OK with the method's result; a failed change writes no record (the
  // caller records it); and if the record cannot be written, neither is
  // the change.
  AuditEntry add = Entry("admin/alice", "AddAgent");
  ASSERT_OK(store_->AddAgent("dp1", "a:1", &add));
  EXPECT_TRUE(add.recorded);
  AuditEntry remove = Entry("admin/bob", "RemoveAgent");
  EXPECT_EQ(store_->RemoveAgent("nope", "x", &remove).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(remove.recorded);
  ASSERT_OK(store_->RecordAudit(remove, absl::NotFoundError("agent nope is not registered")));
  EXPECT_TRUE(remove.recorded);
  std::vector<AuditRow> rows = Audit();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].identity, "spiffe://pkgdist.dev/admin/alice");
  EXPECT_EQ(rows[0].method, "AddAgent");
  EXPECT_EQ(rows[0].code, "OK");
  EXPECT_EQ(rows[0].message, "registered");
  EXPECT_EQ(rows[1].code, "NOT_FOUND");
  EXPECT_EQ(rows[1].message, "agent nope is not registered");

  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "DROP TABLE audit", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close_v2(raw);
  AuditEntry again = Entry("admin/alice", "AddAgent");
  EXPECT_FALSE(store_->AddAgent("dp2", "a:2", &again).ok());
  EXPECT_EQ(store_->GetAgent("dp2").status().code(), absl::StatusCode::kNotFound)
      << "the change committed without its audit record";
}

TEST_F(StateStoreLogTest, ListAuditFiltersByCallerAndTimeAndPages) {
  // --who takes a name, KIND/NAME or a full ID; --since a time; pages
  // continue after the last sequence.
  for (const char* who : {"admin/alice", "admin/bob", "agent/alice", "admin/alice"}) {
    AuditEntry e = Entry(who, "CancelJob");
    ASSERT_OK(store_->RecordAudit(e, absl::OkStatus()));
    clock_.AdvanceMs(1000);
  }
  auto seqs = [](const std::vector<AuditRow>& rows) {
    std::vector<int64_t> out;
    for (const AuditRow& r : rows) out.push_back(r.seq);
    return out;
  };
  EXPECT_THAT(seqs(Audit({.who = "alice"})), ElementsAre(1, 4));
  EXPECT_THAT(seqs(Audit({.who = "admin/alice"})), ElementsAre(1, 4));
  EXPECT_THAT(seqs(Audit({.who = "agent/alice"})), ElementsAre(3));
  EXPECT_THAT(seqs(Audit({.who = "spiffe://pkgdist.dev/admin/bob"})), ElementsAre(2));
  EXPECT_THAT(seqs(Audit({.who = "spiffe://other/admin/bob"})), IsEmpty());
  EXPECT_THAT(seqs(Audit({.who = "lice"})), IsEmpty());
  EXPECT_THAT(seqs(Audit({.since_ms = clock_.NowMs() - 2000})), ElementsAre(3, 4));
  EXPECT_THAT(seqs(Audit({}, 1, 2)), ElementsAre(2, 3));
}

TEST_F(StateStoreLogTest, AuditRecordsOlderThanTheRetentionAreDeleted) {
  // Kept for the retention (and --job-retention does not touch them); 0
  // keeps them forever.
  Reopen(StoreOptions{.audit_retention_ms = 10 * kDayMs});
  AuditEntry first = Entry("admin/alice", "AddAgent");
  ASSERT_OK(store_->AddAgent("dp1", "a:1", &first));
  std::string job = NewJob({"dp1"});
  ASSERT_TRUE(store_->Cancel(job, "", "x").ok());
  ASSERT_TRUE(store_->PruneFinishedJobs(clock_.NowMs() + 1).ok());
  EXPECT_EQ(Audit().size(), 1u);
  clock_.AdvanceMs(10 * kDayMs + 1);
  AuditEntry second = Entry("admin/bob", "AddAgent");
  ASSERT_OK(store_->AddAgent("dp2", "a:2", &second));
  std::vector<AuditRow> rows = Audit();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_THAT(rows[0].identity, HasSubstr("bob"));
}

TEST_F(StateStoreLogTest, AVersionTwoDatabaseGetsTheLogsAndKeepsItsRows) {
  // Migration 3 adds the tables to a database of the previous schema.
  store_.reset();
  ASSERT_EQ(unlink(path_.c_str()), 0);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  std::span<const Migration> all = StateStoreMigrations();
  ASSERT_TRUE(ApplyMigrations(raw, all.first(2)).ok());
  ASSERT_EQ(sqlite3_exec(raw, "INSERT INTO agents VALUES('dp1', 'a:1', 1)", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close_v2(raw);
  Reopen();
  EXPECT_TRUE(store_->GetAgent("dp1").ok());
  EXPECT_EQ(store_->newest_event(), 0);
  ASSERT_OK(store_->AddAgent("dp2", "a:2"));
  EXPECT_EQ(store_->newest_event(), 1);
}

}  // namespace
}  // namespace pkgdist
