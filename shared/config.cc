#include "shared/config.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

// What CLI11 itself would act on during App::parse: the environment
// variables and the required marks of the app's own options. They are
// withheld during the command-line parse and restored after it (also when it
// throws, so that --help and error messages still show them).
class WithheldDuringParse {
 public:
  explicit WithheldDuringParse(CLI::App& app) {
    for (CLI::Option* opt : app.get_options()) {
      if (opt->get_envname().empty() && !opt->get_required()) continue;
      saved_.push_back({opt, opt->get_envname(), opt->get_required()});
      opt->envname("");
      opt->required(false);
    }
  }
  ~WithheldDuringParse() {
    for (const Saved& s : saved_) {
      s.opt->envname(s.envname);
      s.opt->required(s.required);
    }
  }
  WithheldDuringParse(const WithheldDuringParse&) = delete;
  WithheldDuringParse& operator=(const WithheldDuringParse&) = delete;

 private:
  struct Saved {
    CLI::Option* opt;
    std::string envname;
    bool required;
  };
  std::vector<Saved> saved_;
};

// The file key of an option: its first long name ("state-dir").
std::string KeyOf(const CLI::Option* opt) { return opt->get_lnames().front(); }

// Gives `opt` a value the way CLI11 gives it one from a config file: a flag
// takes one true/false-like word, an option its inputs; then the option's
// validators, transforms and callback run. Throws CLI::ParseError.
void Apply(CLI::Option* opt, const std::string& key, const std::vector<std::string>& inputs) {
  if (opt->get_expected_min() == 0) {
    if (inputs.size() != 1) throw CLI::ConversionError::TooManyInputsFlag(key);
    opt->add_result(opt->get_flag_value(key, inputs.front()));
  } else {
    opt->add_result(inputs);
  }
  opt->run_callback();
}

std::string Where(const std::string& file, int line) {
  return line > 0 ? absl::StrCat("config file ", file, " line ", line, ": ")
                  : absl::StrCat("config file ", file, ": ");
}

// The lines each key is on, found by scanning the file the way CLI11's
// ConfigTOML splits it (CLI11 does not report lines). Also refuses what
// CLI11 would take silently but pkgdist cannot mean: sections (keys are
// top-level flag names) and a quoted value that does not close.
std::map<std::string, std::vector<int>> ScanKeys(const std::string& file, const std::string& text) {
  std::map<std::string, std::vector<int>> lines;
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    std::string line(absl::StripAsciiWhitespace(raw));
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      std::string section = line.substr(1, line.size() - 2);
      if (section.size() > 1 && section.front() == '[' && section.back() == ']') {
        section = section.substr(1, section.size() - 2);
      }
      if (absl::AsciiStrToLower(section) == "default") continue;
      throw CLI::ConfigError(absl::StrCat(Where(file, number), "sections are not supported (",
                                          line, "); keys are long flag names at the top level"));
    }
    size_t eq = line.find('=');
    std::string key(absl::StripAsciiWhitespace(line.substr(0, std::min(eq, line.find('#')))));
    if (key.size() > 1 && (key.front() == '"' || key.front() == '\'') &&
        key.back() == key.front() && key.find('.') == std::string::npos) {
      key = key.substr(1, key.size() - 2);
    }
    if (eq != std::string::npos) {
      std::string value = line.substr(eq + 1);
      bool has_comment = value.find('#') != std::string::npos;
      value = std::string(absl::StripAsciiWhitespace(value.substr(0, value.find('#'))));
      if (!value.empty() && (value.front() == '"' || value.front() == '\'') &&
          (value.size() < 2 || value.back() != value.front())) {
        throw CLI::ConfigError(absl::StrCat(
            Where(file, number), "key \"", key, "\": the string ", value, " is not closed",
            has_comment ? " (# starts a comment, also inside quotes)" : ""));
      }
    }
    lines[key].push_back(number);
  }
  return lines;
}

std::string RelativeToFile(const std::string& file, const std::string& value) {
  std::filesystem::path p(value);
  if (value.empty() || p.is_absolute()) return value;
  return (std::filesystem::path(file).parent_path() / p).lexically_normal().string();
}

