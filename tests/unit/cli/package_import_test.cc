#include "controller/cli/package_import.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "shared/file_util.h"
#include "shared/manifest.h"
#include "tests/unit/cli/fake_admin.h"

namespace pkgdist::cli {
namespace {

using pkgdist::v1::ENTRY_TYPE_DIRECTORY;
using pkgdist::v1::ENTRY_TYPE_FILE;
using pkgdist::v1::ENTRY_TYPE_SYMLINK;

class PackageImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::Create("cli-import");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    root_ = dir_->path() + "/pkg";
    ASSERT_TRUE(MakeDirs(root_).ok());
  }
  void Write(const std::string& rel, const std::string& content) {
    ASSERT_TRUE(WriteFileAtomic(root_ + "/" + rel, content).ok());
  }
  void Mkdir(const std::string& rel) { ASSERT_TRUE(MakeDirs(root_ + "/" + rel).ok()); }

  std::optional<TempDir> dir_;
  std::string root_;
};

TEST_F(PackageImportTest, OrderMatchesTheControllersManifest) {
  // Entries come in the order BuildManifestFromPath lists them.
  Mkdir("b/z");
  Mkdir("a");
  Mkdir("B");
  Write("b/z/f", "1");
  Write("b/y", "22");
  Write("a.txt", "333");
  Write("a/x", "");
  Write("_", "u");
  ASSERT_EQ(::symlink("b/y", (root_ + "/link").c_str()), 0);
  auto items = CollectImportItems(root_);
  ASSERT_TRUE(items.ok()) << items.status();
  auto manifest = BuildManifestFromPath(root_, "app", "1.0");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_EQ(items->size(), static_cast<size_t>(manifest->files_size()));
  for (size_t i = 0; i < items->size(); ++i) {
    const auto& f = manifest->files(static_cast<int>(i));
    const auto& e = (*items)[i].entry;
    EXPECT_EQ(e.path(), f.path()) << i;
    EXPECT_EQ(e.type(), f.type()) << f.path();
    EXPECT_EQ(e.mode(), f.mode()) << f.path();
    EXPECT_EQ(e.size(), f.size()) << f.path();
    EXPECT_EQ(e.link_target(), f.link_target()) << f.path();
  }
  EXPECT_EQ(TotalImportBytes(*items), 7u);
}

TEST_F(PackageImportTest, SingleFileIsOneEntryNamedByItsBasename) {
  // A regular file as PATH is a package of that one file.
  Write("tool.bin", "abc");
  auto items = CollectImportItems(root_ + "/tool.bin");
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 1u);
  EXPECT_EQ((*items)[0].entry.path(), "tool.bin");
  EXPECT_EQ((*items)[0].entry.type(), ENTRY_TYPE_FILE);
  EXPECT_EQ((*items)[0].entry.size(), 3u);
}

TEST_F(PackageImportTest, RefusesAFifoNamingIt) {
  // A FIFO cannot be packaged; the error names its path.
  Mkdir("d");
  ASSERT_EQ(::mkfifo((root_ + "/d/pipe").c_str(), 0644), 0);
  auto items = CollectImportItems(root_);
  ASSERT_FALSE(items.ok());
  EXPECT_EQ(items.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(items.status().message().find(root_ + "/d/pipe"), absl::string_view::npos)
      << items.status();
}

TEST_F(PackageImportTest, MissingPathIsNotFound) {
  // A PATH that does not exist is reported as such.
  auto items = CollectImportItems(root_ + "/absent");
  EXPECT_EQ(items.status().code(), absl::StatusCode::kNotFound) << items.status();
}

TEST_F(PackageImportTest, UploadSendsHeaderEntriesPiecesAndEnd) {
  // The stream is header, then entry + content pieces of at most 1 MiB each, then end.
  std::string big(2 * kImportPieceBytes + 123, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  Mkdir("d");
  Write("d/big", big);
  Write("small", "hi");
  ASSERT_EQ(::symlink("d/big", (root_ + "/ln").c_str()), 0);
  auto items = CollectImportItems(root_);
  ASSERT_TRUE(items.ok()) << items.status();

  testing::FakeAdminServer server;
  std::vector<uint64_t> progress;
  auto info = UploadPackage(server.client(), "app", "1.0", *items,
                            [&](uint64_t sent) { progress.push_back(sent); });
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->name(), "app");
  EXPECT_EQ(info->size(), big.size() + 2);

  auto uploads = server.admin().WaitForUploads(1);
  const auto& reqs = uploads[0].requests;
  ASSERT_TRUE(uploads[0].ended);
  ASSERT_EQ(reqs.size(), 1u + 1 + 1 + 3 + 1 + 1 + 1 + 1);
  EXPECT_EQ(reqs[0].header().name(), "app");
  EXPECT_EQ(reqs[0].header().version(), "1.0");
  EXPECT_EQ(reqs[1].entry().path(), "d");
  EXPECT_EQ(reqs[1].entry().type(), ENTRY_TYPE_DIRECTORY);
  EXPECT_EQ(reqs[2].entry().path(), "d/big");
  EXPECT_EQ(reqs[2].entry().size(), big.size());
  std::string received;
  for (int i = 3; i < 6; ++i) {
    ASSERT_TRUE(reqs[i].has_data()) << i;
    EXPECT_LE(reqs[i].data().data().size(), kImportPieceBytes);
    received += reqs[i].data().data();
  }
  EXPECT_EQ(received, big);
  EXPECT_EQ(reqs[6].entry().path(), "ln");
  EXPECT_EQ(reqs[6].entry().type(), ENTRY_TYPE_SYMLINK);
  EXPECT_EQ(reqs[6].entry().link_target(), "d/big");
  EXPECT_EQ(reqs[7].entry().path(), "small");
  EXPECT_EQ(reqs[8].data().data(), "hi");
  EXPECT_TRUE(reqs[9].has_end());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), big.size() + 2);
}

TEST_F(PackageImportTest, FileThatShrankCancelsTheUpload) {
  // A file shorter than when it was listed aborts the upload: no ImportEnd is sent.
  Write("f", std::string(1000, 'x'));
  auto items = CollectImportItems(root_);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(::truncate((root_ + "/f").c_str(), 10), 0);

  testing::FakeAdminServer server;
  auto info = UploadPackage(server.client(), "app", "1.0", *items);
  EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << info.status();
  EXPECT_NE(info.status().message().find(root_ + "/f"), absl::string_view::npos);
  auto uploads = server.admin().WaitForUploads(1);
  EXPECT_FALSE(uploads[0].ended);
}

}  // namespace
}  // namespace pkgdist::cli
