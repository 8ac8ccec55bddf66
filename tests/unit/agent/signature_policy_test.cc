#include "agent/signature_policy.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/sha256.h"
#include "shared/signing.h"
#include "tests/unit/agent/agent_test_util.h"

namespace pkgdist {
namespace {

using pkgdist::v1::Manifest;
using pkgdist::v1::PackageSignature;
using ::testing::HasSubstr;

// ROOT and the trusted keys directory in one temporary directory; private
// keys outside the trusted one. The clock is `now_`.
class SignaturePolicyTest : public ::testing::Test {
 protected:
  SignaturePolicyTest()
      : tmp_(testing::MakeTempDir()),
        root_(tmp_.path() + "/root"),
        keys_(tmp_.path() + "/trusted"),
        secrets_(tmp_.path() + "/secrets") {
    for (const std::string& d : {root_, keys_, secrets_}) EXPECT_TRUE(MakeDirs(d).ok()) << d;
    owner_ = NewKey("owner", keys_);
    options_.trusted_keys_dir = keys_;
    options_.now = [this] { return now_; };
  }

  // A key pair `name`: private in secrets_, public as DIR/name.pub.
  SigningKey NewKey(const std::string& name, const std::string& dir) {
    auto pub = GenerateKeyPair(secrets_ + "/" + name + ".key", dir + "/" + name + ".pub");
    EXPECT_TRUE(pub.ok()) << pub.status();
    auto key = SigningKey::Load(secrets_ + "/" + name + ".key");
    EXPECT_TRUE(key.ok()) << key.status();
    return std::move(key).value();
  }

  std::unique_ptr<SignaturePolicy> Open() {
    auto p = SignaturePolicy::Open(root_, options_);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(p).value() : nullptr;
  }

  static Manifest M(const std::string& name, const std::string& version) {
    Manifest m;
    m.set_name(name);
    m.set_version(version);
    return m;
  }
  // A distinct 32-byte package id per (name, version, tag).
  static std::string Id(const std::string& name, const std::string& version, char tag = 'a') {
    return DigestBytes(Sha256Of(absl::StrCat(name, "@", version, std::string(1, tag))));
  }

  PackageSignature Sign(const SigningKey& key, const std::string& name,
                        const std::string& version, uint64_t sequence, char tag = 'a',
                        absl::Duration valid_for = absl::Hours(24)) {
    SignTerms terms;
    terms.sequence = sequence;
    terms.now = now_;
    terms.expires = now_ + valid_for;
    auto sig = SignPackage(key, Id(name, version, tag), name, version, terms);
    EXPECT_TRUE(sig.ok()) << sig.status();
    return sig.ok() ? *sig : PackageSignature();
  }

  // The three checks of `name`@`version` (content `tag`) signed with `sig`.
  absl::Status Stage(SignaturePolicy& p, const std::string& name, const std::string& version,
                     const PackageSignature& sig, char tag = 'a') {
    return p.CheckStage(M(name, version), Id(name, version, tag), sig);
  }
  absl::Status Publish(SignaturePolicy& p, const std::string& name, const std::string& version,
                       const PackageSignature& sig, char tag = 'a') {
    return p.CheckAndRecordPublish(M(name, version), Id(name, version, tag), sig);
  }
  absl::Status Published(SignaturePolicy& p, const std::string& name, const std::string& version,
                         const PackageSignature& sig, char tag = 'a') {
    return p.CheckPublished(M(name, version), Id(name, version, tag), sig);
  }

  std::string SequencesFile() const { return root_ + "/signed-sequences"; }

