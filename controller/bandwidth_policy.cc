#include "controller/bandwidth_policy.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr int32_t kSecondsPerDay = 24 * 60 * 60;
constexpr uint8_t kWeekdays = 0x1f;
constexpr uint8_t kWeekends = 0x60;
constexpr int kNextChangeSearchDays = 8;

constexpr const char* kDayNames[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr const char* kFullDayNames[7] = {"monday", "tuesday",  "wednesday", "thursday",
                                          "friday", "saturday", "sunday"};

struct Unit {
  const char* name;
  uint64_t bytes;
};
constexpr Unit kUnits[] = {
    {"B", 1},           {"kB", 1000},        {"KB", 1000},        {"MB", 1000000},
    {"GB", 1000000000}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}};
// FormatRate's order: decimal first, as people write rates that way, then
// binary for the powers of two that decimal cannot say exactly.
constexpr Unit kFormatUnits[] = {{"GB", 1000000000},  {"MB", 1000000},     {"kB", 1000},
                                 {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}};

std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

// For error messages about text too long to repeat whole.
std::string QuoteStart(absl::string_view s, size_t n) {
  return s.size() <= n ? Quote(s) : absl::StrCat(Quote(s.substr(0, n)), "...");
}

absl::string_view TakeWhile(absl::string_view& rest, int (*pred)(int)) {
  size_t n = 0;
  while (n < rest.size() && pred(static_cast<unsigned char>(rest[n]))) ++n;
  absl::string_view taken = rest.substr(0, n);
  rest.remove_prefix(n);
  return taken;
}

int IsDigit(int c) { return c >= '0' && c <= '9'; }
int IsLetter(int c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)); }
int IsNotSpace(int c) { return !absl::ascii_isspace(static_cast<unsigned char>(c)); }

// "Mb", "mbit", "Gbps": someone meant bits; a lower-case b is never bytes here.
bool LooksLikeBits(absl::string_view unit) {
  return absl::StrContains(unit, 'b') && !absl::StrContains(absl::AsciiStrToLower(unit), "byte");
}

absl::StatusOr<uint64_t> LookUpUnit(absl::string_view name) {
  for (const Unit& unit : kUnits) {
    if (name == unit.name) return unit.bytes;
  }
  if (LooksLikeBits(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unit ", Quote(name), ": bits are not accepted, use B (bytes), e.g. 10MB/s"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown unit ", Quote(name), " (known: B, kB, KB, MB, GB, KiB, MiB, GiB)"));
}

// 0.d1d2...dn * unit rounded to the nearest integer, halves up, exactly: long
// multiplication from the last digit; what carries out of the first is the
// whole part, and the first digit after the point decides the rounding.
uint64_t RoundedFraction(absl::string_view digits, uint64_t unit) {
  uint64_t carry = 0;  // < unit throughout, so nothing overflows
  uint64_t first_digit = 0;
  for (size_t i = digits.size(); i-- > 0;) {
    uint64_t t = static_cast<uint64_t>(digits[i] - '0') * unit + carry;
    first_digit = t % 10;
    carry = t / 10;
  }
  return carry + (first_digit >= 5 ? 1 : 0);
}

// INTEGER[.FRACTION] * unit in bytes per second, checked against the limits.
absl::StatusOr<uint64_t> ToBytesPerSecond(absl::string_view integer, absl::string_view fraction,
                                          uint64_t unit) {
  auto is_zero = [](char c) { return c == '0'; };
  if (std::all_of(integer.begin(), integer.end(), is_zero) &&
      std::all_of(fraction.begin(), fraction.end(), is_zero)) {
    return absl::InvalidArgumentError("a rate of 0 is ambiguous: write paused or unlimited");
  }
  absl::Status too_large = absl::InvalidArgumentError(
      "too large: the limit is 1000GB/s (1 TB/s, 1000000000000 bytes per second)");
  uint64_t whole = 0;
  for (char c : integer) {
    whole = whole * 10 + static_cast<uint64_t>(c - '0');
    if (whole > kMaxRateBytesPerSecond) return too_large;  // before it can overflow
  }
  if (whole > kMaxRateBytesPerSecond / unit) return too_large;
  uint64_t bytes = whole * unit + RoundedFraction(fraction, unit);
  if (bytes > kMaxRateBytesPerSecond) return too_large;
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        "less than 1 B/s after rounding to whole bytes (write paused to send nothing)");
  }
  return bytes;
}

