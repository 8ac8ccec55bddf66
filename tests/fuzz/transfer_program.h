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
//                                  just before the next message is read
//   kSign       kind, operands...  replaces the signature of the stream's
//                                  latest offer (none: no effect); below
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
  kOpCount = 9,
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
  kControlCount = 8,
};

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
