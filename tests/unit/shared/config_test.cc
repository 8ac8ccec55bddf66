#include "shared/config.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

// A small program: four string options, a number with a range, a flag, a
// required option, and --config (PKGDIST_CONFIG).
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("shared-config");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    for (const char* name : {"alpha", "beta", "gamma", "delta"}) {
      values_[name] = std::string("default-") + name;
      app_.add_option(std::string("--") + name, values_[name])
          ->envname(std::string("PKGDIST_") + absl::AsciiStrToUpper(name));
    }
    app_.add_option("--count", count_)->envname("PKGDIST_COUNT")->check(CLI::Range(1, 10));
    app_.add_flag("--switch", switch_)->envname("PKGDIST_SWITCH");
    app_.add_option("--needed", needed_)->envname("PKGDIST_NEEDED")->required();
    sources_.config = app_.add_option("--config", config_)->envname("PKGDIST_CONFIG");
  }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_->path() + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }

  // Parses ARGS (--needed is given unless `needed` is false); returns the
  // error message, "" on success.
  std::string Parse(std::vector<std::string> args, std::map<std::string, std::string> env = {},
                    bool needed = true) {
    if (needed) args.insert(args.end(), {"--needed", "yes"});
    std::vector<const char*> argv{"prog"};
    for (const auto& a : args) argv.push_back(a.c_str());
    sources_.env = FakeEnv(std::move(env));
    try {
      file_ = ParseWithConfig(app_, static_cast<int>(argv.size()), argv.data(), sources_);
    } catch (const CLI::ParseError& e) {
      return e.what();
    }
    return "";
  }

  std::optional<TempDir> dir_;
  CLI::App app_{"test program"};
  std::map<std::string, std::string> values_;
  int count_ = 5;
  bool switch_ = false;
  std::string needed_;
  std::string config_;
  ConfigSources sources_;
  std::string file_;
};

TEST_F(ConfigTest, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  // alpha is given three ways, beta by the environment and the file, gamma
  // by the file only, delta nowhere.
  std::string file = Write("c.toml", "alpha = \"file\"\nbeta = \"file\"\ngamma = \"file\"\n");
  EXPECT_EQ(Parse({"--config", file, "--alpha", "flag"},
                  {{"PKGDIST_ALPHA", "env"}, {"PKGDIST_BETA", "env"}}),
            "");
  EXPECT_EQ(values_["alpha"], "flag");
  EXPECT_EQ(values_["beta"], "env");
  EXPECT_EQ(values_["gamma"], "file");
  EXPECT_EQ(values_["delta"], "default-delta");
  EXPECT_EQ(file_, file);
}

TEST_F(ConfigTest, NumbersAndFlagsComeFromEveryLayerThroughTheirValidators) {
  // A number and a flag from the file; the environment overrides both.
  std::string file = Write("c.toml", "count = 7\nswitch = true\n");
  EXPECT_EQ(Parse({"--config", file}), "");
  EXPECT_EQ(count_, 7);
  EXPECT_TRUE(switch_);
  switch_ = false;
  EXPECT_EQ(Parse({"--config", file}, {{"PKGDIST_COUNT", "2"}, {"PKGDIST_SWITCH", "false"}}), "");
  EXPECT_EQ(count_, 2);
  EXPECT_FALSE(switch_);
}

TEST_F(ConfigTest, ConfigFileFromTheEnvironmentAndTheDefaultLocation) {
  // PKGDIST_CONFIG names the file when --config does not; the default file
  // is read when neither does, and skipped when it does not exist.
  std::string named = Write("named.toml", "alpha = \"named\"\n");
  std::string fallback = Write("default.toml", "alpha = \"default file\"\n");
  sources_.default_file = fallback;
  EXPECT_EQ(Parse({}, {{"PKGDIST_CONFIG", named}}), "");
  EXPECT_EQ(values_["alpha"], "named");
  EXPECT_EQ(config_, named);
  EXPECT_EQ(Parse({}), "");
  EXPECT_EQ(values_["alpha"], "default file");
  sources_.default_file = dir_->path() + "/absent.toml";
  EXPECT_EQ(Parse({}), "");
  EXPECT_EQ(file_, "");
}

TEST_F(ConfigTest, AConfigFileNamedExplicitlyMustExist) {
  std::string absent = dir_->path() + "/absent.toml";
  EXPECT_THAT(Parse({"--config", absent}), AllOf(HasSubstr("config file"), HasSubstr(absent)));
  EXPECT_THAT(Parse({}, {{"PKGDIST_CONFIG", absent}}), HasSubstr(absent));
}