// The limited form of the grammar: NUMBER [" "] [UNIT] ["/s"].
absl::StatusOr<uint64_t> ParseLimited(absl::string_view text) {
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "-")) {
    return absl::InvalidArgumentError("negative rates are not allowed");
  }
  absl::string_view integer = TakeWhile(rest, IsDigit);
  if (integer.empty()) {
    return absl::InvalidArgumentError("expected a number (e.g. 10MB/s), unlimited or paused");
  }
  absl::string_view fraction;
  if (absl::ConsumePrefix(&rest, ".")) {
    fraction = TakeWhile(rest, IsDigit);
    if (fraction.empty()) return absl::InvalidArgumentError("expected digits after \".\"");
  }
  // One space may separate the number from its unit, not from "/s" alone.
  if (rest.size() >= 2 && rest[0] == ' ' && IsLetter(rest[1])) rest.remove_prefix(1);
  absl::string_view unit_name = TakeWhile(rest, IsLetter);
  uint64_t unit = 1;
  if (!unit_name.empty()) {
    ASSIGN_OR_RETURN(unit, LookUpUnit(unit_name));
  }
  absl::ConsumePrefix(&rest, "/s");
  if (!rest.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected ", Quote(rest), " after the rate"));
  }
  return ToBytesPerSecond(integer, fraction, unit);
}

bool HasDay(uint8_t days, int day) { return (days >> day) & 1; }

// absl::Weekday counts from monday = 0, as our day masks do.
int DayIndex(absl::CivilDay day) { return static_cast<int>(absl::GetWeekday(day)); }

absl::StatusOr<int> ParseDayName(absl::string_view name) {
  std::string lower = absl::AsciiStrToLower(name);
  for (int day = 0; day < 7; ++day) {
    if (lower == kDayNames[day] || lower == kFullDayNames[day]) return day;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown day ", Quote(name),
      " (known: mon..sun or monday..sunday, ranges like mon-fri, daily, *, weekdays, weekends)"));
}

// One comma-separated item of DAYS: a name, an alias or a range, which may
// wrap past Sunday ("fri-mon").
absl::StatusOr<uint8_t> ParseDayItem(absl::string_view item, absl::string_view days_text) {
  if (item.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("empty item in days ", Quote(days_text)));
  }
  std::string lower = absl::AsciiStrToLower(item);
  if (lower == "daily" || lower == "*") return kAllDays;
  if (lower == "weekdays") return kWeekdays;
  if (lower == "weekends") return kWeekends;
  size_t dash = item.find('-');
  if (dash == absl::string_view::npos) {
    ASSIGN_OR_RETURN(int day, ParseDayName(item));
    return static_cast<uint8_t>(1 << day);
  }
  ASSIGN_OR_RETURN(int first, ParseDayName(item.substr(0, dash)));
  ASSIGN_OR_RETURN(int last, ParseDayName(item.substr(dash + 1)));
  uint8_t days = 0;
  for (int day = first;; day = (day + 1) % 7) {
    days |= static_cast<uint8_t>(1 << day);
    if (day == last) break;
  }
  return days;
}

absl::StatusOr<uint8_t> ParseDays(absl::string_view text) {
  uint8_t days = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    ASSIGN_OR_RETURN(uint8_t item_days, ParseDayItem(item, text));
    days |= item_days;
  }
  return days;
}

bool AllDigits(absl::string_view s) { return std::all_of(s.begin(), s.end(), IsDigit); }

