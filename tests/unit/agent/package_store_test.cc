#include "agent/package_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <fcntl.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/manifest.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint32_t kChunk = 4096;

class PackageStoreTest : public ::testing::Test {
 protected:
  PackageStoreTest() : tmp_(testing::MakeTempDir()), root_(tmp_.path() + "/agent-root") {
    PackageStoreOptions options;
    options.reserve_bytes = 1000;
    options.free_bytes = [this](const std::string&) -> absl::StatusOr<uint64_t> {
      return free_bytes_;
    };
    store_ = OpenStore(options);
  }
  // Published trees keep read-only directories, which TempDir alone cannot delete.
  ~PackageStoreTest() override { (void)RemoveTree(tmp_.path()); }

  std::unique_ptr<PackageStore> OpenStore(PackageStoreOptions options = {}) {
    auto s = PackageStore::Open(root_, std::move(options));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // Receives every chunk of `m` (content under `src`) into staging, durably.
  std::unique_ptr<Staging> Stage(const pkgdist::v1::Manifest& m, const std::string& src,
                                 bool single_file = false) {
    auto staging = store_->OpenStaging(m, PackageId(m));
    EXPECT_TRUE(staging.ok()) << staging.status();
    if (!staging.ok()) return nullptr;
    for (uint32_t i = 0; i < (*staging)->chunk_count(); ++i) {
      EXPECT_TRUE((*staging)->WriteChunk(i, testing::ChunkData(m, src, i, single_file)).ok());
    }
    EXPECT_TRUE((*staging)->Flush().ok());
    return std::move(staging).value();
  }

  void StageAndPublish(const pkgdist::v1::Manifest& m, const std::string& src,
                       bool single_file = false) {
    auto staging = Stage(m, src, single_file);
    ASSERT_NE(staging, nullptr);
    absl::Status s = store_->Publish(*staging, PackageId(m));
    ASSERT_TRUE(s.ok()) << s;
  }

  // A tree with nested directories, modes, an empty file and an in-tree symlink.
  std::string MakeTree(const std::string& name, absl::string_view tool_content = "tool v1") {
    std::string src = tmp_.path() + "/" + name;
    testing::WriteFile(src + "/bin/tool", tool_content, 0755);
    testing::WriteFile(src + "/share/doc/deep/readme.txt", testing::Pattern(3 * kChunk + 5, 'r'),
                       0640);
    testing::WriteFile(src + "/share/empty", "", 0600);
    EXPECT_EQ(::symlink("../share/doc/deep/readme.txt", (src + "/bin/readme").c_str()), 0);
    EXPECT_EQ(::chmod((src + "/share/doc").c_str(), 0555), 0);
    return src;
  }

  TempDir tmp_;
  std::string root_;
  uint64_t free_bytes_ = uint64_t{1} << 40;
  std::unique_ptr<PackageStore> store_;
};

TEST_F(PackageStoreTest, RemoveTreeRefusesAPathWithANulAndDeletesNothing) {
  // "ROOT/staging/\0..." would reach the system as ROOT/staging: refused.
  const std::string staging = root_ + "/staging";
  ASSERT_TRUE(MakeDirs(staging + "/other").ok());
  absl::Status s = RemoveTree(staging + "/" + std::string("\0abc", 4));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(IsDirectory(staging + "/other"));
}

TEST_F(PackageStoreTest, PublishesADirectoryTreeWithModesEmptyFileAndSymlink) {
  // Commit verifies and renames the tree into packages/<name>/<version>/ with the manifest's modes.
  std::string src = MakeTree("src");
  auto m = testing::ManifestOf(src, "app", "1.0", kChunk);
  StageAndPublish(m, src);
  std::string pkg = root_ + "/packages/app/1.0";
  EXPECT_EQ(testing::ReadFile(pkg + "/bin/tool"), "tool v1");
  EXPECT_EQ(testing::ModeOf(pkg + "/bin/tool"), 0755u);
  EXPECT_EQ(testing::ReadFile(pkg + "/share/doc/deep/readme.txt"),
            testing::Pattern(3 * kChunk + 5, 'r'));
  EXPECT_EQ(testing::ModeOf(pkg + "/share/doc/deep/readme.txt"), 0640u);
  EXPECT_EQ(testing::ReadFile(pkg + "/share/empty"), "");
  EXPECT_EQ(testing::ModeOf(pkg + "/share/doc"), 0555u);
  EXPECT_EQ(std::filesystem::read_symlink(pkg + "/bin/readme").string(),
            "../share/doc/deep/readme.txt");
  EXPECT_EQ(testing::ReadFile(pkg + "/bin/readme"), testing::Pattern(3 * kChunk + 5, 'r'));
  EXPECT_EQ(testing::ReadFile(root_ + "/index/app@1.0"), PackageIdHex(m) + "\n");
  EXPECT_FALSE(std::filesystem::exists(root_ + "/staging/" + PackageIdHex(m)));
  auto id = store_->PublishedId("app", "1.0");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->value_or(""), PackageId(m));
}

