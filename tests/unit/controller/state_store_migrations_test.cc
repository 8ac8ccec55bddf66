#include "controller/state_store_migrations.h"

#include <sqlite3.h>

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "controller/sqlite_util.h"
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
    ASSERT_EQ(sqlite3_open((dir_->path() + "/m.db").c_str(), &db_), SQLITE_OK);
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

}  // namespace
}  // namespace pkgdist
