// How every pkgdist program takes its settings. Each option of a CLI11 app
// gets its value from the first of:
//
//   1. the command line (--state-dir DIR),
//   2. its environment variable, the option's envname (PKGDIST_STATE_DIR),
//   3. the config file (state-dir = "DIR"; TOML/INI as CLI11's ConfigTOML
//      reads it, keys are the long flag names without "--"),
//   4. its default.
//
// CLI11 alone does not give this order: App::set_config reads the file
// before the environment (so the file would win over the variable) and
// ignores unknown keys. ParseWithConfig therefore lets CLI11 parse the
// command line only, then fills the options it left unset from the
// environment, then from the file, which it reads with CLI11's parser.
#ifndef PKGDIST_SHARED_CONFIG_H_
#define PKGDIST_SHARED_CONFIG_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

// Callers include "CLI/CLI.hpp"; this header stays light for the headers
// that only need EnvLookup.
namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace pkgdist {

// The value of an environment variable; nullopt if unset or empty.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment (getenv).
EnvLookup ProcessEnv();

struct ConfigSources {
  // The option naming the config file: a plain add_option("--config", ...),
  // not App::set_config. Its value comes from the command line, else its
  // envname; a file named either way must exist. Null: no config file.
  CLI::Option* config = nullptr;
  // Read when neither names a file, and skipped if it does not exist.
  std::string default_file;
  // Where environment variables are looked up.
  EnvLookup env = ProcessEnv();
  // Options whose relative values in the file are relative to the file's
  // directory (otherwise to the working directory, like on the command line).
  std::vector<const CLI::Option*> relative_to_file;
};

// Parses argv with `app`, then fills each option of `app` itself (not of its
// subcommands) that the command line left unset from its environment
// variable, then from the config file, then checks its required options.
// Returns the config file read ("" if none). Throws what App::parse throws
// (CLI::CallForHelp for --help) and:
//   CLI::ValidationError  a bad value in the environment, naming the variable;
//   CLI::FileError        a config file named explicitly cannot be read;
//   CLI::ConfigError      naming the file, the line and the key: an unknown
//                         key, a key given twice, a section, a bad value;
//   CLI::RequiredError    naming the flag, the variable and the key.
std::string ParseWithConfig(CLI::App& app, int argc, const char* const* argv,
                            const ConfigSources& sources);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_CONFIG_H_
