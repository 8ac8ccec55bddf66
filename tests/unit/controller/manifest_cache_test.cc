#include "controller/manifest_cache.h"

#include "gtest/gtest.h"

namespace pkgdist {
namespace {

std::shared_ptr<const pkgdist::v1::Manifest> ManifestOf(size_t name_bytes) {
  auto m = std::make_shared<pkgdist::v1::Manifest>();
  m->set_name(std::string(name_bytes, 'n'));
  return m;
}

TEST(ManifestCacheTest, KeepsAtMostItsBoundDroppingTheLeastRecentlyUsed) {
  // Three manifests of ~400 bytes in a 1000-byte cache: the one not used
  // since goes first; what a caller still holds stays valid.
  ManifestCache cache(1000);
  cache.Put("a", ManifestOf(400));
  cache.Put("b", ManifestOf(400));
  auto held = cache.Get("a");  // a is now the most recent
  cache.Put("c", ManifestOf(400));
  EXPECT_NE(cache.Get("a"), nullptr);
  EXPECT_EQ(cache.Get("b"), nullptr);
  EXPECT_NE(cache.Get("c"), nullptr);
  EXPECT_LE(cache.bytes(), 1000u);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(held->name().size(), 400u);
}

TEST(ManifestCacheTest, AManifestLargerThanTheBoundIsNotKept) {
  // It is not cached, and it does not push out what is.
  ManifestCache cache(1000);
  cache.Put("small", ManifestOf(100));
  cache.Put("huge", ManifestOf(5000));
  EXPECT_EQ(cache.Get("huge"), nullptr);
  EXPECT_NE(cache.Get("small"), nullptr);
}

TEST(ManifestCacheTest, PutReplacesAndAccountsOnce) {
  // The same id put twice counts its bytes once.
  ManifestCache cache(1000);
  cache.Put("a", ManifestOf(300));
  size_t once = cache.bytes();
  cache.Put("a", ManifestOf(300));
  EXPECT_EQ(cache.bytes(), once);
  EXPECT_EQ(cache.size(), 1u);
}

}  // namespace
}  // namespace pkgdist
