// The writer of the state store's two logs, the events and the audit trail
// (the record types are in state_store.h). A ChangeLog lives for one write
// transaction: every change the transaction makes is appended to it there,
// so the log commits, or rolls back, with the change. The Read* functions
// read the logs back on any connection.
//
// Not thread-safe: a ChangeLog belongs to the transaction (and the
// connection lock) it was made for, and must be destroyed before COMMIT.
#ifndef PKGDIST_CONTROLLER_STATE_STORE_LOG_H_
#define PKGDIST_CONTROLLER_STATE_STORE_LOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/state_store.h"

struct sqlite3;

namespace pkgdist {

class Statement;

class ChangeLog {
 public:
  ChangeLog(sqlite3* db, int64_t now_ms);
  ~ChangeLog();
  ChangeLog(const ChangeLog&) = delete;
  ChangeLog& operator=(const ChangeLog&) = delete;

  sqlite3* db() const { return db_; }
  int64_t now() const { return now_; }

  // Appends `e` (its seq and time are assigned here).
  absl::Status Add(EventRow e);
  // A target_changed event for target row `t` as it now is, labelled with
  // its job's package. A target that became final marks its job for the
  // job_finished check in Finish.
  absl::Status Target(const TargetRow& t);

  // Completes the log before COMMIT: a job_finished event for every job
  // whose targets became all final in this transaction, then deletes the
  // events beyond the newest `event_history`.
  absl::Status Finish(int64_t event_history);
  // Writes an audit record of `entry` with `outcome` (OK: entry.result as
  // the message), and deletes records older than `retention_ms` (0: none).
  absl::Status WriteAudit(const AuditEntry& entry, const absl::Status& outcome,
                          int64_t retention_ms);

  // The sequence of the last event appended; 0 if none.
  int64_t last_seq() const { return last_seq_; }

 private:
  absl::StatusOr<std::string> PackageOfJob(const std::string& job_id);
  // The job's derived state if every one of its targets is final (the job
  // has ended); nullopt otherwise.
  absl::StatusOr<std::optional<JobState>> EndedState(const std::string& job);

  sqlite3* db_;
  int64_t now_;
  std::unique_ptr<Statement> insert_;
  std::map<std::string, std::string> labels_;  // job id -> name@version
  std::set<std::string> maybe_finished_;       // jobs
  int64_t last_seq_ = 0;
};

// The sequence of the newest event ever written (kept or not); 0 if none.
absl::StatusOr<int64_t> NewestEventSeq(sqlite3* db);
// See StateStore::ReadEvents; runs inside the caller's read transaction.
// Fills out->events, out->oldest and out->newest.
absl::Status ReadEventBatch(sqlite3* db, int64_t after, size_t limit, EventBatch* out);
// See StateStore::ListAudit.
absl::StatusOr<std::vector<AuditRow>> ReadAudit(sqlite3* db, const AuditFilter& filter,
                                                int64_t after, size_t limit);
// Deletes the events beyond the newest `history`.
absl::Status PruneEvents(sqlite3* db, int64_t newest, int64_t history);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_STATE_STORE_LOG_H_
