// The distribution engine: turns targets into transfers and failures into
// retries, so that no target is ever dropped.
//
// One scheduler thread does all of the engine's work with the state store.
// It wakes when kicked (new job, operator retry, an attempt ended) and every
// tick while anything is active or waiting. Each pass it (1) writes the
// progress that transfers reported since the last write, coalesced into one
// transaction per interval, (2) records the attempts that ended (done, or a
// failed attempt with its backoff), (3) fails targets past their job's
// deadline, (4) wakes the retry_wait targets of agents whose channel came
// back READY, (5) ticks every active transfer (pacing, silent-agent
// detection) and (6) starts runnable targets up to the concurrency limit, at
// most one per agent. Transfers and removals are gRPC callback reactors:
// their callbacks only queue what happened and never touch the store, so
// no gRPC thread waits for a disk.
//
// An ended attempt stays active until its outcome is durable: if the store
// cannot write it (disk full, I/O error) it is retried every pass, the
// target is never left `transferring` with nothing running, and
// store_health() says what is failing.
//
// Stop() is not a failure: attempts it cancels are not recorded, their
// targets stay `transferring` and are recovered at the next start
// (StateStore::RecoverInterrupted) exactly as after a crash, without
// counting an attempt. Stop() returns only after every callback of every
// transfer and removal has returned, so the engine, the pool and the store
// may be destroyed right after it.
//
// Thread-safe.
#ifndef PKGDIST_CONTROLLER_ENGINE_H_
#define PKGDIST_CONTROLLER_ENGINE_H_

#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "controller/agent_pool.h"
#include "controller/bandwidth.h"
#include "controller/manifest_cache.h"
#include "controller/manifest_deltas.h"
#include "controller/metrics.h"
#include "controller/package_store.h"
#include "controller/state_store.h"
#include "controller/transfer.h"
#include "shared/clock.h"

namespace pkgdist {

class Engine {
 public:
  struct Options {
    int detect_seconds = 15;
    BackoffPolicy backoff;
    uint64_t window_bytes = kDefaultWindowBytes;
    size_t max_concurrent = 64;
    uint64_t max_bytes_per_second = 0;
    int tick_ms = 100;
    // Progress is written at most this often (one transaction for every
    // transfer's progress): as often as a transfer reports it, so that
    // status shows what the transfers report, at 4 transactions a second
    // however many transfers run.
    int progress_interval_ms = 250;
    size_t manifest_cache_bytes = size_t{64} << 20;
    // Finished jobs whose last change is older than this are deleted; 0
    // keeps them forever.
    int64_t job_retention_ms = 0;
    // Counts attempts, their outcomes and their chunks; null counts
    // nothing. Must outlive the engine.
    ControllerMetrics* metrics = nullptr;
  };

  Engine(Options options, StateStore* store, PackageStore* packages, AgentPool* pool,
         const Clock* clock);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void Start();
  // See the file comment. Safe to call more than once.
  void Stop();
  // Something changed (a job, a retry, an agent): look again now.
  void Kick();

  // Cancels running attempts of `job_id` (all of its agents if `agent` is
  // empty), or of every job for `agent` if `job_id` is empty.
  void CancelActive(const std::string& job_id, const std::string& agent, const std::string& why);
  // The agent was removed: stop watching its channel.
  void ForgetAgent(const std::string& agent);
  // The agent was registered or changed (labels, rate): its limits follow.
  void AgentChanged(const AgentRow& row);

  // The shared bandwidth limits (docs/sites.md), loaded from the store by
  // Start(); the admin service tells them each change it stores.
  Bandwidth& bandwidth() { return bandwidth_; }
  // Transfers running to agents of `site`.
  uint32_t ActiveTransfersAt(const std::string& site);

  // How many transfers and removals are running (or await their record).
  size_t ActiveCount();
  // How many agents the engine watches for their return (after a failed
  // attempt), dialling each every pass.
  size_t AwaitedCount();

  struct StoreHealth {
    std::string error;     // "" while every write succeeds
    int64_t since_ms = 0;  // first failure of the current run of failures
    size_t unrecorded = 0;  // ended attempts waiting to be written
  };
  StoreHealth store_health();

 private:
  struct Active {
    std::string job_id;
    std::string address;
    uint64_t seq = 0;  // tells this attempt from the agent's next one
    int64_t started_ms = 0;
    JobKind kind = JobKind::kDistribute;
    std::string package;  // name@version, for logs
    std::string site;     // the agent's site when a transfer started ("": none)
    std::shared_ptr<TransferCall> transfer;          // a distribution
    std::shared_ptr<grpc::ClientContext> removal;    // or a removal
    bool stopping = false;  // cancelled by Stop(): its end is not recorded
    bool ended = false;     // its outcome is queued
  };
  struct Outcome {
    std::string job_id;
    std::string agent;
    uint64_t seq = 0;
    int64_t started_ms = 0;
    absl::Status result;
    bool by_stop = false;
    JobKind kind = JobKind::kDistribute;
    std::string package;
  };
  // Which chunks of a target this process has sent it (with metrics only:
  // pkgdist_controller_resent_bytes_total); one bit per chunk, kept from
  // the target's first attempt until it is final.
  struct SentChunks {
    std::shared_ptr<std::vector<bool>> chunks;
    int64_t used_ms = 0;
  };
  struct Waiting {
    std::string address;
    bool seen_not_ready = false;
  };
  // Relays (docs/sites.md): per distribution job and site, the job's agents
  // of that site and the one (the relay) that receives the package from
  // us; the others fetch it from the relay once it has answered its Offer.
  struct SiteRelay {
    std::vector<std::string> members;  // by name
    std::string relay;
    bool relay_done = false;  // the relay published the package in this job
    bool relay_bad = false;   // a peer could not fetch from it: send directly
    int64_t held_since_ms = 0;  // a peer first waited for a relay not started
    int64_t used_ms = 0;
  };
  enum class PeerPlan { kDirect, kFromRelay, kWait };
  using TargetKey = std::pair<std::string, std::string>;  // job, agent

