#include "controller/bandwidth_policy.h"

#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {

// Readable failures; in pkgdist itself so that GoogleTest finds them by ADL.
void PrintTo(const Rate& r, std::ostream* os) { *os << FormatRate(r); }
void PrintTo(const Window& w, std::ostream* os) {
  *os << "{days=" << int{w.days} << " " << w.start_s << "-" << w.end_s << " " << FormatRate(w.rate)
      << "}";
}

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint8_t kMon = 1 << 0, kTue = 1 << 1, kWed = 1 << 2, kThu = 1 << 3, kFri = 1 << 4,
                  kSat = 1 << 5, kSun = 1 << 6;
constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;

std::string RateError(absl::string_view text) {
  auto rate = ParseRate(text);
  if (rate.ok()) return "parsed as " + FormatRate(*rate);
  EXPECT_EQ(rate.status().code(), absl::StatusCode::kInvalidArgument) << text;
  return std::string(rate.status().message());
}

std::string WindowError(absl::string_view text) {
  auto window = ParseWindow(text);
  if (window.ok()) return "parsed as " + FormatWindow(*window);
  EXPECT_EQ(window.status().code(), absl::StatusCode::kInvalidArgument) << text;
  return std::string(window.status().message());
}

Window MustParseWindow(absl::string_view text) {
  auto window = ParseWindow(text);
  EXPECT_TRUE(window.ok()) << text << ": " << window.status();
  return window.ok() ? *window : Window{};
}

std::string Canonical(absl::string_view text) { return FormatWindow(MustParseWindow(text)); }

absl::CivilSecond At(int y, int mo, int d, int h, int mi, int s = 0) {
  return absl::CivilSecond(y, mo, d, h, mi, s);
}

