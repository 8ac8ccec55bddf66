#include "agent/config.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

absl::StatusOr<std::optional<AgentConfig>> Parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"pkgdist-agent"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return ParseAgentFlags(static_cast<int>(argv.size()), argv.data());
}

const std::vector<std::string> kRequired = {"--name", "dp1",       "--listen", "127.0.0.1:0",
                                            "--root", "/srv/pkgs", "--ca",     "ca.pem",
                                            "--cert", "dp1.pem",   "--key",    "dp1.key"};

// Sets an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

TEST(AgentConfigTest, ParsesTheDocumentedFlagsWithDefaults) {
  // The documented command line (docs/architecture.md) parses; optional settings keep
  // their defaults.
  auto c = Parse(kRequired);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->name, "dp1");
  EXPECT_EQ((*c)->listen, "127.0.0.1:0");
  EXPECT_EQ((*c)->tls.key, "dp1.key");
  EXPECT_EQ((*c)->reserve_bytes, uint64_t{64} << 20);
  EXPECT_EQ((*c)->log_level, "info");
}

TEST(AgentConfigTest, EnvironmentFillsFlagsAndFlagsWin) {
  // PKGDIST_<FLAG> supplies a missing flag; an explicit flag overrides it.
  ScopedEnv root("PKGDIST_ROOT", "/from/env");
  ScopedEnv reserve("PKGDIST_RESERVE_BYTES", "1MiB");
  std::vector<std::string> args = kRequired;
  args.erase(args.begin() + 4, args.begin() + 6);  // drop --root
  auto c = Parse(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->root, "/from/env");
  EXPECT_EQ((*c)->reserve_bytes, uint64_t{1} << 20);
  auto flagged = Parse(kRequired);
  ASSERT_TRUE(flagged.ok());
  EXPECT_EQ((*flagged)->root, "/srv/pkgs");
}

TEST(AgentConfigTest, ReadsAConfigFile) {
  // --config FILE supplies settings by long flag name.
  TempDir dir = testing::MakeTempDir();
  std::string file = dir.path() + "/agent.toml";
  testing::WriteFile(file, "name = \"dp7\"\nmax-files = 12\ncontroller-identity = \"controller\"\n");
  std::vector<std::string> args = kRequired;
  args.erase(args.begin(), args.begin() + 2);  // drop --name
  args.push_back("--config");
  args.push_back(file);
  auto c = Parse(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->name, "dp7");
  EXPECT_EQ((*c)->max_files, 12u);
}

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

