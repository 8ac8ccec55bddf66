#include "controller/metrics.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "controller/admin_call_metrics.h"
#include "controller/state_metrics.h"
#include "controller/state_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/clock.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

using ::testing::Pair;
using ::testing::UnorderedElementsAre;
using prometheus::MetricType;

std::map<std::string, MetricType> Types(const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, MetricType> out;
  for (const auto& f : families) out[f.name] = f.type;
  return out;
}

const prometheus::MetricFamily& Family(const std::vector<prometheus::MetricFamily>& families,
                                       const std::string& name) {
  for (const auto& f : families) {
    if (f.name == name) return f;
  }
  static const prometheus::MetricFamily none;
  ADD_FAILURE() << "no family " << name;
  return none;
}

// label value -> gauge (or counter) value, for a family with one label.
std::map<std::string, double> ByLabel(const prometheus::MetricFamily& f) {
  std::map<std::string, double> out;
  for (const auto& m : f.metric) {
    std::string label = m.label.empty() ? "" : m.label[0].value;
    out[label] = f.type == MetricType::Counter ? m.counter.value : m.gauge.value;
  }
  return out;
}

// (method, code) -> value, for the admin calls.
std::map<std::pair<std::string, std::string>, double> ByLabelPairs(
    const prometheus::MetricFamily& f) {
  std::map<std::pair<std::string, std::string>, double> out;
  for (const auto& m : f.metric) {
    std::string method, code;
    for (const auto& l : m.label) (l.name == "method" ? method : code) = l.value;
    out[{method, code}] = m.counter.value;
  }
  return out;
}

TEST(ControllerMetricsTest, RegistersEveryFamilyWithItsType) {
  // The names and types the README lists for the counters and histograms
  // (admin calls once the interceptor knows the service's methods).
  ControllerMetrics m;
  auto interceptors = MakeAdminCallMetrics(&m);
  EXPECT_THAT(Types(m.registry()->Collect()),
              UnorderedElementsAre(
                  Pair("pkgdist_controller_sent_bytes_total", MetricType::Counter),
                  Pair("pkgdist_controller_resent_bytes_total", MetricType::Counter),
                  Pair("pkgdist_controller_acked_bytes_total", MetricType::Counter),
                  Pair("pkgdist_controller_acked_chunks_total", MetricType::Counter),
                  Pair("pkgdist_controller_attempts_total", MetricType::Counter),
                  Pair("pkgdist_controller_attempt_failures_total", MetricType::Counter),
                  Pair("pkgdist_controller_transfer_duration_seconds", MetricType::Histogram),
                  Pair("pkgdist_controller_store_transaction_duration_seconds",
                       MetricType::Histogram),
                  Pair("pkgdist_controller_admin_calls_total", MetricType::Counter)));
}

TEST(ControllerMetricsTest, CountsWhatItIsTold) {
  // A re-sent chunk counts in both byte counters; failures count by reason,
  // which exist at zero before the first.
  ControllerMetrics m;
  m.ChunkSent(100, false);
  m.ChunkSent(40, true);
  m.ChunksAcked(2, 140);
  m.AttemptStarted(JobKind::kDistribute);
  m.AttemptFailed("unavailable");
  m.AttemptFailed("unavailable");
  m.TransferEnded(true, absl::Seconds(3));
  m.AdminCallEnded("Distribute", grpc::StatusCode::NOT_FOUND);
  auto families = m.registry()->Collect();
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_sent_bytes_total"))[""], 140);
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_resent_bytes_total"))[""], 40);
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_acked_chunks_total"))[""], 2);
  auto failures = ByLabel(Family(families, "pkgdist_controller_attempt_failures_total"));
  EXPECT_EQ(failures["unavailable"], 2);
  EXPECT_EQ(failures.count("data_loss"), 1u);
  EXPECT_EQ(failures.count("identity_mismatch"), 1u);
  EXPECT_EQ(failures.count("ok"), 0u);
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_attempts_total"))["distribute"], 1);
  EXPECT_THAT(ByLabelPairs(Family(families, "pkgdist_controller_admin_calls_total")),
              UnorderedElementsAre(Pair(Pair("Distribute", "not_found"), 1)));
  const auto& durations = Family(families, "pkgdist_controller_transfer_duration_seconds");
  uint64_t observed = 0;
  for (const auto& h : durations.metric) observed += h.histogram.sample_count;
  EXPECT_EQ(observed, 1u);
}