int ToInt(absl::string_view digits) {
  int n = 0;
  for (char c : digits) n = n * 10 + (c - '0');
  return n;
}

// HH:MM or HH:MM:SS (H or HH) in seconds after midnight; 24:00 only as an end.
absl::StatusOr<int32_t> ParseClock(absl::string_view what, absl::string_view text, bool is_end) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  bool well_formed = (parts.size() == 2 || parts.size() == 3) && !parts[0].empty() &&
                     parts[0].size() <= 2 && AllDigits(parts[0]);
  for (size_t i = 1; well_formed && i < parts.size(); ++i) {
    well_formed = parts[i].size() == 2 && AllDigits(parts[i]);
  }
  auto error = [&](absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(text), ": ", problem));
  };
  if (!well_formed) return error("expected HH:MM or HH:MM:SS");
  int hour = ToInt(parts[0]);
  int minute = ToInt(parts[1]);
  int second = parts.size() == 3 ? ToInt(parts[2]) : 0;
  if (hour > 24 || (hour == 24 && !is_end)) {
    return error(absl::StrCat("hour ", hour, " out of range (00-23", is_end ? ", or 24:00)" : ")"));
  }
  if (minute >= 60) return error(absl::StrCat("minute ", minute, " out of range (00-59)"));
  if (second >= 60) return error(absl::StrCat("second ", second, " out of range (00-59)"));
  if (hour == 24 && (minute != 0 || second != 0)) return error("only 24:00 may use hour 24");
  return hour * 3600 + minute * 60 + second;
}

absl::Status ParseTimes(absl::string_view text, Window& w) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '-');
  if (parts.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected START-END like 08:00-18:00, got ", Quote(text)));
  }
  ASSIGN_OR_RETURN(int32_t start, ParseClock("start", parts[0], /*is_end=*/false));
  ASSIGN_OR_RETURN(int32_t end, ParseClock("end", parts[1], /*is_end=*/true));
  if (start == end) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty window: it starts and ends at ", Quote(parts[0])));
  }
  w.start_s = start;
  // An end of 00:00 is the coming midnight, the same as 24:00.
  w.end_s = end == 0 ? kSecondsPerDay : end;
  return absl::OkStatus();
}

// Skips leading whitespace, then takes the next run of non-whitespace.
absl::string_view TakeField(absl::string_view& rest) {
  rest = absl::StripLeadingAsciiWhitespace(rest);
  return TakeWhile(rest, IsNotSpace);
}

// The fields of a window; errors here are prefixed by ParseWindow.
absl::StatusOr<Window> ParseWindowFields(absl::string_view text) {
  absl::string_view rest = text;
  absl::string_view days_text = TakeField(rest);
  absl::string_view times_text = TakeField(rest);
  // The rest is the rate, which may itself hold a space ("10 MB/s").
  absl::string_view rate_text = absl::StripAsciiWhitespace(rest);
  if (rate_text.empty()) {
    return absl::InvalidArgumentError(
        "expected DAYS START-END RATE, e.g. \"mon-fri 08:00-18:00 10MB/s\"");
  }
  Window w;
  ASSIGN_OR_RETURN(w.days, ParseDays(days_text));
  RETURN_IF_ERROR(ParseTimes(times_text, w));
  ASSIGN_OR_RETURN(w.rate, ParseRate(rate_text));
  return w;
}

// Days in the canonical order: starting at the first day that begins a run,
// so that a run across Sunday into Monday stays one range ("fri-mon").
std::string FormatDays(uint8_t days) {
  days &= kAllDays;
  if (days == kAllDays) return "daily";
  int start = 0;
  while (start < 7 && !(HasDay(days, start) && !HasDay(days, (start + 6) % 7))) ++start;
  std::vector<std::string> items;
  for (int i = 0; start < 7 && i < 7;) {
    if (!HasDay(days, (start + i) % 7)) {
      ++i;
      continue;
    }
    int run = 1;
    while (i + run < 7 && HasDay(days, (start + i + run) % 7)) ++run;
    if (run >= 3) {
      items.push_back(
          absl::StrCat(kDayNames[(start + i) % 7], "-", kDayNames[(start + i + run - 1) % 7]));
    } else {
      for (int k = 0; k < run; ++k) items.push_back(kDayNames[(start + i + k) % 7]);
    }
    i += run;
  }
  return absl::StrJoin(items, ",");
}

