#include "controller/labels.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

std::string SelectorError(absl::string_view text) {
  auto selector = LabelSelector::Parse(text);
  if (selector.ok()) return "parsed as " + selector->ToString();
  EXPECT_EQ(selector.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(selector.status().message());
}

bool Selects(absl::string_view text, const Labels& labels) {
  auto selector = LabelSelector::Parse(text);
  EXPECT_TRUE(selector.ok()) << text << ": " << selector.status();
  return selector.ok() && selector->Matches(labels);
}

std::string Canonical(absl::string_view text) {
  auto selector = LabelSelector::Parse(text);
  EXPECT_TRUE(selector.ok()) << text << ": " << selector.status();
  return selector.ok() ? selector->ToString() : "";
}

TEST(LabelKeyTest, AcceptsLettersDigitsDotsUnderscoresAndDashes) {
  // Any mix of the allowed characters that starts with a letter or digit.
  EXPECT_TRUE(ValidateLabelKey("site").ok());
  EXPECT_TRUE(ValidateLabelKey("0rack_A-1.b").ok());
  EXPECT_TRUE(ValidateLabelKey(std::string(63, 'k')).ok());
}

TEST(LabelKeyTest, RejectsEmptyLongAndBadlyStartedKeys) {
  // The message names the key and what is wrong with it.
  EXPECT_THAT(ValidateLabelKey("").message(), HasSubstr("empty"));
  EXPECT_THAT(ValidateLabelKey(std::string(64, 'k')).message(), HasSubstr("longer than 63"));
  EXPECT_THAT(ValidateLabelKey("-site").message(), HasSubstr("\"-site\" must start with"));
  EXPECT_THAT(ValidateLabelKey(".site").message(), HasSubstr("must start with"));
  EXPECT_THAT(ValidateLabelKey("_site").message(), HasSubstr("must start with"));
}

TEST(LabelKeyTest, RejectsCharactersOutsideTheAlphabet) {
  // Spaces, slashes, operators and non-ASCII bytes are all refused.
  for (absl::string_view key : {"si te", "a/b", "a=b", "a,b", "a!", "caf\xc3\xa9"}) {
    absl::Status s = ValidateLabelKey(key);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(s.message(), HasSubstr("invalid character")) << key;
  }
}

TEST(LabelValueTest, AcceptsEmptyAndUpTo63Characters) {
  // Unlike a key, a value may be empty or start with any allowed character.
  EXPECT_TRUE(ValidateLabelValue("").ok());
  EXPECT_TRUE(ValidateLabelValue("-x.y_z").ok());
  EXPECT_TRUE(ValidateLabelValue(std::string(63, 'v')).ok());
  EXPECT_THAT(ValidateLabelValue(std::string(64, 'v')).message(), HasSubstr("longer than 63"));
  EXPECT_THAT(ValidateLabelValue("fr a").message(), HasSubstr("\"fr a\": invalid character"));
}

TEST(ParseLabelTest, SplitsAtTheFirstEquals) {
  // "key=value" gives the pair; an empty value is allowed.
  auto label = ParseLabel("site=fra");
  ASSERT_TRUE(label.ok()) << label.status();
  EXPECT_EQ(label->first, "site");
  EXPECT_EQ(label->second, "fra");
  label = ParseLabel("site=");
  ASSERT_TRUE(label.ok()) << label.status();
  EXPECT_EQ(label->second, "");
}

TEST(ParseLabelTest, RejectsTextThatIsNotAValidPair) {
  // The message quotes the whole text.
  EXPECT_THAT(ParseLabel("site").status().message(), HasSubstr("\"site\" is not key=value"));
  EXPECT_THAT(ParseLabel("=fra").status().message(), HasSubstr("label \"=fra\""));
  EXPECT_THAT(ParseLabel("site=a=b").status().message(), HasSubstr("invalid character \"=\""));
  EXPECT_THAT(ParseLabel("s/te=fra").status().message(), HasSubstr("label key \"s/te\""));
}

TEST(FormatLabelsTest, SortsByKeyAndRoundTrips) {
  // The canonical text parses back to the same labels.
  Labels labels = {{"tier", "edge"}, {"site", "fra"}, {"empty", ""}};
  EXPECT_EQ(FormatLabels(labels), "empty=,site=fra,tier=edge");
  auto parsed = ParseLabels(FormatLabels(labels));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, labels);
}