  TempDir tmp_;
  std::string root_;
  std::string keys_;
  std::string secrets_;
  SigningKey owner_ = std::move(SigningKey::FromSeed(std::string(32, 's'))).value();
  SignaturePolicyOptions options_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
};

#define EXPECT_REFUSED(expr, text)                                      \
  do {                                                                  \
    absl::Status s_ = (expr);                                           \
    EXPECT_TRUE(absl::IsFailedPrecondition(s_)) << #expr << ": " << s_; \
    EXPECT_THAT(std::string(s_.message()), HasSubstr(text)) << #expr;   \
  } while (0)

#define EXPECT_OK(expr)                                 \
  do {                                                  \
    absl::Status s_ = (expr);                           \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_;        \
  } while (0)

TEST_F(SignaturePolicyTest, ADisabledPolicyAcceptsEverythingAndRecordsNothing) {
  // No trusted keys directory: nothing is checked, nothing is written.
  options_.trusted_keys_dir.clear();
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->enabled());
  PackageSignature garbage;
  garbage.set_key_id("0123456789abcdef");
  garbage.set_signature("nonsense");
  for (const PackageSignature& sig : {PackageSignature(), garbage}) {
    EXPECT_OK(Stage(*p, "app", "1.0", sig));
    EXPECT_OK(Publish(*p, "app", "1.0", sig));
    EXPECT_OK(Published(*p, "app", "1.0", sig));
  }
  EXPECT_OK(Publish(*p, "app", "1.0", Sign(owner_, "app", "1.0", 5)));
  EXPECT_EQ(p->HighestSequence("app"), 0u);
  EXPECT_FALSE(std::filesystem::exists(SequencesFile()));
}

TEST_F(SignaturePolicyTest, AnUnsignedPackageIsRefusedWhenSignaturesAreRequired) {
  // The default: staging, publishing and reporting it published all refuse.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->enabled());
  EXPECT_REFUSED(Stage(*p, "app", "1.0", PackageSignature()), "unsigned");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", PackageSignature()), "unsigned");
  EXPECT_REFUSED(Published(*p, "app", "1.0", PackageSignature()), "unsigned");
}

TEST_F(SignaturePolicyTest, UnsignedIsAcceptedWhenNotRequiredButABadSignatureIsStillRefused) {
  // --require-signatures=false admits unsigned packages only.
  options_.require_signatures = false;
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Stage(*p, "app", "1.0", PackageSignature()));
  EXPECT_OK(Publish(*p, "app", "1.0", PackageSignature()));
  EXPECT_OK(Published(*p, "app", "1.0", PackageSignature()));
  EXPECT_EQ(p->HighestSequence("app"), 0u);

  PackageSignature bad = Sign(owner_, "app", "1.0", 1);
  (*bad.mutable_signature())[5] ^= 0x01;
  EXPECT_REFUSED(Stage(*p, "app", "1.0", bad), "does not verify");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", bad), "does not verify");
  EXPECT_REFUSED(Published(*p, "app", "1.0", bad), "does not verify");

  SigningKey stranger = NewKey("stranger", secrets_);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", Sign(stranger, "app", "1.0", 1)), "does not trust");
  EXPECT_OK(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 1)));
}

TEST_F(SignaturePolicyTest, ASignatureByAKeyNotInTheDirectoryIsRefused) {
  // Only keys in the trusted directory count.
  SigningKey stranger = NewKey("stranger", secrets_);
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(stranger, "app", "1.0", 1);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig), "does not trust");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", sig), "does not trust");
  EXPECT_REFUSED(Published(*p, "app", "1.0", sig), stranger.public_key().id);
  EXPECT_EQ(p->HighestSequence("app"), 0u);
}

TEST_F(SignaturePolicyTest, ACorrectlySignedPackageIsAccepted) {
  // The owner's key signs app@1.0: all three checks pass.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(owner_, "app", "1.0", 1);
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  EXPECT_OK(Publish(*p, "app", "1.0", sig));
  EXPECT_OK(Published(*p, "app", "1.0", sig));
}

TEST_F(SignaturePolicyTest, AValidSignatureOfOtherContentIsRefused) {
  // A signature is for one package id: it does not pass for other content.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(owner_, "app", "1.0", 1, 'a');
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig, 'b'), "another package");
  EXPECT_REFUSED(p->CheckStage(M("db", "1.0"), Id("app", "1.0"), sig), "another package");
}

