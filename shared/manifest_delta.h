// A manifest as a delta of another: how a new version's manifest reaches an
// agent that holds the previous one without crossing the link whole.
//
// Most of a new version's manifest is the old one: the same files in the
// same order, the same chunks (content-defined, so an insertion shifts only
// offsets). DiffManifest writes the target as ManifestParts whose EntryRuns
// copy runs of the base's entries (chunks with a file and offset shift) and
// carry only what is new as literal entries; ApplyManifestPart rebuilds it
// on the agent. Nothing is trusted on the way: the agent's base is checked
// against its id, every part against the agent's limits before it is
// applied, and the rebuilt manifest against the Offer's package id, so a
// wrong delta or a wrong base can only fail the transfer, never publish
// another package.
#ifndef PKGDIST_SHARED_MANIFEST_DELTA_H_
#define PKGDIST_SHARED_MANIFEST_DELTA_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "pkgdist/v1/agent.pb.h"
#include "pkgdist/v1/manifest.pb.h"

namespace pkgdist {

// At most this many delta bases in an Offer (an agent refuses more).
inline constexpr int kMaxDeltaBases = 4;

// Below this many serialized bytes a manifest goes out whole in the Offer:
// the ManifestRequest's round trip would cost more than the bytes saved.
inline constexpr size_t kMinDeltaManifestBytes = 64 << 10;

// The serialized size of `e` as an element of a repeated field: tag,
// length and body.
size_t RepeatedElementBytes(const google::protobuf::MessageLite& e);

// The parts that rebuild `target`'s files and chunks from `base`, each about
// `part_bytes` serialized or less (one run and its literals at least), every
// one but the last with more = true. `target` must have at least one entry.
std::vector<pkgdist::v1::ManifestPart> DiffManifest(const pkgdist::v1::Manifest& base,
                                                    const pkgdist::v1::Manifest& target,
                                                    size_t part_bytes);

// Appends what `part` builds from `base` to out->files and out->chunks: its
// runs, or its entries as they are if it has none. INVALID_ARGUMENT, with
// `out` unchanged, if a run reaches outside the base, the runs do not take
// the part's literals exactly, a shifted chunk's file or offset leaves the
// range of its field, or out would hold more than `max_files` files or
// `max_chunks` chunks. Whether the result is a valid manifest is
// ValidateManifest's to say.
absl::Status ApplyManifestPart(const pkgdist::v1::Manifest& base,
                               const pkgdist::v1::ManifestPart& part, uint64_t max_files,
                               uint64_t max_chunks, pkgdist::v1::Manifest* out);

}  // namespace pkgdist

#endif  // PKGDIST_SHARED_MANIFEST_DELTA_H_