  void Run();
  void Pass();
  // Writes the progress gathered since the last flush (every
  // progress_interval_ms, or now if `force`); false if the store refused it,
  // which is then kept for the next try.
  bool FlushProgress(bool force);
  void RecordOutcomes();
  // Writes one outcome; sets *wait_for_agent if the agent should be watched
  // for its return. Non-OK only for a write to retry.
  absl::Status Record(const Outcome& o, bool* wait_for_agent);
  void NoteStore(const absl::Status& s, const char* what);
  void StartTarget(const TargetRow& t);
  absl::Status StartTransfer(const TargetRow& t, const JobRow& job, const std::string& address,
                             uint64_t seq);
  void StartRemoval(const TargetRow& t, const JobRow& job, const std::string& address,
                    uint64_t seq);
  // Called from gRPC threads: queue only.
  void OnProgress(const std::string& job_id, const std::string& agent,
                  const TransferCall::Progress& p);
  void Finish(const std::string& job_id, const std::string& agent, uint64_t seq,
              absl::Status result);
  void WakeReturnedAgents();
  // The stored limits into bandwidth_ (at Start).
  absl::Status LoadLimits();
  // Whether a runnable target may start now: a distribution waits while
  // its site is paused or at its max_transfers. Counts into `site_active`.
  bool Admit(const TargetRow& t, JobKind kind,
             absl::flat_hash_map<std::string, uint32_t>& site_active);
  // The relay of `job_id` at `site`, or null if its members are not loaded
  // yet (they are, after the pass, by LoadRelays).
  SiteRelay* RelayOf(const std::string& job_id, const std::string& site)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // How target `agent` of a site in a job gets its chunks.
  PeerPlan PlanPeer(SiteRelay& r, const std::string& job_id, const std::string& agent)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Loads the site members of the jobs in relays_to_load_, and picks their
  // relays: the site's configured relay if it is a member, else the first
  // member whose channel is ready (else the first).
  void LoadRelays();
  void PruneJobs();
  // The target will not be sent anything again: forget its SentChunks.
  void ForgetSent(const std::string& job_id, const std::string& agent);
  // Drops SentChunks of targets unused for a day (failed by a deadline,
  // say, which the engine does not see).
  void PruneSent();
  // Records the end of an attempt in the metrics (after it was written).
  void CountOutcome(const Outcome& o, const std::string& failure_reason);
  // Every minute (and at Stop): one info line with the store's write
  // transactions and the engine's active and waiting counts.
  void LogStats(bool force);
  absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> ManifestFor(const std::string& id);
  // The packages `m` (id `id`, hex) may go out as a delta of: the newest
  // other versions of its name, raw ids; none for a small manifest.
  std::vector<std::string> DeltaBasesFor(const pkgdist::v1::Manifest& m, const std::string& id);
  double Random();

  const Options options_;
  StateStore* store_;
  PackageStore* packages_;
  AgentPool* pool_;
  const Clock* clock_;
  Bandwidth bandwidth_{clock_};
  ManifestCache manifests_;
  // Before read_pool_, whose jobs use it: destroyed after the pool's join.
  ManifestDeltas deltas_{[this](const std::string& id) { return ManifestFor(id); }};
  // Reads package content ahead for the transfers. Joined in ~Engine, after
  // Stop(): a read still queued then finds its call ended and does nothing.
  ReadPool read_pool_{2};

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, Active> active_ ABSL_GUARDED_BY(mu_);    // by agent
  absl::flat_hash_map<std::string, Waiting> waiting_ ABSL_GUARDED_BY(mu_);  // by agent
  std::deque<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TargetKey, ProgressUpdate> progress_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TargetKey, SentChunks> sent_ ABSL_GUARDED_BY(mu_);
  using SiteKey = std::pair<std::string, std::string>;  // job, site
  absl::flat_hash_map<SiteKey, SiteRelay> relays_ ABSL_GUARDED_BY(mu_);
  // Engine thread only: jobs whose relays Admit found unloaded, and the
  // source Admit chose for each agent it admitted this pass.
  absl::flat_hash_set<std::string> relays_to_load_;
  absl::flat_hash_map<std::string, std::string> planned_source_;
  StoreHealth health_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;

  // Engine thread only.
  int64_t last_progress_flush_ms_ = 0;
  int64_t last_prune_ms_ = 0;
  int64_t last_sent_prune_ms_ = 0;
  int64_t stats_ms_ = 0;
  uint64_t stats_transactions_ = 0;
  int64_t started_ms_ = 0;
  bool pass_failed_ = false;
  // A progress batch failed and waits in progress_ for the next interval:
  // the store is not healthy until a flush succeeds, even on the passes
  // between that write nothing.
  bool progress_unwritten_ = false;
  int64_t last_store_log_ms_ = 0;
};

// "UNAVAILABLE: failed to connect..." — how an attempt's error reads in
// status and logs.
std::string DescribeError(const absl::Status& s);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_ENGINE_H_
