// Small display helpers shared by the table, JSON and progress renderers.
#ifndef PKGDIST_CONTROLLER_CLI_DISPLAY_H_
#define PKGDIST_CONTROLLER_CLI_DISPLAY_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "pkgdist/v1/controller.pb.h"

namespace pkgdist::cli {

// "idle", "connecting", "ready", "unreachable" or "unknown".
std::string ConnectionStateName(pkgdist::v1::ConnectionState s);

// Binary units with one decimal above 1 KiB: "512 B", "1.5 KiB", "12.0 MiB".
std::string HumanBytes(uint64_t bytes);

// Whole percent of done/total, rounded down; 100 when total is 0.
int Percent(uint64_t done, uint64_t total);

// The number of terminal columns `s` takes, counting UTF-8 code points.
size_t DisplayWidth(absl::string_view s);

// `s` cut to at most `width` columns (on a code point boundary).
std::string TruncateToWidth(absl::string_view s, size_t width);

// `s` with control characters (newlines included) replaced by spaces, so
// that a message from the network cannot break a table or a terminal.
std::string OneLine(absl::string_view s);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_DISPLAY_H_
