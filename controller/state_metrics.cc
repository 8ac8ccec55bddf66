#include "controller/state_metrics.h"

#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "controller/target_state.h"
#include "shared/logging.h"
#include "shared/metrics.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr int kBusyTimeoutMs = 5000;

constexpr TargetState kTargetStates[] = {TargetState::kPending,  TargetState::kTransferring,
                                         TargetState::kRetryWait, TargetState::kDone,
                                         TargetState::kFailed,   TargetState::kCancelled};
constexpr JobState kJobStates[] = {JobState::kPending, JobState::kInProgress, JobState::kComplete,
                                   JobState::kFailed, JobState::kCancelled};

using Values = std::vector<std::pair<std::string, double>>;

absl::StatusOr<Values> TargetsByState(sqlite3* db) {
  absl::flat_hash_map<std::string, double> counts;
  Statement st(db, "SELECT state, COUNT(*) FROM targets GROUP BY state");
  for (;;) {
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    counts[st.Text(0)] = static_cast<double>(st.Int(1));
  }
  Values out;
  for (TargetState s : kTargetStates) {
    std::string name(TargetStateName(s));
    out.emplace_back(name, counts[name]);
  }
  return out;
}

absl::StatusOr<int64_t> RegisteredAgents(sqlite3* db) {
  Statement st(db, "SELECT COUNT(*) FROM agents");
  ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 0;
}

}  // namespace

absl::StatusOr<std::shared_ptr<StateMetrics>> StateMetrics::Open(const std::string& db_path,
                                                                 Engine* engine, AgentPool* pool) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(db_path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  DbHandle db(raw);
  if (rc != SQLITE_OK) return SqliteStatus(db.get(), rc, "open the state database for metrics");
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return std::shared_ptr<StateMetrics>(new StateMetrics(std::move(db), engine, pool));
}

absl::StatusOr<std::vector<std::pair<std::string, double>>> StateMetrics::JobsByState() const {
  std::vector<std::string> ids;
  Statement all(db_.get(), "SELECT id FROM jobs");
  for (;;) {
    ASSIGN_OR_RETURN(bool row, all.Step());
    if (!row) break;
    ids.push_back(all.Text(0));
  }
  absl::flat_hash_map<JobState, double> counts;
  absl::flat_hash_map<std::string, JobState> settled;
  Statement states(db_.get(), "SELECT DISTINCT state FROM targets WHERE job_id = ?");
  std::vector<TargetState> present;
  for (const std::string& id : ids) {
    JobState state;
    if (auto it = settled_.find(id); it != settled_.end()) {
      state = it->second;
    } else {
      present.clear();
      states.Reset();
      states.BindText(id);
      for (;;) {
        ASSIGN_OR_RETURN(bool row, states.Step());
        if (!row) break;
        ASSIGN_OR_RETURN(TargetState s, ParseTargetState(states.Text(0)));
        present.push_back(s);
      }
      // The states present decide the job's (DeriveJobState looks at no
      // more); no targets at all is pending.
      state = DeriveJobState(present);
    }
    counts[state] += 1;
    if (state == JobState::kComplete || state == JobState::kCancelled) settled[id] = state;
  }
  settled_ = std::move(settled);  // deleted jobs drop out
  std::vector<std::pair<std::string, double>> out;
  for (JobState s : kJobStates) out.emplace_back(std::string(JobStateName(s)), counts[s]);
  return out;
}

