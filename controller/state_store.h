// The controller's durable state: agents, packages, jobs and targets in
// SQLite (STATE_DIR/state.db, WAL). Every state transition of a target is one
// transaction, and each checks the transition against target_state.h, so the
// database never holds an edge the state machine does not have.
//
// Job state is never stored: it is derived from the job's targets on every
// read (DeriveJobState).
//
// Two logs are written inside the same transactions as the changes they
// describe, so no change commits without them (state_store_log.h):
//  - events: every change of a job, target, agent or package, numbered by
//    an increasing sequence without gaps (WatchEvents); the newest
//    `event_history` are kept.
//  - the audit trail: a mutating method given an AuditEntry writes it with
//    its change; a call that changed nothing is recorded by RecordAudit.
//    Records older than `audit_retention_ms` are deleted.
//
// Thread-safe. Writes go through one connection under `mu_`, held across the
// commit's fsync; reads use a second connection under their own lock, so
// with WAL a status read never waits behind a writer's fsync (a database at
// ":memory:" has one connection for both). Every committed change bumps a
// counter that watchers can wait on (WaitForChange) without either lock.
#ifndef PKGDIST_CONTROLLER_STATE_STORE_H_
#define PKGDIST_CONTROLLER_STATE_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/bandwidth_policy.h"
#include "controller/labels.h"
#include "controller/target_state.h"
#include "shared/clock.h"

struct sqlite3;