absl::Time Utc(int y, int mo, int d, int h, int mi, int s = 0) {
  return absl::FromCivil(At(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

// Europe/Berlin, or a reason to skip: the test needs the system's tzdata.
absl::StatusOr<absl::TimeZone> Berlin() { return LoadZone("Europe/Berlin"); }

struct GoodRate {
  const char* text;
  Rate rate;
};

class ParseRateGoodTest : public ::testing::TestWithParam<GoodRate> {};

TEST_P(ParseRateGoodTest, ParsesToTheExpectedRate) {
  // Every accepted spelling gives the documented number of bytes per second.
  auto rate = ParseRate(GetParam().text);
  ASSERT_TRUE(rate.ok()) << GetParam().text << ": " << rate.status();
  EXPECT_EQ(*rate, GetParam().rate) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRateGoodTest,
    ::testing::Values(
        GoodRate{"unlimited", Rate::Unlimited()}, GoodRate{"UNLIMITED", Rate::Unlimited()},
        GoodRate{"Paused", Rate::Paused()}, GoodRate{"  paused\t", Rate::Paused()},
        GoodRate{"10MB/s", Rate::Limited(10000000)}, GoodRate{"10 MB/s", Rate::Limited(10000000)},
        GoodRate{"1.5GiB/s", Rate::Limited(1610612736)}, GoodRate{"500kB", Rate::Limited(500000)},
        GoodRate{"500KB", Rate::Limited(500000)}, GoodRate{"20000000", Rate::Limited(20000000)},
        GoodRate{"500/s", Rate::Limited(500)}, GoodRate{"1B", Rate::Limited(1)},
        GoodRate{"1 B/s", Rate::Limited(1)}, GoodRate{"1KiB", Rate::Limited(kKiB)},
        GoodRate{"2 MiB/s", Rate::Limited(2 * kMiB)}, GoodRate{"3GiB", Rate::Limited(3 * kGiB)},
        GoodRate{"1GB/s", Rate::Limited(1000000000)}, GoodRate{"1.5 KiB/s", Rate::Limited(1536)},
        GoodRate{"0.5kB", Rate::Limited(500)},
        GoodRate{"0.5B", Rate::Limited(1)},          // halves round up
        GoodRate{"1.4B", Rate::Limited(1)},          // below a half rounds down
        GoodRate{"1.0005kB", Rate::Limited(1001)},   // 1000.5
        GoodRate{"1.00049kB", Rate::Limited(1000)},  // 1000.49
        GoodRate{"0.000001MB", Rate::Limited(1)}, GoodRate{"007MB", Rate::Limited(7000000)},
        GoodRate{"1.000000000000000000000000000000001MB", Rate::Limited(1000000)},
        GoodRate{"1000GB/s", Rate::Limited(kMaxRateBytesPerSecond)},
        GoodRate{"1000000000000", Rate::Limited(kMaxRateBytesPerSecond)},
        GoodRate{" 10MB/s ", Rate::Limited(10000000)}));

TEST(ParseRateTest, RejectsBadTextNamingIt) {
  // Each error is INVALID_ARGUMENT, quotes the text and says what is wrong.
  EXPECT_THAT(RateError(""), HasSubstr("rate is empty"));
  EXPECT_THAT(RateError("   "), HasSubstr("rate is empty"));
  EXPECT_EQ(RateError("0"), "rate \"0\": a rate of 0 is ambiguous: write paused or unlimited");
  EXPECT_THAT(RateError("0.0MB/s"), HasSubstr("a rate of 0 is ambiguous"));
  EXPECT_THAT(RateError("0 GiB"), HasSubstr("a rate of 0 is ambiguous"));
  EXPECT_THAT(RateError("000/s"), HasSubstr("a rate of 0 is ambiguous"));
  EXPECT_THAT(RateError("10Mb/s"),
              HasSubstr("rate \"10Mb/s\": unit \"Mb\": bits are not accepted, use B (bytes)"));
  EXPECT_THAT(RateError("10 mbit"), HasSubstr("bits are not accepted"));
  EXPECT_THAT(RateError("10Mbps"), HasSubstr("bits are not accepted"));
  EXPECT_THAT(RateError("10 kb"), HasSubstr("bits are not accepted"));
  EXPECT_THAT(RateError("10b"), HasSubstr("bits are not accepted"));
  EXPECT_THAT(RateError("10 XB"), HasSubstr("unknown unit \"XB\" (known: B, kB"));
  EXPECT_THAT(RateError("10mB"), HasSubstr("unknown unit \"mB\""));
  EXPECT_THAT(RateError("10 TB"), HasSubstr("unknown unit \"TB\""));
  EXPECT_THAT(RateError("10 bytes"), HasSubstr("unknown unit \"bytes\""));
  EXPECT_THAT(RateError("1e6"), HasSubstr("unknown unit \"e\""));
  EXPECT_THAT(RateError("-5MB/s"), HasSubstr("rate \"-5MB/s\": negative"));
  EXPECT_THAT(RateError("0.4B"), HasSubstr("less than 1 B/s after rounding"));
  EXPECT_THAT(RateError("0.0000001kB"), HasSubstr("less than 1 B/s"));
  EXPECT_THAT(RateError("1000000000001"), HasSubstr("too large"));
  EXPECT_THAT(RateError("1001GB"), HasSubstr("too large"));
  EXPECT_THAT(RateError("1000.000000001GB"), HasSubstr("too large"));
  EXPECT_THAT(RateError("932GiB/s"), HasSubstr("too large"));
  EXPECT_THAT(RateError("99999999999999999999999999999"), HasSubstr("too large"));
  EXPECT_THAT(RateError("10MB/s extra"), HasSubstr("unexpected \" extra\" after the rate"));
  EXPECT_THAT(RateError("10MB/ss"), HasSubstr("unexpected \"s\" after the rate"));
  EXPECT_THAT(RateError("10MB/S"), HasSubstr("unexpected \"/S\""));
  EXPECT_THAT(RateError("10  MB"), HasSubstr("unexpected \"  MB\""));
  EXPECT_THAT(RateError("10 /s"), HasSubstr("unexpected \" /s\""));
  EXPECT_THAT(RateError("1,000"), HasSubstr("unexpected \",000\""));
  EXPECT_THAT(RateError("fast"), HasSubstr("rate \"fast\": expected a number"));
  EXPECT_THAT(RateError(".5MB"), HasSubstr("expected a number"));
  EXPECT_THAT(RateError("+5MB"), HasSubstr("expected a number"));
  EXPECT_THAT(RateError("unlimited!"), HasSubstr("expected a number"));
  EXPECT_THAT(RateError("1.MB"), HasSubstr("expected digits after \".\""));
  EXPECT_THAT(RateError(std::string(65, '1')), HasSubstr("is longer than 64 characters"));
  EXPECT_THAT(RateError("1\x01MB"), HasSubstr("\\x01"));
}

TEST(ParseRateTest, AcceptsExactly64Characters) {
  // The bound is on the text as given, surrounding blanks included.
  std::string text = "1MB" + std::string(61, ' ');
  ASSERT_EQ(text.size(), 64u);
  EXPECT_TRUE(ParseRate(text).ok());
  EXPECT_THAT(RateError(text + " "), HasSubstr("longer than 64"));
}

TEST(FormatRateTest, UsesTheLargestExactUnit) {
  // Decimal units first, then binary ones, else bytes.
  EXPECT_EQ(FormatRate(Rate::Unlimited()), "unlimited");
  EXPECT_EQ(FormatRate(Rate::Paused()), "paused");
  EXPECT_EQ(FormatRate(Rate::Limited(20000000)), "20MB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1048576)), "1MiB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1500000)), "1500kB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1234567)), "1234567B/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1)), "1B/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1000)), "1kB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1024)), "1KiB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(2048000)), "2048kB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(3 * kGiB)), "3GiB/s");
  EXPECT_EQ(FormatRate(Rate::Limited(1536)), "1536B/s");
  EXPECT_EQ(FormatRate(Rate::Limited(kMaxRateBytesPerSecond)), "1000GB/s");
}

