// PackageStore::ImportLocal and its path checks (ResolveImportPath): what
// `pkgdistctl package import --local` does on the controller's host.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "controller/cli/package_import.h"
#include "controller/package_store.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace pkgdist {
namespace {

namespace fs = std::filesystem;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

std::string ReadAll(const std::string& path) {
  auto s = ReadFileToString(path);
  return s.ok() ? *s : "<unreadable>";
}

class LocalImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tmp = TempDir::Create("local-import-test");
    ASSERT_TRUE(tmp.ok());
    tmp_ = std::make_unique<TempDir>(*std::move(tmp));
    root_ = tmp_->path() + "/builds";
    state_ = tmp_->path() + "/state";
    ASSERT_TRUE(MakeDirs(root_ + "/app/bin").ok());
    WriteFile(root_ + "/app/bin/tool", RandomBytes(3 << 20, 1));  // several chunks
    ::chmod((root_ + "/app/bin/tool").c_str(), 0755);
    WriteFile(root_ + "/app/README", "hello\n");
    WriteFile(root_ + "/app/empty", "");
    ASSERT_EQ(::symlink("bin/tool", (root_ + "/app/tool").c_str()), 0);
    WriteFile(tmp_->path() + "/secret.key", "private");
    auto roots = ResolveImportRoots({root_});
    ASSERT_TRUE(roots.ok()) << roots.status();
    roots_ = *roots;
    auto store = PackageStore::Open(state_, ManifestLimits{}, Chunking::ContentDefined(), roots_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // The manifest a streamed import of `path` builds (the entries
  // pkgdistctl sends, through the same kind of session).
  pkgdist::v1::Manifest Streamed(const std::string& path) {
    auto items = cli::CollectImportItems(path);
    EXPECT_TRUE(items.ok()) << items.status();
    auto session = store_->BeginImport();
    EXPECT_TRUE(session.ok());
    pkgdist::v1::ImportPackageRequest m;
    m.mutable_header()->set_name("app");
    m.mutable_header()->set_version("1");
    EXPECT_TRUE((*session)->Add(m).ok());
    for (const auto& item : *items) {
      m.Clear();
      *m.mutable_entry() = item.entry;
      EXPECT_TRUE((*session)->Add(m).ok());
      if (item.entry.type() != pkgdist::v1::ENTRY_TYPE_FILE || item.entry.size() == 0) continue;
      m.Clear();
      m.mutable_data()->set_data(ReadAll(item.disk_path));
      EXPECT_TRUE((*session)->Add(std::move(m)).ok());
    }
    m.Clear();
    m.mutable_end();
    EXPECT_TRUE((*session)->Add(m).ok());
    auto manifest = (*session)->Finish();
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    return manifest.ok() ? *manifest : pkgdist::v1::Manifest();
  }

  bool UploadsEmpty() const { return fs::is_empty(state_ + "/uploads"); }

  std::unique_ptr<TempDir> tmp_;
  std::string root_, state_;
  ImportRoots roots_;
  std::unique_ptr<PackageStore> store_;
};

TEST_F(LocalImportTest, APathInsideARootResolves) {
  // A path under the root, also through a ".." that stays inside.
  auto p = ResolveImportPath(root_ + "/app/bin/../README", roots_);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, fs::canonical(root_ + "/app/README").string());
  EXPECT_TRUE(ResolveImportPath(root_, roots_).ok());
}

