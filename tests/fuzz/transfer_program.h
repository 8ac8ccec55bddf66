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
//                                  3 restart the agent (reopen the store)
// Chunk indices are taken modulo (chunk count + 2), so some are out of range.
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
  kOpCount = 8,
};

enum Control : uint8_t { kEndStream = 0, kEmptyMessage = 1, kToggleDiskFull = 2, kRestart = 3 };

}  // namespace pkgdist::fuzz

#endif  // PKGDIST_TESTS_FUZZ_TRANSFER_PROGRAM_H_
