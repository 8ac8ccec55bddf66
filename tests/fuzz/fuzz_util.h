// Helpers shared by the libFuzzer targets and the seed-corpus generator:
// a fixed set of small, valid packages (manifest + content), an invariant
// check that aborts (so libFuzzer records the input), and tree verification.
#ifndef PKGDIST_TESTS_FUZZ_FUZZ_UTIL_H_
#define PKGDIST_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist::fuzz {

// Chunk size of the fixed packages: small, so a package has several chunks.
inline constexpr uint32_t kFuzzChunkSize = 16;

// A valid package: its manifest, id and the content of each regular file.
struct Package {
  pkgdist::v1::Manifest manifest;
  std::string id;                              // raw 32 bytes
  std::map<std::string, std::string> content;  // path -> bytes
};

// The fixed packages (built once): app@1.0, app@1.1 (shares chunks with
// app@1.0), app@1.0 with other content, an empty package, a single-file
// package, and a package whose chunks repeat.
const std::vector<Package>& Packages();

// The bytes chunk `index` of `m` should hold, cut from `content`; zeros
// where `content` lacks the file (a mutated manifest).
std::string ChunkBytes(const pkgdist::v1::Manifest& m,
                       const std::map<std::string, std::string>& content, uint32_t index);

// Compares the tree at `dir` with `m`: every entry present with its type,
// size, chunk hashes, mode and link target, and nothing else in the tree.
absl::Status VerifyTree(const std::string& dir, const pkgdist::v1::Manifest& m);

// Follows the manifest's own symlinks the way the kernel would and reports
// whether the symlink entry at `link_path` resolves to a place outside the
// package root.
bool SymlinkEscapes(const pkgdist::v1::Manifest& m, const std::string& link_path);

// Fails the run: prints `what` and aborts, so libFuzzer saves the input.
[[noreturn]] void Fail(absl::string_view what);
inline void Check(bool ok, absl::string_view what) {
  if (!ok) Fail(what);
}

// Silences the product's logging (call from LLVMFuzzerInitialize).
void QuietLogs();

}  // namespace pkgdist::fuzz

#endif  // PKGDIST_TESTS_FUZZ_FUZZ_UTIL_H_
