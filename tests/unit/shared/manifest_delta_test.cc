#include "shared/manifest_delta.h"

#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "shared/manifest.h"

namespace pkgdist {
namespace {

using pkgdist::v1::ChunkRef;
using pkgdist::v1::FileEntry;
using pkgdist::v1::Manifest;
using pkgdist::v1::ManifestPart;
using ::testing::HasSubstr;

constexpr uint64_t kNoLimit = uint64_t{1} << 40;

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// A package of `files` files of random content, content-defined chunks of
// the default sizes.
struct Tree {
  std::vector<std::pair<std::string, std::string>> files;  // path, content

  Manifest Build() const {
    ManifestBuilder b("pkg", "1");
    for (const auto& [path, content] : files) {
      EXPECT_TRUE(b.BeginFile(path, 0644, content.size()).ok());
      EXPECT_TRUE(b.Append(content).ok());
      EXPECT_TRUE(b.EndFile().ok());
    }
    auto m = b.Finish();
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }
};

Tree RandomTree(std::mt19937_64& rng, int files) {
  Tree t;
  for (int i = 0; i < files; ++i) {
    t.files.emplace_back(absl::StrCat("f", 100 + i), RandomBytes(rng, 20'000 + rng() % 300'000));
  }
  return t;
}

// Rebuilds `target` from `base` and the parts of their delta.
Manifest RoundTrip(const Manifest& base, const Manifest& target, size_t part_bytes,
                   size_t* parts_out = nullptr, size_t* bytes_out = nullptr) {
  std::vector<ManifestPart> parts = DiffManifest(base, target, part_bytes);
  Manifest out;
  out.set_name(target.name());
  out.set_version(target.version());
  out.set_total_size(target.total_size());
  size_t bytes = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    EXPECT_EQ(parts[i].more(), i + 1 < parts.size()) << "part " << i;
    bytes += parts[i].ByteSizeLong();
    absl::Status s = ApplyManifestPart(base, parts[i], kNoLimit, kNoLimit, &out);
    EXPECT_TRUE(s.ok()) << s;
  }
  if (parts_out != nullptr) *parts_out = parts.size();
  if (bytes_out != nullptr) *bytes_out = bytes;
  return out;
}

void ExpectSame(const Manifest& want, const Manifest& got) {
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(want, got));
  EXPECT_EQ(PackageId(want), PackageId(got));
}

TEST(ManifestDelta, IdenticalManifestIsOneRunEach) {
  std::mt19937_64 rng(1);
  Manifest m = RandomTree(rng, 5).Build();
  std::vector<ManifestPart> parts = DiffManifest(m, m, 1 << 20);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].file_runs_size(), 1);
  EXPECT_EQ(parts[0].chunk_runs_size(), 1);
  EXPECT_EQ(parts[0].files_size() + parts[0].chunks_size(), 0);
  ExpectSame(m, RoundTrip(m, m, 1 << 20));
}

TEST(ManifestDelta, InsertedByteShiftsChunksInsteadOfSendingThem) {
  std::mt19937_64 rng(2);
  Tree v1;
  for (int i = 0; i < 6; ++i) v1.files.emplace_back(absl::StrCat("f", i), RandomBytes(rng, 1'500'000));
  Tree v2 = v1;
  v2.files[2].second.insert(100, "x");
  const Manifest base = v1.Build(), target = v2.Build();
  size_t parts = 0, bytes = 0;
  ExpectSame(target, RoundTrip(base, target, 1 << 20, &parts, &bytes));
  // The file entry and one or two chunks are new; the rest are a few runs.
  EXPECT_LT(bytes, 600u) << "of a manifest of " << target.ByteSizeLong();
  EXPECT_LT(bytes * 20, target.ByteSizeLong());
}