void ExpectRoundTrip(const Rate& rate) {
  std::string text = FormatRate(rate);
  auto parsed = ParseRate(text);
  ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
  EXPECT_EQ(*parsed, rate) << text;
}

TEST(FormatRateTest, RoundTripsEveryKindOfRate) {
  // Hand-picked values around every unit and the limits.
  ExpectRoundTrip(Rate::Unlimited());
  ExpectRoundTrip(Rate::Paused());
  for (uint64_t unit :
       {uint64_t{1}, uint64_t{1000}, kKiB, uint64_t{1000000}, kMiB, uint64_t{1000000000}, kGiB}) {
    for (uint64_t n : {1, 2, 3, 7, 999, 1000, 1023, 1024, 1025}) {
      if (n * unit >= kMaxRateBytesPerSecond) continue;
      ExpectRoundTrip(Rate::Limited(n * unit));
      ExpectRoundTrip(Rate::Limited(n * unit + 1));
      if (n * unit > 1) ExpectRoundTrip(Rate::Limited(n * unit - 1));
    }
  }
  ExpectRoundTrip(Rate::Limited(kMaxRateBytesPerSecond));
  ExpectRoundTrip(Rate::Limited(kMaxRateBytesPerSecond - 1));
}

TEST(FormatRateTest, RoundTripsRandomRates) {
  // Uniform values, and random multiples of each unit so every branch is hit.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> any(1, kMaxRateBytesPerSecond);
  for (int i = 0; i < 2000; ++i) ExpectRoundTrip(Rate::Limited(any(rng)));
  for (uint64_t unit : {uint64_t{1000}, kKiB, uint64_t{1000000}, kMiB, kGiB}) {
    std::uniform_int_distribution<uint64_t> multiple(1, kMaxRateBytesPerSecond / unit);
    for (int i = 0; i < 500; ++i) ExpectRoundTrip(Rate::Limited(multiple(rng) * unit));
  }
}

TEST(RateTest, EqualityIgnoresBytesOutsideLimited) {
  // A stray byte count does not make two unlimited rates differ.
  EXPECT_EQ(Rate::Unlimited(), (Rate{Rate::Kind::kUnlimited, 5}));
  EXPECT_EQ(Rate::Paused(), (Rate{Rate::Kind::kPaused, 5}));
  EXPECT_NE(Rate::Paused(), Rate::Unlimited());
  EXPECT_NE(Rate::Limited(1), Rate::Limited(2));
  EXPECT_NE(Rate::Limited(1), Rate::Unlimited());
  EXPECT_TRUE(Rate::Unlimited().unlimited());
  EXPECT_TRUE(Rate::Paused().paused());
  EXPECT_FALSE(Rate::Limited(1).paused() || Rate::Limited(1).unlimited());
}

TEST(DescribeRateTest, ThreeSignificantDigitsInDecimalUnits) {
  // As documented, plus rounding into the next unit and the extremes.
  EXPECT_EQ(DescribeRate(0), "0 B/s");
  EXPECT_EQ(DescribeRate(999), "999 B/s");
  EXPECT_EQ(DescribeRate(1000), "1.00 kB/s");
  EXPECT_EQ(DescribeRate(1234), "1.23 kB/s");
  EXPECT_EQ(DescribeRate(1235), "1.24 kB/s");
  EXPECT_EQ(DescribeRate(9995), "10.0 kB/s");
  EXPECT_EQ(DescribeRate(950000), "950 kB/s");
  EXPECT_EQ(DescribeRate(999499), "999 kB/s");
  EXPECT_EQ(DescribeRate(999500), "1.00 MB/s");
  EXPECT_EQ(DescribeRate(19800000), "19.8 MB/s");
  EXPECT_EQ(DescribeRate(19849999), "19.8 MB/s");
  EXPECT_EQ(DescribeRate(1020000000), "1.02 GB/s");
  EXPECT_EQ(DescribeRate(kMaxRateBytesPerSecond), "1.00 TB/s");
  EXPECT_EQ(DescribeRate(UINT64_MAX), "18.4 EB/s");
}

struct GoodWindow {
  const char* text;
  const char* canonical;
};

class ParseWindowGoodTest : public ::testing::TestWithParam<GoodWindow> {};

