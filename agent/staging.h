// One package being received: ROOT/staging/<package-id-hex>/.
//
//   manifest.pb   the offered manifest (written atomically)
//   journal       the chunk journal (agent/journal.h)
//   tree/         the package tree being assembled: directories created,
//                 regular files created at their final size, mode 0600
//
// Opening (on every Offer) replays the journal and re-hashes every
// journaled chunk's bytes on disk, so a staged file damaged while the agent
// was down costs only its damaged chunks. Chunks pass through three states:
// missing -> received (written, not yet durable) -> durable (fsynced and
// journaled). Only durable chunks may be acknowledged to the controller.
// A flush runs on the writer's task thread (shared/direct_writer.h) while
// the caller receives the next chunks: StartFlush() hands it the received
// chunks, Collect() takes back those made durable. A chunk of another file
// than the last one written waits for every started flush (so that closing
// a cached descriptor never races a flush that syncs it): packages of many
// files overlap less than one large file.
//
// Seal() turns a fully durable staging tree into the final package tree in
// place (sizes, symlinks, modes, fsyncs; content needs no second read: every
// chunk was verified, and file digests are digests of chunk digests); publishing it is
// PackageStore's job. Not thread-safe: one Transfer owns a Staging at a time
// (PackageStore's per-package lock).
#ifndef PKGDIST_AGENT_STAGING_H_
#define PKGDIST_AGENT_STAGING_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/fd_cache.h"
#include "agent/journal.h"
#include "agent/metrics.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/chunk_wire.h"
#include "shared/direct_writer.h"
#include "shared/manifest.h"
#include "shared/sha256.h"

namespace pkgdist {

class Staging {
 public:
  // Opens or creates the staging directory `dir` for `manifest`, which the
  // caller has validated (ValidateManifest) and whose id names `dir`.
  static absl::StatusOr<std::unique_ptr<Staging>> Open(std::string dir,
                                                       pkgdist::v1::Manifest manifest);
  ~Staging();
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  const pkgdist::v1::Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  std::string tree_dir() const;
  uint32_t chunk_count() const { return static_cast<uint32_t>(state_.size()); }

  bool IsDurable(uint32_t index) const;
  // Written in this session or durable.
  bool IsReceived(uint32_t index) const;
  // Chunks neither received nor durable, ascending.
  std::vector<uint32_t> Missing() const;
  uint32_t missing_count() const { return missing_count_; }
  uint32_t durable_count() const { return durable_count_; }
  // Sum of the lengths of the missing chunks.
  uint64_t missing_bytes() const;
  // Bytes received since the last StartFlush.
  uint64_t unflushed_bytes() const { return unflushed_bytes_; }

  // Flushes started from now on observe their fsyncs in `metrics` (null:
  // none), which must outlive this Staging.
  void set_metrics(AgentMetrics* metrics) { metrics_ = metrics; }

  enum class WriteResult { kWritten, kAlreadyReceived };
  // Verifies and writes chunk `index`. INVALID_ARGUMENT for an index out of
  // range or a length other than the manifest's; DATA_LOSS if the data does
  // not hash to the manifest's sha256 (nothing written); disk errors as
  // RESOURCE_EXHAUSTED (disk full) or INTERNAL. A chunk already received is
  // not written again. `data` is the chunk's bytes in pieces (received
  // slices), not referenced once this returns.
  absl::StatusOr<WriteResult> WriteChunk(uint32_t index, const Pieces& data);
  absl::StatusOr<WriteResult> WriteChunk(uint32_t index, absl::string_view data) {
    return WriteChunk(index, Pieces(data));
  }

  // Starts making every received chunk durable, without waiting: on the
  // task thread, once their queued writes are done, the files written
  // since the last flush are fsynced, then those chunks journaled, then
  // `on_durable(chunks)` is called there (if given). After a failure (here
  // or in Collect) this Staging refuses further writes and flushes (reopen
  // it).
  using OnDurable = std::function<void(const std::vector<uint32_t>& chunks)>;
  absl::Status StartFlush(OnDurable on_durable = nullptr);
  // Takes the started flushes that have finished, oldest first: for each,
  // its chunks (ascending), durable from now on. kNone does not block;
  // kOldest first waits for the oldest flush still running, kAll for all.
  enum class Await { kNone, kOldest, kAll };
  absl::StatusOr<std::vector<std::vector<uint32_t>>> Collect(Await await);
  // Bytes of the chunks in started flushes not yet collected.
  uint64_t flushing_bytes() const { return flushing_bytes_; }
  // Waits until every started flush has run (or was skipped after a
  // failure), so that no on_durable callback comes after this returns.
  void WaitForFlushes() { (void)direct_.Drain(); }
  // StartFlush() and Collect(kAll): every received chunk is durable. Returns
  // the chunks that became durable, ascending.
  absl::StatusOr<std::vector<uint32_t>> Flush();

  // Requires every chunk durable (FAILED_PRECONDITION otherwise). Reads no
  // content back: every chunk was verified before it became durable. Checks
  // each regular file's size against the manifest (DATA_LOSS on mismatch),
  // applies its mode and fsyncs it, creates the symlinks, then applies
  // directory modes deepest first, fsyncing each directory. tree_dir() then
  // holds the finished package.
  absl::Status Seal();

 private:
  enum class ChunkState : uint8_t { kMissing, kReceived, kDurable };

  Staging(std::string dir, pkgdist::v1::Manifest manifest);
  absl::Status PrepareTree();
  absl::Status PrepareFile(const std::string& path, uint64_t size, bool* created);
  absl::Status LoadJournal();
  absl::StatusOr<bool> ChunkOnDiskMatches(uint32_t index, std::string& buf);
  absl::Status FinishFile(const pkgdist::v1::FileEntry& f);
  std::string EntryPath(int file_index) const;

  std::string dir_;
  pkgdist::v1::Manifest manifest_;
  std::vector<Digest> hashes_;
  std::vector<ChunkState> state_;
  uint32_t missing_count_ = 0;
  uint32_t durable_count_ = 0;
  std::vector<uint32_t> unflushed_;
  uint64_t unflushed_bytes_ = 0;
  // Flushes queued on direct_, oldest first: the writer's task ticket and
  // the chunks it makes durable.
  struct Flushing {
    uint64_t ticket;
    std::vector<uint32_t> indices;
    uint64_t bytes;
  };
  std::deque<Flushing> flushing_;
  uint64_t flushing_bytes_ = 0;
  absl::Status broken_;
  std::unique_ptr<Journal> journal_;
  FdCache files_;
  AgentMetrics* metrics_ = nullptr;

  // Whole-block chunks bypass the page cache (shared/direct_writer.h); its
  // thread also runs the flushes, which use journal_. Declared last so that
  // it finishes them before journal_ and files_ go.
  DirectWriter direct_{kMaxChunkSize};
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_STAGING_H_
