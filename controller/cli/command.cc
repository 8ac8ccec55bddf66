#include "controller/cli/command.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controller/cli/display.h"
#include "controller/cli/duration.h"
#include "shared/paths.h"

namespace pkgdist::cli {

void OnRun(CLI::App* cmd, Action& selected, Action action) {
  cmd->callback([&selected, action = std::move(action)] { selected = action; });
}

int ReportError(CommandEnv& env, const absl::Status& s) {
  env.err << "pkgdistctl: " << absl::StatusCodeToString(s.code()) << ": " << OneLine(s.message())
          << std::endl;
  return kExitCallFailed;
}

void Emit(CommandEnv& env, const Json& json, const std::string& table) {
  if (env.output == OutputFormat::kJson) {
    env.out << JsonLine(json) << "\n";
  } else {
    env.out << table;
  }
  env.out.flush();
}

CLI::Validator PackageRefValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        std::vector<absl::string_view> parts = absl::StrSplit(value, '@');
        if (parts.size() != 2) return "expected NAME@VERSION, got \"" + value + "\"";
        for (auto [part, what] : {std::pair{parts[0], "package name"}, {parts[1], "version"}}) {
          absl::Status s = ValidateName(part, what);
          if (!s.ok()) return std::string(s.message());
        }
        return "";
      },
      "NAME@VERSION");
}

CLI::Validator NameValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        absl::Status s = ValidateName(value, "name");
        return s.ok() ? "" : std::string(s.message());
      },
      "NAME");
}

CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto d = ParseDuration(value);
        return d.ok() ? "" : std::string(d.status().message());
      },
      "DURATION");
}

absl::Duration ParseValidatedDuration(const std::string& text) {
  auto d = ParseDuration(text);
  return d.ok() ? *d : absl::ZeroDuration();
}

}  // namespace pkgdist::cli
