#include "controller/cli/settings.h"

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "shared/status_macros.h"

namespace pkgdist::cli {
namespace {

absl::Status Missing(absl::string_view flag, absl::string_view env_name, absl::string_view key) {
  return absl::InvalidArgumentError(absl::StrCat("no ", flag, ": give ", flag, ", set ", env_name,
                                                 " or the config key \"", key, "\""));
}

}  // namespace

void AddConnectionOptions(CLI::App& app, ConnectionFlags& flags) {
  app.add_option("--controller", flags.controller, "Controller address HOST:PORT")
      ->envname("PKGDIST_CONTROLLER");
  app.add_option("--ca", flags.ca, "CA certificate (PEM)")->envname("PKGDIST_CA");
  app.add_option("--cert", flags.cert, "Admin client certificate (PEM)")->envname("PKGDIST_CERT");
  app.add_option("--key", flags.key, "Admin client private key (PEM)")->envname("PKGDIST_KEY");
  app.add_option("-o,--output", flags.output, "Output format: table (default) or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->envname("PKGDIST_OUTPUT");
  app.add_option("--config", flags.config, "Config file (TOML)")->envname("PKGDIST_CONFIG");
}

std::string DefaultConfigFile(const EnvLookup& env) {
  if (auto xdg = env("XDG_CONFIG_HOME")) return *xdg + "/pkgdist/pkgdistctl.toml";
  if (auto home = env("HOME")) return *home + "/.config/pkgdist/pkgdistctl.toml";
  return "";
}

void ParseCommandLine(CLI::App& app, int argc, const char* const argv[], const EnvLookup& env) {
  ConfigSources sources{
      .config = app.get_option("--config"),
      .default_file = DefaultConfigFile(env),
      .env = env,
      .relative_to_file = {app.get_option("--ca"), app.get_option("--cert"),
                           app.get_option("--key")},
  };
  ParseWithConfig(app, argc, argv, sources);
}

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("output format \"", name, "\" is not one of table, json"));
}

absl::StatusOr<Settings> ResolveSettings(const ConnectionFlags& flags) {
  Settings s;
  s.controller = flags.controller;
  s.tls.ca = flags.ca;
  s.tls.cert = flags.cert;
  s.tls.key = flags.key;
  if (s.controller.empty()) return Missing("--controller", "PKGDIST_CONTROLLER", "controller");
  if (s.tls.ca.empty()) return Missing("--ca", "PKGDIST_CA", "ca");
  if (s.tls.cert.empty()) return Missing("--cert", "PKGDIST_CERT", "cert");
  if (s.tls.key.empty()) return Missing("--key", "PKGDIST_KEY", "key");
  if (!flags.output.empty()) {
    ASSIGN_OR_RETURN(s.output, ParseOutputFormat(flags.output));
  }
  return s;
}

}  // namespace pkgdist::cli
