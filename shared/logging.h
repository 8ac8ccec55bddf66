// spdlog, plus what fmt needs to print absl types, plus the fields of a
// structured log line. Include this instead of spdlog directly.
//
// Two formats (InitLogging): text, one human line per record
//   2026-11-24T23:34:48.682Z info job 8376...: sending sample@1.0 to dp1 (...)
// and json, one object per line with the record's time (RFC 3339, UTC),
// level and message and, where the line concerns them, the job, agent and
// package:
//   {"time":"2026-11-24T23:34:48.682Z","level":"info","message":"job 8376...:
//    sending sample@1.0 to dp1 (...)","job":"8376...","agent":"dp1","package":"sample@1.0"}
//
// The fields are attached without changing the message: text lines read
// exactly as without them. A call site passes them with LogWith(), or a
// ScopedLogFields attaches them to every line its thread logs meanwhile
// (spdlog 1.10 has no mapped diagnostic context, so this is ours). Both work
// because the default logger is synchronous: the line is formatted on the
// thread that logs it.
#ifndef PKGDIST_SHARED_LOGGING_H_
#define PKGDIST_SHARED_LOGGING_H_

#include <chrono>
#include <memory>
#include <string>
#include <utility>

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

// Sets the log level from a name (trace, debug, info, warn, error) and the
// format: "text" (a pattern with UTC timestamps) or "json" (see the file
// comment; gRPC's own log lines are then routed through spdlog too, so that
// every line is one object). Logs go to stderr.
void InitLogging(const std::string& level, const std::string& format = "text");

// The metadata key of a controller-to-agent call that carries its job id,
// so that the agent's log lines name the job too (logs only: the protocol
// does not depend on it).
inline constexpr char kJobIdMetadataKey[] = "x-pkgdist-job";

// What a log line is about; an empty field is left out.
struct LogFields {
  std::string job;
  std::string agent;
  std::string package;  // name@version
};

// Attaches `fields` to every line this thread logs while the object lives.
// Scopes nest: a field the inner scope leaves empty keeps the outer's value.
// Must be destroyed on the thread that made it (a stack object).
class ScopedLogFields {
 public:
  explicit ScopedLogFields(LogFields fields);
  ~ScopedLogFields();

  // Sets the non-empty ones of `fields` on this scope from now on (a
  // session that learns its package after it began); scopes made inside
  // it before do not see them.
  void Set(const LogFields& fields);
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;

 private:
  LogFields fields_;
  const LogFields* previous_;
};

// The fields of this thread's innermost ScopedLogFields (all empty if none).
const LogFields& CurrentLogFields();

// Logs one line with `fields` attached (ScopedLogFields for one call).
template <typename... Args>
void LogWith(LogFields fields, spdlog::level::level_enum level,
             spdlog::format_string_t<Args...> format, Args&&... args) {
  if (!spdlog::should_log(level)) return;
  ScopedLogFields scope(std::move(fields));
  spdlog::log(level, format, std::forward<Args>(args)...);
}

// One JSON log line, newline included: what the json format prints for a
// record (exposed for tests). `level` is spdlog's name for it ("info",
// "warning", ...). Strings that are not valid UTF-8 have each bad byte
// replaced by U+FFFD; quotes, backslashes and control characters are
// escaped, so the line is valid JSON whatever the message holds.
std::string FormatJsonLogLine(std::chrono::system_clock::time_point time,
                              absl::string_view level, absl::string_view message,
                              const LogFields& fields);

// The formatter of the json format, for a logger of one's own (tests).
std::unique_ptr<spdlog::formatter> MakeJsonLogFormatter();

// Appends `s` to `out` as a JSON string literal (quotes included), with the
// escaping and UTF-8 repair described above.
void AppendJsonString(absl::string_view s, std::string* out);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_LOGGING_H_
