// pkgdistctl site set | list | show, and egress set | show: bandwidth
// policy (docs/sites.md). The controller parses rates and windows; this
// only carries the text.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/cli/command.h"
#include "controller/cli/table.h"

namespace pkgdist::cli {
namespace {

struct SiteOptions {
  std::string name;
  std::optional<std::string> rate;
  std::vector<std::string> windows;
  bool clear_windows = false;
  std::optional<std::string> timezone;
  std::optional<uint32_t> max_transfers;
  std::optional<std::string> relay;
};

int RunSet(CommandEnv& env, const SiteOptions& o) {
  if (!o.windows.empty() && o.clear_windows) {
    return ReportError(env, absl::InvalidArgumentError("--window and --clear-windows exclude each other"));
  }
  v1::SetSiteRequest req;
  req.set_name(o.name);
  if (o.rate.has_value()) req.set_rate(*o.rate);
  if (!o.windows.empty() || o.clear_windows) {
    req.set_set_windows(true);
    for (const std::string& w : o.windows) req.add_windows(w);
  }
  if (o.timezone.has_value()) req.set_timezone(*o.timezone);
  if (o.max_transfers.has_value()) req.set_max_transfers(*o.max_transfers);
  if (o.relay.has_value()) req.set_relay(*o.relay);
  auto site = env.client.SetSite(req);
  if (!site.ok()) return ReportError(env, site.status());
  Emit(env, SiteToJson(*site), RenderSite(*site));
  return kExitOk;
}

int RunList(CommandEnv& env) {
  auto sites = env.client.ListSites();
  if (!sites.ok()) return ReportError(env, sites.status());
  Emit(env, SiteListToJson(*sites), RenderSiteList(*sites));
  return kExitOk;
}

int RunShow(CommandEnv& env, const std::string& name) {
  auto site = env.client.GetSite(name);
  if (!site.ok()) return ReportError(env, site.status());
  Emit(env, SiteToJson(*site), RenderSite(*site));
  return kExitOk;
}

int RunEgress(CommandEnv& env, const std::optional<std::string>& rate) {
  auto egress = rate.has_value() ? env.client.SetEgress(*rate) : env.client.GetEgress();
  if (!egress.ok()) return ReportError(env, egress.status());
  Emit(env, EgressToJson(*egress), RenderEgress(*egress));
  return kExitOk;
}

constexpr char kRateHelp[] =
    "RATE: 10MB/s (decimal), 1.5GiB/s (binary), bytes per second, unlimited or paused";

}  // namespace

void AddSiteCommands(CLI::App& app, Action& selected) {
  CLI::App* site = app.add_subcommand(
      "site", "Bandwidth policy of a site (the agents labelled site=NAME) and what it is doing");
  site->require_subcommand(1);

  auto o = std::make_shared<SiteOptions>();
  CLI::App* set = site->add_subcommand(
      "set", "Change a site's limits; options not given keep their values. Applies within a second");
  set->add_option("NAME", o->name, "Site name")->required();
  set->add_option("--rate", o->rate, std::string(kRateHelp) + " (outside every window)");
  set->add_option("--window", o->windows,
                  "\"DAYS START-END RATE\", e.g. \"mon-fri 08:00-18:00 10MB/s\" (repeat for more; "
                  "the first that holds the time wins); given, they replace the site's windows");
  set->add_flag("--clear-windows", o->clear_windows, "Remove the site's windows");
  set->add_option("--timezone", o->timezone,
                  "Time zone of the windows, from the system's tzdata (default UTC)");
  set->add_option("--max-transfers", o->max_transfers,
                  "Transfers to the site's agents at once (0: no limit)");
  set->add_option("--relay", o->relay,
                  "AGENT|auto|none: the agent of the site (labelled site=NAME) that "
                  "receives packages from the controller, the others fetching chunks from "
                  "it; auto lets the controller choose; none sends to every agent of the "
                  "site directly");
  OnRun(set, selected, [o](CommandEnv& env) { return RunSet(env, *o); });

  CLI::App* list = site->add_subcommand("list", "List sites with their agents and traffic");
  OnRun(list, selected, [](CommandEnv& env) { return RunList(env); });

  CLI::App* show = site->add_subcommand("show", "Show one site");
  show->add_option("NAME", o->name, "Site name")->required();
  OnRun(show, selected, [o](CommandEnv& env) { return RunShow(env, o->name); });

  CLI::App* egress = app.add_subcommand(
      "egress", "The limit on everything the controller sends to agents");
  egress->require_subcommand(1);
  auto rate = std::make_shared<std::optional<std::string>>();
  CLI::App* egress_set = egress->add_subcommand("set", "Change the egress limit");
  egress_set->add_option("--rate", *rate, kRateHelp)->required();
  OnRun(egress_set, selected, [rate](CommandEnv& env) { return RunEgress(env, *rate); });
  CLI::App* egress_show = egress->add_subcommand("show", "Show the egress limit and traffic");
  OnRun(egress_show, selected, [](CommandEnv& env) { return RunEgress(env, std::nullopt); });
}

}  // namespace pkgdist::cli