namespace pkgdist {

class ChangeLog;

struct AgentRow {
  std::string name;
  std::string address;
  int64_t added_ms = 0;
  Labels labels;
  Rate rate;  // the agent's own bandwidth limit
};

// A site's bandwidth policy (docs/sites.md). A site exists by its policy
// or by an agent's `site` label; this row is the policy.
// SiteRow::relay for a site without relays ("none" in the API and the CLI).
inline constexpr char kNoRelay[] = "none";

struct SiteRow {
  std::string name;
  SitePolicy policy;
  int64_t updated_ms = 0;
  // The agent that receives packages for the site from the controller
  // (labelled site=NAME, checked by the caller); "": the controller chooses;
  // kNoRelay: none, every agent receives from the controller.
  std::string relay;
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
  // Filled by the agent from its own chunk store instead of sent; summed
  // over attempts like bytes_sent.
  uint64_t bytes_reused = 0;
  // Fetched by the agent from another agent of its site (its relay) and
  // acknowledged; summed over attempts like bytes_sent.
  uint64_t bytes_from_peer = 0;
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
  uint64_t bytes_reused_delta = 0;  // added to bytes_reused
  bool made_progress = false;     // an acknowledgement arrived
  // Last, so that positional initializers of the fields above keep meaning
  // what they meant.
  uint64_t bytes_from_peer_delta = 0;  // added to bytes_from_peer
};

struct JobFilter {
  std::optional<JobState> state;
  std::string package;  // name@version, "" for any
  std::string agent;    // "" for any
};

// --- The logs.

enum class EventKind {
  kJobCreated,
  kJobFinished,
  kJobDeleted,
  kTargetChanged,
  kTargetProgress,  // never stored: WatchEvents makes them
  kAgentAdded,
  kAgentUpdated,
  kAgentRemoved,
  kPackageImported,
  kPackageSigned,
  kPackageDeleted,
  kLimitsChanged,  // a site's policy or the egress limit (detail says which)
  kCaughtUp,  // never stored: WatchEvents' marker
};
// "job_created", "target_changed", ... (controller.proto, Event).
absl::string_view EventKindName(EventKind kind);
absl::StatusOr<EventKind> ParseEventKind(absl::string_view name);

// One change, as stored in the events table. Which fields are set depends
// on the kind (controller.proto, Event).
struct EventRow {
  int64_t seq = 0;
  int64_t time_ms = 0;
  EventKind kind = EventKind::kJobCreated;
  std::string job_id;
  std::string job_kind;
  std::string package;  // name@version
  std::string package_id;
  std::string agent;
  std::string address;
  std::string state;  // the job's (job_*) or the target's (target_*)
  std::optional<TargetRow> target;  // target_*: the row after the change
  std::string detail;
};

// What ReadEvents saw in one read transaction.
struct EventBatch {
  std::vector<EventRow> events;  // after the requested sequence, in order
  // With progress, every transferring target as a kTargetProgress row
  // (seq: the newest event's), read in the same snapshot as `events`.
  std::vector<EventRow> progress;
  int64_t oldest = 0;  // the oldest event kept; 0 if none
  int64_t newest = 0;  // the newest event ever written; 0 if none
};

// What an admin call asked for. A mutating method given one writes it with
// its change, as an OK record whose message is `result` (which the method
// may fill in), and sets `recorded`; if the method fails it writes
// nothing, and the caller records the failure with RecordAudit.
struct AuditEntry {
  std::string identity;  // the caller's SPIFFE ID, as presented
  std::string peer;      // the caller's address
  std::string method;    // "AddAgent", ...
  std::string request;   // key=value essentials
  std::string result;    // what an OK call did
  bool recorded = false;
};

struct AuditRow {
  int64_t seq = 0;
  int64_t time_ms = 0;
  std::string identity;
  std::string peer;
  std::string method;
  std::string request;
  std::string code;  // "OK", "NOT_FOUND", ...
  std::string message;
};

struct AuditFilter {
  int64_t since_ms = 0;  // only records at or after this time
  // Only this caller: an admin name ("alice"), KIND/NAME ("agent/dp1") or
  // a full SPIFFE ID; "" for any.
  std::string who;
};

struct StoreOptions {
  // Events kept (the newest); older ones are deleted as new ones come.
  int64_t event_history = 100'000;
  // Audit records older than this are deleted as new ones come; 0 keeps
  // them forever.
  int64_t audit_retention_ms = int64_t{365} * 86'400'000;
};

class StateStore {
 public:
  // Opens (creating if needed) the database at `path`, applies migrations up
  // to the current schema version (PRAGMA user_version), sets WAL mode.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path,
                                                          const Clock* clock,
                                                          StoreOptions options = {});
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // --- Agents. AddAgent inserts or updates the address, and replaces the
  // labels if `labels` is set (validated by the caller).
  //
  // Every mutating method below that takes an `audit` entry (null: none)
  // writes it in the transaction of its change (see AuditEntry).
  absl::Status AddAgent(const std::string& name, const std::string& address,
                        AuditEntry* audit = nullptr,
                        const std::optional<Labels>& labels = std::nullopt);
  // Sets `set` and deletes `remove` in the agent's labels; returns the row
  // after the change. NOT_FOUND if unknown.
  absl::StatusOr<AgentRow> SetAgentLabels(const std::string& name, const Labels& set,
                                          const std::vector<std::string>& remove,
                                          AuditEntry* audit = nullptr);
  // Sets the agent's own bandwidth limit; NOT_FOUND if unknown.
  absl::StatusOr<AgentRow> SetAgentRate(const std::string& name, Rate rate,
                                        AuditEntry* audit = nullptr);
  absl::StatusOr<AgentRow> GetAgent(const std::string& name);
  // By name; only names starting with `name_prefix`; only names after
  // `after`; at most `limit` (0: all).
  absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& name_prefix = "",
                                                   const std::string& after = "",
                                                   size_t limit = 0);
  // --- Sites and the egress limit (state_store_sites.cc). PutSite stores
  // the whole policy (validated by the caller); GetSite is NOT_FOUND for a
  // site without one.
  absl::Status PutSite(const SiteRow& site, AuditEntry* audit = nullptr);
  absl::StatusOr<SiteRow> GetSite(const std::string& name);
  // DATA_LOSS naming a site whose stored policy does not parse; with
  // `unreadable`, such rows are skipped and their errors added there.
  absl::StatusOr<std::vector<SiteRow>> ListSites(std::vector<std::string>* unreadable = nullptr);
  // The sites agents name in their `site` label, each once, sorted.
  absl::StatusOr<std::vector<std::string>> LabelledSites();
  absl::Status SetEgressRate(Rate rate, AuditEntry* audit = nullptr);
  absl::StatusOr<Rate> GetEgressRate();

  // Deletes the agent and cancels its non-final targets with `reason`;
  // returns how many were cancelled. NOT_FOUND if unknown.
  absl::StatusOr<int> RemoveAgent(const std::string& name, const std::string& reason,
                                  AuditEntry* audit = nullptr);

  // --- Packages. The manifest is stored as its serialized bytes.
  // ALREADY_EXISTS if name@version exists with another id; adding the same
  // package again is OK and changes nothing. created_ms 0 means now.
  absl::Status AddPackage(const PackageRow& p, const std::string& manifest_bytes,
                          AuditEntry* audit = nullptr);
  absl::StatusOr<PackageRow> FindPackage(const std::string& name, const std::string& version);
  absl::StatusOr<PackageRow> GetPackageById(const std::string& id);
  // Replaces the package's signature (serialized PackageSignature).
  // NOT_FOUND for an unknown id.
  // `detail` goes into the package_signed event ("key K sequence N").
  absl::Status SetPackageSignature(const std::string& id, const std::string& signature,
                                   const std::string& detail = "", AuditEntry* audit = nullptr);
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
  absl::StatusOr<std::vector<std::string>> DeletePackage(const std::string& id, bool force,
                                                         AuditEntry* audit = nullptr);

  // --- Jobs. Creates the job and one pending target per agent in one
  // transaction. bytes_total of each target is `bytes_total`.
  // NOT_FOUND for an unknown agent or package; INVALID_ARGUMENT for no
  // agents or an agent listed twice. The id is 16 random hex digits.
  absl::StatusOr<JobRow> CreateJob(JobKind kind, const std::string& package_id,
                                   const std::vector<std::string>& agents,
                                   const JobPolicy& policy, uint64_t bytes_total,
                                   AuditEntry* audit = nullptr);
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
  absl::Status DeleteJob(const std::string& id, AuditEntry* audit = nullptr);
  // Deletes every job whose targets are all final and whose last target
  // changed at or before `before_ms` (job retention). Returns how many.
  absl::StatusOr<int> PruneFinishedJobs(int64_t before_ms);

  // --- Target transitions; each is one transaction, checked by
  // CheckTransition (FAILED_PRECONDITION on an illegal edge, NOT_FOUND for an
  // unknown job/agent pair).
  // pending|retry_wait -> transferring; attempts += 1.
  absl::Status StartAttempt(const std::string& job, const std::string& agent);
  // Progress of a transferring target: sets bytes_acked, adds to bytes_sent
  // bytes_reused and bytes_from_peer; if `made_progress`, resets
  // consecutive_failures.
  absl::Status RecordProgress(const std::string& job, const std::string& agent,
                              uint64_t bytes_acked, uint64_t bytes_sent_delta,
                              bool made_progress, uint64_t bytes_reused_delta = 0,
                              uint64_t bytes_from_peer_delta = 0);
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
                             const std::string& reason, AuditEntry* audit = nullptr);
  // retry_wait|failed targets of the job (only `agent`'s if not empty) ->
  // retry_wait due now, consecutive_failures = 0. Returns how many changed.
  absl::StatusOr<int> RetryNow(const std::string& job, const std::string& agent,
                               AuditEntry* audit = nullptr);
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
  // agent, skipping agents in `busy` and targets `admit` (if set) refuses;
  // `admit` is asked in that order and may count what it admits.
  using AdmitFn = std::function<bool(const TargetRow& t, JobKind kind)>;
  absl::StatusOr<std::vector<TargetRow>> RunnableTargets(size_t limit,
                                                         const std::vector<std::string>& busy,
                                                         const AdmitFn& admit = nullptr);
  // The earliest next_attempt_ms among retry_wait targets, if any.
  absl::StatusOr<std::optional<int64_t>> NextWakeupMs();
  // Start-up recovery: every transferring target (its transfer died with the
  // previous process) -> retry_wait due now, with last_error saying so.
  absl::StatusOr<int> RecoverInterrupted();

  // --- Audit trail and events.
  // Writes `entry` with `outcome` (its code and message; for OK, the
  // entry's result) in a transaction of its own: for a call that changed
  // nothing. Sets entry.recorded.
  absl::Status RecordAudit(AuditEntry& entry, const absl::Status& outcome);
  // Oldest first; only records after sequence `after`; at most `limit` (0:
  // all) that match the filter.
  absl::StatusOr<std::vector<AuditRow>> ListAudit(const AuditFilter& filter, int64_t after = 0,
                                                  size_t limit = 0);
  // The events after sequence `after` (at most `limit`, 0: all) and the
  // range kept, in one read transaction; with `progress`, also every
  // transferring target (only if the events did not fill the limit).
  absl::StatusOr<EventBatch> ReadEvents(int64_t after, size_t limit, bool progress = false);
  // The sequence of the newest event committed (0 if none).
  int64_t newest_event();
  // Blocks until an event after `after` is committed, `*stop` (if given)
  // is true, or `timeout` passes; returns newest_event().
  int64_t WaitForEvent(int64_t after, absl::Duration timeout,
                       const std::atomic<bool>* stop = nullptr);
  // Wakes every WaitForChange and WaitForEvent to look at its `stop` flag
  // (a server shutting down sets the flag, then calls this).
  void WakeWaiters();

  // --- Change notification. version() grows with every committed
  // transaction that changed a row (not with reads or no-op mutations); it
  // starts at 0 on every Open.
  uint64_t version();
  // Blocks until version() > `seen`, `*stop` (if given) is true, or
  // `timeout` passes; returns version().
  uint64_t WaitForChange(uint64_t seen, absl::Duration timeout,
                         const std::atomic<bool>* stop = nullptr);
  // Write transactions committed since Open (changing rows or not), for
  // the controller's periodic statistics line and the scale benchmark.
  uint64_t transactions();
  // Called after every committed write transaction with how long it took
  // (BEGIN to COMMIT, fsync included), for the metrics. Set before use.
  void set_commit_observer(std::function<void(absl::Duration)> observer) {
    commit_observer_ = std::move(observer);
  }

 private:
  StateStore(sqlite3* db, sqlite3* read_db, const Clock* clock, StoreOptions options,
             int64_t newest_event);

  // Changes one column of agent `name` (`labels` or `rate`) in one
  // transaction: `change` alters the row and returns the column's text
  // before and after. A change writes the column, an agent_updated event
  // "COLUMN AFTER" and the audit result "COLUMN BEFORE -> AFTER" (each side
  // in quotes if `quote`). NOT_FOUND if unknown.
  absl::StatusOr<AgentRow> ChangeAgent(
      const std::string& name, absl::string_view column, bool quote,
      absl::FunctionRef<std::pair<std::string, std::string>(AgentRow&)> change,
      AuditEntry* audit);

  // Runs `fn` inside one BEGIN IMMEDIATE ... COMMIT transaction with a
  // ChangeLog over the connection and the clock's time, then completes the
  // log (job_finished events, event pruning) and writes `audit` (if given)
  // as an OK record; rolls back if any of it or the commit fails. Bumps the
  // version (waking waiters) if the transaction changed any row.
  absl::Status Transact(absl::FunctionRef<absl::Status(ChangeLog& log)> fn,
                        AuditEntry* audit = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the read-only `fn` on the reader connection under its lock.
  absl::Status Read(absl::FunctionRef<absl::Status(sqlite3* db, int64_t now_ms)> fn)
      ABSL_LOCKS_EXCLUDED(mu_, read_mu_);

  absl::Mutex mu_ ABSL_ACQUIRED_BEFORE(version_mu_);
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  absl::Mutex read_mu_;
  sqlite3* read_db_ ABSL_GUARDED_BY(read_mu_);  // null: reads share db_
  const Clock* clock_;
  const StoreOptions options_;
  absl::Mutex version_mu_;
  uint64_t version_ ABSL_GUARDED_BY(version_mu_) = 0;
  int64_t newest_event_ ABSL_GUARDED_BY(version_mu_) = 0;
  uint64_t transactions_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(absl::Duration)> commit_observer_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_STATE_STORE_H_