TEST(FormatLabelsTest, NoLabelsIsTheEmptyString) {
  // "" both ways.
  EXPECT_EQ(FormatLabels({}), "");
  auto parsed = ParseLabels("");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->empty());
}

TEST(ParseLabelsTest, AcceptsAnyOrder) {
  // Hand-written lists need not be sorted.
  auto parsed = ParseLabels("tier=edge,site=fra");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(FormatLabels(*parsed), "site=fra,tier=edge");
}

TEST(ParseLabelsTest, RejectsBadText) {
  // Empty pairs, missing "=", bad characters and repeated keys.
  for (absl::string_view text : {",", "site=fra,", ",site=fra", "site=fra,,tier=edge", "site",
                                 "site=fra tier=edge", "site=fra;tier=edge", " site=fra"}) {
    auto parsed = ParseLabels(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr(absl::StrCat("labels \"", text)));
  }
  EXPECT_THAT(ParseLabels("site=fra,site=ams").status().message(),
              HasSubstr("key \"site\" appears twice"));
}

struct MatchCase {
  const char* selector;
  Labels labels;
  bool matches;
};

void PrintTo(const MatchCase& c, std::ostream* os) {
  *os << "\"" << c.selector << "\" on {" << FormatLabels(c.labels) << "}";
}

class SelectorMatchTest : public ::testing::TestWithParam<MatchCase> {};

TEST_P(SelectorMatchTest, MatchesAsDocumented) {
  // Each operator on a matching label, a different value and a missing key.
  const MatchCase& c = GetParam();
  EXPECT_EQ(Selects(c.selector, c.labels), c.matches)
      << c.selector << " on " << FormatLabels(c.labels);
}

const Labels kFraEdge = {{"site", "fra"}, {"tier", "edge"}};
const Labels kAmsCore = {{"site", "ams"}, {"tier", "core"}};
const Labels kNoSite = {{"tier", "edge"}};
const Labels kEmptySite = {{"site", ""}};

INSTANTIATE_TEST_SUITE_P(
    EveryOperator, SelectorMatchTest,
    ::testing::Values(
        MatchCase{"site=fra", kFraEdge, true}, MatchCase{"site=fra", kAmsCore, false},
        MatchCase{"site=fra", kNoSite, false}, MatchCase{"site==fra", kFraEdge, true},
        MatchCase{"site==fra", kAmsCore, false}, MatchCase{"site==fra", kNoSite, false},
        MatchCase{"site!=fra", kFraEdge, false}, MatchCase{"site!=fra", kAmsCore, true},
        MatchCase{"site!=fra", kNoSite, true}, MatchCase{"site=", kEmptySite, true},
        MatchCase{"site=", kNoSite, false}, MatchCase{"site!=", kEmptySite, false},
        MatchCase{"site in (fra,ams)", kFraEdge, true},
        MatchCase{"site in (fra,ams)", kAmsCore, true}, MatchCase{"site in (lhr)", kFraEdge, false},
        MatchCase{"site in (fra)", kNoSite, false}, MatchCase{"site notin (fra)", kFraEdge, false},
        MatchCase{"site notin (fra)", kAmsCore, true}, MatchCase{"site notin (fra)", kNoSite, true},
        MatchCase{"site", kFraEdge, true}, MatchCase{"site", kEmptySite, true},
        MatchCase{"site", kNoSite, false}, MatchCase{"!site", kFraEdge, false},
        MatchCase{"!site", kNoSite, true}, MatchCase{"site=fra,tier=edge", kFraEdge, true},
        MatchCase{"site=fra,tier=core", kFraEdge, false},
        MatchCase{"site,site!=fra", kNoSite, false}, MatchCase{"site,site!=fra", kAmsCore, true},
        MatchCase{"site=fra", Labels{}, false}, MatchCase{"!site", Labels{}, true}));

TEST(LabelSelectorTest, ToleratesWhitespaceAroundEveryToken) {
  // Spaces and tabs anywhere between tokens do not change the selector.
  EXPECT_EQ(Canonical("  site = fra ,\ttier in ( edge , core )  , ! old ,x != y, z  "),
            "site=fra,tier in (core,edge),!old,x!=y,z");
  EXPECT_EQ(Canonical("tier in(edge)"), "tier in (edge)");
  EXPECT_EQ(Canonical("tier notin(edge)"), "tier notin (edge)");
  EXPECT_TRUE(Selects(" site = fra ", kFraEdge));
}