TEST_P(ParseWindowGoodTest, ParsesAndFormatsCanonically) {
  // Each spelling gives the canonical text, which is a fixed point.
  std::string canonical = Canonical(GetParam().text);
  EXPECT_EQ(canonical, GetParam().canonical) << GetParam().text;
  EXPECT_EQ(Canonical(canonical), canonical);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseWindowGoodTest,
    ::testing::Values(
        GoodWindow{"mon-fri 08:00-18:00 10MB/s", "mon-fri 08:00-18:00 10MB/s"},
        GoodWindow{"Mon-FRI 8:00-18:00 10 MB/s", "mon-fri 08:00-18:00 10MB/s"},
        GoodWindow{"monday-friday 08:00-18:00 10000kB", "mon-fri 08:00-18:00 10MB/s"},
        GoodWindow{"weekdays 08:00-18:00 paused", "mon-fri 08:00-18:00 paused"},
        GoodWindow{"weekends 00:00-24:00 unlimited", "sat,sun 00:00-24:00 unlimited"},
        GoodWindow{"sat,sun 00:00-24:00 1MiB", "sat,sun 00:00-24:00 1MiB/s"},
        GoodWindow{"daily 22:00-06:00 1MiB/s", "daily 22:00-06:00 1MiB/s"},
        GoodWindow{"* 22:00-06:00 1MiB/s", "daily 22:00-06:00 1MiB/s"},
        GoodWindow{"mon-sun 22:00-06:00 1MiB/s", "daily 22:00-06:00 1MiB/s"},
        GoodWindow{"fri-mon 20:00-23:00 paused", "fri-mon 20:00-23:00 paused"},
        GoodWindow{"sun,mon,tue 01:00-02:00 paused", "sun-tue 01:00-02:00 paused"},
        GoodWindow{"mon,wed,fri 01:00-02:00 paused", "mon,wed,fri 01:00-02:00 paused"},
        GoodWindow{"fri,mon-wed 01:00-02:00 paused", "mon-wed,fri 01:00-02:00 paused"},
        GoodWindow{"sun,mon 01:00-02:00 paused", "sun,mon 01:00-02:00 paused"},
        GoodWindow{"mon,mon,Monday 01:00-02:00 paused", "mon 01:00-02:00 paused"},
        GoodWindow{"wed-wed 01:00-02:00 paused", "wed 01:00-02:00 paused"},
        GoodWindow{"weekends,fri 01:00-02:00 paused", "fri-sun 01:00-02:00 paused"},
        GoodWindow{"thu-tue 01:00-02:00 paused", "thu-tue 01:00-02:00 paused"},
        GoodWindow{"mon 08:00:30-18:00 1kB", "mon 08:00:30-18:00 1kB/s"},
        GoodWindow{"mon 08:00:00-18:00:59 1kB", "mon 08:00-18:00:59 1kB/s"},
        GoodWindow{"mon 22:00-00:00 paused", "mon 22:00-24:00 paused"},
        GoodWindow{"mon 00:00-24:00 paused", "mon 00:00-24:00 paused"},
        GoodWindow{"mon 23:59:59-00:00:01 paused", "mon 23:59:59-00:00:01 paused"},
        GoodWindow{"  mon\t08:00-09:00   1.5 KiB/s  ", "mon 08:00-09:00 1536B/s"}));

TEST(ParseWindowTest, FillsEveryField) {
  // Days as a mask from Monday, times in seconds, the rate parsed.
  Window w = MustParseWindow("mon,wed 08:00-18:30:15 10MB/s");
  EXPECT_EQ(w.days, kMon | kWed);
  EXPECT_EQ(w.start_s, 8 * 3600);
  EXPECT_EQ(w.end_s, 18 * 3600 + 30 * 60 + 15);
  EXPECT_EQ(w.rate, Rate::Limited(10000000));
  Window crossing = MustParseWindow("fri-mon 22:00-06:00 paused");
  EXPECT_EQ(crossing.days, kFri | kSat | kSun | kMon);
  EXPECT_EQ(crossing.start_s, 22 * 3600);
  EXPECT_EQ(crossing.end_s, 6 * 3600);
  EXPECT_EQ(MustParseWindow("daily 22:00-24:00 paused").end_s, 86400);
  EXPECT_EQ(MustParseWindow("daily 22:00-00:00 paused").end_s, 86400);
  EXPECT_EQ(MustParseWindow("weekdays 1:00-2:00 paused").days, kMon | kTue | kWed | kThu | kFri);
  EXPECT_EQ(MustParseWindow("daily 1:00-2:00 paused").days, kAllDays);
}

