#include "shared/signing.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "shared/clock.h"
#include "shared/file_util.h"
#include "shared/sha256.h"
#include "shared/status_macros.h"

namespace pkgdist {
namespace {

using pkgdist::v1::PackageSignature;
using pkgdist::v1::SignatureBody;

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// OpenSSL's reason for the last failure, emptying its error queue.
std::string OpensslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::StatusOr<std::string> RawPublic(EVP_PKEY* key) {
  std::string raw(kEd25519KeyBytes, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kEd25519KeyBytes) {
    return absl::InternalError(absl::StrCat("reading a public key: ", OpensslError()));
  }
  return raw;
}

absl::StatusOr<std::string> SignWith(EVP_PKEY* key, absl::string_view message) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::string sig(kEd25519SignatureBytes, '\0');
  size_t len = sig.size();
  // Ed25519 takes no digest: one-shot EVP_DigestSign over the message.
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != kEd25519SignatureBytes) {
    return absl::InternalError(absl::StrCat("Ed25519 signing failed: ", OpensslError()));
  }
  return sig;
}

// Writes `data` to a new file (never an existing one) with `mode`.
absl::Status WriteNewFile(const std::string& path, absl::string_view data, int mode) {
  ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_EXCL, mode));
  // The mode given to open is filtered by the umask; the private key's must
  // not depend on it.
  if (::fchmod(fd.get(), static_cast<mode_t>(mode)) != 0) return ErrnoStatus(errno, "chmod", path);
  RETURN_IF_ERROR(WriteAll(fd.get(), data.data(), data.size(), path));
  return Fsync(fd.get(), path);
}

absl::StatusOr<std::string> PemOf(EVP_PKEY* key, bool private_key) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  int ok = private_key ? PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr,
                                                  nullptr)
                       : PEM_write_bio_PUBKEY(bio.get(), key);
  if (bio == nullptr || ok != 1) {
    return absl::InternalError(absl::StrCat("encoding a key as PEM: ", OpensslError()));
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

std::string KeyId(absl::string_view raw_public_key) {
  return ToHex(Sha256Of(raw_public_key)).substr(0, 16);
}

absl::StatusOr<std::string> Ed25519Sign(absl::string_view seed, absl::string_view message) {
  ASSIGN_OR_RETURN(SigningKey key, SigningKey::FromSeed(seed));
  return key.Sign(message);
}

bool Ed25519Verify(absl::string_view raw_public_key, absl::string_view message,
                   absl::string_view signature) {
  if (raw_public_key.size() != kEd25519KeyBytes || signature.size() != kEd25519SignatureBytes) {
    return false;
  }
  PkeyPtr key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw_public_key.data()),
      raw_public_key.size()));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  bool ok = key != nullptr && ctx != nullptr &&
            EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                             signature.size(),
                             reinterpret_cast<const unsigned char*>(message.data()),
                             message.size()) == 1;
  ERR_clear_error();  // a bad signature is an answer, not an error to report later
  return ok;
}

absl::StatusOr<SigningKey> SigningKey::FromSeed(absl::string_view seed) {
  if (seed.size() != kEd25519KeyBytes) {
    return absl::InvalidArgumentError("an Ed25519 private key is 32 bytes");
  }
  std::shared_ptr<EVP_PKEY> key(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                   reinterpret_cast<const unsigned char*>(seed.data()), seed.size()),
      PkeyFree());
  if (key == nullptr) return absl::InternalError(absl::StrCat("Ed25519 key: ", OpensslError()));
  ASSIGN_OR_RETURN(std::string raw, RawPublic(key.get()));
  PublicKey pub{KeyId(raw), raw, "(raw seed)"};
  return SigningKey(std::move(key), std::move(pub));
}

absl::StatusOr<SigningKey> SigningKey::Load(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if ((st.st_mode & 077) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: a private key must not be readable by group or others (mode %04o; chmod 600 it)",
        path, st.st_mode & 07777));
  }
  ASSIGN_OR_RETURN(std::string pem, ReadFileToString(path));
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (pem.find("ENCRYPTED") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": an encrypted private key; pkgdistctl reads unencrypted keys only (keep the "
              "key in the pipeline's secret store, mode 0600)"));
  }
  // No passphrase callback: OpenSSL must never prompt on a terminal.
  auto no_passphrase = [](char*, int, int, void*) { return -1; };
  std::shared_ptr<EVP_PKEY> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr), PkeyFree());
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a PEM private key (", OpensslError(), ")"));
  }
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an Ed25519 key"));
  }
  ASSIGN_OR_RETURN(std::string raw, RawPublic(key.get()));
  PublicKey pub{KeyId(raw), raw, path};
  return SigningKey(std::move(key), std::move(pub));
}

absl::StatusOr<std::string> SigningKey::Sign(absl::string_view message) const {
  return SignWith(key_.get(), message);
}

