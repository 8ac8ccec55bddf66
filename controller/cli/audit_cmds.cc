// pkgdistctl audit list: the controller's audit trail.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/cli/command.h"
#include "controller/cli/duration.h"
#include "controller/cli/table.h"
#include "shared/clock.h"

namespace pkgdist::cli {
namespace {

// --since: an RFC 3339 time, or a duration meaning that long ago.
CLI::Validator SinceValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        absl::Time t;
        std::string why;
        if (absl::ParseTime(absl::RFC3339_full, value, &t, &why)) return "";
        if (ParseDuration(value).ok()) return "";
        return "expected an RFC 3339 time (2026-11-24T21:00:00Z) or a duration ago (2h, 7d), "
               "got \"" + value + "\"";
      },
      "TIME");
}

std::string SinceAsRfc3339(const std::string& value) {
  absl::Time t;
  std::string why;
  if (absl::ParseTime(absl::RFC3339_full, value, &t, &why)) return value;
  return FormatRfc3339(absl::ToUnixMillis(absl::Now() - ParseValidatedDuration(value)));
}

}  // namespace

void AddAuditCommands(CLI::App& app, Action& selected) {
  CLI::App* audit = app.add_subcommand(
      "audit", "The audit trail: who called what that changes something, and how it ended");
  audit->require_subcommand(1);
  auto since = std::make_shared<std::string>();
  auto who = std::make_shared<std::string>();
  CLI::App* list = audit->add_subcommand("list", "List audit records, oldest first");
  list->add_option("--since", *since,
                   "Only records at or after TIME: RFC 3339, or a duration ago (2h, 7d)")
      ->check(SinceValidator());
  list->add_option("--who", *who,
                   "Only calls by this caller: an admin name (alice), KIND/NAME (agent/dp1) or "
                   "a full spiffe:// ID");
  OnRun(list, selected, [since, who](CommandEnv& env) {
    pkgdist::v1::ListAuditRequest req;
    if (!since->empty()) req.set_since(SinceAsRfc3339(*since));
    req.set_who(*who);
    auto records = env.client.ListAudit(req);
    if (!records.ok()) return ReportError(env, records.status());
    Emit(env, AuditListToJson(*records), RenderAuditList(*records));
    return kExitOk;
  });
}

}  // namespace pkgdist::cli
