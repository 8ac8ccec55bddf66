// Helpers shared by the agent's unit tests: temporary directories, files
// and manifests built from real trees.
#ifndef PKGDIST_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_
#define PKGDIST_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_

#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/file_util.h"
#include "shared/manifest.h"
#include "shared/sha256.h"

namespace pkgdist::testing {

// A fresh temporary directory, removed at the end of the test.
inline TempDir MakeTempDir() {
  auto dir = TempDir::Create("pkgdist-agent-test");
  EXPECT_TRUE(dir.ok()) << dir.status();
  return std::move(dir).value();
}

// Writes `content` to `path` (creating parents) with `mode`.
inline void WriteFile(const std::string& path, absl::string_view content, mode_t mode = 0644) {
  size_t slash = path.rfind('/');
  ASSERT_TRUE(MakeDirs(path.substr(0, slash)).ok());
  ASSERT_TRUE(WriteFileAtomic(path, content).ok());
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

inline std::string ReadFile(const std::string& path) {
  auto data = ReadFileToString(path);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? *data : "";
}

// `n` bytes of deterministic, position-dependent content.
inline std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 31 + i / 251);
  return s;
}

inline pkgdist::v1::Manifest ManifestOf(const std::string& path, const std::string& name,
                                        const std::string& version,
                                        uint32_t chunk_size = kDefaultChunkSize) {
  auto m = BuildManifestFromPath(path, name, version, {}, chunk_size);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : pkgdist::v1::Manifest();
}

// The bytes of chunk `index` of `m`, read from the source tree at `src`
// (a directory, or for a single-file package the file itself).
inline std::string ChunkData(const pkgdist::v1::Manifest& m, const std::string& src,
                             uint32_t index, bool single_file = false) {
  const auto& c = m.chunks(static_cast<int>(index));
  std::string path = single_file ? src : src + "/" + m.files(static_cast<int>(c.file())).path();
  return ReadFile(path).substr(c.offset(), c.length());
}

inline std::vector<Digest> HashesOf(const pkgdist::v1::Manifest& m) {
  std::vector<Digest> out(static_cast<size_t>(m.chunks_size()));
  for (int i = 0; i < m.chunks_size(); ++i) {
    std::copy(m.chunks(i).sha256().begin(), m.chunks(i).sha256().end(),
              out[static_cast<size_t>(i)].begin());
  }
  return out;
}

inline mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

}  // namespace pkgdist::testing

#endif  // PKGDIST_TESTS_UNIT_AGENT_AGENT_TEST_UTIL_H_
