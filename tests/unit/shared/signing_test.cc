#include "shared/signing.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/file_util.h"
#include "shared/sha256.h"

namespace pkgdist {
namespace {

using pkgdist::v1::PackageSignature;
using pkgdist::v1::SignatureBody;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

// RFC 8032 section 7.1, checked against the RFC's text (and several
// independent copies of it): the secret key (seed), public key, message and
// signature, in hex.
struct Rfc8032Vector {
  const char* name;
  const char* seed;
  const char* public_key;
  const char* message;
  const char* signature;
};

const Rfc8032Vector kRfc8032Vectors[] = {
    {"Test1EmptyMessage",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"Test2OneByte",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"Test3TwoBytes",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
    {"TestShaAbc",
     "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
     "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"},
};

std::string Unhex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

class Rfc8032Test : public ::testing::TestWithParam<Rfc8032Vector> {};

TEST_P(Rfc8032Test, SignsDerivesThePublicKeyAndVerifiesExactlyAsTheRfc) {
  // Ed25519 through OpenSSL gives the RFC's signature byte for byte.
  const Rfc8032Vector& v = GetParam();
  const std::string seed = Unhex(v.seed);
  const std::string message = Unhex(v.message);
  auto sig = Ed25519Sign(seed, message);
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(absl::BytesToHexString(*sig), v.signature);

  auto key = SigningKey::FromSeed(seed);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(absl::BytesToHexString(key->public_key().raw), v.public_key);
  EXPECT_EQ(key->public_key().id, KeyId(Unhex(v.public_key)));

  EXPECT_TRUE(Ed25519Verify(Unhex(v.public_key), message, Unhex(v.signature)));
}

INSTANTIATE_TEST_SUITE_P(Section7_1, Rfc8032Test, ::testing::ValuesIn(kRfc8032Vectors),
                         [](const ::testing::TestParamInfo<Rfc8032Vector>& info) {
                           return std::string(info.param.name);
                         });

// The flip of bit `bit` (0 = lowest of byte 0) of `s`.
std::string FlipBit(std::string s, size_t bit) {
  s[bit / 8] = static_cast<char>(s[bit / 8] ^ (1 << (bit % 8)));
  return s;
}

TEST(KeyIdTest, IsTheFirst16HexDigitsOfTheSha256OfTheRawKey) {
  // sha256(RFC 8032 TEST 1 public key) = 21fe31dfa154a261..., computed with sha256sum.
  const std::string pub = Unhex(kRfc8032Vectors[0].public_key);
  EXPECT_EQ(KeyId(pub), "21fe31dfa154a261");
  EXPECT_THAT(KeyId(Unhex(kRfc8032Vectors[1].public_key)), MatchesRegex("[0-9a-f]{16}"));
  EXPECT_NE(KeyId(Unhex(kRfc8032Vectors[1].public_key)), KeyId(pub));
}

TEST(Ed25519Test, WrongSizesAreRefused) {
  // A seed is 32 bytes; a key or signature of another size never verifies.
  EXPECT_TRUE(absl::IsInvalidArgument(SigningKey::FromSeed(std::string(31, 'k')).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Ed25519Sign(std::string(33, 'k'), "m").status()));
  const Rfc8032Vector& v = kRfc8032Vectors[1];
  const std::string sig = Unhex(v.signature);
  EXPECT_FALSE(Ed25519Verify(Unhex(v.public_key), Unhex(v.message), sig.substr(0, 63)));
  EXPECT_FALSE(Ed25519Verify(Unhex(v.public_key), Unhex(v.message), sig + "x"));
  EXPECT_FALSE(Ed25519Verify(Unhex(v.public_key).substr(0, 31), Unhex(v.message), sig));
}

TEST(SignedMessageTest, IsTheContextANulAndTheBody) {
  // Domain separation: a signature of the bare body is not one of these.
  EXPECT_EQ(SignedMessage("abc"), std::string("pkgdist package signature v1\0abc", 32));
  EXPECT_EQ(SignedMessage(""), std::string("pkgdist package signature v1\0", 29));
}

// A key from RFC 8032 TEST 1's seed and a package signed with it.
class PackageSignatureTest : public ::testing::Test {
 protected:
  PackageSignatureTest()
      : key_(std::move(SigningKey::FromSeed(Unhex(kRfc8032Vectors[0].seed))).value()),
        other_key_(std::move(SigningKey::FromSeed(Unhex(kRfc8032Vectors[1].seed))).value()),
        id_(std::string(32, '\x11')) {
    terms_.sequence = 7;
    terms_.now = absl::FromUnixSeconds(1700000000);
    terms_.expires = terms_.now + absl::Hours(24 * 30);
  }

  PackageSignature Sign(const SigningKey& key, const std::string& id, const std::string& name,
                        const std::string& version) {
    auto sig = SignPackage(key, id, name, version, terms_);
    EXPECT_TRUE(sig.ok()) << sig.status();
    return sig.ok() ? *sig : PackageSignature();
  }
  PackageSignature Sign() { return Sign(key_, id_, "app", "1.0"); }

  absl::Status Verify(const PackageSignature& sig, const std::string& id = std::string(32, '\x11'),
                      const std::string& name = "app", const std::string& version = "1.0") {
    return VerifyPackageSignature(sig, {key_.public_key()}, id, name, version).status();
  }

  SigningKey key_;
  SigningKey other_key_;
  std::string id_;
  SignTerms terms_;
};

TEST_F(PackageSignatureTest, ASignedPackageVerifiesAndItsBodyIsReturned) {
  // The body carries the id, name, version, sequence and both times.
  PackageSignature sig = Sign();
  EXPECT_EQ(sig.key_id(), key_.public_key().id);
  EXPECT_EQ(sig.signature().size(), kEd25519SignatureBytes);
  auto body = VerifyPackageSignature(sig, {other_key_.public_key(), key_.public_key()}, id_,
                                     "app", "1.0");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(body->package_id(), id_);
  EXPECT_EQ(body->name(), "app");
  EXPECT_EQ(body->version(), "1.0");
  EXPECT_EQ(body->sequence(), 7u);
  EXPECT_EQ(body->signed_unix_seconds(), 1700000000);
  EXPECT_EQ(body->expires_unix_seconds(), 1700000000 + 30 * 24 * 3600);
  EXPECT_THAT(DescribeSignature(*body, sig.key_id()),
              HasSubstr(absl::StrCat("key ", sig.key_id(), ", sequence 7, expires 2023-12-14T22:13:20")));
}

TEST_F(PackageSignatureTest, EveryBitFlipOfTheSignedMessageOrTheSignatureFailsToVerify) {
  // Ed25519Verify over SignedMessage(body): one wrong bit anywhere is refused.
  PackageSignature sig = Sign();
  const std::string pub = key_.public_key().raw;
  const std::string message = SignedMessage(sig.body());
  ASSERT_TRUE(Ed25519Verify(pub, message, sig.signature()));
  std::vector<size_t> message_bits_accepted;
  for (size_t bit = 0; bit < message.size() * 8; ++bit) {
    if (Ed25519Verify(pub, FlipBit(message, bit), sig.signature())) {
      message_bits_accepted.push_back(bit);
    }
  }
  std::vector<size_t> signature_bits_accepted;
  for (size_t bit = 0; bit < sig.signature().size() * 8; ++bit) {
    if (Ed25519Verify(pub, message, FlipBit(sig.signature(), bit))) {
      signature_bits_accepted.push_back(bit);
    }
  }
  EXPECT_TRUE(message_bits_accepted.empty())
      << "message bits whose flip still verified: " << absl::StrJoin(message_bits_accepted, ",");
  EXPECT_TRUE(signature_bits_accepted.empty())
      << "signature bits whose flip still verified: "
      << absl::StrJoin(signature_bits_accepted, ",");
}

TEST_F(PackageSignatureTest, EveryBitFlipOfTheBodyIsFailedPrecondition) {
  // Through VerifyPackageSignature: a body changed in any bit is never accepted.
  PackageSignature sig = Sign();
  ASSERT_TRUE(Verify(sig).ok());
  std::vector<std::string> wrong;
  for (size_t bit = 0; bit < sig.body().size() * 8; ++bit) {
    PackageSignature flipped = sig;
    flipped.set_body(FlipBit(sig.body(), bit));
    absl::Status s = Verify(flipped);
    if (!absl::IsFailedPrecondition(s)) wrong.push_back(absl::StrCat(bit, ": ", s.ToString()));
  }
  EXPECT_TRUE(wrong.empty()) << "bits of the body not refused with FAILED_PRECONDITION:\n"
                             << absl::StrJoin(wrong, "\n");
}

TEST_F(PackageSignatureTest, AKeyNotTrustedIsRefusedNamingIt) {
  // Signed by a key not among the trusted: "does not trust", with the key id.
  PackageSignature sig = Sign(other_key_, id_, "app", "1.0");
  absl::Status s = Verify(sig);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not trust"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(other_key_.public_key().id));
  s = VerifyPackageSignature(Sign(), {}, id_, "app", "1.0").status();
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not trust"));
}

TEST_F(PackageSignatureTest, AnotherKeysSignatureUnderATrustedKeyIdDoesNotVerify) {
  // The key id only selects the key: the signature itself must verify with it.
  PackageSignature sig = Sign(other_key_, id_, "app", "1.0");
  sig.set_key_id(key_.public_key().id);
  absl::Status s = Verify(sig);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not verify"));
  sig = Sign();
  sig.mutable_signature()->resize(63);
  EXPECT_TRUE(absl::IsFailedPrecondition(Verify(sig)));
}

TEST_F(PackageSignatureTest, AnUnsignedPackageIsRefusedAsUnsigned) {
  // An empty PackageSignature: FAILED_PRECONDITION saying "unsigned".
  absl::Status s = Verify(PackageSignature());
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("unsigned"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("app@1.0"));
}

TEST_F(PackageSignatureTest, AValidSignatureOfAnotherPackageIsRefused) {
  // Correctly signed, but for another id, name or version: not this package.
  const std::string other_id(32, '\x22');
  struct Case {
    const char* what;
    PackageSignature sig;
  };
  std::vector<Case> cases = {{"another id", Sign(key_, other_id, "app", "1.0")},
                             {"another name", Sign(key_, id_, "db", "1.0")},
                             {"another version", Sign(key_, id_, "app", "2.0")}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = Verify(c.sig);
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("another package"));
  }
}

TEST_F(PackageSignatureTest, CheckSignatureNamesPackageReportsMismatchesAsInvalidArgument) {
  // What the controller checks without keys: the body names this package.
  PackageSignature sig = Sign();
  EXPECT_TRUE(CheckSignatureNamesPackage(sig, id_, "app", "1.0").ok());
  absl::Status s = CheckSignatureNamesPackage(sig, std::string(32, '\x22'), "app", "1.0").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(ToHex(id_)));
  s = CheckSignatureNamesPackage(sig, id_, "db", "1.0").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("names app@1.0, not db@1.0"));
  s = CheckSignatureNamesPackage(sig, id_, "app", "1.1").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;

