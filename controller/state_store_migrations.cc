#include "controller/state_store_migrations.h"

#include <sqlite3.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/sqlite_util.h"
#include "shared/logging.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

// Targets carry no foreign key to agents: removing an agent keeps its
// (cancelled) targets as history. Jobs carry none to packages for the same
// reason: package_label still names a deleted package.
constexpr char kMigration1[] = R"sql(
CREATE TABLE agents(
  name     TEXT PRIMARY KEY NOT NULL,
  address  TEXT NOT NULL,
  added_ms INTEGER NOT NULL
);
CREATE TABLE packages(
  id         TEXT PRIMARY KEY NOT NULL,
  name       TEXT NOT NULL,
  version    TEXT NOT NULL,
  size       INTEGER NOT NULL,
  files      INTEGER NOT NULL,
  chunks     INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  manifest   BLOB NOT NULL,
  UNIQUE(name, version)
);
CREATE TABLE jobs(
  id            TEXT PRIMARY KEY NOT NULL,
  kind          TEXT NOT NULL CHECK(kind IN ('distribute', 'remove')),
  package_id    TEXT NOT NULL,
  package_label TEXT NOT NULL,
  max_attempts  INTEGER NOT NULL DEFAULT 0,
  deadline_ms   INTEGER NOT NULL DEFAULT 0,
  created_ms    INTEGER NOT NULL
);
CREATE INDEX jobs_by_created ON jobs(created_ms);
CREATE INDEX jobs_by_package ON jobs(package_id);
CREATE TABLE targets(
  job_id               TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  agent                TEXT NOT NULL,
  state                TEXT NOT NULL CHECK(state IN ('pending', 'transferring', 'retry_wait',
                                                     'done', 'failed', 'cancelled')),
  attempts             INTEGER NOT NULL DEFAULT 0,
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms      INTEGER NOT NULL DEFAULT 0,
  last_error           TEXT NOT NULL DEFAULT '',
  bytes_acked          INTEGER NOT NULL DEFAULT 0,
  bytes_total          INTEGER NOT NULL DEFAULT 0,
  bytes_sent           INTEGER NOT NULL DEFAULT 0,
  updated_ms           INTEGER NOT NULL,
  PRIMARY KEY(job_id, agent)
);
CREATE INDEX targets_by_agent ON targets(agent);
CREATE INDEX targets_by_state ON targets(state, next_attempt_ms);
)sql";

// A release owner's signature (a serialized pkgdist.v1.PackageSignature;
// empty for an unsigned package).
constexpr char kMigration2[] = R"sql(
ALTER TABLE packages ADD COLUMN signature BLOB NOT NULL DEFAULT x'';
)sql";

// The audit trail and the event log (state_store_log.h). AUTOINCREMENT: a
// sequence number is never used twice, even after the oldest rows are
// deleted, so a follower's last sequence always means the same event.
// targets_by_job_state answers "did this job just finish?" after each final
// transition with index probes, not a scan of a large job's targets.
constexpr char kMigration3[] = R"sql(
CREATE INDEX targets_by_job_state ON targets(job_id, state);
CREATE TABLE audit(
  seq      INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms  INTEGER NOT NULL,
  identity TEXT NOT NULL,
  peer     TEXT NOT NULL DEFAULT '',
  method   TEXT NOT NULL,
  request  TEXT NOT NULL DEFAULT '',
  code     TEXT NOT NULL,
  message  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_time ON audit(time_ms);
CREATE TABLE events(
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms         INTEGER NOT NULL,
  kind            TEXT NOT NULL,
  job_id          TEXT NOT NULL DEFAULT '',
  job_kind        TEXT NOT NULL DEFAULT '',
  package         TEXT NOT NULL DEFAULT '',
  package_id      TEXT NOT NULL DEFAULT '',
  agent           TEXT NOT NULL DEFAULT '',
  address         TEXT NOT NULL DEFAULT '',
  state           TEXT NOT NULL DEFAULT '',
  has_target      INTEGER NOT NULL DEFAULT 0,
  attempts        INTEGER NOT NULL DEFAULT 0,
  last_error      TEXT NOT NULL DEFAULT '',
  next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  bytes_acked     INTEGER NOT NULL DEFAULT 0,
  bytes_total     INTEGER NOT NULL DEFAULT 0,
  bytes_sent      INTEGER NOT NULL DEFAULT 0,
  detail          TEXT NOT NULL DEFAULT ''
);
)sql";

