// `package import PATH`: walks a file or directory tree and uploads it to
// the controller as an ImportPackage stream.
//
// Entries go in the order BuildManifestFromPath (shared/manifest.h) uses:
// names in byte order, depth first, a directory before its contents, the
// root directory itself not listed; a single file is one entry named by
// its basename. Content is read with bounded memory whatever its size.
#ifndef PKGDIST_CONTROLLER_CLI_PACKAGE_IMPORT_H_
#define PKGDIST_CONTROLLER_CLI_PACKAGE_IMPORT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/cli/admin_client.h"
#include "pkgdist/v1/controller.pb.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist::cli {

// The most content one ImportData message carries.
inline constexpr size_t kImportPieceBytes = 1 << 20;

struct ImportItem {
  std::string disk_path;
  pkgdist::v1::ImportEntry entry;
};

// Lists the entries of `root` (a regular file or a directory; a symlink as
// root is followed) in upload order. Symlinks inside are listed as
// symlinks. INVALID_ARGUMENT naming the path for a device, FIFO or socket.
absl::StatusOr<std::vector<ImportItem>> CollectImportItems(const std::string& root);

// The sum of the sizes of the regular files in `items`.
uint64_t TotalImportBytes(const std::vector<ImportItem>& items);

// Called after each piece of content is sent with the bytes sent so far.
using ImportProgressFn = std::function<void(uint64_t bytes_sent)>;

// Signs the manifest built on the client from the bytes it sent
// (`package import --sign-key`).
using SignManifestFn =
    std::function<absl::StatusOr<pkgdist::v1::PackageSignature>(const pkgdist::v1::Manifest&)>;

// Sends header{name, version}, then each item's ImportEntry followed, for
// a regular file, by its content in pieces of at most kImportPieceBytes,
// then ImportEnd, and returns the controller's answer. With `sign`, the
// manifest is also built here from the same bytes as they are sent (so
// content is read once), and ImportEnd carries its signature: the
// controller refuses the import if it built another manifest. On a local
// failure (a file that cannot be read or shrank, a signing failure) the
// upload is cancelled, so the controller keeps nothing, and the failure is
// returned.
absl::StatusOr<pkgdist::v1::PackageInfo> UploadPackage(AdminClient& client,
                                                       const std::string& name,
                                                       const std::string& version,
                                                       const std::vector<ImportItem>& items,
                                                       const ImportProgressFn& progress = nullptr,
                                                       const SignManifestFn& sign = nullptr);

}  // namespace pkgdist::cli

#endif  // PKGDIST_CONTROLLER_CLI_PACKAGE_IMPORT_H_