TEST_F(PackageStoreTest, PublishesAZeroByteSingleFilePackage) {
  // A single-file package is published as packages/<name>/<version>/<filename>.
  std::string file = tmp_.path() + "/empty.cfg";
  testing::WriteFile(file, "", 0644);
  auto m = testing::ManifestOf(file, "cfg", "7");
  ASSERT_EQ(m.chunks_size(), 0);
  StageAndPublish(m, file, /*single_file=*/true);
  std::string published = root_ + "/packages/cfg/7/empty.cfg";
  EXPECT_TRUE(std::filesystem::is_regular_file(published));
  EXPECT_EQ(testing::ReadFile(published), "");
  EXPECT_EQ(testing::ModeOf(published), 0644u);
}

TEST_F(PackageStoreTest, PublishRefusesANameVersionPublishedWithOtherContent) {
  // Two packages with one name@version and different ids: the second is ALREADY_EXISTS.
  std::string a = MakeTree("a", "tool A");
  std::string b = MakeTree("b", "tool B");
  StageAndPublish(testing::ManifestOf(a, "app", "1.0", kChunk), a);
  auto mb = testing::ManifestOf(b, "app", "1.0", kChunk);
  auto staging = Stage(mb, b);
  absl::Status s = store_->Publish(*staging, PackageId(mb));
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  EXPECT_EQ(testing::ReadFile(root_ + "/packages/app/1.0/bin/tool"), "tool A");
}

