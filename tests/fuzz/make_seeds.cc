// Writes the committed seed corpora: fuzz_make_seeds CORPUS_DIR [REGRESSIONS_DIR]
// writes CORPUS_DIR/{manifest,journal,transfer}/<name> (and the regression
// inputs found so far). Run it after changing the input format of a target
// or the packages in fuzz_util.cc.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/journal.h"
#include "shared/file_util.h"
#include "shared/manifest.h"
#include "shared/sha256.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/transfer_program.h"

namespace pkgdist::fuzz {
namespace {

using Bytes = std::vector<uint8_t>;

void Write(const std::string& dir, const std::string& name, const std::string& data) {
  Check(MakeDirs(dir).ok(), "mkdir " + dir);
  Check(WriteFileAtomic(dir + "/" + name, data).ok(), "write " + name);
}
std::string Str(const Bytes& b) { return std::string(b.begin(), b.end()); }

void ManifestSeeds(const std::string& dir) {
  const auto& packages = Packages();
  for (size_t i = 0; i < packages.size(); ++i) {
    Write(dir, absl::StrCat("package-", i), packages[i].manifest.SerializeAsString());
  }
  pkgdist::v1::Manifest m = packages[0].manifest;
  m.mutable_files(0)->set_path("../escape");
  Write(dir, "dotdot-path", m.SerializeAsString());
  m = packages[0].manifest;
  m.mutable_files(4)->set_link_target("/etc");
  Write(dir, "absolute-link", m.SerializeAsString());
  Write(dir, "raw-link", "a/b\n../../c");
  Write(dir, "raw-path", "usr/lib/x");
}

// Journal programs (fuzz_journal.cc): byte 0 odd, then op/index pairs.
void JournalSeeds(const std::string& dir) {
  Write(dir, "three-records", Str({1, 0, 0, 0, 1, 0, 2}));
  Write(dir, "bad-crc-in-middle", Str({1, 0, 0, 2, 1, 43, 7, 0, 3}));
  Write(dir, "torn-tail", Str({1, 0, 0, 0, 5, 4, 2, 20}));
  Write(dir, "foreign-hash-and-range", Str({1, 1, 2, 0, 7, 0, 4, 0, 0}));
  Write(dir, "raw-junk", Str({1, 0, 1, 3, 5, 'j', 'u', 'n', 'k', '!', 0, 2}));
  std::string raw(1, '\0');
  for (uint32_t i = 0; i < 3; ++i) {
    raw += EncodeJournalRecord({i, Sha256Of(absl::StrCat("chunk ", i))});
  }
  Write(dir, "raw-file", raw);
  Write(dir, "raw-file-torn", raw.substr(0, raw.size() - 9));
}

// Transfer programs (transfer_program.h).
Bytes Offer(uint8_t pkg, uint8_t window = 0) { return {kOffer, pkg, window}; }
Bytes AllChunks(uint8_t pkg, uint32_t from = 0) {
  Bytes b;
  for (uint32_t i = from; i < static_cast<uint32_t>(Packages()[pkg].manifest.chunks_size()); ++i) {
    b.push_back(kChunk);
    b.push_back(static_cast<uint8_t>(i));
  }
  return b;
}
Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
const Bytes kCommitOp = {kCommit};
const Bytes kEnd = {kControl, kEndStream};
const Bytes kRequire = {kControl, kPolicyRequired};
// A correct signature by the trusted key; `expires` as in transfer_program.h.
Bytes Signed(uint8_t sequence, uint8_t expires = 200) {
  return {kSign, kSignTrusted, sequence, expires};
}
// Offers package `pkg` signed with `sign`, sends it all and commits.
Bytes SignedPublish(uint8_t pkg, const Bytes& sign) {
  return Cat({Offer(pkg), sign, AllChunks(pkg), kCommitOp});
}

// Streams under a signature policy (kSign in transfer_program.h).
void SignatureSeeds(const std::string& dir) {
  Write(dir, "signed-publish", Str(Cat({kRequire, SignedPublish(0, Signed(1))})));
  Write(dir, "unsigned-required", Str(Cat({kRequire, Offer(0), AllChunks(0), kCommitOp})));
  Write(dir, "unsigned-optional",
        Str(Cat({{kControl, kPolicyOptional}, Offer(0), AllChunks(0), kCommitOp})));
  Write(dir, "untrusted-key",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignUntrusted, 1, 200})})));
  Write(dir, "forged-key-id",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignForgedKeyId, 1, 200})})));
  Write(dir, "flipped-signature",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignFlipped, 1, 200, 1, 5, 0})})));
  Write(dir, "flipped-body",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignFlipped, 1, 200, 0, 40, 3})})));
  Write(dir, "raw-signature",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignRaw, 3, 'a', 'b', 'c', 2, 'k', 'i', 1,
                                             's'})})));
  Write(dir, "signed-raw-body",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignBody, 4, 0x20, 7, 'x', 'y'})})));
  Write(dir, "other-package-signature",
        Str(Cat({kRequire, SignedPublish(0, {kSign, kSignOther, 1, 1, 1, 200})})));
  Write(dir, "expired-signature", Str(Cat({kRequire, SignedPublish(0, Signed(1, 10))})));
  Write(dir, "expires-now", Str(Cat({kRequire, SignedPublish(0, Signed(1, kExpiresNow))})));
  // Unexpired at the offer, expired at the commit: refused then, staging dropped.
  Write(dir, "expires-during-transfer",
        Str(Cat({kRequire, Offer(4), Signed(1, kExpiresNow + 4), AllChunks(4),
                 {kControl, kAdvanceClock}, kCommitOp})));
  Write(dir, "rollback",
        Str(Cat({kRequire, SignedPublish(0, Signed(5)), kEnd, SignedPublish(1, Signed(3))})));
  Write(dir, "rollback-after-restart",
        Str(Cat({kRequire, SignedPublish(0, Signed(5)), {kControl, kRestart},
                 SignedPublish(1, Signed(3))})));
  Write(dir, "same-sequence-other-content",
        Str(Cat({kRequire, SignedPublish(0, Signed(5)), kEnd, SignedPublish(1, Signed(5))})));
  Write(dir, "signed-upgrade",
        Str(Cat({kRequire, SignedPublish(0, Signed(5)), kEnd, Offer(1, 2), Signed(6),
                 AllChunks(1), kCommitOp})));
  Write(dir, "published-then-signed-required",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kRequire, Offer(0), kEnd, Offer(0),
                 Signed(1)})));
  Write(dir, "unsigned-staging-then-refused",
        Str(Cat({Offer(0), {kChunk, 0, kChunk, 1}, kRequire, Offer(0), {kSign, kSignUntrusted,
                 1, 200}})));
}