TEST(ManifestDelta, RandomEditsRoundTrip) {
  std::mt19937_64 rng(3);
  for (int round = 0; round < 30; ++round) {
    Tree v1 = RandomTree(rng, 1 + static_cast<int>(rng() % 8));
    Tree v2 = v1;
    for (int e = 0; e < 3; ++e) {
      auto& files = v2.files;
      const size_t i = rng() % files.size();
      switch (rng() % 5) {
        case 0:  // insert bytes
          files[i].second.insert(rng() % (files[i].second.size() + 1), RandomBytes(rng, 1 + rng() % 5000));
          break;
        case 1:  // delete bytes
          if (files[i].second.empty()) break;
          files[i].second.erase(rng() % files[i].second.size(), 1 + rng() % 5000);
          break;
        case 2:  // a new file (sorted in by its path)
          files.emplace_back(absl::StrCat("f", 100 + i, "a", e), RandomBytes(rng, rng() % 100'000));
          break;
        case 3:  // a file removed
          if (files.size() > 1) files.erase(files.begin() + static_cast<long>(i));
          break;
        default:  // renamed: its chunks now belong to another index
          files[i].first = absl::StrCat("g", files[i].first);
          break;
      }
    }
    std::sort(v2.files.begin(), v2.files.end());
    const Manifest base = v1.Build(), target = v2.Build();
    SCOPED_TRACE(absl::StrCat("round ", round));
    for (size_t part_bytes : {size_t{1}, size_t{300}, size_t{1} << 20}) {
      ExpectSame(target, RoundTrip(base, target, part_bytes));
      // Against an empty base and against the target itself too.
      ExpectSame(target, RoundTrip(Manifest(), target, part_bytes));
      ExpectSame(target, RoundTrip(target, target, part_bytes));
    }
  }
}

TEST(ManifestDelta, PartsStayNearTheirBound) {
  std::mt19937_64 rng(4);
  Manifest target = RandomTree(rng, 40).Build();
  for (const ManifestPart& p : DiffManifest(Manifest(), target, 4096)) {
    // One literal may overrun: a chunk reference is under 100 bytes.
    EXPECT_LE(p.ByteSizeLong(), 4096u + 200u);
  }
}

// A base of two files of one chunk each, and a part to apply to it.
struct Fixture {
  Manifest base;
  ManifestPart part;
  Manifest out;
  Fixture() {
    for (int i = 0; i < 2; ++i) {
      FileEntry* f = base.add_files();
      f->set_path(absl::StrCat("f", i));
      ChunkRef* c = base.add_chunks();
      c->set_file(static_cast<uint32_t>(i));
      c->set_offset(0);
      c->set_length(10);
      c->set_sha256(std::string(32, static_cast<char>('a' + i)));
    }
  }
  absl::Status Apply(uint64_t max_files = kNoLimit, uint64_t max_chunks = kNoLimit) {
    return ApplyManifestPart(base, part, max_files, max_chunks, &out);
  }
};

TEST(ManifestDelta, RefusesRunsOutsideTheBase) {
  Fixture f;
  auto* r = f.part.add_chunk_runs();
  r->set_base_index(1);
  r->set_copy(2);
  EXPECT_THAT(f.Apply().message(), HasSubstr("copies chunks 1..3 of a base that has 2"));
  f.part.clear_chunk_runs();
  r = f.part.add_file_runs();
  r->set_base_index(0xffffffff);
  r->set_copy(0xffffffff);
  EXPECT_THAT(f.Apply().message(), HasSubstr("of a base that has 2"));
  EXPECT_EQ(f.out.files_size() + f.out.chunks_size(), 0);
}

TEST(ManifestDelta, RefusesRunsThatDoNotTakeTheLiterals) {
  Fixture f;
  f.part.add_files()->set_path("new");
  f.part.add_file_runs()->set_copy(0);  // takes none of the one literal
  EXPECT_THAT(f.Apply().message(), HasSubstr("the runs take 0 file entries, the part has 1"));
  f.part.mutable_file_runs(0)->set_literals(2);
  EXPECT_THAT(f.Apply().message(), HasSubstr("the runs take 2 file entries, the part has 1"));
}

TEST(ManifestDelta, RefusesShiftsOutOfRange) {
  Fixture f;
  auto* r = f.part.add_chunk_runs();
  r->set_copy(1);
  r->set_file_shift(-1);
  EXPECT_THAT(f.Apply().message(), HasSubstr("out of range"));
  r->set_file_shift(int64_t{1} << 32);
  EXPECT_THAT(f.Apply().message(), HasSubstr("out of range"));
  r->set_file_shift(0);
  r->set_offset_shift(-1);
  EXPECT_THAT(f.Apply().message(), HasSubstr("out of range"));
  r->set_offset_shift(std::numeric_limits<int64_t>::max());
  r->set_base_index(1);
  EXPECT_TRUE(f.Apply().ok());  // 0 + max fits
  EXPECT_EQ(f.out.chunks(0).offset(), static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(f.out.chunks(0).sha256(), std::string(32, 'b'));
}

TEST(ManifestDelta, RefusesMoreEntriesThanTheLimits) {
  Fixture f;
  auto* r = f.part.add_file_runs();
  r->set_copy(2);
  EXPECT_THAT(f.Apply(/*max_files=*/1).message(), HasSubstr("2 entries, more than max_files 1"));
  f.part.clear_file_runs();
  r = f.part.add_chunk_runs();
  r->set_copy(2);
  EXPECT_THAT(f.Apply(kNoLimit, /*max_chunks=*/1).message(), HasSubstr("2 chunks"));
  EXPECT_EQ(f.out.files_size() + f.out.chunks_size(), 0);
}

}  // namespace
}  // namespace pkgdist
