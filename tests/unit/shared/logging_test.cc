#include "shared/logging.h"

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/ostream_sink.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::chrono::system_clock::time_point At(int64_t ms) {
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
}

nlohmann::json Parse(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n') << line;
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "more than one line: " << line;
  return nlohmann::json::parse(line);  // throws (fails the test) on invalid JSON
}

// A logger of its own writing JSON lines into `out`.
std::shared_ptr<spdlog::logger> JsonLogger(std::ostringstream& out) {
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  auto logger = std::make_shared<spdlog::logger>("test", sink);
  logger->set_formatter(MakeJsonLogFormatter());
  return logger;
}

TEST(JsonLogLineTest, HoldsTimeLevelMessageAndTheFieldsGiven) {
  // 2026-11-24T23:34:48.682Z, with every field.
  std::string line = FormatJsonLogLine(At(1795563288682), "info", "job j1: dp1 done",
                                       LogFields{"j1", "dp1", "app@1.0"});
  EXPECT_EQ(line,
            "{\"time\":\"2026-11-24T23:34:48.682Z\",\"level\":\"info\",\"message\":\"job j1: dp1 "
            "done\",\"job\":\"j1\",\"agent\":\"dp1\",\"package\":\"app@1.0\"}\n");
}

TEST(JsonLogLineTest, LeavesOutEmptyFields) {
  // Only the agent is known: no job or package key at all.
  nlohmann::json j = Parse(FormatJsonLogLine(At(0), "warning", "m", LogFields{.agent = "dp2"}));
  EXPECT_EQ(j["time"], "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["agent"], "dp2");
  EXPECT_FALSE(j.contains("job"));
  EXPECT_FALSE(j.contains("package"));
  EXPECT_EQ(Parse(FormatJsonLogLine(At(0), "info", "m", {})).size(), 3u);
}

TEST(JsonLogLineTest, EscapesQuotesBackslashesAndControlCharacters) {
  // Every byte below 0x20, quotes, backslashes and DEL come back as they were.
  std::string message = "say \"hi\" \\ path\n\ttab\r";
  for (int c = 0; c < 0x20; ++c) message.push_back(static_cast<char>(c));
  message.push_back('\x7f');
  std::string line = FormatJsonLogLine(At(0), "info", message, {});
  EXPECT_THAT(line, HasSubstr("say \\\"hi\\\" \\\\ path\\n\\ttab\\r\\u0000\\u0001"));
  EXPECT_THAT(line, HasSubstr("\\u001f\\u007f"));
  EXPECT_EQ(Parse(line)["message"], message);
}

TEST(JsonLogLineTest, KeepsValidUtf8AndReplacesEachInvalidByte) {
  // Multi-byte characters pass through; stray, truncated, overlong and
  // surrogate sequences each become U+FFFD per byte, so the line still parses.
  std::string valid = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa6";
  EXPECT_EQ(Parse(FormatJsonLogLine(At(0), "info", valid, {}))["message"], valid);

  const std::string kReplacement = "\xef\xbf\xbd";
  struct Case {
    std::string in;
    std::string out;
  };
  std::vector<Case> cases = {
      {"a\xff" "b", "a" + kReplacement + "b"},                   // never valid
      {"\xc3", kReplacement},                                      // truncated at the end
      {"\xe2\x82" "x", kReplacement + kReplacement + "x"},         // truncated in the middle
      {"\xc0\xaf", kReplacement + kReplacement},                   // overlong '/'
      {"\xed\xa0\x80", kReplacement + kReplacement + kReplacement},  // a surrogate
      {"\xf4\x90\x80\x80", kReplacement + kReplacement + kReplacement + kReplacement},  // > U+10FFFF
  };
  for (const Case& c : cases) {
    nlohmann::json j = Parse(FormatJsonLogLine(At(0), "info", c.in, LogFields{.job = c.in}));
    EXPECT_EQ(j["message"], c.out) << c.in;
    EXPECT_EQ(j["job"], c.out) << c.in;
  }
}

TEST(JsonLogFormatterTest, WritesOneObjectPerRecordWithTheScopesFields) {
  // Lines inside a scope carry its fields, nested scopes add to them, and
  // lines after it carry none; a multi-line message stays one line.
  std::ostringstream out;
  auto logger = JsonLogger(out);
  logger->info("before");
  {
    ScopedLogFields job({.job = "j1", .agent = "dp1"});
    logger->warn("first\nsecond");
    {
      ScopedLogFields package({.package = "app@1.0"});
      logger->info("inner");
    }
    logger->error("outer again");
  }
  logger->info("after");
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << out.str();
  std::vector<nlohmann::json> j;
  for (const auto& l : lines) j.push_back(nlohmann::json::parse(l));
  EXPECT_EQ(j[0]["message"], "before");
  EXPECT_FALSE(j[0].contains("job"));
  EXPECT_EQ(j[1]["message"], "first\nsecond");
  EXPECT_EQ(j[1]["level"], "warning");
  EXPECT_EQ(j[1]["job"], "j1");
  EXPECT_FALSE(j[1].contains("package"));
  EXPECT_EQ(j[2]["job"], "j1");
  EXPECT_EQ(j[2]["agent"], "dp1");
  EXPECT_EQ(j[2]["package"], "app@1.0");
  EXPECT_FALSE(j[3].contains("package"));
  EXPECT_EQ(j[3]["level"], "error");
  EXPECT_FALSE(j[4].contains("agent"));
}

TEST(ScopedLogFieldsTest, SetAddsFieldsAndOtherThreadsSeeNone) {
  // Set() fills in what the scope learns later; another thread's lines are
  // not about this scope.
  ScopedLogFields scope({.agent = "dp1"});
  scope.Set({.package = "app@2.0"});
  EXPECT_EQ(CurrentLogFields().agent, "dp1");
  EXPECT_EQ(CurrentLogFields().package, "app@2.0");
  std::string elsewhere = "unset";
  std::thread([&] { elsewhere = CurrentLogFields().agent; }).join();
  EXPECT_EQ(elsewhere, "");
}

TEST(LogWithTest, AttachesFieldsToThatLineOnly) {
  // LogWith's fields go on its own line, not on the next.
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(JsonLogger(out));
  LogWith({.job = "j2", .agent = "dp3", .package = "p@1"}, spdlog::level::info, "job {}: {}", "j2",
          "sending");
  spdlog::info("plain");
  LogWith({.job = "j3"}, spdlog::level::debug, "not logged at info");
  spdlog::set_default_logger(previous);
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << out.str();
  auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["message"], "job j2: sending");
  EXPECT_EQ(first["package"], "p@1");
  EXPECT_FALSE(nlohmann::json::parse(lines[1]).contains("job"));
}

TEST(TextLogTest, FieldsDoNotChangeTheTextLine) {
  // Text mode prints the message only, fields or not, as before JSON existed.
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
  auto logger = std::make_shared<spdlog::logger>("text", sink);
  logger->set_pattern("%l %v");
  logger->info("without");
  {
    ScopedLogFields scope({.job = "j1", .agent = "dp1", .package = "app@1.0"});
    logger->info("with");
  }
  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  EXPECT_THAT(lines, ElementsAre("info without", "info with"));
}

}  // namespace
}  // namespace pkgdist
