#include "controller/labels.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "shared/paths.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

std::string Quote(absl::string_view s) { return absl::StrCat("\"", absl::CHexEscape(s), "\""); }

bool IsLabelChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

absl::Status CheckLabelChars(absl::string_view what, absl::string_view text) {
  for (char c : text) {
    if (!IsLabelChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(text), ": invalid character ",
                                                     Quote(absl::string_view(&c, 1)),
                                                     " (allowed: A-Z a-z 0-9 . _ -)"));
    }
  }
  return absl::OkStatus();
}

// The selector's tokens are maximal runs of bytes up to these delimiters,
// validated afterwards, so that an error names the whole bad key or value.
bool IsOperatorChar(char c) { return c == '=' || c == '!' || c == '<' || c == '>' || c == '~'; }

bool EndsValue(char c) { return absl::ascii_isspace(c) || c == ',' || c == '(' || c == ')'; }

bool EndsKey(char c) { return EndsValue(c) || IsOperatorChar(c); }

}  // namespace

absl::Status ValidateLabelKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("label key is empty");
  if (key.size() > kMaxLabelKeyLength) {
    return absl::InvalidArgumentError(absl::StrCat("label key ", Quote(key), " is longer than ",
                                                   kMaxLabelKeyLength, " characters"));
  }
  RETURN_IF_ERROR(CheckLabelChars("label key", key));
  if (!absl::ascii_isalnum(key[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("label key ", Quote(key), " must start with a letter or digit"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabelValue(absl::string_view value) {
  if (value.size() > kMaxLabelValueLength) {
    return absl::InvalidArgumentError(absl::StrCat("label value ", Quote(value), " is longer than ",
                                                   kMaxLabelValueLength, " characters"));
  }
  return CheckLabelChars("label value", value);
}

absl::Status ValidateLabel(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(ValidateLabelKey(key));
  RETURN_IF_ERROR(ValidateLabelValue(value));
  if (key != kSiteLabel) return absl::OkStatus();
  if (absl::Status s = ValidateName(value, "site name"); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("label site=", value, ": ", s.message()));
  }
  return absl::OkStatus();
}

std::string SiteOf(const Labels& labels) {
  auto it = labels.find(kSiteLabel);
  if (it == labels.end() || !ValidateName(it->second, "site name").ok()) return "";
  return it->second;
}

absl::StatusOr<std::pair<std::string, std::string>> ParseLabel(absl::string_view text) {
  size_t eq = text.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("label ", Quote(text), " is not key=value"));
  }
  absl::string_view key = text.substr(0, eq);
  absl::string_view value = text.substr(eq + 1);
  absl::Status s = ValidateLabelKey(key);
  if (s.ok()) s = ValidateLabelValue(value);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("label ", Quote(text), ": ", s.message()));
  }
  return std::make_pair(std::string(key), std::string(value));
}

std::string FormatLabels(const Labels& labels) {
  return absl::StrJoin(labels, ",", absl::PairFormatter("="));
}

absl::StatusOr<Labels> ParseLabels(absl::string_view text) {
  Labels labels;
  if (text.empty()) return labels;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    auto label = ParseLabel(part);
    if (!label.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels ", Quote(text), ": ", label.status().message()));
    }
    if (labels.count(label->first) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("labels ", Quote(text), ": key ", Quote(label->first), " appears twice"));
    }
    labels.insert(*std::move(label));
  }
  return labels;
}

// A recursive-descent parser over the selector's bytes, one pass, no
// backtracking.
class LabelSelector::Parser {
 public:
  explicit Parser(absl::string_view text) : text_(text) {}

