#include "controller/cli/duration.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pkgdist::cli {
namespace {

constexpr int64_t kMaxSeconds = int64_t{100} * 365 * 24 * 3600;

absl::Status BadDuration(absl::string_view text) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad duration \"", text, "\": expected e.g. 30s, 5m, 1h30m, 500ms or plain seconds"));
}

// The length of one `unit` in milliseconds, or 0 if `unit` is unknown.
int64_t UnitMs(absl::string_view unit) {
  if (unit == "ms") return 1;
  if (unit == "s") return 1000;
  if (unit == "m") return 60 * 1000;
  if (unit == "h") return 3600 * 1000;
  if (unit == "d") return 24 * 3600 * 1000;
  return 0;
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  if (rest.empty()) return BadDuration(text);
  const int64_t max_ms = kMaxSeconds * 1000;
  int64_t total_ms = 0;
  bool first = true;
  while (!rest.empty()) {
    size_t digits = 0;
    int64_t value = 0;
    while (digits < rest.size() && absl::ascii_isdigit(static_cast<unsigned char>(rest[digits]))) {
      value = value * 10 + (rest[digits] - '0');
      if (value > max_ms) return BadDuration(text);
      ++digits;
    }
    if (digits == 0) return BadDuration(text);
    rest.remove_prefix(digits);
    size_t letters = 0;
    while (letters < rest.size() && absl::ascii_isalpha(static_cast<unsigned char>(rest[letters]))) {
      ++letters;
    }
    int64_t unit_ms = 0;
    if (letters == 0) {
      // A bare number is seconds, and only on its own.
      if (!first || !rest.empty()) return BadDuration(text);
      unit_ms = 1000;
    } else {
      unit_ms = UnitMs(rest.substr(0, letters));
      if (unit_ms == 0) return BadDuration(text);
      rest.remove_prefix(letters);
    }
    if (value > (max_ms - total_ms) / unit_ms) return BadDuration(text);
    total_ms += value * unit_ms;
    first = false;
  }
  return absl::Milliseconds(total_ms);
}

std::string FormatDurationShort(absl::Duration d) {
  int64_t s = d < absl::ZeroDuration() ? 0 : absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 24 * 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / (24 * 3600), (s % (24 * 3600)) / 3600);
}

}  // namespace pkgdist::cli