TEST_F(ConfigTest, UnknownKeyIsAnErrorNamingFileLineAndKey) {
  std::string file = Write("c.toml", "# settings\nalpha = \"a\"\nalhpa = \"typo\"\n");
  std::string error = Parse({"--config", file});
  EXPECT_THAT(error, AllOf(HasSubstr(file), HasSubstr("line 3"), HasSubstr("unknown key \"alhpa\""),
                           HasSubstr("alpha, beta")));
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

TEST_F(ConfigTest, UnparsableValuesAreErrorsNamingFileLineAndKey) {
  // A value the option's converter or validator refuses, a word for a flag,
  // a duplicate key, a section, an unclosed string: each names where it is.
  struct Case {
    const char* text;
    const char* line;
    const char* what;
  };
  for (const Case& c : {Case{"alpha = \"a\"\ncount = many\n", "line 2", "count"},
                        Case{"count = 11\n", "line 1", "count"},
                        Case{"switch = perhaps\n", "line 1", "switch"},
                        Case{"beta = 1\n\nbeta = 2\n", "line 3", "given twice (first on line 1)"},
                        Case{"alpha = \"a\"\n[server]\nbeta = \"b\"\n", "line 2", "sections"},
                        Case{"gamma = \"open\n", "line 1", "not closed"},
                        Case{"delta = \"a#b\"\n", "line 1", "# starts a comment"},
                        Case{"config = \"other.toml\"\n", "line 1", "cannot name another"}}) {
    std::string file = Write("bad.toml", c.text);
    std::string error = Parse({"--config", file});
    EXPECT_THAT(error, AllOf(HasSubstr(file), HasSubstr(c.line), HasSubstr(c.what))) << c.text;
  }
}

TEST_F(ConfigTest, BadValueInTheEnvironmentNamesTheVariable) {
  EXPECT_THAT(Parse({}, {{"PKGDIST_COUNT", "0"}}), HasSubstr("PKGDIST_COUNT=\"0\""));
}

TEST_F(ConfigTest, ARequiredOptionMayComeFromAnyLayer) {
  // --needed from the environment or the file satisfies required(); missing
  // everywhere, the error names all three places.
  EXPECT_EQ(Parse({}, {{"PKGDIST_NEEDED", "env"}}, /*needed=*/false), "");
  EXPECT_EQ(needed_, "env");
  std::string file = Write("c.toml", "needed = \"file\"\n");
  EXPECT_EQ(Parse({"--config", file}, {}, /*needed=*/false), "");
  EXPECT_EQ(needed_, "file");
  EXPECT_EQ(Parse({}, {}, /*needed=*/false),
            "--needed is required: give --needed, set PKGDIST_NEEDED or the config file key "
            "\"needed\"");
}

TEST_F(ConfigTest, RelativePathsAreRelativeToTheFileOnlyWhereAsked) {
  std::string file = Write("c.toml", "alpha = \"pki/ca.pem\"\nbeta = \"pki/ca.pem\"\n");
  sources_.relative_to_file = {app_.get_option("--alpha")};
  EXPECT_EQ(Parse({"--config", file}), "");
  EXPECT_EQ(values_["alpha"], dir_->path() + "/pki/ca.pem");
  EXPECT_EQ(values_["beta"], "pki/ca.pem");
}

TEST_F(ConfigTest, CliElevenQuotingCommentsAndDefaultSection) {
  // What CLI11's TOML reader accepts: both quote styles, bare words,
  // comments after a value, a [default] section.
  std::string file = Write("c.toml",
                           "; ini comment\n[default]\nalpha = 'C:\\pki'  # literal\n"
                           "beta = bare\ngamma = \"two words\"\n");
  EXPECT_EQ(Parse({"--config", file}), "");
  EXPECT_EQ(values_["alpha"], "C:\\pki");
  EXPECT_EQ(values_["beta"], "bare");
  EXPECT_EQ(values_["gamma"], "two words");
}

TEST_F(ConfigTest, HelpStillShowsEnvironmentNamesAndRequiredOptions) {
  // The loader withholds them from CLI11 only while it parses argv.
  EXPECT_NE(Parse({"--help"}), "");  // CLI::CallForHelp
  std::string help = app_.help();
  EXPECT_THAT(help, AllOf(HasSubstr("PKGDIST_ALPHA"), HasSubstr("PKGDIST_CONFIG"),
                          HasSubstr("REQUIRED")));
}

TEST_F(ConfigTest, SetConfigIsRefused) {
  // App::set_config would let CLI11 read the file before the environment.
  CLI::App app;
  app.set_config("--config");
  const char* argv[] = {"prog"};
  EXPECT_THROW(ParseWithConfig(app, 1, argv, ConfigSources{}), CLI::IncorrectConstruction);
}

}  // namespace
}  // namespace pkgdist
