// Agent labels and label selectors: pure logic, no I/O.
//
// An agent has labels, key=value pairs (`site` is the one pkgdist itself
// uses). Distribute and remove-from choose agents with a selector, in the
// style of Kubernetes: requirements separated by commas, all of which must
// hold.
//
//   selector    := requirement ( "," requirement )*
//   requirement := key                               the key is present
//                | "!" key                           the key is absent
//                | key ( "=" | "==" ) value          present, equal to value
//                | key "!=" value                    absent, or not equal to value
//                | key "in" "(" set ")"              present, value in set
//                | key "notin" "(" set ")"           absent, or value not in set
//   set         := value ( "," value )*              values non-empty here
//
// Whitespace may surround every token; `in` and `notin` need some before
// them, or they would be part of the key. As in Kubernetes, `!=` and `notin`
// also match agents without the key; write `key,key!=value` to require it.
// A value after `=`, `==` or `!=` may be empty (`site=` matches an empty
// value); a value in a set may not. Keys and values are those of
// ValidateLabelKey and ValidateLabelValue.
#ifndef PKGDIST_CONTROLLER_LABELS_H_
#define PKGDIST_CONTROLLER_LABELS_H_

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pkgdist {

using Labels = std::map<std::string, std::string>;

// The label that puts an agent in a site (bandwidth policy: docs/sites.md).
inline constexpr char kSiteLabel[] = "site";

inline constexpr size_t kMaxLabelKeyLength = 63;
inline constexpr size_t kMaxLabelValueLength = 63;
inline constexpr size_t kMaxSelectorBytes = 4096;
inline constexpr size_t kMaxSelectorRequirements = 64;
inline constexpr size_t kMaxSelectorSetValues = 256;

// A key is 1-63 characters of [A-Za-z0-9._-] starting with a letter or digit;
// a value is 0-63 characters of [A-Za-z0-9._-]. INVALID_ARGUMENT naming the
// text otherwise.
absl::Status ValidateLabelKey(absl::string_view key);
absl::Status ValidateLabelValue(absl::string_view value);

// A label as an agent may carry it: key and value valid, and the value of
// `site` a site name (shared/paths.h ValidateName: sites have policies and
// names in the API). INVALID_ARGUMENT naming the label otherwise.
absl::Status ValidateLabel(absl::string_view key, absl::string_view value);
// The agent's site: its `site` label if that is a valid site name, else ""
// (labels stored before site names were checked read as no site).
std::string SiteOf(const Labels& labels);

// "key=value" (split at the first "=", both parts validated).
absl::StatusOr<std::pair<std::string, std::string>> ParseLabel(absl::string_view text);

// The text form for storage and display: "k1=v1,k2=v2" sorted by key, "" for
// no labels. `labels` must hold valid keys and values, or the text will not
// parse back.
std::string FormatLabels(const Labels& labels);
// The inverse of FormatLabels; pairs may come in any order but a key only
// once. INVALID_ARGUMENT for any other text.
absl::StatusOr<Labels> ParseLabels(absl::string_view text);

// A parsed selector (grammar above). Immutable, so safe to share between
// threads.
class LabelSelector {
 public:
  // INVALID_ARGUMENT for text that is empty, does not follow the grammar, is
  // longer than kMaxSelectorBytes, has more than kMaxSelectorRequirements
  // requirements or a set of more than kMaxSelectorSetValues values. The
  // message quotes the text and says where, as a 1-based byte offset:
  //   selector "tier in (edge" at 14: expected ")"
  static absl::StatusOr<LabelSelector> Parse(absl::string_view text);

  // Whether every requirement holds for an agent with `labels`.
  bool Matches(const Labels& labels) const;

  // The canonical text: the requirements in the order given, `==` written
  // `=`, no whitespace but the single spaces of "key in (v1,v2)", set values
  // sorted and deduplicated. Parse(ToString()) gives an equal selector.
  std::string ToString() const;

 private:
  enum class Op { kEquals, kNotEquals, kIn, kNotIn, kExists, kNotExists };
  struct Requirement {
    std::string key;
    Op op = Op::kExists;
    // Sorted and unique: one for kEquals and kNotEquals, one or more for kIn
    // and kNotIn, none otherwise.
    std::vector<std::string> values;

    bool Matches(const Labels& labels) const;
    std::string ToString() const;
  };
  class Parser;

  explicit LabelSelector(std::vector<Requirement> requirements)
      : requirements_(std::move(requirements)) {}

  std::vector<Requirement> requirements_;  // never empty
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_LABELS_H_