absl::StatusOr<std::optional<AgentConfig>> ParseWithEnv(std::vector<std::string> args,
                                                        std::map<std::string, std::string> env) {
  std::vector<const char*> argv{"pkgdist-agent"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return ParseAgentFlags(static_cast<int>(argv.size()), argv.data(), FakeEnv(std::move(env)));
}

TEST(AgentConfigTest, FlagBeatsEnvironmentBeatsConfigFile) {
  // --log-level three ways: the flag wins; without it the environment; without
  // both the file. (CLI11's own set_config let the file win over the variable.)
  TempDir dir = testing::MakeTempDir();
  std::string file = dir.path() + "/agent.toml";
  testing::WriteFile(file, "log-level = \"warn\"\nreserve-bytes = \"2MiB\"\n");
  std::vector<std::string> args = kRequired;
  args.insert(args.end(), {"--config", file});
  std::vector<std::string> flagged = args;
  flagged.insert(flagged.end(), {"--log-level", "debug"});
  const std::map<std::string, std::string> env = {{"PKGDIST_LOG_LEVEL", "error"}};

  auto c = ParseWithEnv(flagged, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->log_level, "debug");
  c = ParseWithEnv(args, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->log_level, "error");
  c = ParseWithEnv(args, {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->log_level, "warn");
  EXPECT_EQ((*c)->reserve_bytes, uint64_t{2} << 20);
}

TEST(AgentConfigTest, ConfigFileAloneSuppliesRequiredSettings) {
  // Every required setting from the file named by PKGDIST_CONFIG, nothing on the command line.
  TempDir dir = testing::MakeTempDir();
  std::string file = dir.path() + "/agent.toml";
  testing::WriteFile(file,
                     "name = \"dp3\"\nlisten = \"127.0.0.1:0\"\nroot = \"/srv/pkgs\"\n"
                     "ca = \"ca.pem\"\ncert = \"dp3.pem\"\nkey = \"dp3.key\"\n");
  auto c = ParseWithEnv({}, {{"PKGDIST_CONFIG", file}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->name, "dp3");
  EXPECT_EQ((*c)->tls.key, "dp3.key");
}

TEST(AgentConfigTest, UnknownConfigKeyIsAnErrorNamingIt) {
  // A misspelt key fails the start instead of being ignored.
  TempDir dir = testing::MakeTempDir();
  std::string file = dir.path() + "/agent.toml";
  testing::WriteFile(file, "max-files = 10\nreserve-byte = \"1GiB\"\n");
  std::vector<std::string> args = kRequired;
  args.insert(args.end(), {"--config", file});
  auto c = ParseWithEnv(args, {});
  EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << c.status();
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr(file), HasSubstr("line 2"), HasSubstr("\"reserve-byte\"")));
}

TEST(AgentConfigTest, RejectsMissingAndMalformedFlagsWithOneLine) {
  // Bad input is INVALID_ARGUMENT with a single-line message.
  auto missing = Parse({"--name", "dp1"});
  EXPECT_TRUE(absl::IsInvalidArgument(missing.status()));
  EXPECT_EQ(std::string(missing.status().message()).find('\n'), std::string::npos);
  std::vector<std::string> bad_listen = kRequired;
  bad_listen[3] = "no-port";
  EXPECT_THAT(std::string(Parse(bad_listen).status().message()), HasSubstr("HOST:PORT"));
  std::vector<std::string> bad_name = kRequired;
  bad_name[1] = "bad/name";
  EXPECT_TRUE(absl::IsInvalidArgument(Parse(bad_name).status()));
}

TEST(AgentConfigTest, LimitFlagsParseAndBadValuesAreRefusedByName) {
  // --case-collisions is auto unless told refuse or allow; sizes parse with units;
  // values out of range are refused naming the flag.
  auto c = Parse(kRequired);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->case_collisions, "auto");
  std::vector<std::string> refuse = kRequired;
  refuse.insert(refuse.end(), {"--case-collisions", "refuse", "--max-path-length", "255"});
  auto r = Parse(refuse);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->case_collisions, "refuse");
  EXPECT_EQ((*r)->max_path_length, 255u);
  std::vector<std::string> bad = kRequired;
  bad.insert(bad.end(), {"--case-collisions", "sometimes"});
  EXPECT_THAT(std::string(Parse(bad).status().message()), HasSubstr("case-collisions"));
  std::vector<std::string> big = kRequired;
  big.insert(big.end(), {"--max-message-bytes", "64MiB"});
  auto b = Parse(big);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->max_message_bytes, 64 << 20);
  std::vector<std::string> tiny = kRequired;
  tiny.insert(tiny.end(), {"--max-message-bytes", "1MiB"});
  EXPECT_THAT(std::string(Parse(tiny).status().message()), HasSubstr("max-message-bytes"));
  std::vector<std::string> zero = kRequired;
  zero.insert(zero.end(), {"--max-path-length", "0"});
  EXPECT_THAT(std::string(Parse(zero).status().message()), HasSubstr("max-path-length"));
}

TEST(FoldsCaseTest, ANormalDirectoryDoesNotFoldCaseAndTheProbeIsRemoved) {
  // The probe behind --case-collisions auto: false on ext4/tmpfs, leaves nothing behind.
  auto dir = TempDir::Create();
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto folds = FoldsCase(dir->path());
  ASSERT_TRUE(folds.ok()) << folds.status();
  EXPECT_FALSE(*folds);
  EXPECT_TRUE(std::filesystem::is_empty(dir->path()));
  EXPECT_FALSE(FoldsCase(dir->path() + "/missing").ok());
}

TEST(AgentConfigTest, ControllerIdentityDefaultsToTheAgentsTrustDomain) {
  // "controller" (or nothing) means spiffe://<own trust domain>/controller; full IDs are kept.
  EXPECT_EQ(ResolveControllerIdentity("", "example.org")->ToString(),
            "spiffe://example.org/controller");
  EXPECT_EQ(ResolveControllerIdentity("controller", "example.org")->ToString(),
            "spiffe://example.org/controller");
  EXPECT_EQ(ResolveControllerIdentity("spiffe://other.org/controller", "example.org")->ToString(),
            "spiffe://other.org/controller");
  EXPECT_FALSE(ResolveControllerIdentity("ctl", "example.org").ok());
}

}  // namespace
}  // namespace pkgdist
