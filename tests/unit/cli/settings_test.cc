#include "controller/cli/settings.h"

#include <map>

#include <gtest/gtest.h>

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
  std::optional<TempDir> dir_;
};

TEST(ParseConfigTomlTest, ReadsStringsCommentsAndEscapes) {
  // Basic and literal strings, comments and blank lines are understood.
  auto v = ParseConfigToml(
      "# pkgdistctl\n\ncontroller = \"ctl:7000\"  # the controller\n"
      "ca = 'C:\\pki\\ca.pem'\ncert = \"a\\\"b\"\n");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->at("controller"), "ctl:7000");
  EXPECT_EQ(v->at("ca"), "C:\\pki\\ca.pem");
  EXPECT_EQ(v->at("cert"), "a\"b");
}

TEST(ParseConfigTomlTest, RejectsUnknownKeysTablesAndBareValues) {
  // Mistakes are reported with their line number.
  for (const char* bad : {"controler = \"x\"", "[server]", "controller = x", "ca = \"open",
                          "key = \"a\" b", "output = \"json\"\noutput = \"table\""}) {
    auto v = ParseConfigToml(bad);
    ASSERT_FALSE(v.ok()) << bad;
    EXPECT_NE(v.status().message().find("line "), absl::string_view::npos) << v.status();
  }
}

TEST_F(SettingsTest, FlagsWinOverEnvironmentWhichWinsOverConfig) {
  // Each setting comes from the first source that gives it.
  std::string cfg = Write("c.toml",
                          "controller = \"file:1\"\nca = \"/f/ca\"\ncert = \"/f/cert\"\n"
                          "key = \"/f/key\"\noutput = \"json\"\n");
  ConnectionFlags flags;
  flags.config = cfg;
  flags.controller = "flag:1";
  auto s = ResolveSettings(flags, FakeEnv({{"PKGDIST_CONTROLLER", "env:1"},
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
  auto s = ResolveSettings({}, FakeEnv({{"XDG_CONFIG_HOME", dir_->path() + "/xdg"},
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
  ConnectionFlags flags{.ca = "a", .cert = "b", .key = "c"};
  auto s = ResolveSettings(flags, FakeEnv({{"HOME", dir_->path() + "/home"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controller, "h:1");
}

TEST_F(SettingsTest, MissingDefaultConfigIsFine) {
  // A default config file that does not exist is skipped.
  ConnectionFlags flags{.controller = "c:1", .ca = "a", .cert = "b", .key = "c"};
  auto s = ResolveSettings(flags, FakeEnv({{"HOME", dir_->path() + "/nohome"}}));
  ASSERT_TRUE(s.ok()) << s.status();
}

TEST_F(SettingsTest, MissingExplicitConfigIsAnError) {
  // A config file named by --config or PKGDIST_CONFIG must exist.
  ConnectionFlags flags{.controller = "c:1", .ca = "a", .cert = "b", .key = "c"};
  flags.config = dir_->path() + "/absent.toml";
  auto s = ResolveSettings(flags, FakeEnv({}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
  flags.config.clear();
  s = ResolveSettings(flags, FakeEnv({{"PKGDIST_CONFIG", dir_->path() + "/absent.toml"}}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
}

TEST_F(SettingsTest, MissingSettingNamesWhereToGiveIt) {
  // A setting no source gives is INVALID_ARGUMENT naming flag, variable and key.
  ConnectionFlags flags{.controller = "c:1", .ca = "a", .key = "c"};
  auto s = ResolveSettings(flags, FakeEnv({}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("--cert"), absl::string_view::npos);
  EXPECT_NE(s.status().message().find("PKGDIST_CERT"), absl::string_view::npos);
}

TEST_F(SettingsTest, BadOutputFormatIsRefused) {
  // An output format from the environment is checked like the flag's.
  ConnectionFlags flags{.controller = "c:1", .ca = "a", .cert = "b", .key = "c"};
  auto s = ResolveSettings(flags, FakeEnv({{"PKGDIST_OUTPUT", "yaml"}}));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pkgdist::cli
