// Where pkgdistctl finds its controller and its identity.
//
// Each setting comes from the first of: its command-line flag, its
// environment variable (PKGDIST_CONTROLLER, PKGDIST_CA, PKGDIST_CERT,
// PKGDIST_KEY, PKGDIST_OUTPUT), the config file; the same loader as the
// controller's and the agent's (shared/config.h). The config file is
// --config FILE, else $PKGDIST_CONFIG, else
// $XDG_CONFIG_HOME/pkgdist/pkgdistctl.toml, else
// ~/.config/pkgdist/pkgdistctl.toml. A config file named by flag or
// environment must exist; the default one may be absent. Its keys are
// controller, ca, cert, key and output (TOML as CLI11 reads it: quoted or
// bare values, # comments, no sections); relative paths in it are relative
// to the file's directory.
#ifndef PKGDIST_CONTROLLER_CLI_SETTINGS_H_
#define PKGDIST_CONTROLLER_CLI_SETTINGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/config.h"
#include "shared/tls.h"

namespace pkgdist::cli {

using ::pkgdist::EnvLookup;
using ::pkgdist::ProcessEnv;

enum class OutputFormat { kTable, kJson };

// The connection options once parsed; an empty string means "given nowhere".
struct ConnectionFlags {
  std::string controller;
  std::string ca;
  std::string cert;
  std::string key;
  std::string output;
  std::string config;
};

struct Settings {
  std::string controller;  // HOST:PORT
  TlsFiles tls;
  OutputFormat output = OutputFormat::kTable;
};

// Adds the global options --controller, --ca, --cert, --key, -o/--output and
// --config, with their environment variables, to `app`; their values land in
// `flags`.
void AddConnectionOptions(CLI::App& app, ConnectionFlags& flags);

// The config file read when neither --config nor PKGDIST_CONFIG names one;
// "" when neither XDG_CONFIG_HOME nor HOME is set.
std::string DefaultConfigFile(const EnvLookup& env);

// Parses argv with `app` (which has the connection options) and fills the
// connection options the command line leaves unset from `env`, then from the
// config file. Throws CLI::ParseError like CLI::App::parse; config file
// errors name the file, the line and the key (see ParseWithConfig).
void ParseCommandLine(CLI::App& app, int argc, const char* const argv[], const EnvLookup& env);

// The settings from the parsed options. INVALID_ARGUMENT naming the flag, the
// variable and the config key of a setting given nowhere.
absl::StatusOr<Settings> ResolveSettings(const ConnectionFlags& flags);

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_SETTINGS_H_
