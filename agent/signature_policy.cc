#include "agent/signature_policy.h"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shared/clock.h"
#include "shared/file_util.h"
#include "shared/logging.h"
#include "shared/paths.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::Manifest;
using pkgdist::v1::PackageSignature;
using pkgdist::v1::SignatureBody;

constexpr char kHeader[] = "# pkgdist signed-sequences v1: name sequence package-id version";

}  // namespace

absl::StatusOr<std::unique_ptr<SignaturePolicy>> SignaturePolicy::Open(
    const std::string& root, SignaturePolicyOptions options) {
  std::unique_ptr<SignaturePolicy> p(
      new SignaturePolicy(root + "/signed-sequences", std::move(options)));
  for (const std::string& name : p->options_.allow_rollback) {
    RETURN_IF_ERROR(ValidateName(name, "--allow-rollback"));
    p->rollback_allowed_.insert(name);
  }
  RETURN_IF_ERROR(p->Load());
  if (!p->enabled()) return p;
  ASSIGN_OR_RETURN(auto keys, p->TrustedKeys());
  if (keys.empty()) {
    spdlog::warn("no trusted keys in {} yet: every package will be refused until one is added",
                 p->options_.trusted_keys_dir);
  }
  for (const PublicKey& k : keys) spdlog::info("trusting package signing key {} ({})", k.id, k.source);
  spdlog::info("signatures {}", p->options_.require_signatures
                                    ? "required: unsigned packages are refused"
                                    : "checked where present; unsigned packages accepted");
  return p;
}

absl::Status SignaturePolicy::Load() {
  auto text = ReadFileToString(path_);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  absl::MutexLock l(&mu_);
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    ++line_no;
    if (line_no == 1 && line == kHeader) continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    Record r;
    if (f.size() != 4 || !ValidateName(f[0], "name").ok() ||
        !absl::SimpleAtoi(f[1], &r.sequence) || !FromHex(f[2]).has_value() ||
        !ValidateName(f[3], "version").ok()) {
      return absl::DataLossError(absl::StrCat(
          path_, " line ", line_no, " is damaged. It holds the highest signed sequence this agent "
          "published per package name (rollback protection); restore it from a backup, or delete "
          "it to accept any correctly signed version again."));
    }
    r.package_id_hex = f[2];
    r.version = f[3];
    highest_[f[0]] = std::move(r);
  }
  return absl::OkStatus();
}

absl::Status SignaturePolicy::Save() {
  std::string out = absl::StrCat(kHeader, "\n");
  std::vector<std::string> names;
  for (const auto& [name, r] : highest_) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    const Record& r = highest_[name];
    absl::StrAppend(&out, name, " ", r.sequence, " ", r.package_id_hex, " ", r.version, "\n");
  }
  return WriteFileAtomic(path_, out);
}

absl::StatusOr<std::vector<PublicKey>> SignaturePolicy::TrustedKeys() const {
  std::vector<PublicKey> keys;
  std::error_code ec;
  std::vector<std::string> files;
  for (auto it = std::filesystem::directory_iterator(options_.trusted_keys_dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (it->path().extension() == ".pub") files.push_back(it->path().string());
  }
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read the trusted keys in ", options_.trusted_keys_dir, ": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    auto key = LoadPublicKey(f);
    if (!key.ok()) {
      // One bad file must not distrust the others; it is reported each time.
      spdlog::warn("ignoring trusted key {}: {}", f, key.status().message());
      continue;
    }
    keys.push_back(std::move(key).value());
  }
  return keys;
}

absl::StatusOr<std::optional<SignatureBody>> SignaturePolicy::Verify(
    const Manifest& m, const std::string& package_id, const PackageSignature& sig) const {
  const bool unsigned_package = sig.ByteSizeLong() == 0;
  if (unsigned_package && !options_.require_signatures) return std::optional<SignatureBody>();
  ASSIGN_OR_RETURN(auto keys, TrustedKeys());
  ASSIGN_OR_RETURN(SignatureBody body,
                   VerifyPackageSignature(sig, keys, package_id, m.name(), m.version()));
  return std::optional<SignatureBody>(std::move(body));
}

absl::Status SignaturePolicy::CheckTerms(const SignatureBody& body, const std::string& package_id) {
  const std::string label = absl::StrCat(body.name(), "@", body.version());
  int64_t now = absl::ToUnixSeconds(options_.now());
  if (now >= body.expires_unix_seconds()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the signature of ", label, " expired at ", FormatRfc3339(1000 * body.expires_unix_seconds()),
        " (now ", FormatRfc3339(1000 * now), "); the release owner must sign it again"));
  }
  auto it = highest_.find(body.name());
  if (it == highest_.end() || rollback_allowed_.contains(body.name())) return absl::OkStatus();
  const Record& r = it->second;
  if (body.sequence() < r.sequence) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is signed with sequence ", body.sequence(), ", below sequence ", r.sequence,
        " of ", body.name(), "@", r.version,
        " which this agent already published: refused as a rollback (an operator may allow it "
        "with --allow-rollback ", body.name(), ")"));
  }
  if (body.sequence() == r.sequence && ToHex(package_id) != r.package_id_hex) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is signed with sequence ", body.sequence(), ", which ", body.name(), "@",
        r.version, " (other content) already has on this agent: each release needs a higher one"));
  }
  return absl::OkStatus();
}

absl::Status SignaturePolicy::CheckPublished(const Manifest& m, const std::string& package_id,
                                             const PackageSignature& sig) {
  if (!enabled()) return absl::OkStatus();
  return Verify(m, package_id, sig).status();
}

absl::Status SignaturePolicy::CheckStage(const Manifest& m, const std::string& package_id,
                                         const PackageSignature& sig) {
  if (!enabled()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto body, Verify(m, package_id, sig));
  if (!body.has_value()) return absl::OkStatus();
  absl::ReaderMutexLock l(&mu_);
  return CheckTerms(*body, package_id);
}

absl::Status SignaturePolicy::CheckAndRecordPublish(const Manifest& m,
                                                    const std::string& package_id,
                                                    const PackageSignature& sig) {
  if (!enabled()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto body, Verify(m, package_id, sig));
  if (!body.has_value()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  RETURN_IF_ERROR(CheckTerms(*body, package_id));
  auto it = highest_.find(body->name());
  if (it != highest_.end() && it->second.sequence >= body->sequence()) return absl::OkStatus();
  // Recorded before the publication: a crash between the two leaves a
  // sequence no older version can pass, never a published one unrecorded.
  std::optional<Record> before;
  if (it != highest_.end()) before = it->second;
  highest_[body->name()] = Record{body->sequence(), ToHex(package_id), body->version()};
  if (absl::Status s = Save(); !s.ok()) {
    if (before.has_value()) {
      highest_[body->name()] = *before;
    } else {
      highest_.erase(body->name());
    }
    return absl::InternalError(absl::StrCat("recording the signed sequence: ", s.message()));
  }
  return absl::OkStatus();
}

uint64_t SignaturePolicy::HighestSequence(const std::string& name) {
  absl::ReaderMutexLock l(&mu_);
  auto it = highest_.find(name);
  return it == highest_.end() ? 0 : it->second.sequence;
}

}  // namespace pkgdist
