// The distribution engine: turns targets into transfers and failures into
// retries, so that no target is ever dropped.
//
// One scheduler thread wakes when kicked (new job, operator retry), when a
// transfer ends, and every tick while anything is active or waiting. Each
// pass it (1) fails targets past their job's deadline, (2) wakes the
// retry_wait targets of agents whose channel came back READY, (3) starts
// runnable targets (pending, or retry_wait and due) up to the concurrency
// limit, at most one per agent, and (4) ticks every active transfer
// (bandwidth pacing, silent-agent detection). Transfers themselves are
// callback reactors: no thread per agent.
//
// Every outcome is written to the StateStore before the engine forgets it.
// Thread-safe.
#ifndef PKGDIST_CONTROLLER_ENGINE_H_
#define PKGDIST_CONTROLLER_ENGINE_H_

#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "controller/agent_pool.h"
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
  };

  Engine(Options options, StateStore* store, PackageStore* packages, AgentPool* pool,
         const Clock* clock);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void Start();
  // Cancels active transfers, waits for them to end, joins the thread. Their
  // targets stay `transferring` in the store and are recovered at the next
  // start (StateStore::RecoverInterrupted).
  void Stop();
  // Something changed (a job, a retry, an agent): look again now.
  void Kick();

  // Cancels running attempts of `job_id` (all of its agents if `agent` is
  // empty), or of every job for `agent` if `job_id` is empty.
  void CancelActive(const std::string& job_id, const std::string& agent, const std::string& why);

  // How many transfers and removals are running now.
  size_t ActiveCount();

 private:
  struct Active {
    std::string job_id;
    std::shared_ptr<TransferCall> transfer;  // null for a removal
    int64_t started_ms = 0;
  };
  struct Waiting {
    std::string address;
    bool seen_not_ready = false;
  };

  void Run();
  void Pass();
  void StartTarget(const TargetRow& t);
  absl::Status StartTransfer(const TargetRow& t, const JobView& job, const std::string& address,
                             int64_t started_ms);
  void StartRemoval(const TargetRow& t, const JobView& job, const std::string& address,
                    int64_t started_ms);
  // Records the end of an attempt; called from gRPC threads.
  void Finish(const std::string& job_id, const std::string& agent, int64_t started_ms,
              const absl::Status& result);
  void WakeReturnedAgents();
  absl::StatusOr<std::shared_ptr<const pkgdist::v1::Manifest>> ManifestFor(const std::string& id);
  double Random();

  const Options options_;
  StateStore* store_;
  PackageStore* packages_;
  AgentPool* pool_;
  const Clock* clock_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, Active> active_ ABSL_GUARDED_BY(mu_);  // by agent
  absl::flat_hash_map<std::string, Waiting> waiting_ ABSL_GUARDED_BY(mu_);  // by agent
  absl::flat_hash_map<std::string, std::shared_ptr<const pkgdist::v1::Manifest>> manifests_
      ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// "UNAVAILABLE: failed to connect..." — how an attempt's error reads in
// status and logs.
std::string DescribeError(const absl::Status& s);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_ENGINE_H_