// Applies the config file's keys to the options still unset.
void ApplyFile(const std::string& file, const std::string& text,
               const std::vector<CLI::Option*>& layered, const ConfigSources& sources) {
  std::map<std::string, std::vector<int>> lines = ScanKeys(file, text);
  std::vector<CLI::ConfigItem> items;
  try {
    std::istringstream in(text);
    items = CLI::ConfigTOML().from_config(in);
  } catch (const CLI::Error& e) {
    throw CLI::ConfigError(absl::StrCat(Where(file, 0), e.what()));
  }
  for (const CLI::ConfigItem& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section marks
    const std::string key = item.fullname();
    const std::vector<int>& on = lines[key];
    const int line = on.empty() ? 0 : on.front();
    if (on.size() > 1) {
      throw CLI::ConfigError(absl::StrCat(Where(file, on[1]), "key \"", key,
                                          "\" given twice (first on line ", on[0], ")"));
    }
    CLI::Option* opt = nullptr;
    if (item.parents.empty()) {
      for (CLI::Option* o : layered) {
        if (o->check_lname(item.name)) opt = o;
      }
    }
    if (opt == nullptr) {
      if (sources.config != nullptr && item.parents.empty() &&
          sources.config->check_lname(item.name)) {
        throw CLI::ConfigError(absl::StrCat(Where(file, line), "key \"", key,
                                            "\": a config file cannot name another one"));
      }
      std::vector<std::string> known;
      for (const CLI::Option* o : layered) known.push_back(KeyOf(o));
      throw CLI::ConfigError(absl::StrCat(Where(file, line), "unknown key \"", key,
                                          "\" (known: ", absl::StrJoin(known, ", "), ")"));
    }
    if (!opt->get_configurable()) {
      throw CLI::ConfigError(
          absl::StrCat(Where(file, line), "key \"", key, "\" is not allowed in a config file"));
    }
    // Set on the command line or by the environment (a key appears once).
    if (opt->count() > 0) continue;
    std::vector<std::string> inputs = item.inputs;
    if (std::find(sources.relative_to_file.begin(), sources.relative_to_file.end(), opt) !=
        sources.relative_to_file.end()) {
      for (std::string& v : inputs) v = RelativeToFile(file, v);
    }
    try {
      Apply(opt, item.name, inputs);
    } catch (const CLI::Error& e) {
      throw CLI::ConfigError(absl::StrCat(Where(file, line), "key \"", key, "\" = \"",
                                          absl::StrJoin(item.inputs, " "), "\": ", e.what()));
    }
  }
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

std::string ParseWithConfig(CLI::App& app, int argc, const char* const* argv,
                            const ConfigSources& sources) {
  if (app.get_config_ptr() != nullptr) {
    throw CLI::IncorrectConstruction(
        "ParseWithConfig reads the config file itself: add --config with add_option, not "
        "App::set_config");
  }
  std::vector<CLI::Option*> layered = app.get_options([&](CLI::Option* o) {
    return o != app.get_help_ptr() && o != app.get_help_all_ptr() && o != sources.config &&
           !o->get_lnames().empty();
  });
  std::vector<CLI::Option*> required;
  for (CLI::Option* o : layered) {
    if (o->get_required()) required.push_back(o);
  }

  // 1. The command line, without CLI11 reading the environment or checking
  //    required options (both come after the file would have been read).
  {
    WithheldDuringParse withheld(app);
    app.parse(argc, argv);
  }

  // 2. The environment.
  auto from_env = [&](CLI::Option* opt) {
    const std::string& name = opt->get_envname();
    if (opt->count() > 0 || name.empty()) return;
    std::optional<std::string> value = sources.env(name);
    if (!value) return;
    try {
      Apply(opt, KeyOf(opt), {*value});
    } catch (const CLI::Error& e) {
      throw CLI::ValidationError(absl::StrCat(name, "=\"", *value, "\": ", e.what()));
    }
  };
  for (CLI::Option* opt : layered) from_env(opt);

  // 3. The config file.
  std::string file;
  if (sources.config != nullptr) {
    from_env(sources.config);
    bool named = sources.config->count() > 0;
    file = named ? sources.config->as<std::string>() : sources.default_file;
    if (!file.empty()) {
      absl::StatusOr<std::string> text = ReadFileToString(file);
      if (text.ok()) {
        ApplyFile(file, *text, layered, sources);
      } else if (named || !absl::IsNotFound(text.status())) {
        throw CLI::FileError(absl::StrCat("config file: ", text.status().message()));
      } else {
        file.clear();  // the default file may be absent
      }
    }
  }

  // 4. What is still missing keeps its default, unless it is required.
  for (CLI::Option* opt : required) {
    if (opt->count() > 0) continue;
    std::string name = opt->get_name();
    std::vector<std::string> where = {name};
    if (!opt->get_envname().empty()) where.push_back(absl::StrCat("set ", opt->get_envname()));
    if (sources.config != nullptr) {
      where.push_back(absl::StrCat("the config file key \"", KeyOf(opt), "\""));
    }
    std::string last = where.back();
    where.pop_back();
    throw CLI::RequiredError(
        absl::StrCat(name, " is required: give ", absl::StrJoin(where, ", "),
                     where.empty() ? "" : " or ", last),
        CLI::ExitCodes::RequiredError);
  }
  return file;
}

}  // namespace pkgdist