std::string FormatClock(int32_t s) {
  std::string text = absl::StrCat(absl::Dec(s / 3600, absl::kZeroPad2), ":",
                                  absl::Dec(s / 60 % 60, absl::kZeroPad2));
  if (s % 60 != 0) absl::StrAppend(&text, ":", absl::Dec(s % 60, absl::kZeroPad2));
  return text;
}

bool IsZoneNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' ||
         c == '+';
}

// absl would also open an absolute path or "file:..." given as a zone name;
// IANA names are letters, digits, "/", "_", "-" and "+", starting with a letter.
bool IsZoneName(const std::string& name) {
  return !name.empty() && name.size() <= 128 && absl::ascii_isalpha(name[0]) &&
         std::all_of(name.begin(), name.end(), IsZoneNameChar);
}

// Where local time `civil` happens in `tz`, as every instant at which the
// local clock reaches it. A time skipped by a DST change is reached at the
// change itself; a repeated one twice, and the change between them sets the
// clock back across it, so all three may change which window contains now.
std::vector<absl::Time> InstantsOf(const absl::TimeZone& tz, absl::CivilSecond civil) {
  absl::TimeZone::TimeInfo info = tz.At(civil);
  switch (info.kind) {
    case absl::TimeZone::TimeInfo::UNIQUE:
      return {info.pre};
    case absl::TimeZone::TimeInfo::SKIPPED:
      return {info.trans};
    case absl::TimeZone::TimeInfo::REPEATED:
      return {info.pre, info.trans, info.post};
  }
  return {info.pre};
}

}  // namespace

absl::StatusOr<Rate> ParseRate(absl::string_view text) {
  if (text.size() > kMaxRateTextLength) {
    return absl::InvalidArgumentError(absl::StrCat("rate ", QuoteStart(text, kMaxRateTextLength),
                                                   " is longer than ", kMaxRateTextLength,
                                                   " characters"));
  }
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) {
    return absl::InvalidArgumentError("rate is empty: write e.g. 10MB/s, unlimited or paused");
  }
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "unlimited") return Rate::Unlimited();
  if (lower == "paused") return Rate::Paused();
  absl::StatusOr<uint64_t> bps = ParseLimited(text);
  if (!bps.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate ", Quote(text), ": ", bps.status().message()));
  }
  return Rate::Limited(*bps);
}

std::string FormatRate(const Rate& r) {
  if (r.unlimited()) return "unlimited";
  if (r.paused()) return "paused";
  for (const Unit& unit : kFormatUnits) {
    if (r.bytes_per_second % unit.bytes == 0) {
      return absl::StrCat(r.bytes_per_second / unit.bytes, unit.name, "/s");
    }
  }
  return absl::StrCat(r.bytes_per_second, "B/s");
}