TEST(ParseWindowTest, ErrorsNameTheWindowAndTheField) {
  // Every error quotes the whole window, then says which part is wrong.
  EXPECT_EQ(WindowError("xyz 08:00-18:00 1MB"),
            "window \"xyz 08:00-18:00 1MB\": unknown day \"xyz\" (known: mon..sun or "
            "monday..sunday, ranges like mon-fri, daily, *, weekdays, weekends)");
  EXPECT_THAT(WindowError(""), HasSubstr("window \"\": expected DAYS START-END RATE"));
  EXPECT_THAT(WindowError("mon-fri"), HasSubstr("expected DAYS START-END RATE"));
  EXPECT_THAT(WindowError("mon-fri 08:00-18:00"), HasSubstr("expected DAYS START-END RATE"));
  EXPECT_THAT(WindowError("mon-fri 08:00-18:00   "), HasSubstr("expected DAYS START-END RATE"));
  EXPECT_THAT(WindowError("mon-xyz 08:00-18:00 1MB"), HasSubstr("unknown day \"xyz\""));
  EXPECT_THAT(WindowError("mon- 08:00-18:00 1MB"), HasSubstr("unknown day \"\""));
  EXPECT_THAT(WindowError("mon-tue-wed 08:00-18:00 1MB"), HasSubstr("unknown day \"tue-wed\""));
  EXPECT_THAT(WindowError("mon,,tue 08:00-18:00 1MB"),
              HasSubstr("empty item in days \"mon,,tue\""));
  EXPECT_THAT(WindowError("mon, 08:00-18:00 1MB"), HasSubstr("empty item in days \"mon,\""));
  EXPECT_THAT(WindowError("mon 25:00-26:00 1MB"),
              HasSubstr("start \"25:00\": hour 25 out of range"));
  EXPECT_THAT(WindowError("mon 08:00-25:00 1MB"), HasSubstr("end \"25:00\": hour 25 out of range"));
  EXPECT_THAT(WindowError("mon 24:00-08:00 1MB"),
              HasSubstr("start \"24:00\": hour 24 out of range (00-23)"));
  EXPECT_THAT(WindowError("mon 08:00-24:30 1MB"), HasSubstr("only 24:00 may use hour 24"));
  EXPECT_THAT(WindowError("mon 08:00-24:00:01 1MB"), HasSubstr("only 24:00 may use hour 24"));
  EXPECT_THAT(WindowError("mon 08:60-09:00 1MB"), HasSubstr("minute 60 out of range"));
  EXPECT_THAT(WindowError("mon 08:00:60-09:00 1MB"), HasSubstr("second 60 out of range"));
  EXPECT_THAT(WindowError("mon 08:00-08:00 1MB"), HasSubstr("empty window"));
  EXPECT_THAT(WindowError("mon 00:00-00:00 1MB"), HasSubstr("empty window"));
  EXPECT_THAT(WindowError("mon 08:00-08:00:00 1MB"), HasSubstr("empty window"));
  EXPECT_THAT(WindowError("mon 8-9 1MB"), HasSubstr("start \"8\": expected HH:MM or HH:MM:SS"));
  EXPECT_THAT(WindowError("mon 0800-0900 1MB"), HasSubstr("expected HH:MM or HH:MM:SS"));
  EXPECT_THAT(WindowError("mon 08:0-09:00 1MB"), HasSubstr("start \"08:0\": expected HH:MM"));
  EXPECT_THAT(WindowError("mon 123:00-09:00 1MB"), HasSubstr("expected HH:MM"));
  EXPECT_THAT(WindowError("mon 08:00:00:00-09:00 1MB"), HasSubstr("expected HH:MM"));
  EXPECT_THAT(WindowError("mon 08:00-9:xx 1MB"), HasSubstr("end \"9:xx\": expected HH:MM"));
  EXPECT_THAT(WindowError("mon 08:00 1MB"),
              HasSubstr("expected START-END like 08:00-18:00, got \"08:00\""));
  EXPECT_THAT(WindowError("mon 08:00-09:00-10:00 1MB"), HasSubstr("expected START-END"));
  EXPECT_THAT(WindowError("mon 08:00-09:00 fast"), HasSubstr(": rate \"fast\": expected a number"));
  EXPECT_THAT(WindowError("mon 08:00-09:00 10MB/s paused"),
              HasSubstr("rate \"10MB/s paused\": unexpected"));
  EXPECT_THAT(WindowError("mon 08:00-09:00 0"), HasSubstr("a rate of 0 is ambiguous"));
  for (absl::string_view text : {"xyz 08:00-18:00 1MB", "mon 08:00-08:00 1MB", "", "mon 1 2"}) {
    EXPECT_THAT(WindowError(text), StartsWith(absl::StrCat("window \"", text, "\": ")));
  }
}

TEST(ParseWindowTest, BoundsTheInput) {
  // 256 characters are accepted, 257 refused without quoting them all.
  std::string text = "mon 08:00-09:00 1MB" + std::string(256 - 19, ' ');
  ASSERT_EQ(text.size(), 256u);
  EXPECT_TRUE(ParseWindow(text).ok()) << ParseWindow(text).status();
  std::string error = WindowError(text + " ");
  EXPECT_THAT(error, HasSubstr("is longer than 256 characters"));
  EXPECT_LT(error.size(), 120u);
}

TEST(FormatWindowTest, RoundTripsEveryDayMaskAndManyTimes) {
  // All 127 non-empty day masks, with plain, crossing and 24:00 windows.
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int32_t> second(0, 86399);
  std::vector<Rate> rates = {Rate::Unlimited(),       Rate::Paused(),      Rate::Limited(1),
                             Rate::Limited(10000000), Rate::Limited(kMiB), Rate::Limited(1234567)};
  for (int days = 1; days <= kAllDays; ++days) {
    std::vector<std::pair<int32_t, int32_t>> times = {
        {0, 86400}, {8 * 3600, 18 * 3600}, {22 * 3600, 6 * 3600}, {86399, 86400}, {1, 2}};
    for (int i = 0; i < 4; ++i) {
      int32_t start = second(rng), end = second(rng) + 1;
      if (start != end) times.emplace_back(start, end);
    }
    for (auto [start, end] : times) {
      Window w{static_cast<uint8_t>(days), start, end, rates[rng() % rates.size()]};
      std::string text = FormatWindow(w);
      auto parsed = ParseWindow(text);
      ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
      EXPECT_EQ(*parsed, w) << text;
    }
  }
}

