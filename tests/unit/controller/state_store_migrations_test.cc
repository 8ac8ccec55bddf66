#include "controller/state_store_migrations.h"

#include <sqlite3.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "controller/sqlite_util.h"
#include "controller/state_store.h"
#include "shared/clock.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

class MigrationsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("migrations_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    ASSERT_EQ(sqlite3_open(Path().c_str(), &db_), SQLITE_OK);
  }
  void TearDown() override { sqlite3_close_v2(db_); }

  int Version() {
    absl::StatusOr<int> v = SchemaVersion(db_);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : -1;
  }
  bool HasTable(const std::string& name) {
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db_, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1,
                       &st, nullptr);
    sqlite3_bind_text(st, 1, name.c_str(), -1, SQLITE_TRANSIENT);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
  }
  // The rows of `sql`, "a|b" per row, one per line.
  std::string Query(const char* sql) {
    std::string out;
    sqlite3_exec(
        db_, sql,
        [](void* o, int n, char** v, char**) {
          for (int i = 0; i < n; ++i) {
            static_cast<std::string*>(o)->append(v[i] ? v[i] : "NULL").append(i + 1 < n ? "|" : "\n");
          }
          return 0;
        },
        &out, nullptr);
    return out;
  }
  std::string Path() const { return dir_->path() + "/m.db"; }

  std::optional<TempDir> dir_;
  sqlite3* db_ = nullptr;
};

const Migration kFirst = {1, "CREATE TABLE a(x INTEGER);"};
const Migration kSecond = {2, "CREATE TABLE b(y TEXT); INSERT INTO a(x) VALUES(1);"};

TEST_F(MigrationsTest, AppliesEveryMigrationInOrderAndRecordsTheVersion) {
  // A new database runs 1 then 2 and ends at version 2.
  const std::vector<Migration> all = {kFirst, kSecond};
  ASSERT_TRUE(ApplyMigrations(db_, all).ok());
  EXPECT_EQ(Version(), 2);
  EXPECT_TRUE(HasTable("a"));
  EXPECT_TRUE(HasTable("b"));
}

TEST_F(MigrationsTest, SkipsMigrationsAlreadyApplied) {
  // Re-running the list is a no-op (re-creating the tables would fail).
  const std::vector<Migration> all = {kFirst, kSecond};
  ASSERT_TRUE(ApplyMigrations(db_, all).ok());
  absl::Status again = ApplyMigrations(db_, all);
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(Version(), 2);
}

TEST_F(MigrationsTest, UpgradesAnOlderDatabase) {
  // A database at version 1 gets only migration 2.
  const std::vector<Migration> old = {kFirst};
  ASSERT_TRUE(ApplyMigrations(db_, old).ok());
  EXPECT_EQ(Version(), 1);
  EXPECT_FALSE(HasTable("b"));
  const std::vector<Migration> all = {kFirst, kSecond};
  ASSERT_TRUE(ApplyMigrations(db_, all).ok());
  EXPECT_EQ(Version(), 2);
  EXPECT_TRUE(HasTable("b"));
}

TEST_F(MigrationsTest, AFailingMigrationIsRolledBackAndKeepsTheVersion) {
  // Half of a broken migration never lands; the version stays at the last good one.
  const std::vector<Migration> all = {kFirst, {2, "CREATE TABLE c(z); CREATE TABLE c(z);"}};
  absl::Status s = ApplyMigrations(db_, all);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("schema migration 2"));
  EXPECT_EQ(Version(), 1);
  EXPECT_FALSE(HasTable("c"));
}

TEST_F(MigrationsTest, RefusesADatabaseNewerThanTheList) {
  // A version beyond the last migration means a newer program wrote it.
  ASSERT_TRUE(ExecSql(db_, "PRAGMA user_version = 7").ok());
  const std::vector<Migration> all = {kFirst, kSecond};
  absl::Status s = ApplyMigrations(db_, all);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(HasTable("a"));
}

TEST_F(MigrationsTest, RefusesAGapInTheList) {
  // Versions must follow each other with no gap.
  const std::vector<Migration> gap = {kFirst, {3, "CREATE TABLE d(w);"}};
  EXPECT_FALSE(ApplyMigrations(db_, gap).ok());
  EXPECT_EQ(Version(), 1);
}

TEST_F(MigrationsTest, StateStoreMigrationsAreContiguousFromOne) {
  // The shipped list starts at 1, has no gap, and applies to an empty database.
  std::span<const Migration> list = StateStoreMigrations();
  ASSERT_FALSE(list.empty());
  for (size_t i = 0; i < list.size(); ++i) EXPECT_EQ(list[i].version, static_cast<int>(i) + 1);
  absl::Status s = ApplyMigrations(db_, list);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Version(), list.back().version);
  for (const char* t : {"agents", "packages", "jobs", "targets"}) EXPECT_TRUE(HasTable(t)) << t;
}

