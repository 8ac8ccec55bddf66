// The controller's package content: STATE_DIR/packages/<id>/tree/ holds each
// imported package's files exactly once; the manifests live in the state
// store. Imports arrive as an upload stream (ImportSession), are written
// under STATE_DIR/uploads/ while the manifest is built from the same bytes,
// and become visible only by a rename once complete, so a broken upload
// leaves nothing behind.
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

// Reads chunks of one stored package with bounded memory: one open file at a
// time, one chunk-sized buffer owned by the caller. Not thread-safe.
class ChunkReader {
 public:
  ChunkReader(std::string tree, std::shared_ptr<const pkgdist::v1::Manifest> manifest)
      : tree_(std::move(tree)), manifest_(std::move(manifest)) {}
  // Replaces *out with chunk `index`'s bytes.
  absl::Status Read(uint32_t index, std::string* out);

 private:
  std::string tree_;
  std::shared_ptr<const pkgdist::v1::Manifest> manifest_;
  int open_file_ = -1;
  UniqueFd fd_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_PACKAGE_STORE_H_
