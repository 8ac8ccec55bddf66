// Durations as operators type them on the command line ("30s", "5m",
// "1h30m", "90") and as the CLI prints them ("1m05s").
#ifndef PKGDIST_CONTROLLER_CLI_DURATION_H_
#define PKGDIST_CONTROLLER_CLI_DURATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pkgdist::cli {

// Parses one or more <integer><unit> terms, units ms, s, m, h, d (e.g.
// "1h30m", "500ms"), or a plain non-negative integer meaning seconds.
// INVALID_ARGUMENT naming the text for anything else, including an empty
// string, a negative value, fractions and values beyond 100 years.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// Short human form, rounded down to whole seconds: "0s", "45s", "1m05s",
// "2h03m", "3d04h". Negative durations print as "0s".
std::string FormatDurationShort(absl::Duration d);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_DURATION_H_