TEST_F(MigrationsTest, MigrationSixKeepsTheAgentsOfAVersionFiveDatabaseWithoutARateLimit) {
  // A database at version 5 with agents gets the sites and settings tables
  // and agents.rate; every agent is kept as it was, with rate 'unlimited',
  // and the store reads it so.
  std::span<const Migration> list = StateStoreMigrations();
  ASSERT_GE(list.size(), 6u);
  ASSERT_EQ(list[5].version, 6);
  ASSERT_TRUE(ApplyMigrations(db_, list.first(5)).ok());
  ASSERT_EQ(Version(), 5);
  EXPECT_FALSE(HasTable("sites"));
  EXPECT_FALSE(HasTable("settings"));
  absl::Status inserted = ExecSql(db_,
                                  "INSERT INTO agents VALUES('dp1', 'a:1', 1, 'site=fra');"
                                  "INSERT INTO agents VALUES('dp2', 'b:2', 2, '');");
  ASSERT_TRUE(inserted.ok()) << inserted;

  absl::Status migrated = ApplyMigrations(db_, list.first(6));
  ASSERT_TRUE(migrated.ok()) << migrated;
  EXPECT_EQ(Version(), 6);
  EXPECT_TRUE(HasTable("sites"));
  EXPECT_TRUE(HasTable("settings"));
  EXPECT_EQ(Query("SELECT name, address, added_ms, labels, rate FROM agents ORDER BY name"),
            "dp1|a:1|1|site=fra|unlimited\ndp2|b:2|2||unlimited\n");
  EXPECT_EQ(Query("SELECT COUNT(*) FROM sites"), "0\n");
  EXPECT_EQ(Query("SELECT COUNT(*) FROM settings"), "0\n");

  sqlite3_close_v2(db_);
  db_ = nullptr;
  FakeClock clock;
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(Path(), &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<AgentRow> dp1 = (*store)->GetAgent("dp1");
  ASSERT_TRUE(dp1.ok()) << dp1.status();
  EXPECT_EQ(dp1->address, "a:1");
  EXPECT_EQ(dp1->labels, (Labels{{"site", "fra"}}));
  EXPECT_TRUE(dp1->rate.unlimited());
  absl::StatusOr<std::vector<std::string>> sites = (*store)->LabelledSites();
  ASSERT_TRUE(sites.ok()) << sites.status();
  EXPECT_EQ(*sites, std::vector<std::string>{"fra"});
  absl::StatusOr<Rate> egress = (*store)->GetEgressRate();
  ASSERT_TRUE(egress.ok()) << egress.status();
  EXPECT_TRUE(egress->unlimited());
}

TEST_F(MigrationsTest, MigrationSevenGivesAVersionSixDatabaseAutoRelaysAndNoBytesFromPeers) {
  // A database at version 6 with a site policy, a target and its event
  // gets sites.relay '' (auto) and bytes_from_peer 0 on targets and events;
  // every row is kept, and the store reads them so and adds to them.
  std::span<const Migration> list = StateStoreMigrations();
  ASSERT_GE(list.size(), 7u);
  ASSERT_EQ(list[6].version, 7);
  ASSERT_TRUE(ApplyMigrations(db_, list.first(6)).ok());
  ASSERT_EQ(Version(), 6);
  absl::Status inserted = ExecSql(
      db_,
      "INSERT INTO agents VALUES('fra1', 'a:1', 1, 'site=fra', 'unlimited');"
      "INSERT INTO sites VALUES('fra', '20MB/s', '', 'UTC', 2, 5);"
      "INSERT INTO packages(id, name, version, size, files, chunks, created_ms, manifest) "
      "VALUES('p', 'app', '1.0', 300, 1, 1, 1, x'00');"
      "INSERT INTO jobs VALUES('j1', 'distribute', 'p', 'app@1.0', 0, 0, 1);"
      "INSERT INTO targets(job_id, agent, state, attempts, bytes_acked, bytes_total, "
      "bytes_sent, bytes_reused, updated_ms) "
      "VALUES('j1', 'fra1', 'transferring', 1, 100, 300, 80, 20, 2);"
      "INSERT INTO events(time_ms, kind, job_id, agent, state, has_target, attempts, "
      "bytes_total, bytes_sent, bytes_reused) "
      "VALUES(2, 'target_changed', 'j1', 'fra1', 'transferring', 1, 1, 300, 80, 20);");
  ASSERT_TRUE(inserted.ok()) << inserted;

  absl::Status migrated = ApplyMigrations(db_, list.first(7));
  ASSERT_TRUE(migrated.ok()) << migrated;
  EXPECT_EQ(Version(), 7);
  EXPECT_EQ(Query("SELECT name, rate, max_transfers, updated_ms, relay FROM sites"),
            "fra|20MB/s|2|5|\n");
  EXPECT_EQ(Query("SELECT bytes_acked, bytes_sent, bytes_reused, bytes_from_peer FROM targets"),
            "100|80|20|0\n");
  EXPECT_EQ(Query("SELECT bytes_sent, bytes_reused, bytes_from_peer FROM events"), "80|20|0\n");

  sqlite3_close_v2(db_);
  db_ = nullptr;
  FakeClock clock;
  absl::StatusOr<std::unique_ptr<StateStore>> store = StateStore::Open(Path(), &clock);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<SiteRow> fra = (*store)->GetSite("fra");
  ASSERT_TRUE(fra.ok()) << fra.status();
  EXPECT_EQ(fra->relay, "");
  EXPECT_EQ(fra->policy.rate, Rate::Limited(20'000'000));
  EXPECT_EQ(fra->policy.max_transfers, 2u);
  absl::StatusOr<JobView> job = (*store)->GetJob("j1");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->targets.size(), 1u);
  EXPECT_EQ(job->targets[0].bytes_reused, 20u);
  EXPECT_EQ(job->targets[0].bytes_from_peer, 0u);
  absl::StatusOr<EventBatch> events = (*store)->ReadEvents(0, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->events.size(), 1u);
  ASSERT_TRUE(events->events[0].target.has_value());
  EXPECT_EQ(events->events[0].target->bytes_from_peer, 0u);
  ASSERT_TRUE((*store)->RecordProgress("j1", "fra1", 200, 0, true, 0, 100).ok());
  job = (*store)->GetJob("j1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->targets[0].bytes_from_peer, 100u);
}

}  // namespace
}  // namespace pkgdist