TEST_F(SignaturePolicyTest, AKeyAddedToTheDirectoryIsTrustedWithoutReopening) {
  // The directory is read at every check.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  SigningKey second = NewKey("second", secrets_);
  PackageSignature sig = Sign(second, "app", "1.0", 1);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig), "does not trust");
  std::filesystem::copy_file(secrets_ + "/second.pub", keys_ + "/second.pub");
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  EXPECT_OK(Publish(*p, "app", "1.0", sig));
}

TEST_F(SignaturePolicyTest, AKeyRemovedFromTheDirectoryIsRefusedAfterwards) {
  // Revocation without a restart: what the key signed is refused from then on.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(owner_, "app", "1.0", 1);
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  ASSERT_EQ(::unlink((keys_ + "/owner.pub").c_str()), 0);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig), "does not trust");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", sig), "does not trust");
  EXPECT_REFUSED(Published(*p, "app", "1.0", sig), "does not trust");
  EXPECT_EQ(p->HighestSequence("app"), 0u);
}

TEST_F(SignaturePolicyTest, AnExpiredSignatureIsRefusedForStagingAndPublishing) {
  // From the expiry on (inclusive): "expired", and nothing is recorded.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(owner_, "app", "1.0", 3, 'a', absl::Hours(1));
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  now_ += absl::Hours(1) - absl::Seconds(1);
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  now_ += absl::Seconds(1);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig), "expired");
  now_ += absl::Hours(24 * 365);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", sig), "expired");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", sig), "must sign it again");
  EXPECT_EQ(p->HighestSequence("app"), 0u);
}

TEST_F(SignaturePolicyTest, PublishingRecordsTheSequenceDurably) {
  // CheckAndRecordPublish writes name, sequence, id and version to ROOT/signed-sequences.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Publish(*p, "app", "1.0", Sign(owner_, "app", "1.0", 5)));
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  EXPECT_EQ(p->HighestSequence("db"), 0u);
  EXPECT_THAT(testing::ReadFile(SequencesFile()),
              HasSubstr(absl::StrCat("\napp 5 ", ToHex(Id("app", "1.0")), " 1.0\n")));
  EXPECT_OK(Stage(*p, "app", "2.0", Sign(owner_, "app", "2.0", 6)));
  EXPECT_EQ(p->HighestSequence("app"), 5u);  // staging records nothing
  EXPECT_OK(Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 6)));
  EXPECT_EQ(p->HighestSequence("app"), 6u);
}

TEST_F(SignaturePolicyTest, ALowerSequenceAfterAPublicationIsRefusedAsARollback) {
  // A replayed older release: CheckStage and CheckAndRecordPublish say "rollback".
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 5)));
  PackageSignature old = Sign(owner_, "app", "1.0", 4);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", old), "rollback");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", old), "rollback");
  EXPECT_REFUSED(Publish(*p, "app", "1.0", old), "--allow-rollback app");
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  // Other names have their own sequences.
  EXPECT_OK(Publish(*p, "db", "1.0", Sign(owner_, "db", "1.0", 1)));
}

TEST_F(SignaturePolicyTest, AnEqualSequenceIsAcceptedOnlyForTheSameContent) {
  // Re-sending the published package is fine; other content under its sequence is not.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature sig = Sign(owner_, "app", "1.0", 5);
  EXPECT_OK(Publish(*p, "app", "1.0", sig));
  EXPECT_OK(Stage(*p, "app", "1.0", sig));
  EXPECT_OK(Publish(*p, "app", "1.0", sig));
  PackageSignature other = Sign(owner_, "app", "1.1", 5);
  EXPECT_REFUSED(Stage(*p, "app", "1.1", other), "other content");
  EXPECT_REFUSED(Publish(*p, "app", "1.1", other), "each release needs a higher one");
  PackageSignature same_version_other_content = Sign(owner_, "app", "1.0", 5, 'b');
  EXPECT_REFUSED(Stage(*p, "app", "1.0", same_version_other_content, 'b'), "other content");
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  EXPECT_THAT(testing::ReadFile(SequencesFile()), HasSubstr(ToHex(Id("app", "1.0"))));
}