  absl::StatusOr<std::vector<Requirement>> Run() {
    if (text_.size() > kMaxSelectorBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "selector is ", text_.size(), " bytes, more than the limit of ", kMaxSelectorBytes));
    }
    SkipSpace();
    if (AtEnd()) return Error("selector is empty; it needs at least one requirement");
    std::vector<Requirement> requirements;
    while (true) {
      size_t requirement_pos = pos_;
      ASSIGN_OR_RETURN(Requirement r, ParseRequirement());
      if (requirements.size() == kMaxSelectorRequirements) {
        return Error(requirement_pos,
                     absl::StrCat("more than ", kMaxSelectorRequirements, " requirements"));
      }
      requirements.push_back(std::move(r));
      SkipSpace();
      if (AtEnd()) return requirements;
      if (!Consume(',')) return Error("expected \",\" or the end of the selector");
      SkipSpace();
    }
  }

 private:
  absl::StatusOr<Requirement> ParseRequirement() {
    Requirement r;
    bool negated = Consume('!');
    if (negated) SkipSpace();
    ASSIGN_OR_RETURN(r.key, ParseKey());
    SkipSpace();
    if (negated || AtEnd() || Peek() == ',') {
      r.op = negated ? Op::kNotExists : Op::kExists;
      return r;
    }
    RETURN_IF_ERROR(ParseOperatorAndValues(r));
    return r;
  }

  // What follows a key: an operator and its value or set.
  absl::Status ParseOperatorAndValues(Requirement& r) {
    size_t op_pos = pos_;
    absl::string_view op = TakeWhile(IsOperatorChar);
    if (op.empty()) op = TakeWhile([](char c) { return !EndsKey(c); });
    if (op == "=" || op == "==" || op == "!=") {
      r.op = op == "!=" ? Op::kNotEquals : Op::kEquals;
      SkipSpace();
      size_t value_pos = pos_;
      r.values.emplace_back(TakeWhile([](char c) { return !EndsValue(c); }));
      return Check(value_pos, ValidateLabelValue(r.values.back()));
    }
    if (op == "in" || op == "notin") {
      r.op = op == "in" ? Op::kIn : Op::kNotIn;
      return ParseSet(r.values);
    }
    if (op.empty()) {
      return Error(
          absl::StrCat("expected an operator (=, ==, !=, in, notin), \",\" or the end after key ",
                       Quote(r.key)));
    }
    return Error(op_pos, absl::StrCat("unknown operator ", Quote(op),
                                      " (known: =, ==, !=, in, notin, and ! before a key)"));
  }

  absl::StatusOr<std::string> ParseKey() {
    size_t key_pos = pos_;
    absl::string_view key = TakeWhile([](char c) { return !EndsKey(c); });
    if (key.empty()) return Error("expected a label key");
    RETURN_IF_ERROR(Check(key_pos, ValidateLabelKey(key)));
    return std::string(key);
  }

  // "(" value ("," value)* ")" into `values`, sorted and deduplicated.
  absl::Status ParseSet(std::vector<std::string>& values) {
    SkipSpace();
    if (!Consume('(')) return Error("expected \"(\"");
    while (true) {
      SkipSpace();
      size_t value_pos = pos_;
      absl::string_view value = TakeWhile([](char c) { return !EndsValue(c); });
      if (value.empty()) return Error("expected a value (a set needs at least one)");
      RETURN_IF_ERROR(Check(value_pos, ValidateLabelValue(value)));
      if (values.size() == kMaxSelectorSetValues) {
        return Error(value_pos,
                     absl::StrCat("more than ", kMaxSelectorSetValues, " values in a set"));
      }
      values.emplace_back(value);
      SkipSpace();
      if (AtEnd()) return Error("expected \")\"");
      if (Consume(')')) break;
      if (!Consume(',')) return Error("expected \",\" or \")\"");
    }
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    return absl::OkStatus();
  }

  bool AtEnd() const { return pos_ == text_.size(); }
  char Peek() const { return text_[pos_]; }
  bool Consume(char c) {
    if (AtEnd() || Peek() != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() { TakeWhile(absl::ascii_isspace); }
  template <typename Pred>
  absl::string_view TakeWhile(Pred pred) {
    size_t start = pos_;
    while (!AtEnd() && pred(Peek())) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  absl::Status Error(absl::string_view what) const { return Error(pos_, what); }
  absl::Status Error(size_t pos, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("selector ", Quote(text_), " at ", pos + 1, ": ", what));
  }
  absl::Status Check(size_t pos, const absl::Status& s) const {
    return s.ok() ? s : Error(pos, s.message());
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view text) {
  ASSIGN_OR_RETURN(std::vector<Requirement> requirements, Parser(text).Run());
  return LabelSelector(std::move(requirements));
}

bool LabelSelector::Matches(const Labels& labels) const {
  return std::all_of(requirements_.begin(), requirements_.end(),
                     [&](const Requirement& r) { return r.Matches(labels); });
}

std::string LabelSelector::ToString() const {
  return absl::StrJoin(requirements_, ",", [](std::string* out, const Requirement& r) {
    absl::StrAppend(out, r.ToString());
  });
}

// Each negative operator is the complement of its positive one, so it matches
// agents without the key.
bool LabelSelector::Requirement::Matches(const Labels& labels) const {
  bool negative = op == Op::kNotEquals || op == Op::kNotIn || op == Op::kNotExists;
  auto it = labels.find(key);
  if (it == labels.end()) return negative;
  if (op == Op::kExists || op == Op::kNotExists) return !negative;
  return std::binary_search(values.begin(), values.end(), it->second) != negative;
}

std::string LabelSelector::Requirement::ToString() const {
  switch (op) {
    case Op::kEquals:
      return absl::StrCat(key, "=", values[0]);
    case Op::kNotEquals:
      return absl::StrCat(key, "!=", values[0]);
    case Op::kIn:
      return absl::StrCat(key, " in (", absl::StrJoin(values, ","), ")");
    case Op::kNotIn:
      return absl::StrCat(key, " notin (", absl::StrJoin(values, ","), ")");
    case Op::kExists:
      return key;
    case Op::kNotExists:
      return absl::StrCat("!", key);
  }
  return key;
}

}  // namespace pkgdist