// Integer arithmetic throughout, so that 999500 is "1.00 MB/s" and not a
// floating-point "1000 kB/s".
std::string DescribeRate(uint64_t bytes_per_second) {
  static constexpr const char* kDecimalUnits[] = {"kB", "MB", "GB", "TB", "PB", "EB"};
  if (bytes_per_second < 1000) return absl::StrCat(bytes_per_second, " B/s");
  int unit = 0;  // kDecimalUnits[unit] is 1000^(unit + 1) bytes
  uint64_t scale = 1000;
  while (unit + 1 < 6 && bytes_per_second / 1000 >= scale) {
    scale *= 1000;
    ++unit;
  }
  // Three significant digits: `mantissa` in 100..999 steps of scale/10^decimals.
  int decimals = bytes_per_second / scale >= 100 ? 0 : bytes_per_second / scale >= 10 ? 1 : 2;
  uint64_t step = scale / (decimals == 2 ? 100 : decimals == 1 ? 10 : 1);
  uint64_t mantissa = bytes_per_second / step + (bytes_per_second % step >= step / 2 ? 1 : 0);
  if (mantissa == 1000) {  // rounded up into the next digit: 9.995 -> 10.0
    mantissa = 100;
    if (--decimals < 0) {
      decimals = 2;
      ++unit;
    }
  }
  std::string suffix = absl::StrCat(" ", kDecimalUnits[unit], "/s");
  if (decimals == 0) return absl::StrCat(mantissa, suffix);
  uint64_t divisor = decimals == 2 ? 100 : 10;
  return absl::StrCat(mantissa / divisor, ".",
                      absl::Dec(mantissa % divisor, decimals == 2 ? absl::kZeroPad2 : absl::kNoPad),
                      suffix);
}

absl::StatusOr<Window> ParseWindow(absl::string_view text) {
  if (text.size() > kMaxWindowTextLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window ", QuoteStart(text, 64), " is longer than ", kMaxWindowTextLength, " characters"));
  }
  absl::StatusOr<Window> w = ParseWindowFields(text);
  if (!w.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("window ", Quote(text), ": ", w.status().message()));
  }
  return w;
}

std::string FormatWindow(const Window& w) {
  return absl::StrCat(FormatDays(w.days), " ", FormatClock(w.start_s), "-", FormatClock(w.end_s),
                      " ", FormatRate(w.rate));
}

absl::StatusOr<absl::TimeZone> LoadZone(const std::string& name) {
  if (name == "UTC") return absl::UTCTimeZone();
  if (!IsZoneName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid time zone name ", QuoteStart(name, 64),
                                                   ": expected an IANA name like Europe/Berlin"));
  }
  absl::TimeZone tz;
  if (!absl::LoadTimeZone(name, &tz)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown time zone ", Quote(name), ": not in the system's tzdata (/usr/share/zoneinfo)"));
  }
  return tz;
}

bool Contains(const Window& w, const absl::CivilSecond& local) {
  int today = DayIndex(absl::CivilDay(local));
  int32_t second = local.hour() * 3600 + local.minute() * 60 + local.second();
  if (w.start_s < w.end_s) {
    return HasDay(w.days, today) && second >= w.start_s && second < w.end_s;
  }
  int yesterday = (today + 6) % 7;
  return (HasDay(w.days, today) && second >= w.start_s) ||
         (HasDay(w.days, yesterday) && second < w.end_s);
}

Rate RateAt(const SitePolicy& policy, const absl::TimeZone& tz, absl::Time now) {
  absl::CivilSecond local = absl::ToCivilSecond(now, tz);
  for (const Window& w : policy.windows) {
    if (Contains(w, local)) return w.rate;
  }
  return policy.rate;
}

// Every start and end of every window, from those of yesterday (a crossing
// window ends today) to those kNextChangeSearchDays ahead; simple beats clever.
absl::Time NextChange(const SitePolicy& policy, const absl::TimeZone& tz, absl::Time now) {
  absl::Time next = absl::InfiniteFuture();
  auto consider = [&](absl::CivilSecond civil) {
    for (absl::Time t : InstantsOf(tz, civil)) {
      if (t > now && t < next) next = t;
    }
  };
  const absl::CivilDay today(absl::ToCivilSecond(now, tz));
  for (int offset = -1; offset <= kNextChangeSearchDays && !policy.windows.empty(); ++offset) {
    absl::CivilDay day = today + offset;
    for (const Window& w : policy.windows) {
      if (!HasDay(w.days, DayIndex(day))) continue;
      consider(absl::CivilSecond(day) + w.start_s);
      absl::CivilDay end_day = w.end_s <= w.start_s ? day + 1 : day;
      consider(absl::CivilSecond(end_day) + w.end_s);
    }
  }
  return next;
}

}  // namespace pkgdist
