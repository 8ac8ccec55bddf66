// The live progress view of a job (`job watch`, `--wait` on a terminal):
// one bar per target with bytes acknowledged, rate, ETA, state, attempts,
// and for a waiting target its last error and when it is retried.
//
// Pure rendering: the caller supplies the times, so tests need no clock.
#ifndef PKGDIST_CONTROLLER_CLI_PROGRESS_H_
#define PKGDIST_CONTROLLER_CLI_PROGRESS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

// "[#####.....]": `width` cells between the brackets, filled in proportion
// to done/total (full when total is 0).
std::string ProgressBar(uint64_t done, uint64_t total, size_t width);

// Transfer rate from successive (time, bytes) observations, smoothed
// exponentially over a few seconds. Bytes going down (a restarted
// transfer) starts over.
class RateEstimator {
 public:
  void Observe(absl::Time at, uint64_t bytes);
  // Bytes per second; nullopt until progress was seen over some time.
  std::optional<double> BytesPerSecond() const { return rate_; }
  // Time to move `remaining` more bytes at the current rate; nullopt if
  // the rate is unknown or zero.
  std::optional<absl::Duration> Eta(uint64_t remaining) const;

 private:
  std::optional<absl::Time> last_at_;
  uint64_t last_bytes_ = 0;
  std::optional<double> rate_;
};

class JobProgressView {
 public:
  // Records `job` as received at `now`.
  void Update(const pkgdist::v1::JobStatus& job, absl::Time now);
  // The lines for the last update, none wider than `width` columns: a
  // header line, then one line per target, plus an indented line with the
  // last error and next attempt for a target that is not done.
  std::vector<std::string> Render(absl::Time now, size_t width) const;

 private:
  std::string TargetLine(const pkgdist::v1::TargetStatus& t, size_t name_width,
                         size_t bar_width) const;

  pkgdist::v1::JobStatus job_;
  std::map<std::string, RateEstimator> rates_;
};

// "dp2: retry_wait (attempt 3): connection refused (next attempt at T)",
// "dp1: transferring (attempt 1), 1.0 MiB/3.0 MiB acknowledged": what
// `--wait` prints for each target not done when it gives up.
std::string DescribeUnfinishedTarget(const pkgdist::v1::TargetStatus& t);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_PROGRESS_H_
