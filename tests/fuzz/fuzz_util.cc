#include "tests/fuzz/fuzz_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/manifest.h"
#include "shared/sha256.h"

namespace pkgdist::fuzz {
namespace {

using pkgdist::v1::FileEntry;
using pkgdist::v1::Manifest;

// `n` bytes of deterministic content.
std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7 + i / 13);
  return s;
}

struct Spec {
  std::string name, version;
  std::vector<std::string> dirs;
  std::vector<std::pair<std::string, std::string>> files;     // path, content
  std::vector<std::pair<std::string, std::string>> symlinks;  // path, target
};

Package Build(const Spec& spec) {
  ManifestBuilder b(spec.name, spec.version, {}, kFuzzChunkSize);
  Package p;
  auto ok = [](const absl::Status& s) { Check(s.ok(), s.ToString()); };
  for (const auto& d : spec.dirs) ok(b.AddDirectory(d, 0755));
  for (const auto& [path, data] : spec.files) {
    ok(b.BeginFile(path, 0644, data.size()));
    ok(b.Append(data));
    ok(b.EndFile());
    p.content[path] = data;
  }
  for (const auto& [path, target] : spec.symlinks) ok(b.AddSymlink(path, target));
  auto m = b.Finish();
  Check(m.ok(), m.status().ToString());
  p.manifest = *m;
  p.id = PackageId(p.manifest);
  return p;
}

std::vector<Package> MakePackages() {
  std::string tool = Bytes(50, 't');
  std::string tool2 = tool.substr(0, 32) + Bytes(18, 'u');  // first two chunks shared
  std::string block = Bytes(16, 'r');
  return {
      Build({"app", "1.0", {"bin", "etc"},
             {{"etc/app.conf", "key = value\nname=1\n"}, {"bin/tool", tool}},
             {{"current", "bin/tool"}, {"etc/self", "../etc"}}}),
      Build({"app", "1.1", {"bin", "etc"},
             {{"etc/app.conf", "key = value\nname=1\n"}, {"bin/tool", tool2},
              {"bin/extra", Bytes(20, 'x')}},
             {{"current", "bin/tool"}}}),
      Build({"app", "1.0", {"bin"}, {{"bin/tool", Bytes(33, 'o')}}, {}}),
      Build({"empty", "0", {"d"}, {{"d/e", ""}}, {}}),
      Build({"single", "1", {}, {{"single.bin", Bytes(40, 's')}}, {}}),
      Build({"rep", "2", {"a"}, {{"a/r", block + block + block}, {"a/s", block}}, {}}),
  };
}

enum class Step { kContinue, kStop, kEscape };

// Resolves `path` from the directory `stack` through the manifest's
// symlinks; kStop where the kernel would fail (missing entry, a file used
// as a directory, too many links).
Step Resolve(const std::map<std::string, const FileEntry*>& entries,
             std::vector<std::string>& stack, absl::string_view path, int& hops) {
  if (!path.empty() && path.front() == '/') return Step::kEscape;
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  for (size_t i = 0; i < parts.size(); ++i) {
    absl::string_view part = parts[i];
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (stack.empty()) return Step::kEscape;
      stack.pop_back();
      continue;
    }
    stack.emplace_back(part);
    auto it = entries.find(absl::StrJoin(stack, "/"));
    if (it == entries.end()) return Step::kStop;
    bool last = i + 1 == parts.size();
    if (it->second->type() == pkgdist::v1::ENTRY_TYPE_SYMLINK) {
      if (++hops > 40) return Step::kStop;
      stack.pop_back();
      Step s = Resolve(entries, stack, it->second->link_target(), hops);
      if (s != Step::kContinue) return s;
    } else if (it->second->type() != pkgdist::v1::ENTRY_TYPE_DIRECTORY && !last) {
      return Step::kStop;
    }
  }
  return Step::kContinue;
}

}  // namespace

const std::vector<Package>& Packages() {
  static const std::vector<Package>* packages = new std::vector<Package>(MakePackages());
  return *packages;
}

