// Which packages this agent may stage and publish, by their release owner's
// signature (shared/signing.h), whatever the controller says.
//
// With --trusted-keys DIR an agent trusts the Ed25519 public keys in DIR
// (every *.pub file), re-read at every check, so adding a key or removing
// one (revocation) takes effect without a restart. It then refuses, with
// FAILED_PRECONDITION naming why:
//   - an unsigned package (unless --require-signatures=false),
//   - a signature by a key not in DIR, or one that does not verify, or that
//     names another package;
//   - before staging or publishing: a signature past its expiry, and a
//     sequence below the highest this agent has published for the name (a
//     replayed old release), or equal to it for other content, unless
//     --allow-rollback names the package.
// The highest sequence published per name is kept in ROOT/signed-sequences,
// written durably before each publication and kept when packages are
// removed, so neither a restart nor a removal reopens a rollback.
//
// Thread-safe.
#ifndef PKGDIST_AGENT_SIGNATURE_POLICY_H_
#define PKGDIST_AGENT_SIGNATURE_POLICY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/signing.h"

namespace pkgdist {

struct SignaturePolicyOptions {
  std::string trusted_keys_dir;  // empty: signatures are not checked
  bool require_signatures = true;
  std::vector<std::string> allow_rollback;  // package names
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

class SignaturePolicy {
 public:
  // `root` is the agent's root. Refuses a missing or unreadable key
  // directory and a damaged ROOT/signed-sequences, saying what to do.
  static absl::StatusOr<std::unique_ptr<SignaturePolicy>> Open(const std::string& root,
                                                               SignaturePolicyOptions options);

  bool enabled() const { return !options_.trusted_keys_dir.empty(); }

  // Whether a package this agent already has published may be reported as
  // such: a signature by a trusted key, if required. Expiry and sequence
  // do not apply, since nothing new would be published.
  absl::Status CheckPublished(const pkgdist::v1::Manifest& m, const std::string& package_id,
                              const pkgdist::v1::PackageSignature& sig);
  // Whether the package may be staged: everything in the header comment.
  absl::Status CheckStage(const pkgdist::v1::Manifest& m, const std::string& package_id,
                          const pkgdist::v1::PackageSignature& sig);
  // The same checks again just before publication (a key may have been
  // removed meanwhile), then records the sequence durably.
  absl::Status CheckAndRecordPublish(const pkgdist::v1::Manifest& m,
                                     const std::string& package_id,
                                     const pkgdist::v1::PackageSignature& sig);

  // The highest sequence recorded for `name`, 0 if none. For tests.
  uint64_t HighestSequence(const std::string& name);

 private:
  struct Record {
    uint64_t sequence = 0;
    std::string package_id_hex;
    std::string version;
  };
  SignaturePolicy(std::string path, SignaturePolicyOptions options)
      : path_(std::move(path)), options_(std::move(options)) {}
  absl::Status Load();
  absl::StatusOr<std::vector<PublicKey>> TrustedKeys() const;
  // Verification; nullopt for an accepted unsigned package.
  absl::StatusOr<std::optional<pkgdist::v1::SignatureBody>> Verify(
      const pkgdist::v1::Manifest& m, const std::string& package_id,
      const pkgdist::v1::PackageSignature& sig) const;
  absl::Status CheckTerms(const pkgdist::v1::SignatureBody& body, const std::string& package_id)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status Save() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;  // ROOT/signed-sequences
  const SignaturePolicyOptions options_;
  absl::flat_hash_set<std::string> rollback_allowed_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Record> highest_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_SIGNATURE_POLICY_H_
