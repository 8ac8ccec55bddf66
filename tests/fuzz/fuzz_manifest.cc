// libFuzzer target: manifest validation.
//
// The input is parsed as a pkgdist.v1.Manifest and validated (default limits,
// and tight limits with case-collision refusal); the package id must be
// stable across a serialize/parse round trip, and a manifest that passes
// must hold only paths and link targets that pass on their own and no
// symlink that resolves, through the manifest's other symlinks, outside the
// package. The raw input is also checked as a path and as "link\ntarget"
// against an independent lexical normaliser (std::filesystem).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/manifest.h"
#include "shared/paths.h"
#include "tests/fuzz/fuzz_util.h"

namespace pkgdist::fuzz {
namespace {

using pkgdist::v1::Manifest;

void CheckValidManifest(const Manifest& m) {
  for (const auto& f : m.files()) {
    Check(ValidateRelativePath(f.path()).ok(), "a valid manifest holds an invalid path");
    if (f.type() == pkgdist::v1::ENTRY_TYPE_SYMLINK) {
      Check(ValidateLinkTarget(f.path(), f.link_target()).ok(),
            "a valid manifest holds an invalid link target");
      Check(!SymlinkEscapes(m, f.path()),
            absl::StrCat("a valid manifest holds symlink \"", f.path(), "\" -> \"",
                         f.link_target(), "\" that resolves outside the package"));
    }
  }
  std::string id = PackageId(m);
  Check(id.size() == 32, "package id is not 32 bytes");
  Manifest copy;
  Check(copy.ParseFromString(m.SerializeAsString()), "a valid manifest does not round-trip");
  Check(PackageId(copy) == id, "package id changes across a serialize/parse round trip");
  Check(ValidateManifest(copy).ok(), "a round-tripped valid manifest is invalid");
}

// Where "dir-of(link)/target" lands, normalised; "" for the root.
std::string LexicalTarget(absl::string_view link, absl::string_view target) {
  std::filesystem::path p = std::filesystem::path(std::string(link)).parent_path() /
                            std::filesystem::path(std::string(target));
  return p.lexically_normal().generic_string();
}

void CheckRawStrings(absl::string_view in) {
  if (ValidateRelativePath(in).ok()) {
    std::string norm = std::filesystem::path(std::string(in)).lexically_normal().generic_string();
    Check(norm == in, absl::StrCat("accepted path \"", in, "\" is not normalised (", norm, ")"));
  }
  size_t nl = in.find('\n');
  if (nl == absl::string_view::npos) return;
  absl::string_view link = in.substr(0, nl), target = in.substr(nl + 1);
  if (!ValidateRelativePath(link).ok() || !ValidateLinkTarget(link, target).ok()) return;
  std::string landed = LexicalTarget(link, target);
  Check(landed != ".." && landed.rfind("../", 0) != 0 && landed.rfind('/', 0) != 0,
        absl::StrCat("accepted symlink \"", link, "\" -> \"", target, "\" lands at ", landed));
}

}  // namespace
}  // namespace pkgdist::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pkgdist::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pkgdist;
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  fuzz::CheckRawStrings(in);
  pkgdist::v1::Manifest m;
  if (!m.ParseFromString(std::string(in))) return 0;
  (void)PackageId(m);
  ManifestLimits tight;
  tight.max_files = 8;
  tight.max_total_size = 1 << 12;
  tight.max_path_length = 32;
  tight.refuse_case_collisions = true;
  bool tight_ok = ValidateManifest(m, tight).ok();
  if (ValidateManifest(m).ok()) {
    fuzz::CheckValidManifest(m);
  } else {
    fuzz::Check(!tight_ok, "a manifest valid under tight limits is invalid under the defaults");
  }
  return 0;
}