// Bytes of the package an agent filled from its own chunk store instead of
// receiving them, summed over attempts like bytes_sent; the events keep it
// in their target snapshot.
constexpr char kMigration4[] = R"sql(
ALTER TABLE targets ADD COLUMN bytes_reused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN bytes_reused INTEGER NOT NULL DEFAULT 0;
)sql";

// An agent's labels (controller/labels.h), in their canonical text form
// "k1=v1,k2=v2"; selectors are evaluated over the registered agents.
constexpr char kMigration5[] = R"sql(
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '';
)sql";

// Bandwidth policy (controller/bandwidth_policy.h, docs/sites.md): each
// site's, each agent's own limit and the controller's egress limit (in
// `settings`), every rate and window in its canonical text form.
constexpr char kMigration6[] = R"sql(
CREATE TABLE sites(
  name          TEXT PRIMARY KEY,
  rate          TEXT NOT NULL,
  windows       TEXT NOT NULL DEFAULT '',
  timezone      TEXT NOT NULL DEFAULT 'UTC',
  max_transfers INTEGER NOT NULL DEFAULT 0,
  updated_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE settings(
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
ALTER TABLE agents ADD COLUMN rate TEXT NOT NULL DEFAULT 'unlimited';
)sql";

// Relays (issue 14 item 2): the agent of a site that receives packages
// from the controller ('': the controller chooses), and the bytes a target
// fetched from another agent of its site, summed over attempts like
// bytes_sent; the events keep them in their target snapshot.
constexpr char kMigration7[] = R"sql(
ALTER TABLE sites ADD COLUMN relay TEXT NOT NULL DEFAULT '';
ALTER TABLE targets ADD COLUMN bytes_from_peer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN bytes_from_peer INTEGER NOT NULL DEFAULT 0;
)sql";

constexpr Migration kMigrations[] = {
    {1, kMigration1},
    {2, kMigration2},
    {3, kMigration3},
    {4, kMigration4},
    {5, kMigration5},
    {6, kMigration6},
    {7, kMigration7},
};

}  // namespace

std::span<const Migration> StateStoreMigrations() { return kMigrations; }

absl::StatusOr<int> SchemaVersion(sqlite3* db) {
  int version = -1;
  auto read = [](void* out, int columns, char** values, char**) {
    if (columns == 1 && values[0] != nullptr) *static_cast<int*>(out) = std::atoi(values[0]);
    return 0;
  };
  int rc = sqlite3_exec(db, "PRAGMA user_version", read, &version, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(db, rc, "read schema version");
  if (version < 0) return absl::DataLossError("state database: no schema version");
  return version;
}

absl::Status ApplyMigrations(sqlite3* db, std::span<const Migration> migrations) {
  ASSIGN_OR_RETURN(int current, SchemaVersion(db));
  const int latest = migrations.empty() ? 0 : migrations.back().version;
  if (current > latest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state database has schema version ", current, ", newer than this controller's ", latest,
        " (was it written by a newer pkgdist-controller?)"));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    if (m.version != current + 1) {
      return absl::InternalError(absl::StrCat("schema migrations skip from version ", current,
                                              " to ", m.version));
    }
    RETURN_IF_ERROR(ExecSql(db, "BEGIN IMMEDIATE"));
    // user_version is part of the database header, so it commits (or rolls
    // back) together with the migration's statements.
    absl::Status s = ExecSql(db, m.sql);
    if (s.ok()) s = ExecSql(db, absl::StrCat("PRAGMA user_version = ", m.version).c_str());
    if (s.ok()) s = ExecSql(db, "COMMIT");
    if (!s.ok()) {
      if (sqlite3_get_autocommit(db) == 0) (void)ExecSql(db, "ROLLBACK");
      return absl::Status(s.code(), absl::StrCat("schema migration ", m.version, ": ", s.message()));
    }
    spdlog::info("state database migrated to schema version {}", m.version);
    current = m.version;
  }
  return absl::OkStatus();
}

}  // namespace pkgdist