TEST_F(LocalImportTest, APathOutsideEveryRootIsPermissionDeniedNamingPathAndRoots) {
  // The state dir's sibling secret is outside the root.
  auto p = ResolveImportPath(tmp_->path() + "/secret.key", roots_);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(p.status().message().find(tmp_->path() + "/secret.key"), std::string::npos);
  EXPECT_NE(p.status().message().find(root_), std::string::npos);
  // A sibling whose name merely starts like the root is outside too.
  ASSERT_TRUE(MakeDirs(root_ + "-other").ok());
  EXPECT_EQ(ResolveImportPath(root_ + "-other", roots_).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(LocalImportTest, DotDotReachingOutsideIsPermissionDenied) {
  // Lexically outside: refused before the filesystem is asked.
  auto p = ResolveImportPath(root_ + "/app/../../secret.key", roots_);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied) << p.status();
}

TEST_F(LocalImportTest, ASymlinkReachingOutsideIsPermissionDenied) {
  // Inside as written, outside once resolved; the import is refused too
  // and leaves nothing.
  ASSERT_EQ(::symlink(tmp_->path().c_str(), (root_ + "/escape").c_str()), 0);
  auto p = ResolveImportPath(root_ + "/escape/secret.key", roots_);
  ASSERT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied) << p.status();
  EXPECT_NE(p.status().message().find("symlink"), std::string::npos);
  auto imported = store_->ImportLocal(root_ + "/escape", "x", "1");
  EXPECT_EQ(imported.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(UploadsEmpty());
}

TEST_F(LocalImportTest, NoImportRootIsFailedPrecondition) {
  // A controller without --import-root refuses every local import.
  auto p = ResolveImportPath(root_ + "/app", ImportRoots{});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(p.status().message().find("--import-root"), std::string::npos);
}

TEST_F(LocalImportTest, RelativePathOrMissingRootIsRefused) {
  // Relative paths are INVALID_ARGUMENT; a root that does not exist stops the flag.
  EXPECT_EQ(ResolveImportPath("app", roots_).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveImportPath(root_ + "/missing", roots_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveImportRoots({tmp_->path() + "/none"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveImportRoots({"relative"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LocalImportTest, ImportedTreeIsIdenticalAndHasTheStreamedImportsId) {
  // Same bytes, modes and symlinks; same manifest as a streamed import.
  auto local = store_->ImportLocal(root_ + "/app", "app", "1");
  ASSERT_TRUE(local.ok()) << local.status();
  pkgdist::v1::Manifest streamed = Streamed(root_ + "/app");
  EXPECT_EQ(PackageIdHex(local->manifest), PackageIdHex(streamed));
  EXPECT_EQ(local->manifest.files_size(), 5);  // bin, bin/tool, README, empty, tool
  std::string id = PackageIdHex(local->manifest);
  ASSERT_TRUE(store_->Commit(*local->session, id).ok());
  local->session.reset();
  std::string tree = store_->TreeOf(id);
  EXPECT_EQ(ReadAll(tree + "/bin/tool"), ReadAll(root_ + "/app/bin/tool"));
  EXPECT_EQ(ReadAll(tree + "/README"), "hello\n");
  EXPECT_EQ(ReadAll(tree + "/empty"), "");
  EXPECT_EQ(fs::read_symlink(tree + "/tool").string(), "bin/tool");
  EXPECT_TRUE(UploadsEmpty());
}

TEST_F(LocalImportTest, ASingleFileIsOneEntryNamedByItsBasename) {
  // As pkgdistctl names it.
  auto local = store_->ImportLocal(root_ + "/app/README", "readme", "1");
  ASSERT_TRUE(local.ok()) << local.status();
  ASSERT_EQ(local->manifest.files_size(), 1);
  EXPECT_EQ(local->manifest.files(0).path(), "README");
}

TEST_F(LocalImportTest, AFailureLeavesNothingUnderUploads) {
  // A FIFO in the tree (after good files were copied) fails the import,
  // naming it; the upload is gone.
  ASSERT_EQ(::mkfifo((root_ + "/app/zz-fifo").c_str(), 0644), 0);
  auto local = store_->ImportLocal(root_ + "/app", "app", "1");
  ASSERT_EQ(local.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(local.status().message().find("zz-fifo"), std::string::npos);
  EXPECT_TRUE(UploadsEmpty());
}

TEST_F(LocalImportTest, ASymlinkLeavingTheTreeIsRefusedAndLeavesNothing) {
  // The same check as a streamed import: the link is never followed.
  ASSERT_EQ(::symlink("../../secret.key", (root_ + "/app/leak").c_str()), 0);
  auto local = store_->ImportLocal(root_ + "/app", "app", "1");
  EXPECT_EQ(local.status().code(), absl::StatusCode::kInvalidArgument) << local.status();
  EXPECT_TRUE(UploadsEmpty());
}

TEST_F(LocalImportTest, LimitsApply) {
  // --max-files counts local entries as it counts streamed ones.
  ManifestLimits limits;
  limits.max_files = 2;
  auto store = PackageStore::Open(state_, limits, Chunking::ContentDefined(), roots_);
  ASSERT_TRUE(store.ok());
  auto local = (*store)->ImportLocal(root_ + "/app", "app", "1");
  EXPECT_EQ(local.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(local.status().message().find("max_files"), std::string::npos);
  EXPECT_TRUE(UploadsEmpty());
}

TEST_F(LocalImportTest, AFileThatChangesWhileImportedIsRefused) {
  // AddLocalFile compares the source's size and mtime after hashing the
  // copy; a file that grew since its entry was made is named.
  auto session = store_->BeginImport();
  ASSERT_TRUE(session.ok());
  pkgdist::v1::ImportPackageRequest m;
  m.mutable_header()->set_name("app");
  m.mutable_header()->set_version("1");
  ASSERT_TRUE((*session)->Add(m).ok());
  std::string path = root_ + "/app/README";
  pkgdist::v1::ImportEntry e;
  e.set_path("README");
  e.set_type(pkgdist::v1::ENTRY_TYPE_FILE);
  e.set_size(6);
  WriteFile(path, "hello, longer\n");
  UniqueFd fd(::open(path.c_str(), O_RDONLY));
  absl::Status s = (*session)->AddLocalFile(e, fd.get(), path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(path), std::string::npos);
  session->reset();
  EXPECT_TRUE(UploadsEmpty());
}

}  // namespace
}  // namespace pkgdist
