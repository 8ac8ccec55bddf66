#include "controller/cli/progress.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controller/cli/display.h"
#include "controller/cli/duration.h"

namespace pkgdist::cli {
namespace {

// Observations closer together than this are merged into the next one, so
// that bursts of updates do not make the rate jumpy.
constexpr absl::Duration kMinSampleInterval = absl::Milliseconds(200);
// Time constant of the exponential smoothing.
constexpr double kSmoothingSeconds = 3.0;

constexpr size_t kMaxNameWidth = 24;
constexpr size_t kMinBarWidth = 10;
constexpr size_t kMaxBarWidth = 30;

std::string PadRight(const std::string& s, size_t width) {
  size_t w = DisplayWidth(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

// The wait until an RFC 3339 time, "" if it does not parse.
std::string TimeUntil(const std::string& rfc3339, absl::Time now) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err)) return "";
  return FormatDurationShort(t - now);
}

}  // namespace

std::string ProgressBar(uint64_t done, uint64_t total, size_t width) {
  size_t filled = width;
  if (total > 0 && done < total) {
    filled = static_cast<size_t>(static_cast<double>(done) / static_cast<double>(total) *
                                 static_cast<double>(width));
  }
  return absl::StrCat("[", std::string(filled, '#'), std::string(width - filled, '.'), "]");
}

void RateEstimator::Observe(absl::Time at, uint64_t bytes) {
  if (!last_at_ || bytes < last_bytes_) {
    last_at_ = at;
    last_bytes_ = bytes;
    rate_.reset();
    return;
  }
  absl::Duration dt = at - *last_at_;
  if (dt < kMinSampleInterval) return;
  double seconds = absl::ToDoubleSeconds(dt);
  double instant = static_cast<double>(bytes - last_bytes_) / seconds;
  if (!rate_) {
    rate_ = instant;
  } else {
    double alpha = 1.0 - std::exp(-seconds / kSmoothingSeconds);
    *rate_ += alpha * (instant - *rate_);
  }
  last_at_ = at;
  last_bytes_ = bytes;
}

std::optional<absl::Duration> RateEstimator::Eta(uint64_t remaining) const {
  if (!rate_ || *rate_ < 1.0) return std::nullopt;
  return absl::Seconds(std::ceil(static_cast<double>(remaining) / *rate_));
}

void JobProgressView::Update(const pkgdist::v1::JobStatus& job, absl::Time now) {
  job_ = job;
  for (const auto& t : job.targets()) rates_[t.agent()].Observe(now, t.bytes_acked());
}

std::string JobProgressView::TargetLine(const pkgdist::v1::TargetStatus& t, size_t name_width,
                                        size_t bar_width) const {
  // "transferring" is the longest state name.
  std::string line = absl::StrCat(PadRight(t.agent(), name_width), "  ", PadRight(t.state(), 12));
  if (t.bytes_total() > 0) {
    absl::StrAppend(&line, "  ", ProgressBar(t.bytes_acked(), t.bytes_total(), bar_width),
                    absl::StrFormat(" %3d%%  ", Percent(t.bytes_acked(), t.bytes_total())),
                    HumanBytes(t.bytes_acked()), "/", HumanBytes(t.bytes_total()));
  }
  auto it = rates_.find(t.agent());
  if (t.state() == "transferring" && it != rates_.end()) {
    if (auto rate = it->second.BytesPerSecond()) {
      absl::StrAppend(&line, "  ", HumanBytes(static_cast<uint64_t>(*rate)), "/s");
    }
    uint64_t remaining = t.bytes_total() - std::min(t.bytes_total(), t.bytes_acked());
    if (auto eta = it->second.Eta(remaining)) {
      absl::StrAppend(&line, "  ETA ", FormatDurationShort(*eta));
    }
  }
  if (t.attempts() > 0) absl::StrAppend(&line, "  attempt ", t.attempts());
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

std::vector<std::string> JobProgressView::Render(absl::Time now, size_t width) const {
  std::vector<std::string> lines;
  int done = 0;
  size_t name_width = 0;
  for (const auto& t : job_.targets()) {
    if (t.state() == "done") ++done;
    name_width = std::max(name_width, std::min(kMaxNameWidth, DisplayWidth(t.agent())));
  }
  lines.push_back(absl::StrCat("job ", job_.id(), "  ", job_.kind(), " ", job_.package(), "  ",
                               job_.state(), "  ", done, "/", job_.targets_size(),
                               " targets done"));
  // The bars take what the widest line leaves, within [kMinBar, kMaxBar].
  size_t widest = 0;
  for (const auto& t : job_.targets()) {
    widest = std::max(widest, DisplayWidth(TargetLine(t, name_width, 0)));
  }
  const size_t bar_width =
      std::clamp(width > widest ? width - widest : 0, kMinBarWidth, kMaxBarWidth);
  for (const auto& t : job_.targets()) {
    lines.push_back(TargetLine(t, name_width, bar_width));
    if (t.state() == "done" || (t.last_error().empty() && t.next_attempt_at().empty())) continue;
    std::string detail = std::string(name_width + 2, ' ');
    if (!t.last_error().empty()) absl::StrAppend(&detail, "last error: ", t.last_error());
    if (!t.next_attempt_at().empty()) {
      std::string in = TimeUntil(t.next_attempt_at(), now);
      absl::StrAppend(&detail, t.last_error().empty() ? "" : "; ", "next attempt ",
                      in.empty() ? "at " + t.next_attempt_at() : "in " + in);
    }
    lines.push_back(std::move(detail));
  }
  for (auto& l : lines) l = TruncateToWidth(OneLine(l), width);
  return lines;
}

std::string DescribeUnfinishedTarget(const pkgdist::v1::TargetStatus& t) {
  std::string s = absl::StrCat(t.agent(), ": ", t.state());
  if (t.attempts() > 0) absl::StrAppend(&s, " (attempt ", t.attempts(), ")");
  if (t.state() == "transferring" && t.bytes_total() > 0) {
    absl::StrAppend(&s, ", ", HumanBytes(t.bytes_acked()), "/", HumanBytes(t.bytes_total()),
                    " acknowledged");
  }
  if (!t.last_error().empty()) absl::StrAppend(&s, ": ", t.last_error());
  if (!t.next_attempt_at().empty()) {
    absl::StrAppend(&s, " (next attempt at ", t.next_attempt_at(), ")");
  }
  return OneLine(s);
}

}  // namespace pkgdist::cli
