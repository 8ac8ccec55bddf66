#include "controller/cli/duration.h"

#include <gtest/gtest.h>

namespace pkgdist::cli {
namespace {

TEST(ParseDurationTest, AcceptsEachUnit) {
  // Every unit the CLI documents parses to its length.
  EXPECT_EQ(*ParseDuration("500ms"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseDuration("30s"), absl::Seconds(30));
  EXPECT_EQ(*ParseDuration("5m"), absl::Minutes(5));
  EXPECT_EQ(*ParseDuration("1h"), absl::Hours(1));
  EXPECT_EQ(*ParseDuration("2d"), absl::Hours(48));
}

TEST(ParseDurationTest, PlainNumberIsSeconds) {
  // A bare integer means seconds.
  EXPECT_EQ(*ParseDuration("90"), absl::Seconds(90));
  EXPECT_EQ(*ParseDuration("0"), absl::ZeroDuration());
}

TEST(ParseDurationTest, CombinesTerms) {
  // Terms add up, and surrounding spaces are ignored.
  EXPECT_EQ(*ParseDuration("1h30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseDuration(" 1m5s "), absl::Seconds(65));
}

TEST(ParseDurationTest, RejectsMalformedText) {
  // Anything else is INVALID_ARGUMENT naming the text.
  for (const char* bad : {"", "s", "5x", "-5s", "1.5h", "5 s", "5s10", "10 20", "h1"}) {
    auto d = ParseDuration(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find(bad), absl::string_view::npos) << d.status();
  }
}

TEST(ParseDurationTest, RejectsHugeValuesWithoutOverflow) {
  // Values past 100 years, or that would overflow, are refused.
  EXPECT_FALSE(ParseDuration("99999999999999999999999s").ok());
  EXPECT_FALSE(ParseDuration("40000d").ok());
  EXPECT_TRUE(ParseDuration("36000d").ok());
}

TEST(FormatDurationShortTest, PicksTwoUnits) {
  // The short form shows the two largest units, rounded down.
  EXPECT_EQ(FormatDurationShort(absl::Seconds(0)), "0s");
  EXPECT_EQ(FormatDurationShort(absl::Milliseconds(45900)), "45s");
  EXPECT_EQ(FormatDurationShort(absl::Seconds(65)), "1m05s");
  EXPECT_EQ(FormatDurationShort(absl::Seconds(2 * 3600 + 3 * 60 + 9)), "2h03m");
  EXPECT_EQ(FormatDurationShort(absl::Hours(76)), "3d04h");
  EXPECT_EQ(FormatDurationShort(absl::Seconds(-5)), "0s");
}

}  // namespace
}  // namespace pkgdist::cli
