// The controller's durable state: agents, packages, jobs and targets in
// SQLite (STATE_DIR/state.db, WAL). Every state transition of a target is one
// transaction, and each checks the transition against target_state.h, so the
// database never holds an edge the state machine does not have.
//
// Job state is never stored: it is derived from the job's targets on every
// read (DeriveJobState).
//
// Thread-safe. Writes go through one connection under `mu_`, held across the
// commit's fsync; reads use a second connection under their own lock, so
// with WAL a status read never waits behind a writer's fsync (a database at
// ":memory:" has one connection for both). Every committed change bumps a
// counter that watchers can wait on (WaitForChange) without either lock.
#ifndef PKGDIST_CONTROLLER_STATE_STORE_H_
#define PKGDIST_CONTROLLER_STATE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/target_state.h"
#include "shared/clock.h"

struct sqlite3;

namespace pkgdist {

struct AgentRow {
  std::string name;
  std::string address;
  int64_t added_ms = 0;
};

struct PackageRow {
  std::string id;  // hex sha256 of the manifest
  std::string name;
  std::string version;
  uint64_t size = 0;
  uint32_t files = 0;
  uint32_t chunks = 0;
  int64_t created_ms = 0;
  // A serialized pkgdist.v1.PackageSignature; empty if unsigned.
  std::string signature;
};

struct TargetRow {
  std::string job_id;
  std::string agent;
  TargetState state = TargetState::kPending;
  uint32_t attempts = 0;              // attempts started, ever
  uint32_t consecutive_failures = 0;  // since the last progress or operator retry
  int64_t next_attempt_ms = 0;        // 0: none scheduled
  std::string last_error;
  uint64_t bytes_acked = 0;
  uint64_t bytes_total = 0;
  uint64_t bytes_sent = 0;  // re-sends included
  int64_t updated_ms = 0;
};

struct JobRow {
  std::string id;
  JobKind kind = JobKind::kDistribute;
  std::string package_id;
  std::string package;  // name@version
  JobPolicy policy;
  int64_t created_ms = 0;
  int64_t seq = 0;  // insertion order: orders jobs created in the same ms
};

// Where a page of jobs (newest first) continues: after this job.
struct JobCursor {
  int64_t created_ms = 0;
  int64_t seq = 0;
};

struct JobView {
  JobRow job;
  std::vector<TargetRow> targets;  // ordered by agent name
  JobState state = JobState::kPending;
};

// One transfer's progress since the last report (RecordProgressBatch).
struct ProgressUpdate {
  std::string job_id;
  std::string agent;
  uint64_t bytes_acked = 0;       // absolute
  uint64_t bytes_sent_delta = 0;  // added to bytes_sent
  bool made_progress = false;     // an acknowledgement arrived
};

struct JobFilter {
  std::optional<JobState> state;
  std::string package;  // name@version, "" for any
  std::string agent;    // "" for any
};

class StateStore {
 public:
  // Opens (creating if needed) the database at `path`, applies migrations up
  // to the current schema version (PRAGMA user_version), sets WAL mode.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path,
                                                          const Clock* clock);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // --- Agents. AddAgent inserts or updates the address.
  absl::Status AddAgent(const std::string& name, const std::string& address);
  absl::StatusOr<AgentRow> GetAgent(const std::string& name);
  // By name; only names starting with `name_prefix`; only names after
  // `after`; at most `limit` (0: all).
  absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& name_prefix = "",
                                                   const std::string& after = "",
                                                   size_t limit = 0);
  // Deletes the agent and cancels its non-final targets with `reason`;
  // returns how many were cancelled. NOT_FOUND if unknown.
  absl::StatusOr<int> RemoveAgent(const std::string& name, const std::string& reason);

  // --- Packages. The manifest is stored as its serialized bytes.
  // ALREADY_EXISTS if name@version exists with another id; adding the same
  // package again is OK and changes nothing. created_ms 0 means now.
  absl::Status AddPackage(const PackageRow& p, const std::string& manifest_bytes);
  absl::StatusOr<PackageRow> FindPackage(const std::string& name, const std::string& version);
  absl::StatusOr<PackageRow> GetPackageById(const std::string& id);
  // Replaces the package's signature (serialized PackageSignature).
  // NOT_FOUND for an unknown id.
  absl::Status SetPackageSignature(const std::string& id, const std::string& signature);
  absl::StatusOr<std::string> GetManifestBytes(const std::string& id);
  // By name, then version; only `name`'s versions if not empty; only those
  // after (after_name, after_version) if after_name is not empty; at most
  // `limit` (0: all).
  absl::StatusOr<std::vector<PackageRow>> ListPackages(const std::string& name = "",
                                                       const std::string& after_name = "",
                                                       const std::string& after_version = "",
                                                       size_t limit = 0);
  // FAILED_PRECONDITION if a job with a non-final target needs it, unless
  // `force`, which cancels those targets ("package deleted"). Returns the
  // ids of the jobs whose targets it cancelled, so that their running
  // attempts can be stopped too.
  absl::StatusOr<std::vector<std::string>> DeletePackage(const std::string& id, bool force);

  // --- Jobs. Creates the job and one pending target per agent in one
  // transaction. bytes_total of each target is `bytes_total`.
  // NOT_FOUND for an unknown agent or package; INVALID_ARGUMENT for no
  // agents or an agent listed twice. The id is 16 random hex digits.
  absl::StatusOr<JobRow> CreateJob(JobKind kind, const std::string& package_id,
                                   const std::vector<std::string>& agents,
                                   const JobPolicy& policy, uint64_t bytes_total);
  absl::StatusOr<JobView> GetJob(const std::string& id);
  // The job alone, without its targets (one row, however many targets).
  absl::StatusOr<JobRow> GetJobRow(const std::string& id);
  // Whether job `id` has targets and all of them are final: one cheap query,
  // for watchers that must not miss the end while coalescing progress.
  absl::StatusOr<bool> JobEnded(const std::string& id);
  // Newest first; only jobs after `after`; at most `limit` (0: all) that
  // match the filter.
  absl::StatusOr<std::vector<JobView>> ListJobs(const JobFilter& filter,
                                                std::optional<JobCursor> after = std::nullopt,
                                                size_t limit = 0);
  // Deletes a job whose targets are all final, with its targets.
  // FAILED_PRECONDITION naming the unfinished targets otherwise; NOT_FOUND
  // for an unknown job.
  absl::Status DeleteJob(const std::string& id);
  // Deletes every job whose targets are all final and whose last target
  // changed at or before `before_ms` (job retention). Returns how many.
  absl::StatusOr<int> PruneFinishedJobs(int64_t before_ms);

  // --- Target transitions; each is one transaction, checked by
  // CheckTransition (FAILED_PRECONDITION on an illegal edge, NOT_FOUND for an
  // unknown job/agent pair).
  // pending|retry_wait -> transferring; attempts += 1.
  absl::Status StartAttempt(const std::string& job, const std::string& agent);
  // Progress of a transferring target: sets bytes_acked, adds to bytes_sent;
  // if `made_progress`, resets consecutive_failures.
  absl::Status RecordProgress(const std::string& job, const std::string& agent,
                              uint64_t bytes_acked, uint64_t bytes_sent_delta,
                              bool made_progress);
  // RecordProgress for many transfers in one transaction (the engine's
  // coalesced reports). An update for a target that is no longer
  // transferring is stale and skipped. Returns how many were applied.
  absl::StatusOr<int> RecordProgressBatch(const std::vector<ProgressUpdate>& updates);
  // transferring -> done; bytes_acked = bytes_total; clears last_error.
  absl::Status MarkDone(const std::string& job, const std::string& agent);
  // transferring -> retry_wait (next attempt per backoff, error recorded,
  // consecutive_failures += 1), or -> failed when the job's policy says so.
  // Returns the new row.
  absl::StatusOr<TargetRow> MarkFailedAttempt(const std::string& job, const std::string& agent,
                                              const std::string& error,
                                              const BackoffPolicy& backoff, double unit_random);
  // Non-final targets of the job (only `agent`'s if not empty) -> cancelled
  // with `reason`. Returns how many changed. NOT_FOUND if `agent` is not a
  // target of the job.
  absl::StatusOr<int> Cancel(const std::string& job, const std::string& agent,
                             const std::string& reason);
  // retry_wait|failed targets of the job (only `agent`'s if not empty) ->
  // retry_wait due now, consecutive_failures = 0. Returns how many changed.
  absl::StatusOr<int> RetryNow(const std::string& job, const std::string& agent);
  // Every retry_wait target of `agent` due later -> due now (its channel
  // came back).
  absl::Status WakeAgent(const std::string& agent);
  // Pending and retry_wait targets of jobs whose deadline is at or before
  // now -> failed ("deadline exceeded[: last error]"). A transferring target
  // finishes its attempt; MarkFailedAttempt then applies the deadline.
  absl::StatusOr<int> FailExpired();

  // Targets that may start now: pending, or retry_wait due at or before now,
  // of agents still registered and jobs whose deadline has not passed;
  // oldest job first (then by agent), at most `limit`, at most one per
  // agent, skipping agents in `busy`.
  absl::StatusOr<std::vector<TargetRow>> RunnableTargets(size_t limit,
                                                         const std::vector<std::string>& busy);
  // The earliest next_attempt_ms among retry_wait targets, if any.
  absl::StatusOr<std::optional<int64_t>> NextWakeupMs();
  // Start-up recovery: every transferring target (its transfer died with the
  // previous process) -> retry_wait due now, with last_error saying so.
  absl::StatusOr<int> RecoverInterrupted();

  // --- Change notification. version() grows with every committed
  // transaction that changed a row (not with reads or no-op mutations); it
  // starts at 0 on every Open.
  uint64_t version();
  // Blocks until version() > `seen` or `timeout` passes; returns version().
  uint64_t WaitForChange(uint64_t seen, absl::Duration timeout);
  // Write transactions committed since Open (changing rows or not), for
  // the controller's periodic statistics line and the scale benchmark.
  uint64_t transactions();
  // Called after every committed write transaction with how long it took
  // (BEGIN to COMMIT, fsync included), for the metrics. Set before use.
  void set_commit_observer(std::function<void(absl::Duration)> observer) {
    commit_observer_ = std::move(observer);
  }

 private:
  StateStore(sqlite3* db, sqlite3* read_db, const Clock* clock);

  // Runs `fn` inside one BEGIN IMMEDIATE ... COMMIT transaction with the
  // connection and the clock's time; rolls back if `fn` or the commit fails.
  // Bumps the version (waking waiters) if the transaction changed any row.
  absl::Status Transact(absl::FunctionRef<absl::Status(sqlite3* db, int64_t now_ms)> fn)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the read-only `fn` on the reader connection under its lock.
  absl::Status Read(absl::FunctionRef<absl::Status(sqlite3* db, int64_t now_ms)> fn)
      ABSL_LOCKS_EXCLUDED(mu_, read_mu_);

  absl::Mutex mu_ ABSL_ACQUIRED_BEFORE(version_mu_);
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  absl::Mutex read_mu_;
  sqlite3* read_db_ ABSL_GUARDED_BY(read_mu_);  // null: reads share db_
  const Clock* clock_;
  absl::Mutex version_mu_;
  uint64_t version_ ABSL_GUARDED_BY(version_mu_) = 0;
  uint64_t transactions_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(absl::Duration)> commit_observer_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_STATE_STORE_H_
