#include "controller/cli/display.h"

#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pkgdist::cli {
namespace {

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

std::string ConnectionStateName(pkgdist::v1::ConnectionState s) {
  switch (s) {
    case pkgdist::v1::CONNECTION_STATE_IDLE:
      return "idle";
    case pkgdist::v1::CONNECTION_STATE_CONNECTING:
      return "connecting";
    case pkgdist::v1::CONNECTION_STATE_READY:
      return "ready";
    case pkgdist::v1::CONNECTION_STATE_UNREACHABLE:
      return "unreachable";
    default:
      return "unknown";
  }
}

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double v = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", v, kUnits[unit]);
}

int Percent(uint64_t done, uint64_t total) {
  if (total == 0) return 100;
  if (done >= total) return 100;
  // done < total here, so done * 100 overflows only for totals above 2^57.
  if (done > UINT64_MAX / 100) return static_cast<int>(done / (total / 100));
  return static_cast<int>(done * 100 / total);
}

size_t DisplayWidth(absl::string_view s) {
  size_t w = 0;
  for (char c : s) {
    if (!IsContinuationByte(c)) ++w;
  }
  return w;
}

std::string TruncateToWidth(absl::string_view s, size_t width) {
  size_t w = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsContinuationByte(s[i])) continue;
    if (w == width) return std::string(s.substr(0, i));
    ++w;
  }
  return std::string(s);
}

std::string OneLine(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

}  // namespace pkgdist::cli
