#include "controller/cli/settings.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shared/file_util.h"
#include "shared/status_macros.h"

namespace pkgdist::cli {
namespace {

constexpr const char* kConfigKeys[] = {"controller", "ca", "cert", "key", "output"};

bool IsKnownKey(absl::string_view key) {
  for (const char* k : kConfigKeys) {
    if (key == k) return true;
  }
  return false;
}

bool IsBareKeyChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

// Parses the quoted string at the start of `rest` and consumes it.
absl::StatusOr<std::string> ParseTomlString(absl::string_view& rest) {
  if (rest.empty() || (rest[0] != '"' && rest[0] != '\'')) {
    return absl::InvalidArgumentError("value must be a quoted string");
  }
  const char quote = rest[0];
  std::string out;
  for (size_t i = 1; i < rest.size(); ++i) {
    char c = rest[i];
    if (c == quote) {
      rest.remove_prefix(i + 1);
      return out;
    }
    if (c != '\\' || quote == '\'') {
      out.push_back(c);
      continue;
    }
    if (++i == rest.size()) break;
    switch (rest[i]) {
      case '"': out.push_back('"'); break;
      case '\\': out.push_back('\\'); break;
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("unsupported escape \\", rest.substr(i, 1)));
    }
  }
  return absl::InvalidArgumentError("unterminated string");
}

// Parses one non-blank, non-comment line into `out`.
absl::Status ParseConfigLine(absl::string_view line, std::map<std::string, std::string>& out) {
  if (line[0] == '[') return absl::InvalidArgumentError("tables are not supported");
  size_t k = 0;
  while (k < line.size() && IsBareKeyChar(line[k])) ++k;
  std::string key(line.substr(0, k));
  if (key.empty()) return absl::InvalidArgumentError("expected key = \"value\"");
  if (!IsKnownKey(key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown key \"", key, "\" (known: controller, ca, cert, key, output)"));
  }
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(line.substr(k));
  if (rest.empty() || rest[0] != '=') return absl::InvalidArgumentError("expected '=' after key");
  rest = absl::StripLeadingAsciiWhitespace(rest.substr(1));
  ASSIGN_OR_RETURN(std::string value, ParseTomlString(rest));
  rest = absl::StripLeadingAsciiWhitespace(rest);
  if (!rest.empty() && rest[0] != '#') {
    return absl::InvalidArgumentError("unexpected text after the value");
  }
  if (!out.emplace(key, std::move(value)).second) {
    return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\" given twice"));
  }
  return absl::OkStatus();
}

struct ConfigFile {
  std::string path;  // empty if none
  std::map<std::string, std::string> values;
};

// Finds and reads the config file (see settings.h).
absl::StatusOr<ConfigFile> LoadConfig(const ConnectionFlags& flags, const EnvLookup& env) {
  ConfigFile cfg;
  bool explicit_path = true;
  if (!flags.config.empty()) {
    cfg.path = flags.config;
  } else if (auto p = env("PKGDIST_CONFIG")) {
    cfg.path = *p;
  } else {
    explicit_path = false;
    if (auto xdg = env("XDG_CONFIG_HOME")) {
      cfg.path = *xdg + "/pkgdist/pkgdistctl.toml";
    } else if (auto home = env("HOME")) {
      cfg.path = *home + "/.config/pkgdist/pkgdistctl.toml";
    } else {
      return cfg;
    }
  }
  auto text = ReadFileToString(cfg.path);
  if (!text.ok()) {
    if (!explicit_path && absl::IsNotFound(text.status())) return ConfigFile{};
    return absl::Status(text.status().code(),
                        absl::StrCat("config file: ", text.status().message()));
  }
  auto values = ParseConfigToml(*text);
  if (!values.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", cfg.path, ": ", values.status().message()));
  }
  cfg.values = std::move(*values);
  return cfg;
}

// Relative paths in a config file are relative to the file's directory.
std::string ConfigPath(const ConfigFile& cfg, const std::string& value) {
  std::filesystem::path p(value);
  if (p.is_absolute() || cfg.path.empty()) return value;
  return (std::filesystem::path(cfg.path).parent_path() / p).lexically_normal().string();
}

// The first of flag, environment, config file; "" if none gives it.
std::string Pick(const std::string& flag, const EnvLookup& env, const std::string& env_name,
                 const ConfigFile& cfg, const std::string& key, bool is_path) {
  if (!flag.empty()) return flag;
  if (auto v = env(env_name)) return *v;
  auto it = cfg.values.find(key);
  if (it == cfg.values.end()) return "";
  return is_path ? ConfigPath(cfg, it->second) : it->second;
}

absl::Status Missing(absl::string_view flag, absl::string_view env_name, absl::string_view key) {
  return absl::InvalidArgumentError(absl::StrCat("no ", flag, ": give ", flag, ", set ", env_name,
                                                 " or the config key \"", key, "\""));
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("output format \"", name, "\" is not one of table, json"));
}

absl::StatusOr<std::map<std::string, std::string>> ParseConfigToml(absl::string_view text) {
  std::map<std::string, std::string> out;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    absl::Status s = ParseConfigLine(line, out);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("line ", number, ": ", s.message()));
  }
  return out;
}

absl::StatusOr<Settings> ResolveSettings(const ConnectionFlags& flags, const EnvLookup& env) {
  ASSIGN_OR_RETURN(ConfigFile cfg, LoadConfig(flags, env));
  Settings s;
  s.controller = Pick(flags.controller, env, "PKGDIST_CONTROLLER", cfg, "controller", false);
  s.tls.ca = Pick(flags.ca, env, "PKGDIST_CA", cfg, "ca", true);
  s.tls.cert = Pick(flags.cert, env, "PKGDIST_CERT", cfg, "cert", true);
  s.tls.key = Pick(flags.key, env, "PKGDIST_KEY", cfg, "key", true);
  std::string output = Pick(flags.output, env, "PKGDIST_OUTPUT", cfg, "output", false);
  if (s.controller.empty()) return Missing("--controller", "PKGDIST_CONTROLLER", "controller");
  if (s.tls.ca.empty()) return Missing("--ca", "PKGDIST_CA", "ca");
  if (s.tls.cert.empty()) return Missing("--cert", "PKGDIST_CERT", "cert");
  if (s.tls.key.empty()) return Missing("--key", "PKGDIST_KEY", "key");
  if (!output.empty()) {
    ASSIGN_OR_RETURN(s.output, ParseOutputFormat(output));
  }
  return s;
}

}  // namespace pkgdist::cli
