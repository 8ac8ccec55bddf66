#include "controller/cli/settings.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "CLI/CLI.hpp"
#include "shared/file_util.h"

namespace pkgdist::cli {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

const std::vector<std::string> kAll = {"--controller", "c:1", "--ca",  "a",
                                       "--cert",       "b",   "--key", "c"};

class SettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("cli-settings");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
  }
  std::string Write(const std::string& rel, const std::string& text) {
    std::string path = dir_->path() + "/" + rel;
    EXPECT_TRUE(MakeDirs(path.substr(0, path.rfind('/'))).ok());
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }
  // Parses ARGS as pkgdistctl's global options and resolves the settings;
  // a parse error is INVALID_ARGUMENT with CLI11's message.
  static absl::StatusOr<Settings> Resolve(std::vector<std::string> args, const EnvLookup& env) {
    CLI::App app("pkgdistctl");
    ConnectionFlags flags;
    AddConnectionOptions(app, flags);
    args.insert(args.begin(), "pkgdistctl");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    try {
      ParseCommandLine(app, static_cast<int>(argv.size()), argv.data(), env);
    } catch (const CLI::ParseError& e) {
      return absl::InvalidArgumentError(e.what());
    }
    return ResolveSettings(flags);
  }
  std::optional<TempDir> dir_;
};

TEST_F(SettingsTest, ConfigFileQuotingAndComments) {
  // Basic and literal strings, bare values, comments and blank lines are
  // understood. (CLI11's TOML reader strips the quotes but, unlike the
  // hand-written reader before it, leaves backslash escapes as written.)
  std::string cfg = Write("c.toml",
                          "# pkgdistctl\n\ncontroller = \"ctl:7000\"  # the controller\n"
                          "ca = 'C:\\pki\\ca.pem'\ncert = /abs/admin.pem\nkey = \"/k\"\n");
  auto s = Resolve({"--config", cfg}, FakeEnv({}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "ctl:7000");
  EXPECT_EQ(s->tls.ca, dir_->path() + "/C:\\pki\\ca.pem");  // relative to the file
  EXPECT_EQ(s->tls.cert, "/abs/admin.pem");
}

TEST_F(SettingsTest, ConfigFileMistakesNameTheFileAndLine) {
  // An unknown key, a table, an unclosed string, text after the value and a
  // key given twice are refused with the line. (A bare value such as
  // `controller = x`, refused by the hand-written reader, is now accepted.)
  for (const char* bad : {"controler = \"x\"", "[server]", "ca = \"open", "key = \"a\" b",
                          "output = \"json\"\noutput = \"table\""}) {
    std::string cfg = Write("bad.toml", bad);
    auto s = Resolve({"--config", cfg}, FakeEnv({}));
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.status().message().find(cfg + " line "), absl::string_view::npos) << s.status();
  }
  std::string cfg = Write("bad.toml", "controller = \"c:1\"\ncontroler = \"x\"\n");
  auto s = Resolve({"--config", cfg}, FakeEnv({}));
  EXPECT_NE(s.status().message().find("line 2: unknown key \"controler\" (known: controller, ca, "
                                      "cert, key, output)"),
            absl::string_view::npos)
      << s.status();
}

TEST_F(SettingsTest, OneSettingFlagBeatsEnvironmentBeatsFile) {
  // The same setting three ways, then two, then only in the file.
  std::string cfg = Write("c.toml", "controller = \"file:1\"\n");
  std::vector<std::string> args = {"--ca", "/a", "--cert", "/b", "--key", "/c", "--config", cfg};
  std::vector<std::string> flagged = args;
  flagged.insert(flagged.end(), {"--controller", "flag:1"});
  auto env = FakeEnv({{"PKGDIST_CONTROLLER", "env:1"}});
  auto s = Resolve(flagged, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "flag:1");
  s = Resolve(args, env);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "env:1");
  s = Resolve(args, FakeEnv({}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "file:1");
}