  PackageSignature short_sig = sig;
  short_sig.mutable_signature()->pop_back();
  s = CheckSignatureNamesPackage(short_sig, id_, "app", "1.0").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("63 bytes"));

  PackageSignature garbled = sig;
  garbled.set_body("\xff\xff\xff");
  s = CheckSignatureNamesPackage(garbled, id_, "app", "1.0").status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not parse"));
}

TEST_F(PackageSignatureTest, SignPackageRefusesAnIdThatIsNot32Bytes) {
  // A package id is a raw sha256.
  EXPECT_TRUE(absl::IsInvalidArgument(
      SignPackage(key_, ToHex(id_), "app", "1.0", terms_).status()));
}

// Key files in a temporary directory.
class KeyFileTest : public ::testing::Test {
 protected:
  KeyFileTest() : dir_(std::move(TempDir::Create("signing_test")).value()) {}

  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }
  static mode_t ModeOf(const std::string& path) {
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  static std::string Read(const std::string& path) {
    auto data = ReadFileToString(path);
    EXPECT_TRUE(data.ok()) << data.status();
    return data.ok() ? *data : "";
  }
  static void Write(const std::string& path, absl::string_view data, mode_t mode) {
    ASSERT_TRUE(WriteFileAtomic(path, data).ok());
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }

  TempDir dir_;
};

