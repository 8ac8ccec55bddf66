// libFuzzer target: chunk journal replay (agent/journal.h).
//
// Input byte 0 selects the mode. Even: the rest of the input is the journal
// file as is. Odd: the rest is a little program that writes the journal
// record by record (valid records for any index and hash, records with a
// bad checksum or magic, raw bytes, a torn tail), so the fuzzer reaches
// deep into replay without forging CRCs; the expected replay is then known.
//
// Invariants, against a fixed manifest of kChunks chunks: ReadJournal and
// Journal::Open agree; indices are distinct, ascending and in range; Open
// cuts the file to whole records and a second Open replays the same indices
// without changing the file (idempotent); entries appended after replay are
// found by the next replay; in program mode the replay is exactly the
// expected one.
#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/journal.h"
#include "shared/file_util.h"
#include "shared/sha256.h"
#include "tests/fuzz/fuzz_util.h"

namespace pkgdist::fuzz {
namespace {

constexpr uint32_t kChunks = 6;

const std::vector<Digest>& Expected() {
  static const std::vector<Digest>* d = [] {
    auto* v = new std::vector<Digest>;
    for (uint32_t i = 0; i < kChunks; ++i) v->push_back(Sha256Of(absl::StrCat("chunk ", i)));
    return v;
  }();
  return *d;
}

// Builds a journal from the program in `in`; `expected` gets the indices a
// correct replay must return.
std::string RunProgram(absl::string_view in, std::vector<uint32_t>* expected) {
  std::string out;
  std::set<uint32_t> found;
  bool stopped = false;
  size_t pos = 0;
  auto next = [&]() -> uint8_t { return pos < in.size() ? static_cast<uint8_t>(in[pos++]) : 0; };
  while (pos < in.size()) {
    uint8_t op = next();
    uint32_t index = next() % (kChunks + 3);  // some out of range
    Digest hash = Expected()[index % kChunks];
    switch (op % 5) {
      case 0:  // a valid record of a chunk of this manifest (or out of range)
      case 1:  // a valid record with another chunk's hash
        if (op % 5 == 1) hash = Sha256Of(absl::StrCat("other ", index));
        out += EncodeJournalRecord({index, hash});
        if (!stopped && index < kChunks && op % 5 == 0) found.insert(index);
        break;
      case 2: {  // a record with one byte flipped (magic, payload or crc)
        std::string rec = EncodeJournalRecord({index, hash});
        rec[next() % rec.size()] ^= static_cast<char>(1 + next() % 255);
        out += rec;
        stopped = true;
        break;
      }
      case 3: {  // raw bytes
        size_t n = std::min<size_t>(next() % 64, in.size() - pos);
        out.append(in.data() + pos, n);
        pos += n;
        if (n > 0) stopped = true;
        break;
      }
      case 4: {  // a torn record: the program ends here
        std::string rec = EncodeJournalRecord({index, hash});
        out += rec.substr(0, next() % kJournalRecordSize);
        *expected = std::vector<uint32_t>(found.begin(), found.end());
        return out;
      }
    }
  }
  *expected = std::vector<uint32_t>(found.begin(), found.end());
  return out;
}

std::string Show(const std::vector<uint32_t>& v) { return absl::StrJoin(v, ","); }

uint64_t FileSize(const std::string& path) {
  struct stat st;
  Check(::stat(path.c_str(), &st) == 0, "journal vanished");
  return static_cast<uint64_t>(st.st_size);
}

void CheckIndices(const std::vector<uint32_t>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    Check(v[i] < kChunks, "replayed index out of range");
    Check(i == 0 || v[i - 1] < v[i], "replayed indices not distinct and ascending");
  }
}

void RunOne(absl::string_view in) {
  bool program = !in.empty() && (static_cast<uint8_t>(in[0]) & 1);
  absl::string_view body = in.empty() ? in : in.substr(1);
  std::vector<uint32_t> want;
  std::string bytes = program ? RunProgram(body, &want) : std::string(body);

  auto dir = TempDir::Create("pkgdist-fuzz-journal");
  Check(dir.ok(), dir.status().ToString());
  std::string path = dir->path() + "/journal";
  Check(WriteFileAtomic(path, bytes).ok(), "cannot write the journal");
  absl::Span<const Digest> expected(Expected());

  auto read = ReadJournal(path, expected);
  Check(read.ok(), read.status().ToString());
  CheckIndices(*read);
  Check(FileSize(path) == bytes.size(), "ReadJournal modified the file");
  if (program) {
    Check(*read == want, absl::StrCat("replay gave {", Show(*read), "}, expected {", Show(want), "}"));
  }

  std::vector<uint32_t> replayed;
  uint64_t size = 0;
  {
    auto j = Journal::Open(path, expected);
    Check(j.ok(), j.status().ToString());
    replayed = (*j)->replayed();
    Check(replayed == *read, "Journal::Open and ReadJournal disagree");
    size = FileSize(path);
    Check(size <= bytes.size() && size % kJournalRecordSize == 0,
          "Open did not cut the journal to whole records");
  }
  {
    auto j = Journal::Open(path, expected);
    Check(j.ok(), j.status().ToString());
    Check((*j)->replayed() == replayed, "a second replay differs from the first");
    Check(FileSize(path) == size, "a second Open changed the file");
    // Append the chunks replay did not find; all must be found next time.
    std::vector<JournalEntry> more;
    for (uint32_t i = 0; i < kChunks; ++i) {
      if (!std::binary_search(replayed.begin(), replayed.end(), i)) {
        more.push_back({i, Expected()[i]});
      }
    }
    Check((*j)->Append(more).ok(), "append failed");
  }
  auto after = ReadJournal(path, expected);
  Check(after.ok() && after->size() == kChunks,
        absl::StrCat("after appending the missing entries replay gave {",
                     after.ok() ? Show(*after) : after.status().ToString(), "}"));
}

}  // namespace
}  // namespace pkgdist::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pkgdist::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pkgdist::fuzz::RunOne(absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