// Offers of package `pkg` with its manifest in parts (kOfferParts):
// `split` as in transfer_program.h (0: one file, one chunk per part).
Bytes OfferParts(uint8_t pkg, uint8_t split = 0, uint8_t miscount = kPartsExact) {
  return {kOfferParts, pkg, split, miscount};
}

// Manifests in several messages, and split first Needs.
void PartSeeds(const std::string& dir) {
  for (uint8_t p = 0; p < Packages().size(); ++p) {
    Write(dir, absl::StrCat("parts-publish-", int{p}),
          Str(Cat({OfferParts(p, p * 5), AllChunks(p), kCommitOp})));
  }
  Write(dir, "parts-one-fewer", Str(Cat({OfferParts(0, 0, kPartsOneFewer), AllChunks(0)})));
  Write(dir, "parts-one-more", Str(Cat({OfferParts(0, 0, kPartsOneMore), AllChunks(0)})));
  Write(dir, "parts-one-more-then-slice",
        Str(Cat({OfferParts(0, 3, kPartsOneMore), {kPartSlice, 2, 1}, AllChunks(0)})));
  Write(dir, "parts-none-announced", Str(Cat({OfferParts(0, 0, kPartsNone), AllChunks(0)})));
  Write(dir, "part-after-need",
        Str(Cat({OfferParts(1, 2), {kPartSlice, 0, 3}, AllChunks(1), kCommitOp})));
  Write(dir, "part-without-parts", Str(Cat({Offer(0), {kPartSlice, 1, 1}, AllChunks(0)})));
  Write(dir, "empty-part", Str(Cat({OfferParts(0, 0, kPartsOneMore), {kPartSlice, 0, 0}})));
  Write(dir, "raw-part",
        Str(Cat({OfferParts(0, 1, kPartsOneMore), {kPartRaw, 6, 0x0a, 4, 0x0a, 2, 'z', 'z'}})));
  Write(dir, "part-before-offer", Str(Cat({{kPartSlice, 0, 2}, Offer(0)})));
  Write(dir, "parts-signed",
        Str(Cat({kRequire, OfferParts(4, 1), Signed(2), AllChunks(4), kCommitOp})));
  const Bytes split = {kControl, kToggleSplitNeed};
  Write(dir, "split-need", Str(Cat({split, Offer(0), AllChunks(0), kCommitOp})));
  Write(dir, "split-need-parts", Str(Cat({split, OfferParts(5, 6), AllChunks(5), kCommitOp})));
  Write(dir, "split-need-local",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, split, Offer(1, 2), AllChunks(1),
                 kCommitOp})));
  // Manifest deltas: of a published base, of one the agent lacks, of itself.
  Write(dir, "delta-of-published",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kEnd, {kOfferDelta, 1, 0, 1}, AllChunks(1),
                 kCommitOp})));
  Write(dir, "delta-of-missing", Str(Cat({{kOfferDelta, 1, 0, 0}, AllChunks(1), kCommitOp})));
  Write(dir, "delta-unrelated",
        Str(Cat({Offer(4), AllChunks(4), kCommitOp, kEnd, {kOfferDelta, 5, 4, 7}, AllChunks(5),
                 kCommitOp})));
  Write(dir, "split-need-resume",
        Str(Cat({split, Offer(0), {kChunk, 1}, kEnd, OfferParts(0, 5), AllChunks(0), kCommitOp})));
}

