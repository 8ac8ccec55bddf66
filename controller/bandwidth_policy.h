// Per-site bandwidth policy: pure parsing and evaluation, no I/O, no threads.
//
// A site sends at one rate by default and at other rates during weekly
// windows in the site's local time, e.g. "paused during business hours,
// unlimited at night":
//
//   rate      := "unlimited" | "paused" | NUMBER [" "] [UNIT] ["/s"]
//   UNIT      := B | kB | KB (1000) | MB | GB | KiB (1024) | MiB | GiB
//   window    := DAYS START-END RATE          e.g. "mon-fri 08:00-18:00 10MB/s"
//   DAYS      := "daily" | "*" | item ("," item)*
//   item      := DAY | DAY "-" DAY | "weekdays" | "weekends"
//
// Words and day names are case-insensitive, units are not: "Mb" would be
// megabits, which we refuse rather than guess. Bit 0 of a day mask is Monday,
// bit 6 Sunday. Times are HH:MM or HH:MM:SS; an END of 24:00 (or 00:00) is
// midnight at the end of the day; an END before START crosses midnight, and
// the window then belongs to the day it starts on.
//
// Every parse error is INVALID_ARGUMENT and quotes the text, e.g.
//   window "mon-fry 08:00-18:00 1MB": unknown day "fry"
#ifndef PKGDIST_CONTROLLER_BANDWIDTH_POLICY_H_
#define PKGDIST_CONTROLLER_BANDWIDTH_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace pkgdist {

inline constexpr uint64_t kMaxRateBytesPerSecond = 1'000'000'000'000;  // 1 TB/s
inline constexpr size_t kMaxRateTextLength = 64;
inline constexpr size_t kMaxWindowTextLength = 256;
inline constexpr uint8_t kAllDays = 0x7f;

// A bandwidth: unlimited, paused (nothing may be sent), or N bytes per second.
struct Rate {
  enum class Kind { kUnlimited, kPaused, kLimited };
  Kind kind = Kind::kUnlimited;
  uint64_t bytes_per_second = 0;  // kLimited only, 1..kMaxRateBytesPerSecond

  static Rate Unlimited() { return Rate{}; }
  static Rate Paused() { return Rate{Kind::kPaused, 0}; }
  static Rate Limited(uint64_t bps) { return Rate{Kind::kLimited, bps}; }
  bool unlimited() const { return kind == Kind::kUnlimited; }
  bool paused() const { return kind == Kind::kPaused; }

  // bytes_per_second only counts for kLimited.
  friend bool operator==(const Rate& a, const Rate& b) {
    return a.kind == b.kind &&
           (a.kind != Kind::kLimited || a.bytes_per_second == b.bytes_per_second);
  }
  friend bool operator!=(const Rate& a, const Rate& b) { return !(a == b); }
};

// The grammar above. A decimal is rounded to the nearest byte (halves up).
// Surrounding whitespace is ignored.
absl::StatusOr<Rate> ParseRate(absl::string_view text);
// The canonical text: "unlimited", "paused", else N and the largest of GB,
// MB, kB, then of GiB, MiB, KiB, that divides the rate exactly, else B:
// 1500000 is "1500kB/s", 1048576 "1MiB/s". ParseRate(FormatRate(r)) == r for
// every rate ParseRate can return.
std::string FormatRate(const Rate& r);
// For display of measured rates, not for parsing: decimal units and three
// significant digits, "0 B/s", "950 kB/s", "19.8 MB/s", "1.02 GB/s".
std::string DescribeRate(uint64_t bytes_per_second);

// A weekly window in local time, during which `rate` applies.
struct Window {
  uint8_t days = kAllDays;  // bit 0 = Monday ... bit 6 = Sunday; never 0
  int32_t start_s = 0;      // seconds after local midnight, 0..86399
  int32_t end_s = 0;        // 1..86400; end_s <= start_s crosses midnight
  Rate rate;

  friend bool operator==(const Window& a, const Window& b) {
    return a.days == b.days && a.start_s == b.start_s && a.end_s == b.end_s && a.rate == b.rate;
  }
  friend bool operator!=(const Window& a, const Window& b) { return !(a == b); }
};

// The grammar above; at most kMaxWindowTextLength characters.
absl::StatusOr<Window> ParseWindow(absl::string_view text);
// The canonical text, e.g. "mon-fri 08:00-18:00 10MB/s": days as "daily",
// runs of three or more as "mon-fri", others by comma ("sat,sun"); seconds
// only when non-zero. ParseWindow(FormatWindow(w)) == w for every window
// ParseWindow can return.
std::string FormatWindow(const Window& w);

struct SitePolicy {
  Rate rate;                     // outside every window
  std::vector<Window> windows;   // the first that contains the time wins
  std::string timezone = "UTC";  // IANA name from the system tzdata
  uint32_t max_transfers = 0;    // 0: no limit on concurrent transfers to the site
};

// The zone `name` from the system's tzdata; INVALID_ARGUMENT for a name that
// is not an IANA name (a path, "..") or is not installed. "UTC" always works.
absl::StatusOr<absl::TimeZone> LoadZone(const std::string& name);

// Whether local time `local` falls in `w`: start inclusive, end exclusive; a
// crossing window also covers the morning after each of its days.
bool Contains(const Window& w, const absl::CivilSecond& local);

// The rate in force at `now` in zone `tz`: that of the first window containing
// the local time, else policy.rate.
Rate RateAt(const SitePolicy& policy, const absl::TimeZone& tz, absl::Time now);

// The first instant after `now` at which RateAt may change: the next start or
// end of any window on one of its days (looking at most 8 days ahead), or
// absl::InfiniteFuture() if there is none. Around a DST change it also
// returns the change itself when a boundary's local time is skipped or
// repeated. For display ("until 18:00"): two adjacent windows of the same
// rate still give their common boundary.
absl::Time NextChange(const SitePolicy& policy, const absl::TimeZone& tz, absl::Time now);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_BANDWIDTH_POLICY_H_
