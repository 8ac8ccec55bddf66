// The byte format the transfer fuzzer decodes into Transfer streams, shared
// with the seed generator so committed seeds encode meaningful sessions.
//
// The input is a sequence of operations, one opcode byte each, followed by
// its operand bytes (a missing byte reads as 0):
//   kOffer      pkg, window        Offer of Packages()[pkg % n], window*16 bytes
//   kOfferMut   pkg, kind, a, b, len, bytes...
//                                  Offer of a mutated copy (see Mutate())
//   kOfferRaw   len, bytes...      Offer of the bytes parsed as a Manifest
//   kChunk      index              the right bytes of that chunk
//   kBadChunk   index, len, bytes  arbitrary bytes for a chunk
//   kFlipChunk  index, pos         the right bytes with one byte flipped
//   kCommit
//   kControl    what               0 end this stream (next op opens another),
//                                  1 an empty message, 2 toggle disk full,
//                                  3 restart the agent (reopen the store and
//                                  the signature policy),
//                                  4 end this stream; later ones run without a
//                                  signature policy (the initial state),
//                                  5 ... with one that requires signatures,
//                                  6 ... with one that checks them if present,
//                                  7 the clock moves kClockStepSeconds on,
//                                  just before the next message is read,
//                                  8 end this stream; later ones split the
//                                  first Need in messages of
//                                  kFuzzNeedIndicesPerMessage (toggles)
//   kSign       kind, operands...  replaces the signature of the stream's
//                                  latest offer (none: no effect); below
//   kOfferParts pkg, split, miscount
//                                  Offer of Packages()[pkg % n] with its
//                                  manifest in ManifestParts: F = split % 4
//                                  + 1 files per part, C = split / 4 % 4 + 1
//                                  chunks per part; the Offer holds name,
//                                  version, total_size and the first F
//                                  files, then parts of F files, then of C
//                                  chunks. It announces (miscount % 4) 0 the
//                                  parts made, 1 one fewer, 2 one more, 3
//                                  none (0)
//   kPartSlice  from, count        a ManifestPart of entries [from, from +
//                                  count % 8) of the latest offer's manifest,
//                                  its files then its chunks counted as one
//                                  sequence (from modulo its length; 0: an
//                                  empty part)
//   kPartRaw    len, bytes...      the bytes parsed as a ManifestPart
//   kChunkRun   index, n, how      one Chunk message with chunks index ..
//                                  index + n % 4 + 1 (count n % 4 + 2): the
//                                  right bytes back to back (how % 3 == 0),
//                                  one byte more (1), or one byte flipped in
//                                  the last chunk (2); runs may cross files
//                                  or the end
//   kOfferDelta pkg, base, split   Offer of Packages()[pkg % n] naming
//                                  Packages()[base % n] as its one delta
//                                  base, then the parts of DiffManifest
//                                  (that base, the package, 16 << split % 8
//                                  bytes a part): right if the agent holds
//                                  the base, runs outside an empty base if
//                                  it does not
// Chunk indices are taken modulo (chunk count + 2), so some are out of range.
//
// The policies trust one key (kTrustedSeed); the clock starts at kFuzzNow.
// In kSign, SEQ is the signed sequence and EXP the expiry,
// kFuzzNow + 4 * (EXP - 16) seconds (EXP <= 16: expired from the start):
//   kSignNone        (none)          no signature
//   kSignTrusted     SEQ, EXP        a correct one by the trusted key
//   kSignUntrusted   SEQ, EXP        a correct one by another key
//   kSignFlipped     SEQ, EXP, field, pos, bit
//                                    a correct one, then one bit flipped in
//                                    field % 3 (0 body, 1 signature, 2 key id)
//   kSignRaw         len, body..., len, key id..., len, signature...
//   kSignOther       which, pkg, SEQ, EXP
//                                    by the trusted key, with the package id
//                                    (which bit 0), name (bit 1) and version
//                                    (bit 2) of Packages()[pkg % n]
//   kSignForgedKeyId SEQ, EXP        by the other key, naming the trusted key
//   kSignBody        len, body...    the trusted key's signature of raw bytes
#ifndef PKGDIST_TESTS_FUZZ_TRANSFER_PROGRAM_H_
#define PKGDIST_TESTS_FUZZ_TRANSFER_PROGRAM_H_

#include <cstdint>

namespace pkgdist::fuzz {

enum Op : uint8_t {
  kOffer = 0,
  kOfferMut = 1,
  kOfferRaw = 2,
  kChunk = 3,
  kBadChunk = 4,
  kFlipChunk = 5,
  kCommit = 6,
  kControl = 7,
  kSign = 8,
  kOfferParts = 9,
  kPartSlice = 10,
  kPartRaw = 11,
  kChunkRun = 12,
  kOfferDelta = 13,
  kOpCount = 14,
};

enum Control : uint8_t {
  kEndStream = 0,
  kEmptyMessage = 1,
  kToggleDiskFull = 2,
  kRestart = 3,
  kPolicyOff = 4,
  kPolicyRequired = 5,
  kPolicyOptional = 6,
  kAdvanceClock = 7,
  kToggleSplitNeed = 8,
  kControlCount = 9,
};

// What kOfferParts's miscount operand announces.
enum PartCount : uint8_t {
  kPartsExact = 0,
  kPartsOneFewer = 1,
  kPartsOneMore = 2,
  kPartsNone = 3,
  kPartCountCount = 4,
};

// need_indices_per_message after kToggleSplitNeed: the fixed packages have a
// handful of chunks, so their first Need takes several messages.
inline constexpr size_t kFuzzNeedIndicesPerMessage = 2;

enum SignKind : uint8_t {
  kSignNone = 0,
  kSignTrusted = 1,
  kSignUntrusted = 2,
  kSignFlipped = 3,
  kSignRaw = 4,
  kSignOther = 5,
  kSignForgedKeyId = 6,
  kSignBody = 7,
  kSignKindCount = 8,
};

// The operand of a signature's expiry that makes it expire exactly at kFuzzNow.
inline constexpr uint8_t kExpiresNow = 16;
inline constexpr int64_t kFuzzNow = 1'900'000'000;  // 2030-03-17
inline constexpr int64_t kClockStepSeconds = 64;
inline constexpr char kTrustedSeed[] = "pkgdist fuzz trusted signing key";    // 32 bytes
inline constexpr char kUntrustedSeed[] = "pkgdist fuzz other signing key!!";  // 32 bytes

}  // namespace pkgdist::fuzz

#endif  // PKGDIST_TESTS_FUZZ_TRANSFER_PROGRAM_H_