void TransferSeeds(const std::string& dir) {
  for (uint8_t p = 0; p < Packages().size(); ++p) {
    Write(dir, absl::StrCat("publish-", int{p}), Str(Cat({Offer(p), AllChunks(p), kCommitOp})));
  }
  Write(dir, "publish-then-again",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kEnd, Offer(0)})));
  Write(dir, "delta-from-published",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kEnd, Offer(1, 2), AllChunks(1), kCommitOp})));
  Write(dir, "other-content-same-version",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kEnd, Offer(2), AllChunks(2), kCommitOp})));
  Write(dir, "resume-after-restart",
        Str(Cat({Offer(0, 2), {kChunk, 0, kChunk, 3}, {kControl, kRestart}, Offer(0),
                 AllChunks(0), kCommitOp})));
  Write(dir, "flipped-then-good",
        Str(Cat({Offer(4), {kFlipChunk, 1, 3}, AllChunks(4), kCommitOp})));
  Write(dir, "bad-chunks",
        Str(Cat({Offer(0), {kBadChunk, 9, 3, 'a', 'b', 'c', kBadChunk, 1, 0}, AllChunks(0)})));
  Write(dir, "chunk-runs",
        Str(Cat({Offer(4), {kChunkRun, 0, 2, 0, kChunkRun, 4, 0, 2}, AllChunks(4), kCommitOp})));
  Write(dir, "chunk-run-bad",
        Str(Cat({Offer(0), {kChunkRun, 0, 1, 1}, Offer(0), {kChunkRun, 0, 3, 0}})));
  Write(dir, "early-commit", Str(Cat({Offer(0), {kChunk, 0}, kCommitOp})));
  Write(dir, "chunk-before-offer", Str(Cat({{kChunk, 0}, Offer(0)})));
  Write(dir, "empty-message", Str(Cat({Offer(3), {kControl, kEmptyMessage}})));
  Write(dir, "disk-full", Str(Cat({{kControl, kToggleDiskFull}, Offer(0), AllChunks(0)})));
  Write(dir, "mutated-mode",
        Str(Cat({{kOfferMut, 0, 1, 0, 0300, 0}, AllChunks(0), kCommitOp})));
  Write(dir, "mutated-link",
        Str(Cat({{kOfferMut, 0, 2, 4, 0, 6, 'b', 'i', 'n', '/', '.', '.'}, AllChunks(0), kCommitOp})));
  Write(dir, "mutated-path",
        Str(Cat({{kOfferMut, 0, 0, 2, 0, 3, 'e', 't', 'c'}, AllChunks(0), kCommitOp})));
  Write(dir, "raw-offer", Str(Cat({{kOfferRaw, 4, 10, 2, 'a', 'b'}})));
  PartSeeds(dir);
  SignatureSeeds(dir);
}

