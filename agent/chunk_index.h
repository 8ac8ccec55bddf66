// The agent's chunk store: where on this disk it holds the bytes of a chunk,
// by the chunk's sha256, across every package it has, whatever its name.
//
// Sources are published packages (ROOT/packages/<name>/<version>/) and the
// staging trees of transfers not finished (ROOT/staging/<id>/tree/). The
// index is persistent through what it is built from: the manifests under
// ROOT/manifests/ and ROOT/staging/<id>/manifest.pb, each checked against
// its package id when the agent starts (PackageStore::Open), and kept up to
// date as packages are staged, published and removed.
//
// A location is a hint, never a proof: whoever copies from it reads the
// bytes and checks them against the sha256 before counting the chunk
// (Staging::WriteChunk does), so a damaged, missing or not yet written copy
// only means the chunk is needed from the controller after all. A staged
// tree in particular holds unwritten chunks as zeros.
//
// Memory: about 210 bytes per distinct chunk as measured (a 64-byte slot in a
// table at most 7/8 full, grown by doubling, and its references) plus each
// source's paths; bench/analysis.md, "Memory", has the profile.
// Thread-safe.
#ifndef PKGDIST_AGENT_CHUNK_INDEX_H_
#define PKGDIST_AGENT_CHUNK_INDEX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"
#include "pkgdist/v1/manifest.pb.h"
#include "shared/sha256.h"

namespace pkgdist {

class ChunkIndex {
 public:
  // Where one copy of a chunk's bytes may be.
  struct Location {
    std::string path;  // the file
    uint64_t offset;
  };

  // Adds source `key` ("published:<id-hex>" or "staged:<id-hex>"): the
  // chunks of `manifest` under the tree at `tree`. A key already present
  // keeps its chunks (one id, one manifest) and takes the new tree.
  void Add(const std::string& key, const std::string& tree, const pkgdist::v1::Manifest& manifest);
  void Remove(const std::string& key);

  // Every place that may hold a chunk with this sha256 (32 raw bytes) and
  // length, published sources first, leaving out source `exclude` (a
  // transfer's own staging); empty if none.
  std::vector<Location> Find(const std::string& sha256, uint32_t length,
                             const std::string& exclude = "") const;

  size_t chunk_count() const;
  size_t source_count() const;

 private:
  struct Source {
    std::string key;
    std::string tree;
    std::vector<std::string> paths;  // by file index; empty for non-files
    bool staged;
  };
  struct Ref {
    uint32_t source;
    uint32_t file;
    uint64_t offset;
    uint32_t length;
  };

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, uint32_t> keys_ ABSL_GUARDED_BY(mu_);  // key -> source id
  absl::flat_hash_map<uint32_t, std::unique_ptr<Source>> sources_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Digest, absl::InlinedVector<Ref, 1>> chunks_ ABSL_GUARDED_BY(mu_);
  uint32_t next_source_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pkgdist

#endif  // PKGDIST_AGENT_CHUNK_INDEX_H_