TEST(AdminCallMetricsTest, KnowsEveryAdminMethodAtZero) {
  // Each method of pkgdist.v1.Admin has an "ok" series from the start.
  ControllerMetrics m;
  auto interceptors = MakeAdminCallMetrics(&m);
  auto calls = ByLabelPairs(Family(m.registry()->Collect(), "pkgdist_controller_admin_calls_total"));
  EXPECT_EQ(calls.count({"Distribute", "ok"}), 1u);
  EXPECT_EQ(calls.count({"GetJob", "ok"}), 1u);
  EXPECT_EQ(calls.count({"ImportPackage", "ok"}), 1u);
  for (const auto& [labels, value] : calls) EXPECT_EQ(value, 0) << labels.first;
}

class StateMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("state_metrics_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    path_ = dir_->path() + "/state.db";
    auto store = StateStore::Open(path_, &clock_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::string NewJob(const std::vector<std::string>& agents) {
    for (const auto& a : agents) EXPECT_TRUE(store_->AddAgent(a, a + ".example:7000").ok());
    PackageRow p{std::string(64, '1'), "app", "1.0", 300, 2, 3, 0};
    EXPECT_TRUE(store_->AddPackage(p, "manifest").ok());
    auto job = store_->CreateJob(JobKind::kDistribute, p.id, agents, {}, 300);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->id : "";
  }

  FakeClock clock_;
  std::optional<TempDir> dir_;
  std::string path_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StateMetricsTest, CountsTargetsJobsAndAgentsByStateAtScrape) {
  // One job half done, one complete, one not started: every state appears,
  // counted from the database at each scrape.
  std::string half = NewJob({"dp1", "dp2"});
  std::string complete = NewJob({"dp3"});
  NewJob({"dp1"});
  ASSERT_TRUE(store_->StartAttempt(half, "dp1").ok());
  ASSERT_TRUE(store_->MarkDone(half, "dp1").ok());
  ASSERT_TRUE(store_->StartAttempt(complete, "dp3").ok());
  ASSERT_TRUE(store_->MarkDone(complete, "dp3").ok());
  auto metrics = StateMetrics::Open(path_, nullptr, nullptr);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto families = (*metrics)->Collect();
  EXPECT_THAT(Types(families),
              UnorderedElementsAre(Pair("pkgdist_controller_targets", MetricType::Gauge),
                                   Pair("pkgdist_controller_jobs", MetricType::Gauge),
                                   Pair("pkgdist_controller_agents", MetricType::Gauge)));
  auto targets = ByLabel(Family(families, "pkgdist_controller_targets"));
  EXPECT_EQ(targets, (std::map<std::string, double>{{"pending", 2}, {"transferring", 0},
                                                    {"retry_wait", 0}, {"done", 2},
                                                    {"failed", 0}, {"cancelled", 0}}));
  auto jobs = ByLabel(Family(families, "pkgdist_controller_jobs"));
  EXPECT_EQ(jobs, (std::map<std::string, double>{{"pending", 1}, {"in_progress", 1},
                                                 {"complete", 1}, {"failed", 0},
                                                 {"cancelled", 0}}));
  auto agents = ByLabel(Family(families, "pkgdist_controller_agents"));
  EXPECT_EQ(agents, (std::map<std::string, double>{{"idle", 3}, {"connecting", 0},
                                                   {"ready", 0}, {"unreachable", 0}}));

  // A later change shows at the next scrape.
  ASSERT_TRUE(store_->Cancel(half, "", "test").ok());
  families = (*metrics)->Collect();
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_targets"))["cancelled"], 1);
  EXPECT_EQ(ByLabel(Family(families, "pkgdist_controller_jobs"))["cancelled"], 1);
}

}  // namespace
}  // namespace pkgdist