TEST(LabelSelectorTest, ToStringIsCanonical) {
  // "==" becomes "=", sets are sorted and deduplicated, order is kept.
  EXPECT_EQ(Canonical("tier in (edge,core,edge),site==fra"), "tier in (core,edge),site=fra");
  EXPECT_EQ(Canonical("b,a"), "b,a");
  EXPECT_EQ(Canonical("site="), "site=");
  EXPECT_EQ(Canonical("site!="), "site!=");
  EXPECT_EQ(Canonical("in in (in)"), "in in (in)");
  EXPECT_EQ(Canonical("notin"), "notin");
}

TEST(LabelSelectorTest, ParsingTheCanonicalTextGivesTheSameText) {
  // ToString() is a fixed point of Parse.
  for (absl::string_view text : {"site=fra", "a==b , c!=d", "t in (z, y, x, y)", "t notin (a)", "k",
                                 "!k", "k=,j!=", "a.b-c_d=-v.1_", " x  in(1,2) ,!y"}) {
    std::string once = Canonical(text);
    EXPECT_EQ(Canonical(once), once) << text;
  }
}

TEST(LabelSelectorTest, ErrorsSayWhereAndWhat) {
  // Each malformed selector is INVALID_ARGUMENT with the text and a position.
  EXPECT_EQ(SelectorError("tier in (edge"), "selector \"tier in (edge\" at 14: expected \")\"");
  EXPECT_THAT(SelectorError("tier in (edge core)"), HasSubstr("at 15: expected \",\" or \")\""));
  EXPECT_THAT(SelectorError("tier in ()"), HasSubstr("at 10: expected a value"));
  EXPECT_THAT(SelectorError("tier in (a,)"), HasSubstr("expected a value"));
  EXPECT_THAT(SelectorError("tier in (,a)"), HasSubstr("expected a value"));
  EXPECT_THAT(SelectorError("tier in edge"), HasSubstr("at 9: expected \"(\""));
  EXPECT_THAT(SelectorError("tier in"), HasSubstr("expected \"(\""));
  EXPECT_THAT(SelectorError("site=fra,"), HasSubstr("at 10: expected a label key"));
  EXPECT_THAT(SelectorError(",site=fra"), HasSubstr("at 1: expected a label key"));
  EXPECT_THAT(SelectorError("a,,b"), HasSubstr("at 3: expected a label key"));
  EXPECT_THAT(SelectorError("si@te=fra"),
              HasSubstr("at 1: label key \"si@te\": invalid character \"@\""));
  EXPECT_THAT(SelectorError("-site=fra"), HasSubstr("\"-site\" must start with"));
  EXPECT_THAT(SelectorError("site=fr@"), HasSubstr("at 6: label value \"fr@\""));
  EXPECT_THAT(SelectorError("site=a=b"), HasSubstr("label value \"a=b\""));
  EXPECT_THAT(SelectorError("tier in (ed/ge)"), HasSubstr("label value \"ed/ge\""));
  EXPECT_THAT(SelectorError("site > 3"), HasSubstr("at 6: unknown operator \">\""));
  EXPECT_THAT(SelectorError("site === fra"), HasSubstr("unknown operator \"===\""));
  EXPECT_THAT(SelectorError("site =! fra"), HasSubstr("unknown operator \"=!\""));
  EXPECT_THAT(SelectorError("site is fra"), HasSubstr("at 6: unknown operator \"is\""));
  EXPECT_THAT(SelectorError("site(fra)"), HasSubstr("at 5: expected an operator"));
  EXPECT_THAT(SelectorError("site=fra tier=edge"), HasSubstr("at 10: expected \",\" or the end"));
  EXPECT_THAT(SelectorError("!site=fra"), HasSubstr("at 6: expected \",\" or the end"));
  EXPECT_THAT(SelectorError("!"), HasSubstr("expected a label key"));
  EXPECT_THAT(SelectorError("site=(fra)"), HasSubstr("at 6: expected \",\" or the end"));
}