TEST(ContainsTest, StartIsInsideAndEndIsNot) {
  // 2024-07-01 is a Monday.
  Window w = MustParseWindow("mon-fri 08:00-18:00 paused");
  EXPECT_FALSE(Contains(w, At(2024, 7, 1, 7, 59, 59)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 1, 8, 0, 0)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 1, 17, 59, 59)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 1, 18, 0, 0)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 5, 12, 0)));   // Friday
  EXPECT_FALSE(Contains(w, At(2024, 7, 6, 12, 0)));  // Saturday
  EXPECT_FALSE(Contains(w, At(2024, 7, 7, 12, 0)));  // Sunday
}

TEST(ContainsTest, EndOf2400IsMidnightExcluded) {
  // The last second of the day is inside; midnight belongs to the next day.
  Window w = MustParseWindow("mon 20:00-24:00 paused");
  EXPECT_TRUE(Contains(w, At(2024, 7, 1, 23, 59, 59)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 2, 0, 0, 0)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 1, 0, 0, 0)));
  Window all_day = MustParseWindow("mon 00:00-24:00 paused");
  EXPECT_TRUE(Contains(all_day, At(2024, 7, 1, 0, 0, 0)));
  EXPECT_TRUE(Contains(all_day, At(2024, 7, 1, 23, 59, 59)));
  EXPECT_FALSE(Contains(all_day, At(2024, 7, 2, 0, 0, 0)));
  EXPECT_FALSE(Contains(all_day, At(2024, 6, 30, 23, 59, 59)));
}

TEST(ContainsTest, CrossingWindowContinuesIntoTheNextMorning) {
  // Friday 22:00 to Saturday 06:00 only: not Thursday's morning, not Saturday night.
  Window w = MustParseWindow("fri 22:00-06:00 paused");
  EXPECT_FALSE(Contains(w, At(2024, 7, 5, 21, 59, 59)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 5, 22, 0, 0)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 6, 0, 0, 0)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 6, 5, 59, 59)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 6, 6, 0, 0)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 5, 3, 0, 0)));   // Friday morning: Thursday not in days
  EXPECT_FALSE(Contains(w, At(2024, 7, 6, 23, 0, 0)));  // Saturday night
}

TEST(ContainsTest, CrossingWindowWrapsFromSundayIntoMonday) {
  // Sunday night runs into Monday morning across the week's end.
  Window w = MustParseWindow("sun 23:00-02:00 paused");
  EXPECT_TRUE(Contains(w, At(2024, 7, 7, 23, 30)));     // Sunday
  EXPECT_TRUE(Contains(w, At(2024, 7, 8, 1, 59, 59)));  // Monday
  EXPECT_FALSE(Contains(w, At(2024, 7, 8, 2, 0, 0)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 8, 23, 30)));  // Monday night
  EXPECT_FALSE(Contains(w, At(2024, 7, 7, 1, 0)));    // Sunday morning: Saturday not in days
}

TEST(ContainsTest, CrossingWindowEndingAtOneSecondPastMidnight) {
  // The shortest crossing: 23:59:59 to 00:00:01 covers two seconds.
  Window w = MustParseWindow("daily 23:59:59-00:00:01 paused");
  EXPECT_FALSE(Contains(w, At(2024, 7, 1, 23, 59, 58)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 1, 23, 59, 59)));
  EXPECT_TRUE(Contains(w, At(2024, 7, 2, 0, 0, 0)));
  EXPECT_FALSE(Contains(w, At(2024, 7, 2, 0, 0, 1)));
}

SitePolicy Policy(Rate rate, std::vector<absl::string_view> windows, std::string tz = "UTC") {
  SitePolicy policy;
  policy.rate = rate;
  for (absl::string_view text : windows) policy.windows.push_back(MustParseWindow(text));
  policy.timezone = std::move(tz);
  return policy;
}

TEST(RateAtTest, UsesTheWindowElseTheDefaultInUtc) {
  // Inside the window its rate; outside it and on other days the default.
  SitePolicy policy = Policy(Rate::Unlimited(), {"mon-fri 08:00-18:00 10MB/s"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 8, 0)), Rate::Limited(10000000));
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 7, 59, 59)), Rate::Unlimited());
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 18, 0)), Rate::Unlimited());
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 6, 12, 0)), Rate::Unlimited());
  EXPECT_EQ(RateAt(Policy(Rate::Paused(), {}), utc, Utc(2024, 7, 1, 12, 0)), Rate::Paused());
}

