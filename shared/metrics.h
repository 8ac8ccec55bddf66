// Prometheus metrics, the part both programs share: the HTTP endpoint that
// serves them (--metrics-listen, prometheus-cpp's Exposer on civetweb) and
// small helpers for metric families.
//
// Each program keeps its metric families in one object of its own
// (controller/metrics.h, agent/metrics.h) that it passes, or null, to the
// code that counts: there are no global metrics, and code given null counts
// nothing (the unit tests). Counters and gauges are atomics; nothing on a
// per-chunk path takes a lock. Values that are cheap to read but costly to
// maintain (rows by state, free disk space) are computed at scrape time by
// a Collectable instead.
#ifndef PKGDIST_SHARED_METRICS_H_
#define PKGDIST_SHARED_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Exposer;
}

namespace pkgdist {

// Serves, at http://LISTEN/metrics, every Collectable registered with it.
// Thread-safe; scrapes run on the server's own threads, so a Collectable
// must be thread-safe and everything it reads must outlive this server.
class MetricsServer {
 public:
  // Listens on `listen`, an IPv4 or [IPv6] literal and a port (0 picks a
  // free one). INVALID_ARGUMENT for anything else; UNAVAILABLE if it cannot
  // be bound (port in use, no such local address), with the reason.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Serves `collectable` from now on; the server keeps it alive.
  void Register(std::shared_ptr<prometheus::Collectable> collectable);
  // The bound port.
  int port() const { return port_; }

 private:
  MetricsServer() = default;

  // Declared before exposer_: the scrape threads stop before these go.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string wake_host_;  // where the destructor connects to (see there)
};

// A Collectable that calls `collect` at every scrape.
class CallbackCollectable final : public prometheus::Collectable {
 public:
  using CollectFn = std::function<std::vector<prometheus::MetricFamily>()>;
  explicit CallbackCollectable(CollectFn collect) : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  CollectFn collect_;
};

// A gauge family with one sample per (label value, value) under `label`
// (or one unlabelled sample if `label` is empty and there is one value).
prometheus::MetricFamily GaugeFamily(std::string name, std::string help, absl::string_view label,
                                     const std::vector<std::pair<std::string, double>>& values);

// A status code as a label value: "ok", "unavailable", "deadline_exceeded"...
std::string StatusCodeLabel(absl::StatusCode code);

// `count` bucket bounds: start, start * factor, ...
prometheus::Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count);

inline double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_METRICS_H_