TEST_F(PackageStoreTest, RemoveDeletesThePublishedTreeIndexAndStagingIdempotently) {
  // Remove takes the tree, the index entry and partial staging; a second Remove is a no-op.
  std::string src = MakeTree("src");
  auto m1 = testing::ManifestOf(src, "app", "1.0", kChunk);
  StageAndPublish(m1, src);
  testing::WriteFile(src + "/bin/tool", "tool v2", 0755);
  auto m2 = testing::ManifestOf(src, "app", "2.0", kChunk);
  ASSERT_TRUE(store_->OpenStaging(m2, PackageId(m2)).ok());

  auto removed = store_->Remove("app", "1.0", absl::Seconds(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_TRUE(*removed);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/packages/app"));
  EXPECT_FALSE(std::filesystem::exists(root_ + "/index/app@1.0"));
  EXPECT_FALSE(store_->PublishedId("app", "1.0")->has_value());
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/trash"));
  EXPECT_TRUE(std::filesystem::exists(root_ + "/staging/" + PackageIdHex(m2)));

  EXPECT_TRUE(*store_->Remove("app", "2.0", absl::Seconds(1)));
  EXPECT_FALSE(std::filesystem::exists(root_ + "/staging/" + PackageIdHex(m2)));
  EXPECT_FALSE(*store_->Remove("app", "2.0", absl::Seconds(1)));
}

TEST_F(PackageStoreTest, InventoryListsPublishedAndPartialPackages) {
  // Published packages report their size; partial ones the durable chunks and bytes they hold.
  std::string src = MakeTree("src");
  auto m1 = testing::ManifestOf(src, "app", "1.0", kChunk);
  StageAndPublish(m1, src);
  auto m2 = testing::ManifestOf(src, "app", "2.0", kChunk);
  {
    auto staging = store_->OpenStaging(m2, PackageId(m2));
    ASSERT_TRUE(staging.ok());
    ASSERT_TRUE((*staging)->WriteChunk(1, testing::ChunkData(m2, src, 1)).ok());
    ASSERT_TRUE((*staging)->Flush().ok());
  }
  auto inv = store_->Inventory();
  ASSERT_TRUE(inv.ok()) << inv.status();
  ASSERT_EQ(inv->published_size(), 1);
  EXPECT_EQ(inv->published(0).name(), "app");
  EXPECT_EQ(inv->published(0).version(), "1.0");
  EXPECT_EQ(inv->published(0).package_id(), PackageId(m1));
  EXPECT_EQ(inv->published(0).size(), m1.total_size());
  ASSERT_EQ(inv->partial_size(), 1);
  const auto& p = inv->partial(0);
  EXPECT_EQ(p.version(), "2.0");
  EXPECT_EQ(p.chunks_total(), static_cast<uint32_t>(m2.chunks_size()));
  EXPECT_EQ(p.chunks_have(), 1u);
  EXPECT_EQ(p.bytes_have(), m2.chunks(1).length());
  EXPECT_EQ(p.bytes_total(), m2.total_size());
}

TEST_F(PackageStoreTest, RefusesAPackageThatDoesNotFitWithTheReserve) {
  // Missing bytes plus the reserve must fit in free space; the error names both numbers.
  free_bytes_ = 5000;
  EXPECT_TRUE(store_->CheckFreeSpace(4000).ok());
  absl::Status s = store_->CheckFreeSpace(4001);
  EXPECT_TRUE(absl::IsResourceExhausted(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("4001"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("1000"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("5000"));
}

TEST_F(PackageStoreTest, ReusesChunksOfAPublishedVersion) {
  // A new version receives only chunks no published package already holds.
  std::string src = MakeTree("src");
  StageAndPublish(testing::ManifestOf(src, "app", "1.0", kChunk), src);
  testing::WriteFile(src + "/bin/tool", "tool v2", 0755);
  auto m2 = testing::ManifestOf(src, "app", "2.0", kChunk);
  auto staging = store_->OpenStaging(m2, PackageId(m2));
  ASSERT_TRUE(staging.ok());
  std::vector<uint32_t> local = store_->LocalChunks(**staging);
  EXPECT_EQ(local.size(), static_cast<size_t>(m2.chunks_size() - 1));
  int flushes = 0;
  auto failed = store_->CopyLocalChunks(**staging, local, [&] {
    ++flushes;
    return (*staging)->StartFlush();
  });
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_THAT(*failed, ElementsAre());
  EXPECT_GE(flushes, 1);
  ASSERT_TRUE((*staging)->Collect(Staging::Await::kAll).ok());
  EXPECT_THAT((*staging)->Missing(), ElementsAre(0));  // bin/tool is the first file
  EXPECT_EQ((*staging)->durable_count(), static_cast<uint32_t>(m2.chunks_size() - 1));
}

TEST_F(PackageStoreTest, ReusesChunksOfAnyPackageNameAndOfStagedTransfers) {
  // The chunk store spans names: another package holding the same file
  // serves it, and so do the written chunks of a transfer not finished.
  std::string src = MakeTree("src");
  StageAndPublish(testing::ManifestOf(src, "app", "1.0", kChunk), src);
  std::string other = tmp_.path() + "/other";
  testing::WriteFile(other + "/readme.txt", testing::Pattern(3 * kChunk + 5, 'r'), 0644);
  testing::WriteFile(other + "/fresh", testing::Pattern(2 * kChunk, 'f'), 0644);
  auto mo = testing::ManifestOf(other, "docs", "7", kChunk);
  auto staging = store_->OpenStaging(mo, PackageId(mo));
  ASSERT_TRUE(staging.ok());
  // Files in order: fresh (chunks 0-1), readme.txt (2-5), which app@1.0 holds.
  EXPECT_THAT(store_->LocalChunks(**staging), ElementsAre(2, 3, 4, 5));
  // Half of "fresh" arrives, then the transfer stops (staged, not published).
  ASSERT_TRUE((*staging)->WriteChunk(0, testing::ChunkData(mo, other, 0)).ok());
  ASSERT_TRUE((*staging)->Flush().ok());
  staging->reset();
  testing::WriteFile(other + "/copy", testing::Pattern(2 * kChunk, 'f'), 0644);
  auto mc = testing::ManifestOf(other, "docs-copy", "1", kChunk);
  auto second = store_->OpenStaging(mc, PackageId(mc));
  ASSERT_TRUE(second.ok());
  std::vector<uint32_t> local = store_->LocalChunks(**second);
  auto failed = store_->CopyLocalChunks(**second, local, [&] { return (*second)->StartFlush(); });
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_TRUE((*second)->Collect(Staging::Await::kAll).ok());
  // Files in order: copy (0-1), fresh (2-3), readme.txt (4-7). copy's and
  // fresh's first chunk was staged by docs@7 and is reused; their second was
  // never written there (zeros on disk), so it fails its hash; readme.txt
  // comes from app@1.0.
  EXPECT_THAT(*failed, ElementsAre(1, 3));
  for (uint32_t i : {0, 2, 4, 5, 6, 7}) EXPECT_TRUE((*second)->IsDurable(i)) << i;
}

TEST_F(PackageStoreTest, ADamagedLocalCopyIsNeededAgainAndARemovedPackageIsForgotten) {
  // The index is a hint: bytes changed on disk fail their hash and the chunk
  // is reported as needed; a removed package's chunks leave the index.
  std::string src = MakeTree("src");
  auto m1 = testing::ManifestOf(src, "app", "1.0", kChunk);
  StageAndPublish(m1, src);
  std::string readme = store_->PackageDir("app", "1.0") + "/share/doc/deep/readme.txt";
  ASSERT_EQ(::chmod(readme.c_str(), 0644), 0);
  {
    auto fd = OpenFile(readme, O_WRONLY);
    ASSERT_TRUE(fd.ok()) << fd.status();
    ASSERT_EQ(::pwrite(fd->get(), "XXXX", 4, kChunk + 10), 4);  // the second chunk of readme
  }
  auto m2 = testing::ManifestOf(src, "app-copy", "1", kChunk);
  auto staging = store_->OpenStaging(m2, PackageId(m2));
  ASSERT_TRUE(staging.ok());
  std::vector<uint32_t> local = store_->LocalChunks(**staging);
  ASSERT_EQ(local.size(), static_cast<size_t>(m2.chunks_size()));
  auto failed = store_->CopyLocalChunks(**staging, local, [&] { return (*staging)->StartFlush(); });
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_EQ(failed->size(), 1u);
  const auto& bad = m2.chunks(static_cast<int>((*failed)[0]));
  EXPECT_EQ(m2.files(static_cast<int>(bad.file())).path(), "share/doc/deep/readme.txt");
  EXPECT_EQ(bad.offset(), kChunk);
  staging->reset();

  size_t before = store_->chunk_index().source_count();
  ASSERT_TRUE(store_->Remove("app", "1.0", absl::Seconds(5)).ok());
  EXPECT_EQ(store_->chunk_index().source_count(), before - 1);
  auto again = store_->OpenStaging(m2, PackageId(m2));
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(store_->LocalChunks(**again), ElementsAre());  // only its own staging holds them
}

TEST_F(PackageStoreTest, TheChunkIndexIsRebuiltFromTheManifestsOnOpen) {
  // Persistent through the manifests: a restarted agent still reuses.
  std::string src = MakeTree("src");
  StageAndPublish(testing::ManifestOf(src, "app", "1.0", kChunk), src);
  size_t chunks = store_->chunk_index().chunk_count();
  ASSERT_GT(chunks, 0u);
  store_.reset();
  store_ = OpenStore();
  EXPECT_EQ(store_->chunk_index().chunk_count(), chunks);
  auto m2 = testing::ManifestOf(src, "other", "1", kChunk);
  auto staging = store_->OpenStaging(m2, PackageId(m2));
  ASSERT_TRUE(staging.ok());
  EXPECT_EQ(store_->LocalChunks(**staging).size(), static_cast<size_t>(m2.chunks_size()));
}

TEST_F(PackageStoreTest, OpenRemovesStagingLeftOverFromAnInterruptedPublish) {
  // A staging directory whose package is already published (crash after the rename) is dropped.
  std::string src = MakeTree("src");
  auto m = testing::ManifestOf(src, "app", "1.0", kChunk);
  StageAndPublish(m, src);
  std::string leftover = root_ + "/staging/" + PackageIdHex(m);
  ASSERT_TRUE(MakeDirs(leftover).ok());
  ASSERT_TRUE(WriteFileAtomic(leftover + "/manifest.pb", m.SerializeAsString()).ok());
  ASSERT_TRUE(MakeDirs(root_ + "/trash/old/dir").ok());
  store_.reset();
  store_ = OpenStore();
  EXPECT_FALSE(std::filesystem::exists(leftover));
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/trash"));
  EXPECT_TRUE(store_->PublishedId("app", "1.0")->has_value());
}

TEST_F(PackageStoreTest, AnIndexEntryWithoutItsTreeIsNotPublished) {
  // Publication needs both the tree and the index naming the id (a crash before the rename).
  std::string src = MakeTree("src");
  auto m = testing::ManifestOf(src, "app", "1.0", kChunk);
  testing::WriteFile(root_ + "/index/app@1.0", PackageIdHex(m) + "\n");
  EXPECT_FALSE(store_->PublishedId("app", "1.0")->has_value());
  StageAndPublish(m, src);
  EXPECT_TRUE(store_->PublishedId("app", "1.0")->has_value());
}

}  // namespace
}  // namespace pkgdist