TEST(RateAtTest, FirstContainingWindowWins) {
  // Overlapping windows: the earlier in the list decides.
  SitePolicy policy =
      Policy(Rate::Unlimited(), {"mon 12:00-13:00 paused", "mon-fri 08:00-18:00 10MB/s"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 12, 30)), Rate::Paused());
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 13, 0)), Rate::Limited(10000000));
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 2, 12, 30)), Rate::Limited(10000000));
  std::swap(policy.windows[0], policy.windows[1]);
  EXPECT_EQ(RateAt(policy, utc, Utc(2024, 7, 1, 12, 30)), Rate::Limited(10000000));
}

TEST(RateAtTest, FollowsEuropeBerlinSummerAndWinterTime) {
  // CEST is UTC+2 in July, CET UTC+1 in January; the window is in local time.
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(Rate::Unlimited(), {"daily 08:00-18:00 paused"}, "Europe/Berlin");
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 7, 10, 7, 30)), Rate::Paused());     // 09:30
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 1, 10, 7, 30)), Rate::Paused());     // 08:30
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 7, 10, 6, 30)), Rate::Paused());     // 08:30
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 1, 10, 6, 30)), Rate::Unlimited());  // 07:30
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 7, 10, 16, 0)), Rate::Unlimited());  // 18:00
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 1, 10, 16, 0)), Rate::Paused());     // 17:00
}

TEST(RateAtTest, LocalDayDecidesTheWeekday) {
  // Sunday 23:30 UTC is already Monday 01:30 in Berlin (CEST).
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(Rate::Unlimited(), {"mon 00:00-24:00 paused"}, "Europe/Berlin");
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 7, 7, 23, 30)), Rate::Paused());
  EXPECT_EQ(RateAt(policy, absl::UTCTimeZone(), Utc(2024, 7, 7, 23, 30)), Rate::Unlimited());
}

TEST(NextChangeTest, NoWindowsMeansNeverChanges) {
  // A policy of one rate only never changes.
  EXPECT_EQ(NextChange(Policy(Rate::Paused(), {}), absl::UTCTimeZone(), Utc(2024, 7, 1, 12, 0)),
            absl::InfiniteFuture());
}

TEST(NextChangeTest, NextStartOrEndStrictlyAfterNow) {
  // Before, inside, at the start and at the end of a weekday window.
  SitePolicy policy = Policy(Rate::Unlimited(), {"mon-fri 08:00-18:00 paused"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 7, 0)), Utc(2024, 7, 1, 8, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 8, 0)), Utc(2024, 7, 1, 18, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 12, 0)), Utc(2024, 7, 1, 18, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 18, 0)), Utc(2024, 7, 2, 8, 0));
  // Friday evening: the next change is Monday morning, not the weekend.
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 5, 18, 0)), Utc(2024, 7, 8, 8, 0));
}

TEST(NextChangeTest, CrossingWindowEndsTheNextMorning) {
  // Saturday 03:00 is inside Friday's window, which ends at 06:00.
  SitePolicy policy = Policy(Rate::Unlimited(), {"fri 22:00-06:00 paused"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 6, 3, 0)), Utc(2024, 7, 6, 6, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 6, 6, 0)), Utc(2024, 7, 12, 22, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 5, 23, 0)), Utc(2024, 7, 6, 6, 0));
}

TEST(NextChangeTest, EndOf2400IsTheFollowingMidnight) {
  // A window ending at 24:00 changes the rate at the next day's 00:00.
  SitePolicy policy = Policy(Rate::Unlimited(), {"sun 20:00-24:00 paused"});
  EXPECT_EQ(NextChange(policy, absl::UTCTimeZone(), Utc(2024, 7, 7, 21, 0)), Utc(2024, 7, 8, 0, 0));
}

TEST(NextChangeTest, EarliestOfSeveralWindows) {
  // The nearest boundary of any window, whichever is listed first.
  SitePolicy policy =
      Policy(Rate::Unlimited(), {"daily 20:00-22:00 paused", "daily 09:00-10:00:30 1MB"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 8, 0)), Utc(2024, 7, 1, 9, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 9, 30)), Utc(2024, 7, 1, 10, 0, 30));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 11, 0)), Utc(2024, 7, 1, 20, 0));
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 23, 0)), Utc(2024, 7, 2, 9, 0));
}

TEST(NextChangeTest, WeeklyWindowIsFoundSevenDaysAhead) {
  // Just after Monday's window starts, its end is next; just after it ends, next Monday.
  SitePolicy policy = Policy(Rate::Unlimited(), {"mon 08:00-09:00 paused"});
  absl::TimeZone utc = absl::UTCTimeZone();
  EXPECT_EQ(NextChange(policy, utc, Utc(2024, 7, 1, 9, 0, 1)), Utc(2024, 7, 8, 8, 0));
}

