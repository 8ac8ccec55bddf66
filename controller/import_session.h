// One package upload in progress (the Admin.ImportPackage stream): header,
// then entries in order, each file followed by exactly its bytes, then the
// end. The manifest (chunk and file digests) is built from the same bytes as
// they are written under STATE_DIR/uploads/<random>/tree, so the content is
// read once. PackageStore::BeginImport makes one; PackageStore::Commit makes
// it a stored package; dropping it deletes the upload.
//
// Not thread-safe: one stream feeds one session.
#ifndef PKGDIST_CONTROLLER_IMPORT_SESSION_H_
#define PKGDIST_CONTROLLER_IMPORT_SESSION_H_

#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pkgdist/v1/controller.pb.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace pkgdist {

class PackageStore;

// One upload in progress. Feed it the stream's messages in order; Finish()
// returns the manifest with the content staged; the caller then calls
// PackageStore::Commit or drops the session (which deletes the upload).
class ImportSession {
 public:
  ~ImportSession();
  ImportSession(const ImportSession&) = delete;
  ImportSession& operator=(const ImportSession&) = delete;

  absl::Status Add(const pkgdist::v1::ImportPackageRequest& msg);
  bool ended() const { return ended_; }
  // After the ImportEnd message: validates and returns the manifest.
  absl::StatusOr<pkgdist::v1::Manifest> Finish();
  const std::string& tree() const { return tree_; }

 private:
  friend class PackageStore;
  ImportSession(std::string dir, ManifestLimits limits);
  absl::Status CloseFile();

  std::string dir_;   // STATE_DIR/uploads/<random>
  std::string tree_;  // dir_/tree
  ManifestLimits limits_;
  std::unique_ptr<ManifestBuilder> builder_;
  absl::flat_hash_set<std::string> dirs_;
  absl::flat_hash_set<std::string> paths_;
  absl::flat_hash_set<std::string> folded_paths_;  // lower-cased, with refuse_case_collisions
  UniqueFd file_;
  std::string file_path_;
  uint64_t file_written_ = 0;
  uint64_t file_size_ = 0;
  bool ended_ = false;
  bool committed_ = false;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_IMPORT_SESSION_H_