std::string ChunkBytes(const Manifest& m, const std::map<std::string, std::string>& content,
                       uint32_t index) {
  const auto& c = m.chunks(static_cast<int>(index));
  std::string out(c.length(), '\0');
  if (c.file() >= static_cast<uint32_t>(m.files_size())) return out;
  auto it = content.find(m.files(static_cast<int>(c.file())).path());
  if (it == content.end() || c.offset() >= it->second.size()) return out;
  std::string part = it->second.substr(c.offset(), c.length());
  out.replace(0, part.size(), part);
  return out;
}

absl::Status VerifyTree(const std::string& dir, const Manifest& m) {
  std::set<std::string> listed;
  for (const FileEntry& f : m.files()) {
    listed.insert(f.path());
    std::string path = dir + "/" + f.path();
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return absl::NotFoundError(path + " is missing");
    switch (f.type()) {
      case pkgdist::v1::ENTRY_TYPE_FILE: {
        if (!S_ISREG(st.st_mode)) return absl::DataLossError(path + " is not a regular file");
        auto data = ReadFileToString(path);
        if (!data.ok()) return data.status();
        if (data->size() != f.size()) return absl::DataLossError(path + ": wrong size");
        // Content: every chunk of the file (the file digest is a hash of
        // these, checked by ValidateManifest).
        for (const auto& c : m.chunks()) {
          if (m.files(static_cast<int>(c.file())).path() != f.path()) continue;
          if (DigestBytes(Sha256Of(absl::string_view(*data).substr(c.offset(), c.length()))) !=
              c.sha256()) {
            return absl::DataLossError(absl::StrCat(path, ": bytes at ", c.offset(),
                                                    " do not match their chunk"));
          }
        }
        break;
      }
      case pkgdist::v1::ENTRY_TYPE_DIRECTORY:
        if (!S_ISDIR(st.st_mode)) return absl::DataLossError(path + " is not a directory");
        break;
      case pkgdist::v1::ENTRY_TYPE_SYMLINK: {
        if (!S_ISLNK(st.st_mode)) return absl::DataLossError(path + " is not a symlink");
        std::error_code ec;
        if (std::filesystem::read_symlink(path, ec).string() != f.link_target()) {
          return absl::DataLossError(path + ": wrong link target");
        }
        continue;  // symlink modes are meaningless
      }
      default:
        return absl::InvalidArgumentError(path + ": unknown type in manifest");
    }
    if ((st.st_mode & 0777) != (f.mode() & 0777)) {
      return absl::DataLossError(absl::StrCat(path, ": mode ", st.st_mode & 0777, " not ",
                                              f.mode() & 0777));
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::string rel = it->path().lexically_relative(dir).generic_string();
    if (!listed.count(rel)) return absl::DataLossError(dir + " holds unlisted " + rel);
  }
  if (ec) return absl::InternalError(absl::StrCat("walking ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

bool SymlinkEscapes(const Manifest& m, const std::string& link_path) {
  std::map<std::string, const FileEntry*> entries;
  for (const FileEntry& f : m.files()) entries.emplace(f.path(), &f);
  auto it = entries.find(link_path);
  if (it == entries.end()) return false;
  std::vector<std::string> stack;
  absl::string_view parent = link_path;
  size_t slash = parent.rfind('/');
  parent = slash == absl::string_view::npos ? absl::string_view() : parent.substr(0, slash);
  if (!parent.empty()) {
    for (absl::string_view p : absl::StrSplit(parent, '/')) stack.emplace_back(p);
  }
  int hops = 0;
  return Resolve(entries, stack, it->second->link_target(), hops) == Step::kEscape;
}

void Fail(absl::string_view what) {
  std::fprintf(stderr, "fuzz invariant violated: %.*s\n", static_cast<int>(what.size()),
               what.data());
  std::fflush(stderr);
  std::abort();
}

void QuietLogs() { spdlog::set_level(spdlog::level::off); }

}  // namespace pkgdist::fuzz
