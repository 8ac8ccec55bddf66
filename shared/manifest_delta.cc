#include "shared/manifest_delta.h"

#include <limits>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/util/message_differencer.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using google::protobuf::RepeatedPtrField;
using pkgdist::v1::ChunkRef;
using pkgdist::v1::EntryRun;
using pkgdist::v1::FileEntry;
using pkgdist::v1::Manifest;
using pkgdist::v1::ManifestPart;

// A new run's bytes in a part, at most (tag, length and five varints).
constexpr size_t kRunBytes = 40;

// Writes the delta's runs and literals into parts of about part_bytes:
// every file first, then every chunk.
class PartWriter {
 public:
  explicit PartWriter(size_t part_bytes) : part_bytes_(part_bytes) {}

  void CopyFile(uint32_t j) { Copy(part_.mutable_file_runs(), j, 0, 0); }
  void LiteralFile(const FileEntry& e) {
    Literal(part_.mutable_file_runs(), RepeatedElementBytes(e));
    *part_.add_files() = e;
  }
  void CopyChunk(uint32_t j, int64_t file_shift, int64_t offset_shift) {
    Copy(part_.mutable_chunk_runs(), j, file_shift, offset_shift);
  }
  void LiteralChunk(const ChunkRef& c) {
    Literal(part_.mutable_chunk_runs(), RepeatedElementBytes(c));
    *part_.add_chunks() = c;
  }

  std::vector<ManifestPart> Finish() {
    if (bytes_ > 0) Close();
    for (size_t i = 0; i + 1 < parts_.size(); ++i) parts_[i].set_more(true);
    return std::move(parts_);
  }

 private:
  void Copy(RepeatedPtrField<EntryRun>* runs, uint32_t j, int64_t file_shift,
            int64_t offset_shift) {
    if (!runs->empty()) {
      EntryRun& last = *runs->rbegin();
      if (last.literals() == 0 && last.copy() > 0 && last.base_index() + last.copy() == j &&
          last.file_shift() == file_shift && last.offset_shift() == offset_shift) {
        last.set_copy(last.copy() + 1);
        return;
      }
    }
    runs = Room(runs, kRunBytes);
    EntryRun* run = runs->Add();
    run->set_base_index(j);
    run->set_copy(1);
    run->set_file_shift(file_shift);
    run->set_offset_shift(offset_shift);
  }

  void Literal(RepeatedPtrField<EntryRun>* runs, size_t bytes) {
    runs = Room(runs, bytes + kRunBytes);
    if (runs->empty()) runs->Add();
    EntryRun& last = *runs->rbegin();
    last.set_literals(last.literals() + 1);
  }

  // Closes the part if `bytes` more would not fit; returns where `runs` is
  // now (the same field of the part being written).
  RepeatedPtrField<EntryRun>* Room(RepeatedPtrField<EntryRun>* runs, size_t bytes) {
    const bool chunks = runs == part_.mutable_chunk_runs();
    if (bytes_ > 0 && bytes_ + bytes > part_bytes_) Close();
    bytes_ += bytes;
    return chunks ? part_.mutable_chunk_runs() : part_.mutable_file_runs();
  }

  void Close() {
    parts_.push_back(std::move(part_));
    part_.Clear();
    bytes_ = 0;
  }

  const size_t part_bytes_;
  ManifestPart part_;
  size_t bytes_ = 0;
  std::vector<ManifestPart> parts_;
};

// How many entries `runs` build, checked against the base's size and the
// part's literals; without runs, the literals themselves.
absl::StatusOr<uint64_t> Planned(const RepeatedPtrField<EntryRun>& runs, int literals,
                                 int base_size, const char* what) {
  if (runs.empty()) return static_cast<uint64_t>(literals);
  uint64_t built = 0, taken = 0;
  for (const EntryRun& r : runs) {
    if (uint64_t{r.base_index()} + r.copy() > static_cast<uint64_t>(base_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a run copies ", what, "s ", r.base_index(), "..",
          uint64_t{r.base_index()} + r.copy(), " of a base that has ", base_size));
    }
    built += uint64_t{r.copy()} + r.literals();
    taken += r.literals();
  }
  if (taken != static_cast<uint64_t>(literals)) {
    return absl::InvalidArgumentError(absl::StrCat("the runs take ", taken, " ",
                                                   what, " entries, the part has ", literals));
  }
  return built;
}

// `value + shift` if it stays within [0, max].
bool Shift(uint64_t value, int64_t shift, uint64_t max, uint64_t* out) {
  if (shift < 0) {
    const uint64_t down = uint64_t{0} - static_cast<uint64_t>(shift);
    if (value < down) return false;
    *out = value - down;
    return true;
  }
  if (value > max || static_cast<uint64_t>(shift) > max - value) return false;
  *out = value + static_cast<uint64_t>(shift);
  return true;
}

// Builds the entries `runs` make of `base` and `literals` into `out`
// (copied entries transformed by `copy`, which may refuse one).
template <typename Entry, typename CopyFn>
absl::Status Build(const RepeatedPtrField<EntryRun>& runs, const RepeatedPtrField<Entry>& literals,
                   const RepeatedPtrField<Entry>& base, CopyFn copy, RepeatedPtrField<Entry>* out) {
  if (runs.empty()) {
    for (const Entry& e : literals) *out->Add() = e;
    return absl::OkStatus();
  }
  int next = 0;
  for (const EntryRun& r : runs) {
    for (uint32_t k = 0; k < r.copy(); ++k) {
      RETURN_IF_ERROR(copy(base[static_cast<int>(r.base_index() + k)], r, out->Add()));
    }
    for (uint32_t k = 0; k < r.literals(); ++k) *out->Add() = literals[next++];
  }
  return absl::OkStatus();
}

}  // namespace