TEST_F(SettingsTest, FlagsWinOverEnvironmentWhichWinsOverConfig) {
  // Each setting comes from the first source that gives it.
  std::string cfg = Write("c.toml",
                          "controller = \"file:1\"\nca = \"/f/ca\"\ncert = \"/f/cert\"\n"
                          "key = \"/f/key\"\noutput = \"json\"\n");
  auto s = Resolve({"--config", cfg, "--controller", "flag:1"},
                   FakeEnv({{"PKGDIST_CONTROLLER", "env:1"},
                            {"PKGDIST_CA", "/e/ca"},
                            {"PKGDIST_OUTPUT", "table"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "flag:1");
  EXPECT_EQ(s->tls.ca, "/e/ca");
  EXPECT_EQ(s->tls.cert, "/f/cert");
  EXPECT_EQ(s->tls.key, "/f/key");
  EXPECT_EQ(s->output, OutputFormat::kTable);
}

TEST_F(SettingsTest, DefaultConfigComesFromXdgConfigHome) {
  // Without --config or PKGDIST_CONFIG the XDG location is read, and
  // relative paths in it are relative to the file.
  Write("xdg/pkgdist/pkgdistctl.toml",
        "controller = \"c:1\"\nca = \"pki/ca.pem\"\ncert = \"/abs/admin.pem\"\nkey = \"k\"\n");
  auto s = Resolve({}, FakeEnv({{"XDG_CONFIG_HOME", dir_->path() + "/xdg"},
                                {"HOME", dir_->path() + "/home"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "c:1");
  EXPECT_EQ(s->tls.ca, dir_->path() + "/xdg/pkgdist/pki/ca.pem");
  EXPECT_EQ(s->tls.cert, "/abs/admin.pem");
  EXPECT_EQ(s->tls.key, dir_->path() + "/xdg/pkgdist/k");
  EXPECT_EQ(s->output, OutputFormat::kTable);
}

TEST_F(SettingsTest, DefaultConfigFallsBackToHome) {
  // Without XDG_CONFIG_HOME the file is looked for under ~/.config.
  Write("home/.config/pkgdist/pkgdistctl.toml", "controller = \"h:1\"\n");
  auto s = Resolve({"--ca", "a", "--cert", "b", "--key", "c"},
                   FakeEnv({{"HOME", dir_->path() + "/home"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "h:1");
}

TEST_F(SettingsTest, MissingDefaultConfigIsFine) {
  // A default config file that does not exist is skipped.
  auto s = Resolve(kAll, FakeEnv({{"HOME", dir_->path() + "/nohome"}}));
  ASSERT_TRUE(s.ok()) << s.status();
}

TEST_F(SettingsTest, MissingExplicitConfigIsAnError) {
  // A config file named by --config or PKGDIST_CONFIG must exist.
  std::string absent = dir_->path() + "/absent.toml";
  std::vector<std::string> args = kAll;
  args.insert(args.end(), {"--config", absent});
  auto s = Resolve(args, FakeEnv({}));
  EXPECT_NE(s.status().message().find("config file: open " + absent), absl::string_view::npos)
      << s.status();
  s = Resolve(kAll, FakeEnv({{"PKGDIST_CONFIG", absent}}));
  EXPECT_NE(s.status().message().find("config file: open " + absent), absl::string_view::npos)
      << s.status();
}

TEST_F(SettingsTest, MissingSettingNamesWhereToGiveIt) {
  // A setting no source gives is INVALID_ARGUMENT naming flag, variable and key.
  auto s = Resolve({"--controller", "c:1", "--ca", "a", "--key", "c"}, FakeEnv({}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("--cert"), absl::string_view::npos);
  EXPECT_NE(s.status().message().find("PKGDIST_CERT"), absl::string_view::npos);
}

TEST_F(SettingsTest, BadOutputFormatIsRefused) {
  // An output format from the environment is checked like the flag's.
  auto s = Resolve(kAll, FakeEnv({{"PKGDIST_OUTPUT", "yaml"}}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pkgdist::cli