TEST_F(SignaturePolicyTest, AllowRollbackAcceptsALowerSequenceForThatNameOnly) {
  // --allow-rollback app: app may go back; db may not.
  options_.allow_rollback = {"app"};
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 5)));
  EXPECT_OK(Publish(*p, "db", "2.0", Sign(owner_, "db", "2.0", 5)));
  EXPECT_OK(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 4)));
  EXPECT_OK(Publish(*p, "app", "1.0", Sign(owner_, "app", "1.0", 4)));
  EXPECT_OK(Stage(*p, "app", "1.1", Sign(owner_, "app", "1.1", 5)));
  EXPECT_REFUSED(Stage(*p, "db", "1.0", Sign(owner_, "db", "1.0", 4)), "rollback");
  // The record keeps the highest sequence published.
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  // Expiry still applies.
  EXPECT_REFUSED(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 4, 'a', absl::ZeroDuration())),
                 "expired");
}

TEST_F(SignaturePolicyTest, AnInvalidAllowRollbackNameIsRefusedByOpen) {
  // The names are package names.
  options_.allow_rollback = {"../app"};
  auto p = SignaturePolicy::Open(root_, options_);
  EXPECT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("--allow-rollback"));
}

TEST_F(SignaturePolicyTest, TheRecordSurvivesARestartAndIsStillInForce) {
  // Reopening on the same ROOT reads the highest sequences back.
  {
    auto p = Open();
    ASSERT_NE(p, nullptr);
    EXPECT_OK(Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 5)));
    EXPECT_OK(Publish(*p, "db", "1.0", Sign(owner_, "db", "1.0", 9)));
  }
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  EXPECT_EQ(p->HighestSequence("db"), 9u);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 4)), "rollback");
  EXPECT_REFUSED(Publish(*p, "db", "0.9", Sign(owner_, "db", "0.9", 8)), "rollback");
  EXPECT_REFUSED(Stage(*p, "app", "2.1", Sign(owner_, "app", "2.1", 5)), "other content");
  EXPECT_OK(Stage(*p, "app", "2.0", Sign(owner_, "app", "2.0", 5)));
  EXPECT_OK(Publish(*p, "app", "3.0", Sign(owner_, "app", "3.0", 6)));
  EXPECT_EQ(p->HighestSequence("app"), 6u);
}

TEST_F(SignaturePolicyTest, ADamagedSequencesFileMakesOpenFailWithDataLossNamingIt) {
  // Any line that is not "name sequence id version" is DATA_LOSS; the file is left as it was.
  const std::string good_id = ToHex(Id("app", "1.0"));
  const std::string header = "# pkgdist signed-sequences v1: name sequence package-id version\n";
  for (const std::string& content :
       {header + "garbage\n", header + "app five " + good_id + " 1.0\n",
        header + "app 5 " + good_id.substr(0, 63) + " 1.0\n", header + "app 5 " + good_id + "\n",
        header + "app 5 " + good_id + " 1.0 extra\n", header + "../app 5 " + good_id + " 1.0\n",
        header + "app -1 " + good_id + " 1.0\n", std::string("app 5 ") + good_id + " 1.0\n" + header}) {
    SCOPED_TRACE(content);
    testing::WriteFile(SequencesFile(), content);
    auto p = SignaturePolicy::Open(root_, options_);
    ASSERT_FALSE(p.ok());
    EXPECT_TRUE(absl::IsDataLoss(p.status())) << p.status();
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(SequencesFile()));
    EXPECT_EQ(testing::ReadFile(SequencesFile()), content);
  }
  // A file as the policy writes it opens.
  testing::WriteFile(SequencesFile(), header + "app 5 " + good_id + " 1.0\n");
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->HighestSequence("app"), 5u);
}

