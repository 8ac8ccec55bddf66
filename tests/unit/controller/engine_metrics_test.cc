// The engine's counting (Engine::Options::metrics) against scripted fake
// agents over real mutual TLS: attempts, failures by reason, durations, and
// chunks re-sent across attempts of one target.
#include <map>
#include <string>

#include "controller/engine.h"
#include "controller/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/controller/core_test_env.h"

namespace pkgdist::testing {
namespace {

constexpr size_t kSize = (3 << 20) + 12345;  // 4 chunks

bool IsDone(const TargetRow& t) { return t.state == TargetState::kDone; }

// name{label="value"} -> value (a histogram's count), from the registry.
std::map<std::string, double> Samples(ControllerMetrics& m) {
  std::map<std::string, double> out;
  for (const auto& f : m.registry()->Collect()) {
    for (const auto& s : f.metric) {
      std::string key = f.name;
      for (const auto& l : s.label) key += "{" + l.name + "=" + l.value + "}";
      out[key] = f.type == prometheus::MetricType::Histogram
                     ? static_cast<double>(s.histogram.sample_count)
                     : s.counter.value;
    }
  }
  return out;
}

class EngineMetricsTest : public CoreTest {};

TEST_F(EngineMetricsTest, CountsAttemptsFailuresAndChunksSentAgainAfterABrokenStream) {
  // The first stream breaks after a chunk and the agent needs everything
  // again: what the first attempt sent counts as re-sent, the failure as
  // aborted, and each attempt's duration by its outcome.
  FakeAgent& dp1 = AddAgent("dp1");
  dp1.Script({Behaviour::kDropMidWindow});
  std::string job = Distribute(ImportPackage("app", "1.0", kSize), {"dp1"});
  ControllerMetrics metrics;
  Engine::Options options = TestOptions();
  options.metrics = &metrics;
  StartEngine(options);
  auto waiting = WaitForTarget(job, "dp1", [](const TargetRow& t) {
    return t.state == TargetState::kRetryWait && t.attempts == 1;
  });
  ASSERT_TRUE(waiting.has_value());
  clock_.AdvanceMs(waiting->next_attempt_ms - clock_.NowMs());
  auto done = WaitForTarget(job, "dp1", IsDone);
  ASSERT_TRUE(done.has_value());
  StopEngine();  // every outcome recorded

  auto s = Samples(metrics);
  EXPECT_EQ(s["pkgdist_controller_sent_bytes_total"], static_cast<double>(done->bytes_sent));
  EXPECT_GT(done->bytes_sent, kSize);
  EXPECT_EQ(s["pkgdist_controller_resent_bytes_total"],
            static_cast<double>(done->bytes_sent - kSize));
  EXPECT_GE(s["pkgdist_controller_acked_bytes_total"], static_cast<double>(kSize));
  EXPECT_GE(s["pkgdist_controller_acked_chunks_total"], 4);
  EXPECT_EQ(s["pkgdist_controller_attempts_total{kind=distribute}"], 2);
  EXPECT_EQ(s["pkgdist_controller_attempt_failures_total{reason=aborted}"], 1);
  EXPECT_EQ(s["pkgdist_controller_attempt_failures_total{reason=unavailable}"], 0);
  EXPECT_EQ(s["pkgdist_controller_transfer_duration_seconds{outcome=failed}"], 1);
  EXPECT_EQ(s["pkgdist_controller_transfer_duration_seconds{outcome=published}"], 1);
}

}  // namespace
}  // namespace pkgdist::testing
