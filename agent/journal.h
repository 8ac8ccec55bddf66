// The chunk journal of one staging directory: the agent's record of which
// chunks of a package are durably on disk.
//
// An append-only file of fixed-size records
//   { magic u32, chunk index u32, chunk sha256 [32], crc32c u32 }
// (little-endian; the checksum covers the 40 bytes before it). A record is
// appended only after the chunk's bytes have been fsynced, and the journal is
// fsynced before the chunk is acknowledged, so after any crash every record
// names a chunk whose bytes reached the disk.
//
// Replay stops at the first record that is short (torn write) or fails its
// magic or checksum: that record and everything after it are discarded. A
// well-formed record whose index is out of range or whose hash is not the
// manifest's hash for that index (a journal from other content) is ignored.
#ifndef PKGDIST_AGENT_JOURNAL_H_
#define PKGDIST_AGENT_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "shared/file_util.h"
#include "shared/sha256.h"

namespace pkgdist {

struct JournalEntry {
  uint32_t index = 0;
  Digest sha256{};
};

inline constexpr size_t kJournalRecordSize = 44;

// Reads the journal at `path` without modifying it. `expected[i]` is the
// manifest's hash of chunk i. Returns the distinct valid indices, ascending;
// a missing file is an empty journal. Safe to call while another object
// appends to the same file (a record being written counts as torn).
absl::StatusOr<std::vector<uint32_t>> ReadJournal(const std::string& path,
                                                  absl::Span<const Digest> expected);

// An open journal. Not thread-safe; one owner (the Staging that uses it).
class Journal {
 public:
  // Opens or creates the journal at `path`, replays it against `expected`
  // and truncates (durably) a torn or corrupt tail.
  static absl::StatusOr<std::unique_ptr<Journal>> Open(const std::string& path,
                                                       absl::Span<const Digest> expected);

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // The distinct valid indices found by replay, ascending.
  const std::vector<uint32_t>& replayed() const { return replayed_; }

  // Appends one record per entry and fsyncs. On failure the file is cut
  // back to its previous length where possible; a torn tail left by a crash
  // is discarded by the next Open.
  absl::Status Append(absl::Span<const JournalEntry> entries);

 private:
  Journal(std::string path, UniqueFd fd, uint64_t size, std::vector<uint32_t> replayed)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size), replayed_(std::move(replayed)) {}

  std::string path_;
  UniqueFd fd_;
  uint64_t size_;  // bytes of valid records
  std::vector<uint32_t> replayed_;
};

// Encodes one record (exposed for tests that forge journals).
std::string EncodeJournalRecord(const JournalEntry& e);

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_JOURNAL_H_
