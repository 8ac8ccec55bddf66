// The controller's gauges, computed at each scrape rather than kept up to
// date on every transition (README, "Metrics"):
//   pkgdist_controller_targets{state}       targets in the state database
//   pkgdist_controller_jobs{state}          jobs, by their derived state
//   pkgdist_controller_agents{connection}   registered agents by connection
//   pkgdist_controller_transfers_active     attempts running (the engine's)
//   pkgdist_controller_store_failing        1 while state writes fail
//
// The counts come from a read-only SQLite connection of its own to the
// state database (WAL: it never waits for the store's writer, and takes no
// lock of the store): one GROUP BY over the targets' state index, and per
// job the set of its targets' states, which gives the job's state through
// DeriveJobState as every read of a job does. A job found complete or
// cancelled stays so and is not read again: a scrape reads the targets of
// the jobs that can still change, not the whole history (1,000,000
// targets of finished jobs: 45 ms). Registered agents without an open
// channel are idle; the pool knows the others.
//
// Thread-safe (scrapes may run in parallel); `engine` and `pool` (either
// may be null) must outlive it.
#ifndef PKGDIST_CONTROLLER_STATE_METRICS_H_
#define PKGDIST_CONTROLLER_STATE_METRICS_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/agent_pool.h"
#include "controller/engine.h"
#include "controller/metrics.h"
#include "controller/sqlite_util.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "shared/metrics.h"

namespace pkgdist {

class StateMetrics final : public prometheus::Collectable {
 public:
  // Opens `db_path` (the state store's database, which must exist) read-only.
  static absl::StatusOr<std::shared_ptr<StateMetrics>> Open(const std::string& db_path,
                                                           Engine* engine, AgentPool* pool);

  // The families above; those read from the database are left out of a
  // scrape whose read fails (and the failure is logged at debug level).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  StateMetrics(DbHandle db, Engine* engine, AgentPool* pool)
      : db_(std::move(db)), engine_(engine), pool_(pool) {}

  absl::Status CollectStore(std::vector<prometheus::MetricFamily>* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::pair<std::string, double>>> JobsByState() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  DbHandle db_ ABSL_GUARDED_BY(mu_);
  // Jobs whose state can no longer change (complete: every target done;
  // cancelled: every target final, none failed), as of the last scrape:
  // only the others' targets are read again.
  mutable absl::flat_hash_map<std::string, JobState> settled_ ABSL_GUARDED_BY(mu_);
  Engine* const engine_;
  AgentPool* const pool_;
};

// Serves the controller's metrics on `listen` (MetricsServer::Start's
// errors): `metrics`' registry and the StateMetrics of `db_path`, `engine`
// and `pool`, which must all outlive the returned server.
absl::StatusOr<std::unique_ptr<MetricsServer>> ServeControllerMetrics(
    const std::string& listen, const std::string& db_path, ControllerMetrics* metrics,
    Engine* engine, AgentPool* pool);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_STATE_METRICS_H_
