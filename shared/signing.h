// Ed25519 package signatures (RFC 8032, through OpenSSL 3's EVP interface).
//
// A release owner signs a SignatureBody (the package id with a per-name
// sequence and an expiry; pkgdist/v1/manifest.proto) with a private key the
// controller never holds. Agents verify it with public keys they are
// configured to trust (agent/signature_policy.h). The signed message is
//
//   "pkgdist package signature v1" || 0x00 || serialized SignatureBody
//
// so a signature made for anything else can never pass for one of these.
// Keys are PEM files: the private key PKCS#8 (mode 0600), the public key
// SubjectPublicKeyInfo; `pkgdistctl key generate` makes a pair.
#ifndef PKGDIST_SHARED_SIGNING_H_
#define PKGDIST_SHARED_SIGNING_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "pkgdist/v1/manifest.pb.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace pkgdist {

inline constexpr absl::string_view kSignatureContext = "pkgdist package signature v1";
inline constexpr size_t kEd25519KeyBytes = 32;
inline constexpr size_t kEd25519SignatureBytes = 64;

// The key id of a raw 32-byte public key: the first 16 hex digits of its
// sha256.
std::string KeyId(absl::string_view raw_public_key);

// Ed25519 over raw bytes, for the known-answer tests and the code below.
// `seed` is the 32-byte private key of RFC 8032.
absl::StatusOr<std::string> Ed25519Sign(absl::string_view seed, absl::string_view message);
bool Ed25519Verify(absl::string_view raw_public_key, absl::string_view message,
                   absl::string_view signature);

struct PublicKey {
  std::string id;
  std::string raw;     // 32 bytes
  std::string source;  // the file it came from, for messages
};

// A private key, loaded once and used for any number of signatures.
class SigningKey {
 public:
  // Reads a PEM private key. Refuses a file that is not Ed25519, and one
  // that group or others may read (like ssh), naming the file.
  static absl::StatusOr<SigningKey> Load(const std::string& path);
  static absl::StatusOr<SigningKey> FromSeed(absl::string_view seed);

  const PublicKey& public_key() const { return public_; }
  absl::StatusOr<std::string> Sign(absl::string_view message) const;

 private:
  SigningKey(std::shared_ptr<EVP_PKEY> key, PublicKey pub)
      : key_(std::move(key)), public_(std::move(pub)) {}
  std::shared_ptr<EVP_PKEY> key_;
  PublicKey public_;
};

// Makes a new key pair: `private_path` (PEM PKCS#8, created with mode 0600)
// and `public_path` (PEM). Refuses to overwrite either file.
absl::StatusOr<PublicKey> GenerateKeyPair(const std::string& private_path,
                                          const std::string& public_path);

absl::StatusOr<PublicKey> LoadPublicKey(const std::string& path);
absl::StatusOr<PublicKey> ParsePublicKeyPem(absl::string_view pem, const std::string& source);

// The bytes an Ed25519 key signs for `body` (serialized SignatureBody).
std::string SignedMessage(absl::string_view body);

struct SignTerms {
  uint64_t sequence = 0;
  absl::Time expires;
  absl::Time now;
};

// Signs the package `package_id` (32 raw bytes) of `name`@`version`.
absl::StatusOr<pkgdist::v1::PackageSignature> SignPackage(const SigningKey& key,
                                                          absl::string_view package_id,
                                                          const std::string& name,
                                                          const std::string& version,
                                                          const SignTerms& terms);

// Checks that `sig` is well formed and names this package (its body parses,
// the id, name and version match, the signature has 64 bytes) without
// checking who signed it: what the controller can check. INVALID_ARGUMENT
// naming the mismatch.
absl::StatusOr<pkgdist::v1::SignatureBody> CheckSignatureNamesPackage(
    const pkgdist::v1::PackageSignature& sig, absl::string_view package_id,
    const std::string& name, const std::string& version);

// Verifies `sig` for the package against `trusted`: the key it names must
// be among them and the signature must verify over the body, which must name
// this package. Returns the body; FAILED_PRECONDITION saying why not
// (unsigned, unknown key, bad signature, another package). Expiry and
// sequence are the caller's policy.
absl::StatusOr<pkgdist::v1::SignatureBody> VerifyPackageSignature(
    const pkgdist::v1::PackageSignature& sig, const std::vector<PublicKey>& trusted,
    absl::string_view package_id, const std::string& name, const std::string& version);

// "key ID, sequence N, expires T", for logs and the command line.
std::string DescribeSignature(const pkgdist::v1::SignatureBody& body, const std::string& key_id);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_SIGNING_H_
