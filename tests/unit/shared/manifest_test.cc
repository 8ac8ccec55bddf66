#include "shared/manifest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "shared/file_util.h"
#include "shared/sha256.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;
using pkgdist::v1::EntryType;
using pkgdist::v1::Manifest;

constexpr uint32_t kMiB = 1 << 20;
constexpr char kSha256Empty[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kSha256OneMiBZeros[] =
    "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58";
constexpr char kSha256OneZero[] = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";

// Builds a one-file manifest from `content`, appended in pieces of `piece`
// bytes so that pieces straddle chunk boundaries.
Manifest OneFile(const std::string& content, uint32_t chunk_size, size_t piece = 7919) {
  ManifestBuilder b("app", "1.0", {}, chunk_size);
  EXPECT_TRUE(b.BeginFile("f", 0644, content.size()).ok());
  for (size_t off = 0; off < content.size(); off += piece) {
    EXPECT_TRUE(b.Append(absl::string_view(content).substr(off, piece)).ok());
  }
  EXPECT_TRUE(b.EndFile().ok());
  absl::StatusOr<Manifest> m = b.Finish();
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : Manifest();
}

std::vector<std::pair<uint64_t, uint32_t>> Ranges(const Manifest& m) {
  std::vector<std::pair<uint64_t, uint32_t>> out;
  for (const auto& c : m.chunks()) out.emplace_back(c.offset(), c.length());
  return out;
}

// --- Chunking and hashing.

TEST(ManifestBuilderTest, ExactlyOneMiBIsOneChunk) {
  // A file of exactly the chunk size gives one full chunk.
  Manifest m = OneFile(std::string(kMiB, '\0'), kMiB);
  EXPECT_THAT(Ranges(m), ::testing::ElementsAre(std::make_pair(uint64_t{0}, kMiB)));
  EXPECT_EQ(ToHex(m.chunks(0).sha256()), kSha256OneMiBZeros);
  // The file's digest is the digest of its chunks' digests.
  EXPECT_EQ(m.files(0).sha256(), DigestBytes(Sha256Of(m.chunks(0).sha256())));
  EXPECT_EQ(m.total_size(), kMiB);
}

TEST(ManifestBuilderTest, OneMiBPlusOneIsTwoChunks) {
  // One byte past the chunk size starts a second, one-byte chunk.
  Manifest m = OneFile(std::string(kMiB + 1, '\0'), kMiB);
  EXPECT_THAT(Ranges(m), ::testing::ElementsAre(std::make_pair(uint64_t{0}, kMiB),
                                                std::make_pair(uint64_t{kMiB}, 1u)));
  EXPECT_EQ(ToHex(m.chunks(0).sha256()), kSha256OneMiBZeros);
  EXPECT_EQ(ToHex(m.chunks(1).sha256()), kSha256OneZero);
  EXPECT_EQ(m.files(0).sha256(),
            DigestBytes(Sha256Of(m.chunks(0).sha256() + m.chunks(1).sha256())));
}

TEST(ManifestBuilderTest, EmptyFileHasNoChunks) {
  // A zero-byte file is an entry with the empty hash and no chunk.
  Manifest m = OneFile("", kMiB);
  ASSERT_EQ(m.files_size(), 1);
  EXPECT_EQ(m.chunks_size(), 0);
  EXPECT_EQ(m.files(0).size(), 0u);
  EXPECT_EQ(ToHex(m.files(0).sha256()), kSha256Empty);
  EXPECT_EQ(m.total_size(), 0u);
}

TEST(ManifestBuilderTest, SmallChunkSizeCutsAtEveryMultiple) {
  // With 4-byte chunks: 8 bytes -> 2 chunks, 9 bytes -> 3, 0 -> none, with known hashes.
  Manifest eight = OneFile("abcdefgh", 4, 3);
  EXPECT_THAT(Ranges(eight), ::testing::ElementsAre(std::make_pair(uint64_t{0}, 4u),
                                                    std::make_pair(uint64_t{4}, 4u)));
  Manifest nine = OneFile("abcdefghi", 4, 5);
  EXPECT_THAT(Ranges(nine), ::testing::ElementsAre(std::make_pair(uint64_t{0}, 4u),
                                                   std::make_pair(uint64_t{4}, 4u),
                                                   std::make_pair(uint64_t{8}, 1u)));
  EXPECT_EQ(ToHex(nine.chunks(0).sha256()),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589");
  EXPECT_EQ(ToHex(nine.chunks(1).sha256()),
            "e5e088a0b66163a0a26a5e053d2a4496dc16ab6e0e3dd1adf2d16aa84a078c9d");
  EXPECT_EQ(ToHex(nine.chunks(2).sha256()),
            "de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7");
  EXPECT_EQ(nine.files(0).sha256(),
            DigestBytes(Sha256Of(nine.chunks(0).sha256() + nine.chunks(1).sha256() +
                                 nine.chunks(2).sha256())));
  EXPECT_EQ(OneFile("", 4).chunks_size(), 0);
}

TEST(ManifestBuilderTest, PackageIdIsTheHashOfTheDeterministicSerialization) {
  // The id is part of the package format: however it is computed, it stays
  // sha256 of the deterministic serialization. Large enough to span many
  // of the hashing stream's 64 KiB blocks.
  std::string data;
  for (int i = 0; i < 300'000; ++i) data.push_back(static_cast<char>(i * 7 + (i >> 9)));
  Manifest m = OneFile(data, 32, 4096);
  ASSERT_GT(m.ByteSizeLong(), size_t{4} << 16);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  EXPECT_EQ(PackageId(m), DigestBytes(Sha256Of(bytes)));
  EXPECT_EQ(PackageId(Manifest()), DigestBytes(Sha256Of("")));
}

TEST(ManifestBuilderTest, PieceSizeDoesNotChangeTheResult) {
  // Feeding the same bytes in different pieces gives the same manifest.
  std::string data;
  for (int i = 0; i < 10'000; ++i) data.push_back(static_cast<char>(i * 31));
  Manifest a = OneFile(data, 1000, 1);
  Manifest b = OneFile(data, 1000, 999);
  Manifest c = OneFile(data, 1000, data.size());
  EXPECT_EQ(PackageIdHex(a), PackageIdHex(b));
  EXPECT_EQ(PackageIdHex(a), PackageIdHex(c));
  ASSERT_EQ(a.chunks_size(), 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(a.chunks(i).sha256(), DigestBytes(Sha256Of(absl::string_view(data).substr(i * 1000, 1000))));
  }
}

// Pseudo-random bytes (an LCG; not pinned: the vectors live in fastcdc_test).
std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    s[i] = static_cast<char>(seed >> 56);
  }
  return s;
}

Manifest OneFileContentDefined(const std::string& content, size_t piece) {
  ManifestBuilder b("app", "1.0", {}, Chunking::ContentDefined({1024, 4096, 16384}));
  EXPECT_TRUE(b.BeginFile("f", 0644, content.size()).ok());
  for (size_t off = 0; off < content.size(); off += piece) {
    EXPECT_TRUE(b.Append(absl::string_view(content).substr(off, piece)).ok());
  }
  EXPECT_TRUE(b.EndFile().ok());
  absl::StatusOr<Manifest> m = b.Finish();
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : Manifest();
}

TEST(ManifestBuilderTest, ContentDefinedChunksAreFastCdcsCutsWhateverThePieces) {
  // The builder's chunks are exactly FastCDC's cut points of the file, and
  // each chunk's digest is that of its bytes, however the upload is split:
  // pieces of 1 MiB and more are scanned and hashed on two threads.
  std::string data = RandomBytes(2'500'000, 7);
  std::vector<uint64_t> cuts = ChunkBoundaries(data, {1024, 4096, 16384});
  for (size_t piece : {size_t{1}, size_t{777}, size_t{65536}, size_t{1} << 20, data.size()}) {
    Manifest m = OneFileContentDefined(data, piece);
    ASSERT_EQ(static_cast<size_t>(m.chunks_size()), cuts.size()) << "piece " << piece;
    uint64_t begin = 0;
    for (int i = 0; i < m.chunks_size(); ++i) {
      EXPECT_EQ(m.chunks(i).offset(), begin);
      EXPECT_EQ(m.chunks(i).offset() + m.chunks(i).length(), cuts[static_cast<size_t>(i)]);
      EXPECT_EQ(m.chunks(i).sha256(),
                DigestBytes(Sha256Of(absl::string_view(data).substr(begin, m.chunks(i).length()))));
      begin = cuts[static_cast<size_t>(i)];
    }
  }
}

TEST(ManifestBuilderTest, AnInsertedByteKeepsTheOtherContentDefinedChunks) {
  // What delta transfer rests on: one byte inserted near the start of a file
  // leaves all but a few chunk digests as they were (fixed chunks: none).
  std::string v1 = RandomBytes(400'000, 11);
  std::string v2 = v1;
  v2.insert(5000, 1, 'x');
  auto digests = [](const Manifest& m) {
    std::set<std::string> out;
    for (const auto& c : m.chunks()) out.insert(c.sha256());
    return out;
  };
  std::set<std::string> old = digests(OneFileContentDefined(v1, 4096));
  Manifest m2 = OneFileContentDefined(v2, 4096);
  int fresh = 0;
  for (const auto& c : m2.chunks()) fresh += old.count(c.sha256()) == 0 ? 1 : 0;
  EXPECT_GE(m2.chunks_size(), 40);
  EXPECT_LE(fresh, 3) << "of " << m2.chunks_size() << " chunks";
  std::set<std::string> old_fixed = digests(OneFile(v1, 4096));
  int fixed_fresh = 0;
  Manifest fixed2 = OneFile(v2, 4096);
  for (const auto& c : fixed2.chunks()) fixed_fresh += old_fixed.count(c.sha256()) == 0 ? 1 : 0;
  EXPECT_GE(fixed_fresh, 90);  // every chunk after the insert
}

TEST(ManifestBuilderTest, ChunkSizeIsClampedToTheMaximum) {
  // Asking for chunks above 1 MiB still yields chunks of at most 1 MiB.
  Manifest m = OneFile(std::string(kMiB + 1, 'x'), 4 * kMiB);
  ASSERT_EQ(m.chunks_size(), 2);
  EXPECT_EQ(m.chunks(0).length(), kMiB);
}

TEST(ManifestBuilderTest, RefusesWrongAmountsOfData) {
  // More data than declared, fewer at EndFile, and Finish inside a file all fail.
  ManifestBuilder b("app", "1.0");
  ASSERT_TRUE(b.BeginFile("f", 0644, 3).ok());
  EXPECT_EQ(b.Append("abcd").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(b.Append("ab").ok());
  EXPECT_EQ(b.EndFile().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b.AddDirectory("d", 0755).code(), absl::StatusCode::kFailedPrecondition);
  ManifestBuilder c("app", "1.0");
  EXPECT_EQ(c.Append("x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.EndFile().code(), absl::StatusCode::kFailedPrecondition);
}

// --- From disk.

class ManifestFromPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("manifest_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    root_ = dir_->path() + "/pkg";
    ASSERT_TRUE(MakeDirs(root_).ok());
  }
  void Write(const std::string& rel, const std::string& content, mode_t mode = 0644) {
    ASSERT_TRUE(WriteFileAtomic(root_ + "/" + rel, content).ok());
    ASSERT_EQ(::chmod((root_ + "/" + rel).c_str(), mode), 0);
  }
  void Dir(const std::string& rel) { ASSERT_TRUE(MakeDirs(root_ + "/" + rel).ok()); }

  std::optional<TempDir> dir_;
  std::string root_;
};

TEST_F(ManifestFromPathTest, DescribesANestedTree) {
  // Nested folders, an empty file, an empty directory and an inside symlink,
  // parents before children, names in byte order.
  Dir("bin");
  Dir("share/doc/empty");
  Write("bin/tool", "abc", 0755);
  Write("share/doc/README", "");
  Write("Zfirst", "");
  ASSERT_EQ(::symlink("../bin/tool", (root_ + "/share/tool").c_str()), 0);
  absl::StatusOr<Manifest> m = BuildManifestFromPath(root_, "app", "1.0");
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> paths;
  for (const auto& f : m->files()) paths.push_back(f.path());
  EXPECT_THAT(paths, ::testing::ElementsAre("Zfirst", "bin", "bin/tool", "share", "share/doc",
                                            "share/doc/README", "share/doc/empty", "share/tool"));
  const auto& tool = m->files(2);
  EXPECT_EQ(tool.type(), pkgdist::v1::ENTRY_TYPE_FILE);
  EXPECT_EQ(tool.mode(), 0755u);
  EXPECT_EQ(tool.size(), 3u);
  // One chunk "abc": the file digest is sha256(sha256("abc")).
  EXPECT_EQ(ToHex(tool.sha256()),
            "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
  EXPECT_EQ(m->files(5).size(), 0u);
  EXPECT_EQ(ToHex(m->files(5).sha256()), kSha256Empty);
  EXPECT_EQ(m->files(6).type(), pkgdist::v1::ENTRY_TYPE_DIRECTORY);
  EXPECT_EQ(m->files(7).type(), pkgdist::v1::ENTRY_TYPE_SYMLINK);
  EXPECT_EQ(m->files(7).link_target(), "../bin/tool");
  EXPECT_EQ(m->total_size(), 3u);
  ASSERT_EQ(m->chunks_size(), 1);
  EXPECT_EQ(m->chunks(0).file(), 2u);
  EXPECT_TRUE(ValidateManifest(*m).ok());
}

TEST_F(ManifestFromPathTest, ZeroBytePackagesAreValid) {
  // A tree of only an empty file, and a single empty file, make valid manifests.
  Write("empty", "");
  absl::StatusOr<Manifest> tree = BuildManifestFromPath(root_, "app", "1.0");
  ASSERT_TRUE(tree.ok()) << tree.status();
  EXPECT_EQ(tree->total_size(), 0u);
  EXPECT_EQ(tree->chunks_size(), 0);
  absl::StatusOr<Manifest> single = BuildManifestFromPath(root_ + "/empty", "app", "1.0");
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_EQ(single->files_size(), 1);
  EXPECT_EQ(single->files(0).path(), "empty");
  EXPECT_TRUE(ValidateManifest(*single).ok());
}

TEST_F(ManifestFromPathTest, PackageIdIsDeterministic) {
  // The same tree gives the same id; any change to content, mode or chunking another.
  Dir("d");
  Write("d/a", "hello");
  absl::StatusOr<Manifest> m1 = BuildManifestFromPath(root_, "app", "1.0");
  absl::StatusOr<Manifest> m2 = BuildManifestFromPath(root_, "app", "1.0");
  ASSERT_TRUE(m1.ok() && m2.ok());
  const std::string id = PackageIdHex(*m1);
  EXPECT_THAT(id, ::testing::MatchesRegex("[0-9a-f]{64}"));
  EXPECT_EQ(PackageIdHex(*m2), id);
  EXPECT_EQ(ToHex(PackageId(*m1)), id);
  EXPECT_NE(PackageIdHex(*BuildManifestFromPath(root_, "app", "1.0", {}, 2)), id);
  EXPECT_NE(PackageIdHex(*BuildManifestFromPath(root_, "app", "1.1")), id);
  Write("d/a", "hello", 0600);
  EXPECT_NE(PackageIdHex(*BuildManifestFromPath(root_, "app", "1.0")), id);
  Write("d/a", "hellO");
  EXPECT_NE(PackageIdHex(*BuildManifestFromPath(root_, "app", "1.0")), id);
}

TEST_F(ManifestFromPathTest, RefusesBadNames) {
  // The package name and version are validated before anything is read.
  EXPECT_EQ(BuildManifestFromPath(root_, "../x", "1.0").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildManifestFromPath(root_, "app", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildManifestFromPath(root_ + "/missing", "app", "1.0").status().code(),
            absl::StatusCode::kNotFound);
}

// --- ValidateManifest.

// A valid manifest to break: dir/, dir/f (5 bytes in chunks of 3 and 2), g (0 bytes).
Manifest ValidManifest() {
  Manifest m;
  m.set_name("app");
  m.set_version("1.0");
  auto* d = m.add_files();
  d->set_path("dir");
  d->set_type(pkgdist::v1::ENTRY_TYPE_DIRECTORY);
  d->set_mode(0755);
  auto* f = m.add_files();
  f->set_path("dir/f");
  f->set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  f->set_mode(0644);
  f->set_size(5);
  // A file's digest is the digest of its chunks' digests (both 'c'*32 here).
  f->set_sha256(DigestBytes(Sha256Of(std::string(64, 'c'))));
  auto* g = m.add_files();
  g->set_path("g");
  g->set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  g->set_sha256(DigestBytes(Sha256Of("")));
  const std::pair<uint64_t, uint32_t> ranges[] = {{0, 3}, {3, 2}};
  for (auto [off, len] : ranges) {
    auto* c = m.add_chunks();
    c->set_file(1);
    c->set_offset(off);
    c->set_length(len);
    c->set_sha256(std::string(32, 'c'));
  }
  m.set_total_size(5);
  return m;
}

struct BadCase {
  const char* name;
  void (*breakit)(Manifest&);
  const char* message;  // a substring of the error
};

class ValidateManifestTest : public ::testing::TestWithParam<BadCase> {};

TEST(ValidateManifestBaseTest, AcceptsTheValidManifest) {
  // The starting point of every bad case is itself valid.
  absl::Status s = ValidateManifest(ValidManifest());
  EXPECT_TRUE(s.ok()) << s;
}

TEST_P(ValidateManifestTest, RejectsTheMalformedManifest) {
  // Each single defect is found and named.
  Manifest m = ValidManifest();
  GetParam().breakit(m);
  absl::Status s = ValidateManifest(m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Defects, ValidateManifestTest,
    ::testing::Values(
        BadCase{"DuplicatePath", [](Manifest& m) { *m.add_files() = m.files(0); }, "twice"},
        BadCase{"MissingParent",
                [](Manifest& m) { m.mutable_files(1)->set_path("other/f"); }, "parent"},
        BadCase{"ParentIsAFile",
                [](Manifest& m) { m.mutable_files(2)->set_path("dir/f/g"); }, "parent"},
        BadCase{"ChildBeforeParent", [](Manifest& m) { m.mutable_files()->SwapElements(0, 1); },
                "parent"},
        BadCase{"ChunkGap", [](Manifest& m) { m.mutable_chunks(1)->set_offset(4); },
                "not contiguous"},
        BadCase{"ChunkOverlap", [](Manifest& m) { m.mutable_chunks(1)->set_offset(2); },
                "not contiguous"},
        BadCase{"ChunkPastEndOfFile", [](Manifest& m) { m.mutable_chunks(1)->set_length(3); },
                "past the end"},
        BadCase{"ChunkFileIndexOutOfRange", [](Manifest& m) { m.mutable_chunks(1)->set_file(9); },
                "out of range"},
        BadCase{"ChunkOfADirectory", [](Manifest& m) { m.mutable_chunks(0)->set_file(0); },
                "non-file"},
        BadCase{"ChunkOfZeroLength", [](Manifest& m) { m.mutable_chunks(1)->set_length(0); },
                "length"},
        BadCase{"ChunkLongerThanTheMaximum",
                [](Manifest& m) {
                  m.mutable_files(1)->set_size(uint64_t{kMaxChunkSize} + 3);
                  m.mutable_chunks(1)->set_length(kMaxChunkSize + 1);
                  m.set_total_size(uint64_t{kMaxChunkSize} + 3);
                },
                "length"},
        BadCase{"ChunksMissing", [](Manifest& m) { m.mutable_chunks()->RemoveLast(); },
                "do not cover"},
        BadCase{"ChunkBadHashLength",
                [](Manifest& m) { m.mutable_chunks(0)->set_sha256(std::string(31, 'c')); },
                "sha256"},
        BadCase{"FileBadHashLength",
                [](Manifest& m) { m.mutable_files(1)->set_sha256(std::string(33, 'h')); },
                "sha256"},
        BadCase{"FileDigestNotOfItsChunks",
                [](Manifest& m) {
                  std::string d = m.files(1).sha256();
                  d[0] = static_cast<char>(d[0] ^ 1);
                  m.mutable_files(1)->set_sha256(d);
                },
                "digest of its chunks"},
        BadCase{"FileWithoutHash", [](Manifest& m) { m.mutable_files(2)->clear_sha256(); },
                "sha256"},
        BadCase{"TotalSizeMismatch", [](Manifest& m) { m.set_total_size(6); }, "total_size"},
        BadCase{"DirectoryWithContent", [](Manifest& m) { m.mutable_files(0)->set_size(1); },
                "content"},
        BadCase{"UnknownType",
                [](Manifest& m) { m.mutable_files(2)->set_type(pkgdist::v1::ENTRY_TYPE_UNSPECIFIED); },
                "type"},
        BadCase{"DotDotPath", [](Manifest& m) { m.mutable_files(2)->set_path("../g"); }, ".."},
        BadCase{"AbsolutePath", [](Manifest& m) { m.mutable_files(2)->set_path("/g"); },
                "absolute"},
        BadCase{"EscapingSymlink",
                [](Manifest& m) {
                  auto* l = m.add_files();
                  l->set_path("dir/l");
                  l->set_type(pkgdist::v1::ENTRY_TYPE_SYMLINK);
                  l->set_link_target("../../etc/passwd");
                },
                "leaves the package"},
        BadCase{"BadName", [](Manifest& m) { m.set_name("a/b"); }, "package name"},
        BadCase{"EmptyVersion", [](Manifest& m) { m.set_version(""); }, "package version"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(ValidateManifestLimitsTest, EnforcesEveryLimit) {
  // max_files, max_total_size and max_path_length each reject an oversized manifest.
  Manifest m = ValidManifest();
  ManifestLimits few_files;
  few_files.max_files = 2;
  EXPECT_THAT(ValidateManifest(m, few_files).message(), HasSubstr("max_files"));
  ManifestLimits small;
  small.max_total_size = 4;
  EXPECT_THAT(ValidateManifest(m, small).message(), HasSubstr("max_total_size"));
  ManifestLimits short_paths;
  short_paths.max_path_length = 4;
  EXPECT_THAT(ValidateManifest(m, short_paths).message(), HasSubstr("longer than 4"));
  ManifestLimits exact;
  exact.max_files = 3;
  exact.max_total_size = 5;
  exact.max_path_length = 5;
  EXPECT_TRUE(ValidateManifest(m, exact).ok());
}

TEST(ValidateManifestLimitsTest, CaseCollisionsAreRefusedOnlyWhenAsked) {
  // "dir/F" next to "dir/f" is fine by default, refused for case-folding disks.
  Manifest m = ValidManifest();
  auto* f = m.add_files();
  f->set_path("dir/F");
  f->set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  f->set_sha256(DigestBytes(Sha256Of("")));
  EXPECT_TRUE(ValidateManifest(m).ok());
  ManifestLimits folding;
  folding.refuse_case_collisions = true;
  absl::Status s = ValidateManifest(m, folding);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("dir/F"));
}

TEST(ValidateManifestLimitsTest, BuilderStopsAtTheLimits) {
  // The builder refuses the entry or the file that would cross a limit.
  ManifestLimits limits;
  limits.max_files = 1;
  limits.max_total_size = 10;
  ManifestBuilder b("app", "1.0", limits);
  EXPECT_THAT(b.BeginFile("big", 0644, 11).message(), HasSubstr("max_total_size"));
  ASSERT_TRUE(b.AddDirectory("d", 0755).ok());
  EXPECT_THAT(b.AddDirectory("e", 0755).message(), HasSubstr("max_files"));
}

}  // namespace
}  // namespace pkgdist

namespace pkgdist {
namespace {

TEST(ValidateManifestSymlinkTest, RefusesATargetThatPassesThroughAnotherSymlink) {
  // "b -> ." makes "a -> b/.." leave the tree, though each is lexically inside.
  pkgdist::v1::Manifest m;
  m.set_name("app");
  m.set_version("1.0");
  for (auto [path, target] : {std::pair<const char*, const char*>{"b", "."}, {"a", "b/.."}}) {
    auto* l = m.add_files();
    l->set_path(path);
    l->set_type(pkgdist::v1::ENTRY_TYPE_SYMLINK);
    l->set_mode(0777);
    l->set_link_target(target);
  }
  absl::Status s = ValidateManifest(m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("passes through symlink \"b\""));
  // A link to a link (as the last component) stays allowed.
  m.mutable_files(1)->set_link_target("b");
  EXPECT_TRUE(ValidateManifest(m).ok());
}

}  // namespace
}  // namespace pkgdist
