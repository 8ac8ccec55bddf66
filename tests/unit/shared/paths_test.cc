#include "shared/paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "shared/manifest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

struct PathCase {
  std::string path;
  const char* why;  // a substring of the error
};

class BadRelativePathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(BadRelativePathTest, IsRejectedWithAClearMessage) {
  // Every path that could leave the package or is not normalised is refused, naming it.
  const PathCase& c = GetParam();
  absl::Status s = ValidateRelativePath(c.path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.path;
  EXPECT_THAT(s.message(), HasSubstr(c.why));
  EXPECT_THAT(s.message(), HasSubstr("path \""));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadRelativePathTest,
    ::testing::Values(PathCase{"..", "'..'"}, PathCase{"../etc/passwd", "'..'"},
                      PathCase{"a/../../b", "'..'"}, PathCase{"a/..", "'..'"},
                      PathCase{"/etc/passwd", "absolute"}, PathCase{"/", "absolute"},
                      PathCase{"", "empty path"}, PathCase{"a//b", "empty component"},
                      PathCase{"a/", "empty component"}, PathCase{".", "'.'"},
                      PathCase{"a/./b", "'.'"}, PathCase{std::string("a\0b", 3), "NUL"},
                      PathCase{std::string("\0", 1), "NUL"},
                      PathCase{std::string(4097, 'a'), "longer than 4096"},
                      PathCase{std::string(256, 'c'), "component longer than 255"},
                      PathCase{"a/" + std::string(256, 'c') + "/b", "component longer than 255"}));

// 17 components of 240 bytes and 16 slashes: exactly 4096 bytes.
std::string LongestPath() {
  std::string p(240, 'a');
  for (int i = 1; i < 17; ++i) p += "/" + std::string(240, static_cast<char>('a' + i));
  return p;
}

TEST(RelativePathTest, AcceptsNormalisedRelativePaths) {
  // Ordinary names, including dots inside names and the longest allowed sizes, pass.
  for (const std::string& p :
       {std::string("a"), std::string("a/b/c"), std::string("a..b"), std::string("..."),
        std::string(".hidden"), std::string("dir/.config/x"), std::string("with space"),
        std::string("ünïcödé/ファイル"), std::string(255, 'c'),
        LongestPath()}) {
    absl::Status s = ValidateRelativePath(p);
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(RelativePathTest, HonoursASmallerMaximumLength) {
  // The caller's limit applies instead of the default.
  EXPECT_TRUE(ValidateRelativePath("abcd", 4).ok());
  EXPECT_THAT(ValidateRelativePath("abcde", 4).message(), HasSubstr("longer than 4"));
}

TEST(LinkTargetTest, AcceptsTargetsInsideThePackage) {
  // Relative targets that stay inside the tree, lexically, are fine.
  EXPECT_TRUE(ValidateLinkTarget("link", "file").ok());
  EXPECT_TRUE(ValidateLinkTarget("dir/link", "../file").ok());
  EXPECT_TRUE(ValidateLinkTarget("a/b/link", "../../c/./d").ok());
  EXPECT_TRUE(ValidateLinkTarget("dir/link", "sub/../x").ok());
  EXPECT_TRUE(ValidateLinkTarget("dir/link", ".").ok());
}

TEST(LinkTargetTest, RejectsTargetsLeavingThePackageNamingTheLink) {
  // Absolute targets and targets climbing above the root are refused, naming link and target.
  struct Case {
    const char* link;
    std::string target;
    const char* why;
  };
  for (const Case& c : {Case{"link", "../x", "leaves the package"},
                        Case{"dir/link", "../../x", "leaves the package"},
                        Case{"dir/link", "a/../../../x", "leaves the package"},
                        Case{"link", "/etc/passwd", "absolute"}, Case{"link", "", "empty"},
                        Case{"link", std::string("a\0b", 3), "NUL"},
                        Case{"link", std::string(4097, 'a'), "too long"}}) {
    absl::Status s = ValidateLinkTarget(c.link, c.target);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.link << " -> " << c.target;
    EXPECT_THAT(s.message(), HasSubstr(c.why));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("symlink \"", c.link, "\"")));
  }
}

TEST(NameTest, AcceptsNamesVersionsAndAgentNames) {
  // Letters, digits and . _ + - up to 128 characters.
  for (const std::string& n : {std::string("app"), std::string("1.2.3-rc1+build.5"),
                               std::string("dp_01"), std::string(128, 'x'), std::string("a..b")}) {
    EXPECT_TRUE(ValidateName(n, "name").ok()) << n;
  }
}

TEST(NameTest, RejectsUnsafeNamesNamingTheField) {
  // Empty, too long, dot names, leading dash, separators and other characters are refused.
  for (const std::string& n :
       {std::string(""), std::string(129, 'x'), std::string("."), std::string(".."),
        std::string("-rf"), std::string("a/b"), std::string("a b"), std::string("a\\b"),
        std::string("a:b"), std::string("a\0b", 3), std::string("é")}) {
    absl::Status s = ValidateName(n, "package version");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(s.message(), HasSubstr("package version"));
  }
}

TEST(ParentOfTest, ReturnsTheDirectoryPart) {
  // The part before the last '/', or "" at the top level.
  EXPECT_EQ(ParentOf("a"), "");
  EXPECT_EQ(ParentOf("a/b"), "a");
  EXPECT_EQ(ParentOf("a/b/c"), "a/b");
}

class TreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TempDir> dir = TempDir::Create("paths_test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_.emplace(std::move(*dir));
    root_ = dir_->path() + "/pkg";
    ASSERT_TRUE(MakeDirs(root_ + "/sub").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/sub/file", "data").ok());
    ASSERT_TRUE(WriteFileAtomic(dir_->path() + "/outside", "secret").ok());
  }

  std::optional<TempDir> dir_;
  std::string root_;
};

TEST_F(TreeTest, BuildRefusesAFifoNamingItsPath) {
  // A FIFO cannot be packaged; the error names it.
  const std::string fifo = root_ + "/sub/pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  absl::StatusOr<pkgdist::v1::Manifest> m = BuildManifestFromPath(root_, "app", "1.0");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr(fifo));
  EXPECT_THAT(m.status().message(), HasSubstr("FIFO"));
}

TEST_F(TreeTest, BuildRefusesAnEscapingSymlinkNamingIt) {
  // A relative symlink climbing out of the tree is refused, naming the link.
  ASSERT_EQ(::symlink("../../outside", (root_ + "/sub/escape").c_str()), 0);
  absl::StatusOr<pkgdist::v1::Manifest> m = BuildManifestFromPath(root_, "app", "1.0");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("sub/escape"));
  EXPECT_THAT(m.status().message(), HasSubstr("leaves the package"));
}

TEST_F(TreeTest, BuildRefusesAnAbsoluteSymlinkNamingIt) {
  // An absolute symlink points outside the package whatever its target.
  ASSERT_EQ(::symlink((dir_->path() + "/outside").c_str(), (root_ + "/abs").c_str()), 0);
  absl::StatusOr<pkgdist::v1::Manifest> m = BuildManifestFromPath(root_, "app", "1.0");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("\"abs\""));
  EXPECT_THAT(m.status().message(), HasSubstr("absolute"));
}

TEST_F(TreeTest, BuildKeepsASymlinkInsideTheTreeAsALink) {
  // An inside link is recorded as a link, never followed.
  ASSERT_EQ(::symlink("sub/file", (root_ + "/link").c_str()), 0);
  absl::StatusOr<pkgdist::v1::Manifest> m = BuildManifestFromPath(root_, "app", "1.0");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->files_size(), 3);
  EXPECT_EQ(m->files(0).path(), "link");
  EXPECT_EQ(m->files(0).type(), pkgdist::v1::ENTRY_TYPE_SYMLINK);
  EXPECT_EQ(m->files(0).link_target(), "sub/file");
  EXPECT_EQ(m->total_size(), 4u);
}

}  // namespace
}  // namespace pkgdist
