// The controller's package content: STATE_DIR/packages/<id>/tree/ holds each
// imported package's files exactly once; the manifests live in the state
// store. Uploads (import_session.h) are written under STATE_DIR/uploads/ and
// become visible here only by a rename once complete, so a broken upload
// leaves nothing behind; transfers read the content through ChunkReader
// (chunk_reader.h).
//
// Thread-safe: sessions and readers are independent; the store itself only
// holds paths.
#ifndef PKGDIST_CONTROLLER_PACKAGE_STORE_H_
#define PKGDIST_CONTROLLER_PACKAGE_STORE_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/import_session.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace pkgdist {


class PackageStore {
 public:
  // Creates STATE_DIR/packages and STATE_DIR/uploads; deletes leftover
  // uploads of a previous run.
  static absl::StatusOr<std::unique_ptr<PackageStore>> Open(const std::string& state_dir,
                                                            ManifestLimits limits);

  absl::StatusOr<std::unique_ptr<ImportSession>> BeginImport();
  // Moves a finished session's content to packages/<id>/tree durably. If
  // that id is already stored the upload is dropped.
  absl::Status Commit(ImportSession& session, const std::string& id_hex);
  // Deletes a package's content (missing content is not an error).
  absl::Status Delete(const std::string& id_hex);
  // Removes content directories whose id is not in `known`.
  void RemoveOrphans(const absl::flat_hash_set<std::string>& known);

  std::string TreeOf(const std::string& id_hex) const;

 private:
  PackageStore(std::string root, ManifestLimits limits)
      : root_(std::move(root)), limits_(limits) {}
  std::string root_;
  ManifestLimits limits_;
};


}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_PACKAGE_STORE_H_
