#include "shared/dir_lock.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pkgdist {
namespace {

using ::testing::HasSubstr;

TEST(DirLockTest, ASecondHolderIsRefusedNamingTheFirst) {
  // While one lock is held a second is refused with the holder's pid; once
  // the first is released the directory can be locked again.
  auto dir = TempDir::Create("dir_lock_test");
  ASSERT_TRUE(dir.ok()) << dir.status();
  {
    auto first = DirLock::Acquire(dir->path(), "state directory");
    ASSERT_TRUE(first.ok()) << first.status();
    auto second = DirLock::Acquire(dir->path(), "state directory");
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("pid ", ::getpid())));
    EXPECT_THAT(second.status().message(), HasSubstr("state directory " + dir->path()));
  }
  EXPECT_TRUE(DirLock::Acquire(dir->path(), "state directory").ok());
}

}  // namespace
}  // namespace pkgdist
