#include "agent/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "shared/logging.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

constexpr uint32_t kMagic = 0x4a444b50;  // "PKDJ" little-endian
constexpr size_t kPayloadSize = kJournalRecordSize - 4;

constexpr std::array<uint32_t, 256> MakeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = MakeCrc32cTable();

uint32_t Crc32c(const char* data, size_t len) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < len; ++i) {
    c = kCrc32cTable[(c ^ static_cast<uint8_t>(data[i])) & 0xff] ^ (c >> 8);
  }
  return c ^ 0xffffffffu;
}

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

struct ReplayResult {
  uint64_t valid_bytes = 0;  // length of the prefix of well-formed records
  std::vector<uint32_t> indices;
};

ReplayResult Replay(absl::string_view data, absl::Span<const Digest> expected) {
  ReplayResult r;
  std::vector<bool> seen(expected.size(), false);
  for (size_t pos = 0; pos + kJournalRecordSize <= data.size(); pos += kJournalRecordSize) {
    const char* rec = data.data() + pos;
    if (GetU32(rec) != kMagic || GetU32(rec + kPayloadSize) != Crc32c(rec, kPayloadSize)) break;
    r.valid_bytes = pos + kJournalRecordSize;
    uint32_t index = GetU32(rec + 4);
    if (index >= expected.size() || seen[index]) continue;
    if (std::memcmp(rec + 8, expected[index].data(), 32) != 0) continue;
    seen[index] = true;
  }
  for (uint32_t i = 0; i < seen.size(); ++i) {
    if (seen[i]) r.indices.push_back(i);
  }
  return r;
}

}  // namespace

std::string EncodeJournalRecord(const JournalEntry& e) {
  std::string rec(kJournalRecordSize, '\0');
  PutU32(rec.data(), kMagic);
  PutU32(rec.data() + 4, e.index);
  std::memcpy(rec.data() + 8, e.sha256.data(), 32);
  PutU32(rec.data() + kPayloadSize, Crc32c(rec.data(), kPayloadSize));
  return rec;
}

absl::StatusOr<std::vector<uint32_t>> ReadJournal(const std::string& path,
                                                  absl::Span<const Digest> expected) {
  auto data = ReadFileToString(path);
  if (absl::IsNotFound(data.status())) return std::vector<uint32_t>{};
  if (!data.ok()) return data.status();
  return Replay(*data, expected).indices;
}

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& path,
                                                       absl::Span<const Digest> expected) {
  bool existed = ::access(path.c_str(), F_OK) == 0;
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0600));
  if (!existed) {
    // The name must be durable before any record in the file counts.
    size_t slash = path.rfind('/');
    RETURN_IF_ERROR(FsyncDir(slash == std::string::npos ? "." : path.substr(0, slash)));
  }
  ASSIGN_OR_RETURN(std::string data, ReadFileToString(path));
  ReplayResult r = Replay(data, expected);
  if (r.valid_bytes != data.size()) {
    spdlog::warn("journal {}: discarding {} bytes of torn or corrupt tail", path,
                 data.size() - r.valid_bytes);
    if (::ftruncate(fd.get(), static_cast<off_t>(r.valid_bytes)) != 0) {
      return ErrnoStatus(errno, "truncate", path);
    }
    RETURN_IF_ERROR(Fsync(fd.get(), path));
  }
  return std::unique_ptr<Journal>(
      new Journal(path, std::move(fd), r.valid_bytes, std::move(r.indices)));
}

absl::Status Journal::Append(absl::Span<const JournalEntry> entries) {
  if (entries.empty()) return absl::OkStatus();
  std::string buf;
  buf.reserve(entries.size() * kJournalRecordSize);
  for (const auto& e : entries) buf += EncodeJournalRecord(e);
  absl::Status s = PwriteFull(fd_.get(), buf.data(), buf.size(), size_, path_);
  if (s.ok()) s = Fsync(fd_.get(), path_);
  if (!s.ok()) {
    // Best effort: drop whatever part of the batch reached the file, so a
    // later Append does not land after a torn record.
    (void)::ftruncate(fd_.get(), static_cast<off_t>(size_));
    return s;
  }
  size_ += buf.size();
  return absl::OkStatus();
}

}  // namespace pkgdist
