// The agent's package root: what is published, what is being received, and
// the rules that make publication atomic.
//
//   ROOT/packages/<name>/<version>/   published trees (the manifest's paths)
//   ROOT/index/<name>@<version>       the published package id, hex
//   ROOT/manifests/<id-hex>.pb        manifests of published packages (sizes,
//                                     and chunks other packages can reuse:
//                                     agent/chunk_index.h)
//   ROOT/staging/<id-hex>/            packages being received (agent/staging.h)
//   ROOT/trash/                       trees being deleted
//   ROOT/signed-sequences             highest signed sequence published per
//                                     name (agent/signature_policy.h)
//
// A package is published iff its tree exists and its index file names its
// id. Publishing writes the index file first and then renames the sealed
// staging tree into place: the rename is the commit point, so no reader ever
// sees a partial tree. Removal renames the tree into trash/ before deleting
// anything. Open() finishes whatever a crash interrupted.
//
// Thread-safe. Transfers of one package serialise through locks(); publish
// and remove serialise on an internal mutex.
#ifndef PKGDIST_AGENT_PACKAGE_STORE_H_
#define PKGDIST_AGENT_PACKAGE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/chunk_index.h"
#include "agent/disk_util.h"
#include "agent/staging.h"
#include "agent/transfer_locks.h"
#include "pkgdist/v1/agent.pb.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist {

struct PackageStoreOptions {
  // Space kept free on the root's file system: an Offer whose missing bytes
  // plus this do not fit is refused.
  uint64_t reserve_bytes = uint64_t{64} << 20;
  // Free-space query; tests inject a fake.
  FreeBytesFn free_bytes = FreeBytes;
};

class PackageStore {
 public:
  // Creates the layout under `root` if needed and recovers from a crash:
  // empties trash/, drops staging directories of packages already published.
  static absl::StatusOr<std::unique_ptr<PackageStore>> Open(std::string root,
                                                            PackageStoreOptions options = {});
  PackageStore(const PackageStore&) = delete;
  PackageStore& operator=(const PackageStore&) = delete;

  const std::string& root() const { return root_; }
  TransferLocks& locks() { return locks_; }

  // The id (32 raw bytes) name@version is published with, or nullopt.
  absl::StatusOr<std::optional<std::string>> PublishedId(const std::string& name,
                                                         const std::string& version);
  // The manifest of published package `package_id` (32 raw bytes), checked
  // against its id; nullopt if that package is not published here (or its
  // stored manifest is damaged). The base of a manifest delta.
  std::optional<pkgdist::v1::Manifest> PublishedManifest(const std::string& package_id);
  // Where a published package's tree lives (whether or not it exists).
  std::string PackageDir(const std::string& name, const std::string& version) const;
  std::string StagingDir(const std::string& package_id_hex) const;

  // Opens the staging of `manifest` (validated; `package_id` is its id).
  absl::StatusOr<std::unique_ptr<Staging>> OpenStaging(pkgdist::v1::Manifest manifest,
                                                       const std::string& package_id);
  // Deletes the staging of `package_id` (no Staging of it may be open).
  absl::Status DiscardStaging(const std::string& package_id);

  // Delta transfer from the chunk store (agent/chunk_index.h): the missing
  // chunks of `staging` that some other package on this disk, published or
  // staged, of any name, may hold. Ascending.
  std::vector<uint32_t> LocalChunks(const Staging& staging) const;
  // Copies chunks `local` (from LocalChunks) into `staging`, each verified
  // by its sha256 before it counts, calling `flush` after every few tens of
  // MiB and at the end (it starts a flush: the caller acknowledges what it
  // makes durable). Returns the chunks no local copy could fill (missing,
  // damaged or changed meanwhile), ascending: they are needed from the
  // controller. Errors are the staging's own disk errors.
  absl::StatusOr<std::vector<uint32_t>> CopyLocalChunks(
      Staging& staging, const std::vector<uint32_t>& local,
      const std::function<absl::Status()>& flush);
  const ChunkIndex& chunk_index() const { return index_; }

  // OK if `needed` bytes plus the reserve fit in the free space of the
  // root's file system; RESOURCE_EXHAUSTED naming both numbers otherwise.
  absl::Status CheckFreeSpace(uint64_t needed) const;

  // Seals `staging` and publishes it, then deletes its staging directory.
  // ALREADY_EXISTS if name@version was published meanwhile with another id.
  absl::Status Publish(Staging& staging, const std::string& package_id);

  absl::StatusOr<pkgdist::v1::InventoryResponse> Inventory();

  // Deletes name@version's published tree and index entry and every staging
  // directory for it, first stopping transfers of it (waiting up to
  // `lock_wait`). Returns whether anything was deleted. Idempotent.
  absl::StatusOr<bool> Remove(const std::string& name, const std::string& version,
                              absl::Duration lock_wait);

 private:
  PackageStore(std::string root, PackageStoreOptions options)
      : root_(std::move(root)), options_(std::move(options)) {}

  absl::Status Recover();
  // Fills index_ from the published packages and the staging directories.
  void BuildIndex();
  std::string IndexPath(const std::string& name, const std::string& version) const;
  std::string ManifestPath(const std::string& package_id) const;
  // Staging directories (id hex -> manifest) whose manifest parses.
  std::vector<std::pair<std::string, pkgdist::v1::Manifest>> ListStaging() const;
  absl::StatusOr<std::optional<std::string>> PublishedIdLocked(const std::string& name,
                                                               const std::string& version)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status MoveToTrash(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t PublishedSize(const std::string& package_id, const std::string& dir) const;

  const std::string root_;
  const PackageStoreOptions options_;
  TransferLocks locks_;
  ChunkIndex index_;
  absl::Mutex mu_;
  uint64_t trash_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_PACKAGE_STORE_H_
