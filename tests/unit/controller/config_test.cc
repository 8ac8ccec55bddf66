#include "controller/config.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"

namespace pkgdist {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const std::vector<std::string> kRequired = {"--state-dir", "/var/lib/pkgdist", "--ca", "ca.pem",
                                            "--cert", "controller.pem", "--key", "controller.key"};

class ControllerConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("controller-config");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
  }
  std::string Write(const std::string& text) {
    std::string path = dir_->path() + "/controller.toml";
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return path;
  }
  static absl::StatusOr<std::optional<ControllerConfig>> Parse(
      std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    std::vector<const char*> argv{"pkgdist-controller"};
    for (const auto& a : args) argv.push_back(a.c_str());
    return ParseControllerFlags(
        static_cast<int>(argv.size()), argv.data(),
        [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
          auto it = env.find(name);
          if (it == env.end()) return std::nullopt;
          return it->second;
        });
  }
  std::optional<TempDir> dir_;
};

TEST_F(ControllerConfigTest, DefaultsAndTheDocumentedCommandLine) {
  // The README's command line parses; the rest keeps its defaults.
  auto c = Parse({"--listen", "127.0.0.1:7700", "--state-dir", "/var/lib/pkgdist", "--ca",
                  "certs/ca.pem", "--cert", "certs/controller.pem", "--key",
                  "certs/controller.key"});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->state_dir, "/var/lib/pkgdist");
  EXPECT_EQ((*c)->tls.key, "certs/controller.key");
  EXPECT_EQ((*c)->detect_seconds, kDefaultDetectSeconds);
  EXPECT_EQ((*c)->job_retention_seconds, int64_t{90} * 86400);
  EXPECT_FALSE((*c)->limits.refuse_case_collisions);
}

TEST_F(ControllerConfigTest, FlagBeatsEnvironmentBeatsConfigFile) {
  // --max-backoff-seconds three ways: the flag wins; without it the
  // environment; without both the file. (CLI11's own set_config let the file
  // win over the variable.)
  std::string file = Write("max-backoff-seconds = 30\njob-retention = \"12h\"\n");
  std::vector<std::string> args = kRequired;
  args.insert(args.end(), {"--config", file});
  std::vector<std::string> flagged = args;
  flagged.insert(flagged.end(), {"--max-backoff-seconds", "10"});
  const std::map<std::string, std::string> env = {{"PKGDIST_MAX_BACKOFF_SECONDS", "20"}};

  auto c = Parse(flagged, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->max_backoff_seconds, 10);
  c = Parse(args, env);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->max_backoff_seconds, 20);
  c = Parse(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->max_backoff_seconds, 30);
  EXPECT_EQ((*c)->job_retention_seconds, 12 * 3600);
}

TEST_F(ControllerConfigTest, ConfigFileAloneSuppliesEverything) {
  // Required settings, a size with a unit and a flag, all from the file named
  // by PKGDIST_CONFIG.
  std::string file = Write(
      "state-dir = \"/srv/state\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n"
      "max-package-bytes = \"2GiB\"\nrefuse-case-collisions = true\n");
  auto c = Parse({}, {{"PKGDIST_CONFIG", file}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->state_dir, "/srv/state");
  EXPECT_EQ((*c)->tls.cert, "c.pem");
  EXPECT_EQ((*c)->limits.max_total_size, uint64_t{2} << 30);
  EXPECT_TRUE((*c)->limits.refuse_case_collisions);
}

TEST_F(ControllerConfigTest, UnknownKeyAndBadValuesAreErrorsNamingThem) {
  std::vector<std::string> args = kRequired;
  args.insert(args.end(), {"--config", ""});
  args.back() = Write("listen = \"0.0.0.0:7700\"\nstate_dir = \"/x\"\n");
  auto c = Parse(args);
  EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << c.status();
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr(args.back()), HasSubstr("line 2"), HasSubstr("\"state_dir\"")));
  args.back() = Write("detect-seconds = 1\n");
  EXPECT_THAT(std::string(Parse(args).status().message()),
              AllOf(HasSubstr("line 1"), HasSubstr("detect-seconds")));
  EXPECT_THAT(std::string(Parse(kRequired, {{"PKGDIST_WINDOW_BYTES", "lots"}}).status().message()),
              HasSubstr("PKGDIST_WINDOW_BYTES"));
}

TEST_F(ControllerConfigTest, ChunkingIsContentDefinedByDefaultOrFixedAtOneMiB) {
  auto c = Parse(kRequired);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->chunking.content_defined);
  EXPECT_EQ((*c)->chunking.params.avg_size, kDefaultChunking.avg_size);
  std::vector<std::string> args = kRequired;
  args.insert(args.end(), {"--chunking", "fixed"});
  c = Parse(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE((*c)->chunking.content_defined);
  EXPECT_EQ((*c)->chunking.fixed_size, kDefaultChunkSize);
  args = kRequired;
  args.insert(args.end(), {"--chunk-min-bytes", "8KiB", "--chunk-avg-bytes", "32KiB",
                           "--chunk-max-bytes", "128KiB"});
  c = Parse(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->chunking.params.min_size, 8u << 10);
  EXPECT_EQ((*c)->chunking.params.max_size, 128u << 10);
  // Sizes the format cannot take are refused, naming what is wrong.
  args = kRequired;
  args.insert(args.end(), {"--chunk-avg-bytes", "48KiB"});
  EXPECT_THAT(std::string(Parse(args).status().message()),
              AllOf(HasSubstr("--chunk-"), HasSubstr("power of two")));
  args = kRequired;
  args.insert(args.end(), {"--chunk-max-bytes", "2MiB"});
  EXPECT_TRUE(absl::IsInvalidArgument(Parse(args).status()));
  args = kRequired;
  args.insert(args.end(), {"--chunking", "rabin"});
  EXPECT_THAT(std::string(Parse(args).status().message()), HasSubstr("--chunking"));
}

TEST_F(ControllerConfigTest, MissingRequiredSettingNamesFlagVariableAndKey) {
  auto c = Parse({"--ca", "a", "--cert", "b", "--key", "c"});
  EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
  EXPECT_THAT(std::string(c.status().message()),
              AllOf(HasSubstr("--state-dir"), HasSubstr("PKGDIST_STATE_DIR"),
                    HasSubstr("\"state-dir\"")));
}

}  // namespace
}  // namespace pkgdist