TEST(NextChangeTest, ConvertsLocalBoundariesWithTheZone) {
  // 18:00 in Berlin is 16:00 UTC in July and 17:00 UTC in January.
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(Rate::Unlimited(), {"daily 08:00-18:00 paused"}, "Europe/Berlin");
  EXPECT_EQ(NextChange(policy, *berlin, Utc(2024, 7, 10, 7, 30)), Utc(2024, 7, 10, 16, 0));
  EXPECT_EQ(NextChange(policy, *berlin, Utc(2024, 1, 10, 7, 30)), Utc(2024, 1, 10, 17, 0));
  EXPECT_EQ(NextChange(policy, *berlin, Utc(2024, 1, 10, 17, 0)), Utc(2024, 1, 11, 7, 0));
}

TEST(NextChangeTest, BoundaryInTheSkippedHourIsTheDstChange) {
  // On 2024-03-31 Berlin's clocks jump from 02:00 to 03:00 (01:00 UTC), so a
  // window starting at 02:30 is in force from the jump on.
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(Rate::Unlimited(), {"daily 02:30-05:00 paused"}, "Europe/Berlin");
  absl::Time next = NextChange(policy, *berlin, Utc(2024, 3, 31, 0, 0));
  EXPECT_EQ(next, Utc(2024, 3, 31, 1, 0));
  EXPECT_EQ(RateAt(policy, *berlin, next - absl::Seconds(1)), Rate::Unlimited());
  EXPECT_EQ(RateAt(policy, *berlin, next), Rate::Paused());
  EXPECT_EQ(NextChange(policy, *berlin, next), Utc(2024, 3, 31, 3, 0));  // 05:00 CEST
}

TEST(NextChangeTest, BoundaryInTheRepeatedHourCountsEveryCrossing) {
  // On 2024-10-27 Berlin's clocks go back from 03:00 CEST to 02:00 CET (01:00
  // UTC): local 02:30 happens twice, and the window is left at the change.
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(Rate::Unlimited(), {"daily 02:30-05:00 paused"}, "Europe/Berlin");
  std::vector<absl::Time> changes;
  absl::Time t = Utc(2024, 10, 27, 0, 0);
  for (int i = 0; i < 4; ++i) changes.push_back(t = NextChange(policy, *berlin, t));
  EXPECT_THAT(changes, ::testing::ElementsAre(Utc(2024, 10, 27, 0, 30), Utc(2024, 10, 27, 1, 0),
                                              Utc(2024, 10, 27, 1, 30), Utc(2024, 10, 27, 4, 0)));
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 10, 27, 0, 30)), Rate::Paused());
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 10, 27, 1, 0)), Rate::Unlimited());
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 10, 27, 1, 30)), Rate::Paused());
  EXPECT_EQ(RateAt(policy, *berlin, Utc(2024, 10, 27, 4, 0)), Rate::Unlimited());
}

TEST(NextChangeTest, RateAtIsConstantBetweenChanges) {
  // Sampling every 5 minutes over two weeks: the rate only changes at a change.
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  SitePolicy policy = Policy(
      Rate::Limited(1000000),
      {"sun 02:15-02:45 5MB/s", "mon-fri 08:00-18:00 paused", "fri-mon 22:00-06:00 unlimited"},
      "Europe/Berlin");
  absl::Time t = Utc(2024, 10, 20, 0, 0);
  absl::Time next = NextChange(policy, *berlin, t);
  Rate rate = RateAt(policy, *berlin, t);
  for (; t < Utc(2024, 11, 3, 0, 0); t += absl::Minutes(5)) {
    if (t >= next) {
      rate = RateAt(policy, *berlin, t);
      next = NextChange(policy, *berlin, t);
    }
    ASSERT_EQ(RateAt(policy, *berlin, t), rate) << absl::FormatTime(t);
    ASSERT_GT(next, t);
  }
}

TEST(LoadZoneTest, LoadsUtcAndSystemZones) {
  // UTC needs no tzdata; other names come from /usr/share/zoneinfo.
  auto utc = LoadZone("UTC");
  ASSERT_TRUE(utc.ok()) << utc.status();
  EXPECT_EQ(utc->name(), "UTC");
  auto berlin = Berlin();
  if (!berlin.ok()) GTEST_SKIP() << "Europe/Berlin cannot be loaded: " << berlin.status();
  EXPECT_EQ(berlin->name(), "Europe/Berlin");
}

TEST(LoadZoneTest, UnknownZoneSaysWhereItLooked) {
  // A well-formed name missing from tzdata, and names that are not IANA names.
  auto mars = LoadZone("Mars/Olympus");
  EXPECT_EQ(mars.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mars.status().message(),
            "unknown time zone \"Mars/Olympus\": not in the system's tzdata (/usr/share/zoneinfo)");
  for (const char* name : {"", "/etc/localtime", "../../etc/passwd", "file:Europe/Berlin",
                           "Europe/Berlin ", "Europe/../Europe/Berlin"}) {
    auto zone = LoadZone(name);
    EXPECT_EQ(zone.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(zone.status().message(), HasSubstr("invalid time zone name")) << name;
  }
}

}  // namespace
}  // namespace pkgdist