TEST_F(KeyFileTest, GenerateKeyPairWritesAPrivateKeyOnlyTheOwnerReadsEvenUnderUmaskZero) {
  // Private 0600, public 0644 whatever the umask; both load as the same key.
  mode_t old_umask = ::umask(0);
  auto pub = GenerateKeyPair(Path("owner.key"), Path("owner.pub"));
  ::umask(old_umask);
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(ModeOf(Path("owner.key")), 0600);
  EXPECT_EQ(ModeOf(Path("owner.pub")), 0644);
  EXPECT_THAT(pub->id, MatchesRegex("[0-9a-f]{16}"));
  EXPECT_EQ(pub->id, KeyId(pub->raw));

  auto key = SigningKey::Load(Path("owner.key"));
  ASSERT_TRUE(key.ok()) << key.status();
  auto loaded = LoadPublicKey(Path("owner.pub"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->id, key->public_key().id);
  EXPECT_EQ(loaded->raw, key->public_key().raw);
  EXPECT_EQ(loaded->id, pub->id);
  EXPECT_EQ(loaded->source, Path("owner.pub"));
  EXPECT_THAT(Read(Path("owner.key")), HasSubstr("-----BEGIN PRIVATE KEY-----"));
  EXPECT_THAT(Read(Path("owner.pub")), HasSubstr("-----BEGIN PUBLIC KEY-----"));

  auto sig = key->Sign("hello");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_TRUE(Ed25519Verify(loaded->raw, "hello", *sig));
}

TEST_F(KeyFileTest, GenerateKeyPairNeverOverwritesAKey) {
  // An existing private or public file is ALREADY_EXISTS and left as it was.
  ASSERT_TRUE(GenerateKeyPair(Path("a.key"), Path("a.pub")).ok());
  const std::string private_before = Read(Path("a.key"));
  const std::string public_before = Read(Path("a.pub"));

  absl::Status s = GenerateKeyPair(Path("a.key"), Path("b.pub")).status();
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(Path("a.key")));
  EXPECT_FALSE(std::filesystem::exists(Path("b.pub")));

  s = GenerateKeyPair(Path("b.key"), Path("a.pub")).status();
  EXPECT_TRUE(absl::IsAlreadyExists(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(Path("a.pub")));
  EXPECT_FALSE(std::filesystem::exists(Path("b.key")));

  EXPECT_EQ(Read(Path("a.key")), private_before);
  EXPECT_EQ(Read(Path("a.pub")), public_before);
}

TEST_F(KeyFileTest, APrivateKeyOthersMayReadIsRefusedSayingChmod600) {
  // Like ssh: 0644 or 0640 is refused naming the file and the fix; 0400 is fine.
  ASSERT_TRUE(GenerateKeyPair(Path("owner.key"), Path("owner.pub")).ok());
  for (mode_t mode : {0644, 0640, 0604}) {
    ASSERT_EQ(::chmod(Path("owner.key").c_str(), mode), 0);
    absl::Status s = SigningKey::Load(Path("owner.key")).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << std::oct << mode << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("chmod 600"));
    EXPECT_THAT(std::string(s.message()), HasSubstr(Path("owner.key")));
  }
  ASSERT_EQ(::chmod(Path("owner.key").c_str(), 0400), 0);
  EXPECT_TRUE(SigningKey::Load(Path("owner.key")).ok());
}

