#include "controller/page_token.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace pkgdist {

std::string EncodePageToken(absl::string_view kind, absl::string_view cursor) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1|", kind, "|", cursor));
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view kind, absl::string_view token) {
  if (token.empty()) return std::string();
  std::string raw;
  std::string prefix = absl::StrCat("v1|", kind, "|");
  if (!absl::WebSafeBase64Unescape(token, &raw) || !absl::StartsWith(raw, prefix) ||
      raw.size() == prefix.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token \"", token, "\" was not issued by this call; pass the "
                     "next_page_token of the previous page, or none for the first"));
  }
  return raw.substr(prefix.size());
}

size_t PageSize(uint32_t requested, size_t default_size, size_t max_size) {
  if (requested == 0) return default_size;
  return std::min<size_t>(requested, max_size);
}

}  // namespace pkgdist
