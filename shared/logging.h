// spdlog, plus what fmt needs to print absl types. Include this instead of
// spdlog directly.
#ifndef PKGDIST_SHARED_LOGGING_H_
#define PKGDIST_SHARED_LOGGING_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<std::string> {
  template <typename Ctx>
  auto format(const absl::Status& s, Ctx& ctx) const {
    return fmt::formatter<std::string>::format(s.ToString(), ctx);
  }
};

namespace pkgdist {

// Sets the log level from a name (trace, debug, info, warn, error) and a
// pattern with UTC timestamps. Logs go to stderr.
void InitLogging(const std::string& level);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_LOGGING_H_
