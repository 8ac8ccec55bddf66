#include "controller/cli/app.h"

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "controller/cli/command.h"
#include "shared/file_util.h"

namespace pkgdist::cli {
namespace {

class AppTest : public ::testing::Test {
 protected:
  int Run(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), "pkgdistctl");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    CliIo io{out_, err_,
             [env](const std::string& name) -> std::optional<std::string> {
               auto it = env.find(name);
               if (it == env.end()) return std::nullopt;
               return it->second;
             },
             false, false, [] { return size_t{100}; }};
    return RunCli(static_cast<int>(argv.size()), argv.data(), io);
  }

  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(AppTest, HelpDocumentsVerbsAndExitCodes) {
  // --help exits 0 and lists the verbs and the exit statuses.
  EXPECT_EQ(Run({"--help"}), kExitOk);
  for (const char* s : {"agent", "package", "distribute", "job", "Exit status", "PKGDIST_CA",
                        "4  --wait"}) {
    EXPECT_NE(out_.str().find(s), std::string::npos) << s;
  }
}

TEST_F(AppTest, EveryVerbHasHelp) {
  // Each verb answers --help with exit 0.
  for (std::vector<std::string> verb :
       {std::vector<std::string>{"job"}, {"job", "watch"}, {"job", "list"}, {"agent", "add"},
        {"package", "import"}, {"package", "remove-from"}, {"distribute"}, {"audit"},
       {"audit", "list"}, {"events"}}) {
    verb.push_back("--help");
    EXPECT_EQ(Run(verb), kExitOk) << verb[0];
  }
  EXPECT_NE(out_.str().find("--max-attempts"), std::string::npos);
}

TEST_F(AppTest, UsageErrorsExitTwo) {
  // A missing verb, a bad argument or a missing choice is a usage error.
  EXPECT_EQ(Run({}), kExitUsage);
  EXPECT_EQ(Run({"agent"}), kExitUsage);
  EXPECT_EQ(Run({"package", "show", "no-version"}), kExitUsage);
  EXPECT_EQ(Run({"audit", "list", "--since", "yesterday"}), kExitUsage);
  EXPECT_EQ(Run({"events", "--after", "3", "--from-now"}), kExitUsage);
  EXPECT_EQ(Run({"events", "--after", "-1"}), kExitUsage);
  EXPECT_EQ(Run({"distribute", "app@1"}), kExitUsage);
  EXPECT_EQ(Run({"distribute", "app@1", "--all", "--to", "dp1"}), kExitUsage);
  EXPECT_EQ(Run({"distribute", "app@1", "--all", "--wait", "--timeout", "soon"}), kExitUsage);
  EXPECT_EQ(Run({"job", "list", "--state", "running"}), kExitUsage);
  EXPECT_EQ(Run({"--output", "yaml", "agent", "list"}), kExitUsage);
  EXPECT_EQ(err_.str().rfind("pkgdistctl: ", 0), 0u) << err_.str();
}

TEST_F(AppTest, MissingSettingsAreUsageErrors) {
  // Without a controller, or with a missing --config file, nothing is called.
  EXPECT_EQ(Run({"agent", "list"}), kExitUsage);
  EXPECT_NE(err_.str().find("PKGDIST_CONTROLLER"), std::string::npos) << err_.str();
  EXPECT_EQ(Run({"--config", "/nonexistent/pkgdistctl.toml", "agent", "list"}), kExitUsage);
}

TEST_F(AppTest, MissingTlsFilesFailTheCallWithOneLine) {
  // TLS files that do not exist fail with exit 1 and a one-line status.
  EXPECT_EQ(Run({"agent", "list"}, {{"PKGDIST_CONTROLLER", "127.0.0.1:1"},
                                    {"PKGDIST_CA", "/nonexistent/ca.pem"},
                                    {"PKGDIST_CERT", "/nonexistent/admin.pem"},
                                    {"PKGDIST_KEY", "/nonexistent/admin.key"}}),
            kExitCallFailed);
  EXPECT_EQ(err_.str().rfind("pkgdistctl: NOT_FOUND: --ca /nonexistent/ca.pem", 0), 0u)
      << err_.str();
  EXPECT_EQ(err_.str().find('\n'), err_.str().size() - 1);
}

TEST_F(AppTest, ConnectionSettingFlagBeatsEnvironmentBeatsConfigFile) {
  // --ca three ways; the CA file that does not exist names the one used.
  auto dir = TempDir::Create("cli-app");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string cfg = dir->path() + "/pkgdistctl.toml";
  ASSERT_TRUE(WriteFileAtomic(cfg, "ca = \"/file/ca.pem\"\n").ok());
  const std::map<std::string, std::string> base = {{"PKGDIST_CONTROLLER", "127.0.0.1:1"},
                                                   {"PKGDIST_CERT", "/nonexistent/admin.pem"},
                                                   {"PKGDIST_KEY", "/nonexistent/admin.key"},
                                                   {"PKGDIST_CONFIG", cfg}};
  auto with_env_ca = base;
  with_env_ca["PKGDIST_CA"] = "/env/ca.pem";
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    const char* used;
  };
  for (const Case& c : {Case{{"--ca", "/flag/ca.pem", "agent", "list"}, with_env_ca, "/flag/"},
                        Case{{"agent", "list"}, with_env_ca, "/env/"},
                        Case{{"agent", "list"}, base, "/file/"}}) {
    err_.str("");
    EXPECT_EQ(Run(c.args, c.env), kExitCallFailed) << err_.str();
    EXPECT_EQ(err_.str().rfind(std::string("pkgdistctl: NOT_FOUND: --ca ") + c.used + "ca.pem", 0),
              0u)
        << err_.str();
  }
}

TEST_F(AppTest, UnknownConfigKeyIsAUsageErrorNamingIt) {
  auto dir = TempDir::Create("cli-app");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string cfg = dir->path() + "/pkgdistctl.toml";
  ASSERT_TRUE(WriteFileAtomic(cfg, "controller = \"c:1\"\ncert-file = \"x\"\n").ok());
  EXPECT_EQ(Run({"--config", cfg, "agent", "list"}), kExitUsage);
  EXPECT_NE(err_.str().find(cfg + " line 2: unknown key \"cert-file\""), std::string::npos)
      << err_.str();
}

TEST_F(AppTest, GlobalOptionsAreAcceptedAfterTheVerb) {
  // --output given after the verb still applies (here: its value is checked).
  EXPECT_EQ(Run({"job", "list", "--output", "yaml"}), kExitUsage);
}

}  // namespace
}  // namespace pkgdist::cli
