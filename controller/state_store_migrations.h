// The state database's schema, as an ordered list of migrations.
//
// The schema version is PRAGMA user_version. Migration N brings a database
// from version N-1 to N; each runs in its own transaction together with the
// version bump, so a crash leaves the database at a version it really has.
// Migrations are append-only: never edit one that has shipped.
#ifndef PKGDIST_CONTROLLER_STATE_STORE_MIGRATIONS_H_
#define PKGDIST_CONTROLLER_STATE_STORE_MIGRATIONS_H_

#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;

namespace pkgdist {

struct Migration {
  int version;      // 1, 2, 3, ... in order
  const char* sql;  // one or more statements
};

// The state store's migrations; the last one's version is the current
// schema version.
std::span<const Migration> StateStoreMigrations();

// Reads PRAGMA user_version.
absl::StatusOr<int> SchemaVersion(sqlite3* db);

// Applies, in order, every migration newer than the database's version.
// FAILED_PRECONDITION if the database is newer than the last migration (a
// newer controller wrote it). On failure the failing migration is rolled
// back and the version stays at the last one applied.
absl::Status ApplyMigrations(sqlite3* db, std::span<const Migration> migrations);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_STATE_STORE_MIGRATIONS_H_
