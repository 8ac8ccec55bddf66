// Where pkgdistctl finds its controller and its identity.
//
// Each setting comes from the first of: its command-line flag, its
// environment variable (PKGDIST_CONTROLLER, PKGDIST_CA, PKGDIST_CERT,
// PKGDIST_KEY, PKGDIST_OUTPUT), the config file. The config file is
// --config FILE, else $PKGDIST_CONFIG, else
// $XDG_CONFIG_HOME/pkgdist/pkgdistctl.toml, else
// ~/.config/pkgdist/pkgdistctl.toml. A config file named by flag or
// environment must exist; the default one may be absent. Relative paths in
// a config file are relative to the file's directory.
#ifndef PKGDIST_CONTROLLER_CLI_SETTINGS_H_
#define PKGDIST_CONTROLLER_CLI_SETTINGS_H_

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/tls.h"

namespace pkgdist::cli {

enum class OutputFormat { kTable, kJson };

// Values given on the command line; an empty string means "not given".
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

// Returns the value of an environment variable, nullopt if unset or empty.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
EnvLookup ProcessEnv();

// Resolves every setting (see the file comment). INVALID_ARGUMENT naming
// the setting and where it may be given when one is missing or bad;
// NOT_FOUND when a config file named explicitly does not exist.
absl::StatusOr<Settings> ResolveSettings(const ConnectionFlags& flags, const EnvLookup& env);

// Parses the config file format: a subset of TOML made of `key = "value"`
// lines (basic or literal strings), blank lines and # comments. Keys:
// controller, ca, cert, key, output; any other key or a table header is
// INVALID_ARGUMENT naming the line.
absl::StatusOr<std::map<std::string, std::string>> ParseConfigToml(absl::string_view text);

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_SETTINGS_H_
