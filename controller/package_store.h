// The controller's package content: STATE_DIR/packages/<id>/tree/ holds each
// imported package's files exactly once; the manifests live in the state
// store. Uploads (import_session.h) are written under STATE_DIR/uploads/ and
// become visible here only by a rename once complete, so a broken upload
// leaves nothing behind; transfers read the content through ChunkReader
// (chunk_reader.h).
//
// A local import (ImportLocal) reads a tree on the controller's own host,
// but only under the directories named by --import-root: the controller can
// read files no admin should get into a package (its own private key).
//
// Thread-safe: sessions and readers are independent; the store itself only
// holds paths.
#ifndef PKGDIST_CONTROLLER_PACKAGE_STORE_H_
#define PKGDIST_CONTROLLER_PACKAGE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/import_session.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace pkgdist {

// Where a local import may read: the --import-root directories, each as
// configured and resolved (realpath).
struct ImportRoots {
  std::vector<std::string> configured;
  std::vector<std::string> resolved;
  // "/srv/builds, /data/out" (as configured).
  std::string List() const;
};

// Resolves each of `dirs` (must be existing directories; INVALID_ARGUMENT
// naming the flag otherwise).
absl::StatusOr<ImportRoots> ResolveImportRoots(const std::vector<std::string>& dirs);

// Checks `path` for a local import and returns it resolved (realpath):
// it must be absolute (INVALID_ARGUMENT) and inside one of `roots` both as
// written (after collapsing "." and "..") and resolved, so that neither
// ".." nor a symlink reaches outside (PERMISSION_DENIED naming the path and
// the roots). No roots: FAILED_PRECONDITION. A missing path: NOT_FOUND.
absl::StatusOr<std::string> ResolveImportPath(const std::string& path, const ImportRoots& roots);

// A finished local import: the content staged in `session`, ready for
// PackageStore::Commit (or dropped with the session).
struct LocalImport {
  std::unique_ptr<ImportSession> session;
  pkgdist::v1::Manifest manifest;
  std::string resolved_path;
};

class PackageStore {
 public:
  // Creates STATE_DIR/packages and STATE_DIR/uploads; deletes leftover
  // uploads of a previous run. `import_roots` (ResolveImportRoots) bound
  // ImportLocal; none refuses it.
  static absl::StatusOr<std::unique_ptr<PackageStore>> Open(
      const std::string& state_dir, ManifestLimits limits,
      Chunking chunking = Chunking::ContentDefined(), ImportRoots import_roots = {});

  absl::StatusOr<std::unique_ptr<ImportSession>> BeginImport();
  // Imports the file or directory tree at `path` on this host as
  // name@version, after ResolveImportPath: the entries, their order and
  // their checks are those of a streamed import of the same tree by
  // `pkgdistctl package import PATH` (so the manifest and id are too);
  // symlinks inside are stored as symlinks, never followed. Each file is
  // cloned or copied into the upload and the copy hashed
  // (ImportSession::AddLocalFile). Nothing is kept on failure.
  absl::StatusOr<LocalImport> ImportLocal(const std::string& path, const std::string& name,
                                          const std::string& version);
  const ImportRoots& import_roots() const { return import_roots_; }
  // Moves a finished session's content to packages/<id>/tree durably. If
  // that id is already stored the upload is dropped.
  absl::Status Commit(ImportSession& session, const std::string& id_hex);
  // Deletes a package's content (missing content is not an error).
  absl::Status Delete(const std::string& id_hex);
  // Removes content directories whose id is not in `known`.
  void RemoveOrphans(const absl::flat_hash_set<std::string>& known);

  std::string TreeOf(const std::string& id_hex) const;

 private:
  PackageStore(std::string root, ManifestLimits limits, Chunking chunking, ImportRoots roots)
      : root_(std::move(root)), limits_(limits), chunking_(chunking),
        import_roots_(std::move(roots)) {}
  std::string root_;
  ManifestLimits limits_;
  Chunking chunking_;
  ImportRoots import_roots_;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_PACKAGE_STORE_H_
