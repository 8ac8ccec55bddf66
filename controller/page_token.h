// Page tokens of the admin API's List calls (AIP-158): opaque to clients,
// web-safe base64 of "v1|KIND|CURSOR", where the cursor is the key of the
// last item of the previous page. Decoding checks the version and the kind,
// so a token of another call or one a client made up is INVALID_ARGUMENT,
// never a silently wrong page.
#ifndef PKGDIST_CONTROLLER_PAGE_TOKEN_H_
#define PKGDIST_CONTROLLER_PAGE_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pkgdist {

std::string EncodePageToken(absl::string_view kind, absl::string_view cursor);
// The cursor in `token`; "" for an empty token (the first page).
absl::StatusOr<std::string> DecodePageToken(absl::string_view kind, absl::string_view token);

// The page size to use: `requested`, or `default_size` for 0, capped at
// `max_size`.
size_t PageSize(uint32_t requested, size_t default_size, size_t max_size);

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_PAGE_TOKEN_H_
