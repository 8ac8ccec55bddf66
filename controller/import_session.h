// One package upload in progress: header, then entries in order, each file
// followed by exactly its bytes, then the end. The manifest (chunk and file
// digests) is built from the same bytes that are stored under
// STATE_DIR/uploads/<random>/tree, so the content is read once.
// PackageStore::BeginImport makes one; PackageStore::Commit makes it a
// stored package; dropping it deletes the upload.
//
// Two ways to feed it, with the same validation (ValidateEntry):
//  - Add: the Admin.ImportPackage stream. Content is hashed on the calling
//    thread and written (and its writeback started) on a writer thread of
//    the session's own, so hashing one piece overlaps writing the last.
//  - AddLocalFile (PackageStore::ImportLocal, Admin.ImportLocalPackage): a
//    file on the controller's own disk is cloned (FICLONE reflink) into the
//    upload, or copied in the kernel (copy_file_range) where the filesystem
//    cannot share extents, and then the COPY is hashed: the stored bytes
//    are exactly the hashed ones whatever happens to the source meanwhile.
//
// Not thread-safe: one caller feeds one session.
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

class ContentWriter;
class PackageStore;

// How AddLocalFile stored a file's bytes, for the log.
enum class LocalCopyMethod { kReflink, kCopyFileRange, kReadWrite };
const char* LocalCopyMethodName(LocalCopyMethod m);

// What a local import did, for the log and the audit trail.
struct LocalCopyStats {
  // Indexed by LocalCopyMethod.
  uint64_t files[3] = {0, 0, 0};
  uint64_t bytes[3] = {0, 0, 0};
  // "2 files (1.0 GiB) by reflink, 1 (3 bytes) by copy_file_range".
  std::string Summary() const;
};

// One upload in progress. Feed it messages in order; Finish() returns the
// manifest with the content staged; the caller then calls
// PackageStore::Commit or drops the session (which deletes the upload).
class ImportSession {
 public:
  ~ImportSession();
  ImportSession(const ImportSession&) = delete;
  ImportSession& operator=(const ImportSession&) = delete;

  // Takes the content of a data message (it is moved to the writer).
  absl::Status Add(pkgdist::v1::ImportPackageRequest&& msg);
  absl::Status Add(const pkgdist::v1::ImportPackageRequest& msg) {
    return Add(pkgdist::v1::ImportPackageRequest(msg));
  }
  // A regular-file entry whose content is the open regular file `src`
  // (`display` names it in errors): clones or copies it into the upload,
  // hashes the copy, then checks that `src` still has the size and mtime
  // it had before (FAILED_PRECONDITION naming it otherwise). `entry.size`
  // must be the size `src` had then.
  absl::Status AddLocalFile(const pkgdist::v1::ImportEntry& entry, int src,
                            const std::string& display);
  bool ended() const { return ended_; }
  // After the ImportEnd message: validates and returns the manifest, once
  // every byte is written and fsynced.
  absl::StatusOr<pkgdist::v1::Manifest> Finish();
  const std::string& tree() const { return tree_; }
  const LocalCopyStats& local_stats() const { return local_stats_; }

 private:
  friend class PackageStore;
  ImportSession(std::string dir, ManifestLimits limits, Chunking chunking);
  // Checks an entry against those before it and creates it in the tree (a
  // regular file's empty file opened in file_).
  absl::Status BeginEntry(const pkgdist::v1::ImportEntry& e);
  absl::Status CloseFile();
  // Feeds bytes [from, to) of file_ (the copy) to the manifest.
  absl::Status HashCopy(uint64_t from, uint64_t to);

  std::string dir_;   // STATE_DIR/uploads/<random>
  std::string tree_;  // dir_/tree
  ManifestLimits limits_;
  Chunking chunking_;
  std::unique_ptr<ManifestBuilder> builder_;
  std::unique_ptr<ContentWriter> writer_;  // started with the first streamed file
  absl::flat_hash_set<std::string> dirs_;
  absl::flat_hash_set<std::string> paths_;
  absl::flat_hash_set<std::string> folded_paths_;  // lower-cased, with refuse_case_collisions
  UniqueFd file_;
  std::string file_path_;
  uint64_t file_written_ = 0;
  uint64_t file_size_ = 0;
  LocalCopyStats local_stats_;
  bool ended_ = false;
  bool committed_ = false;
};

}  // namespace pkgdist

#endif  // PKGDIST_CONTROLLER_IMPORT_SESSION_H_