size_t RepeatedElementBytes(const google::protobuf::MessageLite& e) {
  const size_t n = e.ByteSizeLong();
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(n) + n;
}

std::vector<ManifestPart> DiffManifest(const Manifest& base, const Manifest& target,
                                       size_t part_bytes) {
  PartWriter w(part_bytes);
  absl::flat_hash_map<std::string_view, int> file_by_path;
  file_by_path.reserve(static_cast<size_t>(base.files_size()));
  for (int j = 0; j < base.files_size(); ++j) file_by_path.emplace(base.files(j).path(), j);
  for (const FileEntry& f : target.files()) {
    auto it = file_by_path.find(f.path());
    if (it != file_by_path.end() &&
        google::protobuf::util::MessageDifferencer::Equals(f, base.files(it->second))) {
      w.CopyFile(static_cast<uint32_t>(it->second));
    } else {
      w.LiteralFile(f);
    }
  }
  // A chunk is found by its hash; the base's next chunk is tried first, so
  // that runs survive chunks that occur more than once (zeros).
  absl::flat_hash_map<std::string_view, int> chunk_by_hash;
  chunk_by_hash.reserve(static_cast<size_t>(base.chunks_size()));
  for (int j = 0; j < base.chunks_size(); ++j) chunk_by_hash.emplace(base.chunks(j).sha256(), j);
  int next = -1;  // the base chunk after the last one copied
  for (const ChunkRef& c : target.chunks()) {
    auto same = [&c](const ChunkRef& b) {
      return b.sha256() == c.sha256() && b.length() == c.length();
    };
    int j = -1;
    if (next >= 0 && next < base.chunks_size() && same(base.chunks(next))) {
      j = next;
    } else if (auto it = chunk_by_hash.find(c.sha256()); it != chunk_by_hash.end() &&
                                                         same(base.chunks(it->second))) {
      j = it->second;
    }
    if (j < 0) {
      w.LiteralChunk(c);
      next = -1;
      continue;
    }
    const ChunkRef& b = base.chunks(j);
    w.CopyChunk(static_cast<uint32_t>(j), int64_t{c.file()} - int64_t{b.file()},
                static_cast<int64_t>(c.offset() - b.offset()));
    next = j + 1;
  }
  return w.Finish();
}

absl::Status ApplyManifestPart(const Manifest& base, const ManifestPart& part, uint64_t max_files,
                               uint64_t max_chunks, Manifest* out) {
  // Counted before anything is built: memory stays within what the limits allow.
  ASSIGN_OR_RETURN(uint64_t files,
                   Planned(part.file_runs(), part.files_size(), base.files_size(), "file"));
  ASSIGN_OR_RETURN(uint64_t chunks,
                   Planned(part.chunk_runs(), part.chunks_size(), base.chunks_size(), "chunk"));
  if (static_cast<uint64_t>(out->files_size()) + files > max_files) {
    return absl::InvalidArgumentError(
        absl::StrCat("brings it to ", static_cast<uint64_t>(out->files_size()) + files,
                     " entries, more than max_files ", max_files));
  }
  if (static_cast<uint64_t>(out->chunks_size()) + chunks > max_chunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("brings it to ", static_cast<uint64_t>(out->chunks_size()) + chunks,
                     " chunks, more than its ", max_chunks, " bytes can have"));
  }
  RepeatedPtrField<FileEntry> new_files;
  RepeatedPtrField<ChunkRef> new_chunks;
  new_files.Reserve(static_cast<int>(files));
  new_chunks.Reserve(static_cast<int>(chunks));
  auto copy_file = [](const FileEntry& b, const EntryRun&, FileEntry* e) {
    *e = b;
    return absl::OkStatus();
  };
  auto copy_chunk = [](const ChunkRef& b, const EntryRun& r, ChunkRef* c) {
    uint64_t file = 0, offset = 0;
    if (!Shift(b.file(), r.file_shift(), std::numeric_limits<uint32_t>::max(), &file) ||
        !Shift(b.offset(), r.offset_shift(), std::numeric_limits<int64_t>::max(), &offset)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a run shifts chunk ", b.file(), "@", b.offset(), " by ",
                       r.file_shift(), "@", r.offset_shift(), " out of range"));
    }
    *c = b;
    c->set_file(static_cast<uint32_t>(file));
    c->set_offset(offset);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(Build(part.file_runs(), part.files(), base.files(), copy_file, &new_files));
  RETURN_IF_ERROR(Build(part.chunk_runs(), part.chunks(), base.chunks(), copy_chunk, &new_chunks));
  out->mutable_files()->Reserve(out->files_size() + new_files.size());
  for (auto& f : new_files) out->add_files()->Swap(&f);
  out->mutable_chunks()->Reserve(out->chunks_size() + new_chunks.size());
  for (auto& c : new_chunks) out->add_chunks()->Swap(&c);
  return absl::OkStatus();
}

}  // namespace pkgdist
