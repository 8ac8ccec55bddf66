// The clock seam: the retry engine and state store read time only through
// it, so tests drive time by hand instead of sleeping.
#ifndef PKGDIST_SHARED_CLOCK_H_
#define PKGDIST_SHARED_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/synchronization/mutex.h"

namespace pkgdist {

using Clock_ms = int64_t;  // milliseconds since the Unix epoch

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Clock_ms NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  Clock_ms NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Clock_ms start = 1'700'000'000'000) : now_(start) {}
  Clock_ms NowMs() const override {
    absl::MutexLock l(&mu_);
    return now_;
  }
  void AdvanceMs(Clock_ms d) {
    absl::MutexLock l(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  Clock_ms now_ ABSL_GUARDED_BY(mu_);
};

// RFC 3339 in UTC with milliseconds, e.g. 2026-11-24T21:41:51.123Z; "" for 0.
std::string FormatRfc3339(Clock_ms ms);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_CLOCK_H_