TEST_F(KeyFileTest, AMissingPrivateKeyIsNotFound) {
  // Named in the message.
  absl::Status s = SigningKey::Load(Path("none.key")).status();
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(Path("none.key")));
  EXPECT_TRUE(absl::IsNotFound(LoadPublicKey(Path("none.pub")).status()));
}

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

// The PEM of a new key of OpenSSL type `type` (private PKCS#8 or public SPKI).
std::pair<std::string, std::string> PemKeyPair(const char* type) {
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      std::string(type) == "EC" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                                : EVP_PKEY_Q_keygen(nullptr, nullptr, type));
  EXPECT_NE(key, nullptr) << type;
  if (key == nullptr) return {};
  auto pem = [&](bool private_key) {
    std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
    int ok = private_key ? PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0,
                                                    nullptr, nullptr)
                         : PEM_write_bio_PUBKEY(bio.get(), key.get());
    EXPECT_EQ(ok, 1);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(len));
  };
  return {pem(true), pem(false)};
}

TEST_F(KeyFileTest, KeysOfOtherAlgorithmsAreRefused) {
  // EC P-256, Ed448 and X25519 (the same curve, 32-byte keys) are not Ed25519.
  for (const char* type : {"EC", "ED448", "X25519"}) {
    SCOPED_TRACE(type);
    auto [private_pem, public_pem] = PemKeyPair(type);
    const std::string priv = Path(absl::StrCat(type, ".key"));
    const std::string pub = Path(absl::StrCat(type, ".pub"));
    Write(priv, private_pem, 0600);
    Write(pub, public_pem, 0644);
    absl::Status s = SigningKey::Load(priv).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("not an Ed25519 key"));
    s = LoadPublicKey(pub).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("not an Ed25519 key"));
  }
}

TEST_F(KeyFileTest, GarbageIsNotAKey) {
  // Text, a truncated PEM, or a private key where a public one is expected.
  ASSERT_TRUE(GenerateKeyPair(Path("owner.key"), Path("owner.pub")).ok());
  const std::string real_private = Read(Path("owner.key"));
  const std::string real_public = Read(Path("owner.pub"));
  Write(Path("text.key"), "not a key at all\n", 0600);
  Write(Path("cut.key"), real_private.substr(0, real_private.size() / 2), 0600);
  for (const char* name : {"text.key", "cut.key"}) {
    absl::Status s = SigningKey::Load(Path(name)).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << name << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("not a PEM private key"));
  }
  for (const std::string& pem :
       {std::string("junk"), real_public.substr(0, real_public.size() - 30), real_private}) {
    absl::Status s = ParsePublicKeyPem(pem, "test.pub").status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("test.pub: not a PEM public key"));
  }
}

}  // namespace
}  // namespace pkgdist