namespace {

// Counters read off the bandwidth limits at a scrape, one per label value.
prometheus::MetricFamily CounterFamily(std::string name, std::string help, const std::string& label,
                                       const std::vector<std::pair<std::string, double>>& values) {
  prometheus::MetricFamily f{std::move(name), std::move(help), prometheus::MetricType::Counter, {}};
  for (const auto& [value_label, value] : values) {
    prometheus::ClientMetric m;
    m.label.push_back(prometheus::ClientMetric::Label{label, value_label});
    m.counter.value = value;
    f.metric.push_back(std::move(m));
  }
  return f;
}

// A rate in force as a gauge: +Inf unlimited, 0 paused.
double RateValue(const Rate& r) {
  if (r.unlimited()) return std::numeric_limits<double>::infinity();
  return r.paused() ? 0.0 : static_cast<double>(r.bytes_per_second);
}

// pkgdist_controller_site_sent_bytes_total{site}, ..._site_rate_limit_bytes{site},
// ..._egress_sent_bytes_total and ..._egress_rate_limit_bytes.
void CollectLimits(Bandwidth& bandwidth, std::vector<prometheus::MetricFamily>* out) {
  std::vector<std::pair<std::string, double>> sent, limit;
  for (const auto& [site, u] : bandwidth.AllSites()) {
    sent.emplace_back(site, static_cast<double>(u.bytes_sent));
    limit.emplace_back(site, RateValue(u.rate_now));
  }
  out->push_back(CounterFamily("pkgdist_controller_site_sent_bytes_total",
                               "Chunk bytes sent to a site's agents (across its link) since the "
                               "controller started", "site", sent));
  out->push_back(GaugeFamily("pkgdist_controller_site_rate_limit_bytes",
                             "A site's limit in force now, bytes per second (+Inf: none, 0: paused)",
                             "site", limit));
  Bandwidth::Usage egress = bandwidth.EgressUsage();
  prometheus::MetricFamily total = CounterFamily(
      "pkgdist_controller_egress_sent_bytes_total", "Chunk bytes sent to all agents since the "
      "controller started", "", {});
  prometheus::ClientMetric m;
  m.counter.value = static_cast<double>(egress.bytes_sent);
  total.metric.push_back(std::move(m));
  out->push_back(std::move(total));
  out->push_back(GaugeFamily("pkgdist_controller_egress_rate_limit_bytes",
                             "The egress limit in force, bytes per second (+Inf: none, 0: paused)",
                             "", {{"", RateValue(egress.rate_now)}}));
}

}  // namespace

absl::Status StateMetrics::CollectStore(std::vector<prometheus::MetricFamily>* out) const {
  // One read transaction: the three counts are of the same moment.
  RETURN_IF_ERROR(ExecSql(db_.get(), "BEGIN"));
  auto targets = TargetsByState(db_.get());
  auto jobs = targets.ok() ? JobsByState() : targets.status();
  auto agents = jobs.ok() ? RegisteredAgents(db_.get()) : jobs.status();
  (void)ExecSql(db_.get(), "COMMIT");
  RETURN_IF_ERROR(agents.status());
  out->push_back(GaugeFamily("pkgdist_controller_targets",
                             "Targets in the state database, by state", "state", *targets));
  out->push_back(GaugeFamily("pkgdist_controller_jobs",
                             "Jobs in the state database, by derived state", "state", *jobs));
  absl::flat_hash_map<pkgdist::v1::ConnectionState, int> open;
  if (pool_ != nullptr) open = pool_->CountOpenConnections();
  double ready = open[pkgdist::v1::CONNECTION_STATE_READY];
  double connecting = open[pkgdist::v1::CONNECTION_STATE_CONNECTING];
  double unreachable = open[pkgdist::v1::CONNECTION_STATE_UNREACHABLE];
  double idle = std::max(0.0, static_cast<double>(*agents) - ready - connecting - unreachable);
  out->push_back(GaugeFamily("pkgdist_controller_agents",
                             "Registered agents, by the state of the controller's connection "
                             "(idle: no connection open, as between attempts)",
                             "connection",
                             {{"idle", idle}, {"connecting", connecting}, {"ready", ready},
                              {"unreachable", unreachable}}));
  return absl::OkStatus();
}

std::vector<prometheus::MetricFamily> StateMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  {
    absl::MutexLock l(&mu_);
    if (absl::Status s = CollectStore(&out); !s.ok()) {
      spdlog::debug("metrics: reading the state database: {}", s);
    }
  }
  if (engine_ != nullptr) {
    out.push_back(GaugeFamily("pkgdist_controller_transfers_active",
                              "Attempts (transfers and removals) running or awaiting their record",
                              "", {{"", static_cast<double>(engine_->ActiveCount())}}));
    CollectLimits(engine_->bandwidth(), &out);
    out.push_back(GaugeFamily("pkgdist_controller_store_failing",
                              "1 while the controller cannot write its state database",
                              "", {{"", engine_->store_health().error.empty() ? 0.0 : 1.0}}));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> ServeControllerMetrics(
    const std::string& listen, const std::string& db_path, ControllerMetrics* metrics,
    Engine* engine, AgentPool* pool) {
  ASSIGN_OR_RETURN(std::shared_ptr<StateMetrics> state, StateMetrics::Open(db_path, engine, pool));
  ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> server, MetricsServer::Start(listen));
  server->Register(metrics->registry());
  server->Register(std::move(state));
  spdlog::info("serving metrics on http://{}:{}/metrics", listen.substr(0, listen.rfind(':')),
               server->port());
  return server;
}

}  // namespace pkgdist