TEST(LabelSelectorTest, EmptySelectorIsAnError) {
  // Selecting every agent is not a selector's job.
  EXPECT_THAT(SelectorError(""), HasSubstr("selector is empty"));
  EXPECT_THAT(SelectorError(" \t "), HasSubstr("selector is empty"));
}

TEST(LabelSelectorTest, QuotesUnprintableBytesInErrors) {
  // A control character in the text is escaped, not copied into the message.
  std::string error = SelectorError(std::string("site=\x01", 6));
  EXPECT_THAT(error, HasSubstr("\\x01"));
  EXPECT_EQ(error.find('\x01'), std::string::npos);
}

std::string Repeat(absl::string_view item, int n, absl::string_view sep) {
  return absl::StrJoin(std::vector<std::string>(n, std::string(item)), sep);
}

std::string NumberedValues(int n) {
  std::vector<std::string> values;
  for (int i = 0; i < n; ++i) values.push_back(absl::StrCat("v", i));
  return absl::StrJoin(values, ",");
}

TEST(LabelSelectorTest, AcceptsInputAtEveryBound) {
  // 4096 bytes, 64 requirements and 256 values in a set are all allowed.
  std::string padded = "site=fra" + std::string(kMaxSelectorBytes - 8, ' ');
  ASSERT_EQ(padded.size(), 4096u);
  EXPECT_TRUE(LabelSelector::Parse(padded).ok());
  EXPECT_TRUE(LabelSelector::Parse(Repeat("a", 64, ",")).ok());
  EXPECT_TRUE(LabelSelector::Parse("k in (" + NumberedValues(256) + ")").ok());
}

TEST(LabelSelectorTest, RejectsInputBeyondTheBounds) {
  // One more byte, requirement or value is INVALID_ARGUMENT, not a crash.
  EXPECT_THAT(SelectorError(std::string(4097, ' ')), HasSubstr("4097 bytes"));
  EXPECT_THAT(SelectorError(Repeat("site=fra", 556, ",")), HasSubstr("more than the limit"));
  std::string five_thousand = "a" + std::string(4999, ' ');
  EXPECT_THAT(SelectorError(five_thousand), HasSubstr("5000 bytes"));
  EXPECT_THAT(SelectorError(Repeat("a", 65, ",")), HasSubstr("at 129: more than 64 requirements"));
  EXPECT_THAT(SelectorError("k in (" + NumberedValues(257) + ")"),
              HasSubstr("more than 256 values"));
  EXPECT_THAT(SelectorError("k in (" + Repeat("v", 257, ",") + ")"),
              HasSubstr("more than 256 values"));
}

TEST(LabelSelectorTest, PathologicalInputFailsCleanly) {
  // Long runs of punctuation near the byte limit are rejected at once.
  for (char c : {'(', ')', ',', '!', '=', 'a'}) {
    std::string text(kMaxSelectorBytes, c);
    auto selector = LabelSelector::Parse(text);
    if (c == 'a') {
      EXPECT_THAT(selector.status().message(), HasSubstr("longer than 63"));
    } else {
      EXPECT_EQ(selector.status().code(), absl::StatusCode::kInvalidArgument) << c;
    }
  }
}

// The property test's model of a requirement, and how the test writes it.
struct ModelRequirement {
  enum Kind { kEq, kNe, kIn, kNotIn, kExists, kNotExists } kind;
  std::string key;
  std::vector<std::string> values;
};

bool ReferenceMatches(const std::vector<ModelRequirement>& reqs, const Labels& labels) {
  for (const ModelRequirement& r : reqs) {
    auto it = labels.find(r.key);
    bool has = it != labels.end();
    bool in_set = false;
    for (const std::string& v : r.values) in_set = in_set || (has && it->second == v);
    bool ok = false;
    switch (r.kind) {
      case ModelRequirement::kEq:
        ok = has && it->second == r.values[0];
        break;
      case ModelRequirement::kNe:
        ok = !has || it->second != r.values[0];
        break;
      case ModelRequirement::kIn:
        ok = in_set;
        break;
      case ModelRequirement::kNotIn:
        ok = !in_set;
        break;
      case ModelRequirement::kExists:
        ok = has;
        break;
      case ModelRequirement::kNotExists:
        ok = !has;
        break;
    }
    if (!ok) return false;
  }
  return true;
}