absl::StatusOr<PublicKey> GenerateKeyPair(const std::string& private_path,
                                          const std::string& public_path) {
  for (const std::string& p : {private_path, public_path}) {
    if (::access(p.c_str(), F_OK) == 0) {
      return absl::AlreadyExistsError(absl::StrCat(p, " exists; not overwriting a key"));
    }
  }
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (key == nullptr) return absl::InternalError(absl::StrCat("Ed25519 keygen: ", OpensslError()));
  ASSIGN_OR_RETURN(std::string private_pem, PemOf(key.get(), true));
  ASSIGN_OR_RETURN(std::string public_pem, PemOf(key.get(), false));
  RETURN_IF_ERROR(WriteNewFile(private_path, private_pem, 0600));
  if (absl::Status s = WriteNewFile(public_path, public_pem, 0644); !s.ok()) {
    ::unlink(private_path.c_str());
    return s;
  }
  ASSIGN_OR_RETURN(std::string raw, RawPublic(key.get()));
  return PublicKey{KeyId(raw), raw, public_path};
}

absl::StatusOr<PublicKey> ParsePublicKeyPem(absl::string_view pem, const std::string& source) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a PEM public key (", OpensslError(), ")"));
  }
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not an Ed25519 key"));
  }
  ASSIGN_OR_RETURN(std::string raw, RawPublic(key.get()));
  return PublicKey{KeyId(raw), raw, source};
}

absl::StatusOr<PublicKey> LoadPublicKey(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFileToString(path));
  return ParsePublicKeyPem(pem, path);
}

std::string SignedMessage(absl::string_view body) {
  std::string m(kSignatureContext);
  m.push_back('\0');
  m.append(body.data(), body.size());
  return m;
}

absl::StatusOr<PackageSignature> SignPackage(const SigningKey& key, absl::string_view package_id,
                                             const std::string& name, const std::string& version,
                                             const SignTerms& terms) {
  if (package_id.size() != 32) return absl::InvalidArgumentError("a package id is 32 bytes");
  SignatureBody body;
  body.set_package_id(std::string(package_id));
  body.set_name(name);
  body.set_version(version);
  body.set_sequence(terms.sequence);
  body.set_expires_unix_seconds(absl::ToUnixSeconds(terms.expires));
  body.set_signed_unix_seconds(absl::ToUnixSeconds(terms.now));
  PackageSignature sig;
  sig.set_body(body.SerializeAsString());
  sig.set_key_id(key.public_key().id);
  ASSIGN_OR_RETURN(*sig.mutable_signature(), key.Sign(SignedMessage(sig.body())));
  return sig;
}

absl::StatusOr<SignatureBody> CheckSignatureNamesPackage(const PackageSignature& sig,
                                                         absl::string_view package_id,
                                                         const std::string& name,
                                                         const std::string& version) {
  const std::string label = absl::StrCat(name, "@", version);
  if (sig.signature().size() != kEd25519SignatureBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the signature of ", label, " has ",
                                                   sig.signature().size(),
                                                   " bytes, not 64 (Ed25519)"));
  }
  SignatureBody body;
  if (!body.ParseFromString(sig.body())) {
    return absl::InvalidArgumentError(absl::StrCat("the signed body of ", label, " does not parse"));
  }
  if (body.package_id() != package_id) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the signature is for package id ", ToHex(body.package_id()), " (", body.name(), "@",
        body.version(), "), not ", label, "'s ", ToHex(package_id)));
  }
  if (body.name() != name || body.version() != version) {
    return absl::InvalidArgumentError(absl::StrCat("the signature names ", body.name(), "@",
                                                   body.version(), ", not ", label));
  }
  return body;
}

absl::StatusOr<SignatureBody> VerifyPackageSignature(const PackageSignature& sig,
                                                     const std::vector<PublicKey>& trusted,
                                                     absl::string_view package_id,
                                                     const std::string& name,
                                                     const std::string& version) {
  const std::string label = absl::StrCat(name, "@", version);
  if (sig.body().empty() && sig.signature().empty() && sig.key_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(label, " is unsigned and this agent requires signatures"));
  }
  const PublicKey* key = nullptr;
  for (const PublicKey& k : trusted) {
    if (k.id == sig.key_id()) key = &k;
  }
  if (key == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is signed by key ", sig.key_id().empty() ? "(none named)" : sig.key_id(),
        ", which this agent does not trust"));
  }
  if (!Ed25519Verify(key->raw, SignedMessage(sig.body()), sig.signature())) {
    return absl::FailedPreconditionError(
        absl::StrCat("the signature of ", label, " by key ", key->id, " does not verify"));
  }
  // Only now is the body the signer's: its claims can be checked.
  auto body = CheckSignatureNamesPackage(sig, package_id, name, version);
  if (!body.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(body.status().message(),
                                                      " (a valid signature of another package)"));
  }
  return body;
}

std::string DescribeSignature(const SignatureBody& body, const std::string& key_id) {
  return absl::StrCat("key ", key_id, ", sequence ", body.sequence(), ", expires ",
                      FormatRfc3339(1000 * body.expires_unix_seconds()));
}

}  // namespace pkgdist