// An offer of package 4 with version `version`, whose raw id must start
// with `id_prefix`: versions found by trying many.
Bytes OfferWithIdPrefix(const std::string& version, absl::string_view id_prefix) {
  pkgdist::v1::Manifest m = Packages()[4].manifest;
  m.set_version(version);
  Check(absl::StartsWith(PackageId(m), id_prefix),
        "package 4 changed: find new versions for the regression inputs");
  Bytes b = {kOfferMut, 4, 3, 0, 0, static_cast<uint8_t>(version.size())};
  b.insert(b.end(), version.begin(), version.end());
  return b;
}

// A refusal by the signature policy deleted ROOT/staging/<raw id bytes>
// instead of ROOT/staging/<id hex>: the refused package's staging stayed,
// and a raw id starting with NUL (or "..", NUL) named ROOT/staging (ROOT)
// to the system calls (fixed in 3c82437).
void SignatureRegressionInputs(const std::string& dir) {
  const Bytes untrusted = {kSign, kSignUntrusted, 1, 200};
  Write(dir, "refused-offer-keeps-staging",
        Str(Cat({Offer(0), {kChunk, 0, kChunk, 1}, kRequire, Offer(0), untrusted})));
  Write(dir, "refused-commit-keeps-staging",
        Str(Cat({kRequire, Offer(4), Signed(1, kExpiresNow + 4), AllChunks(4),
                 {kControl, kAdvanceClock}, kCommitOp})));
  const Bytes nul_id = OfferWithIdPrefix("vni", absl::string_view("\0", 1));
  Write(dir, "refused-nul-id-removes-all-staging", Str(Cat({kRequire, nul_id})));
  Write(dir, "refused-nul-id-recurses-forever",
        Str(Cat({Offer(0), {kChunk, 0}, kRequire, nul_id})));
  Write(dir, "refused-dotdot-nul-id-recurses-forever",
        Str(Cat({Offer(0), AllChunks(0), kCommitOp, kRequire,
                 OfferWithIdPrefix("vxj4rj", absl::string_view("..\0", 3))})));
}

// Inputs that once broke an invariant (regressions/<target>/), rebuilt
// here so their meaning is on record.
void RegressionInputs(const std::string& dir) {
  // Symlink chain leaving the package: "etc/self" -> "../etc" is inside, and
  // "current" -> "etc/self/../.." stays inside lexically, but the kernel
  // resolves etc/self to etc, so "current" names the package's parent.
  pkgdist::v1::Manifest m = Packages()[0].manifest;
  Check(m.files(4).path() == "current", "package 0 changed: update the regression inputs");
  m.mutable_files(4)->set_link_target("etc/self/../..");
  Write(dir + "/manifest", "symlink-chain-escape", m.SerializeAsString());
  std::string target = "etc/self/../..";
  Bytes offer = {kOfferMut, 0, 2, 4, 0, static_cast<uint8_t>(target.size())};
  offer.insert(offer.end(), target.begin(), target.end());
  Write(dir + "/transfer", "symlink-chain-escape", Str(Cat({offer, AllChunks(0), kCommitOp})));
  SignatureRegressionInputs(dir + "/transfer");
}

}  // namespace
}  // namespace pkgdist::fuzz

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [REGRESSIONS_DIR]\n", argv[0]);
    return 2;
  }
  pkgdist::fuzz::QuietLogs();
  std::string out = argv[1];
  pkgdist::fuzz::ManifestSeeds(out + "/manifest");
  pkgdist::fuzz::JournalSeeds(out + "/journal");
  pkgdist::fuzz::TransferSeeds(out + "/transfer");
  if (argc == 3) pkgdist::fuzz::RegressionInputs(argv[2]);
  return 0;
}