TEST_F(SignaturePolicyTest, AMissingTrustedKeysDirectoryMakesOpenFail) {
  // A typo in --trusted-keys must not start an agent that trusts nothing silently.
  options_.trusted_keys_dir = tmp_.path() + "/no-such-dir";
  auto p = SignaturePolicy::Open(root_, options_);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(p.status())) << p.status();
  EXPECT_THAT(std::string(p.status().message()), HasSubstr(options_.trusted_keys_dir));
}

TEST_F(SignaturePolicyTest, AnEmptyTrustedKeysDirectoryOpensAndRefusesEverything) {
  // Keys may be added later; until then nothing is trusted.
  ASSERT_EQ(::unlink((keys_ + "/owner.pub").c_str()), 0);
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 1)), "does not trust");
}

TEST_F(SignaturePolicyTest, CheckPublishedIgnoresExpiryAndSequenceButNeedsATrustedSignature) {
  // A package already published is not published again: only who signed it matters.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  PackageSignature old = Sign(owner_, "app", "1.0", 3, 'a', absl::Hours(1));
  EXPECT_OK(Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 5)));
  now_ += absl::Hours(2);
  EXPECT_REFUSED(Stage(*p, "app", "1.0", old), "expired");
  EXPECT_OK(Published(*p, "app", "1.0", old));
  EXPECT_OK(Published(*p, "app", "2.1", Sign(owner_, "app", "2.1", 5)));  // equal, other content

  SigningKey stranger = NewKey("stranger", secrets_);
  EXPECT_REFUSED(Published(*p, "app", "1.0", Sign(stranger, "app", "1.0", 3)), "does not trust");
  PackageSignature bad = old;
  (*bad.mutable_signature())[0] ^= 0x40;
  EXPECT_REFUSED(Published(*p, "app", "1.0", bad), "does not verify");
  EXPECT_REFUSED(Published(*p, "app", "1.0", old, 'b'), "another package");
  EXPECT_REFUSED(Published(*p, "app", "1.0", PackageSignature()), "unsigned");
  EXPECT_EQ(p->HighestSequence("app"), 5u);
}

TEST_F(SignaturePolicyTest, AMalformedKeyFileIsSkippedAndTheOtherKeysStillWork) {
  // One bad .pub must not distrust the rest; files not named *.pub are not keys.
  testing::WriteFile(keys_ + "/broken.pub", "-----BEGIN PUBLIC KEY-----\nnonsense\n");
  testing::WriteFile(keys_ + "/empty.pub", "");
  SigningKey other = NewKey("other", secrets_);
  std::filesystem::copy_file(secrets_ + "/other.pub", keys_ + "/other.pem");
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Stage(*p, "app", "1.0", Sign(owner_, "app", "1.0", 1)));
  EXPECT_OK(Publish(*p, "app", "1.0", Sign(owner_, "app", "1.0", 1)));
  EXPECT_REFUSED(Stage(*p, "app", "1.1", Sign(other, "app", "1.1", 2)), "does not trust");
}

TEST_F(SignaturePolicyTest, AFailedRecordWriteRefusesThePublicationAndKeepsTheOldRecord) {
  // If ROOT/signed-sequences cannot be written, nothing may be published unrecorded.
  auto p = Open();
  ASSERT_NE(p, nullptr);
  EXPECT_OK(Publish(*p, "app", "1.0", Sign(owner_, "app", "1.0", 5)));
  ASSERT_TRUE(RemoveAll(root_).ok());
  absl::Status s = Publish(*p, "app", "2.0", Sign(owner_, "app", "2.0", 6));
  EXPECT_TRUE(absl::IsInternal(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("recording the signed sequence"));
  EXPECT_EQ(p->HighestSequence("app"), 5u);
  s = Publish(*p, "db", "1.0", Sign(owner_, "db", "1.0", 1));
  EXPECT_TRUE(absl::IsInternal(s)) << s;
  EXPECT_EQ(p->HighestSequence("db"), 0u);
}

}  // namespace
}  // namespace pkgdist