class RandomSelectors {
 public:
  explicit RandomSelectors(uint32_t seed) : rng_(seed) {}

  std::string Space() { return Pick({"", "", " ", "  ", "\t"}); }
  std::string Key() { return Pick({"a", "b", "c"}); }
  std::string Value() { return Pick({"x", "y", "z"}); }

  std::string Write(const ModelRequirement& r) {
    std::string s = Space();
    switch (r.kind) {
      case ModelRequirement::kEq:
        return absl::StrCat(s, r.key, Space(), Pick({"=", "=="}), Space(), r.values[0]);
      case ModelRequirement::kNe:
        return absl::StrCat(s, r.key, Space(), "!=", Space(), r.values[0]);
      case ModelRequirement::kIn:
      case ModelRequirement::kNotIn: {
        std::string set = absl::StrJoin(r.values, absl::StrCat(Space(), ",", Space()));
        return absl::StrCat(s, r.key, " ", r.kind == ModelRequirement::kIn ? "in" : "notin",
                            Space(), "(", Space(), set, Space(), ")");
      }
      case ModelRequirement::kExists:
        return absl::StrCat(s, r.key);
      case ModelRequirement::kNotExists:
        return absl::StrCat(s, "!", Space(), r.key);
    }
    return "";
  }

  ModelRequirement Requirement() {
    ModelRequirement r{static_cast<ModelRequirement::Kind>(Uniform(0, 5)), Key(), {}};
    int n = r.kind == ModelRequirement::kEq || r.kind == ModelRequirement::kNe      ? 1
            : r.kind == ModelRequirement::kIn || r.kind == ModelRequirement::kNotIn ? Uniform(1, 4)
                                                                                    : 0;
    for (int i = 0; i < n; ++i) r.values.push_back(Value());
    return r;
  }

  Labels RandomLabels() {
    Labels labels;
    for (const char* key : {"a", "b", "c"}) {
      if (Uniform(0, 2) > 0) labels[key] = Value();
    }
    return labels;
  }

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

 private:
  std::string Pick(std::initializer_list<const char*> options) {
    return *(options.begin() + Uniform(0, static_cast<int>(options.size()) - 1));
  }

  std::mt19937 rng_;
};

TEST(LabelSelectorTest, AgreesWithAReferenceOnRandomSelectors) {
  // Random selectors over three keys and three values, matched against random
  // label sets, agree with a direct evaluation; their canonical text too.
  RandomSelectors gen(20240601);
  for (int i = 0; i < 3000; ++i) {
    std::vector<ModelRequirement> model;
    std::vector<std::string> parts;
    for (int n = gen.Uniform(1, 4); n > 0; --n) {
      model.push_back(gen.Requirement());
      parts.push_back(gen.Write(model.back()));
    }
    std::string text = absl::StrJoin(parts, ",");
    auto selector = LabelSelector::Parse(text);
    ASSERT_TRUE(selector.ok()) << text << ": " << selector.status();
    auto canonical = LabelSelector::Parse(selector->ToString());
    ASSERT_TRUE(canonical.ok()) << selector->ToString() << ": " << canonical.status();
    EXPECT_EQ(canonical->ToString(), selector->ToString());
    for (int j = 0; j < 8; ++j) {
      Labels labels = gen.RandomLabels();
      bool want = ReferenceMatches(model, labels);
      EXPECT_EQ(selector->Matches(labels), want) << text << " on " << FormatLabels(labels);
      EXPECT_EQ(canonical->Matches(labels), want) << selector->ToString();
    }
  }
}

TEST(LabelSelectorTest, RandomBytesNeverCrashAndParsedOnesRoundTrip) {
  // Text over the selector's own characters either fails with
  // INVALID_ARGUMENT or parses to a selector whose canonical text is stable.
  std::mt19937 rng(7);
  const std::string alphabet = "ab=!(), \tinot";
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    for (int n = std::uniform_int_distribution<int>(0, 24)(rng); n > 0; --n) {
      text += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    }
    auto selector = LabelSelector::Parse(text);
    if (!selector.ok()) {
      EXPECT_EQ(selector.status().code(), absl::StatusCode::kInvalidArgument) << text;
      continue;
    }
    EXPECT_EQ(Canonical(selector->ToString()), selector->ToString()) << text;
  }
}

}  // namespace
}  // namespace pkgdist
